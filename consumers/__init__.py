"""Sink consumers: one consumer group per sink (the sink runtime and the sinks).

A sink implements the :class:`Sink` protocol (or subclasses :class:`SinkBase`) and is registered
in the ``govbus.sinks`` entry-point group; ``govbus sink run <name>`` runs it in its own process
with its own offsets, pace and failures. See docs/sinks.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govbus.consumers._errors import DeadLetterError, DeadLetterFatalError, SinkError, SinkNotFoundError
    from govbus.consumers._lag import GroupLag, PartitionLag, sink_lag
    from govbus.consumers._registry import ENTRY_POINT_GROUP, available_sinks, create_sink, load_factory
    from govbus.consumers._runtime import SinkRuntime
    from govbus.consumers._settings import SinkRuntimeSettings, VerdictPolicy
    from govbus.consumers._spi import (
        OK,
        Batch,
        DeliveredRecord,
        Ok,
        Rejected,
        RetryLater,
        Sink,
        SinkBase,
        SinkContext,
        WriteResult,
    )
    from govbus.consumers._verify import RecordVerifier, Verification

# Resolved on first use: govbus._settings imports this package for its settings model, and
# loading settings must not pull in the Kafka client and the OpenTelemetry SDK.
_EXPORTS = {
    "DeadLetterError": "_errors",
    "DeadLetterFatalError": "_errors",
    "SinkError": "_errors",
    "SinkNotFoundError": "_errors",
    "GroupLag": "_lag",
    "PartitionLag": "_lag",
    "sink_lag": "_lag",
    "ENTRY_POINT_GROUP": "_registry",
    "available_sinks": "_registry",
    "create_sink": "_registry",
    "load_factory": "_registry",
    "SinkRuntime": "_runtime",
    "SinkRuntimeSettings": "_settings",
    "VerdictPolicy": "_settings",
    "OK": "_spi",
    "Batch": "_spi",
    "DeliveredRecord": "_spi",
    "Ok": "_spi",
    "Rejected": "_spi",
    "RetryLater": "_spi",
    "Sink": "_spi",
    "SinkBase": "_spi",
    "SinkContext": "_spi",
    "WriteResult": "_spi",
    "RecordVerifier": "_verify",
    "Verification": "_verify",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "OK",
    "Batch",
    "DeadLetterError",
    "DeadLetterFatalError",
    "DeliveredRecord",
    "GroupLag",
    "Ok",
    "PartitionLag",
    "RecordVerifier",
    "Rejected",
    "RetryLater",
    "Sink",
    "SinkBase",
    "SinkContext",
    "SinkError",
    "SinkNotFoundError",
    "SinkRuntime",
    "SinkRuntimeSettings",
    "VerdictPolicy",
    "Verification",
    "WriteResult",
    "available_sinks",
    "create_sink",
    "load_factory",
    "sink_lag",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
