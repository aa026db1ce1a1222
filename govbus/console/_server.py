"""The console as a running server: collector + app + uvicorn on a socket bound before it starts,
so the URL (port 0: a free port) is known at once. Used by ``govbus console``, the demo and tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

from govbus._settings import GovbusSettings
from govbus.console._collector import Collector, settings_console
from govbus.console._settings import ConsoleSettings
from govbus.errors import ConfigError

__all__ = ["ConsoleServer"]

log = logging.getLogger("govbus.console")


class ConsoleServer:
    def __init__(self, settings: GovbusSettings, console: ConsoleSettings | None = None) -> None:
        import uvicorn

        from govbus.console._app import create_app

        self.console = console or settings_console(settings)
        self.collector = Collector(settings, self.console)
        self.app = create_app(self.collector, self.console)
        family = socket.AF_INET6 if ":" in self.console.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((self.console.host, self.console.port))
        except OSError as exc:
            self._sock.close()
            raise ConfigError(
                "GOVBUS_CONSOLE__PORT", f"cannot listen on {self.console.host}:{self.console.port}: {exc.strerror}"
            ) from None
        self.port: int = self._sock.getsockname()[1]
        # No access log: a ?token= login would put the token in it.
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.console.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def start(self) -> ConsoleServer:
        """Starts the collector and serves on a background thread."""
        self.collector.start()
        self._thread = threading.Thread(target=self._serve, name="govbus-console-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Starts the collector and serves on this thread until interrupted."""
        self.collector.start()
        try:
            self._serve()
        finally:
            self.close()

    def _serve(self) -> None:
        # uvicorn captures SIGINT/SIGTERM only when it runs on the main thread (serve_forever).
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(10)
        with contextlib.suppress(OSError):
            self._sock.close()
        self.collector.close()

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
