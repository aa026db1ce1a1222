"""The fault suite's harness, shared by tests/system/test_cluster_faults.py, ``make faults`` and
``make soak`` (benchmarks/faults.py): traffic through the real producer (``govbus.producer.Bus``)
into a replicated topic of a :class:`~govbus.localkafka._cluster.LocalCluster`, two sink processes
(``govbus sink run file`` and ``govbus sink run audit``) consuming it, and the policy gate
(``govbus.gate``) admitting an agent every few milliseconds — while a fault is injected.

What is measured, per fault (a :class:`FaultRow`):

- ``emitted``: events whose ``emit()`` returned (each carries its agent's ``seq``, 0, 1, 2, …);
- ``delivered``/``lost``/``duplicates`` per sink: distinct emitted ids in the sink's output, the
  emitted ids missing from it, and output entries beyond the first for an id;
- ``order_violations``: per agent, first appearances in the file sink's output whose ``seq`` is not
  above the agent's previous one (the producer's idempotence must keep per-key order);
- ``max_stall_s``: the longest time between two consecutive first arrivals in the file sink while
  traffic flowed;
- ``recover_s``: from the moment the fault was over (the kill, or the last restart) until the file
  sink held every event emitted before that moment;
- ``gate_denied_s``/``gate_reasons``: how long the gate denied admission, and why (first reasons).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _sinks import SinkProcess, wait_for

from govbus._admin import ensure_topic
from govbus._kernel import producer_status
from govbus._settings import load_settings
from govbus.event import EventKind, GovernanceEvent
from govbus.gate import BusProbe, Gate, parse_policy
from govbus.localkafka._cluster import LocalCluster
from govbus.producer import Bus

AGENTS = 8
PARTITIONS = 6
SINKS = ("file", "audit")
GATE_POLICY = {
    "refresh_interval_s": 0.5,
    "max_staleness_s": 5.0,
    "debounce": {"fail_after": 1, "pass_after": 2},
    "checks": {"broker": {"timeout_s": 2.0}, "sinks": [{"name": "file"}, {"name": "audit"}]},
}
UNDER_MIN_ISR = "fewer in-sync replicas than min.insync.replicas="


@dataclass
class FaultRow:
    fault: str
    emitted: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    order_violations: int = 0
    max_stall_s: float = 0.0
    recover_s: float = 0.0
    gate_denied_s: float = 0.0
    gate_first_denial_s: float | None = None  # after the fault began
    gate_isr_denial_s: float | None = None  # first denial naming min.insync.replicas, after the fault began
    gate_reasons: list[str] = field(default_factory=list)
    producer_spooled: int = 0
    seconds: float = 0.0

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def sink_env(bootstrap: str, topic: str) -> dict[str, str]:
    return {
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GOVBUS_TOPIC": topic,
        "GOVBUS_SINK__COMMIT_INTERVAL_MS": "200",
        "GOVBUS_SINK__BATCH__MAX_WAIT_MS": "5",
        # A killed instance's partitions move on after the session timeout: keep it short.
        "GOVBUS_SINK__CONSUMER": json.dumps({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}),
    }


class Rig:
    """One topic, its producer, its sinks, its gate and the observers around a fault."""

    def __init__(self, cluster: LocalCluster, workdir: Path, *, rate: float = 100.0, name: str = "faults") -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.rate = rate
        self.topic = f"{name}-{uuid.uuid4().hex[:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = sink_env(cluster.bootstrap, self.topic)
        self.outputs: dict[str, list[Path]] = {"file": [workdir / "file-0.jsonl"], "audit": [workdir / "audit.ledger"]}
        self.sinks: dict[str, list[SinkProcess]] = {"file": [], "audit": []}
        self.emitted: dict[str, float] = {}  # event id -> emit() returned (time.time()); under _lock
        self._lock = threading.Lock()  # the traffic thread adds to emitted while others read it
        self.emit_order: list[str] = []
        self.first_seen: dict[str, float] = {}  # file sink, any instance
        self.denials: list[tuple[float, float, str]] = []  # (from, to, first reasons) of the gate
        self.reason_log: list[tuple[float, str]] = []  # (when, reason) as each check joined a denial
        self.max_spooled = 0
        self.steady = False  # a soak: faults do not stop the traffic
        self._stop_traffic = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._bus: Bus | None = None
        self._gate: Gate | None = None
        self._seq: Counter[str] = Counter()
        self.error: BaseException | None = None

    # -- set-up and tear-down -----------------------------------------------------------------

    def start(self) -> Rig:
        ensure_topic(
            {"bootstrap.servers": self.cluster.bootstrap},
            self.topic,
            partitions=PARTITIONS,
            replication_factor=min(3, len(self.cluster.brokers)),
            config={"min.insync.replicas": "2", "unclean.leader.election.enable": "false"},
        )
        for sink in SINKS:
            self.start_sink(sink)
        for procs in self.sinks.values():
            procs[-1].wait_ready(90)
        settings = load_settings(
            topic=self.topic,
            kafka={"bootstrap_servers": self.cluster.bootstrap},
            producer={
                "spool_dir": str(self.workdir / "spool"),
                "close_timeout_ms": 30_000,
                # A small librdkafka queue: records stuck behind a partition that cannot take them
                # (NOT_ENOUGH_REPLICAS, no leader) fill it within seconds and the Bus spools the rest.
                "kafka_queue_max_messages": 400,
            },
        )
        self._bus = Bus(settings)
        policy = parse_policy(GATE_POLICY)
        probe = BusProbe(
            {"bootstrap.servers": self.cluster.bootstrap}, self.topic, producer=producer_status(self._bus, policy)
        )
        self._gate = Gate(policy, probe.run).start()
        for target in (self._traffic, self._watch, self._admit):
            thread = threading.Thread(target=self._guarded(target), daemon=True, name=f"rig-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def start_sink(self, sink: str, *, instance: int | None = None) -> SinkProcess:
        """Start (or restart) a sink process; ``instance`` > 0 adds a member writing its own file."""
        if sink == "file":
            index = instance or 0
            while len(self.outputs["file"]) <= index:
                self.outputs["file"].append(self.workdir / f"file-{len(self.outputs['file'])}.jsonl")
            options = (f"path={self.outputs['file'][index]}",)
        else:
            index = 0
            options = (f"path={self.outputs['audit'][0]}", "fsync=false")
        # Each instance a static member of its own (docs/sinks.md): a second file instance under the
        # first one's group.instance.id would fence it; a restart keeps its id and its seat.
        env = {**self.env, "GOVBUS_SINK__GROUP_INSTANCE_ID": f"faults-{sink}-{index}"}
        proc = SinkProcess(sink, env, *options, log_dir=self.workdir)
        self.sinks[sink].append(proc)
        return proc

    def live_sink(self, sink: str) -> SinkProcess:
        """The first-started sink process of ``sink`` still running (the one a restart replaces)."""
        return next(p for p in self.sinks[sink] if p.proc.poll() is None)

    def close(self) -> None:
        self._stop_traffic.set()
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        if self._gate is not None:
            self._gate.close()
        if self._bus is not None:
            self._bus.close(30)
        for procs in self.sinks.values():
            for p in procs:
                if p.proc.poll() is None:
                    p.terminate(30)
                p.close()

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observing ----------------------------------------------------------------------------

    @property
    def bus(self) -> Bus:
        assert self._bus is not None
        return self._bus

    def delivered_ids(self, sink: str) -> list[str]:
        """Every event id in ``sink``'s output(s), in file order, repeats included."""
        out: list[str] = []
        for path in self.outputs[sink]:
            out += [entry["id"] for entry in _entries(path, sink)]
        return out

    def wait_delivered(self, ids: set[str], timeout: float, sinks: tuple[str, ...] = SINKS) -> None:
        for sink in sinks:
            wait_for(lambda s=sink: ids <= set(self.delivered_ids(s)), timeout, 0.2,  # type: ignore[misc]
                     what=f"{len(ids)} events in the {sink} sink")  # fmt: skip

    def wait_flowing(self, count: int = 200, timeout: float = 60.0) -> None:
        """Until ``count`` more events reached the file sink (traffic is flowing end to end)."""
        start = len(self.first_seen)
        wait_for(lambda: len(self.first_seen) >= start + count, timeout, what=f"{count} more events delivered")

    def stop_traffic(self) -> None:
        self._stop_traffic.set()
        self._threads[0].join(30)
        assert self.bus.flush(120), "the producer did not deliver everything within 120 s"

    def settle(self, timeout: float = 120.0) -> None:
        """Stop the traffic (unless ``steady``: a soak) and wait until both sinks hold every event
        emitted so far (or ``timeout``)."""
        if not self.steady:
            self.stop_traffic()
        wanted = set(self.emitted_now())
        deadline = time.monotonic() + timeout
        for sink in SINKS:
            while not wanted <= set(self.delivered_ids(sink)) and time.monotonic() < deadline:
                time.sleep(0.2)

    def emitted_now(self) -> dict[str, float]:
        """A copy of ``emitted`` (the traffic thread keeps adding to it)."""
        with self._lock:
            return dict(self.emitted)

    def window(self) -> int:
        """Where a soak's fault window begins: the number of events emitted so far."""
        return len(self.emit_order)

    def window_row(self, start: int, label: str, fault: FaultRow) -> FaultRow:
        """The row of the events emitted since ``start`` (a soak minute), with ``fault``'s gate and recovery."""
        with self._lock:
            ids = set(self.emit_order[start:])
        self.wait_delivered(ids, 120)
        row = self.row(label, fault_at=0.0, recover_s=fault.recover_s, seconds=fault.seconds, ids=ids)
        row.gate_denied_s, row.gate_first_denial_s = fault.gate_denied_s, fault.gate_first_denial_s
        row.gate_reasons, row.producer_spooled = fault.gate_reasons, fault.producer_spooled
        row.gate_isr_denial_s = fault.gate_isr_denial_s
        return row

    def recovery_after(self, moment: float, timeout: float = 120.0) -> float:
        """Seconds from ``moment`` (time.time()) until the file sink held every event emitted before it."""
        before = {i for i, t in self.emitted_now().items() if t <= moment}
        try:
            wait_for(lambda: before <= self.first_seen.keys(), timeout, 0.02, what="recovery")
        except AssertionError as exc:
            missing = len(before - self.first_seen.keys())
            raise AssertionError(
                f"{exc}: {missing} of {len(before)} events not in the file sink; {self.diagnosis()}"
            ) from None
        return max((self.first_seen[i] for i in before), default=moment) - moment

    def diagnosis(self) -> str:
        """What a timed-out wait needs to say: each sink process alive or its exit and last words,
        and the producer's counters."""
        parts = []
        for sink, procs in self.sinks.items():
            for p in procs:
                code = p.proc.poll()
                if code is None:
                    parts.append(f"{sink} sink pid {p.proc.pid} running")
                else:
                    last = [line for line in p.log().splitlines() if line.strip()][-1:] or ["(no log)"]
                    parts.append(f"{sink} sink pid {p.proc.pid} EXITED {code}: {last[0][:400]}")
        health = self.bus.health()
        parts.append(f"producer {health.state}: {health.counters}")
        return "; ".join(parts)

    def row(
        self, fault: str, *, fault_at: float, recover_s: float, seconds: float, ids: set[str] | None = None
    ) -> FaultRow:
        if self.error is not None:
            raise self.error
        wanted = set(self.emitted_now()) if ids is None else ids
        result = FaultRow(fault, emitted=len(wanted), recover_s=round(recover_s, 2), seconds=round(seconds, 1))
        for sink in SINKS:
            ids = [i for i in self.delivered_ids(sink) if i in wanted]
            result.delivered[sink] = len(set(ids))
            result.lost[sink] = len(wanted - set(ids))
            result.duplicates[sink] = len(ids) - len(set(ids))
        result.order_violations = self.order_violations()
        arrivals = sorted(self.first_seen[i] for i in wanted if i in self.first_seen)
        result.max_stall_s = round(max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0), 2)
        denied = [(a, b, why) for a, b, why in self.denials if b >= fault_at]
        result.gate_denied_s = round(sum(b - max(a, fault_at) for a, b, _ in denied), 2)
        if denied:
            result.gate_first_denial_s = round(max(denied[0][0], fault_at) - fault_at, 2)
        logged = [(t, why) for t, why in self.reason_log if t >= fault_at]
        result.gate_reasons = list(dict.fromkeys(why[:90] for _, why in logged))[:8]
        isr = [t for t, why in logged if UNDER_MIN_ISR in why]
        result.gate_isr_denial_s = round(isr[0] - fault_at, 2) if isr else None
        result.producer_spooled = self.max_spooled
        return result

    def order_violations(self) -> int:
        """Per agent, first appearances in the file sink output (each file in order) with a seq not
        above the agent's previous one. Several file instances: each file on its own (a partition's
        records move between instances at a rebalance, but never interleave within one file)."""
        bad = 0
        seen: set[str] = set()
        for path in self.outputs["file"]:
            last: dict[str, int] = {}
            for entry in _entries(path, "file"):
                if entry["id"] in seen:
                    continue
                seen.add(entry["id"])
                data = entry["data"]
                seq = int(data["attributes"]["seq"])
                agent = data["agent_id"]
                if seq <= last.get(agent, -1):
                    bad += 1
                last[agent] = seq
        return bad

    # -- the threads --------------------------------------------------------------------------

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.error = exc
                self._stop_traffic.set()

        run.__name__ = target.__name__
        return run

    def _traffic(self) -> None:
        bus = self.bus
        started = time.monotonic()
        n = 0
        while not self._stop_traffic.is_set():
            delay = started + n / self.rate - time.monotonic()
            if delay > 0:
                self._stop_traffic.wait(delay)  # pacing the load generator, not awaiting the system
                continue
            agent = f"agent-{n % AGENTS}"
            seq = self._seq[agent]
            self._seq[agent] += 1
            event = GovernanceEvent(
                agent_id=agent,
                kind=EventKind.RESOURCE_ACCESS,
                action="faults.step",
                attributes={"seq": seq},
            )
            bus.emit(event)
            with self._lock:
                self.emitted[event.event_id] = time.time()
                self.emit_order.append(event.event_id)
            n += 1

    def _watch(self) -> None:
        positions: dict[Path, tuple[int, bytes]] = {}
        while not self._stop.is_set():
            now = time.time()
            for path in list(self.outputs["file"]):
                if not path.exists():
                    continue
                pos, rest = positions.get(path, (0, b""))
                with path.open("rb") as fh:
                    fh.seek(pos)
                    data = fh.read()
                lines = (rest + data).split(b"\n")
                positions[path] = (pos + len(data), lines.pop())
                for line in lines:
                    if line.strip():
                        self.first_seen.setdefault(json.loads(line)["id"], now)
            if self._bus is not None:
                self.max_spooled = max(self.max_spooled, self._bus.counters().spooled)
            self._stop.wait(0.02)

    def _admit(self) -> None:
        assert self._gate is not None
        current: int | None = None  # index of the denial in progress
        named: set[str] = set()  # checks already logged in the denial in progress
        while not self._stop.is_set():
            decision = self._gate.admit("fault-suite")
            now = time.time()
            if decision.allowed:
                current = None
                named = set()
                self._stop.wait(0.02)
                continue
            if current is None:
                self.denials.append((now, now, "; ".join(decision.reasons)))
                current = len(self.denials) - 1
            else:
                since, _, why = self.denials[current]
                self.denials[current] = (since, now, why)
            for reason in decision.reasons:
                name = reason.split(": ", 1)[0]
                if name not in named:  # the first time each check takes part in this denial
                    named.add(name)
                    self.reason_log.append((now, reason))
            self._stop.wait(0.02)


