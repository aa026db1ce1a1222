"""The public keyring: a JWKS document of Ed25519 keys with status and validity (docs/signing.md §8).

Each key is an RFC 8037 OKP JWK plus govbus members: ``status`` (active | retired | revoked),
``created_at``, ``not_before``, ``not_after``, ``retired_at``, ``revoked_at`` (RFC 3339 UTC).
Validity is judged at the batch's signing time, not at verification time, so an archive signed
with a key that has since expired or been retired keeps verifying. A keyring holds no secret;
it refuses any JWK carrying a private member.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from govbus.signing._errors import KeyringError, SigningError
from govbus.signing._keys import b64url_decode, b64url_encode, validate_kid

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_NEVER = 1 << 64  # later than any u64 signed_at_ms
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
_TIME_MEMBERS = ("created_at", "not_before", "not_after", "retired_at", "revoked_at")


class KeyStatus(StrEnum):
    ACTIVE = "active"  # signs new events, verifies
    RETIRED = "retired"  # rotated out: signs nothing new, still verifies
    REVOKED = "revoked"  # rejects every batch signed at or after revoked_at


def to_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (no float rounding)."""
    return (when - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset (``Z`` or ``±hh:mm``), returned in UTC."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add 'Z' or '+00:00'")
    return when.astimezone(UTC)


def format_time(when: datetime) -> str:
    when = when.astimezone(UTC)
    spec = "milliseconds" if when.microsecond else "seconds"
    return when.isoformat(timespec=spec).replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One public key of the keyring. Times are timezone-aware; None means unbounded / not set."""

    kid: str
    public_key: bytes  # 32-byte raw Ed25519 public key
    status: KeyStatus = KeyStatus.ACTIVE
    created_at: datetime | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    retired_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        try:
            validate_kid(self.kid)
        except SigningError as exc:
            raise KeyringError(str(exc)) from None
        if len(self.public_key) != 32:
            raise KeyringError(f"key {self.kid!r}: an Ed25519 public key is 32 bytes")
        for name in _TIME_MEMBERS:
            when = getattr(self, name)
            if when is not None and when.tzinfo is None:
                raise KeyringError(f"key {self.kid!r}: {name} must be timezone-aware")
        if self.status is KeyStatus.REVOKED and self.revoked_at is None:
            raise KeyringError(f"key {self.kid!r} is revoked but has no revoked_at time")
        if self.not_before and self.not_after and self.not_after <= self.not_before:
            raise KeyringError(f"key {self.kid!r}: not_after must be later than not_before")

    @property
    def x(self) -> str:
        return b64url_encode(self.public_key)

    def to_jwk(self) -> dict[str, str]:
        jwk = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": self.x}
        jwk["status"] = self.status.value
        for name in _TIME_MEMBERS:
            when = getattr(self, name)
            if when is not None:
                jwk[name] = format_time(when)
        return jwk

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, object]) -> KeyEntry:
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            raise KeyringError('a key has no string "kid"')
        where = f"key {kid!r}"
        if any(m in jwk for m in _PRIVATE_MEMBERS):
            # Name the member, never its value.
            raise KeyringError(f"{where} carries private key material; a keyring holds public keys only")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise KeyringError(f'{where} is not an Ed25519 key (needs "kty": "OKP", "crv": "Ed25519")')
        if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
            raise KeyringError(f'{where}: "alg" must be "EdDSA" and "use" must be "sig"')
        x = jwk.get("x")
        try:
            public = b64url_decode(x) if isinstance(x, str) else b""
        except ValueError:
            public = b""
        if len(public) != 32:
            raise KeyringError(f'{where}: "x" must be 32 bytes in unpadded base64url')
        try:
            Ed25519PublicKey.from_public_bytes(public)
        except ValueError:
            raise KeyringError(f'{where}: "x" is not a valid Ed25519 public key') from None
        raw_status = jwk.get("status", KeyStatus.ACTIVE.value)
        try:
            status = KeyStatus(str(raw_status))
        except ValueError:
            allowed = ", ".join(s.value for s in KeyStatus)
            raise KeyringError(f"{where}: status {raw_status!r} is not one of {allowed}") from None
        times: dict[str, datetime | None] = {}
        for name in _TIME_MEMBERS:
            raw = jwk.get(name)
            if raw is None:
                times[name] = None
                continue
            if not isinstance(raw, str):
                raise KeyringError(f"{where}: {name} must be an RFC 3339 string")
            try:
                times[name] = parse_time(raw)
            except ValueError as exc:
                raise KeyringError(f"{where}: {name}: {exc}") from None
        return cls(kid=kid, public_key=public, status=status, **times)


class _VerifyKey:
    """What the verifier's hot path needs about one key, as plain ints (milliseconds)."""

    __slots__ = ("kid", "not_after", "not_before", "public", "revoked_at")

    def __init__(self, entry: KeyEntry) -> None:
        self.kid = entry.kid
        self.public = Ed25519PublicKey.from_public_bytes(entry.public_key)
        self.not_before = -1 if entry.not_before is None else to_ms(entry.not_before)
        self.not_after = _NEVER if entry.not_after is None else to_ms(entry.not_after)
        revoked = entry.revoked_at if entry.status is KeyStatus.REVOKED else None
        self.revoked_at = _NEVER if revoked is None else to_ms(revoked)


