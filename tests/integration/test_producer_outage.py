"""Broker outages on the real broker (the session's LocalBroker, stopped and started again):
nothing is lost, nothing is delivered twice, per-key order holds; a damaged spool is survivable."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from _await import until
from integration.producer_fixtures import bus_settings, check_delivery, consume

from govbus._sample import sample_events
from govbus.event import GovernanceEvent
from govbus.localkafka import LocalBroker
from govbus.producer import Bus

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_broker_down_at_start_then_every_event_delivered_once_in_order(
    kafka_bootstrap: str,
    local_broker: LocalBroker,
    new_topic: Callable[..., str],
    tmp_path: Path,
    durability: str,
) -> None:
    topic = new_topic(partitions=3)
    local_broker.stop()
    emitted = list(sample_events(2000, agents=8))
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path, durability=durability)) as bus:
        for event in emitted:
            bus.emit(event)
        until(lambda: bus.health().state == "spooling" and bus.counters().spooled == 2000)
        health = bus.health()
        assert health.ok, health.reason
        assert health.broker_reachable is False
        assert bus.counters().delivered == 0
        local_broker.start()
        assert bus.flush(90)
        assert bus.health().state == "connected"
        counters = bus.counters()
    assert (counters.delivered, counters.failed) == (2000, 0)
    check_delivery(consume(kafka_bootstrap, topic, 2000), emitted, partitions=3)
    assert bus.health().spool_bytes < 10_000  # delivered segments were deleted


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_broker_stopped_and_restarted_mid_stream_loses_nothing(
    kafka_bootstrap: str,
    local_broker: LocalBroker,
    new_topic: Callable[..., str],
    tmp_path: Path,
    durability: str,
) -> None:
    topic = new_topic(partitions=3)
    emitted = list(sample_events(6000, agents=10))
    progress = {"emitted": 0}
    broker_stopped = threading.Event()

    def kernel(bus: Bus) -> None:
        for i, event in enumerate(emitted):
            if i == 3000:
                # Half the stream is emitted while the broker is away, however slowly it stops on a
                # loaded machine.
                broker_stopped.wait(120)
            bus.emit(event)
            progress["emitted"] = i + 1
            if i % 10 == 9:
                time.sleep(0.002)  # a kernel at ~4k events/s: the stream spans the whole outage

    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path, durability=durability)) as bus:
        emitter = threading.Thread(target=kernel, args=(bus,))
        emitter.start()
        until(lambda: progress["emitted"] >= 1000)
        local_broker.stop()
        stopped_at = progress["emitted"]
        broker_stopped.set()
        until(lambda: bus.health().state == "spooling")
        time.sleep(0.5)
        local_broker.start()
        emitter.join()
        assert bus.flush(120)
        counters = bus.counters()
    assert stopped_at < 6000
    assert counters.spooled > 0 or durability == "disk"
    assert (counters.submitted, counters.delivered, counters.failed) == (6000, 6000, 0)
    check_delivery(consume(kafka_bootstrap, topic, 6000), emitted, partitions=3)


def test_corrupt_spool_is_reported_and_the_rest_delivered(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    emitted = list(sample_events(300, agents=4))
    # A spool left by an earlier process: events journaled while the broker was unreachable.
    unreachable = bus_settings("127.0.0.1:9", topic, tmp_path, durability="disk", close_timeout_ms=100)
    with Bus(unreachable) as bus:
        for event in emitted:
            bus.emit(event)
    (segment,) = [p for p in tmp_path.glob("*.seg") if p.stat().st_size > 1000]
    data = bytearray(segment.read_bytes())
    victim = emitted[150]
    at = data.find(victim.event_id.encode())
    data[at] ^= 0x55  # bit rot inside one record
    segment.write_bytes(bytes(data))
    (tmp_path / "99999999999999999999.seg").write_bytes(b"\x00garbage" * 100)  # and a file that is no segment
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path)) as bus:
        health = bus.health()
        assert len(health.spool_damage) == 2
        assert any("checksum mismatch" in d for d in health.spool_damage)
        assert any("not a govbus spool segment" in d for d in health.spool_damage)
        assert bus.counters().recovered == 299
        assert bus.flush(60)
        bus.emit(GovernanceEvent(agent_id="after-recovery"))  # and the bus works on
        assert bus.flush(30)
    survivors = [e for e in emitted if e is not victim]
    consumed = consume(kafka_bootstrap, topic, 300)
    check_delivery([c for c in consumed if c.event.agent_id != "after-recovery"], survivors, partitions=3)
    assert victim.event_id not in {c.event.event_id for c in consumed}
    assert (tmp_path / "damaged").is_dir()


def test_missing_topic_spools_until_it_exists(kafka_bootstrap: str, tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"test-created-late-{uuid.uuid4().hex[:8]}"
    emitted = list(sample_events(500, agents=4))
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path)) as bus:
        for event in emitted:
            bus.emit(event)
        until(lambda: bus.health().state == "spooling" and bus.counters().spooled == 500)
        assert f"topic {topic} is not available" in bus.health().reason
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.create_topics([NewTopic(topic, 3, -1)])[topic].result(30)
        assert bus.flush(60)
    check_delivery(consume(kafka_bootstrap, topic, 500), emitted, partitions=3)