def _entries(path: Path, sink: str) -> Iterator[dict[str, Any]]:
    """Complete JSON lines of a file-sink output (CloudEvents) or an audit ledger's event entries."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # after the last newline: empty, or a line being written
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        if sink == "audit":
            if entry.get("type") == "event":
                yield entry["event"]
        else:
            yield entry


# -- the faults -------------------------------------------------------------------------------------


def leader_kill(rig: Rig) -> FaultRow:
    """SIGKILL the leader of the busiest partitions (the broker leading most of the topic)."""
    cluster = rig.cluster
    started = time.monotonic()
    rig.wait_flowing()
    leaders = Counter(cluster.leaders(rig.topic).values())
    victim = leaders.most_common(1)[0][0]
    fault_at = time.time()
    cluster.kill_broker(victim)
    rig.wait_flowing(100)
    recover = rig.recovery_after(fault_at)
    cluster.start_broker(victim)
    cluster.wait_in_sync(timeout=120)
    rig.wait_flowing(100)
    rig.settle()
    return rig.row(f"SIGKILL leader (broker {victim})", fault_at=fault_at, recover_s=recover,
                   seconds=time.monotonic() - started)  # fmt: skip


def rolling_restart(rig: Rig) -> FaultRow:
    """Restart every broker in turn (controlled shutdown), each once the cluster is back in sync."""
    cluster = rig.cluster
    started = time.monotonic()
    rig.wait_flowing()
    fault_at = time.time()
    for broker in sorted(cluster.brokers):
        cluster.stop_broker(broker)
        rig.wait_flowing(50)
        cluster.start_broker(broker)
        cluster.wait_in_sync(timeout=120)
    done_at = time.time()
    recover = rig.recovery_after(done_at)
    rig.settle()
    return rig.row("rolling restart of 3 brokers", fault_at=fault_at, recover_s=recover,
                   seconds=time.monotonic() - started)  # fmt: skip


def two_down(rig: Rig, *, outage_s: float = 8.0) -> FaultRow:
    """SIGKILL two of three brokers: ISR 1 < min.insync.replicas 2. The gate must deny with that
    reason, the producer must hold (spool) what it accepts; one broker back: both recover."""
    cluster = rig.cluster
    started = time.monotonic()
    rig.wait_flowing()
    victims = sorted(cluster.brokers)[:2]
    fault_at = time.time()
    for broker in victims:
        cluster.kill_broker(broker)
    # Bounded generously: on a saturated machine one gate refresh (every check in turn) can take seconds.
    try:
        wait_for(
            lambda: any(UNDER_MIN_ISR in why for _, why in rig.reason_log), 90, what="the gate's under-min-ISR denial"
        )
    except AssertionError:
        if not rig.steady:
            raise
        # A soak goes on: its row shows the gate's reasons and no ISR denial time (what the test asserts).
    # The outage lasts a while with traffic flowing into it: the producer must keep what emit() took.
    deadline = time.monotonic() + outage_s
    while time.monotonic() < deadline:
        time.sleep(0.1)  # the outage's length is the scenario's input, not an await
    back_at = time.time()
    cluster.start_broker(victims[0])
    recover = rig.recovery_after(back_at)
    wait_for(lambda: rig._gate is not None and rig._gate.admit("probe").allowed, 60, what="the gate admitting again")
    cluster.start_broker(victims[1])
    cluster.wait_in_sync(timeout=120)
    rig.settle()
    return rig.row("2 of 3 brokers down", fault_at=fault_at, recover_s=recover, seconds=time.monotonic() - started)


def sink_killed_in_failover(rig: Rig) -> FaultRow:
    """SIGKILL the leader broker and, while its partitions fail over, SIGKILL both sinks; restart them."""
    cluster = rig.cluster
    started = time.monotonic()
    rig.wait_flowing()
    victim = Counter(cluster.leaders(rig.topic).values()).most_common(1)[0][0]
    fault_at = time.time()
    cluster.kill_broker(victim)
    for sink in SINKS:
        rig.live_sink(sink).kill()
    for sink in SINKS:
        rig.start_sink(sink)
    rig.wait_flowing(100, timeout=120)
    recover = rig.recovery_after(fault_at)
    cluster.start_broker(victim)
    cluster.wait_in_sync(timeout=120)
    rig.settle()
    return rig.row(f"sinks SIGKILLed in a failover (broker {victim})", fault_at=fault_at, recover_s=recover,
                   seconds=time.monotonic() - started)  # fmt: skip


def coordinator_kill(rig: Rig) -> FaultRow:
    """A second file-sink instance joins (a rebalance starts) and the group coordinator's broker is SIGKILLed."""
    cluster = rig.cluster
    started = time.monotonic()
    rig.wait_flowing()
    group = "govbus.sink.file"
    victim = cluster.coordinator(group)
    joined = rig.start_sink("file", instance=len(rig.outputs["file"]))
    fault_at = time.time()
    cluster.kill_broker(victim)
    rig.wait_flowing(100, timeout=120)
    recover = rig.recovery_after(fault_at)
    cluster.start_broker(victim)
    cluster.wait_in_sync(timeout=120)
    assert joined.terminate(60) == 0  # it leaves again (a graceful rebalance): a soak keeps its shape
    rig.settle()
    return rig.row(f"group coordinator SIGKILLed in a rebalance (broker {victim})", fault_at=fault_at,
                   recover_s=recover, seconds=time.monotonic() - started)  # fmt: skip


