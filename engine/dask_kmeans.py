"""k-means over customer buckets (:func:`rfmx.dask.cluster`): Lloyd iterations whose partial
sums are reduced over buckets in a fixed order, k-means++ seeding walking the buckets.

- **Feature transform.** The log step is per customer; the z-score's mean and standard
  deviation come from per-bucket sums, added up in bucket order (two passes: sums, then
  squared deviations from the mean, as NumPy's ``std``).
- **Lloyd.** Each iteration every bucket assigns its customers to the nearest centre with
  the one-machine kernel (:func:`rfmx.kernels.kmeans.lloyd_assign`) and returns per-cluster
  sums and counts and how many labels changed (against the previous centres); the client
  adds them up in bucket order, so the result never depends on the number of workers or
  on which worker holds which bucket. An empty cluster takes the farthest customer
  (farthest first, then the lowest bucket and row), as on one machine.
- **k-means++.** The greedy k-means++ of scikit-learn, with the same random draws from
  ``random_state``, over the customers taken bucket by bucket: each draw picks a bucket by
  the buckets' potentials, then a customer inside it. One machine walks its own table's
  row order instead, so the seeds (and hence possibly the clusters) differ from one
  machine's; given the same initial centres the runs agree (labels equal, centres and
  inertia to rounding, ~1e-15 relative).

Floating-point sums are added in another order than on one machine (bucket by bucket
instead of 1,024-row chunks of one table), so centres, inertia and the transform agree with
one machine to rounding, not bit for bit. The ``bucket_`` functions run inside tasks.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import RfmxError

__all__ = ["KMeansSpec", "fit_transform", "seed_kmeans_plusplus", "lloyd", "bucket_labels"]

_CHUNK = 1024


class KMeansSpec:
    """What every bucket task needs: the features and the transform once fitted."""

    def __init__(self, features, log, scaling: str):
        from .cluster import FeatureTransform

        if scaling not in ("zscore", "none"):
            raise RfmxError(f"scaling={scaling!r} needs population quantiles; on Dask use 'zscore' or 'none'")
        self.transform = FeatureTransform(features, log=log, scaling=scaling)
        self.fitted = None   # the transform's dict once fitted

    def points(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """``(xt (d, n) feature-major standardized points, kept (rows,) bool)`` of one bucket."""
        from .cluster import FeatureTransform

        if self.fitted is None:
            X, kept = self.transform.raw(table, "a bucket")
        else:
            X, kept = FeatureTransform.from_dict(self.fitted).transform(table, "a bucket")
        return np.ascontiguousarray(X.T), kept


# --- inside tasks ---------------------------------------------------------------------------------

def bucket_moments(table: pa.Table, spec: KMeansSpec, mean) -> tuple:
    """``(n, sums or squared deviations from mean, min, max)`` per feature of one bucket."""
    xt, _ = spec.points(table)
    n = xt.shape[1]
    if mean is None:
        return n, xt.sum(axis=1), xt.min(axis=1, initial=np.inf), xt.max(axis=1, initial=-np.inf)
    return n, ((xt - np.asarray(mean)[:, None]) ** 2).sum(axis=1), None, None


def _closest(xt: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d2 = np.full(xt.shape[1], np.inf)
    for c in centres:
        np.minimum(d2, ((xt - c[:, None]) ** 2).sum(axis=0), out=d2)
    return d2


def bucket_potential(table: pa.Table, spec: KMeansSpec, centres: np.ndarray) -> float:
    xt, _ = spec.points(table)
    return float(_closest(xt, centres).sum())


def bucket_pick(table: pa.Table, spec: KMeansSpec, centres, r: float) -> np.ndarray:
    """The point where the running sum of squared distances to ``centres`` passes ``r``
    (``centres`` empty: ``r`` is the point's index)."""
    xt, _ = spec.points(table)
    if len(centres) == 0:
        return xt[:, int(r)].copy()
    cum = np.cumsum(_closest(xt, centres))
    i = int(np.searchsorted(cum, r, side="right"))
    if i >= xt.shape[1]:  # r at the very end (rounding): the last point with a distance
        i = int(np.flatnonzero(np.diff(np.concatenate([[0.0], cum])) > 0)[-1])
    return xt[:, i].copy()


def bucket_candidate_potentials(table: pa.Table, spec: KMeansSpec, centres, candidates) -> np.ndarray:
    xt, _ = spec.points(table)
    closest = _closest(xt, centres)
    return np.array([np.minimum(closest, ((xt - c[:, None]) ** 2).sum(axis=0)).sum() for c in candidates])


def _assign(xt: np.ndarray, centres: np.ndarray, with_sums: bool):
    from .kernels import kmeans as K

    d, n = xt.shape
    k = centres.shape[0]
    nch = K.n_chunks(n, _CHUNK)
    labels = np.full(n, -1, dtype=np.int32)
    sums = np.empty((nch if with_sums else 0, k, d))
    counts = np.empty((nch, k), dtype=np.int64)
    inertia = np.empty(nch)
    changed = np.empty(nch, dtype=np.int64)
    K.lloyd_assign(xt, np.ascontiguousarray(centres), _CHUNK, labels, sums, counts, inertia, changed)
    total_sums, total_counts = np.zeros((k, d)), np.zeros(k, dtype=np.int64)
    total_inertia, _ = K.lloyd_merge(sums, counts, inertia, changed, total_sums, total_counts)
    return labels, total_sums, total_counts, float(total_inertia)


def bucket_lloyd(table: pa.Table, spec: KMeansSpec, centres: np.ndarray, previous) -> tuple:
    """One bucket's share of a Lloyd step: ``(sums (k, d), counts (k,), labels changed)``."""
    xt, _ = spec.points(table)
    if xt.shape[1] == 0:
        k, d = centres.shape
        return np.zeros((k, d)), np.zeros(k, dtype=np.int64), 0
    labels, sums, counts, _ = _assign(xt, centres, True)
    changed = xt.shape[1] if previous is None else int((_assign(xt, previous, False)[0] != labels).sum())
    return sums, counts, changed


def bucket_farthest(table: pa.Table, spec: KMeansSpec, centres: np.ndarray, m: int) -> list:
    """The ``m`` points farthest from their nearest centre: ``(distance, row, label, point)``."""
    xt, _ = spec.points(table)
    if xt.shape[1] == 0:
        return []
    labels = _assign(xt, centres, False)[0]
    dist = ((xt - centres[labels].T) ** 2).sum(axis=0)
    order = np.lexsort((np.arange(len(dist)), -dist))[:m]
    return [(float(dist[i]), int(i), int(labels[i]), xt[:, i].copy()) for i in order]


def bucket_labels(table: pa.Table, spec: KMeansSpec, centres: np.ndarray, name: str, output) -> object:
    """One bucket with its ``cluster`` column (null for customers with a null feature),
    written as a Parquet part (``output``) or returned; with its inertia."""
    xt, kept = spec.points(table)
    out = np.zeros(table.num_rows, dtype=np.int32)
    inertia = 0.0
    if xt.shape[1]:
        labels, _, _, inertia = _assign(xt, centres, False)
        out[kept] = labels
    column = pa.array(out, mask=None if kept.all() else ~kept)
    if name in table.column_names:
        table = table.set_column(table.column_names.index(name), name, column)
    else:
        table = table.append_column(name, column)
    if output is None:
        return table, inertia
    from .buckets import write_part

    return write_part(table, output), inertia


# --- on the client ------------------------------------------------------------------------------

def _each(client, fn, tables, *args, key: str) -> list:
    """``fn(bucket, *args)`` for every bucket, gathered in bucket order."""
    return client.gather([client.submit(fn, t, *args, key=f"{key}-{b}") for b, t in enumerate(tables)])


def fit_transform(client, tables: list, spec: KMeansSpec, key: str) -> int:
    """Fit ``spec``'s transform over all buckets (sets ``spec.fitted``); returns the customers kept."""
    t = spec.transform
    first = _each(client, bucket_moments, tables, spec, None, key=f"{key}-sums")
    n = sum(f[0] for f in first)
    if n == 0:
        raise RfmxError("no customers to cluster (none with all features non-null)")
    d = len(t.features)
    total = np.zeros(d)
    for f in first:
        total += f[1]
    mean = total / n
    lo = np.min([f[2] for f in first], axis=0)
    hi = np.max([f[3] for f in first], axis=0)
    for f, name in enumerate(t.features):
        if n > 1 and lo[f] == hi[f]:
            raise RfmxError(f"feature '{name}' is constant ({float(lo[f])!r} after the log step) over the {n:,} "
                            f"customers; it cannot separate clusters: drop it from the features")
    squares = np.zeros(d)
    for f in _each(client, bucket_moments, tables, spec, mean, key=f"{key}-squares"):
        squares += f[1]
    std = np.sqrt(squares / n)
    zscore = t.scaling == "zscore"
    spec.fitted = dict(t.to_dict(), center=(mean if zscore else np.zeros(d)).tolist(),
                       scale=(np.where(std > 0, std, 1.0) if zscore else np.ones(d)).tolist(), n_fitted=n)
    return n


def _locate(sizes: list, index: int) -> tuple[int, int]:
    cum = np.cumsum(sizes)
    b = int(np.searchsorted(cum, index, side="right"))
    return b, index - (int(cum[b - 1]) if b else 0)


def seed_kmeans_plusplus(client, tables: list, spec: KMeansSpec, k: int, random_state, sizes: list,
                         key: str) -> np.ndarray:
    """Greedy k-means++ (``2 + int(log k)`` candidates per centre, scikit-learn's draws) over
    the buckets' customers in bucket order."""
    from .kernels.kmeans import uniform_choice_index

    rs = random_state if isinstance(random_state, np.random.RandomState) else np.random.RandomState(random_state)
    n = sum(sizes)
    trials = 2 + int(np.log(k))
    b, i = _locate(sizes, int(uniform_choice_index(n, rs.random_sample())))
    centres = [client.gather(client.submit(bucket_pick, tables[b], spec, [], i, key=f"{key}-first"))]
    for c in range(1, k):
        C = np.array(centres)
        pots = np.array(_each(client, bucket_potential, tables, spec, C, key=f"{key}-pot{c}"))
        cum = np.cumsum(pots)
        draws = rs.uniform(size=trials) * cum[-1]
        candidates = []
        for j, r in enumerate(draws):
            b = min(int(np.searchsorted(cum, r, side="right")), len(cum) - 1)
            while pots[b] == 0:  # rounding at a bucket's end: the last bucket with a potential
                b -= 1
            local = r - (cum[b - 1] if b else 0.0)
            candidates.append(client.gather(client.submit(bucket_pick, tables[b], spec, C, local,
                                                          key=f"{key}-pick{c}-{j}")))
        cand = np.array(candidates)
        total = np.zeros(trials)
        for p in _each(client, bucket_candidate_potentials, tables, spec, C, cand, key=f"{key}-cand{c}"):
            total += p
        centres.append(cand[int(np.argmin(total))])
    return np.array(centres)


def lloyd(client, tables: list, spec: KMeansSpec, centres: np.ndarray, max_iter: int, tol: float,
          key: str) -> tuple[np.ndarray, int]:
    """Lloyd iterations from ``centres`` (stop rules as :class:`rfmx.cluster.KMeans`):
    ``(centres, iterations)``."""
    k, d = centres.shape
    previous = None
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        sums, counts, moved = np.zeros((k, d)), np.zeros(k, dtype=np.int64), 0
        for s, c, m in _each(client, bucket_lloyd, tables, spec, centres, previous, key=f"{key}-it{n_iter}"):
            sums += s
            counts += c
            moved += m
        relocated = bool((counts == 0).any())
        if relocated:
            empty = np.flatnonzero(counts == 0)
            found = _each(client, bucket_farthest, tables, spec, centres, len(empty), key=f"{key}-far{n_iter}")
            far = sorted(((-dist, b, row, label, point) for b, got in enumerate(found)
                          for dist, row, label, point in got))[:len(empty)]
            for e, (_, _, _, old, point) in zip(empty, far):
                sums[old] -= point
                counts[old] -= 1
                sums[e] = point
                counts[e] = 1
        new = centres.copy()
        filled = counts > 0
        new[filled] = sums[filled] / counts[filled, None]
        shift = float(((new - centres) ** 2).sum())
        previous, centres = centres, new
        if moved == 0 and not relocated:
            break
        if shift <= tol:
            break
    return centres, n_iter
