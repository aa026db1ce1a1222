"""The syslog sink: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), optional TLS.

Message layout (docs/sinks-reference.md has an example)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [govbus@32473 event_id="…" kind="…" …] MSG

- PRI: ``facility * 8 + severity``, the severity mapped from the event's (see ``_severity``).
- TIMESTAMP: when the event occurred, UTC, microseconds. HOSTNAME: ``hostname`` if set, else the
  producer's host, else this host. MSGID: the event kind (``policy_violation``…).
- Structured data: one element (``sd_id``, by default under IANA's example enterprise number
  32473 — set your own) holding the event's key fields; values longer than ``max_value_chars``
  are cut. MSG: the reason (``message=text``) or the CloudEvents JSON (``message=cloudevent``).
- Every frame is ``<length> <message>``; over TLS this is RFC 5425's framing as well.

Acknowledgement: syslog over TCP has no application-level acknowledgement, so a batch counts as
delivered once the kernel accepted every byte (``sendall`` returned). A receiver that dies with
data in its socket buffer loses it; when the connection breaks, the batch is sent again on a new
one (at least once: the receiver may see duplicates). RELP would close that gap.
"""

from __future__ import annotations

import errno
import functools
import logging
import select
import socket
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from govbus._cloudevents import format_time
from govbus.consumers._errors import SinkError
from govbus.consumers._spi import OK, Batch, DeliveredRecord, RetryLater, SinkBase, SinkContext, WriteResult
from govbus.consumers.sinks import _jsonl
from govbus.consumers.sinks._options import ENV_PREFIX, SinkOptions, resolve_options
from govbus.consumers.sinks._severity import severity
from govbus.consumers.sinks._tls import TlsVersion, client_context

__all__ = ["FACILITIES", "SyslogSink", "SyslogSinkOptions", "format_message"]

_log = logging.getLogger("govbus.consumers.sinks.syslog")
_BOM = b"\xef\xbb\xbf"

FACILITIES = {
    name: code
    for code, names in enumerate(
        (
            ("kern",),
            ("user",),
            ("mail",),
            ("daemon",),
            ("auth",),
            ("syslog",),
            ("lpr",),
            ("news",),
            ("uucp",),
            ("cron",),
            ("authpriv",),
            ("ftp",),
            ("ntp",),
            ("security", "audit"),
            ("console",),
            ("solaris-cron",),
            *((f"local{i}",) for i in range(8)),
        )
    )
    for name in names
}
# PRINTUSASCII (%d33-126) minus what SD-NAME forbids ('=', ']', '"').
_SD_NAME_BAD = frozenset('=]" ')


class SyslogSinkOptions(SinkOptions):
    """Options of the ``syslog`` sink (``GOVBUS_SINK__OPTIONS__<NAME>``)."""

    host: str = "127.0.0.1"
    # 6514 is syslog over TLS (RFC 5425); plain TCP has no assigned port, 514 is customary.
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    tls_min_version: TlsVersion = "1.2"
    # SNI and certificate name, when it differs from host (e.g. connecting by IP address).
    tls_server_name: str | None = None
    facility: int = Field(default=16, ge=0, le=23)  # local0
    app_name: str = Field(default="govbus", min_length=1, max_length=48)
    hostname: str | None = Field(default=None, min_length=1, max_length=255)
    sd_id: str = Field(default="govbus@32473", min_length=1, max_length=32)
    message: Literal["text", "cloudevent"] = "text"
    max_value_chars: int = Field(default=1024, ge=16, le=65_536)
    # rsyslog's default maxMessageSize is 8k; receivers cut longer messages.
    max_message_bytes: int = Field(default=8192, ge=4096, le=1 << 24)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    send_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("facility", mode="before")
    @classmethod
    def _facility(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().isdigit():
            name = value.strip().lower()
            if name not in FACILITIES:
                raise ValueError(f"unknown facility {value!r}; use 0-23 or one of {', '.join(FACILITIES)}")
            return FACILITIES[name]
        return value

    @field_validator("app_name", "hostname")
    @classmethod
    def _printusascii(cls, value: str | None) -> str | None:
        if value is not None and not all(33 <= ord(c) <= 126 for c in value):
            raise ValueError("must be printable US-ASCII without spaces")
        return value

    @field_validator("sd_id")
    @classmethod
    def _sd_id(cls, value: str) -> str:
        if not all(33 <= ord(c) <= 126 and c not in _SD_NAME_BAD for c in value):
            raise ValueError('must be printable US-ASCII without space, =, ] or "')
        if "@" not in value:
            raise ValueError("needs the name@<private enterprise number> form (names without @ are IANA's)")
        return value

    @property
    def effective_port(self) -> int:
        return self.port or (6514 if self.tls else 514)


class _Connection:
    """A TCP (or TLS) stream to the receiver, reopened when it broke."""

    def __init__(self, options: SyslogSinkOptions) -> None:
        self._o = options
        self._sock: socket.socket | None = None
        self._context: ssl.SSLContext | None = None
        if options.tls:
            self._context = client_context(
                env_prefix=ENV_PREFIX + "TLS_",
                ca_file=options.tls_ca_file,
                verify=options.tls_verify,
                cert_file=options.tls_client_cert,
                key_file=options.tls_client_key,
                min_version=options.tls_min_version,
            )

    def send(self, data: bytes) -> None:
        sock = self._sock
        if sock is not None and self._peer_closed(sock):
            self.close()
            sock = None
        if sock is None:
            sock = self._connect()
        try:
            sock.sendall(data)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        o = self._o
        sock = socket.create_connection((o.host, o.effective_port), timeout=o.connect_timeout_s)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=o.tls_server_name or o.host)
            sock.settimeout(o.send_timeout_s)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        _log.info("syslog sink connected to %s:%d%s", o.host, o.effective_port, " (TLS)" if o.tls else "")
        return sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        """True when the receiver closed the connection (it never sends us anything else).

        Without this check the first batch after a receiver restart would be "sent" into a
        half-closed socket and acknowledged: TCP reports the reset only on a later write.
        """
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        sock.setblocking(False)
        try:
            return sock.recv(4096) == b""
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False  # TLS housekeeping (session tickets), not data
        except OSError as exc:
            return exc.errno != errno.EAGAIN
        finally:
            sock.settimeout(self._o.send_timeout_s)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class SyslogSink(SinkBase):
    """Sends events to a syslog receiver; see the module docstring and docs/sinks-reference.md."""

    def __init__(self, options: SyslogSinkOptions | None = None, /, **raw: Any) -> None:
        self.options = resolve_options(SyslogSinkOptions, options, raw)
        self._conn: _Connection | None = None
        self._local_host = _printable(socket.gethostname(), 255)
        self._format = _Formatter(self.options, self._local_host)

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self._conn = _Connection(self.options)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, batch: Batch) -> WriteResult | None:
        conn = self._conn
        if conn is None:
            raise SinkError("syslog sink: write() before open()")
        frames = []
        fmt = self._format
        for record in batch:
            msg = fmt(record)
            frames.append(b"%d %s" % (len(msg), msg))
        try:
            conn.send(b"".join(frames))
        except (OSError, ssl.SSLError) as exc:
            o = self.options
            return RetryLater(reason=f"syslog receiver {o.host}:{o.effective_port}: {exc!r}")
        return OK


