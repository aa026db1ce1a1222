"""Signer and Verifier end to end: the issue's done criteria, verdicts, caching, modes."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govbus.signing import (
    KeyEntry,
    Keyring,
    KeyStatus,
    SequenceTracker,
    Signer,
    SigningError,
    SigningKey,
    SigningSettings,
    SignInput,
    SignInputError,
    Verdict,
    VerdictCode,
    Verifier,
    write_private_key,
)
from govbus.signing._keyring import from_ms

T_SIGN = 1764169445123  # signing time used by the fixed clock
Headers = list[tuple[str, bytes | None]]
Record = tuple[bytes, bytes | None, Headers, int]

SIGNED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_time", "govbus_sig_stream", "govbus_sig_seq")


def inputs(n: int, partitions: int = 3, tag: str = "") -> list[SignInput]:
    return [
        SignInput(
            value=b"\xc3\x01" + f"event {tag}{i} ".encode() * 5,
            key=None if i % 7 == 3 else f"agent-{i % 4}".encode(),
            ce_id=f"evt-{tag}{i}",
            ce_type="io.agt.policy_violation",
            ce_source="urn:agt:kernel/k\u00e9",
            ce_time=None if i % 5 == 4 else f"2025-11-26T15:04:05.{i:06d}Z",
            partition=i % partitions,
        )
        for i in range(n)
    ]


def records(ins: Sequence[SignInput], signed: Sequence[Sequence[tuple[str, bytes]]]) -> list[Record]:
    out: list[Record] = []
    for r, sig in zip(ins, signed, strict=True):
        headers: Headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", r.ce_id.encode()),
            ("ce_source", r.ce_source.encode()),
            ("ce_type", r.ce_type.encode()),
        ]
        if r.ce_time is not None:
            headers.append(("ce_time", r.ce_time.encode()))
        headers += [("content-type", b"application/avro"), *sig]
        out.append((r.value, r.key, headers, r.partition))
    return out


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("k-active")


@pytest.fixture
def keyring(key: SigningKey) -> Keyring:
    return Keyring([KeyEntry(key.kid, key.public_bytes)])


def signer_for(key: SigningKey, **kw: object) -> Signer:
    return Signer(key, clock_ms=lambda: T_SIGN, **kw)  # type: ignore[arg-type]


def batch(key: SigningKey, n: int = 40, **kw: object) -> list[Record]:
    ins = inputs(n)
    return records(ins, signer_for(key, **kw).sign_batch(ins))


def verify(v: Verifier, rec: Record) -> Verdict:
    value, k, headers, partition = rec
    return v.verify(value, k, headers, partition)


def with_header(rec: Record, name: str, value: bytes | None) -> Record:
    return (rec[0], rec[1], [(n, value if n == name else v) for n, v in rec[2]], rec[3])


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    raw = bytearray(data)
    raw[pos] ^= 1 << bit
    return bytes(raw)


def header(rec: Record, name: str) -> bytes:
    value = dict(rec[2])[name]
    assert value is not None
    return value


# --- valid records ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 40, 257])
def test_every_record_verifies_in_any_order(key: SigningKey, keyring: Keyring, n: int) -> None:
    recs = batch(key, n)
    v = Verifier(keyring)
    assert [verify(v, r).code for r in recs] == [VerdictCode.VALID] * n
    assert v.signature_checks == 1
    shuffled = list(recs)
    random.Random(n).shuffle(shuffled)
    v2 = Verifier(keyring, track_sequences=False)
    assert all(verify(v2, r).code is VerdictCode.VALID for r in shuffled)
    assert v2.signature_checks == 1
    assert v2.cache_hits == n - 1


def test_one_signature_check_per_batch(key: SigningKey, keyring: Keyring) -> None:
    signer = signer_for(key)
    recs: list[Record] = []
    for b in range(5):
        ins = inputs(50, tag=f"b{b}-")
        recs += records(ins, signer.sign_batch(ins))
    v = Verifier(keyring)
    assert all(verify(v, r).deliver for r in recs)
    assert v.signature_checks == 5
    assert v.cache_hits == 245


def test_headers_and_their_encodings(key: SigningKey) -> None:
    signer = signer_for(key, stream_id=b"S" * 16)
    out = signer.sign_batch(inputs(5))
    names = [n for n, _ in out[0]]
    assert names == ["govbus_sig_kid", "govbus_sig_alg", "govbus_sig_stream", "govbus_sig_seq",
                     "govbus_sig_proof", "govbus_sig"]  # fmt: skip
    h = dict(out[4])
    assert h["govbus_sig_kid"] == b"k-active"
    assert h["govbus_sig_alg"] == b"ed25519-merkle-v1"
    assert h["govbus_sig_stream"] == b"S" * 16
    assert h["govbus_sig_seq"] == (1).to_bytes(4, "big") + (1).to_bytes(8, "big")  # record 4: partition 1, 2nd
    proof = h["govbus_sig_proof"]
    assert proof[:8] == T_SIGN.to_bytes(8, "big")
    assert proof[8:12] == (5).to_bytes(4, "big")
    assert proof[12:16] == (4).to_bytes(4, "big")
    assert len(proof) == 16 + 32  # leaf 4 of 5: promoted twice, one sibling
    assert len(h["govbus_sig"]) == 64
    assert all(dict(o)["govbus_sig"] == h["govbus_sig"] for o in out)


def test_sequence_numbers_are_per_partition_and_continue(key: SigningKey) -> None:
    signer = signer_for(key)
    seqs = [dict(h)["govbus_sig_seq"] for h in signer.sign_batch(inputs(6, partitions=2))]
    assert [(int.from_bytes(s[:4], "big"), int.from_bytes(s[4:], "big")) for s in seqs] == [
        (0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2),
    ]  # fmt: skip
    assert signer.next_sequences() == {0: 3, 1: 3}
    resumed = Signer(key, stream_id=signer.stream_id, next_sequences=signer.next_sequences())
    assert dict(resumed.sign(inputs(1)[0]))["govbus_sig_seq"] == (0).to_bytes(4, "big") + (3).to_bytes(8, "big")


def test_streams_are_random_per_signer(key: SigningKey) -> None:
    a, b = Signer(key), Signer(key)
    assert a.stream_id != b.stream_id
    assert len(a.stream_id) == 16
    assert repr(a).startswith("Signer(kid='k-active', mode='batch', stream=")


# --- done criteria: tampering -------------------------------------------------------------------


def test_flipping_any_byte_of_value_or_signed_header_is_a_bad_signature(key: SigningKey, keyring: Keyring) -> None:
    recs = batch(key, 12)
    target = recs[5]
    warm = Verifier(keyring, track_sequences=False)
    for r in recs[:5]:
        assert verify(warm, r).code is VerdictCode.VALID  # so the batch is cached for `warm`
    cases: list[Record] = []
    value, k, headers, partition = target
    cases += [(flip(value, i), k, headers, partition) for i in range(len(value))]
    assert k is not None
    cases += [(value, flip(k, i), headers, partition) for i in range(len(k))]
    cases += [(value, None, headers, partition), (value, k + b"x", headers, partition)]
    for name in (*SIGNED_HEADERS, "govbus_sig_proof", "govbus_sig"):
        raw = header(target, name)
        cases += [with_header(target, name, flip(raw, i, i % 8)) for i in range(len(raw))]
    cases.append((value, k, [(n, v) for n, v in headers if n != "ce_time"], partition))
    assert len(cases) > 300
    for case in cases:
        cold = verify(Verifier(keyring, track_sequences=False), case)
        assert cold.code is VerdictCode.BAD_SIGNATURE, cold
        assert verify(warm, case).code is VerdictCode.BAD_SIGNATURE
    assert verify(warm, target).code is VerdictCode.VALID  # the cache was not disturbed


def test_flipping_the_kid_or_the_suite_is_rejected(key: SigningKey, keyring: Keyring) -> None:
    other = SigningKey.generate("k-activf")  # one bit away from k-active
    keyring.add(KeyEntry(other.kid, other.public_bytes))
    rec = batch(key, 3)[1]
    kid = header(rec, "govbus_sig_kid")
    verdicts = {
        verify(Verifier(keyring), with_header(rec, "govbus_sig_kid", flip(kid, i))).code for i in range(len(kid))
    }
    assert verdicts <= {VerdictCode.UNKNOWN_KID, VerdictCode.BAD_SIGNATURE}
    assert verify(Verifier(keyring), with_header(rec, "govbus_sig_kid", b"k-activf")).code is VerdictCode.BAD_SIGNATURE
    alg = header(rec, "govbus_sig_alg")
    for i in range(len(alg)):
        v = verify(Verifier(keyring), with_header(rec, "govbus_sig_alg", flip(alg, i)))
        assert v.code is VerdictCode.MALFORMED
        assert "unsupported signature suite" in v.detail


def test_record_read_from_another_partition_is_a_bad_signature(key: SigningKey, keyring: Keyring) -> None:
    value, k, headers, partition = batch(key, 3)[1]
    v = Verifier(keyring).verify(value, k, headers, partition + 1)
    assert v.code is VerdictCode.BAD_SIGNATURE
    assert f"signed for partition {partition} but read from partition {partition + 1}" in v.detail


def test_signature_copied_onto_another_record(key: SigningKey, keyring: Keyring) -> None:
    recs = batch(key, 8)
    v = Verifier(keyring, track_sequences=False)
    assert verify(v, recs[0]).code is VerdictCode.VALID
    forged = (b"forged", recs[1][1], recs[1][2], recs[1][3])
    assert verify(v, forged).code is VerdictCode.BAD_SIGNATURE
    # The proof of one record with the content of another.
    swapped = (recs[2][0], recs[2][1], [*recs[2][2][:-2], ("govbus_sig_proof", header(recs[3], "govbus_sig_proof")),
               recs[2][2][-1]], recs[2][3])  # fmt: skip
    assert verify(v, swapped).code is VerdictCode.BAD_SIGNATURE


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 90), data=st.data())
def test_warm_and_cold_verifiers_always_agree(key: SigningKey, keyring: Keyring, n: int, data: st.DataObject) -> None:
    """The batch cache's path sharing must never change a verdict, whatever the order and tampering."""
    recs = batch(key, n)
    order = data.draw(st.permutations(range(n)))
    warm = Verifier(keyring, track_sequences=False, root_cache_size=data.draw(st.sampled_from([1, 2, 64])))
    for i in order:
        rec = recs[i]
        if data.draw(st.booleans()):
            name = data.draw(st.sampled_from(["value", "govbus_sig_proof", "ce_id", "govbus_sig_seq"]))
            if name == "value":
                rec = (flip(rec[0], data.draw(st.integers(0, len(rec[0]) - 1))), rec[1], rec[2], rec[3])
            else:
                raw = header(rec, name)
                rec = with_header(rec, name, flip(raw, data.draw(st.integers(0, len(raw) - 1))))
            expected = VerdictCode.BAD_SIGNATURE
        else:
            expected = VerdictCode.VALID
        cold = verify(Verifier(keyring, track_sequences=False), rec).code
        assert cold is expected
        assert verify(warm, rec).code is expected


