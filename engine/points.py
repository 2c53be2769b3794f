"""What every clustering estimator of rfmx shares: feature matrices in the kernels' layout,
checks, thread and random-state handling, nearest-centre passes and JSON files.

Used by :mod:`rfmx.cluster` (k-means), :mod:`rfmx.hierarchy` (Ward) and
:mod:`rfmx.subclusters`.  Importing this module compiles nothing and does not import Numba.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from .errors import RfmxError

__all__ = ["CHUNK_SIZE", "feature_major", "check_finite", "check_k", "kernel_threads", "as_random_state",
           "nearest_centres", "save_json"]

#: Points per chunk of every parallel pass.  Results depend on it (summation order), never
#: on the thread count.
CHUNK_SIZE = 1024


def feature_major(X, what: str = "X") -> np.ndarray:
    """``X`` (n, d) as the kernels' feature-major ``(d, n)`` C-contiguous float64 array.

    A Fortran-ordered float64 ``X`` is used without a copy.  Rejects NaN and infinity.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise RfmxError(f"{what} must be 2-dimensional (customers x features), got shape {X.shape}")
    if X.shape[1] == 0:
        raise RfmxError(f"{what} has no features (shape {X.shape})")
    try:
        xt = np.asfortranarray(X, dtype=np.float64).T
    except (TypeError, ValueError) as exc:
        raise RfmxError(f"{what} is not numeric: {exc}") from None
    check_finite(xt, what)
    return xt


def check_finite(xt: np.ndarray, what: str) -> None:
    """A one-line error naming the first feature (row of ``xt`` (d, n)) with NaN or infinity."""
    for f in range(xt.shape[0]):
        row = xt[f]
        if not np.isfinite(row).all():
            bad = np.flatnonzero(~np.isfinite(row))
            raise RfmxError(f"{what}: feature {f} has {len(bad):,} NaN or infinite values (first at row {int(bad[0])})")


def check_k(k, n: int, name: str = "n_clusters") -> int:
    """``k`` as an int in 1..n (n: points to cluster), else a one-line error."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise RfmxError(f"{name} must be an int, got {k!r}")
    k = int(k)
    if k < 1:
        raise RfmxError(f"{name} must be >= 1, got {k}")
    if n == 0:
        raise RfmxError("no customers to cluster (empty population)")
    if k > n:
        raise RfmxError(f"{name}={k} is more than the {n:,} customers to cluster")
    return k


@contextlib.contextmanager
def kernel_threads(n):
    """``n`` Numba threads (None: as set), parallel tasks handed out one at a time."""
    import numba

    from .kernels._policy import threads

    with threads(n) as count, numba.parallel_chunksize(1):
        yield count


def as_random_state(seed) -> np.random.RandomState:
    """None (fresh entropy), an int seed or a ``RandomState`` (used as is), as scikit-learn."""
    if seed is None:
        return np.random.RandomState()
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    raise RfmxError(f"random_state must be None, an int or a numpy RandomState, got {seed!r}")


def nearest_centres(xt: np.ndarray, centres: np.ndarray, chunk_size: int, with_inertia: bool):
    """``(labels (n,) int32, inertia)``: the nearest of ``centres`` (k, d) for each point of
    ``xt`` (d, n) (lowest index on a tie) and, with ``with_inertia``, the sum of squared
    distances (else 0.0).  Runs with the thread setting in force."""
    from .kernels import kmeans as K

    n = xt.shape[1]
    nch = K.n_chunks(n, chunk_size)
    labels = np.full(n, -1, dtype=np.int32)
    inertia = np.empty(nch if with_inertia else 0, dtype=np.float64)
    changed = np.empty(nch, dtype=np.int64)
    sums = np.empty((0, 1, 1), dtype=np.float64)
    counts = np.empty((0, 1), dtype=np.int64)
    centres = np.ascontiguousarray(centres, dtype=np.float64)
    K.lloyd_assign(xt, centres, chunk_size, labels, sums, counts, inertia, changed)
    total, _ = K.lloyd_merge(sums, counts, inertia, changed, np.empty((1, 1)), np.empty(1, np.int64))
    return labels, float(total)


def save_json(data: dict, path) -> None:
    """Write ``data`` as JSON (atomically; NaN and infinity refused)."""
    from .sinks import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
