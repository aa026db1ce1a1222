"""Canonical event bytes and the RFC 6962 Merkle tree: reference vectors, shapes, tampering."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govbus.signing._canonical import EVENT_TAG, NULL_LENGTH, batch_message, event_bytes, leaf_hash, node_hash
from govbus.signing._merkle import build, climb, root_from_path

# RFC 6962 reference data as published with transparency-dev/merkle (testonly/constants.go).
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def mth(d: list[bytes]) -> bytes:
    """RFC 6962's recursive definition, to check the bottom-up construction against."""
    if len(d) == 1:
        return d[0]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return node_hash(mth(d[:k]), mth(d[k:]))


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def test_roots_match_the_rfc6962_reference() -> None:
    leaves = [leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES]
    for n in range(1, 9):
        assert build(leaves[:n])[0].hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size"), sorted(CT_PATHS))
def test_paths_match_the_rfc6962_reference(index: int, size: int) -> None:
    leaves = [leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES][:size]
    _, paths = build(leaves)
    path = paths[index]
    assert [path[i : i + 32].hex() for i in range(0, len(path), 32)] == CT_PATHS[(index, size)]


@pytest.mark.parametrize("n", [*range(1, 70), 127, 128, 129, 511, 512, 513, 1000])
def test_bottom_up_tree_is_rfc6962_and_every_path_verifies(n: int) -> None:
    leaves = _leaves(n)
    root, paths = build(leaves)
    assert root == mth(leaves)
    for i in range(n):
        assert root_from_path(leaves[i], i, n, paths[i]) == root
        climbed = climb(leaves[i], i, n, paths[i])
        assert climbed is not None
        nodes, offsets = climbed
        assert nodes[0] == leaves[i]
        assert nodes[-1] == root
        assert len(offsets) == len(nodes) - 1


def test_odd_node_is_promoted_not_duplicated() -> None:
    a, b, c = _leaves(3)
    assert build([a, b, c])[0] == node_hash(node_hash(a, b), c)
    # With duplication (Bitcoin) [a, b, c] and [a, b, c, c] would share a root.
    assert build([a, b, c])[0] != build([a, b, c, c])[0]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = _leaves(2)
    # An inner node's preimage presented as a leaf must not hash to the node.
    assert leaf_hash(a + b) != node_hash(a, b)
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_proofs_that_do_not_fit_are_rejected() -> None:
    leaves = _leaves(11)
    root, paths = build(leaves)
    p = paths[4]
    assert root_from_path(leaves[4], 11, 11, p) is None  # index out of range
    assert root_from_path(leaves[4], 4, 11, p[:-32]) is None  # too short
    assert root_from_path(leaves[4], 4, 11, p + p[:32]) is None  # too long
    assert root_from_path(leaves[4], 4, 11, p[:-1]) is None  # not whole hashes
    assert root_from_path(leaves[4], 5, 11, p) != root  # another index
    # A path does not always pin the tree size (leaf 4's path is the same for 11 and 12 leaves):
    # that is why the size is inside the signed batch message.
    assert root_from_path(leaves[4], 4, 12, p) == root
    assert root_from_path(leaves[4], 4, 8, p) is None
    assert root_from_path(leaves[4], 4, 17, p) is None
    assert root_from_path(leaves[5], 4, 11, p) != root  # another leaf
    assert root_from_path(leaves[10], 10, 1, b"") is None


def test_empty_tree_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        build([])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_any_tampered_path_byte_breaks_the_root(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n, b"h")
    root, paths = build(leaves)
    i = data.draw(st.integers(0, n - 1))
    assert root_from_path(leaves[i], i, n, paths[i]) == root
    if paths[i]:
        pos = data.draw(st.integers(0, len(paths[i]) - 1))
        tampered = bytearray(paths[i])
        tampered[pos] ^= 1 << data.draw(st.integers(0, 7))
        assert root_from_path(leaves[i], i, n, bytes(tampered)) != root


# --- event bytes --------------------------------------------------------------------------------


def _event(**over: object) -> bytes:
    fields: dict[str, object] = {
        "kid": b"k1",
        "stream": b"s" * 16,
        "partition": 3,
        "sequence": 7,
        "ce_id": b"id",
        "ce_type": b"type",
        "ce_source": b"src",
        "ce_time": b"2025-11-26T00:00:00Z",
        "key": b"agent",
        "value": b"\xc3\x01value",
    }
    fields.update(over)
    return event_bytes(**fields)  # type: ignore[arg-type]


def test_event_bytes_layout() -> None:
    e = _event()
    assert e[:16] == EVENT_TAG == b"govbus/v1/event\x00"
    assert int.from_bytes(e[16:20], "big") == 3
    assert int.from_bytes(e[20:28], "big") == 7
    lengths = [int.from_bytes(e[28 + 4 * i : 32 + 4 * i], "big") for i in range(8)]
    assert lengths == [2, 16, 2, 4, 3, 20, 5, 7]
    assert e[60:] == b"k1" + b"s" * 16 + b"idtypesrc2025-11-26T00:00:00Zagent\xc3\x01value"


def test_absent_and_empty_differ() -> None:
    assert _event(key=None) != _event(key=b"")
    assert _event(ce_time=None) != _event(ce_time=b"")
    assert int.from_bytes(_event(key=None)[52:56], "big") == NULL_LENGTH


def test_field_boundaries_cannot_shift() -> None:
    assert _event(ce_id=b"ab", ce_type=b"c") != _event(ce_id=b"a", ce_type=b"bc")
    assert _event(key=b"ab", value=b"c") != _event(key=b"a", value=b"bc")
    assert _event(kid=b"k1s", stream=b"s" * 15) != _event()


def test_batch_message_layout() -> None:
    m = batch_message(kid=b"kid", signed_at_ms=5, tree_size=9, root=b"r" * 32)
    assert m[:16] == b"govbus/v1/batch\x00"
    assert m[16:24] == (5).to_bytes(8, "big")
    assert m[24:28] == (9).to_bytes(4, "big")
    assert m[28:36] == (17).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert m[36:] == b"ed25519-merkle-v1" + b"kid" + b"r" * 32
