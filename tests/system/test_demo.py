"""`govbus demo` end to end: sink processes, kernel through the gate, report says every sink got every event."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def test_demo_reports_every_event_in_every_sink(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "govbus",
            "demo",
            "--bootstrap",
            kafka_bootstrap,
            "--events",
            "240",
            "--rate",
            "0",
            "--out",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = out.stdout[out.stdout.index("govbus demo — report") :]
    for sink in ("stdout", "file", "audit", "otlp"):
        row = next(line.split() for line in report.splitlines() if line.strip().startswith(sink + " "))
        received, expected, _duplicates, dead = map(int, row[1:5])
        assert received == expected >= 240
        assert dead == 0
    assert ": OK," in report  # govbus audit verify: intact chain and signatures
    assert "every sink received every event" in report
    assert (tmp_path / "demo" / "audit.ledger").stat().st_size > 0
    assert "• console at http://127.0.0.1:" in out.stdout  # the operator console ran with the demo
