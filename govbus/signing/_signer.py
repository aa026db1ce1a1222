"""The producer side: numbers records per partition, hashes them, signs batches (docs/signing.md §6).

One Ed25519 signature covers the Merkle root of a whole batch; each record carries that signature
and its own inclusion path, so each stays verifiable alone, in whatever partition it lands.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from govbus.signing._canonical import (
    ALG_BYTES,
    EVENT_HEAD,
    EVENT_TAG,
    H_ALG,
    H_KID,
    H_PROOF,
    H_SEQ,
    H_SIG,
    H_STREAM,
    LEAF_PREFIX,
    MAX_STREAM_ID,
    MAX_TREE_SIZE,
    NULL_LENGTH,
    PROOF_HEAD,
    SEQ,
    batch_message,
)
from govbus.signing._errors import SigningError, SignInputError
from govbus.signing._keyring import Keyring, KeyStatus
from govbus.signing._keys import SigningKey, load_private_key
from govbus.signing._merkle import build

if TYPE_CHECKING:
    from govbus.signing._settings import SigningSettings

SigningMode = Literal["batch", "per-event"]
Headers = list[tuple[str, bytes]]
# govbus._native.sign_records: (kid, stream, next sequence per partition, records, signed_at_ms,
# the kid/alg/stream headers, sign(root) -> signature) -> the next sequences after, or None.
SignRecords = Callable[
    [bytes, bytes, dict[int, int], Sequence[Any], int, tuple[tuple[str, bytes], ...], Callable[[bytes], bytes]],
    dict[int, int] | None,
]

# Signer.sign_with's step: (kid, stream, next sequence per partition, signed_at_ms, the
# kid/alg/stream headers, sign(root[, tree_size]) -> signature) -> the next sequences after, or None.
SignStep = Callable[
    [bytes, bytes, dict[int, int], int, tuple[tuple[str, bytes], ...], Callable[..., bytes]],
    dict[int, int] | None,
]

_MAX_SEQUENCE = (1 << 64) - 1


class SignInput(NamedTuple):
    """One record to sign. A NamedTuple because the signer unpacks thousands per batch.

    ``ce_*`` are the CloudEvents attribute values; the producer must write them as the Kafka
    headers ``ce_id``… encoded exactly as ``value.encode("utf-8")`` (``ce_time`` None means the
    record carries no ``ce_time`` header). ``partition`` is the partition the record will be
    produced to: the producer has to choose it before signing (``produce(..., partition=p)``).
    """

    value: bytes
    key: bytes | None
    ce_id: str
    ce_type: str
    ce_source: str
    ce_time: str | None
    partition: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Signer:
    """Signs records for one producer stream of one topic.

    The signer owns the numbering: it keeps the next sequence number per partition, starting
    at 0 (or at ``next_sequences``), and assigns numbers in the order records are handed to it.
    The stream id defaults to 16 random bytes, i.e. a new stream per Signer: a restarted producer
    starts a new stream instead of reusing numbers. To continue a stream across restarts, persist
    ``stream_id`` and :meth:`next_sequences` and pass them back.

    Sign each record once and retry the signed bytes: re-signing a record gives it a new number,
    which verifiers then see as a gap (the old number) and a replay (the event id).

    Modes: ``batch`` signs the Merkle root of each ``sign_batch`` call once (one Ed25519
    signature per batch); ``per-event`` signs every record on its own (a tree of one leaf), for
    low volumes where a batch would wait too long to fill. Thread-safe; calls are serialised.
    """

    def __init__(
        self,
        key: SigningKey,
        *,
        mode: SigningMode = "batch",
        stream_id: bytes | None = None,
        next_sequences: Mapping[int, int] | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        if not isinstance(key, SigningKey):
            raise SigningError("Signer needs a SigningKey (see load_private_key)")
        if mode not in ("batch", "per-event"):
            raise SigningError(f"unknown signing mode {mode!r}; use 'batch' or 'per-event'")
        stream = os.urandom(16) if stream_id is None else bytes(stream_id)
        if not 1 <= len(stream) <= MAX_STREAM_ID:
            raise SigningError(f"a stream id is 1-{MAX_STREAM_ID} bytes, got {len(stream)}")
        self._key = key
        self._mode: SigningMode = mode
        self._stream = stream
        self._clock = clock_ms
        self._next: dict[int, int] = {}
        for partition, seq in (next_sequences or {}).items():
            if partition < 0 or not 0 <= seq <= _MAX_SEQUENCE:
                raise SigningError(f"invalid next sequence {seq} for partition {partition}")
            self._next[partition] = seq
        self._lock = threading.Lock()
        kid = key.kid.encode("utf-8")
        self._kid = kid
        self._kid_len = len(kid)
        self._stream_len = len(stream)
        self._kid_stream = kid + stream
        self._leaf_prefix = LEAF_PREFIX + EVENT_TAG
        self._fixed = ((H_KID, kid), (H_ALG, ALG_BYTES), (H_STREAM, stream))

    @classmethod
    def from_settings(cls, settings: SigningSettings, *, keyring: Keyring | None = None) -> Signer:
        """Load the private key named by ``settings`` and refuse to start with a key verifiers reject.

        With a keyring (given, or loaded from ``settings.keyring_path``) the kid must be there,
        active, valid now and hold the same public key: failing closed here beats producing
        events that every sink dead-letters.
        """
        if settings.private_key_path is None:
            raise SigningError("signing.private_key_path is not set (GOVBUS_SIGNING__PRIVATE_KEY_PATH)")
        key = load_private_key(settings.private_key_path, kid=settings.kid)
        if keyring is None and settings.keyring_path is not None:
            keyring = Keyring.load(settings.keyring_path)
        if keyring is not None:
            entry = keyring.get(key.kid)
            if entry is None:
                raise SigningError(f"kid {key.kid!r} is not in the keyring; verifiers would reject it")
            if entry.public_key != key.public_bytes:
                raise SigningError(f"the keyring holds a different public key for kid {key.kid!r}")
            if entry.status is not KeyStatus.ACTIVE:
                raise SigningError(f"kid {key.kid!r} is {entry.status.value}; sign with an active key")
            now = datetime.now(UTC)
            if (entry.not_before and now < entry.not_before) or (entry.not_after and now >= entry.not_after):
                raise SigningError(f"kid {key.kid!r} is outside its validity window now")
        return cls(key, mode=settings.mode)

    @property
    def kid(self) -> str:
        return self._key.kid

    @property
    def mode(self) -> SigningMode:
        return self._mode

    @property
    def stream_id(self) -> bytes:
        return self._stream

    def next_sequences(self) -> dict[int, int]:
        """The next sequence number per partition seen so far (to persist and resume a stream)."""
        with self._lock:
            return dict(self._next)

    def __repr__(self) -> str:
        return f"Signer(kid={self.kid!r}, mode={self._mode!r}, stream={self._stream.hex()})"

    def sign(self, record: SignInput) -> Headers:
        """Sign one record on its own (a batch of one)."""
        return self.sign_batch((record,))[0]

    def sign_batch(self, records: Sequence[SignInput]) -> list[Headers]:
        """Number and sign ``records``; return, per record, the headers to append to it.

        All or nothing: if any record is invalid, :class:`SignInputError` names it and no
        sequence number is consumed.
        """
        if not records:
            return []
        with self._lock:
            counters = dict(self._next)
            signed_at = self._clock()
            out: list[Headers] = []
            for start in range(0, len(records), MAX_TREE_SIZE):
                chunk = records[start : start + MAX_TREE_SIZE]
                try:
                    leaves, seqs = self._hash(chunk, counters)
                except (AttributeError, TypeError, ValueError, struct.error, OverflowError):
                    self._raise_bad_input(records)
                    raise
                if self._mode == "batch":
                    out.extend(self._sign_tree(leaves, seqs, signed_at))
                else:
                    out.extend(self._sign_each(leaves, seqs, signed_at))
            self._next = counters
            return out

    def sign_in_place(self, sign_records: SignRecords, records: Sequence[Any]) -> bool:
        """:meth:`sign_batch` done by ``sign_records`` (the compiled core's): numbering, leaf hashes
        and Merkle paths of records that have ``value``, ``key``, ``headers`` and ``partition``
        (the signed CloudEvents attributes read from their headers as ``sign_input`` reads them);
        this signer signs the root; each record's ``headers`` becomes its headers plus the
        signature headers. Batch mode only. False (nothing consumed, nothing changed) when
        ``sign_records`` declines the batch: :meth:`sign_batch` then says what is wrong with it."""
        if not records or len(records) > MAX_TREE_SIZE:
            return False
        return self.sign_with(
            lambda kid, stream, counters, signed_at, fixed, sign: sign_records(
                kid, stream, counters, records, signed_at, fixed, sign
            ),
            len(records),
        )

    def sign_with(self, step: SignStep, size: int | None = None) -> bool:
        """One batch signed by ``step`` (the compiled core's): under this signer's lock, ``step(kid,
        stream, next sequence per partition, signed_at_ms, the kid/alg/stream headers, sign)``
        numbers, hashes and builds the tree of its records and calls ``sign(root)`` once, for this
        signer to sign the batch message of the root (the tree size: ``size``, or the number of
        records the tree was built for); it returns the next sequences after, or None when it
        declined (nothing consumed). Batch mode only: False without calling ``step`` otherwise."""
        if self._mode != "batch":
            return False
        with self._lock:
            signed_at = self._clock()
            kid, key = self._kid, self._key

            def sign(root: bytes, tree_size: int | None = size) -> bytes:
                assert tree_size is not None
                return key.sign(batch_message(kid=kid, signed_at_ms=signed_at, tree_size=tree_size, root=root))

            after = step(kid, self._stream, self._next, signed_at, self._fixed, sign)
            if after is None:
                return False
            self._next = after
            return True

    def _hash(self, records: Sequence[SignInput], counters: dict[int, int]) -> tuple[list[bytes], Headers]:
        # The hot loop: canonical event bytes (docs/signing.md §3) inlined, names bound locally.
        sha256 = hashlib.sha256
        join = b"".join
        pack_head = EVENT_HEAD.pack
        pack_seq = SEQ.pack
        prefix = self._leaf_prefix
        kid_stream = self._kid_stream
        lk = self._kid_len
        ls = self._stream_len
        null = NULL_LENGTH
        leaves: list[bytes] = []
        seqs: Headers = []
        add_leaf = leaves.append
        add_seq = seqs.append
        for value, key, ce_id, ce_type, ce_source, ce_time, partition in records:
            seq = counters.get(partition, 0)
            counters[partition] = seq + 1
            a = ce_id.encode()
            b = ce_type.encode()
            c = ce_source.encode()
            if ce_time is None:
                d = b""
                ld = null
            else:
                d = ce_time.encode()
                ld = len(d)
            if key is None:
                k = b""
                lkey = null
            else:
                k = key
                lkey = len(key)
            head = pack_head(partition, seq, lk, ls, len(a), len(b), len(c), ld, lkey, len(value))
            add_leaf(sha256(join((prefix, head, kid_stream, a, b, c, d, k, value))).digest())
            add_seq((H_SEQ, pack_seq(partition, seq)))
        return leaves, seqs

    def _sign_tree(self, leaves: list[bytes], seqs: Headers, signed_at: int) -> list[Headers]:
        n = len(leaves)
        root, paths = build(leaves)
        message = batch_message(kid=self._kid, signed_at_ms=signed_at, tree_size=n, root=root)
        sig = (H_SIG, self._key.sign(message))
        kid_h, alg_h, stream_h = self._fixed
        pack_proof = PROOF_HEAD.pack
        return [
            [kid_h, alg_h, stream_h, seqs[i], (H_PROOF, pack_proof(signed_at, n, i) + paths[i]), sig] for i in range(n)
        ]

    def _sign_each(self, leaves: list[bytes], seqs: Headers, signed_at: int) -> list[Headers]:
        kid_h, alg_h, stream_h = self._fixed
        proof = (H_PROOF, PROOF_HEAD.pack(signed_at, 1, 0))
        sign = self._key.sign
        kid = self._kid
        return [
            [
                kid_h,
                alg_h,
                stream_h,
                seq,
                proof,
                (H_SIG, sign(batch_message(kid=kid, signed_at_ms=signed_at, tree_size=1, root=leaf))),
            ]
            for leaf, seq in zip(leaves, seqs, strict=True)
        ]

    def _raise_bad_input(self, records: Sequence[SignInput]) -> None:
        """Slow path after the hot loop failed: find the first bad record and say what is wrong."""
        for i, record in enumerate(records):
            if not isinstance(record, tuple) or len(record) != len(SignInput._fields):
                raise SignInputError(i, "is not a SignInput")
            r = SignInput(*record)
            if not isinstance(r.value, bytes | bytearray | memoryview):
                raise SignInputError(i, "value must be bytes")
            if r.key is not None and not isinstance(r.key, bytes | bytearray | memoryview):
                raise SignInputError(i, "key must be bytes or None")
            for name in ("ce_id", "ce_type", "ce_source", "ce_time"):
                text = getattr(r, name)
                if text is None and name == "ce_time":
                    continue
                if not isinstance(text, str):
                    raise SignInputError(i, f"{name} must be a str")
                try:
                    text.encode()
                except UnicodeEncodeError:
                    raise SignInputError(i, f"{name} is not encodable as UTF-8") from None
            if not isinstance(r.partition, int) or not 0 <= r.partition <= 0x7FFFFFFF:
                raise SignInputError(i, f"partition must be an int in 0..2**31-1, got {r.partition!r}")
