"""Slow, obviously correct k-means references (plain NumPy and Python loops).

They follow the documented arithmetic of :mod:`rfmx.kernels.kmeans` step by step, so the
kernels must match them bit for bit:

- squared distance: ``sum_f (x_f - c_f)**2`` accumulated in feature order;
- nearest centre: the lowest index among equal distances;
- a cluster's sum over a run of points: points cut into chunks of ``chunk_size``; inside a
  chunk point ``i`` goes to lane ``i % 4``, each lane adds in index order, lanes combine as
  ``((l0 + l1) + l2) + l3``; chunk totals add in chunk order starting from 0.0 (inertia too);
- k-means++ (scikit-learn's greedy variant and random draws): potentials are summed as
  above; D^2 sampling walks the chunk totals, then the points of one chunk in order.
"""
from __future__ import annotations

import numpy as np

LANES = 4


def sq_dists(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(n, k) squared distances, summed feature by feature."""
    D = np.zeros((X.shape[0], C.shape[0]))
    for f in range(X.shape[1]):
        D += (X[:, f][:, None] - C[None, :, f]) ** 2
    return D


def chunked_sum(values: np.ndarray, chunk_size: int, lanes: bool) -> float:
    """Sum of a 1-d array in the kernels' order (lanes inside a chunk, or sequential)."""
    total = 0.0
    for start in range(0, len(values), chunk_size):
        chunk = values[start:start + chunk_size]
        if lanes:
            acc = [0.0] * LANES
            for i, v in enumerate(chunk):
                acc[i % LANES] += float(v)
            part = ((acc[0] + acc[1]) + acc[2]) + acc[3]
        else:
            part = 0.0
            for v in chunk:
                part += float(v)
        total += part
    return total


def cluster_sums(X: np.ndarray, labels: np.ndarray, k: int, chunk_size: int):
    """(sums (k, d), counts (k,)) of the points by label, in the kernels' order."""
    n, d = X.shape
    sums = np.zeros((k, d))
    counts = np.zeros(k, dtype=np.int64)
    for start in range(0, n, chunk_size):
        lane = np.zeros((LANES, k, d))
        for i in range(start, min(n, start + chunk_size)):
            lane[(i - start) % LANES, labels[i]] += X[i]
            counts[labels[i]] += 1
        sums += ((lane[0] + lane[1]) + lane[2]) + lane[3]
    return sums, counts


def assign(X, C, chunk_size):
    """(labels, inertia) of the nearest centres."""
    D = sq_dists(X, C)
    labels = D.argmin(axis=1)
    best = D[np.arange(len(X)), labels]
    return labels, chunked_sum(best, chunk_size, lanes=True)


def kmeans_plusplus(X, k, seed, chunk_size, n_local_trials=None):
    """Greedy k-means++ with scikit-learn's draws from ``RandomState(seed)``; returns indices."""
    rs = np.random.RandomState(seed)
    n = len(X)
    t = 2 + int(np.log(k)) if n_local_trials is None else n_local_trials
    first = int(rs.choice(n, p=np.full(n, 1.0 / n)))
    idx = [first]
    closest = sq_dists(X, X[first][None])[:, 0]
    pot = chunked_sum(closest, chunk_size, lanes=True)
    for _ in range(1, k):
        draws = rs.uniform(size=t) * pot
        cands = [_pick(closest, chunk_size, r) for r in draws]
        pots = [chunked_sum(np.minimum(closest, sq_dists(X, X[c][None])[:, 0]), chunk_size, lanes=True) for c in cands]
        best = int(np.argmin(pots))
        idx.append(cands[best])
        closest = np.minimum(closest, sq_dists(X, X[cands[best]][None])[:, 0])
        pot = pots[best]
    return np.array(idx)


def _pick(closest, chunk_size, r):
    """D^2 sampling: the first chunk whose running total (chunk sums in lanes order) reaches
    r, then the first point in it where prefix + in-order running sum reaches r (else the
    chunk's last point); the last point if no chunk does."""
    prefix = 0.0
    n = len(closest)
    for start in range(0, n, chunk_size):
        chunk = closest[start:start + chunk_size]
        after = prefix + chunked_sum(chunk, len(chunk), lanes=True)
        if after >= r:
            run = 0.0
            for i, v in enumerate(chunk):
                run += float(v)
                if prefix + run >= r:
                    return start + i
            return start + len(chunk) - 1
        prefix = after
    return n - 1


def lloyd(X, centres, max_iter, tol, chunk_size):
    """Lloyd from ``centres``; returns (labels, inertia, centres, n_iter) like rfmx's KMeans.

    ``tol`` is relative (times the mean feature variance).  Empty clusters take the points
    farthest from their centre (farthest first, lowest index on ties).
    """
    X = np.asarray(X, dtype=np.float64)
    k = len(centres)
    C = np.array(centres, dtype=np.float64)
    tol_abs = float(np.mean(np.var(np.ascontiguousarray(X.T), axis=1)) * tol) if tol else 0.0
    labels = np.full(len(X), -1)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        new_labels = sq_dists(X, C).argmin(axis=1)
        moved = int((new_labels != labels).sum())
        labels = new_labels
        sums, counts = cluster_sums(X, labels, k, chunk_size)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            dist = sq_dists(X, C)[np.arange(len(X)), labels]
            far = sorted(range(len(X)), key=lambda i: (-dist[i], i))[:len(empty)]
            for e, p in zip(empty, far):
                sums[labels[p]] -= X[p]
                counts[labels[p]] -= 1
                sums[e] = X[p]
                counts[e] = 1
        new = C.copy()
        for j in range(k):
            if counts[j] > 0:
                new[j] = sums[j] / counts[j]
        shift = float(((new - C) ** 2).sum())
        C = new
        if moved == 0 and not len(empty):
            break
        if shift <= tol_abs:
            break
    labels, inertia = assign(X, C, chunk_size)
    return labels, inertia, C, n_iter


def silhouette(X, labels):
    """Mean silhouette (Euclidean), points alone in their cluster count 0."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    D = np.sqrt(np.maximum(sq_dists(X, X), 0))
    values = []
    for i in range(n):
        own = labels == labels[i]
        if own.sum() <= 1:
            values.append(0.0)
            continue
        a = D[i, own].sum() / (own.sum() - 1)
        b = min(D[i, labels == c].mean() for c in set(labels.tolist()) if c != labels[i])
        values.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(values))
