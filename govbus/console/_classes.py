"""Sink classes (audit, siem, observability, debug) for sinks that do not declare one.

The one place this mapping lives: when sinks declare their class themselves, replace
:func:`sink_class` and nothing else.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CLASSES", "sink_class"]

DEFAULT_CLASSES: dict[str, str] = {
    "audit": "audit",
    "http": "siem",
    "syslog": "siem",
    "otlp": "observability",
    "stdout": "debug",
    "file": "debug",
    "null": "debug",
}


def sink_class(sink: str, declared: str | None = None) -> str:
    """The class of sink instance ``sink``: its declared one, else by name (``audit-eu`` → audit)."""
    if declared:
        return declared
    if sink in DEFAULT_CLASSES:
        return DEFAULT_CLASSES[sink]
    head = sink.split("-", 1)[0].split(".", 1)[0].split("_", 1)[0]
    return DEFAULT_CLASSES.get(head, "unknown")