# --- done criteria: gaps, replays, reordering --------------------------------------------------


def test_dropped_record_is_a_gap_replayed_is_a_replay(key: SigningKey, keyring: Keyring) -> None:
    recs = [r for r in batch(key, 30) if r[3] == 0]  # one partition, in offset order
    v = Verifier(keyring)
    got = [verify(v, r) for i, r in enumerate(recs) if i != 4]
    assert [g.code for g in got[:4]] == [VerdictCode.VALID] * 4
    assert got[4].code is VerdictCode.GAP
    assert got[4].missing == (4, 4)
    assert got[4].deliver
    assert all(g.code is VerdictCode.VALID for g in got[5:])
    replay = verify(v, recs[2])
    assert replay.code is VerdictCode.REPLAY
    assert not replay.deliver
    late = verify(v, recs[4])
    assert late.code is VerdictCode.REORDERED
    assert late.deliver
    assert verify(v, recs[4]).code is VerdictCode.REPLAY


def test_re_signed_event_is_a_replay_by_event_id(key: SigningKey, keyring: Keyring) -> None:
    ins = inputs(3, partitions=1)
    first = records(ins, signer_for(key).sign_batch(ins))
    again = records(ins[:1], signer_for(key).sign_batch(ins[:1]))  # a restarted producer re-emits evt-0
    v = Verifier(keyring)
    assert [verify(v, r).code for r in first] == [VerdictCode.VALID] * 3
    assert verify(v, again[0]).code is VerdictCode.REPLAY


