"""The HTTP / SIEM sink: batched POSTs of CloudEvents JSON, or Splunk HTTP Event Collector events.

One ``write`` sends the batch in as few requests as ``max_body_bytes`` allows, on one kept-alive
connection (stdlib ``http.client``: no client library to configure or pin). Outcomes:

- 2xx: acknowledged.
- 408, 429, 5xx (and 401/403 while ``retry_auth_failures``): ``RetryLater`` for what was not yet
  accepted, after the server's ``Retry-After`` when it sent one; later requests of the batch are
  not sent to a server that just asked us to slow down.
- 413: the request is split in halves and resent; a single event still too large is rejected.
- any other status: ``Rejected`` — the runtime dead-letters those events with a reason holding
  the status and the start of the response body.
- no response (refused, reset, timeout, TLS failure): ``RetryLater`` with the runtime's backoff.

Optional HMAC request signature for webhook receivers: header ``X-Govbus-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`` over the body bytes as sent.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import hmac
import http.client
import json
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from govbus.consumers._errors import SinkError
from govbus.consumers._spi import OK, Batch, DeliveredRecord, Rejected, RetryLater, SinkBase, WriteResult
from govbus.consumers.sinks import _jsonl
from govbus.consumers.sinks._options import (
    ENV_PREFIX,
    SinkOptions,
    env_name,
    parse_pairs,
    read_secret_file,
    resolve_options,
)
from govbus.consumers.sinks._retry_after import parse_retry_after
from govbus.consumers.sinks._tls import TlsVersion, client_context
from govbus.errors import ConfigError

__all__ = ["HttpSink", "HttpSinkOptions"]

_log = logging.getLogger("govbus.consumers.sinks.http")
_MAX_RESPONSE_READ = 64 * 1024
_CONTENT_TYPES = {
    "cloudevents": "application/cloudevents-batch+json; charset=utf-8",
    "ndjson": "application/x-ndjson; charset=utf-8",
    "splunk-hec": "application/json; charset=utf-8",
}
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_RETRYABLE = frozenset({408, 425, 429})
_AUTH = frozenset({401, 403})
Format = Literal["cloudevents", "ndjson", "splunk-hec"]


class HttpSinkOptions(SinkOptions):
    """Options of the ``http`` sink (``GOVBUS_SINK__OPTIONS__<NAME>``)."""

    url: str
    # cloudevents: a JSON array (CloudEvents JSON batch format); ndjson: one event per line;
    # splunk-hec: HEC event objects, for https://<splunk>:8088/services/collector/event.
    format: Format = "cloudevents"
    # Sent as "Authorization: <auth_scheme> <token>". Never logged.
    token: SecretStr | None = None
    token_file: Path | None = None
    # Default "Bearer", or "Splunk" with format=splunk-hec.
    auth_scheme: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9._-]*$")
    # More request headers, "name=value,name2=value2". Values are never logged.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    gzip: bool = False
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    tls_min_version: TlsVersion = "1.2"
    hmac_secret: SecretStr | None = None
    hmac_secret_file: Path | None = None
    hmac_header: str = Field(default="X-Govbus-Signature", pattern=r"^[A-Za-z0-9-]+$")
    hec_index: str | None = None
    hec_source: str | None = None
    hec_sourcetype: str = "govbus:cloudevent"
    hec_host: str | None = None
    # A Retry-After longer than this is shortened to it.
    max_retry_after_s: float = Field(default=300.0, ge=0)
    # 401/403 mean a bad credential, not a bad event: retry (and stay visibly stuck) rather than
    # dead-letter the whole stream. Set false to dead-letter them like any other 4xx.
    retry_auth_failures: bool = True
    # How much of a refusing response the dead-letter reason keeps.
    max_response_chars: int = Field(default=512, ge=0, le=16_384)

    _pairs = field_validator("headers", mode="before")(parse_pairs)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use token or headers")
        return value


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    reason: str
    headers: Message
    body: bytes


class _Client:
    """One kept-alive connection; reconnects when the server or the network dropped it."""

    def __init__(self, url: str, context: ssl.SSLContext | None, timeout: float) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._context = context
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> _Response:
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._conn or self._connect()
            try:
                conn.request("POST", self._target, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read(_MAX_RESPONSE_READ + 1)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                # A kept-alive connection the server closed while idle: resend once at once.
                if reused and attempt == 1:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if resp.will_close or len(data) > _MAX_RESPONSE_READ:
                self.close()
            return _Response(resp.status, resp.reason, resp.headers, data[:_MAX_RESPONSE_READ])
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class HttpSink(SinkBase):
    """POSTs batches of events; see the module docstring and docs/sinks-reference.md."""

    def __init__(
        self, options: HttpSinkOptions | None = None, /, *, clock: Callable[[], float] = time.time, **raw: Any
    ) -> None:
        o = resolve_options(HttpSinkOptions, options, raw)
        self.options = o
        self._clock = clock
        if o.token is not None and o.token_file is not None:
            raise ConfigError(env_name("token_file"), "set token or token_file, not both")
        if o.hmac_secret is not None and o.hmac_secret_file is not None:
            raise ConfigError(env_name("hmac_secret_file"), "set hmac_secret or hmac_secret_file, not both")
        token = o.token.get_secret_value() if o.token else None
        if o.token_file is not None:
            token = read_secret_file(o.token_file, "token_file")
        secret = o.hmac_secret.get_secret_value() if o.hmac_secret else None
        if o.hmac_secret_file is not None:
            secret = read_secret_file(o.hmac_secret_file, "hmac_secret_file")
        self._hmac_key = secret.encode("utf-8") if secret else None
        headers = {"User-Agent": "govbus-http-sink/1", "Content-Type": _CONTENT_TYPES[o.format]}
        headers.update({k: v.get_secret_value() for k, v in o.headers.items()})
        if token:
            scheme = o.auth_scheme or ("Splunk" if o.format == "splunk-hec" else "Bearer")
            headers["Authorization"] = f"{scheme} {token}"
        if o.gzip:
            headers["Content-Encoding"] = "gzip"
        self._headers = headers
        context = None
        if urlsplit(o.url).scheme == "https":
            context = client_context(
                env_prefix=ENV_PREFIX + "TLS_",
                ca_file=o.tls_ca_file,
                verify=o.tls_verify,
                cert_file=o.tls_client_cert,
                key_file=o.tls_client_key,
                min_version=o.tls_min_version,
            )
        self._client: _Client | None = _Client(o.url, context, o.timeout_s)
        self._encode = self._hec_event if o.format == "splunk-hec" else self._cloudevent
        # CloudEvents and ndjson send the rendered line; the HEC shape reads the event's fields.
        self.reads_events = o.format == "splunk-hec"

    def __repr__(self) -> str:
        # The options repr masks secrets; the assembled headers are never shown.
        return f"HttpSink(url={self.options.url!r}, format={self.options.format!r})"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- delivery --------------------------------------------------------------------------
    def write(self, batch: Batch) -> WriteResult | None:
        client = self._client
        if client is None:
            raise SinkError("http sink: write() after close()")
        pieces = [self._encode(r) for r in batch]
        pending = collections.deque(self._chunks(pieces))
        rejected: dict[int, str] = {}
        while pending:
            chunk = pending.popleft()
            try:
                resp = client.post(*self._request(chunk, pieces))
            except (OSError, http.client.HTTPException) as exc:
                return self._retry(batch, chunk, pending, rejected, None, f"no response from {self._where()}: {exc!r}")
            status = resp.status
            if 200 <= status < 300:
                continue
            if status == 413 and len(chunk) > 1:
                half = len(chunk) // 2
                pending.appendleft(chunk[half:])
                pending.appendleft(chunk[:half])
                continue
            if status in _RETRYABLE or status >= 500 or (status in _AUTH and self.options.retry_auth_failures):
                delay = parse_retry_after(resp.headers.get("Retry-After"), self.options.max_retry_after_s)
                return self._retry(batch, chunk, pending, rejected, delay, f"HTTP {status} {resp.reason}")
            if 300 <= status < 400:
                # Not an answer about the events: the URL is wrong. Retrying keeps them safe in Kafka.
                where = resp.headers.get("Location", "?")
                return self._retry(batch, chunk, pending, rejected, None, f"HTTP {status} redirect to {where}")
            reason = self._refusal(resp)
            _log.warning("http sink: %s refused %d event(s): HTTP %d", self._where(), len(chunk), status)
            for i in chunk:
                rejected[i] = reason
        return Rejected(rejected) if rejected else OK

    def _retry(
        self,
        batch: Batch,
        chunk: Sequence[int],
        pending: collections.deque[list[int]],
        rejected: dict[int, str],
        delay: float | None,
        reason: str,
    ) -> RetryLater:
        # Events already refused are retried too (not acknowledged): RetryLater cannot carry
        # rejections, and the next attempt refuses them again on their own.
        indices = set(chunk) | set(rejected)
        for c in pending:
            indices.update(c)
        _log.info("http sink: %s; retrying %d of %d event(s)", reason, len(indices), len(batch))
        whole = len(indices) == len(batch)
        return RetryLater(delay=delay, reason=reason, indices=None if whole else frozenset(indices))

    def _refusal(self, resp: _Response) -> str:
        text = resp.body.decode("utf-8", "replace")
        text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
        limit = self.options.max_response_chars
        if len(text) > limit:
            text = text[:limit] + "…"
        return f"HTTP {resp.status} {resp.reason}" + (f": {text}" if text else "")

    def _where(self) -> str:
        parts = urlsplit(self.options.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    # -- request building ------------------------------------------------------------------
    def _chunks(self, pieces: Sequence[bytes]) -> list[list[int]]:
        limit = self.options.max_body_bytes
        chunks: list[list[int]] = []
        current: list[int] = []
        size = 2
        for i, piece in enumerate(pieces):
            if current and size + len(piece) + 1 > limit:
                chunks.append(current)
                current, size = [], 2
            current.append(i)
            size += len(piece) + 1
        if current:
            chunks.append(current)
        return chunks

    def _request(self, chunk: Sequence[int], pieces: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
        parts = [pieces[i] for i in chunk]
        # cloudevents: the CloudEvents JSON batch format (an array); ndjson and HEC: one per line.
        body = b"[" + b",".join(parts) + b"]" if self.options.format == "cloudevents" else b"\n".join(parts) + b"\n"
        if self.options.gzip:
            body = gzip.compress(body, compresslevel=5, mtime=0)
        headers = self._headers
        if self._hmac_key is not None:
            t = str(int(self._clock()))
            mac = hmac.new(self._hmac_key, t.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
            headers = {**headers, self.options.hmac_header: f"t={t},v1={mac}"}
        return body, headers

    @staticmethod
    def _cloudevent(record: DeliveredRecord) -> bytes:
        # The same CloudEvents JSON as the stdout and file sinks write, without the newline.
        return _jsonl.encode_line(record)[:-1]

    def _hec_event(self, record: DeliveredRecord) -> bytes:
        o = self.options
        event = record.event
        hec: dict[str, Any] = {"time": round(event.occurred_at.timestamp(), 6)}
        host = o.hec_host or (event.producer.host if event.producer else None)
        if host:
            hec["host"] = host
        hec["source"] = o.hec_source or record.attributes.source
        hec["sourcetype"] = o.hec_sourcetype
        if o.hec_index:
            hec["index"] = o.hec_index
        hec["event"] = _jsonl.cloudevent(record)
        # Indexed fields: strings only (HEC refuses other types), for fast tstats searches.
        hec["fields"] = {
            "govbus_kind": event.kind.value,
            "govbus_severity": event.severity,
            "govbus_decision": event.decision,
            "govbus_agent_id": event.agent_id,
        }
        return _JSON.encode(hec).encode("utf-8")
