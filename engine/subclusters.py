"""Subdividing segments: clusters within each segment, so a business can refine one group of
its segment map ("Champions") without redefining the map.

:func:`fit_within` clusters the customers of each segment (any text column of the
per-customer table; ``segment`` from ``rfmx score``) on its own, with k-means or Ward, with
the same ``k`` in every segment or a ``k`` chosen per segment from a range (the
recommendation of :func:`rfmx.cluster.choose_k`).  Every segment is described in one
feature space (one :class:`~rfmx.customer_features.FeatureTransform` fitted on all
customers), so sub-clusters of different segments compare.

Sub-clusters are named "Champions / 1", "Champions / 2", ... -- numbered by size, largest
first (equal sizes: the estimator's order) -- and get one global ``cluster`` number each,
segment after segment (in the segment map's order, else by name).  A segment too small to
be split -- fewer customers than k (fewer distinct customers for Ward), or for a k range
no k of the range that fits -- is left whole: one cluster named after the segment alone,
listed in :attr:`WithinClusters.whole` with the reason.  Customers with a null feature or
a null segment get a null cluster.

Importing this module compiles nothing and does not import Numba.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .cluster import (K_CHOICE_KEY, MODEL_VERSION, SILHOUETTE_SAMPLE, CustomerClusters, choose_k, cluster_profiles,
                      make_estimator)
from .customer_features import DEFAULT_FEATURES, FeatureTransform, cluster_labels
from .errors import RfmxError
from .points import save_json

__all__ = ["fit_within", "WithinClusters", "SegmentPart", "load_cluster_model", "WITHIN_FORMAT"]

WITHIN_FORMAT = "rfmx-clusters-within"


@dataclass
class SegmentPart:
    """One segment of a :class:`WithinClusters`: its ``name``, its first global cluster
    number ``first``, and either a fitted ``estimator`` with ``order`` (the estimator's
    cluster ``c`` is sub-cluster ``order[c]``, 0-based) or none (the segment is whole, and
    ``reason`` says why)."""

    name: str
    first: int
    estimator: object = None
    order: np.ndarray | None = None
    reason: str | None = None
    k_choice: dict | None = field(default=None, repr=False)

    @property
    def n_clusters(self) -> int:
        return 1 if self.estimator is None else len(self.order)


class WithinClusters:
    """Clusters within each segment (see the module docstring): ``predict`` places
    customers (new ones too: each with its own segment's model), ``labels`` names every
    global cluster, ``profiles`` describes them, ``save``/``load`` use JSON.
    """

    def __init__(self, transform: FeatureTransform, column: str, parts: list):
        self.transform = transform
        self.column = column
        self.parts = parts

    @property
    def n_clusters(self) -> int:
        return sum(p.n_clusters for p in self.parts)

    @property
    def whole(self) -> list[tuple[str, str]]:
        """``(segment, reason)`` of every segment left whole."""
        return [(p.name, p.reason) for p in self.parts if p.estimator is None]

    @property
    def labels(self) -> list[str]:
        """Per global cluster: "Segment / n", or the segment's name for a whole segment."""
        out = []
        for p in self.parts:
            out += [p.name] if p.estimator is None else [f"{p.name} / {r + 1}" for r in range(p.n_clusters)]
        return out

    @property
    def descriptions(self) -> list[str]:
        """Per global cluster: what its centre reads like (unique within its segment; the
        segment's own mean for a whole segment is not kept: empty)."""
        out = []
        for p in self.parts:
            if p.estimator is None:
                out.append("")
                continue
            texts = cluster_labels(self.transform, p.estimator.cluster_centers_)
            ranked = [""] * p.n_clusters
            for c, r in enumerate(p.order):
                ranked[r] = texts[c]
            out += ranked
        return out

    def _segment_codes(self, table: pa.Table, where: str) -> np.ndarray:
        """Per row: the index of its segment among ``parts`` (-1: null or unknown segment)."""
        from .tables import group_codes

        if self.column not in table.column_names:
            raise RfmxError(f"{where}: no column '{self.column}' to cluster within (the model was fitted within "
                            f"'{self.column}')")
        codes, names = group_codes(table, self.column)
        index = {p.name: i for i, p in enumerate(self.parts)}
        lookup = np.array([index.get(str(n), -1) for n in names] + [-1], dtype=np.int64)
        return lookup[codes]  # code -1 (null) reads the trailing -1

    def predict(self, table: pa.Table, where: str = "table") -> pa.Array:
        """Global cluster of each customer of ``table`` (int32): null where a feature or
        the segment is null, or the segment is not one the model knows."""
        X, kept = self.transform.transform(table, where)
        seg = self._segment_codes(table, where)[kept]
        values = np.full(len(seg), -1, dtype=np.int64)
        for i, p in enumerate(self.parts):
            rows = np.flatnonzero(seg == i)
            if not len(rows):
                continue
            if p.estimator is None:
                values[rows] = p.first
            else:
                values[rows] = p.first + p.order[p.estimator.predict(X[rows])]
        out = np.zeros(table.num_rows, dtype=np.int32)
        valid = kept.copy()
        valid[kept] = values >= 0
        out[kept] = np.maximum(values, 0)
        return pa.array(out, mask=None if valid.all() else ~valid)

    def subsegments(self, clusters: pa.Array) -> pa.Array:
        """The label of each customer's cluster ("Champions / 2"), dictionary-encoded; null
        where the cluster is null."""
        labels = self.labels
        values = clusters.to_numpy(zero_copy_only=False) if clusters.null_count == 0 else \
            clusters.fill_null(0).to_numpy(zero_copy_only=False)
        indices = pa.array(values.astype(np.int32), mask=None if clusters.null_count == 0 else
                           ~np.asarray(clusters.is_valid()))
        return pa.DictionaryArray.from_arrays(indices, pa.array(labels, pa.string()))

    def profiles(self, table: pa.Table, clusters: pa.Array | None = None) -> pa.Table:
        """:func:`rfmx.cluster.cluster_profiles` with these labels and a ``description``
        column (``clusters`` default: predict)."""
        if clusters is None:
            clusters = self.predict(table)
        prof = cluster_profiles(table, clusters, labels=self.labels, k=self.n_clusters)
        desc = self.descriptions + [None] * (prof.num_rows - self.n_clusters)
        return prof.add_column(prof.column_names.index("label") + 1, "description", pa.array(desc, pa.string()))

    def to_dict(self) -> dict:
        parts = []
        for p in self.parts:
            entry = {"segment": p.name, "first": p.first}
            if p.estimator is None:
                entry["whole"] = p.reason
            else:
                model = CustomerClusters(self.transform, p.estimator)
                entry.update(method=model.method, order=p.order.tolist(),
                             estimator=model.to_dict()[model.method if model.method == "ward" else "kmeans"])
            if p.k_choice is not None:
                entry["k_choice"] = p.k_choice
            parts.append(entry)
        return {"format": WITHIN_FORMAT, "version": MODEL_VERSION, "column": self.column,
                "features": self.transform.to_dict(), "segments": parts, "labels": self.labels}

    def save(self, path) -> None:
        """Write the model as JSON (atomically)."""
        save_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, data: dict, where: str = "saved model") -> "WithinClusters":
        """The model :meth:`to_dict` described; a damaged one is a one-line RfmxError."""
        from .cluster import kmeans_from_dict
        from .hierarchy import Ward
        from .modelfile import Fields

        f = Fields(where)
        if data.get("format") != WITHIN_FORMAT or data.get("version") != MODEL_VERSION:
            f.fail(f"not an rfmx within-segment cluster model (format/version "
                   f"{(data.get('format'), data.get('version'))})")
        column = f.string(f.get(data, "column", "the segment column ('column')"), "column")
        transform = FeatureTransform.from_dict(f.get(data, "features", "the feature transform ('features')"), where)
        if not hasattr(transform, "center_"):
            f.fail("the cluster model is not fitted")
        entries = f.get(data, "segments", "the segments ('segments')")
        if not isinstance(entries, list) or not entries:
            f.fail("segments must be a non-empty list")
        parts, first = [], 0
        d = len(transform.features)
        for i, e in enumerate(entries):
            e = f.mapping(e, f"segments[{i}]")
            name = f.string(f.get(e, "segment", f"segments[{i}].segment"), f"segments[{i}].segment")
            if f.integer(f.get(e, "first", f"segments[{i}].first"), f"segments[{i}].first", minimum=0) != first:
                f.fail(f"segments[{i}].first is {e['first']}, expected {first} (the clusters of the segments before)")
            if "whole" in e:
                parts.append(SegmentPart(name, first, reason=f.string(e["whole"], f"segments[{i}].whole")))
                first += 1
                continue
            method = f.string(f.get(e, "method", f"segments[{i}].method"), f"segments[{i}].method",
                              choices=("kmeans", "ward"))
            raw = f.get(e, "estimator", f"segments[{i}].estimator")
            est = Ward.from_dict(raw, where) if method == "ward" else kmeans_from_dict(raw, where)
            centres = est.cluster_centers_ if hasattr(est, "cluster_centers_") else None
            if centres is None:
                f.fail(f"segments[{i}]: the estimator is not fitted")
            width = est.micro_centers_.shape[1] if method == "ward" else centres.shape[1]
            if width != d:
                f.fail(f"segments[{i}]: the centres have {width} coordinates but the model has {d} features")
            k = centres.shape[0]
            order = f.array(f.get(e, "order", f"segments[{i}].order"), f"segments[{i}].order", length=k)
            if sorted(order.tolist()) != list(range(k)):
                f.fail(f"segments[{i}].order must number the {k} clusters 0..{k - 1}, each once")
            parts.append(SegmentPart(name, first, est, order.astype(np.int64), k_choice=e.get("k_choice")))
            first += k
        if len({p.name for p in parts}) != len(parts):
            f.fail("a segment appears twice in segments")
        model = cls(transform, column, parts)
        if "labels" in data:
            f.strings(data["labels"], "labels", length=model.n_clusters)
        return model

    @classmethod
    def load(cls, path) -> "WithinClusters":
        from .modelfile import read_model_json

        return cls.from_dict(read_model_json(path, "cluster model"), str(path))

    def __repr__(self) -> str:
        return f"WithinClusters(column={self.column!r}, segments={len(self.parts)}, clusters={self.n_clusters})"


