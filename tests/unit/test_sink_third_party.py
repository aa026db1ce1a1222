"""The documented third-party sink (examples/third_party_sink): installed with pip into a temporary
directory, found through the ``govbus.sinks`` entry-point group, built and driven like any sink."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _sink_receivers import delivered
from opentelemetry.metrics import get_meter

from govbus.consumers._registry import available_sinks, create_sink, load_factory
from govbus.consumers._spi import Batch, Sink, SinkContext

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "third_party_sink"


def _pip_install(target: Path, scratch: Path) -> None:
    # Build from a copy: setuptools leaves build/ and *.egg-info next to the sources.
    source = shutil.copytree(EXAMPLE, scratch / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)]
    # Offline and fast when the venv can build wheels itself; otherwise pip fetches setuptools.
    if importlib.util.find_spec("wheel") is not None:
        cmd.insert(5, "--no-build-isolation")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_sink_is_found_through_the_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    _pip_install(site, tmp_path)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    try:
        found = available_sinks()
        assert found["acme-summary"].value == "acme_govbus_sink.sink:SummarySink"
        factory = load_factory("acme-summary")
        out = tmp_path / "summary.tsv"
        sink = create_sink("acme-summary", factory, {"path": str(out)})
        assert isinstance(sink, Sink)
        # Structural typing: the package never imports govbus.
        tree = ast.parse((site / "acme_govbus_sink" / "sink.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m.split(".")[0] == "govbus"}
        recs = delivered(3)
        sink.open(SinkContext("acme-summary", "govbus.sink.acme-summary", "t", get_meter("t"), logging.getLogger("t")))
        assert sink.write(Batch(recs)) is None
        sink.flush(1.0)
        sink.close()
        rows = [line.split("\t") for line in out.read_text().splitlines()]
        assert [r[4] for r in rows] == [r.event.event_id for r in recs]
        assert [r[1] for r in rows] == [r.event.kind.value for r in recs]
    finally:
        for name in [m for m in sys.modules if m.startswith("acme_govbus_sink")]:
            del sys.modules[name]
