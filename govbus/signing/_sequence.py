"""Gap, replay and reordering detection per producer stream and partition, in bounded memory.

Per (partition, stream) the tracker keeps a high-water mark and a few ranges of sequence numbers
skipped by gaps (so a late arrival reads as REORDERED, not REPLAY); per partition, a window of
recently seen event ids (so a re-emitted event with a fresh sequence number reads as REPLAY).
Everything is capped: least recently used streams, the oldest missing ranges and the oldest ids
are forgotten first, which only ever turns a detection into a miss, never a false alarm, except
that a late record whose missing range was forgotten reads as REPLAY.

Feed it authenticated records only (the :class:`~govbus.signing.Verifier` does): state built from
forged sequence numbers would hide real gaps.
"""

from __future__ import annotations

from collections import OrderedDict

from govbus.signing._verdict import VALID, Verdict, VerdictCode


class _Stream:
    __slots__ = ("hwm", "missing")

    def __init__(self, hwm: int) -> None:
        self.hwm = hwm
        self.missing: list[list[int]] = []  # ascending, disjoint [first, last] ranges below hwm


class _Partition:
    __slots__ = ("ids", "streams")

    def __init__(self) -> None:
        self.streams: OrderedDict[bytes, _Stream] = OrderedDict()
        self.ids: OrderedDict[bytes, None] = OrderedDict()


class SequenceTracker:
    """Judges each authenticated record's (stream, partition, sequence, event id) against history.

    ``strict_start``: report a GAP when a stream is first seen above sequence 0. Off by default,
    because a consumer that starts at the latest offset, or after retention deleted the oldest
    records, legitimately joins a stream in the middle.
    Not thread-safe: use one per consumer (the consumer's poll loop is single-threaded).
    """

    def __init__(
        self,
        *,
        max_streams: int = 4096,
        max_missing_ranges: int = 64,
        replay_window: int = 8192,
        strict_start: bool = False,
    ) -> None:
        if max_streams < 1 or max_missing_ranges < 1 or replay_window < 0:
            raise ValueError("max_streams and max_missing_ranges must be >= 1, replay_window >= 0")
        self._max_streams = max_streams
        self._max_missing = max_missing_ranges
        self._window = replay_window
        self._strict_start = strict_start
        self._parts: dict[int, _Partition] = {}

    def forget_partition(self, partition: int) -> None:
        """Drop what is known about ``partition``.

        Call it when the consumer loses the partition or seeks in it: records redelivered after a
        rebalance or a seek would otherwise all read as replays.
        """
        self._parts.pop(partition, None)

    def reset(self) -> None:
        self._parts.clear()

    def observe(self, stream: bytes, partition: int, sequence: int, event_id: bytes | None) -> Verdict:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        streams = part.streams
        st = streams.get(stream)
        verdict = VALID
        if st is not None:
            streams.move_to_end(stream)
            hwm = st.hwm
            if sequence == hwm + 1:
                st.hwm = sequence
            elif sequence > hwm:
                verdict = self._gap(st, stream, partition, sequence, hwm + 1)
                st.hwm = sequence
            elif self._take_missing(st, sequence):
                verdict = Verdict(
                    VerdictCode.REORDERED,
                    f"sequence {sequence} arrived after {hwm} in stream {stream.hex()} partition {partition}",
                    stream.hex(),
                    partition,
                    sequence,
                )
            else:
                return Verdict(
                    VerdictCode.REPLAY,
                    f"sequence {sequence} of stream {stream.hex()} partition {partition} was seen before "
                    f"(high-water mark {hwm})",
                    stream.hex(),
                    partition,
                    sequence,
                )
        else:
            st = streams[stream] = _Stream(sequence)
            if len(streams) > self._max_streams:
                streams.popitem(last=False)
            if self._strict_start and sequence > 0:
                verdict = self._gap(st, stream, partition, sequence, 0)
        if event_id is not None and self._window:
            ids = part.ids
            if event_id in ids and verdict.code is not VerdictCode.GAP:
                # The number was used, so the state above moved (hwm, missing ranges) all the
                # same. A gap outranks the replay: one verdict per record, and a swallowed gap
                # would never be reported (the duplicate is delivered; sinks deduplicate by id).
                return Verdict(
                    VerdictCode.REPLAY,
                    f"event id {event_id.decode('utf-8', 'replace')!r} was seen before in partition "
                    f"{partition} (now at sequence {sequence} of stream {stream.hex()})",
                    stream.hex(),
                    partition,
                    sequence,
                )
            ids[event_id] = None
            if len(ids) > self._window:
                ids.popitem(last=False)
        return verdict

    def _gap(self, st: _Stream, stream: bytes, partition: int, sequence: int, first: int) -> Verdict:
        last = sequence - 1
        st.missing.append([first, last])
        if len(st.missing) > self._max_missing:
            del st.missing[0]
        return Verdict(
            VerdictCode.GAP,
            f"{last - first + 1} record(s) missing before sequence {sequence} "
            f"(sequence {first}..{last}) in stream {stream.hex()} partition {partition}",
            stream.hex(),
            partition,
            sequence,
            (first, last),
        )

    def _take_missing(self, st: _Stream, sequence: int) -> bool:
        missing = st.missing
        for i, rng in enumerate(missing):
            first, last = rng
            if sequence < first:
                return False
            if sequence <= last:
                if first == last:
                    del missing[i]
                elif sequence == first:
                    rng[0] = first + 1
                elif sequence == last:
                    rng[1] = last - 1
                else:
                    missing[i : i + 1] = [[first, sequence - 1], [sequence + 1, last]]
                    if len(missing) > self._max_missing:
                        del missing[0]
                return True
        return False
