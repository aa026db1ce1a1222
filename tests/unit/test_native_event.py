"""The Python event built by the compiled core, held to the pure-Python decode on the same records.

For sinks that read ``record.event`` / ``record.attributes`` the native decode also builds the
``GovernanceEvent`` and ``CloudEventAttributes`` (``govbus._native.EventBuilder``). Each must be
equal, field by field and type by type (nested attribute values too), to what the reference
``govbus._record.from_record`` gives; a failure or panic while building leaves the record's event
to the Python path, and no record is ever lost to it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from _native_strategies import PRODUCERS, SETTINGS, VERDICTS, _json, encode, events
from _sinks import FakeMessage
from fastavro import schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from govbus import _accel as native
from govbus._cloudevents import CloudEventAttributes
from govbus._contract import _JSON_IN, Decoder, schema_version, to_datum
from govbus._record import from_record
from govbus.consumers._intake import Intake
from govbus.consumers._native_record import NativeRecord
from govbus.event import FIELDS, EventKind, GovernanceEvent, ProducerInfo

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

_RENDERERS: dict[int, Any] = {}
BUILDER = native.event_builder()


def renderer(reader: int) -> Any:
    if reader not in _RENDERERS:
        _RENDERERS[reader] = native.renderer_for(Decoder(reader))
    return _RENDERERS[reader]


def same(a: Any, b: Any, where: str = "") -> None:
    """``a`` and ``b`` are equal and of the same types all the way down (floats by repr: NaN, -0.0)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys or their order differ"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert repr(a) == repr(b), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, datetime):
        assert a == b, where
        assert a.tzinfo is b.tzinfo, where
        assert a.fold == b.fold, where
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def check_built(value: bytes, headers: Any, reader: int, verdict: tuple[str, str, bool] = VERDICTS[0]) -> None:
    """The renderer with the builder gives the line it gives without it, and the reference's event."""
    (plain,) = renderer(reader).render([(value, headers, *verdict)])
    (built,) = renderer(reader).render([(value, headers, *verdict)], BUILDER)
    assert type(plain) is tuple, plain
    assert built[:3] == plain
    ref = from_record(value, headers, Decoder(reader))
    event, attrs = built[3], built[4]
    assert type(event) is GovernanceEvent
    assert type(attrs) is CloudEventAttributes
    same(event, ref.event, "event")
    same(attrs, ref.attributes, "attributes")
    if "nan" not in repr(ref.event):  # NaN is unequal to itself
        assert event == ref.event
    assert attrs == ref.attributes


