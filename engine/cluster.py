"""Customer clustering: k-means over RFM features, the customer model, choosing k, profiles.

Two layers:

- estimators on plain arrays, shaped like scikit-learn's (no scikit-learn at run time):
  :class:`KMeans` (k-means++ seeding, parallel Lloyd iterations) and
  :class:`MiniBatchKMeans` (``partial_fit`` over batches: feature matrices beyond RAM);
  :func:`kmeans_plusplus`, :func:`silhouette_score`; Ward's hierarchical clustering is
  :class:`rfmx.hierarchy.Ward`;
- the customer side, over the finalized per-customer table (``rfmx.aggregate``):
  :class:`~rfmx.customer_features.FeatureTransform` (log1p and standardization, stored
  with the model), :func:`make_estimator` (every clustering option, read in one place),
  :func:`fit_clusters` -> :class:`CustomerClusters` (k-means or Ward: ``predict``,
  ``profiles``, unique ``labels``, JSON ``save``/``load``), :func:`choose_k` (with the
  recommendation of :mod:`rfmx.kchoice`), :func:`cluster_profiles`,
  :func:`add_cluster_column`.  Clusters within segments: :mod:`rfmx.subclusters`.

Reproducibility: the random draws (k-means++, random init, samples) come from a
``numpy.random.RandomState`` and are the same draws scikit-learn makes for the same
``random_state``; every sum is taken in a fixed order over fixed-size chunks (see
:mod:`rfmx.kernels.kmeans`), so results are bit-identical for any thread count.

Importing this module compiles nothing and does not import Numba.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from .customer_features import DEFAULT_FEATURES, FeatureTransform, cluster_labels
from .errors import RfmxError
from .points import (CHUNK_SIZE, as_random_state, check_k, feature_major, kernel_threads,
                     nearest_centres, save_json)

__all__ = [
    "KMeans",
    "MiniBatchKMeans",
    "kmeans_plusplus",
    "silhouette_score",
    "FeatureTransform",
    "CustomerClusters",
    "fit_clusters",
    "choose_k",
    "cluster_profiles",
    "add_cluster_column",
    "make_estimator",
    "kmeans_from_dict",
    "labels_with_nulls",
    "parse_k_range",
    "K_CHOICE_KEY",
    "DEFAULT_FEATURES",
    "CHUNK_SIZE",
    "SILHOUETTE_SAMPLE",
]

#: Points on which silhouettes are computed (O(s^2) distances) when choosing k.
SILHOUETTE_SAMPLE = 10_000
MODEL_FORMAT = "rfmx-clusters"
MODEL_VERSION = 1


def _kernels():
    from .kernels import kmeans

    return kmeans


def _uniform_choice(rs: np.random.RandomState, n: int, **kw):
    # Exactly scikit-learn's draw with unit sample weights, so seeds mean the same thing.
    return rs.choice(n, p=np.full(n, 1.0 / n), **kw)


# --- k-means++ ----------------------------------------------------------------------------


def _kmeans_plusplus(xt: np.ndarray, k: int, rs: np.random.RandomState, chunk_size: int,
                     n_local_trials: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ on feature-major points; returns (centres (k, d), indices (k,))."""
    K = _kernels()
    d, n = xt.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(k))
    nch = K.n_chunks(n, chunk_size)
    closest = np.empty(n, dtype=np.float64)
    chunk_sums = np.empty(nch, dtype=np.float64)
    partial = np.empty((nch, n_local_trials), dtype=np.float64)
    pots = np.empty(n_local_trials, dtype=np.float64)
    centres = np.empty((k, d), dtype=np.float64)
    indices = np.full(k, -1, dtype=np.int64)
    first = int(K.uniform_choice_index(n, rs.random_sample()))  # = rs.choice(n, p=[1/n] * n)
    centres[0] = xt[:, first]
    indices[0] = first
    K.kpp_closest(xt, np.ascontiguousarray(centres[0]), chunk_size, True, closest, chunk_sums)
    pot = K.ordered_sum(chunk_sums)
    # The winner of each round is folded into ``closest`` during the next round's pass
    # (``pending``): one pass over the points per centre.
    pending = np.empty((0, d), dtype=np.float64)
    for c in range(1, k):
        draws = rs.uniform(size=n_local_trials) * pot
        cand = np.array([K.kpp_pick(xt, pending, closest, chunk_sums, chunk_size, r) for r in draws], dtype=np.int64)
        cand_points = np.ascontiguousarray(xt[:, cand].T)
        K.kpp_candidate_potentials(xt, pending, cand_points, closest, chunk_size, partial)
        K.kpp_sum_potentials(partial, pots)
        best = int(np.argmin(pots))
        centres[c] = cand_points[best]
        indices[c] = cand[best]
        pending = cand_points[best:best + 1]
        chunk_sums = np.ascontiguousarray(partial[:, best])
        pot = pots[best]
    return centres, indices


def kmeans_plusplus(X, n_clusters: int, *, random_state=None, n_local_trials: int | None = None,
                    chunk_size: int = CHUNK_SIZE, threads: int | None = None):
    """Greedy k-means++ seeding (as scikit-learn's ``kmeans_plusplus``).

    Each new centre is the best of ``2 + int(log k)`` candidates drawn with probability
    proportional to the squared distance to the nearest centre so far; the best is the one
    that lowers the potential (total squared distance) most.  Returns ``(centres (k, d),
    indices (k,))``; with the same ``random_state`` it makes scikit-learn's random draws.
    """
    xt = feature_major(X)
    k = check_k(n_clusters, xt.shape[1])
    with kernel_threads(threads):
        return _kmeans_plusplus(xt, k, as_random_state(random_state), int(chunk_size), n_local_trials)


