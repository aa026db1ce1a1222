"""The OTLP sink's mapping (attributes, severity, trace context) and options, without a network."""

from __future__ import annotations

import importlib.util
import logging

import pytest
from _sink_receivers import delivered
from opentelemetry.metrics import get_meter
from opentelemetry.trace import get_current_span

from govbus._sample import sample_events
from govbus.consumers._spi import Batch, SinkContext
from govbus.consumers.sinks._otlp import ATTRIBUTE_PREFIX, ATTRIBUTES, OtlpSink, _trace_context, log_attributes
from govbus.consumers.sinks._severity import severity
from govbus.errors import ConfigError
from govbus.event import GovernanceEvent

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
HEADER_TRACE = "ab" * 16


def _one(**changes: object) -> object:
    event = next(iter(sample_events(2))).replace(**changes)
    return delivered(evs=[event], traceparent=f"00-{HEADER_TRACE}-{'cd' * 8}-01")[0]


def test_every_mapped_field_becomes_its_attribute() -> None:
    event: GovernanceEvent = next(iter(sample_events(2))).replace(
        agent_did="did:web:x", resource="db://crm", policy_name="pii", parent_span_id="1" * 16,
        tenant_id="acme", policy_version="7", risk_score=0.75,
        attributes={"tool": "shell", "n": 3, "nested": {"b": [1, 2], "a": None}, "raw": b"\x00\x01", "none": None},
    )  # fmt: skip
    record = delivered(evs=[event])[0]
    record = record.__class__(**{**{f: getattr(record, f) for f in record.__dataclass_fields__}, "flagged": True,
                                 "verdict": "gap", "verdict_detail": "missing 3..4"})  # fmt: skip
    attrs = log_attributes(record)
    # Every documented attribute is present (trace ids go on the record, not in attributes).
    assert set(ATTRIBUTES.values()) <= set(attrs)
    assert attrs["cloudevents.event_id"] == event.event_id
    assert attrs["gen_ai.agent.id"] == event.agent_id
    assert attrs["governance.decision"] == event.decision
    assert attrs["governance.latency_ms"] == event.latency_ms
    assert (attrs["governance.tenant_id"], attrs["governance.policy.version"], attrs["governance.risk_score"]) == (
        "acme", "7", 0.75)  # fmt: skip
    assert attrs["governance.flagged"] is True
    assert attrs["governance.verdict"] == "gap"
    assert attrs["governance.verdict_detail"] == "missing 3..4"
    assert attrs["messaging.destination.partition.id"] == str(record.partition)
    assert attrs[ATTRIBUTE_PREFIX + "tool"] == "shell"
    assert attrs[ATTRIBUTE_PREFIX + "n"] == 3
    assert attrs[ATTRIBUTE_PREFIX + "raw"] == b"\x00\x01"
    # Nested values travel as JSON text with sorted keys; null attributes are left out.
    assert attrs[ATTRIBUTE_PREFIX + "nested"] == '{"a":null,"b":[1,2]}'
    assert ATTRIBUTE_PREFIX + "none" not in attrs


def test_optional_fields_are_left_out_when_absent() -> None:
    event = next(iter(sample_events(1))).replace(agent_did=None, session_id=None, resource=None, policy_name=None)
    attrs = log_attributes(delivered(evs=[event])[0])
    for name in ("governance.agent.did", "session.id", "governance.resource", "governance.policy.name"):
        assert name not in attrs
    assert "governance.flagged" not in attrs


@pytest.mark.parametrize(
    ("text", "syslog", "otel"),
    [
        ("info", 6, 9),
        ("INFO ", 6, 9),
        ("low", 5, 10),
        ("medium", 4, 13),
        ("warning", 4, 13),
        ("high", 3, 17),
        ("error", 3, 17),
        ("critical", 2, 21),
        ("alert", 1, 22),
        ("emergency", 0, 24),
        ("debug", 7, 5),
        ("trace", 7, 1),
        ("spicy", 5, 0),
    ],
)
def test_severity_table(text: str, syslog: int, otel: int) -> None:
    assert severity(text) == (syslog, otel)


def test_trace_context_prefers_the_events_own_ids() -> None:
    record = _one(trace_id=TRACE, span_id=SPAN)
    ctx = get_current_span(_trace_context(record)).get_span_context()  # type: ignore[arg-type]
    assert (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") == (TRACE, SPAN)
    assert ctx.trace_flags == 0  # the header's flags belong to another trace


def test_trace_context_falls_back_to_traceparent() -> None:
    ctx = get_current_span(_trace_context(_one())).get_span_context()  # type: ignore[arg-type]
    assert f"{ctx.trace_id:032x}" == HEADER_TRACE
    assert ctx.trace_flags == 1


def test_no_trace_context_is_an_invalid_span_not_the_callers() -> None:
    record = delivered(1)[0]  # no trace ids, no traceparent header
    ctx = get_current_span(_trace_context(record)).get_span_context()
    assert ctx.trace_id == 0
    assert ctx.span_id == 0


def test_options_come_as_strings_and_errors_name_the_variable() -> None:
    sink = OtlpSink(endpoint="http://127.0.0.1:1/v1/logs", timeout_s="2.5", headers="a=1, b = two", compression="gzip")
    assert sink.options.timeout_s == 2.5
    assert {k: v.get_secret_value() for k, v in sink.options.headers.items()} == {"a": "1", "b": "two"}
    assert "two" not in repr(sink.options)
    with pytest.raises(ConfigError, match="GOVBUS_SINK__OPTIONS__TIMEOUT_S"):
        OtlpSink(timeout_s="soon")
    with pytest.raises(ConfigError, match=r"GOVBUS_SINK__OPTIONS__ENDPONT.*unknown option"):
        OtlpSink(endpont="http://x")
    with pytest.raises(ConfigError, match="GOVBUS_SINK__OPTIONS__ENDPOINT"):
        OtlpSink(endpoint="collector:4318")


def test_header_values_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        OtlpSink(headers="authorization")  # not name=value
    assert "authorization" not in str(info.value).split(":", 1)[1]


def test_write_before_open_is_an_error() -> None:
    with pytest.raises(Exception, match="before open"):
        OtlpSink().write(Batch(delivered(1)))


def test_open_refuses_a_disabled_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    sink = OtlpSink()
    with pytest.raises(ConfigError, match="OTEL_SDK_DISABLED"):
        sink.open(SinkContext("otlp", "g", "t", get_meter("t"), logging.getLogger("t")))


def test_grpc_without_its_exporter_package_says_what_to_install() -> None:
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the gRPC exporter is installed here")
    sink = OtlpSink(protocol="grpc", endpoint="127.0.0.1:4317")
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-grpc") as info:
        sink.open(SinkContext("otlp", "g", "t", get_meter("t"), logging.getLogger("t")))
    assert info.value.setting == "GOVBUS_SINK__OPTIONS__PROTOCOL"
