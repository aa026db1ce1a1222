"""Gap, replay and reordering detection per stream and partition, in bounded memory."""

from __future__ import annotations

import pytest

from govbus.signing import SequenceTracker, Verdict, VerdictCode

S1 = b"stream-one"
S2 = b"stream-two"


def codes(tracker: SequenceTracker, seqs: list[int], stream: bytes = S1, partition: int = 0) -> list[str]:
    return [tracker.observe(stream, partition, s, None).code.value for s in seqs]


def test_in_order_is_valid() -> None:
    assert codes(SequenceTracker(), [0, 1, 2, 3]) == ["valid"] * 4


def test_a_stream_may_be_joined_in_the_middle() -> None:
    assert codes(SequenceTracker(), [41, 42]) == ["valid", "valid"]


def test_strict_start_reports_the_missing_head() -> None:
    t = SequenceTracker(strict_start=True)
    v = t.observe(S1, 0, 3, None)
    assert v.code is VerdictCode.GAP
    assert v.missing == (0, 2)
    assert t.observe(S1, 0, 1, None).code is VerdictCode.REORDERED
    assert codes(SequenceTracker(strict_start=True), [0, 1]) == ["valid", "valid"]


def test_gap_names_the_missing_range_and_still_delivers() -> None:
    t = SequenceTracker()
    codes(t, [0, 1], partition=4)
    v = t.observe(S1, 4, 5, b"e5")
    assert v.code is VerdictCode.GAP
    assert v.missing == (2, 4)
    assert v.stream == S1.hex()
    assert v.partition == 4
    assert v.sequence == 5
    assert v.deliver
    assert v.authentic
    assert "3 record(s) missing" in v.detail
    assert "sequence 2..4" in v.detail


def test_late_arrivals_are_reordered_once_then_replays() -> None:
    t = SequenceTracker()
    assert codes(t, [0, 1, 5]) == ["valid", "valid", "gap"]
    assert codes(t, [3, 2, 4]) == ["reordered"] * 3
    assert codes(t, [3, 6]) == ["replay", "valid"]


def test_missing_ranges_split_and_shrink() -> None:
    t = SequenceTracker()
    codes(t, [0, 10])  # missing 1..9
    assert codes(t, [5, 1, 9, 6, 4]) == ["reordered"] * 5
    assert t._parts[0].streams[S1].missing == [[2, 3], [7, 8]]
    assert codes(t, [2, 3, 7, 8]) == ["reordered"] * 4
    assert t._parts[0].streams[S1].missing == []
    assert codes(t, [5, 11]) == ["replay", "valid"]


def test_duplicates_are_replays_and_do_not_move_state() -> None:
    t = SequenceTracker()
    assert codes(t, [0, 1, 1, 0, 2]) == ["valid", "valid", "replay", "replay", "valid"]
    v = t.observe(S1, 0, 2, None)
    assert v.code is VerdictCode.REPLAY
    assert not v.deliver
    assert v.authentic
    assert "high-water mark 2" in v.detail


def test_reemitted_event_id_is_a_replay_even_with_a_new_sequence() -> None:
    t = SequenceTracker()
    assert t.observe(S1, 0, 0, b"evt-1").code is VerdictCode.VALID
    v = t.observe(S2, 0, 0, b"evt-1")  # re-emitted by a restarted producer: new stream
    assert v.code is VerdictCode.REPLAY
    assert "evt-1" in v.detail
    # ...and ids are per partition, which `forget_partition` clears.
    assert t.observe(S1, 1, 0, b"evt-1").code is VerdictCode.VALID


def test_a_replay_by_event_id_still_advances_the_high_water_mark() -> None:
    t = SequenceTracker()
    assert t.observe(S1, 0, 0, b"evt-1").code is VerdictCode.VALID
    assert t.observe(S1, 0, 1, b"evt-1").code is VerdictCode.REPLAY  # re-signed: a fresh number
    assert t.observe(S1, 0, 2, b"evt-2").code is VerdictCode.VALID  # not a gap: 1 did arrive
    assert t.observe(S1, 0, 1, b"evt-3").code is VerdictCode.REPLAY  # its number was used


