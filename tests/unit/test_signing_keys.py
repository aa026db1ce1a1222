"""Private keys: files, permissions, formats, kids, and never leaking the secret."""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import stat
import traceback
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from govbus.errors import GovbusError
from govbus.signing import (
    InsecureKeyFileError,
    KeyEntry,
    KeyFileError,
    Keyring,
    Signer,
    SigningError,
    SigningKey,
    SignInput,
    Verifier,
    load_private_key,
    write_private_key,
)
from govbus.signing._keys import b64url_decode, b64url_encode, kid_for, validate_kid

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def _secrets(key: SigningKey) -> list[str]:
    """Every spelling of the private key that could end up in a log line."""
    raw = key._private_bytes()
    pem = key._private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    body = "".join(pem.strip().splitlines()[1:-1])
    return [raw.hex(), b64url_encode(raw), base64.b64encode(raw).decode(), body, repr(raw)[2:-1]]


@pytest.mark.parametrize("fmt", ["pem", "jwk"])
def test_write_then_load_round_trips(tmp_path: Path, fmt: str) -> None:
    key = SigningKey.generate("k-1")
    path = write_private_key(key, tmp_path / f"k-1.{fmt}", fmt=fmt)  # type: ignore[arg-type]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_private_key(path)
    assert loaded.kid == "k-1"
    assert loaded.public_bytes == key.public_bytes
    assert loaded._private_bytes() == key._private_bytes()


def test_pem_kid_comes_from_the_argument_or_the_file_name(tmp_path: Path) -> None:
    key = SigningKey.generate("a")
    path = write_private_key(key, tmp_path / "named.pem")
    assert load_private_key(path).kid == "named"
    assert load_private_key(path, kid="other").kid == "other"


def test_jwk_kid_must_match_a_requested_kid(tmp_path: Path) -> None:
    path = write_private_key(SigningKey.generate("jwk-kid"), tmp_path / "x.jwk", fmt="jwk")
    assert load_private_key(path, kid="jwk-kid").kid == "jwk-kid"
    with pytest.raises(KeyFileError, match="holds kid 'jwk-kid', not 'nope'"):
        load_private_key(path, kid="nope")


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_private_key(SigningKey.generate(), tmp_path / "k.pem")
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_private_key(SigningKey.generate(), path)
    assert path.read_bytes() == before


@posix_only
def test_write_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private_key(SigningKey.generate(), tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o620, 0o700 | 0o004])
def test_key_readable_or_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_private_key(SigningKey.generate(), tmp_path / "k.pem")
    os.chmod(path, mode)
    with pytest.raises(InsecureKeyFileError) as info:
        load_private_key(path)
    message = str(info.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message
    assert info.value.mode == mode
    assert isinstance(info.value, GovbusError)


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = write_private_key(SigningKey.generate(), tmp_path / "k.pem")
    os.chmod(path, mode)
    assert load_private_key(path).public_bytes


@posix_only
def test_chmod_hint_quotes_odd_paths(tmp_path: Path) -> None:
    path = write_private_key(SigningKey.generate(), tmp_path / "my key.pem")
    os.chmod(path, 0o644)
    with pytest.raises(InsecureKeyFileError, match="chmod 600 '"):
        load_private_key(path)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_private_key(tmp_path / "absent.pem")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_private_key(d)


def _write_0600(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def test_wrong_kinds_of_key_files_are_refused(tmp_path: Path) -> None:
    ec = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="not Ed25519"):
        load_private_key(_write_0600(tmp_path / "ec.pem", ec))
    enc = SigningKey.generate()._private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyFileError, match="encrypted PEM"):
        load_private_key(_write_0600(tmp_path / "enc.pem", enc))
    with pytest.raises(KeyFileError, match="neither PEM nor a JWK"):
        load_private_key(_write_0600(tmp_path / "junk", b"hello"))
    with pytest.raises(KeyFileError, match="not a valid PEM"):
        load_private_key(_write_0600(tmp_path / "bad.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"))


