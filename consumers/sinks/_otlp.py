"""The OTLP logs sink: every governance event becomes one OpenTelemetry log record.

OTLP/HTTP (the default): each batch becomes one ``ExportLogsServiceRequest`` (no SDK ``LogRecord``
per event), POSTed once; the batch is acknowledged only on a 2xx answer. With the compiled core in
use the whole batch is mapped and encoded in one native call (``OtlpMapper``, docs/native.md),
and the runtime's intake has already drafted most records' log records in its decoding pass
(``native_log_format``: no Python event is built for them); the mapping below (``_row``,
``log_attributes``) with ``_otlp_request``'s encoder is the reference both are held to, and the
path a batch they decline takes. The resource and scope are the
SDK's own (``Resource.create``: ``OTEL_RESOURCE_ATTRIBUTES``, ``telemetry.sdk.*``).

gRPC: records go through opentelemetry-sdk's ``LoggerProvider`` into a processor that only
collects them; ``write`` then hands the whole batch to the SDK's gRPC exporter itself and
acknowledges it only when the exporter reports success. The SDK's ``BatchLogRecordProcessor``
cannot be used for that: it exports on a background thread and drops the result, so an
acknowledged event could still be lost. The same SDK path is the reference the direct encoding
is tested against.

The field → attribute and severity mappings are documented in docs/sinks-reference.md; the
constants below are that table.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import json
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordLimits,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
)
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from pydantic import Field, SecretStr, field_validator

from govbus import _accel as native_core
from govbus._cloudevents import TRACEPARENT
from govbus.consumers._errors import SinkError
from govbus.consumers._spi import OK, Batch, DeliveredRecord, RetryLater, SinkBase, SinkContext, WriteResult
from govbus.consumers.sinks._options import SinkOptions, env_name, parse_pairs, resolve_options
from govbus.consumers.sinks._otlp_request import RequestEncoder, Row
from govbus.consumers.sinks._retry_after import parse_retry_after
from govbus.consumers.sinks._severity import UNKNOWN, otel_table, severity
from govbus.errors import ConfigError
from govbus.event import FIELDS, GovernanceEvent, ProducerInfo

__all__ = ["ATTRIBUTES", "OtlpSink", "OtlpSinkOptions"]

_log = logging.getLogger("govbus.consumers.sinks.otlp")

# Event field -> log record attribute. Trace ids are not here: they go on the record itself.
ATTRIBUTES: Mapping[str, str] = {
    "event_id": "cloudevents.event_id",
    "ce_source": "cloudevents.event_source",
    "ce_type": "cloudevents.event_type",
    "ce_specversion": "cloudevents.event_spec_version",
    "ce_subject": "cloudevents.event_subject",
    "agent_id": "gen_ai.agent.id",
    "agent_did": "governance.agent.did",
    "session_id": "session.id",
    "kind": "governance.kind",
    "severity": "governance.severity",
    "action": "governance.action",
    "decision": "governance.decision",
    "reason": "governance.reason",
    "resource": "governance.resource",
    "policy_name": "governance.policy.name",
    "latency_ms": "governance.latency_ms",
    "parent_span_id": "governance.parent_span_id",
    "schema_version": "governance.schema_version",
    "tenant_id": "governance.tenant_id",
    "policy_version": "governance.policy.version",
    "risk_score": "governance.risk_score",
    "producer.name": "governance.producer.name",
    "producer.instance_id": "governance.producer.instance_id",
    "producer.host": "governance.producer.host",
    "producer.library": "governance.producer.library",
    "verdict": "governance.verdict",
    "flagged": "governance.flagged",
    "topic": "messaging.destination.name",
    "partition": "messaging.destination.partition.id",
    "offset": "messaging.kafka.offset",
}
ATTRIBUTE_PREFIX = "governance.attributes."  # + the event attribute's key
# The model's fields whose value is the attribute's value as it is (kind is its enum's value, the
# event id comes from ce_id, equal to it); the producer's fields likewise.
_EVENT_ATTRIBUTES = tuple(
    (name, ATTRIBUTES[name]) for name in FIELDS if name in ATTRIBUTES and name not in ("kind", "event_id")
)
_PRODUCER_ATTRIBUTES = tuple((f.name, ATTRIBUTES[f"producer.{f.name}"]) for f in dataclasses.fields(ProducerInfo))
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


class OtlpSinkOptions(SinkOptions):
    """Options of the ``otlp`` sink (``GOVBUS_SINK__OPTIONS__<NAME>``)."""

    # OTLP/HTTP: the full logs URL. gRPC: host:port or http(s)://host:port.
    endpoint: str = "http://127.0.0.1:4318/v1/logs"
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    # Sent with every export, e.g. "authorization=Bearer x,x-tenant=acme"; values are never logged.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    # Per export, including the exporter's own retries of 429/502/503/504.
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    compression: Literal["none", "gzip", "deflate"] = "none"
    certificate_file: Path | None = None
    client_certificate_file: Path | None = None
    client_key_file: Path | None = None
    # gRPC only: plaintext instead of TLS.
    insecure: bool = False
    service_name: str = Field(default="govbus-sink", min_length=1)
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    scope_name: str = Field(default="govbus.governance", min_length=1)
    # Per log record; event attributes beyond it are dropped (OTLP counts them as dropped).
    max_attributes: int = Field(default=256, ge=32, le=10_000)
    # A server's Retry-After is honoured up to this many seconds.
    max_retry_after_s: float = Field(default=300.0, ge=0)

    _pairs = field_validator("headers", "resource_attributes", mode="before")(parse_pairs)


class _Collector(LogRecordProcessor):
    """Keeps what the Logger emits until ``write`` takes it; never exports by itself."""

    def __init__(self) -> None:
        self.records: list[ReadableLogRecord] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        # Drop the context reference (as the SDK's batch processor does): the exporter needs
        # only the ids already copied onto the record.
        record.context = Context()
        self.records.append(
            ReadableLogRecord(
                log_record=record,
                resource=log_record.resource or Resource.create({}),
                instrumentation_scope=log_record.instrumentation_scope,
                limits=log_record.limits,
            )
        )

    def take(self) -> list[ReadableLogRecord]:
        out, self.records = self.records, []
        return out

    def shutdown(self) -> None:
        self.records = []

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _HttpPost:
    """Sends one encoded request over OTLP/HTTP (binary protobuf) with a keep-alive session.

    One attempt per ``write`` (plus one at once when a pooled connection turned out stale):
    429/502/503/504 and unreachable collectors go back to the runtime as ``RetryLater``, whose
    backoff (and the collector's ``Retry-After``) paces the next attempt.
    """

    def __init__(self, o: OtlpSinkOptions) -> None:
        try:
            self._requests: Any = importlib.import_module("requests")
        except ImportError:  # a dependency of opentelemetry-exporter-otlp-proto-http
            raise ConfigError(
                env_name("protocol"),
                "http/protobuf needs opentelemetry-exporter-otlp-proto-http (pip install opentelemetry-exporter-otlp-proto-http)",
            ) from None
        session = self._requests.Session()
        session.verify = str(o.certificate_file) if o.certificate_file else True
        if o.client_certificate_file is not None:
            cert = str(o.client_certificate_file)
            session.cert = (cert, str(o.client_key_file)) if o.client_key_file else cert
        self._session = session
        self._url = o.endpoint
        self._timeout = o.timeout_s
        self._compression = o.compression
        self._headers = {"Content-Type": "application/x-protobuf"}
        self._headers.update({k: v.get_secret_value() for k, v in o.headers.items()})
        if o.compression != "none":
            self._headers["Content-Encoding"] = o.compression

    def post(self, body: bytes) -> tuple[int | None, str | None, str]:
        """(HTTP status or None, its Retry-After, what went wrong when there was no response)."""
        if self._compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif self._compression == "deflate":
            body = zlib.compress(body)
        deadline = time.monotonic() + self._timeout
        for attempt in (1, 2):
            try:
                response = self._session.post(
                    self._url, data=body, headers=self._headers, timeout=max(0.01, deadline - time.monotonic())
                )
            except self._requests.ConnectionError as exc:
                if attempt == 1 and deadline - time.monotonic() > 0:
                    continue
                return None, None, type(exc).__name__
            except self._requests.RequestException as exc:
                return None, None, type(exc).__name__
            return int(response.status_code), response.headers.get("Retry-After"), ""
        return None, None, "ConnectionError"  # not reached: the second attempt returns

    def close(self) -> None:
        self._session.close()


class OtlpSink(SinkBase):
    """Delivers events as OTLP log records; see the module docstring and docs/sinks-reference.md."""

    def __init__(self, options: OtlpSinkOptions | None = None, /, **raw: Any) -> None:
        self.options = resolve_options(OtlpSinkOptions, options, raw)
        if self.options.protocol == "http/protobuf" and not re.match(r"https?://", self.options.endpoint):
            raise ConfigError(env_name("endpoint"), f"must be an http(s):// URL, got {self.options.endpoint!r}")
        self._provider: LoggerProvider | None = None
        self._logger: Any = None
        self._collector = _Collector()
        self._exporter: LogRecordExporter | None = None
        self._encoder: RequestEncoder | None = None
        self._mapper: Callable[[list[Any], int], bytes] | None = None
        self._http: _HttpPost | None = None
        # OTLP/HTTP with the compiled core: the intake drafts each record's log record in its
        # decoding pass (native/src/otlp_draft.rs), so no Python event is built for the mapping;
        # a record without a draft is mapped from its event, decoded when read.
        self._log_format = native_log_format(self.options.max_attributes) if self.options.protocol != "grpc" else None
        self.reads_events = self._log_format is None

    # -- lifecycle -------------------------------------------------------------------------
    def open(self, context: SinkContext) -> None:
        super().open(context)
        o = self.options
        resource = Resource.create({**o.resource_attributes, "service.name": o.service_name})
        provider = LoggerProvider(
            resource=resource,
            shutdown_on_exit=False,
            log_record_limits=LogRecordLimits(max_attributes=o.max_attributes),
        )
        provider.add_log_record_processor(self._collector)
        logger = provider.get_logger(o.scope_name)
        if type(logger).__name__ == "NoOpLogger":
            raise ConfigError("OTEL_SDK_DISABLED", "the OpenTelemetry SDK is disabled, so the otlp sink cannot export")
        if o.protocol == "grpc":
            self._exporter = self._grpc_exporter()
        else:
            # The resource and scope are the SDK's (OTEL_RESOURCE_ATTRIBUTES, telemetry.sdk.*);
            # the records are encoded directly (see _otlp_request).
            self._http = _HttpPost(o)
            self._encoder = request_encoder(resource, o)
            self._mapper = native_mapper(self._encoder, self._log_format)
        self._provider = provider
        self._logger = logger
        _log.info("otlp sink exporting to %s over %s", o.endpoint, o.protocol)

    def _native_draft_format(self) -> Any | None:
        """For the runtime's intake: what it drafts log records with (None: it does not)."""
        return self._log_format

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._encoder = None
        self._mapper = None
        if self._exporter is not None:
            # The SDK's exporter base class leaves shutdown() unannotated.
            cast(Any, self._exporter).shutdown()
            self._exporter = None
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None

    def _grpc_exporter(self) -> LogRecordExporter:
        o = self.options
        try:
            grpc_module = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc._log_exporter")
            grpc_compression = importlib.import_module("grpc").Compression
        except ImportError:
            raise ConfigError(
                env_name("protocol"),
                "grpc needs opentelemetry-exporter-otlp-proto-grpc (pip install opentelemetry-exporter-otlp-proto-grpc)",
            ) from None
        credentials = None
        if o.certificate_file or o.client_certificate_file:
            grpc = importlib.import_module("grpc")

            def _read(path: Path | None) -> bytes | None:
                return path.read_bytes() if path else None

            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(o.certificate_file),
                private_key=_read(o.client_key_file),
                certificate_chain=_read(o.client_certificate_file),
            )
        compression = {
            "none": grpc_compression.NoCompression,
            "gzip": grpc_compression.Gzip,
            "deflate": grpc_compression.Deflate,
        }[o.compression]
        exporter: LogRecordExporter = grpc_module.OTLPLogExporter(
            endpoint=o.endpoint,
            insecure=o.insecure,
            credentials=credentials,
            headers={k: v.get_secret_value() for k, v in o.headers.items()},
            timeout=o.timeout_s,
            compression=compression,
        )
        return exporter

    # -- delivery --------------------------------------------------------------------------
    def write(self, batch: Batch) -> WriteResult | None:
        encoder, http = self._encoder, self._http
        if encoder is None or http is None:
            if self._exporter is not None:
                return self._write_sdk(batch)
            raise SinkError("otlp sink: write() before open()")
        body = self._encode(encoder, batch, time.time_ns())
        started = time.monotonic()
        status, retry_after, error = http.post(body)
        if status is not None and 200 <= status < 300:
            return OK
        reason = f"otlp export failed after {time.monotonic() - started:.1f}s"
        reason += f" (last HTTP status {status})" if status is not None else f" (no response: {error})"
        delay = None
        if retry_after is not None and status in (429, 503):
            delay = parse_retry_after(retry_after, self.options.max_retry_after_s)
        return RetryLater(delay=delay, reason=reason)

    def _encode(self, encoder: RequestEncoder, batch: Sequence[DeliveredRecord], now_ns: int) -> bytes:
        """The serialized request: mapped and encoded in one native call when the compiled core is
        in use, else (or for a batch it leaves to Python) rows mapped here and then encoded."""
        if self._mapper is not None:
            try:
                return self._mapper(list(batch), now_ns)
            except Exception as exc:  # a value it leaves to the reference (which raises if it must)
                _log.debug("otlp sink: native mapping declined a batch (%s); mapping it in Python", exc)
        return encoder.encode(_rows(batch, now_ns))

    def _request(self, batch: Sequence[DeliveredRecord]) -> ExportLogsServiceRequest:
        """The direct request for a batch (what ``write`` sends over OTLP/HTTP)."""
        if self._encoder is None:
            raise SinkError("otlp sink: no direct encoder (not open, or gRPC)")
        return self._encoder.request(_rows(batch))

    def _sdk_request(self, batch: Sequence[DeliveredRecord]) -> ExportLogsServiceRequest:
        """The request the SDK path builds for a batch (its Logger, then the exporter's encoder)."""
        if self._logger is None:
            raise SinkError("otlp sink: write() before open()")
        encoder = importlib.import_module("opentelemetry.exporter.otlp.proto.common._log_encoder")
        return cast(ExportLogsServiceRequest, encoder.encode_logs(sdk_records(self._logger, self._collector, batch)))

    def _write_sdk(self, batch: Batch) -> WriteResult | None:
        """gRPC: records through the SDK's Logger into its gRPC exporter."""
        exporter, logger = self._exporter, self._logger
        if exporter is None or logger is None:
            raise SinkError("otlp sink: write() before open()")
        records = sdk_records(logger, self._collector, batch)
        started = time.monotonic()
        try:
            result = exporter.export(records)
        except Exception as exc:  # exporters should not raise, but a bug must not ack the batch
            return RetryLater(reason=f"otlp export raised {type(exc).__name__}: {exc}")
        if result is LogRecordExportResult.SUCCESS:
            return OK
        return RetryLater(reason=f"otlp export failed after {time.monotonic() - started:.1f}s")


