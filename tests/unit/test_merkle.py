"""Merkle trees as RFC 9162 §2.1 defines them: the root of any size, and audit paths that verify."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from suppress import merkle


def _mth(entries: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 §2.1.1, recursively."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(entries[:k]) + _mth(entries[k:])).digest()


def _entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def test_root_matches_the_rfc_definition_for_every_small_size() -> None:
    for n in range(0, 70):
        entries = _entries(n)
        assert merkle.root([merkle.leaf_hash(e) for e in entries]) == _mth(entries), n


def test_known_shape_of_three_leaves() -> None:
    a, b, c = (merkle.leaf_hash(e) for e in _entries(3))
    assert merkle.root([a, b, c]) == merkle.node_hash(merkle.node_hash(a, b), c)
    assert merkle.audit_path(2, [a, b, c]) == [merkle.node_hash(a, b)]
    assert merkle.audit_path(0, [a, b, c]) == [b, c]


def test_every_audit_path_verifies_and_no_other_index_does() -> None:
    for n in range(1, 40):
        leaves = [merkle.leaf_hash(e) for e in _entries(n)]
        top = merkle.root(leaves)
        for i in range(n):
            path = merkle.audit_path(i, leaves)
            assert merkle.verify_inclusion(leaves[i], i, n, path, top), (n, i)
            assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, path, top) or n == 1


@given(st.integers(1, 300), st.data())
def test_a_changed_path_or_leaf_never_verifies(n: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(e) for e in _entries(n)]
    top = merkle.root(leaves)
    i = data.draw(st.integers(0, n - 1))
    path = merkle.audit_path(i, leaves)
    assert merkle.verify_inclusion(leaves[i], i, n, path, top)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"other"), i, n, path, top)
    if path:
        j = data.draw(st.integers(0, len(path) - 1))
        bad = [*path[:j], hashlib.sha256(path[j]).digest(), *path[j + 1 :]]
        assert not merkle.verify_inclusion(leaves[i], i, n, bad, top)
        assert not merkle.verify_inclusion(leaves[i], i, n, path[:-1], top)
