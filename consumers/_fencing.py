"""A fenced static member: the sink's own rejoin, or a second live process with its id?

``FENCED_INSTANCE_ID`` is fatal in librdkafka, and it has two causes:

- **Another live process** joined the group with the same ``group.instance.id``: the newer one
  takes the seat. Rejoining would fence it back, and the two would take turns; the older one
  must stop and say which setting to fix (exit code 2, docs/sinks.md).
- **The process fenced itself** (librdkafka#3437): while the coordinator did not answer for
  ``session.timeout.ms`` — an OffsetCommit held on the broker waiting for replicas that are down,
  with the heartbeat queued behind it — librdkafka timed the session out on its side, dropped the
  assignment and rejoined under the same id, which gave the seat a new member id; the answer to
  the old member's request still in flight is then ``FENCED_INSTANCE_ID``. Seen on the 3-broker
  cluster with two of three brokers down (tests/system/test_cluster_faults.py): the sink stopped
  for good over an outage it should have waited out.

The signature of the second is an assignment lost (``on_lost``: the session timed out or
``max.poll.interval.ms`` passed) shortly before the fencing. :class:`FenceJudge` answers
"rejoin" only then, and at most once per window, so two live processes sharing an id still end
with one of them stopped, after at most one extra round.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError

__all__ = ["FenceJudge", "is_fenced"]

MIN_WINDOW_S = 60.0


def is_fenced(err: KafkaError) -> bool:
    """``err`` says a static member was fenced (librdkafka wraps it in ``_FATAL``, the cause only in the text)."""
    return err.code() == KafkaError.FENCED_INSTANCE_ID or (
        err.code() == KafkaError._FATAL and "group.instance.id" in err.str()
    )


class FenceJudge:
    """Decides whether a fenced sink rejoins with a new consumer or stops.

    ``session_timeout_s``: the consumer's ``session.timeout.ms``; the window in which a lost
    assignment explains a fencing is three of those, at least a minute.
    """

    def __init__(self, session_timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = max(MIN_WINDOW_S, 3 * session_timeout_s)
        self._clock = clock
        self._lost_at: float | None = None
        self._rejoined_at: float | None = None
        self.rejoins = 0

    def assignment_lost(self) -> None:
        """The consumer reported its partitions lost (its session timed out, on its side)."""
        self._lost_at = self._clock()

    def should_rejoin(self) -> bool:
        """Called on a fencing: True (and counted) when it follows a lost assignment within the
        window and no rejoin happened within the window before it."""
        now = self._clock()
        if self._lost_at is None or now - self._lost_at > self.window_s:
            return False  # fenced while healthy: another process has the seat
        if self._rejoined_at is not None and now - self._rejoined_at <= self.window_s:
            return False  # fenced again right after a rejoin: two processes are taking turns
        self._rejoined_at = now
        self._lost_at = None
        self.rejoins += 1
        return True
