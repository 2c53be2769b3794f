"""Slow, obviously correct references for hierarchical clustering (plain Python and NumPy).

- :func:`ward`: the textbook agglomeration.  Every cluster is (members, weight, mean);
  each step computes Ward's cost ``w_a w_b / (w_a + w_b) * |mean_a - mean_b|^2`` for every
  pair of live clusters from their means (no Lance-Williams update) and merges the
  cheapest pair (the first pair in creation order on an exact tie).
- :func:`partition_after`: the clusters after the first r merges, as a set of frozensets.
- :func:`distinct_points`: distinct rows numbered in order of first appearance.
- :func:`dendrogram_numbering`: clusters numbered by the left-to-right order of the
  leaves when each merge's left child is the one with the lower node id.
"""
from __future__ import annotations

import numpy as np


def ward(points, weights=None):
    """Merges as a list of (members_a, members_b, height, weight) in merge order, with
    ``height = sqrt(2 * cost)`` (scipy's Ward height)."""
    P = np.asarray(points, dtype=np.float64)
    m = len(P)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    live = [(frozenset([i]), float(w[i]), P[i].copy()) for i in range(m)]
    merges = []
    while len(live) > 1:
        best = None
        for a in range(len(live)):
            for b in range(a + 1, len(live)):
                (_, wa, ca), (_, wb, cb) = live[a], live[b]
                cost = wa * wb / (wa + wb) * float(((ca - cb) ** 2).sum())
                if best is None or cost < best[0]:
                    best = (cost, a, b)
        cost, a, b = best
        (ma, wa, ca), (mb, wb, cb) = live[a], live[b]
        merged = (ma | mb, wa + wb, (wa * ca + wb * cb) / (wa + wb))
        merges.append((ma, mb, float(np.sqrt(2.0 * cost)), wa + wb))
        live = [c for i, c in enumerate(live) if i not in (a, b)] + [merged]
    return merges


def partition_after(m: int, merges, r: int) -> set:
    """The clusters (frozensets of leaves) after the first ``r`` merges."""
    clusters = {frozenset([i]) for i in range(m)}
    for ma, mb, _, _ in merges[:r]:
        clusters -= {ma, mb}
        clusters.add(ma | mb)
    return clusters


def linkage_merges(Z) -> list:
    """A scipy-layout linkage matrix as (members_a, members_b, height, weight) merges."""
    m = len(Z) + 1
    members = {i: frozenset([i]) for i in range(m)}
    out = []
    for i, (a, b, h, s) in enumerate(Z):
        ma, mb = members[int(a)], members[int(b)]
        members[m + i] = ma | mb
        out.append((ma, mb, float(h), float(s)))
    return out


def labels_partition(labels) -> set:
    """A labelling as the set of its clusters (frozensets of indices)."""
    groups = {}
    for i, c in enumerate(np.asarray(labels).tolist()):
        groups.setdefault(c, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def distinct_points(X):
    """(codes (n,), first occurrence of each distinct row) in order of first appearance;
    rows are equal when every coordinate compares equal."""
    seen = {}
    codes, first = [], []
    for i, row in enumerate(np.asarray(X, dtype=np.float64)):
        key = tuple(float(v) + 0.0 for v in row)
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        codes.append(seen[key])
    return np.array(codes, dtype=np.int64), np.array(first, dtype=np.int64)


def dendrogram_numbering(Z, leaf_partition: set) -> np.ndarray:
    """Number the clusters of ``leaf_partition`` by the position of their leaves in the
    dendrogram's left-to-right leaf order (each node: ``Z[i, 0]`` left, ``Z[i, 1]`` right)."""
    m = len(Z) + 1

    def leaves(node):
        if node < m:
            return [node]
        a, b = int(Z[node - m, 0]), int(Z[node - m, 1])
        return leaves(a) + leaves(b)

    order = leaves(2 * m - 2) if m > 1 else [0]
    position = {leaf: p for p, leaf in enumerate(order)}
    ranked = sorted(leaf_partition, key=lambda c: min(position[x] for x in c))
    out = np.empty(m, dtype=np.int64)
    for number, cluster in enumerate(ranked):
        for leaf in cluster:
            out[leaf] = number
    return out
