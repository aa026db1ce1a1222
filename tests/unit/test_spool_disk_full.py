"""A spool on a filesystem that fills up before ``spool_max_bytes``: ENOSPC is "full" (the
``on_spool_full`` policy applies, health is not ok, admission follows ``deny-admission``), health
recovers once space is freed, and a Bus starts on a full disk (no broker here: a refused port)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _await import closed_port, until
from _smallfs import fill, small_filesystem

from govbus._sample import sample_events
from govbus.event import GovernanceEvent
from govbus.producer import Bus, SpoolFullError

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path, 6 * MIB) as point:
        yield point


@pytest.fixture
def make_bus(small_fs: Path) -> Iterator[Callable[..., Bus]]:
    buses: list[Bus] = []

    def make(**producer: Any) -> Bus:
        settings: dict[str, Any] = {
            "spool_dir": str(small_fs / "spool"),
            # Far more than the filesystem holds: the disk fills up first.
            "spool_max_bytes": 256 * MIB,
            "segment_bytes": 1 * MIB,
            **producer,
        }
        bus = Bus(topic="govbus.test", kafka={"bootstrap_servers": closed_port()}, producer=settings)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:  # before the filesystem is unmounted
        bus.close(0.1)


def big_event(i: int) -> GovernanceEvent:
    return GovernanceEvent(agent_id=f"agent-{i % 4}", reason="x" * 2000)


def emit_until_refused(bus: Bus) -> tuple[int, SpoolFullError]:
    for i in range(100_000):
        try:
            bus.emit(big_event(i))
        except SpoolFullError as refusal:
            return i, refusal
    raise AssertionError("the bus never refused an event")


@pytest.mark.parametrize("policy", ["reject", "block", "deny-admission"])
def test_disk_mode_full_filesystem_is_a_full_spool(make_bus: Callable[..., Bus], small_fs: Path, policy: str) -> None:
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (2 * MIB))  # taken by something else; freed below
    bus = make_bus(durability="disk", on_spool_full=policy, block_timeout_ms=100)
    accepted, refusal = emit_until_refused(bus)  # was: SpoolError "[Errno 28] No space left on device"
    assert accepted > 100
    assert refusal.no_space is not None
    assert "No space left" in refusal.no_space
    assert "filesystem is full" in str(refusal)
    assert refusal.policy == policy
    if policy == "block":
        assert "after waiting" in str(refusal)
    health = bus.health()
    assert health.spool_bytes < health.spool_max_bytes // 10  # not spool_max_bytes: the disk
    assert not health.ok
    assert "filesystem full" in health.reason
    assert health.admission_blocked is (policy == "deny-admission")
    assert bus.counters().rejected == 1
    assert bus.counters().submitted == accepted
    with pytest.raises(SpoolFullError):
        bus.emit(big_event(0))  # refused at once, and refused again
    assert bus.counters().rejected == 2

    filler.unlink()  # space comes back: the syncer's probe notices, health recovers
    until(lambda: bus.health().ok)
    assert not bus.health().admission_blocked
    bus.emit(big_event(1))
    assert bus.counters().submitted == accepted + 1


def test_memory_mode_full_filesystem_is_a_full_spool(make_bus: Callable[..., Bus], small_fs: Path) -> None:
    bus = make_bus(queue_max_events=64, on_spool_full="deny-admission")
    filler = fill(small_fs)  # nothing left for the overflow
    for event in sample_events(32):
        bus.emit(event)
    # The broker is away: the sender tries to spool the queue and cannot.
    until(lambda: not bus.health().ok)
    health = bus.health()
    assert "filesystem full" in health.reason
    assert "No space left" in health.reason
    assert health.admission_blocked
    assert health.state == "spooling"
    assert health.queue_depth == 32  # kept in memory, not lost
    assert bus.counters().spooled == 0

    filler.unlink()
    until(lambda: bus.counters().spooled == 32)
    until(lambda: bus.health().ok)
    assert not bus.health().admission_blocked


def test_bus_starts_on_a_full_disk_without_its_spare_segment(make_bus: Callable[..., Bus], small_fs: Path) -> None:
    first = make_bus(durability="disk")
    emitted = list(sample_events(300))
    for event in emitted:
        first.emit(event)
    first.close(0.1)
    fill(small_fs)
    # Was: SpoolError "cannot allocate spare-<pid>.tmp ... No space left on device" at start-up.
    again = make_bus(durability="disk", on_spool_full="reject")
    assert again.counters().recovered == 300
    health = again.health()
    assert not health.ok
    assert "filesystem full" in health.reason
    with pytest.raises(SpoolFullError):
        again.emit(big_event(0))


def test_memory_mode_close_keeps_the_queue_in_what_space_is_left(make_bus: Callable[..., Bus], small_fs: Path) -> None:
    bus = make_bus()
    reserve = small_fs / "reserve"
    reserve.write_bytes(b"\0" * (300 * KIB))
    fill(small_fs)
    reserve.unlink()  # 300 KiB free: less than a segment (1 MiB), more than the events need
    for event in sample_events(200):  # ~150 KB as records
        bus.emit(event)
    until(lambda: "filesystem full" in bus.health().reason)
    bus.close(0.1)  # was: SpoolError from close(), every queued event lost
    assert bus.counters().spooled == 200
    assert bus.counters().failed == 0
    again = make_bus()
    assert again.counters().recovered == 200


def test_memory_mode_close_on_a_full_disk_counts_what_it_cannot_keep(
    make_bus: Callable[..., Bus], small_fs: Path
) -> None:
    bus = make_bus()
    filler = fill(small_fs)
    for event in sample_events(200):
        bus.emit(event)
    until(lambda: "filesystem full" in bus.health().reason)
    bus.close(0.1)  # was: SpoolError out of close(), the spool left locked
    counters = bus.counters()
    assert (counters.submitted, counters.spooled, counters.failed) == (200, 0, 200)
    assert bus.health().last_error is not None
    assert "200 undelivered event(s) could not be kept" in bus.health().last_error
    filler.unlink()
    assert make_bus().counters().recovered == 0  # the directory was released
