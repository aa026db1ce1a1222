"""Verified batches, so a batch's Ed25519 signature is checked once and most of its hashing too.

Keyed by the signature (every record of a batch carries the same one), each entry remembers the
batch's authenticated facts: kid, signing time, size, and the whole path of the last record
verified against it: its proof bytes and its node hash at every level. All of those are true
nodes of the signed tree, so a later record of the same batch only needs hashing up to the
level just below where its path joins the last one (``(index ^ last_index).bit_length()``):
there its node must equal the sibling the last proof recorded, and the rest of its proof must
equal, byte for byte, what the last proof held above that level. Neighbouring records (the
usual order within a partition) cost one or two hashes instead of log2(size).

The result is the same verdict a cold verifier would reach: the whole proof is still checked
(hashed, or compared with authenticated bytes), so a record verifies or not regardless of what
is cached. Memory: an entry holds at most 17 hashes, 16 ints and one proof (<= 528 bytes).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from govbus.signing._canonical import HASH_SIZE, NODE_PREFIX, PROOF_HEAD

_START = PROOF_HEAD.size  # where the sibling hashes begin in the govbus_sig_proof header


class _Batch:
    __slots__ = ("index", "kid", "nodes", "offsets", "proof", "signed_at", "size")

    def __init__(
        self, kid: bytes, signed_at: int, size: int, index: int, proof: bytes, nodes: list[bytes], offsets: list[int]
    ) -> None:
        self.kid = kid
        self.signed_at = signed_at
        self.size = size
        self.index = index  # the last record verified against this batch, and its path:
        self.proof = proof
        self.nodes = nodes  # node hash per level, leaf first, root last
        self.offsets = offsets  # per level below the root: its sibling's offset from the proof's end

    def check(self, leaf: bytes, index: int, proof: bytes) -> bool:
        """True iff ``leaf`` at ``index`` with ``proof`` belongs to this (already verified) batch."""
        last = self.index
        if index >= self.size:
            return False
        if index == last:
            return leaf == self.nodes[0] and proof[_START:] == self.proof[_START:]
        join = (index ^ last).bit_length()  # first level at which both paths share a node
        below = join - 1  # the level at which the two paths are siblings
        sha256 = hashlib.sha256
        node = NODE_PREFIX
        j = index
        m = self.size
        r = leaf
        pos = _START
        end = len(proof)
        nodes = [r]
        offsets: list[int] = []
        for _ in range(below):
            if (j ^ 1) < m:
                nxt = pos + HASH_SIZE
                if nxt > end:
                    return False
                p = proof[pos:nxt]
                r = sha256(node + p + r).digest() if j & 1 else sha256(node + r + p).digest()
                offsets.append(end - pos)
                pos = nxt
            else:
                offsets.append(0)
            j >>= 1
            m = (m + 1) >> 1
            nodes.append(r)
        known = self.proof
        at = len(known) - self.offsets[below]  # the last proof's sibling at `below` is our node
        nxt = pos + HASH_SIZE
        if (
            r != known[at : at + HASH_SIZE]
            or proof[pos:nxt] != self.nodes[below]  # and our sibling there is its node
            or proof[nxt:] != known[at + HASH_SIZE :]  # above, both paths have the same siblings
        ):
            return False
        offsets.append(end - pos)
        # This record's path becomes the remembered one; above `join` nothing changes (offsets
        # are counted from the end precisely so that the shared tail keeps them valid).
        self.index = index
        self.proof = proof
        self.nodes[:join] = nodes
        self.offsets[:join] = offsets
        return True


class BatchCache:
    """A bounded LRU of verified batches, keyed by their signature."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[bytes, _Batch] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def check(
        self, sig: bytes, kid: bytes, signed_at: int, size: int, leaf: bytes, index: int, proof: bytes
    ) -> bool | None:
        """None: batch unknown (verify the signature); else whether the record belongs to it."""
        entry = self._entries.get(sig)
        if entry is None or entry.kid != kid or entry.signed_at != signed_at or entry.size != size:
            return None
        if not entry.check(leaf, index, proof):
            return False
        self._entries.move_to_end(sig)
        return True

    def admit(
        self,
        sig: bytes,
        kid: bytes,
        signed_at: int,
        size: int,
        index: int,
        proof: bytes,
        nodes: list[bytes],
        offsets: list[int],
    ) -> None:
        """Remember a batch whose signature just verified over ``nodes[-1]``."""
        if not self._capacity:
            return
        entries = self._entries
        entries[sig] = _Batch(kid, signed_at, size, index, proof, nodes, offsets)
        entries.move_to_end(sig)
        if len(entries) > self._capacity:
            entries.popitem(last=False)
