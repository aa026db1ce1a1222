"""Sink groups as the cluster shows them: members, declared class, committed offsets and lag.

Shared by the gate (``required_classes``) and the watchdog (stalled partitions, vanished groups).
Read with the AdminClient only, so observing never joins or disturbs a group.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec

from govbus._dlqmark import DlqFailedMark, parse_mark
from govbus._sinkclass import class_from_client_id

__all__ = ["GroupView", "StallTracker", "end_offsets", "observe_groups"]

SINK_GROUP_PREFIX = "govbus.sink."
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupView:
    group: str
    state: str
    members: int
    # The class its members declare (client.id suffix); None when they declare none, "conflict"
    # when they disagree (a half-rolled-out override: counted for no class).
    sink_class: str | None
    committed: dict[int, int]  # partition -> committed offset (absent: never committed)
    lag: dict[int, int]  # partition -> records behind the end
    # partition -> the dead-letter-failed mark on its committed offset (govbus._dlqmark): held by a
    # record whose dead letter the broker refused
    dlq_failed: dict[int, DlqFailedMark] = dataclasses.field(default_factory=dict)

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


def end_offsets(
    admin: Any, topic: str, partitions: Iterable[int], timeout: float
) -> tuple[dict[int, int], dict[int, int]]:
    """(earliest, latest) offset per partition."""
    tps = [TopicPartition(topic, p) for p in partitions]
    out: list[dict[int, int]] = []
    for spec in (_EARLIEST, _LATEST):
        found: dict[int, int] = {}
        for tp, fut in admin.list_offsets({tp: spec for tp in tps}, request_timeout=timeout).items():
            found[tp.partition] = fut.result(timeout=timeout).offset
        out.append(found)
    return out[0], out[1]


def list_sink_groups(admin: Any, timeout: float, prefix: str = SINK_GROUP_PREFIX) -> list[str]:
    listing = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout)
    return sorted(g.group_id for g in listing.valid if g.group_id.startswith(prefix))


def observe_groups(
    admin: Any, topic: str, partitions: Iterable[int], groups: list[str], timeout: float
) -> dict[str, GroupView]:
    """Members, class, committed offsets and lag of ``groups`` on ``topic``."""
    if not groups:
        return {}
    parts = sorted(partitions)
    starts, ends = end_offsets(admin, topic, parts, timeout)
    described = admin.describe_consumer_groups(groups, request_timeout=timeout)
    views: dict[str, GroupView] = {}
    for group in groups:
        desc = described[group].result(timeout=timeout)
        classes = {class_from_client_id(m.client_id) for m in desc.members}
        sink_class = None if not classes else (classes.pop() if len(classes) == 1 else "conflict")
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])]
        offsets = admin.list_consumer_group_offsets(request, request_timeout=timeout)[group].result(timeout=timeout)
        committed: dict[int, int] = {}
        lag: dict[int, int] = {}
        marks: dict[int, DlqFailedMark] = {}
        for tp in offsets.topic_partitions:
            position = tp.offset if tp.offset >= 0 else starts.get(tp.partition, 0)
            if tp.offset >= 0:
                committed[tp.partition] = tp.offset
                mark = parse_mark(tp.metadata)
                if mark is not None:
                    marks[tp.partition] = mark
            lag[tp.partition] = max(0, ends.get(tp.partition, position) - position)
        views[group] = GroupView(group, desc.state.name, len(desc.members), sink_class, committed, lag, marks)
    return views


class StallTracker:
    """A partition is *stalled* when its group has live members, it lags, and the group's committed
    offset on it has not moved for ``stall_after_s``. Moving (or catching up) clears it."""

    def __init__(self, stall_after_s: float, clock: Any = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._since: dict[tuple[str, int], tuple[int | None, float]] = {}

    def update(self, view: GroupView) -> dict[int, float]:
        """Stalled partitions of ``view``'s group, with how long each has not moved."""
        now = self._clock()
        stalled: dict[int, float] = {}
        for partition, lag in view.lag.items():
            key = (view.group, partition)
            position = view.committed.get(partition)
            seen = self._since.get(key)
            if lag == 0 or view.members == 0 or seen is None or seen[0] != position:
                self._since[key] = (position, now)
                continue
            still = now - seen[1]
            if still >= self.stall_after_s:
                stalled[partition] = still
        return stalled

    def forget(self, group: str) -> None:
        for key in [k for k in self._since if k[0] == group]:
            del self._since[key]
