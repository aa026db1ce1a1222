"""The gate against a real broker: outage, topic health, sink groups and lag, observe mode."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer

from govbus.gate import BusProbe, Decision, Gate, parse_policy
from govbus.localkafka import LocalBroker

pytestmark = pytest.mark.integration


def _wait(gate: Gate, want: bool, timeout: float) -> tuple[Decision, float]:
    started = time.monotonic()
    while True:
        d = gate.admit("agent-x")
        if d.allowed is want:
            return d, time.monotonic() - started
        assert time.monotonic() - started < timeout, f"gate still says allowed={d.allowed}: {d.reasons}"
        time.sleep(0.02)


def _gate(bootstrap: str, topic: str, policy: dict[str, object]) -> Gate:
    base: dict[str, object] = {"refresh_interval_s": 0.3, "max_staleness_s": 5, "debounce": 1}
    checks = dict(policy.pop("checks", {}))  # type: ignore[call-overload]
    checks.setdefault("producer", {"enabled": False})
    full = parse_policy({**base, **policy, "checks": checks})
    probe = BusProbe({"bootstrap.servers": bootstrap}, topic)
    return Gate(full, probe.run)


@pytest.fixture
def member() -> Iterator[Callable[[str, str, str], Consumer]]:
    consumers: list[Consumer] = []

    def join(bootstrap: str, topic: str, group: str) -> Consumer:
        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while not c.assignment():
            assert time.monotonic() < deadline, "consumer never got an assignment"
            c.poll(0.1)
        consumers.append(c)
        return c

    yield join
    for c in consumers:
        c.close()


def test_healthy_topic_admits(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    with _gate(kafka_bootstrap, topic, {"checks": {"topic": {"min_partitions": 3}}}) as gate:
        d = gate.admit("a1")
        assert d.allowed, d.reasons
        assert d.reasons == ()
        assert d.snapshot_age_s < 5
        names = [c.name for c in gate.snapshot.checks]  # type: ignore[union-attr]
        assert names == ["broker", "topic"]


def test_missing_or_small_topic_denies_with_reason(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    with _gate(kafka_bootstrap, f"absent-{uuid.uuid4().hex}", {}) as gate:
        d = gate.admit("a1")
        assert not d.allowed
        assert "does not exist" in d.reasons[0]
    topic = new_topic(partitions=2)
    with _gate(kafka_bootstrap, topic, {"checks": {"topic": {"min_partitions": 6}}}) as gate:
        d = gate.admit("a1")
        assert not d.allowed
        assert d.reasons == (f"topic: topic {topic} has 2 partition(s), the policy requires at least 6",)


def test_isr_below_min_insync_replicas_denies(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    # One broker: an ISR of 1 cannot meet min.insync.replicas=2.
    topic = new_topic(partitions=1, config={"min.insync.replicas": "2"})
    with _gate(kafka_bootstrap, topic, {}) as gate:
        d = gate.admit("a1")
        assert not d.allowed
        assert "min.insync.replicas=2" in d.reasons[0]


def test_required_sink_group_liveness_and_lag(
    kafka_bootstrap: str, new_topic: Callable[..., str], member: Callable[[str, str, str], Consumer]
) -> None:
    topic = new_topic(partitions=3)
    group = f"govbus.sink.audit-{uuid.uuid4().hex[:6]}"
    policy = {"checks": {"sinks": [{"name": "audit", "group": group}]}}
    with _gate(kafka_bootstrap, topic, policy) as gate:
        d = gate.admit("a1")
        assert not d.allowed
        assert d.reasons[0].startswith(f"sink:audit: group {group} has 0 live member(s)")
        consumer = member(kafka_bootstrap, topic, group)
        _wait(gate, True, timeout=15)
        consumer.close()
        d, _ = _wait(gate, False, timeout=30)
        assert "live member" in d.reasons[0]

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(50):
        producer.produce(topic, b"x", str(i).encode())
    assert producer.flush(10) == 0
    lagging = {"checks": {"sinks": [{"name": "audit", "group": group, "max_lag": 10}]}}
    member(kafka_bootstrap, topic, group)  # joined, never commits: 50 records behind
    with _gate(kafka_bootstrap, topic, lagging) as gate:
        d = gate.admit("a1")
        assert not d.allowed
        assert f"lags 50 record(s) behind {topic}, above the bound 10" in d.reasons[0]


def test_observe_mode_allows_and_reports(kafka_bootstrap: str) -> None:
    with _gate(kafka_bootstrap, f"absent-{uuid.uuid4().hex}", {"mode": "observe"}) as gate:
        d = gate.admit("a1")
        assert d.allowed
        assert d.would_deny
        assert "does not exist" in d.reasons[0]


def test_broker_outage_denies_then_recovers(
    kafka_bootstrap: str, local_broker: LocalBroker, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    timeout, interval = 1.0, 0.3
    gate = _gate(kafka_bootstrap, topic, {"checks": {"broker": {"timeout_s": timeout}}})
    with gate:
        assert gate.admit("a1").allowed
        local_broker.stop()
        d, waited = _wait(gate, False, timeout=30)
        assert d.reasons[0].startswith("broker: no metadata answer")
        # The policy's bound is timeout + one refresh interval; allow scheduling slack on a busy box.
        assert waited <= (timeout + interval) * 3 + 2
        local_broker.start()
        _wait(gate, True, timeout=60)
