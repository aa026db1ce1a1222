"""W3C trace context for published events, and one PRODUCER span per publish.

The caller's thread only captures the current span context (a context-variable read); everything
else happens on the sender thread. With no OpenTelemetry SDK configured no span is created: the
record then carries the caller's own context (or the event's ids) as ``traceparent``.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from govbus.event import GovernanceEvent

# What emit() captured: the caller's OTel Context (memory mode: one context-variable read, the
# span is looked up on the sender thread), a SpanContext, or its journaled form (disk mode).
Captured = Context | SpanContext | tuple[int, int, int, str | None] | None

_get_current_span = trace.get_current_span
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)

#: The cheapest capture, for memory mode: the caller's current context (~0.1 µs).
capture_context = otel_context.get_current


def capture() -> SpanContext | None:
    """The caller's current span context, if there is a valid one (runs inside ``emit()``)."""
    context = _get_current_span().get_span_context()
    return context if context.is_valid else None


def journal_form(context: SpanContext | None) -> tuple[int, int, int, str | None] | None:
    if context is None:
        return None
    state = context.trace_state.to_header() if len(context.trace_state) else None
    return context.trace_id, context.span_id, int(context.trace_flags), state


def traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class Publication:
    """The trace side of publishing one event: the (possibly completed) event, the headers' trace
    context, and the producer span to end once the record is handed over."""

    __slots__ = ("event", "span", "traceparent", "tracestate")

    def __init__(self, event: GovernanceEvent, span: Any, traceparent: str | None, tracestate: str | None) -> None:
        self.event = event
        self.span = span
        self.traceparent = traceparent
        self.tracestate = tracestate

    def end(self, outcome: str, partition: int | None = None) -> None:
        span = self.span
        if span is not None:
            span.set_attribute("govbus.outcome", outcome)
            if partition is not None:
                span.set_attribute("messaging.destination.partition.id", str(partition))
            span.end()
            self.span = None


class Tracing:
    """Per-bus tracing: an explicit ``tracer_provider``, or OpenTelemetry's global one."""

    def __init__(self, topic: str, tracer_provider: Any = None, version: str = "") -> None:
        self._topic = topic
        self._name = f"send {topic}"
        self._explicit = tracer_provider
        self._version = version
        self._provider: Any = None
        self._tracer: Any = None

    def tracer(self) -> Any:
        """The tracer to use, or None when no SDK is configured (spans would be no-ops anyway)."""
        provider = self._explicit if self._explicit is not None else trace.get_tracer_provider()
        if provider is not self._provider:
            self._provider = provider
            noop = isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
            self._tracer = None if noop else provider.get_tracer("govbus.producer", self._version)
        return self._tracer

    def publish(self, event: GovernanceEvent, captured: Captured, tracer: Any, key: bytes | None = None) -> Publication:
        parent = _span_context(captured)
        if parent is not None and event.trace_id is None:
            # The event is about what the caller is doing: it belongs to the caller's trace.
            event = _with_trace_ids(event, f"{parent.trace_id:032x}", f"{parent.span_id:016x}")
        elif parent is None and event.trace_id is not None and event.span_id is not None:
            parent = SpanContext(int(event.trace_id, 16), int(event.span_id, 16), is_remote=True, trace_flags=_SAMPLED)
        span = None
        context = parent
        if tracer is not None:
            attributes: dict[str, str] = {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": self._topic,
                "messaging.message.id": event.event_id,
                "govbus.agent_id": event.agent_id,
                "govbus.kind": event.kind.value,
            }
            if key is not None:
                attributes["messaging.kafka.message.key"] = key.decode(errors="replace")
            parent_ctx = trace.set_span_in_context(NonRecordingSpan(parent), Context()) if parent else Context()
            span = tracer.start_span(self._name, context=parent_ctx, kind=SpanKind.PRODUCER, attributes=attributes)
            own = span.get_span_context()
            if own.is_valid:
                context = own
        if context is None:
            return Publication(event, span, None, None)
        state = context.trace_state.to_header() if len(context.trace_state) else None
        return Publication(event, span, traceparent(context), state)


def _span_context(captured: Captured) -> SpanContext | None:
    if captured is None or isinstance(captured, SpanContext):
        return captured
    if isinstance(captured, dict):  # an OTel Context
        found = _get_current_span(captured).get_span_context()
        return found if found.is_valid else None
    trace_id, span_id, flags, state = captured
    try:
        return SpanContext(
            trace_id,
            span_id,
            is_remote=True,
            trace_flags=TraceFlags(flags),
            trace_state=TraceState.from_header([state]) if state else None,
        )
    except (TypeError, ValueError):
        return None


def _with_trace_ids(event: GovernanceEvent, trace_id: str, span_id: str) -> GovernanceEvent:
    # dataclasses.replace would validate every field again (~10 µs); these two are valid hex by
    # construction (from a valid SpanContext), so copy the slots and set them directly.
    copy = object.__new__(GovernanceEvent)
    for name in GovernanceEvent.__slots__:
        object.__setattr__(copy, name, getattr(event, name))
    object.__setattr__(copy, "trace_id", trace_id)
    object.__setattr__(copy, "span_id", span_id)
    return copy
