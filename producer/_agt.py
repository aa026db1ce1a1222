"""Drop-in for the Agent Governance Toolkit: a ``GovernanceEventSink`` that publishes to the bus.

    processor = GovernanceEventProcessor()
    processor.add_sink(GovbusSink())          # or GovbusSink(bus) to share a Bus
    processor.on_event(agt_event)             # -> Kafka

:class:`GovbusSink` satisfies AGT's ``GovernanceEventSink`` protocol structurally; this module
does not import ``agent_os`` until a sink is built (AGT is an optional dependency).

The mapping is lossless: :func:`from_agt` then :func:`to_agt` gives back an equal AGT event.
Values AGT allows but the wire model does not (an empty ``agent_id``, a non-ISO ``occurred_at``,
an empty ``session_id``, a malformed trace id...) travel in the attribute ``govbus.agt`` and are
restored by :func:`to_agt`; the model field then holds a placeholder (``"unknown"``, ``None``...).
Attribute values that are not JSON-like (a ``datetime``, a set, an object) cannot travel as such:
they are sent as their ``repr`` and listed in ``govbus.agt["lossy"]``, never dropped.

A field a later AGT release adds (one not in :data:`MAPPED_FIELDS`) is not dropped either: it
travels as the attribute ``agt.<field>`` (``agt.<field>#2``... if the event already has an
attribute of that name), ``govbus.agt["fields"]`` maps each such field to its attribute, and
:func:`to_agt` gives it back as a field when the installed AGT has it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import uuid
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from govbus.errors import GovbusError, InvalidEventError
from govbus.event import V1_FIELDS, EventKind, GovernanceEvent

if TYPE_CHECKING:
    from govbus.producer._bus import Bus

__all__ = ["EXTRA_FIELD_PREFIX", "FIDELITY_KEY", "MAPPED_FIELDS", "GovbusSink", "from_agt", "to_agt"]

log = logging.getLogger("govbus.producer.agt")

FIDELITY_KEY = "govbus.agt"
EXTRA_FIELD_PREFIX = "agt."
_REQUIRED_TEXT = {"agent_id": "unknown", "severity": "unknown", "schema_version": "unknown"}
# AGT's GovernanceEvent has the contract-v1 fields but ``producer`` (the bus fills that in).
_FIELDS = tuple(name for name in V1_FIELDS if name != "producer")
_OPTIONAL_TEXT = tuple(name for name in _FIELDS if GovernanceEvent.__dataclass_fields__[name].default is None)
_PLAIN_TEXT = ("action", "decision", "reason")
MAPPED_FIELDS: frozenset[str] = frozenset(_FIELDS)  # AGT's fields this mapping knows by name


def from_agt(event: Any) -> GovernanceEvent:
    """The govbus event for an AGT ``GovernanceEvent`` (read structurally: no AGT import needed)."""
    fidelity: dict[str, Any] = {}
    fields: dict[str, Any] = {name: getattr(event, name) for name in _FIELDS}
    fields["occurred_at"] = _time(fields["occurred_at"], fidelity)
    kind = fields["kind"]
    kind_value = getattr(kind, "value", kind)
    if isinstance(kind_value, str) and kind_value in _KINDS:
        fields["kind"] = _KINDS[kind_value]
    else:
        _keep(fidelity, "kind", kind_value)
        fields["kind"] = EventKind.UNKNOWN
    attributes = fields["attributes"]
    attributes = dict(attributes) if isinstance(attributes, dict) else {"value": attributes}
    if FIDELITY_KEY in attributes:
        fidelity["attribute"] = attributes.pop(FIDELITY_KEY)
    _carry_extra_fields(event, attributes, fidelity)
    fields["attributes"] = attributes
    for _ in range(len(_FIELDS) + len(attributes) + 2):
        try:
            if fidelity:
                fields["attributes"] = {**attributes, FIDELITY_KEY: fidelity}
            return GovernanceEvent(**fields)
        except InvalidEventError as exc:
            _repair(exc.field, fields, attributes, fidelity)
    raise InvalidEventError("attributes", "cannot be mapped onto the govbus model")  # pragma: no cover


def _carry_extra_fields(event: Any, attributes: dict[str, Any], fidelity: dict[str, Any]) -> None:
    """Fields this mapping does not know go into the attributes under a name no attribute has."""
    carried: dict[str, str] = {}
    for name in _agt_fields(type(event)):
        if name in MAPPED_FIELDS:
            continue
        key = base = EXTRA_FIELD_PREFIX + name
        n = 1
        while key in attributes:
            n += 1
            key = f"{base}#{n}"
        value = getattr(event, name)
        attributes[key] = getattr(value, "value", value) if isinstance(value, Enum) else value
        carried[name] = key
    if carried:
        fidelity["fields"] = carried


def _repair(field: str, fields: dict[str, Any], attributes: dict[str, Any], fidelity: dict[str, Any]) -> None:
    """Move the offending value into the fidelity record and put a valid placeholder in its place."""
    if field == "attributes" or field.startswith(("attributes.", "attributes[")):
        key = _attribute_key(field, attributes)
        if key is not None:
            lossy = [key]
        else:  # a non-string key somewhere, or the kept value of a colliding "govbus.agt" attribute
            lossy = [k for k in attributes if not isinstance(k, str)]
            if not lossy and "attribute" in fidelity:
                fidelity["attribute"] = repr(fidelity["attribute"])
                fidelity.setdefault("lossy", []).append(FIDELITY_KEY)
                return
        if not lossy:
            raise InvalidEventError(field, "cannot be mapped onto the govbus model")
        for k in lossy:
            value = attributes.pop(k)
            attributes[str(k)] = repr(value)
            fidelity.setdefault("lossy", []).append(str(k))
        return
    original = fields[field]
    if field in _REQUIRED_TEXT:
        fields[field] = _REQUIRED_TEXT[field]
    elif field == "event_id":
        fields[field] = uuid.uuid4().hex
    elif field in _OPTIONAL_TEXT:
        fields[field] = None
    elif field in _PLAIN_TEXT:
        fields[field] = ""
    elif field == "latency_ms":
        fields[field] = 0.0
    else:
        raise InvalidEventError(field, "cannot be mapped onto the govbus model")
    _keep(fidelity, field, original)


def _attribute_key(field: str, attributes: dict[str, Any]) -> str | None:
    """The attribute a validation error is about (keys may contain dots and brackets themselves)."""
    best: str | None = None
    for key in attributes:
        if not isinstance(key, str) or key == FIDELITY_KEY:
            continue
        prefix = f"attributes.{key}"
        matches = field == prefix or field.startswith((prefix + ".", prefix + "["))
        if matches and (best is None or len(key) > len(best)):
            best = key
    return best


def _keep(fidelity: dict[str, Any], field: str, original: Any) -> None:
    """Record ``original`` so that :func:`to_agt` can restore it; JSON carries it, so it must be JSON."""
    if isinstance(original, float) and not math.isfinite(original):
        fidelity.setdefault("floats", {})[field] = repr(original)  # nan, inf, -inf: float() reads them back
    elif _json_native(original):
        fidelity[field] = original
    else:
        fidelity[field] = repr(original)
        fidelity.setdefault("lossy", []).append(field)


def _json_native(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _time(value: Any, fidelity: dict[str, Any]) -> datetime:
    if isinstance(value, datetime):  # AGT declares a string; a datetime comes back as its ISO text
        fidelity["occurred_at"] = value.isoformat()
        fidelity.setdefault("lossy", []).append("occurred_at")
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # AGT writes UTC; a naive time is taken as UTC
            if _agt_time(moment) != value:
                fidelity["occurred_at"] = value
            return moment
    fidelity["occurred_at"] = value if isinstance(value, str) else repr(value)
    return datetime.now(UTC)


def _agt_time(moment: datetime) -> str:
    """How AGT writes ``occurred_at``: ``datetime.now(timezone.utc).isoformat()``."""
    return moment.astimezone(UTC).isoformat()


def to_agt(event: GovernanceEvent) -> Any:
    """The AGT ``GovernanceEvent`` for a govbus event (inverse of :func:`from_agt`). Needs AGT."""
    agt = _agt()
    attributes = dict(event.attributes)
    fidelity = attributes.pop(FIDELITY_KEY, None)
    if not isinstance(fidelity, dict):
        if fidelity is not None:
            attributes[FIDELITY_KEY] = fidelity
        fidelity = {}
    if "attribute" in fidelity:
        attributes[FIDELITY_KEY] = fidelity["attribute"]
    extra: dict[str, Any] = {}
    carried = fidelity.get("fields")
    if isinstance(carried, dict):
        known = set(_agt_fields(agt.GovernanceEvent))
        for name, key in carried.items():
            if name in known and key in attributes:  # else this AGT lacks the field: it stays an attribute
                extra[name] = attributes.pop(key)
    values: dict[str, Any] = {name: getattr(event, name) for name in _FIELDS if name != "attributes"}
    values["occurred_at"] = _agt_time(event.occurred_at)
    values["kind"] = event.kind.value
    for name in _FIELDS:
        if name in fidelity and name != "attributes":
            values[name] = fidelity[name]
    for name, text in fidelity.get("floats", {}).items():
        values[name] = float(text)
    with contextlib.suppress(ValueError):  # else a kind AGT does not know (it was given one): as it was
        values["kind"] = agt.GovernanceEventKind(values["kind"])
    return agt.GovernanceEvent(**values, **extra, attributes=attributes)


class GovbusSink:
    """An AGT ``GovernanceEventSink`` publishing every event to the bus.

    ``emit()`` returns SUCCESS once the bus has accepted the events (per its durability mode; the
    broker acknowledges asynchronously, see ``force_flush``), FAILURE if any event was refused
    (spool full, closed bus, unmappable event); it never raises. A sink built without a ``bus``
    owns one (``Bus(**bus_options)``) and closes it on ``shutdown``.
    """

    def __init__(self, bus: Bus | None = None, **bus_options: Any) -> None:
        self._results = _agt().SinkExportResult
        if bus is None:
            from govbus.producer._bus import Bus

            bus = Bus(**bus_options)
            self._owns = True
        elif bus_options:
            raise TypeError("pass either a Bus or options to build one, not both")
        else:
            self._owns = False
        self.bus = bus

    def emit(self, events: Sequence[Any]) -> Any:
        refused = 0
        try:
            emit = self.bus.emit
            for event in events:
                try:
                    emit(from_agt(event))
                except (GovbusError, TypeError, ValueError) as exc:
                    refused += 1
                    log.error("govbus sink: event %s not published: %s", getattr(event, "event_id", "?"), exc)
        except Exception:  # the protocol says emit() must not raise
            log.exception("govbus sink failed")
            return self._results.FAILURE
        return self._results.FAILURE if refused else self._results.SUCCESS

    def force_flush(self, timeout_ms: int = 30000) -> bool:
        try:
            return self.bus.flush(timeout_ms / 1000)
        except GovbusError as exc:
            log.error("govbus sink flush failed: %s", exc)
            return False

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        try:
            if self._owns:
                self.bus.close(timeout_ms / 1000)
                return self.bus.counters().delivered + self.bus.counters().failed >= self.bus.counters().submitted
            return self.bus.flush(timeout_ms / 1000)
        except GovbusError as exc:
            log.error("govbus sink shutdown: %s", exc)
            return False


def _agt_fields(cls: Any) -> list[str]:
    """The fields an AGT event class declares (a dataclass today; a pydantic model would do too)."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    model_fields = getattr(cls, "model_fields", None)
    return list(model_fields) if isinstance(model_fields, dict) else []


_KINDS = {kind.value: kind for kind in EventKind if kind is not EventKind.UNKNOWN}


def _agt() -> Any:
    with warnings.catch_warnings():
        # agent_os/__init__ warns about its old distribution name even when imported from the new one.
        warnings.filterwarnings("ignore", message="agent-os-kernel is deprecated", category=DeprecationWarning)
        from agent_os import event_sink
    return event_sink
