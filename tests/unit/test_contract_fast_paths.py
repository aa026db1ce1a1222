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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus import _contract as contract
from govbus._contract import Encoder, schema_version, schema_versions, to_datum
from govbus._sample import sample_events
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

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


VERSIONS = [v.version for v in schema_versions()]
V2_FIELDS = ("tenant_id", "policy_version", "risk_score")
HAS_V2_FIELDS = all(name in GovernanceEvent.__dataclass_fields__ for name in V2_FIELDS)
if HAS_V2_FIELDS:
    events = events.flatmap(
        lambda e: st.builds(
            e.replace,
            tenant_id=st.none() | ids,
            policy_version=st.none() | ids,
            risk_score=st.none() | st.floats(min_value=0, max_value=1),
        )
    )


def reference(event: GovernanceEvent, producer: ProducerInfo = PRODUCER, version: int | None = None) -> bytes:
    """fastavro's generic writer over the shipped schema (the v2 fields set here, independently of
    to_datum, so that this reference does not depend on the code under test)."""
    encoder = Encoder(version)
    datum = to_datum(event, producer, encoder.schema.version)
    if encoder.schema.version >= 2:
        for name in V2_FIELDS:
            datum.setdefault(name, getattr(event, name, None))
    return encoder.encode_datum(datum)


def fast(event: GovernanceEvent, version: int | None = None) -> bytes | None:
    encoder = Encoder(version)
    assert encoder._layout is not None
    return contract._encode_fast(encoder.schema.prefix, event, encoder._producer_tail(PRODUCER), encoder._layout)


def carried_by(event: GovernanceEvent, version: int) -> bool:
    """Whether schema ``version`` can carry ``event`` at all (v1: no v2 kind, no v2 field)."""
    if version >= 2:
        return True
    return event.kind.name in schema_version(1).schema["fields"][2]["type"]["symbols"] and all(
        getattr(event, name, None) is None for name in V2_FIELDS
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_fast_path_is_active_for_every_shipped_version(version: int) -> None:
    assert Encoder(version)._layout is not None


def test_other_layouts_use_fastavro() -> None:
    changed = {
        **schema_version(1).schema,
        "fields": [*schema_version(1).schema["fields"], {"name": "x", "type": "int"}],
    }
    assert contract._fast_layout(changed) is None


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events)
def test_fast_writer_is_byte_identical_to_fastavro(version: int, event: GovernanceEvent) -> None:
    encoded = fast(event, version)
    if not carried_by(event, version):
        assert encoded is None  # fastavro's path refuses it, with the reason
        return
    assert encoded is not None  # valid events never need fastavro
    assert encoded == reference(event, version=version)
    assert Encoder(version).encode(event, PRODUCER) == encoded


@settings(max_examples=50, deadline=None)
@given(events, ids, ids)
def test_producer_record_is_cached_per_producer(event: GovernanceEvent, name: str, host: str) -> None:
    encoder = Encoder()
    other = ProducerInfo(name, "i-2", host, "lib")
    assert encoder.encode(event, PRODUCER) == reference(event)
    assert encoder.encode(event, other) == reference(event, other)
    assert encoder.encode(event, PRODUCER) == reference(event)


@pytest.mark.parametrize("version", VERSIONS)
def test_sample_events_take_the_fast_path(version: int) -> None:
    encoder = Encoder(version)
    for event in sample_events(300):
        if not carried_by(event, version):
            continue
        assert fast(event, version) is not None  # no fallback for realistic events
        assert encoder.encode(event, PRODUCER) == reference(event, version=version)


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
    """govbus._cloudevents.headers_for as first written (strftime, quote, fresh tuples)."""
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
    from govbus._cloudevents import headers_for

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
    from govbus._cloudevents import format_time

    assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
