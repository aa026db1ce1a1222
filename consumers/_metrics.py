"""The runtime's OpenTelemetry metrics, and their Prometheus text rendering for ``/metrics``.

The runtime owns an SDK ``MeterProvider`` with an in-memory reader that ``/metrics`` collects on
demand (so no extra exporter package is needed); when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set, the same instruments are also pushed over OTLP.
Counters are incremented once per batch, never per record: an SDK counter ``add`` costs
microseconds, which per record would be a visible share of the consumer's budget.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    MetricReader,
    Sum,
)
from opentelemetry.sdk.resources import Resource

__all__ = ["LEGACY_FINGERPRINT", "SinkMetrics", "render_prometheus"]

_SCOPE = "govbus.consumers"
LEGACY_FINGERPRINT = "govbus.sink.records.legacy_fingerprint"
# Bounds for the per-batch latency histograms, in seconds (1 ms … 60 s).
_LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _otlp_readers() -> list[MetricReader]:
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")):
        return []
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return [PeriodicExportingMetricReader(OTLPMetricExporter())]


class SinkMetrics:
    """The instruments of one sink process. Gauges read :attr:`gauges`/:attr:`lag`, which the
    runtime updates; ``sink`` is an attribute on every point."""

    def __init__(self, sink: str, *, readers: Sequence[MetricReader] | None = None) -> None:
        self.sink = sink
        self._attrs = {"sink": sink}
        self.reader = InMemoryMetricReader()
        extra = list(readers) if readers is not None else _otlp_readers()
        self.provider = MeterProvider(
            metric_readers=[self.reader, *extra],
            resource=Resource.create({"service.name": f"govbus-sink-{sink}"}),
        )
        self.meter: Meter = self.provider.get_meter(_SCOPE)
        m = self.meter
        self._lock = threading.Lock()
        self.gauges: dict[str, float] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.consumed = m.create_counter("govbus.sink.records.consumed", "{record}", "Records read from Kafka")
        self.delivered = m.create_counter("govbus.sink.records.delivered", "{record}", "Records the sink acknowledged")
        self.retried = m.create_counter(
            "govbus.sink.records.retried", "{record}", "Records offered to the sink again after a transient failure"
        )
        self.dead_lettered = m.create_counter(
            "govbus.sink.records.dead_lettered", "{record}", "Records written to the dead-letter topic, by reason"
        )
        self.skipped = m.create_counter(
            "govbus.sink.records.skipped",
            "{record}",
            "Records acknowledged without delivery, by reason (e.g. verify:replay)",
        )
        self.flagged = m.create_counter(
            "govbus.sink.records.flagged", "{record}", "Records delivered with a flagged verdict (e.g. gap)"
        )
        self.paused = m.create_counter("govbus.sink.pauses", "{pause}", "Times the consumer paused its partitions")
        self.write_failures = m.create_counter(
            "govbus.sink.write.failures", "{write}", "Failed write attempts, by kind (exception, retry-later)"
        )
        self.commits = m.create_counter("govbus.sink.commits", "{commit}", "Offset commits, by result")
        self.rejoins = m.create_counter(
            "govbus.sink.rejoins", "{rejoin}", "New consumers after the sink's own rejoin fenced the old one"
        )
        self.write_duration = m.create_histogram(
            "govbus.sink.write.duration",
            "s",
            "Duration of one write(batch) call",
            explicit_bucket_boundaries_advisory=_LATENCY_BOUNDS,
        )
        self.latency = m.create_histogram(
            "govbus.sink.delivery.latency",
            "s",
            "Per batch: time from the oldest record's Kafka timestamp to the sink's acknowledgement",
            explicit_bucket_boundaries_advisory=_LATENCY_BOUNDS,
        )
        m.create_observable_gauge(
            "govbus.sink.consumer.lag", [self._observe_lag], "{record}", "Records behind the end of each partition"
        )
        for name, unit, desc in (
            ("govbus.sink.inflight.records", "{record}", "Records consumed but not yet acknowledged"),
            ("govbus.sink.inflight.bytes", "By", "Bytes consumed but not yet acknowledged"),
            ("govbus.sink.partitions.assigned", "{partition}", "Partitions assigned to this process"),
            ("govbus.sink.partitions.paused", "{partition}", "Partitions currently paused for backpressure"),
            (
                "govbus.sink.partitions.held",
                "{partition}",
                "Partitions held by a dead letter that could not be written",
            ),
            ("govbus.sink.breaker.state", "1", "Circuit breaker: 0 closed, 1 half-open, 2 open"),
        ):
            m.create_observable_gauge(name, [self._gauge_callback(name)], unit, desc)
        # Cumulative and kept by the decoder (a plain int per record); the runtime copies it into gauges.
        m.create_observable_counter(
            LEGACY_FINGERPRINT,
            [self._gauge_callback(LEGACY_FINGERPRINT)],
            "{record}",
            "Records read whose single-object header has the legacy byte-reversed fingerprint (govbus 0.1.0)",
        )

    def attrs(self, **extra: str) -> Mapping[str, str]:
        return {**self._attrs, **extra} if extra else self._attrs

    def set_gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        with self._lock:
            self.lag = dict(lag)

    def _gauge_callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            value = self.gauges.get(name)
            return [] if value is None else [Observation(value, self._attrs)]

        return callback

    def _observe_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            lag = dict(self.lag)
        return [Observation(v, {**self._attrs, "topic": t, "partition": str(p)}) for (t, p), v in sorted(lag.items())]

    def render_prometheus(self) -> str:
        return render_prometheus(self.reader)

    def shutdown(self) -> None:
        self.provider.shutdown()


# --- Prometheus text exposition format 0.0.4 ---------------------------------------------------

_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_:]")


def _prom_name(name: str, unit: str) -> str:
    base = _BAD_CHARS.sub("_", name)
    suffix = _UNIT_SUFFIX.get(unit)
    if suffix and not base.endswith("_" + suffix):
        base += "_" + suffix
    return base


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(attributes: Mapping[str, Any] | None, extra: Mapping[str, str] | None = None) -> str:
    items = {**{_BAD_CHARS.sub("_", str(k)): str(v) for k, v in (attributes or {}).items()}, **(extra or {})}
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(items.items())) + "}"


def _num(value: float | int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def render_prometheus(reader: InMemoryMetricReader) -> str:
    """Everything ``reader`` collects now, as Prometheus text (cumulative counters, histograms)."""
    data = reader.get_metrics_data()
    lines: list[str] = []
    seen: set[str] = set()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                point_data = metric.data
                name = _prom_name(metric.name, metric.unit or "")
                if isinstance(point_data, Sum):
                    kind = "counter" if point_data.is_monotonic else "gauge"
                    if kind == "counter" and not name.endswith("_total"):
                        name += "_total"
                elif isinstance(point_data, Gauge):
                    kind = "gauge"
                elif isinstance(point_data, Histogram):
                    kind = "histogram"
                else:
                    continue  # exponential histograms are not used by the runtime
                if name not in seen:
                    seen.add(name)
                    lines.append(f"# HELP {name} {_escape(metric.description or metric.name)}")
                    lines.append(f"# TYPE {name} {kind}")
                if isinstance(point_data, Histogram):
                    for hp in point_data.data_points:
                        cumulative = 0
                        for bound, count in zip(hp.explicit_bounds, hp.bucket_counts, strict=False):
                            cumulative += count
                            lines.append(
                                f"{name}_bucket{_labels(hp.attributes, {'le': _num(float(bound))})} {cumulative}"
                            )
                        lines.append(f"{name}_bucket{_labels(hp.attributes, {'le': '+Inf'})} {hp.count}")
                        lines.append(f"{name}_sum{_labels(hp.attributes)} {_num(hp.sum)}")
                        lines.append(f"{name}_count{_labels(hp.attributes)} {hp.count}")
                else:
                    for p in point_data.data_points:
                        lines.append(f"{name}{_labels(p.attributes)} {_num(p.value)}")
    return "\n".join(lines) + "\n"
