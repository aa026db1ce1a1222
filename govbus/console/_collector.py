"""The console's view of the bus, refreshed in the background; pages only read the latest snapshot.

Every read is bounded: admin calls and scrapes carry timeouts, the topic is read by one assigned
(group-less) consumer (:mod:`._tail`), and an unreachable broker turns into a message on the page
over the last data that was read, never into a waiting request.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from govbus._settings import GovbusSettings
from govbus.console._classes import sink_class
from govbus.console._lagprobe import LagProbe
from govbus.console._scrape import SinkHealth, scrape
from govbus.console._settings import ConsoleSettings
from govbus.console._tail import RawRecord, TailReader
from govbus.consumers._dlq import DeadLetter
from govbus.consumers._lag import SINK_GROUP_PREFIX, GroupLag

__all__ = ["AuditView", "Collector", "EventRow", "GateView", "KeptDeadLetter", "Sample", "SinkView", "Snapshot"]

log = logging.getLogger("govbus.console")
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
GATE_ACTION = "govbus.gate.admit"  # the action of the events the gate records its decisions as


@dataclasses.dataclass(frozen=True, slots=True)
class EventRow:
    """One record of the event topic as the events page shows it (``error`` set: undecodable)."""

    partition: int
    offset: int
    timestamp_ms: int | None
    id: str = ""
    time: str = ""
    kind: str = ""
    agent_id: str = ""
    session_id: str = ""
    severity: str = ""
    action: str = ""
    decision: str = ""
    reason: str = ""
    policy_name: str = ""
    producer: str = ""
    producer_host: str = ""
    producer_instance: str = ""
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CheckView:
    name: str
    ok: bool
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class GateView:
    checked_at: datetime
    allowed: bool
    mode: str
    checks: tuple[CheckView, ...]
    reasons: tuple[str, ...]
    policy: str


@dataclasses.dataclass(frozen=True, slots=True)
class AuditView:
    path: str
    checked_at: datetime
    ok: bool
    entries: int = 0
    events: int = 0
    checkpoints: int = 0
    signatures_verified: int = 0
    head: str = ""
    problem: str | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One point of history: when, the topic's end offsets, each sink's lag and committed offsets."""

    t: float
    topic_end: int
    lag: dict[str, dict[int, int]]
    committed: dict[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class SinkView:
    name: str
    group: str
    cls: str
    cls_declared: bool  # False: the shipped default for its name (no live member declares one)
    state: str
    members: int
    lag: int
    partitions: tuple[Any, ...]
    dlq_topic: str
    dead_letters: int
    health: SinkHealth | None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    taken_at: datetime | None
    topic: str
    partitions: tuple[tuple[int, int, int], ...] = ()  # (partition, low, high)
    sinks: tuple[SinkView, ...] = ()
    gate: GateView | None = None
    gate_error: str | None = None
    audit: AuditView | None = None
    history: tuple[Sample, ...] = ()
    broker_error: str | None = None
    broker_error_since: datetime | None = None
    events: tuple[EventRow, ...] = ()
    dead_letters: dict[str, tuple[KeptDeadLetter, ...]] = dataclasses.field(default_factory=dict)

    @property
    def topic_end(self) -> int:
        return sum(h for _, _, h in self.partitions)

    def sink(self, name: str) -> SinkView | None:
        return next((s for s in self.sinks if s.name == name), None)

    def rate(self, points: int = 5) -> float:
        """Events per second produced to the topic over the last ``points`` samples."""
        h = self.history[-points:]
        if len(h) < 2 or h[-1].t <= h[0].t:
            return 0.0
        return max(0.0, (h[-1].topic_end - h[0].topic_end) / (h[-1].t - h[0].t))

    def sink_rate(self, sink: str, points: int = 5) -> float:
        h = [s for s in self.history[-points:] if sink in s.committed]
        if len(h) < 2 or h[-1].t <= h[0].t:
            return 0.0
        return max(0.0, (h[-1].committed[sink] - h[0].committed[sink]) / (h[-1].t - h[0].t))


class Collector:
    """Reads the bus every ``refresh_s`` on its own thread and publishes a :class:`Snapshot`."""

    def __init__(self, settings: GovbusSettings, console: ConsoleSettings | None = None) -> None:
        self.settings = settings
        self.console = console or settings_console(settings)
        self.topic = settings.topic
        self.conf = settings.kafka.librdkafka()
        admin_conf: dict[str, Any] = {**self.conf, "logger": log}
        self._admin = AdminClient(admin_conf)
        # Sink groups' lag from a child process (librdkafka#4605: see _lagprobe).
        self._lag = LagProbe(self.conf)
        self._decoder: Any = None
        self._tail = TailReader(
            self.conf, keep={self.topic: self.console.events_kept}, transform={self.topic: self._event_row}
        )
        self._history: collections.deque[Sample] = collections.deque(maxlen=self.console.history_points)
        self._snapshot = Snapshot(None, self.topic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="govbus-console-collect", daemon=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(6, thread_name_prefix="govbus-console-read")
        self._gate: Any = None
        self._gate_policy_name = ""
        self._audit_at = 0.0
        self._audit: AuditView | None = None
        self._broker_error_since: datetime | None = None
        self._last_good: Snapshot | None = None
        self.refreshes = 0
        self.refreshed = threading.Condition()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Collector:
        self._tail.start()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.console.timeout_s * 6 + 5)
        self._lag.close()
        self._tail.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def wait_refreshes(self, count: int, timeout: float) -> bool:
        """Blocks until ``count`` more refreshes finished (tests, start-up)."""
        with self.refreshed:
            target = self.refreshes + count
            return self.refreshed.wait_for(lambda: self.refreshes >= target, timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except Exception:  # the collector must outlive any one bad refresh
                log.exception("console refresh failed")
            with self.refreshed:
                self.refreshes += 1
                self.refreshed.notify_all()
            self._stop.wait(max(0.05, self.console.refresh_s - (time.monotonic() - started)))

    # -- one refresh --------------------------------------------------------------------------

    def refresh(self) -> Snapshot:
        timeout = self.console.timeout_s
        now = time.time()
        # The gate's checks, the ledger's verification and the scrapes run beside the lag reads:
        # a refresh takes as long as its slowest part, not their sum.
        gate_future = self._pool.submit(self._refresh_gate)
        audit_future = self._pool.submit(self._refresh_audit, now)
        health_futures = {
            name: self._pool.submit(scrape, name, url, timeout) for name, url in self.console.sink_health_urls.items()
        }
        broker_error: str | None = None
        partitions: tuple[tuple[int, int, int], ...] = ()
        groups: list[GroupLag] = []
        dlq_sizes: dict[str, int] = {}
        sink_settings = self.settings.sink
        try:
            md = self._admin.list_topics(timeout=timeout)
            watermarks = self._watermarks(md, [self.topic], timeout)
            partitions = tuple(sorted((p, lo, hi) for (t, p), (lo, hi) in watermarks.items() if t == self.topic))
            if not partitions:
                broker_error = f"topic {self.topic} does not exist"
            groups = self._lag.lag(timeout)
            names = sorted({g.sink for g in groups} | set(self.console.sink_health_urls))
            dlq_topics = {n: sink_settings.dlq_topic(self.topic, n) for n in names}
            present = [t for t in dlq_topics.values() if t in md.topics]
            dlq_marks = self._watermarks(md, present, timeout)
            for name, t in dlq_topics.items():
                dlq_sizes[name] = sum(hi - lo for (tt, _), (lo, hi) in dlq_marks.items() if tt == t)
                self._tail.follow(t, self.console.dead_letters_kept, _dead_letter)
            self._tail.assign_new(_by_topic({**watermarks, **dlq_marks}), {**watermarks, **dlq_marks})
        except Exception as exc:
            broker_error = _describe(exc)
        health = {name: f.result() for name, f in health_futures.items()}
        gate, gate_error = gate_future.result()
        audit = audit_future.result()
        taken = datetime.now(UTC)
        if broker_error is not None:
            self._broker_error_since = self._broker_error_since or taken
            last = self._last_good or self._snapshot
            snap = dataclasses.replace(
                last,
                taken_at=last.taken_at,
                gate=gate,
                gate_error=gate_error,
                audit=audit,
                broker_error=broker_error,
                broker_error_since=self._broker_error_since,
                sinks=tuple(dataclasses.replace(s, health=health.get(s.name, s.health)) for s in last.sinks),
                events=tuple(self._tail.latest(self.topic)),
            )
            self._snapshot = snap
            return snap
        self._broker_error_since = None
        by_group = {g.sink: g for g in groups}
        sinks = []
        for name in sorted(set(by_group) | set(self.console.sink_health_urls)):
            g = by_group.get(name)
            topic_parts = tuple(p for p in (g.partitions if g else ()) if p.topic == self.topic)
            sinks.append(
                SinkView(
                    name=name,
                    group=g.group if g else SINK_GROUP_PREFIX + name,
                    cls=sink_class(name, g.declared_class if g else None),
                    cls_declared=bool(g and g.declared_class),
                    state=g.state if g else "unknown",
                    members=g.members if g else 0,
                    lag=sum(p.lag for p in topic_parts),
                    partitions=topic_parts,
                    dlq_topic=sink_settings.dlq_topic(self.topic, name),
                    dead_letters=dlq_sizes.get(name, 0),
                    health=health.get(name),
                )
            )
        self._history.append(
            Sample(
                now,
                sum(hi for _, _, hi in partitions),
                {s.name: {p.partition: p.lag for p in s.partitions} for s in sinks},
                {s.name: sum(p.committed or 0 for p in s.partitions) for s in sinks},
            )
        )
        snap = Snapshot(
            taken_at=taken,
            topic=self.topic,
            partitions=partitions,
            sinks=tuple(sinks),
            gate=gate,
            gate_error=gate_error,
            audit=audit,
            history=tuple(self._history),
            events=tuple(self._tail.latest(self.topic)),
            dead_letters={s.name: tuple(self._tail.latest(s.dlq_topic)) for s in sinks},
        )
        self._snapshot = self._last_good = snap
        return snap

    def _watermarks(self, md: Any, topics: Sequence[str], timeout: float) -> dict[tuple[str, int], tuple[int, int]]:
        parts: list[TopicPartition] = []
        for topic in topics:
            meta = md.topics.get(topic)
            if meta is not None and meta.error is None:
                parts.extend(TopicPartition(topic, p) for p in sorted(meta.partitions))
        if not parts:
            return {}
        highs = self._admin.list_offsets({tp: _LATEST for tp in parts}, request_timeout=timeout)
        lows = self._admin.list_offsets({tp: _EARLIEST for tp in parts}, request_timeout=timeout)
        return {
            (tp.topic, tp.partition): (lows[tp].result(timeout).offset, highs[tp].result(timeout).offset)
            for tp in highs
        }

    def _refresh_gate(self) -> tuple[GateView | None, str | None]:
        try:
            if self._gate is None:
                self._gate = self._build_gate()
            gate = self._gate
            snap = gate.refresh()
            decision = gate.admit("govbus-console")
        except Exception as exc:
            return None, _describe(exc)
        checks = tuple(CheckView(c.name, c.passing, c.reason) for c in snap.checks)
        return GateView(
            snap.checked_at, decision.allowed, decision.mode, checks, decision.reasons, self._gate_policy_name
        ), None

    def _build_gate(self) -> Any:
        # The same checks as `govbus gate check`, evaluated one-shot (no debounce), so the page
        # and the command agree.
        from govbus.gate import BusProbe, Gate
        from govbus.gate._cli import build_policy, producer_health_file_source, signing_status

        policy_file = self.console.gate_policy or self.settings.gate.policy_file
        policy = build_policy(self.settings, policy_file)
        self._gate_policy_name = str(policy_file) if policy_file else "defaults (no policy file)"
        one_shot = policy.model_copy(update={"debounce": policy.debounce.model_copy(update={"pass_after": 1})})
        producer_source = None
        spool = self.settings.producer.spool_dir
        if spool:
            health_file = Path(spool) / "health.json"
            max_age = self.settings.gate.producer_health_max_age_s
            producer_source = lambda: producer_health_file_source(health_file, max_age)  # noqa: E731
        probe = BusProbe(self.conf, self.topic, producer=producer_source, signing=lambda: signing_status(self.settings))
        return Gate(one_shot, probe.run)

    def _refresh_audit(self, now: float) -> AuditView | None:
        path = self.console.audit_ledger
        if path is None:
            return None
        if self._audit is not None and now - self._audit_at < self.console.audit_verify_interval_s:
            return self._audit
        self._audit_at = now
        self._audit = verify_audit(path, self.console.audit_keyring or self.settings.signing.keyring_path)
        return self._audit

    # -- record transforms (the tail reader's thread) -----------------------------------------

    def _event_row(self, rec: RawRecord) -> EventRow:
        from govbus._record import from_record
        from govbus.errors import DecodeError

        if self._decoder is None:
            from govbus._contract import Decoder
            from govbus._registry import resolver_for

            self._decoder = Decoder(resolver=resolver_for(self.settings))
        try:
            decoded = from_record(rec.value, list(rec.headers), self._decoder) if rec.value is not None else None
        except DecodeError as exc:
            return EventRow(rec.partition, rec.offset, rec.timestamp_ms, error=f"{exc.reason}: {exc.message}")
        if decoded is None:
            return EventRow(rec.partition, rec.offset, rec.timestamp_ms, error="empty record (tombstone)")
        e = decoded.event
        producer = e.producer
        return EventRow(
            rec.partition,
            rec.offset,
            rec.timestamp_ms,
            id=e.event_id,
            time=e.occurred_at.isoformat(timespec="milliseconds"),
            kind=e.kind.value,
            agent_id=e.agent_id,
            session_id=e.session_id or "",
            severity=e.severity,
            action=e.action,
            decision=e.decision,
            reason=e.reason,
            policy_name=e.policy_name or "",
            producer=producer.name if producer else "",
            producer_host=producer.host if producer else "",
            producer_instance=producer.instance_id if producer else "",
        )


def settings_console(settings: GovbusSettings) -> ConsoleSettings:
    c: ConsoleSettings | None = getattr(settings, "console", None)
    return c if c is not None else ConsoleSettings()


def verify_audit(path: Path, keyring_path: Path | None) -> AuditView:
    """``govbus audit verify`` of the ledger, as the audit page shows it."""
    from govbus.consumers.sinks._ledger import verify_ledger
    from govbus.signing import Keyring

    checked = datetime.now(UTC)
    try:
        keyring = Keyring.load(keyring_path) if keyring_path is not None else None
        report = verify_ledger(path, keyring=keyring, checkpoint_keyring=keyring)
    except Exception as exc:
        return AuditView(str(path), checked, False, error=_describe(exc))
    return AuditView(
        str(path),
        checked,
        report.ok,
        entries=report.entries,
        events=report.events,
        checkpoints=report.checkpoints,
        signatures_verified=report.signatures_verified,
        head=report.head,
        problem=str(report.problem) if report.problem else None,
    )


_KEEP_VALUE = 64  # bytes of a dead letter's value kept for display; a replay re-reads the record


@dataclasses.dataclass(frozen=True)
class KeptDeadLetter(DeadLetter):
    """A dead letter as the console keeps it: the value cut to its first bytes (dead letters may be
    16 MiB each), ``value_size`` the original length."""

    value_size: int | None = None


def _dead_letter(rec: RawRecord) -> KeptDeadLetter:
    value = rec.value[:_KEEP_VALUE] if rec.value is not None else None
    size = len(rec.value) if rec.value is not None else None
    return KeptDeadLetter(
        rec.topic, rec.partition, rec.offset, rec.timestamp_ms, rec.key, value, list(rec.headers), size
    )


def _by_topic(marks: dict[tuple[str, int], tuple[int, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for t, p in marks:
        out.setdefault(t, []).append(p)
    return out


def _describe(exc: BaseException) -> str:
    from confluent_kafka import KafkaException

    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        return err.str() if hasattr(err, "str") else str(err)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
