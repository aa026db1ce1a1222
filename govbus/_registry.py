"""The schema registry: the half of the Confluent wire format (``00`` + schema id) Avro does not define.

Through confluent-kafka's ``SchemaRegistryClient`` (any Confluent-compatible registry: Confluent
Schema Registry, Apicurio's ``ccompat`` API, Karapace, Redpanda):

* producers: :func:`writer_schema_id` registers (or only looks up) a shipped writer schema under
  the topic's subject and returns its id, which :class:`govbus._contract.Encoder` then frames;
* consumers: :class:`SchemaIds`, the schema resolver handed to :class:`govbus._contract.Decoder`,
  resolves a record's schema id to its writer schema, cached (an id's schema never changes), and
  reports failures as :class:`DecodeError` reasons: ``unknown-schema-id`` (the registry does not have it: a poison record), ``registry-unavailable``
  (unreachable, 5xx, refused credentials: transient, the sink runtime retries), and
  ``incompatible-schema`` (the id names a schema that is not a govbus event schema).

``mock://<name>`` URLs give confluent-kafka's in-process mock registry, one per name and process,
so that producers, consumers and the CLI of one process see the same registry (tests).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from govbus._contract import SchemaVersion, load_schema, schema_version, shipped_by_fingerprint
from govbus._settings import redact_url
from govbus.errors import ConfigError, DecodeError, DecodeReason, RegistryError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from govbus._settings import GovbusSettings, RegistrySettings

__all__ = [
    "RegistryError",
    "SchemaIds",
    "as_registry_error",
    "client_for",
    "configured_schema_id",
    "connect",
    "redact_url",
    "registry_schema",
    "resolver_for",
    "subject_for",
    "writer_schema_id",
]

_EVENT_RECORD = "ai.govbus.GovernanceEvent"
_MOCKS: dict[str, Any] = {}
_MOCKS_LOCK = threading.Lock()


def subject_for(topic: str) -> str:
    """The subject of the topic's record values (Confluent's default ``TopicNameStrategy``)."""
    return f"{topic}-value"


def connect(settings: RegistrySettings) -> SchemaRegistryClient:
    """A client for ``settings.url``; :class:`RegistryError` if it has none or the client refuses it."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    if not settings.url:
        raise RegistryError("no schema registry configured: set GOVBUS_REGISTRY__URL or pass --registry-url")
    conf = settings.client_config()
    if settings.url.startswith("mock://"):
        with _MOCKS_LOCK:
            client = _MOCKS.get(settings.url)
            if client is None:
                client = _MOCKS[settings.url] = SchemaRegistryClient.new_client(conf)
            return client
    try:
        return SchemaRegistryClient(conf)
    except (ValueError, TypeError, OSError) as exc:
        raise RegistryError(f"schema registry client for {redact_url(settings.url)}: {exc}") from None


def client_for(settings: GovbusSettings) -> SchemaRegistryClient | None:
    """The registry client of the settings tree (``GOVBUS_REGISTRY__*``), or None when no URL is set."""
    registry = getattr(settings, "registry", None)
    if registry is None or not registry.url:
        return None
    return connect(registry)


def resolver_for(settings: GovbusSettings) -> SchemaIds | None:
    """The decoder's :class:`SchemaIds` over the settings tree's registry, or None when no URL is set."""
    client = client_for(settings)
    return None if client is None else SchemaIds(client)


def configured_schema_id(settings: GovbusSettings) -> int | None:
    """The producer's writer schema id for ``GOVBUS_PRODUCER__FRAMING=confluent`` (registered, or
    looked up when ``GOVBUS_REGISTRY__AUTO_REGISTER=false``, under ``GOVBUS_REGISTRY__SUBJECT`` or
    ``<topic>-value``); None for single-object framing. Raises :class:`ConfigError` without a
    registry URL and :class:`RegistryError` when the registry refuses or cannot be reached."""
    producer = getattr(settings, "producer", None)
    if producer is None or producer.framing != "confluent":
        return None
    registry = settings.registry
    if not registry.url:
        raise ConfigError("GOVBUS_REGISTRY__URL", "is required with GOVBUS_PRODUCER__FRAMING=confluent")
    version = schema_version(producer.schema_version)
    subject = registry.subject or subject_for(settings.topic)
    return writer_schema_id(connect(registry), subject, version, register=registry.auto_register)


def registry_schema(version: SchemaVersion) -> Schema:
    """A shipped schema as the registry stores it: the full .avsc (defaults and docs included,
    which resolution needs), compact JSON, so that every govbus writer registers the same text."""
    from confluent_kafka.schema_registry import Schema

    return Schema(json.dumps(version.schema, separators=(",", ":"), ensure_ascii=False), "AVRO")


