"""The otlp sink's log records drafted by the compiled core at intake (native/src/otlp_draft.rs),
held to the Python mapping.

For the otlp sink (OTLP/HTTP) the batch intake drafts each record's encoded ``LogRecord`` in its
decoding pass instead of building its Python event, and the sink's ``OtlpMapper`` puts drafted
records into the request as they are. The request must be byte-identical to what the Python
mapping (``_otlp._rows`` and the generated opentelemetry-proto classes) gives for the same records
decoded on the Python path: every event field, severity words in any case and spacing, trace ids
from the event or from a valid or invalid ``traceparent``, nested attributes, both
``max_attributes`` limits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from _intake_rows import decoded_record
from _native_strategies import PRODUCERS, SETTINGS, encode, events
from _sinks import FakeMessage
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.metrics import get_meter

from govbus import _accel as native
from govbus._contract import Decoder
from govbus.consumers._intake import Intake
from govbus.consumers._spi import DeliveredRecord, SinkContext
from govbus.consumers.sinks._otlp import OtlpSink, _rows
from govbus.event import GovernanceEvent

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

CTX = SinkContext("otlp", "govbus.sink.otlp", "govbus.events", get_meter("t"), logging.getLogger("t"))
NOW = 1_764_000_123_456_789_000
_TRACE = "0af7651916cd43dd8448eb211c80319c"
_TRACEPARENTS = st.sampled_from(
    [
        f"00-{_TRACE}-b7ad6b7169203331-01".encode(),
        f" 00-{_TRACE}-b7ad6b7169203331-00\t".encode(),
        f"01-{_TRACE}-b7ad6b7169203331-ff-x".encode(),
        f"ff-{_TRACE}-b7ad6b7169203331-01".encode(),
        b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01",
        b"00-ABABABABABABABABABABABABABABABAB-b7ad6b7169203331-01",
        b"\xff",
        b"",
    ]
)
_MOSTLY = st.sampled_from([True, True, True, False])  # True is also what hypothesis shrinks towards
_TIMES = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2255, 1, 1), timezones=st.just(UTC))
_SEVERITIES = st.sampled_from(["info", " WARNING ", "Crit", "\tlow\n", "none", "unknown", "", "\u0131nfo", "FATAL"])


@pytest.fixture(params=[256, 32], ids=["max256", "max32"])
def sink(request: pytest.FixtureRequest) -> Iterator[OtlpSink]:
    s = OtlpSink(endpoint="http://127.0.0.1:9/v1/logs", service_name="svc", max_attributes=str(request.param))
    s.open(CTX)
    yield s
    s.close()


def _intake(sink: OtlpSink, msgs: list[FakeMessage], *, start: bool = False) -> list[Any]:
    intake = Intake(Decoder(), events=sink.reads_events, draft=sink._native_draft_format())
    assert intake._draft is not None
    rows = intake.start(msgs).rows() if start else intake.prepare(msgs)  # type: ignore[union-attr]
    assert rows is not None
    works = [
        intake(m, 1, defer=True) if row is None else intake.take(row, 1) for m, row in zip(msgs, rows, strict=True)
    ]
    intake.settle()
    return [w.record for w in works]


def _same_request(sink: OtlpSink, records: list[Any], refs: list[DeliveredRecord]) -> bytes:
    assert sink._mapper is not None
    assert sink._encoder is not None
    want = sink._encoder.request(list(_rows(refs, NOW))).SerializeToString()
    got = sink._mapper(records, NOW)
    assert got == want
    return got  # type: ignore[no-any-return]


@settings(SETTINGS, suppress_health_check=[*SETTINGS.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(data=st.data(), evs=st.lists(events(), min_size=1, max_size=4))
def test_drafted_log_records_equal_the_python_mapping(
    sink: OtlpSink, data: st.DataObject, evs: list[GovernanceEvent]
) -> None:
    msgs = []
    for i, event in enumerate(evs):
        if data.draw(_MOSTLY):  # mostly a severity word of the table, in any case and spacing
            event = dataclasses.replace(event, severity=data.draw(_SEVERITIES) or "x")
        if data.draw(_MOSTLY):  # mostly a time a log record holds exactly (1970-2255)
            event = dataclasses.replace(event, occurred_at=data.draw(_TIMES))
        if data.draw(st.booleans()):
            event = dataclasses.replace(
                event, trace_id=_TRACE, span_id=data.draw(st.none() | st.just("b7ad6b7169203331"))
            )
        rec = encode(event, data.draw(st.sampled_from([1, 2])), data.draw(st.sampled_from(PRODUCERS)))
        headers = list(rec.headers)
        if data.draw(st.booleans()):
            headers = [h for h in headers if h[0] != "ce_subject"]
        headers += [("traceparent", data.draw(st.none() | _TRACEPARENTS)) for _ in range(data.draw(st.integers(0, 2)))]
        ts = data.draw(st.integers(0, 2**41)) if data.draw(_MOSTLY) else None
        msgs.append(
            FakeMessage(
                rec.value,
                headers,
                topic=data.draw(st.text(max_size=6)),
                partition=data.draw(st.integers(0, 2**31 - 1)),
                offset=data.draw(st.integers(0, 2**62)) + i,
                timestamp=(TIMESTAMP_NOT_AVAILABLE, 0) if ts is None else (TIMESTAMP_CREATE_TIME, ts),
            )
        )
    records = _intake(sink, msgs)
    refs = [decoded_record(m) for m in msgs]
    assert [r is None for r in records] == [r is None for r in refs]
    kept = [(r, ref) for r, ref in zip(records, refs, strict=True) if r is not None and ref is not None]
    if not kept:
        return
    assert sink._mapper is not None
    assert sink._encoder is not None
    try:
        want: bytes | None = sink._encoder.request(list(_rows([ref for _, ref in kept], NOW))).SerializeToString()
    except ValueError:  # a time the request cannot hold (before 1970): the reference refuses the batch
        want = None
    try:
        got: bytes | None = sink._mapper([r for r, _ in kept], NOW)
    except TypeError:  # declined (an undrafted record it leaves to Python): the sink maps it in Python
        got = None
    if want is None:
        assert got is None  # never bytes where the reference has none
    elif got is not None:
        assert got == want
    if got is not None:
        for r, _ in kept:
            if type(r._draft).__name__ == "OtlpDraft":
                assert r._event is None  # taken as drafted: its event was never built


def _messages(n: int, *, timestamp: tuple[int, int] | None = None) -> list[FakeMessage]:
    out = []
    for i in range(n):
        e = GovernanceEvent(
            agent_id=f"a{i}", event_id=f"e{i}", severity="high", attributes={"i": i, "tags": ["x", {"b": 1, "a": 2.5}]}
        )
        rec = encode(e, 2)
        hs = [*rec.headers, ("traceparent", f"00-{_TRACE}-b7ad6b7169203331-01".encode())]
        out.append(FakeMessage(rec.value, hs, offset=i, partition=i % 3, timestamp=timestamp))
    return out


@pytest.mark.parametrize("start", [False, True], ids=["batch", "own-thread"])
def test_records_are_drafted_not_built_and_requests_match(sink: OtlpSink, start: bool) -> None:
    msgs = _messages(80)
    records = _intake(sink, msgs, start=start)
    assert all(type(r._draft).__name__ == "OtlpDraft" and r._event is None and r.line is None for r in records)
    _same_request(sink, records, [decoded_record(m) for m in msgs])  # type: ignore[misc]
    assert all(r._event is None for r in records)


def test_records_not_drafted_are_mapped_from_their_events(sink: OtlpSink) -> None:
    msgs = _messages(3, timestamp=(TIMESTAMP_NOT_AVAILABLE, 0))  # the observed time is the batch's
    records = _intake(sink, msgs)
    assert all(r._draft is None for r in records)
    _same_request(sink, records, [decoded_record(m) for m in msgs])  # type: ignore[misc]


def test_a_flagged_record_or_another_mappings_draft_is_mapped_again(sink: OtlpSink) -> None:
    msgs = _messages(3)
    records = _intake(sink, msgs)
    refs: list[Any] = [decoded_record(m) for m in msgs]
    object.__setattr__(records[0], "flagged", True)  # a verdict a policy flagged after the draft
    object.__setattr__(records[0], "verdict_detail", "gap")
    refs[0] = dataclasses.replace(refs[0], flagged=True, verdict_detail="gap")
    _same_request(sink, records, refs)
    assert records[0]._event is not None
    assert records[1]._event is None
    other = OtlpSink(endpoint="http://127.0.0.1:9/v1/logs", service_name="svc")
    other.open(CTX)
    try:
        fresh = _intake(sink, _messages(2))
        assert other._mapper is not None
        other._mapper(fresh, NOW)  # drafted for another sink's mapping: mapped from the events
        assert all(r._event is not None for r in fresh)
    finally:
        other.close()


def test_grpc_and_python_paths_read_events() -> None:
    assert not OtlpSink(endpoint="http://127.0.0.1:9/v1/logs").reads_events
    grpc = OtlpSink(endpoint="127.0.0.1:9", protocol="grpc")
    assert grpc.reads_events
    assert grpc._native_draft_format() is None
