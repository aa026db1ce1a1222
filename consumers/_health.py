"""The health endpoint: ``/healthz`` (alive), ``/readyz`` (assigned and not stuck), ``/metrics``,
and, when the runtime offers one, ``POST /control/pause|resume`` (the operator console's action).

A stdlib ``ThreadingHTTPServer`` in a daemon thread: probes and scrapes must answer while the
consume loop is busy or blocked in a rebalance, and they must never block it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["HealthServer", "HealthStatus"]

log = logging.getLogger("govbus.consumers.health")


@dataclasses.dataclass(frozen=True)
class HealthStatus:
    live: bool
    ready: bool
    detail: dict[str, Any]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body = self.server.metrics().encode()
                self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
            elif path in ("/healthz", "/readyz", "/status"):
                status = self.server.status()
                ok = status.live if path == "/healthz" else (status.ready if path == "/readyz" else True)
                payload = {"live": status.live, "ready": status.ready, **status.detail}
                self._send(200 if ok else 503, json.dumps(payload, default=str).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")
        except Exception:  # a probe must get an answer, and the server thread must survive
            log.exception("health endpoint failed on %s", path)
            self._send(500, b'{"error": "internal error"}', "application/json")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        action = path.removeprefix("/control/")
        control = self.server.control
        if control is None or action not in ("pause", "resume") or not path.startswith("/control/"):
            self._send(404, b'{"error": "not found"}', "application/json")
            return
        try:
            self._send(200, json.dumps(control(action)).encode(), "application/json")
        except Exception:
            log.exception("control %s failed", action)
            self._send(500, b'{"error": "internal error"}', "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit this every few seconds; access logs would drown the runtime's own.
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        status: Callable[[], HealthStatus],
        metrics: Callable[[], str],
        control: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.status = status
        self.metrics = metrics
        self.control = control
        super().__init__(address, _Handler)


class HealthServer:
    """Serves the endpoints on ``host:port`` (port 0: any free port; see :attr:`port`)."""

    def __init__(
        self,
        host: str,
        port: int,
        status: Callable[[], HealthStatus],
        metrics: Callable[[], str],
        control: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self._server = _Server((host, port), status, metrics, control)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="govbus-health", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
