"""consumers/_fencing.py: a fencing right after a lost assignment is the sink's own rejoin."""

from __future__ import annotations

from confluent_kafka import KafkaError

from govbus.consumers._fencing import MIN_WINDOW_S, FenceJudge, is_fenced


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fenced_while_healthy_is_another_process() -> None:
    judge = FenceJudge(6.0, clock=Clock())
    assert not judge.should_rejoin()
    assert judge.rejoins == 0


def test_fenced_after_a_lost_assignment_rejoins_once_per_window() -> None:
    clock = Clock()
    judge = FenceJudge(6.0, clock=clock)
    judge.assignment_lost()
    clock.now += 10
    assert judge.should_rejoin()
    # Two live processes with one id take turns: the second fencing in the window stops the sink.
    judge.assignment_lost()
    clock.now += 10
    assert not judge.should_rejoin()
    # Much later, another outage: rejoin again.
    clock.now += MIN_WINDOW_S + 1
    judge.assignment_lost()
    clock.now += 1
    assert judge.should_rejoin()
    assert judge.rejoins == 2


def test_a_loss_long_before_does_not_explain_a_fencing() -> None:
    clock = Clock()
    judge = FenceJudge(30.0, clock=clock)
    assert judge.window_s == 90.0  # three session timeouts when that is above the minute
    judge.assignment_lost()
    clock.now += 91
    assert not judge.should_rejoin()


def test_is_fenced_reads_the_code_or_librdkafka_s_fatal_text() -> None:
    assert is_fenced(KafkaError(KafkaError.FENCED_INSTANCE_ID))
    assert is_fenced(KafkaError(KafkaError._FATAL, "Fatal error: ... same group.instance.id: ..."))
    assert not is_fenced(KafkaError(KafkaError._FATAL, "Fatal error: idempotent producer fenced"))
    assert not is_fenced(KafkaError(KafkaError._TRANSPORT))
