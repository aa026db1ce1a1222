"""The OTLP sink's direct request encoding against the SDK path, both decoded with opentelemetry-proto.

The SDK path is the sink's gRPC path: each event emitted through opentelemetry-sdk's Logger, the
batch encoded by the OTLP exporter's own encoder. Both requests are serialized, parsed back as
``ExportLogsServiceRequest`` and compared field by field.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from _sink_receivers import delivered
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.metrics import get_meter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from govbus import _accel as native_core
from govbus._sample import sample_events
from govbus.consumers._spi import DeliveredRecord, SinkContext
from govbus.consumers.sinks._otlp import ATTRIBUTES, OtlpSink, _rows
from govbus.consumers.sinks._otlp_request import RequestEncoder

CTX = SinkContext("otlp", "govbus.sink.otlp", "govbus.events", get_meter("t"), logging.getLogger("t"))
TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink(
        endpoint="http://127.0.0.1:9/v1/logs",  # never contacted
        service_name="audit-svc",
        resource_attributes="deployment.environment=test,team=gov",
        scope_name="govbus.test",
    )
    s.open(CTX)
    yield s
    s.close()


def _parsed(request: ExportLogsServiceRequest) -> ExportLogsServiceRequest:
    out = ExportLogsServiceRequest()
    out.ParseFromString(request.SerializeToString())
    return out


def _assert_fields_equal(got: Message, want: Message, where: str) -> None:
    """Every field of the message type (set or not) has the same value, recursing into messages."""
    for field in want.DESCRIPTOR.fields:
        a, b = getattr(got, field.name), getattr(want, field.name)
        here = f"{where}.{field.name}"
        if field.message_type is not None and field.is_repeated:
            assert len(a) == len(b), here
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                _assert_fields_equal(x, y, f"{here}[{i}]")
        elif field.message_type is not None:
            assert got.HasField(field.name) == want.HasField(field.name), here
            _assert_fields_equal(a, b, here)
        else:
            assert a == b, f"{here}: {a!r} != {b!r}"


def _native_request(sink: OtlpSink, records: list[DeliveredRecord]) -> ExportLogsServiceRequest | None:
    """The compiled core's request for the batch, parsed; None when the core is not in use."""
    encoder = sink._encoder
    assert encoder is not None
    if encoder._native is None:
        return None
    out = ExportLogsServiceRequest()
    out.ParseFromString(encoder._native(encoder._resource_bytes, encoder._resource_schema_url, encoder._scope_bytes,
                                        "", list(_rows(records)), encoder._max))  # fmt: skip
    return out


def _compare(sink: OtlpSink, records: list[DeliveredRecord]) -> ExportLogsServiceRequest:
    """The generated-class encoding and the compiled core's bytes, each against the SDK path."""
    direct, reference = _parsed(sink._request(records)), _parsed(sink._sdk_request(records))
    _assert_fields_equal(direct, reference, "request")
    assert direct == reference  # and protobuf's own equality agrees
    assert len(direct.resource_logs[0].scope_logs[0].log_records) == len(records)
    native = _native_request(sink, records)
    if native is not None:
        _assert_fields_equal(native, reference, "native request")
        assert native == reference
    return direct


def _events_with_everything() -> list[Any]:
    evs = []
    for i, e in enumerate(sample_events(40, seed=11)):
        changes: dict[str, Any] = {
            "agent_did": "did:web:agents.example.com:a",
            "resource": "db://crm/ünïcode",
            "policy_name": "pii",
            "parent_span_id": "1" * 16,
            "tenant_id": "acme",
            "policy_version": "7",
            "risk_score": 0.25 * (i % 4),
            "attributes": {
                "tool": "shell",
                "n": i,
                "big": 2**62,
                "ratio": 1.5,
                "ok": i % 2 == 0,
                "raw": bytes([i, 0, 255]),
                "tags": ["x", i],
                "nested": {"b": [1, None], "a": {"z": True}},
                "none": None,
            },
        }
        if i % 3 == 0:
            changes.update(trace_id=TRACE, span_id=SPAN)
        if i % 3 == 1:
            changes.update(trace_id=TRACE, span_id=None)
        if i % 5 == 0:
            changes.update(reason="", severity="spicy")
        evs.append(e.replace(**changes))
    return evs


def test_every_field_of_every_record_matches_the_sdk_path(sink: OtlpSink) -> None:
    records = delivered(evs=_events_with_everything(), traceparent=f"00-{TRACE}-{'cd' * 8}-01")
    request = _compare(sink, records)
    # The comparison covered what the documentation promises, not two empty requests.
    lr = request.resource_logs[0].scope_logs[0].log_records[0]
    keys = {kv.key for kv in lr.attributes}
    assert set(ATTRIBUTES.values()) - {"governance.flagged"} <= keys
    assert (lr.trace_id.hex(), lr.span_id.hex(), lr.flags) == (TRACE, SPAN, 1)
    res = {kv.key: kv.value.string_value for kv in request.resource_logs[0].resource.attributes}
    assert (res["service.name"], res["team"]) == ("audit-svc", "gov")
    assert request.resource_logs[0].scope_logs[0].scope.name == "govbus.test"


