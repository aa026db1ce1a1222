"""Crashes: a kernel killed with SIGKILL in disk mode, and a broker killed with SIGKILL mid-stream.

The kernel runs in its own process (tests/system/producer_kernel.py) and prints each event id only
after ``emit()`` returned for it. After the kill, a new Bus on the same spool directory replays what
was not delivered; the topic must then hold every reported event.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from integration.producer_fixtures import bus_settings, check_delivery, consume

from govbus._sample import sample_events
from govbus.localkafka import LocalBroker
from govbus.producer import Bus

pytestmark = pytest.mark.system

KERNEL = Path(__file__).with_name("producer_kernel.py")
_ID = re.compile(r"[0-9a-f]{32}")


def run_kernel_and_kill(bootstrap: str, topic: str, spool: Path, *, kill_after: int, total: int = 40_000) -> list[str]:
    """Start the kernel, SIGKILL it once it reported ``kill_after`` events; every id it reported."""
    proc = subprocess.Popen(
        [sys.executable, str(KERNEL), bootstrap, topic, str(spool), str(total), "disk"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        reported: list[str] = []
        for line in proc.stdout:
            reported.append(line.strip())
            if len(reported) >= kill_after:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: no close(), no flush, no atexit
        proc.wait(30)
        reported += proc.stdout.read().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "done" not in reported, "the kernel finished before it was killed; raise total"
    return [i for i in reported if _ID.fullmatch(i)]  # the last line may have been cut by the kill


def recover(bootstrap: str, topic: str, spool: Path) -> tuple[int, int]:
    """A new kernel on the same spool: (events recovered from the spool, events delivered)."""
    with Bus(bus_settings(bootstrap, topic, spool, durability="disk")) as bus:
        recovered = bus.counters().recovered
        assert bus.flush(120)
        return recovered, bus.counters().delivered


def test_sigkilled_kernel_in_disk_mode_loses_nothing_that_emit_accepted(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    reported = run_kernel_and_kill(kafka_bootstrap, topic, tmp_path, kill_after=8000)
    recovered, delivered = recover(kafka_bootstrap, topic, tmp_path)
    assert delivered == recovered
    on_topic = {c.event.event_id for c in consume(kafka_bootstrap, topic, len(reported), settle=2.0)}
    missing = [i for i in reported if i not in on_topic]
    assert not missing, f"{len(missing)} of {len(reported)} accepted events are not on the topic"


def test_sigkilled_kernel_while_the_broker_is_down_replays_the_spool(
    kafka_bootstrap: str, local_broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    local_broker.stop()
    reported = run_kernel_and_kill(kafka_bootstrap, topic, tmp_path, kill_after=5000)
    assert len(list(tmp_path.glob("*.seg"))) >= 1
    local_broker.start()
    recovered, delivered = recover(kafka_bootstrap, topic, tmp_path)
    assert recovered >= len(reported)  # everything emit() accepted was in the spool
    assert delivered == recovered
    consumed = consume(kafka_bootstrap, topic, len(reported), settle=2.0)
    on_topic = {c.event.event_id for c in consumed}
    assert not [i for i in reported if i not in on_topic]
    assert len(consumed) == len(on_topic)  # nothing had been delivered before: none twice


def test_broker_killed_mid_stream_loses_nothing(
    kafka_bootstrap: str, local_broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    emitted = list(sample_events(6000, agents=10))
    done = threading.Event()

    def kernel(bus: Bus) -> None:
        for i, event in enumerate(emitted):
            bus.emit(event)
            if i % 10 == 9:
                time.sleep(0.002)
        done.set()

    with Bus(bus_settings(kafka_bootstrap, topic, tmp_path)) as bus:
        emitter = threading.Thread(target=kernel, args=(bus,))
        emitter.start()
        deadline = time.monotonic() + 30
        while bus.counters().delivered < 1500 and time.monotonic() < deadline:
            time.sleep(0.01)
        local_broker.kill()  # a crash, not a shutdown
        time.sleep(1.0)
        local_broker.start()
        emitter.join()
        assert bus.flush(120)
        counters = bus.counters()
    assert done.is_set()
    assert counters.failed == 0
    # At least once across a broker crash; the idempotent producer normally prevents duplicates.
    check_delivery(consume(kafka_bootstrap, topic, 6000), emitted, partitions=3, allow_duplicates=True)
