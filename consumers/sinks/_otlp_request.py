"""One OTLP ``ExportLogsServiceRequest`` per batch, built with opentelemetry-proto's generated classes.

Why not the SDK's ``LoggerProvider`` + exporter: that path builds an SDK ``LogRecord`` per event
(attribute validation into ``BoundedAttributes``, a context, a span context) and then the
exporter's encoder walks every record again to build the same protobuf messages; together ~90 %
of the sink's time. Here each event's attributes go straight into the request, once. The
mapping is the sink's (``log_attributes``, the documented table); the resource and scope are the
SDK's own ``Resource``/scope, encoded as the exporter encodes them.
``tests/unit/test_sink_otlp_request.py`` decodes this request and the SDK path's with
opentelemetry-proto and compares them field by field.

One deliberate difference: past ``max_attributes`` the SDK drops the *oldest* attributes (which
would be ``cloudevents.event_id`` first); here the documented attributes come first and the
event's own ``governance.attributes.*`` beyond the limit are the ones dropped, counted in
``dropped_attributes_count`` as the SDK counts them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource

from govbus import _accel as native_core
from govbus.event import FrozenDict, FrozenList

__all__ = ["RequestEncoder", "key_values", "native_writer"]

_log = logging.getLogger("govbus.consumers.sinks.otlp")

# One row per log record: time, observed time, trace id (0: none), span id (0: none), flags,
# severity number, severity text, body, event name, attributes (in order).
Row = tuple[int, int, int, int, int, int, str, str, str, Mapping[str, Any]]


def native_writer() -> Callable[..., bytes] | None:
    """The compiled core's request writer (``govbus._native.otlp_logs_request``), or None when the
    core is not in use (not installed, ``GOVBUS_NATIVE=off``) or predates it."""
    writer: Callable[..., bytes] | None = native_core.symbol("otlp_logs_request")
    return writer


def _value(value: Any) -> AnyValue:
    # The exporter's type order: bool before int (bool is an int), then str, int, float, bytes,
    # sequences; the sink's attribute values are only ever these scalars.
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    raise TypeError(f"an OTLP attribute value cannot be a {type(value).__name__}")


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    """``KeyValue`` messages for attributes, in their order (resource and scope attributes)."""
    return [KeyValue(key=k, value=_value(v)) for k, v in attributes.items()]


class RequestEncoder:
    """Encodes batches of rows for one resource and one instrumentation scope."""

    def __init__(
        self,
        resource_attributes: Mapping[str, Any],
        resource_schema_url: str,
        scope_name: str,
        scope_version: str | None,
        scope_schema_url: str | None,
        max_attributes: int,
        *,
        native: bool = True,
    ) -> None:
        self._resource = PbResource(attributes=key_values(resource_attributes))
        self._resource_schema_url = resource_schema_url
        self._scope = InstrumentationScope(name=scope_name, version=scope_version or "")
        self._scope_schema_url = scope_schema_url
        self._max = max_attributes
        self._resource_bytes = self._resource.SerializeToString()
        self._scope_bytes = self._scope.SerializeToString()
        self._native = native_writer() if native else None
        # Per-type constructors: the type test runs once per attribute, not once per branch.
        self._by_type: dict[type, Callable[[Any], AnyValue]] = {
            str: lambda v: AnyValue(string_value=v),
            int: lambda v: AnyValue(int_value=v),
            float: lambda v: AnyValue(double_value=v),
            bool: lambda v: AnyValue(bool_value=v),
            bytes: lambda v: AnyValue(bytes_value=v),
        }

    def request(self, rows: Iterable[Row]) -> ExportLogsServiceRequest:
        by_type = self._by_type
        records = []
        for time_ns, observed_ns, trace_id, span_id, flags, sev_number, sev_text, body, name, attrs in rows:
            kvs = [KeyValue(key=k, value=by_type.get(type(v), _value)(v)) for k, v in attrs.items()]
            dropped = 0
            if len(kvs) > self._max:
                dropped = len(kvs) - self._max
                del kvs[self._max :]
            records.append(
                LogRecord(
                    time_unix_nano=time_ns,
                    observed_time_unix_nano=observed_ns,
                    trace_id=trace_id.to_bytes(16, "big") if trace_id else b"",
                    span_id=span_id.to_bytes(8, "big") if span_id else b"",
                    flags=flags,
                    severity_number=sev_number,  # type: ignore[arg-type]
                    severity_text=sev_text,
                    body=AnyValue(string_value=body),
                    attributes=kvs,
                    dropped_attributes_count=dropped,
                    event_name=name,
                )
            )
        scope_logs = ScopeLogs(scope=self._scope, log_records=records, schema_url=self._scope_schema_url or "")
        return ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(resource=self._resource, scope_logs=[scope_logs], schema_url=self._resource_schema_url)
            ]
        )

    def native_mapper(
        self,
        event_attributes: Sequence[tuple[str, str]],
        producer_attributes: Sequence[tuple[str, str]],
        prefix: str,
        severity: Callable[[str], int],
        log_format: Any = None,
    ) -> Callable[[list[Any], int], bytes] | None:
        """The compiled core's whole-batch mapping + encoding (``govbus._native.OtlpMapper``:
        delivered records and the batch's observed time in, the serialized request out), for a
        sink whose mapping is these tables; None when the core is not in use or predates it.
        ``log_format``: the ``OtlpLogFormat`` the intake drafted log records with (those are taken
        as drafted)."""
        if self._native is None:
            return None
        cls = native_core.symbol("OtlpMapper")
        if cls is None:
            return None
        try:
            mapper = cls(
                self._resource_bytes, self._resource_schema_url, self._scope_bytes, self._scope_schema_url or "",
                self._max, list(event_attributes), list(producer_attributes), prefix, severity,
                (FrozenDict, FrozenList), log_format,
            )  # fmt: skip
        except ValueError as exc:  # tables it cannot map without looking keys up
            _log.info("otlp request: no native mapping (%s)", exc)
            return None
        encode: Callable[[list[Any], int], bytes] = mapper.encode
        return encode

    def encode(self, rows: Iterable[Row]) -> bytes:
        """The serialized request: the compiled core's writer when it is in use, else (or for a
        batch it refuses, e.g. an attribute value of another type) the generated classes."""
        data: bytes
        rows = list(rows)
        if self._native is not None:
            try:
                data = self._native(
                    self._resource_bytes, self._resource_schema_url, self._scope_bytes,
                    self._scope_schema_url or "", rows, self._max,
                )  # fmt: skip
                return data
            except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
                _log.debug("otlp request: native encoder refused the batch (%s); using the generated classes", exc)
        data = self.request(rows).SerializeToString()
        return data