def request_encoder(resource: Resource, options: OtlpSinkOptions) -> RequestEncoder:
    """The encoder of one sink's requests: its resource and scope as the SDK's exporter encodes them."""
    return RequestEncoder(
        resource.attributes,
        resource.schema_url,
        options.scope_name,
        scope_version=None,
        scope_schema_url=None,
        max_attributes=options.max_attributes,
    )


def native_mapper(encoder: RequestEncoder, log_format: Any = None) -> Callable[[list[Any], int], bytes] | None:
    """The compiled core's mapping of this module's tables (see :meth:`RequestEncoder.native_mapper`)."""
    return encoder.native_mapper(
        list(_EVENT_ATTRIBUTES),
        list(_PRODUCER_ATTRIBUTES),
        ATTRIBUTE_PREFIX,
        _severity_number,
        log_format,
    )


def native_log_format(max_attributes: int) -> Any | None:
    """What the compiled core's intake drafts this module's log records with
    (``govbus._native.OtlpLogFormat``, native/src/otlp_draft.rs), or None when the core is not in
    use or predates it."""
    cls = native_core.symbol("OtlpLogFormat")
    if cls is None:
        return None
    return cls(
        max_attributes,
        list(_EVENT_ATTRIBUTES),
        list(_PRODUCER_ATTRIBUTES),
        ATTRIBUTE_PREFIX,
        otel_table(),
        UNKNOWN.otel,
    )