def load_cluster_model(path):
    """A saved cluster model, whichever kind: :class:`rfmx.cluster.CustomerClusters`,
    :class:`WithinClusters` or :class:`rfmx.group_clusters.GroupClusters` (by its ``format``)."""
    from .modelfile import read_model_json

    from .cluster import MODEL_FORMAT
    from .modelfile import Fields

    data = read_model_json(path, "cluster model")
    if data.get("format") == WITHIN_FORMAT:
        return WithinClusters.from_dict(data, str(path))
    from .group_clusters import GROUP_CLUSTERS_FORMAT, GroupClusters

    if data.get("format") == GROUP_CLUSTERS_FORMAT:
        return GroupClusters.from_dict(data, str(path))
    if data.get("format") != MODEL_FORMAT:
        Fields(path).fail(f"not an rfmx cluster model (format/version {(data.get('format'), data.get('version'))}); "
                          f"this rfmx reads {MODEL_FORMAT!r} and {WITHIN_FORMAT!r} version {MODEL_VERSION}")
    return CustomerClusters.from_dict(data, str(path))


def _ordered_segments(table: pa.Table, column: str) -> tuple[np.ndarray, list[str]]:
    """Codes (-1: null) and names of the segments, in the map's order (a dictionary column's
    order) or else by name."""
    from .tables import group_codes

    codes, names = group_codes(table, column)
    names = [str(n) for n in names]
    if not pa.types.is_dictionary(table.schema.field(column).type):
        order = sorted(range(len(names)), key=lambda i: names[i])
        rank = np.empty(len(names) + 1, dtype=np.int64)
        rank[np.array(order, dtype=np.int64)] = np.arange(len(names))
        rank[-1] = -1
        codes = rank[codes]
        names = [names[i] for i in order]
    return codes, names


