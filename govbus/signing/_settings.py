"""Signing settings, nested as ``signing`` in the top-level settings (env ``GOVBUS_SIGNING__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from govbus.errors import ConfigError
from govbus.signing._canonical import MAX_TREE_SIZE
from govbus.signing._errors import SigningError
from govbus.signing._keys import validate_kid


class SigningSettings(BaseModel):
    """Where the keys are and how records are batched for signing.

    ``keyring_path`` and ``key_dir`` also answer to ``keyring`` / ``key_dir`` so that the
    variables the CLI reads (``GOVBUS_SIGNING__KEYRING``, ``GOVBUS_SIGNING__KEY_DIR``) mean the
    same thing to the producer and consumers.

    A producer signs with ``private_key_path``; configured for signing without it, it refuses to
    start (:meth:`producer_signs`). Verify-only processes (sinks, the gate) never ask.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["batch", "per-event"] = "batch"
    kid: str | None = None
    private_key_path: Path | None = None
    keyring_path: Path | None = Field(default=None, validation_alias=AliasChoices("keyring_path", "keyring"))
    key_dir: Path | None = None
    # A batch closes at whichever comes first; 512 records make the one Ed25519 signature cost
    # under 0.1 µs per record, and the proof 9 hashes (288 bytes) per record.
    batch_max_records: int = Field(default=512, ge=1, le=MAX_TREE_SIZE)
    batch_max_delay_ms: int = Field(default=5, ge=0, le=60_000)
    root_cache_size: int = Field(default=1024, ge=0)
    replay_window: int = Field(default=8192, ge=0)
    max_streams: int = Field(default=4096, ge=1)

    @field_validator("kid")
    @classmethod
    def _kid(cls, kid: str | None) -> str | None:
        if kid is None:
            return None
        try:
            return validate_kid(kid)
        except SigningError as exc:
            raise ValueError(str(exc)) from None

    def producer_signs(self) -> bool:
        """Whether a producer with these settings signs its events (fail closed).

        True with ``private_key_path``; False when no signing setting is set at all. Any other
        signer setting without a private key raises :class:`ConfigError`: that producer would
        publish unsigned events while its operator believes them signed, and every verifier with
        the keyring would dead-letter them.
        """
        if self.private_key_path is not None:
            return True
        configured = [name for name in _SIGNER_FIELDS if name in self.model_fields_set]
        configured = [name for name in configured if getattr(self, name) is not None]
        if configured:
            given = ", ".join(f"GOVBUS_SIGNING__{_ENV.get(name, name).upper()}" for name in configured)
            raise ConfigError(
                "GOVBUS_SIGNING__PRIVATE_KEY_PATH",
                f"not set, but {given} {'are' if len(configured) > 1 else 'is'}: a producer configured for "
                "signing refuses to publish unsigned events. Set it to the private key file, or unset "
                "the signing settings to publish unsigned",
            )
        return False


# What only a signer reads; the verifier's settings (replay_window, root_cache_size, max_streams)
# are not here, so verify-only configuration never makes a producer refuse to start.
_SIGNER_FIELDS = ("kid", "key_dir", "keyring_path", "mode", "batch_max_records", "batch_max_delay_ms")
_ENV = {"keyring_path": "keyring"}
