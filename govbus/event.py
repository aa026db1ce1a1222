"""The governance event: a typed, immutable model that validates at construction.

Mirrors the Agent Governance Toolkit's ``GovernanceEvent`` field for field, so AGT events map
onto the bus losslessly; an invalid value raises :class:`InvalidEventError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NoReturn

from govbus.errors import InvalidEventError

# The public names. ``decoded_event``, ``encoded_size_bound`` and ``MAX_RECORD_OVERHEAD`` serve the
# wire contract and the producer inside the package: public by name, not API.
__all__ = [
    "FIELDS",
    "MAX_ATTRIBUTES",
    "MAX_ENCODED_BYTES",
    "EventKind",
    "FrozenDict",
    "FrozenList",
    "GovernanceEvent",
    "ProducerInfo",
]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
# Generous but bounded: a governance event is metadata, not a payload carrier.
_MAX_TEXT = 64 * 1024
_MAX_ID = 256
_INT64 = (-(2**63), 2**63 - 1)
# Attributes: at most this many keys (top level), keys of at most _MAX_ID characters, string and
# bytes values (also nested ones) of at most _MAX_TEXT characters / bytes.
MAX_ATTRIBUTES = 1024
# Every valid event's Avro value (framing included) is at most this many bytes: the bound that
# __post_init__ computes (exact for strings and scalars, an upper bound for nested JSON) must stay
# under it. With MAX_RECORD_OVERHEAD for the key and headers (CloudEvents, traceparent/tracestate,
# signature) the whole record fits librdkafka's default message.max.bytes (1 000 000).
MAX_ENCODED_BYTES = 900_000
MAX_RECORD_OVERHEAD = 100_000
# Framing, the fixed-size fields, union branches and the producer record (its strings are bounded
# by the settings and the host name): what the bound adds to the variable-length fields.
_FIXED_BYTES = 4096
_VARINT = 5  # an Avro length prefix of anything under 2 GiB


class EventKind(StrEnum):
    """What happened. Values equal AGT's ``GovernanceEventKind`` values."""

    UNKNOWN = "unknown"
    POLICY_CHECK = "policy_check"
    POLICY_VIOLATION = "policy_violation"
    TOOL_CALL_BLOCKED = "tool_call_blocked"
    PROMPT_INJECTION_DETECTED = "prompt_injection_detected"
    IDENTITY_VERIFIED = "identity_verified"
    IDENTITY_REJECTED = "identity_rejected"
    RESOURCE_ACCESS = "resource_access"
    ESCALATION_REQUESTED = "escalation_requested"
    CHECKPOINT_CREATED = "checkpoint_created"
    ANOMALY_DETECTED = "anomaly_detected"
    MCP_TOOL_POISONING = "mcp_tool_poisoning"
    CONTENT_VIOLATION = "content_violation"
    # Since contract v2. Writers pinned to v1 refuse it; v1 readers read it as UNKNOWN.
    DATA_EXFILTRATION_DETECTED = "data_exfiltration_detected"

    @property
    def ce_type(self) -> str:
        """CloudEvents ``type``: the reverse-DNS names AGT's ``to_cloudevent`` uses."""
        return _CE_TYPES.get(self, f"ai.agentos.governance.{self.value}")


_CE_TYPES: dict[EventKind, str] = {
    EventKind.POLICY_CHECK: "ai.agentos.policy.check",
    EventKind.POLICY_VIOLATION: "ai.agentos.policy.violation",
    EventKind.TOOL_CALL_BLOCKED: "ai.agentos.tool.blocked",
    EventKind.PROMPT_INJECTION_DETECTED: "ai.agentos.prompt_injection.detected",
    EventKind.IDENTITY_VERIFIED: "ai.agentos.identity.verified",
    EventKind.IDENTITY_REJECTED: "ai.agentos.identity.rejected",
    EventKind.RESOURCE_ACCESS: "ai.agentos.resource.access",
    EventKind.ESCALATION_REQUESTED: "ai.agentos.escalation.requested",
    EventKind.CHECKPOINT_CREATED: "ai.agentos.checkpoint.created",
    EventKind.ANOMALY_DETECTED: "ai.agentos.anomaly.detected",
    EventKind.MCP_TOOL_POISONING: "ai.agentos.mcp.tool_poisoning",
    EventKind.CONTENT_VIOLATION: "ai.agentos.content.violation",
    EventKind.DATA_EXFILTRATION_DETECTED: "ai.agentos.data_exfiltration.detected",
}
KIND_BY_CE_TYPE: dict[str, EventKind] = {v: k for k, v in _CE_TYPES.items()}

