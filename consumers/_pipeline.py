"""What flows from the consume loop to the delivery worker: one :class:`Work` per consumed record.

Every consumed record enters the queue — deliverable, poison and skipped ones alike — so the
worker acknowledges each partition's offsets strictly in order, whatever became of each record.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from govbus.consumers._spi import DeliveredRecord, RawHeaders

__all__ = ["Failure", "Work", "WorkQueue"]


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """Why a record can never be delivered. ``reason`` is a stable code:

    ``oversize``, ``decode:<DecodeError.reason>``, ``verify:<verdict>``, ``sink:rejected``,
    ``sink:retries-exhausted``. ``transient``: the failure says nothing about the record (a
    :class:`~govbus.errors.DecodeError` whose reason is transient): re-read it later instead of
    dead-lettering it.
    """

    reason: str
    message: str
    verdict: str | None = None
    exception: str | None = None
    transient: bool = False


class Work:
    """One consumed record and what is to become of it: deliver ``record``, dead-letter
    ``failure``, or acknowledge without delivery (``skip`` names why)."""

    __slots__ = (
        "epoch",
        "failure",
        "headers",
        "key",
        "offset",
        "partition",
        "record",
        "replayed",
        "size",
        "skip",
        "timestamp_ms",
        "topic",
        "value",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        epoch: int,
        size: int,
        key: bytes | None,
        value: bytes | None,
        headers: RawHeaders,
        timestamp_ms: int | None,
        *,
        record: DeliveredRecord | None = None,
        failure: Failure | None = None,
        skip: str | None = None,
        replayed: bool = False,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.epoch = epoch
        self.size = size
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp_ms = timestamp_ms
        self.record = record
        self.failure = failure
        self.skip = skip
        self.replayed = replayed

    def __repr__(self) -> str:
        what = (
            "deliver"
            if self.record
            else (f"dead-letter {self.failure.reason}" if self.failure else f"skip {self.skip}")
        )
        return f"Work({self.topic}[{self.partition}]@{self.offset} {what})"


class WorkQueue:
    """The hand-off between the consume loop and the worker, plus a control channel.

    ``take`` returns a batch once ``max_records`` or ``max_bytes`` is reached or the oldest
    queued record has waited ``max_wait`` seconds; a pending control message (flush, revoke,
    stop) interrupts the wait, because the consume loop may be blocked waiting for its answer.
    The queue itself is unbounded: the consume loop's in-flight budget bounds it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: deque[Work] = deque()
        self._controls: deque[object] = deque()
        self._cond = threading.Condition()
        self._bytes = 0
        self._oldest: float = 0.0
        self._clock = clock
        self.no_linger = False  # set at shutdown: hand over whatever is queued at once
        # (records, bytes) a lingering take() waits for; (0, 0) while it does not linger.
        self._linger = (0, 0)

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Sequence[Work], size: int | None = None) -> None:
        """Queues ``items``; ``size``: their total size, when the caller summed it already."""
        if not items:
            return
        with self._cond:
            first = not self._items
            if first:
                self._oldest = self._clock()
            self._items.extend(items)
            self._bytes += sum(w.size for w in items) if size is None else size
            # A lingering worker is woken only once its batch is full (its timer ends the linger
            # otherwise): a wake per consumed batch cost a thread switch and a GIL hand-off each,
            # ~5% of the consume loop's time at 90k records/s.
            records, size_bytes = self._linger
            if first or len(self._items) >= records or self._bytes >= size_bytes or self.no_linger:
                self._cond.notify()

    def post(self, control: object) -> None:
        with self._cond:
            self._controls.append(control)
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def controls(self) -> list[object]:
        with self._cond:
            out = list(self._controls)
            self._controls.clear()
            return out

    def wait_control(self, timeout: float) -> None:
        """Sleeps up to ``timeout`` s, waking early when a control message arrives."""
        with self._cond:
            if not self._controls:
                self._cond.wait(timeout)

    def take(self, max_records: int, max_bytes: int, max_wait: float, idle_wait: float = 0.2) -> list[Work]:
        """The next batch, or [] when a control message arrived or nothing came for ``idle_wait`` s."""
        with self._cond:
            if not self._items and not self._controls:
                self._cond.wait(idle_wait)
            while self._items and not self._controls:
                if len(self._items) >= max_records or self._bytes >= max_bytes or self.no_linger:
                    break
                remaining = self._oldest + max_wait - self._clock()
                if remaining <= 0:
                    break
                self._linger = (max_records, max_bytes)
                try:
                    self._cond.wait(remaining)
                finally:
                    self._linger = (0, 0)
            if self._controls or not self._items:
                return []
            batch: list[Work] = []
            size = 0
            items = self._items
            while items and len(batch) < max_records:
                w = items[0]
                if batch and size + w.size > max_bytes:
                    break
                batch.append(items.popleft())
                size += w.size
            self._bytes -= size
            if items:
                # The rest has waited since before this batch was cut: no new linger for it.
                self._oldest = min(self._oldest, self._clock())
            return batch

    def discard(self, drop: Callable[[Work], bool]) -> list[Work]:
        """Removes and returns the queued records ``drop`` selects (e.g. of revoked partitions)."""
        with self._cond:
            kept: deque[Work] = deque()
            dropped: list[Work] = []
            for w in self._items:
                (dropped if drop(w) else kept).append(w)
            self._items = kept
            self._bytes -= sum(w.size for w in dropped)
            return dropped

    def drain(self) -> list[Work]:
        with self._cond:
            out = list(self._items)
            self._items.clear()
            self._bytes = 0
            return out

    @staticmethod
    def total(items: Iterable[Work]) -> tuple[int, int]:
        n = size = 0
        for w in items:
            n += 1
            size += w.size
        return n, size