def test_forged_records_do_not_move_sequence_state(key: SigningKey, keyring: Keyring) -> None:
    recs = [r for r in batch(key, 12) if r[3] == 0]
    v = Verifier(keyring)
    assert verify(v, recs[0]).code is VerdictCode.VALID
    assert verify(v, (b"x", recs[1][1], recs[1][2], recs[1][3])).code is VerdictCode.BAD_SIGNATURE
    assert verify(v, recs[1]).code is VerdictCode.VALID  # not a replay: the forgery left no trace


def test_custom_tracker_and_disabled_tracking(key: SigningKey, keyring: Keyring) -> None:
    tracker = SequenceTracker(strict_start=True)
    v = Verifier(keyring, tracker=tracker)
    assert v.tracker is tracker
    later = [r for r in batch(key, 9) if r[3] == 0][1]
    assert verify(v, later).code is VerdictCode.GAP
    off = Verifier(keyring, track_sequences=False)
    assert off.tracker is None
    assert verify(off, later).code is VerdictCode.VALID
    assert verify(off, later).code is VerdictCode.VALID


# --- done criteria: keys --------------------------------------------------------------------------


def test_retired_key_still_verifies(key: SigningKey, keyring: Keyring) -> None:
    recs = batch(key, 4)
    keyring.retire(key.kid, at=from_ms(T_SIGN - 3_600_000))
    assert keyring[key.kid].status is KeyStatus.RETIRED
    v = Verifier(keyring)
    assert all(verify(v, r).code is VerdictCode.VALID for r in recs)


