"""Sink classes: what a sink is for, so that policy can require "an audit sink" rather than a name.

The source of truth for the shipped sinks is :data:`SHIPPED_CLASSES` (keyed by entry-point name);
a third-party sink declares its own with a class attribute ``sink_class = "siem"``; a deployment
overrides either with ``GOVBUS_SINK__SINK_CLASS``. The running sink publishes its class in its
consumer's ``client.id`` (suffix ``.class-<class>``), where the gate and the watchdog read it from
the group's member list: what counts is the class the sink actually runs with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from govbus._sinkclass import SINK_CLASSES, SinkClass, class_from_client_id, client_id_with_class

if TYPE_CHECKING:
    from govbus.consumers._settings import VerdictPolicy

__all__ = [
    "NO_DROP_CLASSES",
    "SHIPPED_CLASSES",
    "SINK_CLASSES",
    "SinkClass",
    "class_from_client_id",
    "client_id_with_class",
    "no_drop_policy",
    "resolve_class",
]

# Sinks of these classes never trade information for convenience: verdict shortcuts that would
# skip a record become dead letters, and backpressure blocks (docs/sinks.md "Sink classes").
NO_DROP_CLASSES = frozenset({"audit", "siem"})
SHIPPED_CLASSES: dict[str, SinkClass] = {
    "audit": "audit",
    "http": "siem",
    "syslog": "siem",
    "otlp": "observability",
    "stdout": "debug",
    "file": "debug",
    "null": "debug",
}
# A sink that declares nothing may be anything: it is counted as the least demanding class.
UNDECLARED: SinkClass = "debug"


def resolve_class(name: str, sink: object, override: str | None = None) -> SinkClass:
    """The class sink ``name`` runs as: the override, else what the sink declares, else the shipped default."""
    for candidate in (override, getattr(sink, "sink_class", None), SHIPPED_CLASSES.get(name)):
        if candidate is None:
            continue
        if candidate not in SINK_CLASSES:
            raise ValueError(f"sink class must be one of {', '.join(SINK_CLASSES)}; got {candidate!r}")
        return candidate  # type: ignore[return-value]  # checked against SINK_CLASSES above
    return UNDECLARED


def no_drop_policy(policy: VerdictPolicy) -> VerdictPolicy:
    """``policy`` for an audit or SIEM sink: what would be skipped is dead-lettered instead, and
    what would be delivered unflagged despite a bad verdict is flagged (the verdict is kept)."""
    changes: dict[str, str] = {}
    for field in type(policy).model_fields:
        action = getattr(policy, field)
        if action == "skip":
            changes[field] = "dead-letter"
        elif action == "deliver":
            changes[field] = "flag"
    return policy.model_copy(update=changes) if changes else policy
