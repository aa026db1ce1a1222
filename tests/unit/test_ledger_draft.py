"""The audit ledger entries the compiled core drafts at intake (native/src/ledger_draft.rs), held
to the Python writer.

For the audit sink the batch intake drafts each record's entry in its decoding pass, instead of
building its Python event; the sealer fills in ``seq`` and ``prev`` and hashes the line. The
sealed lines must be byte-identical to what ``_ledger.seal_events`` writes for the same records
decoded on the Python path, whatever the event, its headers (signature headers, trace context,
CloudEvents extensions, repeated, empty or valueless ones) and where the record came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from _intake_rows import decoded_record
from _native_strategies import PRODUCERS, SETTINGS, encode, events
from _sinks import FakeMessage
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE
from hypothesis import given
from hypothesis import strategies as st

from govbus import _accel as native
from govbus._contract import Decoder
from govbus.consumers._intake import Intake
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers.sinks import _ledger
from govbus.event import GovernanceEvent
from govbus.signing import SIGNATURE_HEADERS

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

_name = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_value = st.none() | st.binary(max_size=16) | st.sampled_from([b"", b"\xff\xfe", "\u00e9\u2028".encode()])
_ce_name = st.sampled_from(
    ["sessionid", "datacontenttype", "data", "traceparent", "tracestate", "x", "\u00e9", "dataschema"]
)


@st.composite
def headers(draw: st.DrawFn, base: list[tuple[str, bytes]]) -> list[tuple[str, bytes | None]]:
    """``base`` (a record's CloudEvents headers) with its time and subject changed or gone, and
    signature, trace context, extension and other headers added, repeated, empty or valueless."""
    out: list[tuple[str, bytes | None]] = []
    for name, value in base:
        if name in ("ce_time", "ce_subject"):
            choice = draw(st.sampled_from(["keep", "drop", "empty", "other"]))
            if choice == "drop":
                continue
            out.append((name, {"keep": value, "empty": b"", "other": b"2020-01-01T00:00:00Z"}[choice]))
        else:
            out.append((name, value))
    extra = draw(
        st.lists(
            st.tuples(st.sampled_from(SIGNATURE_HEADERS), _value)
            | st.tuples(st.sampled_from(["traceparent", "tracestate"]), _value)
            | st.tuples(_ce_name.map(lambda n: f"ce_{n}"), st.text(max_size=6).map(str.encode))
            | st.tuples(_name, _value),
            max_size=8,
        )
    )
    at = draw(st.integers(0, len(out)))
    return out[:at] + extra + out[at:]


def _intake(msgs: list[FakeMessage], *, start: bool = False, all_drafted: bool = True) -> list[Any]:
    """The delivered records (None: not delivered) of an intake drafting ledger entries."""
    intake = Intake(Decoder(), events=False, draft=_ledger.native_ledger_format())
    assert intake._draft is not None
    if start:
        started = intake.start(msgs)
        assert started is not None
        rows = started.rows()
    else:
        rows = intake.prepare(msgs)
    assert rows is not None
    works = [
        intake(m, 1, defer=True) if row is None else intake.take(row, 1) for m, row in zip(msgs, rows, strict=True)
    ]
    intake.settle()
    for row, work in zip(rows, works, strict=True):
        if all_drafted and row is not None and len(row) == 4 and work.record is not None:  # rendered by the pass
            assert work.record._draft is not None, "a record the pass rendered was not drafted"
    return [w.record for w in works]


def _sealed_alike(records: list[Any], references: list[DeliveredRecord], seq: int, prev: str) -> bytes:
    sealer = _ledger.native_sealer()
    assert sealer is not None
    got = sealer(seq, prev, records)
    want = _ledger.seal_events(seq, prev, references)
    assert got[0].decode() == want[0].decode()
    assert got == want
    return got[0]  # type: ignore[no-any-return]


@SETTINGS
@given(
    data=st.data(),
    evs=st.lists(events(), min_size=1, max_size=4),
    writer=st.sampled_from([1, 2]),
    seq=st.integers(0, 2**40),
)
def test_drafted_entries_seal_to_the_python_writers_lines(
    data: st.DataObject, evs: list[GovernanceEvent], writer: int, seq: int
) -> None:
    msgs = []
    for i, event in enumerate(evs):
        rec = encode(event, writer, data.draw(st.sampled_from(PRODUCERS)))
        ts = data.draw(st.none() | st.integers(-(2**40), 2**41))
        msgs.append(
            FakeMessage(
                rec.value,
                data.draw(headers(rec.headers)),
                key=data.draw(st.none() | st.binary(max_size=8)),
                topic=data.draw(st.text(max_size=8)),
                partition=data.draw(st.integers(0, 2**31 - 1)),
                offset=data.draw(st.integers(0, 2**62)) + i,
                timestamp=(TIMESTAMP_NOT_AVAILABLE, 0) if ts is None else (TIMESTAMP_CREATE_TIME, ts),
            )
        )
    records = _intake(msgs)
    references = [decoded_record(m) for m in msgs]
    assert [r is None for r in records] == [r is None for r in references]
    delivered = [r for r in records if r is not None]
    if delivered:
        assert all(r._event is None for r in records if r is not None and r._draft is not None)
        _sealed_alike(delivered, [r for r in references if r is not None], seq, "0" * 64)


def _messages(n: int) -> list[FakeMessage]:
    evs = [
        GovernanceEvent(agent_id=f"a{i}", event_id=f"e{i}", attributes={"i": i, "tags": ["x", {"b": 1, "a": [2.5]}]})
        for i in range(n)
    ]
    out = []
    for i, e in enumerate(evs):
        rec = encode(e, 2)
        hs = [*rec.headers, ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"), ("govbus-kid", b"k")]
        out.append(FakeMessage(rec.value, hs, offset=i, partition=i % 3))
    return out


def test_records_are_drafted_not_built_and_seal_alike() -> None:
    msgs = _messages(5)
    records = _intake(msgs)
    assert all(type(r._draft).__name__ == "LedgerDraft" for r in records)
    assert all(r.line is None and r._event is None for r in records)  # neither line nor event made
    lines = _sealed_alike(records, [decoded_record(m) for m in msgs], 3, "ab" * 32)  # type: ignore[misc]
    assert all(r._event is None for r in records)  # the sealer read neither
    first, _ = _ledger.unseal(lines.splitlines(keepends=True)[0])
    assert (first["seq"], first["prev"], first["verdict"]) == (3, "ab" * 32, "unverified")
    assert first["event"]["data"]["attributes"]["tags"] == ["x", {"a": [2.5], "b": 1}]


def test_the_pass_on_its_own_thread_drafts_too() -> None:
    msgs = _messages(80)  # Intake.start takes batches of START_MIN_RECORDS and more
    records = _intake(msgs, start=True)
    assert all(type(r._draft).__name__ == "LedgerDraft" for r in records)
    _sealed_alike(records, [decoded_record(m) for m in msgs], 0, _ledger.GENESIS)  # type: ignore[misc]


def test_a_record_whose_verdict_or_event_changed_is_sealed_from_its_event() -> None:
    msgs = _messages(3)
    records = _intake(msgs)
    refs: list[Any] = [decoded_record(m) for m in msgs]
    # A verdict set after the draft was made (it was drafted "unverified"): the draft no longer applies.
    object.__setattr__(records[0], "verdict", "gap")
    refs[0] = dataclasses.replace(refs[0], verdict="gap")
    # dataclasses.replace() goes through the event setter, which drops the draft.
    records[1] = dataclasses.replace(records[1], verdict_detail="flagged", flagged=True)
    assert records[1]._draft is None
    refs[1] = dataclasses.replace(refs[1], verdict_detail="flagged", flagged=True)
    lines = _sealed_alike(records, refs, 0, _ledger.GENESIS)
    assert records[0]._event is not None  # decoded to seal it
    assert records[2]._event is None  # still drafted
    assert b'"verdict":"gap"' in lines.splitlines()[0]


def test_without_the_format_the_intake_renders_lines() -> None:
    msgs = _messages(2)
    intake = Intake(Decoder(), events=False)
    rows = intake.prepare(msgs)
    assert rows is not None
    records = [intake.take(r, 1).record for r in rows]
    assert all(r._draft is None and r.line is not None for r in records)


@pytest.mark.parametrize("start", [False, True], ids=["batch", "own-thread"])
def test_a_panic_while_drafting_leaves_the_record_delivered_and_sealed_from_its_event(start: bool) -> None:
    msgs = _messages(80 if start else 3)
    native.set_draft_panic_probe(msgs[1].value())
    try:
        records = _intake(msgs, start=start, all_drafted=False)
    finally:
        native.set_draft_panic_probe(None)
    assert records[1]._draft is None  # delivered, with its line
    assert records[1].line is not None
    assert all(r._draft is not None for i, r in enumerate(records) if i != 1)
    _sealed_alike(records, [decoded_record(m) for m in msgs], 0, _ledger.GENESIS)  # type: ignore[misc]
    assert records[1]._event is not None
    assert records[0]._event is None
