"""RFC 6962 / RFC 9162 Merkle trees over leaf hashes: batch roots and inclusion proofs.

The tree is the Certificate Transparency one: an odd node at the end of a level is promoted to
the next level unchanged, never paired with a copy of itself (duplicating it would give two
different batches the same root, CVE-2012-2459). Building it bottom-up like this yields exactly
RFC 6962's recursive ``MTH`` (split at the largest power of two below n); the tests check that.
"""

from __future__ import annotations

import hashlib

from govbus.signing._canonical import HASH_SIZE, NODE_PREFIX

_sha256 = hashlib.sha256


def build(leaves: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Return the root and, per leaf, its inclusion path as concatenated 32-byte hashes, bottom-up.

    Paths are built top-down, one concatenation per node, rather than leaf by leaf (log n
    concatenations each): leaves under the same node share the rest of their path.
    """
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [leaves]
    level = leaves
    while len(level) > 1:
        m = len(level)
        parents = [_sha256(NODE_PREFIX + level[j] + level[j + 1]).digest() for j in range(0, m - 1, 2)]
        if m & 1:
            parents.append(level[-1])  # promoted: no sibling at this level, so nothing in the path
        levels.append(parents)
        level = parents
    # suffix[j] = the path of node j of the current level up to the root.
    suffix = [b""]
    for level in reversed(levels[:-1]):
        m = len(level)
        paired = m - (m & 1)
        below = [level[j ^ 1] + suffix[j >> 1] for j in range(paired)]
        if m & 1:
            below.append(suffix[(m - 1) >> 1])
        suffix = below
    return levels[-1][0], suffix


def climb(leaf: bytes, index: int, size: int, proof: bytes, start: int = 0) -> tuple[list[bytes], list[int]] | None:
    """Hash from a leaf up to the root along ``proof[start:]``; None if the proof doesn't fit.

    This is the bottom-up twin of :func:`build` (and gives the same result as RFC 9162
    §2.1.3.2): at level ``l`` the node is ``index >> l``, the level has ``ceil(size / 2**l)``
    nodes, and the proof holds a sibling for exactly the levels where one exists. A proof too
    short or too long for (``index``, ``size``) is rejected, so no byte of it goes unchecked.

    Returns the node hashes at every level (``[leaf, ..., root]``) and, per level below the
    root, where that level's sibling sits in ``proof`` counted from its end (0: no sibling),
    which lets :class:`~govbus.signing._batchcache.BatchCache` compare later proofs' tails.
    """
    if index >= size:
        return None
    sha256 = _sha256
    node = NODE_PREFIX
    j = index
    m = size
    r = leaf
    pos = start
    end = len(proof)
    nodes = [r]
    offsets: list[int] = []
    while m > 1:
        if (j ^ 1) < m:
            nxt = pos + HASH_SIZE
            if nxt > end:
                return None
            p = proof[pos:nxt]
            r = sha256(node + p + r).digest() if j & 1 else sha256(node + r + p).digest()
            offsets.append(end - pos)
            pos = nxt
        else:
            offsets.append(0)  # the last node of an odd level: promoted, no sibling
        j >>= 1
        m = (m + 1) >> 1
        nodes.append(r)
    if pos != end:
        return None
    return nodes, offsets


def root_from_path(leaf: bytes, index: int, size: int, proof: bytes, start: int = 0) -> bytes | None:
    """The root that ``proof[start:]`` leads to from ``leaf`` at ``index`` of ``size``; None if unfit."""
    climbed = climb(leaf, index, size, proof, start)
    return None if climbed is None else climbed[0][-1]
