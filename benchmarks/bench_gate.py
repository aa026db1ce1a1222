"""Policy gate: admit() latency on the caller's thread, refresh cost, broker loss → first denial."""

from __future__ import annotations

import gc
import time
from typing import Any

from _harness import Row, machine, percentile

from govbus._admin import ensure_topic
from govbus.gate import BusProbe, Gate, parse_policy

N = 200_000


def _admit_latencies(gate: Gate) -> list[float]:
    admit = gate.admit
    clock = time.perf_counter_ns
    samples = [0.0] * N
    gc.disable()
    try:
        for i in range(N):
            t0 = clock()
            admit("agent-1")
            samples[i] = (clock() - t0) / 1000.0
    finally:
        gc.enable()
    samples.sort()
    return samples


def run(ctx: Any) -> list[Row]:
    bootstrap = ctx.bootstrap()
    topic = "bench.gate"
    ensure_topic({"bootstrap.servers": bootstrap}, topic, partitions=6)
    policy = parse_policy({"refresh_interval_s": 0.5, "debounce": 1, "checks": {"producer": {"enabled": False}}})
    probe = BusProbe({"bootstrap.servers": bootstrap}, topic)
    rows: list[Row] = []
    with Gate(policy, probe.run) as gate:
        assert gate.admit("warm").allowed
        lat = _admit_latencies(gate)
        cond = f"{N} calls, one thread, refresher running (0.5 s), broker+topic checks; {machine()}"
        rows.append(Row("admit p50", percentile(lat, 50), "us", conditions=cond))
        rows.append(Row("admit p99", percentile(lat, 99), "us", conditions=cond))
        rows.append(Row("admit p999", percentile(lat, 99.9), "us", conditions=cond))
        refresh: list[float] = []
        for _ in range(50):
            t0 = time.perf_counter()
            gate.refresh()
            refresh.append((time.perf_counter() - t0) * 1000)
        refresh.sort()
        rows.append(
            Row("gate refresh p50", percentile(refresh, 50), "ms", conditions="broker + topic/ISR checks, local broker")
        )

    # Outage on a broker of its own, so the other benchmarks' broker stays up.
    from govbus.localkafka import LocalBroker

    broker = LocalBroker.ephemeral()
    info = broker.start()
    try:
        ensure_topic({"bootstrap.servers": info.bootstrap}, topic, partitions=3)
        timeout, interval = 1.0, 0.5
        outage = parse_policy(
            {
                "refresh_interval_s": interval,
                "debounce": 1,
                "checks": {"broker": {"timeout_s": timeout}, "producer": {"enabled": False}},
            }
        )
        with Gate(outage, BusProbe({"bootstrap.servers": info.bootstrap}, topic).run) as gate:
            assert gate.admit("a").allowed
            broker.kill()  # abrupt loss, as a crash or a partition looks to the client
            lost = time.monotonic()
            while gate.admit("a").allowed:
                time.sleep(0.001)
            denied_after = (time.monotonic() - lost) * 1000
        rows.append(
            Row(
                "broker loss to first denial",
                denied_after,
                "ms",
                baseline=(timeout + interval) * 1000,
                conditions=f"SIGKILL of the broker; policy timeout {timeout:g} s + refresh {interval:g} s = baseline",
            )
        )
    finally:
        broker.close()
    return rows
