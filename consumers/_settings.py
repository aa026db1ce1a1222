"""Sink runtime settings: the ``sink`` section of the settings tree (``GOVBUS_SINK__*``).

``GOVBUS_SINK__BATCH__MAX_RECORDS=1000`` sets ``settings.sink.batch.max_records``. Sink-specific
options are free-form strings: ``GOVBUS_SINK__OPTIONS__PATH=/var/log/govbus.jsonl`` passes
``path="/var/log/govbus.jsonl"`` to the sink's constructor.
"""

from __future__ import annotations

import os
import re
import socket
import string
from pathlib import Path
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "Action",
    "BatchSettings",
    "BreakerSettings",
    "DeadLetterSettings",
    "HealthSettings",
    "InflightSettings",
    "RetrySettings",
    "SinkRuntimeSettings",
    "VerdictPolicy",
    "VerifySettings",
]

Action: TypeAlias = Literal["deliver", "flag", "skip", "dead-letter"]
_TEMPLATE_FIELDS = {"topic", "sink"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchSettings(_Section):
    """A batch closes at whichever limit comes first."""

    max_records: int = Field(default=500, ge=1, le=100_000)
    max_bytes: int = Field(default=1 << 20, ge=1)
    # Small by default: at 1k events/s the linger, not the sink, dominates end-to-end latency.
    max_wait_ms: int = Field(default=10, ge=0, le=60_000)


class InflightSettings(_Section):
    """Records consumed but not yet acknowledged, per process. At the limit the consume loop
    waits for the sink; a budget full for ``pause_after_ms`` (or a sink backing off) pauses the
    partitions, which resume once in-flight falls to ``resume_ratio`` of the limits (hysteresis,
    so a stalled sink does not make the consumer pause and resume on every batch)."""

    max_records: int = Field(default=5_000, ge=1)
    max_bytes: int = Field(default=16 << 20, ge=1)
    resume_ratio: float = Field(default=0.5, gt=0, le=1)
    # Why wait before pausing: librdkafka's pause() drops the partitions' pre-fetched records and
    # its fetcher notices the resume() only at its next wake-up, up to ~1 s later (measured:
    # 945-956 ms from resume to the first record, librdkafka 2.16). Pausing whenever the budget
    # filled cost a sink slower than its intake most of its rate (otlp through the runtime: 11k
    # against 31k events/s waiting instead). The wait holds no more memory: librdkafka's own
    # pre-fetch queue (fetch_queue_kbytes) bounds what it fetches meanwhile. 0: pause at once.
    pause_after_ms: int = Field(default=1_000, ge=0, le=60_000)


class RetrySettings(_Section):
    """Exponential backoff with jitter for transient failures (sink errors, ``RetryLater``,
    dead-letter produce errors). ``max_elapsed_s`` None retries forever: the records wait in
    Kafka, nothing is lost; set it to dead-letter a batch (reason ``sink:retries-exhausted``)
    that has failed for that long."""

    initial_backoff_ms: int = Field(default=100, ge=1)
    max_backoff_ms: int = Field(default=30_000, ge=1)
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: float = Field(default=0.5, ge=0.0, le=1.0)
    max_elapsed_s: float | None = Field(default=None, gt=0)

    @field_validator("max_backoff_ms")
    @classmethod
    def _order(cls, value: int, info: ValidationInfo) -> int:
        initial = info.data.get("initial_backoff_ms")
        if initial is not None and value < initial:
            raise ValueError(f"must be >= initial_backoff_ms ({initial})")
        return value


class BreakerSettings(_Section):
    """After ``failure_threshold`` consecutive failed writes the breaker opens: no write for
    ``open_ms``, then one trial write (half-open) closes it again or reopens it."""

    failure_threshold: int = Field(default=5, ge=1)
    open_ms: int = Field(default=10_000, ge=1)


class DeadLetterSettings(_Section):
    """Dead-letter topics. ``{topic}`` is the original topic, ``{sink}`` the sink instance name.

    Disabling dead-lettering does not drop poison records: the sink stops at the first one
    (retrying, not ready) until an operator intervenes.
    """

    enabled: bool = True
    topic_template: str = "{topic}.dlq.{sink}"
    # Where `govbus dlq replay` puts dead letters back; only this sink's group reads it.
    replay_topic_template: str = "{topic}.replay.{sink}"
    create_topics: bool = True
    partitions: int = Field(default=1, ge=1)
    # Dead letters carry the original bytes plus headers, so allow more than a normal record.
    max_message_bytes: int = Field(default=16 << 20, ge=1024)

    @field_validator("topic_template", "replay_topic_template")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        if not fields <= _TEMPLATE_FIELDS or "topic" not in fields:
            raise ValueError(f"must contain {{topic}} and may contain {{sink}}; got {value!r}")
        return value


class VerdictPolicy(_Section):
    """What to do with a record per verification verdict (``valid`` is always delivered).

    ``flag`` delivers with ``DeliveredRecord.flagged`` set and counts it; ``skip`` acknowledges
    without delivering and counts it; ``dead-letter`` sends it to the dead-letter topic.
    ``other`` applies to verdicts this version does not know (fail safe).
    """

    gap: Action = "flag"
    reordered: Action = "flag"
    replay: Action = "skip"
    bad_signature: Action = "dead-letter"
    unknown_kid: Action = "dead-letter"
    revoked_kid: Action = "dead-letter"
    expired_kid: Action = "dead-letter"
    malformed: Action = "dead-letter"
    other: Action = "dead-letter"

    def action(self, code: str) -> Action:
        if code == "valid":
            return "deliver"
        field = code.replace("-", "_")
        if field in type(self).model_fields:
            value: Action = getattr(self, field)
            return value
        return self.other


class VerifySettings(_Section):
    """Signature verification before delivery.

    ``mode``: ``auto`` verifies when a keyring is configured (this ``keyring``, else
    ``GOVBUS_SIGNING__KEYRING``) and delivers unverified otherwise; ``required`` refuses to start
    without one; ``off`` never verifies.
    """

    mode: Literal["auto", "required", "off"] = "auto"
    keyring: Path | None = None
    policy: VerdictPolicy = Field(default_factory=VerdictPolicy)


class HealthSettings(_Section):
    """The HTTP endpoint (``/healthz``, ``/readyz``, ``/metrics``). Port 0 picks a free port.

    Bound to loopback by default; in a container set ``host=0.0.0.0`` so probes can reach it.
    ``/readyz`` fails when records have waited longer than ``stuck_after_s`` without any
    acknowledgement, and ``/healthz`` when the consume loop has not turned for ``live_after_s``.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    stuck_after_s: float = Field(default=60.0, gt=0)
    live_after_s: float = Field(default=30.0, gt=0)


class SinkRuntimeSettings(_Section):
    """The sink runtime (``govbus sink run``)."""

    # Instance name: the consumer group, dead-letter topic and metrics use it. Defaults to the
    # sink's entry-point name; set it to run two differently configured sinks of one kind.
    instance: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,100}$")
    # Defaults to govbus.sink.<instance>; the policy gate finds sinks by that prefix.
    group_id: str | None = None
    # Static group membership (KIP-345): librdkafka's group.instance.id. None derives it from the
    # host name (a pod's name) and the instance name; "" turns static membership off.
    # The runtime appends ".<digest of the subscribed topics>" (9 characters).
    group_instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{0,240}$")
    # Defaults to the top-level GOVBUS_TOPIC.
    topic: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    # The sink's class (audit, siem, observability, debug); None: what the sink declares, else the
    # shipped default (govbus.consumers._classes.SHIPPED_CLASSES). The gate's required_classes
    # counts sinks by it; audit and siem never skip records (docs/sinks.md "Sink classes").
    sink_class: Literal["audit", "siem", "observability", "debug"] | None = None
    # Producer heartbeats (docs/signing.md §16): "auto" delivers them to audit sinks (the ledger
    # records them) and skips them elsewhere; a heartbeat that reveals a gap is always delivered.
    heartbeats: Literal["auto", "skip", "deliver"] = "auto"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    commit_interval_ms: int = Field(default=1_000, ge=10)
    # Bounds: how long a revocation waits for in-flight records of the revoked partitions, and
    # how long SIGTERM waits for in-flight records before abandoning them (they are redelivered).
    revoke_timeout_s: float = Field(default=5.0, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # Larger records are dead-lettered (reason "oversize") before they are verified or decoded.
    max_record_bytes: int = Field(default=1 << 20, ge=64)
    # librdkafka's pre-fetch queue; together with the in-flight budget it bounds memory. librdkafka's
    # own default: 16 MiB held one sink process to ~58k events/s whatever its per-event cost (a
    # null sink too; docs/sinks.md), 64 MiB let it reach ~110k.
    fetch_queue_kbytes: int = Field(default=65_536, ge=64)
    # The native check + render of a consumed batch on a thread of its own while the next batch is
    # consumed (docs/native.md). Off: measured slower on 2 cores, where the consume loop then holds
    # the GIL against the delivery worker; for hosts where that trade pays.
    intake_thread: bool = False
    stats_interval_ms: int = Field(default=5_000, ge=0)
    # Any other librdkafka consumer property, e.g. {"session.timeout.ms": 6000}.
    consumer: dict[str, str | int | float | bool] = Field(default_factory=dict)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    inflight: InflightSettings = Field(default_factory=InflightSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    dlq: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)

    def group_for(self, name: str) -> str:
        return self.group_id or f"govbus.sink.{self.instance or name}"

    def instance_id_for(self, name: str) -> str | None:
        """The base of the consumer's ``group.instance.id``, or None for dynamic membership.

        Derived as ``<host>.<instance>``: a restarted process on the same host (a container
        restarted in its pod) takes over its predecessor's partitions at once instead of waiting
        out ``session.timeout.ms``. Two live processes with one id fence each other, so two
        instances of one sink on one host need distinct ``GOVBUS_SINK__GROUP_INSTANCE_ID``s.
        """
        if self.group_instance_id is not None:
            return self.group_instance_id or None
        host = os.environ.get("HOSTNAME") or socket.gethostname() or "localhost"
        host = re.sub(r"[^A-Za-z0-9._-]", "-", host)[:139]  # what the broker accepts, <= 249 in all
        return f"{host}.{self.instance or name}"

    def dlq_topic(self, topic: str, sink: str) -> str:
        return self.dlq.topic_template.format(topic=topic, sink=sink)

    def replay_topic(self, topic: str, sink: str) -> str:
        return self.dlq.replay_topic_template.format(topic=topic, sink=sink)