def test_revoked_key_rejects_from_its_revocation_time(key: SigningKey, keyring: Keyring) -> None:
    recs = batch(key, 4)
    keyring.revoke(key.kid, at=from_ms(T_SIGN + 1))  # revoked 1 ms after signing: still valid
    assert verify(Verifier(keyring), recs[0]).code is VerdictCode.VALID
    keyring.revoke(key.kid, at=from_ms(T_SIGN))  # signed at the revocation time: rejected
    v = Verifier(keyring)
    got = verify(v, recs[0])
    assert got.code is VerdictCode.REVOKED_KID
    assert not got.authentic
    assert "was revoked at 2025-11-26T15:04:05.123000+00:00" in got.detail


def test_revocation_applies_to_batches_already_cached(key: SigningKey, keyring: Keyring) -> None:
    recs = batch(key, 6)
    v = Verifier(keyring)
    assert verify(v, recs[0]).code is VerdictCode.VALID
    keyring.revoke(key.kid, at=from_ms(T_SIGN - 1))
    assert verify(v, recs[1]).code is VerdictCode.REVOKED_KID


def test_broker_append_time_bounds_a_backdated_signature(key: SigningKey, keyring: Keyring) -> None:
    value, k, headers, partition = batch(key, 2)[0]
    keyring.revoke(key.kid, at=from_ms(T_SIGN + 1000))
    v = Verifier(keyring, track_sequences=False)
    assert v.verify(value, k, headers, partition, broker_time_ms=T_SIGN + 999).code is VerdictCode.VALID
    got = v.verify(value, k, headers, partition, broker_time_ms=T_SIGN + 1000)
    assert got.code is VerdictCode.REVOKED_KID
    assert "appended by the broker" in got.detail


