"""Typed errors. Every error govbus raises derives from :class:`GovbusError`.

The whole tree, drawn here once (``tests/unit/test_error_tree.py`` checks that every
``GovbusError`` subclass in the package is in it and importable from a public module)::

    GovbusError                         govbus.errors
    ├── ConfigError                     govbus.errors         a setting is missing or invalid (.setting)
    ├── InvalidEventError (ValueError)  govbus.errors         an event failed validation (.field)
    ├── DecodeError                     govbus.errors         a record does not decode (.reason: DecodeReason)
    ├── BrokerError                     govbus.errors         the local development broker (govbus broker)
    ├── TopicError                      govbus.errors         a topic cannot be created or has no leader
    ├── AclError                        govbus.errors         ACLs could not be created (acl apply)
    ├── SchemaInvalidError (ValueError) govbus.errors         a shipped schema does not parse
    ├── RegistryError                   govbus.errors         a schema registry operation failed (.status)
    ├── SigningError                    govbus.signing
    │   ├── KeyFileError                govbus.signing        a private key file (.path)
    │   │   └── InsecureKeyFileError    govbus.signing        group/other may read it (.mode)
    │   ├── KeyringError                govbus.signing        a keyring (JWKS) file or entry
    │   └── SignInputError (ValueError) govbus.signing        a record the signer refuses (.index)
    ├── ProducerError                   govbus.producer
    │   ├── BusClosedError              govbus.producer       emit() on a closed bus
    │   ├── SpoolFullError              govbus.producer       the event was NOT accepted
    │   ├── ProducerFatalError          govbus.producer       librdkafka's fatal error: publish no more
    │   └── SpoolError                  govbus.producer       the spool directory cannot be used
    │       ├── SpoolLockedError        govbus.producer       another process holds it
    │       └── RescueError             govbus.producer       close() could not keep some events (.lost)
    └── SinkError                       govbus.consumers      a sink cannot be loaded, built or run
        ├── SinkNotFoundError           govbus.consumers      no such entry point
        ├── DeadLetterError             govbus.consumers      a dead letter not written yet (retried)
        │   └── DeadLetterFatalError    govbus.consumers      the dead-letter producer failed fatally
        └── LedgerError                 govbus.consumers.sinks  the audit sink's ledger

Transient or permanent is carried by the type, not by a list of strings kept elsewhere:
:class:`DecodeReason` says per reason (:attr:`DecodeReason.transient`), and
:attr:`DecodeError.transient` passes it on; the sink runtime re-reads a record whose decoding
failed transiently instead of dead-lettering it. Signature verdicts are
:class:`govbus.signing.VerdictCode` members (returned, never raised).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AclError",
    "BrokerError",
    "ConfigError",
    "DecodeError",
    "DecodeReason",
    "GovbusError",
    "InvalidEventError",
    "RegistryError",
    "SchemaInvalidError",
    "TopicError",
]


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


class DecodeReason(StrEnum):
    """Why a record did not decode. The value is the stable, machine-readable code dead letters
    carry (``decode:<value>``); a member compares and formats as its value."""

    EMPTY = "empty"
    UNKNOWN_FRAMING = "unknown-framing"
    TRUNCATED = "truncated"
    UNKNOWN_FINGERPRINT = "unknown-fingerprint"
    UNKNOWN_SCHEMA_ID = "unknown-schema-id"
    NO_REGISTRY = "no-registry"  # a Confluent-framed record and no registry configured
    INCOMPATIBLE_SCHEMA = "incompatible-schema"  # the schema id names no govbus event schema
    CORRUPT_BODY = "corrupt-body"
    BAD_HEADERS = "bad-headers"
    INVALID_EVENT = "invalid-event"
    # The registry could not be asked (unreachable, 5xx, refused credentials).
    REGISTRY_UNAVAILABLE = "registry-unavailable"

    @property
    def transient(self) -> bool:
        """True when the same bytes may decode later (retry); False: the record is bad and stays bad."""
        return self is DecodeReason.REGISTRY_UNAVAILABLE


class DecodeError(GovbusError):
    """A record could not be decoded. ``reason`` is a :class:`DecodeReason` (a string subtype: the
    code); a plain string naming a reason is accepted and converted, anything else is a ValueError."""

    def __init__(self, reason: DecodeReason | str, message: str) -> None:
        self.reason = DecodeReason(reason)
        super().__init__(f"{self.reason.value}: {message}")
        self.message = message

    @property
    def transient(self) -> bool:
        """Whether decoding may succeed later (:attr:`DecodeReason.transient`)."""
        return self.reason.transient


class BrokerError(GovbusError):
    """The local development broker could not be fetched, started or stopped."""


# The operator commands' errors live here rather than in the private modules that raise them, so
# that each can be caught through a public module.
class TopicError(GovbusError):
    """A topic could not be created or described."""


class AclError(GovbusError):
    """ACLs could not be created (the principal running ``acl apply`` lacks ALTER on the cluster…)."""


class SchemaInvalidError(GovbusError, ValueError):
    """A schema is not valid Avro (``label`` says which)."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(f"{label} is not a valid Avro schema: {message}")
        self.label = label


class RegistryError(GovbusError):
    """A registry operation failed. ``status`` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
