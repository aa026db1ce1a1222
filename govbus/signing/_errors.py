"""Errors raised by the signing library.

Verification never raises for a bad record: it returns a :class:`~govbus.signing.Verdict`. These
errors are for the operator's side (key files, keyrings, signer input), and their messages never
carry private key material: parsing errors from key files are raised ``from None`` because the
underlying exceptions (``json.JSONDecodeError.doc`` for instance) can hold the file's contents.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from govbus.errors import GovbusError


class SigningError(GovbusError):
    """Root of the signing library's errors."""


class KeyFileError(SigningError):
    """A private key file is missing, unreadable, of the wrong kind or malformed. ``path`` names it."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"private key file {path}: {message}")
        self.path = Path(path)


class InsecureKeyFileError(KeyFileError):
    """A private key file can be read or written by group or others; ``mode`` is its permission bits."""

    def __init__(self, path: Path | str, mode: int) -> None:
        self.mode = mode
        super().__init__(
            path,
            f"permissions {mode:04o} let group/others access it; refusing to use it. "
            f"Run: chmod 600 {shlex.quote(str(path))}",
        )


class KeyringError(SigningError):
    """A keyring (JWKS) file or entry is invalid, or an operation names a kid it does not hold."""


class SignInputError(SigningError, ValueError):
    """A record handed to the signer cannot be signed; ``index`` is its position in the batch."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"record {index} of the batch cannot be signed: {message}")
        self.index = index
