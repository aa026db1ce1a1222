"""The compiled producer batch step, held to the pure-Python path on the same inputs.

Encode: a micro-batch goes through :class:`NativeBatchEncoder` (``govbus._native.BatchEncoder``)
and the reference :class:`EventBatchEncoder` (``to_record`` per event); keys, values, headers and
seqs must be identical, and so must the events reported unencodable (with the same message).
Sign: the same records, partitions and stream go through ``govbus._native.merkle_batch`` and the
reference ``Signer._hash`` + ``_merkle.build``; sequence headers, leaf hashes (through the root),
Merkle roots and paths, and the signing hook's final headers must be identical.
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
from govbus.producer._batch import EMPTY_CONTEXT, EventBatchEncoder, NativeBatchEncoder, OutgoingRecord
from govbus.producer._signing import SigningHook, sign_input
from govbus.signing import Signer, SigningKey
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