# Optional fields that contract v1 does not have, in schema order. A v1 writer refuses an event
# that sets one (it cannot carry it); a v1 reader leaves them None.
V2_FIELDS = ("tenant_id", "policy_version", "risk_score")


@dataclasses.dataclass(frozen=True, slots=True)
class ProducerInfo:
    """Who put an event on the bus (filled by the producer library, not by the kernel)."""

    name: str
    instance_id: str
    host: str
    library: str


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True, slots=True, eq=True)
class GovernanceEvent:
    """One governance event. Construct with keyword arguments; invalid input raises at once.

    ``producer`` is None on events a kernel builds and is set on events read from the bus.
    ``tenant_id``, ``policy_version`` and ``risk_score`` exist since contract v2 (see
    :data:`V2_FIELDS`): they read as None from v1 records, and a writer pinned to v1 refuses them.
    """

    agent_id: str
    kind: EventKind = EventKind.POLICY_CHECK
    severity: str = "info"
    action: str = ""
    decision: str = ""
    reason: str = ""
    event_id: str = dataclasses.field(default_factory=_new_id)
    occurred_at: datetime = dataclasses.field(default_factory=_now)
    agent_did: str | None = None
    session_id: str | None = None
    resource: str | None = None
    policy_name: str | None = None
    latency_ms: float = 0.0
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: str = "1"
    producer: ProducerInfo | None = None
    # Contract v2. Appended, so positional construction of v1 fields is unchanged.
    tenant_id: str | None = None
    policy_version: str | None = None
    risk_score: float | None = None

    def __post_init__(self) -> None:
        size = _FIXED_BYTES
        for name, limit, required, optional in _TEXTS:
            value = getattr(self, name)
            if value is not None or not optional:
                size += _text(value, name, limit, required=required)
        kind: object = self.kind  # AGT hands over plain strings; accept its values
        if not isinstance(kind, EventKind):
            try:
                object.__setattr__(self, "kind", EventKind(kind))  # type: ignore[arg-type]
            except ValueError:
                raise InvalidEventError(
                    "kind", f"must be one of {[k.value for k in EventKind]}, got {kind!r}"
                ) from None
        if not isinstance(self.occurred_at, datetime):
            raise InvalidEventError("occurred_at", f"must be a datetime, got {type(self.occurred_at).__name__}")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise InvalidEventError("occurred_at", "must be timezone-aware (e.g. datetime.now(timezone.utc))")
        latency = self.latency_ms
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise InvalidEventError("latency_ms", f"must be a number, got {type(latency).__name__}")
        if not math.isfinite(latency) or latency < 0:
            raise InvalidEventError("latency_ms", f"must be a finite number >= 0, got {latency!r}")
        if isinstance(latency, int):
            object.__setattr__(self, "latency_ms", float(latency))
        if self.risk_score is not None:
            _risk(self)
        _hex_id(self.trace_id, "trace_id", _TRACE_ID, 32)
        _hex_id(self.span_id, "span_id", _SPAN_ID, 16)
        _hex_id(self.parent_span_id, "parent_span_id", _SPAN_ID, 16)
        attributes = self.attributes
        if not isinstance(attributes, Mapping):
            raise InvalidEventError("attributes", f"must be a mapping, got {type(attributes).__name__}")
        if len(attributes) > MAX_ATTRIBUTES:
            raise InvalidEventError("attributes", f"has {len(attributes)} keys; the limit is {MAX_ATTRIBUTES}")
        # A private, read-only copy, nested values too: the caller may keep mutating its dict after
        # emit(), and nobody can make an accepted event unencodable afterwards.
        frozen = FrozenDict()
        store = dict.__setitem__
        size += _VARINT + 1
        for key, value in attributes.items():
            if not isinstance(key, str):
                raise InvalidEventError("attributes", f"keys must be strings, got {key!r}")
            if not key.isascii():
                _utf8(key, "attributes")
            size += _key(key, "attributes")
            field = f"attributes.{key}"
            exact = type(value)
            if exact is str:  # the common case inline: this runs for every attribute of every event
                if len(value) > _MAX_TEXT:
                    raise InvalidEventError(field, f"is {len(value)} characters long; the limit is {_MAX_TEXT}")
                size += _VARINT + 1 + (len(value) if value.isascii() else _utf8(value, field))
                store(frozen, key, value)
            elif exact is int or exact is float or exact is bool:
                if exact is int and not _INT64[0] <= value <= _INT64[1]:
                    raise InvalidEventError(field, "is an integer outside the signed 64-bit range")
                size += 11
                store(frozen, key, value)
            else:
                value, bound = _attribute(value, field)
                size += _VARINT + 1 + bound
                store(frozen, key, value)
        object.__setattr__(self, "attributes", frozen)
        if size > MAX_ENCODED_BYTES:
            raise InvalidEventError(
                "<event>",
                f"may encode to {size} bytes; the limit is {MAX_ENCODED_BYTES} (Kafka's message.max.bytes): "
                "shorten the largest fields or attributes",
            )

    def __hash__(self) -> int:
        return hash(self.event_id)

    @property
    def ce_type(self) -> str:
        return self.kind.ce_type

    def replace(self, **changes: Any) -> GovernanceEvent:
        """A copy with some fields changed (validated like a new event)."""
        return dataclasses.replace(self, **changes)


