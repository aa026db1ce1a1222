"""Errors of the producer library, all rooted in :class:`govbus.errors.GovbusError`."""

from __future__ import annotations

from pathlib import Path

from govbus.errors import GovbusError


class ProducerError(GovbusError):
    """Root of the producer library's errors."""


class BusClosedError(ProducerError):
    """``emit()`` (or ``flush()``) on a bus that was closed."""

    def __init__(self) -> None:
        super().__init__("the bus is closed; create a new Bus to publish again")


class SpoolFullError(ProducerError):
    """The event was NOT accepted: the spool (or, in memory mode, the hand-off queue) is full.

    ``policy`` is the configured ``on_spool_full``; ``used``/``limit`` are bytes (events for the
    queue, see ``what``); ``no_space`` is the filesystem's error when the disk filled up before
    ``spool_max_bytes`` was reached. The caller still owns the event and decides what to do with it.
    """

    def __init__(
        self, policy: str, what: str, used: int, limit: int, waited_s: float = 0.0, no_space: str | None = None
    ) -> None:
        waited = f" after waiting {waited_s:.3f} s" if waited_s else ""
        if no_space is not None:
            detail = (
                f"the {what}'s filesystem is full ({no_space}; {used} of {limit} bytes spooled; policy {policy}). "
                "Free space on it (or give GOVBUS_PRODUCER__SPOOL_DIR a larger one) or restore the broker."
            )
        else:
            detail = (
                f"the {what} is full ({used} of {limit}; policy {policy}). The broker is unreachable or slower "
                "than the kernel; raise GOVBUS_PRODUCER__SPOOL_MAX_BYTES or restore the broker."
            )
        super().__init__(f"event not accepted{waited}: {detail}")
        self.policy = policy
        self.what = what
        self.used = used
        self.limit = limit
        self.no_space = no_space  # set when the filesystem, not spool_max_bytes, is what is full


class ProducerFatalError(ProducerError):
    """librdkafka reported a fatal error: this producer instance cannot publish any more.

    Accepted events are kept in the spool (in memory mode, written there on close) and are
    replayed by the next Bus on the same spool directory.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"fatal producer error {code}: {reason}; close this Bus and create a new one")
        self.code = code
        self.reason = reason


class SpoolError(ProducerError):
    """The spool directory cannot be used (permissions, disk full, held by another process)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"spool {path}: {message}")
        self.path = path
        self.message = message


class SpoolLockedError(SpoolError):
    """Another live process holds the spool directory; each producer process needs its own."""


class RescueError(SpoolError):
    """``rescue()`` wrote ``written`` records and could not write ``lost`` (``message`` says why)."""

    def __init__(self, path: Path, message: str, written: int, lost: int) -> None:
        super().__init__(path, message)
        self.written = written
        self.lost = lost
