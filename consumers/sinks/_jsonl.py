"""CloudEvents 1.0 structured-mode JSON for a delivered record: one object per line (JSON Lines).

The event becomes ``data`` as JSON (``datacontenttype: application/json``); context attributes
come from the record's CloudEvents headers. ``id`` is written first so a reader can pick it out of
a line without parsing the whole line (the file sink's de-duplication does, at start-up).
Verdicts other than ``unverified`` travel as the extension ``govbusverdict``.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from govbus._cloudevents import TRACEPARENT, TRACESTATE, format_time
from govbus.consumers._spi import DeliveredRecord
from govbus.event import GovernanceEvent

__all__ = ["cloudevent", "encode_line", "event_data", "line_id"]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ID_PREFIX = b'{"id":"'


def _needs_care(value: Any) -> bool:
    # The event model allows bytes and non-finite floats at the top level only; nested values
    # came out of JSON and are JSON-safe already.
    t = type(value)
    return t is bytes or (t is float and not math.isfinite(value))


def _attribute(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no such numbers
    return value


def event_data(event: GovernanceEvent) -> dict[str, Any]:
    """The event's fields as JSON-ready values (RFC 3339 time, bytes attributes in base64)."""
    attrs = event.attributes
    if any(_needs_care(v) for v in attrs.values()):
        attrs = {k: _attribute(v) for k, v in attrs.items()}
    p = event.producer
    return {
        "event_id": event.event_id,
        "occurred_at": format_time(event.occurred_at),
        "kind": event.kind.value,
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
        "tenant_id": event.tenant_id,
        "policy_version": event.policy_version,
        "risk_score": event.risk_score,
        "producer": None
        if p is None
        else {"name": p.name, "instance_id": p.instance_id, "host": p.host, "library": p.library},
    }


def cloudevent(record: DeliveredRecord) -> dict[str, Any]:
    a = record.attributes
    ce: dict[str, Any] = {"id": a.id, "specversion": a.specversion, "source": a.source, "type": a.type}
    if a.time is not None:
        ce["time"] = a.time
    if a.subject is not None:
        ce["subject"] = a.subject
    if a.dataschema is not None:
        ce["dataschema"] = a.dataschema
    for name, value in a.extensions.items():
        ce.setdefault(name, value)
    for header, raw in record.headers:
        if header in (TRACEPARENT, TRACESTATE) and raw:
            ce[header] = raw.decode("ascii", "replace")
    if record.verdict != "unverified":
        ce["govbusverdict"] = record.verdict
        if record.flagged and record.verdict_detail:
            ce["govbusverdictdetail"] = record.verdict_detail
    ce["datacontenttype"] = "application/json"
    ce["data"] = event_data(record.event)
    return ce


def encode_line(record: DeliveredRecord) -> bytes:
    """One JSON Lines line (UTF-8, newline-terminated)."""
    line: bytes | None = getattr(record, "line", None)  # rendered by the compiled core at intake
    if line is not None:
        return line
    return (_ENCODER.encode(cloudevent(record)) + "\n").encode("utf-8")


def line_id(line: bytes) -> str | None:
    """The ``id`` of a line :func:`encode_line` wrote, or None for anything else."""
    if line.startswith(_ID_PREFIX):
        end = line.find(b'"', len(_ID_PREFIX))
        if end > 0 and b"\\" not in line[len(_ID_PREFIX) : end]:
            return line[len(_ID_PREFIX) : end].decode("utf-8", "replace")
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None
