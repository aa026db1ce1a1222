"""A minimal OTLP/HTTP logs receiver for the demo: decodes real protobuf requests, keeps event ids."""

from __future__ import annotations

import gzip
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

_EVENT_ID = "cloudevents.event_id"


class OtlpLogsReceiver:
    """Listens on 127.0.0.1; ``event_ids`` holds the ``cloudevents.event_id`` of every log record."""

    def __init__(self) -> None:
        self.event_ids: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                receiver._take(request)
                reply = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/logs"

    def _take(self, request: ExportLogsServiceRequest) -> None:
        ids = [
            attr.value.string_value
            for resource in request.resource_logs
            for scope in resource.scope_logs
            for record in scope.log_records
            for attr in record.attributes
            if attr.key == _EVENT_ID
        ]
        with self._lock:
            self.requests += 1
            self.event_ids.extend(ids)

    def start(self) -> OtlpLogsReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
