"""The console's sink-lag questions, asked from a child process.

``sink_lag`` lists, describes and reads the committed offsets of every sink group: requests to
the group coordinator, which librdkafka (2.16 and earlier, confluentinc/librdkafka#4605) can abort
the *whole process* on when the coordinator's connection drops mid-request (a broker restart). The
gate and the watchdog ask theirs from a child for that reason (``govbus/gate/_groups.py``); the
console asks through the same child protocol, so an abort costs one refresh (its page says the
broker could not be read, then the next refresh starts a new child), not the console.
"""

from __future__ import annotations

from typing import Any

from govbus.consumers import GroupLag, PartitionLag, sink_lag
from govbus.gate._groups import GroupProbe, read_conf, serve_requests

__all__ = ["LagProbe"]

# sink_lag asks several questions per group (describe, offsets, metadata, end offsets), each
# bounded by the timeout; the answer may take a few of them.
_REQUESTS_PER_ANSWER = 4


class LagProbe(GroupProbe):
    """:func:`govbus.consumers.sink_lag` of every sink group, answered by a child process."""

    def __init__(self, kafka_conf: dict[str, Any]) -> None:
        super().__init__(kafka_conf, server=__name__)

    def lag(self, timeout: float) -> list[GroupLag]:
        answer = self._ask({"op": "lag", "timeout": timeout}, timeout * _REQUESTS_PER_ANSWER)
        return [_from_json(g) for g in answer["groups"]]


def _to_json(g: GroupLag) -> dict[str, Any]:
    return {
        "group": g.group,
        "state": g.state,
        "members": g.members,
        "declared_class": g.declared_class,
        "partitions": [[p.topic, p.partition, p.committed, p.end, p.lag] for p in g.partitions],
    }


def _from_json(raw: dict[str, Any]) -> GroupLag:
    return GroupLag(
        str(raw["group"]),
        str(raw["state"]),
        int(raw["members"]),
        tuple(
            PartitionLag(str(t), int(p), None if c is None else int(c), int(e), int(lag))
            for t, p, c, e, lag in raw["partitions"]
        ),
        raw["declared_class"],
    )


def _serve() -> None:  # pragma: no cover - runs in the child process; covered by the console's tests
    conf = read_conf()
    serve_requests(lambda request: {"groups": [_to_json(g) for g in sink_lag(conf, timeout=float(request["timeout"]))]})
