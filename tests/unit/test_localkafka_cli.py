"""``govbus dev broker`` argument handling and its answers when no broker is running."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from govbus.localkafka import _cli as cli


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="govbus")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GOVBUS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_commands_parse() -> None:
    parser = argparse.ArgumentParser(prog="govbus")
    cli.register(parser.add_subparsers(dest="command", required=True))
    up = parser.parse_args(["dev", "broker", "up", "--port", "19092"])
    assert (up.func, up.port, up.timeout) == (cli._up, 19092, 90.0)
    down = parser.parse_args(["dev", "broker", "down", "--timeout", "5", "--purge"])
    assert (down.func, down.timeout, down.purge) == (cli._down, 5.0, True)
    status = parser.parse_args(["dev", "broker", "status", "--json"])
    assert (status.func, status.json) == (cli._status, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["dev", "broker"])  # an action is required


def test_status_without_a_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["dev", "broker", "status"]) == 1
    assert "the dev broker is not running; start it with 'govbus dev broker up'" in capsys.readouterr().out


def test_status_json_without_a_broker(capsys: pytest.CaptureFixture[str], cache: Path) -> None:
    assert _run(["dev", "broker", "status", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["running"] is False
    assert report["answering"] is False
    assert report["pid"] is None
    assert report["data_dir"] == str(cache / "dev-broker")


def test_status_remembers_where_it_last_ran(capsys: pytest.CaptureFixture[str], cache: Path) -> None:
    (cache / "run").mkdir(parents=True)
    (cache / "run" / "broker.json").write_text(json.dumps({"bootstrap": "127.0.0.1:1234", "version": "4.4.0"}))
    assert _run(["dev", "broker", "status"]) == 1
    assert "not running (last at 127.0.0.1:1234" in capsys.readouterr().out


def test_down_without_a_broker_is_fine(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["dev", "broker", "down"]) == 0
    assert "no dev broker is running" in capsys.readouterr().out


def test_down_purge_deletes_the_data(capsys: pytest.CaptureFixture[str], cache: Path) -> None:
    (cache / "dev-broker" / "kraft").mkdir(parents=True)
    (cache / "run").mkdir(parents=True)
    (cache / "run" / "broker.json").write_text("{}")
    assert _run(["dev", "broker", "down", "--purge"]) == 0
    assert not (cache / "dev-broker").exists()
    assert not (cache / "run" / "broker.json").exists()
