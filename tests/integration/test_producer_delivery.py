"""The Bus against a real broker: exactly-once per process, per-key order, Java-compatible
partitioning, the contract on the wire, trace context, the signing seam."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Producer
from integration.producer_fixtures import bus_settings, check_delivery, consume
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from govbus._sample import sample_events
from govbus.event import GovernanceEvent
from govbus.producer import Bus, OutgoingRecord
from govbus.producer._partition import partition_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_every_event_once_in_order_on_its_partition(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path, durability: str
) -> None:
    topic = new_topic(partitions=3)
    emitted = list(sample_events(3000, agents=12))
    started_ms = int(time.time() * 1000)
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path, durability=durability)) as bus:
        for event in emitted:
            bus.emit(event)
        assert bus.flush(60)
        assert bus.health().state == "connected"
    counters = bus.counters()
    assert (counters.submitted, counters.delivered, counters.failed) == (3000, 3000, 0)
    assert bus.health().state == "closed"
    consumed = consume(kafka_bootstrap, topic, 3000)
    assert len(consumed) == 3000
    check_delivery(consumed, emitted, partitions=3)
    # The contract on the wire: the event as emitted, the producer identity, CloudEvents headers.
    by_id = {c.event.event_id: c for c in consumed}
    for event in emitted[:200]:
        c = by_id[event.event_id]
        assert c.event == event.replace(producer=bus.producer_info)
        assert c.record.attributes.type == event.ce_type
        assert c.header("ce_id") == event.event_id.encode()
    # The record's timestamp is librdkafka's create time (the sender passes timestamp 0 = now).
    ended_ms = int(time.time() * 1000)
    assert all(c.timestamp[0] == TIMESTAMP_CREATE_TIME and started_ms <= c.timestamp[1] <= ended_ms for c in consumed)
    assert not list(tmp_path.glob("*.seg")) or durability == "disk"  # memory mode never needed the spool


def test_partitions_agree_with_librdkafkas_murmur2(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=7)
    keys = [f"agent-{uuid.uuid4().hex[: i % 30 + 1]}".encode() for i in range(200)]
    raw = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2"})
    placed: dict[bytes, int] = {}
    for key in keys:
        raw.produce(topic, b"x", key, on_delivery=lambda err, msg: placed.__setitem__(msg.key(), msg.partition()))
    assert raw.flush(30) == 0
    assert placed == {key: partition_for(key, 7) for key in keys}


def test_session_key_strategy(kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path) -> None:
    topic = new_topic(partitions=3)
    emitted = list(sample_events(300, agents=3))
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path, key_by="session_id")) as bus:
        for event in emitted:
            bus.emit(event)
        assert bus.flush(30)
    consumed = consume(kafka_bootstrap, topic, 300)
    check_delivery(consumed, emitted, partitions=3, key_of=lambda e: (e.session_id or e.agent_id).encode())


def test_trace_context_on_the_record_and_a_producer_span(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("kernel")
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path), tracer_provider=provider) as bus:
        with tracer.start_as_current_span("tool call") as caller:
            bus.emit(GovernanceEvent(agent_id="agent-1", action="shell.exec"))
        assert bus.flush(30)
    (record,) = consume(kafka_bootstrap, topic, 1)
    publish = next(s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.PRODUCER)
    ctx = caller.get_span_context()
    assert record.event.trace_id == f"{ctx.trace_id:032x}"
    assert record.event.span_id == f"{ctx.span_id:016x}"
    assert publish.parent is not None
    assert publish.parent.span_id == ctx.span_id
    flags = int(publish.context.trace_flags)
    assert record.header("traceparent") == f"00-{ctx.trace_id:032x}-{publish.context.span_id:016x}-{flags:02x}".encode()
    assert publish.attributes is not None
    assert publish.attributes["messaging.destination.partition.id"] == str(record.partition)


def test_batch_hook_sees_assigned_partitions_and_may_add_headers(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    seen: list[tuple[int, int]] = []

    def sign(hook_topic: str, records: Sequence[OutgoingRecord]) -> None:
        assert hook_topic == topic
        for r in records:
            assert r.partition == partition_for(r.key, 3)
            seen.append((r.seq, r.partition))
            r.headers.append(("x-test-seq", str(r.seq).encode()))

    emitted = list(sample_events(500))
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path), batch_hook=sign) as bus:
        for event in emitted:
            bus.emit(event)
        assert bus.flush(30)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)  # hand-over order is seq order
    assert len(seen) == 500
    consumed = consume(kafka_bootstrap, topic, 500)
    check_delivery(consumed, emitted, partitions=3)
    by_seq = dict(seen)
    for c in consumed:
        header = c.header("x-test-seq")
        assert header is not None
        assert by_seq[int(header)] == c.partition
