"""Generate the test vectors of docs/signing.md (suite ed25519-merkle-v1) into signing_v1.json.

    python tests/unit/vectors/make_signing_vectors.py          # (re)write the file
    python tests/unit/vectors/make_signing_vectors.py --check  # exit 1 if the file is stale

Everything is deterministic: fixed keys (the RFC 8032 §7.1 TEST 1 and TEST 2 secret keys, public
test keys, never use them for anything else), a fixed stream id and signing time, and Ed25519
signatures are deterministic. tests/unit/test_signing_vectors.py checks the committed file
against this script and re-verifies every vector with an implementation written from the spec.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from govbus.signing import KeyEntry, Keyring, KeyringError, KeyStatus, Signer, SigningKey, SignInput, Verifier
from govbus.signing._canonical import batch_message, event_bytes, leaf_hash
from govbus.signing._keyring import from_ms
from govbus.signing._merkle import build

OUT = Path(__file__).with_name("signing_v1.json")

SEED_1 = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SEED_2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
STREAM = bytes.fromhex("0123456789abcdeffedcba9876543210")
SIGNED_AT_MS = 1764169445123  # 2025-11-26T15:04:05.123Z

Header = tuple[str, bytes | None]


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _inputs() -> list[SignInput]:
    value = bytes.fromhex("c301") + bytes(range(8)) + b"governance event body"
    return [
        SignInput(value, b"agent-1", "evt-0001", "io.agt.policy_violation", "urn:agt:kernel/k1",
                  "2025-11-26T15:04:05.000001Z", 0),
        SignInput(value + b"\x00", None, "evt-0002", "io.agt.tool_blocked", "urn:agt:kernel/k1",
                  "2025-11-26T15:04:05.000002Z", 1),
        SignInput(b"", b"", "evt-0003", "io.agt.escalation", "urn:agt:kernel/k\u00e9\u4e2d", None, 0),
        SignInput(value, b"agent-2", "evt-0004", "io.agt.anomaly", "urn:agt:kernel/k1",
                  "2025-11-26T15:04:05.000004Z", 2),
        SignInput(value[::-1], b"agent-1", "evt-0005", "io.agt.identity_decision", "urn:agt:kernel/k1",
                  "2025-11-26T15:04:05.000005Z", 0),
    ]  # fmt: skip


def _ce_headers(r: SignInput) -> list[Header]:
    headers: list[Header] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", r.ce_id.encode()),
        ("ce_source", r.ce_source.encode()),
        ("ce_type", r.ce_type.encode()),
    ]
    if r.ce_time is not None:
        headers.append(("ce_time", r.ce_time.encode()))
    headers.append(("content-type", b"application/avro"))
    return headers


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(record))
    return copied


def _record(value: bytes, key: bytes | None, headers: list[Header], partition: int) -> dict[str, Any]:
    return {
        "value": value.hex(),
        "key": _hex(key),
        "partition": partition,
        "headers": [[n, _hex(v)] for n, v in headers],
    }


def _signed(signer: Signer, inputs: list[SignInput]) -> list[dict[str, Any]]:
    out = []
    for r, sig_headers in zip(inputs, signer.sign_batch(inputs), strict=True):
        out.append(_record(r.value, r.key, _ce_headers(r) + list(sig_headers), r.partition))
    return out


def _flip(record: dict[str, Any], header: str | None, byte: int = 0) -> dict[str, Any]:
    """A copy of ``record`` with one bit flipped in the value (header None) or in a header."""
    rec = _copy(record)
    if header is None:
        raw = bytearray.fromhex(rec["value"])
        raw[byte] ^= 0x01
        rec["value"] = raw.hex()
        return rec
    for pair in rec["headers"]:
        if pair[0] == header:
            raw = bytearray.fromhex(pair[1])
            raw[byte] ^= 0x01
            pair[1] = raw.hex()
    return rec


def _without(record: dict[str, Any], header: str) -> dict[str, Any]:
    rec = _copy(record)
    rec["headers"] = [p for p in rec["headers"] if p[0] != header]
    return rec


def build_vectors() -> dict[str, Any]:
    key1 = SigningKey(Ed25519PrivateKey.from_private_bytes(SEED_1), "test-key-1")
    key2 = SigningKey(Ed25519PrivateKey.from_private_bytes(SEED_2), "test-key-2")
    unknown = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(32)), "not-in-keyring")
    keyring = Keyring(
        [
            KeyEntry("test-key-1", key1.public_bytes, KeyStatus.ACTIVE, not_before=from_ms(1735689600000)),
            KeyEntry("test-key-2", key2.public_bytes, KeyStatus.REVOKED, revoked_at=from_ms(SIGNED_AT_MS)),
        ]
    )

    # Merkle trees of 1..9 leaves (leaf hashes of the one-byte events 0x00, 0x01, ...).
    merkle = []
    for size in range(1, 10):
        leaves = [leaf_hash(bytes([i])) for i in range(size)]
        root, paths = build(leaves)
        merkle.append(
            {
                "size": size,
                "leaf_hashes": [x.hex() for x in leaves],
                "root": root.hex(),
                "paths": [[p[i : i + 32].hex() for i in range(0, len(p), 32)] for p in paths],
            }
        )

    inputs = _inputs()
    signer = Signer(key1, stream_id=STREAM, clock_ms=lambda: SIGNED_AT_MS)
    records = _signed(signer, inputs)
    kid = key1.kid.encode()
    layout: list[dict[str, Any]] = []
    for seq_by_part, r in zip(_sequences(inputs), inputs, strict=True):
        ev = event_bytes(
            kid=kid,
            stream=STREAM,
            partition=r.partition,
            sequence=seq_by_part,
            ce_id=r.ce_id.encode(),
            ce_type=r.ce_type.encode(),
            ce_source=r.ce_source.encode(),
            ce_time=None if r.ce_time is None else r.ce_time.encode(),
            key=r.key,
            value=r.value,
        )
        layout.append({"sequence": seq_by_part, "event_bytes": ev.hex(), "leaf_hash": leaf_hash(ev).hex()})
    root, _ = build([bytes.fromhex(x["leaf_hash"]) for x in layout])
    message = batch_message(kid=kid, signed_at_ms=SIGNED_AT_MS, tree_size=len(inputs), root=root)

    per_event_signer = Signer(key1, mode="per-event", stream_id=b"per-event", clock_ms=lambda: SIGNED_AT_MS)
    per_event = _signed(per_event_signer, inputs[:2])
    revoked_signer = Signer(key2, stream_id=b"revoked", clock_ms=lambda: SIGNED_AT_MS)
    before_revocation = Signer(key2, stream_id=b"revoked-before", clock_ms=lambda: SIGNED_AT_MS - 1)
    unknown_signer = Signer(unknown, stream_id=b"unknown", clock_ms=lambda: SIGNED_AT_MS)
    too_early = Signer(key1, stream_id=b"early", clock_ms=lambda: 1735689600000 - 1)

    r0 = records[0]
    cases: list[tuple[str, dict[str, Any], str]] = [
        *((f"batch record {i}", rec, "valid") for i, rec in enumerate(records)),
        *((f"per-event record {i}", rec, "valid") for i, rec in enumerate(per_event)),
        ("value: first byte flipped", _flip(r0, None, 0), "bad-signature"),
        ("value: last byte flipped", _flip(r0, None, -1), "bad-signature"),
        ("record key flipped", {**r0, "key": _flip_hex(r0["key"])}, "bad-signature"),
        ("record key dropped (null)", {**r0, "key": None}, "bad-signature"),
        ("ce_id flipped", _flip(r0, "ce_id"), "bad-signature"),
        ("ce_type flipped", _flip(r0, "ce_type"), "bad-signature"),
        ("ce_source flipped", _flip(r0, "ce_source"), "bad-signature"),
        ("ce_time flipped", _flip(r0, "ce_time", 3), "bad-signature"),
        ("ce_time removed", _without(r0, "ce_time"), "bad-signature"),
        ("stream id flipped", _flip(r0, "govbus_sig_stream"), "bad-signature"),
        ("sequence flipped", _flip(r0, "govbus_sig_seq", 11), "bad-signature"),
        ("partition in seq header flipped", _flip(r0, "govbus_sig_seq", 3), "bad-signature"),
        ("read from another partition", {**r0, "partition": 1}, "bad-signature"),
        ("signed_at flipped", _flip(r0, "govbus_sig_proof", 7), "bad-signature"),
        ("tree size flipped", _flip(r0, "govbus_sig_proof", 11), "bad-signature"),
        ("leaf index flipped", _flip(r0, "govbus_sig_proof", 15), "bad-signature"),
        ("proof hash flipped", _flip(r0, "govbus_sig_proof", 40), "bad-signature"),
        ("signature flipped", _flip(r0, "govbus_sig", 5), "bad-signature"),
        ("unsigned content-type header changed (not covered)", _flip(r0, "content-type"), "valid"),
        ("kid changed to an unknown kid", _flip(r0, "govbus_sig_kid"), "unknown-kid"),
        ("kid of another keyring key", _set(r0, "govbus_sig_kid", b"test-key-2"), "bad-signature"),
        ("suite name changed", _flip(r0, "govbus_sig_alg"), "malformed"),
        ("signature header missing", _without(r0, "govbus_sig"), "malformed"),
        ("signature truncated", _set(r0, "govbus_sig", bytes(63)), "malformed"),
        ("proof not 16 + 32k bytes", _set(r0, "govbus_sig_proof", bytes(17)), "malformed"),
        ("duplicate ce_id header", _dup(r0, "ce_id", b"evt-9999"), "malformed"),
        ("no signature headers", _record(bytes(1), None, [("ce_id", b"x")], 0), "malformed"),
        ("signed by an unknown key", _signed(unknown_signer, inputs[:1])[0], "unknown-kid"),
        ("revoked key, signed at revocation time", _signed(revoked_signer, inputs[:2])[0], "revoked-kid"),
        ("revoked key, signed 1 ms before revocation", _signed(before_revocation, inputs[:2])[0], "valid"),
        ("signed before the key's not_before", _signed(too_early, inputs[:2])[0], "expired-kid"),
        # §2/§8.2 step 1: a copy with a null value counts as an occurrence.
        ("ce_id header repeated with a null value", _dup(r0, "ce_id", None), "malformed"),
        ("govbus_sig header repeated with a null value", _dup(r0, "govbus_sig", None), "malformed"),
        ("null govbus_sig header before the real one", _dup_first(r0, "govbus_sig", None), "malformed"),
    ]

    # Every vector must get its expected verdict from the library (signature checks only).
    for name, rec, expect in cases:
        verifier = Verifier(keyring, track_sequences=False)
        got = verifier.verify(
            bytes.fromhex(rec["value"]),
            None if rec["key"] is None else bytes.fromhex(rec["key"]),
            [(n, None if v is None else bytes.fromhex(v)) for n, v in rec["headers"]],
            rec["partition"],
        )
        if got.code.value != expect:
            raise AssertionError(f"vector {name!r}: expected {expect}, library says {got}")

    return {
        "suite": "ed25519-merkle-v1",
        "spec": "docs/signing.md",
        "generator": "tests/unit/vectors/make_signing_vectors.py",
        "note": "bytes are lowercase hex; header values null mean the header is present with a null value",
        "keyring": keyring.to_jwks(),
        "private_keys_for_testing_only": {"test-key-1": SEED_1.hex(), "test-key-2": SEED_2.hex()},
        "merkle": merkle,
        "batch": {
            "kid": key1.kid,
            "stream": STREAM.hex(),
            "signed_at_ms": SIGNED_AT_MS,
            "inputs": [
                {
                    "partition": r.partition,
                    "value": r.value.hex(),
                    "key": _hex(r.key),
                    "ce_id": r.ce_id,
                    "ce_type": r.ce_type,
                    "ce_source": r.ce_source,
                    "ce_time": r.ce_time,
                }
                for r in inputs
            ],
            "events": layout,
            "root": root.hex(),
            "batch_message": message.hex(),
            "signature": key1.sign(message).hex(),
            "records": records,
        },
        "verdicts": [{"name": n, "expect": e, "record": r} for n, r, e in cases],
        "sequences": _sequence_vectors(key1, keyring),
        "keyrings": _keyring_vectors(keyring),
        "avro_fingerprint": _fingerprint_vector(),
    }


def _sequence_vectors(key: SigningKey, keyring: Keyring) -> list[dict[str, Any]]:
    """§9: records fed in order to one verifier that tracks sequences (default: no strict start)."""

    def stream(name: bytes, ids: list[str]) -> list[dict[str, Any]]:
        value = bytes.fromhex("c301") + bytes(range(8)) + b"sequence vector"
        inputs = [SignInput(value, b"agent-1", i, "io.agt.policy_check", "urn:agt:kernel/k1",
                            "2025-11-26T15:04:05Z", 0) for i in ids]  # fmt: skip
        return _signed(Signer(key, stream_id=name, clock_ms=lambda: SIGNED_AT_MS), inputs)

    s = stream(b"seq-plain", [f"evt-s{i}" for i in range(5)])  # sequences 0..4 on partition 0
    dup = stream(b"seq-reemit", ["evt-a", "evt-a", "evt-b"])  # 1 re-signs the event of 0
    gap = stream(b"seq-gap-reemit", ["evt-c", "evt-d", "evt-e", "evt-c"])  # 3 re-signs the event of 0
    hb = _heartbeat_stream(key)  # events 0..3, then the heartbeat (sequence 4) on partition 0
    scenarios = [
        ("a stream's first record, sequence 0", [s[0], s[1]], ["valid", "valid"]),
        ("a stream first seen mid-way (sequence 3): valid, no gap", [s[3], s[4], s[3]], ["valid", "valid", "replay"]),
        ("gap, late arrivals, then a replay", [s[0], s[3], s[1], s[2], s[1]],
         ["valid", "gap", "reordered", "reordered", "replay"]),
        ("a replay by event id still advances the high-water mark", [dup[0], dup[1], dup[2]],
         ["valid", "replay", "valid"]),
        ("a gap outranks a replay by event id", [gap[0], gap[3], gap[1], gap[2]],
         ["valid", "gap", "reordered", "reordered"]),
        ("a heartbeat (§16) after its stream's whole tail: valid", hb, ["valid"] * 5),
        ("a heartbeat (§16) after a lost tail (sequences 2, 3): gap", [hb[0], hb[1], hb[4]], ["valid", "valid", "gap"]),
    ]  # fmt: skip
    out = []
    for name, recs, expect in scenarios:
        verifier = Verifier(keyring)
        got = [
            verifier.verify(bytes.fromhex(r["value"]), None if r["key"] is None else bytes.fromhex(r["key"]),
                            [(n, None if v is None else bytes.fromhex(v)) for n, v in r["headers"]],
                            r["partition"]).code.value
            for r in recs
        ]  # fmt: skip
        if got != expect:
            raise AssertionError(f"sequence vector {name!r}: expected {expect}, library says {got}")
        out.append({"name": name, "expect": expect, "records": recs})
    return out


def _heartbeat_stream(key: SigningKey) -> list[dict[str, Any]]:
    """Four events and the stream's heartbeat for partition 0 (docs/signing.md §16), one batch."""
    from datetime import UTC, datetime

    from govbus._contract import Encoder
    from govbus._heartbeat import heartbeat_event
    from govbus._record import to_record
    from govbus.event import ProducerInfo

    stream_id = b"seq-heartbeat"
    value = bytes.fromhex("c301") + bytes(range(8)) + b"sequence vector"
    inputs = [SignInput(value, b"agent-1", f"evt-h{i}", "io.agt.policy_check", "urn:agt:kernel/k1",
                        "2025-11-26T15:04:05Z", 0) for i in range(4)]  # fmt: skip
    beat = heartbeat_event("govbus.heartbeat.vector.0", partition=0, stream=stream_id, next_seq=4, interval_s=5.0,
                           counters={"submitted": 5, "delivered": 4, "spooled": 0, "failed": 0, "rejected": 0})  # fmt: skip
    beat = beat.replace(event_id="hb-0001", occurred_at=datetime(2025, 11, 26, 15, 4, 5, tzinfo=UTC))
    producer = ProducerInfo("vector-kernel", "00112233445566778899aabbccddeeff", "host", "govbus-python/vector")
    out = to_record(beat, producer, Encoder(2))
    ce = dict(out.headers)
    inputs.append(SignInput(out.value, out.key, ce["ce_id"].decode(), ce["ce_type"].decode(),
                            ce["ce_source"].decode(), ce["ce_time"].decode(), 0))  # fmt: skip
    signer = Signer(key, stream_id=stream_id, clock_ms=lambda: SIGNED_AT_MS)
    records = []
    for r, sig in zip(inputs, signer.sign_batch(inputs), strict=True):
        base = list(out.headers) if r.ce_id == "hb-0001" else _ce_headers(r)
        records.append(_record(r.value, r.key, base + list(sig), r.partition))
    return records