# --- Lloyd ----------------------------------------------------------------------------------


def _relocate_empty(xt, old_centres, labels, sums, counts) -> None:
    """Give each empty cluster one of the points farthest from their centre (as
    scikit-learn: farthest first, then lowest index), taking it out of its cluster's sums."""
    K = _kernels()
    empty = np.flatnonzero(counts == 0)
    dist = np.empty(xt.shape[1], dtype=np.float64)
    K.assigned_sq_dist(xt, old_centres, labels, dist)
    m = len(empty)
    cut = np.partition(dist, len(dist) - m)[len(dist) - m]
    cand = np.flatnonzero(dist >= cut)
    far = cand[np.lexsort((cand, -dist[cand]))][:m]
    for e, p in zip(empty, far):
        old = labels[p]
        sums[old] -= xt[:, p]
        counts[old] -= 1
        sums[e] = xt[:, p]
        counts[e] = 1


def _lloyd(xt: np.ndarray, centres: np.ndarray, max_iter: int, tol: float, chunk_size: int):
    """Lloyd iterations from ``centres``; returns (labels int32, inertia, centres, n_iter).

    Stops when no label changes (strict convergence) or when the squared centre shift,
    summed over centres, is at most ``tol`` (absolute: see :func:`_tolerance`).  The final
    labels and inertia are those of the final centres (one more assignment pass).
    """
    K = _kernels()
    d, n = xt.shape
    k = centres.shape[0]
    nch = K.n_chunks(n, chunk_size)
    labels = np.full(n, -1, dtype=np.int32)
    sums = np.empty((nch, k, d), dtype=np.float64)
    counts = np.empty((nch, k), dtype=np.int64)
    changed = np.empty(nch, dtype=np.int64)
    none = np.empty(0, dtype=np.float64)
    total_sums = np.empty((k, d), dtype=np.float64)
    total_counts = np.empty(k, dtype=np.int64)
    centres = np.array(centres, dtype=np.float64, order="C")
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        K.lloyd_assign(xt, centres, chunk_size, labels, sums, counts, none, changed)
        _, moved = K.lloyd_merge(sums, counts, none, changed, total_sums, total_counts)
        relocated = bool((total_counts == 0).any())
        if relocated:
            _relocate_empty(xt, centres, labels, total_sums, total_counts)
        new = centres.copy()
        filled = total_counts > 0
        new[filled] = total_sums[filled] / total_counts[filled, None]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if moved == 0 and not relocated:
            break
        if shift <= tol:
            break
    inertia_parts = np.empty(nch, dtype=np.float64)
    K.lloyd_assign(xt, centres, chunk_size, labels, sums[:0], counts, inertia_parts, changed)
    inertia, _ = K.lloyd_merge(sums[:0], counts, inertia_parts, changed, total_sums, total_counts)
    return labels, float(inertia), centres, n_iter


def _same_partition(a: np.ndarray, b: np.ndarray, k: int) -> bool:
    """Whether every cluster of labelling ``a`` lies inside one cluster of ``b``."""
    pairs = np.bincount(a.astype(np.int64) * k + b, minlength=k * k).reshape(k, k)
    return bool(((pairs > 0).sum(axis=1) <= 1).all())


def _tolerance(xt: np.ndarray, tol: float) -> float:
    """scikit-learn's tolerance: ``tol`` times the mean of the features' variances."""
    if tol == 0:
        return 0.0
    return float(np.mean(np.var(xt, axis=1)) * tol)


