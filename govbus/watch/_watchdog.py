"""The watchdog: reads the topic and the sink groups, raises and clears alerts.

- **silent**: a producer stream that has sent heartbeats sends nothing for its interval x
  ``silent_factor`` (a final heartbeat, sent by ``Bus.close()``, ends the watch without alert).
- **lost-tail** / **gap**: a heartbeat (resp. an ordinary record) arrives after missing sequence
  numbers of its stream and partition. Cleared by the next heartbeat of that stream and partition
  that follows on without a gap.
- **stalled**: a sink partition lags and its committed offset has not moved for ``stall_after_s``
  while its group has members; cleared when it moves or catches up.
- **sink-gone**: a sink group that had members has none; cleared when one returns.
- **dlq-failed**: a sink partition's committed offset carries the dead-letter-failed mark
  (:mod:`govbus._dlqmark`): a record's dead letter could not be written and the partition is held
  there. Cleared when a commit without the mark replaces it (the partition moved on).

Records are judged by their signature headers. With a keyring (``GOVBUS_SIGNING__KEYRING``) only
authentic records count; without one the headers are taken on trust (say so in production: anyone
who can write the topic could then keep a dead stream looking alive).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from govbus._heartbeat import HEARTBEAT_KEY_PREFIX, is_heartbeat
from govbus.signing import SequenceTracker, Verdict, VerdictCode, Verifier
from govbus.watch._alerts import AlertBook
from govbus.watch._groups import GroupView, StallTracker

__all__ = ["StreamWatch", "Watchdog"]

log = logging.getLogger("govbus.watch")
_H_STREAM = "govbus_sig_stream"
_H_SEQ = "govbus_sig_seq"


@dataclasses.dataclass(slots=True)
class StreamWatch:
    stream: str  # hex stream id, or "instance:<producer instance id>" for unsigned producers
    interval_s: float
    last_seen: float
    producer: str


class Watchdog:
    """The watchdog's state. Feed it records (:meth:`observe`) and group views (:meth:`groups`);
    :meth:`tick` judges silence. No I/O here: :mod:`govbus.watch._runner` drives it."""

    def __init__(
        self,
        alerts: AlertBook,
        decode: Callable[[bytes | None, Any], Any],
        *,
        verifier: Verifier | None = None,
        silent_factor: float = 3.0,
        stall_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alerts = alerts
        self._decode = decode
        self._verifier = verifier
        self._tracker = SequenceTracker() if verifier is None else None
        self.silent_factor = silent_factor
        self._clock = clock
        self._stalls = StallTracker(stall_after_s, clock)
        self.streams: dict[str, StreamWatch] = {}
        self._groups_seen: set[str] = set()
        self.records = 0
        self.heartbeats = 0
        self.inauthentic = 0
        self.lock = threading.Lock()

    # -- records ---------------------------------------------------------------------------------

    def forget_partition(self, partition: int) -> None:
        if self._verifier is not None:
            self._verifier.forget_partition(partition)
        elif self._tracker is not None:
            self._tracker.forget_partition(partition)

    def observe(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        partition: int,
    ) -> None:
        with self.lock:
            self._observe(value, key, headers or [], partition)

    def _observe(self, value: bytes | None, key: bytes | None, headers: list[Any], partition: int) -> None:
        self.records += 1
        now = self._clock()
        verdict = self._judge(value, key, headers, partition)
        if verdict is not None and not verdict.authentic:
            self.inauthentic += 1
            return
        stream = None
        if verdict is not None:
            raw = next((v for h, v in headers if h == _H_STREAM), None)
            stream = bytes(raw).hex() if raw else None
        heartbeat = key is not None and key.startswith(HEARTBEAT_KEY_PREFIX)
        event = None
        if heartbeat:
            try:
                event = self._decode(value, headers).event
            except Exception as exc:
                log.warning("undecodable heartbeat-keyed record on partition %d: %s", partition, exc)
                heartbeat = False
            else:
                heartbeat = is_heartbeat(event)
        if heartbeat and event is not None:
            self.heartbeats += 1
            attrs = event.attributes
            if stream is None:
                producer = event.producer.instance_id if event.producer is not None else "?"
                stream = f"instance:{producer}"
            name = event.producer.name if event.producer is not None else "?"
            if attrs.get("final"):
                self.streams.pop(stream, None)
                self.alerts.clear("silent", stream, "the producer closed")
            else:
                interval = float(attrs.get("interval_ms") or 5000) / 1000
                self.streams[stream] = StreamWatch(stream, interval, now, name)
                self.alerts.clear("silent", stream, "records again")
        elif stream is not None and stream in self.streams:
            self.streams[stream].last_seen = now
        if verdict is None or stream is None:
            return
        subject = f"{stream}/{partition}"
        if verdict.code is VerdictCode.GAP:
            first, last = verdict.missing or (0, 0)
            kind = "lost-tail" if heartbeat else "gap"
            self.alerts.raise_(
                kind,
                subject,
                f"stream {stream} partition {partition}: sequence numbers {first}..{last} never arrived"
                + (" (the end of the stream before this heartbeat)" if heartbeat else ""),
            )
        elif heartbeat and verdict.code is VerdictCode.VALID:
            self.alerts.clear("lost-tail", subject, "a heartbeat followed on without a gap")
            self.alerts.clear("gap", subject, "a heartbeat followed on without a gap")

    def _judge(self, value: bytes | None, key: bytes | None, headers: list[Any], partition: int) -> Verdict | None:
        if self._verifier is not None:
            if not any(h == _H_SEQ for h, _ in headers):
                return None  # unsigned: counted, never tracked
            return self._verifier.verify(value, key, headers, partition)
        # No keyring: the headers on trust (parsed as the spec lays them out, docs/signing.md §6).
        stream = seq = None
        for h, v in headers:
            if h == _H_STREAM:
                stream = v
            elif h == _H_SEQ:
                seq = v
        if not stream or seq is None or len(seq) != 12 or self._tracker is None:
            return None
        sig_partition, sequence = int.from_bytes(seq[:4], "big"), int.from_bytes(seq[4:], "big")
        if sig_partition != partition:
            return Verdict(VerdictCode.BAD_SIGNATURE, "partition mismatch")
        return self._tracker.observe(bytes(stream), partition, sequence, None)

    # -- time ------------------------------------------------------------------------------------

    def tick(self) -> None:
        with self.lock:
            now = self._clock()
            for stream, watch in list(self.streams.items()):
                quiet = now - watch.last_seen
                bound = watch.interval_s * self.silent_factor
                if quiet > bound:
                    self.alerts.raise_(
                        "silent",
                        stream,
                        f"producer {watch.producer} (stream {stream}) sent nothing for {quiet:.1f} s, "
                        f"bound {bound:g} s (heartbeat every {watch.interval_s:g} s x {self.silent_factor:g})",
                    )

    # -- groups ----------------------------------------------------------------------------------

    def groups(self, views: dict[str, GroupView]) -> None:
        with self.lock:
            self._dead_letters(views)
            for group in sorted(set(views) | self._groups_seen):
                view = views.get(group)
                if view is None or view.members == 0:
                    if group in self._groups_seen:
                        state = "vanished" if view is None else f"has no member (state {view.state})"
                        self.alerts.raise_("sink-gone", group, f"sink group {group} {state}")
                    self._stalls.forget(group)
                    for p in [s for s in self.alerts.subjects("stalled") if s.rpartition("/")[0] == group]:
                        self.alerts.clear("stalled", p, "the group has no member (see sink-gone)")
                    continue
                self._groups_seen.add(group)
                self.alerts.clear("sink-gone", group, f"{view.members} member(s) again")
                stalled = self._stalls.update(view)
                for partition, still in stalled.items():
                    self.alerts.raise_(
                        "stalled",
                        f"{group}/{partition}",
                        f"sink group {group} ({view.sink_class or 'no class'}): partition {partition} lags "
                        f"{view.lag[partition]} record(s) and its committed offset has not moved for {still:.0f} s "
                        f"while {view.members} member(s) are alive",
                    )
                for subject in self.alerts.subjects("stalled"):
                    g, _, p = subject.rpartition("/")
                    if g == group and int(p) not in stalled:
                        self.alerts.clear("stalled", subject, "the partition moves again")

    def _dead_letters(self, views: dict[str, GroupView]) -> None:
        # Judged with or without members: a sink that stopped on it still holds the partition.
        for group, view in views.items():
            for partition, mark in sorted(view.dlq_failed.items()):
                self.alerts.raise_(
                    "dlq-failed",
                    f"{group}/{partition}",
                    f"sink group {group} ({view.sink_class or 'no class'}): partition {partition} is held at offset "
                    f"{view.committed.get(partition, '?')}: the dead letter of offset {mark.record} could not be "
                    f"written to {mark.dlq}: {mark.error}",
                )
        for subject in self.alerts.subjects("dlq-failed"):
            group, _, p = subject.rpartition("/")
            now = views.get(group)
            if now is None:
                self.alerts.clear("dlq-failed", subject, f"sink group {group} vanished")
            elif int(p) not in now.dlq_failed:
                offset = now.committed.get(int(p))
                self.alerts.clear("dlq-failed", subject, f"the partition moved on (committed offset {offset})")
