"""The verify stage: a verdict per record from the signing library, and the per-sink policy for it.

The runtime depends only on :class:`RecordVerifier` (``govbus.signing.Verifier`` satisfies it
structurally), so tests and other signature schemes can plug in their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from govbus.consumers._settings import Action, SinkRuntimeSettings, VerdictPolicy
from govbus.errors import ConfigError

__all__ = ["RecordVerifier", "VerdictLike", "Verification", "build_verification"]

log = logging.getLogger("govbus.consumers.verify")


class VerdictLike(Protocol):
    """A verdict: ``code`` is a stable string (``valid``, ``bad-signature``, ``gap``…)."""

    @property
    def code(self) -> str: ...

    @property
    def detail(self) -> str: ...


class RecordVerifier(Protocol):
    """Judges one consumed record; never raises for a bad record."""

    def verify(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        partition: int,
        *,
        broker_time_ms: int | None = None,
    ) -> VerdictLike: ...


class Verification:
    """Verifies records and maps verdicts to actions with a :class:`VerdictPolicy`.

    ``verifier`` judges records read from the event topic and tracks sequences (gaps, replays).
    ``replay_verifier`` judges dead letters put back by ``govbus dlq replay``: they are checked
    for authenticity only, because a record that comes back out of order is no replay attack.
    """

    def __init__(
        self,
        verifier: RecordVerifier,
        policy: VerdictPolicy,
        *,
        replay_verifier: RecordVerifier | None = None,
        keyring_path: Path | None = None,
    ) -> None:
        self.verifier = verifier
        self.replay_verifier = replay_verifier or verifier
        self.policy = policy
        self._keyring_path = keyring_path
        self._keyring_mtime = _mtime(keyring_path)

    def judge(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        partition: int,
        *,
        broker_time_ms: int | None = None,
        replayed: bool = False,
    ) -> tuple[Action, str, str]:
        """(action, verdict code, detail) for one record."""
        verifier = self.replay_verifier if replayed else self.verifier
        verdict = verifier.verify(value, key, headers, partition, broker_time_ms=broker_time_ms)
        code = str(verdict.code)
        return self.policy.action(code), code, verdict.detail

    def forget(self, partition: int) -> None:
        """The consumer lost or re-gained ``partition``: records re-read from it are no replays."""
        _forget(self.verifier, partition)

    def maybe_reload(self) -> bool:
        """Swap in the keyring file if it changed (rotation, revocation); True when it did."""
        path = self._keyring_path
        if path is None:
            return False
        mtime = _mtime(path)
        if mtime is None or mtime == self._keyring_mtime:
            return False
        from govbus.signing import Keyring, SigningError

        try:
            keyring = Keyring.load(path)
        except (SigningError, OSError) as exc:
            log.error("keyring %s changed but cannot be loaded; keeping the previous one: %s", path, exc)
            self._keyring_mtime = mtime
            return False
        for v in {id(self.verifier): self.verifier, id(self.replay_verifier): self.replay_verifier}.values():
            replace = getattr(v, "replace_keyring", None)
            if callable(replace):
                replace(keyring)
        self._keyring_mtime = mtime
        log.info("reloaded keyring %s (%d keys)", path, len(keyring))
        return True


def _forget(verifier: object, partition: int) -> None:
    forget = getattr(verifier, "forget_partition", None)
    if forget is None:
        tracker = getattr(verifier, "tracker", None)
        forget = getattr(tracker, "forget_partition", None)
    if callable(forget):
        forget(partition)


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def build_verification(sink: SinkRuntimeSettings, signing: Any | None = None) -> Verification | None:
    """The verify stage from settings, or None when verification is off / has no keyring.

    ``signing`` is the top-level ``SigningSettings`` (``GOVBUS_SIGNING__*``) when the settings
    tree has one: its keyring path is the default and its cache/window sizes are used.
    """
    mode = sink.verify.mode
    if mode == "off":
        return None
    path = sink.verify.keyring or (getattr(signing, "keyring_path", None) if signing is not None else None)
    if path is None:
        if mode == "required":
            raise ConfigError(
                "GOVBUS_SINK__VERIFY__KEYRING",
                "verification is required (GOVBUS_SINK__VERIFY__MODE=required) but no keyring is configured; "
                "set it or GOVBUS_SIGNING__KEYRING to a JWKS file",
            )
        return None
    from govbus.signing import Keyring, SequenceTracker, SigningError, SigningSettings, Verifier

    try:
        keyring = Keyring.load(path)
    except (SigningError, OSError) as exc:
        raise ConfigError("GOVBUS_SINK__VERIFY__KEYRING", f"cannot load keyring {path}: {exc}") from None
    s = signing if isinstance(signing, SigningSettings) else SigningSettings()
    tracker = SequenceTracker(max_streams=s.max_streams, replay_window=s.replay_window)
    verifier = Verifier(keyring, root_cache_size=s.root_cache_size, tracker=tracker)
    replay_verifier = Verifier(keyring, root_cache_size=0, track_sequences=False)
    log.info("verifying signatures with keyring %s (%d keys)", path, len(keyring))
    return Verification(verifier, sink.verify.policy, replay_verifier=replay_verifier, keyring_path=Path(path))
