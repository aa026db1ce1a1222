"""``govbus dev broker up|status|down`` end to end, through the installed console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import _kafka
import pytest
from confluent_kafka import KafkaException

from govbus.localkafka import KAFKA_VERSION
from govbus.localkafka._paths import cache_root

pytestmark = pytest.mark.integration


@pytest.fixture
def govbus() -> list[str]:
    script = Path(sys.executable).with_name("govbus")
    if not script.exists():
        pytest.skip(f"{script} is not installed; run 'pip install -e .' in this virtualenv")
    return [str(script)]


def test_up_status_down(govbus: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # Share the user's fetched jars (fetching them here if need be), not their dev broker or its state.
    shared = cache_root() / "kafka"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "kafka").symlink_to(shared, target_is_directory=True)
    env = {**os.environ, "GOVBUS_CACHE_DIR": str(cache)}

    def broker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*govbus, "dev", "broker", *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    try:
        up = broker("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Apache Kafka {KAFKA_VERSION} is up (started in" in up.stdout
        bootstrap = re.search(r"bootstrap\s+(127\.0\.0\.1:\d+)", up.stdout).group(1)  # type: ignore[union-attr]
        log_path = Path(re.search(r"log\s+(\S+)", up.stdout).group(1))  # type: ignore[union-attr]
        assert log_path == cache / "dev-broker" / "logs" / "server.log"
        assert f"Kafka version: {KAFKA_VERSION}" in log_path.read_text(errors="replace")

        # The broker outlived the command that started it.
        status = broker("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "is running and answering" in status.stdout
        report = json.loads(broker("status", "--json").stdout)
        assert (report["running"], report["answering"]) == (True, True)
        assert (report["bootstrap"], report["version"]) == (bootstrap, KAFKA_VERSION)
        assert report["metadata"]["brokers"] == 1

        again = broker("up")
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert bootstrap in again.stdout

        topic = _kafka.create_topic(_kafka.quiet_admin(bootstrap), _kafka.unique_topic_name("cli"), partitions=2)

        down = broker("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert re.search(r"stopped the dev broker \(pid \d+\) in [\d.]+ s", down.stdout)
        stopped = broker("status")
        assert stopped.returncode == 1
        assert "not running" in stopped.stdout
        assert json.loads(broker("status", "--json").stdout)["running"] is False

        # Up again: same address, same data.
        back = broker("up")
        assert back.returncode == 0, back.stdout + back.stderr
        assert f"bootstrap   {bootstrap}" in back.stdout
        assert topic in _kafka.quiet_admin(bootstrap).list_topics(timeout=10).topics
    finally:
        final = broker("down", "--purge")
    assert final.returncode == 0
    assert not (cache / "dev-broker").exists()


def test_secure_up_status_down(govbus: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    shared = cache_root() / "kafka"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "kafka").symlink_to(shared, target_is_directory=True)
    env = {**os.environ, "GOVBUS_CACHE_DIR": str(cache)}

    def broker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*govbus, "dev", "broker", *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    try:
        up = broker("up", "--secure")
        assert up.returncode == 0, up.stdout + up.stderr
        bootstrap = re.search(r"bootstrap\s+(127\.0\.0\.1:\d+)", up.stdout).group(1)  # type: ignore[union-attr]
        mtls = re.search(r"mTLS\s+(127\.0\.0\.1:\d+)", up.stdout).group(1)  # type: ignore[union-attr]
        ca = re.search(r"CA\s+(\S+)", up.stdout).group(1)  # type: ignore[union-attr]
        assert Path(ca) == cache / "dev-broker-secure" / "tls" / "ca.pem"
        # Nobody anonymous: a plaintext client gets no metadata.
        anonymous = _kafka.quiet_admin(bootstrap)
        with pytest.raises(KafkaException):
            anonymous.list_topics(timeout=2)
        # status asks as the super user, over mTLS.
        report = json.loads(broker("status", "--json").stdout)
        assert (report["running"], report["answering"], report["secure"]) == (True, True, True)
        assert report["mtls_bootstrap"] == mtls
        plain = broker("up")  # a plaintext one cannot start beside it
        assert plain.returncode == 1
        assert "secure dev broker is already running" in plain.stderr
    finally:
        final = broker("down", "--purge")
    assert final.returncode == 0, final.stdout + final.stderr
    assert not (cache / "dev-broker-secure").exists()
