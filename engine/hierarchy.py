"""Hierarchical (Ward) clustering of millions of customers, in two stages.

Full Ward linkage needs every pairwise distance: O(n^2) memory, out of reach beyond some
tens of thousands of customers.  :class:`Ward` therefore clusters in two stages:

1. **micro-clusters**: k-means (k-means++ seeding, Lloyd; :class:`rfmx.cluster.KMeans`)
   into ``n_micro`` micro-clusters, fitted on a uniform sample of ``micro_sample``
   customers, then one pass over every customer places each at its nearest micro-centre
   and sums the micro-clusters' sizes and means.  When the customers have at most
   ``n_micro`` distinct points this stage is the identity: each distinct point is its own
   micro-cluster (weighted by how often it occurs), so the result is Ward's on the raw
   points (scipy's ``linkage(X, "ward")`` bit for bit when the points are distinct);
2. **Ward linkage** of the micro-clusters, each a cluster of weight ``n_j`` at its mean
   (:func:`ward_linkage`): the exact Ward hierarchy over the micro-clusters.

The tree is cut at ``n_clusters`` clusters or at a height ``distance``
(:func:`cut_tree`); a customer's cluster is its micro-cluster's.  New customers are placed
at their nearest micro-centre (:meth:`Ward.predict`).  Clusters are numbered from 0 in the
dendrogram's left-to-right order (scipy's ``fcluster`` makes the same clusters, numbered
in another order).

The dendrogram (merges with heights and sizes, and the cut) is plain JSON
(:meth:`Ward.dendrogram`, :func:`read_dendrogram`); a fitted model saves as JSON and can be
cut again at another k without refitting (:meth:`Ward.recut`).

Importing this module compiles nothing and does not import Numba.
"""
from __future__ import annotations

import numpy as np

from .errors import RfmxError
from .points import CHUNK_SIZE, as_random_state, check_k, feature_major, kernel_threads, save_json

__all__ = ["Ward", "ward_linkage", "cut_tree", "leaf_order", "read_dendrogram", "check_linkage", "distinct_count",
           "DEFAULT_MICRO", "MICRO_SAMPLE", "MICRO_MAX_ITER", "MAX_MICRO", "DENDROGRAM_FORMAT"]

#: Micro-clusters of the first stage.
DEFAULT_MICRO = 256
#: Customers the micro-clusters are fitted on (then every customer is placed).
MICRO_SAMPLE = 100_000
#: Lloyd iterations of the micro-cluster k-means: micro-clusters are a fine quantization of
#: the customers, not a result, and converging them further changes the tree no more than a
#: 1e-3 jitter of the data does (docs/clustering.md); the sample's iterations are most of
#: the first stage's time.
MICRO_MAX_ITER = 30
MICRO_TOL = 1e-4
#: The most micro-clusters: the linkage's distance matrix holds 4 m^2 bytes (10,000: 400 MB).
MAX_MICRO = 10_000
DENDROGRAM_FORMAT = "rfmx-dendrogram"
DENDROGRAM_VERSION = 1


def ward_linkage(points, weights=None) -> np.ndarray:
    """Ward linkage of ``points`` (m, d) with positive ``weights`` (m,) (default 1 each).

    Returns scipy's linkage matrix ``Z`` (m - 1, 4): row ``i`` merges nodes ``Z[i, 0] <
    Z[i, 1]`` (below m: a point; ``m + r``: the node made by row ``r``) at height
    ``Z[i, 2]`` into node ``m + i`` of total weight ``Z[i, 3]``; rows in height order.  A
    point of weight w stands for w customers at that point: the tree is the Ward tree of
    those customers above their (zero-height) merges.  With unit weights it is
    ``scipy.cluster.hierarchy.linkage(points, "ward")`` bit for bit (the algorithm, the
    arithmetic and the tie rule are scipy's: see :mod:`rfmx.kernels.hierarchy`).
    """
    from .kernels import hierarchy as H

    xt = feature_major(points, "points")
    m = xt.shape[1]
    if m == 0:
        raise RfmxError("no points to link")
    if weights is None:
        w = np.ones(m)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (m,):
            raise RfmxError(f"weights have shape {w.shape}; expected ({m},)")
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise RfmxError("weights must be finite and > 0")
    Z = np.empty((m - 1, 4), dtype=np.float64)
    H.ward_linkage(np.ascontiguousarray(xt.T), w, Z)
    return Z


