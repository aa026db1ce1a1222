"""Contract v1 on the real broker: every kind and field survives produce → Kafka → consumer group.

The producer side is the thin path (``govbus._record.to_record`` + a raw confluent-kafka producer),
so this proves the contract itself, independent of the producer library.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus._contract import Decoder, Encoder
from govbus._record import from_record, to_record
from govbus.errors import DecodeError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

pytestmark = pytest.mark.integration
PRODUCER = ProducerInfo("prop-kernel", uuid.uuid4().hex, "test-host", "govbus-python/test")

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    text,
    st.binary(max_size=32),
)
json_like = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), text
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)
attributes = st.one_of(
    st.just({}),
    st.dictionaries(text, st.one_of(scalars, json_like), max_size=8),
    st.dictionaries(text, scalars, min_size=200, max_size=300),  # large maps
)
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s != "0" * 32)
hex16 = st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16)
events = st.builds(
    GovernanceEvent,
    agent_id=ids,
    kind=st.sampled_from(list(EventKind)),
    severity=ids,
    action=text,
    decision=text,
    reason=text,
    event_id=st.uuids().map(lambda u: u.hex),
    occurred_at=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    agent_did=st.none() | ids,
    session_id=st.none() | ids,
    resource=st.none() | ids,
    policy_name=st.none() | ids,
    latency_ms=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    trace_id=st.none() | hex32,
    span_id=st.none() | hex16,
    parent_span_id=st.none() | hex16,
    attributes=attributes,
    schema_version=st.sampled_from(["1", "1.1", "2"]),
)


@pytest.fixture(scope="module")
def channel(kafka_bootstrap: str, new_topic: Callable[..., str]) -> Iterator[tuple[str, Producer, Consumer]]:
    topic = new_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"roundtrip-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    yield topic, producer, consumer
    consumer.close()


def _exchange(channel: tuple[str, Producer, Consumer], batch: list[GovernanceEvent]) -> dict[str, GovernanceEvent]:
    topic, producer, consumer = channel
    encoder = Encoder()
    for e in batch:
        rec = to_record(e, PRODUCER, encoder)
        producer.produce(topic, rec.value, rec.key, headers=rec.headers)
    assert producer.flush(30) == 0
    wanted = {e.event_id for e in batch}
    got: dict[str, GovernanceEvent] = {}
    deadline = time.monotonic() + 60
    decoder = Decoder()
    while wanted - got.keys():
        assert time.monotonic() < deadline, f"missing {len(wanted - got.keys())} events"
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        back = from_record(msg.value(), msg.headers(), decoder)
        assert msg.key() == back.event.agent_id.encode()
        got[back.event.event_id] = back.event
    return got


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(events, min_size=1, max_size=12, unique_by=lambda e: e.event_id))
def test_every_field_round_trips_through_kafka(
    channel: tuple[str, Producer, Consumer], batch: list[GovernanceEvent]
) -> None:
    got = _exchange(channel, batch)
    for e in batch:
        assert got[e.event_id] == e.replace(producer=PRODUCER)


def test_every_kind_round_trips(channel: tuple[str, Producer, Consumer]) -> None:
    batch = [
        GovernanceEvent(agent_id=f"a{i}", kind=k, occurred_at=datetime.now(UTC) - timedelta(seconds=i))
        for i, k in enumerate(EventKind)
    ]
    got = _exchange(channel, batch)
    assert {got[e.event_id].kind for e in batch} == set(EventKind)


def test_foreign_record_is_reported_not_fatal(channel: tuple[str, Producer, Consumer]) -> None:
    """A record that is not our framing is reported as undecodable; the consumer reads on."""
    topic, producer, consumer = channel
    good = GovernanceEvent(agent_id="k")
    rec = to_record(good, PRODUCER, Encoder())
    producer.produce(topic, b'{"not": "avro"}', b"k", headers=[("ce_specversion", b"1.0")])
    producer.produce(topic, b'{"not": "avro"}', b"k", headers=rec.headers)
    # Same key, so the bad record sits before the good one in one partition.
    producer.produce(topic, rec.value, b"k", headers=rec.headers)
    assert producer.flush(30) == 0
    errors: list[DecodeError] = []
    deadline = time.monotonic() + 60
    decoder = Decoder()
    while True:
        assert time.monotonic() < deadline
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        try:
            back = from_record(msg.value(), msg.headers(), decoder)
        except DecodeError as exc:
            errors.append(exc)
            continue
        if back.event.event_id == good.event_id:
            break
    assert [e.reason for e in errors] == ["bad-headers", "unknown-framing"]