def _severity_number(text: str) -> int:
    return severity(text).otel


def sdk_records(logger: Any, collector: _Collector, batch: Sequence[DeliveredRecord]) -> list[ReadableLogRecord]:
    """The batch as SDK log records, emitted through ``logger`` into ``collector`` (the gRPC path,
    and the reference the direct encoding is tested against)."""
    collector.take()  # nothing may leak from a failed earlier write
    for record in batch:
        _emit(logger, record)
    records = collector.take()
    if len(records) != len(batch):
        # Never acknowledge what was not handed to the exporter (a disabled logger, a filter).
        raise SinkError(f"otlp sink: {len(batch)} events but {len(records)} log records were emitted")
    return records


def _rows(batch: Sequence[DeliveredRecord], now_ns: int | None = None) -> Iterator[Row]:
    # now: the observed time of records without a Kafka timestamp, as the SDK does
    now = time.time_ns() if now_ns is None else now_ns
    return (_row(record, now) for record in batch)


def _row(record: DeliveredRecord, now_ns: int) -> Row:
    event = record.event
    trace_id, span_id, flags = _trace_ids(record)
    return (
        _ns(event),
        record.timestamp_ms * 1_000_000 if record.timestamp_ms is not None else now_ns,
        trace_id,
        span_id,
        flags,
        severity(event.severity).otel,
        event.severity,
        event.reason or f"{event.kind.value} {event.action} {event.decision}".strip(),
        record.attributes.type,
        log_attributes(record),
    )


