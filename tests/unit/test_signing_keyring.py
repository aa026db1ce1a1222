"""The JWKS keyring: round trips, validation, status changes."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from govbus.signing import KeyEntry, Keyring, KeyringError, KeyStatus, SigningKey
from govbus.signing._keyring import format_time, from_ms, parse_time, to_ms

T0 = datetime(2025, 11, 26, 15, 4, 5, 123000, tzinfo=UTC)


def _entry(**over: Any) -> KeyEntry:
    key = SigningKey.generate("k1")
    fields: dict[str, Any] = {"kid": "k1", "public_key": key.public_bytes}
    fields.update(over)
    return KeyEntry(**fields)


def test_jwks_round_trip_through_a_file(tmp_path: Path) -> None:
    a = _entry(created_at=T0, not_before=T0, not_after=T0 + timedelta(days=365))
    b = KeyEntry("k2", SigningKey.generate().public_bytes, KeyStatus.RETIRED, retired_at=T0)
    c = KeyEntry("k3", SigningKey.generate().public_bytes, KeyStatus.REVOKED, revoked_at=T0)
    ring = Keyring([a, b, c])
    path = tmp_path / "keyring.json"
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    loaded = Keyring.load(path)
    assert list(loaded) == [a, b, c]
    doc = json.loads(path.read_text())
    jwk = doc["keys"][0]
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert jwk["alg"] == "EdDSA"
    assert jwk["use"] == "sig"
    assert jwk["not_before"] == "2025-11-26T15:04:05.123Z"
    assert doc["keys"][2]["status"] == "revoked"
    assert not [p for p in tmp_path.iterdir() if p.name != "keyring.json"]  # no temp file left


def test_minimal_rfc8037_jwk_is_an_active_key() -> None:
    ring = Keyring.from_jwks(
        {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "rfc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}
    )
    entry = ring["rfc"]
    assert entry.status is KeyStatus.ACTIVE
    assert entry.public_key.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert "rfc" in ring
    assert len(ring) == 1
    assert ring.active() == [entry]


BASE = {"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d": "nnmoyKMEPm9G6MJL4UcSAVIEG3nLB_ehkwDLJgjS8Ew"}, "private key material"),
        ({"kty": "EC"}, "not an Ed25519 key"),
        ({"crv": "X25519"}, "not an Ed25519 key"),
        ({"alg": "ES256"}, '"alg" must be "EdDSA"'),
        ({"use": "enc"}, '"use" must be "sig"'),
        ({"x": "AAAA"}, '"x" must be 32 bytes'),
        ({"x": 5}, '"x" must be 32 bytes'),
        ({"status": "paused"}, "not one of active, retired, revoked"),
        ({"status": "revoked"}, "has no revoked_at"),
        ({"not_before": "2025-01-01T00:00:00"}, "no UTC offset"),
        ({"not_after": "soon"}, "not an RFC 3339 timestamp"),
        ({"not_after": 5}, "must be an RFC 3339 string"),
        ({"not_before": "2026-01-01T00:00:00Z", "not_after": "2025-01-01T00:00:00Z"}, "later than not_before"),
        ({"kid": "bad kid"}, "invalid kid"),
        ({"kid": None}, 'no string "kid"'),
    ],
)
def test_invalid_entries_are_refused(change: dict[str, Any], message: str) -> None:
    jwk = {**BASE, **change}
    with pytest.raises(KeyringError, match=message) as info:
        Keyring.from_jwks({"keys": [jwk]})
    assert "nnmoyKME" not in str(info.value)  # never echo a private member's value


def test_document_shape_is_checked(tmp_path: Path) -> None:
    docs: list[Any] = [{}, {"keys": {}}, {"keys": [5]}, []]
    for doc in docs:
        with pytest.raises(KeyringError):
            Keyring.from_jwks(doc)
    with pytest.raises(KeyringError, match="does not exist"):
        Keyring.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(KeyringError, match="cannot be read as JSON"):
        Keyring.load(bad)
    bad.write_text(json.dumps({"keys": [{**BASE, "kty": "RSA"}]}))
    with pytest.raises(KeyringError, match=f"keyring {bad}: key 'k'"):
        Keyring.load(bad)


def test_duplicate_kids_and_keys_are_refused() -> None:
    entry = _entry()
    with pytest.raises(KeyringError, match="already holds a key 'k1'"):
        Keyring([entry, entry])
    with pytest.raises(KeyringError, match="same public key"):
        Keyring([entry, KeyEntry("k2", entry.public_key)])


def test_revoke_and_retire() -> None:
    ring = Keyring([_entry()])
    retired = ring.retire("k1", at=T0, not_after=T0 + timedelta(days=1))
    assert retired.status is KeyStatus.RETIRED
    assert retired.retired_at == T0
    assert retired.not_after == T0 + timedelta(days=1)
    revoked = ring.revoke("k1", at=T0)
    assert revoked.status is KeyStatus.REVOKED
    assert revoked.revoked_at == T0
    # Revocation only ever moves earlier.
    assert ring.revoke("k1", at=T0 + timedelta(hours=1)).revoked_at == T0
    assert ring.revoke("k1", at=T0 - timedelta(hours=1)).revoked_at == T0 - timedelta(hours=1)
    with pytest.raises(KeyringError, match="revoked; it cannot be retired"):
        ring.retire("k1")
    with pytest.raises(KeyringError, match="no key 'nope'"):
        ring.revoke("nope")


def test_revoke_defaults_to_now() -> None:
    ring = Keyring([_entry()])
    before = datetime.now(UTC)
    entry = ring.revoke("k1")
    assert entry.revoked_at is not None
    assert before <= entry.revoked_at <= datetime.now(UTC)


def test_time_helpers() -> None:
    assert to_ms(T0) == 1764169445123
    assert from_ms(1764169445123) == T0
    assert parse_time("2025-11-26T16:04:05.123+01:00") == T0
    assert format_time(T0) == "2025-11-26T15:04:05.123Z"
    assert format_time(T0.replace(microsecond=0)) == "2025-11-26T15:04:05Z"


def test_repr_lists_kids_and_statuses() -> None:
    assert repr(Keyring([_entry()])) == "Keyring(k1:active)"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_save_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    Keyring([_entry()]).save(path)
    inode = path.stat().st_ino
    Keyring().save(path)
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert Keyring.load(path).to_jwks() == {"keys": []}