class _Estimator:
    """What KMeans and MiniBatchKMeans share: predict, score, transform, JSON."""

    _params: tuple[str, ...] = ()

    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise RfmxError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    def _new_points(self, X) -> np.ndarray:
        self._check_fitted()
        xt = feature_major(X)
        if xt.shape[0] != self.cluster_centers_.shape[1]:
            raise RfmxError(f"X has {xt.shape[0]} features but the model was fitted with "
                            f"{self.cluster_centers_.shape[1]}")
        return xt

    def predict(self, X) -> np.ndarray:
        """The nearest centre of each row of ``X`` (n, d): int32 labels (n,)."""
        xt = self._new_points(X)
        with kernel_threads(self.threads):
            return nearest_centres(xt, self.cluster_centers_, self.chunk_size, False)[0]

    def score(self, X) -> float:
        """Minus the inertia of ``X`` (sum of squared distances to the nearest centre)."""
        xt = self._new_points(X)
        with kernel_threads(self.threads):
            return -nearest_centres(xt, self.cluster_centers_, self.chunk_size, True)[1]

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each row of ``X`` to each centre: (n, k)."""
        xt = self._new_points(X)
        C = self.cluster_centers_
        out = np.zeros((xt.shape[1], C.shape[0]))
        for f in range(xt.shape[0]):
            out += (xt[f][:, None] - C[None, :, f]) ** 2
        return np.sqrt(out)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_

    def get_params(self, deep: bool = True) -> dict:
        return {p: getattr(self, p) for p in self._params}

    def to_dict(self) -> dict:
        """Parameters and fitted state as plain JSON types (no pickle anywhere)."""
        params = self.get_params()
        if isinstance(params.get("init"), np.ndarray):
            params["init"] = params["init"].tolist()
        if isinstance(params.get("random_state"), np.random.RandomState):
            params["random_state"] = None
        out = {"estimator": type(self).__name__, "params": params}
        if hasattr(self, "cluster_centers_"):
            out["fitted"] = {"cluster_centers": self.cluster_centers_.tolist(),
                             **{a: getattr(self, a + "_") for a in self._fitted_scalars if hasattr(self, a + "_")}}
            if hasattr(self, "_counts"):
                out["fitted"]["counts"] = self._counts.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "saved model"):
        """The estimator :meth:`to_dict` described (``labels_`` is not kept).

        Every field is checked (types, finite centres, ``n_clusters`` against the centres'
        shape, ...): a damaged description is a one-line RfmxError starting with ``where``.
        """
        from .modelfile import Fields

        f = Fields(where)
        data = f.mapping(data, "the k-means model")
        name = f.get(data, "estimator", "the estimator name ('estimator')")
        est = {"KMeans": KMeans, "MiniBatchKMeans": MiniBatchKMeans}.get(name) if isinstance(name, str) else None
        if est is None or (cls is not _Estimator and est is not cls):
            f.fail(f"not a saved {cls.__name__}: estimator {name!r}")
        params = dict(f.mapping(f.get(data, "params", "the estimator parameters ('params')"), "params"))
        unknown = sorted(set(params) - set(est._params))
        if unknown:
            f.fail(f"{est.__name__} has no parameter {unknown[0]!r}")
        k = f.integer(f.get(params, "n_clusters"), "n_clusters", minimum=1)
        for p in ("n_init", "max_iter", "chunk_size", "batch_size", "max_epochs"):
            if p in params:
                f.integer(params[p], p, minimum=1)
        for p in ("init_sample", "threads"):
            f.integer(params.get(p), p, minimum=1, optional=True)
        f.integer(params.get("random_state"), "random_state", minimum=0, optional=True)
        if "tol" in params:
            f.number(params["tol"], "tol", minimum=0.0)
        if isinstance(params.get("init"), list):
            params["init"] = f.matrix(params["init"], "init", rows=k)
        elif "init" in params:
            f.string(params["init"], "init", choices=("k-means++", "random"))
        obj = est(**params)
        fitted = f.mapping(data.get("fitted"), "fitted", optional=True)
        if fitted:
            centres = f.matrix(f.get(fitted, "cluster_centers", "the cluster centres ('cluster_centers')"),
                               "cluster_centers")
            if centres.shape[0] != k:
                f.fail(f"n_clusters is {k} but the model has {centres.shape[0]} cluster centres")
            obj.cluster_centers_ = centres
            obj.n_features_in_ = centres.shape[1]
            for a in est._fitted_scalars:
                if a == "inertia":
                    value = f.number(fitted.get(a), a, minimum=0.0, optional=True)
                else:
                    value = f.integer(fitted.get(a), a, minimum=0, optional=True)
                if value is not None:
                    setattr(obj, a + "_", value)
            if fitted.get("counts") is not None:
                counts = f.array(fitted["counts"], "counts", length=k)
                if (counts < 0).any() or (counts != np.floor(counts)).any():
                    f.fail("counts must be whole numbers >= 0 (customers per cluster)")
                obj._counts = counts.astype(np.int64)
        return obj

    def save(self, path) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path):
        """Read an estimator written by :meth:`save`; a damaged file is a one-line RfmxError."""
        from .modelfile import read_model_json

        return cls.from_dict(read_model_json(path, "k-means model"), where=str(path))

    def __repr__(self) -> str:
        shown = ", ".join(f"{p}={getattr(self, p)!r}" for p in self._params[:1])
        return f"{type(self).__name__}({shown})"


def kmeans_from_dict(data: dict, where: str = "saved model"):
    """The :class:`KMeans` or :class:`MiniBatchKMeans` a ``to_dict()`` described (by its
    ``estimator`` name); a damaged description is a one-line RfmxError."""
    return _Estimator.from_dict(data, where)


class KMeans(_Estimator):
    """k-means clustering (Lloyd), shaped like ``sklearn.cluster.KMeans``.

    Parameters
    ----------
    n_clusters:
        k, the number of clusters (1 <= k <= number of points).
    init:
        ``"k-means++"`` (greedy, ``2 + int(log k)`` local trials), ``"random"`` (k distinct
        points) or an array (k, d) of initial centres.
    n_init:
        Runs from different seedings; the one with the lowest inertia is kept.  Only 1 is
        run for an array ``init``.
    max_iter, tol:
        At most ``max_iter`` Lloyd iterations per run; a run stops when no label changes
        or when the squared shift of the centres (summed) is at most ``tol`` times the mean
        variance of the features.
    random_state:
        None, an int or a ``numpy.random.RandomState``: the same draws as scikit-learn.
    init_sample:
        Seed on a uniform random sample of this many points (drawn with replacement, as
        scikit-learn's ``init_size``) instead of all of them: for very large populations.
        Lloyd then runs on all points.  See docs/clustering.md for the quality.
    chunk_size:
        Points per chunk of the parallel passes (results depend on it, not on threads).
    threads:
        Numba threads (None: Numba's setting).

    Attributes after :meth:`fit`: ``cluster_centers_`` (k, d), ``labels_`` (n,) int32,
    ``inertia_`` (sum of squared distances to the nearest centre), ``n_iter_`` (iterations
    of the kept run), ``n_features_in_``.
    """

    _params = ("n_clusters", "init", "n_init", "max_iter", "tol", "random_state", "init_sample",
               "chunk_size", "threads")
    _fitted_scalars = ("inertia", "n_iter")

    def __init__(self, n_clusters: int = 8, *, init="k-means++", n_init: int = 1, max_iter: int = 300,
                 tol: float = 1e-4, random_state=None, init_sample: int | None = None,
                 chunk_size: int = CHUNK_SIZE, threads: int | None = None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init_sample = init_sample
        self.chunk_size = chunk_size
        self.threads = threads

    def _check_params(self, d: int):
        if not isinstance(self.n_init, (int, np.integer)) or self.n_init < 1:
            raise RfmxError(f"n_init must be an int >= 1, got {self.n_init!r}")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise RfmxError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        if not self.tol >= 0:
            raise RfmxError(f"tol must be >= 0, got {self.tol!r}")
        if not isinstance(self.chunk_size, (int, np.integer)) or self.chunk_size < 1:
            raise RfmxError(f"chunk_size must be an int >= 1, got {self.chunk_size!r}")
        if self.init_sample is not None and (not isinstance(self.init_sample, (int, np.integer)) or self.init_sample < 1):
            raise RfmxError(f"init_sample must be None or an int >= 1, got {self.init_sample!r}")
        init = self.init
        if isinstance(init, str):
            if init not in ("k-means++", "random"):
                raise RfmxError(f"init must be 'k-means++', 'random' or an array of centres, got {init!r}")
            return None
        C = np.array(init, dtype=np.float64, order="C")
        if C.shape != (self.n_clusters, d):
            raise RfmxError(f"init centres have shape {C.shape}; expected ({self.n_clusters}, {d})")
        if not np.isfinite(C).all():
            raise RfmxError("init centres contain NaN or infinite values")
        return C

    def _seed(self, xt, k, rs, init_array):
        if init_array is not None:
            return init_array.copy()
        n = xt.shape[1]
        pts = xt
        if self.init_sample is not None and self.init_sample < n:
            idx = rs.randint(0, n, self.init_sample)
            pts = np.ascontiguousarray(xt[:, idx])
            if k > self.init_sample:
                raise RfmxError(f"init_sample={self.init_sample} is smaller than n_clusters={k}")
        if self.init == "k-means++":
            return _kmeans_plusplus(pts, k, rs, int(self.chunk_size))[0]
        seeds = _uniform_choice(rs, pts.shape[1], size=k, replace=False)
        return np.ascontiguousarray(pts[:, seeds].T)

    def fit(self, X, y=None, sample_weight=None) -> "KMeans":
        """Cluster ``X`` (n, d) (float; NaN and infinity are rejected).  ``y`` is ignored;
        ``sample_weight`` is not supported (must be None)."""
        if sample_weight is not None:
            raise RfmxError("sample_weight is not supported")
        xt = feature_major(X)
        d, n = xt.shape
        k = check_k(self.n_clusters, n)
        init_array = self._check_params(d)
        rs = as_random_state(self.random_state)
        tol = _tolerance(xt, self.tol)
        runs = 1 if init_array is not None else int(self.n_init)
        best = None
        with kernel_threads(self.threads):
            for _ in range(runs):
                centres = self._seed(xt, k, rs, init_array)
                result = _lloyd(xt, centres, int(self.max_iter), tol, int(self.chunk_size))
                # As scikit-learn: the same partition found again is not a better run, even
                # if stopping earlier or later left its inertia a little lower.
                if best is None or (result[1] < best[1] and not _same_partition(result[0], best[0], k)):
                    best = result
        self.labels_, self.inertia_, self.cluster_centers_, self.n_iter_ = best
        self.n_features_in_ = d
        return self


class MiniBatchKMeans(_Estimator):
    """Mini-batch k-means for feature matrices that do not fit in memory (Sculley 2010).

    :meth:`partial_fit` takes one batch (n_b, d) at a time: the first batch seeds the
    centres (k-means++ on at most ``init_sample`` of its points; it needs >= k points),
    each batch then moves every centre to the running mean of all points ever assigned to
    it (per-centre learning rate 1 / count).  Memory: one batch plus (k, d).
    :meth:`fit` runs ``max_epochs`` shuffled passes of ``batch_size`` over an in-memory
    array and ends with one full assignment pass (``labels_``, ``inertia_``).

    Quality against full Lloyd: see docs/clustering.md.  Centres that no point reaches
    stay where they were seeded (no random reassignment).
    """

    _params = ("n_clusters", "batch_size", "max_epochs", "init_sample", "random_state", "chunk_size", "threads")
    _fitted_scalars = ("inertia", "n_iter", "n_steps")

    def __init__(self, n_clusters: int = 8, *, batch_size: int = 65_536, max_epochs: int = 1,
                 init_sample: int | None = None, random_state=None, chunk_size: int = CHUNK_SIZE,
                 threads: int | None = None):
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.init_sample = init_sample
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.threads = threads

    def _rs(self):
        if not hasattr(self, "_random"):
            self._random = as_random_state(self.random_state)
        return self._random

    def partial_fit(self, X, y=None) -> "MiniBatchKMeans":
        """Fold one batch (n_b, d) into the centres."""
        K = _kernels()
        xt = feature_major(X)
        d, n = xt.shape
        with kernel_threads(self.threads):
            if not hasattr(self, "cluster_centers_"):
                k = check_k(self.n_clusters, n)
                rs = self._rs()
                pts = xt
                size = self.init_sample if self.init_sample is not None else 3 * int(self.batch_size)
                if size < n:
                    pts = np.ascontiguousarray(xt[:, rs.randint(0, n, max(size, k))])
                self.cluster_centers_ = _kmeans_plusplus(pts, k, rs, int(self.chunk_size))[0]
                self._counts = np.zeros(k, dtype=np.int64)
                self.n_features_in_ = d
                self.n_steps_ = 0
            elif d != self.cluster_centers_.shape[1]:
                raise RfmxError(f"batch has {d} features; the model has {self.cluster_centers_.shape[1]}")
            if n == 0:
                return self
            k = self.cluster_centers_.shape[0]
            cs = int(self.chunk_size)
            nch = K.n_chunks(n, cs)
            labels = np.full(n, -1, dtype=np.int32)
            sums = np.empty((nch, k, d))
            counts = np.empty((nch, k), dtype=np.int64)
            changed = np.empty(nch, dtype=np.int64)
            none = np.empty(0)
            bsums = np.empty((k, d))
            bcounts = np.empty(k, dtype=np.int64)
            K.lloyd_assign(xt, self.cluster_centers_, cs, labels, sums, counts, none, changed)
            K.lloyd_merge(sums, counts, none, changed, bsums, bcounts)
            hit = bcounts > 0
            total = self._counts + bcounts
            C = self.cluster_centers_
            C[hit] = (C[hit] * self._counts[hit, None] + bsums[hit]) / total[hit, None]
            self._counts = total
            self.n_steps_ += 1
        return self

    def fit(self, X, y=None) -> "MiniBatchKMeans":
        """``max_epochs`` shuffled passes of mini-batches over ``X`` (n, d), then labels."""
        xt = feature_major(X)
        n = xt.shape[1]
        check_k(self.n_clusters, n)
        for attr in ("cluster_centers_", "_counts", "_random"):
            self.__dict__.pop(attr, None)
        rs = self._rs()
        bs = int(self.batch_size)
        if bs < self.n_clusters:
            raise RfmxError(f"batch_size={bs} is smaller than n_clusters={self.n_clusters}: a batch seeds the centres")
        for _ in range(int(self.max_epochs)):
            order = rs.permutation(n)
            for start in range(0, n, bs):
                self.partial_fit(xt[:, np.sort(order[start:start + bs])].T)
        with kernel_threads(self.threads):
            self.labels_, self.inertia_ = nearest_centres(xt, self.cluster_centers_, int(self.chunk_size), True)
        self.n_iter_ = int(self.max_epochs)
        return self


# --- silhouettes ------------------------------------------------------------------------------


def silhouette_score(X, labels, *, sample_size: int | None = SILHOUETTE_SAMPLE, random_state=None,
                     threads: int | None = None) -> float:
    """Mean silhouette coefficient (Euclidean), on a uniform sample of ``sample_size`` points
    (drawn as scikit-learn's ``silhouette_score`` draws it; None: all points, O(n^2)).

    NaN when fewer than 2 clusters are present in the sample or every point is its own
    cluster (the coefficient is undefined there).
    """
    K = _kernels()
    xt = feature_major(X)
    labels = np.asarray(labels)
    n = xt.shape[1]
    if labels.shape != (n,):
        raise RfmxError(f"labels have shape {labels.shape}; expected ({n},)")
    if sample_size is not None and sample_size < n:
        idx = as_random_state(random_state).permutation(n)[:sample_size]
        xt = np.ascontiguousarray(xt[:, idx])
        labels = labels[idx]
    _, dense = np.unique(labels, return_inverse=True)
    dense = dense.astype(np.int64)
    k = int(dense.max()) + 1 if len(dense) else 0
    if k < 2 or k >= len(dense):
        return float("nan")
    out = np.empty(len(dense), dtype=np.float64)
    with kernel_threads(threads):
        K.silhouette_samples(xt, dense, k, out)
    return float(out.mean())


# --- the customer model -------------------------------------------------------------------------------


class CustomerClusters:
    """A fitted customer clustering: the feature transform plus a fitted estimator
    (:class:`KMeans`, :class:`MiniBatchKMeans` or :class:`rfmx.hierarchy.Ward`).

    ``predict(table)`` places customers (new ones too) in the clusters; ``profiles``
    describes them; ``save``/``load`` use JSON (never pickle).
    """

    def __init__(self, transform: FeatureTransform, estimator):
        self.transform = transform
        self.estimator = estimator

    @property
    def method(self) -> str:
        """``"kmeans"`` or ``"ward"``."""
        from .hierarchy import Ward

        return "ward" if isinstance(self.estimator, Ward) else "kmeans"

    @property
    def n_clusters(self) -> int:
        return int(self.estimator.cluster_centers_.shape[0])

    @property
    def labels(self) -> list[str]:
        """One human label per cluster, from its centre; no two alike (see
        :func:`rfmx.customer_features.cluster_labels`)."""
        return cluster_labels(self.transform, self.estimator.cluster_centers_)

    def centres(self) -> pa.Table:
        """The centres in the features' own units (one row per cluster)."""
        V = self.transform.inverse(self.estimator.cluster_centers_)
        data = {"cluster": pa.array(np.arange(self.n_clusters, dtype=np.int32))}
        for f, name in enumerate(self.transform.features):
            data[name] = pa.array(V[:, f])
        return pa.table(data)

    def predict(self, table: pa.Table, where: str = "table") -> pa.Array:
        """Cluster of each customer of ``table``: int32, null where a feature is null."""
        X, kept = self.transform.transform(table, where)
        out = np.zeros(table.num_rows, dtype=np.int32)
        if X.shape[0]:
            out[kept] = self.estimator.predict(X)
        return pa.array(out, mask=None if kept.all() else ~kept)

    def recut(self, n_clusters: int | None = None, distance: float | None = None) -> "CustomerClusters":
        """Cut a Ward model's tree again at ``n_clusters`` or ``distance`` (no refit; see
        :meth:`rfmx.hierarchy.Ward.recut`).  Returns self."""
        if self.method != "ward":
            raise RfmxError("only a Ward model (--method ward) can be cut again; a k-means model is refitted")
        self.estimator.recut(n_clusters, distance)
        return self

    def dendrogram(self) -> dict:
        """A Ward model's tree and cut (:meth:`rfmx.hierarchy.Ward.dendrogram`) with the
        ``features`` and the cluster ``labels``: the JSON of ``--dendrogram-out``."""
        if self.method != "ward":
            raise RfmxError("only a Ward model (--method ward) has a dendrogram")
        return {**self.estimator.dendrogram(), "features": list(self.transform.features), "labels": self.labels}

    def profiles(self, table: pa.Table, clusters: pa.Array | None = None) -> pa.Table:
        """:func:`cluster_profiles` with this model's labels (``clusters`` default: predict)."""
        if clusters is None:
            clusters = self.predict(table)
        return cluster_profiles(table, clusters, labels=self.labels, k=self.n_clusters)

    def to_dict(self) -> dict:
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "features": self.transform.to_dict(),
                ("ward" if self.method == "ward" else "kmeans"): self.estimator.to_dict(), "labels": self.labels}

    def save(self, path) -> None:
        """Write the model as JSON (atomically)."""
        save_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, data: dict, where: str = "saved model") -> "CustomerClusters":
        """The model :meth:`to_dict` described; refuses other formats and versions, and a
        damaged description (NaN or infinite numbers, shapes that disagree, missing or
        mistyped fields) is a one-line RfmxError starting with ``where``."""
        from .modelfile import Fields

        f = Fields(where)
        data = f.mapping(data, "the cluster model")
        if data.get("format") != MODEL_FORMAT or data.get("version") != MODEL_VERSION:
            f.fail(f"not an rfmx cluster model (format/version {(data.get('format'), data.get('version'))}); "
                   f"this rfmx reads {MODEL_FORMAT!r} version {MODEL_VERSION}")
        transform = FeatureTransform.from_dict(f.get(data, "features", "the feature transform ('features')"), where)
        if "ward" in data:
            from .hierarchy import Ward

            estimator = Ward.from_dict(data["ward"], where)
            fitted = hasattr(estimator, "linkage_")
            width = estimator.micro_centers_.shape[1] if fitted else None
        else:
            estimator = kmeans_from_dict(f.get(data, "kmeans", "the k-means estimator ('kmeans')"), where)
            fitted = hasattr(estimator, "cluster_centers_")
            width = estimator.cluster_centers_.shape[1] if fitted else None
        model = cls(transform, estimator)
        if not fitted or not hasattr(model.transform, "center_"):
            f.fail("the cluster model is not fitted")
        d = len(transform.features)
        if width != d:
            f.fail(f"the cluster centres have {width} coordinates but the model has {d} features")
        if "labels" in data:
            f.strings(data["labels"], "labels", length=model.n_clusters)
        return model

    @classmethod
    def load(cls, path) -> "CustomerClusters":
        """Read a model written by :meth:`save` (see :meth:`from_dict`); a damaged file is a
        one-line RfmxError naming the file and what is wrong."""
        from .modelfile import read_model_json

        return cls.from_dict(read_model_json(path, "cluster model"), str(path))

    def __repr__(self) -> str:
        return f"CustomerClusters(method={self.method!r}, k={self.n_clusters}, features={list(self.transform.features)})"


def make_estimator(k: int | None = 8, *, method: str = "kmeans", algorithm: str = "lloyd",
                   distance: float | None = None, n_init: int = 1, max_iter: int = 300, tol: float = 1e-4,
                   random_state=0, init_sample: int | None = None, mini_batch_size: int = 65_536, epochs: int = 1,
                   n_micro: int | None = None, micro_sample: int | None = None, threads: int | None = None):
    """The unfitted estimator the options describe -- the one place the clustering options
    of :func:`fit_clusters`, :func:`choose_k` and :func:`rfmx.subclusters.fit_within` are
    read.

    ``method="kmeans"``: :class:`KMeans` (``algorithm="lloyd"``: ``n_init``, ``max_iter``,
    ``tol``, ``init_sample``) or :class:`MiniBatchKMeans` (``"minibatch"``:
    ``mini_batch_size``, ``epochs``, ``init_sample``).  ``method="ward"``:
    :class:`rfmx.hierarchy.Ward` cut at ``k`` clusters or at ``distance`` (``n_micro``,
    ``micro_sample``; the k-means options are not used).  ``random_state`` and ``threads``
    serve both.
    """
    if method == "ward":
        from .hierarchy import DEFAULT_MICRO, MICRO_SAMPLE, Ward

        if algorithm != "lloyd":
            raise RfmxError("mini-batch k-means is a k-means option: it does not apply to --method ward")
        return Ward(k, distance=distance, n_micro=DEFAULT_MICRO if n_micro is None else n_micro,
                    micro_sample=MICRO_SAMPLE if micro_sample is None else micro_sample,
                    random_state=random_state, threads=threads)
    if method != "kmeans":
        raise RfmxError(f"method must be 'kmeans' or 'ward', got {method!r}")
    if distance is not None:
        raise RfmxError("a cut at a distance needs a tree: use it with --method ward")
    if n_micro is not None or micro_sample is not None:
        raise RfmxError("micro-clusters are the first stage of --method ward; k-means has none")
    if algorithm == "lloyd":
        return KMeans(k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=random_state,
                      init_sample=init_sample, threads=threads)
    if algorithm == "minibatch":
        return MiniBatchKMeans(k, batch_size=mini_batch_size, max_epochs=epochs, init_sample=init_sample,
                               random_state=random_state, threads=threads)
    raise RfmxError(f"algorithm must be 'lloyd' or 'minibatch', got {algorithm!r}")


def labels_with_nulls(values: np.ndarray, kept: np.ndarray) -> pa.Array:
    """Cluster per row of a table (int32): ``values`` for the rows ``kept``, null elsewhere."""
    labels = np.zeros(len(kept), dtype=np.int32)
    labels[kept] = values
    return pa.array(labels, mask=None if kept.all() else ~kept)


def fit_clusters(table: pa.Table, k: int | None = 8, *, features=DEFAULT_FEATURES, log=True,
                 scaling: str = "zscore", where: str = "table", **options) -> tuple[CustomerClusters, pa.Array]:
    """Cluster the customers of a per-customer table (``rfmx.aggregate``'s output).

    Returns ``(model, clusters)``: the fitted :class:`CustomerClusters` and each row's
    cluster (int32 array, null for customers left out for a null feature).  ``options``
    choose and tune the estimator (:func:`make_estimator`: ``method="kmeans"`` or
    ``"ward"``, ``distance``, ``algorithm``, ``n_init``, ``max_iter``, ``n_micro``, ...); see
    :class:`FeatureTransform` for ``features``, ``log`` and ``scaling``.
    """
    transform = FeatureTransform(features, log=log, scaling=scaling).fit(table, where)
    X, kept = transform.transform(table, where)
    est = make_estimator(k, **options)
    if options.get("distance") is None:
        check_k(k, X.shape[0])
    est.fit(X)
    return CustomerClusters(transform, est), labels_with_nulls(est.labels_, kept)


def add_cluster_column(table: pa.Table, k: int = 8, *, name: str = "cluster", model: CustomerClusters | None = None,
                       **options) -> pa.Table:
    """``table`` with a ``cluster`` column (int32, null where a feature is null).

    Fits a model with :func:`fit_clusters` (``options`` are its keywords) or, with
    ``model``, places the customers in that model's clusters.
    """
    clusters = model.predict(table) if model is not None else fit_clusters(table, k, **options)[1]
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, clusters)
    return table.append_column(name, clusters)


