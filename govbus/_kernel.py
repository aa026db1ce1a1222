"""A sample kernel: agents asking the gate for admission and emitting governance events.

``govbus kernel demo`` runs it from ``GOVBUS_*`` settings (the compose and Kubernetes demo
kernel); :func:`run_kernel` is the same loop for ``govbus demo``.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from govbus._sample import sample_events
from govbus.gate import BusProbe, ComponentStatus, Gate, GatePolicy


@dataclasses.dataclass
class KernelStats:
    emitted: int = 0
    admissions: int = 0
    denials: int = 0
    skipped: int = 0  # events not emitted because their agent was denied
    started: float = dataclasses.field(default_factory=time.monotonic)
    emitted_ids: list[str] = dataclasses.field(default_factory=list)


def producer_status(bus: Any, policy: GatePolicy) -> Callable[[], ComponentStatus]:
    """The gate's producer check, read from the Bus's health snapshot (no I/O)."""
    limit = policy.checks.producer.max_spool_fraction

    def status() -> ComponentStatus:
        health = bus.health()
        if not health.ok:
            return ComponentStatus(False, health.reason)
        if health.admission_blocked:
            return ComponentStatus(False, "spool above its high-water mark (on_spool_full=deny-admission)")
        if health.spool_fraction > limit:
            return ComponentStatus(False, f"spool {health.spool_fraction:.0%} full, above {limit:.0%}")
        return ComponentStatus(True, f"{health.state}, spool {health.spool_fraction:.0%}")

    return status


def run_kernel(
    bus: Any,
    gate: Gate,
    *,
    count: int,
    rate: float,
    stop: threading.Event,
    keep_ids: bool = False,
    session_size: int = 50,
) -> KernelStats:
    """Emits ``count`` events (0: until ``stop``) at about ``rate`` per second through the gate.

    Each agent session is admitted once, when it starts; a denied session's events are not
    emitted (the agent does not run), and it asks again at its next event.
    """
    stats = KernelStats()
    admitted: set[str] = set()
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    i = 0
    while not stop.is_set() and (count == 0 or i < count):
        batch = min(count - i, 10_000) if count else 10_000
        for event in sample_events(batch, seed=7 + i, session_size=session_size):
            if stop.is_set():
                break
            session = event.session_id or event.agent_id
            if session not in admitted:
                decision = gate.admit(event.agent_id)
                if decision.allowed:
                    admitted.add(session)
                    stats.admissions += 1
                else:
                    stats.denials += 1
            if session in admitted:
                bus.emit(event)
                stats.emitted += 1
                if keep_ids:
                    stats.emitted_ids.append(event.event_id)
            else:
                stats.skipped += 1
            i += 1
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
    return stats


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kernel = sub.add_parser("kernel", help="sample kernels")
    ksub = kernel.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    demo = ksub.add_parser(
        "demo", help="emit a realistic mix of governance events through the gate (GOVBUS_* settings)"
    )
    demo.add_argument("--events", type=int, default=0, help="how many (default 0: until SIGTERM/Ctrl-C)")
    demo.add_argument(
        "--rate", type=float, default=100.0, help="events per second (default 100; 0: as fast as possible)"
    )
    demo.add_argument("--policy", help="gate policy file (default GOVBUS_GATE__POLICY_FILE)")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from govbus._settings import load_settings
    from govbus.gate._cli import build_policy, signing_status
    from govbus.producer import Bus

    settings = load_settings()
    policy = build_policy(settings, Path(args.policy) if args.policy else None)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Bus(settings) as bus:
        probe = BusProbe(
            settings.kafka.librdkafka(),
            settings.topic,
            producer=producer_status(bus, policy),
            signing=lambda: signing_status(settings),
        )
        with Gate(policy, probe.run, recorder=bus.emit) as gate:
            stats = run_kernel(bus, gate, count=args.events, rate=args.rate, stop=stop)
        bus.flush(30)
        c = bus.counters()
    print(
        f"emitted {stats.emitted} events ({stats.admissions} sessions admitted, {stats.denials} denials, "
        f"{stats.skipped} events not run); delivered {c.delivered}, spooled {c.spooled}, failed {c.failed}",
        flush=True,
    )
    return 0
