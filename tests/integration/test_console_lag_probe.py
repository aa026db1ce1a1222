"""The console reads the sink groups' lag from a child process: librdkafka's abort on a
coordinator connection lost mid-request (confluentinc/librdkafka#4605) costs one refresh, not the
console. The abort is a race inside librdkafka and cannot be provoked on demand, so the child is
sent SIGABRT, as the failed assertion does."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable

import pytest
from _sinks import events, produce, records, wait_for
from confluent_kafka import Consumer, TopicPartition

from govbus._settings import load_settings
from govbus.console._collector import Collector

pytestmark = pytest.mark.integration


def test_an_aborted_lag_probe_costs_one_refresh_and_the_console_carries_on(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, records(events(6)))
    name = f"probe-{uuid.uuid4().hex[:6]}"
    group = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"govbus.sink.{name}"})
    group.commit(offsets=[TopicPartition(topic, 0, 1), TopicPartition(topic, 1, 0)], asynchronous=False)
    group.close()
    settings = load_settings(
        topic=topic, kafka={"bootstrap_servers": kafka_bootstrap}, console={"refresh_s": 0.3, "timeout_s": 5}
    )
    collector = Collector(settings).start()

    def lag() -> int | None:
        snap = collector.snapshot
        view = next((s for s in snap.sinks if s.name == name), None)
        return None if snap.broker_error is not None or view is None else view.lag

    try:
        wait_for(lambda: lag() == 5, 30, what="the sink group's lag")  # 6 records, 1 committed
        probe = collector._lag
        assert probe._proc is not None
        os.kill(probe._proc.pid, signal.SIGABRT)  # what librdkafka's failed assertion does
        wait_for(lambda: probe.restarts >= 1, 30, what="a refresh to meet the dead child")
        wait_for(lambda: lag() == 5, 30, what="the lag read again, through a new child")
        assert collector._thread.is_alive()
    finally:
        collector.close()
