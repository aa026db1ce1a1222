"""One mapping of the event's free-form ``severity`` onto syslog and OpenTelemetry severities.

Kernels state severity as text (AGT uses ``info``/``low``/``medium``/``high``/``critical``;
others use syslog or log-level words). Every sink that needs a number maps through this table, so
OTLP and syslog agree. Matching ignores case and surrounding space. The table is documented in
docs/sinks-reference.md ("Severity").
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["UNKNOWN", "Severity", "otel_table", "severity"]


class Severity(NamedTuple):
    syslog: int  # RFC 5424 severity, 0 (emergency) .. 7 (debug)
    otel: int  # OpenTelemetry SeverityNumber, 1 (TRACE) .. 24 (FATAL4); 0 is UNSPECIFIED


_LEVELS: tuple[tuple[tuple[str, ...], Severity], ...] = (
    (("trace",), Severity(7, 1)),
    (("debug",), Severity(7, 5)),
    (("info", "informational", "none"), Severity(6, 9)),
    (("notice", "low"), Severity(5, 10)),
    (("warning", "warn", "medium", "moderate"), Severity(4, 13)),
    (("error", "err", "high"), Severity(3, 17)),
    (("critical", "crit", "severe", "fatal"), Severity(2, 21)),
    (("alert",), Severity(1, 22)),
    (("emergency", "emerg"), Severity(0, 24)),
)
_TABLE = {name: level for names, level in _LEVELS for name in names}

# Unknown words: syslog "notice" (worth a look, not an alarm); OTel UNSPECIFIED, because a
# number we made up would be filtered on as if the kernel had meant it.
UNKNOWN = Severity(5, 0)


def severity(text: str) -> Severity:
    return _TABLE.get(text.strip().lower(), UNKNOWN)


def otel_table() -> dict[str, int]:
    """Each word of the table (lowercase) and its OpenTelemetry severity number; any other word
    maps to ``UNKNOWN.otel`` (for the compiled core, which maps ASCII words itself)."""
    return {name: level.otel for name, level in _TABLE.items()}
