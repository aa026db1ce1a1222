"""RFC 5424 formatting of the syslog sink (no receiver needed)."""

from __future__ import annotations

import re

import pytest
from _sink_receivers import delivered

from govbus._sample import sample_events
from govbus.consumers.sinks._syslog import SyslogSink, SyslogSinkOptions, format_message
from govbus.errors import ConfigError

# RFC 5424 §6: HEADER SP STRUCTURED-DATA [SP MSG]
HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) "
    rb"(?P<msgid>[!-~]{1,32}) (?P<sd>\[.*\])(?: (?P<msg>.*))?\Z",
    re.S,
)
PARAM = re.compile(r'(\w+)="((?:[^"\\\]]|\\["\\\]])*)"')


def sd_params(sd: str) -> dict[str, str]:
    return {k: re.sub(r"\\([\"\\\]])", r"\1", v) for k, v in PARAM.findall(sd)}


def _record(**changes: object) -> object:
    event = next(iter(sample_events(2))).replace(**changes)
    return delivered(evs=[event])[0]


def test_message_layout() -> None:
    record = _record(severity="high", resource="db://x", policy_name="pii", trace_id="a" * 32, span_id="b" * 16)
    msg = format_message(record, SyslogSinkOptions(facility="auth"), local_host="here")  # type: ignore[arg-type]
    m = HEADER.match(msg)
    assert m is not None, msg
    assert int(m["pri"]) == 4 * 8 + 3  # auth, error
    assert m["ts"].decode() == record.attributes.time  # type: ignore[attr-defined]
    assert m["host"] == b"test-host"  # the producer's host
    assert m["app"] == b"govbus"
    assert m["procid"] == b"-"
    assert m["msgid"] == record.event.kind.value.encode()  # type: ignore[attr-defined]
    assert m["sd"].startswith(b"[govbus@32473 ")
    params = sd_params(m["sd"].decode())
    e = record.event  # type: ignore[attr-defined]
    assert params["event_id"] == e.event_id
    assert params["agent_id"] == e.agent_id
    assert params["kind"] == e.kind.value
    assert params["severity"] == "high"
    assert params["decision"] == e.decision
    assert params["resource"] == "db://x"
    assert params["policy_name"] == "pii"
    assert params["trace_id"] == "a" * 32
    assert params["verdict"] == "unverified"
    assert m["msg"] == e.reason.encode()


def test_structured_data_escapes_quote_backslash_and_bracket() -> None:
    record = _record(action='rm "-rf" \\ ]now', reason="r")
    msg = format_message(record, SyslogSinkOptions()).decode()  # type: ignore[arg-type]
    assert 'action="rm \\"-rf\\" \\\\ \\]now"' in msg
    assert sd_params(HEADER.match(msg.encode())["sd"].decode())["action"] == 'rm "-rf" \\ ]now'  # type: ignore[index]


def test_control_characters_do_not_split_the_message() -> None:
    msg = format_message(_record(action="a\nb", reason="line1\nline2"), SyslogSinkOptions())  # type: ignore[arg-type]
    assert b'action="a b"' in msg
    assert msg.endswith(b"line1\nline2")  # MSG may hold any octets; octet counting frames it


def test_utf8_message_gets_a_bom_ascii_does_not() -> None:
    ascii_msg = format_message(_record(reason="plain"), SyslogSinkOptions())  # type: ignore[arg-type]
    utf8_msg = format_message(_record(reason="élevé"), SyslogSinkOptions())  # type: ignore[arg-type]
    assert ascii_msg.endswith(b"] plain")
    assert utf8_msg.endswith(b"] \xef\xbb\xbf" + "élevé".encode())


def test_long_messages_are_cut_to_the_limit_on_a_character_boundary() -> None:
    record = _record(reason="é" * 10_000, resource="r" * 5_000)
    msg = format_message(record, SyslogSinkOptions(max_message_bytes=4096))  # type: ignore[arg-type]
    assert len(msg) <= 4096
    msg.decode("utf-8")  # still valid UTF-8
    params = sd_params(HEADER.match(msg)["sd"].decode())  # type: ignore[index]
    assert params["event_id"] == record.event.event_id  # type: ignore[attr-defined]
    assert params["resource"].startswith("rrrr")


def test_cloudevent_message_is_the_json_line() -> None:
    record = _record()
    msg = format_message(record, SyslogSinkOptions(message="cloudevent"))  # type: ignore[arg-type]
    body = HEADER.match(msg)["msg"]  # type: ignore[index]
    assert body.startswith(b'{"id":"' + record.event.event_id.encode())  # type: ignore[attr-defined]


def test_hostname_option_wins() -> None:
    msg = format_message(_record(), SyslogSinkOptions(hostname="collector-1"))  # type: ignore[arg-type]
    assert HEADER.match(msg)["host"] == b"collector-1"  # type: ignore[index]


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"facility": "nope"}, "FACILITY"),
        ({"facility": "24"}, "FACILITY"),
        ({"sd_id": "govbus"}, "SD_ID"),
        ({"sd_id": "gov bus@1"}, "SD_ID"),
        ({"app_name": "my app"}, "APP_NAME"),
        ({"port": "0"}, "PORT"),
        ({"max_message_bytes": "100"}, "MAX_MESSAGE_BYTES"),
    ],
)
def test_bad_options_name_their_variable(options: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        SyslogSink(**options)
    assert info.value.setting == "GOVBUS_SINK__OPTIONS__" + setting


def test_facility_by_name_or_number_and_default_ports() -> None:
    assert SyslogSink(facility="local7").options.facility == 23
    assert SyslogSink(facility="4").options.facility == 4
    assert SyslogSink().options.effective_port == 514
    assert SyslogSink(tls="true").options.effective_port == 6514
