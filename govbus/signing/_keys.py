"""Ed25519 signing keys, key ids, and private key files (PEM PKCS#8 or JWK) with permission checks.

A private key never leaves :class:`SigningKey` except through :func:`write_private_key`: its
repr shows the kid and the public key only, it refuses to be pickled (pickles end up in caches,
queues and crash dumps), and errors about key files never quote their contents.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Literal, NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from govbus.signing._canonical import MAX_KID
from govbus.signing._errors import InsecureKeyFileError, KeyFileError, SigningError

_log = logging.getLogger(__name__)

KeyFormat = Literal["pem", "jwk"]

# Kids travel in a header and name key files, so they stay short and filename-safe.
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_KEY_FILE = 64 * 1024


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); raises ValueError on anything else."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None


def validate_kid(kid: str) -> str:
    if not isinstance(kid, str) or len(kid) > MAX_KID or not _KID.fullmatch(kid):
        raise SigningError(
            f"invalid kid {kid!r}: use 1-{MAX_KID} characters from A-Z a-z 0-9 . _ - starting with a letter or digit"
        )
    return kid


def kid_for(public_key: bytes) -> str:
    """Default kid: the first 16 characters (96 bits) of the RFC 7638 JWK thumbprint.

    A kid must start with a letter or digit (a leading ``-`` reads as a command-line flag); when
    the thumbprint starts with ``-`` or ``_`` the kid is ``k`` + its first 15 characters.
    """
    members = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(public_key)}, separators=(",", ":"), sort_keys=True
    )
    thumbprint = b64url_encode(hashlib.sha256(members.encode("ascii")).digest())
    return thumbprint[:16] if thumbprint[0].isalnum() else "k" + thumbprint[:15]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SigningKey:
    """An Ed25519 private key and its kid. Shows only public data; cannot be pickled."""

    __slots__ = ("_kid", "_private", "_public")

    def __init__(self, private_key: Ed25519PrivateKey, kid: str | None = None) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise SigningError("a SigningKey needs an Ed25519 private key")
        self._private = private_key
        self._public = _raw_public(private_key.public_key())
        self._kid = validate_kid(kid) if kid is not None else kid_for(self._public)

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), kid)

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw public key (RFC 8032 encoding)."""
        return self._public

    def public_jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self._kid, "x": self.x}

    @property
    def x(self) -> str:
        return b64url_encode(self._public)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self._kid!r}, x={self.x!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SigningKey cannot be pickled; load it from its key file where it is needed")

    def _private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )


def _check_permissions(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(path, "is not a regular file")
    # Windows has no POSIX mode bits worth checking; there ACLs protect the file.
    if os.name == "posix" and st.st_mode & 0o077:
        raise InsecureKeyFileError(path, stat.S_IMODE(st.st_mode))


def _read_private_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(path, "does not exist") from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot be opened: {exc.strerror}") from None
    try:
        # Check the file we opened, not the path: the path could be swapped in between.
        _check_permissions(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(path, "is too large to be a key file")
    return data


def _bad(path: Path, message: str) -> NoReturn:
    raise KeyFileError(path, message)


# Parsing failures below are noted and raised *after* the except block: raised inside it, the
# KeyFileError would keep the parser's exception as __context__ (``from None`` only hides it),
# and that exception can hold the file's contents (``json.JSONDecodeError.doc``).


def load_private_key(path: Path | str, *, kid: str | None = None) -> SigningKey:
    """Load an Ed25519 private key from a PEM (PKCS#8) or JWK file, refusing group/world access.

    A JWK file names its kid; for PEM the kid is ``kid`` or else the file name without suffix.
    """
    path = Path(path)
    data = _read_private_file(path)
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        private = _load_pem(path, data)
        file_kid = path.stem
    elif stripped.startswith(b"{"):
        private, file_kid = _load_jwk(path, data)
        if kid is not None and kid != file_kid:
            _bad(path, f"holds kid {file_kid!r}, not {kid!r}")
    else:
        _bad(path, "is neither PEM nor a JWK (JSON) document")
    chosen = kid if kid is not None else file_kid
    if not isinstance(chosen, str) or len(chosen) > MAX_KID or not _KID.fullmatch(chosen):
        _bad(path, f"invalid kid {chosen!r} (1-{MAX_KID} characters from A-Z a-z 0-9 . _ -)")
    key = SigningKey(private, chosen)
    _log.debug("loaded private key kid=%s from %s", key.kid, path)
    return key


def _load_pem(path: Path, data: bytes) -> Ed25519PrivateKey:
    problem = None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        problem = "is an encrypted PEM; govbus reads unencrypted PKCS#8 files protected by mode 0600"
    except (ValueError, UnsupportedAlgorithm):
        problem = "is not a valid PEM private key"
    if problem is not None:
        _bad(path, problem)
    if not isinstance(private, Ed25519PrivateKey):
        _bad(path, "holds a private key that is not Ed25519")
    return private


def _load_jwk(path: Path, data: bytes) -> tuple[Ed25519PrivateKey, str]:
    jwk: object = None
    try:
        jwk = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        jwk = None
    if not isinstance(jwk, dict):
        _bad(path, "is not a JSON object (a JWK)")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        _bad(path, 'is not an Ed25519 JWK (needs "kty": "OKP", "crv": "Ed25519")')
    d, x, kid = jwk.get("d"), jwk.get("x"), jwk.get("kid")
    if not isinstance(d, str) or not isinstance(x, str):
        _bad(path, 'needs string members "d" (private key) and "x" (public key)')
    if not isinstance(kid, str):
        _bad(path, 'needs a string member "kid"')
    raw_d = raw_x = b""
    try:
        raw_d = b64url_decode(d)
        raw_x = b64url_decode(x)
    except ValueError:
        raw_d = b""
    if len(raw_d) != 32 or len(raw_x) != 32:
        _bad(path, 'members "d" and "x" must each be 32 bytes in unpadded base64url')
    private = Ed25519PrivateKey.from_private_bytes(raw_d)
    if _raw_public(private.public_key()) != raw_x:
        _bad(path, 'member "x" is not the public key of "d"')
    return private, kid


def write_private_key(key: SigningKey, path: Path | str, *, fmt: KeyFormat = "pem") -> Path:
    """Write ``key`` to a new file created with mode 0600; never overwrites an existing file."""
    path = Path(path)
    if fmt == "pem":
        data = key._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    elif fmt == "jwk":
        jwk = {**key.public_jwk(), "d": b64url_encode(key._private_bytes())}
        data = (json.dumps(jwk, indent=2) + "\n").encode("ascii")
    else:
        raise SigningError(f"unknown key file format {fmt!r}; use 'pem' or 'jwk'")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(path, "already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot be created: {exc.strerror}") from None
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)  # the umask can only clear bits, but be explicit
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    _log.info("wrote private key kid=%s to %s (mode 0600)", key.kid, path)
    return path
