"""The wire contract: shipped Avro schemas, single-object encoding, and framing detection.

A record value is Avro binary in one of two framings, told apart by the first bytes:

* Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema's Parsing Canonical Form + the Avro body. The writer schema is found by
  fingerprint among the schemas shipped in ``govbus.schemas``; no registry is needed.
* Confluent wire format: ``00`` + 4-byte big-endian schema id + the Avro body; the writer schema
  comes from a schema registry (:mod:`govbus._registry` assigns and resolves the ids).

Every version a writer may use is shipped (``schemas/governance_event.v<N>.avsc``); a reader of any
version reads every other version through Avro schema resolution (:mod:`govbus._compat` checks it).
"""

from __future__ import annotations

import copy
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
from typing import Any, Protocol, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from govbus.errors import DecodeError, DecodeReason, InvalidEventError
from govbus.event import (
    FIELDS,
    V1_FIELDS,
    V2_FIELDS,
    EventKind,
    FrozenDict,
    FrozenList,
    GovernanceEvent,
    ProducerInfo,
    decoded_event,
)

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
    schema_id: int | None = None  # set on writer schemas a decoder resolved through a registry

    @property
    def prefix(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.fingerprint

    @property
    def legacy_fingerprint(self) -> bytes:
        """The byte-reversed fingerprint govbus 0.1.0 wrote (read and counted, never written)."""
        return self.fingerprint[::-1]

    @property
    def label(self) -> str:
        """``v2``, or ``registry schema 7`` for a writer schema this package does not ship."""
        return f"v{self.version}" if self.version else f"registry schema {self.schema_id}"

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(f["name"] for f in self.schema.get("fields", ()))

    @property
    def kinds(self) -> frozenset[str]:
        """The ``EventKind`` symbols this version can carry."""
        for f in self.schema.get("fields", ()):
            if f["name"] == "kind" and isinstance(f["type"], dict):
                return frozenset(f["type"].get("symbols", ()))
        return frozenset()


@cache
def schema_versions() -> tuple[SchemaVersion, ...]:
    """Every shipped schema version, oldest first."""
    found: list[SchemaVersion] = []
    for entry in resources.files("govbus.schemas").iterdir():
        m = _SCHEMA_FILE.fullmatch(entry.name)
        if not m:
            continue
        found.append(load_schema(int(m.group(1)), json.loads(entry.read_text(encoding="utf-8"))))
    if not found:
        raise RuntimeError("no governance_event.v*.avsc shipped in govbus.schemas")
    return tuple(sorted(found, key=lambda s: s.version))


def load_schema(version: int, schema: dict[str, Any], schema_id: int | None = None) -> SchemaVersion:
    """A :class:`SchemaVersion` of a schema in its JSON form (fastavro's parse errors propagate)."""
    # Each version parses in a fresh name space: v1 and v2 define the same named types.
    parsed = parse_schema(schema, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    # fastavro's hex is already the specification's byte string (the 64-bit value little-endian:
    # "null" gives 8a8f25cce724dd63 for 0x63dd24e7cc258f8a), which is what the header carries.
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(version, schema, parsed, canonical, fp, schema_id)


def shipped_by_fingerprint(fp: bytes) -> SchemaVersion | None:
    """The shipped version whose fingerprint (wire order) is ``fp``, if any."""
    return _by_fingerprint().get(fp)


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


@cache
def _by_legacy_fingerprint() -> dict[bytes, SchemaVersion]:
    # A legacy form equal to some version's correct form would be ambiguous: the correct form wins.
    correct = _by_fingerprint()
    return {v.legacy_fingerprint: v for v in schema_versions() if v.legacy_fingerprint not in correct}


def framing_of(value: bytes | None) -> Framing:
    """Which framing a record value uses; :class:`DecodeError` when it is neither."""
    if not value:
        raise DecodeError(DecodeReason.EMPTY, "record value is empty")
    if value[:2] == SINGLE_OBJECT_MAGIC:
        return Framing.SINGLE_OBJECT
    if value[:1] == CONFLUENT_MAGIC:
        return Framing.CONFLUENT
    raise DecodeError(
        DecodeReason.UNKNOWN_FRAMING, f"value starts with {value[:2].hex()}, neither C301 (single-object) nor 00"
    )


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
    # fastavro writes in the schema's order and skips what a v1 schema lacks, so Encoder.check
    # refuses events that set a v2 field first.
    datum = {name: getattr(event, name) for name in _AS_IS}
    datum["occurred_at"] = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    datum["kind"] = event.kind.name
    datum["attributes"] = attrs
    datum["producer"] = _producer_datum(producer)
    datum["contract_version"] = contract_version
    return datum


# Fields whose Avro value is the model's value as it is; to_datum and from_datum convert the rest.
_CONVERTED = ("occurred_at", "kind", "attributes", "producer")
_AS_IS = tuple(name for name in FIELDS if name not in _CONVERTED)
# A datum of a reader version has every v1 field; fields added since read as None when it lacks them.
_AS_IS_V1 = tuple(name for name in _AS_IS if name in V1_FIELDS)
_AS_IS_NEWER = tuple(name for name in _AS_IS if name not in V1_FIELDS)


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
    """The event model for a decoded Avro datum (fields unknown to this version are ignored;
    fields the reader's version lacks are None)."""
    attrs: dict[str, Any] = {}
    for key, value in datum["attributes"].items():
        # NaN/Infinity are not JSON (RFC 8259); a foreign writer that sends them sent a bad event.
        attrs[key] = _JSON_IN.decode(value["json"]) if isinstance(value, dict) else value
    occurred = datum["occurred_at"]
    if not isinstance(occurred, datetime):  # fastavro converts timestamp-micros, but be explicit
        occurred = _EPOCH + timedelta(microseconds=occurred)
    fields = {name: datum[name] for name in _AS_IS_V1}
    for name in _AS_IS_NEWER:
        fields[name] = datum.get(name)
    fields["occurred_at"] = occurred
    fields["kind"] = _KINDS.get(datum["kind"], EventKind.UNKNOWN)
    fields["attributes"] = attrs
    fields["producer"] = ProducerInfo(**datum["producer"])
    return decoded_event(fields)


_KINDS: dict[str, EventKind] = {k.name: k for k in EventKind}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder: json.loads with options builds a new one per call.
_JSON_IN = json.JSONDecoder(parse_constant=_no_constant)


# --- encoding and decoding -------------------------------------------------------------------


class Encoder:
    """Encodes events in single-object encoding with one shipped writer schema (the newest by default).

    Schemas laid out like v1 (v1 itself, and v2: v1 plus more kinds and three optional fields at
    the end) have a hand-written writer (:func:`_encode_fast`, ~4x faster than fastavro's generic
    one, byte-identical to it); any other layout, and any event the fast writer cannot take (one
    the schema cannot carry, strings over 4 KiB), goes through fastavro.

    Framing: single-object encoding, or the Confluent wire format when ``schema_id`` (the writer
    schema's id in a registry: :func:`govbus._registry.writer_schema_id`) is given.

    A writer pinned to an older version refuses an event that version cannot carry (a newer
    ``kind``, a newer field set) with :class:`InvalidEventError` naming the field, rather than
    dropping data; :meth:`check` is that test alone (the producer runs it in ``emit()``).
    """

    def __init__(self, version: int | None = None, *, schema_id: int | None = None) -> None:
        self.schema = schema_version(version)
        self.schema_id = schema_id
        if schema_id is None:
            self.framing = Framing.SINGLE_OBJECT
            self._prefix = self.schema.prefix
        elif 0 <= schema_id < 2**32:
            self.framing = Framing.CONFLUENT
            self._prefix = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
        else:
            raise ValueError(f"a Confluent schema id is an unsigned 32-bit integer, got {schema_id}")
        self._parsed = self.schema.parsed
        self._layout = _fast_layout(self.schema.schema)
        self._producers: dict[ProducerInfo, bytes] = {}
        kinds = self.schema.kinds
        self._missing_kinds = frozenset(k for k in EventKind if k.name not in kinds)
        self._missing_fields = tuple(f for f in V2_FIELDS if f not in self.schema.field_names)
        # Only a writer that cannot carry every event pays for check() in encode().
        self.restricted = bool(self._missing_kinds or self._missing_fields)

    @property
    def prefix(self) -> bytes:
        """What precedes every Avro body: ``C3 01`` + fingerprint, or ``00`` + schema id."""
        return self._prefix

    def check(self, event: GovernanceEvent) -> None:
        """:class:`InvalidEventError` if this writer's schema version cannot carry ``event``."""
        pinned = f"schema v{self.schema.version} (the writer's version, GOVBUS_PRODUCER__SCHEMA_VERSION)"
        if event.kind in self._missing_kinds:
            raise InvalidEventError("kind", f"{event.kind.name} does not exist in {pinned}; write with a newer version")
        for name in self._missing_fields:
            if getattr(event, name) is not None:
                raise InvalidEventError(
                    name, f"does not exist in {pinned}; leave it unset or write with a newer version"
                )

    def encode(self, event: GovernanceEvent, producer: ProducerInfo) -> bytes:
        if self.restricted:
            self.check(event)
        layout = self._layout
        if layout is not None:
            tail = self._producers.get(producer)
            if tail is None:
                tail = self._producer_tail(producer)
            encoded = _encode_fast(self._prefix, event, tail, layout)
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
        tail = self._producers.get(producer)
        if tail is not None:
            return tail
        if len(self._producers) > 64:
            self._producers.clear()
        try:
            tail = b"".join(_utf8(part) for part in dataclasses.astuple(producer)) + _zigzag(self.schema.version)
        except UnicodeEncodeError:
            tail = b""  # _encode_fast then falls back to fastavro, which reports the error
        self._producers[producer] = tail
        return tail


# --- schema v1's writer, by hand ----------------------------------------------------------------
# Avro binary: a record is its fields in order; strings are zigzag-varint length + UTF-8; a
# ["null", X] union is the branch index (0 or 1, zigzag: 00/02) then the value; a map is one block
# (item count, then key/value pairs) ended by a zero count; doubles are 8 bytes little-endian.
# Branch choice for attribute values follows fastavro's: the first branch whose type validates.

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


_OPTIONAL_STRING = ["null", "string"]
_ATTRIBUTE_VALUES = [
    "null",
    "boolean",
    "long",
    "double",
    "string",
    "bytes",
    {"type": "record", "name": "JsonValue", "fields": [{"name": "json", "type": "string"}]},
]
_PRODUCER_RECORD = {
    "type": "record",
    "name": "Producer",
    "fields": [{"name": n, "type": "string"} for n in ("name", "instance_id", "host", "library")],
}
# The layout the hand-written writer produces: (field, type) in order, "kind" checked on its own.
_V1_LAYOUT: tuple[tuple[str, Any], ...] = (
    ("event_id", "string"),
    ("occurred_at", {"type": "long", "logicalType": "timestamp-micros"}),
    ("kind", None),
    ("severity", "string"),
    ("agent_id", "string"),
    ("agent_did", _OPTIONAL_STRING),
    ("session_id", _OPTIONAL_STRING),
    ("action", "string"),
    ("resource", _OPTIONAL_STRING),
    ("decision", "string"),
    ("reason", "string"),
    ("policy_name", _OPTIONAL_STRING),
    ("latency_ms", "double"),
    ("trace_id", _OPTIONAL_STRING),
    ("span_id", _OPTIONAL_STRING),
    ("parent_span_id", _OPTIONAL_STRING),
    ("attributes", {"type": "map", "values": _ATTRIBUTE_VALUES}),
    ("schema_version", "string"),
    ("producer", _PRODUCER_RECORD),
    ("contract_version", "int"),
)
_V2_LAYOUT = (
    *_V1_LAYOUT,
    ("tenant_id", _OPTIONAL_STRING),
    ("policy_version", _OPTIONAL_STRING),
    ("risk_score", ["null", "double"]),
)


@dataclasses.dataclass(frozen=True)
class _Layout:
    kinds: dict[EventKind, bytes]  # the kinds this schema's enum has, with their encoded index
    extras: bool  # the three optional v2 fields follow contract_version


def _fast_layout(schema: Mapping[str, Any]) -> _Layout | None:
    """The hand-written writer's layout if ``schema`` (an .avsc as loaded) has it exactly, else None."""
    fields = schema.get("fields", [])
    for layout, extras in ((_V1_LAYOUT, False), (_V2_LAYOUT, True)):
        if len(fields) != len(layout) or [f["name"] for f in fields] != [name for name, _ in layout]:
            continue
        if any(_bare(f["type"]) != expected for f, (_, expected) in zip(fields, layout, strict=True) if expected):
            return None
        kind = fields[2]["type"]
        if not isinstance(kind, dict) or kind.get("type") != "enum":
            return None
        names = {k.name: k for k in EventKind}
        kinds = {names[symbol]: _zigzag(index) for index, symbol in enumerate(kind["symbols"]) if symbol in names}
        return _Layout(kinds, extras)
    return None


def _bare(schema: Any) -> Any:
    """A field type without documentation, defaults and namespaces (what the binary layout ignores)."""
    if isinstance(schema, dict):
        return {k: _bare(v) for k, v in schema.items() if k not in ("doc", "default", "namespace", "aliases")}
    if isinstance(schema, list):
        return [_bare(v) for v in schema]
    return schema


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
    FrozenList: _json_value,  # what the event model keeps nested lists and mappings as
    FrozenDict: _json_value,
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


def _encode_fast(prefix: bytes, e: GovernanceEvent, tail: bytes, layout: _Layout) -> bytes | None:
    """``prefix`` + the body of ``e`` + ``tail`` (producer, contract_version) [+ the v2 fields];
    None: let fastavro's path encode it (or say why it cannot)."""
    if not tail:
        return None
    tenant, policy_version, risk = e.tenant_id, e.policy_version, e.risk_score
    if layout.extras:
        if tenant is None and policy_version is None and risk is None:
            tail += b"\x00\x00\x00"  # the common case: three nulls
        else:
            tail += b"".join(
                (
                    b"\x00" if tenant is None else b"\x02" + _utf8(tenant),
                    b"\x00" if policy_version is None else b"\x02" + _utf8(policy_version),
                    b"\x00" if risk is None else b"\x02" + _pack_double(risk),
                )
            )
    elif tenant is not None or policy_version is not None or risk is not None:
        return None  # a v1 writer cannot carry these: fastavro's path refuses it with the reason
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
                layout.kinds[e.kind],
                lengths[len(severity)],
                severity,
                lengths[len(agent_id)],
                agent_id,
                b"\x00" if (did := e.agent_did) is None else b"\x02" + lengths[len(b := did.encode())] + b,
                b"\x00" if (sid := e.session_id) is None else b"\x02" + lengths[len(b := sid.encode())] + b,
                lengths[n] if (n := len(action)) < 4096 else _varint(n << 1),
                action,
                b"\x00" if (res := e.resource) is None else b"\x02" + _utf8(res),
                lengths[n] if (n := len(decision)) < 4096 else _varint(n << 1),
                decision,
                lengths[n] if (n := len(reason)) < 4096 else _varint(n << 1),
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
        # An id over 4 KiB (the model allows 256), a kind this schema lacks, a value fastavro must judge.
        return None


class SchemaResolver(Protocol):
    """Finds the writer schema of a Confluent-framed record by its schema id.

    Handed to :class:`Decoder` by its caller (the contract knows no registry):
    :class:`govbus._registry.SchemaIds` implements it over a schema registry client. ``resolve``
    raises :class:`DecodeError` (``unknown-schema-id``, ``incompatible-schema``, or the transient
    ``registry-unavailable``) when it cannot.
    """

    def resolve(self, schema_id: int) -> SchemaVersion: ...


class Decoder:
    """Decodes record values of any writer version into one reader version (the newest by default).

    The framing is detected per record, so one topic may carry both during a migration.
    Single-object values name a shipped writer schema by fingerprint; values in the legacy
    byte-reversed order (govbus 0.1.0) are read too and counted in :attr:`legacy_fingerprints`
    (docs/wire-contract.md says until when). Confluent-framed values name
    it by schema id, resolved through the ``resolver`` handed in (a :class:`SchemaResolver`, e.g.
    ``govbus._registry.SchemaIds(client)``); without one they fail with reason ``no-registry``.
    A writer schema the registry has but this package does not ship (a newer version) is read
    through schema resolution like any other.
    """

    def __init__(self, reader_version: int | None = None, *, resolver: SchemaResolver | None = None) -> None:
        self.reader = schema_version(reader_version)
        self._plans: dict[bytes, _Projection] = {}  # per writer fingerprint
        self.resolver = resolver
        # Single-object values read with the legacy (byte-reversed) fingerprint: the sink runtime
        # exports it as govbus.sink.records.legacy_fingerprint.
        self.legacy_fingerprints = 0

    def decode_datum(self, value: bytes | None) -> tuple[dict[str, Any], SchemaVersion]:
        framing = framing_of(value)
        assert value is not None
        if framing is Framing.CONFLUENT:
            if len(value) < 5:
                raise DecodeError(DecodeReason.TRUNCATED, f"Confluent header needs 5 bytes, record has {len(value)}")
            schema_id = struct.unpack(">I", value[1:5])[0]
            if self.resolver is None:
                raise DecodeError(
                    DecodeReason.NO_REGISTRY,
                    f"Confluent-framed record (schema id {schema_id}) needs a schema registry (GOVBUS_REGISTRY__URL)",
                )
            registered = self.resolver.resolve(schema_id)
            return self._read(value, 5, registered), registered
        if len(value) < 10:
            raise DecodeError(DecodeReason.TRUNCATED, f"single-object header needs 10 bytes, record has {len(value)}")
        writer = _by_fingerprint().get(value[2:10])
        if writer is None:
            writer = _by_legacy_fingerprint().get(value[2:10])
            if writer is not None:
                self.legacy_fingerprints += 1
                return self._read(value, 10, writer), writer
            raise DecodeError(
                DecodeReason.UNKNOWN_FINGERPRINT,
                f"writer schema fingerprint {value[2:10].hex()} is not among the shipped schemas",
            )
        return self._read(value, 10, writer), writer

    def decode(self, value: bytes | None) -> GovernanceEvent:
        datum, _ = self.decode_datum(value)
        try:
            return from_datum(datum)
        except Exception as exc:  # a datum that decodes but breaks the model is still just a bad record
            raise DecodeError(DecodeReason.INVALID_EVENT, f"decoded record is not a valid event: {exc}") from None

    def _read(self, value: bytes, offset: int, writer: SchemaVersion) -> dict[str, Any]:
        buf = io.BytesIO(value)
        buf.seek(offset)
        plan = self._plans.get(writer.fingerprint)
        if plan is None:
            plan = self._plans[writer.fingerprint] = _Projection.between(writer, self.reader)
        try:
            datum = cast(
                dict[str, Any], schemaless_reader(buf, writer.parsed, self.reader.parsed if plan.resolve else None)
            )
        except Exception as exc:  # fastavro raises many types on garbage; all mean the same here
            raise DecodeError(
                DecodeReason.CORRUPT_BODY, f"Avro body does not decode with schema {writer.label}: {exc}"
            ) from None
        if buf.tell() != len(value):
            raise DecodeError(
                DecodeReason.CORRUPT_BODY, f"{len(value) - buf.tell()} trailing bytes after the Avro body"
            )
        return plan.apply(datum) if plan.steps is not None else datum


class _Projection:
    """How a datum read with its writer schema becomes the reader version's datum.

    Not fastavro's resolving reader: in a union it takes the first reader branch a writer branch
    *promotes* to, so a ``bytes`` attribute written by one version is read as ``string`` by
    another (and fails on non-UTF-8 bytes). Versions evolve by adding fields with defaults and
    enum symbols, so reading with the writer schema alone and then applying the reader's view
    of the top-level fields (copy, default, unknown symbol -> enum default) resolves exactly.
    A field whose type changed in any other way falls back to fastavro's resolution (``resolve``).
    """

    def __init__(self, steps: list[tuple[str, str, Any]] | None, resolve: bool) -> None:
        self.steps = steps  # (field, "copy" | "default" | "enum", default or (symbols, default)); None: as read
        self.resolve = resolve

    @classmethod
    def between(cls, writer: SchemaVersion, reader: SchemaVersion) -> _Projection:
        if writer.fingerprint == reader.fingerprint:
            return cls(None, False)
        written = {f["name"]: f for f in writer.schema.get("fields", ())}
        steps: list[tuple[str, str, Any]] = []
        for field in reader.schema.get("fields", ()):
            name = field["name"]
            source = next((written[n] for n in (name, *field.get("aliases", ())) if n in written), None)
            if source is None:
                if "default" not in field:
                    return cls(None, True)  # fastavro says why it cannot be read
                steps.append((name, "default", field["default"]))
            elif _same_type(source["type"], field["type"]):
                steps.append((name, "copy", source["name"]))
            elif _enum_widened(source["type"], field["type"]):
                steps.append((name, "enum", (frozenset(field["type"]["symbols"]), field["type"]["default"])))
            else:
                return cls(None, True)
        return cls(steps, False)

    def apply(self, datum: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, how, arg in self.steps or ():
            if how == "copy":
                out[name] = datum[arg]
            elif how == "default":
                out[name] = copy.deepcopy(arg)  # defaults are JSON: a map default must not be shared
            else:
                symbols, default = arg
                value = datum[name]
                out[name] = value if value in symbols else default
        return out


def _same_type(a: Any, b: Any) -> bool:
    """Whether two field types read identically (documentation aside)."""
    return bool(_bare(a) == _bare(b))


def _enum_widened(writer: Any, reader: Any) -> bool:
    """The same enum, where symbols the reader lacks read as its default."""
    if not (isinstance(writer, dict) and isinstance(reader, dict)):
        return False
    if writer.get("type") != "enum" or reader.get("type") != "enum" or "default" not in reader:
        return False
    return bool(writer.get("name") == reader.get("name") and writer.get("namespace") == reader.get("namespace"))
