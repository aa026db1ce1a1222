"""Consumer spans: one span per write attempt, linked to each record's producer span.

A batch has many parents, so the span is not a child of any of them: following the OpenTelemetry
messaging conventions it carries one *link* per record that has a W3C ``traceparent`` header.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags, TracerProvider

from govbus._cloudevents import TRACEPARENT
from govbus.consumers._spi import DeliveredRecord

__all__ = ["default_tracer_provider", "links_for", "parse_traceparent"]

# The SDK's default span link limit; links beyond it would be dropped anyway.
MAX_LINKS = 128
_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: bytes | None) -> SpanContext | None:
    """The remote span context of a version-00 ``traceparent``, or None when it is not one."""
    if value is None or len(value) != 55:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    version, trace_id, span_id, flags = text[0:2], text[3:35], text[36:52], text[53:55]
    if version != "00" or text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    if not _HEX.issuperset(trace_id + span_id + flags):
        return None
    tid, sid = int(trace_id, 16), int(span_id, 16)
    if tid == 0 or sid == 0:
        return None
    return SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(int(flags, 16)))


def links_for(records: Iterable[DeliveredRecord], limit: int = MAX_LINKS) -> list[Link]:
    links: list[Link] = []
    for r in records:
        for name, value in r.headers:
            if name == TRACEPARENT:
                ctx = parse_traceparent(value)
                if ctx is not None:
                    links.append(Link(ctx))
                break
        if len(links) >= limit:
            break
    return links


def default_tracer_provider() -> TracerProvider:
    """An SDK provider exporting over OTLP/HTTP when an OTLP endpoint is configured, else the
    global provider (a no-op unless the embedding application installed one)."""
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = SdkTracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return provider
    return trace.get_tracer_provider()
