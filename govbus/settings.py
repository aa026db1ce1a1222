"""Configuration: one pydantic-settings tree, environment prefix ``GOVBUS_``, ``__`` for nesting.

``GOVBUS_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` sets ``settings.kafka.bootstrap_servers``.
Validation errors are re-raised as :class:`ConfigError` naming the environment variable.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from govbus.console._settings import ConsoleSettings
from govbus.consumers._settings import SinkRuntimeSettings
from govbus.errors import ConfigError
from govbus.gate._settings import GateSettings
from govbus.producer._settings import ProducerSettings
from govbus.signing._settings import SigningSettings

ENV_PREFIX = "GOVBUS_"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


class KafkaSettings(BaseModel):
    """How to reach the cluster. Security options are passed through to librdkafka unchanged."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "govbus"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification_algorithm: Literal["https", "none"] = "https"
    # Any other librdkafka property, e.g. GOVBUS_KAFKA__EXTRA='{"socket.keepalive.enable": true}'.
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for hostport in value.split(","):
            host, sep, port = hostport.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka configuration common to producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        optional: dict[str, Any] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        if self.security_protocol in ("SSL", "SASL_SSL"):
            conf["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification_algorithm
        conf.update(self.extra)
        return conf


class RegistrySettings(BaseModel):
    """A Confluent-compatible schema registry (``GOVBUS_REGISTRY__*``): needed by the Confluent
    framing (``GOVBUS_PRODUCER__FRAMING=confluent``; consumers decode such records with it) and by
    ``govbus schemas``. Unset URL: no registry; single-object records need none."""

    # Comma-separated base URLs, e.g. http://registry:8081 or Apicurio's .../apis/ccompat/v7;
    # mock://<name> is confluent-kafka's in-process mock (tests).
    url: str | None = None
    basic_auth_user_info: SecretStr | None = None  # "user:password"
    bearer_token: SecretStr | None = None
    # Sent as target-sr-cluster with a bearer token (Confluent Cloud: the registry's lsrc-… id).
    bearer_logical_cluster: str = ""
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Retries inside the client. Few: a consumer treats an unreachable registry as transient and
    # retries the record later itself, without holding its consume loop meanwhile.
    max_retries: int = Field(default=2, ge=0, le=10)
    subject: str | None = None  # default <GOVBUS_TOPIC>-value (TopicNameStrategy)
    # Producers register their writer schema (idempotent); false: only look it up (registries
    # where `govbus schemas register` is the only writer).
    auto_register: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for one in value.split(","):
            scheme = one.strip().partition("://")[0]
            if scheme not in ("http", "https", "mock") or "://" not in one:
                from govbus.registry import redact_url  # a URL may carry credentials: never echo them

                raise ValueError(
                    f"expected http(s)://host[:port][/path][,...] (or mock://name in tests); got {redact_url(value)!r}"
                )
        return value.strip()

    @model_validator(mode="after")
    def _one_auth(self) -> RegistrySettings:
        if self.basic_auth_user_info is not None and self.bearer_token is not None:
            raise ValueError("set basic_auth_user_info or bearer_token, not both")
        return self

    @field_validator("basic_auth_user_info")
    @classmethod
    def _user_info(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("expected user:password")
        return value

    def client_config(self) -> dict[str, Any]:
        """The configuration of confluent-kafka's ``SchemaRegistryClient``."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s, "max.retries": self.max_retries}
        optional: dict[str, Any] = {
            "basic.auth.user.info": self.basic_auth_user_info,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        if self.bearer_token is not None:
            conf["bearer.auth.credentials.source"] = "STATIC_TOKEN"
            conf["bearer.auth.token"] = self.bearer_token.get_secret_value()
            conf["bearer.auth.logical.cluster"] = self.bearer_logical_cluster
        for key, value in optional.items():
            if value is not None:
                conf[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return conf


class GovbusSettings(BaseSettings):
    """The root of govbus's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        case_sensitive=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)
    sink: SinkRuntimeSettings = Field(default_factory=SinkRuntimeSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    topic: str = "govbus.events"

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not _TOPIC.fullmatch(value) or value in (".", ".."):
            raise ValueError(f"not a legal Kafka topic name: {value!r}")
        return value


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable for a settings location, e.g. ('kafka', 'sasl_username')."""
    return ENV_PREFIX + "__".join(str(p) for p in loc).upper()


def load_settings(**overrides: Any) -> GovbusSettings:
    """Settings from the environment (and keyword overrides); :class:`ConfigError` names what was wrong."""
    try:
        return GovbusSettings(**overrides)
    except ValidationError as exc:
        raise config_error(exc) from None


_SECRET = re.compile(r"password|secret|token|private|key_location|user_info", re.IGNORECASE)


def config_error(exc: ValidationError) -> ConfigError:
    """The first validation error as a :class:`ConfigError` naming the variable (secrets not echoed)."""
    first = exc.errors()[0]
    loc = tuple(p for p in first["loc"] if isinstance(p, str))
    message = first["msg"].removeprefix("Value error, ")
    if not any(_SECRET.search(p) for p in loc) and "got" not in message:
        message += f"; got {first.get('input')!r}"
    if exc.error_count() > 1:
        message += f" (and {exc.error_count() - 1} more)"
    return ConfigError(env_name(loc), message)
