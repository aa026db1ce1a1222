"""Producer heartbeats: every ``heartbeat_interval_ms``, one signed heartbeat per partition written to.

A heartbeat goes through ``Bus.emit`` like any event (queue, spool, signing), routed by its record
key to the partition it speaks for, so it takes that partition's next sequence number in the
producer's stream: a verifier or the watchdog (``govbus watch``) that sees it knows the stream's
tail up to it, and a producer that stops sending them (killed, hung, cut off) falls silent
visibly. ``close()`` sends a final heartbeat (``decision: final``) so a clean stop is not
reported as silence. Format: :mod:`govbus._heartbeat`; spec: docs/signing.md §16.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from govbus._heartbeat import HEARTBEAT_KEY_PREFIX, heartbeat_event
from govbus.producer._partition import partition_for

if TYPE_CHECKING:
    from govbus.producer._bus import BatchHook, Bus, OutgoingRecord

log = logging.getLogger(__name__)


def heartbeat_key(instance_id: str, partition: int, partitions: int) -> str:
    """An agent id whose record key lands in ``partition`` (murmur2, as the producer routes)."""
    n = 0
    while True:
        key = f"{HEARTBEAT_KEY_PREFIX.decode()}{instance_id}.{n}"
        if partition_for(key.encode(), partitions) == partition:
            return key
        n += 1


class Heartbeats:
    """Wraps the Bus's batch hook (to learn which partitions it writes to) and beats on a thread."""

    def __init__(self, bus: Bus, interval_s: float, inner: BatchHook | None) -> None:
        self._bus = bus
        self.interval_s = interval_s
        self._inner = inner
        self._partitions: set[int] = set()
        self._keys: dict[tuple[int, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="govbus-heartbeat", daemon=True)
        self.sent = 0

    def hook(self, topic: str, records: Sequence[OutgoingRecord]) -> None:
        inner = self._inner
        if inner is not None:
            inner(topic, records)
        self.seen(records)

    def seen(self, records: Sequence[OutgoingRecord]) -> None:
        """The partitions of records about to be produced (also of batches the sender signed
        itself, without the hook)."""
        self._partitions.update({record.partition for record in records})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops beating and emits the final heartbeats (the Bus is about to flush and close)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.sent:
            # Only a stream that has beaten is watched; a Bus closed within its first interval
            # (a one-shot CLI, a test) adds nothing to the topic.
            self.beat(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def beat(self, *, final: bool = False) -> int:
        """One heartbeat per partition written to so far; returns how many were emitted."""
        bus = self._bus
        partitioner = bus._metadata.partitioner
        if partitioner is None:
            return 0
        count = partitioner.partitions
        signer = getattr(self._inner, "signer", None)
        stream: bytes | None = signer.stream_id if signer is not None else None
        next_seqs: dict[int, int] = signer.next_sequences() if signer is not None else {}
        c = bus.counters()
        counters = {
            "submitted": c.submitted,
            "delivered": c.delivered,
            "spooled": c.spooled,
            "failed": c.failed,
            "rejected": c.rejected,
        }
        emitted = 0
        for partition in sorted(self._partitions):
            if partition >= count:
                continue
            agent = self._keys.get((partition, count))
            if agent is None:
                agent = self._keys[(partition, count)] = heartbeat_key(bus.producer_info.instance_id, partition, count)
            event = heartbeat_event(
                agent,
                partition=partition,
                stream=stream,
                next_seq=next_seqs.get(partition),
                interval_s=self.interval_s,
                counters=counters,
                final=final,
            )
            try:
                bus.emit(event)
            except Exception as exc:  # closed, fatal, full: the missing beat is itself the signal
                log.debug("heartbeat for partition %d not emitted: %s", partition, exc)
                continue
            emitted += 1
        self.sent += emitted
        return emitted
