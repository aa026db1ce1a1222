"""The signed byte layouts and header names of suite ``ed25519-merkle-v1`` (docs/signing.md §3-§5).

Everything in this module is wire format shared with other languages: changing a byte here breaks
every verifier in the field, so a change means a new suite name, not an edit. The signer and the
verifier inline these layouts in their hot loops for speed; the functions below are the readable
reference that the tests check those loops against.
"""

from __future__ import annotations

import hashlib
import struct

ALG = "ed25519-merkle-v1"
ALG_BYTES = ALG.encode("ascii")

# Signature headers (names are ASCII; values are binary unless said otherwise).
H_KID = "govbus_sig_kid"  # UTF-8 key id
H_ALG = "govbus_sig_alg"  # ASCII suite name, ALG
H_STREAM = "govbus_sig_stream"  # producer stream id, 1..64 raw bytes
H_SEQ = "govbus_sig_seq"  # u32 partition || u64 sequence, big-endian
H_PROOF = "govbus_sig_proof"  # u64 signed_at_ms || u32 tree_size || u32 leaf_index || 32-byte hashes
H_SIG = "govbus_sig"  # 64-byte Ed25519 signature over the batch message
SIGNATURE_HEADERS = (H_KID, H_ALG, H_STREAM, H_SEQ, H_PROOF, H_SIG)

# CloudEvents Kafka binding headers covered by the signature (their raw UTF-8 bytes are signed).
CE_ID = "ce_id"
CE_TYPE = "ce_type"
CE_SOURCE = "ce_source"
CE_TIME = "ce_time"
SIGNED_CE_HEADERS = (CE_ID, CE_TYPE, CE_SOURCE, CE_TIME)

# Domain separation: a tag opens each signed structure so bytes meant as one can never be
# accepted as the other, and RFC 6962's 0x00/0x01 prefixes keep leaves and inner nodes apart
# (without them a node could be passed off as a leaf: the second-preimage attack on Merkle trees).
EVENT_TAG = b"govbus/v1/event\x00"
BATCH_TAG = b"govbus/v1/batch\x00"
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

NULL_LENGTH = 0xFFFFFFFF  # the length written for an absent header or a null record key
MAX_STREAM_ID = 64
MAX_KID = 64
MAX_TREE_SIZE = 1 << 16  # bounds the proof to 16 hashes, so a verifier's work per record is bounded
HASH_SIZE = 32
SIGNATURE_SIZE = 64

# partition, sequence, then the lengths of kid, stream, ce_id, ce_type, ce_source, ce_time, key, value
EVENT_HEAD = struct.Struct(">IQ8I")
SEQ = struct.Struct(">IQ")
PROOF_HEAD = struct.Struct(">QII")  # signed_at_ms, tree_size, leaf_index
PROOF_BATCH_PART = 12  # the signed_at_ms and tree_size bytes, which every record of a batch shares
BATCH_HEAD = struct.Struct(">QIII")  # signed_at_ms, tree_size, len(alg), len(kid)


def _len(field: bytes | None) -> int:
    return NULL_LENGTH if field is None else len(field)


def event_bytes(
    *,
    kid: bytes,
    stream: bytes,
    partition: int,
    sequence: int,
    ce_id: bytes | None,
    ce_type: bytes | None,
    ce_source: bytes | None,
    ce_time: bytes | None,
    key: bytes | None,
    value: bytes,
) -> bytes:
    """The canonical bytes of one event (spec §3): a 60-byte fixed head, then the variable fields."""
    head = EVENT_HEAD.pack(
        partition,
        sequence,
        len(kid),
        len(stream),
        _len(ce_id),
        _len(ce_type),
        _len(ce_source),
        _len(ce_time),
        _len(key),
        len(value),
    )
    fields = (ce_id, ce_type, ce_source, ce_time, key)
    return b"".join((EVENT_TAG, head, kid, stream, *(f or b"" for f in fields), value))


def leaf_hash(event: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + event).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def batch_message(*, kid: bytes, signed_at_ms: int, tree_size: int, root: bytes) -> bytes:
    """The bytes the Ed25519 signature covers (spec §5)."""
    return b"".join(
        (BATCH_TAG, BATCH_HEAD.pack(signed_at_ms, tree_size, len(ALG_BYTES), len(kid)), ALG_BYTES, kid, root)
    )
