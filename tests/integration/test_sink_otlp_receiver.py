"""The OTLP sink against a real OTLP/HTTP receiver on 127.0.0.1 that decodes the exporter's protobuf.

The receiver parses every request as ``ExportLogsServiceRequest`` (opentelemetry-proto) and
answers per a script, so acknowledgement can be checked against what the receiver accepted.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _sink_receivers import Answer, OtlpReceiver, attributes, delivered
from _sinks import events, produce, records, sign, signing_pair, wait_for
from opentelemetry.metrics import get_meter
from opentelemetry.sdk.resources import Resource

from govbus._contract import Decoder
from govbus._record import from_record
from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.consumers import SinkRuntime, VerdictPolicy, Verification
from govbus.consumers._spi import OK, Batch, DeliveredRecord, RetryLater, SinkContext
from govbus.consumers.sinks._otlp import ATTRIBUTE_PREFIX, ATTRIBUTES, OtlpSink, _rows, request_encoder
from govbus.consumers.sinks._severity import severity
from govbus.signing import Verifier

CTX = SinkContext("otlp", "govbus.sink.otlp", "govbus.events", get_meter("test"), logging.getLogger("test"))
TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r  # type: ignore[misc]


def _sink(receiver: OtlpReceiver, **options: str) -> OtlpSink:
    sink = OtlpSink(endpoint=receiver.endpoint, timeout_s="2", **options)
    sink.open(CTX)
    return sink


def test_receiver_finds_every_mapped_attribute(receiver: OtlpReceiver) -> None:
    evs = [
        e.replace(
            agent_did="did:web:agents.example.com:a", resource="db://crm", policy_name="pii",
            trace_id=TRACE, span_id=SPAN, parent_span_id="1" * 16, attributes={"tool": "shell", "tags": ["x"]},
            tenant_id="acme", policy_version="7", risk_score=0.5,
        )
        for e in sample_events(24)
    ]  # fmt: skip
    records = delivered(evs=evs)
    sink = _sink(receiver, service_name="audit-svc", resource_attributes="deployment.environment=test")
    try:
        assert sink.write(Batch(records)) is OK
    finally:
        sink.close()
    got = receiver.log_records()
    assert len(got) == len(records)
    by_id = {attributes(lr.attributes)["cloudevents.event_id"]: (res, lr) for res, lr in got}
    for record in records:
        resource, lr = by_id[record.event.event_id]
        attrs = attributes(lr.attributes)
        # Every documented attribute except those only set on flagged records.
        assert set(ATTRIBUTES.values()) - {"governance.flagged"} <= set(attrs), record.event.event_id
        e = record.event
        assert attrs["gen_ai.agent.id"] == e.agent_id
        assert attrs["governance.kind"] == e.kind.value
        assert (attrs["governance.tenant_id"], attrs["governance.risk_score"]) == ("acme", 0.5)
        assert attrs["governance.decision"] == e.decision
        assert attrs["governance.resource"] == "db://crm"
        assert attrs["cloudevents.event_type"] == e.ce_type
        assert attrs["messaging.kafka.offset"] == record.offset
        assert attrs[ATTRIBUTE_PREFIX + "tool"] == "shell"
        assert attrs[ATTRIBUTE_PREFIX + "tags"] == '["x"]'
        assert lr.severity_text == e.severity
        assert lr.severity_number == severity(e.severity).otel
        assert lr.event_name == e.ce_type
        assert lr.body.string_value == e.reason
        assert lr.time_unix_nano == int(e.occurred_at.timestamp() * 1_000_000) * 1000
        assert lr.observed_time_unix_nano == record.timestamp_ms * 1_000_000  # type: ignore[operator]
        # The event's trace context is on the record itself.
        assert lr.trace_id.hex() == TRACE
        assert lr.span_id.hex() == SPAN
        res = attributes(resource.attributes)
        assert res["service.name"] == "audit-svc"
        assert res["deployment.environment"] == "test"


def test_gzip_requests_decode(receiver: OtlpReceiver) -> None:
    sink = _sink(receiver, compression="gzip")
    try:
        assert sink.write(Batch(delivered(5))) is OK
    finally:
        sink.close()
    assert receiver.requests[0].headers.get("Content-Encoding") == "gzip"
    assert len(receiver.log_records()) == 5


def test_no_acknowledgement_until_the_exporter_succeeded(receiver: OtlpReceiver) -> None:
    records = delivered(10)
    sink = _sink(receiver)
    try:
        receiver.script.append(Answer(500))
        result = sink.write(Batch(records))
        assert isinstance(result, RetryLater)
        assert "500" in result.reason
        assert receiver.log_records() == []
        # The same batch again (what the runtime does after its backoff) is accepted.
        assert sink.write(Batch(records, attempt=2)) is OK
        assert len(receiver.log_records()) == 10
    finally:
        sink.close()


def test_rate_limit_hands_retry_after_to_the_runtime(receiver: OtlpReceiver) -> None:
    sink = _sink(receiver)
    try:
        # Longer than the exporter's timeout, so the exporter gives up at once and reports it.
        receiver.script.append(Answer(429, {"Retry-After": "30"}))
        result = sink.write(Batch(delivered(3)))
    finally:
        sink.close()
    assert isinstance(result, RetryLater)
    assert result.delay == 30.0
    assert len(receiver.requests) == 1


def test_unreachable_collector_is_retried_not_acknowledged() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        sink = OtlpSink(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout_s="0.3")
        sink.open(CTX)
        try:
            result = sink.write(Batch(delivered(2)))
        finally:
            sink.close()
    assert isinstance(result, RetryLater)
    assert "no response" in result.reason


def test_headers_and_deflate_reach_the_collector(receiver: OtlpReceiver) -> None:
    sink = _sink(receiver, compression="deflate", headers="authorization=Bearer t0k,x-tenant=acme")
    try:
        assert sink.write(Batch(delivered(4))) is OK
    finally:
        sink.close()
    headers = receiver.requests[0].headers
    assert headers.get("Content-Encoding") == "deflate"
    assert headers.get("Content-Type") == "application/x-protobuf"
    assert (headers.get("authorization"), headers.get("x-tenant")) == ("Bearer t0k", "acme")
    assert len(receiver.log_records()) == 4


def test_through_the_runtime_drafted_log_records_are_the_python_mapping(
    receiver: OtlpReceiver, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    # From the real broker through the sink runtime: the intake drafts each record's log record
    # (native/src/otlp_draft.rs) and the sink sends it as drafted. Each log record the receiver
    # decodes must be the one the Python mapping gives for that record, decoded in Python.
    topic = new_topic(partitions=3)
    signer, keyring = signing_pair()
    evs = [e.replace(attributes={**e.attributes, "nested": {"b": [1, 2.5], "a": None}}) for e in events(300)]
    recs = sign(records(evs), signer, partitions=3)
    assert produce(kafka_bootstrap, topic, recs) == len(recs)
    sink = OtlpSink(endpoint=receiver.endpoint, timeout_s="5", service_name="svc")
    assert sink._native_draft_format() is not None
    seen: list[Any] = []
    write = sink.write

    def keep(batch: Batch) -> Any:
        seen.extend(batch)
        return write(batch)

    sink.write = keep  # type: ignore[method-assign]
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap}, topic=topic, sink={"health": {"enabled": False}}
    )
    runtime = SinkRuntime(
        sink, settings, name="otlp-drafts", verification=Verification(Verifier(keyring), VerdictPolicy())
    )
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(receiver.log_records()) >= len(recs), 60, what="every log record at the receiver")
    finally:
        runtime.stop()
        thread.join(30)
    drafted = [r for r in seen if type(getattr(r, "_draft", None)).__name__ == "OtlpDraft"]
    assert len(drafted) == len(recs)  # every record drafted, none built
    assert all(r._event is None for r in drafted)
    got = {attributes(lr.attributes)["cloudevents.event_id"]: lr for _, lr in receiver.log_records()}
    assert sink._encoder is None  # closed by the runtime: map with an encoder of the same options
    encoder = request_encoder(Resource.create({"service.name": "svc"}), sink.options)
    for r in drafted:
        decoded = from_record(r.value, list(r.headers), Decoder())
        ref = DeliveredRecord(decoded.event, decoded.attributes, r.topic, r.partition, r.offset, r.timestamp_ms,
                              r.key, r.value, list(r.headers), r.verdict)  # fmt: skip
        assert ref.verdict == "valid"
        (want,) = [
            lr for rl in encoder.request(_rows([ref], 0)).resource_logs for sl in rl.scope_logs for lr in sl.log_records
        ]
        assert got[ref.event.event_id].SerializeToString() == want.SerializeToString()