def fit_within(table: pa.Table, k: int | None = None, *, column: str = "segment", k_values=None,
               features=DEFAULT_FEATURES, log=True, scaling: str = "zscore",
               silhouette_sample: int | None = SILHOUETTE_SAMPLE, random_state=0, where: str = "table",
               **options) -> tuple[WithinClusters, pa.Array]:
    """Cluster the customers of each segment of ``table`` on their own.

    ``column``: the segment column (text; ``segment`` of ``rfmx score``).  ``k``: clusters
    per segment, or ``k_values`` (e.g. ``range(2, 7)``): a k chosen per segment by
    :func:`rfmx.cluster.choose_k` (silhouettes on ``silhouette_sample`` of the segment's
    customers).  ``options``: the estimator's (:func:`rfmx.cluster.make_estimator`:
    ``method="ward"``, ``n_micro``, ``n_init``, ...; not ``distance``).  Returns ``(model,
    clusters)``: global cluster numbers (int32, null where a feature or the segment is null).
    """
    if (k is None) == (k_values is None):
        raise RfmxError("give k (clusters per segment) or k_values (a k chosen per segment)")
    if options.get("distance") is not None:
        raise RfmxError("clusters within segments are cut at k (or a k chosen per segment), not at a distance")
    if column not in table.column_names:
        raise RfmxError(f"{where}: no column '{column}' to cluster within; it needs the segments of rfmx score "
                        f"(the 'segment' column)")
    method = options.get("method", "kmeans")
    transform = FeatureTransform(features, log=log, scaling=scaling).fit(table, where)
    X, kept = transform.transform(table, where)
    codes, names = _ordered_segments(table, column)
    seg = codes[kept]
    ks = sorted({int(v) for v in k_values}) if k_values is not None else None
    parts, first = [], 0
    values = np.full(len(seg), -1, dtype=np.int64)
    for i, name in enumerate(names):
        rows = np.flatnonzero(seg == i)
        if not len(rows):
            continue
        Xs = X[rows]
        part = _fit_segment(Xs, name, first, k, ks, method, silhouette_sample, random_state, options)
        if part.estimator is None:
            values[rows] = first
        else:
            values[rows] = first + part.order[part.estimator.labels_]
        parts.append(part)
        first += part.n_clusters
    if not parts:
        raise RfmxError(f"{where}: no customer has both its features and a '{column}'")
    valid = kept.copy()
    valid[kept] = values >= 0
    out = np.zeros(table.num_rows, dtype=np.int32)
    out[kept] = np.maximum(values, 0)
    return WithinClusters(transform, column, parts), pa.array(out, mask=None if valid.all() else ~valid)


