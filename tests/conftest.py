"""Session-wide test plumbing: the Kafka broker, unique topics, and markers by directory.

Fixtures (see tests/_kafka.py for which broker is chosen and how to force one):

- ``kafka_bootstrap`` (session): ``"host:port"`` of the session's broker, started on first use.
- ``new_topic`` (session; alias ``topic_factory``): ``new_topic(partitions=3, config=None)`` creates a
  uniquely named topic, waits until every partition has a leader, and returns its name.
- ``local_broker`` (session): the ``govbus.localkafka.LocalBroker`` behind ``kafka_bootstrap``, for
  tests that stop/kill and restart it (it keeps its port and data). Skipped when the session uses
  an external cluster or a container. A test that leaves it stopped gets it restarted afterwards.
- ``local_cluster`` (module): a ``govbus.localkafka._cluster.LocalCluster`` of three brokers and a
  dedicated KRaft controller (replication factor 3, min.insync.replicas 2), always local, started
  only for a module that asks for it; every broker is running again after each test.
- ``secure_kafka`` (session): a second, secured local broker (SASL_SSL SCRAM-SHA-512 + mTLS, ACLs
  enforced, nothing anonymous), started only when a test asks for it; a ``_kafka.SecureKafka`` with
  the bootstrap addresses, the CA path, and helpers to add SCRAM users, issue client certificates
  and grant ACLs as its super user. Always local (it needs its own CA), whatever the session uses.

Tests under tests/integration are marked ``integration``, under tests/system ``system``, and any
other test that uses one of the fixtures above ``integration`` too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

# Producer heartbeats (default every 5 s) add records and count in BusCounters; tests written
# before them count records exactly. The suite runs without them (subprocesses inherit this);
# heartbeat and watchdog tests turn them on explicitly.
os.environ.setdefault("GOVBUS_PRODUCER__HEARTBEAT_INTERVAL_MS", "0")

# Under --import-mode=importlib tests/ is not on sys.path; test modules may `import _kafka` too.
sys.path.insert(0, str(Path(__file__).parent))

import _kafka

from govbus.localkafka import LocalBroker

_HERE = Path(__file__).parent
_BROKER_FIXTURES = frozenset(
    {"kafka_source", "kafka_bootstrap", "new_topic", "topic_factory", "local_broker", "secure_kafka", "local_cluster"}
)


def pytest_report_header(config: pytest.Config) -> str:
    return f"kafka: {_kafka.describe_choice()}, started by the first test that needs it"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        uses_broker = bool(_BROKER_FIXTURES & set(getattr(item, "fixturenames", ())))
        if item.path.is_relative_to(_HERE / "system"):
            item.add_marker(pytest.mark.system)
        elif uses_broker or item.path.is_relative_to(_HERE / "integration"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_source(request: pytest.FixtureRequest) -> Iterator[_kafka.KafkaSource]:
    """Start (or connect to) the session's broker and say which one it is."""
    say = _terminal_writer(request.config)
    # Uncaptured, so a first run's download progress and the broker's address are visible live.
    with _uncaptured(request.config):
        say(f"govbus: starting the session's Kafka: {_kafka.describe_choice()}")
        source = _kafka.start_source()
        say(f"govbus: kafka is {source.description}")
    yield source
    source.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_source: _kafka.KafkaSource) -> str:
    return kafka_source.bootstrap


@pytest.fixture(scope="session")
def local_broker(kafka_source: _kafka.KafkaSource) -> LocalBroker:
    if kafka_source.broker is None:
        pytest.skip(
            f"needs a broker the test can stop and restart, but this session uses {kafka_source.description}; "
            "unset GOVBUS_TEST_BOOTSTRAP and set GOVBUS_TEST_BROKER=local to run it"
        )
    return kafka_source.broker


