"""Console settings: the ``console`` section of the settings tree (``GOVBUS_CONSOLE__*``).

``GOVBUS_CONSOLE__PORT=8470`` sets ``settings.console.port``. Bound to loopback by default; any
other host requires a token or basic-auth credentials (checked at start-up, naming the variable).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

__all__ = ["ConsoleSettings", "is_loopback"]

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConsoleSettings(BaseModel):
    """``govbus console``. Field order matters: ``host`` is validated against the credentials above it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Authentication: a bearer token (also accepted once as ?token=, then kept in a cookie) and/or
    # HTTP basic credentials. Enforced whenever set; required when the host is not loopback.
    token: SecretStr | None = None
    basic_user: str | None = None
    basic_password: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    # Replaying a dead letter and pausing/resuming a sink change the bus: off unless enabled here,
    # and each one asks for a confirmation.
    actions_enabled: bool = False
    # Sink name -> base URL of its health server (/status, /metrics, /control), e.g.
    # GOVBUS_CONSOLE__SINK_HEALTH_URLS='{"audit": "http://audit:9464"}'.
    sink_health_urls: dict[str, str] = Field(default_factory=dict)
    # The audit sink's ledger file and the keyring its checkpoints/events verify with (default:
    # GOVBUS_SIGNING__KEYRING). Unset ledger: the audit page says so.
    audit_ledger: Path | None = None
    audit_keyring: Path | None = None
    # The gate policy the console evaluates (default: GOVBUS_GATE__POLICY_FILE, else the defaults).
    gate_policy: Path | None = None
    # How often the background collector reads the cluster; pages serve from its cache.
    refresh_s: float = Field(default=2.0, ge=0.2, le=300)
    # Every admin call and scrape is bounded by this; an unreachable broker never holds a page.
    timeout_s: float = Field(default=3.0, gt=0, le=60)
    audit_verify_interval_s: float = Field(default=15.0, ge=1, le=3600)
    events_kept: int = Field(default=1000, ge=10, le=100_000)
    dead_letters_kept: int = Field(default=200, ge=1, le=10_000)
    history_points: int = Field(default=300, ge=10, le=10_000)

    @field_validator("basic_password")
    @classmethod
    def _pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (value is None) != (info.data.get("basic_user") is None):
            raise ValueError("set both basic_user and basic_password, or neither")
        return value

    @field_validator("host")
    @classmethod
    def _auth_off_loopback(cls, value: str, info: ValidationInfo) -> str:
        authed = info.data.get("token") is not None or info.data.get("basic_password") is not None
        if not is_loopback(value) and not authed:
            raise ValueError(
                f"the console binds {value!r}, which is not loopback: set GOVBUS_CONSOLE__TOKEN or "
                "GOVBUS_CONSOLE__BASIC_USER and GOVBUS_CONSOLE__BASIC_PASSWORD"
            )
        return value

    @field_validator("sink_health_urls")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"sink {name!r}: expected an http(s):// URL")
        return {name: url.rstrip("/") for name, url in value.items()}

    @property
    def auth_required(self) -> bool:
        return self.token is not None or self.basic_password is not None
