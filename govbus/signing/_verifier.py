"""The consumer side: one verdict per record, from its value, key, headers and partition (spec §7).

A record is checked alone: leaf hash, inclusion path up to the batch root, then the batch
signature, which is verified once per batch and remembered in a bounded LRU keyed by the
signature (every record of the batch carries the same one), so the amortised cost per record is
the hashing. Authentic records then go through the :class:`SequenceTracker`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature

from govbus.signing._batchcache import BatchCache
from govbus.signing._canonical import (
    ALG,
    ALG_BYTES,
    CE_ID,
    CE_SOURCE,
    CE_TIME,
    CE_TYPE,
    EVENT_HEAD,
    EVENT_TAG,
    H_ALG,
    H_KID,
    H_PROOF,
    H_SEQ,
    H_SIG,
    H_STREAM,
    HASH_SIZE,
    LEAF_PREFIX,
    MAX_STREAM_ID,
    MAX_TREE_SIZE,
    NULL_LENGTH,
    PROOF_HEAD,
    SEQ,
    SIGNATURE_HEADERS,
    SIGNATURE_SIZE,
    SIGNED_CE_HEADERS,
    batch_message,
)
from govbus.signing._errors import SigningError
from govbus.signing._keyring import Keyring, _VerifyKey, from_ms
from govbus.signing._merkle import climb
from govbus.signing._sequence import SequenceTracker
from govbus.signing._verdict import VALID, Verdict, VerdictCode

if TYPE_CHECKING:
    from govbus.signing._settings import SigningSettings

_WATCHED = frozenset(SIGNATURE_HEADERS + SIGNED_CE_HEADERS)
_PROOF_MIN = PROOF_HEAD.size
_PROOF_MAX = PROOF_HEAD.size + 16 * HASH_SIZE  # log2(MAX_TREE_SIZE) hashes
_SEQ_SIZE = SEQ.size
_LEAF_PREFIX = LEAF_PREFIX + EVENT_TAG


def _malformed(detail: str) -> Verdict:
    return Verdict(VerdictCode.MALFORMED, detail)


def _bad(detail: str) -> Verdict:
    return Verdict(VerdictCode.BAD_SIGNATURE, detail)


def _iso(ms: int) -> str:
    try:
        return from_ms(ms).isoformat()
    except OverflowError:
        return f"{ms} ms after the epoch"


def _misfit(index: int, size: int) -> str:
    return f"inclusion proof does not fit leaf {index} of a batch of {size}"


def _forged(vk: _VerifyKey) -> str:
    return (
        f"signature does not verify under kid {vk.kid!r}: the value, the record key or a signed header "
        "was altered, or another key signed it"
    )


def _show(raw: bytes) -> str:
    # Attacker-controlled bytes end up in logs and dead-letter headers: repr() keeps them inert.
    return repr(raw[:64].decode("utf-8", "replace"))


class Verifier:
    """Verifies records against a :class:`Keyring`; tracks sequences unless told not to.

    ``root_cache_size`` bounds the verified-batch cache (entries of at most ~2 KB; 0 disables it).
    Not thread-safe: use one per consumer. Call :meth:`forget_partition` when the consumer loses,
    re-gains or seeks a partition (see :class:`SequenceTracker`).
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        root_cache_size: int = 1024,
        tracker: SequenceTracker | None = None,
        track_sequences: bool = True,
    ) -> None:
        if root_cache_size < 0:
            raise ValueError("root_cache_size must be >= 0")
        self._keyring = keyring
        self._cache_size = root_cache_size
        self._cache = BatchCache(root_cache_size)
        self._tracker = (tracker or SequenceTracker()) if track_sequences else None
        self.cache_hits = 0
        self.signature_checks = 0

    @classmethod
    def from_settings(cls, settings: SigningSettings, *, keyring: Keyring | None = None) -> Verifier:
        if keyring is None:
            if settings.keyring_path is None:
                raise SigningError("signing.keyring_path is not set (GOVBUS_SIGNING__KEYRING)")
            keyring = Keyring.load(settings.keyring_path)
        tracker = SequenceTracker(max_streams=settings.max_streams, replay_window=settings.replay_window)
        return cls(keyring, root_cache_size=settings.root_cache_size, tracker=tracker)

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def replace_keyring(self, keyring: Keyring) -> None:
        """Swap in a reloaded keyring.

        The cache is emptied: its entries were verified under the public keys the old keyring
        gave their kids. (Status changes made through ``keyring.revoke()`` etc. need no swap.)
        """
        self._keyring = keyring
        self._cache.clear()

    @property
    def tracker(self) -> SequenceTracker | None:
        return self._tracker

    def forget_partition(self, partition: int) -> None:
        """The consumer lost, re-gained or seeked ``partition``: see :meth:`SequenceTracker.forget_partition`."""
        if self._tracker is not None:
            self._tracker.forget_partition(partition)

    def verify(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        partition: int,
        *,
        broker_time_ms: int | None = None,
    ) -> Verdict:
        """Judge one consumed record. Never raises for a bad record.

        ``headers`` as confluent-kafka returns them (``msg.headers()``, possibly None);
        ``partition`` is the partition the record was read from. ``broker_time_ms``: pass the
        record timestamp only if the topic uses ``message.timestamp.type=LogAppendTime``; then a
        revoked key is also refused for records the broker appended after the revocation,
        whatever signing time the thief wrote (spec §8.3).
        """
        if not headers:
            return _malformed("record is not signed (no headers)")
        try:
            h = dict(headers)
        except (TypeError, ValueError):
            return _malformed("headers are not (name, value) pairs")
        if len(h) != len(headers):
            # Two copies of a signed header would let the verifier check one and a sink read the other.
            seen: set[str] = set()
            for name, _ in headers:
                if name in seen and name in _WATCHED:
                    return _malformed(f"header {name!r} appears more than once")
                seen.add(name)
        get = h.get
        kid = get(H_KID)
        alg = get(H_ALG)
        stream = get(H_STREAM)
        seq = get(H_SEQ)
        proof = get(H_PROOF)
        sig = get(H_SIG)
        if kid is None or alg is None or stream is None or seq is None or proof is None or sig is None:
            present = [n for n in SIGNATURE_HEADERS if get(n) is not None]
            if not present:
                return _malformed("record is not signed (no govbus_sig headers)")
            missing = ", ".join(n for n in SIGNATURE_HEADERS if get(n) is None)
            return _malformed(f"missing signature header(s): {missing}")
        if alg != ALG_BYTES:
            return _malformed(f"unsupported signature suite {_show(alg)}; this verifier knows {ALG!r}")
        vk = self._keyring._table.get(kid)
        if vk is None:
            return Verdict(VerdictCode.UNKNOWN_KID, f"kid {_show(kid)} is not in the keyring")
        plen = len(proof)
        if (
            len(seq) != _SEQ_SIZE
            or len(sig) != SIGNATURE_SIZE
            or plen < _PROOF_MIN
            or plen > _PROOF_MAX
            or (plen - _PROOF_MIN) % HASH_SIZE
            or not 0 < len(stream) <= MAX_STREAM_ID
            or value is None
        ):
            return self._shape_error(value, stream, seq, proof, sig)
        try:
            signed_partition, sequence = SEQ.unpack(seq)
            if signed_partition != partition:
                return _bad(f"record was signed for partition {signed_partition} but read from partition {partition}")
            signed_at, size, index = PROOF_HEAD.unpack_from(proof)
            ce_id = get(CE_ID)
            ce_type = get(CE_TYPE)
            ce_source = get(CE_SOURCE)
            ce_time = get(CE_TIME)
            null = NULL_LENGTH
            head = EVENT_HEAD.pack(
                partition,
                sequence,
                len(kid),
                len(stream),
                null if ce_id is None else len(ce_id),
                null if ce_type is None else len(ce_type),
                null if ce_source is None else len(ce_source),
                null if ce_time is None else len(ce_time),
                null if key is None else len(key),
                len(value),
            )
            leaf = hashlib.sha256(
                b"".join(
                    (
                        _LEAF_PREFIX,
                        head,
                        kid,
                        stream,
                        ce_id or b"",
                        ce_type or b"",
                        ce_source or b"",
                        ce_time or b"",
                        key or b"",
                        value,
                    )
                )
            ).digest()
        except (TypeError, struct.error):
            # Header values, key or value of the wrong type (str instead of bytes, say).
            return _malformed("header values, record key and value must be bytes")
        cached = self._cache.check(sig, kid, signed_at, size, leaf, index, proof) if size > 1 else None
        if cached is None:
            climbed = climb(leaf, index, size, proof, _PROOF_MIN) if size <= MAX_TREE_SIZE else None
            if climbed is None:
                return _bad(_misfit(index, size))
            nodes, offsets = climbed
            self.signature_checks += 1
            message = batch_message(kid=kid, signed_at_ms=signed_at, tree_size=size, root=nodes[-1])
            try:
                vk.public.verify(sig, message)
            except InvalidSignature:
                return _bad(_forged(vk))
            # A batch of one (per-event mode) never comes back: caching it would only evict others.
            if size > 1:
                self._cache.admit(sig, kid, signed_at, size, index, proof, nodes, offsets)
        elif cached:
            self.cache_hits += 1
        else:
            # Not part of the batch the signature covers: its root differs from the signed one, so
            # the signature check would fail. Same detail as a cold verifier would give.
            return _bad(_misfit(index, size) if climb(leaf, index, size, proof, _PROOF_MIN) is None else _forged(vk))
        if signed_at >= vk.revoked_at or (broker_time_ms is not None and broker_time_ms >= vk.revoked_at):
            return self._revoked(vk, signed_at, broker_time_ms)
        if signed_at < vk.not_before or signed_at >= vk.not_after:
            return self._expired(vk, signed_at)
        tracker = self._tracker
        if tracker is None:
            return VALID
        return tracker.observe(stream, partition, sequence, ce_id)

    # -- slow paths: only reached by records that are rejected ---------------------------------
    @staticmethod
    def _shape_error(value: bytes | None, stream: bytes, seq: bytes, proof: bytes, sig: bytes) -> Verdict:
        if value is None:
            return _malformed("record has no value (tombstone); only events are signed")
        if len(seq) != _SEQ_SIZE:
            return _malformed(f"{H_SEQ} is {len(seq)} bytes, expected {_SEQ_SIZE}")
        if len(sig) != SIGNATURE_SIZE:
            return _malformed(f"{H_SIG} is {len(sig)} bytes, expected {SIGNATURE_SIZE}")
        if not 0 < len(stream) <= MAX_STREAM_ID:
            return _malformed(f"{H_STREAM} is {len(stream)} bytes, expected 1-{MAX_STREAM_ID}")
        return _malformed(f"{H_PROOF} is {len(proof)} bytes, expected {_PROOF_MIN} + 32*k with k <= 16 sibling hashes")

    @staticmethod
    def _revoked(vk: _VerifyKey, signed_at: int, broker_time_ms: int | None) -> Verdict:
        revoked = _iso(vk.revoked_at)
        if signed_at >= vk.revoked_at:
            when = f"signed at {_iso(signed_at)}"
        else:
            when = f"appended by the broker at {_iso(broker_time_ms or 0)}"
        return Verdict(VerdictCode.REVOKED_KID, f"kid {vk.kid!r} was revoked at {revoked}; record {when}")

    @staticmethod
    def _expired(vk: _VerifyKey, signed_at: int) -> Verdict:
        at = _iso(signed_at)
        if signed_at < vk.not_before:
            edge = f"before its not_before {_iso(vk.not_before)}"
        else:
            edge = f"at or after its not_after {_iso(vk.not_after)}"
        return Verdict(VerdictCode.EXPIRED_KID, f"kid {vk.kid!r} signed at {at}, {edge}")
