"""govbus: a Kafka-backed bus for governance events emitted by AI-agent kernels.

What a kernel imports lives here::

    from govbus import Bus, GovernanceEvent, EventKind

    with Bus() as bus:                       # GOVBUS_* settings
        bus.emit(GovernanceEvent(agent_id="a-1", kind=EventKind.TOOL_CALL_BLOCKED, action="shell.exec"))

The public modules are this package, :mod:`govbus.errors`, :mod:`govbus.event` and the
subpackages (``govbus.producer``, ``govbus.gate``, ``govbus.signing``, ``govbus.consumers``…),
each exporting exactly its ``__all__``; every other module is private by name (``_contract``,
``_cli``…) and may change without notice (docs/api.md). The producer and gate names load on first
use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from govbus._config import GovbusSettings  # composes the settings tree before anything loads settings
from govbus._settings import KafkaSettings, RegistrySettings, load_settings
from govbus.errors import ConfigError, DecodeError, DecodeReason, GovbusError, InvalidEventError
from govbus.event import EventKind, GovernanceEvent

if TYPE_CHECKING:
    from govbus.gate import Decision, Gate
    from govbus.producer import (
        Bus,
        BusClosedError,
        BusCounters,
        BusHealth,
        GovbusSink,
        ProducerFatalError,
        SpoolFullError,
    )

    __version__: str

_LAZY = {
    "Bus": "govbus.producer",
    "BusClosedError": "govbus.producer",
    "BusCounters": "govbus.producer",
    "BusHealth": "govbus.producer",
    "GovbusSink": "govbus.producer",
    "ProducerFatalError": "govbus.producer",
    "SpoolFullError": "govbus.producer",
    "Decision": "govbus.gate",
    "Gate": "govbus.gate",
}

__all__ = [
    "Bus",
    "BusClosedError",
    "BusCounters",
    "BusHealth",
    "ConfigError",
    "Decision",
    "DecodeError",
    "DecodeReason",
    "EventKind",
    "Gate",
    "GovbusError",
    "GovbusSettings",
    "GovbusSink",
    "GovernanceEvent",
    "InvalidEventError",
    "KafkaSettings",
    "ProducerFatalError",
    "RegistrySettings",
    "SpoolFullError",
    "__version__",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _version()
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'govbus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _version() -> str:
    """The installed distribution's version: pyproject.toml's ``[project] version`` is the one
    place it is written. Read on first use, as the lookup scans ``sys.path`` (~20 ms)."""
    from importlib import metadata

    try:
        return metadata.version("govbus")
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"
