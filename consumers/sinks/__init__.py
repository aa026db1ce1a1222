"""The sinks shipped with govbus, one per (private) module, each registered in the ``govbus.sinks``
entry-point group: ``govbus sink run <name>`` finds them by name, and code that builds one itself
imports its class from here.

The classes load on first use: each sink imports its own client library (the OpenTelemetry
exporter, an HTTP client…), which a process running another sink never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govbus.consumers.sinks._audit import AuditSink
    from govbus.consumers.sinks._file import FileSink
    from govbus.consumers.sinks._http import HttpSink
    from govbus.consumers.sinks._ledger import LedgerError
    from govbus.consumers.sinks._null import NullSink
    from govbus.consumers.sinks._otlp import OtlpSink
    from govbus.consumers.sinks._stdout import StdoutSink
    from govbus.consumers.sinks._syslog import SyslogSink

_EXPORTS = {
    "AuditSink": "_audit",
    "FileSink": "_file",
    "HttpSink": "_http",
    "LedgerError": "_ledger",
    "NullSink": "_null",
    "OtlpSink": "_otlp",
    "StdoutSink": "_stdout",
    "SyslogSink": "_syslog",
}

__all__ = ["AuditSink", "FileSink", "HttpSink", "LedgerError", "NullSink", "OtlpSink", "StdoutSink", "SyslogSink"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
