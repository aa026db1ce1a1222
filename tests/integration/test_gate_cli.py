"""``govbus gate check`` as a readiness probe: table, JSON, exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govbus", "gate", "check", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_passes_and_fails_with_exit_code(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    policy = tmp_path / "gate.yaml"
    policy.write_text("checks:\n  topic: {min_partitions: 3}\n  producer: {enabled: false}\n")
    env = {"GOVBUS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "GOVBUS_TOPIC": topic}

    ok = _run(["--policy", str(policy)], env)
    assert ok.returncode == 0, ok.stderr
    assert "broker" in ok.stdout
    assert "admitted" in ok.stdout

    out = _run(["--policy", str(policy), "--json"], {**env, "GOVBUS_TOPIC": "no-such-topic"})
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["allowed"] is False
    assert any(c["name"] == "topic" and not c["ok"] for c in report["checks"])

    observe = _run(
        ["--policy", str(policy), "--json"], {**env, "GOVBUS_TOPIC": "no-such-topic", "GOVBUS_GATE__MODE": "observe"}
    )
    assert observe.returncode == 0
    assert json.loads(observe.stdout)["would_deny"] is True


def test_producer_health_file_is_read(kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path) -> None:
    topic = new_topic(partitions=3)
    env = {
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GOVBUS_TOPIC": topic,
        "GOVBUS_PRODUCER__SPOOL_DIR": str(tmp_path),
    }
    missing = _run(["--json"], env)
    assert missing.returncode == 1
    assert "no producer health file" in missing.stdout
    (tmp_path / "health.json").write_text(json.dumps({"written_at": time.time(), "ok": True, "reason": "spool 0%"}))
    assert _run([], env).returncode == 0
    (tmp_path / "health.json").write_text(json.dumps({"written_at": time.time() - 60, "ok": True, "reason": ""}))
    stale = _run([], env)
    assert stale.returncode == 1
    assert "old" in stale.stdout


def test_malformed_policy_fails_naming_the_key(tmp_path: Path) -> None:
    policy = tmp_path / "gate.yaml"
    policy.write_text("checks:\n  sinks:\n    - {name: audit, max_lag: -1}\n")
    out = _run(["--policy", str(policy)], {})
    assert out.returncode == 2
    assert f"{policy}: checks.sinks[0].max_lag" in out.stderr


def test_signing_check_loads_the_key_and_refuses_a_readable_one(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    from govbus.signing import KeyEntry, Keyring, SigningKey, write_private_key

    key = SigningKey.generate()
    key_path = write_private_key(key, tmp_path / f"{key.kid}.pem")  # a PEM key is named by its kid
    ring = Keyring()
    ring.add(KeyEntry(key.kid, key.public_bytes))
    ring.save(tmp_path / "keyring.json")
    policy = tmp_path / "gate.yaml"
    policy.write_text("checks:\n  producer: {enabled: false}\n  signing: {enabled: true}\n")
    env = {
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GOVBUS_TOPIC": new_topic(partitions=1),
        "GOVBUS_SIGNING__PRIVATE_KEY_PATH": str(key_path),
        "GOVBUS_SIGNING__KEYRING_PATH": str(tmp_path / "keyring.json"),
    }
    ok = _run(["--policy", str(policy), "--json"], env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"kid {key.kid} loaded" in ok.stdout
    key_path.chmod(0o644)
    refused = _run(["--policy", str(policy), "--json"], env)
    assert refused.returncode == 1
    assert "chmod 600" in refused.stdout
