"""The rows of ``Intake.prepare`` as plain values, to hold the in-place message reader
(native/src/message.rs) to the accessors: two intakes fed copies of the same messages must give
equal rows."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from govbus._contract import Decoder
from govbus._record import from_record
from govbus.consumers._intake import Intake
from govbus.consumers._spi import DeliveredRecord
from govbus.errors import DecodeError

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


def decoded_record(msg: Any) -> DeliveredRecord | None:
    """The record of a consumed message (``FakeMessage``) as the Python path decodes it (the
    reference of the compiled core's drafts); None: it is not deliverable."""
    try:
        decoded = from_record(msg.value(), msg.headers(), Decoder())
    except DecodeError:
        return None
    ts_type, ts = msg.timestamp()
    return DeliveredRecord(
        decoded.event, decoded.attributes, msg.topic(), msg.partition(), msg.offset(),
        None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts, msg.key(), msg.value() or b"", msg.headers(),
    )  # fmt: skip