def test_unknown_kid_is_rejected(key: SigningKey) -> None:
    stranger = SigningKey.generate("stranger")
    recs = batch(stranger, 3)
    got = verify(Verifier(Keyring([KeyEntry(key.kid, key.public_bytes)])), recs[0])
    assert got.code is VerdictCode.UNKNOWN_KID
    assert "'stranger'" in got.detail


@pytest.mark.parametrize(
    ("not_before", "not_after", "fragment"),
    [
        (T_SIGN + 1, None, "before its not_before"),
        (None, T_SIGN, "at or after its not_after"),
        (None, T_SIGN - 1, "at or after its not_after"),
    ],
)
def test_signed_outside_the_validity_window_is_expired(
    key: SigningKey, not_before: int | None, not_after: int | None, fragment: str
) -> None:
    entry = KeyEntry(
        key.kid,
        key.public_bytes,
        not_before=None if not_before is None else from_ms(not_before),
        not_after=None if not_after is None else from_ms(not_after),
    )
    got = verify(Verifier(Keyring([entry])), batch(key, 2)[0])
    assert got.code is VerdictCode.EXPIRED_KID
    assert fragment in got.detail


def test_validity_window_that_covers_the_signing_time(key: SigningKey) -> None:
    entry = KeyEntry(key.kid, key.public_bytes, not_before=from_ms(T_SIGN), not_after=from_ms(T_SIGN + 1))
    assert verify(Verifier(Keyring([entry])), batch(key, 2)[0]).code is VerdictCode.VALID


def test_replace_keyring_forgets_cached_batches(key: SigningKey, keyring: Keyring) -> None:
    recs = batch(key, 4)
    v = Verifier(keyring, track_sequences=False)
    verify(v, recs[0])
    v.replace_keyring(Keyring([KeyEntry(key.kid, SigningKey.generate().public_bytes)]))  # kid reused!
    assert v.keyring is not keyring
    assert verify(v, recs[1]).code is VerdictCode.BAD_SIGNATURE


# --- malformed -----------------------------------------------------------------------------------


def test_malformed_records(key: SigningKey, keyring: Keyring) -> None:
    rec = batch(key, 3)[1]
    value, k, headers, partition = rec
    v = Verifier(keyring)

    def code(h: Sequence[tuple[str, bytes | None]] | None, val: bytes | None = value) -> tuple[VerdictCode, str]:
        got = v.verify(val, k, h, partition)
        return got.code, got.detail

    assert code(None) == (VerdictCode.MALFORMED, "record is not signed (no headers)")
    assert code([]) == (VerdictCode.MALFORMED, "record is not signed (no headers)")
    assert code([("ce_id", b"x")]) == (VerdictCode.MALFORMED, "record is not signed (no govbus_sig headers)")
    assert code([(1, 2, 3)])[0] is VerdictCode.MALFORMED  # type: ignore[list-item]
    missing = [(n, x) for n, x in headers if n != "govbus_sig_proof"]
    assert code(missing) == (VerdictCode.MALFORMED, "missing signature header(s): govbus_sig_proof")
    assert code(with_header(rec, "govbus_sig", None)[2])[0] is VerdictCode.MALFORMED  # null value = absent
    for name in ("ce_id", "ce_time", "govbus_sig_seq", "govbus_sig"):
        dup = [*headers, (name, header(rec, name) if name != "ce_time" else b"2030-01-01T00:00:00Z")]
        assert code(dup) == (VerdictCode.MALFORMED, f"header {name!r} appears more than once")
    # Duplicates of headers that are not signed are harmless.
    assert code([*headers, ("traceparent", b"a"), ("traceparent", b"b")])[0] is VerdictCode.VALID
    for name, size in (("govbus_sig_seq", 11), ("govbus_sig", 63), ("govbus_sig_proof", 15),
                       ("govbus_sig_proof", 47), ("govbus_sig_proof", 16 + 17 * 32), ("govbus_sig_stream", 0),
                       ("govbus_sig_stream", 65)):  # fmt: skip
        got = code(with_header(rec, name, bytes(size))[2])
        assert got[0] is VerdictCode.MALFORMED, (name, size)
        assert name in got[1], (name, size)
    assert code(headers, None) == (VerdictCode.MALFORMED, "record has no value (tombstone); only events are signed")