class Keyring:
    """The public keys a verifier trusts, by kid. Mutations take effect on the next verification."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._entries: dict[str, KeyEntry] = {}
        for entry in entries:
            self.add(entry)
        self._reindex()

    # -- reading ------------------------------------------------------------------------------
    def get(self, kid: str) -> KeyEntry | None:
        return self._entries.get(kid)

    def __getitem__(self, kid: str) -> KeyEntry:
        entry = self._entries.get(kid)
        if entry is None:
            raise KeyringError(f"no key {kid!r} in the keyring")
        return entry

    def __contains__(self, kid: object) -> bool:
        return kid in self._entries

    def __iter__(self) -> Iterator[KeyEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Keyring({', '.join(f'{e.kid}:{e.status.value}' for e in self._entries.values())})"

    def active(self) -> list[KeyEntry]:
        return [e for e in self._entries.values() if e.status is KeyStatus.ACTIVE]

    # -- changing -----------------------------------------------------------------------------
    def add(self, entry: KeyEntry) -> None:
        if entry.kid in self._entries:
            raise KeyringError(f"the keyring already holds a key {entry.kid!r}")
        for other in self._entries.values():
            if other.public_key == entry.public_key:
                raise KeyringError(f"key {entry.kid!r} is the same public key as {other.kid!r}")
        self._entries[entry.kid] = entry
        self._reindex()

    def retire(self, kid: str, *, at: datetime | None = None, not_after: datetime | None = None) -> KeyEntry:
        """Rotate ``kid`` out: it signs nothing new but keeps verifying (until ``not_after``, if set)."""
        entry = self[kid]
        if entry.status is KeyStatus.REVOKED:
            raise KeyringError(f"key {kid!r} is revoked; it cannot be retired")
        updated = replace(
            entry,
            status=KeyStatus.RETIRED,
            retired_at=at or datetime.now(UTC),
            not_after=not_after if not_after is not None else entry.not_after,
        )
        self._entries[kid] = updated
        self._reindex()
        return updated

    def revoke(self, kid: str, *, at: datetime | None = None) -> KeyEntry:
        """Reject every batch ``kid`` signed at or after ``at`` (default now).

        Set ``at`` to the earliest time the key may have been compromised: a thief can write any
        signing time, so only batches claiming an earlier time are still accepted.
        """
        entry = self[kid]
        when = at or datetime.now(UTC)
        if entry.revoked_at is not None and entry.revoked_at < when:
            when = entry.revoked_at  # revocation only ever moves earlier
        updated = replace(entry, status=KeyStatus.REVOKED, revoked_at=when)
        self._entries[kid] = updated
        self._reindex()
        return updated

    def _reindex(self) -> None:
        # Replaced whole, never mutated in place, so a verifier mid-lookup sees old or new.
        self._table = {kid.encode("utf-8"): _VerifyKey(e) for kid, e in self._entries.items()}

    # -- JWKS ---------------------------------------------------------------------------------
    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [e.to_jwk() for e in self._entries.values()]}

    @classmethod
    def from_jwks(cls, document: Mapping[str, object]) -> Keyring:
        keys = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(keys, list):
            raise KeyringError('a keyring is a JWKS document: {"keys": [...]}')
        entries = []
        for jwk in keys:
            if not isinstance(jwk, Mapping):
                raise KeyringError('every member of "keys" must be a JWK object')
            entries.append(KeyEntry.from_jwk(jwk))
        return cls(entries)

    @classmethod
    def load(cls, path: Path | str) -> Keyring:
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyringError(f"keyring {path} does not exist; create it with 'govbus keys generate'") from None
        except (OSError, ValueError) as exc:
            raise KeyringError(f"keyring {path} cannot be read as JSON: {exc}") from None
        try:
            return cls.from_jwks(document)
        except KeyringError as exc:
            raise KeyringError(f"keyring {path}: {exc}") from None

    def save(self, path: Path | str) -> None:
        """Write atomically (temp file + rename): a verifier never reads half a keyring."""
        path = Path(path)
        text = json.dumps(self.to_jwks(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # public keys: readable by every consumer
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
