"""Hierarchical clustering kernels: weighted Ward linkage, distinct points (NumPy in, NumPy out).

Ward linkage.  :func:`ward_linkage` clusters ``m`` weighted points (micro-cluster centres
with their sizes, or raw points with weight 1) by Ward's criterion: each step merges the
two clusters A, B whose union raises the within-cluster sum of squares least, by
``|A||B| / (|A| + |B|) * ||c_A - c_B||^2``.  Heights are reported as scipy reports them,
``sqrt(2 |A||B| / (|A| + |B|)) * ||c_A - c_B||`` (the square root of twice that increase).

The algorithm is scipy's (``scipy.cluster.hierarchy.linkage(method="ward")``) step for
step, so that on unit weights the output is scipy's bit for bit, ties included:

- initial distances ``sqrt(2 w_i w_j / (w_i + w_j)) * sqrt(sum_f (x_if - x_jf)**2)``
  (summed in feature order, as ``pdist``; the factor is exactly 1.0 for unit weights);
- the nearest-neighbour chain: a chain starts at the lowest-index live cluster; the next
  element is the nearest live cluster of the last one, the previous chain element kept on
  an equal distance, else the lowest index among equal distances; two mutual nearest
  neighbours merge (the lower index is dropped, the higher one holds the union);
- the Lance-Williams update of Ward, ``d(i, xy) = sqrt(((w_i + w_x) d_xi^2 + (w_i + w_y)
  d_yi^2 - w_i d_xy^2) / (w_i + w_x + w_y))`` (a rounding below zero is taken as zero);
- merges sorted by height (a stable sort: equal heights keep the order they were found
  in), then renumbered with a union-find so that the ``i``-th merge makes node ``m + i``.

Ward's criterion is reducible, so the chain finds the same hierarchy as the textbook
"merge the cheapest pair" loop (``tests/naive_hierarchy.py``) wherever no two costs tie.
O(m^2) memory (the condensed distance matrix, 4 m^2 bytes) and O(m^2) time: meant for a
few hundred to a few thousand points.
"""
from __future__ import annotations

import numpy as np

from ._policy import kernel

__all__ = ["ward_linkage", "distinct_points"]


@kernel(inline=True)
def _condensed(m, i, j):
    """Index of the pair (i, j), i != j, in an m x m condensed distance matrix."""
    if i > j:
        i, j = j, i
    return m * i - (i * (i + 1)) // 2 + (j - i - 1)


@kernel
def ward_linkage(points, weights, Z):
    """Ward linkage of ``points`` (m, d) float64 with ``weights`` (m,) float64 (> 0) into
    ``Z`` (m - 1, 4) float64, scipy's linkage-matrix layout: row ``i`` merges nodes
    ``Z[i, 0] < Z[i, 1]`` (``< m``: a point; ``m + r``: the node made by row ``r``) at
    height ``Z[i, 2]`` into node ``m + i`` of total weight ``Z[i, 3]``.  See the module
    docstring for the arithmetic and the tie rule."""
    m, d = points.shape
    size = np.empty(m, dtype=np.float64)
    for i in range(m):
        size[i] = weights[i]
    D = np.empty(m * (m - 1) // 2, dtype=np.float64)
    p = 0
    for i in range(m):
        for j in range(i + 1, m):
            acc = 0.0
            for f in range(d):
                t = points[i, f] - points[j, f]
                acc += t * t
            D[p] = np.sqrt(2.0 * weights[i] * weights[j] / (weights[i] + weights[j])) * np.sqrt(acc)
            p += 1
    raw = np.empty((max(m - 1, 0), 4), dtype=np.float64)
    chain = np.empty(m, dtype=np.int64)
    length = 0
    for k in range(m - 1):
        if length == 0:
            length = 1
            for i in range(m):
                if size[i] > 0:
                    chain[0] = i
                    break
        x = 0
        y = 0
        best = 0.0
        while True:
            x = chain[length - 1]
            if length > 1:
                # the previous chain element wins a tie: the chain cannot cycle
                y = chain[length - 2]
                best = D[_condensed(m, x, y)]
            else:
                best = np.inf
            for i in range(m):
                if size[i] == 0 or i == x:
                    continue
                dist = D[_condensed(m, x, i)]
                if dist < best:
                    best = dist
                    y = i
            if length > 1 and y == chain[length - 2]:
                break
            chain[length] = y
            length += 1
        length -= 2
        if x > y:
            x, y = y, x
        nx = size[x]
        ny = size[y]
        raw[k, 0] = x
        raw[k, 1] = y
        raw[k, 2] = best
        raw[k, 3] = nx + ny
        size[x] = 0.0
        size[y] = nx + ny
        for i in range(m):
            ni = size[i]
            if ni == 0 or i == y:
                continue
            d_xi = D[_condensed(m, i, x)]
            d_yi = D[_condensed(m, i, y)]
            t = 1.0 / (nx + ny + ni)
            v = (ni + nx) * t * d_xi * d_xi + (ni + ny) * t * d_yi * d_yi - ni * t * best * best
            D[_condensed(m, i, y)] = np.sqrt(v) if v > 0.0 else 0.0
    order = np.argsort(raw[:, 2], kind="mergesort")
    # union-find over node ids: the i-th merge (in height order) makes node m + i
    parent = np.arange(2 * m - 1 if m > 0 else 0)
    total = np.empty(2 * m - 1 if m > 0 else 0, dtype=np.float64)
    for i in range(m):
        total[i] = weights[i]
    for r in range(m - 1):
        row = order[r]
        a = _find(parent, np.int64(raw[row, 0]))
        b = _find(parent, np.int64(raw[row, 1]))
        if a > b:
            a, b = b, a
        Z[r, 0] = a
        Z[r, 1] = b
        Z[r, 2] = raw[row, 2]
        node = m + r
        parent[a] = node
        parent[b] = node
        total[node] = total[a] + total[b]
        Z[r, 3] = total[node]


@kernel(inline=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@kernel
def distinct_points(xt, limit, codes, first):
    """Number the distinct points of ``xt`` (d, n) float64 in order of first appearance,
    stopping as soon as there are more than ``limit``.

    Returns the number of distinct points (``codes`` (n,) int64: each point's number;
    ``first`` (limit,) int64: the index of each distinct point's first occurrence), or -1
    when there are more than ``limit`` (``codes`` and ``first`` then partly written).
    Points are equal when every coordinate compares equal (so -0.0 equals 0.0).
    """
    d, n = xt.shape
    size = 16
    while size < 2 * (limit + 1):
        size *= 2
    mask = size - 1
    table = np.full(size, -1, dtype=np.int64)
    cell = np.empty(1, dtype=np.float64)
    bits = cell.view(np.uint64)
    found = 0
    for i in range(n):
        h = np.uint64(1469598103934665603)
        for f in range(d):
            cell[0] = xt[f, i] + 0.0  # -0.0 + 0.0 is 0.0: equal values, equal bits
            h = (h ^ bits[0]) * np.uint64(1099511628211)
            h ^= h >> np.uint64(29)
        slot = np.int64(h & np.uint64(mask))
        while True:
            c = table[slot]
            if c < 0:
                if found == limit:
                    return -1
                table[slot] = found
                first[found] = i
                codes[i] = found
                found += 1
                break
            j = first[c]
            same = True
            for f in range(d):
                if xt[f, i] != xt[f, j]:
                    same = False
                    break
            if same:
                codes[i] = c
                break
            slot = (slot + 1) & mask
    return found
