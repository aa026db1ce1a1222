"""The sink runtime: one consumer group per sink, at-least-once, bounded memory.

The consume loop (the thread that calls :meth:`SinkRuntime.run`) owns the Kafka consumer: it
fetches, runs the intake stage (size → verify → decode), hands :class:`Work` to the delivery
worker, pauses and resumes partitions against the in-flight budget, serves rebalances and
commits. The worker thread owns the sink. Offsets are committed only for records the sink
acknowledged *and* flushed (or that were dead-lettered or skipped), so a crash at any point
re-delivers, never loses.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Collection
from types import FrameType
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from opentelemetry.trace import TracerProvider

from govbus._contract import Decoder
from govbus._dlqmark import DlqFailedMark, format_mark
from govbus._librdkafka import new_consumer
from govbus._principal import missing_acl
from govbus._registry import resolver_for
from govbus.consumers._classes import NO_DROP_CLASSES, client_id_with_class, no_drop_policy, resolve_class
from govbus.consumers._dlq import DeadLetterer, prepare_topics
from govbus.consumers._errors import DeadLetterFatalError, SinkError
from govbus.consumers._fencing import FenceJudge, is_fenced
from govbus.consumers._health import HealthServer, HealthStatus
from govbus.consumers._intake import Intake, Prepared, Started
from govbus.consumers._metrics import LEGACY_FINGERPRINT, SinkMetrics
from govbus.consumers._pipeline import Failure, Work, WorkQueue
from govbus.consumers._retry import BreakerState
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.consumers._spi import Sink, SinkContext
from govbus.consumers._tracing import default_tracer_provider
from govbus.consumers._verify import Verification, build_verification
from govbus.consumers._worker import (
    DeadLetterHeld,
    DeliveryWorker,
    FlushRequest,
    Ownership,
    Report,
    RevokeRequest,
    StopRequest,
)

if TYPE_CHECKING:
    from govbus._settings import GovbusSettings

__all__ = ["SinkRuntime"]

log = logging.getLogger("govbus.consumers.runtime")

TP = tuple[str, int]
_UNSET: Any = object()
_BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
_HOLD_MAX_S = 30.0
_ACL_REFUSED = frozenset({KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED})


class SinkRuntime:
    """Runs one sink: ``SinkRuntime(sink, settings, name="file").run()`` blocks until :meth:`stop`
    (or SIGTERM/SIGINT when ``install_signal_handlers``), then shuts down within the grace period.

    ``verification``: by default built from settings (keyring configured → verify); pass None to
    disable it or a :class:`Verification` to inject one. ``metrics``/``tracer_provider`` default
    to the runtime's own (``/metrics``, and OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set).
    """

    def __init__(
        self,
        sink: Sink,
        settings: GovbusSettings | None = None,
        *,
        name: str,
        verification: Verification | None = _UNSET,
        metrics: SinkMetrics | None = None,
        tracer_provider: TracerProvider | None = None,
        install_signal_handlers: bool = False,
    ) -> None:
        if settings is None:
            from govbus._settings import load_settings

            settings = load_settings()
        root = settings
        s: SinkRuntimeSettings = getattr(root, "sink", None) or SinkRuntimeSettings()
        self.settings = s
        self.sink = sink
        self.name = s.instance or name
        self.group_id = s.group_for(name)
        self.topic = s.topic or root.topic
        self.replay_topic = s.replay_topic(self.topic, self.name)
        self.dlq_topic = s.dlq_topic(self.topic, self.name)
        self.instance_id = _static_id(s.instance_id_for(name), self._topics())
        self._kafka_conf = root.kafka.librdkafka()
        self._install_signals = install_signal_handlers
        if verification is _UNSET:
            verification = build_verification(s, getattr(root, "signing", None))
        self.sink_class = resolve_class(name, sink, s.sink_class)
        if verification is not None and self.sink_class in NO_DROP_CLASSES:
            verification.policy = no_drop_policy(verification.policy)  # audit and SIEM never skip
        self.verification: Verification | None = verification
        self.metrics = metrics or SinkMetrics(self.name)
        self._tracer = (tracer_provider or default_tracer_provider()).get_tracer("govbus.consumers")
        self._intake = Intake(
            # Confluent-framed records resolve their schema ids through GOVBUS_REGISTRY__URL.
            Decoder(resolver=resolver_for(root)),
            verification=verification,
            max_record_bytes=s.max_record_bytes,
            replay_topic=self.replay_topic,
            deliver_heartbeats=s.heartbeats == "deliver" or (s.heartbeats == "auto" and self.sink_class == "audit"),
            # The compiled core builds record.event in the decoding pass for sinks that read it.
            events=bool(getattr(sink, "reads_events", True)),
            # ... and drafts what the audit and otlp sinks write in it (_native_draft_format).
            draft=_draft_format(sink),
        )
        self._work = WorkQueue()
        self._reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self._ownership = Ownership()
        self._stop = threading.Event()
        self._force = False
        self.assigned = threading.Event()  # set once partitions were first assigned (tests, probes)
        self._tokens = itertools.count(1)
        self._flushed: dict[TP, tuple[int, int]] = {}
        self._committed: dict[TP, int] = {}
        # Partitions held by a dead letter the broker refused: the mark committed for each (govbus._dlqmark).
        self._dlq_marks: dict[TP, DlqFailedMark] = {}
        self._paused: set[TP] = set()
        self._paused_all = False
        self._full_since: float | None = None  # when the in-flight budget filled (not paused yet)
        self._operator_paused = False  # POST /control/pause on the health endpoint (the console)
        # Partitions held back while the schema registry is unreachable: when to resume them.
        self._held: dict[TP, float] = {}
        self._hold_streak = 0
        # The consumed batch whose native intake runs while the next one is consumed (Intake.start).
        self._started: Started | None = None
        self._flush_token: int | None = None
        self._progress = False
        self._revoke_replies: dict[int, Report] = {}
        self._inflight_records = 0
        self._inflight_bytes = 0
        self._busy_since = time.monotonic()
        self._heartbeat = time.monotonic()
        self._stopping = False
        self._worker_stopped = False
        self._last_error_log: dict[int, float] = {}
        self._fatal: KafkaError | None = None
        self._dlq_fatal: DeadLetterFatalError | None = None
        self._acl_refused: SinkError | None = None
        self._consumer: Consumer | None = None
        self._consumer_conf: dict[str, Any] = {}
        self._fences = FenceJudge(45.0)
        self._rejoin: KafkaError | None = None  # fenced by its own rejoin: a new consumer, from the loop
        self._dlq: DeadLetterer | None = None
        self._worker: DeliveryWorker | None = None
        self.health: HealthServer | None = None

    # -- public ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Asks the runtime to shut down (thread-safe; what SIGTERM does)."""
        self._stop.set()
        self._work.wake()

    @property
    def health_url(self) -> str | None:
        return self.health.url if self.health else None

    def status(self) -> HealthStatus:
        h = self.settings.health
        now = time.monotonic()
        worker = self._worker
        owned = self._ownership.owned()
        last_ack = max(worker.last_progress if worker else 0.0, self._busy_since)
        stuck = self._inflight_records > 0 and now - last_ack > h.stuck_after_s
        live = now - self._heartbeat < h.live_after_s and (worker is None or worker.is_alive() or self._stopping)
        ready = live and bool(owned) and not stuck and not self._stopping
        detail = {
            "sink": self.name,
            "group": self.group_id,
            "topic": self.topic,
            "assigned": sorted(f"{t}[{p}]" for t, p in owned),
            "paused": self._paused_all,
            "operator_paused": self._operator_paused,
            "inflight_records": self._inflight_records,
            "inflight_bytes": self._inflight_bytes,
            "worker": worker.state if worker else "not started",
            "breaker": worker.breaker.state.value if worker else "closed",
            "seconds_since_ack": round(now - last_ack, 3) if self._inflight_records else 0.0,
            "stuck": stuck,
            "stopping": self._stopping,
        }
        return HealthStatus(live, ready, detail)

    def run(self) -> None:
        """Consumes until stopped; raises :class:`SinkError` if the sink's worker dies."""
        previous = self._signals()
        try:
            self._setup()
            next_commit = time.monotonic() + self.settings.commit_interval_ms / 1000
            next_housekeeping = 0.0
            while not self._stop.is_set():
                self._drain_reports()
                now = time.monotonic()
                self._heartbeat = now
                if now >= next_commit:
                    self._request_flush()
                    next_commit = now + self.settings.commit_interval_ms / 1000
                if now >= next_housekeeping:
                    self._housekeeping()
                    next_housekeeping = now + 0.5
                if self._worker is not None and not self._worker.is_alive():
                    raise SinkError(f"sink {self.name}: delivery worker stopped: {self._worker.error!r}")
                if self._rejoin is not None:
                    self._rejoin_group()
                self._backpressure()
                if self._held:
                    self._release_held()
                self._poll()
        finally:
            try:
                self._shutdown()
            finally:
                self._restore_signals(previous)
        if self._dlq_fatal is not None:
            raise self._dlq_fatal
        if self._acl_refused is not None:
            raise self._acl_refused
        if self._fatal is not None:
            raise SinkError(
                f"sink {self.name}: stopped on a fatal Kafka error: {self._fatal}{self._fenced_hint(self._fatal)}"
            )

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self) -> None:
        s = self.settings
        conf = self._kafka_conf
        if s.dlq.enabled and s.dlq.create_topics:
            prepare_topics(
                conf,
                [self.dlq_topic, self.replay_topic],
                partitions=s.dlq.partitions,
                max_message_bytes=s.dlq.max_message_bytes,
            )
        if s.dlq.enabled:
            self._dlq = DeadLetterer(
                conf,
                sink=self.name,
                group=self.group_id,
                topic_for=lambda topic: s.dlq_topic(topic, self.name),
                max_message_bytes=s.dlq.max_message_bytes,
            )
        consumer_conf: dict[str, Any] = {
            **conf,
            "client.id": f"{conf.get('client.id', 'govbus')}.sink.{self.name}",
            "group.id": self.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            **({"group.instance.id": self.instance_id} if self.instance_id else {}),
            # Offsets are stored and committed by the runtime, only after acknowledgement.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": s.auto_offset_reset,
            "queued.max.messages.kbytes": s.fetch_queue_kbytes,
            "enable.partition.eof": False,
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
            "logger": logging.getLogger("govbus.consumers.librdkafka"),
        }
        if s.stats_interval_ms:
            consumer_conf["statistics.interval.ms"] = s.stats_interval_ms
            consumer_conf["stats_cb"] = self._on_stats
        consumer_conf.update(s.consumer)
        # The class travels with the member: the gate and the watchdog read it from the group.
        consumer_conf["client.id"] = client_id_with_class(str(consumer_conf["client.id"]), self.sink_class)
        self.instance_id = consumer_conf.get("group.instance.id") or None  # GOVBUS_SINK__CONSUMER may set it
        self._consumer_conf = consumer_conf
        self._consumer = new_consumer(consumer_conf)  # librdkafka judges the properties first
        self._fences = FenceJudge(int(consumer_conf.get("session.timeout.ms", 45000)) / 1000)
        context = SinkContext(
            name=self.name,
            group_id=self.group_id,
            topic=self.topic,
            meter=self.metrics.meter,
            logger=logging.getLogger(f"govbus.sink.{self.name}"),
        )
        try:
            self.sink.open(context)
        except Exception as exc:
            raise SinkError(f"sink {self.name}: open() failed: {type(exc).__name__}: {exc}") from exc
        self._worker = DeliveryWorker(
            self.sink,
            self.name,
            self._work,
            self._reports,
            self._ownership,
            s,
            dead_letterer=self._dlq,
            metrics=self.metrics,
            tracer=self._tracer,
        )
        self._worker.start()
        if s.health.enabled:
            try:
                self.health = HealthServer(
                    s.health.host, s.health.port, self.status, self.metrics.render_prometheus, self._control
                )
            except OSError as exc:
                raise SinkError(
                    f"cannot serve the health endpoint on {s.health.host}:{s.health.port}: {exc}; "
                    "set GOVBUS_SINK__HEALTH__PORT (0 = any free port) or GOVBUS_SINK__HEALTH__ENABLED=false"
                ) from None
            self.health.start()
            log.info("sink %s: health endpoint at %s (/healthz /readyz /metrics)", self.name, self.health.url)
        topics = self._topics()
        self._subscribe(self._consumer)
        log.info(
            "sink %s: consuming %s as group %s, %s (verification %s)",
            self.name, ", ".join(topics), self.group_id,
            f"static member {self.instance_id}" if self.instance_id else "dynamic member",
            "on" if self.verification else "off",
        )  # fmt: skip

    def _subscribe(self, consumer: Consumer) -> None:
        consumer.subscribe(self._topics(), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _rejoin_group(self) -> None:
        """Fenced by its own rejoin (consumers/_fencing.py): the old consumer is done for (a fatal
        error), so its partitions are dropped as lost — nothing uncommitted is acknowledged, it is
        redelivered — and a new consumer joins under the same id."""
        err, self._rejoin = self._rejoin, None
        log.warning(
            "sink %s: fenced right after its session timed out (%s): its own rejoin took the seat of "
            "group.instance.id %r (librdkafka#3437); rejoining with a new consumer, uncommitted records "
            "are redelivered",
            self.name, err, self.instance_id,
        )  # fmt: skip
        owned = [TopicPartition(t, p) for t, p in self._ownership.owned()]
        self._revoke(owned, lost=True)
        old, self._consumer = self._consumer, None
        if old is not None:
            try:
                old.close()  # a static member's close() sends no LeaveGroup: the seat stays ours
            except (KafkaException, RuntimeError) as exc:
                log.debug("sink %s: closing the fenced consumer: %s", self.name, exc)
        self._consumer = new_consumer(self._consumer_conf)
        self._subscribe(self._consumer)
        self.metrics.rejoins.add(1, self.metrics.attrs())

    def _topics(self) -> list[str]:
        return [self.topic] + ([self.replay_topic] if self.settings.dlq.enabled else [])

    def _signals(self) -> dict[int, Any]:
        if not self._install_signals or threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: FrameType | None) -> None:
            if self._stop.is_set():
                log.warning("sink %s: second signal: abandoning in-flight records", self.name)
                self._force = True
                self._worker_abandon()
            else:
                log.info("sink %s: signal %d: stopping", self.name, signum)
            self.stop()

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    def _control(self, action: str) -> dict[str, Any]:
        # Called on the health server's thread; the consume loop applies it in _backpressure.
        self._operator_paused = action == "pause"
        log.info("sink %s: %s requested by an operator", self.name, action)
        return {"sink": self.name, "operator_paused": self._operator_paused}

    def _worker_abandon(self) -> None:
        if self._worker is not None:
            self._work.post(StopRequest(time.monotonic()))

    # -- the loop --------------------------------------------------------------------------------
    def _poll(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        if self._paused_all:
            # Paused partitions return nothing; polling still serves rebalances and callbacks.
            msgs = consumer.consume(num_messages=1, timeout=0)
            if not msgs:
                self._drain_reports(timeout=0.05)
        elif self._budget_full():
            # Wait for the sink to acknowledge instead of taking more, without pausing (see
            # InflightSettings.pause_after_ms); _backpressure pauses if it lasts.
            self._finish_started()
            if self._full_since is None:
                self._full_since = time.monotonic()
            self._drain_reports(timeout=0.05)
            return
        else:
            self._full_since = None
            # poll() returns as soon as one record is there (consume() would wait for a full
            # batch or the timeout, adding its timeout to every record's latency at low rates);
            # consume(timeout=0) then takes whatever else is already fetched. With a batch
            # started, nothing fetched means it is taken at once.
            room = self.settings.inflight.max_records - self._inflight_records - 1
            if self._started is not None:
                room -= len(self._started.msgs)
                if room <= 0:  # at the budget with the started batch: take it, let back-pressure judge
                    self._finish_started()
                    return
            first = consumer.poll(0.05 if self._started is None else 0)
            if first is None:
                self._finish_started()
                return
            msgs = [first, *consumer.consume(num_messages=min(room, 1000), timeout=0)] if room > 0 else [first]
        if msgs:
            self._ingest(msgs)

    def _ingest(self, msgs: list[Any]) -> None:
        """Starts the native intake of this batch, then takes the one started before (two cores:
        this batch's byte work runs while the consume loop judges the previous one in Python)."""
        started = self._intake.start(msgs) if self.settings.intake_thread else None
        if started is None:
            self._finish_started()
            self._take(msgs, self._intake.prepare(msgs), ())
            return
        previous, self._started = self._started, started
        if previous is not None:
            self._take(previous.msgs, previous.rows(), previous.skip)

    def _finish_started(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            self._take(started.msgs, started.rows(), started.skip)

    def _take(self, msgs: list[Any], rows: list[Prepared | None] | None, skip: Collection[TP]) -> None:
        intake = self._intake
        transient = intake.transient_failures
        held: set[TP] | None = None
        if rows is not None and None not in rows:
            items, size = self._take_rows(msgs, rows, skip)
        else:
            items, held = self._take_each(msgs, rows, skip)
            size = -1
        intake.settle()
        if intake.transient_failures != transient:
            # Decoded in the batch (after the native verifier): hold those partitions the same way.
            if held is None:
                held = set(skip)
            kept: list[Work] = []
            for work in items:
                tp = (work.topic, work.partition)
                if tp in held:
                    continue
                if work.failure is not None and work.failure.transient and self._hold(work):
                    held.add(tp)
                    continue
                kept.append(work)
            if len(kept) != len(items):
                items, size = kept, -1
        if not items:
            return
        n = len(items)
        if size < 0:
            size = WorkQueue.total(items)[1]
        if self._inflight_records == 0:
            self._busy_since = time.monotonic()
        self._inflight_records += n
        self._inflight_bytes += size
        self._work.put_many(items, size)
        self.metrics.consumed.add(n, self.metrics.attrs())

    def _take_rows(self, msgs: list[Any], rows: list[Prepared | None], skip: Collection[TP]) -> tuple[list[Work], int]:
        """The common case: the native intake took every record of the batch. ``Intake.take``
        makes no transient failure (only the decode in ``settle`` does), so nothing is held here;
        a partition's epoch is looked up once per run of its records. The Works and their size."""
        take = self._intake.take
        epoch_of = self._ownership.epoch
        items: list[Work] = []
        append = items.append
        size = 0
        topic: Any = None
        partition = -1
        epoch: int | None = None
        for m, row in zip(msgs, rows, strict=True):
            assert row is not None
            if len(row) == 4:  # (Work built by the compiled core, ...)
                w = row[0]
                t, p = w.topic, w.partition
            else:
                t, p = row[0], row[1]
            if p != partition or t != topic:
                topic, partition = t, p
                tp = (t, p)
                # None: revoked (the new owner reads it) or rewound since the batch was consumed
                epoch = None if tp in skip else epoch_of(tp)
            if epoch is None:
                continue
            try:
                work = take(row, epoch)
            except Exception as exc:  # a bug in a stage must not wedge the partition: dead-letter it
                work = self._internal(m, epoch, exc)
            append(work)
            size += work.size
        if self._hold_streak and any(w.failure is None for w in items):
            self._hold_streak = 0
        return items, size

    def _take_each(
        self, msgs: list[Any], rows: list[Prepared | None] | None, skip: Collection[TP]
    ) -> tuple[list[Work], set[TP]]:
        """Record by record: some records (or the whole batch) go the per-record path. The Works,
        and the partitions passed over."""
        intake = self._intake
        epoch_of = self._ownership.epoch
        items: list[Work] = []
        # Partitions to pass over: behind a held record (re-read after it), or dropped since the
        # batch was consumed (revoked: the next owner reads them; rewound: read again).
        held: set[TP] = set(skip)
        # One native call read, checked and rendered the batch; None rows go the per-record path.
        for i, m in enumerate(msgs):
            row = rows[i] if rows is not None else None
            if row is None:
                err = m.error()
                if err is not None:
                    self._consume_error(err, m.topic())
                    continue
                tp = (m.topic(), m.partition())
            elif len(row) == 4:  # (Work built by the compiled core, ...)
                tp = (row[0].topic, row[0].partition)
            else:
                tp = (row[0], row[1])
            epoch = epoch_of(tp)
            if epoch is None:
                continue  # fetched just before its partition was revoked; the new owner reads it
            if tp in held:
                continue  # behind a held record: re-read after it
            try:
                # decoded below, in one batch (or already, by prepare)
                work = intake(m, epoch, defer=True) if row is None else intake.take(row, epoch)
                if work.failure is not None and work.failure.transient and self._hold(work):
                    held.add(tp)
                    continue
                if work.failure is None and self._hold_streak:
                    self._hold_streak = 0
                items.append(work)
            except Exception as exc:  # a bug in a stage must not wedge the partition: dead-letter it
                items.append(self._internal(m, epoch, exc))
        return items, held

    def _internal(self, m: Any, epoch: int, exc: Exception) -> Work:
        log.exception("sink %s: intake failed on %s[%d]@%d", self.name, m.topic(), m.partition(), m.offset())
        value = m.value()
        work = Work(m.topic(), m.partition(), m.offset(), epoch, len(value or b""), m.key(), value,
                    m.headers() or [], None)  # fmt: skip
        work.failure = Failure(f"internal:{type(exc).__name__}", str(exc), exception=type(exc).__qualname__)
        return work

    def _hold(self, work: Work) -> bool:
        """The schema registry cannot be reached: rewind the partition to this record and pause it
        for a backoff, instead of dead-lettering a record that is fine. False if it cannot be
        rewound (the record is then dead-lettered: never skipped silently)."""
        consumer = self._consumer
        assert consumer is not None
        tp = TopicPartition(work.topic, work.partition, work.offset)
        try:
            consumer.pause([tp])
            consumer.seek(tp)
        except KafkaException as exc:
            log.error("sink %s: cannot rewind %s[%d] to %d (%s); dead-lettering it", self.name, tp.topic,
                      tp.partition, tp.offset, exc.args[0] if exc.args else exc)  # fmt: skip
            with contextlib.suppress(KafkaException):
                consumer.resume([tp])
            return False
        self._hold_streak += 1
        delay = min(_HOLD_MAX_S, 0.5 * 2 ** min(self._hold_streak - 1, 6))
        self._held[(tp.topic, tp.partition)] = time.monotonic() + delay
        if self._started is not None:
            self._started.skip.add((tp.topic, tp.partition))  # consumed before the rewind: read again
        failure = work.failure
        log.warning(
            "sink %s: %s; %s[%d] re-reads from offset %d in %.1f s",
            self.name, failure.message if failure else "schema registry unavailable", tp.topic, tp.partition,
            tp.offset, delay,
        )  # fmt: skip
        return True

    def _release_held(self) -> None:
        """Resumes held partitions whose backoff is over (unless back-pressure pauses them too)."""
        consumer = self._consumer
        if consumer is None:
            return
        now = time.monotonic()
        due = [tp for tp, until in self._held.items() if until <= now]
        for tp in due:
            del self._held[tp]
        owned = self._ownership.owned()
        resume = [TopicPartition(t, p) for t, p in due if (t, p) in owned and (t, p) not in self._paused]
        if resume:
            consumer.resume(resume)

    def _consume_error(self, err: KafkaError, topic: str | None = None) -> None:
        if err.code() in _ACL_REFUSED:
            self._refused(err, topic)
            return
        if _is_fatal(err):
            if self._fenced_by_itself(err):
                return
            self._fatal = err  # nothing more to say to the group (no LeaveGroup)
            raise SinkError(f"sink {self.name}: fatal consumer error: {err}{self._fenced_hint(err)}")
        now = time.monotonic()
        code = err.code()
        if now - self._last_error_log.get(code, 0.0) > 30:
            self._last_error_log[code] = now
            log.warning("sink %s: consumer error: %s", self.name, err)

    def _fenced_by_itself(self, err: KafkaError) -> bool:
        """A fencing its own rejoin explains: rejoin from the loop (once) instead of stopping."""
        if not is_fenced(err):
            return False
        if self._rejoin is not None:
            return True  # the same fencing, reported again (error callback, then consume())
        if self._stopping or self._stop.is_set() or not self._fences.should_rejoin():
            return False
        self._rejoin = err
        return True

    def _fenced_hint(self, err: KafkaError) -> str:
        if not is_fenced(err):
            return ""
        return (
            f"; another live process joined group {self.group_id} with the same group.instance.id "
            f"{self.instance_id!r}: give every instance of a sink its own GOVBUS_SINK__GROUP_INSTANCE_ID "
            "(or set it empty for dynamic membership)"
        )

    def _refused(self, err: KafkaError, topic: str | None) -> None:
        """A missing ACL never heals by retrying: name it and stop (exit code 2), fail closed."""
        if self._acl_refused is not None:
            return
        if err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            resource = f"GROUP {self.group_id}"
        elif topic:
            resource = f"TOPIC {topic}"
        else:
            resource = f"TOPIC {self.topic} or TOPIC {self.replay_topic}"
        reason = missing_acl(err, "READ", resource, self._kafka_conf, role=f"sink:{self.name}")
        self._acl_refused = SinkError(f"sink {self.name}: authorization: {reason} ({err.str()})")
        log.error("%s", self._acl_refused)
        self.stop()

    def _drain_reports(self, timeout: float = 0.0) -> None:
        try:
            report = self._reports.get(timeout=timeout) if timeout > 0 else self._reports.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(report)
            try:
                report = self._reports.get_nowait()
            except queue.Empty:
                return

    def _handle(self, r: Report) -> None:
        if r.released_records:
            self._inflight_records -= r.released_records
            self._inflight_bytes -= r.released_bytes
            self._progress = True
            if self._inflight_records <= 0:
                self._inflight_records = self._inflight_bytes = 0
        if r.ok and r.offsets:
            for tp, (epoch, offset) in r.offsets.items():
                if self._ownership.epoch(tp) == epoch:
                    self._flushed[tp] = (epoch, offset)
        if r.kind == "flushed" and r.token == self._flush_token:
            self._flush_token = None
            self._commit(asynchronous=True)
        elif r.kind == "revoked":
            self._revoke_replies[r.token] = r
        elif r.kind == "stopped":
            self._worker_stopped = True
        elif r.kind == "dlq-failed":
            self._mark_held(r.held)

    def _mark_held(self, held: tuple[DeadLetterHeld, ...]) -> None:
        """Commits each held partition's committable offset again, carrying the dead-letter-failed
        mark, so the watchdog (which reads committed offsets) can alert; the next ordinary commit of
        the partition, past the record, clears it. Never commits past the record."""
        consumer = self._consumer
        if consumer is None:
            return
        for h in held:
            tp = (h.topic, h.partition)
            if self._ownership.epoch(tp) != h.epoch:
                continue  # revoked meanwhile: the new owner reads the record and marks it if it fails too
            position = h.position
            if position is None:  # the sink could not flush: only what was flushed before counts
                flushed = self._flushed.get(tp)
                position = flushed[1] if flushed is not None and flushed[0] == h.epoch else self._committed.get(tp)
            if position is None:
                log.warning("sink %s: %s[%d] held by a dead letter that failed; no committed offset to mark it on",
                            self.name, h.topic, h.partition)  # fmt: skip
                continue
            position = max(position, self._committed.get(tp, -1))
            previous = self._dlq_marks.get(tp)
            if previous is not None and previous.record == h.record and previous.error == h.error:
                continue
            since = (
                previous.since_ms if previous is not None and previous.record == h.record else time.time_ns() // 10**6
            )
            mark = DlqFailedMark(h.record, h.dlq_topic, h.error, since)
            offsets = [TopicPartition(h.topic, h.partition, position, metadata=format_mark(mark))]
            try:
                if self._stopping:  # a sink stopping on it (a fatal dead-letter producer) marks it before leaving
                    consumer.commit(offsets=offsets, asynchronous=False)
                else:
                    consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                log.warning("sink %s: could not commit the dead-letter-failed mark of %s[%d]: %s",
                            self.name, h.topic, h.partition, exc.args[0] if exc.args else exc)  # fmt: skip
                continue
            self._dlq_marks[tp] = mark
            self._committed[tp] = position
            log.error(
                "sink %s: %s[%d] held at offset %d: the dead letter of offset %d could not be written to %s (%s)",
                self.name, h.topic, h.partition, position, h.record, h.dlq_topic, h.error,
            )  # fmt: skip

    def _request_flush(self) -> None:
        if self._flush_token is None and self._progress and not self._stopping:
            self._progress = False
            self._flush_token = next(self._tokens)
            self._work.post(FlushRequest(self._flush_token))

    def _commit(self, *, asynchronous: bool, only: frozenset[TP] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = [
            TopicPartition(t, p, off)
            for (t, p), (epoch, off) in self._flushed.items()
            if (only is None or (t, p) in only)
            and self._ownership.epoch((t, p)) == epoch
            and off > self._committed.get((t, p), -1)
        ]
        if not offsets:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("sink %s: commit failed: %s (the records will be redelivered)", self.name, exc.args[0])
            self.metrics.commits.add(1, self.metrics.attrs(result="error"))
            return
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset
            self._dlq_marks.pop((tp.topic, tp.partition), None)  # moved on: this commit carries no mark
        if not asynchronous:
            self.metrics.commits.add(1, self.metrics.attrs(result="ok"))
            log.debug("sink %s: committed %s", self.name, _show(offsets))

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is None:
            self.metrics.commits.add(1, self.metrics.attrs(result="ok"))
            return
        if err.code() == KafkaError._NO_OFFSET:
            return
        self.metrics.commits.add(1, self.metrics.attrs(result="error"))
        log.warning("sink %s: commit failed: %s; retrying at the next commit", self.name, err)
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)
            self._dlq_marks.pop((tp.topic, tp.partition), None)  # a lost mark is committed again at the next failure

    def _backpressure(self) -> None:
        consumer = self._consumer
        worker = self._worker
        if consumer is None or worker is None:
            return
        inf = self.settings.inflight
        waited = 0.0 if self._full_since is None else time.monotonic() - self._full_since
        full = self._budget_full() and waited >= inf.pause_after_ms / 1000
        blocked = worker.backing_off or worker.breaker.state is BreakerState.OPEN or self._operator_paused
        if not self._paused_all and (full or blocked):
            self._full_since = None
            owned = [TopicPartition(t, p) for t, p in self._ownership.owned()]
            if owned:
                consumer.pause(owned)
                self._paused.update((tp.topic, tp.partition) for tp in owned)
            self._paused_all = True
            self.metrics.paused.add(1, self.metrics.attrs())
            log.info(
                "sink %s: paused %d partition(s): %s (in flight: %d records, %d bytes)",
                self.name, len(owned),
                "paused by an operator" if self._operator_paused else "sink is backing off" if blocked else "in-flight budget full",
                self._inflight_records, self._inflight_bytes,
            )  # fmt: skip
        elif self._paused_all and not blocked:
            low = (
                self._inflight_records <= inf.max_records * inf.resume_ratio
                and self._inflight_bytes <= inf.max_bytes * inf.resume_ratio
            )
            if low:
                paused = [TopicPartition(t, p) for t, p in self._paused if (t, p) not in self._held]
                if paused:
                    consumer.resume(paused)
                self._paused.clear()
                self._paused_all = False
                log.info("sink %s: resumed %d partition(s)", self.name, len(paused))

    def _budget_full(self) -> bool:
        inf = self.settings.inflight
        return self._inflight_records >= inf.max_records or self._inflight_bytes >= inf.max_bytes

    def _housekeeping(self) -> None:
        m = self.metrics
        worker = self._worker
        m.set_gauge("govbus.sink.inflight.records", self._inflight_records)
        m.set_gauge("govbus.sink.inflight.bytes", self._inflight_bytes)
        m.set_gauge("govbus.sink.partitions.assigned", len(self._ownership.owned()))
        m.set_gauge("govbus.sink.partitions.paused", len(self._paused))
        m.set_gauge("govbus.sink.partitions.held", len(self._dlq_marks))
        m.set_gauge(LEGACY_FINGERPRINT, self._intake.decoder.legacy_fingerprints)
        if worker is not None:
            m.set_gauge("govbus.sink.breaker.state", _BREAKER_GAUGE[worker.breaker.state])
        if self.verification is not None:
            self.verification.maybe_reload()
        if self._dlq is not None and self._dlq_fatal is None:
            self._check_dead_letterer(self._dlq)

    def _check_dead_letterer(self, dlq: DeadLetterer) -> None:
        """A fatal dead-letter producer never recovers: say why at once and stop (exit code 2), so the
        orchestrator restarts the sink with a new producer once the cause (an ACL…) is fixed. Nothing
        waiting for a dead letter is committed meanwhile: the worker only acknowledges acknowledged ones."""
        if dlq.check() is None:
            return
        self._dlq_fatal = dlq.fatal_error(self.dlq_topic)
        log.error("%s", self._dlq_fatal)
        self.stop()

    # -- rebalance callbacks (run inside consume()) ----------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._ownership.assign(tps)
        if self.verification is not None:
            for t, p in tps:
                if t == self.topic:
                    self.verification.forget(p)
        consumer.incremental_assign(partitions)
        if self._paused_all and partitions:
            consumer.pause(partitions)
            self._paused.update(tps)
        if partitions:
            log.info("sink %s: assigned %s", self.name, _show(partitions))
            self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoke(partitions, lost=False)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoke(partitions, lost=True)

    def _revoke(self, partitions: list[TopicPartition], *, lost: bool) -> None:
        if not partitions:
            return
        tps = frozenset((p.topic, p.partition) for p in partitions)
        if self._started is not None:
            self._started.skip.update(tps)  # consumed, never acknowledged: the next owner reads them
        worker = self._worker
        if worker is not None and worker.is_alive():
            token = next(self._tokens)
            self._work.post(RevokeRequest(token, tps))
            if not lost and not self._stopping:
                # Let in-flight records of these partitions finish (bounded), so the next owner
                # does not redeliver what this process already wrote.
                deadline = time.monotonic() + self.settings.revoke_timeout_s
                while token not in self._revoke_replies and worker.is_alive():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.warning(
                            "sink %s: revocation did not complete within %.1f s; committing what was "
                            "flushed before (the rest will be redelivered)",
                            self.name, self.settings.revoke_timeout_s,
                        )  # fmt: skip
                        break
                    self._drain_reports(timeout=min(remaining, 0.05))
                self._revoke_replies.pop(token, None)
        if not lost:
            self._commit(asynchronous=False, only=tps)
        else:
            self._fences.assignment_lost()
            log.warning("sink %s: lost %s (not committed; will be redelivered)", self.name, _show(partitions))
        self._ownership.revoke(list(tps))
        for tp in tps:
            self._flushed.pop(tp, None)
            self._committed.pop(tp, None)
            self._dlq_marks.pop(tp, None)
            self._paused.discard(tp)
            self._held.pop(tp, None)
            if self.verification is not None and tp[0] == self.topic:
                self.verification.forget(tp[1])
        if not self._ownership.owned():
            self.assigned.clear()
        log.info("sink %s: revoked %s", self.name, _show(partitions))

    def _on_stats(self, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        lag: dict[TP, int] = {}
        owned = self._ownership.owned()
        for topic, tstats in (stats.get("topics") or {}).items():
            for pid, pstats in (tstats.get("partitions") or {}).items():
                try:
                    tp = (topic, int(pid))
                except ValueError:
                    continue
                value = pstats.get("consumer_lag", -1)
                if tp in owned and isinstance(value, int) and value >= 0:
                    lag[tp] = value
        self.metrics.set_lag(lag)

    def _on_error(self, err: KafkaError) -> None:
        if _is_fatal(err):
            if self._fenced_by_itself(err):
                return
            log.error("sink %s: fatal Kafka error: %s", self.name, err)
            self._fatal = err
            self.stop()
            return
        self._consume_error(err)

    # -- shutdown --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self._stopping = True
        try:
            self._finish_started()  # consumed already: deliver it within the grace period too
        except Exception:  # never acknowledged, so redelivered: stopping matters more
            log.exception("sink %s: taking the last consumed batch at shutdown", self.name)
            self._started = None
        s = self.settings
        consumer = self._consumer
        worker = self._worker
        grace = 0.0 if self._force else s.shutdown_grace_s
        deadline = time.monotonic() + grace
        log.info(
            "sink %s: stopping; finishing %d in-flight record(s) within %.1f s",
            self.name, self._inflight_records, grace,
        )  # fmt: skip
        if consumer is not None:
            owned = [TopicPartition(t, p) for t, p in self._ownership.owned()]
            if owned:
                with contextlib.suppress(KafkaException):
                    consumer.pause(owned)  # stop fetching
        if worker is not None and worker.is_alive():
            self._work.post(StopRequest(deadline))
            while not self._worker_stopped and worker.is_alive():
                remaining = deadline + 1.0 - time.monotonic()
                if remaining <= 0 or (self._force and worker.abandoned):
                    break
                self._drain_reports(timeout=min(remaining, 0.1))
            self._drain_reports()
            if not self._worker_stopped:
                log.warning(
                    "sink %s: abandoning %d in-flight record(s) still in the sink; they will be redelivered",
                    self.name, self._inflight_records,
                )  # fmt: skip
        if worker is not None and worker.abandoned and self._inflight_records:
            log.warning("sink %s: %d record(s) abandoned at shutdown (redelivered on restart)", self.name,
                        self._inflight_records)  # fmt: skip
        if consumer is not None:
            self._drain_reports()  # a worker that died on a fatal dead letter reported what it held
            self._commit(asynchronous=False)
            if self.instance_id is not None and self._fatal is None:
                self._leave_group(consumer)
            try:
                consumer.close()  # leaves the group now instead of after the session timeout
            except (KafkaException, RuntimeError) as exc:
                log.warning("sink %s: consumer close: %s", self.name, exc)
        if self._dlq is not None:
            self._dlq.close()
        if self.health is not None:
            self.health.stop()
        self.metrics.shutdown()
        log.info("sink %s: stopped", self.name)

    def _leave_group(self, consumer: Consumer) -> None:
        """A static member's close() does not leave the group (KIP-345): its partitions would wait
        out session.timeout.ms. A stop (redeploy, scale-down) leaves explicitly, so only a crash
        keeps the member's seat for a restart with the same id. Bounded; best effort."""
        deadline = time.monotonic() + max(1.0, self.settings.revoke_timeout_s)
        try:
            consumer.unsubscribe()  # revokes, then sends LeaveGroup (close() alone would not)
            # Sending LeaveGroup clears the member id: until then, serve the revocation (records
            # fetched meanwhile are not acknowledged: they are redelivered).
            while (self._ownership.owned() or consumer.memberid()) and time.monotonic() < deadline:
                consumer.poll(0.05)
        except (KafkaException, RuntimeError) as exc:
            log.warning("sink %s: leaving group %s: %s", self.name, self.group_id, exc)


def _static_id(base: str | None, topics: list[str]) -> str | None:
    """``<base>.<digest of the subscription>``. The broker hands a process that takes over a static
    member's seat that member's assignment without a rebalance, even when it subscribes to other
    topics (librdkafka does not implement KIP-814's leader check): a subscription change must come
    with a new id, which makes that restart an ordinary join."""
    if base is None:
        return None
    digest = hashlib.sha256("\n".join(sorted(topics)).encode()).hexdigest()[:8]
    return f"{base}.{digest}"


def _is_fatal(err: KafkaError) -> bool:
    # librdkafka reports a fatal error (e.g. a fenced static member) as _FATAL with fatal() False.
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def _show(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[str]] = {}
    for p in partitions:
        by_topic.setdefault(p.topic, []).append(str(p.partition) if p.offset < 0 else f"{p.partition}@{p.offset}")
    return "; ".join(f"{t}[{','.join(ps)}]" for t, ps in sorted(by_topic.items()))


def _draft_format(sink: Any) -> Any | None:
    """What the intake drafts for ``sink`` (the audit sink's ledger entries, the otlp sink's log
    records; None: nothing)."""
    make = getattr(sink, "_native_draft_format", None)
    return make() if callable(make) else None
