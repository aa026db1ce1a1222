"""Stopping a broker this process did not start (the detached dev broker), by pid."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from pathlib import Path

from govbus.errors import BrokerError


def is_kafka_broker(pid: int) -> bool:
    """Whether ``pid`` runs ``kafka.Kafka`` (True where /proc cannot tell us otherwise)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"kafka.Kafka" in cmdline.split(b"\0")


def terminate_pid(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid`` and wait up to ``timeout`` s; then SIGKILL its process group.

    Returns True if it exited on SIGTERM. Uses a pidfd where available: signals cannot hit a
    recycled pid, and its exit is an event to wait for rather than something to poll.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        pidfd = -1
    try:
        _signal(pid, pidfd, signal.SIGTERM)
        if _wait_exit(pid, pidfd, timeout):
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the broker leads its own process group
        if not _wait_exit(pid, pidfd, 10.0):
            raise BrokerError(f"broker pid {pid} survived SIGKILL for 10 s")
        return False
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _signal(pid: int, pidfd: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)


def _wait_exit(pid: int, pidfd: int, timeout: float) -> bool:
    if pidfd >= 0:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited
        return bool(poller.poll(max(timeout, 0.0) * 1000))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) but has exited; /proc tells them apart.
    with contextlib.suppress(OSError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    return True