def distinct_count(X, limit: int) -> int | None:
    """How many distinct points (rows) ``X`` (n, d) has, or None when more than ``limit``
    (the scan stops there): how many leaves a Ward tree over them can have."""
    from .kernels import hierarchy as H

    xt = feature_major(X)
    found = H.distinct_points(xt, int(limit), np.empty(xt.shape[1], dtype=np.int64), np.empty(int(limit), dtype=np.int64))
    return None if found < 0 else int(found)


def _children(Z: np.ndarray) -> np.ndarray:
    return Z[:, :2].astype(np.int64)


def leaf_order(Z: np.ndarray) -> np.ndarray:
    """The leaves (0..m-1) in the dendrogram's left-to-right order (left child first, the
    left child being ``Z[i, 0]``, as scipy draws it)."""
    m = len(Z) + 1
    kids = _children(Z)
    out = []
    stack = [2 * m - 2] if m > 1 else [0]
    while stack:
        node = stack.pop()
        if node < m:
            out.append(node)
        else:
            a, b = kids[node - m]
            stack.append(b)
            stack.append(a)
    return np.array(out, dtype=np.int64)


def merges_for(Z: np.ndarray, n_clusters: int | None = None, distance: float | None = None) -> int:
    """How many merges (the first ones, in height order) a cut applies: ``m - n_clusters``,
    or those at a height of at most ``distance``."""
    m = len(Z) + 1
    if (n_clusters is None) == (distance is None):
        raise RfmxError("give exactly one of n_clusters and distance")
    if n_clusters is not None:
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
            raise RfmxError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
        if n_clusters > m:
            raise RfmxError(f"n_clusters={n_clusters} is more than the {m:,} leaves of the tree (micro-clusters: "
                            f"the distinct customers, or --micro-clusters); use fewer clusters or more micro-clusters")
        return m - int(n_clusters)
    if not isinstance(distance, (int, float, np.floating, np.integer)) or isinstance(distance, bool) \
            or not np.isfinite(distance) or distance < 0:
        raise RfmxError(f"distance must be a number >= 0, got {distance!r}")
    return int(np.searchsorted(Z[:, 2], float(distance), side="right"))


def cut_tree(Z: np.ndarray, n_clusters: int | None = None, distance: float | None = None) -> np.ndarray:
    """Cluster of each leaf (m,) int32 when the tree ``Z`` is cut at ``n_clusters``
    clusters (the first ``m - n_clusters`` merges applied; of merges at equal heights the
    earlier row first) or at ``distance`` (every merge at a height of at most it, as
    scipy's ``fcluster(Z, distance, "distance")``).  Clusters are numbered from 0 in the
    dendrogram's left-to-right order (:func:`leaf_order`)."""
    m = len(Z) + 1
    applied = merges_for(Z, n_clusters, distance)
    kids = _children(Z)
    out = np.empty(m, dtype=np.int32)
    next_id = 0
    stack = [2 * m - 2] if m > 1 else [0]
    while stack:
        node = stack.pop()
        if node < m or node - m < applied:
            # a cluster: label every leaf below it
            below = [node]
            while below:
                x = below.pop()
                if x < m:
                    out[x] = next_id
                else:
                    below.extend(kids[x - m])
            next_id += 1
        else:
            a, b = kids[node - m]
            stack.append(b)
            stack.append(a)
    return out


def check_linkage(Z: np.ndarray, leaf_sizes: np.ndarray, fail) -> None:
    """Refuse a linkage matrix that is not a tree over ``len(leaf_sizes)`` leaves: node ids
    out of range or used twice, a size that is not the sum of its children's, heights
    negative or not in increasing order.  ``fail(message)`` raises."""
    m = len(leaf_sizes)
    if Z.shape != (m - 1, 4):
        fail(f"the linkage has {Z.shape[0]} merge(s); a tree over {m} leaves has {m - 1}")
    used = np.zeros(2 * m - 1, dtype=bool)
    size = np.concatenate([np.asarray(leaf_sizes, dtype=np.float64), np.zeros(m - 1)])
    for i, (a, b, h, s) in enumerate(Z):
        if a != np.floor(a) or b != np.floor(b) or not 0 <= a < b < m + i:
            fail(f"merge {i} joins nodes {a:g} and {b:g}: expected whole numbers a < b below {m + i}")
        a, b = int(a), int(b)
        if used[a] or used[b]:
            fail(f"merge {i} uses node {a if used[a] else b} a second time")
        used[a] = used[b] = True
        if h < 0 or (i and h < Z[i - 1, 2]):
            fail(f"merge {i} has height {h:g}: heights must be >= 0 and in increasing order")
        size[m + i] = size[a] + size[b]
        if s != size[m + i]:
            fail(f"merge {i} has size {s:g}, but its two children hold {size[m + i]:g}")


