"""The HTTP sink's options, request building and Retry-After parsing, without a network."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from _sink_receivers import delivered

from govbus.consumers.sinks._http import HttpSink
from govbus.consumers.sinks._retry_after import parse_retry_after
from govbus.errors import ConfigError

URL = "http://127.0.0.1:9/ingest"


def test_token_and_hmac_secret_never_show() -> None:
    sink = HttpSink(url=URL, token="tok-SECRET", hmac_secret="mac-SECRET", headers="x-api-key=hdr-SECRET")
    for text in (repr(sink), str(sink.options), repr(sink.options)):
        assert "-SECRET" not in text


def test_secret_option_errors_do_not_echo_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        HttpSink(url=URL, hmac_secret=["not", "a", "string-SECRET"])
    assert "string-SECRET" not in str(info.value)
    assert info.value.setting == "GOVBUS_SINK__OPTIONS__HMAC_SECRET"


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({}, "GOVBUS_SINK__OPTIONS__URL"),
        ({"url": "ftp://x/y"}, "GOVBUS_SINK__OPTIONS__URL"),
        ({"url": "https://user:pw@x/"}, "GOVBUS_SINK__OPTIONS__URL"),
        ({"url": URL, "format": "xml"}, "GOVBUS_SINK__OPTIONS__FORMAT"),
        ({"url": URL, "max_body_bytes": "10"}, "GOVBUS_SINK__OPTIONS__MAX_BODY_BYTES"),
        ({"url": URL, "token": "a", "token_file": "/x"}, "GOVBUS_SINK__OPTIONS__TOKEN_FILE"),
        ({"url": URL, "token_file": "/nonexistent/token"}, "GOVBUS_SINK__OPTIONS__TOKEN_FILE"),
        ({"url": "https://x/", "tls_ca_file": "/nonexistent/ca.pem"}, "GOVBUS_SINK__OPTIONS__TLS_CA_FILE"),
    ],
)
def test_bad_options_name_their_variable(options: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        HttpSink(**options)
    assert info.value.setting == setting


def test_token_file_sets_the_authorization_header(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    token.chmod(0o600)
    sink = HttpSink(url=URL, token_file=str(token))
    _, headers = sink._request([0], [b"{}"])
    assert headers["Authorization"] == "Bearer from-file"
    hec = HttpSink(url=URL, token="t", format="splunk-hec")
    assert hec._request([0], [b"{}"])[1]["Authorization"] == "Splunk t"


def test_batches_are_split_to_stay_under_max_body_bytes() -> None:
    sink = HttpSink(url=URL, max_body_bytes="4096")
    pieces = [sink._encode(r) for r in delivered(20)]
    chunks = sink._chunks(pieces)
    assert [i for c in chunks for i in c] == list(range(20))
    assert len(chunks) > 1
    for chunk in chunks:
        body, _ = sink._request(chunk, pieces)
        assert len(body) <= 4096
        assert [e["id"] for e in json.loads(body)] == [pieces_id(pieces[i]) for i in chunk]


def pieces_id(piece: bytes) -> str:
    value: str = json.loads(piece)["id"]
    return value


def test_hmac_signature_covers_timestamp_and_body_as_sent() -> None:
    sink = HttpSink(url=URL, hmac_secret="k3y", gzip="true", clock=lambda: 1_700_000_000.9)
    pieces = [sink._encode(r) for r in delivered(3)]
    body, headers = sink._request([0, 1, 2], pieces)
    assert headers["Content-Encoding"] == "gzip"
    t, v1 = (part.split("=", 1)[1] for part in headers["X-Govbus-Signature"].split(","))
    assert t == "1700000000"
    assert v1 == hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert len(json.loads(gzip.decompress(body))) == 3


def test_splunk_hec_event_shape() -> None:
    sink = HttpSink(url=URL, format="splunk-hec", hec_index="gov", hec_sourcetype="govbus:ce")
    record = delivered(1)[0]
    hec = json.loads(sink._encode(record))
    assert hec["time"] == pytest.approx(record.event.occurred_at.timestamp())
    assert hec["index"] == "gov"
    assert hec["sourcetype"] == "govbus:ce"
    assert hec["source"] == record.attributes.source
    assert hec["host"] == "test-host"
    assert hec["event"]["id"] == record.event.event_id
    assert hec["event"]["specversion"] == "1.0"
    assert hec["fields"] == {
        "govbus_kind": record.event.kind.value,
        "govbus_severity": record.event.severity,
        "govbus_decision": record.event.decision,
        "govbus_agent_id": record.event.agent_id,
    }
    assert all(isinstance(v, str) for v in hec["fields"].values())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("9999", 300.0),
        ("soon", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, 300.0) == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(date, 300.0, now=now) == pytest.approx(42.0)
    assert parse_retry_after(email.utils.formatdate(now - 42, usegmt=True), 300.0, now=now) == 0.0
