"""Sink classes (audit, siem, observability, debug) for sink groups whose members declare none.

The console shows the class a group's live members declare (``GroupLag.declared_class``, from
their client.id); this is the fallback, marked as the shipped default on the page.
"""

from __future__ import annotations

from govbus.consumers._classes import SHIPPED_CLASSES

__all__ = ["DEFAULT_CLASSES", "sink_class"]

# The shipped sinks' classes, from their source of truth. A running sink declares its class in
# its members' client.id: govbus._sinkclass.class_from_client_id(member.client_id) gives `declared`.
DEFAULT_CLASSES: dict[str, str] = dict(SHIPPED_CLASSES)


def sink_class(sink: str, declared: str | None = None) -> str:
    """The class of sink instance ``sink``: its declared one, else by name (``audit-eu`` → audit)."""
    if declared:
        return declared
    if sink in DEFAULT_CLASSES:
        return DEFAULT_CLASSES[sink]
    head = sink.split("-", 1)[0].split(".", 1)[0].split("_", 1)[0]
    return DEFAULT_CLASSES.get(head, "unknown")
