"""The sinks shipped with govbus, one per (private) module, each registered in the ``govbus.sinks``
entry-point group: ``govbus sink run <name>`` finds them by name, and code that builds one itself
imports its class (and its options model) from here.

The classes load on first use: each sink imports its own client library (the OpenTelemetry
exporter, an HTTP client…), which a process running another sink never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govbus.consumers.sinks._audit import AuditSink, AuditSinkOptions
    from govbus.consumers.sinks._file import FileSink, FileSinkOptions
    from govbus.consumers.sinks._http import HttpSink, HttpSinkOptions
    from govbus.consumers.sinks._ledger import LedgerError
    from govbus.consumers.sinks._null import NullSink, NullSinkOptions
    from govbus.consumers.sinks._options import SinkOptions, parse_options
    from govbus.consumers.sinks._otlp import OtlpSink, OtlpSinkOptions
    from govbus.consumers.sinks._stdout import StdoutSink, StdoutSinkOptions
    from govbus.consumers.sinks._syslog import SyslogSink, SyslogSinkOptions

_EXPORTS = {
    "AuditSink": "_audit",
    "AuditSinkOptions": "_audit",
    "FileSink": "_file",
    "FileSinkOptions": "_file",
    "HttpSink": "_http",
    "HttpSinkOptions": "_http",
    "LedgerError": "_ledger",
    "NullSink": "_null",
    "NullSinkOptions": "_null",
    "OtlpSink": "_otlp",
    "OtlpSinkOptions": "_otlp",
    # The options base and parser a third-party sink may validate with (docs/sinks.md).
    "SinkOptions": "_options",
    "parse_options": "_options",
    "StdoutSink": "_stdout",
    "StdoutSinkOptions": "_stdout",
    "SyslogSink": "_syslog",
    "SyslogSinkOptions": "_syslog",
}

__all__ = [
    "AuditSink",
    "AuditSinkOptions",
    "FileSink",
    "FileSinkOptions",
    "HttpSink",
    "HttpSinkOptions",
    "LedgerError",
    "NullSink",
    "NullSinkOptions",
    "OtlpSink",
    "OtlpSinkOptions",
    "SinkOptions",
    "StdoutSink",
    "StdoutSinkOptions",
    "SyslogSink",
    "SyslogSinkOptions",
    "parse_options",
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
