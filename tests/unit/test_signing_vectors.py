"""The committed test vectors are current, and an implementation written from docs/signing.md alone
(below: no govbus import) reproduces and verifies every one of them."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VECTORS = Path(__file__).parent / "vectors"
FILE = VECTORS / "signing_v1.json"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_signing_vectors", VECTORS / "make_signing_vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FILE.read_text(encoding="utf-8"))
    return loaded


def test_committed_vectors_match_the_generator() -> None:
    assert FILE.read_text(encoding="utf-8") == _generator().render(), (
        "stale vectors: run python tests/unit/vectors/make_signing_vectors.py"
    )


# ---------------------------------------------------------------------------------------------
# A second implementation, from the spec only.
# ---------------------------------------------------------------------------------------------
SIG_HEADERS = ("govbus_sig_kid", "govbus_sig_alg", "govbus_sig_stream", "govbus_sig_seq", "govbus_sig_proof",
               "govbus_sig")  # fmt: skip
CE_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_time")
ABSENT = 0xFFFFFFFF


def spec_event_bytes(partition: int, seq: int, kid: bytes, stream: bytes, ce: list[bytes | None],
                     key: bytes | None, value: bytes) -> bytes:  # fmt: skip
    """§3."""
    fields = [kid, stream, *ce, key, value]
    out = b"govbus/v1/event\x00" + struct.pack(">I", partition) + struct.pack(">Q", seq)
    for f in fields:
        out += struct.pack(">I", ABSENT if f is None else len(f))
    for f in fields:
        out += f or b""
    return out


def spec_leaf(e: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + e).digest()


def spec_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def spec_mth(d: list[bytes]) -> bytes:
    """§4.2, the recursive definition."""
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return spec_node(spec_mth(d[:k]), spec_mth(d[k:]))


def spec_path(i: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if i < k:
        return [*spec_path(i, d[:k]), spec_mth(d[k:])]
    return [*spec_path(i - k, d[k:]), spec_mth(d[:k])]


def rfc9162_root(leaf: bytes, i: int, n: int, path: list[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2, which §4.4 says is equivalent."""
    if i >= n:
        return None
    fn, sn, r = i, n - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = spec_node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = spec_node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def spec_batch_message(signed_at: int, n: int, kid: bytes, root: bytes) -> bytes:
    """§5."""
    alg = b"ed25519-merkle-v1"
    return b"govbus/v1/batch\x00" + struct.pack(">QIII", signed_at, n, len(alg), len(kid)) + alg + kid + root


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    return int(datetime.fromisoformat(text).timestamp() * 1000)  # vectors use whole milliseconds


