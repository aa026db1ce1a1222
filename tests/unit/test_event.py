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
    attrs = {"k": 1}
    e = GovernanceEvent(agent_id="a", attributes=attrs)
    attrs["k"] = 2
    assert e.attributes["k"] == 1


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