class Ward:
    """Ward hierarchical clustering in two stages (k-means micro-clusters, then Ward
    linkage of their weighted means), cut at ``n_clusters`` or at ``distance``.

    Parameters
    ----------
    n_clusters, distance:
        Cut the tree into ``n_clusters`` clusters, or at a Ward height ``distance``
        (standardized units: the square root of twice the rise in the within-cluster sum
        of squares that a merge causes, as scipy reports heights).  ``distance``, when
        given, replaces ``n_clusters``.
    n_micro:
        Micro-clusters of the first stage (the leaves of the tree), at most 10,000.
    micro_sample:
        Customers the micro-clusters are fitted on (a uniform sample drawn with
        replacement; all of them when there are fewer); every customer is then placed.
    micro_max_iter:
        Lloyd iterations (at most; default 30) of the micro-cluster k-means (tolerance
        1e-4, as :class:`rfmx.cluster.KMeans`).
    random_state:
        None, an int or a ``numpy.random.RandomState`` (sample, k-means++).
    chunk_size, threads:
        As :class:`rfmx.cluster.KMeans`: results depend on ``chunk_size``, never on threads.

    Attributes after :meth:`fit`: ``labels_`` (n,) int32; ``micro_labels_`` (n,) int32
    (each customer's micro-cluster); ``micro_centers_`` (m, d) (where customers are placed:
    the k-means centres, or the distinct points), ``micro_means_`` (m, d) and
    ``micro_counts_`` (m,) (the customers of each micro-cluster); ``linkage_`` (m - 1, 4),
    scipy's layout; ``micro_inertia_`` (sum of squared distances of customers to their
    micro-cluster's mean); ``leaf_clusters_`` (m,) (each micro-cluster's cluster);
    ``n_clusters_``; ``cluster_centers_`` (k, d) (the clusters' means); ``cluster_sizes_``;
    ``inertia_`` (sum of squared distances to the cluster means); ``n_features_in_``.
    """

    _params = ("n_clusters", "distance", "n_micro", "micro_sample", "micro_max_iter", "random_state", "chunk_size",
               "threads")

    def __init__(self, n_clusters: int | None = 8, *, distance: float | None = None, n_micro: int = DEFAULT_MICRO,
                 micro_sample: int = MICRO_SAMPLE, micro_max_iter: int = MICRO_MAX_ITER, random_state=None,
                 chunk_size: int = CHUNK_SIZE, threads: int | None = None):
        self.n_clusters = n_clusters
        self.distance = distance
        self.n_micro = n_micro
        self.micro_sample = micro_sample
        self.micro_max_iter = micro_max_iter
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.threads = threads

    def _cut_params(self):
        if self.distance is not None:
            return None, self.distance
        if self.n_clusters is None:
            raise RfmxError("give n_clusters or distance")
        return self.n_clusters, None

    def _check_params(self):
        for name in ("n_micro", "micro_sample", "micro_max_iter", "chunk_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise RfmxError(f"{name} must be an int >= 1, got {v!r}")
        if self.n_micro > MAX_MICRO:
            raise RfmxError(f"n_micro={self.n_micro} is more than {MAX_MICRO:,} micro-clusters: the linkage holds "
                            f"4 x n_micro^2 bytes ({4 * self.n_micro ** 2 / 1e9:.1f} GB) and the placing pass "
                            f"n_micro x 32 bytes per 1,024 customers")
        if self.micro_sample < self.n_micro:
            raise RfmxError(f"micro_sample={self.micro_sample} is smaller than n_micro={self.n_micro}")

    def fit(self, X, y=None) -> "Ward":
        """Cluster ``X`` (n, d) (float; NaN and infinity are rejected)."""
        xt = feature_major(X)
        d, n = xt.shape
        k, distance = self._cut_params()
        if k is not None:
            check_k(k, n)
        self._check_params()
        rs = as_random_state(self.random_state)
        with kernel_threads(self.threads):
            sites, means, counts, micro_labels, micro_sse = _micro_clusters(
                xt, int(self.n_micro), int(self.micro_sample), int(self.micro_max_iter), MICRO_TOL, rs,
                int(self.chunk_size))
        self.micro_centers_ = sites
        self.micro_means_ = means
        self.micro_counts_ = counts
        self.micro_labels_ = micro_labels
        self.micro_inertia_ = micro_sse
        self.linkage_ = ward_linkage(means, counts.astype(np.float64))
        self.n_features_in_ = d
        self._apply_cut(k, distance)
        return self

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_

    def _apply_cut(self, k, distance) -> None:
        self.leaf_clusters_ = cut_tree(self.linkage_, k, distance)
        n_clusters = int(self.leaf_clusters_.max()) + 1
        counts = self.micro_counts_.astype(np.float64)
        sizes = np.bincount(self.leaf_clusters_, weights=counts, minlength=n_clusters)
        centres = np.zeros((n_clusters, self.micro_means_.shape[1]))
        for f in range(centres.shape[1]):
            centres[:, f] = np.bincount(self.leaf_clusters_, weights=counts * self.micro_means_[:, f],
                                        minlength=n_clusters) / sizes
        spread = ((self.micro_means_ - centres[self.leaf_clusters_]) ** 2).sum(axis=1)
        self.n_clusters_ = n_clusters
        self.cluster_centers_ = centres
        self.cluster_sizes_ = sizes.astype(np.int64)
        self.inertia_ = float(self.micro_inertia_ + (counts * spread).sum())
        applied = merges_for(self.linkage_, k, distance)
        self.cut_height_ = float(self.linkage_[applied - 1, 2]) if applied else 0.0
        if hasattr(self, "micro_labels_"):
            self.labels_ = self.leaf_clusters_[self.micro_labels_]

    def _check_fitted(self):
        if not hasattr(self, "linkage_"):
            raise RfmxError("this Ward is not fitted yet: call fit() first")

    def recut(self, n_clusters: int | None = None, distance: float | None = None) -> "Ward":
        """Cut the fitted tree again, at ``n_clusters`` or at ``distance`` (no refit):
        ``labels_`` (when the fit's customers are known), ``leaf_clusters_``,
        ``cluster_centers_``, ``inertia_`` follow.  Returns self."""
        self._check_fitted()
        merges_for(self.linkage_, n_clusters, distance)  # checks the arguments first
        self.n_clusters, self.distance = n_clusters, distance
        self._apply_cut(n_clusters, distance)
        return self

    def predict(self, X) -> np.ndarray:
        """Cluster of each row of ``X`` (n, d): its nearest micro-centre's (int32 (n,))."""
        from .points import nearest_centres

        self._check_fitted()
        xt = feature_major(X)
        if xt.shape[0] != self.micro_centers_.shape[1]:
            raise RfmxError(f"X has {xt.shape[0]} features but the model was fitted with "
                            f"{self.micro_centers_.shape[1]}")
        with kernel_threads(self.threads):
            micro, _ = nearest_centres(xt, self.micro_centers_, int(self.chunk_size), False)
        return self.leaf_clusters_[micro]

    def dendrogram(self) -> dict:
        """The tree and its cut as plain JSON types (``format`` ``rfmx-dendrogram``):
        ``leaf_sizes`` (customers per micro-cluster), ``merges`` (``[left, right, height,
        size]`` per merge, scipy's linkage rows), ``cut`` (``n_clusters``, ``distance``
        (null unless cut at a distance), ``height`` of the last merge applied)."""
        self._check_fitted()
        return {"format": DENDROGRAM_FORMAT, "version": DENDROGRAM_VERSION, "linkage": "ward",
                "leaf_sizes": self.micro_counts_.tolist(), "merges": _merge_rows(self.linkage_),
                "cut": {"n_clusters": int(self.n_clusters_), "distance": self.distance,
                        "height": self.cut_height_}}

    def get_params(self, deep: bool = True) -> dict:
        return {p: getattr(self, p) for p in self._params}

    def to_dict(self) -> dict:
        """Parameters and fitted tree as plain JSON types (no pickle anywhere; the customers'
        labels are not kept)."""
        params = self.get_params()
        if isinstance(params.get("random_state"), np.random.RandomState):
            params["random_state"] = None
        out = {"estimator": "Ward", "params": params}
        if hasattr(self, "linkage_"):
            out["fitted"] = {"micro_centers": self.micro_centers_.tolist(), "micro_means": self.micro_means_.tolist(),
                             "micro_counts": self.micro_counts_.tolist(), "micro_inertia": self.micro_inertia_,
                             "linkage": _merge_rows(self.linkage_)}
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "saved model") -> "Ward":
        """The estimator :meth:`to_dict` described; every field is checked, and a damaged
        description is a one-line RfmxError starting with ``where``."""
        from .modelfile import Fields

        f = Fields(where)
        data = f.mapping(data, "the Ward model")
        if f.get(data, "estimator", "the estimator name ('estimator')") != "Ward":
            f.fail(f"not a saved Ward model: estimator {data.get('estimator')!r}")
        params = dict(f.mapping(f.get(data, "params", "the estimator parameters ('params')"), "params"))
        unknown = sorted(set(params) - set(cls._params))
        if unknown:
            f.fail(f"Ward has no parameter {unknown[0]!r}")
        for p in ("n_micro", "micro_sample", "micro_max_iter", "chunk_size"):
            if p in params:
                f.integer(params[p], p, minimum=1)
        for p in ("n_clusters", "threads"):
            f.integer(params.get(p), p, minimum=1, optional=True)
        f.integer(params.get("random_state"), "random_state", minimum=0, optional=True)
        f.number(params.get("distance"), "distance", minimum=0.0, optional=True)
        if params.get("n_clusters") is None and params.get("distance") is None:
            f.fail("the cut is missing: n_clusters and distance are both null")
        obj = cls(**params)
        fitted = f.mapping(data.get("fitted"), "fitted", optional=True)
        if fitted:
            sites = f.matrix(f.get(fitted, "micro_centers", "the micro-cluster centres ('micro_centers')"),
                             "micro_centers")
            m, d = sites.shape
            means = f.matrix(f.get(fitted, "micro_means", "the micro-cluster means ('micro_means')"),
                             "micro_means", rows=m, cols=d)
            counts = f.array(f.get(fitted, "micro_counts", "the micro-cluster sizes ('micro_counts')"),
                             "micro_counts", length=m)
            if (counts < 1).any() or (counts != np.floor(counts)).any():
                f.fail("micro_counts must be whole numbers >= 1 (customers per micro-cluster)")
            rows = f.get(fitted, "linkage", "the tree ('linkage')")
            if not isinstance(rows, list):
                f.fail("linkage must be a list of merges [left, right, height, size]")
            Z = (f.matrix(rows, "linkage", rows=m - 1, cols=4) if m > 1 and rows
                 else np.empty((len(rows), 4)))
            check_linkage(Z, counts, f.fail)
            obj.micro_centers_ = sites
            obj.micro_means_ = means
            obj.micro_counts_ = counts.astype(np.int64)
            obj.micro_inertia_ = f.number(fitted.get("micro_inertia", 0.0), "micro_inertia", minimum=0.0)
            obj.linkage_ = Z
            obj.n_features_in_ = d
            try:
                obj._apply_cut(*obj._cut_params())
            except RfmxError as exc:
                f.fail(str(exc))
        return obj

    def save(self, path) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path) -> "Ward":
        """Read an estimator written by :meth:`save`; a damaged file is a one-line RfmxError."""
        from .modelfile import read_model_json

        return cls.from_dict(read_model_json(path, "Ward model"), where=str(path))

    def __repr__(self) -> str:
        cut = f"distance={self.distance!r}" if self.distance is not None else f"n_clusters={self.n_clusters!r}"
        return f"Ward({cut}, n_micro={self.n_micro!r})"


