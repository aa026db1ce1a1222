"""The gate's policy: which checks admission requires, read from a YAML or JSON file.

A malformed file fails at start-up with a :class:`ConfigError` naming the offending key
(``checks.sinks[0].max_lag``), never later on an admission path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from govbus._sinkclass import SinkClass
from govbus.errors import ConfigError


class _Strict(BaseModel):
    # A misspelt key in a policy must not silently disable a check.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Debounce(_Strict):
    """Consecutive results needed to change a check's state: fail fast, recover only when stable."""

    fail_after: int = Field(default=1, ge=1, le=100)
    pass_after: int = Field(default=2, ge=1, le=100)


class BrokerCheck(_Strict):
    enabled: bool = True
    timeout_s: float = Field(default=2.0, gt=0, le=60)


class TopicCheck(_Strict):
    enabled: bool = True
    name: str | None = None  # None: the topic from settings (GOVBUS_TOPIC)
    min_partitions: int = Field(default=1, ge=1)
    # Every partition's in-sync replica set must be at least the topic's min.insync.replicas.
    require_min_isr: bool = True


class ProducerCheck(_Strict):
    enabled: bool = True
    # Deny when the spool is fuller than this fraction of its bound (the producer's high-water mark).
    max_spool_fraction: float = Field(default=0.8, gt=0, le=1)


class SinkRequirement(_Strict):
    name: str = Field(min_length=1)
    group: str | None = None  # None: govbus.sink.<name>
    min_members: int = Field(default=1, ge=1)
    max_lag: int | None = Field(default=None, ge=0)

    @property
    def group_id(self) -> str:
        return self.group or f"govbus.sink.{self.name}"


class ClassCheck(_Strict):
    """How ``required_classes`` judges a sink group healthy: members alive, lag within ``max_lag``
    (None: any), no partition stalled (lagging with its committed offset unmoved for
    ``stall_after_s`` while the group has members). A group's class is the one its members
    declare in their client.id (docs/sinks.md "Sink classes")."""

    max_lag: int | None = Field(default=None, ge=0)
    stall_after_s: float = Field(default=30.0, gt=0, le=86_400)
    group_prefix: str = Field(default="govbus.sink.", min_length=1)


class SigningCheck(_Strict):
    enabled: bool = False


class Checks(_Strict):
    broker: BrokerCheck = Field(default_factory=BrokerCheck)
    topic: TopicCheck = Field(default_factory=TopicCheck)
    producer: ProducerCheck = Field(default_factory=ProducerCheck)
    sinks: tuple[SinkRequirement, ...] = ()
    classes: ClassCheck = Field(default_factory=ClassCheck)
    signing: SigningCheck = Field(default_factory=SigningCheck)

    @model_validator(mode="after")
    def _unique_sinks(self) -> Checks:
        names = [s.name for s in self.sinks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sink(s) listed twice: {', '.join(dupes)}")
        return self


class GatePolicy(_Strict):
    """What the bus must be able to do before an agent is admitted."""

    mode: Literal["enforce", "observe"] = "enforce"
    refresh_interval_s: float = Field(default=1.0, gt=0, le=300)
    # A snapshot older than this is as good as a failed one (the refresher itself may be stuck).
    max_staleness_s: float = Field(default=5.0, gt=0, le=3600)
    debounce: Debounce = Field(default_factory=Debounce)
    checks: Checks = Field(default_factory=Checks)
    # Admission needs this many healthy sink groups of each class, e.g. {audit: 1, siem: 1}.
    required_classes: dict[SinkClass, Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _debounce_shorthand(cls, data: Any) -> Any:
        # `debounce: 3` means three in a row either way.
        if isinstance(data, dict) and isinstance(data.get("debounce"), int):
            k = data["debounce"]
            data = {**data, "debounce": {"fail_after": k, "pass_after": k}}
        return data

    @model_validator(mode="after")
    def _staleness_covers_refresh(self) -> GatePolicy:
        if self.max_staleness_s < self.refresh_interval_s:
            raise ValueError(
                f"max_staleness_s ({self.max_staleness_s}) is below refresh_interval_s ({self.refresh_interval_s}): "
                "every snapshot would be stale"
            )
        return self


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<policy>"


def parse_policy(data: Any, origin: str = "<policy>") -> GatePolicy:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(origin, f"a policy must be a mapping at the top level, got {type(data).__name__}")
    try:
        return GatePolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if isinstance(p, int | str))
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{origin}: {_key(loc)}", msg) from None


def load_policy(path: Path | str | None, overrides: dict[str, Any] | None = None) -> GatePolicy:
    """The policy from ``path`` (YAML or JSON; None: defaults) with top-level ``overrides`` applied."""
    data: Any = {}
    origin = "<policy>"
    if path is not None:
        p = Path(path)
        origin = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(origin, f"cannot read the policy file: {exc.strerror}") from None
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(origin, f"not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from None
    if overrides and isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_policy(data, origin)
