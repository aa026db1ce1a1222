"""The http sink's receiver in the compose stack: accepts every POST and prints what arrived.

Stands in for a SIEM or webhook endpoint. Standard library only, so it runs on the stock
``python:3.11-slim`` image: ``python http_echo.py`` (``HTTP_ECHO_PORT``, default 8080).
``GET /healthz`` answers 200 for the container's healthcheck.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Long bodies are cut in the log; the reply still counts every event.
_MAX_PRINT = 4096


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._reply(200 if self.path == "/healthz" else 404, {"ok": self.path == "/healthz"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        text = body.decode("utf-8", "replace")
        events = _count(text, self.headers.get("Content-Type") or "")
        print(f"POST {self.path} {self.headers.get('Content-Type')} events={events}", flush=True)
        print(text[:_MAX_PRINT] + (" …" if len(text) > _MAX_PRINT else ""), flush=True)
        self._reply(200, {"accepted": events})

    def _reply(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # The POST lines above say more; healthcheck GETs every few seconds would drown them.
        return


def _count(text: str, content_type: str) -> int:
    """Events in a body: a JSON array (CloudEvents batch), JSON lines (ndjson, HEC) or one object."""
    if content_type.startswith("application/cloudevents-batch+json"):
        try:
            return len(json.loads(text))
        except ValueError:
            return 0
    return sum(1 for line in text.splitlines() if line.strip()) or (1 if text.strip() else 0)


def _stop(signum: int, frame: object) -> None:
    # As PID 1 the process gets no default SIGTERM handling; `docker stop` would wait 10 s.
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    port = int(os.environ.get("HTTP_ECHO_PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)  # noqa: S104 - a container's service port
    print(f"http-echo listening on :{port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
