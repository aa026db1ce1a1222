"""The compiled delivery report (``govbus._native.DeliveryCounter``) against the Python one,
without a broker: the same counts, the same flush wake-ups, every other report still judged by
``Delivery.on_delivery``, and no Bus kept alive by it."""

from __future__ import annotations

import gc
import socket
import threading
import weakref
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from govbus import _accel
from govbus._settings import load_settings
from govbus.event import ProducerInfo
from govbus.producer._batch import OutgoingRecord
from govbus.producer._delivery import Delivery, DeliveryTracker
from govbus.producer._spool import Spool

pytestmark = pytest.mark.skipif(not _accel.active(), reason="the compiled core is not in use")


def _delivery(tmp_path: Path, counted: bool) -> Delivery:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings(topic="t", kafka={"bootstrap_servers": f"127.0.0.1:{port}"})
    spool = Spool(
        tmp_path / f"spool-{counted}",
        max_bytes=8 << 20,
        segment_bytes=1 << 20,
        producer=ProducerInfo("p", "i", "h", "l"),
    )
    tracker = DeliveryTracker(first_unsent=spool.start_watermark)
    delivery = Delivery(settings.kafka.librdkafka(), "t", settings.kafka, spool, tracker)
    if counted:
        delivery.use_counter(_accel.delivery_counter(delivery.on_delivery, tracker.wake_waiters))
    return delivery


def _report(delivery: Delivery) -> object:
    counter = delivery.tracker.counter
    return delivery.on_delivery if counter is None else counter


def _records(delivery: Delivery, seqs: range, keep: bool = True) -> list[OutgoingRecord]:
    report = _report(delivery)
    return [OutgoingRecord(i, b"k", b"v", [], keep, None, report) for i in seqs]  # type: ignore[arg-type]


def test_deliveries_are_counted_as_on_the_python_path(tmp_path: Path) -> None:
    """Memory-mode records, spooled ones (the watermark) and a first delivery that proves the
    broker reachable: the counters, the watermark and ``reachable`` end the same on both paths."""
    ends = []
    for counted in (False, True):
        delivery = _delivery(tmp_path, counted)
        tracker = delivery.tracker
        spooled = _records(delivery, range(0, 3), keep=False)
        for record in spooled:
            tracker.taking(record.seq)
        tracker.unsent = 3
        memory = _records(delivery, range(3, 103))
        assert delivery.reachable is None
        for record in [memory[0], *spooled[::-1], *memory[1:]]:
            record(None, None)
        ends.append((tracker.delivered, tracker.failed, tracker.watermark(), tracker.in_flight, delivery.reachable))
        if counted:
            # The first report went through on_delivery (the broker was not known reachable),
            # as did the spooled ones; the other 99 were counted without it.
            assert tracker.counter.delivered == 99
        delivery._spool.close()
    assert ends[0] == ends[1] == (103, 0, 3, 0, True)


def test_an_outage_sends_the_next_delivery_to_the_python_report(tmp_path: Path) -> None:
    delivery = _delivery(tmp_path, counted=True)
    counter = delivery.tracker.counter
    delivery.reachable = True
    records = _records(delivery, range(4))
    records[0](None, None)
    assert counter.delivered == 1
    delivery.reachable = False  # "all brokers down"
    records[1](None, None)
    assert counter.delivered == 1
    assert delivery.reachable is True  # a delivery proves it back, as before
    records[2](None, None)
    assert counter.delivered == 2
    assert delivery.tracker.delivered == 3
    delivery._spool.close()


def test_errors_go_to_the_python_report(tmp_path: Path) -> None:
    """A purged memory-mode record is kept for the spool (nothing lost once emit returned)."""
    delivery = _delivery(tmp_path, counted=True)
    delivery.reachable = True
    record = _records(delivery, range(1))[0]
    record(KafkaError(KafkaError._PURGE_QUEUE, "purged"), None)
    assert delivery.rescue == [record]
    assert delivery.tracker.delivered == 0
    delivery._spool.close()


@pytest.mark.parametrize("failed_first", [False, True])
def test_a_flush_wakes_when_the_counted_deliveries_reach_it(tmp_path: Path, failed_first: bool) -> None:
    """The counter's threshold follows the flush target minus what was resolved elsewhere (a
    failure, a delivery reported in Python): the flush returns at its target, not one late."""
    delivery = _delivery(tmp_path, counted=True)
    tracker = delivery.tracker
    delivery.reachable = True
    records = _records(delivery, range(50))
    waiting = threading.Event()
    result: list[bool] = []

    def flush() -> None:
        waiting.set()
        result.append(tracker.wait_for(50, timeout=120))

    flusher = threading.Thread(target=flush)
    flusher.start()
    waiting.wait(10)
    while tracker.next_target != 50:  # bounded by the flush's own timeout
        flusher.join(0.001)
    if failed_first:
        tracker.failed += 1  # a refused record: resolved outside the counter, then wake_waiters
        tracker.wake_waiters()
        records = records[1:]
    for record in records:
        assert not result
        record(None, None)
    # The last report woke the flush: it returns now, not at its timeout.
    flusher.join(10)
    assert not flusher.is_alive()
    assert result == [True]
    assert tracker.resolved() == 50
    assert tracker.counter.wake_at == 2**64 - 1  # no flush waiting: nothing to wake
    delivery._spool.close()


def test_a_closed_delivery_is_freed(tmp_path: Path) -> None:
    """The counter holds bound methods of its Delivery, which holds it: the cyclic GC must see
    that cycle, or every Bus (and its librdkafka instance) would stay in memory."""
    delivery = _delivery(tmp_path, counted=True)
    delivery._spool.close()
    gone = weakref.ref(delivery)
    del delivery
    gc.collect()
    assert gone() is None
