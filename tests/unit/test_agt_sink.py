"""The AGT drop-in: lossless mapping of AGT's GovernanceEvent through the wire contract, and the
sink's protocol behaviour, with the real agent-governance-toolkit-core package (no broker)."""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus._contract import Decoder, Encoder
from govbus.event import EventKind, GovernanceEvent, ProducerInfo
from govbus.producer import GovbusSink, SpoolFullError
from govbus.producer import _agt as agt_module
from govbus.producer._agt import EXTRA_FIELD_PREFIX, FIDELITY_KEY, MAPPED_FIELDS, from_agt, to_agt

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from agent_os.event_sink import (
        GovernanceEvent as AgtEvent,
    )
    from agent_os.event_sink import (
        GovernanceEventKind,
        GovernanceEventProcessor,
        GovernanceEventSink,
        SinkExportResult,
    )

PRODUCER = ProducerInfo("kernel", "i", "h", "govbus-python/test")


def through_the_wire(event: AgtEvent) -> AgtEvent:
    """AGT event -> govbus event -> Avro bytes -> govbus event -> AGT event."""
    return to_agt(Decoder().decode(Encoder().encode(from_agt(event), PRODUCER)))


text = st.text(st.characters(codec="utf-8"), max_size=40)  # NUL included: AGT allows it
long_or_short = st.one_of(text, st.text(min_size=250, max_size=300))
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), text
)
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
times = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),  # what AGT itself writes
    st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.sampled_from([timezone(timedelta(hours=2))])).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(min_value=datetime(1900, 1, 1)).map(lambda d: d.isoformat()),  # naive
    st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
    ),
    text,  # not a time at all
)
agt_events = st.builds(
    AgtEvent,
    schema_version=st.one_of(st.just("1"), text),
    event_id=st.one_of(st.uuids().map(lambda u: u.hex), text),
    occurred_at=times,
    kind=st.sampled_from(list(GovernanceEventKind)),
    severity=st.one_of(st.sampled_from(["info", "high", ""]), text),
    agent_id=st.one_of(st.just(""), long_or_short),
    agent_did=st.none() | text,
    session_id=st.none() | st.just("") | text,
    action=text,
    resource=st.none() | text,
    decision=text,
    reason=text,
    policy_name=st.none() | text,
    latency_ms=st.floats(allow_nan=False),  # negative and infinite too
    trace_id=st.none() | text | st.just("ab" * 16),
    span_id=st.none() | text | st.just("cd" * 8),
    parent_span_id=st.none() | text,
    attributes=st.dictionaries(text, json_value, max_size=5),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agt_events)
def test_any_agt_event_survives_the_wire_unchanged(event: AgtEvent) -> None:
    assert through_the_wire(event) == event


def test_a_typical_agt_event_needs_no_fidelity_record() -> None:
    event = AgtEvent(
        kind=GovernanceEventKind.TOOL_CALL_BLOCKED,
        severity="warning",
        agent_id="agent-1",
        agent_did="did:web:example.com:agent-1",
        session_id="s-1",
        action="shell.exec",
        resource="/etc/passwd",
        decision="deny",
        reason="tool not allowed",
        policy_name="tool-allowlist",
        latency_ms=0.42,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        attributes={"tool": "shell", "args": ["ls", "-l"], "attempt": 2},
    )
    mapped = from_agt(event)
    assert FIDELITY_KEY not in mapped.attributes
    assert mapped.kind is EventKind.TOOL_CALL_BLOCKED
    assert mapped.occurred_at.tzinfo is not None
    assert through_the_wire(event) == event


def test_what_the_model_refuses_travels_in_the_fidelity_record() -> None:
    event = AgtEvent(agent_id="", session_id="", trace_id="not-hex", occurred_at="yesterday", latency_ms=-1.0)
    mapped = from_agt(event)
    assert mapped.agent_id == "unknown"
    assert mapped.session_id is None
    assert mapped.trace_id is None
    assert mapped.attributes[FIDELITY_KEY] == {
        "occurred_at": "yesterday",
        "agent_id": "",
        "session_id": "",
        "trace_id": "not-hex",
        "latency_ms": -1.0,
    }
    assert through_the_wire(event) == event


