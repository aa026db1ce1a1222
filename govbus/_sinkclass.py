"""Sink class names and how a sink's class travels in its consumer's ``client.id``.

Core: the gate and the watchdog read classes from consumer groups without importing the sink
runtime; the runtime (``govbus.consumers._classes``) decides a sink's class and writes it.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

__all__ = ["SINK_CLASSES", "SinkClass", "class_from_client_id", "client_id_with_class"]

SinkClass = Literal["audit", "siem", "observability", "debug"]
SINK_CLASSES: tuple[str, ...] = get_args(SinkClass)
_SUFFIX = re.compile(r"\.class-([a-z]+)$")


def client_id_with_class(client_id: str, sink_class: str) -> str:
    """``client_id`` carrying ``sink_class`` (replacing any class it carried)."""
    return f"{_SUFFIX.sub('', client_id)}.class-{sink_class}"


def class_from_client_id(client_id: str | None) -> str | None:
    """The class a member's ``client.id`` declares, or None (an older sink, or a foreign client)."""
    if not client_id:
        return None
    found = _SUFFIX.search(client_id)
    return found.group(1) if found and found.group(1) in SINK_CLASSES else None
