"""The compiled producer batch step, held to the pure-Python path on the same inputs.

Encode: a micro-batch goes through :class:`NativeBatchEncoder` (``govbus._native.BatchEncoder``)
and the reference :class:`EventBatchEncoder` (``to_record`` per event); keys, values, headers and
seqs must be identical, and so must the events reported unencodable (with the same message).
Sign: the same records, partitions and stream go through ``govbus._native.merkle_batch`` and the
reference ``Signer._hash`` + ``_merkle.build``; sequence headers, leaf hashes (through the root),
Merkle roots and paths, and the signing hook's final headers must be identical.
Encode + sign in one call (``BatchEncoder.encode_signed``, the sender's step when the hook is
govbus's own): records, partitions, signature headers and the signer's sequence numbers must be
those of the two-step path on the Python reference (encode, murmur2 routing, ``Signer.sign_batch``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _await import closed_port
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from govbus import _accel as native
from govbus._contract import Encoder, schema_version
from govbus._sample import sample_events
from govbus.event import EventKind, GovernanceEvent, ProducerInfo
from govbus.producer import Bus, _tracing
from govbus.producer._batch import (
    EMPTY_CONTEXT,
    SIGNATURE_HEADERS,
    EventBatchEncoder,
    NativeBatchEncoder,
    OutgoingRecord,
    unsigned_headers,
)
from govbus.producer._partition import Partitioner, partition_for
from govbus.producer._signing import SigningHook, sign_input
from govbus.signing import Signer, SigningKey
from govbus.signing import _canonical as canonical
from govbus.signing._canonical import PROOF_HEAD
from govbus.signing._merkle import build

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

SETTINGS = settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PRODUCERS = [ProducerInfo("kernel", "i-1", "host", "govbus-python/0.2.0"), ProducerInfo("k\u00e9", "\n", "h\x01", "")]
KEY = SigningKey.generate("k-1.test")
STREAM = b"\x01stream\xff"

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_field = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
# URL-quoting, JSON-escaping and multi-byte characters are drawn often, not only by chance.
_char = st.sampled_from(' /?%~_.-:"\\\u00e9\u4e2d\U0001f600') | st.characters(exclude_categories=["Cs"])
_id = st.text(_char.filter(lambda c: c != "\x00"), min_size=1, max_size=10)
_opt = st.none() | _id
_int64 = st.integers(-(2**63), 2**63 - 1)
_json_leaf = st.none() | st.booleans() | _int64 | st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_attr = (
    st.none()
    | st.booleans()
    | _int64
    | st.floats()
    | _text
    | st.binary(max_size=12)
    | st.lists(_json, max_size=3)
    | st.dictionaries(_text, _json, max_size=3)
)
_zone = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11, seconds=1))])
_time = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_zone)


@st.composite
def events(draw: st.DrawFn) -> GovernanceEvent:
    traced = draw(st.integers(0, 9)) == 0  # one in ten: the Python path adds traceparent
    return GovernanceEvent(
        agent_id=draw(_id),
        kind=draw(st.sampled_from(list(EventKind))),
        severity=draw(_id),
        action=draw(_field),
        decision=draw(_field),
        reason=draw(_field),
        event_id=draw(_id),
        occurred_at=draw(_time),
        agent_did=draw(_opt),
        session_id=draw(_opt),
        resource=draw(_opt),
        policy_name=draw(_opt),
        latency_ms=draw(st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(0, 10**6)),
        trace_id="0af7651916cd43dd8448eb211c80319c" if traced else None,
        span_id="b7ad6b7169203331" if traced else None,
        attributes=draw(st.dictionaries(_text, _attr, max_size=12)),
        schema_version=draw(_id),
        tenant_id=draw(st.none() | _id) if draw(st.booleans()) else None,
        policy_version=draw(st.none() | _id) if draw(st.booleans()) else None,
        risk_score=draw(st.none() | st.floats(min_value=0, max_value=1)) if draw(st.booleans()) else None,
    )


class _Unencodable(list[tuple[str, int, str, str]]):
    def __call__(self, event: GovernanceEvent, seq: int, exc: Exception) -> None:
        self.append((event.event_id, seq, type(exc).__name__, str(exc)))


def _report(*_args: Any) -> None:
    pass


def encoders(
    writer: int, *, key_by: str = "agent_id", source: str | None = None, schema_id: int | None = None
) -> tuple[EventBatchEncoder, NativeBatchEncoder]:
    encoder = Encoder(writer, schema_id=schema_id)
    tracing = _tracing.Tracing("t")
    compiled = native.batch_encoder(
        encoder, key_by_session=key_by == "session_id", source=source, empty_context=EMPTY_CONTEXT
    )
    assert compiled is not None
    python = EventBatchEncoder(encoder, PRODUCERS[0], tracing, _report, key_by=key_by, source=source)  # type: ignore[arg-type]
    return python, NativeBatchEncoder(compiled, encoder, PRODUCERS[0], tracing, _report, key_by=key_by, source=source)  # type: ignore[arg-type]


def _plain(record: OutgoingRecord) -> tuple[int, bytes, bytes, list[tuple[str, bytes]]]:
    return record.seq, record.key, record.value, record.headers


def compare(
    batch: Sequence[GovernanceEvent], writer: int, producer: ProducerInfo | None = None, **options: Any
) -> list[OutgoingRecord]:
    """Asserts both encoders agree on ``batch``; returns the native records."""
    python, compiled = encoders(writer, **options)
    contexts = [EMPTY_CONTEXT] * len(batch)
    want_bad, got_bad = _Unencodable(), _Unencodable()
    want = python.encode(batch, contexts, 7, keep=True, unencodable=want_bad, producer=producer)
    got = compiled.encode(batch, contexts, 7, keep=True, unencodable=got_bad, producer=producer)
    assert [_plain(r) for r in got] == [_plain(r) for r in want]
    assert got_bad == want_bad
    return got


def natively_encoded(batch: Sequence[GovernanceEvent], writer: int) -> list[bool]:
    encoder = Encoder(writer)
    compiled = native.batch_encoder(encoder, key_by_session=False, source=None, empty_context=EMPTY_CONTEXT)
    outs = compiled.encode(list(batch), [EMPTY_CONTEXT] * len(batch), encoder._producer_tail(PRODUCERS[0]))
    return [out is not None for out in outs]


def expected_native(event: GovernanceEvent, writer: int) -> bool:
    """What the compiled writer must take itself (not hand back to Python)."""
    v2 = event.tenant_id is not None or event.policy_version is not None or event.risk_score is not None
    year = event.occurred_at.astimezone(UTC).year
    return (
        event.trace_id is None
        and event.kind.name in schema_version(writer).kinds
        and not (writer == 1 and v2)
        and year >= 1000
    )


# --- encode -----------------------------------------------------------------------------------


@SETTINGS
@given(
    batch=st.lists(events(), min_size=1, max_size=8),
    writer=st.sampled_from([1, 2]),
    key_by=st.sampled_from(["agent_id", "session_id"]),
    source=st.sampled_from([None, "", "urn:kernel:\u00e9"]),
    producer=st.sampled_from([None, *PRODUCERS]),
    confluent=st.booleans(),
)
def test_batches_encode_identically(
    batch: list[GovernanceEvent],
    writer: int,
    key_by: str,
    source: str | None,
    producer: ProducerInfo | None,
    confluent: bool,
) -> None:
    compare(batch, writer, producer, key_by=key_by, source=source, schema_id=12345 if confluent else None)
    # Not a vacuous comparison: the compiled writer took every event it is meant to take.
    assert natively_encoded(batch, writer) == [expected_native(e, writer) for e in batch]


def test_a_big_attribute_map_unicode_and_every_optional_field() -> None:
    nested = {'\u00e9"\\': [1, -(2**63), 2**63 - 1, 0.1, -0.0, 1e300, 5e-324, True, None, "\u2028\x01\U0001f600"]}
    attributes: dict[str, Any] = {f"k{i}\u4e2d": i * 7919 for i in range(150)}
    attributes |= {f"s{i}": "\U0001f600" * (i % 5) + "x" * i for i in range(150)}
    attributes |= {"bytes": b"\x00\xff", "none": None, "t": True, "f": False, "float": 3.25, "nested": nested}
    attributes |= {"tuple": (1, "2", [3.5, {"a": None}]), "list": [], "map": {}, "long": "y" * 5000}
    event = GovernanceEvent(
        agent_id="agent-\u00e9\u4e2d\U0001f600 /?",
        kind=EventKind.DATA_EXFILTRATION_DETECTED,
        action='a"\\\n\t\x01\x7f\u2028' * 300,  # over 4 KiB encoded: a two-byte-plus length
        agent_did="did:web:\u00e9",
        session_id="s-\U0001f600",
        resource="r",
        policy_name="p\u00e9",
        latency_ms=12.5,
        attributes=attributes,
        tenant_id="t\u00e9",
        policy_version="v2",
        risk_score=0.75,
        occurred_at=datetime(2026, 12, 5, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3))),
    )
    for key_by in ("agent_id", "session_id"):
        (record,) = compare([event], 2, key_by=key_by)
        assert (key_by == "session_id") == (record.key == "s-\U0001f600".encode())
    assert natively_encoded([event], 2) == [True]
    # The v1 writer cannot carry it: both report it unencodable with the same reason.
    assert compare([event], 1) == []


@pytest.mark.parametrize("writer", [1, 2])
def test_every_event_kind(writer: int) -> None:
    batch = [GovernanceEvent(agent_id=f"a{i}", kind=kind) for i, kind in enumerate(EventKind)]
    records = compare(batch, writer)
    assert len(records) == len(batch) - (writer == 1)  # v1 has no DATA_EXFILTRATION_DETECTED
    assert natively_encoded(batch, writer) == [kind.name in schema_version(writer).kinds for kind in EventKind]


@pytest.mark.parametrize("writer", [1, 2])
def test_a_full_micro_batch(writer: int) -> None:
    # 256 events: the size the sender hands over, worked on with the GIL released.
    batch = [e.replace(kind=EventKind.POLICY_CHECK) if writer == 1 else e for e in sample_events(256, agents=16)]
    compare(batch, writer)
    assert all(natively_encoded(batch, writer))


class _Text(str):
    __slots__ = ()


def test_what_the_compiled_writer_hands_back_is_encoded_on_the_python_path() -> None:
    batch = [
        GovernanceEvent(agent_id="old", occurred_at=datetime(999, 12, 31, tzinfo=UTC)),  # glibc's %Y: Python
        GovernanceEvent(agent_id="traced", trace_id="0af7651916cd43dd8448eb211c80319c"),
        GovernanceEvent(agent_id="sub", attributes={"n": _Text("a str subclass")}),  # not an exact type
        GovernanceEvent(agent_id="plain"),
        GovernanceEvent(agent_id="a /?%~\u00e9", session_id="s /"),  # the default source, URL-quoted
    ]
    compare(batch, 2)
    assert natively_encoded(batch, 2) == [False, False, False, True, True]


class _Subclassed(GovernanceEvent):
    __slots__ = ()


def test_fields_are_read_from_their_slots_and_by_name_for_another_class() -> None:
    """The compiled writer reads the fields of the batch's event class from the slots (offsets
    checked against the class); an event of another class (here a subclass) is read by name."""
    plain = GovernanceEvent(agent_id="plain", reason="r\u00e9", session_id="s", risk_score=0.5, tenant_id="t")
    sub = _Subclassed(agent_id="sub", decision="deny", attributes={"n": 1}, policy_version="7")
    for batch in ([plain, sub, plain], [sub, plain, sub]):
        compare(batch, 2)
        assert natively_encoded(batch, 2) == [True, True, True]
    # One encoder keeps where the fields of the class it last saw first live: batches led by one
    # class, then the other, then the first again, encode as fresh encoders do.
    encoder = Encoder(2)
    compiled = native.batch_encoder(encoder, key_by_session=False, source=None, empty_context=EMPTY_CONTEXT)
    tail = encoder._producer_tail(PRODUCERS[0])
    for batch in ([plain, sub], [sub, plain], [plain, sub], [plain]):
        fresh = native.batch_encoder(encoder, key_by_session=False, source=None, empty_context=EMPTY_CONTEXT)
        contexts = [EMPTY_CONTEXT] * len(batch)
        assert compiled.encode(batch, contexts, tail) == fresh.encode(batch, contexts, tail)


def test_an_event_with_an_empty_slot_is_handed_back_not_read() -> None:
    hollow = GovernanceEvent(agent_id="hollow")
    object.__delattr__(hollow, "reason")  # a slot never set: NULL in the instance
    hollow_sub = _Subclassed(agent_id="hollow")
    object.__delattr__(hollow_sub, "reason")  # read by name: AttributeError
    batch = [GovernanceEvent(agent_id="plain"), hollow, hollow_sub]
    assert natively_encoded(batch, 2) == [True, False, False]
    python, _compiled = encoders(2)
    with pytest.raises(AttributeError, match="reason"):  # what the Python path says of it
        python.encode([hollow], [EMPTY_CONTEXT], 0, keep=True, unencodable=_Unencodable())


# --- sign ---------------------------------------------------------------------------------------


def _headers_variant(headers: list[tuple[str, bytes]], how: str) -> list[tuple[str, bytes]]:
    if how == "no-time":
        return [h for h in headers if h[0] != "ce_time"]
    if how == "no-id":
        return [h for h in headers if h[0] != "ce_id"]
    if how == "repeated-id":
        return [*headers, ("ce_id", "second \u00e9".encode())]
    if how == "extra":
        return [("x-other", b"\xff"), *headers, ("ce_dataschema", b"\xfe")]
    return headers


@SETTINGS
@given(
    batch=st.lists(events(), min_size=1, max_size=40),
    data=st.data(),
    start=st.dictionaries(st.integers(0, 5), st.integers(0, 2**40), max_size=3),
)
def test_leaves_roots_paths_and_signatures_are_identical(
    batch: list[GovernanceEvent], data: st.DataObject, start: dict[int, int]
) -> None:
    records = [r for r in encoders(2)[1].encode(batch, [EMPTY_CONTEXT] * len(batch), 0, keep=True, unencodable=_report)]
    assume(records)
    for r in records:
        r.partition = data.draw(st.integers(0, 5))
        r.headers = _headers_variant(
            r.headers, data.draw(st.sampled_from(["", "no-time", "no-id", "repeated-id", "extra"]))
        )
        if data.draw(st.integers(0, 7)) == 0:
            r.key = None  # type: ignore[assignment]
    signed_at = 1_764_000_000_123
    # The tree and the numbering, against the reference's own pieces.
    merkle = native.merkle_batch()
    done = merkle(
        KEY.kid.encode(), STREAM, dict(start), [(r.value, r.key, r.headers, r.partition) for r in records], signed_at
    )
    assert done is not None
    root, per_record, after = done
    reference = Signer(KEY, stream_id=STREAM, next_sequences=start)
    counters = dict(start)
    leaves, seqs = reference._hash([sign_input(r.value, r.key, r.headers, r.partition) for r in records], counters)
    want_root, paths = build(leaves)
    assert root == want_root
    assert after == counters
    n = len(records)
    assert per_record == [
        (seq, ("govbus_sig_proof", PROOF_HEAD.pack(signed_at, n, i) + paths[i])) for i, seq in enumerate(seqs)
    ]
    # The whole hook: the same signature headers on both paths (Ed25519 signatures are deterministic).
    hooks = []
    for compiled in (True, False):
        hook = SigningHook(Signer(KEY, stream_id=STREAM, next_sequences=start, clock_ms=lambda: signed_at), 16)
        if not compiled:
            hook._native = None
        copies = [OutgoingRecord(r.seq, r.key, r.value, list(r.headers), True, None, _report) for r in records]
        for c, r in zip(copies, records, strict=True):
            c.partition = r.partition
        hook("t", copies)
        hooks.append(([c.headers for c in copies], hook.signer.next_sequences()))
    assert hooks[0] == hooks[1]
    assert Signer(KEY).sign_in_place(native.record_signer(), copies)  # the compiled path did sign


def test_records_the_compiled_signer_declines_are_judged_by_the_reference() -> None:
    merkle = native.merkle_batch()
    good = (b"v", b"k", [("ce_id", b"1")], 0)
    assert merkle(b"k", b"s", {}, [good], 1) is not None
    for bad in (
        (b"v", b"k", [("ce_id", b"\xff")], 0),  # not UTF-8: sign_input raises
        (b"v", b"k", [("ce_id", b"1")], -1),  # no such partition
        (b"v", "k", [("ce_id", b"1")], 0),  # a str key
    ):
        assert merkle(b"k", b"s", {}, [good, bad], 1) is None
    assert merkle(b"k", b"s", {0: 2**64 - 1}, [good, good], 1) is None  # past the last sequence number
    assert merkle(b"k", b"s", {}, [], 1) is None
    # Through the hook the reference then raises as it always did, and no number is consumed.
    hook = SigningHook(Signer(KEY), 16)
    record = OutgoingRecord(0, b"k", b"v", [("ce_id", b"\xff")], True, None, _report)
    record.partition = 0
    with pytest.raises(UnicodeDecodeError):
        hook("t", [record])
    assert hook.signer.next_sequences() == {}


# --- which path the Bus takes -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_bus_says_which_encoder_it_uses(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GOVBUS_NATIVE", mode)
    with caplog.at_level(logging.INFO, logger="govbus.native"):
        bus = Bus(topic="t", kafka={"bootstrap_servers": closed_port()}, producer={"spool_dir": str(tmp_path)})
    try:
        encoder = bus._sender.encoder
        assert isinstance(encoder, NativeBatchEncoder) == (mode == "auto")
        assert isinstance(encoder, EventBatchEncoder)
        said = [r.getMessage() for r in caplog.records if "producer batch encode" in r.getMessage()]
        assert said == [
            "govbus producer batch encode: native (schema v2)"
            if mode == "auto"
            else "govbus producer batch encode: Python (no: turned off (GOVBUS_NATIVE=off))"
        ]
    finally:
        bus.close(0.1)


# --- encode + route + sign in one call (the producer's own signing hook) ------------------------


def _reference_signed(
    batch: Sequence[GovernanceEvent], python: EventBatchEncoder, partitions: int, signer: Signer
) -> tuple[list[OutgoingRecord], list[tuple[str, int, str, str]], list[list[tuple[str, bytes]]]]:
    """The two-step path on the Python reference: encode, partition (murmur2 in Python), and the
    signing hook's pure-Python signer (``Signer.sign_batch``)."""
    bad = _Unencodable()
    records = python.encode(batch, [EMPTY_CONTEXT] * len(batch), 7, keep=True, unencodable=bad)
    partitioner = Partitioner(partitions)
    for r in records:
        r.partition = partitioner(r.key)
    bases = [list(r.headers) for r in records]
    hook = SigningHook(signer, 512)
    hook._native = None
    if records:
        hook("t", records)
    return records, bad, bases


