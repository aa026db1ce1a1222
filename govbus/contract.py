"""The wire contract: shipped Avro schemas, single-object encoding, and framing detection.

A record value is Avro binary in one of two framings, told apart by the first bytes:

* Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema's Parsing Canonical Form + the Avro body. The writer schema is found by
  fingerprint among the schemas shipped in ``govbus.schemas``; no registry is needed.
* Confluent wire format: ``00`` + 4-byte big-endian schema id + the Avro body; the writer schema
  comes from a schema registry.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from govbus.errors import DecodeError, InvalidEventError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
CONTENT_TYPE = "application/avro"
_SCHEMA_FILE = re.compile(r"governance_event\.v(\d+)\.avsc")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Framing(Enum):
    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"


@dataclasses.dataclass(frozen=True)
class SchemaVersion:
    """One shipped version of the event schema."""

    version: int
    schema: dict[str, Any]  # as in the .avsc file
    parsed: Any  # fastavro's parsed form
    canonical: str  # Parsing Canonical Form
    fingerprint: bytes  # CRC-64-AVRO, 8 bytes little-endian as on the wire

    @property
    def prefix(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.fingerprint


@cache
def schema_versions() -> tuple[SchemaVersion, ...]:
    """Every shipped schema version, oldest first."""
    found: list[SchemaVersion] = []
    for entry in resources.files("govbus.schemas").iterdir():
        m = _SCHEMA_FILE.fullmatch(entry.name)
        if not m:
            continue
        schema = json.loads(entry.read_text(encoding="utf-8"))
        # Each version parses in a fresh name space: v1 and v2 define the same named types.
        parsed = parse_schema(schema, named_schemas={})
        canonical = to_parsing_canonical_form(parsed)
        fp = int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "big")
        # fastavro prints the fingerprint big-endian; the single-object header is little-endian.
        found.append(SchemaVersion(int(m.group(1)), schema, parsed, canonical, fp[::-1]))
    if not found:
        raise RuntimeError("no governance_event.v*.avsc shipped in govbus.schemas")
    return tuple(sorted(found, key=lambda s: s.version))


def schema_version(version: int | None = None) -> SchemaVersion:
    """A shipped version, or the newest one when ``version`` is None."""
    versions = schema_versions()
    if version is None:
        return versions[-1]
    for v in versions:
        if v.version == version:
            return v
    raise KeyError(f"no shipped schema version {version}; have {[v.version for v in versions]}")


@cache
def _by_fingerprint() -> dict[bytes, SchemaVersion]:
    return {v.fingerprint: v for v in schema_versions()}


def framing_of(value: bytes | None) -> Framing:
    """Which framing a record value uses; :class:`DecodeError` when it is neither."""
    if not value:
        raise DecodeError("empty", "record value is empty")
    if value[:2] == SINGLE_OBJECT_MAGIC:
        return Framing.SINGLE_OBJECT
    if value[:1] == CONFLUENT_MAGIC:
        return Framing.CONFLUENT
    raise DecodeError("unknown-framing", f"value starts with {value[:2].hex()}, neither C301 (single-object) nor 00")


# --- Python model <-> Avro datum -------------------------------------------------------------


def to_datum(event: GovernanceEvent, producer: ProducerInfo, contract_version: int = 1) -> dict[str, Any]:
    """The Avro datum for ``event`` as published by ``producer``."""
    attrs: dict[str, Any] = {}
    for key, value in event.attributes.items():
        if isinstance(value, Mapping | list | tuple):
            attrs[key] = ("ai.govbus.JsonValue", {"json": _json(value, key)})
        else:
            attrs[key] = value
    delta = event.occurred_at - _EPOCH
    return {
        "event_id": event.event_id,
        "occurred_at": (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,
        "kind": event.kind.name,
        "severity": event.severity,
        "agent_id": event.agent_id,
        "agent_did": event.agent_did,
        "session_id": event.session_id,
        "action": event.action,
        "resource": event.resource,
        "decision": event.decision,
        "reason": event.reason,
        "policy_name": event.policy_name,
        "latency_ms": event.latency_ms,
        "trace_id": event.trace_id,
        "span_id": event.span_id,
        "parent_span_id": event.parent_span_id,
        "attributes": attrs,
        "schema_version": event.schema_version,
        "producer": _producer_datum(producer),
        "contract_version": contract_version,
    }


@lru_cache(maxsize=64)
def _producer_datum(producer: ProducerInfo) -> dict[str, str]:
    # One producer publishes millions of events: build its sub-record once (fastavro only reads it).
    return dataclasses.asdict(producer)


def _json(value: object, key: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"attributes.{key}", f"cannot be written as JSON: {exc}") from None


def from_datum(datum: Mapping[str, Any]) -> GovernanceEvent:
    """The event model for a decoded Avro datum (fields unknown to this version are ignored)."""
    attrs: dict[str, Any] = {}
    for key, value in datum["attributes"].items():
        attrs[key] = json.loads(value["json"]) if isinstance(value, dict) else value
    occurred = datum["occurred_at"]
    if not isinstance(occurred, datetime):  # fastavro converts timestamp-micros, but be explicit
        occurred = _EPOCH + timedelta(microseconds=occurred)
    kind = datum["kind"]
    producer = datum["producer"]
    return GovernanceEvent(
        event_id=datum["event_id"],
        occurred_at=occurred,
        kind=EventKind[kind] if kind in EventKind.__members__ else EventKind.UNKNOWN,
        severity=datum["severity"],
        agent_id=datum["agent_id"],
        agent_did=datum["agent_did"],
        session_id=datum["session_id"],
        action=datum["action"],
        resource=datum["resource"],
        decision=datum["decision"],
        reason=datum["reason"],
        policy_name=datum["policy_name"],
        latency_ms=datum["latency_ms"],
        trace_id=datum["trace_id"],
        span_id=datum["span_id"],
        parent_span_id=datum["parent_span_id"],
        attributes=attrs,
        schema_version=datum["schema_version"],
        producer=ProducerInfo(**producer),
    )


# --- encoding and decoding -------------------------------------------------------------------


class Encoder:
    """Encodes events in single-object encoding with one shipped writer schema (the newest by default)."""

    def __init__(self, version: int | None = None) -> None:
        self.schema = schema_version(version)
        self._prefix = self.schema.prefix
        self._parsed = self.schema.parsed

    def encode(self, event: GovernanceEvent, producer: ProducerInfo) -> bytes:
        return self.encode_datum(to_datum(event, producer, self.schema.version))

    def encode_datum(self, datum: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._prefix)
        try:
            schemaless_writer(buf, self._parsed, datum)
        except (ValueError, TypeError, OverflowError) as exc:
            # The model validates first, so this means a datum built by hand is wrong.
            raise InvalidEventError("<datum>", f"does not match schema v{self.schema.version}: {exc}") from None
        return buf.getvalue()


class Decoder:
    """Decodes record values of any shipped writer version into one reader version (the newest by default)."""

    def __init__(self, reader_version: int | None = None) -> None:
        self.reader = schema_version(reader_version)

    def decode_datum(self, value: bytes | None) -> tuple[dict[str, Any], SchemaVersion]:
        framing = framing_of(value)
        assert value is not None
        if framing is Framing.CONFLUENT:
            schema_id = struct.unpack(">I", value[1:5])[0] if len(value) >= 5 else None
            raise DecodeError(
                "no-registry", f"Confluent-framed record (schema id {schema_id}) needs a schema registry decoder"
            )
        if len(value) < 10:
            raise DecodeError("truncated", f"single-object header needs 10 bytes, record has {len(value)}")
        writer = _by_fingerprint().get(value[2:10])
        if writer is None:
            raise DecodeError(
                "unknown-fingerprint", f"writer schema fingerprint {value[2:10].hex()} is not among the shipped schemas"
            )
        return self._read(value, 10, writer), writer

    def decode(self, value: bytes | None) -> GovernanceEvent:
        datum, _ = self.decode_datum(value)
        try:
            return from_datum(datum)
        except Exception as exc:  # a datum that decodes but breaks the model is still just a bad record
            raise DecodeError("invalid-event", f"decoded record is not a valid event: {exc}") from None

    def _read(self, value: bytes, offset: int, writer: SchemaVersion) -> dict[str, Any]:
        buf = io.BytesIO(value)
        buf.seek(offset)
        reader = None if writer is self.reader else self.reader.parsed
        try:
            datum: dict[str, Any] = schemaless_reader(buf, writer.parsed, reader)
        except Exception as exc:  # fastavro raises many types on garbage; all mean the same here
            raise DecodeError(
                "corrupt-body", f"Avro body does not decode with schema v{writer.version}: {exc}"
            ) from None
        if buf.tell() != len(value):
            raise DecodeError("corrupt-body", f"{len(value) - buf.tell()} trailing bytes after the Avro body")
        return datum