def _largest(ks, n: int, method: str, Xs) -> list[int]:
    """The k of ``ks`` a segment of ``n`` customers (points ``Xs``) can be split into."""
    fits = [k for k in ks if k <= n]
    if method == "ward" and fits:
        from .hierarchy import distinct_count

        distinct = distinct_count(Xs, max(fits))
        if distinct is not None:
            fits = [k for k in fits if k <= distinct]
    return fits


def _fit_segment(Xs, name, first, k, ks, method, silhouette_sample, random_state, options) -> SegmentPart:
    import json

    n = Xs.shape[0]
    if ks is None:
        if not _largest([k], n, method, Xs):
            what = "distinct customers" if method == "ward" and k <= n else "customers"
            return SegmentPart(name, first, reason=f"fewer {what} ({n:,} customers) than k = {k}")
        chosen, choice = k, None
    else:
        fits = [v for v in _largest(ks, n, method, Xs) if v >= 2]
        if not fits:
            return SegmentPart(name, first, reason=f"too few customers ({n:,}) for any k of {ks[0]}..{ks[-1]}")
        table = choose_k(Xs, fits, silhouette_sample=silhouette_sample, random_state=random_state, **options)
        choice = json.loads(table.schema.metadata[K_CHOICE_KEY.encode()])
        if choice["k"] is None:
            return SegmentPart(name, first, reason=choice["reason"], k_choice=choice)
        chosen = int(choice["k"])
    est = make_estimator(chosen, random_state=random_state, **options).fit(Xs)
    sizes = np.bincount(est.labels_, minlength=chosen)
    ranked = np.lexsort((np.arange(chosen), -sizes))  # largest first, then the estimator's order
    order = np.empty(chosen, dtype=np.int64)
    order[ranked] = np.arange(chosen)
    return SegmentPart(name, first, est, order, k_choice=choice)
