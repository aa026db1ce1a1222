"""The heartbeat record: a producer's signed "still here, and this is where my stream stands".

A heartbeat is an ordinary governance event (no schema change, so every reader decodes it) told
apart by its kind and action: kind ``checkpoint_created`` (a checkpoint of the producer's stream),
action ``govbus.heartbeat``, policy ``govbus.heartbeat``. It is routed to the partition it speaks
for and signed in that partition's stream like any event, so it takes the next sequence number:
a verifier that sees it knows every earlier number of the stream in that partition, and reports
a gap at once if the tail before it was lost. See docs/signing.md §16.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from govbus.event import EventKind, GovernanceEvent

__all__ = ["HEARTBEAT_ACTION", "HEARTBEAT_KEY_PREFIX", "HEARTBEAT_KIND", "heartbeat_event", "is_heartbeat"]

HEARTBEAT_ACTION = "govbus.heartbeat"
HEARTBEAT_KEY_PREFIX = b"govbus.heartbeat."  # record keys: govbus.heartbeat.<instance>.<n>
HEARTBEAT_KIND = EventKind.CHECKPOINT_CREATED
FORMAT = 1


def is_heartbeat(event: GovernanceEvent) -> bool:
    return event.action == HEARTBEAT_ACTION and event.kind is HEARTBEAT_KIND


def heartbeat_event(
    agent_id: str,
    *,
    partition: int,
    stream: bytes | None,
    next_seq: int | None,
    interval_s: float,
    counters: Mapping[str, int],
    final: bool = False,
) -> GovernanceEvent:
    """The heartbeat for ``partition``; ``next_seq`` is the sequence number it will be signed with
    as far as the producer knows when building it (informative: the signed number is authoritative)."""
    attributes: dict[str, Any] = {
        "govbus.heartbeat": FORMAT,
        "partition": partition,
        "stream": stream.hex() if stream is not None else None,
        "last_seq": None if not next_seq else next_seq - 1,
        "interval_ms": round(interval_s * 1000),
        "final": final,
        "counters": dict(counters),
    }
    return GovernanceEvent(
        agent_id=agent_id,
        kind=HEARTBEAT_KIND,
        severity="info",
        action=HEARTBEAT_ACTION,
        decision="final" if final else "alive",
        reason="producer closing" if final else "producer alive",
        policy_name=HEARTBEAT_ACTION,
        resource=f"partition/{partition}",
        attributes=attributes,
    )
