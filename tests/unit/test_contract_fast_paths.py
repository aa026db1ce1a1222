"""The producer's fast paths through the contract are byte-identical to the plain ones.

* ``Encoder.encode``'s hand-written schema-v1 writer against fastavro's generic writer
  (``Encoder.encode_datum(to_datum(...))``), for every valid event including the corners (long
  strings past the length table, negative timestamps, any timezone, every attribute branch,
  NaN/inf at the top level, large maps, non-ASCII text, int/bool/float subclasses);
* ``cloudevents.headers_for`` (cached header tuples, isoformat instead of strftime) against the
  binding as first written.
"""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from govbus import contract
from govbus.contract import Decoder, Encoder, to_datum
from govbus.event import EventKind, GovernanceEvent, ProducerInfo
from govbus.sample import sample_events

PRODUCER = ProducerInfo("kernel", "inst-1", "host-a", "govbus-python/0.1.0")

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=60)
long_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1000, max_size=6000)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),  # NaN and infinities are legal at the top level
    text,
    st.binary(max_size=5000),
)
json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(text, inner, max_size=4)
    ),
    max_leaves=12,
)
attributes = st.one_of(
    st.just({}),
    st.dictionaries(text, st.one_of(scalars, json_like), max_size=8),
    st.dictionaries(text, scalars, min_size=60, max_size=200),  # count varint > 1 byte
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))])
events = st.builds(
    GovernanceEvent,
    agent_id=ids,
    kind=st.sampled_from(list(EventKind)),
    severity=ids,
    action=st.one_of(text, long_text),
    decision=text,
    reason=st.one_of(text, long_text),
    event_id=st.one_of(st.uuids().map(lambda u: u.hex), ids),
    occurred_at=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones),
    agent_did=st.none() | ids,
    session_id=st.none() | ids,
    resource=st.none() | ids | long_text,
    policy_name=st.none() | ids,
    latency_ms=st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(0, 10**6),
    trace_id=st.none() | st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s != "0" * 32),
    span_id=st.none() | st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16),
    parent_span_id=st.none(),
    attributes=attributes,
    schema_version=st.sampled_from(["1", "1.1", "2"]),
)


def reference(event: GovernanceEvent, producer: ProducerInfo = PRODUCER) -> bytes:
    encoder = Encoder()
    return encoder.encode_datum(to_datum(event, producer, encoder.schema.version))


def test_fast_path_is_active_for_v1() -> None:
    assert Encoder(1)._fast


@settings(max_examples=400, deadline=None)
@given(events)
def test_fast_writer_is_byte_identical_to_fastavro(event: GovernanceEvent) -> None:
    fast = contract._encode_v1(Encoder().schema.prefix, event, Encoder()._producer_tail(PRODUCER))
    ref = reference(event)
    if fast is not None:  # None = handed to fastavro (e.g. a string past the 4 KiB length table)
        assert fast == ref
    assert Encoder().encode(event, PRODUCER) == ref


@settings(max_examples=50, deadline=None)
@given(events, ids, ids)
def test_producer_record_is_cached_per_producer(event: GovernanceEvent, name: str, host: str) -> None:
    encoder = Encoder()
    other = ProducerInfo(name, "i-2", host, "lib")
    assert encoder.encode(event, PRODUCER) == reference(event)
    assert encoder.encode(event, other) == reference(event, other)
    assert encoder.encode(event, PRODUCER) == reference(event)


def test_sample_events_identical_and_decodable() -> None:
    encoder, decoder = Encoder(), Decoder()
    tail = encoder._producer_tail(PRODUCER)
    for event in sample_events(300):
        assert contract._encode_v1(encoder.schema.prefix, event, tail) is not None  # no fallback
        value = encoder.encode(event, PRODUCER)
        assert value == reference(event)
        assert decoder.decode(value) == event.replace(producer=PRODUCER)


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float):
    pass


def test_subclasses_and_special_values_choose_fastavros_branch() -> None:
    event = GovernanceEvent(
        agent_id="a",
        attributes={
            "flag": True,
            "level": Level.HIGH,  # an int subclass: the long branch
            "ratio": Ratio(0.5),
            "nan": math.nan,
            "inf": -math.inf,
            "min": -(2**63),
            "max": 2**63 - 1,
            "nested": {"a": [1, 2.5, None, "x"]},
            "tuple": (1, "two"),
            "raw": b"\x00\xff" * 3000,
        },
        occurred_at=datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC),  # negative micros
    )
    assert Encoder().encode(event, PRODUCER) == reference(event)


def test_timestamp_high_part_cache_survives_changes() -> None:
    encoder = Encoder()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for step in (0, 1, 2**21, 2**22 + 7, 2**40, 1, 0):
        event = GovernanceEvent(agent_id="a", occurred_at=base + timedelta(microseconds=step))
        assert encoder.encode(event, PRODUCER) == reference(event)


# -- the CloudEvents headers: the cached/isoformat fast paths print what the original code printed --


def reference_headers(
    event: GovernanceEvent, content_type: str, schema_uri: str | None, traceparent: str | None, tracestate: str | None
) -> list[tuple[str, bytes]]:
    """govbus.cloudevents.headers_for as first written (strftime, quote, fresh tuples)."""
    from urllib.parse import quote

    source = event.agent_did or f"/agent-os/agent/{quote(event.agent_id, safe='')}"
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event.event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", event.ce_type.encode()),
        ("ce_time", event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()),
        ("ce_subject", event.agent_id.encode()),
        ("content-type", content_type.encode()),
    ]
    if schema_uri:
        headers.append(("ce_dataschema", schema_uri.encode()))
    if event.session_id:
        headers.append(("ce_sessionid", event.session_id.encode()))
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
        if tracestate:
            headers.append(("tracestate", tracestate.encode()))
    return headers


@settings(max_examples=300, deadline=None)
@given(events, st.none() | text, st.none() | text, st.none() | text)
def test_headers_are_identical_to_the_original_binding(
    event: GovernanceEvent, schema_uri: str | None, traceparent: str | None, tracestate: str | None
) -> None:
    from govbus.cloudevents import headers_for

    for _ in range(2):  # the second time from the caches
        got = headers_for(
            event,
            content_type="application/avro",
            schema_uri=schema_uri,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        assert got == reference_headers(event, "application/avro", schema_uri, traceparent, tracestate)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones))
def test_format_time_matches_strftime_for_every_year(moment: datetime) -> None:
    from govbus.cloudevents import format_time

    assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
