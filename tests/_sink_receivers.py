"""Real receivers on 127.0.0.1 for the sink tests and benchmarks, and batches to feed the sinks.

- :class:`OtlpReceiver`: an OTLP/HTTP logs endpoint (``http.server``) that decodes each request
  with opentelemetry-proto's ``ExportLogsServiceRequest``; answers are scripted per request.
- :class:`HttpReceiver`: a plain HTTP endpoint recording requests, answers scripted per request.
- :class:`Rsyslog`: Debian's ``rsyslogd`` in the foreground with imtcp on a free port, writing
  every message (structured data included) to a file.
- :class:`TlsEchoServer`: a TLS listener with a throw-away self-signed certificate, collecting bytes.
- :func:`delivered`: ``DeliveredRecord`` batches built from events through ``govbus._record``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _sinks import events, records, sign, signing_pair

from govbus._contract import Decoder
from govbus._record import from_record
from govbus.consumers._spi import Batch, DeliveredRecord
from govbus.event import GovernanceEvent

_DECODER = Decoder()


# -- batches -------------------------------------------------------------------------------------


def delivered(
    n: int = 0,
    *,
    evs: Sequence[GovernanceEvent] | None = None,
    topic: str = "govbus.events",
    partitions: int = 3,
    signer: Any = None,
    first_offset: int = 0,
    traceparent: str | None = None,
    legacy_fingerprint: bool = False,
) -> list[DeliveredRecord]:
    """``n`` sample events (or ``evs``) as delivered records; signed when ``signer`` is given;
    ``legacy_fingerprint``: values as govbus 0.1.0 wrote them (byte-reversed fingerprint)."""
    evs = list(evs) if evs is not None else events(n)
    recs = records(evs, traceparent=traceparent)
    if legacy_fingerprint:
        for r in recs:
            assert r.value is not None
            r.value = r.value[:2] + r.value[2:10][::-1] + r.value[10:]
    if signer is not None:
        recs = sign(recs, signer, partitions)
    out = []
    for i, r in enumerate(recs):
        assert r.value is not None
        partition = r.partition if r.partition is not None else i % partitions
        decoded = from_record(r.value, r.headers, _DECODER)
        out.append(
            DeliveredRecord(
                event=decoded.event,
                attributes=decoded.attributes,
                topic=topic,
                partition=partition,
                offset=first_offset + i,
                timestamp_ms=1_764_000_000_000 + i,
                key=r.key,
                value=r.value,
                headers=tuple(r.headers),
                verdict="valid" if signer is not None else "unverified",
            )
        )
    return out


def signed_batch(n: int, kid: str = "k1") -> tuple[list[DeliveredRecord], Any]:
    """(``n`` signed delivered records, the keyring that verifies them)."""
    signer, keyring = signing_pair(kid)
    return delivered(n, signer=signer), keyring


def batch(recs: Sequence[DeliveredRecord], attempt: int = 1) -> Batch:
    return Batch(recs, attempt=attempt)


class _Waitable:
    def __init__(self) -> None:
        self._cond = threading.Condition()

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


# -- HTTP receivers ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes  # decompressed
    raw: bytes  # as received
    at: float


class _Server(_Waitable):
    """An HTTP/1.1 server on 127.0.0.1 answering POSTs from a script (then ``default``)."""

    def __init__(self, default: Answer, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.script: list[Answer] = []
        self.default = default
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: without this, Nagle holds the body back until
            # the client's delayed ACK (~40 ms per request), which is the receiver's cost, not the sink's.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                encoding = self.headers.get("Content-Encoding", "")
                body = (
                    gzip.decompress(raw)
                    if encoding == "gzip"
                    else zlib.decompress(raw)
                    if encoding == "deflate"
                    else raw
                )
                answer = owner._answer(Request(self.path, dict(self.headers.items()), body, raw, time.monotonic()))
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-receiver", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def _answer(self, request: Request) -> Answer:
        with self._cond:
            self.requests.append(request)
            answer = self.script.pop(0) if self.script else self.default
            self._cond.notify_all()
        return self._prepare(request, answer)

    def _prepare(self, request: Request, answer: Answer) -> Answer:
        return answer

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpReceiver(_Server):
    """``tls=(cert, key)`` serves HTTPS."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(Answer(200, {"Content-Type": "application/json"}, b'{"text":"Success","code":0}'), tls)

    def url(self, path: str = "/events") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


