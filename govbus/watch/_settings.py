"""Watchdog settings (``GOVBUS_WATCH__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WatchSettings(BaseModel):
    """``govbus watch``: what to watch, how long silence may last, where alerts go."""

    model_config = ConfigDict(extra="forbid")

    # The topic to watch; None: GOVBUS_TOPIC.
    topic: str | None = None
    # Alerts are governance events (kind anomaly_detected, action govbus.watch.<alert>) here.
    alerts_topic: str = Field(default="govbus.alerts", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    alerts_partitions: int = Field(default=1, ge=1)
    group_id: str = Field(default="govbus.watch", min_length=1)
    # Where a new watchdog group starts reading; a restarted one resumes from its commits.
    auto_offset_reset: Literal["earliest", "latest"] = "latest"
    # A stream is silent after (its heartbeat interval) x silent_factor without any record of it.
    silent_factor: float = Field(default=3.0, ge=1.5, le=1000)
    # A sink partition that lags with its committed offset unmoved this long (members alive) is stalled.
    stall_after_s: float = Field(default=30.0, gt=0, le=86_400)
    # How often the consumer groups are read (lag, members, classes).
    groups_interval_s: float = Field(default=2.0, gt=0, le=3600)
    group_prefix: str = Field(default="govbus.sink.", min_length=1)
    # /healthz and /metrics; port 0: any free port. Loopback unless told otherwise (containers: 0.0.0.0).
    host: str = "127.0.0.1"
    port: int = Field(default=9465, ge=0, le=65535)
    metrics_enabled: bool = True
