"""A small real filesystem for tests of a full disk: a tmpfs of a given size mounted on a temporary
directory (the tests run as root, as in CI), unmounted at teardown.

``small_filesystem(base, size)`` is a context manager yielding the mount point; when mounting is not
possible on this machine the test is skipped with the exact error as the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(base: Path, size: int) -> Iterator[Path]:
    point = base / f"smallfs-{size}"
    point.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot mount a small filesystem: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem: {done.stderr.strip() or done.returncode}")
    try:
        yield point
    finally:
        # Lazy: a file a failed test left open must not fail the teardown.
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Take every free byte of ``directory``'s filesystem with one file; delete it to free them."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            chunk = b"\xa5" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path
