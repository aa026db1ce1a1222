"""The producer's settings: ``GOVBUS_PRODUCER__<FIELD>`` (nested under the root ``GovbusSettings``).

Sizes are bytes, times milliseconds. Every bound that protects memory or disk is explicit here, so
a kernel can reason about the worst case without reading the code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

Durability = Literal["memory", "disk"]
SpoolFullPolicy = Literal["block", "reject", "deny-admission"]
KeyBy = Literal["agent_id", "session_id"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]

_MIB = 1024 * 1024


def default_spool_dir() -> Path:
    """``$XDG_STATE_HOME/govbus/spool`` (``~/.local/state/govbus/spool``): per user, survives reboots."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "govbus" / "spool"


class ProducerSettings(BaseModel):
    """How the producer library publishes, spools and applies back-pressure."""

    # Who publishes: the logical kernel name (ProducerInfo.name) and the CloudEvents source override.
    name: str = Field(default="govbus-kernel", min_length=1, max_length=256)
    source: str | None = None
    key_by: KeyBy = "agent_id"
    # The writer schema (contract version) to encode with; None: the newest shipped. Pin an older
    # one while consumers are not all upgraded; emit() then refuses events it cannot carry.
    schema_version: int | None = None
    # How record values are framed: Avro single-object encoding (no registry needed), or the
    # Confluent wire format (00 + schema id), which needs GOVBUS_REGISTRY__URL. Consumers read both.
    framing: Literal["single-object", "confluent"] = "single-object"

    # Durability: "memory" keeps events in memory until the broker acknowledges them (spooling to
    # disk only while the broker is away or librdkafka's queue is full); "disk" writes every event
    # to the spool before emit() returns and fsyncs at most fsync_interval_ms later.
    durability: Durability = "memory"
    fsync_interval_ms: int = Field(default=50, ge=0, le=10_000)  # 0: fsync inside every emit()

    # The spool: one directory per producer process (locked), bounded in bytes.
    spool_dir: Path = Field(default_factory=default_spool_dir)
    spool_max_bytes: int = Field(default=1024 * _MIB, ge=1 * _MIB)
    segment_bytes: int = Field(default=64 * _MIB, ge=64 * 1024)

    # A signed heartbeat per partition written to, this often (also when idle; 0: none). The
    # watchdog (govbus watch) reports a producer silent after heartbeat_interval_ms x its factor.
    heartbeat_interval_ms: int = Field(default=5_000, ge=0, le=3_600_000)

    # When the spool (or, in memory mode, the hand-off queue) is full.
    on_spool_full: SpoolFullPolicy = "block"
    block_timeout_ms: int = Field(default=1_000, ge=0, le=600_000)
    # deny-admission: the gate is told to deny from this fill fraction on (and until it is 10 % lower).
    admission_high_water: float = Field(default=0.9, gt=0.1, le=1.0)

    # Memory bounds: events between emit() and the sender thread, and librdkafka's own queue.
    queue_max_events: int = Field(default=100_000, ge=16)
    kafka_queue_max_messages: int = Field(default=100_000, ge=16)
    kafka_queue_max_kbytes: int = Field(default=256 * 1024, ge=1024)

    # Batching and compression (librdkafka linger.ms, batch.size, compression.type).
    linger_ms: float = Field(default=5.0, ge=0, le=900_000)
    batch_bytes: int = Field(default=1_000_000, ge=1024)
    compression: Compression = "lz4"

    # How often to re-read the topic's partition count while connected.
    metadata_refresh_ms: int = Field(default=30_000, ge=100)
    # How long close() waits for outstanding deliveries before spooling what is left.
    close_timeout_ms: int = Field(default=10_000, ge=0)

    # The process's cyclic GC: young collections wait for at least this many new container objects
    # (CPython's default 700; the sink CLI uses 50 000). 0 leaves the process's collector alone:
    # thresholds are per process, so raising them is the kernel owner's choice (docs/native.md).
    gc_gen0_threshold: int = Field(default=0, ge=0, le=10_000_000)

    # Any other librdkafka producer property (GOVBUS_PRODUCER__LIBRDKAFKA='{"socket.nagle.disable": true}').
    librdkafka: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _shipped(cls, value: int | None) -> int | None:
        from govbus._contract import schema_versions

        shipped = [v.version for v in schema_versions()]
        if value is not None and value not in shipped:
            raise ValueError(f"no shipped schema version {value}; shipped: {shipped}")
        return value

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str | Path) else value

    @field_validator("segment_bytes")
    @classmethod
    def _segment(cls, value: int, info: ValidationInfo) -> int:
        limit = info.data.get("spool_max_bytes")
        # Space is freed a segment at a time; with fewer than 4 the spool is "full" far too early.
        if isinstance(limit, int) and value * 4 > limit:
            raise ValueError(f"must be at most a quarter of spool_max_bytes ({limit}), got {value}")
        return value

    @field_validator("librdkafka")
    @classmethod
    def _no_overrides_of_guarantees(cls, value: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(value) & _GUARANTEES)
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be changed: the no-loss guarantees depend on them")
        return value

    def librdkafka_producer(self) -> dict[str, Any]:
        """The producer-specific librdkafka properties (merged over ``KafkaSettings.librdkafka()``)."""
        conf: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            # Retry forever: a message leaves librdkafka's queue delivered or with a permanent error,
            # never because a timer ran out (that would reorder it behind later events on retry).
            "message.timeout.ms": 0,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_bytes,
            "compression.type": self.compression,
            "queue.buffering.max.messages": self.kafka_queue_max_messages,
            "queue.buffering.max.kbytes": self.kafka_queue_max_kbytes,
            "partitioner": "murmur2_random",  # only used if a record has no partition (never by us)
        }
        conf.update(self.librdkafka)
        return conf


_GUARANTEES = frozenset(
    {"enable.idempotence", "acks", "request.required.acks", "message.timeout.ms", "delivery.timeout.ms"}
)
