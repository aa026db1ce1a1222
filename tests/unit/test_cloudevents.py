"""CloudEvents 1.0 Kafka binding (binary mode) headers and the record binding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from govbus import _cloudevents as ce
from govbus._contract import Decoder, Encoder, schema_version
from govbus._record import from_record, record_key, to_record
from govbus.errors import DecodeError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

PRODUCER = ProducerInfo("kernel", "inst-1", "host-a", "govbus-python/0.1.0")


def _event(**kw: object) -> GovernanceEvent:
    base: dict[str, object] = {
        "agent_id": "agent/7",
        "kind": EventKind.TOOL_CALL_BLOCKED,
        "occurred_at": datetime(2026, 11, 26, 1, 2, 3, 4, tzinfo=UTC),
        "session_id": "s-1",
    }
    return GovernanceEvent(**{**base, **kw})  # type: ignore[arg-type]


def test_binary_mode_headers() -> None:
    event = _event()
    rec = to_record(event, PRODUCER, Encoder(), traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    h = dict(rec.headers)
    assert h["ce_specversion"] == b"1.0"
    assert h["ce_id"] == event.event_id.encode()
    assert h["ce_type"] == b"ai.agentos.tool.blocked"
    assert h["ce_source"] == b"/agent-os/agent/agent%2F7"
    assert h["ce_time"] == b"2026-11-26T01:02:03.000004Z"
    assert h["ce_subject"] == b"agent/7"
    assert h["ce_sessionid"] == b"s-1"
    assert h["content-type"] == b"application/avro"
    assert h["ce_dataschema"].startswith(b"urn:avro:crc-64-avro:")
    assert h["traceparent"].startswith(b"00-")


def test_source_prefers_did_then_override() -> None:
    assert ce.default_source(_event(agent_did="did:web:x")) == "did:web:x"
    rec = to_record(_event(), PRODUCER, Encoder(), source="/kernels/k1")
    assert dict(rec.headers)["ce_source"] == b"/kernels/k1"


def test_record_key_strategies() -> None:
    assert record_key(_event(), "agent_id") == b"agent/7"
    assert record_key(_event(), "session_id") == b"s-1"
    assert record_key(_event(session_id=None), "session_id") == b"agent/7"


def test_record_round_trip() -> None:
    e = _event()
    rec = to_record(e, PRODUCER, Encoder())
    back = from_record(rec.value, rec.headers, Decoder())
    assert back.event == e.replace(producer=PRODUCER)
    assert back.attributes.type == "ai.agentos.tool.blocked"
    assert back.attributes.extensions == {"sessionid": "s-1"}
    assert back.writer.version == schema_version().version  # the newest, by default


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: [x for x in h if x[0] != "ce_id"],
        lambda h: [(n, b"0.3" if n == "ce_specversion" else v) for n, v in h],
        lambda h: [(n, b"\xff\xfe" if n == "ce_type" else v) for n, v in h],
        lambda h: [(n, b"other-id" if n == "ce_id" else v) for n, v in h],
    ],
)
def test_bad_headers_are_decode_errors(mutate) -> None:  # type: ignore[no-untyped-def]
    rec = to_record(_event(), PRODUCER, Encoder())
    with pytest.raises(DecodeError) as info:
        from_record(rec.value, mutate(rec.headers), Decoder())
    assert info.value.reason == "bad-headers"
