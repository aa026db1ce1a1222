"""The work queue between the consume loop and the worker: batch limits, linger, controls."""

from __future__ import annotations

import threading
import time

from govbus.consumers._pipeline import Work, WorkQueue


def work(offset: int, size: int = 10, partition: int = 0) -> Work:
    return Work("t", partition, offset, 1, size, None, b"x", [], None)


def test_batch_closes_at_count_and_bytes() -> None:
    q = WorkQueue()
    q.put_many([work(i) for i in range(10)])
    assert [w.offset for w in q.take(4, 10_000, 10.0)] == [0, 1, 2, 3]
    assert [w.offset for w in q.take(100, 25, 10.0)] == [4, 5]  # the third would exceed 25 bytes
    assert len(q) == 4


def test_a_single_large_record_still_goes() -> None:
    q = WorkQueue()
    q.put_many([work(0, size=1000)])
    assert len(q.take(10, 100, 0.0)) == 1


def test_linger_waits_for_more_records_up_to_max_wait() -> None:
    q = WorkQueue()
    q.put_many([work(0)])
    threading.Timer(0.05, lambda: q.put_many([work(1)])).start()
    started = time.monotonic()
    got = q.take(100, 10_000, 0.3)
    assert [w.offset for w in got] == [0, 1]
    assert time.monotonic() - started >= 0.25


def test_records_that_already_waited_do_not_linger_again() -> None:
    q = WorkQueue()
    q.put_many([work(i) for i in range(3)])
    time.sleep(0.06)
    started = time.monotonic()
    assert len(q.take(100, 10_000, 0.05)) == 3
    assert time.monotonic() - started < 0.04


def test_control_message_interrupts_the_wait() -> None:
    q = WorkQueue()
    q.put_many([work(0)])
    threading.Timer(0.05, lambda: q.post("flush")).start()
    started = time.monotonic()
    assert q.take(100, 10_000, 5.0) == []
    assert time.monotonic() - started < 2.0
    assert q.controls() == ["flush"]
    assert len(q) == 1


def test_discard_and_no_linger() -> None:
    q = WorkQueue()
    q.put_many([work(i, partition=i % 2) for i in range(6)])
    dropped = q.discard(lambda w: w.partition == 1)
    assert [w.offset for w in dropped] == [1, 3, 5]
    q.no_linger = True
    assert [w.offset for w in q.take(100, 10_000, 5.0)] == [0, 2, 4]
    assert WorkQueue.total(dropped) == (3, 30)


class _CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def test_a_lingering_take_is_woken_only_when_its_batch_is_full() -> None:
    """Each wake costs the consume loop a thread switch and a GIL hand-off: a worker lingering
    for a fuller batch is woken by the first record and by the one that fills it, not between."""
    q = WorkQueue()
    cond = q._cond = _CountingCondition()
    got: list[list[Work]] = []
    taker = threading.Thread(target=lambda: got.append(q.take(3, 10_000, 30.0)))
    taker.start()
    q.put_many([work(0)])  # the first record: the idle worker starts lingering
    deadline = time.monotonic() + 10
    while q._linger != (3, 10_000):
        assert time.monotonic() < deadline, "the worker never lingered"
        time.sleep(0.001)
    woken = cond.notified
    q.put_many([work(1)])
    assert cond.notified == woken  # 2 of 3: no wake
    q.put_many([work(2)])
    assert cond.notified == woken + 1  # full: woken at once, not at the end of its 30 s linger
    taker.join(10)
    assert [w.offset for w in got[0]] == [0, 1, 2]
    assert q._linger == (0, 0)


def test_a_full_bytes_budget_wakes_a_lingering_take() -> None:
    q = WorkQueue()
    got: list[list[Work]] = []
    taker = threading.Thread(target=lambda: got.append(q.take(100, 25, 30.0)))
    taker.start()
    q.put_many([work(0)])
    deadline = time.monotonic() + 10
    while q._linger != (100, 25):
        assert time.monotonic() < deadline, "the worker never lingered"
        time.sleep(0.001)
    q.put_many([work(1), work(2)])  # 30 bytes: past the budget
    taker.join(10)
    assert not taker.is_alive()
    assert [w.offset for w in got[0]] == [0, 1]
