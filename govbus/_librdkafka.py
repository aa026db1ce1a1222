"""Building confluent-kafka clients, the one place where librdkafka can refuse a configuration.

librdkafka checks its configuration when a client is built and raises ``KafkaException``
(``_INVALID_ARG``: an unknown property, a bad value, an unreadable CA file...). Every process
builds its clients here, so that refusal is always a :class:`ConfigError` naming the property
and the ``GOVBUS_*`` variable it came from, which every command maps to exit code 2 (a
readiness probe then reads "misconfigured", not "denied"; the gate exits 1 only to deny).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from govbus.errors import ConfigError

__all__ = ["build_client", "config_variable", "new_admin", "new_consumer", "new_producer"]

Kind = Literal["producer", "consumer", "admin client"]
_T = TypeVar("_T")

# The settings through which any librdkafka property can reach each kind of client, most specific
# first (GOVBUS_PRODUCER__LIBRDKAFKA and GOVBUS_SINK__CONSUMER are merged over GOVBUS_KAFKA__EXTRA).
_PASSTHROUGH: dict[str, tuple[str, ...]] = {
    "producer": ("GOVBUS_PRODUCER__LIBRDKAFKA", "GOVBUS_KAFKA__EXTRA"),
    "consumer": ("GOVBUS_SINK__CONSUMER", "GOVBUS_KAFKA__EXTRA"),
    "admin client": ("GOVBUS_KAFKA__EXTRA",),
}
_PROPERTY = re.compile(r'property:? "([^"]+)"|(?:^|: )([a-z][a-z0-9_.]*) failed')
_SECRET = re.compile(r"password|secret|token|pem|private|credential|jaas|\.key$", re.IGNORECASE)


def new_producer(conf: Mapping[str, Any]) -> Producer:
    return build_client(Producer, conf, "producer")


def new_consumer(conf: Mapping[str, Any]) -> Consumer:
    return build_client(Consumer, conf, "consumer")


def new_admin(conf: Mapping[str, Any]) -> AdminClient:
    return build_client(AdminClient, conf, "admin client")


def build_client(factory: Callable[[dict[str, Any]], _T], conf: Mapping[str, Any], kind: Kind) -> _T:
    """``factory(conf)``; librdkafka's refusal of ``conf`` raised as :class:`ConfigError`."""
    try:
        return factory(dict(conf))
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        text = err.str() if isinstance(err, KafkaError) else str(exc)
        match = _PROPERTY.search(text)
        prop = (match.group(1) or match.group(2)) if match else None
        if prop is not None and _SECRET.search(prop):
            text = re.sub(r'value "[^"]*"', 'value "***"', text)  # never echo a secret value
        raise ConfigError(config_variable(prop, kind), f"librdkafka refused the {kind} configuration: {text}") from None


def config_variable(prop: str | None, kind: Kind, environ: Mapping[str, str] | None = None) -> str:
    """The ``GOVBUS_*`` variable that set librdkafka property ``prop`` for a client of this kind.

    A pass-through setting that holds ``prop`` (as a JSON key, or as ``<VARIABLE>__<PROP>``),
    else the ``GOVBUS_KAFKA__*`` field it derives from (``ssl.ca.location`` ->
    ``GOVBUS_KAFKA__SSL_CA_LOCATION``), else the pass-through settings it may have come from.
    """
    from govbus._settings import KafkaSettings

    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    passthrough = _PASSTHROUGH[kind]
    if prop is not None:
        for var in passthrough:
            if f"{var}__{prop.upper()}" in env:
                return f"{var}__{prop.upper()}"
            try:
                value = json.loads(env.get(var, "{}"))
            except ValueError:
                continue
            if isinstance(value, dict) and prop in value:
                return var
        field = prop.replace(".", "_")
        if field in KafkaSettings.model_fields and field != "extra":
            return f"GOVBUS_KAFKA__{field.upper()}"
    return " or ".join(passthrough)