def test_values_of_the_wrong_type_are_malformed_not_exceptions(key: SigningKey, keyring: Keyring) -> None:
    value, k, headers, partition = batch(key, 2)[0]
    as_text = [(n, v.decode("latin-1") if n == "ce_id" and v else v) for n, v in headers]
    v = Verifier(keyring)
    assert v.verify(value, k, as_text, partition).code is VerdictCode.MALFORMED  # type: ignore[arg-type]
    assert v.verify(value, "agent", headers, partition).code is VerdictCode.MALFORMED  # type: ignore[arg-type]
    assert v.verify(value, k, headers, "0").code is VerdictCode.BAD_SIGNATURE  # type: ignore[arg-type]


def test_oversized_tree_claim_is_a_bad_signature(key: SigningKey, keyring: Keyring) -> None:
    rec = batch(key, 3)[0]
    proof = bytearray(header(rec, "govbus_sig_proof"))
    proof[8:12] = (1 << 17).to_bytes(4, "big")
    assert (
        verify(Verifier(keyring), with_header(rec, "govbus_sig_proof", bytes(proof))).code is VerdictCode.BAD_SIGNATURE
    )


def test_detail_strings_keep_attacker_bytes_inert(key: SigningKey, keyring: Keyring) -> None:
    rec = with_header(batch(key, 1)[0], "govbus_sig_kid", b"evil\n\x1b[31m" + b"x" * 200)
    got = verify(Verifier(keyring), rec)
    assert got.code is VerdictCode.UNKNOWN_KID
    assert "\n" not in got.detail
    assert "\x1b" not in got.detail
    assert len(got.detail) < 150


# --- per-event mode --------------------------------------------------------------------------------


def test_per_event_mode_signs_each_record(key: SigningKey, keyring: Keyring) -> None:
    recs = batch(key, 5, mode="per-event")
    sigs = {header(r, "govbus_sig") for r in recs}
    assert len(sigs) == 5
    assert all(len(header(r, "govbus_sig_proof")) == 16 for r in recs)
    v = Verifier(keyring)
    assert all(verify(v, r).code is VerdictCode.VALID for r in recs)
    assert v.signature_checks == 5
    assert len(v._cache) == 0
    tampered = (flip(recs[2][0], 0), recs[2][1], recs[2][2], recs[2][3])
    assert verify(Verifier(keyring), tampered).code is VerdictCode.BAD_SIGNATURE


def test_batch_of_one_in_batch_mode_equals_per_event(key: SigningKey, keyring: Keyring) -> None:
    a = signer_for(key, stream_id=b"s").sign(inputs(1)[0])
    b = signer_for(key, stream_id=b"s", mode="per-event").sign(inputs(1)[0])
    assert a == b


# --- signer input and configuration -----------------------------------------------------------------


def test_bad_input_names_the_record_and_consumes_no_numbers(key: SigningKey) -> None:
    signer = signer_for(key)
    good = inputs(4)
    bad_cases = [
        (good[2]._replace(value="text"), "value must be bytes"),  # type: ignore[arg-type]
        (good[2]._replace(key="text"), "key must be bytes or None"),  # type: ignore[arg-type]
        (good[2]._replace(ce_id=None), "ce_id must be a str"),  # type: ignore[arg-type]
        (good[2]._replace(ce_source="\ud800"), "ce_source is not encodable as UTF-8"),
        (good[2]._replace(partition=-1), "partition must be an int"),
        ((b"v",), "is not a SignInput"),
    ]
    for bad, message in bad_cases:
        with pytest.raises(SignInputError, match=message) as info:
            signer.sign_batch([good[0], good[1], bad, good[3]])  # type: ignore[list-item]
        assert info.value.index == 2
    assert signer.next_sequences() == {}
    assert signer.sign_batch([]) == []


