"""Exponential backoff with jitter, and a circuit breaker (one per sink process)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import StrEnum

from govbus.consumers._settings import BreakerSettings, RetrySettings

__all__ = ["Backoff", "BreakerState", "CircuitBreaker"]


class Backoff:
    """Delays growing by ``multiplier`` from ``initial`` up to ``maximum`` seconds.

    Jitter takes a random share (``jitter``) off each delay, so processes that failed together
    do not retry together; the other share is kept, so a delay never collapses to zero.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self._rand = rand
        self.attempts = 0

    @classmethod
    def from_settings(cls, s: RetrySettings, rand: Callable[[], float] = random.random) -> Backoff:
        return cls(
            s.initial_backoff_ms / 1000, s.max_backoff_ms / 1000, multiplier=s.multiplier, jitter=s.jitter, rand=rand
        )

    def next(self) -> float:
        """The delay before the next attempt (and count this attempt)."""
        # Cap the exponent so a sink down for days does not overflow the float.
        raw = self.initial * self.multiplier ** min(self.attempts, 64)
        self.attempts += 1
        delay = min(self.maximum, raw)
        return delay * (1.0 - self.jitter * self._rand())

    def reset(self) -> None:
        self.attempts = 0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Closed → (``threshold`` consecutive failures) → open → (``open_seconds``) → half-open.

    In half-open one trial is allowed: success closes the breaker, failure reopens it. With one
    writer per process this mainly stops hammering a dead destination and makes the state
    visible (metrics, ``/readyz``); the records meanwhile wait in Kafka.
    """

    def __init__(self, threshold: int, open_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self.opened_count = 0

    @classmethod
    def from_settings(cls, s: BreakerSettings, *, clock: Callable[[], float] = time.monotonic) -> CircuitBreaker:
        return cls(s.failure_threshold, s.open_ms / 1000, clock=clock)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.open_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def wait_time(self) -> float:
        """Seconds until a write may be attempted (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - self._clock())

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None:
            # A failed half-open trial: open again for another full period.
            if self.state is BreakerState.HALF_OPEN:
                self._opened_at = self._clock()
                self.opened_count += 1
            return
        if self._failures >= self.threshold:
            self._opened_at = self._clock()
            self.opened_count += 1
