"""govbus.localkafka without a broker: paths, configuration, ports, Java discovery."""

from __future__ import annotations

import os
import socket
import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from govbus.errors import BrokerError, GovbusError
from govbus.localkafka import KAFKA_VERSION, BrokerInfo, LocalBroker
from govbus.localkafka._config import free_port, log4j2_xml, new_cluster_id, port_is_free, server_properties
from govbus.localkafka._fetch import POM
from govbus.localkafka._java import find_java, parse_java_version
from govbus.localkafka._paths import cache_root, kafka_home


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def fake_java(bin_dir: Path, version_line: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return java


def test_public_surface() -> None:
    import govbus.localkafka as lk

    assert sorted(lk.__all__) == ["BrokerInfo", "KAFKA_VERSION", "LocalBroker"]
    assert KAFKA_VERSION == "4.4.0"
    assert BrokerInfo.__dataclass_fields__.keys() >= {
        "bootstrap",
        "version",
        "log_path",
        "pid",
        "data_dir",
        "startup_seconds",
    }
    assert issubclass(BrokerError, GovbusError)


def test_pom_default_matches_kafka_version() -> None:
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in POM.read_text()


class TestCacheRoot:
    def test_explicit_directory_wins(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("GOVBUS_CACHE_DIR", str(tmp_path / "c"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_root() == tmp_path / "c"
        assert kafka_home("4.4.0") == tmp_path / "c" / "kafka" / "4.4.0"

    def test_xdg_cache_home(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("GOVBUS_CACHE_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_root() == tmp_path / "xdg" / "govbus"

    def test_relative_xdg_is_ignored_as_the_spec_says(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("GOVBUS_CACHE_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
        monkeypatch.setenv("HOME", str(tmp_path))
        assert cache_root() == tmp_path / ".cache" / "govbus"

    def test_home_fallback_and_empty_values(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("GOVBUS_CACHE_DIR", "")
        monkeypatch.setenv("XDG_CACHE_HOME", "")
        monkeypatch.setenv("HOME", str(tmp_path))
        assert cache_root() == tmp_path / ".cache" / "govbus"

    def test_relative_explicit_directory_is_made_absolute(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("GOVBUS_CACHE_DIR", "here")
        assert cache_root() == tmp_path / "here"


class TestServerProperties:
    def test_single_node_kraft_on_loopback(self, tmp_path: Path) -> None:
        props = _properties(server_properties(port=19092, controller_port=19093, log_dirs=tmp_path / "kraft"))
        assert props["process.roles"] == "broker,controller"
        assert props["node.id"] == "1"
        assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
        assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
        assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
        assert props["controller.listener.names"] == "CONTROLLER"
        assert props["inter.broker.listener.name"] == "PLAINTEXT"
        assert props["log.dirs"] == str(tmp_path / "kraft")
        for key in (
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "transaction.state.log.min.isr",
        ):
            assert props[key] == "1"
        assert props["group.initial.rebalance.delay.ms"] == "0"

    def test_topics_are_never_created_implicitly(self, tmp_path: Path) -> None:
        props = _properties(server_properties(port=1, controller_port=2, log_dirs=tmp_path))
        assert props["auto.create.topics.enable"] == "false"
        assert props["num.partitions"] == "3"

    def test_overrides_replace_defaults(self, tmp_path: Path) -> None:
        text = server_properties(
            port=1, controller_port=2, log_dirs=tmp_path, overrides={"num.partitions": "6", "log.retention.ms": "1000"}
        )
        props = _properties(text)
        assert props["num.partitions"] == "6"
        assert props["log.retention.ms"] == "1000"
        assert sum(line.startswith("num.partitions=") for line in text.splitlines()) == 1

    def test_backslashes_survive_java_properties_escaping(self) -> None:
        props = _properties(server_properties(port=1, controller_port=2, log_dirs=Path("/data/a\\b")))
        assert props["log.dirs"] == "/data/a\\\\b"


def test_log4j2_config_logs_to_the_file_even_with_xml_special_characters(tmp_path: Path) -> None:
    log_path = tmp_path / "we'ird & <dir>" / "logs" / "server.log"
    root = ET.fromstring(log4j2_xml(log_path))
    appender = root.find("./Appenders/RollingFile")
    assert appender is not None
    assert appender.get("fileName") == str(log_path)
    assert appender.get("filePattern") == f"{log_path}.%i"
    assert root.find("./Loggers/Root").get("level") == "INFO"  # type: ignore[union-attr]


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(500)}
    assert len(ids) == 500
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TestPorts:
    def test_free_port_is_bindable_on_loopback(self) -> None:
        port = free_port()
        assert 1024 <= port <= 65535
        assert port_is_free(port)

    def test_a_listening_port_is_not_free(self) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            assert not port_is_free(listener.getsockname()[1])


class TestJavaVersion:
    @pytest.mark.parametrize(
        ("output", "expected"),
        [
            ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', ("17.0.15", 17)),
            ('java version "1.8.0_292"', ("1.8.0_292", 8)),
            ('openjdk version "21" 2023-09-19', ("21", 21)),
            ('openjdk version "17-ea" 2021-09-14', ("17-ea", 17)),
            ('Picked up JAVA_TOOL_OPTIONS: -Xss1m\nopenjdk version "11.0.2" 2019-01-15', ("11.0.2", 11)),
            ("something else", None),
        ],
    )
    def test_parse(self, output: str, expected: tuple[str, int] | None) -> None:
        assert parse_java_version(output) == expected

    def test_no_java_at_all(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("JAVA_HOME", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(BrokerError, match="JAVA_HOME is not set and 'java' is not on PATH") as caught:
            find_java()
        assert "Java 17 or newer" in str(caught.value)

    def test_java_home_without_java(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
        with pytest.raises(BrokerError, match=r"JAVA_HOME is set to .*jdk, but .*bin/java is not an executable"):
            find_java()

    def test_too_old_java_is_refused_clearly(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        java = fake_java(tmp_path / "bin", 'openjdk version "11.0.2" 2019-01-15')
        monkeypatch.delenv("JAVA_HOME", raising=False)
        monkeypatch.setenv("PATH", str(java.parent))
        with pytest.raises(
            BrokerError, match=r"needs Java 17 or newer, but .*java \(java from PATH\) is Java 11\.0\.2"
        ):
            find_java()

    def test_java_home_is_preferred_over_path(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        fake_java(tmp_path / "old" / "bin", 'java version "1.8.0_292"')
        new = fake_java(tmp_path / "jdk" / "bin", 'openjdk version "21.0.1" 2023-10-17')
        monkeypatch.setenv("PATH", str(tmp_path / "old" / "bin"))
        monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
        java = find_java()
        assert (java.path, java.major) == (new, 21)

    @pytest.mark.skipif(sys.platform != "linux", reason="relies on this machine's real JDK layout")
    def test_this_machines_java(self) -> None:
        if not (os.environ.get("JAVA_HOME") or any(Path(p, "java").exists() for p in os.get_exec_path())):
            pytest.skip("no java on this machine")
        assert find_java().major >= 17


def test_a_broker_that_never_started_has_no_info(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    assert not broker.is_running()
    assert broker.log_path == tmp_path / "logs" / "server.log"
    with pytest.raises(BrokerError, match="has not been started"):
        _ = broker.info
    broker.stop()  # stopping a broker that is not running is a no-op
    broker.kill()