# The model's field names, in declaration order: the one list every non-frozen rendering derives
# from. Frozen layouts (the Avro schemas and the writer that mirrors them, the spool journal, the
# audit ledger entry, the JSON Lines key order) spell theirs out on purpose, and each has a test
# that fails when a field is added here that the layout neither carries nor lists as left out.
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GovernanceEvent))
# The fields contract v1 has: every field but those added since.
V1_FIELDS: tuple[str, ...] = tuple(name for name in FIELDS if name not in V2_FIELDS)

# The slots' own setters: they bypass the frozen dataclass's __setattr__ without a name lookup.
_SLOTS = tuple((name, getattr(GovernanceEvent, name).__set__) for name in FIELDS)
# Text fields' rules, from the model: (field, length limit, must not be empty, may be None).
# Identifiers are short; free text and resources long; only free text may be empty; a field
# whose default is None may be None (then it is not checked). The hex ids have their own rule.
_LONG_TEXT = frozenset({"action", "decision", "reason", "resource"})
_HEX_IDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_TEXTS = tuple(
    (f.name, _MAX_TEXT if f.name in _LONG_TEXT else _MAX_ID, f.default != "", f.default is None)
    for f in dataclasses.fields(GovernanceEvent)
    if f.type in ("str", "str | None") and f.name not in _HEX_IDS
)


def decoded_event(fields: Mapping[str, Any]) -> GovernanceEvent:
    """An event from a decoded Avro datum, with every field of the model given.

    Avro has already guaranteed each field's type (and that strings are UTF-8), so only the
    contract's semantic rules are checked: the full validation of a kernel-built event costs more
    than decoding the record, and a consumer pays it for every event it reads.
    """
    event = object.__new__(GovernanceEvent)
    for name, slot in _SLOTS:
        slot(event, fields[name])
    for name, limit, required, _ in _TEXTS:
        value = fields[name]
        if value is None:
            continue
        if required and not value:
            raise InvalidEventError(name, "must not be empty")
        if len(value) > limit:
            raise InvalidEventError(name, f"is {len(value)} characters long; the limit is {limit}")
        if "\x00" in value:
            raise InvalidEventError(name, "must not contain NUL characters")
    latency = event.latency_ms
    if not math.isfinite(latency) or latency < 0:
        raise InvalidEventError("latency_ms", f"must be a finite number >= 0, got {latency!r}")
    if event.risk_score is not None:
        _risk(event)
    _hex_id(event.trace_id, "trace_id", _TRACE_ID, 32)
    _hex_id(event.span_id, "span_id", _SPAN_ID, 16)
    _hex_id(event.parent_span_id, "parent_span_id", _SPAN_ID, 16)
    return event


def _risk(event: GovernanceEvent) -> None:
    score = event.risk_score
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise InvalidEventError("risk_score", f"must be a number, got {type(score).__name__}")
    if not 0.0 <= score <= 1.0:  # also refuses NaN
        raise InvalidEventError("risk_score", f"must be between 0.0 and 1.0, got {score!r}")
    if isinstance(score, int):
        object.__setattr__(event, "risk_score", float(score))


def _text(value: object, field: str, limit: int, *, required: bool = False) -> int:
    """Validates a text field; returns the most bytes it takes in the Avro value."""
    if not isinstance(value, str):
        raise InvalidEventError(field, f"must be a string, got {type(value).__name__}")
    if required and not value:
        raise InvalidEventError(field, "must not be empty")
    if len(value) > limit:
        raise InvalidEventError(field, f"is {len(value)} characters long; the limit is {limit}")
    if "\x00" in value:
        raise InvalidEventError(field, "must not contain NUL characters")
    if not value.isascii():
        return _VARINT + 1 + _utf8(value, field)
    return _VARINT + 1 + len(value)


