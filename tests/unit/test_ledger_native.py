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
from _sink_strategies import records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus import _accel as native
from govbus._contract import Decoder
from govbus.consumers._native_record import NativeRecord
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers.sinks import _ledger
from govbus.event import GovernanceEvent
from govbus.signing import KeyEntry, Keyring, SigningKey

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

SETTINGS = settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
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


def test_headers_as_lists_seal_the_same() -> None:
    recs = [dataclasses.replace(r, headers=[list(h) for h in r.headers]) for r in delivered(3)]
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
        {"headers": (("ce_id", b"x", b"y"),)},  # a header that is not a pair
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


def test_no_sealer_without_the_core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(native, "active", lambda: False)
    assert _ledger.native_sealer() is None
    writer = _ledger.LedgerWriter(tmp_path / "l.jsonl", fsync=False)
    writer.open()
    recs = delivered(3)
    writer.append(recs)
    writer.close()
    assert (tmp_path / "l.jsonl").read_bytes() == _ledger.seal_events(0, _ledger.GENESIS, recs)[0]
