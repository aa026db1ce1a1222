"""The compiled ledger sealer (``govbus._native.LedgerSealer``), held to the Python writer.

Both seal the same delivered records from the same ``seq``/``prev``: the lines (canonical JSON,
SHA-256, hash chain) must be byte-identical, and a whole ledger written on either path must be
the same file and verify. Values the sealer leaves to the reference must come out of the writer
exactly as the reference writes them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _sink_receivers import delivered, signed_batch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from govbus import _accel as native
from govbus._cloudevents import CloudEventAttributes
from govbus._contract import Decoder, Encoder
from govbus._record import from_record, to_record
from govbus.consumers._native_record import NativeRecord
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers.sinks import _ledger
from govbus.errors import DecodeError, InvalidEventError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo
from govbus.signing import SIGNATURE_HEADERS, KeyEntry, Keyring, SigningKey

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

SETTINGS = settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_id = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=10)
_opt_id = st.none() | _id
_hex = st.sampled_from("0123456789abcdef")
_int64 = st.integers(-(2**63), 2**63 - 1)
_json_leaf = st.none() | st.booleans() | _int64 | st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_attr = _json | st.floats() | st.binary(max_size=6)  # bytes and non-finite floats: top level only
_time = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
_header_value = st.none() | st.binary(max_size=8) | _text.map(str.encode)
_header_name = st.sampled_from(
    ["traceparent", "tracestate", "ce_x", "content-type", *SIGNATURE_HEADERS, "ü", "a\nb", ""]
)


@st.composite
def events(draw: st.DrawFn) -> GovernanceEvent:
    def hexid(n: int) -> str | None:
        if not draw(st.booleans()):
            return None
        v = "".join(draw(st.lists(_hex, min_size=n, max_size=n)))
        assume(v != "0" * n)
        return v

    producer = draw(st.none() | st.builds(ProducerInfo, _text, _text, _text, _text))
    fields = dict(
        agent_id=draw(_id),
        kind=draw(st.sampled_from(list(EventKind))),
        severity=draw(_id),
        action=draw(_text),
        decision=draw(_text),
        reason=draw(_text),
        event_id=draw(_id),
        occurred_at=draw(_time),
        agent_did=draw(_opt_id),
        session_id=draw(_opt_id),
        resource=draw(_opt_id),
        policy_name=draw(_opt_id),
        latency_ms=draw(st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
        trace_id=hexid(32),
        span_id=hexid(16),
        parent_span_id=hexid(16),
        attributes=draw(st.dictionaries(_text, _attr, max_size=8)),
        schema_version=draw(_id),
        producer=producer,
        tenant_id=draw(_opt_id),
        policy_version=draw(_opt_id),
        risk_score=draw(st.none() | st.floats(min_value=0, max_value=1)),
    )
    try:
        return GovernanceEvent(**fields)
    except InvalidEventError:
        assume(False)
        raise


@st.composite
def attributes(draw: st.DrawFn) -> CloudEventAttributes:
    # Extension names may collide with the event's own attributes and with traceparent/tracestate.
    names = st.sampled_from(["id", "data", "time", "traceparent", "tracestate", "sessionid", "zz", "A", "é"])
    return CloudEventAttributes(
        specversion=draw(st.sampled_from(["1.0", "0.3"])),
        id=draw(_id),
        source=draw(_text),
        type=draw(_text),
        time=draw(st.none() | st.just("") | _text),
        subject=draw(st.none() | _text),
        datacontenttype=None,
        dataschema=None,
        extensions=draw(st.dictionaries(names | _text, _text, max_size=4)),
    )


@st.composite
def records(draw: st.DrawFn) -> DeliveredRecord:
    event = draw(events())
    if draw(st.booleans()):
        # Through the codec: attributes as the decoder builds them, headers as a producer writes them.
        try:
            out = to_record(event, ProducerInfo("k", "i", "h", "l"), Encoder(2))
            decoded = from_record(out.value, out.headers, Decoder(2))
        except (InvalidEventError, DecodeError):
            assume(False)
            raise
        event, attrs, headers = decoded.event, decoded.attributes, list(out.headers)
    else:
        attrs, headers = draw(attributes()), []
    headers += draw(st.lists(st.tuples(_header_name, _header_value), max_size=6))
    return DeliveredRecord(
        event=event,
        attributes=attrs,
        topic=draw(_text),
        partition=draw(st.integers(0, 2**31)),
        offset=draw(st.integers(0, 2**62)),
        timestamp_ms=draw(st.none() | st.integers(-(2**40), 2**42)),
        key=draw(st.none() | st.binary(max_size=8)),
        value=draw(st.binary(max_size=40)),
        headers=tuple(headers),
        verdict=draw(st.sampled_from(["valid", "unverified", "gap"])),
        verdict_detail=draw(_text),
        flagged=draw(st.booleans()),
    )


def both(seq: int, prev: str, recs: list[DeliveredRecord]) -> tuple[bytes, str]:
    sealer = _ledger.native_sealer()
    assert sealer is not None
    got = sealer(seq, prev, recs)
    want = _ledger.seal_events(seq, prev, recs)
    assert got == want
    return got  # type: ignore[no-any-return]


@SETTINGS
@given(
    recs=st.lists(records(), min_size=1, max_size=4),
    seq=st.integers(0, 2**40),
    prev=st.sampled_from(["0" * 64, "ab" * 32]),
)
def test_sealed_lines_equal_the_python_writer(recs: list[DeliveredRecord], seq: int, prev: str) -> None:
    lines, head = both(seq, prev, recs)
    # The chain: each line's prev is the line before's hash, and the head is the last hash.
    for line in lines.splitlines(keepends=True):
        fields, digest = _ledger.unseal(line)
        assert (fields["prev"], fields["seq"]) == (prev, seq)
        prev, seq = digest, seq + 1
    assert head == prev


def test_signed_sample_batch_and_odd_attribute_values() -> None:
    recs, _ = signed_batch(40)
    evs = [
        GovernanceEvent(
            agent_id="a",
            attributes={
                "raw": b"\x00\xff",
                "nan": math.nan,
                "inf": -math.inf,
                "deep": {"x": [1.5, {"y": (1, "z", 1e300)}]},
            },
        ),
        GovernanceEvent(agent_id='\u2028"\\', reason="\x01\x1f\x7f", attributes={"ü": "\ud7ff\U0010ffff"}),
    ]
    recs += delivered(evs=evs)
    both(0, _ledger.GENESIS, recs)


def test_native_records_decode_lazily_and_seal_the_same() -> None:
    recs = delivered(5)
    decoder = Decoder()
    lazy = []
    for r in recs:
        lazy.append(NativeRecord.create(
            b"{}\n", r.event_id, decoder, r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value,
            r.headers, r.verdict, r.verdict_detail, r.flagged,
        ))  # fmt: skip
    assert both(3, "ab" * 32, lazy) == _ledger.seal_events(3, "ab" * 32, recs)


@pytest.mark.parametrize(
    "change",
    [
        {"headers": (["ce_id", b"x"],)},  # a header that is not a tuple
        {"headers": (("ce_id", bytearray(b"x")),)},  # bytes-like, not bytes
        {"topic": "lone \ud800 surrogate"},
        {"offset": 2**70},
        {"offset": True},
    ],
)
def test_what_the_sealer_declines_the_writer_seals_as_the_reference(tmp_path: Path, change: dict[str, Any]) -> None:
    recs = delivered(3)
    recs[1] = dataclasses.replace(recs[1], **change)
    sealer = _ledger.native_sealer()
    assert sealer is not None
    with pytest.raises(TypeError):
        sealer(0, _ledger.GENESIS, recs)
    try:
        want: bytes | type[Exception] = _ledger.seal_events(0, _ledger.GENESIS, recs)[0]
    except Exception as exc:  # what the reference raises, the writer raises too
        want = type(exc)
    writer = _ledger.LedgerWriter(tmp_path / "l.jsonl", fsync=False)
    writer.open()
    try:
        if isinstance(want, bytes):
            writer.append(recs)
            assert (tmp_path / "l.jsonl").read_bytes() == want
        else:
            with pytest.raises(want):
                writer.append(recs)
    finally:
        writer.close()


def test_a_ledger_written_natively_is_the_python_ledger_and_verifies(tmp_path: Path) -> None:
    recs, keyring = signed_batch(30)
    recs = recs + recs[:5] + [dataclasses.replace(recs[6], value=recs[6].value + b"x")]  # duplicates, a conflict
    key = SigningKey.generate("cp")
    clock = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    files = []
    for native_on in (True, False):
        path = tmp_path / f"{native_on}.jsonl"
        writer = _ledger.LedgerWriter(
            path, checkpoint_key=key, checkpoint_every=7, clock=lambda: clock, native=native_on
        )
        writer.open()
        conflicts = [writer.append(recs[i : i + 9]) for i in range(0, len(recs), 9)]
        writer.checkpoint()
        writer.close()
        files.append((path.read_bytes(), conflicts))
    assert files[0] == files[1]
    assert any(files[0][1])
    cp_keyring = Keyring([KeyEntry(key.kid, key.public_bytes)])
    report = _ledger.verify_ledger(tmp_path / "True.jsonl", keyring=keyring, checkpoint_keyring=cp_keyring)
    assert report.ok, report.problem
    assert (report.events, report.checkpoints) == (30, 5)
