"""The dead-letter-failed mark: how a sink tells observers that a dead letter could not be written.

A sink whose dead letter the broker will not take (dead-letter topic missing, WRITE refused,
record too large for it…) holds the partition: nothing is committed past the record. It then
commits the offset it may commit (everything before it acknowledged and flushed) once more, with
this mark as the commit's *metadata* (Kafka's OffsetCommit carries a string per partition). The
watchdog already reads every sink group's committed offsets, so it sees the mark without a new
topic, ACL or endpoint; the sink needs nothing beyond the READ on its group it commits with. The
next ordinary commit (the dead letter was written, the partition moves on) carries no mark, which
clears it.

Format: ``govbus.dlq-failed `` followed by a JSON object (``record``: the offset of the record
whose dead letter failed, ``dlq``: the dead-letter topic, ``error``: the producer's error, cut to
:data:`MAX_ERROR` characters, ``since_ms``: when it first failed). Kafka bounds the metadata at
``offset.metadata.max.bytes`` (4096 by default); a mark stays well below it.
"""

from __future__ import annotations

import dataclasses
import json

__all__ = ["MARK_PREFIX", "MAX_ERROR", "DlqFailedMark", "format_mark", "parse_mark"]

MARK_PREFIX = "govbus.dlq-failed "
MAX_ERROR = 512


@dataclasses.dataclass(frozen=True, slots=True)
class DlqFailedMark:
    record: int  # offset of the record whose dead letter could not be written
    dlq: str  # the dead-letter topic
    error: str
    since_ms: int


def format_mark(mark: DlqFailedMark) -> str:
    body = {"record": mark.record, "dlq": mark.dlq, "error": mark.error[:MAX_ERROR], "since_ms": mark.since_ms}
    return MARK_PREFIX + json.dumps(body, separators=(",", ":"), ensure_ascii=True)


def parse_mark(metadata: str | None) -> DlqFailedMark | None:
    """The mark in a committed offset's metadata; None for any other metadata (or a damaged mark)."""
    if not metadata or not metadata.startswith(MARK_PREFIX):
        return None
    try:
        body = json.loads(metadata[len(MARK_PREFIX) :])
        return DlqFailedMark(int(body["record"]), str(body["dlq"]), str(body["error"]), int(body["since_ms"]))
    except (ValueError, KeyError, TypeError):
        return None