def _keyring_vectors(keyring: Keyring) -> list[dict[str, Any]]:
    """§10: a keyring with one bad entry is rejected whole (no verdict at all), never loaded in part."""
    good = keyring.to_jwks()["keys"]
    k1, k2 = good

    def bad(**change: Any) -> list[dict[str, Any]]:
        entry = {**k2, **change}
        return [k1, {n: v for n, v in entry.items() if v is not None}]

    documents = [
        ("the vectors' keyring", good, "accepted"),
        ("an unknown member is ignored", [k1, {**k2, "x5t": "ignored"}], "accepted"),
        ("one entry carries a private key (d)", bad(d="nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"), "rejected"),
        ("one entry's x is 31 bytes", bad(x=k2["x"][:-2]), "rejected"),
        ("one entry is revoked without revoked_at", bad(revoked_at=None), "rejected"),
        ("one entry has an unknown status", bad(status="suspended"), "rejected"),
        ("one entry's time has no UTC offset", bad(revoked_at="2025-11-26T15:04:05"), "rejected"),
        ("one entry is not Ed25519", bad(crv="X25519"), "rejected"),
        ("two entries share a kid", [k1, {**k2, "kid": k1["kid"]}], "rejected"),
        ("two kids share a public key", [k1, {**k2, "x": k1["x"]}], "rejected"),
    ]
    out = []
    for name, keys, expect in documents:
        try:
            Keyring.from_jwks({"keys": keys})
            got = "accepted"
        except KeyringError:
            got = "rejected"
        if got != expect:
            raise AssertionError(f"keyring vector {name!r}: expected {expect}, library says {got}")
        out.append({"name": name, "expect": expect, "keyring": {"keys": keys}})
    return out


