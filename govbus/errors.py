"""Typed errors. Every error govbus raises derives from :class:`GovbusError`."""

from __future__ import annotations


class GovbusError(Exception):
    """Root of every error raised by govbus."""


class ConfigError(GovbusError):
    """A setting is missing or invalid. ``setting`` names the environment variable or key."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class InvalidEventError(GovbusError, ValueError):
    """An event failed validation. ``field`` names the offending field (dotted for nested values)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid governance event: field '{field}' {message}")
        self.field = field
        self.message = message


class DecodeError(GovbusError):
    """A record could not be decoded. ``reason`` is a stable, machine-readable code.

    Reasons: ``empty``, ``unknown-framing``, ``truncated``, ``unknown-fingerprint``,
    ``unknown-schema-id``, ``no-registry`` (a Confluent-framed record and no registry configured),
    ``incompatible-schema`` (the schema id names something other than a govbus event schema),
    ``corrupt-body``, ``bad-headers``, ``invalid-event``: the record is bad, and stays bad.
    ``registry-unavailable``: the registry could not be asked; transient (the sink runtime re-reads
    the record later instead of dead-lettering it).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class BrokerError(GovbusError):
    """The local development broker could not be fetched, started or stopped."""
