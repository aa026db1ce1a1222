"""The console's only Kafka consumer: the latest records of the event topic and dead-letter topics.

It assigns partitions itself (never subscribes), never commits, and uses a throw-away group id that
no sink shares, so it never joins, rebalances or moves any sink's group. It reads from a bounded
distance before each partition's end and keeps a bounded ring per topic.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["RawRecord", "TailReader"]

log = logging.getLogger("govbus.console.tail")


@dataclasses.dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


Transform = Callable[[RawRecord], Any]


class TailReader:
    """Follows a changing set of topics; ``latest(topic)`` is the newest ``keep`` items, oldest first.

    ``transform`` turns a record into what is kept (e.g. a decoded event); it runs on the reader's
    thread, so pages never decode.
    """

    def __init__(self, conf: dict[str, Any], *, keep: dict[str, int], transform: dict[str, Transform]) -> None:
        self._consumer = Consumer(
            {
                **conf,
                "group.id": f"govbus.console.{uuid.uuid4().hex[:12]}",  # required by the client, never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "latest",
                # Bounds librdkafka's pre-fetch queue: the console keeps only the newest records.
                "queued.max.messages.kbytes": 8192,
                "logger": log,
            }
        )
        self._keep = keep
        self._transform = transform
        self._rings: dict[str, collections.deque[Any]] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="govbus-console-tail", daemon=True)
        self._pending: tuple[dict[str, list[int]], dict[tuple[str, int], tuple[int, int]]] | None = None
        self.error: str | None = None
        self.read = 0

    def follow(self, topic: str, keep: int, transform: Transform) -> None:
        with self._lock:
            if topic not in self._wanted:
                self._keep[topic] = keep
                self._transform[topic] = transform
                self._wanted.add(topic)

    def latest(self, topic: str) -> list[Any]:
        with self._lock:
            ring = self._rings.get(topic)
            return list(ring) if ring is not None else []

    def start(self) -> TailReader:
        with self._lock:
            self._wanted.update(self._keep)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()

    def assign_new(self, partitions: dict[str, list[int]], ends: dict[tuple[str, int], tuple[int, int]]) -> None:
        """Called by the collector with the partitions it found and their (low, high) watermarks; the
        reader's own thread assigns them (a reference swap: the collector never waits on it)."""
        self._pending = (partitions, ends)

    def wanted(self) -> set[str]:
        with self._lock:
            return set(self._wanted)

    def _loop(self) -> None:
        while not self._stop.is_set():
            pending, self._pending = self._pending, None
            if pending is not None:
                self._assign(*pending)
            if not self._assigned:
                self._stop.wait(0.2)
                continue
            try:
                msgs = self._consumer.consume(500, 0.2)
            except KafkaException as exc:
                self.error = str(exc)
                continue
            for msg in msgs:
                if msg.error() is not None:
                    continue
                self._add(_raw(msg))

    def _add(self, rec: RawRecord) -> None:
        with self._lock:
            transform = self._transform.get(rec.topic)
            keep = self._keep.get(rec.topic, 100)
        try:
            item = transform(rec) if transform is not None else rec
        except Exception as exc:  # one bad record must not stop the reader
            log.debug("cannot transform %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc)
            return
        with self._lock:
            ring = self._rings.get(rec.topic)
            if ring is None:
                ring = self._rings[rec.topic] = collections.deque(maxlen=keep)
            ring.append(item)
            self.read += 1

    def _assign(self, partitions: dict[str, list[int]], ends: dict[tuple[str, int], tuple[int, int]]) -> None:
        new: list[TopicPartition] = []
        for topic, parts in partitions.items():
            keep = self._keep.get(topic, 100)
            for p in parts:
                if (topic, p) in self._assigned:
                    continue
                low, high = ends.get((topic, p), (0, 0))
                # Enough history to fill the ring even if every record sits in this one partition.
                new.append(TopicPartition(topic, p, max(low, high - keep)))
        if not new:
            return
        try:
            self._consumer.incremental_assign(new)
        except KafkaException as exc:
            self.error = str(exc)
            return
        self._assigned.update((tp.topic, tp.partition) for tp in new)


def _raw(msg: Any) -> RawRecord:
    ts_type, ts = msg.timestamp()
    return RawRecord(
        msg.topic(),
        msg.partition(),
        msg.offset(),
        ts if ts_type else None,
        msg.key(),
        msg.value(),
        tuple(msg.headers() or ()),
    )
