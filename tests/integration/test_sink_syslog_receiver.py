"""The syslog sink against Debian's rsyslogd (imtcp, octet-counted framing) and a TLS listener.

rsyslogd runs in the foreground from a config in tmp_path and writes every message with a template
that keeps the RFC 5424 structured data; the test reads that file.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sink_receivers import Rsyslog, TlsEchoServer, delivered, rsyslog, self_signed
from opentelemetry.metrics import get_meter

from govbus.consumers._spi import OK, Batch, RetryLater, SinkContext
from govbus.consumers.sinks._severity import severity
from govbus.consumers.sinks._syslog import SyslogSink

pytestmark = pytest.mark.skipif(
    not (shutil.which("rsyslogd") or Path("/usr/sbin/rsyslogd").exists()),
    reason="needs rsyslogd: apt-get install rsyslog (make system-deps installs it)",
)

CTX = SinkContext("syslog", "govbus.sink.syslog", "govbus.events", get_meter("test"), logging.getLogger("test"))
LINE = re.compile(r"<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[.*?[^\\]\]) (.*)")
PARAM = re.compile(r'(\w+)="((?:[^"\\\]]|\\["\\\]])*)"')


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Rsyslog]:
    with rsyslog(tmp_path / "rsyslog") as s:
        yield s


def _open(port: int, **options: str) -> SyslogSink:
    sink = SyslogSink(host="127.0.0.1", port=str(port), **options)
    sink.open(CTX)
    return sink


def test_rsyslog_receives_every_message_with_its_structured_data(server: Rsyslog) -> None:
    recs = delivered(60)
    sink = _open(server.port, facility="local3")
    try:
        assert sink.write(Batch(recs[:25])) is OK
        assert sink.write(Batch(recs[25:])) is OK
    finally:
        sink.close()
    lines = server.wait_lines(60)
    assert len(lines) == 60
    for record, line in zip(recs, lines, strict=True):
        m = LINE.fullmatch(line)
        assert m is not None, line
        pri, ts, host, app, procid, msgid, sd, msg = m.groups()
        e = record.event
        assert int(pri) == 19 * 8 + severity(e.severity).syslog
        assert ts == record.attributes.time
        assert (host, app, procid, msgid) == ("test-host", "govbus", "-", e.kind.value)
        assert sd.startswith("[govbus@32473 ")
        params = dict(PARAM.findall(sd))
        assert params["event_id"] == e.event_id
        assert params["agent_id"] == e.agent_id
        assert params["kind"] == e.kind.value
        assert params["severity"] == e.severity
        assert params["decision"] == e.decision
        assert params["type"] == e.ce_type
        assert params.get("session_id") == e.session_id
        assert params.get("policy_name") == e.policy_name
        assert msg == e.reason


def test_reconnects_to_a_restarted_receiver_without_losing_a_batch(tmp_path: Path) -> None:
    with rsyslog(tmp_path / "a") as first:
        port = first.port
        sink = _open(port)
        assert sink.write(Batch(delivered(5))) is OK
        first.wait_lines(5)
    try:
        # The old connection is now half-closed by the receiver: the next batch must not vanish into it.
        with rsyslog(tmp_path / "b", port) as second:
            recs = delivered(7)
            assert sink.write(Batch(recs)) is OK
            lines = second.wait_lines(7)
        assert [dict(PARAM.findall(line))["event_id"] for line in lines] == [r.event.event_id for r in recs]
    finally:
        sink.close()


def test_receiver_down_means_retry_later(tmp_path: Path) -> None:
    with rsyslog(tmp_path / "c") as s:
        port = s.port
    sink = _open(port, connect_timeout_s="2")
    try:
        result = sink.write(Batch(delivered(1)))
    finally:
        sink.close()
    assert isinstance(result, RetryLater)
    assert f"127.0.0.1:{port}" in result.reason


def test_tls_with_octet_counting_frames(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    listener = TlsEchoServer(cert, key)
    recs = delivered(10)
    sink = _open(listener.port, tls="true", tls_ca_file=str(cert))
    try:
        assert sink.write(Batch(recs)) is OK
        expected = sum(len(_frame_body(r)) for r in recs)

        def got_all() -> bool:
            return len(listener.data) >= expected

        listener.wait_until(got_all, what="all frames")
    finally:
        sink.close()
        listener.close()
    messages = _unframe(bytes(listener.data))
    assert len(messages) == 10
    for record, msg in zip(recs, messages, strict=True):
        assert f'event_id="{record.event.event_id}"'.encode() in msg


def _frame_body(record: object) -> bytes:
    from govbus.consumers.sinks._syslog import SyslogSinkOptions, format_message

    msg = format_message(record, SyslogSinkOptions())  # type: ignore[arg-type]
    return b"%d %s" % (len(msg), msg)


def _unframe(data: bytes) -> list[bytes]:
    """RFC 6587 octet counting: MSG-LEN SP SYSLOG-MSG, repeated."""
    out = []
    while data:
        length, _, rest = data.partition(b" ")
        n = int(length)
        out.append(rest[:n])
        data = rest[n:]
    return out
