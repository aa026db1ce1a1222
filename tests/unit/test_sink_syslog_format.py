"""The syslog sink's formatting, held to the implementation before it was made faster.

``reference_message`` below is ``format_message`` as it was (options read per record, every
value escaped, the printable-ASCII filter run per record); the sink's formatter must write the
same bytes for any record and options.
"""

from __future__ import annotations

import os
from typing import Any

from _sink_strategies import records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus._cloudevents import format_time
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers.sinks import _jsonl
from govbus.consumers.sinks._severity import severity
from govbus.consumers.sinks._syslog import SyslogSink, SyslogSinkOptions, format_message

SETTINGS = settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_BOM = b"\xef\xbb\xbf"

_options = st.builds(
    SyslogSinkOptions,
    port=st.just(514),
    facility=st.integers(0, 23),
    app_name=st.sampled_from(["govbus", "a" * 48]),
    hostname=st.none() | st.sampled_from(["h", "relay.example"]),
    sd_id=st.sampled_from(["govbus@32473", "x@1"]),
    message=st.sampled_from(["text", "cloudevent"]),
    max_value_chars=st.sampled_from([16, 40, 1024]),
    max_message_bytes=st.sampled_from([4096, 8192]),
)


def outcome(fn: Any, record: DeliveredRecord) -> Any:
    try:
        return fn(record)
    except Exception as exc:  # both must raise alike (e.g. an unencodable cloudevent line)
        return type(exc)


@SETTINGS
@given(record=records(), options=_options, local_host=st.sampled_from(["-", "here", "h\u00e9"]))
def test_messages_equal_the_previous_formatting(
    record: DeliveredRecord, options: SyslogSinkOptions, local_host: str
) -> None:
    want = outcome(lambda r: reference_message(r, options, local_host=local_host), record)
    assert outcome(lambda r: format_message(r, options, local_host=local_host), record) == want
    sink = SyslogSink(options)
    sink._format = type(sink._format)(options, local_host)
    assert outcome(sink._format, record) == want


def test_long_values_are_cut_the_same_way() -> None:
    from _sink_receivers import delivered

    from govbus.event import GovernanceEvent

    ev = GovernanceEvent(agent_id="a" * 200, reason="r\u00e9" * 3000, resource=']\\"' * 300, action="\x01\n")
    (record,) = delivered(evs=[ev])
    for options in (
        SyslogSinkOptions(port=514),
        SyslogSinkOptions(port=514, max_message_bytes=4096, max_value_chars=16),
    ):
        assert format_message(record, options, local_host="h") == reference_message(record, options, local_host="h")


# -- the formatting before (reference) ---------------------------------------------------------


def reference_message(record: DeliveredRecord, options: SyslogSinkOptions, *, local_host: str = "-") -> bytes:
    """One RFC 5424 message (without the octet-count frame)."""
    event = record.event
    pri = options.facility * 8 + severity(event.severity).syslog
    host = options.hostname or (_ref_printable(event.producer.host, 255) if event.producer else "") or local_host
    timestamp = format_time(event.occurred_at)
    msgid = _ref_printable(event.kind.value, 32) or "-"
    header = f"<{pri}>1 {timestamp} {host} {options.app_name} - {msgid} ".encode("ascii")
    params = _ref_params(record)
    limit = options.max_message_bytes
    sd = _ref_sd(options.sd_id, params, options.max_value_chars)
    # Keep the whole structured data if at all possible: it is what SIEMs parse.
    for cap in (256, 64, 16):
        if len(header) + len(sd) <= limit - 64:
            break
        sd = _ref_sd(options.sd_id, params, min(cap, options.max_value_chars))
    if options.message == "cloudevent":
        raw = _jsonl.encode_line(record)[:-1]
    else:
        raw = (event.reason or f"{event.kind.value} {event.action} {event.decision}".strip()).encode("utf-8")
    body = raw if raw.isascii() else _BOM + raw
    room = limit - len(header) - len(sd) - 1
    if len(body) > room:
        # Cut on a character boundary: a split UTF-8 sequence would make the whole MSG invalid.
        body = body[: max(room, 0)].decode("utf-8", "ignore").encode("utf-8")
    return header + sd + (b" " + body if body else b"")


def _ref_params(record: DeliveredRecord) -> list[tuple[str, str]]:
    e = record.event
    a = record.attributes
    fields: list[tuple[str, str | None]] = [
        ("event_id", a.id),
        ("type", a.type),
        ("source", a.source),
        ("agent_id", e.agent_id),
        ("agent_did", e.agent_did),
        ("session_id", e.session_id),
        ("kind", e.kind.value),
        ("severity", e.severity),
        ("action", e.action or None),
        ("decision", e.decision or None),
        ("resource", e.resource),
        ("policy_name", e.policy_name),
        ("trace_id", e.trace_id),
        ("span_id", e.span_id),
        ("verdict", record.verdict),
    ]
    return [(k, v) for k, v in fields if v is not None]


def _ref_sd(sd_id: str, params: list[tuple[str, str]], cap: int) -> bytes:
    parts = [sd_id]
    for name, value in params:
        if len(value) > cap:
            value = value[:cap]
        parts.append(f'{name}="{_ref_escape(value)}"')
    return ("[" + " ".join(parts) + "]").encode("utf-8")


def _ref_escape(value: str) -> str:
    # RFC 5424 §6.3.3: '"', '\' and ']' are escaped with a backslash. Control characters are
    # not forbidden but break line-oriented receivers, so they become spaces.
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    if not out.isprintable():
        out = "".join(ch if ch.isprintable() else " " for ch in out)
    return out


def _ref_printable(text: str, limit: int) -> str:
    return "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