def _signed_view(r: OutgoingRecord) -> tuple[int, bytes, bytes, list[tuple[str, bytes]], int]:
    return r.seq, r.key, r.value, r.headers, r.partition


@SETTINGS
@given(
    batch=st.lists(events(), min_size=1, max_size=12),
    writer=st.sampled_from([1, 2]),
    key_by=st.sampled_from(["agent_id", "session_id"]),
    source=st.sampled_from([None, "urn:kernel:\u00e9"]),
    partitions=st.integers(1, 7),
    start=st.dictionaries(st.integers(0, 6), st.integers(0, 2**40), max_size=3),
    confluent=st.booleans(),
)
def test_encode_and_sign_in_one_call_is_the_two_step_path(
    batch: list[GovernanceEvent],
    writer: int,
    key_by: str,
    source: str | None,
    partitions: int,
    start: dict[int, int],
    confluent: bool,
) -> None:
    python, compiled = encoders(writer, key_by=key_by, source=source, schema_id=12345 if confluent else None)
    signed_at = 1_764_000_000_123

    def signer() -> Signer:
        return Signer(KEY, stream_id=STREAM, next_sequences=start, clock_ms=lambda: signed_at)

    fused_signer, got_bad = signer(), _Unencodable()
    got, signed = compiled.encode_signed(
        batch,
        [EMPTY_CONTEXT] * len(batch),
        7,
        keep=True,
        unencodable=got_bad,
        partitions=partitions,
        signer=fused_signer,
    )
    # Signed in the same call exactly when the compiled writer takes every event itself.
    assert signed == all(expected_native(e, writer) for e in batch)
    if signed:
        want, want_bad, bases = _reference_signed(batch, python, partitions, reference := signer())
        assert [_signed_view(r) for r in got] == [_signed_view(r) for r in want]
        assert [unsigned_headers(r) for r in got] == bases  # what a rescue writes to the spool
        assert fused_signer.next_sequences() == reference.next_sequences()
        assert got_bad == want_bad == []
    else:
        # Nothing signed, nothing numbered: the batch hook signs what encode() returns.
        schema_id = 12345 if confluent else None
        want = compare(batch, writer, key_by=key_by, source=source, schema_id=schema_id)
        assert [_plain(r) for r in got] == [_plain(r) for r in want]
        assert all(r.partition == -1 and r._base is r.headers for r in got)
        assert fused_signer.next_sequences() == start


