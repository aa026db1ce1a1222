"""AGT's GovernanceEventProcessor -> GovbusSink -> Kafka -> consumer: every field of every event equal."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from integration.producer_fixtures import bus_settings, consume

from govbus.producer import Bus, GovbusSink
from govbus.producer._agt import to_agt

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from agent_os.event_sink import GovernanceEvent as AgtEvent
    from agent_os.event_sink import GovernanceEventKind, GovernanceEventProcessor

pytestmark = pytest.mark.integration


def agt_events(count: int) -> list[AgtEvent]:
    rng = random.Random(11)
    kinds = list(GovernanceEventKind)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    events = []
    for i in range(count):
        agent = f"agent-{i % 5}"
        events.append(
            AgtEvent(
                kind=kinds[i % len(kinds)],
                severity=rng.choice(["info", "warning", "high", "critical"]),
                agent_id=agent,
                agent_did=f"did:web:example.com:{agent}" if i % 2 else None,
                session_id=f"{agent}-s{i // 40}" if i % 3 else None,
                action=rng.choice(["shell.exec", "http.get", "fs.write"]),
                resource=rng.choice(["/etc/passwd", "https://api.example.com", None]),
                decision=rng.choice(["allow", "deny", "escalate", ""]),
                reason=f"reason {i} — ünïcode ✓",
                policy_name=rng.choice(["no-shell", None]),
                latency_ms=round(rng.uniform(0, 5), 4),
                trace_id=f"{rng.getrandbits(128):032x}" if i % 4 else None,
                span_id=f"{rng.getrandbits(64):016x}" if i % 4 else None,
                parent_span_id=f"{rng.getrandbits(64):016x}" if i % 8 == 1 else None,
                occurred_at=(start + timedelta(microseconds=rng.getrandbits(40))).isoformat(),
                attributes={"i": i, "score": rng.random(), "tags": ["a", str(i)], "nested": {"ok": bool(i % 2)}},
            )
        )
    # What AGT and kernels really produce at the edges: defaults, empty ids, odd timestamps.
    events.append(AgtEvent())  # every default: empty agent_id, now() as occurred_at
    events.append(AgtEvent(agent_id="edge", session_id="", occurred_at="2025-06-01T00:00:00Z", latency_ms=-1.0))
    events.append(AgtEvent(agent_id="edge", trace_id="NOT-HEX", schema_version="", attributes={"govbus.agt": 1}))
    return events


def test_agt_processor_to_kafka_every_field_equal(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    originals = agt_events(400)
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path)) as bus:
        processor = GovernanceEventProcessor(max_queue_size=10_000, schedule_delay_ms=20)
        processor.add_sink(GovbusSink(bus))
        for event in originals:
            processor.on_event(event)
        assert processor.force_flush(timeout_ms=60_000)  # AGT's flush -> sink.force_flush -> bus.flush
        assert processor.delivered_count == len(originals)
        assert processor.dropped_count == 0
        processor.shutdown()
        assert bus.counters().delivered == len(originals)
    consumed = consume(kafka_bootstrap, topic, len(originals))
    assert len(consumed) == len(originals)
    received = {c.event.event_id: to_agt(c.event) for c in consumed}
    for original in originals:
        assert received[original.event_id] == original