def test_non_finite_latency_and_colliding_attribute_round_trip() -> None:
    event = AgtEvent(agent_id="a", latency_ms=math.inf, attributes={FIDELITY_KEY: {"mine": True}, "x": 1})
    assert through_the_wire(event) == event
    nan = through_the_wire(AgtEvent(agent_id="a", latency_ms=math.nan))
    assert math.isnan(nan.latency_ms)


def test_values_json_cannot_carry_are_sent_as_repr_and_marked_lossy() -> None:
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    event = AgtEvent(agent_id="a", attributes={"when": moment, "ok": 1})
    mapped = from_agt(event)
    assert mapped.attributes["when"] == repr(moment)
    assert mapped.attributes[FIDELITY_KEY]["lossy"] == ["when"]
    assert mapped.attributes["ok"] == 1


# -- fields a later AGT release adds ------------------------------------------------------------


def test_the_mapping_knows_every_field_of_the_installed_agt_event() -> None:
    """An AGT upgrade that adds, removes or retypes a field fails here, loudly: map the new field
    (from_agt/to_agt and the wire model) or accept that it travels as an ``agt.<field>`` attribute."""
    agt_fields = {f.name: f.type for f in dataclasses.fields(AgtEvent)}
    assert set(agt_fields) == MAPPED_FIELDS, (
        f"AGT fields the mapping does not know: {sorted(set(agt_fields) - MAPPED_FIELDS)}; "
        f"mapped fields AGT no longer has: {sorted(MAPPED_FIELDS - set(agt_fields))}"
    )
    hints = typing.get_type_hints(AgtEvent)
    assert {name: str(hints[name]) for name in agt_fields} == {
        "schema_version": "<class 'str'>",
        "event_id": "<class 'str'>",
        "occurred_at": "<class 'str'>",
        "kind": "<enum 'GovernanceEventKind'>",
        "severity": "<class 'str'>",
        "agent_id": "<class 'str'>",
        "agent_did": "str | None",
        "session_id": "str | None",
        "action": "<class 'str'>",
        "resource": "str | None",
        "decision": "<class 'str'>",
        "reason": "<class 'str'>",
        "policy_name": "str | None",
        "latency_ms": "<class 'float'>",
        "trace_id": "str | None",
        "span_id": "str | None",
        "parent_span_id": "str | None",
        "attributes": "dict[str, typing.Any]",
    }


@dataclasses.dataclass(frozen=True)
class NewerAgtEvent(AgtEvent):
    """What a later AGT release could look like: the same event with fields added."""

    risk_score: float = 0.0
    labels: list[str] = dataclasses.field(default_factory=list)
    model: str | None = None


@pytest.fixture
def newer_agt(monkeypatch: pytest.MonkeyPatch) -> None:
    """to_agt builds events of the 'installed' AGT: make that the newer one."""
    real = agt_module._agt()
    fake = type("event_sink", (), {"GovernanceEvent": NewerAgtEvent, "GovernanceEventKind": GovernanceEventKind})
    monkeypatch.setattr(agt_module, "_agt", lambda: fake)
    assert real.GovernanceEvent is AgtEvent


def test_a_field_the_mapping_does_not_know_travels_as_a_named_attribute(newer_agt: None) -> None:
    event = NewerAgtEvent(agent_id="a", risk_score=0.75, labels=["pii"], attributes={"tool": "shell"})
    mapped = from_agt(event)
    assert mapped.attributes["agt.risk_score"] == 0.75
    assert mapped.attributes["agt.labels"] == ["pii"]
    assert mapped.attributes["agt.model"] is None
    assert mapped.attributes["tool"] == "shell"
    assert mapped.attributes[FIDELITY_KEY] == {
        "fields": {"risk_score": "agt.risk_score", "labels": "agt.labels", "model": "agt.model"}
    }
    back = through_the_wire(event)
    assert type(back) is NewerAgtEvent
    assert back == event


