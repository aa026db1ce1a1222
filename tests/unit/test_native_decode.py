"""The compiled core's record decode + render, held to the pure-Python path on the same inputs.

Each input goes through both: the native renderer (``govbus._native``) and the reference
(``govbus._record.from_record`` then ``_jsonl.encode_line``). Valid records must give the same
line byte for byte; invalid ones the same ``DecodeError`` reason. Through the intake stage, the
Work each path produces (failure reason and message, rendered line) must be identical.
"""

from __future__ import annotations

import io
import re
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _native_strategies import PRODUCERS, SETTINGS, VERDICTS, _json, _text, encode, events
from _sinks import FakeMessage
from _slots import slots
from fastavro import schemaless_writer
from hypothesis import example, given
from hypothesis import strategies as st

from govbus import _accel as native
from govbus._contract import Decoder, schema_version, to_datum
from govbus._record import from_record
from govbus.consumers._intake import Intake
from govbus.consumers._native_record import NativeRecord
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers.sinks._jsonl import encode_line
from govbus.errors import DecodeError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

_RENDERERS: dict[int, Any] = {}


def renderer(reader: int) -> Any:
    if reader not in _RENDERERS:
        _RENDERERS[reader] = native.renderer_for(Decoder(reader))
    return _RENDERERS[reader]


def reference(value: bytes, headers: Any, reader: int, verdict: tuple[str, str, bool]) -> tuple[str, Any]:
    """The pure-Python outcome: ("line", bytes), ("error", reason) or ("raises", type) at render."""
    try:
        decoded = from_record(value, headers, Decoder(reader))
    except DecodeError as exc:
        return "error", exc.reason
    record = DeliveredRecord(decoded.event, decoded.attributes, "t", 0, 0, None, None, value, headers or [], *verdict)
    try:
        return "line", encode_line(record)
    except Exception as exc:  # what the sink would raise (e.g. a nested float that overflowed)
        return "raises", type(exc).__name__


def compare(value: bytes, headers: Any, reader: int = 2, verdict: tuple[str, str, bool] = VERDICTS[0]) -> str:
    """Asserts both paths agree; returns what the native side said (line, error, defer)."""
    (got,) = renderer(reader).render([(value, headers, *verdict)])
    want = reference(value, headers, reader, verdict)
    if got is None:
        return "defer"  # the Python path decides; nothing to compare
    if isinstance(got, tuple):
        assert want == ("line", got[0]), f"native rendered a line, Python: {want}"
        assert got[1] == from_record(value, headers, Decoder(reader)).event.event_id
        return "line"
    assert got != "internal-error"
    assert want == ("error", got), f"native: {got}, Python: {want}"
    return "error"


@SETTINGS
@given(
    event=events(),
    writer=st.sampled_from([1, 2]),
    reader=st.sampled_from([1, 2]),
    verdict=st.sampled_from(VERDICTS),
    producer=st.sampled_from(PRODUCERS),
)
def test_valid_events_render_identically(
    event: GovernanceEvent, writer: int, reader: int, verdict: tuple[str, str, bool], producer: ProducerInfo
) -> None:
    rec = encode(event, writer, producer)
    assert compare(rec.value, rec.headers, reader, verdict) == "line"


def test_a_big_attribute_map_and_every_optional_field() -> None:
    event = GovernanceEvent(
        agent_id="agent-\u00e9\u4e2d\U0001f600",
        kind=EventKind.DATA_EXFILTRATION_DETECTED,
        action='a"\\\n\t\x01\x7f\u2028',
        agent_did="did:web:x",
        session_id="s",
        resource="r" * 70_000 if False else "r",
        policy_name="p",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        parent_span_id="00f067aa0ba902b7",
        attributes={f"k{i}": [i, {"x": i / 7}, str(i)] if i % 3 else i * 1.5 for i in range(1000)},
        tenant_id="t",
        policy_version="v9",
        risk_score=1.0,
        occurred_at=datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    )
    for reader in (1, 2):
        rec = encode(event, 2)
        assert compare(rec.value, rec.headers, reader, VERDICTS[2]) == "line"


