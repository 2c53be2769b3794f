"""Customer features for clustering: the standardized feature matrix and cluster labels.

:class:`FeatureTransform` turns a per-customer table (``rfmx.aggregate``'s output) into the
standardized matrix every clustering estimator of rfmx works on, and back; it is stored
with each cluster model.  :func:`cluster_labels` names clusters from their centres, one
label per cluster and no two alike.

Importing this module compiles nothing and does not import Numba.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import RfmxError

__all__ = ["FeatureTransform", "centre_label", "cluster_labels", "DEFAULT_FEATURES", "LABEL_THRESHOLD"]

#: Features clustered by default: recency, frequency and monetary value.
DEFAULT_FEATURES = ("recency_days", "n_orders", "monetary_total")

_WORDS = {
    "recency_days": ("recent", "lapsing", "lapsed"),
    "n_orders": ("rare", "occasional", "frequent"),
    "monetary_total": ("low spend", "mid spend", "high spend"),
    "tenure_days": ("new", "established", "long-standing"),
    "avg_order_value": ("small baskets", "mid baskets", "big baskets"),
}
#: A centre more than this many standardized units below (above) the population centre
#: reads as "low" ("high") in a cluster's label.
LABEL_THRESHOLD = 0.5


def _signed_log1p(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.log1p(np.abs(v))


def _signed_expm1(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.expm1(np.abs(v))


class FeatureTransform:
    """Per-customer table -> standardized feature matrix; fitted once, stored with the model.

    Each feature column is read as float64, optionally log-transformed with the
    sign-preserving ``sign(v) * log1p(|v|)`` (net money can be negative), then
    standardized: ``"zscore"`` ((v - mean) / std), ``"robust"`` ((v - median) / IQR, the
    std where the IQR is 0) or ``"none"``.  Customers with a null in any feature (a
    refund-only customer has no recency) are left out and reported; NaN or infinite
    values, a missing or non-numeric column and a constant feature are errors.
    """

    def __init__(self, features=DEFAULT_FEATURES, *, log=True, scaling: str = "zscore"):
        features = tuple(features)
        if not features:
            raise RfmxError("no features given")
        if len(set(features)) != len(features):
            raise RfmxError(f"features repeat a column: {list(features)}")
        if scaling not in ("zscore", "robust", "none"):
            raise RfmxError(f"scaling must be 'zscore', 'robust' or 'none', got {scaling!r}")
        if isinstance(log, bool):
            log = tuple(log for _ in features)
        else:
            unknown = set(log) - set(features)
            if unknown:
                raise RfmxError(f"log names columns that are not features: {sorted(unknown)}")
            log = tuple(f in set(log) for f in features)
        self.features = features
        self.log = log
        self.scaling = scaling

    def raw(self, table: pa.Table, where: str = "table") -> tuple[np.ndarray, np.ndarray]:
        """``(values (n_kept, d) Fortran-ordered float64 after the log step, kept (n,) bool)``."""
        import pyarrow.compute as pc

        n = table.num_rows
        kept = np.ones(n, dtype=bool)
        cols = []
        for name in self.features:
            if name not in table.column_names:
                numeric = [f.name for f in table.schema
                           if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)]
                raise RfmxError(f"{where}: no column '{name}' to use as a feature; numeric columns: {', '.join(numeric)}")
            col = table.column(name)
            t = col.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)):
                raise RfmxError(f"{where}: feature '{name}' has type {t}; use a numeric column "
                                f"(e.g. recency_days, tenure_days, n_orders, monetary_total)")
            if col.null_count:
                kept &= np.asarray(col.is_valid())
            cols.append(col)
        X = np.empty((int(kept.sum()), len(cols)), dtype=np.float64, order="F")
        mask = None if kept.all() else pa.array(kept)
        for f, (name, col) in enumerate(zip(self.features, cols)):
            if mask is not None:
                col = col.filter(mask)
            v = pc.cast(col, pa.float64()).to_numpy()
            if not np.isfinite(v).all():
                bad = np.flatnonzero(~np.isfinite(v))
                row = int(np.flatnonzero(kept)[bad[0]])
                raise RfmxError(f"{where}: feature '{name}' has {len(bad):,} NaN or infinite values (first at row {row})")
            X[:, f] = _signed_log1p(v) if self.log[f] else v
        return X, kept

    def fit(self, table: pa.Table, where: str = "table") -> "FeatureTransform":
        """Learn the centre and scale of each feature over the customers of ``table``."""
        X, kept = self.raw(table, where)
        n = X.shape[0]
        if n == 0:
            raise RfmxError(f"{where}: no customers to cluster ({table.num_rows:,} rows, none with all features non-null)")
        center = np.zeros(X.shape[1])
        scale = np.ones(X.shape[1])
        for f, name in enumerate(self.features):
            v = X[:, f]
            std = float(v.std())
            if n > 1 and v.min() == v.max():
                raise RfmxError(f"{where}: feature '{name}' is constant ({float(v[0])!r} after the log step) over the "
                                f"{n:,} customers; it cannot separate clusters: drop it from the features")
            if self.scaling == "zscore":
                center[f], scale[f] = float(v.mean()), std if std > 0 else 1.0
            elif self.scaling == "robust":
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                center[f] = float(med)
                scale[f] = float(q3 - q1) if q3 > q1 else (std if std > 0 else 1.0)
        self.center_ = center
        self.scale_ = scale
        self.n_fitted_ = n
        return self

    def transform(self, table: pa.Table, where: str = "table") -> tuple[np.ndarray, np.ndarray]:
        """``(X (n_kept, d) Fortran-ordered standardized features, kept (n,) bool)``."""
        if not hasattr(self, "center_"):
            raise RfmxError("the feature transform is not fitted")
        X, kept = self.raw(table, where)
        X -= self.center_
        X /= self.scale_
        return X, kept

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        """Standardized points (m, d) back in the columns' own units."""
        V = np.asarray(Z, dtype=np.float64) * self.scale_ + self.center_
        for f in range(V.shape[1]):
            if self.log[f]:
                V[:, f] = _signed_expm1(V[:, f])
        return V

    def to_dict(self) -> dict:
        out = {"features": list(self.features), "log": list(self.log), "scaling": self.scaling}
        if hasattr(self, "center_"):
            out.update(center=self.center_.tolist(), scale=self.scale_.tolist(), n_fitted=self.n_fitted_)
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "saved model") -> "FeatureTransform":
        """The transform :meth:`to_dict` described; a damaged one is a one-line RfmxError."""
        from .modelfile import Fields

        f = Fields(where)
        data = f.mapping(data, "the feature transform ('features')")
        features = f.strings(f.get(data, "features", "the feature names"), "features")
        log = f.get(data, "log", "the features' log flags ('log')")
        if not isinstance(log, list) or len(log) != len(features) or not all(isinstance(v, bool) for v in log):
            f.fail(f"log must be a list of {len(features)} true/false flags, one per feature")
        scaling = f.string(f.get(data, "scaling"), "scaling", choices=("zscore", "robust", "none"))
        try:
            obj = cls(features, log=[name for name, flag in zip(features, log) if flag], scaling=scaling)
        except RfmxError as exc:
            f.fail(str(exc))
        if "center" in data:
            obj.center_ = f.array(data["center"], "center", length=len(features))
            obj.scale_ = f.array(f.get(data, "scale", "the feature scales ('scale')"), "scale",
                                 length=len(features), positive=True)
            obj.n_fitted_ = f.integer(data.get("n_fitted"), "n_fitted", minimum=0, optional=True)
        return obj