def _utf8(value: str, field: str) -> int:
    """The UTF-8 length of ``value``; :class:`InvalidEventError` if it has none."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEventError(field, "is not valid Unicode (lone surrogate)") from None


def _key(key: str, field: str) -> int:
    """Validates an attribute key (top level or nested); returns its most encoded bytes."""
    if len(key) > _MAX_ID:
        raise InvalidEventError(field, f"has a key of {len(key)} characters ({key[:32]!r}...); the limit is {_MAX_ID}")
    if key.isascii() and key.isprintable():  # as JSON: quoted, '"' and '\\' escaped, then ':'
        return _VARINT + 3 + len(key) + key.count('"') + key.count("\\")
    return _VARINT + 3 + 6 * len(key)  # UTF-8 is at most 4 bytes a character, an escape 6


def _hex_id(value: object, field: str, pattern: re.Pattern[str], width: int) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not pattern.fullmatch(value) or value == "0" * width:
        raise InvalidEventError(field, f"must be {width} lowercase hex digits, not all zero; got {value!r}")


def _attribute(value: object, field: str, depth: int = 0) -> tuple[Any, int]:
    """Attributes hold JSON-like values (plus bytes at the top level). Returns the value frozen
    (mappings and lists become :class:`FrozenDict` / :class:`FrozenList` copies) and the most bytes
    it takes encoded: its Avro branch at the top level, its JSON text when nested."""
    if depth > 32:
        raise InvalidEventError(field, "is nested more than 32 levels deep")
    if value is None or isinstance(value, bool):
        return value, 5
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise InvalidEventError(field, f"is {len(value)} characters long; the limit is {_MAX_TEXT}")
        size = len(value) if value.isascii() else _utf8(value, field)
        if depth:  # JSON text: quotes, and escapes (a control character is up to 6 bytes)
            size += 2 + (value.count('"') + value.count("\\") if value.isprintable() else 5 * len(value))
        return value, size
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise InvalidEventError(field, "is an integer outside the signed 64-bit range")
        return value, 20
    if isinstance(value, float):
        if depth and not math.isfinite(value):
            raise InvalidEventError(field, "is a non-finite float inside a nested value (JSON cannot carry it)")
        return value, 24
    if isinstance(value, bytes):
        if depth:
            raise InvalidEventError(field, "holds bytes inside a nested value; bytes are allowed at the top level")
        if len(value) > _MAX_TEXT:
            raise InvalidEventError(field, f"is {len(value)} bytes long; the limit is {_MAX_TEXT}")
        return value, len(value)
    if isinstance(value, Mapping | list | tuple) and len(value) > MAX_ENCODED_BYTES:
        raise InvalidEventError(field, f"has {len(value)} elements; it cannot fit in {MAX_ENCODED_BYTES} bytes")
    if isinstance(value, Mapping):
        frozen = FrozenDict()
        size = 2
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEventError(field, f"has a non-string key {k!r}")
            if not k.isascii():
                _utf8(k, field)
            item, bound = _attribute(v, f"{field}.{k}", depth + 1)
            dict.__setitem__(frozen, k, item)
            size += _key(k, field) + bound + 1
        return frozen, size
    if isinstance(value, list | tuple):
        items: list[Any] = []
        size = 2
        for i, v in enumerate(value):
            item, bound = _attribute(v, f"{field}[{i}]", depth + 1)
            items.append(item)
            size += bound + 1
        return (FrozenList(items) if isinstance(value, list) else tuple(items)), size
    raise InvalidEventError(field, f"has unsupported type {type(value).__name__}; use JSON-like values or bytes")


def _read_only(self: object, *_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(
        "a GovernanceEvent's attributes are read-only (validated once, at construction): "
        "build a new event, e.g. event.replace(attributes={**event.attributes, 'key': value})"
    )


class FrozenDict(dict[str, Any]):
    """A read-only dict: an event's attributes (and the mappings nested in them).

    A dict, not a ``MappingProxyType``: JSON encoders, ``isinstance(x, dict)`` and pickling keep
    working, and it compares equal to a dict with the same items. Every mutating method raises
    ``TypeError``; ``copy()`` returns a plain, mutable dict.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self


class FrozenList(list[Any]):
    """A read-only list (a list nested in an event's attribute); equal to a list with the same items."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self


def encoded_size_bound(event: GovernanceEvent) -> int:
    """The most bytes ``event``'s Avro value can take (what construction checked against
    :data:`MAX_ENCODED_BYTES`): for a producer whose ``message.max.bytes`` is lower than usual."""
    size = _FIXED_BYTES
    for name, _limit, _required, _optional in _TEXTS:
        value = getattr(event, name)
        if value is not None:
            size += _VARINT + 1 + (len(value) if value.isascii() else len(value.encode()))
    size += _VARINT + 1
    for key, value in event.attributes.items():
        size += _key(key, "attributes") + _VARINT + 1 + _attribute(value, key)[1]
    return size
