"""Faults of a replicated local cluster as a table of figures: ``make faults`` and ``make soak``.

    python benchmarks/faults.py faults [--rate 100]
        every fault of tests/_faults.FAULTS once, each on a fresh topic with its own producer, file
        and audit sink processes and gate; prints a row per fault and writes benchmarks/faults.json.

    python benchmarks/faults.py soak --minutes N [--rate 100] [--seed 7]
        the same topology on one topic at a steady rate for N minutes, a fault every minute (chosen
        from the list with a seeded random generator); a row per fault (events emitted during its
        minute), then RSS and open file descriptors of every process at start and end; writes
        benchmarks/soak.json.

Exit status 1 if any row lost an event or broke per-agent order.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from _faults import FAULTS, FaultRow, Rig, process_stats, table

from govbus.localkafka._cluster import LocalCluster

HERE = Path(__file__).parent


def run_faults(rate: float) -> list[FaultRow]:
    rows: list[FaultRow] = []
    with tempfile.TemporaryDirectory(prefix="govbus-faults-") as tmp, LocalCluster.ephemeral(brokers=3) as cluster:
        print(f"# cluster {cluster.info.bootstrap} up in {cluster.info.startup_seconds:.1f} s", flush=True)
        for name, fault in FAULTS.items():
            print(f"# {name} …", flush=True)
            with Rig(cluster, Path(tmp) / name, rate=rate, name=name) as rig:
                rows.append(fault(rig))
            print(table(rows[-1:]), flush=True)
    return rows


def run_soak(minutes: float, rate: float, seed: int) -> tuple[list[FaultRow], dict[str, Any]]:
    """A fault every minute on one steady stream; rows count the events emitted in each fault's minute."""
    rng = random.Random(seed)
    rows: list[FaultRow] = []
    with tempfile.TemporaryDirectory(prefix="govbus-soak-") as tmp, LocalCluster.ephemeral(brokers=3) as cluster:
        print(f"# cluster {cluster.info.bootstrap} up in {cluster.info.startup_seconds:.1f} s", flush=True)
        with Rig(cluster, Path(tmp), rate=rate, name="soak") as rig:
            rig.steady = True
            rig.wait_flowing()
            start_stats = _stats(cluster, rig)
            soak_started = time.time()
            ends = time.monotonic() + minutes * 60
            round_no = 0
            while time.monotonic() < ends:
                # A fault every minute; one that takes longer (a rolling restart) delays the next.
                minute_ends = time.monotonic() + 60
                name = rng.choice(list(FAULTS))
                round_no += 1
                print(f"# minute {round_no}: {name}", flush=True)
                window = rig.window()
                row = FAULTS[name](rig)
                # Steady traffic for the rest of the minute (the fault's own waits are part of it).
                while time.monotonic() < minute_ends:
                    time.sleep(0.5)  # the soak's pace, not an await
                rows.append(rig.window_row(window, f"{round_no:>2} {row.fault}", row))
                print(table(rows[-1:]), flush=True)
            rig.steady = False
            rig.settle()
            end_stats = _stats(cluster, rig)
            # The whole soak: gate denied = every denial since the traffic started.
            final = rig.row("whole soak", fault_at=soak_started, recover_s=0.0, seconds=minutes * 60)
            rows.append(final)
    processes = {name: {"start": start_stats.get(name), "end": end_stats.get(name)} for name in end_stats}
    return rows, processes


def _stats(cluster: LocalCluster, rig: Rig) -> dict[str, dict[str, int]]:
    import os

    out = {f"kafka node {node}": process_stats(pid) for node, pid in cluster.pids().items()}
    for sink, procs in rig.sinks.items():
        live = [p for p in procs if p.proc.poll() is None]
        for i, p in enumerate(live):
            # The sink's process, whichever pid it has now (a fault may have restarted it).
            out[f"sink {sink}" + (f" (member {i + 1})" if i else "")] = process_stats(p.proc.pid)
    out["producer + gate (this process)"] = process_stats(os.getpid())
    return out


def process_table(processes: dict[str, Any]) -> str:
    head = f"{'process':<34} {'RSS start MB':>12} {'RSS end MB':>10} {'fds start':>9} {'fds end':>7}"
    lines = [head, "-" * len(head)]
    for name, both in processes.items():
        start, end = both["start"] or {}, both["end"] or {}
        lines.append(
            f"{name:<34} {start.get('rss_kb', -1) / 1024:>12.0f} {end.get('rss_kb', -1) / 1024:>10.0f} "
            f"{start.get('fds', -1):>9} {end.get('fds', -1):>7}"
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("faults", "soak"))
    parser.add_argument("--rate", type=float, default=100.0, help="events per second (default 100)")
    parser.add_argument("--minutes", type=float, default=5.0, help="soak length (default 5)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the soak's fault choice (default 7)")
    args = parser.parse_args(argv[1:])
    # The gate's open/closed transitions (with reasons) and the producer's warnings, as they happen.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("govbus.gate").setLevel(logging.INFO)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    report: dict[str, Any] = {"started": started, "rate_per_s": args.rate, "machine": _machine()}
    if args.mode == "faults":
        rows = run_faults(args.rate)
        out = HERE / "faults.json"
    else:
        rows, processes = run_soak(args.minutes, args.rate, args.seed)
        report.update(minutes=args.minutes, seed=args.seed, processes=processes)
        out = HERE / "soak.json"
    report["rows"] = [r.as_json() for r in rows]
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(rows))
    if args.mode == "soak":
        print()
        print(process_table(report["processes"]))
    print(f"\nwritten to {out}")
    bad = [r.fault for r in rows if r.total_lost or r.order_violations]
    if bad:
        print(f"LOST OR REORDERED EVENTS in: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
