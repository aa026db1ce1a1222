"""``govbus dev cluster up|status|kill|start|down`` end to end, through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from govbus.localkafka._paths import cache_root

pytestmark = pytest.mark.integration


def test_up_status_kill_start_down(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("govbus")
    if not script.exists():
        pytest.skip(f"{script} is not installed; run 'pip install -e .' in this virtualenv")
    cache = tmp_path / "cache"
    cache.mkdir()
    # Share the user's fetched jars, not their dev cluster or its state.
    shared = cache_root() / "kafka"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "kafka").symlink_to(shared, target_is_directory=True)
    env = {**os.environ, "GOVBUS_CACHE_DIR": str(cache)}

    def cluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), "dev", "cluster", *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    def status() -> dict[str, object]:
        report: dict[str, object] = json.loads(cluster("status", "--json").stdout)
        return report

    try:
        # Two brokers keep the test short on a small machine; --brokers 3 is the same code.
        up = cluster("up", "--brokers", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "cluster is up" in up.stdout
        report = status()
        assert report["answering"] is True
        assert report["live_brokers"] == 2
        assert sorted(report["running"]) == ["1", "101", "2"]  # type: ignore[call-overload]
        assert str(report["bootstrap"]).count(",") == 1

        killed = cluster("kill", "2")
        assert killed.returncode == 0, killed.stderr
        assert "killed broker 2" in killed.stdout
        report = status()
        assert sorted(report["running"]) == ["1", "101"]  # type: ignore[call-overload]
        assert cluster("status").returncode == 1  # not every node runs

        started = cluster("start", "2")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "broker 2 rejoined the cluster" in started.stdout
        assert status()["live_brokers"] == 2
        assert cluster("status").returncode == 0
    finally:
        down = cluster("down", "--purge")
    assert down.returncode == 0, down.stderr
    assert "stopped node 1" in down.stdout
    assert not (cache / "dev-cluster").exists()
    assert cluster("status").returncode == 1
