"""Signing and verification of governance events: Ed25519 over Merkle batches (docs/signing.md).

Producer side::

    signer = Signer(load_private_key("keys/k1.pem"), mode="batch")
    headers = signer.sign_batch([SignInput(value, key, ce_id, ce_type, ce_source, ce_time, partition)])

Consumer side::

    verifier = Verifier(Keyring.load("keyring.json"))
    verdict = verifier.verify(msg.value(), msg.key(), msg.headers(), msg.partition())
    if not verdict.deliver: dead_letter(msg, verdict)

The library works on plain bytes and knows nothing of Kafka clients or Avro.
"""

from govbus.signing._canonical import ALG, SIGNATURE_HEADERS, SIGNED_CE_HEADERS
from govbus.signing._errors import (
    InsecureKeyFileError,
    KeyFileError,
    KeyringError,
    SigningError,
    SignInputError,
)
from govbus.signing._keyring import KeyEntry, Keyring, KeyStatus
from govbus.signing._keys import SigningKey, load_private_key, write_private_key
from govbus.signing._sequence import SequenceTracker
from govbus.signing._settings import SigningSettings
from govbus.signing._signer import Signer, SigningMode, SignInput
from govbus.signing._verdict import Verdict, VerdictCode
from govbus.signing._verifier import Verifier

__all__ = [
    "ALG",
    "SIGNATURE_HEADERS",
    "SIGNED_CE_HEADERS",
    "InsecureKeyFileError",
    "KeyEntry",
    "KeyFileError",
    "KeyStatus",
    "Keyring",
    "KeyringError",
    "SequenceTracker",
    "SignInput",
    "SignInputError",
    "Signer",
    "SigningError",
    "SigningKey",
    "SigningMode",
    "SigningSettings",
    "Verdict",
    "VerdictCode",
    "Verifier",
    "load_private_key",
    "write_private_key",
]
