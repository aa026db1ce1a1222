"""Backoff and circuit breaker, on a fake clock and fixed jitter."""

from __future__ import annotations

import pytest

from govbus.consumers._retry import Backoff, BreakerState, CircuitBreaker


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(0.1, 1.0, multiplier=2.0, jitter=0.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == pytest.approx(0.1)


@pytest.mark.parametrize("r", [0.0, 0.5, 0.999])
def test_jitter_takes_a_share_off_but_never_all(r: float) -> None:
    b = Backoff(1.0, 10.0, jitter=0.5, rand=lambda: r)
    d = b.next()
    assert 0.5 <= d <= 1.0
    assert d == pytest.approx(1.0 - 0.5 * r)


def test_backoff_survives_very_many_attempts() -> None:
    b = Backoff(0.1, 30.0, jitter=0.0)
    b.attempts = 10_000
    assert b.next() == 30.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_threshold_then_half_opens() -> None:
    clock = Clock()
    cb = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(2):
        cb.record_failure()
    assert cb.state is BreakerState.CLOSED
    assert cb.wait_time() == 0
    cb.record_failure()
    assert cb.state is BreakerState.OPEN
    assert cb.wait_time() == pytest.approx(10.0)
    clock.t += 4
    assert cb.wait_time() == pytest.approx(6.0)
    clock.t += 6
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.wait_time() == 0
    cb.record_failure()  # the trial failed: a full period again
    assert cb.state is BreakerState.OPEN
    assert cb.wait_time() == pytest.approx(10.0)
    assert cb.opened_count == 2
    clock.t += 10
    cb.record_success()
    assert cb.state is BreakerState.CLOSED
    cb.record_failure()
    assert cb.state is BreakerState.CLOSED  # the count starts over