def centre_label(transform: FeatureTransform, centre: np.ndarray, threshold: float = LABEL_THRESHOLD) -> str:
    """A short human label from a centre in standardized units, e.g. "recent, frequent,
    high spend": each feature reads low / mid / high at -threshold / +threshold.  Two
    centres can read alike: :func:`cluster_labels` names a set of clusters uniquely."""
    words = []
    for name, z in zip(transform.features, centre):
        low, mid, high = _WORDS.get(name, (f"low {name}", f"mid {name}", f"high {name}"))
        words.append(low if z < -threshold else high if z > threshold else mid)
    return ", ".join(words)


#: Per feature: the words for the first and the last of clusters ranked on it, and whether
#: the first is the one with the highest standardized value.
_EXTREMES = {
    "recency_days": ("most recent", "least recent", False),
    "n_orders": ("most orders", "fewest orders", True),
    "monetary_total": ("highest spend", "lowest spend", True),
    "tenure_days": ("longest-standing", "newest", True),
    "avg_order_value": ("biggest baskets", "smallest baskets", True),
}


def _ordinal(r: int) -> str:
    suffix = "th" if 10 <= r % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(r % 10, "th")
    return f"{r}{suffix}"


def cluster_labels(transform: FeatureTransform, centres: np.ndarray, threshold: float = LABEL_THRESHOLD) -> list[str]:
    """One label per centre (rows of ``centres`` (k, d), standardized units), no two alike.

    Each label starts as :func:`centre_label`.  Clusters whose labels coincide are told
    apart by the feature on which their centres differ most (the largest range; the first
    feature on a tie), ranked on it: "lapsed, frequent, high spend (highest spend)",
    "... (2nd highest spend)", ..., "... (lowest spend)" (recency ranks "most recent"
    first).  Equal values on that feature keep the cluster order; centres equal on every
    feature are numbered "#1", "#2", ... in cluster order.
    """
    centres = np.asarray(centres, dtype=np.float64)
    base = [centre_label(transform, c, threshold) for c in centres]
    groups: dict[str, list[int]] = {}
    for j, text in enumerate(base):
        groups.setdefault(text, []).append(j)
    out = list(base)
    for text, members in groups.items():
        if len(members) < 2:
            continue
        C = centres[members]
        spread = C.max(axis=0) - C.min(axis=0)
        g = len(members)
        if not spread.max() > 0:
            for r, j in enumerate(members, start=1):
                out[j] = f"{text} #{r}"
            continue
        f = int(np.argmax(spread))
        name = transform.features[f]
        top, bottom, high_first = _EXTREMES.get(name, (f"highest {name}", f"lowest {name}", True))
        values = C[:, f] if not high_first else -C[:, f]
        order = np.lexsort((np.arange(g), values))  # by value, then cluster order
        for r, pos in enumerate(order, start=1):
            word = top if r == 1 else bottom if r == g else f"{_ordinal(r)} {top}"
            out[members[pos]] = f"{text} ({word})"
    return out
