"""A disk-mode spool that filled its filesystem while the broker was away is replayed by the next
Bus once the broker is there, although not even its spare segment fits (the real broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _await import closed_port, until
from _smallfs import fill, small_filesystem
from integration.producer_fixtures import bus_settings, check_delivery, consume

from govbus._sample import sample_events
from govbus.localkafka import LocalBroker
from govbus.producer import Bus

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def test_spool_on_a_full_disk_is_replayed_then_space_is_used_again(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    emitted = list(sample_events(6000, agents=8))
    sizes = {"durability": "disk", "segment_bytes": 1 * MIB, "spool_max_bytes": 256 * MIB}
    with small_filesystem(tmp_path, 6 * MIB) as fs:
        spool = fs / "spool"
        with Bus(bus_settings(closed_port(), topic, spool, **sizes)) as away:  # the broker is away
            for event in emitted[:5000]:
                away.emit(event)
            away.close(0.1)
        fill(fs)  # and the disk is full

        # Was: SpoolError "cannot allocate spare-<pid>.tmp ... No space left on device".
        with Bus(bus_settings(kafka_bootstrap, topic, spool, **sizes)) as bus:
            assert bus.counters().recovered == 5000
            assert bus.flush(60)
            # Delivered segments were deleted: the spare fits again, the bus is healthy and takes events.
            until(lambda: bus.health().ok and bus.health().state == "connected")
            for event in emitted[5000:]:
                bus.emit(event)
            assert bus.flush(60)
            counters = bus.counters()
        assert (counters.delivered, counters.failed, counters.rejected) == (6000, 0, 0)
    check_delivery(consume(kafka_bootstrap, topic, 6000), emitted, partitions=3)


def test_memory_mode_queue_a_full_disk_could_not_spool_is_published_when_the_broker_is_back(
    kafka_bootstrap: str, local_broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    emitted = list(sample_events(500, agents=8))
    with small_filesystem(tmp_path, 4 * MIB) as fs:
        local_broker.stop()
        settings = bus_settings(kafka_bootstrap, topic, fs / "spool", segment_bytes=1 * MIB, spool_max_bytes=64 * MIB)
        with Bus(settings) as bus:
            fill(fs)  # nothing left for the overflow
            for event in emitted:
                bus.emit(event)
            until(lambda: "filesystem full" in bus.health().reason)
            assert bus.health().queue_depth == 500
            local_broker.start()
            # The spool has nothing to replay and cannot take the queue: publish it directly, in order.
            assert bus.flush(60)  # was: spooling forever behind a queue the disk could not take
            until(lambda: bus.health().ok and bus.health().state == "connected")
            counters = bus.counters()
        assert (counters.delivered, counters.spooled, counters.failed) == (500, 0, 0)
    check_delivery(consume(kafka_bootstrap, topic, 500), emitted, partitions=3)
