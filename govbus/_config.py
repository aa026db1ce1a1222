"""The root of govbus's configuration: every section composed into :class:`GovbusSettings`.

This module sits above the subpackages (layer "composition", see ``tests/unit/test_import_layers.py``):
it imports each subpackage's section through that subpackage's public names and hands the root
to :func:`govbus._settings.compose_root`. Code below it never imports it; it reaches the root
through :func:`govbus._settings.load_settings` (or the name ``govbus._settings.GovbusSettings``),
or takes only the section it needs as an argument.

==================  ===================================  =======================
section             class                                owned by
==================  ===================================  =======================
``kafka``           ``KafkaSettings``                    govbus._settings (core)
``registry``        ``RegistrySettings``                 govbus._settings (core)
``topic``           ``str``                              the root
``producer``        ``ProducerSettings``                 govbus.producer
``sink``            ``SinkRuntimeSettings``              govbus.consumers
``gate``            ``GateSettings``                     govbus.gate
``signing``         ``SigningSettings``                  govbus.signing
``console``         ``ConsoleSettings``                  govbus.console
``watch``           ``WatchSettings``                    govbus.watch
==================  ===================================  =======================

A new section: define its model in the subpackage, export it from the subpackage's
``__init__``, and add one field here.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from govbus._settings import ENV_PREFIX, KafkaSettings, RegistrySettings, check_environment, compose_root
from govbus.console._settings import ConsoleSettings  # the section only, not the web stack
from govbus.consumers import SinkRuntimeSettings
from govbus.gate import GateSettings
from govbus.producer import ProducerSettings
from govbus.signing import SigningSettings
from govbus.watch import WatchSettings

__all__ = ["GovbusSettings"]

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


@compose_root
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
    watch: WatchSettings = Field(default_factory=WatchSettings)
    topic: str = "govbus.events"

    def __init__(self, **values: Any) -> None:
        # Here rather than in load_settings() so that no way of building the root settings skips it.
        check_environment(os.environ)
        super().__init__(**values)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not _TOPIC.fullmatch(value) or value in (".", ".."):
            raise ValueError(f"not a legal Kafka topic name: {value!r}")
        return value
