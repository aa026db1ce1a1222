"""Small helpers shared by tests: await a condition (bounded polling, never a fixed sleep) and an
address nothing listens on."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``condition`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def closed_port() -> str:
    """``127.0.0.1:<port>`` that nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