FAULTS: dict[str, Callable[[Rig], FaultRow]] = {
    "leader-kill": leader_kill,
    "rolling-restart": rolling_restart,
    "two-down": two_down,
    "sink-kill-in-failover": sink_killed_in_failover,
    "coordinator-kill": coordinator_kill,
}


def process_stats(pid: int) -> dict[str, int]:
    """RSS (kB) and open file descriptors of ``pid`` (Linux /proc); -1 where unknown."""
    rss = fds = -1
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return {"pid": pid, "rss_kb": rss, "fds": fds}


def table(rows: list[FaultRow]) -> str:
    """The rows as a fixed-width text table."""
    head = (f"{'fault':<58} {'emitted':>7} {'file':>6} {'audit':>6} {'lost':>5} {'dup f/a':>8} {'order':>5} "
            f"{'stall s':>7} {'recover s':>9} {'gate denied s':>13}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in rows:
        dup = f"{r.duplicates.get('file', 0)}/{r.duplicates.get('audit', 0)}"
        lines.append(
            f"{r.fault[:58]:<58} {r.emitted:>7} {r.delivered.get('file', 0):>6} {r.delivered.get('audit', 0):>6} "
            f"{r.total_lost:>5} {dup:>8} {r.order_violations:>5} {r.max_stall_s:>7.2f} {r.recover_s:>9.2f} "
            f"{r.gate_denied_s:>13.2f}"
        )
    return "\n".join(lines)