def test_batches_larger_than_the_tree_limit_are_split(
    key: SigningKey, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("govbus.signing._signer.MAX_TREE_SIZE", 4)
    ins = inputs(10)
    recs = records(ins, signer_for(key).sign_batch(ins))
    assert len({header(r, "govbus_sig") for r in recs}) == 3
    v = Verifier(keyring)
    assert all(verify(v, r).code is VerdictCode.VALID for r in recs)


def test_signer_rejects_bad_configuration(key: SigningKey) -> None:
    with pytest.raises(SigningError, match="unknown signing mode"):
        Signer(key, mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(SigningError, match="stream id is 1-64 bytes"):
        Signer(key, stream_id=b"")
    with pytest.raises(SigningError, match="invalid next sequence"):
        Signer(key, next_sequences={0: -1})
    with pytest.raises(SigningError, match="needs a SigningKey"):
        Signer(b"secret")  # type: ignore[arg-type]


def test_from_settings_fails_closed(tmp_path: Path, key: SigningKey) -> None:
    path = write_private_key(key, tmp_path / "k-active.pem")
    ring_path = tmp_path / "keyring.json"
    ring = Keyring([KeyEntry(key.kid, key.public_bytes)])
    ring.save(ring_path)
    s = SigningSettings(private_key_path=path, keyring_path=ring_path, mode="per-event")
    signer = Signer.from_settings(s)
    assert signer.kid == "k-active"
    assert signer.mode == "per-event"
    verifier = Verifier.from_settings(s)
    ins = inputs(2)
    assert all(verify(verifier, r).deliver for r in records(ins, signer.sign_batch(ins)))

    with pytest.raises(SigningError, match="private_key_path is not set"):
        Signer.from_settings(SigningSettings())
    with pytest.raises(SigningError, match="keyring_path is not set"):
        Verifier.from_settings(SigningSettings())
    with pytest.raises(SigningError, match="not in the keyring"):
        Signer.from_settings(s, keyring=Keyring())
    with pytest.raises(SigningError, match="different public key"):
        Signer.from_settings(s, keyring=Keyring([KeyEntry(key.kid, SigningKey.generate().public_bytes)]))
    ring.retire(key.kid)
    with pytest.raises(SigningError, match="is retired; sign with an active key"):
        Signer.from_settings(s, keyring=ring)
    later = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(SigningError, match="outside its validity window"):
        Signer.from_settings(s, keyring=Keyring([KeyEntry(key.kid, key.public_bytes, not_before=later)]))
    assert Signer.from_settings(SigningSettings(private_key_path=path)).kid == "k-active"  # no keyring: no check


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verifier_never_raises_and_cache_never_matters(key: SigningKey, keyring: Keyring, data: st.DataObject) -> None:
    """Arbitrary damage to any header, in any order, warm or cold: a verdict, never an exception."""
    recs = batch(key, data.draw(st.integers(1, 20)))
    warm = Verifier(keyring, track_sequences=False)
    for _ in range(data.draw(st.integers(1, 12))):
        value, k, headers, partition = recs[data.draw(st.integers(0, len(recs) - 1))]
        headers = list(headers)
        for _ in range(data.draw(st.integers(0, 3))):
            i = data.draw(st.integers(0, len(headers) - 1))
            name, raw = headers[i]
            action = data.draw(st.sampled_from(["flip", "cut", "grow", "drop", "null", "random", "dup"]))
            if action == "flip" and raw:
                raw = flip(raw, data.draw(st.integers(0, len(raw) - 1)), data.draw(st.integers(0, 7)))
            elif action == "cut" and raw:
                raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
            elif action == "grow":
                raw = (raw or b"") + data.draw(st.binary(min_size=1, max_size=40))
            elif action == "random":
                raw = data.draw(st.binary(max_size=80))
            elif action == "null":
                raw = None
            if action == "drop":
                del headers[i]
            elif action == "dup":
                headers.append((name, raw))
            else:
                headers[i] = (name, raw)
            if not headers:
                break
        part = data.draw(st.sampled_from([partition, partition, partition + 1]))
        cold = Verifier(keyring, track_sequences=False).verify(value, k, headers, part)
        assert warm.verify(value, k, headers, part) == cold