def parse_k_range(text: str) -> list[int]:
    """``"2..12"`` (inclusive), ``"2-12"`` or ``"2,4,8"`` -> list of k values."""
    text = str(text).strip()
    try:
        for sep in ("..", "-", ":"):
            if sep in text:
                a, b = text.split(sep, 1)
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise RfmxError(f"k range {text!r} is empty (start > end)")
                return list(range(lo, hi + 1))
        return sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise RfmxError(f"cannot read {text!r} as a k range (e.g. 2..12 or 2,4,8)") from None


#: The k table's metadata key holding the recommendation (JSON: k, reason, the two readings).
K_CHOICE_KEY = "rfmx.k_choice"


def choose_k(table_or_X, k_values, *, silhouette_sample: int | None = SILHOUETTE_SAMPLE, random_state=0,
             features=DEFAULT_FEATURES, log=True, scaling: str = "zscore", **options) -> pa.Table:
    """Compare k over ``k_values`` and recommend one: one row per k, ready to plot.

    Columns: ``k``, ``inertia`` (sum of squared distances in standardized units),
    ``variance_explained`` (1 - inertia / total sum of squares), ``silhouette`` (mean, on a
    uniform sample of ``silhouette_sample`` customers, the same sample for every k; null
    for k = 1), ``n_iter`` (Lloyd iterations; null for Ward), ``elbow_distance`` (how far
    below the chord of the inertia curve the k lies, see :mod:`rfmx.kchoice`) and
    ``recommended`` (true on the recommended k).  The schema metadata ``rfmx.k_choice``
    holds the recommendation and its reason (JSON); :func:`rfmx.kchoice.recommend_k`
    recomputes it from the columns.

    ``table_or_X``: a per-customer table (features as in :func:`fit_clusters`) or an
    already standardized array (n, d).  ``options``: the estimator's, as
    :func:`make_estimator` (``method="ward"`` builds one tree and cuts it at every k).
    """
    import json

    from .kchoice import recommend_k

    if isinstance(table_or_X, (pa.Table, pa.RecordBatch)):
        table = table_or_X if isinstance(table_or_X, pa.Table) else pa.Table.from_batches([table_or_X])
        X, _ = FeatureTransform(features, log=log, scaling=scaling).fit(table).transform(table)
    else:
        X = np.asfortranarray(np.asarray(table_or_X, dtype=np.float64))
    ks = sorted({int(k) for k in k_values})
    if not ks:
        raise RfmxError("no k values to compare")
    xt = feature_major(X)
    for k in ks:
        check_k(k, xt.shape[1])
    total_ss = float(((xt - xt.mean(axis=1, keepdims=True)) ** 2).sum())
    sample = None
    if silhouette_sample is not None and silhouette_sample < xt.shape[1]:
        sample = np.sort(as_random_state(random_state).permutation(xt.shape[1])[:silhouette_sample])
    threads = options.get("threads")
    rows = {"k": [], "inertia": [], "variance_explained": [], "silhouette": [], "n_iter": []}
    tree = None
    if options.get("method") == "ward":
        tree = make_estimator(ks[-1], random_state=random_state, **options).fit(X)
    for k in ks:
        if tree is not None:
            est = tree.recut(k)
        else:
            est = make_estimator(k, random_state=random_state, **options).fit(X)
        if sample is None:
            sil = silhouette_score(X, est.labels_, sample_size=None, threads=threads)
        else:
            sil = silhouette_score(np.asfortranarray(X[sample]), est.labels_[sample], sample_size=None, threads=threads)
        rows["k"].append(k)
        rows["inertia"].append(est.inertia_)
        rows["variance_explained"].append(1.0 - est.inertia_ / total_ss if total_ss > 0 else None)
        rows["silhouette"].append(None if math.isnan(sil) else sil)
        rows["n_iter"].append(None if tree is not None else int(est.n_iter_))
    choice = recommend_k(rows["k"], rows["inertia"], rows["silhouette"])
    out = pa.table({"k": pa.array(rows["k"], pa.int32()), "inertia": pa.array(rows["inertia"], pa.float64()),
                    "variance_explained": pa.array(rows["variance_explained"], pa.float64()),
                    "silhouette": pa.array(rows["silhouette"], pa.float64()),
                    "n_iter": pa.array(rows["n_iter"], pa.int32()),
                    "elbow_distance": pa.array([choice.elbow_distance[k] for k in ks], pa.float64()),
                    "recommended": pa.array([k == choice.k for k in ks], pa.bool_())})
    n_sil = xt.shape[1] if sample is None else len(sample)
    info = {"k": choice.k, "reason": choice.reason, "best_silhouette_k": choice.best_silhouette_k,
            "elbow_k": choice.elbow_k, "method": options.get("method", "kmeans")}
    return out.replace_schema_metadata({"rfmx.silhouette_sample": str(n_sil), K_CHOICE_KEY: json.dumps(info)})


