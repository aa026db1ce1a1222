"""A record the model let through but Kafka still refuses for its size (a topic with a lower
max.message.bytes, headers a batch hook added) is a counted failure kept in dead/, never silent."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from integration.producer_fixtures import bus_settings, consume

from govbus.event import GovernanceEvent
from govbus.producer import Bus, OutgoingRecord

pytestmark = pytest.mark.integration


def test_oversize_records_at_the_sender_are_counted_failures(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=1, config={"max.message.bytes": "20000"})
    # Valid (fits message.max.bytes), but not the topic's limit, even compressed.
    big = GovernanceEvent(agent_id="a", attributes={"s": secrets.token_hex(30_000)})
    small = GovernanceEvent(agent_id="a")
    padded = GovernanceEvent(agent_id="a", action="pad")

    def hook(_topic: str, records: Sequence[OutgoingRecord]) -> None:
        for record in records:
            if record.value.find(b"pad") >= 0:  # a header far past message.max.bytes
                record.headers = [*record.headers, ("x-pad", b"p" * 1_100_000)]

    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path / "spool"), batch_hook=hook) as bus:
        for event in (big, padded, small):  # one at a time: the broker refuses a whole batch
            bus.emit(event)
            assert bus.flush(30)
        counters = bus.counters()
        health = bus.health()
    assert (counters.delivered, counters.failed) == (1, 2)
    assert health.last_error is not None
    assert "SIZE_TOO_LARGE" in health.last_error or "TOO_LARGE" in health.last_error
    assert len(list((tmp_path / "spool" / "dead").glob("*.seg"))) == 1  # both records, one file
    assert [c.event.event_id for c in consume(kafka_bootstrap, topic, 1, settle=0.5)] == [small.event_id]


def test_records_refused_only_for_sharing_a_batch_with_an_oversize_one_are_delivered(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    # The broker refuses a whole batch when it exceeds the topic's max.message.bytes: the small
    # records batched with one that is itself too large get MSG_SIZE_TOO_LARGE too. They are
    # innocent (each fits alone): re-produced, not counted failures in dead/.
    topic = new_topic(partitions=1, config={"max.message.bytes": "20000"})
    big = GovernanceEvent(agent_id="a", attributes={"s": secrets.token_hex(30_000)})
    smalls = [GovernanceEvent(agent_id="a", action=f"small-{i}") for i in range(20)]
    # A long linger: the whole burst is one batch, the big record with the small ones.
    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path / "spool", linger_ms=200)) as bus:
        for event in (smalls[0], big, *smalls[1:]):
            bus.emit(event)
        assert bus.flush(30)
        counters = bus.counters()
    assert (counters.delivered, counters.failed) == (20, 1)
    dead = list((tmp_path / "spool" / "dead").glob("*.seg"))
    assert len(dead) == 1
    got = consume(kafka_bootstrap, topic, 20, settle=0.5)
    assert sorted(c.event.event_id for c in got) == sorted(e.event_id for e in smalls)