def _fingerprint_vector() -> dict[str, Any]:
    """Parsing Canonical Form drops logicalType (and doc, defaults...): a fingerprint computed over a
    form that keeps it names no shipped schema. Numbers, not wire bytes: the wire byte order is
    docs/wire-contract.md's business."""
    schema = {
        "type": "record", "name": "Sample", "namespace": "io.govbus.test", "doc": "not in the canonical form",
        "fields": [
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}, "default": ""},
        ],
    }  # fmt: skip
    canonical = to_parsing_canonical_form(parse_schema(schema))
    kept = canonical.replace('"type":"long"', '"type":{"type":"long","logicalType":"timestamp-micros"}').replace(
        '"type":"string"', '"type":{"type":"string","logicalType":"uuid"}'
    )
    return {
        "schema": schema,
        "parsing_canonical_form": canonical,
        "crc_64_avro_u64": _crc64(canonical),
        "wrong_form_keeping_logicaltype": kept,
        "crc_64_avro_u64_of_the_wrong_form": _crc64(kept),
    }


def _crc64(text: str) -> str:
    """The fingerprint as a 64-bit number, 16 hex digits, most significant first (fastavro's
    ``fingerprint`` gives the little-endian bytes' hex instead)."""
    return f"{int.from_bytes(bytes.fromhex(fingerprint(text, 'CRC-64-AVRO')), 'little'):016x}"


def _sequences(inputs: list[SignInput]) -> list[int]:
    counters: dict[int, int] = {}
    out = []
    for r in inputs:
        out.append(counters.get(r.partition, 0))
        counters[r.partition] = out[-1] + 1
    return out


def _flip_hex(text: str) -> str:
    raw = bytearray.fromhex(text)
    raw[0] ^= 0x01
    return raw.hex()


def _set(record: dict[str, Any], header: str, value: bytes) -> dict[str, Any]:
    rec = _copy(record)
    rec["headers"] = [[n, value.hex() if n == header else v] for n, v in rec["headers"]]
    return rec


def _dup(record: dict[str, Any], header: str, value: bytes | None) -> dict[str, Any]:
    rec = _copy(record)
    rec["headers"].append([header, _hex(value)])
    return rec


def _dup_first(record: dict[str, Any], header: str, value: bytes | None) -> dict[str, Any]:
    rec = _copy(record)
    rec["headers"].insert(0, [header, _hex(value)])
    return rec


def render() -> str:
    return json.dumps(build_vectors(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
