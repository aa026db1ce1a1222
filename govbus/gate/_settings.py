"""Gate settings (``GOVBUS_GATE__*``): where the policy is, and overrides of its top-level keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field


class GateSettings(BaseModel):
    policy_file: Path | None = None
    mode: Literal["enforce", "observe"] | None = None
    refresh_interval_s: float | None = Field(default=None, gt=0)
    max_staleness_s: float | None = Field(default=None, gt=0)
    # Out of process (the readiness probe), the producer's health comes from the file the Bus
    # writes into its spool directory; older than this counts as unhealthy.
    producer_health_max_age_s: float = Field(default=10.0, gt=0)

    def overrides(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "refresh_interval_s": self.refresh_interval_s,
            "max_staleness_s": self.max_staleness_s,
        }
