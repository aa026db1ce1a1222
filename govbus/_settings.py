"""Configuration: one pydantic-settings tree, environment prefix ``GOVBUS_``, ``__`` for nesting.

``GOVBUS_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` sets ``settings.kafka.bootstrap_servers``.
Validation errors are re-raised as :class:`ConfigError` naming the environment variable.

This module is core: it imports no subpackage. It holds the sections every layer needs
(:class:`KafkaSettings`, :class:`RegistrySettings`), the environment checks, and
:func:`load_settings`. Each subpackage owns its own section (``ProducerSettings``,
``SinkRuntimeSettings``, ``GateSettings``, ``SigningSettings``); :mod:`govbus._config`, above them
all, composes the root :class:`GovbusSettings` from their public names and hands it to
:func:`compose_root`, so that :func:`load_settings` and ``govbus._settings.GovbusSettings`` (kept as
a name for every caller) reach it without this module importing upward. ``import govbus``
imports :mod:`govbus._config`, so the root is composed before any submodule runs.

Every ``GOVBUS_*`` variable must be a setting (:func:`check_environment`): a misspelt name fails
start-up naming the closest valid one instead of silently leaving a default in place. The only
exceptions are :data:`NOT_SETTINGS` and the reserved prefixes :data:`RESERVED_PREFIXES`.
"""

from __future__ import annotations

import collections.abc
import difflib
import json
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, cast, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsError

from govbus.errors import ConfigError

if TYPE_CHECKING:
    # Typing only (never runs): the composed root's type, for load_settings' callers.
    from govbus._config import GovbusSettings as GovbusSettings

ENV_PREFIX = "GOVBUS_"
# GOVBUS_ variables that are not settings, so the start-up check lets them pass: the local broker's
# download cache (`govbus broker`), the compiled core's switch (read at import, before any settings:
# govbus._accel), and the test suite's and benchmarks' own knobs.
NOT_SETTINGS = frozenset({"GOVBUS_CACHE_DIR", "GOVBUS_NATIVE"})
RESERVED_PREFIXES = ("GOVBUS_TEST_", "GOVBUS_BENCH_")

__all__ = [
    "ENV_PREFIX",
    "NOT_SETTINGS",
    "RESERVED_PREFIXES",
    "GovbusSettings",
    "KafkaSettings",
    "RegistrySettings",
    "check_environment",
    "compose_root",
    "config_error",
    "env_name",
    "is_setting",
    "load_settings",
    "redact_url",
    "root_settings",
    "setting_names",
]