def test_malformed_jwk_files_are_refused_without_quoting_them(tmp_path: Path) -> None:
    key = SigningKey.generate("k")
    other = SigningKey.generate("o")
    good = {**key.public_jwk(), "d": b64url_encode(key._private_bytes())}
    cases = {
        "not-json": b"{ nope " + good["d"].encode(),
        "not-utf8": b"{" + b"\xff" * 4 + good["d"].encode(),
        "list": json.dumps([good]).encode(),
        "rsa": json.dumps({**good, "kty": "RSA"}).encode(),
        "no-d": json.dumps({k: v for k, v in good.items() if k != "d"}).encode(),
        "bad-b64": json.dumps({**good, "d": good["d"] + "!"}).encode(),
        "short": json.dumps({**good, "d": good["d"][:20]}).encode(),
        "x-mismatch": json.dumps({**good, "x": other.x}).encode(),
        "no-kid": json.dumps({k: v for k, v in good.items() if k != "kid"}).encode(),
        "bad-kid": json.dumps({**good, "kid": "has space"}).encode(),
    }
    for name, data in cases.items():
        with pytest.raises(KeyFileError) as info:
            load_private_key(_write_0600(tmp_path / f"{name}.jwk", data))
        exc = info.value
        rendered = "".join(traceback.format_exception(exc))
        for secret in _secrets(key):
            assert secret not in rendered, name
        assert exc.__cause__ is None, name
        assert exc.__context__ is None, name


def test_private_key_never_in_repr_str_pickle_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = SigningKey.generate("leak-check")
    secrets = _secrets(key)
    path = write_private_key(key, tmp_path / "leak-check.pem")
    jwk_path = write_private_key(key, tmp_path / "leak-check.jwk", fmt="jwk")
    loaded = load_private_key(path)
    load_private_key(jwk_path)
    signer = Signer(loaded)
    records = [SignInput(b"v", None, "id", "t", "s", None, 0)]
    headers = signer.sign_batch(records)
    keyring = Keyring([KeyEntry(key.kid, key.public_bytes)])
    Verifier(keyring).verify(b"v", None, [("ce_id", b"id"), ("ce_type", b"t"), ("ce_source", b"s"), *headers[0]], 0)
    os.chmod(path, 0o644)
    errors: list[BaseException] = []
    for attempt in (
        lambda: load_private_key(path),
        lambda: write_private_key(key, path),
        lambda: pickle.dumps(key),
        lambda: signer.sign_batch([SignInput("not bytes", None, "id", "t", "s", None, 0)]),  # type: ignore[arg-type]
    ):
        try:
            attempt()
        except Exception as exc:
            errors.append(exc)
    assert len(errors) == 4
    texts = [repr(key), str(key), repr(loaded), repr(signer), caplog.text]
    texts += ["".join(traceback.format_exception(e)) for e in errors]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "leak-check" in repr(key)
    assert key.x in repr(key)


def test_signing_key_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(SigningKey.generate())


def test_default_kid_is_the_rfc7638_thumbprint_prefix() -> None:
    # RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    x = b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    assert kid_for(x) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"[:16]
    key = SigningKey.generate()
    assert key.kid == kid_for(key.public_bytes)


@pytest.mark.parametrize("kid", ["", "-x", "a b", "a/b", "é", "x" * 65, "a:b"])
def test_bad_kids_are_refused(kid: str) -> None:
    with pytest.raises(SigningError, match="invalid kid"):
        validate_kid(kid)


def test_b64url_is_strict() -> None:
    assert b64url_decode(b64url_encode(b"\xff\xfe")) == b"\xff\xfe"
    for bad in ("ab=", "a+b", "a/b", "abcde"):
        with pytest.raises(ValueError, match="base64url"):
            b64url_decode(bad)


def test_default_kid_is_always_valid_even_when_the_thumbprint_starts_with_dash_or_underscore() -> None:
    """Regression: ~1 key in 32 has a thumbprint starting with - or _, which is not a valid kid."""
    import hashlib
    import json

    from govbus.signing._keys import b64url_encode, kid_for, validate_kid

    seen_odd = 0
    for i in range(400):
        public = hashlib.sha256(i.to_bytes(4, "big")).digest()  # any 32 bytes stand in for a public key
        members = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(public)}, separators=(",", ":"), sort_keys=True
        )
        thumbprint = b64url_encode(hashlib.sha256(members.encode()).digest())
        kid = kid_for(public)
        assert validate_kid(kid) == kid
        if thumbprint[0] in "-_":
            seen_odd += 1
            assert kid == "k" + thumbprint[:15]
        else:
            assert kid == thumbprint[:16]
    assert seen_odd > 0  # the input range does exercise the odd case
