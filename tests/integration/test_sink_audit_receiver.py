"""The audit sink end to end: ``govbus sink run audit`` against a real broker, killed mid-stream.

The first process ledgers half the stream and is SIGKILLed before it ever commits an offset, so
the second one is redelivered everything from offset 0: the ledger must still hold every event
exactly once, verify completely (chain, signatures, checkpoints), and name a deleted entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from _sinks import events, produce, records, sign, signing_pair, wait_for

from govbus.consumers.sinks._ledger import verify_ledger
from govbus.signing import KeyEntry, SigningKey, write_private_key


def _ledger_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        entry = json.loads(line)
        if entry["type"] == "event":
            out.append(entry["event"]["id"])
    return out


def _govbus(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "govbus", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_killed_runtime_restarts_without_duplicates_and_the_ledger_verifies(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    signer, keyring = signing_pair("producer-k1")
    audit_key = SigningKey.generate("audit-k1")
    key_file = write_private_key(audit_key, tmp_path / "audit-k1.pem")
    keyring.add(KeyEntry(audit_key.kid, audit_key.public_bytes))
    keyring.save(tmp_path / "keyring.json")
    ledger = tmp_path / "ledger.jsonl"
    first_half = sign(records(events(150, seed=1)), signer, 2)
    second_half = sign(records(events(150, seed=2)), signer, 2)
    all_ids = [r.event_id for r in first_half + second_half]

    env = {
        **os.environ,
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GOVBUS_TOPIC": topic,
        "GOVBUS_SINK__INSTANCE": f"audit-e2e-{uuid.uuid4().hex[:8]}",
        "GOVBUS_SINK__VERIFY__MODE": "required",
        "GOVBUS_SINK__VERIFY__KEYRING": str(tmp_path / "keyring.json"),
        # No commit before the kill: every record is redelivered to the second process.
        "GOVBUS_SINK__COMMIT_INTERVAL_MS": "600000",
        "GOVBUS_SINK__BATCH__MAX_RECORDS": "40",
        "GOVBUS_SINK__HEALTH__ENABLED": "false",
        # The killed member's partitions are handed on after its session times out: keep that short.
        "GOVBUS_SINK__CONSUMER": '{"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}',
    }
    run = ["sink", "run", "audit", "-o", f"path={ledger}", "-o", f"checkpoint_key={key_file}"]
    run += ["-o", "checkpoint_every=64"]

    produce(kafka_bootstrap, topic, first_half)
    first = _govbus(*run, env=env)
    try:
        wait_for(lambda: len(_ledger_ids(ledger)) >= 150 or first.poll() is not None, timeout=90, what="first half")
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
    finally:
        first.kill()
        first.wait(30)
        if first.stderr:
            first.stderr.close()

    produce(kafka_bootstrap, topic, second_half)
    second = _govbus(*run, env=env)
    try:
        wait_for(lambda: len(_ledger_ids(ledger)) >= 300 or second.poll() is not None, timeout=90, what="all events")
        assert second.poll() is None, second.stderr.read().decode() if second.stderr else ""
    finally:
        second.terminate()  # graceful: a final checkpoint seals the head
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()

    ids = _ledger_ids(ledger)
    assert len(ids) == len(set(ids)) == 300
    assert set(ids) == set(all_ids)
    report = verify_ledger(ledger, keyring=keyring)
    assert report.ok, report.problem
    assert report.signatures_verified == 300
    assert report.checkpoints >= 300 // 64
    assert report.unsealed == 0

    verify = [
        sys.executable,
        "-m",
        "govbus",
        "audit",
        "verify",
        str(ledger),
        "--keyring",
        str(tmp_path / "keyring.json"),
    ]
    ok = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:99] + lines[100:]))
    broken = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    assert "BROKEN at line 100 (seq 100): deleted" in broken.stdout