class KafkaSettings(BaseModel):
    """How to reach the cluster. Security options are passed through to librdkafka unchanged."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "govbus"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # A file holding the password (a compose or Docker secret); used when sasl_password is unset.
    sasl_password_file: str | None = None
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
            "sasl.password": self._sasl_password(),
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

    def _sasl_password(self) -> str | None:
        if self.sasl_password is not None or not self.sasl_password_file:
            return self.sasl_password.get_secret_value() if self.sasl_password else None
        try:
            text = Path(self.sasl_password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            # The path is not secret; the contents are never put in the message.
            raise ConfigError(
                "GOVBUS_KAFKA__SASL_PASSWORD_FILE", f"cannot read {self.sasl_password_file}: {type(exc).__name__}"
            ) from None
        password = text.rstrip("\r\n")  # editors and `echo` add a final newline
        if not password:
            raise ConfigError("GOVBUS_KAFKA__SASL_PASSWORD_FILE", f"{self.sasl_password_file} is empty")
        return password


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
                # A URL may carry credentials: never echo them.
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


def redact_url(url: str) -> str:
    """``url`` without user info (``https://user:pw@host`` → ``https://***@host``), for messages."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        if split.username or split.password:
            split = split._replace(netloc="***@" + split.netloc.rpartition("@")[2])
        parts.append(urlunsplit(split))
    return ",".join(parts)


# ---- the root, composed above the subpackages ------------------------------------------------

_Root = TypeVar("_Root", bound=type[BaseSettings])
_root: type[BaseSettings] | None = None


def compose_root(root: _Root) -> _Root:
    """Install ``root`` as the settings tree :func:`load_settings` builds and the environment check
    walks (:mod:`govbus._config` does, for :class:`GovbusSettings`); returns it, as a decorator."""
    global _root
    _root = root
    return root


def root_settings() -> type[BaseSettings]:
    """The composed root settings class (:class:`govbus._config.GovbusSettings`)."""
    if _root is None:
        # Only reachable when this module is loaded outside the package (import govbus composes it).
        raise RuntimeError("no root settings composed: import govbus._config first")
    return _root


def __getattr__(name: str) -> Any:
    # govbus._settings.GovbusSettings stays the name every caller knows; the class lives above.
    if name == "GovbusSettings":
        return root_settings()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable for a settings location, e.g. ('kafka', 'sasl_username')."""
    return ENV_PREFIX + "__".join(str(p) for p in loc).upper()


def load_settings(**overrides: Any) -> GovbusSettings:
    """Settings from the environment (and keyword overrides); :class:`ConfigError` names what was wrong.

    Every process entry point (``Bus()``, the sink runtime, the gate, every CLI command) loads its
    settings here; building :class:`GovbusSettings` runs :func:`check_environment` first, so every
    one of them refuses unknown ``GOVBUS_*`` variables and malformed JSON.
    """
    try:
        return cast("GovbusSettings", root_settings()(**overrides))
    except ValidationError as exc:
        raise config_error(exc) from None
    except SettingsError as exc:
        # Raised before validation (e.g. a JSON value check_environment could not attribute, such as
        # a whole section as JSON): name the section's variable, never the value.
        match = re.search(r'field "([^"]+)"', str(exc))
        cause = f": {exc.__cause__}" if isinstance(exc.__cause__, ValueError) else ""
        raise ConfigError(env_name((match.group(1),)) if match else ENV_PREFIX + "*", f"unreadable{cause}") from None


# ---- the names the environment may use -------------------------------------------------------


def _candidates(annotation: Any) -> list[Any]:
    """The types a field accepts: ``X | None`` and ``Annotated[X, ...]`` unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _candidates(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) if arg is not type(None) for t in _candidates(arg)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_dict(annotation: Any) -> bool:
    return get_origin(annotation) in (dict, collections.abc.Mapping)


def _env_names(name: str, field: FieldInfo) -> list[str]:
    """Every name a field answers to in the environment (its name and validation aliases), lower case."""
    names = [name]
    alias = field.validation_alias
    if isinstance(alias, str):
        names.append(alias)
    elif isinstance(alias, AliasChoices):
        names += [choice for choice in alias.choices if isinstance(choice, str)]
    return list(dict.fromkeys(n.lower() for n in names))


def _target(annotations: Sequence[Any], rest: Sequence[str]) -> list[Any] | None:
    """The types found at the path ``rest`` below a value of one of ``annotations``; None: nothing is there."""
    if not rest:
        return list(annotations)
    found: list[Any] = []
    for annotation in annotations:
        if _is_model(annotation):
            head = rest[0]
            for name, field in annotation.model_fields.items():
                if head in _env_names(name, field):
                    below = _target(_candidates(field.annotation), rest[1:])
                    found += below or []
                    break
        elif _is_dict(annotation):
            # One level below a dict is a key (GOVBUS_SINK__OPTIONS__PATH); deeper needs a dict of dicts.
            args = get_args(annotation)
            below = _target(_candidates(args[1] if len(args) == 2 else Any), rest[1:])
            found += below or []
    return found or None


def _setting_types(name: str) -> list[Any] | None:
    """The types of the setting ``GOVBUS_A__B__C`` names (``settings.a.b.c``), None if it is no setting."""
    if not name.upper().startswith(ENV_PREFIX):
        return None
    parts = name[len(ENV_PREFIX) :].lower().split("__")
    if not all(parts):
        return None
    return _target([root_settings()], parts)


def is_setting(name: str) -> bool:
    """Whether the environment variable ``name`` is read as a setting (case-insensitively, like pydantic-settings).

    ``GOVBUS_KAFKA__EXTRA`` (a dict, as JSON), ``GOVBUS_SINK__OPTIONS__PATH`` (a key of a dict) and
    ``GOVBUS_SINK`` (a whole section, as JSON) are settings; ``GOVBUS_KAFKA__BOOTSTRAP_SERVER`` is not.
    """
    return _setting_types(name) is not None


def setting_names(model: type[BaseModel] | None = None, prefix: str = ENV_PREFIX) -> Iterator[str]:
    """The variable of every field of the tree (the root's by default), sections included (for
    suggestions and docs)."""
    for name, field in (model or root_settings()).model_fields.items():
        for env in _env_names(name, field):
            var = f"{prefix}{env.upper()}"
            yield var
            for sub in (t for t in _candidates(field.annotation) if _is_model(t)):
                yield from setting_names(sub, f"{var}__")


def _is_json(types_: Sequence[Any]) -> bool:
    """pydantic-settings parses the value as JSON when every type the setting takes is a model or a dict."""
    return bool(types_) and all(_is_model(t) or _is_dict(t) for t in types_)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse what pydantic-settings would silently ignore or report without naming the variable.

    - A ``GOVBUS_*`` variable that is no setting (``GOVBUS_PRODUCER__DURABILTY``): :class:`ConfigError`
      naming it and the closest setting. Exempt: :data:`NOT_SETTINGS` and :data:`RESERVED_PREFIXES`.
    - A dict- or section-valued setting whose value is not JSON (``GOVBUS_PRODUCER__LIBRDKAFKA='{bad'``):
      :class:`ConfigError` naming it (the value is not echoed: it may hold credentials).
    """
    unknown: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS or upper.startswith(RESERVED_PREFIXES):
            continue
        types_ = _setting_types(name)
        if types_ is None:
            unknown.append(name)
        elif _is_json(types_):
            try:
                json.loads(environ[name])
            except ValueError as exc:
                raise ConfigError(name, f"not valid JSON ({exc.args[0] if exc.args else exc})") from None
    if unknown:
        first = unknown[0]
        # Compared without the prefix every name shares, so that only the part that differs counts.
        names = {n.removeprefix(ENV_PREFIX): n for n in setting_names()}
        close = difflib.get_close_matches(first.upper().removeprefix(ENV_PREFIX), sorted(names), n=1, cutoff=0.6)
        hint = f"did you mean {names[close[0]]}?" if close else "no setting has a similar name"
        also = f"; also unknown: {', '.join(unknown[1:])}" if len(unknown) > 1 else ""
        exempt = [*sorted(NOT_SETTINGS), *(p + "*" for p in RESERVED_PREFIXES)]
        raise ConfigError(
            first,
            f"not a govbus setting ({hint}){also}. Every {ENV_PREFIX}* variable must be a setting, "
            f"except {', '.join(exempt[:-1])} and {exempt[-1]}",
        )


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