# --- headers ----------------------------------------------------------------------------------------

_header_names = st.sampled_from(
    ["ce_id", "ce_specversion", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_dataschema", "ce_x",
     "ce_data", "ce_datacontenttype", "ce_govbusverdict", "ce_traceparent", "ce_", "content-type",
     "traceparent", "tracestate", "other"]
)  # fmt: skip
_header_values = st.none() | st.binary(max_size=6) | _text.map(str.encode)


@SETTINGS
@given(
    event=events(),
    extra=st.lists(st.tuples(_header_names, _header_values), max_size=6),
    drop=st.sets(st.integers(0, 9), max_size=2),
    verdict=st.sampled_from(VERDICTS),
)
def test_headers_added_dropped_and_malformed(
    event: GovernanceEvent, extra: list[tuple[str, bytes | None]], drop: set[int], verdict: tuple[str, str, bool]
) -> None:
    rec = encode(event, 2)
    headers = [h for i, h in enumerate(rec.headers) if i not in drop] + extra
    compare(rec.value, headers, 2, verdict)
    compare(rec.value, None, 2, verdict)


def test_many_extension_headers() -> None:
    rec = encode(GovernanceEvent(agent_id="a"), 2)
    headers = rec.headers + [(f"ce_x{i % 40}", str(i).encode()) for i in range(100)]
    headers += [("traceparent", b"00-\xff-01"), ("ce_traceparent", b"tp")]
    assert compare(rec.value, headers) == "line"


# --- malformed values ---------------------------------------------------------------------------


