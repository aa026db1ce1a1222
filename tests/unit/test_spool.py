"""The on-disk spool: format, order, recovery, torn tails, corruption, limits, release (no broker)."""

from __future__ import annotations

import enum
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govbus._sample import sample_events
from govbus.event import EventKind, GovernanceEvent, ProducerInfo
from govbus.producer import SpoolLockedError
from govbus.producer._spool import (
    TYPE_EVENT,
    TYPE_RECORD,
    Spool,
    SpoolFull,
    pack_event,
    pack_record,
    unpack_event,
    unpack_record,
)

PRODUCER = ProducerInfo("kernel", "inst-1", "host", "govbus-python/test")
KIB = 1024


def open_spool(path: Path, *, max_bytes: int = 64 * 1024 * KIB, segment_bytes: int = 64 * KIB) -> Spool:
    return Spool(path, max_bytes=max_bytes, segment_bytes=segment_bytes, producer=PRODUCER)


def write(spool: Spool, payload: bytes, kind: int = TYPE_RECORD) -> int:
    with spool.lock:
        return spool.write(kind, payload)


def read_all(spool: Spool, from_seq: int = 0) -> list[tuple[int, bytes]]:
    reader = spool.reader(from_seq)
    out: list[tuple[int, bytes]] = []
    while batch := reader.read(100):
        out.extend((e.seq, e.payload) for e in batch)
    reader.close()
    return out


