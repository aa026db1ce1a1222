"""The delivery worker: the one thread that calls the sink.

It takes batches from the :class:`WorkQueue`, writes them with retries, backoff and a circuit
breaker, dead-letters what can never succeed, and reports acknowledged offsets back to the
consume loop. Offsets only move forward for a partition once every record of a batch has been
handled (delivered, dead-lettered or skipped) and the partition is still owned by the same
assignment ("epoch"); whatever the worker abandons is simply redelivered later (at-least-once).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from govbus.consumers._dlq import DeadLetterer, origin
from govbus.consumers._errors import DeadLetterFatalError
from govbus.consumers._metrics import SinkMetrics
from govbus.consumers._pipeline import Failure, Work, WorkQueue
from govbus.consumers._retry import Backoff, BreakerState, CircuitBreaker
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.consumers._spi import Batch, Ok, Rejected, RetryLater, Sink
from govbus.consumers._tracing import links_for

__all__ = ["DeadLetterHeld", "DeliveryWorker", "FlushRequest", "Ownership", "Report", "RevokeRequest", "StopRequest"]

log = logging.getLogger("govbus.consumers.worker")

TP = tuple[str, int]


class Ownership:
    """Which partitions this process owns, each with the epoch of its current assignment.

    Work carries the epoch it was consumed under; work of an older epoch (the partition was
    revoked, maybe re-assigned since) is dropped instead of delivered or acknowledged.
    """

    def __init__(self) -> None:
        self._epochs: dict[TP, int] = {}
        self._next = 0
        self._lock = threading.Lock()

    def assign(self, tps: Sequence[TP]) -> dict[TP, int]:
        with self._lock:
            out = {}
            for tp in tps:
                self._next += 1
                out[tp] = self._epochs[tp] = self._next
            return out

    def revoke(self, tps: Sequence[TP]) -> None:
        with self._lock:
            for tp in tps:
                self._epochs.pop(tp, None)

    def epoch(self, tp: TP) -> int | None:
        return self._epochs.get(tp)

    def owns(self, work: Work) -> bool:
        return self._epochs.get((work.topic, work.partition)) == work.epoch

    def owned(self) -> dict[TP, int]:
        with self._lock:
            return dict(self._epochs)


@dataclasses.dataclass(frozen=True)
class FlushRequest:
    token: int


@dataclasses.dataclass(frozen=True)
class RevokeRequest:
    token: int
    partitions: frozenset[TP]


@dataclasses.dataclass(frozen=True)
class StopRequest:
    deadline: float  # monotonic; past it, in-flight records are abandoned


@dataclasses.dataclass(frozen=True)
class DeadLetterHeld:
    """A partition held because the dead letter of ``record`` could not be written (govbus._dlqmark)."""

    topic: str
    partition: int
    epoch: int
    position: int | None  # may be committed: every record before it acknowledged and flushed; None: unknown
    record: int
    dlq_topic: str
    error: str


@dataclasses.dataclass(frozen=True)
class Report:
    """Worker → consume loop. ``offsets``: (epoch, next offset) per partition, flushed by the sink."""

    kind: Literal["progress", "flushed", "revoked", "stopped", "dlq-failed"]
    token: int = 0
    released_records: int = 0
    released_bytes: int = 0
    offsets: dict[TP, tuple[int, int]] | None = None
    ok: bool = True
    held: tuple[DeadLetterHeld, ...] = ()


class DeliveryWorker:
    def __init__(
        self,
        sink: Sink,
        name: str,
        work: WorkQueue,
        reports: queue.SimpleQueue[Report],
        ownership: Ownership,
        settings: SinkRuntimeSettings,
        *,
        dead_letterer: DeadLetterer | None,
        metrics: SinkMetrics,
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.sink = sink
        self.name = name
        self._work = work
        self._reports = reports
        self._ownership = ownership
        self._s = settings
        self._dlq = dead_letterer
        self._metrics = metrics
        self._tracer = tracer or trace.get_tracer("govbus.consumers")
        self._clock = clock
        self._backoff = Backoff.from_settings(settings.retry, rand)
        self._dlq_backoff = Backoff.from_settings(settings.retry, rand)
        self.breaker = CircuitBreaker.from_settings(settings.breaker, clock=clock)
        self._acked: dict[TP, tuple[int, int]] = {}
        self._dirty = False
        self._stopping = False
        self._deadline: float | None = None
        self.abandoned = False
        self.state = "idle"
        self.backing_off = False
        self.last_progress = clock()
        self.error: BaseException | None = None
        self._span_name = f"govbus.sink.write {name}"
        self._thread = threading.Thread(target=self._run, name=f"govbus-sink-{name}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        closed_cleanly = False
        try:
            while True:
                self._serve_controls()
                if self._stopping and (self.abandoned or not len(self._work) or self._past_deadline()):
                    break
                b = self._s.batch
                items = self._work.take(b.max_records, b.max_bytes, b.max_wait_ms / 1000)
                if items:
                    self._process(items)
            if self._past_deadline() and len(self._work):
                self.abandoned = True
            ok = self._flush()
            self._reports.put(Report("stopped", offsets=self._snapshot(), ok=ok))
            closed_cleanly = True
        except BaseException as exc:  # the consume loop must learn that its worker died
            self.error = exc
            log.exception("sink %s: delivery worker failed", self.name)
            self._reports.put(Report("stopped", offsets=None, ok=False))
        finally:
            self.state = "stopped"
            try:
                self.sink.close()
            except Exception:
                log.exception("sink %s: close() failed", self.name)
            if not closed_cleanly:
                self.abandoned = True

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    # -- controls ------------------------------------------------------------------------------
    def _serve_controls(self) -> None:
        for control in self._work.controls():
            if isinstance(control, FlushRequest):
                ok = self._flush()
                self._reports.put(Report("flushed", token=control.token, offsets=self._snapshot(), ok=ok))
            elif isinstance(control, RevokeRequest):
                dropped = self._work.discard(_in_partitions(control.partitions))
                revoked = control.partitions
                n, size = WorkQueue.total(dropped)
                ok = self._flush()
                snap = {tp: v for tp, v in self._snapshot().items() if tp in revoked}
                for tp in revoked:
                    self._acked.pop(tp, None)
                self._reports.put(Report("revoked", control.token, n, size, snap, ok))
            elif isinstance(control, StopRequest):
                self._stopping = True
                self._deadline = control.deadline
                self._work.no_linger = True

    def _snapshot(self) -> dict[TP, tuple[int, int]]:
        owned = self._ownership
        return {tp: v for tp, v in self._acked.items() if owned.epoch(tp) == v[0]}

    def _flush(self) -> bool:
        if not self._dirty:
            return True
        try:
            self.sink.flush(max(self._s.revoke_timeout_s, 1.0))
        except Exception as exc:
            log.error("sink %s: flush failed (%s: %s); offsets not committed", self.name, type(exc).__name__, exc)
            return False
        self._dirty = False
        return True

    def _sleep(self, seconds: float) -> bool:
        """Waits ``seconds`` while serving controls; False when shutdown abandons in-flight work."""
        end = self._clock() + seconds
        while True:
            self._serve_controls()
            if self.abandoned or self._past_deadline():
                self.abandoned = True
                return False
            now = self._clock()
            if now >= end:
                return True
            limit = end - now
            if self._deadline is not None:
                limit = min(limit, self._deadline - now)
            self._work.wait_control(min(max(limit, 0.0), 0.5))

    # -- one batch -------------------------------------------------------------------------------
    def _process(self, items: list[Work]) -> None:
        released = WorkQueue.total(items)
        try:
            owns = self._ownership.owns
            live = [w for w in items if owns(w)]
            deliver = [w for w in live if w.record is not None]
            dead: list[tuple[Work, Failure]] = [(w, w.failure) for w in live if w.failure is not None]
            delivered: list[Work] = []
            if deliver:
                outcome = self._deliver(deliver)
                if outcome is None:
                    return
                delivered, rejected = outcome
                dead.extend(rejected)
            if dead and not self._dead_letter(dead, bool(delivered)):
                return
            self._acknowledge(live, delivered)
        finally:
            self.state = "idle"
            self._reports.put(Report("progress", released_records=released[0], released_bytes=released[1]))

    def _acknowledge(self, handled: list[Work], delivered: list[Work]) -> None:
        owns = self._ownership.owns
        highest: dict[TP, tuple[int, int]] = {}
        skipped: Counter[str] = Counter()
        for w in handled:
            if not owns(w):
                continue  # revoked meanwhile: its new owner re-reads it
            tp = (w.topic, w.partition)
            prev = highest.get(tp)
            if prev is None or w.offset + 1 > prev[1]:
                highest[tp] = (w.epoch, w.offset + 1)
            if w.skip is not None:
                skipped[w.skip] += 1
        self._acked.update(highest)
        if highest:
            self._dirty = True
            self.last_progress = self._clock()
        m = self._metrics
        if delivered:
            m.delivered.add(len(delivered), m.attrs())
            flagged: Counter[str] = Counter()
            oldest: int | None = None
            for w in delivered:
                r = w.record
                if r is None:
                    continue
                if r.flagged:
                    flagged[r.verdict] += 1
                if r.timestamp_ms is not None and (oldest is None or r.timestamp_ms < oldest):
                    oldest = r.timestamp_ms
            for verdict, n in flagged.items():
                m.flagged.add(n, m.attrs(verdict=verdict))
            if oldest is not None:
                m.latency.record(max(0.0, time.time() - oldest / 1000), m.attrs())
        for reason, n in skipped.items():
            m.skipped.add(n, m.attrs(reason=reason))

    def _deliver(self, works: list[Work]) -> tuple[list[Work], list[tuple[Work, Failure]]] | None:
        pending = works
        delivered: list[Work] = []
        rejected: list[tuple[Work, Failure]] = []
        attempt = 0
        failing_since: float | None = None
        max_elapsed = self._s.retry.max_elapsed_s
        m = self._metrics
        try:
            while pending:
                wait = self.breaker.wait_time()
                if wait > 0:
                    self.state = "breaker-open"
                    if not self._sleep(wait):
                        return None
                pending = [w for w in pending if self._ownership.owns(w)]
                if not pending:
                    break
                attempt += 1
                self.state = "writing"
                result, exc = self._write(pending, attempt)
                if exc is None and (result is None or isinstance(result, Ok)):
                    self._recovered()
                    delivered.extend(pending)
                    break
                if exc is None and isinstance(result, Rejected):
                    # The destination answered: it works, it just refuses these records for good.
                    self._recovered()
                    failures = {i: r for i, r in result.failures.items() if 0 <= i < len(pending)}
                    for i, w in enumerate(pending):
                        if i in failures:
                            rejected.append((w, Failure("sink:rejected", str(failures[i]) or "rejected by the sink")))
                        else:
                            delivered.append(w)
                    break
                delay: float | None = None
                if exc is None and isinstance(result, RetryLater):
                    kind, detail, exc_type = "retry-later", result.reason or "sink asked to retry later", None
                    delay = result.delay
                    if result.indices is not None:
                        keep = {i for i in result.indices if 0 <= i < len(pending)}
                        delivered.extend(w for i, w in enumerate(pending) if i not in keep)
                        pending = [w for i, w in enumerate(pending) if i in keep]
                        if not pending:
                            self._recovered()
                            break
                else:
                    if exc is None:
                        exc = TypeError(
                            f"write() returned {type(result).__name__}; expected None, Ok, RetryLater or Rejected"
                        )
                    kind, detail, exc_type = "exception", f"{type(exc).__name__}: {exc}", _qualname(exc)
                now = self._clock()
                failing_since = failing_since if failing_since is not None else now
                self.breaker.record_failure()
                m.write_failures.add(1, m.attrs(kind=kind))
                if max_elapsed is not None and now - failing_since >= max_elapsed:
                    message = f"still failing after {now - failing_since:.1f} s and {attempt} attempts; last: {detail}"
                    rejected.extend(
                        (w, Failure("sink:retries-exhausted", message, exception=exc_type)) for w in pending
                    )
                    break
                backoff = self._backoff.next()
                pause = backoff if delay is None else max(0.0, delay)
                log.warning(
                    "sink %s: write of %d records failed (attempt %d, %s: %s); retrying in %.2f s (breaker %s)",
                    self.name, len(pending), attempt, kind, detail, pause, self.breaker.state.value,
                )  # fmt: skip
                m.retried.add(len(pending), m.attrs())
                self.backing_off = True
                self.state = "backing-off"
                if not self._sleep(pause):
                    return None
            return delivered, rejected
        finally:
            self.backing_off = False

    def _recovered(self) -> None:
        if self.breaker.state is not BreakerState.CLOSED or self._backoff.attempts:
            log.info("sink %s: writes succeed again", self.name)
        self.breaker.record_success()
        self._backoff.reset()

    def _write(self, pending: list[Work], attempt: int) -> tuple[object, BaseException | None]:
        records = [w.record for w in pending if w.record is not None]
        batch = Batch(records, attempt=attempt, size_bytes=sum(w.size for w in pending))
        span = self._tracer.start_span(
            self._span_name,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": self._s.group_for(self.name),
                "messaging.batch.message_count": len(records),
                "govbus.sink.attempt": attempt,
            },
        )
        if span.is_recording():
            for link in links_for(records):
                span.add_link(link.context)
        started = time.perf_counter()
        result: object = None
        error: BaseException | None = None
        with trace.use_span(span, end_on_exit=True, record_exception=False):
            try:
                result = self.sink.write(batch)
            except Exception as exc:
                error = exc
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        self._metrics.write_duration.record(time.perf_counter() - started, self._metrics.attrs())
        return result, error

    def _dead_letter(self, items: list[tuple[Work, Failure]], delivered: bool) -> bool:
        """Writes dead letters until every one is acknowledged by the broker; False if abandoned."""
        m = self._metrics
        while True:
            items = [(w, f) for w, f in items if self._ownership.owns(w)]
            if not items:
                return True
            if self._dlq is None:
                log.error(
                    "sink %s: %d record(s) cannot be delivered (first: %s at %s[%d]@%d) and dead-lettering is "
                    "disabled; the sink is stopped until an operator intervenes",
                    self.name, len(items), items[0][1].reason, items[0][0].topic, items[0][0].partition, items[0][0].offset,
                )  # fmt: skip
                self.state = "blocked"
                if not self._sleep(self._dlq_backoff.next()):
                    return False
                continue
            self.state = "dead-lettering"
            try:
                failed = self._dlq.send(items, abort=lambda: self.abandoned or self._past_deadline())
            except DeadLetterFatalError as exc:
                self._report_held([(w, f, str(exc)) for w, f in items], delivered)
                raise
            failed_ids = {id(w) for w, _, _ in failed}
            ok = Counter(f.reason for w, f in items if id(w) not in failed_ids)
            for reason, n in ok.items():
                m.dead_lettered.add(n, m.attrs(reason=reason))
            if ok:
                first = next(w for w, _ in items if id(w) not in failed_ids)
                log.warning(
                    "sink %s: dead-lettered %d record(s) (%s), first %s[%d]@%d",
                    self.name, sum(ok.values()), ", ".join(f"{r}: {n}" for r, n in sorted(ok.items())),
                    first.topic, first.partition, first.offset,
                )  # fmt: skip
            if not failed:
                self._dlq_backoff.reset()
                return True
            log.error("sink %s: %d dead letter(s) not written (%s); retrying", self.name, len(failed), failed[0][2])
            if not self.abandoned:
                self._report_held(failed, delivered)
            items = [(w, f) for w, f, _ in failed]
            if not self._sleep(self._dlq_backoff.next()):
                return False

    def _report_held(self, failed: list[tuple[Work, Failure, str]], delivered: bool) -> None:
        """Tells the consume loop which partitions a refused dead letter holds, and that each may be
        committed up to that record once the sink flushed what this batch delivered before it (every
        other record before it was delivered, dead-lettered or skipped)."""
        if delivered:
            self._dirty = True  # delivered in this batch, not acknowledged yet: flush them too
        flushed = self._flush()
        worst: dict[TP, tuple[Work, str]] = {}
        for w, _f, error in failed:
            tp = (w.topic, w.partition)
            if tp not in worst or w.offset < worst[tp][0].offset:
                worst[tp] = (w, error)
        held = tuple(
            DeadLetterHeld(
                w.topic,
                w.partition,
                w.epoch,
                w.offset if flushed else None,
                w.offset,
                self._dlq.topic_for(origin(w)[0]) if self._dlq is not None else "",
                error,
            )
            for _tp, (w, error) in sorted(worst.items())
        )
        if held:
            self._reports.put(Report("dlq-failed", held=held))


def _in_partitions(tps: frozenset[TP]) -> Callable[[Work], bool]:
    def test(w: Work) -> bool:
        return (w.topic, w.partition) in tps

    return test


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
