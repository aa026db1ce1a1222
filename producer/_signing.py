"""Signing on the producer: a :class:`~govbus.producer.BatchHook` that signs each micro-batch.

The Bus hands the hook records whose partition is already chosen, right before ``produce()``,
and produces each record it was given exactly once, so every event is signed exactly once and
numbered in the stream of the partition it really lands in (what verifiers need for gap and
replay detection). One Merkle-batched Ed25519 signature covers up to
``signing.batch_max_records`` records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import govbus._accel
from govbus.signing import Signer, SigningSettings, SignInput

if TYPE_CHECKING:
    from govbus.producer._batch import OutgoingRecord

_CE = ("ce_id", "ce_type", "ce_source", "ce_time")


class SigningHook:
    """Appends the signature headers to every record of a micro-batch."""

    def __init__(self, signer: Signer, batch_max_records: int = 512) -> None:
        self.signer = signer
        self._chunk = batch_max_records
        # The compiled core numbers, hashes and builds each batch's tree (docs/native.md).
        self._native = govbus._accel.record_signer()

    def fusable(self, batch: int) -> bool:
        """Whether the sender may sign batches of up to ``batch`` records itself, in the compiled
        call that encodes them, exactly as this hook would (one tree per batch, batch mode)."""
        return self._native is not None and self.signer.mode == "batch" and self._chunk >= batch

    @classmethod
    def from_settings(cls, settings: SigningSettings) -> SigningHook:
        return cls(Signer.from_settings(settings), settings.batch_max_records)

    def __call__(self, topic: str, records: Sequence[OutgoingRecord]) -> None:
        for start in range(0, len(records), self._chunk):
            chunk = records[start : start + self._chunk]
            if self._native is not None and self.signer.sign_in_place(self._native, chunk):
                continue
            signed = self.signer.sign_batch([sign_input(r.value, r.key, r.headers, r.partition) for r in chunk])
            for record, extra in zip(chunk, signed, strict=True):
                record.headers = [*record.headers, *extra]


def sign_input(value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]], partition: int) -> SignInput:
    """What the signer needs of a record about to be produced to ``partition``: its value, key and
    the signed CloudEvents headers, read from the headers it will carry."""
    found: dict[str, str] = {}
    for name, raw in headers:
        if name in _CE:
            found[name] = raw.decode("utf-8")
    return SignInput(
        value,
        key,
        found.get("ce_id", ""),
        found.get("ce_type", ""),
        found.get("ce_source", ""),
        found.get("ce_time"),
        partition,
    )