def _emit(logger: Any, record: DeliveredRecord) -> None:
    event = record.event
    sev = severity(event.severity)
    logger.emit(
        timestamp=_ns(event),
        observed_timestamp=record.timestamp_ms * 1_000_000 if record.timestamp_ms is not None else None,
        context=_trace_context(record),
        severity_number=SeverityNumber(sev.otel),
        severity_text=event.severity,
        body=event.reason or f"{event.kind.value} {event.action} {event.decision}".strip(),
        attributes=log_attributes(record),
        event_name=record.attributes.type,
    )


def log_attributes(record: DeliveredRecord) -> dict[str, Any]:
    """The attributes of one event's log record (the mapping in :data:`ATTRIBUTES`)."""
    e = record.event
    a = record.attributes
    attrs: dict[str, Any] = {
        "cloudevents.event_id": a.id,
        "cloudevents.event_source": a.source,
        "cloudevents.event_type": a.type,
        "cloudevents.event_spec_version": a.specversion,
    }
    if a.subject is not None:
        attrs["cloudevents.event_subject"] = a.subject
    for name, key in _EVENT_ATTRIBUTES:
        value = getattr(e, name)
        if value is not None:  # optional fields only when set
            attrs[key] = value
    attrs["governance.kind"] = e.kind.value
    attrs["governance.verdict"] = record.verdict
    attrs["messaging.system"] = "kafka"
    attrs["messaging.destination.name"] = record.topic
    attrs["messaging.destination.partition.id"] = str(record.partition)
    attrs["messaging.kafka.offset"] = record.offset
    if record.flagged:
        attrs["governance.flagged"] = True
        if record.verdict_detail:
            attrs["governance.verdict_detail"] = record.verdict_detail
    if e.producer is not None:
        for name, key in _PRODUCER_ATTRIBUTES:
            attrs[key] = getattr(e.producer, name)
    for key, value in e.attributes.items():
        converted = _attribute_value(value)
        if converted is not None:
            attrs[ATTRIBUTE_PREFIX + key] = converted
    return attrs