# --- profiles -------------------------------------------------------------------------------------

_PROFILE_COLUMNS = (("recency", "recency_days"), ("frequency", "n_orders"), ("monetary", "monetary_total"))


def cluster_profiles(table: pa.Table, clusters, *, labels: list[str] | None = None, k: int | None = None,
                     segment_column: str = "segment") -> pa.Table:
    """One row per cluster: who is in it and what they are worth.

    Columns: ``cluster``, ``label`` (``labels[c]`` if given), ``customers``,
    ``share_customers``, ``revenue`` (sum of ``monetary_total``), ``share_revenue``, then
    ``{recency,frequency,monetary}_{mean,median}`` (of ``recency_days``, ``n_orders``,
    ``monetary_total``; columns the table lacks are skipped) and, when ``table`` has a
    ``segment`` column, ``segment`` (the most common one; ties: first in sort order) and
    ``segment_share``.  Customers without a cluster (null) get a last row with a null
    cluster.  Rows are in cluster order; shares are over all rows of ``table``.
    """
    import pyarrow.compute as pc

    if isinstance(clusters, pa.ChunkedArray):
        clusters = clusters.combine_chunks()
    clusters = pa.array(clusters) if not isinstance(clusters, pa.Array) else clusters
    if len(clusters) != table.num_rows:
        raise RfmxError(f"{len(clusters)} cluster labels for {table.num_rows} customers")
    valid = np.asarray(clusters.is_valid())
    lab = pc.fill_null(clusters, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    if k is None:
        k = int(lab.max()) + 1 if len(lab) and lab.max() >= 0 else 0
    groups = [np.flatnonzero(lab == c) for c in range(k)]
    if not valid.all():
        groups.append(np.flatnonzero(~valid))
    n_total = table.num_rows
    revenue = None
    if "monetary_total" in table.column_names:
        revenue = pc.fill_null(table.column("monetary_total"), 0.0).to_numpy().astype(np.float64)
        total_rev = float(revenue.sum())
    out = {"cluster": pa.array(list(range(k)) + ([None] * (len(groups) - k)), pa.int32())}
    lbls = list(labels) if labels is not None else [None] * k
    out["label"] = pa.array(lbls + (["not clustered (a feature is null)"] if len(groups) > k else []), pa.string())
    sizes = [len(g) for g in groups]
    out["customers"] = pa.array(sizes, pa.int64())
    out["share_customers"] = pa.array([s / n_total if n_total else None for s in sizes], pa.float64())
    if revenue is not None:
        revs = [float(revenue[g].sum()) for g in groups]
        out["revenue"] = pa.array(revs, pa.float64())
        out["share_revenue"] = pa.array([r / total_rev if total_rev > 0 else None for r in revs], pa.float64())
    for short, col in _PROFILE_COLUMNS:
        if col not in table.column_names:
            continue
        c = table.column(col)
        v = pc.cast(c, pa.float64()).to_numpy(zero_copy_only=False)
        ok = np.asarray(c.is_valid()) if c.null_count else None
        means, medians = [], []
        for g in groups:
            x = v[g] if ok is None else v[g][ok[g]]
            means.append(float(x.mean()) if len(x) else None)
            medians.append(float(np.median(x)) if len(x) else None)
        out[f"{short}_mean"] = pa.array(means, pa.float64())
        out[f"{short}_median"] = pa.array(medians, pa.float64())
    if segment_column in table.column_names:
        seg = table.column(segment_column).combine_chunks()
        seg_codes = seg.dictionary_encode() if not pa.types.is_dictionary(seg.type) else seg
        codes = pc.fill_null(seg_codes.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        dictionary = seg_codes.dictionary.to_pylist()
        order = np.argsort(np.array([str(x) for x in dictionary], dtype=object), kind="stable") if dictionary else []
        rank = np.empty(len(dictionary), dtype=np.int64)
        rank[np.asarray(order, dtype=np.int64)] = np.arange(len(dictionary))
        dom, share = [], []
        for g in groups:
            cg = codes[g]
            cg = cg[cg >= 0]
            if not len(cg):
                dom.append(None)
                share.append(None)
                continue
            counts = np.bincount(cg, minlength=len(dictionary))
            best = counts.max()
            winners = np.flatnonzero(counts == best)
            w = winners[np.argmin(rank[winners])]
            dom.append(str(dictionary[w]))
            share.append(float(best) / len(g))
        out["segment"] = pa.array(dom, pa.string())
        out["segment_share"] = pa.array(share, pa.float64())
    return pa.table(out)
