"""Helpers for the producer's integration and system tests: settings, and reading a topic back."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from govbus._contract import Decoder
from govbus._record import InRecord, from_record
from govbus._settings import GovbusSettings, load_settings
from govbus.event import GovernanceEvent
from govbus.producer._partition import partition_for


@dataclasses.dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes
    headers: list[tuple[str, bytes]]
    record: InRecord
    timestamp: tuple[int, int]  # (type, ms): what msg.timestamp() says

    @property
    def event(self) -> GovernanceEvent:
        return self.record.event

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


def bus_settings(bootstrap: str, topic: str, spool_dir: Path, **producer: Any) -> GovbusSettings:
    return load_settings(
        topic=topic,
        kafka={"bootstrap_servers": bootstrap},
        producer={"spool_dir": str(spool_dir), "close_timeout_ms": 30_000, **producer},
    )


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0, settle: float = 1.5) -> list[Consumed]:
    """Every record of ``topic`` (at least ``expected``, then ``settle`` s more to catch duplicates)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "logger": _QUIET,
        }
    )
    decoder = Decoder()
    out: list[Consumed] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                headers = list(msg.headers() or [])
                record = from_record(msg.value(), headers, decoder)
                out.append(Consumed(msg.partition(), msg.offset(), msg.key(), headers, record, msg.timestamp()))
    finally:
        consumer.close()
    return out


def end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets", "logger": _QUIET})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def check_delivery(
    consumed: Sequence[Consumed],
    emitted: Iterable[GovernanceEvent],
    *,
    partitions: int,
    key_of: Callable[[GovernanceEvent], bytes] = lambda e: e.agent_id.encode(),
    allow_duplicates: bool = False,
) -> None:
    """Every emitted event is on the topic, once (unless allowed), on its key's murmur2 partition,
    and per key in emit order (by offset)."""
    emitted = list(emitted)
    by_id: dict[str, list[Consumed]] = defaultdict(list)
    for c in consumed:
        by_id[c.event.event_id].append(c)
    missing = [e.event_id for e in emitted if e.event_id not in by_id]
    assert not missing, f"{len(missing)} of {len(emitted)} emitted events are not on the topic, e.g. {missing[:3]}"
    if not allow_duplicates:
        twice = {i: len(cs) for i, cs in by_id.items() if len(cs) > 1}
        assert not twice, f"{len(twice)} events are on the topic more than once"
    position = {e.event_id: i for i, e in enumerate(emitted)}
    per_partition: dict[int, list[Consumed]] = defaultdict(list)
    for c in consumed:
        if c.event.event_id in position:
            per_partition[c.partition].append(c)
    for c in consumed:
        assert c.partition == partition_for(c.key, partitions), "record not on its key's murmur2 partition"
    for p, records in per_partition.items():
        last_seen: dict[bytes, int] = {}
        for c in sorted(records, key=lambda r: r.offset):
            index = position[c.event.event_id]
            previous = last_seen.get(c.key, -1)
            if allow_duplicates and index <= previous:
                continue  # a redelivered copy of an earlier event
            assert index > previous, f"key {c.key!r} out of order on partition {p} at offset {c.offset}"
            last_seen[c.key] = index
    for e in emitted:
        assert by_id[e.event_id][0].key == key_of(e)


class _Quiet:
    def log(self, *_args: Any) -> None:
        pass


_QUIET = _Quiet()