@SETTINGS
@given(event=events(), data=st.data())
def test_mutated_values(event: GovernanceEvent, data: st.DataObject) -> None:
    rec = encode(event, data.draw(st.sampled_from([1, 2])))
    value = bytearray(rec.value)
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "append", "legacy"]))
    if how == "truncate":
        value = value[: data.draw(st.integers(0, len(value) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(10, len(value) - 1))
        value[i] = data.draw(st.integers(0, 255))
    elif how == "insert":
        i = data.draw(st.integers(10, len(value)))
        value[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    elif how == "append":
        value += data.draw(st.binary(min_size=1, max_size=4))
    else:
        value[2:10] = value[2:10][::-1]  # the legacy byte-reversed fingerprint: read, and counted
    compare(bytes(value), rec.headers, data.draw(st.sampled_from([1, 2])))


@SETTINGS
@given(body=st.binary(max_size=64), writer=st.sampled_from([1, 2]), framing=st.sampled_from(["so", "raw", "legacy"]))
@example(body=b"", writer=2, framing="raw")
@example(body=b"\x00", writer=2, framing="raw")
@example(body=b"\xc3", writer=2, framing="raw")
def test_random_bytes(body: bytes, writer: int, framing: str) -> None:
    fp = schema_version(writer).fingerprint
    value = {"so": b"\xc3\x01" + fp + body, "legacy": b"\xc3\x01" + fp[::-1] + body, "raw": body}[framing]
    rec = encode(GovernanceEvent(agent_id="a"), 2)
    compare(value, rec.headers)


def _zigzag(n: int) -> bytes:
    n = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _datum(**changes: Any) -> dict[str, Any]:
    d = to_datum(GovernanceEvent(agent_id="a", event_id="e1"), PRODUCERS[0], 2)
    d.update(changes)
    return d


def _value(datum: dict[str, Any], writer: int = 2) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema_version(writer).parsed, datum)
    return schema_version(writer).prefix + buf.getvalue()


def _headers(event_id: str = "e1") -> list[tuple[str, bytes]]:
    return [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_source", b"s"), ("ce_type", b"t")]


@pytest.mark.parametrize(
    "value",
    [
        # the kind enum index: out of range, negative (a Python list index), overlong varints
        pytest.param(lambda v: v[:13] + _zigzag(14) + v[14:], id="enum-14"),
        pytest.param(lambda v: v[:13] + _zigzag(-1) + v[14:], id="enum-minus-1"),
        pytest.param(lambda v: v[:13] + _zigzag(-15) + v[14:], id="enum-minus-15"),
        pytest.param(lambda v: v[:13] + b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00" + v[14:], id="overlong"),
        pytest.param(lambda v: v[:13] + b"\x80" * 64 + b"\x02" + v[14:], id="very-overlong"),
        # huge and negative string lengths
        pytest.param(lambda v: v[:10] + _zigzag(2**62) + v[11:], id="huge-length"),
        pytest.param(lambda v: v[:10] + _zigzag(-3) + v[11:], id="negative-length"),
        pytest.param(lambda v: v[:10] + b"\xff" * 10 + b"\x01" + v[11:], id="wrapping-length"),
    ],
)
def test_crafted_bodies(value: Any) -> None:
    base = _value(_datum(event_id="e1", occurred_at=0, kind="POLICY_CHECK"))
    assert base[10:13] == b"\x04e1"
    compare(value(base), _headers())


@pytest.mark.parametrize(
    "changes",
    [
        {"occurred_at": -62135596800000001},
        {"occurred_at": 253402300800000000},
        {"occurred_at": 253402300799999999},
        {"occurred_at": -62135596800000000},
        {"event_id": ""},
        {"event_id": "e\x00"},
        {"agent_id": "x" * 257},
        {"agent_id": "\u00e9" * 256},
        {"resource": ""},
        {"latency_ms": float("nan")},
        {"latency_ms": -0.0},
        {"latency_ms": -1.0},
        {"risk_score": 1.5},
        {"risk_score": float("nan")},
        {"tenant_id": ""},
        {"trace_id": "0" * 32},
        {"trace_id": "A" * 32},
        {"span_id": "a" * 15},
        {"attributes": {"b": b"\x00\x01", "x": float("-inf"), "y": float("nan"), "n": -(2**63)}},
    ],
)
@pytest.mark.parametrize("reader", [1, 2])
def test_semantic_checks(changes: dict[str, Any], reader: int) -> None:
    compare(_value(_datum(**changes)), _headers(changes.get("event_id", "e1")), reader)


_JSON_TEXTS = [
    "1", "-0", "-0.0", "1e400", "-1e400", "1e-400", "1.", "1.e5", ".5", "01", "1E+2", "1e2", "[1,]", "{}",
    '{"a":1,"a":2,"b":3,"a":4}', "NaN", "Infinity", "-Infinity", "[NaN]", " [1 , 2 ] ", "\t\n\r1", "\f1", "1 x",
    '"\\ud83d\\ude00"', '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ud800\\uzzzz"', '"\\u00E9\\u00e9"',
    '"\\x"', '"a\x01"', '"\x7f"', "[" * 150 + "]" * 150, "[" * 50 + "]" * 50, "9" * 4301, "9" * 4300,
    "123456789012345678901234567890", '{"a" : [true, false, null]}', "tru", "nul", '{"a"}', '{1:2}', "",
    "[1.5e300, 2.5e-300, 0.1, 100000000000000000.0, 1e16, 1e15]", '"\\/\\b\\f\\n\\r\\t"', '["a"]x',
]  # fmt: skip


@pytest.mark.parametrize("text", _JSON_TEXTS)
def test_nested_json_attribute_texts(text: str) -> None:
    datum = _datum(attributes={"j": ("ai.govbus.JsonValue", {"json": text})})
    compare(_value(datum), _headers())


@SETTINGS
@given(text=st.text(st.sampled_from('[]{}",:0123456789.eE+- \\utrfalsn"\u00e9\x01'), max_size=24) | _json.map(str))
def test_random_json_attribute_texts(text: str) -> None:
    datum = _datum(attributes={"j": ("ai.govbus.JsonValue", {"json": text})})
    compare(_value(datum), _headers())


def test_framings_and_header_errors() -> None:
    rec = encode(GovernanceEvent(agent_id="a", event_id="e1"), 2)
    assert compare(rec.value, rec.headers) == "line"
    assert compare(b"", rec.headers) == "error"
    assert compare(b"\x00\x00\x00\x00\x01\x02", rec.headers) == "defer"  # Confluent: the registry decides
    assert compare(b"\xc3\x01\x00", rec.headers) == "error"
    assert compare(rec.value, [*rec.headers, ("ce_x", b"\xff")]) == "error"
    assert compare(rec.value, [*rec.headers, ("content-type", b"\xff")]) == "error"
    assert compare(rec.value, [*rec.headers, ("ce_specversion", b"0.3")]) == "error"
    assert compare(rec.value, [*rec.headers, ("ce_id", b"other")]) == "error"
    assert compare(rec.value, [h for h in rec.headers if h[0] != "ce_type"]) == "error"
    assert compare(rec.value, [*rec.headers, ("ce_id", None)]) == "line"


# --- through the intake stage -------------------------------------------------------------------


def _works(values: list[tuple[bytes | None, Any]], native_on: bool, *, batch: bool = False) -> list[Any]:
    """``batch``: through the one-call batch intake (prepare + take) instead of one call per record."""
    intake = Intake(Decoder(), native=native_on)
    assert intake.native is native_on
    msgs = [FakeMessage(v, h, offset=i) for i, (v, h) in enumerate(values)]
    rows = intake.prepare(msgs) if batch else None
    assert (rows is not None) is batch
    works = [
        intake(m, 1, defer=True) if rows is None or rows[i] is None else intake.take(rows[i], 1)  # type: ignore[arg-type]
        for i, m in enumerate(msgs)
    ]
    intake.settle()
    return [
        (
            # fastavro's messages may name an object's address; nothing else differs
            w.failure
            and (
                w.failure.reason,
                re.sub(r"0x[0-9a-f]+", "0x", w.failure.message),
                w.failure.verdict,
                w.failure.exception,
            ),
            w.record and encode_line(w.record),
            w.record and repr(w.record.event),  # repr: a NaN attribute is unequal to itself
            w.record and w.record.attributes,
            intake.decoder.legacy_fingerprints,
        )
        for w in works
    ]


def _built(msgs: list[FakeMessage], works: bool, reads_events: bool) -> list[Any]:
    """Every slot of each Work (and its record) of the batch intake; ``works``: built by the
    compiled core, else by ``Intake.take`` from the rows of the Python path."""
    intake = Intake(Decoder(), native=True, events=reads_events)
    assert intake._works is not None
    if not works:
        intake._works = None
    rows = intake.prepare(msgs)
    assert rows is not None
    # built: every rendered record's row is its Work; else every row is the 11-field one
    assert all(
        r is None or (len(r) == 4 if works and type(r[-1]) is not str and r[-1] is not None else len(r) == 11)
        for r in rows
    )
    out = [intake(m, 1, defer=True) if rows[i] is None else intake.take(rows[i], 1) for i, m in enumerate(msgs)]  # type: ignore[arg-type]
    intake.settle()
    return [slots(w, intake._lazy_decoder) for w in out] + [intake.decoder.legacy_fingerprints]


@SETTINGS
@given(events=st.lists(events(), min_size=1, max_size=5), data=st.data(), reads_events=st.booleans())
def test_works_built_natively_equal_the_python_ones(
    events: list[GovernanceEvent], data: st.DataObject, reads_events: bool
) -> None:
    values: list[tuple[bytes | None, Any]] = []
    for e in events:
        rec = encode(e, data.draw(st.sampled_from([1, 2])))
        value = rec.value
        if data.draw(st.booleans()):
            value = value[: data.draw(st.integers(0, len(value)))]
        values.append((value, rec.headers))
    values.append((None, []))
    values.append((b"\x00\x00\x00\x00\x01", values[0][1]))
    msgs = [FakeMessage(v, h, offset=i) for i, (v, h) in enumerate(values)]  # their timestamps: now
    assert _built(msgs, True, reads_events) == _built(msgs, False, reads_events)


@SETTINGS
@given(events=st.lists(events(), min_size=1, max_size=5), data=st.data())
def test_intake_outcomes_identical_on_both_paths(events: list[GovernanceEvent], data: st.DataObject) -> None:
    values: list[tuple[bytes | None, Any]] = []
    for e in events:
        rec = encode(e, 2)
        value = rec.value
        if data.draw(st.booleans()):
            value = value[: data.draw(st.integers(0, len(value)))]
        if data.draw(st.booleans()):
            value = value[:2] + value[2:10][::-1] + value[10:]
        values.append((value, rec.headers))
    values.append((None, []))
    values.append((b"\x00\x00\x00\x00\x01", values[0][1]))
    want = _works(values, False)
    assert _works(values, True) == want
    assert _works(values, True, batch=True) == want


def test_native_records_are_native_and_decode_lazily() -> None:
    rec = encode(GovernanceEvent(agent_id="a", event_id="e1", attributes={"x": 1}), 2)
    intake = Intake(Decoder())
    work = intake(FakeMessage(rec.value, rec.headers), 1)
    assert isinstance(work.record, NativeRecord)
    assert work.record._event is None  # nothing decoded on the Python side yet
    assert work.record.event_id == "e1"
    assert work.record.event.attributes == {"x": 1}
    assert work.record.attributes.id == "e1"
    assert intake.native_disagreements == 0


@pytest.mark.parametrize("batch", [False, True], ids=["per-record", "batch"])
def test_a_native_panic_dead_letters_only_that_record(batch: bool) -> None:
    good = encode(GovernanceEvent(agent_id="a", event_id="e1"), 2)
    bad = encode(GovernanceEvent(agent_id="a", event_id="e2"), 2)
    intake = Intake(Decoder())
    native.set_panic_probe(bad.value)
    try:
        msgs = [FakeMessage(r.value, r.headers) for r in (good, bad, good)]
        rows = intake.prepare(msgs) if batch else [None] * 3
        assert rows is not None
        works = [
            intake(m, 1, defer=True) if row is None else intake.take(row, 1) for m, row in zip(msgs, rows, strict=True)
        ]
        intake.settle()
    finally:
        native.set_panic_probe(None)
    assert [w.failure.reason if w.failure else "ok" for w in works] == ["ok", "internal-error", "ok"]
    assert works[1].failure is not None
    assert "compiled decoder" in works[1].failure.message


def test_the_fallback_path_is_used_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "off")
    assert not native.active()
    assert native.describe() == "no: turned off (GOVBUS_NATIVE=off)"
    intake = Intake(Decoder())
    assert not intake.native
    rec = encode(GovernanceEvent(agent_id="a"), 2)
    work = intake(FakeMessage(rec.value, rec.headers), 1)
    assert type(work.record) is DeliveredRecord


def test_a_bad_mode_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from govbus.errors import ConfigError

    monkeypatch.setenv(native.ENV, "fast")
    with pytest.raises(ConfigError, match="GOVBUS_NATIVE"):
        native.active()


def test_cli_version_says_no_without_the_core(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from govbus._cli import main

    monkeypatch.setenv(native.ENV, "off")
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip().endswith("(native core: no)")


def test_dates_before_year_1000_and_at_the_edges() -> None:
    for moment in (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                   datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC), datetime(1000, 1, 1, tzinfo=UTC)):  # fmt: skip
        micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        compare(_value(_datum(occurred_at=micros)), _headers())
    assert struct  # keeps the import used for readers adding byte-level cases


# --- the fuzz corpus (native/fuzz/corpus/decode): both paths agree on every kept input ------------

_CORPUS = Path(__file__).resolve().parents[2] / "native" / "fuzz" / "corpus" / "decode"


def test_fuzz_corpus_decodes_identically_on_both_paths() -> None:
    files = sorted(_CORPUS.iterdir())
    assert len(files) >= 10
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_source", b"/agent-os/agent/a"), ("ce_type", b"t")]
    for f in files:
        compare(f.read_bytes(), headers)


def test_fuzz_targets_know_the_shipped_fingerprints() -> None:
    source = (_CORPUS.parents[2] / "src" / "fuzzing.rs").read_text(encoding="utf-8")
    for version in (1, 2):
        fp = schema_version(version).fingerprint
        assert ", ".join(f"0x{b:02x}" for b in fp) in source, f"native/src/fuzzing.rs lacks v{version}'s fingerprint"
