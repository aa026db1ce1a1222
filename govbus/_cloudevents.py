"""CloudEvents 1.0 Kafka protocol binding, binary content mode.

The event itself is the record value (Avro); its context attributes travel as record headers
named ``ce_<attribute>`` with UTF-8 string values, plus ``content-type``. W3C ``traceparent`` and
``tracestate`` travel as plain headers (the CloudEvents distributed-tracing extension's names).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote

from govbus.errors import DecodeError, DecodeReason
from govbus.event import GovernanceEvent

SPEC_VERSION = "1.0"
Headers = list[tuple[str, bytes]]
# Header names of this binding; the signing headers are added by govbus.signing.
CE_SPECVERSION = "ce_specversion"
CE_ID = "ce_id"
CE_SOURCE = "ce_source"
CE_TYPE = "ce_type"
CE_TIME = "ce_time"
CE_SUBJECT = "ce_subject"
CE_DATASCHEMA = "ce_dataschema"
CE_SESSIONID = "ce_sessionid"
CONTENT_TYPE = "content-type"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_REQUIRED = (CE_SPECVERSION, CE_ID, CE_SOURCE, CE_TYPE)


def default_source(event: GovernanceEvent) -> str:
    """The ``source`` AGT's ``to_cloudevent`` would give: the agent's DID, else a path naming the agent."""
    return event.agent_did or _agent_path(event.agent_id)


@lru_cache(maxsize=4096)
def _agent_path(agent_id: str) -> str:
    # Agents repeat and quote() costs a microsecond; the producer calls this for every event.
    return f"/agent-os/agent/{quote(agent_id, safe='')}"


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z`` suffix."""
    utc = moment.astimezone(UTC)
    if utc.year >= 1000:
        # isoformat is twice as fast as strftime and prints the same for four-digit years
        # (strftime's %Y does not pad years below 1000 on glibc).
        return utc.isoformat(timespec="microseconds")[:-6] + "Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dataschema(fingerprint: bytes) -> str:
    """A URI naming the writer schema by its CRC-64-AVRO fingerprint (wire order, hex)."""
    return f"urn:avro:crc-64-avro:{fingerprint.hex()}"


def headers_for(
    event: GovernanceEvent,
    *,
    content_type: str,
    schema_uri: str | None = None,
    source: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> Headers:
    """The record headers for ``event`` (binary content mode)."""
    # Header tuples that repeat from event to event (agent, type, source...) are cached: the
    # producer builds these for every event, and every tuple is an allocation the GC tracks.
    headers: Headers = [
        _SPECVERSION_HEADER,
        (CE_ID, event.event_id.encode()),
        _source_header(source or default_source(event)),
        _type_header(event.ce_type),
        (CE_TIME, format_time(event.occurred_at).encode()),
        _subject_header(event.agent_id),
        _content_type_header(content_type),
    ]
    if schema_uri:
        headers.append(_dataschema_header(schema_uri))
    if event.session_id:
        headers.append(_session_header(event.session_id))
    if traceparent:
        headers.append((TRACEPARENT, traceparent.encode()))
        if tracestate:
            headers.append((TRACESTATE, tracestate.encode()))
    return headers


_SPECVERSION_HEADER = (CE_SPECVERSION, SPEC_VERSION.encode())


def _cached_header(name: str) -> Callable[[str], tuple[str, bytes]]:
    @lru_cache(maxsize=8192)
    def header(value: str) -> tuple[str, bytes]:
        return name, value.encode()

    return header


_source_header = _cached_header(CE_SOURCE)
_type_header = _cached_header(CE_TYPE)
_subject_header = _cached_header(CE_SUBJECT)
_content_type_header = _cached_header(CONTENT_TYPE)
_dataschema_header = _cached_header(CE_DATASCHEMA)
_session_header = _cached_header(CE_SESSIONID)


@dataclasses.dataclass(frozen=True, slots=True)
class CloudEventAttributes:
    """The context attributes read back from record headers."""

    specversion: str
    id: str
    source: str
    type: str
    time: str | None
    subject: str | None
    datacontenttype: str | None
    dataschema: str | None
    extensions: dict[str, str]


def parse_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> CloudEventAttributes:
    """Reads the binding's attributes; :class:`DecodeError` (``bad-headers``) when required ones are missing."""
    values: dict[str, str] = {}
    content_type: str | None = None
    # Every record of the bus passes here: one loop, no call per header.
    try:
        for name, raw in headers or ():
            if raw is None:
                continue
            if name[:3] == "ce_":
                values[name[3:]] = raw.decode("utf-8")
            elif name == CONTENT_TYPE:
                content_type = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(DecodeReason.BAD_HEADERS, f"header {name} is not UTF-8") from None
    if "specversion" not in values or "id" not in values or "source" not in values or "type" not in values:
        missing = [h for h in _REQUIRED if h[3:] not in values]
        raise DecodeError(DecodeReason.BAD_HEADERS, f"missing CloudEvents header(s) {', '.join(missing)}")
    if values["specversion"] != SPEC_VERSION:
        raise DecodeError(
            DecodeReason.BAD_HEADERS, f"ce_specversion is {values['specversion']!r}, expected {SPEC_VERSION!r}"
        )
    known = _KNOWN
    return CloudEventAttributes(
        specversion=values["specversion"],
        id=values["id"],
        source=values["source"],
        type=values["type"],
        time=values.get("time"),
        subject=values.get("subject"),
        datacontenttype=content_type,
        dataschema=values.get("dataschema"),
        extensions={k: v for k, v in values.items() if k not in known},
    )


_KNOWN = frozenset({"specversion", "id", "source", "type", "time", "subject", "dataschema"})
