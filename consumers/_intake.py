"""The intake stage: size check → verify → decode, turning one consumed record into :class:`Work`.

Order matters: size first (cheapest, and no oversize record reaches the parsers), then the
signature over the raw bytes (untrusted bytes are not parsed before they are authenticated),
then decoding. A record that fails any step becomes a dead letter carrying the step's reason.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_NOT_AVAILABLE

from govbus.consumers._dlq import H_PARTITION
from govbus.consumers._pipeline import Failure, Work
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers._verify import Verification
from govbus.contract import Decoder
from govbus.errors import DecodeError
from govbus.heartbeat import is_heartbeat
from govbus.record import from_record

__all__ = ["Intake"]

_DECODE_ERROR = f"{DecodeError.__module__}.{DecodeError.__qualname__}"


class Intake:
    """Judges consumed records (``confluent_kafka.Message`` or anything with its accessors)."""

    def __init__(
        self,
        decoder: Decoder,
        *,
        verification: Verification | None = None,
        max_record_bytes: int = 1 << 20,
        replay_topic: str | None = None,
        deliver_heartbeats: bool = True,
    ) -> None:
        self.decoder = decoder
        # False: producer heartbeats are acknowledged without delivery (unless they reveal a gap).
        self.deliver_heartbeats = deliver_heartbeats
        self.verification = verification
        self.max_record_bytes = max_record_bytes
        self.replay_topic = replay_topic

    def __call__(self, msg: Any, epoch: int) -> Work:
        topic: str = msg.topic()
        partition: int = msg.partition()
        offset: int = msg.offset()
        value: bytes | None = msg.value()
        key: bytes | None = msg.key()
        headers = msg.headers() or []
        ts_type, ts = msg.timestamp()
        timestamp_ms = None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts
        size = (len(value) if value else 0) + (len(key) if key else 0)
        for _, v in headers:
            if v:
                size += len(v)
        replayed = topic == self.replay_topic
        work = Work(topic, partition, offset, epoch, size, key, value, headers, timestamp_ms, replayed=replayed)
        if value is None:
            work.failure = Failure("decode:empty", "record has no value (tombstone)", exception=_DECODE_ERROR)
            return work
        if len(value) > self.max_record_bytes:
            work.failure = Failure(
                "oversize",
                f"record value is {len(value)} bytes; this sink accepts at most {self.max_record_bytes} "
                "(GOVBUS_SINK__MAX_RECORD_BYTES)",
            )
            return work
        verdict, detail, flagged = "unverified", "", False
        if self.verification is not None:
            signed_partition = partition
            if replayed:
                # Signatures bind the partition the record was first written to.
                original = _header_int(headers, H_PARTITION)
                if original is None:
                    work.failure = Failure("replay:no-origin", f"replayed record lacks a valid {H_PARTITION} header")
                    return work
                signed_partition = original
            action, verdict, detail = self.verification.judge(
                value,
                key,
                headers,
                signed_partition,
                broker_time_ms=ts if ts_type == TIMESTAMP_LOG_APPEND_TIME else None,
                replayed=replayed,
            )
            if action == "dead-letter":
                work.failure = Failure(f"verify:{verdict}", detail or verdict, verdict=verdict)
                return work
            if action == "skip":
                work.skip = f"verify:{verdict}"
                return work
            flagged = action == "flag"
        try:
            decoded = from_record(value, headers, self.decoder)
        except DecodeError as exc:
            work.failure = Failure(
                f"decode:{exc.reason}",
                exc.message,
                verdict=None if verdict == "unverified" else verdict,
                exception=_DECODE_ERROR,
                transient=exc.transient,
            )
            return work
        if not self.deliver_heartbeats and not flagged and is_heartbeat(decoded.event):
            work.skip = "heartbeat"
            return work
        work.record = DeliveredRecord(
            decoded.event,
            decoded.attributes,
            topic,
            partition,
            offset,
            timestamp_ms,
            key,
            value,
            headers,
            verdict,
            detail,
            flagged,
        )
        return work


def _header_int(headers: Any, name: str) -> int | None:
    raw = None
    for h, v in headers:
        if h == name:
            raw = v
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None
