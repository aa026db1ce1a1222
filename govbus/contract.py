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
from collections.abc import Callable, Mapping
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


# One encoder instance: json.dumps with non-default options builds a new one per call (2x slower).
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json(value: object, key: str) -> str:
    try:
        return _JSON.encode(value)
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
    """Encodes events in single-object encoding with one shipped writer schema (the newest by default).

    Schema v1 has a hand-written writer (:func:`_encode_v1`, ~4x faster than fastavro's generic
    one, byte-identical to it); any other version, and any event the fast writer cannot take,
    goes through fastavro.
    """

    def __init__(self, version: int | None = None) -> None:
        self.schema = schema_version(version)
        self._prefix = self.schema.prefix
        self._parsed = self.schema.parsed
        self._fast = self.schema.fingerprint == _V1_FINGERPRINT
        self._producers: dict[ProducerInfo, bytes] = {}

    def encode(self, event: GovernanceEvent, producer: ProducerInfo) -> bytes:
        if self._fast:
            tail = self._producers.get(producer)
            if tail is None:
                tail = self._producer_tail(producer)
            encoded = _encode_v1(self._prefix, event, tail)
            if encoded is not None:
                return encoded
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

    def _producer_tail(self, producer: ProducerInfo) -> bytes:
        # The producer record and contract_version close every value and rarely change: encode once.
        if len(self._producers) > 64:
            self._producers.clear()
        try:
            tail = b"".join(_utf8(part) for part in dataclasses.astuple(producer)) + _zigzag(self.schema.version)
        except UnicodeEncodeError:
            tail = b""  # _encode_v1 then falls back to fastavro, which reports the error
        self._producers[producer] = tail
        return tail


# --- schema v1's writer, by hand ----------------------------------------------------------------
# Avro binary: a record is its fields in order; strings are zigzag-varint length + UTF-8; a
# ["null", X] union is the branch index (0 or 1, zigzag: 00/02) then the value; a map is one block
# (item count, then key/value pairs) ended by a zero count; doubles are 8 bytes little-endian.
# Branch choice for attribute values follows fastavro's: the first branch whose type validates.

_V1_FINGERPRINT = bytes.fromhex("61f25237e90cc3fd")
_pack_double = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    """Avro's variable-length encoding of an already zigzagged (non-negative) long."""
    if n < 0x80:
        return _BYTES[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_BYTES = tuple(bytes((i,)) for i in range(0x80))
_LENGTHS = tuple(_varint(2 * n) if 2 * n >= 0x80 else _BYTES[2 * n] for n in range(4096))


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


_high: tuple[int, bytes] = (-1, b"")


def _timestamp(micros: int) -> bytes:
    """``_zigzag`` for timestamps: consecutive events share all but the low 21 bits, so the varint of
    the high part is reused (a tuple swapped in one assignment, safe across threads)."""
    global _high
    n = (micros << 1) ^ (micros >> 63)
    high = n >> 21
    if not high:
        return _varint(n)
    cached = _high
    if cached[0] != high:
        cached = _high = (high, _varint(high))
    return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80)) + cached[1]