def test_a_carried_field_never_overwrites_an_attribute_of_the_same_name(newer_agt: None) -> None:
    attributes = {"agt.risk_score": "the kernel's own", "agt.risk_score#2": 1}
    event = NewerAgtEvent(agent_id="a", risk_score=0.5, attributes=attributes)
    mapped = from_agt(event)
    assert mapped.attributes["agt.risk_score"] == "the kernel's own"
    assert mapped.attributes["agt.risk_score#2"] == 1
    assert mapped.attributes["agt.risk_score#3"] == 0.5
    assert mapped.attributes[FIDELITY_KEY]["fields"]["risk_score"] == "agt.risk_score#3"
    assert through_the_wire(event) == event


def test_a_carried_value_json_cannot_hold_is_sent_as_repr_and_marked_lossy(newer_agt: None) -> None:
    event = NewerAgtEvent(agent_id="a", labels={"x"})  # type: ignore[arg-type]
    mapped = from_agt(event)
    assert mapped.attributes["agt.labels"] == repr({"x"})
    assert "agt.labels" in mapped.attributes[FIDELITY_KEY]["lossy"]


def test_an_older_agt_keeps_a_field_it_does_not_have_as_the_attribute() -> None:
    event = NewerAgtEvent(agent_id="a", risk_score=0.25)
    back = through_the_wire(event)  # read with the installed AGT, which has no risk_score
    assert type(back) is AgtEvent
    assert back.attributes[EXTRA_FIELD_PREFIX + "risk_score"] == 0.25


# -- the sink ----------------------------------------------------------------------------------


class FakeBus:
    """Stands in for Bus: records what the sink emits; can be told to refuse."""

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.events: list[GovernanceEvent] = []
        self.refuse = refuse
        self.flushed: list[float] = []

    def emit(self, event: GovernanceEvent) -> None:
        if self.refuse is not None and len(self.events) >= 1:
            raise self.refuse
        self.events.append(event)

    def flush(self, timeout: float) -> bool:
        self.flushed.append(timeout)
        return True


def sink_for(bus: FakeBus) -> GovbusSink:
    return GovbusSink(bus)  # type: ignore[arg-type]


def test_sink_satisfies_agts_protocol_structurally() -> None:
    assert isinstance(sink_for(FakeBus()), GovernanceEventSink)


def test_sink_emits_mapped_events_and_reports_success() -> None:
    bus = FakeBus()
    events = [AgtEvent(agent_id=f"a-{i}", kind=GovernanceEventKind.POLICY_VIOLATION) for i in range(3)]
    assert sink_for(bus).emit(events) is SinkExportResult.SUCCESS
    assert [e.agent_id for e in bus.events] == ["a-0", "a-1", "a-2"]
    assert [to_agt(e) for e in bus.events] == events


@pytest.mark.parametrize("error", [SpoolFullError("reject", "spool", 10, 10), RuntimeError("boom")])
def test_sink_reports_failure_and_never_raises(error: BaseException) -> None:
    bus = FakeBus(refuse=error)
    events: Sequence[Any] = [AgtEvent(agent_id="a"), AgtEvent(agent_id="b"), AgtEvent(agent_id="c")]
    assert sink_for(bus).emit(events) is SinkExportResult.FAILURE
    assert [e.agent_id for e in bus.events] == ["a"]


def test_agt_processor_feeds_the_sink() -> None:
    bus = FakeBus()
    sink = sink_for(bus)
    processor = GovernanceEventProcessor(schedule_delay_ms=10)
    processor.add_sink(sink)
    originals = [AgtEvent(agent_id="agent-9", action=f"step-{i}") for i in range(25)]
    for event in originals:
        processor.on_event(event)
    assert processor.force_flush(timeout_ms=5000)
    assert [to_agt(e) for e in bus.events] == originals
    assert bus.flushed == [5.0]
    assert processor.delivered_count == 25
    processor.shutdown()
