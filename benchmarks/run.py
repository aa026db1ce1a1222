"""Runs every ``benchmarks/bench_*.py``, prints a table and writes ``benchmarks/results.json``.

Each benchmark module exposes ``run(ctx: Context) -> list[Row]``. Benchmarks that need Kafka call
``ctx.bootstrap()``, which starts one local Apache Kafka broker for the whole run (or uses
``GOVBUS_TEST_BOOTSTRAP``) so every figure and its baseline share a broker.

Usage: python benchmarks/run.py [name-filter ...]   (with filters, only the rows of the benchmarks
that ran are replaced in results.json)

Every benchmark runs ``GOVBUS_BENCH_ROUNDS`` times (default 3, interleaved); each row written is the
median of its rounds, with the range of the value and of the ratio in its conditions.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Row, aggregate, table, write


class Context:
    def __init__(self) -> None:
        self._bootstrap: str | None = os.environ.get("GOVBUS_TEST_BOOTSTRAP")
        self._broker: object | None = None

    def bootstrap(self) -> str:
        if self._bootstrap is None:
            from govbus.localkafka import LocalBroker

            broker = LocalBroker.ephemeral()
            info = broker.start()
            self._broker = broker
            self._bootstrap = info.bootstrap
            print(f"# Apache Kafka {info.version} at {info.bootstrap}", flush=True)
        return self._bootstrap

    def close(self) -> None:
        if self._broker is not None:
            self._broker.stop()  # type: ignore[attr-defined]


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    wanted = argv[1:]
    rounds = int(os.environ.get("GOVBUS_BENCH_ROUNDS", "3"))
    ctx = Context()
    runs: list[list[Row]] = []
    failed: list[str] = []
    try:
        # Rounds interleave the benchmarks (all of them, then all again) so a burst of load on the
        # shared machine lands in one round of several rows, not in every round of one row.
        for number in range(1, rounds + 1):
            rows: list[Row] = []
            for path in sorted(Path(__file__).parent.glob("bench_*.py")):
                if wanted and not any(w in path.stem for w in wanted):
                    continue
                print(f"# round {number}/{rounds}: {path.stem} …", flush=True)
                started = time.monotonic()
                try:
                    rows.extend(_load(path).run(ctx))
                except Exception:
                    traceback.print_exc()
                    if path.stem not in failed:
                        failed.append(path.stem)
                print(f"#   {time.monotonic() - started:.1f} s", flush=True)
            runs.append(rows)
    finally:
        ctx.close()
    rows = aggregate(runs)
    # A filtered run updates its own rows and keeps the others' figures.
    write(rows, keep_others=bool(wanted))
    print(table(rows))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