def _utf8(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    return (_LENGTHS[n] if n < 4096 else _varint(n << 1)) + data


_KIND_INDEX = {kind: _zigzag(index) for index, kind in enumerate(EventKind)}


def _attribute_value(key: str, value: object) -> bytes | None:
    # Branches: 0 null, 1 boolean, 2 long, 3 double, 4 string, 5 bytes, 6 JsonValue.
    exact = _BY_TYPE.get(type(value))
    if exact is not None:
        return exact(value)
    if isinstance(value, bool):
        return b"\x02\x01" if value else b"\x02\x00"
    if isinstance(value, int):
        return _long_value(value)
    if isinstance(value, float):
        return b"\x06" + _pack_double(value)
    if isinstance(value, str):
        return b"\x08" + _utf8(value)
    if isinstance(value, bytes):
        return _bytes_value(value)
    if isinstance(value, Mapping | list | tuple):
        return b"\x0c" + _utf8(_json(value, key))
    return None


def _long_value(value: int) -> bytes | None:
    return b"\x04" + _zigzag(value) if -(2**63) <= value < 2**63 else None


def _bytes_value(value: bytes) -> bytes:
    n = len(value)
    return b"\x0a" + (_LENGTHS[n] if n < 4096 else _varint(n << 1)) + value


def _json_value(value: object) -> bytes | None:
    try:
        return b"\x0c" + _utf8("".join(_json_chunks(value, 0)))
    except (TypeError, ValueError, RecursionError):
        return None  # fastavro's path names the attribute in its error


def _json_encoder() -> Callable[[object, int], Any]:
    """The C encoder behind ``_JSON.encode`` for lists and dicts, built once instead of per call.
    No cycle check: the event model bounds nesting at 32 levels, so a cycle never gets here."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return lambda value, _level: (_JSON.encode(value),)
    return c_make_encoder(  # type: ignore[no-any-return]
        None, _JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )


_json_chunks = _json_encoder()


# The common exact types (bool before int matters only for isinstance, not here).
_BY_TYPE: dict[type, Callable[[Any], bytes | None]] = {
    list: _json_value,
    dict: _json_value,
    tuple: _json_value,
    type(None): lambda _v: b"\x00",
    bool: lambda v: b"\x02\x01" if v else b"\x02\x00",
    int: _long_value,
    float: lambda v: b"\x06" + _pack_double(v),
    str: lambda v: b"\x08" + _utf8(v),
    bytes: _bytes_value,
}


_KEYS: dict[str, bytes] = {}  # attribute keys repeat from event to event: encode each once


def _key(key: str) -> bytes:
    encoded = _utf8(key)
    if len(_KEYS) < 4096:
        _KEYS[key] = encoded
    return encoded


def _encode_v1(prefix: bytes, e: GovernanceEvent, tail: bytes) -> bytes | None:
    """``prefix`` + the v1 body of ``e`` + ``tail`` (producer, contract_version); None: use fastavro."""
    if not tail:
        return None
    attributes = e.attributes
    if attributes:
        parts = [_zigzag(len(attributes))]
        append, keys = parts.append, _KEYS
        for key, value in attributes.items():
            encoded_key = keys.get(key)
            if encoded_key is None:
                encoded_key = _key(key)
            # The common scalar types inline (string, long, double); the rest by branch lookup.
            kind = type(value)
            if kind is str:
                text = value.encode()
                encoded = b"\x08" + _LENGTHS[len(text)] + text if len(text) < 4096 else b"\x08" + _utf8(value)
            elif kind is int and -(2**63) <= value < 2**63:
                encoded = b"\x04" + _zigzag(value)
            elif kind is float:
                encoded = b"\x06" + _pack_double(value)
            else:
                found = _attribute_value(key, value)
                if found is None:
                    return None
                encoded = found
            append(encoded_key)
            append(encoded)
        append(b"\x00")
        attrs = b"".join(parts)
    else:
        attrs = b"\x00"
    delta = e.occurred_at - _EPOCH
    lengths = _LENGTHS
    try:
        # Required strings inline: this runs for every event on the bus, and calls are the cost.
        # A string of 4 KiB or more overflows the length table: IndexError, then fastavro's path.
        event_id = e.event_id.encode()
        severity = e.severity.encode()
        agent_id = e.agent_id.encode()
        action = e.action.encode()
        decision = e.decision.encode()
        reason = e.reason.encode()
        version = e.schema_version.encode()
        return b"".join(
            (
                prefix,
                lengths[len(event_id)],
                event_id,
                _timestamp((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds),
                _KIND_INDEX[e.kind],
                lengths[len(severity)],
                severity,
                lengths[len(agent_id)],
                agent_id,
                b"\x00" if (did := e.agent_did) is None else b"\x02" + lengths[len(b := did.encode())] + b,
                b"\x00" if (sid := e.session_id) is None else b"\x02" + lengths[len(b := sid.encode())] + b,
                lengths[len(action)],
                action,
                b"\x00" if (res := e.resource) is None else b"\x02" + lengths[len(b := res.encode())] + b,
                lengths[len(decision)],
                decision,
                lengths[len(reason)],
                reason,
                b"\x00" if (pol := e.policy_name) is None else b"\x02" + lengths[len(b := pol.encode())] + b,
                _pack_double(e.latency_ms),
                b"\x00" if e.trace_id is None else b"\x02" + _utf8(e.trace_id),
                b"\x00" if e.span_id is None else b"\x02" + _utf8(e.span_id),
                b"\x00" if e.parent_span_id is None else b"\x02" + _utf8(e.parent_span_id),
                attrs,
                lengths[len(version)],
                version,
                tail,
            )
        )
    except (UnicodeEncodeError, IndexError, KeyError, TypeError, AttributeError, struct.error):
        return None


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