def format_message(record: DeliveredRecord, options: SyslogSinkOptions, *, local_host: str = "-") -> bytes:
    """One RFC 5424 message (without the octet-count frame)."""
    return _Formatter(options, local_host)(record)


class _Formatter:
    """:func:`format_message` for one sink: the options read once, not once per record."""

    __slots__ = ("_app", "_cap", "_cloudevent", "_facility8", "_hostname", "_limit", "_local_host", "_sd_id")

    def __init__(self, options: SyslogSinkOptions, local_host: str) -> None:
        self._facility8 = options.facility * 8
        self._hostname = options.hostname
        self._app = options.app_name
        self._sd_id = options.sd_id
        self._cap = options.max_value_chars
        self._limit = options.max_message_bytes
        self._cloudevent = options.message == "cloudevent"
        self._local_host = local_host

    def __call__(self, record: DeliveredRecord) -> bytes:
        event = record.event
        pri = self._facility8 + severity(event.severity).syslog
        host = self._hostname or (_printable(event.producer.host, 255) if event.producer else "") or self._local_host
        timestamp = format_time(event.occurred_at)
        msgid = _printable(event.kind.value, 32) or "-"
        header = f"<{pri}>1 {timestamp} {host} {self._app} - {msgid} ".encode("ascii")
        params = _params(record)
        limit = self._limit
        sd = _structured_data(self._sd_id, params, self._cap)
        # Keep the whole structured data if at all possible: it is what SIEMs parse.
        for cap in (256, 64, 16):
            if len(header) + len(sd) <= limit - 64:
                break
            sd = _structured_data(self._sd_id, params, min(cap, self._cap))
        if self._cloudevent:
            raw = _jsonl.encode_line(record)[:-1]
        else:
            raw = (event.reason or f"{event.kind.value} {event.action} {event.decision}".strip()).encode("utf-8")
        body = raw if raw.isascii() else _BOM + raw
        room = limit - len(header) - len(sd) - 1
        if len(body) > room:
            # Cut on a character boundary: a split UTF-8 sequence would make the whole MSG invalid.
            body = body[: max(room, 0)].decode("utf-8", "ignore").encode("utf-8")
        return header + sd + (b" " + body if body else b"")


def _params(record: DeliveredRecord) -> list[tuple[str, str]]:
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


def _structured_data(sd_id: str, params: list[tuple[str, str]], cap: int) -> bytes:
    parts = [sd_id]
    for name, value in params:
        if len(value) > cap:
            value = value[:cap]
        parts.append(f'{name}="{_escape(value)}"')
    return ("[" + " ".join(parts) + "]").encode("utf-8")


def _escape(value: str) -> str:
    # RFC 5424 §6.3.3: '"', '\' and ']' are escaped with a backslash. Control characters are
    # not forbidden but break line-oriented receivers, so they become spaces.
    if value.isprintable() and '"' not in value and "\\" not in value and "]" not in value:
        return value  # the common case: nothing to escape
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    if not out.isprintable():
        out = "".join(ch if ch.isprintable() else " " for ch in out)
    return out


@functools.lru_cache(maxsize=4096)  # hosts and kinds: a few distinct values, one per record
def _printable(text: str, limit: int) -> str:
    return "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
