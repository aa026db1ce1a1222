"""A sink whose dead-letter producer goes fatal (no WRITE on its dead-letter topic) says why at once
and exits with code 2 without committing the poison record; once the ACL exists, a restart
dead-letters it (nothing lost)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _kafka import SecureKafka, create_topic
from _sinks import SinkProcess, wait_for
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

pytestmark = pytest.mark.system

_POISON = b"not an avro record"


def _read(config: dict[str, Any], topic: str, timeout: float = 1.0) -> list[bytes | None]:
    consumer = Consumer({**config, "group.id": "dlq-reader", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[bytes | None] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg.value())
        return out
    finally:
        consumer.close()


def _committed(secure: SecureKafka, group: str, topic: str) -> int:
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]

    def ask() -> tuple[int] | None:
        try:
            result = secure.admin.list_consumer_group_offsets(request, request_timeout=10)[group].result(10)
        except KafkaException as exc:  # a fresh broker loads the group's offsets partition for a moment
            if exc.args[0].code() in (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR):
                return None
            raise
        return (int(result.topic_partitions[0].offset),)  # a tuple: offset 0 is an answer too

    (found,) = wait_for(ask, 30, what=f"the committed offset of {group}")
    return int(found)


def test_fatal_dead_letter_producer_exits_2_with_the_cause_then_dead_letters_after_the_acl(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    topic = secure_kafka.new_topic(1, prefix="sinkacl")
    dlq, replay, group = f"{topic}.dlq.file", f"{topic}.replay.file", "govbus.sink.file"
    for name in (dlq, replay):  # created by the operator: the sink's principal may not create topics
        create_topic(secure_kafka.admin, name, 1)
    user, password = secure_kafka.add_scram_user()
    # The sink's role minus WRITE on its dead-letter topic.
    secure_kafka.allow(user, "TOPIC", topic, ["READ", "DESCRIBE"])
    secure_kafka.allow(user, "TOPIC", replay, ["READ", "DESCRIBE"])
    secure_kafka.allow(user, "GROUP", group, "READ")
    admin_producer = Producer({**secure_kafka.admin_config(), "acks": "all"})
    admin_producer.produce(topic, _POISON, key=b"agent-1", partition=0)
    assert admin_producer.flush(30) == 0

    env = {
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": secure_kafka.sasl_bootstrap,
        "GOVBUS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "GOVBUS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "GOVBUS_KAFKA__SASL_USERNAME": user,
        "GOVBUS_KAFKA__SASL_PASSWORD": password,
        "GOVBUS_KAFKA__SSL_CA_LOCATION": str(secure_kafka.ca),
        "GOVBUS_TOPIC": topic,
        "GOVBUS_SINK__DLQ__CREATE_TOPICS": "false",
        "GOVBUS_SINK__COMMIT_INTERVAL_MS": "200",
        "GOVBUS_SINK__BATCH__MAX_WAIT_MS": "5",
    }
    out = tmp_path / "out.jsonl"
    first = SinkProcess("file", env, f"path={out}", log_dir=tmp_path)
    try:
        code = first.proc.wait(60)
    finally:
        first.close()
    log = first.log()
    assert code == 2, log[-3000:]
    assert "CLUSTER_AUTHORIZATION_FAILED" in log, log[-3000:]
    assert f"WRITE on {dlq}" in log, log[-3000:]
    assert "Local: Fatal error; retrying" not in log
    # Which answer comes first is a race: the producer id (CLUSTER_AUTHORIZATION_FAILED, fatal) or
    # the dead-letter topic's metadata (TOPIC_AUTHORIZATION_FAILED: a failed write, retried until
    # the fatal error arrives). Either way no write failed for any other reason.
    unwritten = [line for line in log.splitlines() if "dead letter(s) not written" in line]
    assert all("TOPIC_AUTHORIZATION_FAILED" in line for line in unwritten), unwritten
    assert _committed(secure_kafka, group, topic) < 1  # the poison record was not committed
    assert _read(secure_kafka.admin_config(), dlq) == []

    secure_kafka.allow(user, "TOPIC", dlq, ["WRITE", "DESCRIBE"])
    second = SinkProcess("file", env, f"path={out}", log_dir=tmp_path)
    try:
        wait_for(lambda: _read(secure_kafka.admin_config(), dlq, 0.5) == [_POISON], 60, what="the poison dead-lettered")
        wait_for(lambda: _committed(secure_kafka, group, topic) == 1, 30, what="the poison record committed")
        assert second.terminate() == 0, second.log()[-3000:]
    finally:
        second.close()