def _merge_rows(Z: np.ndarray) -> list:
    return [[int(a), int(b), float(h), int(s)] for a, b, h, s in Z]


def _micro_clusters(xt, n_micro, sample, max_iter, tol, rs, chunk_size):
    """Stage one: (centres (m, d) where customers are placed, means (m, d), counts (m,)
    int64, labels (n,) int32, sum of squared distances to the means)."""
    from .cluster import KMeans
    from .kernels import hierarchy as H
    from .kernels import kmeans as K

    d, n = xt.shape
    codes = np.empty(n, dtype=np.int64)
    first = np.empty(n_micro, dtype=np.int64)
    found = H.distinct_points(xt, n_micro, codes, first)
    if found >= 0:  # few distinct points: each is a micro-cluster, Ward runs on the points themselves
        sites = np.ascontiguousarray(xt[:, first[:found]].T)
        counts = np.bincount(codes, minlength=found).astype(np.int64)
        return sites, sites.copy(), counts, codes.astype(np.int32), 0.0
    if n > sample:
        pts = np.ascontiguousarray(xt[:, np.sort(rs.randint(0, n, sample))].T)
    else:
        pts = xt.T
    sites = KMeans(n_micro, random_state=rs, max_iter=max_iter, tol=tol, chunk_size=chunk_size).fit(pts).cluster_centers_
    nch = K.n_chunks(n, chunk_size)
    labels = np.full(n, -1, dtype=np.int32)
    sums = np.empty((nch, n_micro, d), dtype=np.float64)
    counts = np.empty((nch, n_micro), dtype=np.int64)
    parts = np.empty(nch, dtype=np.float64)
    changed = np.empty(nch, dtype=np.int64)
    total_sums = np.empty((n_micro, d), dtype=np.float64)
    total_counts = np.empty(n_micro, dtype=np.int64)
    K.lloyd_assign(xt, sites, chunk_size, labels, sums, counts, parts, changed)
    inertia, _ = K.lloyd_merge(sums, counts, parts, changed, total_sums, total_counts)
    del sums, counts
    kept = total_counts > 0
    if not kept.all():  # a centre no customer is nearest to (duplicate centres): dropped
        renumber = np.cumsum(kept) - 1
        labels = renumber[labels].astype(np.int32)
        sites, total_sums, total_counts = sites[kept], total_sums[kept], total_counts[kept]
    means = total_sums / total_counts[:, None]
    # sum |x - mean|^2 = sum |x - site|^2 - n |site - mean|^2 over each micro-cluster
    sse = float(inertia) - float((total_counts * ((sites - means) ** 2).sum(axis=1)).sum())
    return np.ascontiguousarray(sites), means, total_counts.astype(np.int64), labels, max(sse, 0.0)