def test_a_full_signed_micro_batch_verifies() -> None:
    from govbus.signing import KeyEntry, Keyring, VerdictCode, Verifier

    _python, compiled = encoders(2)
    batch = list(sample_events(256, agents=16))
    fused_signer = Signer(KEY, stream_id=STREAM)
    records, signed = compiled.encode_signed(
        batch, [EMPTY_CONTEXT] * 256, 0, keep=False, unencodable=_report, partitions=3, signer=fused_signer
    )
    assert signed
    assert len(records) == 256
    assert all(r._keep is False and r._publication is None for r in records)
    ring = Keyring()
    ring.add(KeyEntry(KEY.kid, KEY.public_bytes))
    verifier = Verifier(ring)
    for r in records:
        verdict = verifier.verify(r.value, r.key, r.headers, r.partition)
        assert verdict.code is VerdictCode.VALID, verdict
    assert sum(fused_signer.next_sequences().values()) == 256
    assert len(canonical.SIGNATURE_HEADERS) == SIGNATURE_HEADERS
    assert [name for name, _ in records[0].headers[-SIGNATURE_HEADERS:]] == list(canonical.SIGNATURE_HEADERS)


@pytest.mark.parametrize("keep", [True, False])
def test_a_fused_record_is_the_record_its_class_makes(keep: bool) -> None:
    """The fused step sets OutgoingRecord's slots itself (no __init__ frame per record): every
    slot holds what __init__ sets for a signed record."""
    _python, compiled = encoders(2)
    records, signed = compiled.encode_signed(
        list(sample_events(40, agents=4)),
        [EMPTY_CONTEXT] * 40,
        100,
        keep=keep,
        unencodable=_report,
        partitions=5,
        signer=Signer(KEY, stream_id=STREAM),
    )
    assert signed
    for i, r in enumerate(records):
        assert type(r) is OutgoingRecord
        made = OutgoingRecord(r.seq, r.key, r.value, r.headers, keep, None, compiled.report, r.partition, signed=True)
        assert {name: getattr(r, name) for name in OutgoingRecord.__slots__} == {
            name: getattr(made, name) for name in OutgoingRecord.__slots__
        }
        assert r.seq == 100 + i
        assert r._report is compiled.report
        assert r._keep is keep


