"""Kafka records of the contract: an event in, (key, value, headers) out, and back.

Both the producer library and the sink runtime go through here, so the binding of the event to
key, value and headers exists once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from govbus import _cloudevents as ce
from govbus._cloudevents import CloudEventAttributes, Headers
from govbus._contract import CONTENT_TYPE, Decoder, Encoder, SchemaVersion, from_datum
from govbus.errors import DecodeError, DecodeReason
from govbus.event import GovernanceEvent, ProducerInfo

KeyBy = Literal["agent_id", "session_id"]


@dataclasses.dataclass(frozen=True, slots=True)
class OutRecord:
    key: bytes
    value: bytes
    headers: Headers


@dataclasses.dataclass(frozen=True, slots=True)
class InRecord:
    """A decoded record: the event, its CloudEvents attributes, and the writer schema it came in."""

    event: GovernanceEvent
    attributes: CloudEventAttributes
    writer: SchemaVersion


def record_key(event: GovernanceEvent, key_by: KeyBy) -> bytes:
    """What orders events: the agent id, or the session id (falling back to the agent id)."""
    if key_by == "session_id" and event.session_id:
        return event.session_id.encode()
    return event.agent_id.encode()


def to_record(
    event: GovernanceEvent,
    producer: ProducerInfo,
    encoder: Encoder,
    *,
    key_by: KeyBy = "agent_id",
    source: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> OutRecord:
    value = encoder.encode(event, producer)
    headers = ce.headers_for(
        event,
        content_type=CONTENT_TYPE,
        schema_uri=ce.dataschema(encoder.schema.fingerprint),
        source=source,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    return OutRecord(record_key(event, key_by), value, headers)


def message_headers(raw: object) -> list[tuple[str, bytes | None]]:
    """confluent-kafka's ``Message.headers()`` (a list, or None when there are none) as a list."""
    return list(raw) if isinstance(raw, list) else []


def kafka_headers(headers: Headers) -> Any:
    """Headers as ``Producer.produce`` takes them (its stub's list type is invariant in the value)."""
    return headers


def from_record(value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None, decoder: Decoder) -> InRecord:
    """Decodes one record; :class:`DecodeError` says why it cannot be (never another exception)."""
    attributes = ce.parse_headers(headers)
    datum, writer = decoder.decode_datum(value)
    try:
        event = from_datum(datum)
    except Exception as exc:
        raise DecodeError(DecodeReason.INVALID_EVENT, f"decoded record is not a valid event: {exc}") from None
    if attributes.id != event.event_id:
        raise DecodeError(
            DecodeReason.BAD_HEADERS, f"ce_id {attributes.id!r} does not match event_id {event.event_id!r}"
        )
    return InRecord(event, attributes, writer)