def read_dendrogram(source, where: str | None = None) -> dict:
    """A dendrogram (:meth:`Ward.dendrogram`) from a JSON file path or a dict, checked:
    returns ``{"linkage": Z (m - 1, 4), "leaf_sizes": (m,), "n_clusters": k, "distance":
    D or None, "height": h, "labels": the clusters' labels or None}``; a damaged one is a
    one-line RfmxError naming the file."""
    from .modelfile import Fields, read_model_json

    if isinstance(source, dict):
        data, where = source, where or "dendrogram"
    else:
        data, where = read_model_json(source, "dendrogram"), where or str(source)
    f = Fields(where)
    if data.get("format") != DENDROGRAM_FORMAT or data.get("version") != DENDROGRAM_VERSION:
        f.fail(f"not an rfmx dendrogram (format/version {(data.get('format'), data.get('version'))}); "
               f"this rfmx reads {DENDROGRAM_FORMAT!r} version {DENDROGRAM_VERSION} (rfmx cluster --dendrogram-out)")
    sizes = f.array(f.get(data, "leaf_sizes", "the leaf sizes ('leaf_sizes')"), "leaf_sizes")
    if not len(sizes) or (sizes < 1).any() or (sizes != np.floor(sizes)).any():
        f.fail("leaf_sizes must be a non-empty list of whole numbers >= 1")
    rows = f.get(data, "merges", "the merges ('merges')")
    if not isinstance(rows, list):
        f.fail("merges must be a list of [left, right, height, size]")
    m = len(sizes)
    Z = f.matrix(rows, "merges", rows=m - 1, cols=4) if rows else np.empty((0, 4))
    check_linkage(Z, sizes, f.fail)
    cut = f.mapping(f.get(data, "cut", "the cut ('cut')"), "cut")
    k = f.integer(f.get(cut, "n_clusters"), "cut.n_clusters", minimum=1)
    if k > m:
        f.fail(f"cut.n_clusters is {k}, more than the {m} leaves")
    distance = f.number(cut.get("distance"), "cut.distance", minimum=0.0, optional=True)
    height = f.number(cut.get("height", 0.0), "cut.height", minimum=0.0)
    labels = f.strings(data["labels"], "labels", length=k) if data.get("labels") is not None else None
    return {"linkage": Z, "leaf_sizes": sizes.astype(np.int64), "n_clusters": k, "distance": distance,
            "height": height, "labels": labels}