@SETTINGS
@given(
    event=events(),
    writer=st.sampled_from([1, 2]),
    reader=st.sampled_from([1, 2]),
    verdict=st.sampled_from(VERDICTS),
    producer=st.sampled_from(PRODUCERS),
)
def test_built_events_equal_the_python_decode(
    event: GovernanceEvent, writer: int, reader: int, verdict: tuple[str, str, bool], producer: ProducerInfo
) -> None:
    rec = encode(event, writer, producer)
    check_built(rec.value, rec.headers, reader, verdict)


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize(("writer", "reader"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_every_kind_for_every_writer_and_reader(kind: EventKind, writer: int, reader: int) -> None:
    if kind is EventKind.DATA_EXFILTRATION_DETECTED and writer == 1:
        pytest.skip("a v1 writer cannot carry it")
    extras = {"tenant_id": "t", "policy_version": "p", "risk_score": 0.25} if writer == 2 else {}
    rec = encode(GovernanceEvent(agent_id="a", kind=kind, attributes={"x": 1}, **extras), writer)
    check_built(rec.value, rec.headers, reader)
    built = renderer(reader).render([(rec.value, rec.headers, *VERDICTS[0])], BUILDER)[0][3]
    assert built.kind is (
        kind if reader == 2 or kind is not EventKind.DATA_EXFILTRATION_DETECTED else EventKind.UNKNOWN
    )
    assert (built.tenant_id, built.risk_score) == (("t", 0.25) if writer == reader == 2 else (None, None))


def test_unicode_a_big_nested_attribute_map_and_every_optional_field() -> None:
    event = GovernanceEvent(
        agent_id="agent-\u00e9\u4e2d\U0001f600",
        kind=EventKind.DATA_EXFILTRATION_DETECTED,
        action='a"\\\n\t\x01\x7f\u2028',
        agent_did="did:web:x",
        session_id="s\U0001f600",
        resource="r",
        policy_name="p",
        latency_ms=12.5,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        parent_span_id="00f067aa0ba902b7",
        attributes={
            **{
                f"k{i}\u00e9": [i, {"x": i / 7, "y": [None, True, "\u4e2d"]}, str(i)] if i % 3 else i * 1.5
                for i in range(1000)
            },
            "b": b"\x00\xff",
            "nan": float("nan"),
            "inf": float("-inf"),
            "big": 2**63 - 1,
            "neg": -(2**63),
            "t": True,
            "n": None,
            "empty": {},
            "nested": {"a": {"b": {"c": [[], [{}], [1.0, -0.0, 1e300]]}}},
        },
        tenant_id="t",
        policy_version="v9",
        risk_score=1.0,
        occurred_at=datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    )
    for reader in (1, 2):
        check_built(encode(event, 2).value, encode(event, 2).headers, reader, VERDICTS[2])
    for moment in (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)):
        rec = encode(GovernanceEvent(agent_id="a", occurred_at=moment), 1)
        check_built(rec.value, rec.headers, 2)


def _value(datum_changes: dict[str, Any], writer: int = 2) -> bytes:
    d = to_datum(GovernanceEvent(agent_id="a", event_id="e1"), PRODUCERS[0], writer)
    d.update(datum_changes)
    buf = io.BytesIO()
    schemaless_writer(buf, schema_version(writer).parsed, d)
    return schema_version(writer).prefix + buf.getvalue()


_HEADERS = [("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_source", b"s"), ("ce_type", b"t")]


@pytest.mark.parametrize(
    "text",
    ['{"a":1,"a":2,"b":3,"a":4}', "123456789012345678901234567890", "-0", "1E+2", '"\\ud83d\\ude00"', "[1.5e-7]",
     ' {"x" : [ true , false , null ] } ', '"\\u00e9\\n"', "-9223372036854775809", "[[[[[[[[[[1]]]]]]]]]]"],
)  # fmt: skip
def test_nested_json_written_by_a_foreign_writer(text: str) -> None:
    # Texts the producer never writes (big integers, repeated keys, spaces, escapes) but JSON allows.
    value = _value({"attributes": {"j": ("ai.govbus.JsonValue", {"json": text})}})
    check_built(value, _HEADERS, 2)
    built = renderer(2).render([(value, _HEADERS, *VERDICTS[0])], BUILDER)[0][3]
    same(built.attributes["j"], _JSON_IN.decode(text))


_JSON_CHARS = '[]{}",:0123456789.eE+- \\utrfalsn"\u00e9\x01/bdD8'


@SETTINGS
@given(text=st.text(st.sampled_from(_JSON_CHARS), max_size=24) | _json.map(json.dumps) | _json.map(repr))
def test_random_nested_json_texts(text: str) -> None:
    value = _value({"attributes": {"j": ("ai.govbus.JsonValue", {"json": text})}})
    (plain,) = renderer(2).render([(value, _HEADERS, *VERDICTS[0])])
    if type(plain) is tuple:  # JSON the decode accepts natively: the built value is Python's
        check_built(value, _HEADERS, 2)


_HEADER_NAMES = ["ce_x", "ce_time", "ce_subject", "ce_dataschema", "content-type", "ce_source", "other",
                 "ce_datacontenttype", "ce_specversion", "ce_type", "ce_", "traceparent"]  # fmt: skip
_HEADER_VALUES = st.none() | st.text(max_size=5).map(lambda s: s.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(extra=st.lists(st.tuples(st.sampled_from(_HEADER_NAMES), _HEADER_VALUES), max_size=6))
def test_cloudevents_attributes_with_extra_missing_and_repeated_headers(extra: list[tuple[str, bytes | None]]) -> None:
    rec = encode(GovernanceEvent(agent_id="a"), 2)
    headers = [h for h in rec.headers if h[0] not in ("ce_time", "content-type")] + extra
    (plain,) = renderer(2).render([(rec.value, headers, *VERDICTS[0])])
    if type(plain) is tuple:
        check_built(rec.value, headers, 2)


# --- through the intake stage ---------------------------------------------------------------------


def _intake_works(values: list[tuple[bytes, Any]], *, batch: bool, events: bool = True) -> tuple[Intake, list[Any]]:
    intake = Intake(Decoder(), events=events)
    msgs = [FakeMessage(v, h, offset=i) for i, (v, h) in enumerate(values)]
    rows = intake.prepare(msgs) if batch else None
    works = [
        intake(m, 1, defer=True) if rows is None or rows[i] is None else intake.take(rows[i], 1)
        for i, m in enumerate(msgs)
    ]
    intake.settle()
    return intake, works


@SETTINGS
@given(evs=st.lists(events(), min_size=1, max_size=6), batch=st.booleans())
def test_the_intake_hands_native_built_events(evs: list[GovernanceEvent], batch: bool) -> None:
    recs = [encode(e, 2) for e in evs]
    intake, works = _intake_works([(r.value, r.headers) for r in recs], batch=batch)
    assert intake.native_events
    for rec, work in zip(recs, works, strict=True):
        record = work.record
        assert isinstance(record, NativeRecord)
        assert record._event is not None  # built, not decoded lazily
        assert record._attrs is not None
        ref = from_record(rec.value, rec.headers, Decoder())
        same(record.event, ref.event, "event")
        same(record.attributes, ref.attributes, "attributes")
    assert intake.native_event_failures == 0


def test_flagged_records_built_at_settle_time_too() -> None:
    # A verdict other than "valid" is rendered again at settle(): the events come with it.
    rec = encode(GovernanceEvent(agent_id="a", attributes={"x": [1]}), 2)
    results = renderer(2).render([(rec.value, rec.headers, *VERDICTS[2])], BUILDER)
    same(results[0][3], from_record(rec.value, rec.headers, Decoder()).event)


def test_text_sinks_do_not_pay_for_events() -> None:
    rec = encode(GovernanceEvent(agent_id="a"), 2)
    for batch in (False, True):
        intake, works = _intake_works([(rec.value, rec.headers)], batch=batch, events=False)
        assert not intake.native_events
        assert works[0].record._event is None  # nothing built; still decodes if read
        assert works[0].record.event == from_record(rec.value, rec.headers, Decoder()).event


@pytest.mark.parametrize("batch", [False, True], ids=["settle", "batch"])
def test_a_panic_while_building_falls_back_to_the_python_decode(batch: bool, caplog: pytest.LogCaptureFixture) -> None:
    recs = [encode(GovernanceEvent(agent_id="a", event_id=f"e{i}", attributes={"i": i}), 2) for i in range(3)]
    native.set_event_panic_probe(recs[1].value)
    try:
        intake, works = _intake_works([(r.value, r.headers) for r in recs], batch=batch)
    finally:
        native.set_event_panic_probe(None)
    assert [w.failure for w in works] == [None, None, None]  # never dead-lettered, never lost
    assert [w.record._event is not None for w in works] == [True, False, True]
    assert works[1].record.line is not None  # the rendered line is kept
    same(works[1].record.event, from_record(recs[1].value, recs[1].headers, Decoder()).event)
    same(works[1].record.attributes, from_record(recs[1].value, recs[1].headers, Decoder()).attributes)
    assert intake.native_event_failures == 1
    warnings = [r.getMessage() for r in caplog.records if "could not build the event" in r.getMessage()]
    assert warnings == ["the compiled core could not build the event of 1 record(s); it decodes on the Python path "
                        "instead (a govbus bug: please report it)"]  # fmt: skip


def test_a_failure_while_building_falls_back_to_the_python_decode() -> None:
    from govbus import _native  # type: ignore[attr-defined]

    # A builder that lacks one EventKind member fails (a Python exception) on events of that kind.
    builder = _native.EventBuilder(
        GovernanceEvent, list(FIELDS), ProducerInfo, CloudEventAttributes,
        [f.name for f in dataclasses.fields(CloudEventAttributes)], datetime, UTC,
        {k.value: k for k in EventKind if k is not EventKind.ANOMALY_DETECTED},
    )  # fmt: skip
    failing = encode(GovernanceEvent(agent_id="a", kind=EventKind.ANOMALY_DETECTED, attributes={"x": {"y": [1]}}), 2)
    other = encode(GovernanceEvent(agent_id="a", attributes={"x": 1}), 2)
    for batch in (False, True):
        intake = Intake(Decoder(), events=True)
        intake._events = builder
        msgs = [FakeMessage(r.value, r.headers, offset=i) for i, r in enumerate((failing, other))]
        rows = intake.prepare(msgs) if batch else None
        works = [intake(m, 1, defer=True) if rows is None else intake.take(rows[i], 1) for i, m in enumerate(msgs)]
        intake.settle()
        assert [w.failure for w in works] == [None, None]
        assert [w.record._event is not None for w in works] == [False, True]
        same(works[0].record.event, from_record(failing.value, failing.headers, Decoder()).event)
    assert builder.failures == 2


def test_the_builder_refuses_a_model_it_does_not_know() -> None:
    from govbus import _native  # type: ignore[attr-defined]

    attrs_fields = [f.name for f in dataclasses.fields(CloudEventAttributes)]
    kinds = {k.value: k for k in EventKind}
    with pytest.raises(ValueError, match="fields"):
        _native.EventBuilder(GovernanceEvent, [*FIELDS, "new_field"], ProducerInfo, CloudEventAttributes,
                             attrs_fields, datetime, UTC, kinds)  # fmt: skip
    with pytest.raises(ValueError, match="fields"):
        _native.EventBuilder(GovernanceEvent, list(FIELDS), ProducerInfo, CloudEventAttributes,
                             attrs_fields[:-1], datetime, UTC, kinds)  # fmt: skip

    class WithNew(GovernanceEvent):
        def __new__(cls, *args: Any, **kwargs: Any) -> WithNew:
            return super().__new__(cls)

    with pytest.raises(ValueError, match="cannot fill"):
        _native.EventBuilder(WithNew, list(FIELDS), ProducerInfo, CloudEventAttributes, attrs_fields, datetime, UTC,
                             kinds)  # fmt: skip


# --- which sinks ask for events -------------------------------------------------------------------


class _PluginWithoutTheAttribute:
    """A third-party sink (structural SPI, no SinkBase): it may read events, so it gets them."""

    def open(self, context: Any) -> None: ...
    def write(self, batch: Any) -> None: ...
    def flush(self, timeout: float) -> None: ...
    def close(self) -> None: ...


def test_the_runtime_builds_events_only_for_sinks_that_read_them() -> None:
    from govbus._settings import load_settings
    from govbus.consumers import SinkRuntime
    from govbus.consumers.sinks._audit import AuditSink
    from govbus.consumers.sinks._file import FileSink
    from govbus.consumers.sinks._http import HttpSink
    from govbus.consumers.sinks._null import NullSink
    from govbus.consumers.sinks._otlp import OtlpSink
    from govbus.consumers.sinks._stdout import StdoutSink
    from govbus.consumers.sinks._syslog import SyslogSink

    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:9"}, topic="t", sink={"health": {"enabled": False}})
    url = "http://127.0.0.1:9/x"
    sinks = {
        "stdout": (StdoutSink(), False),
        "file": (FileSink("unused.jsonl"), False),
        "null": (NullSink(), False),
        "http": (HttpSink(url=url), False),
        "http hec": (HttpSink(url=url, format="splunk-hec"), True),
        "syslog": (SyslogSink(port="9"), True),
        # The otlp (OTLP/HTTP) and audit sinks have what they write drafted in the pass instead
        # (test_otlp_draft.py, test_ledger_draft.py).
        "otlp": (OtlpSink(endpoint=url), False),
        "otlp grpc": (OtlpSink(endpoint="127.0.0.1:9", protocol="grpc"), True),
        "audit": (AuditSink(path="unused-ledger.jsonl"), False),
        "plugin": (_PluginWithoutTheAttribute(), True),
    }
    intakes = {name: SinkRuntime(sink, settings, name="x")._intake for name, (sink, _) in sinks.items()}
    assert {name: i.native_events for name, i in intakes.items()} == {name: w for name, (_, w) in sinks.items()}
    assert {name for name, i in intakes.items() if i._draft is not None} == {"audit", "otlp"}
