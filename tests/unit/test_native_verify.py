"""The compiled core's signature checks, held to the Python verifier on the same record streams.

Two intakes read the same messages: one verifies on the compiled core (batch authenticity, then
key status and sequence tracking in Python), the other with the pure-Python Verifier. Every
record must get the same outcome: verdict code and detail, dead letter or skip or delivery,
flag, and rendered line. Streams mix valid records with tampered bytes, unknown kids, gaps,
replays, reordering, records read from the wrong partition and malformed signature headers.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from _await import until
from _sinks import FakeMessage, Rec, events, records, sign, signing_pair
from _slots import slots
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus import _accel as native
from govbus._contract import Decoder
from govbus.consumers import VerdictPolicy, Verification
from govbus.consumers import _intake as intake_module
from govbus.consumers._intake import Intake
from govbus.consumers._native_record import NativeRecord
from govbus.consumers._native_verify import NativeVerify
from govbus.consumers._pipeline import Failure, Work
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers.sinks._jsonl import encode_line
from govbus.signing import Keyring, Verifier

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

PARTITIONS = 3


def _pool() -> tuple[list[Rec], Keyring, Any]:
    signer, keyring = signing_pair("k1")
    recs: list[Rec] = []
    for _ in range(3):  # three batches of 12 over 3 partitions
        recs += sign(records(events(12)), signer, PARTITIONS)
    stranger, _ = signing_pair("k-unknown")
    recs += sign(records(events(3)), stranger, PARTITIONS)
    single, single_ring = signing_pair("k1")  # same kid, another key: the signature fails
    recs += sign(records(events(2)), single, PARTITIONS)
    assert single_ring
    return recs, keyring, signer


POOL, KEYRING, SIGNER = _pool()


def _mutate(r: Rec, how: str) -> tuple[bytes | None, list[tuple[str, bytes | None]] | None, bytes | None, int]:
    value, headers, key = r.value, list(r.headers), r.key
    assert r.partition is not None
    partition = r.partition
    if how == "value" and value:
        value = value[:-1] + bytes([value[-1] ^ 1])
    elif how == "key":
        key = (key or b"") + b"x"
    elif how == "no-key":
        key = None
    elif how == "ce_id":
        headers = [(n, b"other" if n == "ce_id" else v) for n, v in headers]
    elif how == "drop-sig":
        headers = [(n, v) for n, v in headers if n != "govbus_sig"]
    elif how == "drop-time":
        headers = [(n, v) for n, v in headers if n != "ce_time"]
    elif how == "dup-watched":
        headers = [*headers, ("ce_type", b"x")]
    elif how == "dup-other":
        headers = [*headers, ("other", b"1"), ("other", b"2")]
    elif how == "proof":
        headers = [(n, v[:-1] if n == "govbus_sig_proof" and v else v) for n, v in headers]
    elif how == "none-sig":
        headers = [(n, None if n == "govbus_sig_seq" else v) for n, v in headers]
    elif how == "alg":
        headers = [(n, b"rsa" if n == "govbus_sig_alg" else v) for n, v in headers]
    elif how == "partition":
        partition = (partition + 1) % PARTITIONS
    elif how == "no-headers":
        headers = None
    return value, headers, key, partition


MUTATIONS = ["none"] * 6 + [
    "value", "key", "no-key", "ce_id", "drop-sig", "drop-time", "dup-watched", "dup-other", "proof",
    "none-sig", "alg", "partition", "no-headers",
]  # fmt: skip


def _intake(native_on: bool, keyring: Keyring, cache: int = 1024) -> Intake:
    verification = Verification(Verifier(keyring, root_cache_size=cache), VerdictPolicy())
    intake = Intake(Decoder(), verification=verification, native=native_on)
    assert (intake._native_verify is not None) is native_on
    return intake


def _outcomes(
    intake: Intake,
    msgs: list[FakeMessage],
    revoke_at: int | None = None,
    *,
    batch: bool = False,
    started: bool = False,
    into: list[Any] | None = None,
) -> list[Any]:
    """Each record's outcome; ``batch``: through the one-call batch intake (prepare + take);
    ``started``: through the intake started on its own thread (start + rows + take); ``into``
    gets the Work objects themselves."""
    works: list[Any] = [] if into is None else into
    chunk: list[FakeMessage] = []

    def flush() -> None:
        if started:
            begun = intake.start(chunk) if chunk else None
            assert (begun is not None) is bool(chunk)
            rows = begun.rows() if begun is not None else []
        else:
            rows = intake.prepare(chunk) if batch else None
            assert (rows is not None) is batch
        for j, m in enumerate(chunk):
            row = rows[j] if rows is not None else None
            works.append(intake(m, 1, defer=True) if row is None else intake.take(row, 1))
        intake.settle()
        chunk.clear()

    for i, m in enumerate(msgs):
        if revoke_at == i:
            flush()  # what came before is judged under the old keyring
            assert intake.verification is not None
            verifier = intake.verification.verifier
            assert isinstance(verifier, Verifier)
            verifier.keyring.revoke("k1", at=datetime(2000, 1, 1, tzinfo=UTC))
        chunk.append(m)
        if i % 7 == 6:
            flush()  # batch boundaries fall anywhere
    flush()
    return [
        (
            w.failure and (w.failure.reason, w.failure.message, w.failure.verdict),
            w.skip,
            w.record and (w.record.verdict, w.record.verdict_detail, w.record.flagged, encode_line(w.record)),
        )
        for w in works
    ]


@settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.tuples(st.integers(0, len(POOL) - 1), st.sampled_from(MUTATIONS)), min_size=1, max_size=40),
    cache=st.sampled_from([0, 1, 1024]),
    revoke_at=st.none() | st.integers(0, 39),
)
def test_verdicts_identical_on_both_paths(picks: list[tuple[int, str]], cache: int, revoke_at: int | None) -> None:
    msgs = []
    for offset, (index, how) in enumerate(picks):
        r = POOL[index]
        value, headers, key, partition = _mutate(r, how)
        msgs.append(FakeMessage(value, headers, key=key, partition=partition, offset=offset))  # type: ignore[arg-type]
    ring_a = Keyring(list(KEYRING))
    ring_b = Keyring(list(KEYRING))
    ring_c = Keyring(list(KEYRING))
    ring_d = Keyring(list(KEYRING))
    got = _outcomes(_intake(True, ring_a, cache), msgs, revoke_at)
    batched = _outcomes(_intake(True, ring_c, cache), msgs, revoke_at, batch=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(intake_module, "START_MIN_RECORDS", 1)  # every chunk is started on its own thread
        started = _outcomes(_intake(True, ring_d, cache), msgs, revoke_at, started=True)
    want = _outcomes(_intake(False, ring_b, cache), msgs, revoke_at)
    assert got == want
    assert batched == want
    assert started == want


@settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.tuples(st.integers(0, len(POOL) - 1), st.sampled_from(MUTATIONS)), min_size=1, max_size=40),
    revoke_at=st.none() | st.integers(0, 39),
    started=st.booleans(),
)
def test_works_built_natively_equal_the_python_ones(
    picks: list[tuple[int, str]], revoke_at: int | None, started: bool
) -> None:
    msgs = []
    for offset, (index, how) in enumerate(picks):
        value, headers, key, partition = _mutate(POOL[index], how)
        msgs.append(FakeMessage(value, headers, key=key, partition=partition, offset=offset))  # type: ignore[arg-type]
    built: list[Any] = []
    python: list[Any] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(intake_module, "START_MIN_RECORDS", 1)  # every chunk is started on its own thread
        native_intake = _intake(True, Keyring(list(KEYRING)))
        assert native_intake._works is not None
        python_intake = _intake(True, Keyring(list(KEYRING)))
        python_intake._works = None  # take() builds them from the 11-field rows
        _outcomes(native_intake, msgs, revoke_at, batch=not started, started=started, into=built)
        _outcomes(python_intake, msgs, revoke_at, batch=not started, started=started, into=python)
    assert [slots(w, native_intake._lazy_decoder) for w in built] == [
        slots(w, python_intake._lazy_decoder) for w in python
    ]
    assert native_intake.decoder.legacy_fingerprints == python_intake.decoder.legacy_fingerprints


class _WorkWithADict(Work):
    """A Work whose instances have a ``__dict__``: not what the compiled builder fills."""


def test_classes_without_the_expected_slots_are_built_in_python() -> None:
    class OwnNew(Work):
        __slots__ = ()

        def __new__(cls, *args: Any) -> OwnNew:
            return super().__new__(cls)

    class NotASlot(NativeRecord):
        __slots__ = ()
        line = None  # type: ignore[assignment]

    decoder = Decoder()
    assert native.work_builder(Work, NativeRecord, decoder) is not None
    for work_type, record_type in [(_WorkWithADict, NativeRecord), (OwnNew, NativeRecord), (Work, NotASlot),
                                   (Failure, NativeRecord), (Work, DeliveredRecord)]:  # fmt: skip
        assert native.work_builder(work_type, record_type, decoder) is None
    msgs = _stream(12)
    want = [slots(w) for w in _take_all(_intake(True, Keyring(list(KEYRING))), msgs)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(intake_module, "Work", _WorkWithADict)
        intake = _intake(True, Keyring(list(KEYRING)))
        assert intake._works is None
        rows = intake.prepare(msgs)
        assert rows is not None
        assert all(r is not None and len(r) == 11 for r in rows)  # the rows of the Python path
        got = [slots(w) for w in _take_all(intake, msgs)]
    assert [o for _, o in got] == [o for _, o in want]
    assert {c for c, _ in got} == {"_WorkWithADict"}


def _take_all(intake: Intake, msgs: list[FakeMessage]) -> list[Any]:
    rows = intake.prepare(msgs)
    assert rows is not None
    works = [intake.take(row, 1) for row in rows if row is not None]
    intake.settle()
    for w in works:  # the intake's own decoder, named
        if w.record is not None:
            object.__setattr__(w.record, "_decoder", None)
    return works


def test_in_order_stream_is_all_valid_with_one_signature_check_per_batch() -> None:
    intake = _intake(True, Keyring(list(KEYRING)))
    msgs = [
        FakeMessage(r.value, r.headers, key=r.key, partition=r.partition, offset=i) for i, r in enumerate(POOL[:36])
    ]  # type: ignore[arg-type]
    out = _outcomes(intake, msgs)
    assert all(o[2] is not None and o[2][0] == "valid" for o in out)
    assert isinstance(intake._native_verify, NativeVerify)
    assert intake._native_verify._checker.signature_checks == 3


def test_the_batch_intake_takes_a_signed_stream_in_one_call_per_batch() -> None:
    intake = _intake(True, Keyring(list(KEYRING)))
    msgs = [
        FakeMessage(r.value, r.headers, key=r.key, partition=r.partition, offset=i) for i, r in enumerate(POOL[:36])
    ]  # type: ignore[arg-type]
    rows = intake.prepare(msgs)
    assert rows is not None
    assert all(row is not None and len(row) == 4 for row in rows)  # the Work built natively
    works = [intake.take(row, 1) for row in rows if row is not None]
    assert not intake._pending  # nothing left for settle()
    assert not intake._pending_verify
    assert [w.record and w.record.verdict for w in works] == ["valid"] * 36
    assert [w.record and encode_line(w.record) for w in works] == [
        o[2][3] for o in _outcomes(_intake(False, Keyring(list(KEYRING))), msgs)
    ]
    assert isinstance(intake._native_verify, NativeVerify)
    assert intake._native_verify._checker.signature_checks == 3


def test_a_replayed_record_is_skipped_as_a_replay() -> None:
    r = POOL[0]
    msgs = [FakeMessage(r.value, r.headers, key=r.key, partition=r.partition, offset=i) for i in range(2)]  # type: ignore[arg-type]
    got = _outcomes(_intake(True, Keyring(list(KEYRING))), msgs)
    assert got[1][1] == "verify:replay"


def _stream(n: int) -> list[FakeMessage]:
    return [FakeMessage(r.value, r.headers, key=r.key, partition=r.partition, offset=i) for i, r in enumerate(POOL[:n])]  # type: ignore[arg-type]


def test_a_started_batch_gives_the_rows_of_the_one_call_intake() -> None:
    msgs = _stream(36) * 2  # 72 records: above the size a batch is started from
    assert len(msgs) >= intake_module.START_MIN_RECORDS
    a, b = _intake(True, Keyring(list(KEYRING))), _intake(True, Keyring(list(KEYRING)))
    begun = a.start(msgs)
    assert begun is not None
    got = begun.rows()
    want = b.prepare(msgs)
    assert got is not None
    assert want is not None
    assert [slots(r, a._lazy_decoder) for r in got] == [slots(r, b._lazy_decoder) for r in want]
    assert all(row is not None and len(row) == 4 and row[1] is not None for row in got)  # all built, authentic
    with pytest.raises(RuntimeError, match="finished already"):
        begun._pending.finish()


def test_a_small_batch_is_not_started() -> None:
    assert _intake(True, Keyring(list(KEYRING))).start(_stream(intake_module.START_MIN_RECORDS - 1)) is None


@pytest.mark.parametrize("after_the_pass", [False, True])
def test_keys_changed_after_a_batch_started_send_it_to_the_python_verifier(after_the_pass: bool) -> None:
    # Same kid, another key: what the pass authenticated with the old key must not count.
    intake = _intake(True, Keyring(list(KEYRING)))
    msgs = _stream(36) * 2
    begun = intake.start(msgs)
    assert begun is not None
    if after_the_pass:
        until(lambda: begun._pending.ready, 10)
    nv = intake._native_verify
    assert isinstance(nv, NativeVerify)
    _, other = signing_pair("k1")
    nv.checker.set_keys({kid: vk.public.public_bytes_raw() for kid, vk in other._table.items()})
    rows = begun.rows()
    assert rows is not None
    assert all(row is not None and row[9] is None and row[10] is None for row in rows)


def test_a_started_batch_never_finished_is_dropped_safely() -> None:
    intake = _intake(True, Keyring(list(KEYRING)))
    for _ in range(20):
        assert intake.start(_stream(36) * 2) is not None  # dropped unfinished: waits for its pass
    rows = intake.prepare(_stream(36))
    assert rows is not None
    assert all(row is not None for row in rows)
