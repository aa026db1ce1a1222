"""Shared plumbing for the benchmarks: result rows, percentiles, and the broker they run against."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")
UNITS = {"us", "ms", "ev/s"}


@dataclass(frozen=True)
class Row:
    """One line of ``benchmarks/results.json``.

    ``baseline`` is the comparable figure measured in the same run (raw confluent-kafka, AGT's
    processor, per-event signing…) or None; ``ratio`` is value / baseline.
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    conditions: str = ""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} not in {sorted(UNITS)}")

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return round(self.value / self.baseline, 3)

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        out["value"] = round(self.value, 3)
        out["baseline"] = None if self.baseline is None else round(self.baseline, 3)
        out["ratio"] = self.ratio
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in [0, 100])."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write(rows: Sequence[Row], *, keep_others: bool = False) -> None:
    """Writes ``rows``; ``keep_others``: over the rows already there, by name (a run of some benchmarks
    replaces their rows in place and keeps every other benchmark's)."""
    out = [r.as_json() for r in rows]
    if keep_others and RESULTS.exists():
        new = {row["name"]: row for row in out}
        old = json.loads(RESULTS.read_text())
        kept = [new.pop(row["name"], row) for row in old]
        out = kept + [row for row in out if row["name"] in new]
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


def aggregate(rounds: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per name over several rounds of the same benchmarks: the median value and the
    median baseline (each round measured its baseline side by side), the range of both and of the
    per-round ratio in the conditions. The machine is shared and noisy: one run is an anecdote."""
    order: dict[str, list[Row]] = {}
    for rows in rounds:
        for row in rows:
            order.setdefault(row.name, []).append(row)
    out = []
    for name, rows in order.items():
        last = rows[-1]
        if len(rows) == 1:
            out.append(last)
            continue
        values = [r.value for r in rows]
        baselines = [r.baseline for r in rows if r.baseline is not None]
        ratios = [r.ratio for r in rows if r.ratio is not None]
        spread = f"median of {len(rows)} rounds, range {min(values):.4g}-{max(values):.4g} {last.unit}"
        if len(ratios) > 1:
            spread += f", ratio {min(ratios):.3g}-{max(ratios):.3g}"
        out.append(
            Row(
                name,
                statistics.median(values),
                last.unit,
                statistics.median(baselines) if baselines else None,
                f"{spread}; {last.conditions}",
            )
        )
    return out


def table(rows: Sequence[Row]) -> str:
    head = f"{'name':<34} {'value':>12} {'unit':<5} {'baseline':>12} {'ratio':>7}  conditions"
    lines = [head, "-" * len(head)]
    for r in rows:
        base = "" if r.baseline is None else f"{r.baseline:12.2f}"
        ratio = "" if r.ratio is None else f"{r.ratio:7.2f}"
        lines.append(f"{r.name:<34} {r.value:12.2f} {r.unit:<5} {base:>12} {ratio:>7}  {r.conditions}")
    return "\n".join(lines)
