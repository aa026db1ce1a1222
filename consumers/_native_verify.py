"""The verify stage on the compiled core: authenticity of a whole batch in one native call.

The native checker (``govbus._native.SignatureChecker``) computes each record's canonical bytes,
leaf hash and inclusion proof and checks the batch signature once per batch (a cache of verified
roots). It answers only "authentic"; every other record is judged by the Python
:class:`~govbus.signing.Verifier` exactly as before, so verdicts and their wording are the
reference's. Key validity in time, revocation and sequence tracking run here, in Python, in
record order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from govbus import _accel as native
from govbus.consumers._settings import Action
from govbus.consumers._verify import Verification
from govbus.signing import Verifier
from govbus.signing._verdict import VALID, Verdict

__all__ = ["NativeVerify"]

log = logging.getLogger("govbus.consumers.intake")

# (value, key, headers, partition the signature binds, broker time or None)
Item = tuple[bytes, bytes | None, Sequence[tuple[str, bytes | None]], int, int | None]


class NativeVerify:
    def __init__(self, verification: Verification, checker: Any) -> None:
        self.verification = verification
        self._checker = checker
        self._table: object = None

    @classmethod
    def build(cls, verification: Verification | None) -> NativeVerify | None:
        """None unless the compiled core is in use and the verifier is govbus's own."""
        if verification is None or type(verification.verifier) is not Verifier:
            return None
        checker = native.signature_checker(verification.verifier._cache_size)
        return None if checker is None else cls(verification, checker)

    @property
    def checker(self) -> Any:
        """The native checker (``govbus._native.SignatureChecker``), its keys in sync after :meth:`sync_keys`."""
        return self._checker

    def sync_keys(self) -> dict[bytes, Any]:
        """Hands the checker the keyring's keys if they changed; the keyring's table."""
        verifier = self.verification.verifier
        assert isinstance(verifier, Verifier)
        table = verifier.keyring._table
        if table is not self._table:  # a reloaded keyring, or one mutated (it is re-indexed whole)
            self._checker.set_keys({kid: vk.public.public_bytes_raw() for kid, vk in table.items()})
            self._table = table
        return table

    def judge_one(
        self,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        partition: int,
        broker_time_ms: int | None,
        authentic: tuple[bytes, bytes, int, int, bytes | None] | None,
    ) -> Verdict:
        """The verdict for one record, given what the native checker answered for it."""
        verifier = self.verification.verifier
        assert isinstance(verifier, Verifier)
        vk = None if authentic is None else verifier.keyring._table.get(authentic[0])
        if authentic is None or vk is None:
            return verifier.verify(value, key, headers, partition, broker_time_ms=broker_time_ms)
        # The tail of Verifier.verify, after the signature: the key's status, then sequence.
        _kid, stream, sequence, signed_at, ce_id = authentic
        if signed_at >= vk.revoked_at or (broker_time_ms is not None and broker_time_ms >= vk.revoked_at):
            return Verifier._revoked(vk, signed_at, broker_time_ms)
        if signed_at < vk.not_before or signed_at >= vk.not_after:
            return Verifier._expired(vk, signed_at)
        tracker = verifier.tracker
        return VALID if tracker is None else tracker.observe(stream, partition, sequence, ce_id)

    def judge(self, items: list[Item]) -> list[tuple[Action, str, str]]:
        """(action, verdict code, detail) per record, as ``Verification.judge`` gives them."""
        verification = self.verification
        self.sync_keys()
        try:
            found = self._checker.check([(v, k, h, p) for v, k, h, p, _ in items])
        except Exception:  # a fault of the binding itself: the Python verifier judges them all
            log.exception("native signature checker failed on a batch of %d records", len(items))
            found = [None] * len(items)
        policy = verification.policy
        return [
            _action(policy, self.judge_one(value, key, headers, partition, broker_time_ms, authentic))
            for (value, key, headers, partition, broker_time_ms), authentic in zip(items, found, strict=True)
        ]


def _action(policy: Any, verdict: Verdict) -> tuple[Action, str, str]:
    code = str(verdict.code)
    return policy.action(code), code, verdict.detail