def test_a_gap_is_reported_even_when_the_record_also_repeats_an_event_id() -> None:
    t = SequenceTracker()
    assert t.observe(S1, 0, 0, b"evt-1").code is VerdictCode.VALID
    v = t.observe(S1, 0, 3, b"evt-1")  # 1 and 2 never arrived: that must not go unreported
    assert v.code is VerdictCode.GAP
    assert v.missing == (1, 2)
    assert t.observe(S1, 0, 1, b"evt-2").code is VerdictCode.REORDERED
    assert t.observe(S1, 0, 4, b"evt-1").code is VerdictCode.REPLAY


def test_streams_and_partitions_are_independent() -> None:
    t = SequenceTracker()
    assert codes(t, [0, 1], S1, 0) == ["valid", "valid"]
    assert codes(t, [0, 1], S2, 0) == ["valid", "valid"]
    assert codes(t, [0, 1], S1, 1) == ["valid", "valid"]
    assert codes(t, [3], S1, 0) == ["gap"]
    assert codes(t, [2], S2, 0) == ["valid"]


def test_forget_partition_after_a_rebalance() -> None:
    t = SequenceTracker()
    codes(t, [0, 1, 2], S1, 0)
    t.observe(S1, 1, 0, b"e")
    t.forget_partition(0)
    assert codes(t, [1, 2, 3], S1, 0) == ["valid"] * 3  # redelivered after the rebalance
    assert codes(t, [0], S1, 1) == ["replay"]  # partition 1 untouched
    t.reset()
    assert codes(t, [0], S1, 1) == ["valid"]


def test_memory_is_bounded() -> None:
    t = SequenceTracker(max_streams=3, max_missing_ranges=2, replay_window=4)
    for i in range(10):
        t.observe(b"s%d" % i, 0, 0, b"id%d" % i)
    part = t._parts[0]
    assert list(part.streams) == [b"s7", b"s8", b"s9"]
    assert list(part.ids) == [b"id6", b"id7", b"id8", b"id9"]
    # An evicted stream starts over (a miss, not a false alarm).
    assert t.observe(b"s0", 0, 1, None).code is VerdictCode.VALID
    st = SequenceTracker(max_missing_ranges=2)
    codes(st, [0, 2, 4, 6, 8])  # four single-record gaps; only the last two ranges are kept
    assert st._parts[0].streams[S1].missing == [[5, 5], [7, 7]]
    assert codes(st, [7, 1]) == ["reordered", "replay"]  # 1's range was forgotten


def test_recently_used_streams_survive_eviction() -> None:
    t = SequenceTracker(max_streams=2)
    codes(t, [0], b"a")
    codes(t, [0], b"b")
    codes(t, [1], b"a")  # touches a
    codes(t, [0], b"c")  # evicts b
    assert list(t._parts[0].streams) == [b"a", b"c"]


def test_replay_window_zero_disables_id_tracking() -> None:
    t = SequenceTracker(replay_window=0)
    t.observe(S1, 0, 0, b"x")
    assert t.observe(S2, 0, 0, b"x").code is VerdictCode.VALID


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_streams"):
        SequenceTracker(max_streams=0)


def test_verdict_properties() -> None:
    assert str(Verdict(VerdictCode.VALID)) == "valid"
    assert str(Verdict(VerdictCode.MALFORMED, "why")) == "malformed: why"
    deliver = {c for c in VerdictCode if Verdict(c).deliver}
    assert deliver == {VerdictCode.VALID, VerdictCode.GAP, VerdictCode.REORDERED}
    authentic = {c for c in VerdictCode if Verdict(c).authentic}
    assert authentic == deliver | {VerdictCode.REPLAY}