def spec_verify(jwks: dict[str, Any], value: bytes | None, key: bytes | None,
                headers: list[tuple[str, bytes | None]], partition: int) -> str:  # fmt: skip
    """§8.2 steps 1-11."""
    names = [n for n, _ in headers]
    for n in SIG_HEADERS + CE_HEADERS:
        if names.count(n) > 1:
            return "malformed"
    h = {n: v for n, v in headers if v is not None}
    if any(n not in h for n in SIG_HEADERS):
        return "malformed"
    if h["govbus_sig_alg"] != b"ed25519-merkle-v1":
        return "malformed"
    jwk = next((k for k in jwks["keys"] if k["kid"].encode() == h["govbus_sig_kid"]), None)
    if jwk is None:
        return "unknown-kid"
    seq, sig, proof, stream = h["govbus_sig_seq"], h["govbus_sig"], h["govbus_sig_proof"], h["govbus_sig_stream"]
    if (len(seq) != 12 or len(sig) != 64 or len(proof) < 16 or (len(proof) - 16) % 32
            or (len(proof) - 16) // 32 > 16 or not 1 <= len(stream) <= 64 or value is None):  # fmt: skip
        return "malformed"
    p, s = struct.unpack(">IQ", seq)
    if p != partition:
        return "bad-signature"
    t, n, i = struct.unpack(">QII", proof[:16])
    path = [proof[o : o + 32] for o in range(16, len(proof), 32)]
    kid = h["govbus_sig_kid"]
    e = spec_event_bytes(p, s, kid, stream, [h.get(c) for c in CE_HEADERS], key, value)
    root = rfc9162_root(spec_leaf(e), i, n, path) if n <= 65536 else None
    if root is None:
        return "bad-signature"
    x = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    try:
        Ed25519PublicKey.from_public_bytes(x).verify(sig, spec_batch_message(t, n, kid, root))
    except InvalidSignature:
        return "bad-signature"
    revoked = _ms(jwk.get("revoked_at")) if jwk.get("status") == "revoked" else None
    if revoked is not None and t >= revoked:
        return "revoked-kid"
    nbf, naf = _ms(jwk.get("not_before")), _ms(jwk.get("not_after"))
    if (nbf is not None and t < nbf) or (naf is not None and t >= naf):
        return "expired-kid"
    return "valid"


def _unhex(x: str | None) -> bytes | None:
    return None if x is None else bytes.fromhex(x)


# ---------------------------------------------------------------------------------------------


def test_merkle_vectors_follow_the_spec(vectors: dict[str, Any]) -> None:
    for tree in vectors["merkle"]:
        leaves = [bytes.fromhex(x) for x in tree["leaf_hashes"]]
        assert leaves == [spec_leaf(bytes([i])) for i in range(tree["size"])]
        assert spec_mth(leaves).hex() == tree["root"]
        for i, path in enumerate(tree["paths"]):
            assert [p.hex() for p in spec_path(i, leaves)] == path
            assert rfc9162_root(leaves[i], i, len(leaves), [bytes.fromhex(p) for p in path]) == spec_mth(leaves)


def test_batch_vector_is_reproducible_from_the_spec(vectors: dict[str, Any]) -> None:
    batch = vectors["batch"]
    kid = batch["kid"].encode()
    stream = bytes.fromhex(batch["stream"])
    leaves = []
    for inp, ev in zip(batch["inputs"], batch["events"], strict=True):
        ce = [inp["ce_id"], inp["ce_type"], inp["ce_source"], inp["ce_time"]]
        e = spec_event_bytes(inp["partition"], ev["sequence"], kid, stream,
                             [None if c is None else c.encode() for c in ce],
                             _unhex(inp["key"]), bytes.fromhex(inp["value"]))  # fmt: skip
        assert e.hex() == ev["event_bytes"]
        assert spec_leaf(e).hex() == ev["leaf_hash"]
        leaves.append(spec_leaf(e))
    root = spec_mth(leaves)
    assert root.hex() == batch["root"]
    message = spec_batch_message(batch["signed_at_ms"], len(leaves), kid, root)
    assert message.hex() == batch["batch_message"]
    seed = bytes.fromhex(vectors["private_keys_for_testing_only"]["test-key-1"])
    assert Ed25519PrivateKey.from_private_bytes(seed).sign(message).hex() == batch["signature"]
    # The signature headers of each record, rebuilt from the spec (§6).
    for i, (inp, ev, rec) in enumerate(zip(batch["inputs"], batch["events"], batch["records"], strict=True)):
        h = {n: v for n, v in rec["headers"]}
        assert h["govbus_sig_kid"] == kid.hex()
        assert h["govbus_sig_alg"] == b"ed25519-merkle-v1".hex()
        assert h["govbus_sig_stream"] == stream.hex()
        assert h["govbus_sig_seq"] == struct.pack(">IQ", inp["partition"], ev["sequence"]).hex()
        proof = struct.pack(">QII", batch["signed_at_ms"], len(leaves), i) + b"".join(spec_path(i, leaves))
        assert h["govbus_sig_proof"] == proof.hex()
        assert h["govbus_sig"] == batch["signature"]
        assert rec["partition"] == inp["partition"]


def test_every_verdict_vector_with_the_spec_implementation(vectors: dict[str, Any]) -> None:
    assert len(vectors["verdicts"]) > 30
    for case in vectors["verdicts"]:
        rec = case["record"]
        got = spec_verify(
            vectors["keyring"],
            _unhex(rec["value"]),
            _unhex(rec["key"]),
            [(n, _unhex(v)) for n, v in rec["headers"]],
            rec["partition"],
        )
        assert got == case["expect"], case["name"]


def test_every_verdict_vector_with_the_library(vectors: dict[str, Any]) -> None:
    from govbus.signing import Keyring, Verifier

    keyring = Keyring.from_jwks(vectors["keyring"])
    for case in vectors["verdicts"]:
        rec = case["record"]
        verdict = Verifier(keyring, track_sequences=False).verify(
            bytes.fromhex(rec["value"]),
            _unhex(rec["key"]),
            [(n, _unhex(v)) for n, v in rec["headers"]],
            rec["partition"],
        )
        assert verdict.code.value == case["expect"], (case["name"], str(verdict))


# -- §9 sequence tracking, §10 keyring validation, and the Avro fingerprint note, from the spec --
class SpecTracker:
    """§9, without the memory bounds (the vectors stay far below them)."""

    def __init__(self) -> None:
        self.hwm: dict[tuple[int, bytes], int] = {}
        self.missing: dict[tuple[int, bytes], set[int]] = {}
        self.ids: dict[int, set[bytes]] = {}

    def observe(self, partition: int, stream: bytes, s: int, ce_id: bytes | None) -> str:
        key = (partition, stream)
        verdict = "valid"
        if key not in self.hwm:
            self.hwm[key] = s  # first seen, at 0 or mid-way: valid
            self.missing[key] = set()
        elif s == self.hwm[key] + 1:
            self.hwm[key] = s
        elif s > self.hwm[key] + 1:
            self.missing[key].update(range(self.hwm[key] + 1, s))
            self.hwm[key] = s
            verdict = "gap"
        elif s in self.missing[key]:
            self.missing[key].discard(s)
            verdict = "reordered"
        else:
            return "replay"  # by sequence number: nothing moves
        ids = self.ids.setdefault(partition, set())
        if ce_id is not None and ce_id in ids and verdict != "gap":
            return "replay"  # by event id: the sequence state above has moved all the same
        if ce_id is not None:
            ids.add(ce_id)
        return verdict


def test_every_sequence_vector_with_the_spec_implementation(vectors: dict[str, Any]) -> None:
    assert len(vectors["sequences"]) >= 5
    for scenario in vectors["sequences"]:
        tracker = SpecTracker()
        got = []
        for rec in scenario["records"]:
            headers = [(n, _unhex(v)) for n, v in rec["headers"]]
            verdict = spec_verify(vectors["keyring"], _unhex(rec["value"]), _unhex(rec["key"]), headers,
                                  rec["partition"])  # fmt: skip
            if verdict == "valid":
                h = {n: v for n, v in headers if v is not None}
                _, s = struct.unpack(">IQ", h["govbus_sig_seq"])
                verdict = tracker.observe(rec["partition"], h["govbus_sig_stream"], s, h.get("ce_id"))
            got.append(verdict)
        assert got == scenario["expect"], scenario["name"]


def test_every_sequence_vector_with_the_library(vectors: dict[str, Any]) -> None:
    from govbus.signing import Keyring, Verifier

    keyring = Keyring.from_jwks(vectors["keyring"])
    for scenario in vectors["sequences"]:
        verifier = Verifier(keyring)
        got = [
            verifier.verify(bytes.fromhex(r["value"]), _unhex(r["key"]), [(n, _unhex(v)) for n, v in r["headers"]],
                            r["partition"]).code.value
            for r in scenario["records"]
        ]  # fmt: skip
        assert got == scenario["expect"], scenario["name"]


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def spec_keyring_ok(document: dict[str, Any]) -> bool:
    """§10: every entry must be valid, else the whole keyring is refused."""
    kids, xs = set(), set()
    for jwk in document.get("keys", []):
        kid, x = jwk.get("kid"), jwk.get("x")
        if not isinstance(kid, str) or not _KID.fullmatch(kid) or kid in kids:
            return False
        if any(m in jwk for m in _PRIVATE) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            return False
        if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
            return False
        if not isinstance(x, str) or "=" in x or len(x) != 43 or x in xs:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
        except ValueError:
            return False
        status = jwk.get("status", "active")
        if status not in ("active", "retired", "revoked") or (status == "revoked" and "revoked_at" not in jwk):
            return False
        times = ("created_at", "not_before", "not_after", "retired_at", "revoked_at")
        if any(t in jwk and not _RFC3339.fullmatch(str(jwk[t])) for t in times):
            return False
        if "not_before" in jwk and "not_after" in jwk and _ms(jwk["not_after"]) <= _ms(jwk["not_before"]):  # type: ignore[operator]
            return False
        kids.add(kid)
        xs.add(x)
    return True


def test_every_keyring_vector_with_the_spec_implementation_and_the_library(vectors: dict[str, Any]) -> None:
    from govbus.signing import Keyring, KeyringError

    assert any(v["expect"] == "rejected" for v in vectors["keyrings"])
    for case in vectors["keyrings"]:
        assert ("accepted" if spec_keyring_ok(case["keyring"]) else "rejected") == case["expect"], case["name"]
        try:
            Keyring.from_jwks(case["keyring"])
            got = "accepted"
        except KeyringError:
            got = "rejected"
        assert got == case["expect"], case["name"]


def spec_crc64_avro(text: str) -> str:
    """The Avro specification's CRC-64-AVRO ("Schema Fingerprints"), as a 16-digit hex number."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in text.encode("utf-8"):
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return f"{fp:016x}"


def test_the_fingerprint_is_over_the_parsing_canonical_form_without_logicaltype(vectors: dict[str, Any]) -> None:
    from fastavro.schema import parse_schema, to_parsing_canonical_form

    fp = vectors["avro_fingerprint"]
    assert "logicalType" not in fp["parsing_canonical_form"]
    assert to_parsing_canonical_form(parse_schema(fp["schema"])) == fp["parsing_canonical_form"]
    assert spec_crc64_avro('"null"') == "63dd24e7cc258f8a"  # the Avro project's own test value
    assert spec_crc64_avro(fp["parsing_canonical_form"]) == fp["crc_64_avro_u64"]
    assert spec_crc64_avro(fp["wrong_form_keeping_logicaltype"]) == fp["crc_64_avro_u64_of_the_wrong_form"]
    assert fp["crc_64_avro_u64"] != fp["crc_64_avro_u64_of_the_wrong_form"]