@pytest.fixture(autouse=True)
def _restart_local_broker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Keep one test's simulated outage from becoming every later test's failure."""
    broker: LocalBroker | None = None
    if "local_broker" in request.fixturenames:
        with contextlib.suppress(pytest.skip.Exception):
            broker = request.getfixturevalue("local_broker")
    yield
    if broker is not None and not broker.is_running():
        broker.start()


@pytest.fixture(scope="session")
def new_topic(kafka_source: _kafka.KafkaSource) -> Iterator[Callable[..., str]]:
    admin = _kafka.quiet_admin(kafka_source.bootstrap)
    created: list[str] = []

    def make(partitions: int = 3, config: Mapping[str, str] | None = None, *, prefix: str = "test") -> str:
        name = _kafka.create_topic(admin, _kafka.unique_topic_name(prefix), partitions, config)
        created.append(name)
        return name

    yield make
    if created and kafka_source.kind == "external":
        # Shared clusters outlive the session: leave them as we found them (best effort).
        for future in admin.delete_topics(created, operation_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result(15)


@pytest.fixture(scope="module")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    from govbus.localkafka._cluster import LocalCluster

    say = _terminal_writer(request.config)
    with _uncaptured(request.config):
        cluster = LocalCluster.ephemeral(brokers=3)
        info = cluster.start()
        say(f"govbus: local Kafka cluster {info.version}: brokers {info.brokers}, controller {info.controllers} "
            f"(started in {info.startup_seconds:.1f} s; {info.data_dir})")  # fmt: skip
    yield cluster
    cluster.close()


@pytest.fixture(autouse=True)
def _restart_cluster_brokers(request: pytest.FixtureRequest) -> Iterator[None]:
    """A fault test that leaves a broker down must not become the next test's fault."""
    yield
    if "local_cluster" in request.fixturenames:
        cluster = request.getfixturevalue("local_cluster")
        for broker_id, broker in cluster.brokers.items():
            if not broker.is_running():
                cluster.start_broker(broker_id)
        cluster.wait_in_sync(timeout=120)


@pytest.fixture(scope="session")
def secure_kafka(request: pytest.FixtureRequest) -> Iterator[_kafka.SecureKafka]:
    say = _terminal_writer(request.config)
    with _uncaptured(request.config):
        secure = _kafka.start_secure()
        info = secure.broker.info
        say(
            f"govbus: secure Kafka {info.version}: SASL_SSL at {secure.sasl_bootstrap}, mTLS at "
            f"{secure.mtls_bootstrap} (pid {info.pid}, started in {info.startup_seconds:.1f} s; log {info.log_path})"
        )
    yield secure
    secure.broker.close()


@pytest.fixture(scope="session")
def topic_factory(new_topic: Callable[..., str]) -> Callable[..., str]:
    return new_topic


def _terminal_writer(config: pytest.Config) -> Callable[[str], None]:
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:  # e.g. an xdist worker

        def write(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        return write

    def write_line(line: str) -> None:
        reporter.ensure_newline()
        reporter.write_line(line)

    return write_line


def _uncaptured(config: pytest.Config) -> contextlib.AbstractContextManager[Any]:
    capture: Any = config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        return contextlib.nullcontext()
    disabled: contextlib.AbstractContextManager[Any] = capture.global_and_fixture_disabled()
    return disabled


@pytest.fixture(scope="session")
def schema_registry_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Confluent-compatible schema registry's URL (see tests/_registry.py for which and why):
    ``GOVBUS_TEST_REGISTRY_URL``, else a local Apicurio Registry built from Maven Central, else
    confluent-kafka's in-process mock (``mock://…``, shared per process through
    ``govbus._registry.connect``), with the reason the local one is not used printed."""
    import _registry

    say = _terminal_writer(request.config)
    kind = _registry.choice()
    if kind == "external":
        yield _registry.external_url()
        return
    reason = "GOVBUS_TEST_REGISTRY=mock"
    local = None
    if kind == "local":
        with _uncaptured(request.config):
            say(f"govbus: starting the session's schema registry: Apicurio Registry {_registry.VERSION} (ccompat API)")
            try:
                local = _registry.start()
            except _registry.RegistryUnavailable as exc:
                reason = f"the local Apicurio Registry is unavailable: {exc}"
            else:
                say(
                    f"govbus: schema registry at {local.url} (started in {local.startup_seconds:.1f} s; log {local.log_path})"
                )
    if local is not None:
        yield local.url
        local.close()
        return
    with _uncaptured(request.config):
        say(f"govbus: schema registry: confluent-kafka's in-process mock ({reason})")
    yield "mock://govbus-tests"