def writer_schema_id(client: Any, subject: str, version: SchemaVersion, *, register: bool = True) -> int:
    """The id of ``version`` under ``subject``: registered if ``register`` (idempotent: the same
    schema gets the same id), else looked up (for registries where clients may not register)."""
    schema = registry_schema(version)
    try:
        if register:
            return int(client.register_schema(subject, schema))
        return int(client.lookup_schema(subject, schema).schema_id)
    except Exception as exc:
        action = "register" if register else "look up"
        raise as_registry_error(f"{action} schema v{version.version} under {subject!r}", exc) from None


def as_registry_error(what: str, exc: Exception) -> RegistryError:
    """``exc`` from the registry client as a :class:`RegistryError` saying what was attempted."""
    status = getattr(exc, "http_status_code", None)
    if status is not None:
        message = getattr(exc, "error_message", None) or str(exc)
        code = getattr(exc, "error_code", None)
        return RegistryError(f"cannot {what}: HTTP {status} (registry error {code}): {message}", int(status))
    return RegistryError(f"cannot {what}: schema registry unreachable: {type(exc).__name__}: {exc}")


class SchemaIds:
    """Schema id → writer :class:`SchemaVersion`, through a registry client, cached: the
    :class:`govbus._contract.SchemaResolver` a :class:`~govbus._contract.Decoder` is handed.

    A registry never changes the schema of an id, so hits are kept for good (bounded); ids the
    registry does not know are remembered for ``negative_ttl_s`` so that a burst of poison records
    does not become a burst of HTTP requests. Not thread-safe beyond what dict operations give:
    a decoder belongs to one consume loop.
    """

    def __init__(
        self,
        client: Any,
        *,
        negative_ttl_s: float = 10.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._found: dict[int, SchemaVersion] = {}
        self._missing: dict[int, float] = {}
        self._negative_ttl = negative_ttl_s
        self._max = max_entries
        self._clock = clock

    def resolve(self, schema_id: int) -> SchemaVersion:
        """The writer schema of ``schema_id`` (:class:`govbus._contract.SchemaResolver`)."""
        found = self._found.get(schema_id)
        if found is not None:
            return found
        until = self._missing.get(schema_id)
        if until is not None and self._clock() < until:
            raise DecodeError(DecodeReason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the schema registry")
        try:
            schema = self.client.get_schema(schema_id)
        except Exception as exc:
            if getattr(exc, "http_status_code", None) == 404:
                if len(self._missing) >= self._max:
                    self._missing.clear()
                self._missing[schema_id] = self._clock() + self._negative_ttl
                raise DecodeError(
                    DecodeReason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not in the schema registry"
                ) from None
            raise DecodeError(
                DecodeReason.REGISTRY_UNAVAILABLE,
                f"cannot fetch schema id {schema_id}: {as_registry_error('fetch', exc)}",
            ) from None
        writer = _writer(schema_id, schema)
        if len(self._found) >= self._max:
            self._found.clear()
        self._found[schema_id] = writer
        self._missing.pop(schema_id, None)
        return writer


def _writer(schema_id: int, schema: Any) -> SchemaVersion:
    """The registry's schema as a writer :class:`SchemaVersion` (the shipped one when it is one)."""
    kind = getattr(schema, "schema_type", None) or "AVRO"
    if kind != "AVRO":
        raise DecodeError(DecodeReason.INCOMPATIBLE_SCHEMA, f"schema id {schema_id} is a {kind} schema, not Avro")
    try:
        parsed_json = json.loads(schema.schema_str)
        writer = load_schema(0, parsed_json, schema_id)
    except Exception as exc:
        raise DecodeError(
            DecodeReason.INCOMPATIBLE_SCHEMA, f"schema id {schema_id} does not parse as Avro: {exc}"
        ) from None
    parsed = writer.parsed
    name = parsed.get("name") if isinstance(parsed, dict) and parsed.get("type") == "record" else None
    if name != _EVENT_RECORD:
        # Resolution would fail on every record anyway; say which schema the id names instead.
        raise DecodeError(
            DecodeReason.INCOMPATIBLE_SCHEMA, f"schema id {schema_id} is not {_EVENT_RECORD} (it is {name or parsed!r})"
        )
    shipped = shipped_by_fingerprint(writer.fingerprint)
    if shipped is not None:
        return SchemaVersion(
            shipped.version, shipped.schema, shipped.parsed, shipped.canonical, shipped.fingerprint, schema_id
        )
    return writer