class OtlpReceiver(_Server):
    """Decodes every request body as ``ExportLogsServiceRequest`` (a decode failure is a 400)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        ok = ExportLogsServiceResponse().SerializeToString()
        super().__init__(Answer(200, {"Content-Type": "application/x-protobuf"}, ok))
        self.exports: list[Any] = []  # ExportLogsServiceRequest per accepted request

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/logs"

    def _prepare(self, request: Request, answer: Answer) -> Answer:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        decoded = ExportLogsServiceRequest()
        try:
            decoded.ParseFromString(request.body)
        except Exception:
            return Answer(400, {}, b"not an ExportLogsServiceRequest")
        if 200 <= answer.status < 300:
            with self._cond:
                self.exports.append(decoded)
                self._cond.notify_all()
        return answer

    def log_records(self) -> list[tuple[Any, Any]]:
        """(resource, log record) of every accepted log record, in arrival order."""
        out = []
        with self._cond:
            for req in self.exports:
                for rl in req.resource_logs:
                    for sl in rl.scope_logs:
                        out.extend((rl.resource, lr) for lr in sl.log_records)
        return out


def any_value(v: Any) -> Any:
    """A protobuf AnyValue as a Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


# -- rsyslog -------------------------------------------------------------------------------------

RSYSLOG_TEMPLATE = (
    "<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% %STRUCTURED-DATA% %msg%\\n"
)


class Rsyslog:
    """``rsyslogd -n -f <conf> -i <pid>`` with imtcp on a free 127.0.0.1 port, writing ``out``."""

    def __init__(self, workdir: Path, port: int = 0) -> None:
        exe = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
        if exe is None:
            raise FileNotFoundError("rsyslogd (Debian package rsyslog; `make system-deps` installs it)")
        self.dir = workdir
        (workdir / "spool").mkdir(parents=True, exist_ok=True)
        self.out = workdir / "messages.log"
        self.port_file = workdir / "port"
        self.port_file.unlink(missing_ok=True)
        self.conf = workdir / "rsyslog.conf"
        self.conf.write_text(
            f"""
global(workDirectory="{workdir / "spool"}" maxMessageSize="64k")
module(load="imtcp")
template(name="govbus" type="string" string="{RSYSLOG_TEMPLATE}")
ruleset(name="govbus") {{
  action(type="omfile" file="{self.out}" template="govbus" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" listenPortFileName="{self.port_file}" ruleset="govbus")
"""
        )
        self.proc = subprocess.Popen(
            [exe, "-n", "-f", str(self.conf), "-i", str(workdir / "rsyslogd.pid")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.port = self._await_port(port)

    def _await_port(self, port: int, timeout: float = 15.0) -> int:
        """The listening port: from listenPortFileName for port 0 (rsyslogd writes it only then),
        else once a connection succeeds. rsyslogd offers no other readiness signal, hence polling."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}: {out}")
            if port:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    return port
            else:
                text = self.port_file.read_text().strip() if self.port_file.exists() else ""
                if text.isdigit() and int(text) > 0:
                    return int(text)
            time.sleep(0.02)
        raise TimeoutError("rsyslogd did not start listening")

    def lines(self) -> list[str]:
        if not self.out.exists():
            return []
        return self.out.read_text(encoding="utf-8", errors="replace").splitlines()

    def wait_lines(self, n: int, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.lines()
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslog wrote {len(got)} of {n} lines within {timeout} s")
            time.sleep(0.02)  # another process writes the file; there is nothing to wait on

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


@contextlib.contextmanager
def rsyslog(workdir: Path, port: int = 0) -> Iterator[Rsyslog]:
    server = Rsyslog(workdir, port)
    try:
        yield server
    finally:
        server.stop()


# -- TLS -----------------------------------------------------------------------------------------


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) PEM files for ``host``, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "govbus-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class TlsEchoServer(_Waitable):
    """Accepts TLS connections on 127.0.0.1 and keeps every byte received."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._ctx = ctx
        self.port = self._sock.getsockname()[1]
        self.data = bytearray()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            with self._ctx.wrap_socket(conn, server_side=True) as tls:
                while chunk := tls.recv(65536):
                    with self._cond:
                        self.data.extend(chunk)
                        self._cond.notify_all()
        except (OSError, ssl.SSLError):
            return

    def close(self) -> None:
        self._stop = True
        self._sock.close()
