"""Clusters from verified edges, one keeper per cluster, contained documents resolved.

Only documents that have an edge take part, renumbered 0..k-1: memory grows with the number of duplicates,
not with the corpus (the cluster phase running out of memory at scale is NeMo-Curator #723). Components are
found by `components` (hooking and pointer jumping in whole-array numpy steps), not by a Python loop, and not by
scipy's connected_components: importing scipy.sparse took 0.14 s of every `kamado run`'s start-up.

Rules:
- exact and near edges are symmetric: each cluster keeps its first document in input order. A later copy of
  the same fingerprint text is removed as `exact`, duplicate_of the first copy; the first copy of any other text
  in the cluster is removed as `near`, duplicate_of the keeper.
- containment edges are one-way (small ⊂ large) and never merge clusters: one passage contained in two different
  collections must not make the collections duplicates of each other. A keeper contained in another cluster's
  keeper is removed as `contained` in it; sizes strictly decrease along such links, so no cycle removes both.
- every removed document names two documents: `matched`, the one its edge points to (the first copy of its text,
  its cluster's keeper, or the larger document it is contained in), and `kept`, the document that stays in the
  corpus at the end of that chain (a copy of a near duplicate, or a document contained in one that is itself
  contained, point to a removed document directly). An auditor always opens `kept`; `matched` explains why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT, NEAR, CONTAINED = 0, 1, 2
KIND_NAMES = {EXACT: "exact", NEAR: "near", CONTAINED: "contained"}


@dataclass
class Removal:
    gid: np.ndarray  # removed documents (global ids: shard << 32 | row)
    duplicate_of: np.ndarray  # the document each one matched directly (may itself be removed: see `kept`)
    kind: np.ndarray  # EXACT | NEAR | CONTAINED
    similarity: np.ndarray  # estimated Jaccard, containment, or 1.0 for exact
    cluster_sizes: np.ndarray  # size of every cluster with two or more documents
    kept: np.ndarray  # the kept document at the end of each one's chain of matches (never a removed one)


def cluster(edges: np.ndarray, kinds: np.ndarray, sims: np.ndarray, info) -> Removal:
    """edges [m, 2] global ids with their kinds and similarities; info(sorted gids) -> (input order [k, 3],
    exact key [k, 2], shingle count [k]) of those documents."""
    if len(edges) == 0:
        e = np.empty(0, dtype=np.uint64)
        return Removal(e, e, np.empty(0, np.int8), np.empty(0), np.empty(0, np.int64), e)
    nodes, inv = np.unique(edges.reshape(-1), return_inverse=True)
    inv = inv.reshape(-1, 2)
    k = len(nodes)
    sym = kinds != CONTAINED
    label = components(k, inv[sym])
    order, exact, size = info(nodes)
    # Keeper of each cluster: the first member in input order.
    by_order = np.lexsort(tuple(order[:, j] for j in reversed(range(order.shape[1]))) + (label,))
    first = np.ones(k, dtype=bool)
    first[1:] = label[by_order][1:] != label[by_order][:-1]
    keeper_of_label = np.empty(label.max() + 1, dtype=np.int64)
    keeper_of_label[label[by_order][first]] = by_order[first]
    keeper = keeper_of_label[label]
    sizes = np.bincount(label)

    # A copy of an earlier member (same fingerprint) is an exact duplicate of the first such copy; the first
    # copy of each text, when it is not the keeper, is a near duplicate of the keeper (similarity: its best edge).
    cols = tuple(order[:, j] for j in reversed(range(order.shape[1])))
    by_text = np.lexsort(cols + (exact[:, 1], exact[:, 0]))
    new_text = np.ones(k, dtype=bool)
    new_text[1:] = (exact[by_text][1:] != exact[by_text][:-1]).any(axis=1)
    text_first = by_text[np.maximum.accumulate(np.where(new_text, np.arange(k), 0))]
    copy_of = np.empty(k, dtype=np.int64)
    copy_of[by_text] = text_first
    is_copy = copy_of != np.arange(k)
    removed = keeper != np.arange(k)
    kind = np.where(is_copy, EXACT, NEAR).astype(np.int8)
    dup = np.where(is_copy, copy_of, np.where(removed, keeper, -1))
    sim = np.zeros(k)
    for col in (0, 1):
        np.maximum.at(sim, inv[sym, col], sims[sym])
    sim[is_copy] = 1.0

    # Containment between keepers: smallest first, so a chain A ⊂ B ⊂ C removes A and B, keeps C.
    con = ~sym
    if con.any():
        small, large, csim = inv[con, 0], inv[con, 1], sims[con]
        ks, kl = keeper[small], keeper[large]
        ok = (ks != kl) & (size[ks] < size[kl])
        # smallest first; of several containers, the first in input order
        for s, l, c in sorted(zip(ks[ok], kl[ok], csim[ok]), key=lambda t: (size[t[0]], tuple(order[t[1]]))):
            if not removed[s]:
                removed[s], dup[s], kind[s], sim[s] = True, l, CONTAINED, c
    idx = np.flatnonzero(removed)
    return Removal(nodes[idx], nodes[dup[idx]], kind[idx], sim[idx], sizes[sizes > 1], nodes[_kept(removed, dup)[idx]])


def components(k: int, edges: np.ndarray) -> np.ndarray:
    """Component label 0..c-1 of each of k nodes under undirected `edges` [m, 2] (indices < k), numbered in the
    order of each component's smallest node.

    Hooking and pointer jumping: each round points the larger of two roots an edge joins at the smaller one
    (the smallest offer wins), then flattens every tree to its root. Parents only decrease, so it ends; a
    round merges every pair of trees an edge still joins, so rounds are few, and each is whole-array work."""
    parent = np.arange(k, dtype=np.int64)
    u, v = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64)
    while True:
        ru, rv = parent[u], parent[v]  # roots: every tree is flat after the jumping below
        differ = ru != rv
        if not differ.any():
            break
        lo, hi = np.minimum(ru[differ], rv[differ]), np.maximum(ru[differ], rv[differ])
        np.minimum.at(parent, hi, lo)  # a root hooks under a smaller root: no cycle can form
        while True:
            grand = parent[parent]
            if (grand == parent).all():
                break
            parent = grand
        u, v = u[differ], v[differ]  # edges inside one tree stay inside it
    return np.unique(parent, return_inverse=True)[1].reshape(-1)


def _kept(removed: np.ndarray, dup: np.ndarray) -> np.ndarray:
    """For every node, the kept node its chain of matches ends at (itself when kept), by pointer jumping: each
    round doubles the length of chain followed, so a chain of length L takes log2(L) whole-array steps."""
    target = np.where(removed, dup, np.arange(len(removed)))
    for _ in range(64):
        nxt = target[target]
        if (nxt == target).all():
            return target
        target = nxt
    raise RuntimeError("dedup clusters: a chain of duplicate_of links does not end at a kept document (a cycle)")
