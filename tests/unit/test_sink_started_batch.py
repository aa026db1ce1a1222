"""The consume loop's started batch (the native intake of batch n runs while n+1 is consumed):
records of partitions revoked or rewound after it was consumed are not taken from it, and nothing
else is lost or reordered. The runtime is built but not run: its consume-loop steps are called
directly, with fake messages, so the interleavings are exact."""

from __future__ import annotations

from typing import Any

import pytest
from _sinks import FakeMessage, events, records
from confluent_kafka import TopicPartition

from govbus import _accel as native
from govbus._settings import load_settings
from govbus.consumers import SinkRuntime
from govbus.consumers import _intake as intake_module
from govbus.consumers.sinks._null import NullSink

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

TOPIC = "t"


def _runtime() -> SinkRuntime:
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        topic=TOPIC,
        sink={"health": {"enabled": False}, "intake_thread": True},
    )
    runtime = SinkRuntime(NullSink(), settings, name="started", verification=None)
    runtime._ownership.assign([(TOPIC, 0), (TOPIC, 1)])
    return runtime


def _batch(offset: int, n: int = 80) -> list[Any]:
    recs = records(events(n, seed=offset + 1))
    return [
        FakeMessage(r.value, r.headers, key=r.key, topic=TOPIC, partition=i % 2, offset=offset + i // 2)
        for i, r in enumerate(recs)
    ]


class _RewindingConsumer:
    """What ``_hold`` asks of the consumer, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []

    def pause(self, tps: list[TopicPartition]) -> None:
        self.calls += [("pause", tp.topic, tp.partition, tp.offset) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        self.calls.append(("seek", tp.topic, tp.partition, tp.offset))


def _queued(runtime: SinkRuntime) -> list[tuple[int, int]]:
    return [(w.partition, w.offset) for w in runtime._work._items]


def test_a_batch_is_taken_when_the_next_one_starts_and_when_nothing_more_comes() -> None:
    runtime = _runtime()
    first, second = _batch(0), _batch(40)
    assert len(first) >= intake_module.START_MIN_RECORDS
    runtime._ingest(first)
    assert runtime._started is not None
    assert _queued(runtime) == []  # started, not taken yet
    runtime._ingest(second)
    assert _queued(runtime) == [(m.partition(), m.offset()) for m in first]
    runtime._finish_started()
    assert runtime._started is None
    assert _queued(runtime) == [(m.partition(), m.offset()) for m in first + second]
    assert runtime._inflight_records == len(first) + len(second)


def test_a_small_batch_takes_the_started_one_first_to_keep_the_order() -> None:
    runtime = _runtime()
    first, small = _batch(0), _batch(40, n=4)
    runtime._ingest(first)
    runtime._ingest(small)  # too small to start: taken at once, after the started one
    assert runtime._started is None
    assert _queued(runtime) == [(m.partition(), m.offset()) for m in first + small]


def test_records_of_a_partition_revoked_and_reassigned_after_the_batch_started_are_not_taken() -> None:
    runtime = _runtime()
    batch = _batch(0)
    runtime._ingest(batch)
    # An eager rebalance inside the next poll: partition 1 is revoked (never acknowledged, so the
    # next owner reads it from the committed offset) and assigned back under a new epoch, which
    # re-reads it too: taking the started batch's records of it would deliver them twice.
    runtime._revoke([TopicPartition(TOPIC, 1)], lost=True)
    runtime._ownership.assign([(TOPIC, 1)])
    runtime._finish_started()
    assert _queued(runtime) == [(m.partition(), m.offset()) for m in batch if m.partition() == 0]


def test_records_behind_a_rewound_partition_are_not_taken_from_the_started_batch() -> None:
    runtime = _runtime()
    runtime._ingest(_batch(0))
    later = _batch(40)
    runtime._ingest(later)  # the first batch is taken now; the second is started
    assert runtime._started is not None
    # The schema registry is unreachable for a record of partition 0 of the first batch: the
    # partition is rewound to it and paused, so the started batch's records of it are read again.
    runtime._consumer = _RewindingConsumer()  # type: ignore[assignment]
    work = runtime._work._items[0]
    assert work.partition == 0
    assert runtime._hold(work)
    assert runtime._consumer.calls == [("pause", TOPIC, 0, work.offset), ("seek", TOPIC, 0, work.offset)]  # type: ignore[attr-defined]
    runtime._finish_started()
    taken = _queued(runtime)[len(_batch(0)) :]
    assert taken == [(m.partition(), m.offset()) for m in later if m.partition() == 1]


@pytest.mark.parametrize("tombstone_at", [None, 5])
def test_a_batch_is_taken_whole_with_its_sizes_counted_whether_or_not_a_record_goes_the_per_record_path(
    tombstone_at: int | None,
) -> None:
    runtime = _runtime()
    batch = _batch(0)
    if tombstone_at is not None:  # no value: the native intake hands it to the per-record path
        m = batch[tombstone_at]
        batch[tombstone_at] = FakeMessage(
            None, [], key=m.key(), topic=TOPIC, partition=m.partition(), offset=m.offset()
        )
    rows = runtime._intake.prepare(batch)
    assert rows is not None
    assert (None in rows) is (tombstone_at is not None)
    runtime._take(batch, rows, ())
    queued = list(runtime._work._items)
    assert [(w.partition, w.offset) for w in queued] == [(m.partition(), m.offset()) for m in batch]
    assert [w.epoch for w in queued] == [runtime._ownership.epoch((TOPIC, w.partition)) for w in queued]
    assert runtime._inflight_records == len(batch)
    assert runtime._inflight_bytes == runtime._work._bytes == sum(w.size for w in queued)
    failed = [i for i, w in enumerate(queued) if w.record is None]
    assert failed == ([] if tombstone_at is None else [tombstone_at])


def test_the_intake_thread_is_off_by_default() -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"}, topic=TOPIC, sink={"health": {"enabled": False}}
    )
    runtime = SinkRuntime(NullSink(), settings, name="started", verification=None)
    runtime._ownership.assign([(TOPIC, 0), (TOPIC, 1)])
    batch = _batch(0)
    runtime._ingest(batch)
    assert runtime._started is None
    assert _queued(runtime) == [(m.partition(), m.offset()) for m in batch]