def _attribute_value(value: Any) -> Any:
    # OTLP attributes are scalars (or homogeneous arrays): nested values travel as JSON text,
    # which every backend can store and most can query; null attributes are left out.
    if value is None:
        return None
    if isinstance(value, bool | int | float | str | bytes):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _ns(event: GovernanceEvent) -> int:
    moment = event.occurred_at
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _trace_ids(record: DeliveredRecord) -> tuple[int, int, int]:
    """(trace id, span id, flags) the log record is attached to: the event's own trace/span ids,
    else the record's W3C ``traceparent``; zeros when neither exists (never the sink thread's
    current span, which belongs to the runtime, not to the event)."""
    event = record.event
    raw = record.header(TRACEPARENT)
    parsed = _parse_traceparent(raw) if raw is not None else None
    if event.trace_id is not None:
        flags = parsed[2] if parsed is not None and parsed[0] == event.trace_id else 0
        return int(event.trace_id, 16), int(event.span_id, 16) if event.span_id else 0, flags
    if parsed is not None:
        trace_id, span_id, flags = parsed
        return int(trace_id, 16), int(span_id, 16), flags
    return 0, 0, 0


def _trace_context(record: DeliveredRecord) -> Context:
    """The SDK context of :func:`_trace_ids` (the gRPC path emits through the SDK's Logger)."""
    trace_id, span_id, flags = _trace_ids(record)
    if trace_id == 0:
        return set_span_in_context(INVALID_SPAN, Context())
    span = NonRecordingSpan(
        SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=TraceFlags(flags))
    )
    return set_span_in_context(span, Context())


def _parse_traceparent(raw: bytes | None) -> tuple[str, str, int] | None:
    """(trace id, span id, flags) of a W3C traceparent, or None if absent or invalid."""
    if raw is None:
        return None
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    m = _TRACEPARENT.fullmatch(text)
    if m is None or m.group(1) == "ff" or (m.group(1) == "00" and m.group(5)):
        return None
    trace_id, span_id = m.group(2), m.group(3)
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, int(m.group(4), 16) & 0xFF
