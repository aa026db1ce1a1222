"""Topic administration: create the event topic (and its dead-letter topics) with the right settings."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from govbus._librdkafka import new_admin
from govbus._replication import plan_replication
from govbus.errors import TopicError

log = logging.getLogger(__name__)


# librdkafka's ways of saying that no broker answered (as opposed to a broker refusing).
_UNANSWERED = frozenset({KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})


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
    admin = new_admin(admin_conf)
    unanswered = TopicError(
        f"cannot create topic {topic!r}: no broker at {conf.get('bootstrap.servers', '?')} answered within "
        f"{timeout:g} s (is GOVBUS_KAFKA__BOOTSTRAP_SERVERS right, and the broker up?)"
    )
    # An existing topic is found by metadata, which any live broker answers: CreateTopics needs the
    # controller (via the broker metadata names), which a failover can leave unreachable for long.
    if not _exists(admin, topic, timeout):
        new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
        future = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[topic]
        try:
            future.result(timeout=timeout)
            log.info("created topic %s with %d partitions", topic, partitions)
        except TimeoutError:
            raise unanswered from None
        except KafkaException as exc:
            err = exc.args[0]
            code = err.code() if isinstance(err, KafkaError) else None
            if code in _UNANSWERED:
                raise unanswered from None
            if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                from govbus._principal import missing_acl

                raise TopicError(
                    f"cannot create topic {topic!r}: {missing_acl(err, 'CREATE', f'TOPIC {topic}', conf)}"
                ) from None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(f"cannot create topic {topic!r}: {err}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            md = admin.list_topics(topic=topic, timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException:
            raise unanswered from None
        meta = md.topics.get(topic)
        if meta is not None and meta.error is not None and meta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            # Created (CREATE) but not visible: DESCRIBE, implied by WRITE or READ, is missing.
            from govbus._principal import missing_acl

            raise TopicError(
                f"cannot use topic {topic!r}: {missing_acl(meta.error, 'DESCRIBE', f'TOPIC {topic}', conf)}"
            )
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


def _exists(admin: Any, topic: str, timeout: float) -> bool:
    """Whether the metadata lists ``topic`` (any live broker answers that; no controller needed)."""
    try:
        meta = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
    except KafkaException:
        return False  # the create path says who did not answer
    return meta is not None and meta.error is None and bool(meta.partitions)


def live_brokers(conf: dict[str, Any], timeout: float) -> int:
    """How many brokers the cluster's metadata lists (TopicError if none answered)."""
    admin = new_admin({**conf, "logger": log})
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        raise TopicError(
            f"no broker at {conf.get('bootstrap.servers', '?')} answered within {timeout:g} s "
            "(is GOVBUS_KAFKA__BOOTSTRAP_SERVERS right, and the broker up?)"
        ) from None


def dlq_topic(topic: str, sink: str) -> str:
    """The default dead-letter topic of ``sink`` for ``topic``."""
    return f"{topic}.dlq.{sink}"


def _registered_sinks() -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="govbus.sinks")})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="create the event topic and the sinks' dead-letter topics")
    tsub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = tsub.add_parser(
        "create", help="create GOVBUS_TOPIC and <topic>.dlq.<sink>, <topic>.replay.<sink> for each sink (idempotent)"
    )
    create.add_argument("--partitions", type=int, default=6, help="partitions of the event topic (default 6)")
    create.add_argument(
        "--replication-factor", type=int, default=-1, help="default: 3, or the live brokers if fewer (with a warning)"
    )
    create.add_argument("--min-insync-replicas", type=int, help="default: 2 with replication factor 3, else 1")
    create.add_argument(
        "--dlq-for",
        action="append",
        metavar="SINK",
        help="sink to create a dead-letter topic for (repeatable); "
        "default: every sink registered under the govbus.sinks entry point group",
    )
    create.add_argument("--timeout", type=float, default=60.0)
    create.set_defaults(func=_create)


def _create(args: argparse.Namespace) -> int:
    from govbus._settings import load_settings

    settings = load_settings()
    conf = settings.kafka.librdkafka()
    plan = plan_replication(live_brokers(conf, args.timeout), args.replication_factor, args.min_insync_replicas)
    for warning in plan.warnings:
        print(f"govbus: warning: {warning}", file=sys.stderr)
    n = ensure_topic(
        conf,
        settings.topic,
        partitions=args.partitions,
        replication_factor=plan.replication_factor,
        config=plan.config,
        timeout=args.timeout,
    )
    print(f"{settings.topic}: {n} partitions")
    for sink in args.dlq_for or _registered_sinks():
        name = dlq_topic(settings.topic, sink)
        ensure_topic(
            conf,
            name,
            partitions=1,
            replication_factor=plan.replication_factor,
            config=plan.config,
            timeout=args.timeout,
        )
        print(f"{name}: dead letters of sink {sink}")
        # The sink consumes its replay topic: it must exist where sinks may not create topics.
        replay = settings.sink.replay_topic(settings.topic, sink)
        ensure_topic(conf, replay, partitions=1, replication_factor=args.replication_factor, timeout=args.timeout)
        print(f"{replay}: replayed dead letters of sink {sink}")
    return 0
