"""The event model validates at construction and names the offending field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from govbus.errors import InvalidEventError
from govbus.event import EventKind, GovernanceEvent


def test_defaults_are_valid() -> None:
    e = GovernanceEvent(agent_id="a")
    assert e.kind is EventKind.POLICY_CHECK
    assert len(e.event_id) == 32
    assert e.occurred_at.tzinfo is not None
    assert e.ce_type == "ai.agentos.policy.check"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"agent_id": ""}, "agent_id"),
        ({"agent_id": 5}, "agent_id"),
        ({"event_id": ""}, "event_id"),
        ({"severity": ""}, "severity"),
        ({"kind": "no_such_kind"}, "kind"),
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at"),
        ({"occurred_at": "2026-01-01T00:00:00Z"}, "occurred_at"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"latency_ms": "3"}, "latency_ms"),
        ({"latency_ms": True}, "latency_ms"),
        ({"trace_id": "abc"}, "trace_id"),
        ({"trace_id": "0" * 32}, "trace_id"),
        ({"trace_id": "A" * 32}, "trace_id"),
        ({"span_id": "g" * 16}, "span_id"),
        ({"parent_span_id": "1" * 15}, "parent_span_id"),
        ({"session_id": ""}, "session_id"),
        ({"agent_did": 3}, "agent_did"),
        ({"reason": "x" * (64 * 1024 + 1)}, "reason"),
        ({"action": "a\x00b"}, "action"),
        ({"reason": "bad \ud800"}, "reason"),
        ({"attributes": {"s": "\udfff"}}, "attributes.s"),
        ({"attributes": {"\ud800": 1}}, "attributes"),
        ({"attributes": []}, "attributes"),
        ({"attributes": {1: "x"}}, "attributes"),
        ({"attributes": {"big": 2**63}}, "attributes.big"),
        ({"attributes": {"obj": object()}}, "attributes.obj"),
        ({"attributes": {"n": {"deep": {"b": b"x"}}}}, "attributes.n.deep.b"),
        ({"attributes": {"l": [1, float("inf")]}}, "attributes.l[1]"),
        ({"attributes": {"n": {1: 2}}}, "attributes.n"),
    ],
)
def test_invalid_field_is_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        GovernanceEvent(**{"agent_id": "a", **changes})  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_kind_accepts_agt_string_value() -> None:
    assert GovernanceEvent(agent_id="a", kind="tool_call_blocked").kind is EventKind.TOOL_CALL_BLOCKED  # type: ignore[arg-type]


def test_attributes_are_copied() -> None:
    attrs = {"k": 1, "n": {"l": [1]}}
    e = GovernanceEvent(agent_id="a", attributes=attrs)
    attrs["k"] = 2
    attrs["n"]["l"].append(object())  # type: ignore[index]
    assert e.attributes == {"k": 1, "n": {"l": [1]}}


def test_latency_int_becomes_float_and_event_is_hashable() -> None:
    e = GovernanceEvent(agent_id="a", latency_ms=3)
    assert isinstance(e.latency_ms, float)
    assert {e: 1}[e] == 1


def test_every_kind_has_a_reverse_dns_type() -> None:
    types = {k.ce_type for k in EventKind}
    assert len(types) == len(EventKind)
    assert all(t.startswith("ai.agentos.") for t in types)


def test_aware_non_utc_time_is_accepted() -> None:
    from datetime import timedelta, timezone

    t = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert GovernanceEvent(agent_id="a", occurred_at=t).occurred_at == datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_kernel_facing_names_are_exported_from_govbus() -> None:
    import govbus

    for name in govbus.__all__:
        assert getattr(govbus, name) is not None
    from govbus.producer import Bus

    assert govbus.Bus is Bus


# --- size limits: every valid event fits in a Kafka record (librdkafka's message.max.bytes) -------

_BIG = 64 * 1024
_EMOJI = "\U0001f600" * _BIG  # 4 bytes a character in UTF-8


@pytest.mark.parametrize(
    ("changes", "field", "limit"),
    [
        ({"attributes": {"s": "x" * (_BIG + 1)}}, "attributes.s", "65536"),
        ({"attributes": {"b": b"x" * (_BIG + 1)}}, "attributes.b", "65536"),
        ({"attributes": {"big": "x" * 2_000_000}}, "attributes.big", "65536"),
        ({"attributes": {"n": {"deep": ["x" * (_BIG + 1)]}}}, "attributes.n.deep[0]", "65536"),
        ({"attributes": {f"k{i}": i for i in range(100_000)}}, "attributes", "1024"),
        ({"attributes": {f"k{i}": i for i in range(1025)}}, "attributes", "1024"),
        ({"attributes": {"k" * 257: 1}}, "attributes", "256"),
        ({"attributes": {"n": {"k" * 257: 1}}}, "attributes.n", "256"),
        # Each within its own limit, together more than a record holds.
        ({"reason": _EMOJI, "action": _EMOJI, "decision": _EMOJI, "resource": _EMOJI}, "<event>", "900000"),
        ({"attributes": {f"a{i}": "x" * 60_000 for i in range(16)}}, "<event>", "900000"),
        ({"attributes": {"l": ["\n" * 60_000] * 3}}, "<event>", "900000"),  # JSON escapes: 6 bytes each
    ],
)
def test_oversized_event_is_refused_naming_field_and_limit(changes: dict[str, object], field: str, limit: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        GovernanceEvent(**{"agent_id": "a", **changes})  # type: ignore[arg-type]
    assert info.value.field == field
    assert limit in str(info.value)


def _largest_events() -> list[GovernanceEvent]:
    """Events near the limits, built to make the bound as loose or as tight as possible."""
    tight = "€" * 60_000  # 3 bytes a character
    escapes = '"\\' * 20_000  # every character escaped in JSON
    return [
        GovernanceEvent(agent_id="a" * 256, reason=tight, action=tight, decision=tight, resource=tight[:40_000]),
        GovernanceEvent(agent_id="a", attributes={f"k{i:03d}" + "é" * 60: "\U0001f600" * 100 for i in range(1024)}),
        GovernanceEvent(agent_id="a", attributes={"n": {"q": [escapes, escapes], "e": "\x01" * 30_000}}),
        GovernanceEvent(agent_id="a", attributes={f"b{i}": b"\xff" * _BIG for i in range(13)}),
        GovernanceEvent(agent_id="a", attributes={"f": [1.7976931348623157e308, -2.2250738585072014e-308, -(2**63)]}),
    ]


def test_size_bound_holds_and_every_valid_event_fits_a_kafka_record() -> None:
    from govbus._contract import Encoder
    from govbus._record import to_record
    from govbus._sample import sample_events
    from govbus.event import MAX_ENCODED_BYTES, MAX_RECORD_OVERHEAD, ProducerInfo, encoded_size_bound

    producer = ProducerInfo("n" * 256, "0" * 32, "h" * 64, "govbus-python/99.99.99")
    encoder = Encoder()
    for event in [*_largest_events(), *sample_events(50)]:
        record = to_record(event, producer, encoder)
        bound = encoded_size_bound(event)
        assert len(record.value) <= bound <= MAX_ENCODED_BYTES
        headers = sum(len(k) + len(v or b"") + 8 for k, v in record.headers)
        assert len(record.key) + headers < MAX_RECORD_OVERHEAD // 10
        assert len(record.value) + len(record.key) + headers <= 1_000_000  # librdkafka's message.max.bytes


# --- immutability: an accepted event stays what was validated -----------------------------------


def test_attributes_are_read_only_all_the_way_down() -> None:
    e = GovernanceEvent(agent_id="a", attributes={"x": 1, "n": {"l": [1, {"d": 2}]}, "t": (1, [2])})
    mutations = [
        lambda: e.attributes.__setitem__("x", object()),
        lambda: e.attributes.update(y=object()),
        lambda: e.attributes.pop("x"),
        lambda: e.attributes.setdefault("z", object()),
        lambda: e.attributes.clear(),
        lambda: e.attributes["n"].__setitem__("o", object()),
        lambda: e.attributes["n"]["l"].append(object()),
        lambda: e.attributes["n"]["l"].__setitem__(0, object()),
        lambda: e.attributes["n"]["l"][1].__setitem__("d", object()),
        lambda: e.attributes["t"][1].extend([object()]),
    ]
    for mutate in mutations:
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    with pytest.raises(TypeError):
        e.attributes |= {"y": object()}  # type: ignore[misc]
    assert e.attributes == {"x": 1, "n": {"l": [1, {"d": 2}]}, "t": (1, [2])}
    # Still a dict for everything that reads one: JSON, isinstance, equality, pickling, copying.
    import copy
    import json
    import pickle

    assert isinstance(e.attributes, dict)
    assert isinstance(e.attributes["n"]["l"], list)
    assert json.loads(json.dumps(e.attributes)) == {"x": 1, "n": {"l": [1, {"d": 2}]}, "t": [1, [2]]}
    assert pickle.loads(pickle.dumps(e)) == e
    assert copy.deepcopy(e) == e
    assert copy.copy(e) == e
    mutable = e.attributes.copy()
    mutable["y"] = 2
    assert e.replace(attributes=mutable).attributes == {**e.attributes, "y": 2}
    assert hash(e) == hash(pickle.loads(pickle.dumps(e)))
