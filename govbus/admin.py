"""Topic administration: create the event topic (and its dead-letter topics) with the right settings."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from govbus.errors import GovbusError

log = logging.getLogger(__name__)


class TopicError(GovbusError):
    """A topic could not be created or described."""


def ensure_topic(
    conf: dict[str, Any],
    topic: str,
    *,
    partitions: int = 6,
    replication_factor: int = -1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> int:
    """Creates ``topic`` unless it exists and waits until every partition has a leader.

    Returns the partition count. An existing topic is left as it is (its partition count may differ).
    ``replication_factor=-1`` takes the broker's default.
    """
    admin_conf: dict[str, Any] = {**conf, "logger": log}
    admin = AdminClient(admin_conf)
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
    future = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[topic]
    try:
        future.result(timeout=timeout)
        log.info("created topic %s with %d partitions", topic, partitions)
    except KafkaException as exc:
        err = exc.args[0]
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise TopicError(f"cannot create topic {topic!r}: {err}") from None
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(topic=topic, timeout=max(0.1, deadline - time.monotonic()))
        meta = md.topics.get(topic)
        if (
            meta is not None
            and meta.error is None
            and meta.partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return len(meta.partitions)
        if time.monotonic() > deadline:
            raise TopicError(f"topic {topic!r} has no leader for every partition after {timeout:.0f} s")
        time.sleep(0.05)
