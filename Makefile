# The two commands: `make demo` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install system-deps demo test unit integration system bench lint typecheck fmt clean broker-up broker-down

help:
	@echo "make demo   - start a local Kafka broker, run a sample kernel and a consumer, print a report"
	@echo "make test   - install everything and run the unit, integration and system tests"
	@echo "make bench  - run the benchmarks, print a table, write benchmarks/results.json"
	@echo "make lint   - ruff and mypy"

# Java 17 and Maven run the real Apache Kafka broker the tests and the demo use (javac, from the
# JDK, compiles the Avro-for-Java interop test's program); rsyslog is the real receiver of the
# syslog sink's tests.
system-deps:
	@if ! command -v java >/dev/null || ! command -v javac >/dev/null || ! command -v mvn >/dev/null || ! command -v rsyslogd >/dev/null; then \
	  echo "installing Java 17 (JDK), Maven and rsyslog from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven rsyslog >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	@touch $@

install: system-deps $(STAMP)

demo: install
	$(BIN)/govbus demo

test: install lint
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

system: install
	$(BIN)/python -m pytest tests/system $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy cannot follow the setuptools directory mapping (producer/ -> govbus.producer, ...), so it
# checks a tree of symlinks laid out as the installed package is.
typecheck: $(STAMP)
	@rm -rf .build/typecheck && mkdir -p .build/typecheck/govbus
	@for f in govbus/*; do ln -s "$(CURDIR)/$$f" .build/typecheck/govbus/; done
	@ln -s "$(CURDIR)/producer" .build/typecheck/govbus/producer
	@ln -s "$(CURDIR)/consumers" .build/typecheck/govbus/consumers
	@ln -s "$(CURDIR)/schemas" .build/typecheck/govbus/schemas
	@ln -s "$(CURDIR)/deploy/localkafka" .build/typecheck/govbus/localkafka
	cd .build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p govbus

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

broker-up: install
	$(BIN)/govbus dev broker up

broker-down: install
	$(BIN)/govbus dev broker down

clean:
	rm -rf .build build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
