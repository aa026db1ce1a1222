"""Delivery bookkeeping: counters, the delivered watermark of spooled records, flush waiters.

Threads: the sender thread registers the spooled records it hands over (``taking``) and, as the
only thread that calls ``producer.poll()`` (``close()`` takes over once it stopped), resolves
them from the delivery reports. Each counter has a single writer, so plain ints suffice under the
GIL; ``submitted`` (many emitting threads) is an ``itertools.count``; the flush waiters, touched
only when someone flushes, have a lock.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable


class DeliveryTracker:
    def __init__(self, first_unsent: int) -> None:
        self._submitted = itertools.count()  # next() is atomic: emit() may run on many threads
        # Bound once: emit() calls it for every event.
        self.submitted_one: Callable[[], int] = self._submitted.__next__
        self.delivered = 0  # sender thread (delivery reports) only
        self.failed = 0  # sender thread only
        self.spooled = 0  # the thread that writes the spool, under the spool lock
        self.rejected = 0  # under _lock
        # Seqs taken from the spool (or journaled) and handed towards Kafka, not yet resolved, in
        # increasing order; resolved ones that are not at the head wait in _early.
        self._inflight: deque[int] = deque()
        self._early: set[int] = set()
        # Every spooled seq below this was taken (sender thread writes it, others read it).
        self.unsent = first_unsent
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, threading.Event]] = []
        # The lowest target a flush waits for: a delivery report only takes the lock when reached.
        self.next_target: float = math.inf

    # -- counting -------------------------------------------------------------------------------

    @property
    def submitted(self) -> int:
        # itertools.count keeps its value in C; its repr is the only public read-out ("count(5)").
        return int(repr(self._submitted)[6:-1])

    def rejected_one(self) -> None:
        with self._lock:
            self.rejected += 1

    # -- the watermark --------------------------------------------------------------------------

    def taking(self, seq: int) -> None:
        """Sender: ``seq`` (a spooled record) is about to be handed over."""
        self._inflight.append(seq)

    def untake(self) -> None:
        """Sender: the last ``taking`` did not happen after all."""
        self._inflight.pop()

    def resolve(self, seq: int) -> None:
        """A spooled record was delivered or dead-lettered."""
        inflight = self._inflight
        if inflight and inflight[0] == seq:
            inflight.popleft()
            early = self._early
            while inflight and inflight[0] in early:
                early.remove(inflight.popleft())
        else:
            self._early.add(seq)

    def watermark(self) -> int:
        """Every spooled seq below this is resolved: its segment may go."""
        unsent = self.unsent  # read first: a seq taken after this read is >= it
        inflight = self._inflight
        try:
            return min(inflight[0], unsent)
        except IndexError:
            return unsent

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # -- flush ----------------------------------------------------------------------------------

    def resolved(self) -> int:
        return self.delivered + self.failed

    def wait_for(self, target: int, timeout: float | None) -> bool:
        """Block until ``resolved() >= target`` or the timeout; True if reached."""
        if self.resolved() >= target:
            return True
        event = threading.Event()
        entry = (target, event)
        with self._lock:
            self._waiters.append(entry)
            self.next_target = min(self.next_target, target)
        try:
            if self.resolved() >= target:
                return True
            event.wait(timeout)
            return self.resolved() >= target  # wake_all() (a fatal error) also ends the wait
        finally:
            with self._lock:
                self._waiters.remove(entry)
                self.next_target = min((t for t, _ in self._waiters), default=math.inf)

    def wake_waiters(self) -> None:
        """After resolving records: release the flushes whose target is reached."""
        resolved = self.resolved()
        if resolved < self.next_target:
            return
        with self._lock:
            for target, event in self._waiters:
                if resolved >= target:
                    event.set()
            self.next_target = min((t for t, _ in self._waiters if t > resolved), default=math.inf)

    def wake_all(self) -> None:
        with self._lock:
            for _target, event in self._waiters:
                event.set()
