"""Trace context: captured on the caller's thread, a PRODUCER span per publish, W3C traceparent."""

from __future__ import annotations

import subprocess
import sys
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from govbus.event import GovernanceEvent
from govbus.producer import _tracing

CALLER = SpanContext(0x1234567890ABCDEF1234567890ABCDEF, 0x1122334455667788, is_remote=False, trace_flags=TraceFlags(1))


def sdk() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def captured_in_caller_context() -> object:
    with trace.use_span(NonRecordingSpan(CALLER)):
        return _tracing.capture()


def test_capture_outside_any_span_is_none() -> None:
    assert _tracing.capture() is None


def test_no_sdk_means_no_span_and_the_callers_context_travels() -> None:
    tracing = _tracing.Tracing("topic")
    assert tracing.tracer() is None  # the global provider is OpenTelemetry's no-op proxy
    event = GovernanceEvent(agent_id="a")
    pub = tracing.publish(event, captured_in_caller_context(), None)  # type: ignore[arg-type]
    assert pub.span is None
    assert pub.traceparent == "00-1234567890abcdef1234567890abcdef-1122334455667788-01"
    # The event had no trace ids: it gets the caller's.
    assert (pub.event.trace_id, pub.event.span_id) == ("1234567890abcdef1234567890abcdef", "1122334455667788")
    assert pub.event.event_id == event.event_id
    assert pub.event.agent_id == "a"


def test_event_ids_are_kept_and_used_when_there_is_no_current_span() -> None:
    tracing = _tracing.Tracing("topic")
    event = GovernanceEvent(agent_id="a", trace_id="ab" * 16, span_id="cd" * 8)
    pub = tracing.publish(event, None, None)
    assert pub.event is event
    assert pub.traceparent == f"00-{'ab' * 16}-{'cd' * 8}-01"


def test_nothing_to_propagate() -> None:
    pub = _tracing.Tracing("topic").publish(GovernanceEvent(agent_id="a"), None, None)
    assert (pub.traceparent, pub.tracestate, pub.span) == (None, None, None)


def test_sdk_span_per_publish_is_a_child_of_the_callers_span() -> None:
    provider, exporter = sdk()
    tracing = _tracing.Tracing("govbus.events", provider)
    tracer = tracing.tracer()
    assert tracer is not None
    event = GovernanceEvent(agent_id="agent-7")
    # Captured on the caller's thread, published on another (as the sender thread does).
    captured = captured_in_caller_context()
    result: list[_tracing.Publication] = []
    worker = threading.Thread(target=lambda: result.append(tracing.publish(event, captured, tracer, b"agent-7")))  # type: ignore[arg-type]
    worker.start()
    worker.join()
    pub = result[0]
    pub.end("handed-over", 2)
    (span,) = exporter.get_finished_spans()
    assert span.name == "send govbus.events"
    assert span.kind is SpanKind.PRODUCER
    assert span.parent is not None
    assert span.parent.span_id == CALLER.span_id
    assert span.context.trace_id == CALLER.trace_id
    assert span.attributes is not None
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.message.id"] == event.event_id
    assert span.attributes["messaging.destination.partition.id"] == "2"
    assert span.attributes["govbus.outcome"] == "handed-over"
    # The record carries the producer span's context; the event names the caller's span.
    assert pub.traceparent == f"00-{CALLER.trace_id:032x}-{span.context.span_id:016x}-01"
    assert pub.event.span_id == f"{CALLER.span_id:016x}"


def test_journaled_context_round_trips() -> None:
    form = _tracing.journal_form(CALLER)
    assert form == (CALLER.trace_id, CALLER.span_id, 1, None)
    pub = _tracing.Tracing("t").publish(GovernanceEvent(agent_id="a"), form, None)
    assert pub.traceparent == "00-1234567890abcdef1234567890abcdef-1122334455667788-01"


def test_the_empty_context_is_no_spans_even_if_govbus_is_first_imported_inside_one() -> None:
    """Memory mode queues an event emitted with EMPTY_CONTEXT alone and encodes it without trace
    context: EMPTY_CONTEXT must be the context of no span, not the importer's."""
    script = """
from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1)))
with trace.use_span(span):
    from govbus.producer._batch import EMPTY_CONTEXT

    inside = context.get_current()
assert inside is not EMPTY_CONTEXT
assert context.get_current() is EMPTY_CONTEXT
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
