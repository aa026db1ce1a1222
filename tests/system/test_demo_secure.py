"""`govbus demo --secure`: the full path (emit → every sink → ledger verify) on the secure broker,
every process its own SCRAM principal holding only its role's ACLs from `govbus acl plan`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def test_secure_demo_reports_every_event_in_every_sink(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "govbus", "demo", "--secure", "--events", "120", "--rate", "0",
         "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "User:kernel, User:sink-stdout" in out.stdout
    report = out.stdout[out.stdout.index("govbus demo — report") :]
    for sink in ("stdout", "file", "audit", "otlp"):
        row = next(line.split() for line in report.splitlines() if line.strip().startswith(sink + " "))
        received, expected, _duplicates, dead = map(int, row[1:5])
        assert received == expected >= 120
        assert dead == 0
    assert ": OK," in report  # govbus audit verify: intact chain and signatures
    assert "every sink received every event" in report
    # No password reaches the output.
    assert "sasl_password" not in out.stdout.lower() + out.stderr.lower()
