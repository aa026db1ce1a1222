"""Lag per sink: how far each sink's consumer group is behind the end of each partition.

Read with the AdminClient only (committed offsets and end offsets), so it works from anywhere,
needs no running sink, and never joins or disturbs a group.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from govbus._librdkafka import new_admin
from govbus._principal import missing_acl, principal_of
from govbus._sinkclass import class_from_client_id
from govbus.consumers._errors import SinkError

__all__ = ["SINK_GROUP_PREFIX", "GroupLag", "PartitionLag", "sink_lag"]

SINK_GROUP_PREFIX = "govbus.sink."
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
log = logging.getLogger("govbus.consumers.lag")
_REFUSED = frozenset({KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED})


@dataclasses.dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int
    lag: int


@dataclasses.dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    members: int
    partitions: tuple[PartitionLag, ...]
    # The class its live members declare in their client.id; None: none declared (or no member),
    # "conflict": they disagree.
    declared_class: str | None = None

    @property
    def sink(self) -> str:
        return self.group.removeprefix(SINK_GROUP_PREFIX)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)


def sink_lag(
    conf: dict[str, Any], *, groups: list[str] | None = None, prefix: str = SINK_GROUP_PREFIX, timeout: float = 10.0
) -> list[GroupLag]:
    """Lag of the named groups, or of every group whose id starts with ``prefix``."""
    admin_conf: dict[str, Any] = {**conf, "logger": log}
    admin = new_admin(admin_conf)
    group: str | None = None  # the group being read: what a refusal is about
    try:
        if groups is None:
            listing = admin.list_consumer_groups(request_timeout=timeout).result(timeout)
            groups = sorted(g.group_id for g in listing.valid if g.group_id.startswith(prefix))
        if not groups:
            return []
        described: dict[str, Any] = {}
        for group, future in admin.describe_consumer_groups(groups, request_timeout=timeout).items():
            described[group] = future.result(timeout)
        out: list[GroupLag] = []
        for group in groups:
            desc = described.get(group)
            committed_result = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
            )[group].result(timeout)
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in committed_result.topic_partitions or []
                if tp.error is None
            }
            topics = {t for t, _ in committed}
            for member in getattr(desc, "members", None) or []:
                for tp in member.assignment.topic_partitions:
                    topics.add(tp.topic)
            parts: list[TopicPartition] = []
            if topics:
                md = admin.list_topics(timeout=timeout)
                for topic in sorted(topics):
                    meta = md.topics.get(topic)
                    if meta is not None and meta.error is not None and meta.error.code() in _REFUSED:
                        raise SinkError(
                            f"cannot read the lag of {group}: {missing_acl(meta.error, 'DESCRIBE', f'TOPIC {topic}', conf)}"
                        )
                    if meta is not None and meta.error is None:
                        parts.extend(TopicPartition(topic, p) for p in sorted(meta.partitions))
            ends = _offsets(admin, parts, _LATEST, timeout)
            missing = [tp for tp in parts if committed.get((tp.topic, tp.partition), -1) < 0]
            starts = _offsets(admin, missing, _EARLIEST, timeout)
            rows = []
            for tp in parts:
                key = (tp.topic, tp.partition)
                end = ends.get(key, 0)
                c = committed.get(key, -1)
                base = c if c >= 0 else starts.get(key, 0)
                rows.append(PartitionLag(tp.topic, tp.partition, c if c >= 0 else None, end, max(0, end - base)))
            state = str(getattr(desc, "state", "unknown")).rsplit(".", 1)[-1].lower()
            members = getattr(desc, "members", None) or []
            classes = {class_from_client_id(m.client_id) for m in members} - {None}
            declared = None if not classes else (classes.pop() if len(classes) == 1 else "conflict")
            out.append(GroupLag(group, state, len(members), tuple(rows), declared))
        return out
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED and group:
            raise SinkError(
                f"cannot read the lag of {group}: {missing_acl(err, 'DESCRIBE', f'GROUP {group}', conf)}"
            ) from None
        if isinstance(err, KafkaError) and err.code() in _REFUSED:
            what = "DESCRIBE on the group(s) and their topics"
            raise SinkError(
                f"cannot read consumer group lag: {err.name()}: {principal_of(conf)} lacks {what}"
            ) from None
        raise SinkError(f"cannot read consumer group lag: {err}") from None


def _offsets(
    admin: AdminClient, parts: list[TopicPartition], spec: OffsetSpec, timeout: float
) -> dict[tuple[str, int], int]:
    if not parts:
        return {}
    futures = admin.list_offsets({tp: spec for tp in parts}, request_timeout=timeout)
    return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}