def test_records_without_trace_context_or_optional_fields_match(sink: OtlpSink) -> None:
    evs = [
        e.replace(agent_did=None, session_id=None, resource=None, policy_name=None, trace_id=None, span_id=None)
        for e in sample_events(12, seed=4)
    ]
    _compare(sink, delivered(evs=evs))


def test_header_trace_context_and_flagged_records_match(sink: OtlpSink) -> None:
    records = delivered(evs=[e.replace(trace_id=None, span_id=None) for e in sample_events(6)],
                        traceparent=f"00-{'ab' * 16}-{'cd' * 8}-01")  # fmt: skip
    records = [_flagged(r, f"missing {i}..{i + 1}") for i, r in enumerate(records)]
    request = _compare(sink, records)
    lr = request.resource_logs[0].scope_logs[0].log_records[0]
    assert lr.trace_id.hex() == "ab" * 16
    assert {kv.key: kv.value for kv in lr.attributes}["governance.flagged"].bool_value is True


def _flagged(r: DeliveredRecord, detail: str) -> DeliveredRecord:
    return dataclasses.replace(r, flagged=True, verdict="gap", verdict_detail=detail)


def test_records_without_a_kafka_timestamp_are_observed_now(sink: OtlpSink) -> None:
    records = [dataclasses.replace(r, timestamp_ms=None) for r in delivered(3)]
    direct, reference = _parsed(sink._request(records)), _parsed(sink._sdk_request(records))
    for a, b in zip(direct.resource_logs[0].scope_logs[0].log_records,
                    reference.resource_logs[0].scope_logs[0].log_records, strict=True):  # fmt: skip
        assert abs(a.observed_time_unix_nano - b.observed_time_unix_nano) < 60 * 10**9
        a.ClearField("observed_time_unix_nano")
        b.ClearField("observed_time_unix_nano")
    assert direct == reference


def test_past_max_attributes_the_documented_ones_are_kept() -> None:
    s = OtlpSink(endpoint="http://127.0.0.1:9/v1/logs", max_attributes="32")
    s.open(CTX)
    try:
        event = next(iter(sample_events(1))).replace(attributes={f"k{i:03}": i for i in range(40)})
        records = delivered(evs=[event])
        direct = s._request(records).resource_logs[0].scope_logs[0].log_records[0]
        sdk = s._sdk_request(records).resource_logs[0].scope_logs[0].log_records[0]
    finally:
        s.close()
    assert len(direct.attributes) == len(sdk.attributes) == 32
    assert direct.dropped_attributes_count == sdk.dropped_attributes_count > 0
    keys = [kv.key for kv in direct.attributes]
    # The SDK drops the oldest (the event id first); the direct encoding drops the event's own.
    assert keys[0] == "cloudevents.event_id"
    assert "cloudevents.event_id" not in [kv.key for kv in sdk.attributes]
    assert all(k.startswith("governance.attributes.") for k in [kv.key for kv in sdk.attributes][-8:])


def test_the_compiled_core_writes_what_the_generated_classes_write(sink: OtlpSink) -> None:
    if not native_core.active():
        pytest.skip(f"compiled core not in use: {native_core.describe()}")
    records = delivered(evs=_events_with_everything(), traceparent=f"00-{TRACE}-{'cd' * 8}-01")
    encoder = sink._encoder
    assert encoder is not None
    assert encoder._native is not None
    rows = list(_rows(records))
    assert encoder.encode(rows) == encoder.request(rows).SerializeToString()  # byte for byte


@settings(max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "100")), deadline=None)
@given(
    attributes=st.dictionaries(
        st.text(max_size=12),
        st.one_of(st.text(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.binary()),
        max_size=40,
    ),
    max_attributes=st.integers(32, 64),
    trace=st.sampled_from([(0, 0, 0), (1, 0, 0), (2**128 - 1, 2**64 - 1, 255)]),
    times=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    texts=st.tuples(st.text(), st.text(), st.text()),
)
def test_compiled_writer_equals_the_generated_classes(
    attributes: dict[str, Any],
    max_attributes: int,
    trace: tuple[int, int, int],
    times: tuple[int, int],
    texts: tuple[str, str, str],
) -> None:
    if not native_core.active():
        pytest.skip(f"compiled core not in use: {native_core.describe()}")
    encoder = RequestEncoder({"service.name": "s", "n": 1}, "https://schema", "scope", None, None, max_attributes)
    assert encoder._native is not None
    row = (*times, *trace, -3 % 25, texts[0], texts[1], texts[2], attributes)
    assert encoder.encode([row, row]) == encoder.request([row, row]).SerializeToString()


def test_a_batch_the_compiled_writer_refuses_goes_through_the_generated_classes() -> None:
    encoder = RequestEncoder({"service.name": "s"}, "", "scope", None, None, 256)
    # A list value: the sink's mapping never makes one, the compiled writer refuses it, the
    # generated classes encode it as an array.
    row = (1, 2, 0, 0, 0, 9, "info", "body", "type", {"a": "x", "tags": ["p", 1]})
    data = encoder.encode([row])
    assert data == encoder.request([row]).SerializeToString()
    parsed = ExportLogsServiceRequest()
    parsed.ParseFromString(data)
    kvs = parsed.resource_logs[0].scope_logs[0].log_records[0].attributes
    assert [v.string_value or v.int_value for v in kvs[1].value.array_value.values] == ["p", 1]
