"""The local Apache Kafka broker itself: what it reports, and that outages keep topics and records."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import _kafka
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from govbus.localkafka import KAFKA_VERSION, LocalBroker

pytestmark = pytest.mark.integration

_QUIET = logging.getLogger("tests.broker.quiet")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _producer(bootstrap: str, **extra: Any) -> Producer:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "logger": _QUIET,  # connection-refused noise while the broker is down is the point here
        **extra,
    }
    return Producer(config)


def _produce(producer: Producer, topic: str, values: list[bytes]) -> list[str]:
    """Queue ``values`` keyed by agent; returns a list that collects delivery errors."""
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for i, value in enumerate(values):
        producer.produce(topic, value, key=f"agent-{i % 5}".encode(), on_delivery=delivered)
    return errors


def _broker_answers(bootstrap: str) -> bool:
    try:
        _kafka.quiet_admin(bootstrap).list_topics(timeout=1.0)
    except KafkaException:
        return False
    return True


def _values(tag: str, n: int) -> list[bytes]:
    return [f"{tag}-{i}".encode() for i in range(n)]


def test_reports_version_bootstrap_and_log(local_broker: LocalBroker, kafka_bootstrap: str) -> None:
    info = local_broker.info
    assert info.version == KAFKA_VERSION
    assert info.bootstrap == kafka_bootstrap
    assert info.bootstrap.startswith("127.0.0.1:")
    assert info.data_dir == local_broker.data_dir
    assert info.log_path == local_broker.data_dir / "logs" / "server.log"
    assert f"Kafka version: {KAFKA_VERSION}" in info.log_path.read_text(errors="replace")
    assert local_broker.is_running()
    assert 0 < info.startup_seconds < 120


def test_topics_are_not_auto_created(local_broker: LocalBroker, kafka_bootstrap: str) -> None:
    name = _kafka.unique_topic_name("typo")
    # A producer's metadata request asks the broker to create unknown topics; the broker must refuse.
    answer = _producer(kafka_bootstrap).list_topics(name, timeout=10)
    assert answer.topics[name].error is not None
    assert answer.topics[name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert name not in _kafka.quiet_admin(kafka_bootstrap).list_topics(timeout=10).topics


def test_stop_and_start_keep_port_topic_and_records(
    local_broker: LocalBroker, new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=3)
    producer = _producer(kafka_bootstrap)
    before = _values("before", 60)
    errors = _produce(producer, topic, before)
    assert producer.flush(30) == 0
    assert not errors

    local_broker.stop()
    assert not local_broker.is_running()
    assert not _broker_answers(kafka_bootstrap)

    info = local_broker.start()
    assert info.bootstrap == kafka_bootstrap  # clients configured before the outage reconnect
    assert len(_kafka.quiet_admin(kafka_bootstrap).list_topics(topic, timeout=10).topics[topic].partitions) == 3
    records = _kafka.read_all(kafka_bootstrap, topic, len(before))
    assert sorted(value for _key, value in records if value is not None) == sorted(before)
    assert Counter(key for key, _value in records) == {f"agent-{i}".encode(): 12 for i in range(5)}


def test_a_crash_keeps_acknowledged_records(
    local_broker: LocalBroker, new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=3)
    producer = _producer(kafka_bootstrap)
    acked = _values("acked", 40)
    errors = _produce(producer, topic, acked)
    assert producer.flush(30) == 0
    assert not errors
    pid = local_broker.info.pid

    local_broker.kill()  # SIGKILL: no shutdown hook, no final flush
    assert not local_broker.is_running()

    info = local_broker.start()
    assert info.pid != pid
    assert info.bootstrap == kafka_bootstrap
    records = _kafka.read_all(kafka_bootstrap, topic, len(acked))
    assert sorted(value for _key, value in records if value is not None) == sorted(acked)


def test_records_produced_during_an_outage_arrive_after_it(
    local_broker: LocalBroker, new_topic: Callable[..., str], kafka_bootstrap: str
) -> None:
    topic = new_topic(partitions=3)
    producer = _producer(kafka_bootstrap, **{"message.timeout.ms": 120_000})
    before, during = _values("before", 20), _values("during", 20)
    errors = _produce(producer, topic, before)
    assert producer.flush(30) == 0

    local_broker.stop()
    errors += _produce(producer, topic, during)  # queued by the client while nothing listens
    producer.poll(0.5)
    assert len(producer) >= len(during)  # not delivered, not failed: waiting for the broker

    local_broker.start()
    assert producer.flush(60) == 0
    assert not errors
    records = _kafka.read_all(kafka_bootstrap, topic, len(before) + len(during))
    assert sorted(value for _key, value in records if value is not None) == sorted(before + during)


def test_an_ephemeral_broker_runs_beside_the_session_one_and_cleans_up(kafka_bootstrap: str) -> None:
    with LocalBroker.ephemeral(quiet=True) as other:
        info = other.info
        assert info.bootstrap != kafka_bootstrap
        assert info.version == KAFKA_VERSION
        assert _broker_answers(info.bootstrap)
        data_dir = other.data_dir
    assert not other.is_running()
    assert not data_dir.exists()
    assert not _broker_answers(info.bootstrap)