def payload(i: int, size: int = 300) -> bytes:
    return (f"record-{i:06d}-".encode() * (size // 14 + 1))[:size]


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    seqs = [write(spool, payload(i)) for i in range(1000)]
    assert seqs == list(range(1000))
    assert len(spool.segments()) > 3  # 300 KB over 64 KiB segments
    assert read_all(spool) == [(i, payload(i)) for i in range(1000)]
    # A reader positioned mid-way (uses the segment index) starts exactly there.
    assert read_all(spool, 777)[0] == (777, payload(777))
    assert len(read_all(spool, 777)) == 223
    spool.close()


def test_reader_follows_a_growing_segment(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    reader = spool.reader(0)
    assert reader.read(10) == []
    write(spool, payload(0))
    write(spool, payload(1))
    assert [e.seq for e in reader.read(10)] == [0, 1]
    assert reader.read(10) == []
    write(spool, payload(2))
    assert [e.seq for e in reader.read(10)] == [2]
    reader.close()
    spool.close()


def test_reopen_recovers_everything_and_continues_the_sequence(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(500):
        write(spool, payload(i))
    spool.close()
    again = open_spool(tmp_path)
    assert again.recovered == 500
    assert again.damage == []
    assert again.next_seq == 500
    assert write(again, b"next") == 500
    assert [s for s, _ in read_all(again)] == list(range(501))
    again.close()


def test_torn_tail_is_reported_and_skipped(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=1024 * KIB)
    for i in range(50):
        write(spool, payload(i))
    spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    # What a kill -9 in the middle of the 51st append leaves: its body half there, header bytes too.
    end = len(data)
    data += bytes(64) + payload(50)[:100]
    data[end : end + 8] = (316).to_bytes(4, "little") + (12345).to_bytes(4, "little")
    segment.write_bytes(bytes(data))
    again = open_spool(tmp_path)
    assert again.recovered == 50
    assert len(again.damage) == 1
    assert "torn tail" in again.damage[0].reason
    assert [s for s, _ in read_all(again)] == list(range(50))
    assert list((tmp_path / "damaged").iterdir())  # a copy for forensics
    again.close()


def test_preallocated_zero_tail_is_not_damage(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=1024 * KIB)
    for i in range(10):
        write(spool, payload(i))
    # No close: the segment is still 1 MiB of which ~3 KB are data (as after a crash).
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    assert segment.stat().st_size == 1024 * KIB
    spool._lock_fd, lock_fd = os.open(os.devnull, os.O_RDONLY), spool._lock_fd
    os.close(lock_fd)  # let a second Spool take the directory, as a restarted process would
    again = open_spool(tmp_path)
    assert again.recovered == 10
    assert again.damage == []
    again.close()


def test_corruption_in_the_middle_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=1024 * KIB)
    for i in range(100):
        write(spool, payload(i))
    spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(segment.read_bytes())
    needle = data.find(payload(40)[:20])
    data[needle + 5] ^= 0xFF  # a flipped bit inside record 40's body
    segment.write_bytes(bytes(data))
    again = open_spool(tmp_path)
    assert [d.reason for d in again.damage] == ["checksum mismatch"]
    assert [s for s, _ in read_all(again)] == [i for i in range(100) if i != 40]
    assert again.recovered == 99
    again.close()


def test_a_foreign_or_headerless_file_is_quarantined(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(20):
        write(spool, payload(i))
    spool.close()
    (tmp_path / "00000000000000999999.seg").write_bytes(b"this is not a spool segment at all")
    again = open_spool(tmp_path)
    assert len(again.damage) == 1
    assert "not a govbus spool segment" in again.damage[0].reason
    assert (tmp_path / "damaged" / "00000000000000999999.seg").exists()
    assert [s for s, _ in read_all(again)] == list(range(20))
    again.close()


def test_spool_is_bounded_in_bytes(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=256 * KIB, segment_bytes=64 * KIB)
    written = 0
    while spool.used + 1017 <= 256 * KIB:
        write(spool, payload(written, 1000))
        written += 1
    with pytest.raises(SpoolFull) as full:
        write(spool, payload(written, 1000))
    assert full.value.limit == 256 * KIB
    assert spool.used <= 256 * KIB
    assert 200 < written < 260
    spool.close()


def test_segments_are_deleted_only_below_the_watermark(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(1000):
        write(spool, payload(i))
    segments = spool.segments()
    used = spool.used
    assert spool.release(0) == 0
    cut = segments[2].last_seq + 1
    freed = spool.release(cut)
    assert freed > 0
    assert spool.used == used - freed
    assert [s.first_seq for s in spool.segments()] == [s.first_seq for s in segments[3:]]
    assert all(not s.path.exists() for s in segments[:3])
    # The active segment is never deleted, even when everything is delivered.
    spool.release(10**9)
    assert spool.segments()[-1].sealed is False
    spool.close()


def test_ack_watermark_survives_restart_and_skips_delivered_records(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(100):
        write(spool, payload(i))
    spool.save_ack(60)
    spool.close()
    again = open_spool(tmp_path)
    assert again.start_watermark == 60
    assert again.recovered == 40
    assert [s for s, _ in read_all(again, again.start_watermark)] == list(range(60, 100))
    again.close()


def test_a_damaged_ack_file_means_replay_everything(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(10):
        write(spool, payload(i))
    spool.save_ack(5)
    spool.close()
    ack = tmp_path / "ack"
    ack.write_bytes(ack.read_bytes()[:-1] + b"\x00")
    again = open_spool(tmp_path)
    assert again.start_watermark == 0
    assert again.recovered == 10
    again.close()


def test_one_process_per_spool_directory(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolLockedError, match="SPOOL_DIR"):
        open_spool(tmp_path)
    spool.close()
    open_spool(tmp_path).close()


def test_rescued_records_are_placed_by_seq(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    # Seqs 10..19 were spooled; 0..9 and 20..24 existed only in memory (published directly).
    for i in range(10, 20):
        with spool.lock:
            spool.write(TYPE_RECORD, payload(i), seq=i)
    with spool.lock:
        spool.seal()
    assert spool.rescue([(i, TYPE_RECORD, payload(i)) for i in [*range(20, 25), *range(10)]]) == 15
    assert [s for s, _ in read_all(spool)] == list(range(25))
    spool.close()
    again = open_spool(tmp_path)
    assert [s for s, _ in read_all(again)] == list(range(25))
    assert again.next_seq == 25
    again.close()


def test_record_payload_round_trip() -> None:
    headers: list[tuple[str, bytes | None]] = [("ce_id", b"abc"), ("empty", b""), ("none", None), ("ünï", b"\x00\xff")]
    key, value, back = unpack_record(pack_record(b"agent-1", b"\xc3\x01value", headers))
    assert (key, value, back) == (b"agent-1", b"\xc3\x01value", headers)
    with pytest.raises(ValueError, match="malformed"):
        unpack_record(pack_record(b"k", b"v", headers)[:-1])


class Level(enum.IntEnum):
    HIGH = 3


text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)
json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
events = st.builds(
    GovernanceEvent,
    agent_id=ids,
    kind=st.sampled_from(list(EventKind)),
    action=text,
    reason=text,
    session_id=st.none() | ids,
    occurred_at=st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.just(UTC)),
    latency_ms=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    attributes=st.dictionaries(text, st.one_of(json_like, st.binary(max_size=20)), max_size=5),
)


@settings(max_examples=200, deadline=None)
@given(
    events, st.none() | st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255), st.none())
)
def test_journaled_event_round_trip(event: GovernanceEvent, trace: tuple[int, int, int, None] | None) -> None:
    back, trace_back = unpack_event(pack_event(event, trace))
    assert back == event
    assert trace_back == trace


def test_journaled_event_with_subclassed_attribute_values() -> None:
    event = GovernanceEvent(agent_id="a", attributes={"level": Level.HIGH, "nested": {"x": (1, Level.HIGH)}})
    back, _ = unpack_event(pack_event(event, None))
    assert back.attributes == {"level": 3, "nested": {"x": (1, 3)}}
    assert type(back.attributes["level"]) is int


def test_events_journaled_in_the_spool_replay_equal(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    originals = list(sample_events(200))
    for event in originals:
        write(spool, pack_event(event, None), TYPE_EVENT)
    spool.close()
    again = open_spool(tmp_path)
    reader = again.reader(0)
    replayed = []
    while batch := reader.read(64):
        for entry in batch:
            assert entry.type == TYPE_EVENT
            assert entry.producer == PRODUCER  # who journaled it, from the segment header
            replayed.append(unpack_event(entry.payload)[0])
    assert replayed == originals
    reader.close()
    again.close()


def test_newer_model_fields_are_journaled_by_name() -> None:
    extras = {"tenant_id": "tenant-1", "policy_version": "bundle-7", "risk_score": 0.25}
    present = {k: v for k, v in extras.items() if k in GovernanceEvent.__dataclass_fields__}
    event = GovernanceEvent(agent_id="a", **present)
    back, _ = unpack_event(pack_event(event, None))
    assert back == event


def test_format_1_journal_entries_still_replay() -> None:
    import marshal

    event = GovernanceEvent(agent_id="a", reason="from an older producer")
    delta = event.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    fields = (1, event.event_id, micros, event.kind.value, event.severity, event.agent_id, None, None, "", None, "")
    fields += (event.reason, None, 0.0, None, None, None, {}, "1", None)
    back, trace = unpack_event(marshal.dumps(fields, 4))
    assert (back, trace) == (event, None)
