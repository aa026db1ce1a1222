"""benchmarks/_harness.write: a filtered run (`run.py NAME`) replaces its rows and keeps the others'."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_harness", ROOT / "benchmarks" / "_harness.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "_bench_harness", module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results.json")
    return module


def _names_values(path: Path) -> list[tuple[str, float]]:
    return [(row["name"], row["value"]) for row in json.loads(path.read_text())]


def test_filtered_run_replaces_its_rows_in_place_and_keeps_the_rest(harness: ModuleType) -> None:
    row = harness.Row
    harness.write([row("a", 1.0, "us"), row("b", 2.0, "us"), row("c", 3.0, "us")])
    harness.write([row("b", 20.0, "us"), row("d", 4.0, "us")], keep_others=True)
    assert _names_values(harness.RESULTS) == [("a", 1.0), ("b", 20.0), ("c", 3.0), ("d", 4.0)]


def test_full_run_writes_only_its_rows(harness: ModuleType) -> None:
    row = harness.Row
    harness.write([row("a", 1.0, "us"), row("b", 2.0, "us")])
    harness.write([row("b", 5.0, "us")])
    assert _names_values(harness.RESULTS) == [("b", 5.0)]


def test_rounds_aggregate_to_the_median_with_the_range(harness: ModuleType) -> None:
    row = harness.Row
    rounds = [
        [row("x", 10.0, "ev/s", 100.0, "c"), row("only-once", 1.0, "us")],
        [row("x", 30.0, "ev/s", 100.0, "c")],
        [row("x", 20.0, "ev/s", 50.0, "c")],
    ]
    x, once = harness.aggregate(rounds)
    assert (x.name, x.value, x.baseline, x.ratio) == ("x", 20.0, 100.0, 0.2)
    assert x.conditions == "median of 3 rounds, range 10-30 ev/s, ratio 0.1-0.4; c"
    assert once == row("only-once", 1.0, "us")
