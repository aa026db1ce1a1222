"""The console's two actions, each behind ``GOVBUS_CONSOLE__ACTIONS_ENABLED`` and a confirmation:
replay one dead letter to its sink's replay topic, and pause or resume a sink."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from govbus._cloudevents import format_time
from govbus._record import message_headers
from govbus.console._scrape import post_control
from govbus.consumers._dlq import H_REPLAYED_AT, DeadLetter
from govbus.consumers._errors import DeadLetterError

__all__ = ["control_sink", "read_one", "replay_one"]


def read_one(conf: dict[str, Any], topic: str, partition: int, offset: int, timeout: float) -> DeadLetter:
    """The record at ``topic[partition]@offset``, read by an assigned consumer (no group joined,
    nothing committed); :class:`DeadLetterError` if it cannot be read within ``timeout``."""
    consumer = Consumer(
        {
            **conf,
            "group.id": f"govbus.console.{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                continue
            if msg.offset() == offset:
                ts_type, ts = msg.timestamp()
                headers = message_headers(msg.headers())
                return DeadLetter(topic, partition, offset, ts if ts_type else None, msg.key(), msg.value(), headers)
            break  # compacted or deleted: the broker handed the next one
    finally:
        consumer.close()
    raise DeadLetterError(f"cannot read {topic}[{partition}]@{offset} (deleted by retention, or the broker is away)")


def replay_one(conf: dict[str, Any], dead_letter: DeadLetter, target_topic: str, timeout: float) -> None:
    """Re-produces one dead letter to ``target_topic`` as ``govbus dlq replay`` does (key, value and
    headers unchanged, plus ``govbus.replay.time``); raises :class:`DeadLetterError` if not acknowledged.

    Unlike ``govbus dlq replay`` it does not move the replay group's progress: the operator picked
    this one record, and a later bulk replay still sees it."""
    headers: list[tuple[str, str | bytes | None]] = [(k, v) for k, v in dead_letter.headers if k != H_REPLAYED_AT]
    headers.append((H_REPLAYED_AT, format_time(datetime.now(UTC)).encode()))
    errors: list[str] = []

    def report(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({**conf, "enable.idempotence": True, "acks": "all", "message.timeout.ms": int(timeout * 1000)})
    try:
        producer.produce(
            target_topic, value=dead_letter.value, key=dead_letter.key, headers=headers, on_delivery=report
        )
    except (KafkaException, BufferError) as exc:
        raise DeadLetterError(f"cannot replay to {target_topic!r}: {exc}") from None
    try:
        remaining = producer.flush(timeout + 1)
    except KafkaException as exc:  # a fatal producer error (e.g. no producer id: no WRITE) can surface here
        raise DeadLetterError(f"replay to {target_topic!r} failed: {exc}; nothing changed") from None
    if remaining or errors:
        raise DeadLetterError(
            f"replay to {target_topic!r} was not acknowledged ({'; '.join(errors) or 'timed out'}); nothing changed"
        )


def control_sink(health_url: str, action: str, timeout: float) -> dict[str, Any]:
    """Asks a sink's health server to pause or resume consuming (its ``/control/<action>``)."""
    if action not in ("pause", "resume"):
        raise ValueError(f"unknown action {action!r}")
    return post_control(health_url, action, timeout)
