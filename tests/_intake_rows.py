"""The rows of ``Intake.prepare`` as plain values, to hold the in-place message reader
(native/src/message.rs) to the accessors: two intakes fed copies of the same messages must give
equal rows."""

from __future__ import annotations

from typing import Any

from govbus.consumers._intake import Intake

_WORK = ("topic", "partition", "offset", "epoch", "size", "key", "value", "timestamp_ms", "skip", "replayed")
_RECORD = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "verdict", "line", "event_id")


def plain(row: Any) -> Any:
    """A row with its objects replaced by what they hold (headers as a list)."""
    if row is None:
        return None
    if len(row) == 4:  # (work, authentic, broker_time_ms, legacy): the Work built natively
        work, authentic, broker, legacy = row
        record = work.record
        return (
            "work",
            tuple(getattr(work, s) for s in _WORK),
            list(work.headers),
            None if record is None else (tuple(getattr(record, s) for s in _RECORD), list(record.headers)),
            authentic,
            broker,
            legacy,
        )
    fields = list(row)
    fields[5] = list(fields[5])  # headers
    return ("row", *fields)


def without_reader(intake: Intake) -> Intake:
    """``intake`` reading every message through its accessors (the reference)."""
    intake._reader = None
    return intake
