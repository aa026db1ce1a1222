"""The audit ledger sink: every event, once, in an append-only, hash-chained file.

Each entry holds the previous entry's hash, the event (CloudEvents JSON), the original record
(value, key, headers) and its signature headers, so ``govbus audit verify`` can re-check every
signature years later without Kafka. Events already in the ledger are skipped (de-duplication by
event id), so a restart that redelivers uncommitted records adds nothing twice. Checkpoints —
entries signing the chain's head with the sink's own Ed25519 key — are appended every
``checkpoint_every`` events, every ``checkpoint_interval_s`` seconds when events came in between,
and at close. A batch is acknowledged only after its entries were fsynced.

Format: docs/audit-ledger.md. Writer and verifier: ``_ledger``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from pydantic import Field

from govbus.consumers._spi import OK, Batch, Rejected, SinkBase, SinkContext, WriteResult
from govbus.consumers.sinks._ledger import LedgerError, LedgerWriter, native_ledger_format
from govbus.consumers.sinks._options import SinkOptions, env_name, resolve_options
from govbus.errors import ConfigError
from govbus.signing import SigningError, SigningKey, load_private_key

__all__ = ["AuditSink", "AuditSinkOptions", "LedgerError"]

_log = logging.getLogger("govbus.consumers.sinks.audit")


class AuditSinkOptions(SinkOptions):
    """Options of the ``audit`` sink (``GOVBUS_SINK__OPTIONS__<NAME>``)."""

    # ``{sink}`` and ``{hostname}`` are replaced, so scaled-out instances each keep their own
    # ledger (one writer per ledger). No ``{pid}``: a restart must continue the same chain.
    path: Path
    # The sink's own Ed25519 private key (PEM or JWK, mode 0600) that signs checkpoints; its
    # public key goes into the keyring `govbus audit verify --keyring` reads.
    checkpoint_key: Path | None = None
    checkpoint_kid: str | None = None
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    # Off only for throwaway ledgers: acknowledged events could be lost in a power cut.
    fsync: bool = True
    dedup_window: int = Field(default=100_000, ge=1)


class AuditSink(SinkBase):
    """Appends events to an audit ledger; see the module docstring."""

    # The compiled core drafts each record's ledger entry in its decoding pass
    # (_native_draft_format): the writer seals drafts and never reads the Python event of a record
    # that has one (records without one are sealed from their event, decoded when read).
    reads_events = False

    def __init__(self, options: AuditSinkOptions | None = None, /, **raw: Any) -> None:
        self.options = resolve_options(AuditSinkOptions, options, raw)
        self._ledger: LedgerWriter | None = None

    def open(self, context: SinkContext) -> None:
        super().open(context)
        o = self.options
        key: SigningKey | None = None
        if o.checkpoint_key is not None:
            try:
                key = load_private_key(o.checkpoint_key, kid=o.checkpoint_kid)
            except SigningError as exc:
                raise ConfigError(env_name("checkpoint_key"), str(exc)) from None
        else:
            _log.warning(
                "audit sink: no checkpoint_key, so the ledger head is never signed; a rewritten "
                "ledger is then only detectable against a copy of its head kept elsewhere"
            )
        path = Path(str(o.path).replace("{sink}", context.name).replace("{hostname}", socket.gethostname()))
        ledger = LedgerWriter(
            path,
            checkpoint_key=key,
            checkpoint_every=o.checkpoint_every,
            checkpoint_interval_s=o.checkpoint_interval_s,
            fsync=o.fsync,
            dedup_window=o.dedup_window,
        )
        ledger.open()
        self._ledger = ledger

    def _native_draft_format(self) -> Any | None:
        """For the runtime's intake: what it drafts ledger entries with (None: it does not)."""
        return native_ledger_format()

    def write(self, batch: Batch) -> WriteResult | None:
        ledger = self._require()
        conflicts = ledger.append(batch)
        if ledger.checkpoint_due():
            ledger.checkpoint()
        ledger.sync()
        if conflicts:
            _log.warning("audit sink: %d event(s) reuse an id already ledgered with other content", len(conflicts))
            return Rejected(conflicts)
        return OK

    def flush(self, timeout: float) -> None:
        ledger = self._require()
        if ledger.checkpoint_due():
            ledger.checkpoint()
        ledger.sync()

    def close(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is None:
            return
        try:
            ledger.checkpoint()
        except LedgerError as exc:
            _log.warning("audit sink: no final checkpoint: %s", exc)
        finally:
            ledger.close()

    def _require(self) -> LedgerWriter:
        if self._ledger is None:
            raise LedgerError(f"audit ledger {self.options.path} is not open")
        return self._ledger