def test_a_record_class_it_does_not_know_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class that is not OutgoingRecord's layout (here a subclass with a slot more, or none of
    its own) is called as before: its __init__ runs for each record."""
    from govbus.producer import _batch

    made: list[OutgoingRecord] = []

    class Extra(OutgoingRecord):
        __slots__ = ("extra",)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.extra = len(made)
            made.append(self)

    class Inherited(OutgoingRecord):
        __slots__ = ()

    class Plain(OutgoingRecord):  # no __slots__ of its own: a __dict__, OutgoingRecord's __slots__ inherited
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    for cls in (Extra, Inherited, Plain):
        made.clear()
        monkeypatch.setattr(_batch, "OutgoingRecord", cls)
        _python, compiled = encoders(2)
        records, signed = compiled.encode_signed(
            list(sample_events(8, agents=2)),
            [EMPTY_CONTEXT] * 8,
            0,
            keep=True,
            unencodable=_report,
            partitions=3,
            signer=Signer(KEY, stream_id=STREAM),
        )
        assert signed
        assert all(type(r) is cls for r in records)
        assert made == (records if cls is not Inherited else [])
        assert all(r._base is None and r._size_retries == 0 for r in records)


def test_a_panic_in_the_signing_step_leaves_the_batch_to_the_hook() -> None:
    _python, compiled = encoders(2)
    batch = list(sample_events(40, agents=4))
    plain = compiled.encode(batch, [EMPTY_CONTEXT] * 40, 0, keep=True, unencodable=_report)
    fused_signer = Signer(KEY, stream_id=STREAM)
    native.set_panic_probe(plain[17].value)
    try:
        records, signed = compiled.encode_signed(
            batch, [EMPTY_CONTEXT] * 40, 0, keep=True, unencodable=_report, partitions=3, signer=fused_signer
        )
    finally:
        native.set_panic_probe(None)
    assert not signed
    assert [_plain(r) for r in records] == [_plain(r) for r in plain]
    assert fused_signer.next_sequences() == {}  # no sequence number consumed
    # The hook then signs them, on the compiled signer, as before.
    for r in records:
        r.partition = Partitioner(3)(r.key)
    SigningHook(fused_signer, 512)("t", records)
    assert all(len(r.headers) == len(r._base) + SIGNATURE_HEADERS for r in records)  # type: ignore[arg-type]


def test_a_signature_that_fails_raises_and_consumes_nothing() -> None:
    _python, compiled = encoders(2)
    batch = list(sample_events(8, agents=2))

    class Broken(SigningKey):
        def sign(self, message: bytes) -> bytes:
            raise OSError("the key is gone")

    fused_signer = Signer(Broken(KEY._private, KEY.kid), stream_id=STREAM)  # type: ignore[attr-defined]
    with pytest.raises(OSError, match="the key is gone"):
        compiled.encode_signed(
            batch, [EMPTY_CONTEXT] * 8, 0, keep=True, unencodable=_report, partitions=3, signer=fused_signer
        )
    assert fused_signer.next_sequences() == {}


def test_per_event_signing_is_left_to_the_hook() -> None:
    _python, compiled = encoders(2)
    batch = list(sample_events(8, agents=2))
    per_event = Signer(KEY, mode="per-event")
    records, signed = compiled.encode_signed(
        batch, [EMPTY_CONTEXT] * 8, 0, keep=True, unencodable=_report, partitions=3, signer=per_event
    )
    assert not signed
    assert len(records) == 8
    assert per_event.next_sequences() == {}
    assert not SigningHook(per_event).fusable(256)
    assert not SigningHook(Signer(KEY), 128).fusable(256)  # its trees are smaller than a batch
    assert SigningHook(Signer(KEY), 256).fusable(256)


@SETTINGS
@given(key=st.binary(max_size=40), partitions=st.integers(1, 1000))
def test_routing_is_the_python_murmur2(key: bytes, partitions: int) -> None:
    assert native._MODULE.partition_for(key, partitions) == partition_for(key, partitions)  # type: ignore[union-attr]


class _SubclassedHook(SigningHook):
    pass


@pytest.mark.parametrize(
    ("hook", "fused"),
    [
        ("settings", True),
        ("instance", True),
        ("subclass", False),
        ("custom", False),
        ("small-trees", False),
        ("off", False),
    ],
)
def test_the_bus_signs_in_the_encode_call_only_with_its_own_hook(
    hook: str, fused: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from govbus.signing import write_private_key

    if hook == "off":
        monkeypatch.setenv("GOVBUS_NATIVE", "off")
    pem = str(write_private_key(KEY, tmp_path / "k.pem"))
    hooks: dict[str, Any] = {
        "settings": None,
        "off": None,
        "instance": SigningHook(Signer(KEY)),
        "subclass": _SubclassedHook(Signer(KEY)),
        "custom": lambda topic, records: None,
        "small-trees": SigningHook(Signer(KEY), 64),
    }
    bus = Bus(
        topic="t",
        kafka={"bootstrap_servers": closed_port()},
        producer={"spool_dir": str(tmp_path / "spool")},
        signing={"private_key_path": pem},
        batch_hook=hooks[hook],
    )
    try:
        assert (bus._sender._signer is not None) == fused
    finally:
        bus.close(0.1)
