"""Every admission decision reaches the topic as a governance event, through the producer library."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from govbus._contract import Decoder
from govbus._record import from_record, message_headers
from govbus._settings import load_settings
from govbus.gate import BusProbe, Gate, parse_policy
from govbus.producer import Bus

pytestmark = pytest.mark.integration


def test_admission_decisions_are_published(kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path) -> None:
    topic = new_topic(partitions=3)
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap}, topic=topic, producer={"spool_dir": str(tmp_path / "spool")}
    )
    policy = parse_policy({"debounce": 1, "checks": {"producer": {"enabled": False}}})
    with Bus(settings) as bus:
        probe = BusProbe(settings.kafka.librdkafka(), topic)
        with Gate(policy, probe.run, recorder=bus.emit) as gate:
            allowed = gate.admit("agent-ok")
            assert allowed.allowed
        # A gate whose topic is missing denies, and says so on the bus.
        with Gate(policy, BusProbe(settings.kafka.librdkafka(), f"absent-{uuid.uuid4().hex}").run,
                  recorder=bus.emit) as closed:  # fmt: skip
            denied = closed.admit("agent-denied")
            assert not denied.allowed
        assert bus.flush(30)

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    found = {}
    deadline = time.monotonic() + 60
    try:
        while len(found) < 2:
            assert time.monotonic() < deadline, f"decision events seen: {sorted(found)}"
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event = from_record(msg.value(), message_headers(msg.headers()), Decoder()).event
            if event.action == "govbus.gate.admit":
                found[event.agent_id] = event
    finally:
        consumer.close()
    assert found["agent-ok"].decision == "allow"
    assert found["agent-ok"].policy_name == "govbus.gate"
    assert found["agent-denied"].decision == "deny"
    assert "does not exist" in found["agent-denied"].reason
    assert found["agent-denied"].attributes["would_deny"] is True
