"""The delivery worker without Kafka: acknowledgement order, retries, breaker, dead letters, revocation, stop."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest
from _sinks import CollectingSink, FakeMessage, events, records, wait_for
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from govbus._contract import Decoder
from govbus.consumers import Batch, Rejected, RetryLater
from govbus.consumers._errors import DeadLetterFatalError
from govbus.consumers._intake import Intake
from govbus.consumers._metrics import SinkMetrics
from govbus.consumers._pipeline import Failure, Work, WorkQueue
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.consumers._worker import DeliveryWorker, FlushRequest, Ownership, Report, RevokeRequest, StopRequest


class FakeDLQ:
    def __init__(self, fail_times: int = 0) -> None:
        self.sent: list[tuple[Work, Failure]] = []
        self.fail_times = fail_times

    def send(self, items: list[tuple[Work, Failure]], *, abort: object = None) -> list[tuple[Work, Failure, str]]:
        if self.fail_times:
            self.fail_times -= 1
            return [(w, f, "broker down") for w, f in items]
        self.sent.extend(items)
        return []

    @staticmethod
    def topic_for(topic: str) -> str:
        return f"{topic}.dlq"


SETTINGS = SinkRuntimeSettings.model_validate(
    {
        "batch": {"max_records": 50, "max_wait_ms": 5},
        "retry": {"initial_backoff_ms": 5, "max_backoff_ms": 20, "jitter": 0},
        "breaker": {"failure_threshold": 3, "open_ms": 50},
    }
)


class Rig:
    def __init__(self, sink: CollectingSink, settings: SinkRuntimeSettings = SETTINGS, dlq: FakeDLQ | None = None):
        self.sink = sink
        self.work = WorkQueue()
        self.reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self.ownership = Ownership()
        self.epochs = self.ownership.assign([("t", 0), ("t", 1)])
        self.dlq = dlq if dlq is not None else FakeDLQ()
        self.metrics = SinkMetrics("test", readers=[])
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.worker = DeliveryWorker(
            sink, "test", self.work, self.reports, self.ownership, settings,
            dead_letterer=self.dlq, metrics=self.metrics,  # type: ignore[arg-type]
            tracer=provider.get_tracer("t"), rand=lambda: 0.0,
        )  # fmt: skip
        self.intake = Intake(Decoder(), max_record_bytes=100_000)
        self.offsets = {0: 0, 1: 0}
        self.got: list[Report] = []

    def feed(self, n: int, partition: int = 0, poison_at: set[int] | None = None) -> list[Work]:
        items = []
        for i, r in enumerate(records(events(n))):
            off = self.offsets[partition]
            self.offsets[partition] += 1
            value = b"garbage" if poison_at and i in poison_at else r.value
            msg = FakeMessage(value, r.headers, key=r.key, partition=partition, offset=off)
            items.append(self.intake(msg, self.epochs[("t", partition)]))
        self.work.put_many(items)
        return items

    def drain(self) -> list[Report]:
        while True:
            try:
                self.got.append(self.reports.get_nowait())
            except queue.Empty:
                return self.got

    def released(self) -> int:
        return sum(r.released_records for r in self.drain())

    def flush(self, token: int = 1) -> Report:
        self.work.post(FlushRequest(token))
        return wait_for(lambda: next((r for r in self.drain() if r.kind == "flushed" and r.token == token), None), 10)

    def counter(self, name: str) -> float:
        text = self.metrics.render_prometheus()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, grace: float = 5.0) -> Report:
        self.work.post(StopRequest(time.monotonic() + grace))
        report = wait_for(lambda: next((r for r in self.drain() if r.kind == "stopped"), None), grace + 5)
        assert self.worker.join(5)
        return report


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig(CollectingSink())
    r.worker.start()
    yield r
    if r.worker.is_alive():
        r.stop(0.5)


def test_delivers_in_order_and_reports_offsets_after_flush(rig: Rig) -> None:
    rig.feed(120, partition=0)
    rig.feed(30, partition=1)
    wait_for(lambda: rig.released() == 150, 10)
    assert len(rig.sink.records) == 150
    by_partition: dict[int, list[int]] = {}
    for r in rig.sink.records:
        by_partition.setdefault(r.partition, []).append(r.offset)
    assert by_partition[0] == list(range(120))
    assert by_partition[1] == list(range(30))
    assert max(len(b) for b in rig.sink.batches) <= 50
    flushed = rig.flush()
    assert flushed.offsets == {("t", 0): (rig.epochs[("t", 0)], 120), ("t", 1): (rig.epochs[("t", 1)], 30)}
    assert rig.sink.flushes == 1
    rig.flush(2)
    assert rig.sink.flushes == 1  # nothing new acknowledged: no needless fsync
    assert rig.counter("govbus_sink_records_delivered_total") == 150
    stopped = rig.stop()
    assert stopped.ok
    assert rig.sink.closed


def test_poison_is_dead_lettered_in_order_with_the_rest(rig: Rig) -> None:
    rig.feed(20, poison_at={3, 11})
    wait_for(lambda: rig.released() == 20, 10)
    assert [w.offset for w, _ in rig.dlq.sent] == [3, 11]
    assert {f.reason for _, f in rig.dlq.sent} == {"decode:unknown-framing"}
    assert len(rig.sink.records) == 18
    assert rig.flush().offsets == {("t", 0): (rig.epochs[("t", 0)], 20)}
    assert rig.counter('govbus_sink_records_dead_lettered_total{reason="decode:unknown-framing"') == 2


def test_retry_later_backs_off_then_succeeds() -> None:
    def script(call: int, batch: Batch) -> RetryLater | None:
        return RetryLater(0.01, "busy") if call <= 2 else None

    rig = Rig(CollectingSink(script))
    rig.worker.start()
    rig.feed(10)
    wait_for(lambda: rig.released() == 10, 10)
    assert rig.sink.calls == 3
    assert len(rig.sink.records) == 10
    assert [b.attempt for b in rig.sink.batches] == [3]
    assert rig.counter("govbus_sink_records_retried_total") == 20
    assert rig.counter('govbus_sink_write_failures_total{kind="retry-later"') == 2
    rig.stop()


def test_partial_retry_acknowledges_the_others() -> None:
    def script(call: int, batch: Batch) -> RetryLater | None:
        return RetryLater(0.0, indices=frozenset({1, 3})) if call == 1 else None

    rig = Rig(CollectingSink(script))
    rig.worker.start()
    rig.feed(5)
    wait_for(lambda: rig.released() == 5, 10)
    offsets = [r.offset for r in rig.sink.records]
    assert sorted(offsets) == [0, 1, 2, 3, 4]
    assert len(rig.sink.batches[-1]) == 2
    rig.stop()


def test_rejected_records_are_dead_lettered_with_the_sink_reason() -> None:
    rig = Rig(CollectingSink(lambda call, batch: Rejected({1: "schema says no"}) if call == 1 else None))
    rig.worker.start()
    rig.feed(4)
    wait_for(lambda: rig.released() == 4, 10)
    assert [(w.offset, f.reason, f.message) for w, f in rig.dlq.sent] == [(1, "sink:rejected", "schema says no")]
    assert sorted(r.offset for r in rig.sink.records) == [0, 2, 3]
    assert rig.flush().offsets == {("t", 0): (rig.epochs[("t", 0)], 4)}
    rig.stop()


def test_exceptions_open_the_breaker_and_recovery_closes_it() -> None:
    healthy = threading.Event()

    def script(call: int, batch: Batch) -> None:
        if not healthy.is_set():
            raise ConnectionError("destination down")

    rig = Rig(CollectingSink(script))
    rig.worker.start()
    rig.feed(5)
    wait_for(lambda: rig.worker.breaker.opened_count >= 1, 10)
    assert rig.worker.backing_off or rig.worker.state in ("breaker-open", "backing-off", "writing")
    assert rig.released() == 0  # nothing acknowledged while failing
    spans = [s for s in rig.spans.get_finished_spans() if s.status.status_code.name == "ERROR"]
    assert spans
    assert spans[0].events[0].name == "exception"
    healthy.set()
    wait_for(lambda: rig.released() == 5, 10)
    assert rig.worker.breaker.state.value == "closed"
    assert rig.counter('govbus_sink_write_failures_total{kind="exception"') >= 3
    rig.stop()


def test_retries_exhausted_dead_letters_the_batch() -> None:
    s = SETTINGS.model_copy(update={"retry": SETTINGS.retry.model_copy(update={"max_elapsed_s": 0.05})})

    def script(call: int, batch: Batch) -> None:
        raise TimeoutError("no answer")

    rig = Rig(CollectingSink(script), settings=s)
    rig.worker.start()
    rig.feed(3)
    wait_for(lambda: rig.released() == 3, 10)
    assert [f.reason for _, f in rig.dlq.sent] == ["sink:retries-exhausted"] * 3
    assert rig.dlq.sent[0][1].exception == "TimeoutError"
    assert "no answer" in rig.dlq.sent[0][1].message
    rig.stop()


def test_dead_letter_produce_failures_are_retried_never_skipped() -> None:
    rig = Rig(CollectingSink(), dlq=FakeDLQ(fail_times=2))
    rig.worker.start()
    rig.feed(3, poison_at={0})
    wait_for(lambda: rig.released() == 3, 10)
    assert len(rig.dlq.sent) == 1
    rig.stop()


def test_a_refused_dead_letter_reports_its_partition_held_at_the_record_after_flushing_what_came_before() -> None:
    # The consume loop commits that position with the dead-letter-failed mark (docs/watch.md).
    rig = Rig(CollectingSink(), dlq=FakeDLQ(fail_times=2))
    rig.worker.start()
    rig.feed(4, poison_at={2})
    wait_for(lambda: rig.released() == 4, 10)
    held = [h for r in rig.drain() if r.kind == "dlq-failed" for h in r.held]
    assert len(held) == 2  # one report per failed attempt; the third attempt succeeds
    for h in held:
        assert (h.topic, h.partition, h.record, h.position, h.dlq_topic, h.error) == (
            "t",
            0,
            2,
            2,
            "t.dlq",
            "broker down",
        )
        assert h.epoch == rig.epochs[("t", 0)]
    # Offsets 0 and 1 were delivered in the same batch: flushed before the position claims them.
    assert rig.sink.flushes >= 1
    assert len(rig.dlq.sent) == 1
    rig.stop()


class FatalDLQ(FakeDLQ):
    def send(self, items: list[tuple[Work, Failure]], *, abort: object = None) -> list[tuple[Work, Failure, str]]:
        raise DeadLetterFatalError("sink test: the dead-letter producer failed fatally: CLUSTER_AUTHORIZATION_FAILED")


def test_a_fatal_dead_letter_producer_reports_the_held_partition_before_the_worker_dies() -> None:
    rig = Rig(CollectingSink(), dlq=FatalDLQ())
    rig.worker.start()
    rig.feed(3, poison_at={1})
    stopped = wait_for(lambda: next((r for r in rig.drain() if r.kind == "stopped"), None), 10)
    assert not stopped.ok
    assert isinstance(rig.worker.error, DeadLetterFatalError)
    kinds = [r.kind for r in rig.got]
    assert kinds.index("dlq-failed") < kinds.index("stopped")
    (held,) = next(r for r in rig.got if r.kind == "dlq-failed").held
    assert (held.record, held.position) == (1, 1)
    assert "CLUSTER_AUTHORIZATION_FAILED" in held.error


def test_revocation_drops_queued_work_and_reports_flushed_offsets() -> None:
    gate = threading.Event()

    def script(call: int, batch: Batch) -> None:
        gate.wait(10)

    rig = Rig(CollectingSink(script))
    rig.worker.start()
    rig.feed(50, partition=0)  # one full batch: written, blocked in the sink
    wait_for(lambda: rig.sink.calls == 1, 5)
    rig.feed(30, partition=1)  # queued behind it
    rig.work.post(RevokeRequest(9, frozenset({("t", 1)})))
    gate.set()
    revoked = wait_for(lambda: next((r for r in rig.drain() if r.kind == "revoked"), None), 10)
    assert revoked.token == 9
    assert revoked.released_records == 30
    assert revoked.offsets == {}
    rig.ownership.revoke([("t", 1)])
    wait_for(lambda: rig.released() == 80, 10)
    assert {r.partition for r in rig.sink.records} == {0}
    rig.stop()


def test_work_of_an_old_epoch_is_neither_delivered_nor_acknowledged(rig: Rig) -> None:
    items = rig.feed(5, partition=1)
    del items
    rig.ownership.revoke([("t", 1)])
    rig.ownership.assign([("t", 1)])  # re-assigned: a new epoch
    wait_for(lambda: rig.released() == 5, 10)
    assert rig.sink.records == []
    assert rig.flush().offsets in ({}, None)


def test_stop_abandons_a_stuck_sink_after_the_grace_period() -> None:
    def script(call: int, batch: Batch) -> RetryLater:
        return RetryLater(0.02, "never")

    rig = Rig(CollectingSink(script))
    rig.worker.start()
    rig.feed(5)
    wait_for(lambda: rig.sink.calls >= 2, 5)
    started = time.monotonic()
    report = rig.stop(grace=0.3)
    assert time.monotonic() - started < 3
    assert rig.worker.abandoned
    assert report.offsets == {}
    assert rig.sink.closed


def test_stop_finishes_queued_work_without_lingering() -> None:
    s = SETTINGS.model_copy(update={"batch": SETTINGS.batch.model_copy(update={"max_wait_ms": 60_000})})
    rig = Rig(CollectingSink(), settings=s)
    rig.worker.start()
    rig.feed(7)
    report = rig.stop(grace=5)
    assert len(rig.sink.records) == 7
    assert report.offsets == {("t", 0): (rig.epochs[("t", 0)], 7)}


def test_spans_link_to_the_producer(rig: Rig) -> None:
    rig.feed(3)
    wait_for(lambda: rig.released() == 3, 10)
    span = next(s for s in rig.spans.get_finished_spans() if s.name == "govbus.sink.write test")
    assert span.kind.name == "CONSUMER"
    assert span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 3
    assert len(span.links) == 3
    assert format(span.links[0].context.trace_id, "032x") == "ab" * 16
    assert span.links[0].context.is_remote
