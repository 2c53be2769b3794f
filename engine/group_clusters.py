"""Clusters fitted within each group (shop, market, channel): one k-means or Ward model per group.

:func:`fit_by_group` fits, for every group of a grouped per-customer table with at least
``min_group_size`` customers (with all features), the model :func:`rfmx.cluster.fit_clusters`
fits on that group's rows alone -- its own feature scaling, its own centres, its own
cluster numbers 0..k-1 -- so a shop's clusters are the ones it would get if it were
clustered alone.  A smaller group is either left out (``small_groups="skip"``, the
default: null clusters, listed with the reason) or placed by the model fitted on every
customer of every group (``"pooled"``).  Customers with a null feature get a null cluster.

The model file (JSON, :meth:`GroupClusters.save`) holds one cluster model per fitted
group, the pooled model if any, and the groups left out; :meth:`GroupClusters.predict`
places new customers with their own group's model.  Group values are stored as the text
Arrow writes for them (exact for integers, strings and dates), with their types.

Importing this module compiles nothing and does not import Numba.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .cluster import MODEL_VERSION, CustomerClusters, fit_clusters
from .errors import RfmxError
from .points import save_json

__all__ = ["GroupClusters", "GroupPart", "fit_by_group", "add_group_cluster_column", "SMALL_GROUPS",
           "GROUP_CLUSTERS_FORMAT", "GROUP_CLUSTERS_META", "group_clusters_info"]

GROUP_CLUSTERS_FORMAT = "rfmx-clusters-by-group"
#: what to do with a group below the minimum size: leave it out, or use the all-groups model
SMALL_GROUPS = ("skip", "pooled")
#: schema metadata key of a table clustered within groups (JSON, :func:`group_clusters_info`)
GROUP_CLUSTERS_META = b"rfmx.group_clusters"


@dataclass
class GroupPart:
    """One group: its ``values`` (text, one per group column), its ``customers`` (with all
    features), and its fitted ``model`` -- or none, with the ``reason`` and whether the pooled
    model places it (``pooled``)."""

    values: tuple
    customers: int
    model: CustomerClusters | None = None
    reason: str | None = None
    pooled: bool = False


def _group_text(table: pa.Table, columns) -> list[pa.Array]:
    """The group columns as text (the key the model file stores), nulls refused."""
    out = []
    for name in columns:
        if name not in table.column_names:
            raise RfmxError(f"group column '{name}' not found; columns are: {', '.join(table.column_names)}")
        col = table.column(name)
        if col.null_count:
            raise RfmxError(f"group column '{name}' has {col.null_count:,} null value(s)")
        try:
            out.append(pc.cast(col, pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise RfmxError(f"group column '{name}' has type {col.type}, which has no exact text form; "
                            f"group by integers, strings or dates") from None
    return out


def _rows_by_group(table: pa.Table, columns) -> tuple[list[tuple], list[np.ndarray]]:
    """Each group's text values and rows (table order within a group), groups in order of
    first appearance."""
    from .groups import group_index

    text = pa.table(dict(zip(columns, _group_text(table, columns))))
    idx = group_index(text, columns)
    names = [a.to_pylist() for a in idx.values()]
    values = [tuple(names[j][g] for j in range(len(columns))) for g in range(idx.n_groups)]
    rows = [idx.order[idx.starts[g]:idx.starts[g + 1]] for g in range(idx.n_groups)]
    return values, rows


class GroupClusters:
    """Cluster models per group (see the module docstring)."""

    def __init__(self, group, parts: list, *, k: int, min_group_size: int, small_groups: str,
                 pooled: CustomerClusters | None = None, types=None):
        self.group = tuple(group)
        self.parts = parts
        self.k = k
        self.min_group_size = min_group_size
        self.small_groups = small_groups
        self.pooled = pooled
        self.types = list(types) if types is not None else [None] * len(self.group)

    @property
    def n_clusters(self) -> int:
        """Clusters per group (k)."""
        return self.k

    @property
    def fitted(self) -> list[GroupPart]:
        return [p for p in self.parts if p.model is not None]

    @property
    def left_out(self) -> list[GroupPart]:
        """Groups without their own model (skipped, or placed by the pooled model)."""
        return [p for p in self.parts if p.model is None]

    def predict(self, table: pa.Table, where: str = "table") -> pa.Array:
        """Each customer's cluster (int32) in its group's model; a group without one takes
        the pooled model's cluster if there is one, else null; null where a feature is null."""
        values, rows = _rows_by_group(table, self.group)
        by_values = {p.values: p for p in self.parts}
        out = np.zeros(table.num_rows, dtype=np.int32)
        valid = np.zeros(table.num_rows, dtype=np.bool_)
        for key, r in zip(values, rows):
            part = by_values.get(key)
            model = part.model if part is not None and part.model is not None else self.pooled
            if model is None:
                continue
            got = model.predict(table.take(pa.array(r)), where)
            valid[r] = np.asarray(got.is_valid())
            out[r] = np.asarray(got.fill_null(0))
        return pa.array(out, mask=None if valid.all() else ~valid)

    def profiles(self, table: pa.Table, clusters: pa.Array | None = None) -> pa.Table:
        """Cluster profiles (:func:`rfmx.cluster.cluster_profiles`) of every group with a
        model (its own or the pooled one), the group columns (as text) and ``model``
        (``group`` or ``pooled``) in front; groups in order of first appearance."""
        if clusters is None:
            clusters = self.predict(table)
        clusters = clusters.combine_chunks() if isinstance(clusters, pa.ChunkedArray) else clusters
        values, rows = _rows_by_group(table, self.group)
        by_values = {p.values: p for p in self.parts}
        parts = []
        for key, r in zip(values, rows):
            part = by_values.get(key)
            own = part is not None and part.model is not None
            model = part.model if own else self.pooled
            if model is None:
                continue
            prof = model.profiles(table.take(pa.array(r)), clusters.take(pa.array(r)))
            for j, name in reversed(list(enumerate(self.group))):
                prof = prof.add_column(0, name, pa.array([key[j]] * prof.num_rows, pa.string()))
            prof = prof.add_column(len(self.group), "model",
                                   pa.array(["group" if own else "pooled"] * prof.num_rows, pa.string()))
            parts.append(prof)
        if not parts:
            return pa.table({name: pa.array([], pa.string()) for name in self.group})
        return pa.concat_tables(parts, promote_options="permissive")

    def info(self) -> dict:
        """The counts a run reports: groups fitted, skipped or pooled, and their customers."""
        small = self.left_out
        return {"fit_within": "group", "group": list(self.group), "k": self.k, "min_group_size": self.min_group_size,
                "small_groups": self.small_groups, "groups": len(self.parts), "fitted": len(self.fitted),
                "left_out": len(small), "left_out_customers": int(sum(p.customers for p in small)),
                "pooled": self.pooled is not None}

    def to_dict(self) -> dict:
        groups = []
        for p in self.parts:
            entry = {"values": list(p.values), "customers": p.customers}
            if p.model is not None:
                entry["model"] = p.model.to_dict()
            else:
                entry["left_out"] = p.reason
            groups.append(entry)
        return {"format": GROUP_CLUSTERS_FORMAT, "version": MODEL_VERSION, "group": list(self.group),
                "types": self.types, "k": self.k, "min_group_size": self.min_group_size,
                "small_groups": self.small_groups, "groups": groups,
                "pooled": self.pooled.to_dict() if self.pooled is not None else None}

    def save(self, path) -> None:
        """Write the models as one JSON file (atomically)."""
        save_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, data: dict, where: str = "saved model") -> "GroupClusters":
        """The models :meth:`to_dict` described; a damaged description is a one-line RfmxError."""
        from .modelfile import Fields

        f = Fields(where)
        data = f.mapping(data, "the cluster model")
        if data.get("format") != GROUP_CLUSTERS_FORMAT or data.get("version") != MODEL_VERSION:
            f.fail(f"not an rfmx per-group cluster model (format/version {(data.get('format'), data.get('version'))})")
        group = f.strings(f.get(data, "group", "the group columns ('group')"), "group")
        if not group:
            f.fail("group must name at least one column")
        k = f.integer(f.get(data, "k"), "k", minimum=1)
        min_size = f.integer(f.get(data, "min_group_size"), "min_group_size", minimum=0)
        small = f.string(f.get(data, "small_groups"), "small_groups", choices=SMALL_GROUPS)
        pooled_raw = data.get("pooled")
        pooled = CustomerClusters.from_dict(pooled_raw, f"{where}: pooled") if pooled_raw is not None else None
        entries = f.get(data, "groups", "the groups ('groups')")
        if not isinstance(entries, list):
            f.fail("groups must be a list")
        parts = []
        for i, e in enumerate(entries):
            e = f.mapping(e, f"groups[{i}]")
            values = tuple(f.strings(f.get(e, "values", f"groups[{i}].values"), f"groups[{i}].values",
                                     length=len(group)))
            n = f.integer(f.get(e, "customers", f"groups[{i}].customers"), f"groups[{i}].customers", minimum=0)
            if "model" in e:
                parts.append(GroupPart(values, n, CustomerClusters.from_dict(e["model"], f"{where}: groups[{i}]")))
            else:
                reason = f.string(f.get(e, "left_out", f"groups[{i}].left_out"), f"groups[{i}].left_out")
                parts.append(GroupPart(values, n, reason=reason, pooled=pooled is not None))
        if len({p.values for p in parts}) != len(parts):
            f.fail("a group appears twice in groups")
        return cls(group, parts, k=k, min_group_size=min_size, small_groups=small, pooled=pooled,
                   types=data.get("types"))

    @classmethod
    def load(cls, path) -> "GroupClusters":
        from .modelfile import read_model_json

        return cls.from_dict(read_model_json(path, "cluster model"), str(path))

    def __repr__(self) -> str:
        return (f"GroupClusters(by {', '.join(self.group)}: {len(self.fitted)} of {len(self.parts)} groups fitted, "
                f"k={self.k})")


def _too_small(X: np.ndarray, k: int, min_size: int, method: str, features) -> str | None:
    """Why a group with feature rows ``X`` (after the log step) gets no model of its own, or None."""
    n = X.shape[0]
    if n < min_size:
        return f"{n:,} customers, fewer than the minimum group size {min_size:,}"
    if n < k:
        return f"{n:,} customers, fewer than k = {k}"
    for f, name in enumerate(features):
        if n > 1 and X[:, f].min() == X[:, f].max():
            return f"feature '{name}' is the same for all {n:,} customers"
    if method == "ward":
        from .hierarchy import distinct_count

        distinct = distinct_count(X, k)
        if distinct is not None and distinct < k:
            return f"{distinct:,} distinct customers, fewer than k = {k}"
    return None


def fit_by_group(table: pa.Table, k: int = 8, *, group=None, min_group_size: int | None = None,
                 small_groups: str = "skip", where: str = "table", **options) -> tuple[GroupClusters, pa.Array]:
    """Fit one cluster model per group of ``table`` (see the module docstring).

    ``group``: the group columns (default: those a grouped table records).  ``k``: clusters
    per group.  ``min_group_size``: the fewest customers (with all features) a group needs
    for its own model (default and floor: ``k``).  ``small_groups``: ``"skip"`` (null
    clusters) or ``"pooled"`` (the model fitted on every customer).  ``options``: those of
    :func:`rfmx.cluster.fit_clusters` (``features``, ``log``, ``scaling``, ``method``,
    ``n_init``, ``random_state``, ...; not ``distance``).  Returns ``(model, clusters)``.
    """
    from .customer_features import DEFAULT_FEATURES, FeatureTransform
    from .groups import check_group, group_columns_of

    if small_groups not in SMALL_GROUPS:
        raise RfmxError(f"small_groups must be one of {', '.join(SMALL_GROUPS)}, got {small_groups!r}")
    if options.get("distance") is not None:
        raise RfmxError("clusters within groups are cut at k in every group, not at a distance")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise RfmxError(f"k must be an int >= 1, got {k!r}")
    group = check_group(group) if group is not None else group_columns_of(table)
    if not group:
        raise RfmxError(f"{where}: no group columns to fit within; aggregate with group=... (--group)")
    if min_group_size is not None and (isinstance(min_group_size, bool) or min_group_size < 1):
        raise RfmxError(f"min_group_size must be >= 1, got {min_group_size!r}")
    min_size = max(int(min_group_size or 0), int(k))
    method = options.get("method", "kmeans")
    shape = {key: options.pop(key) for key in ("features", "log", "scaling") if key in options}
    # Which customers have every feature, and their values, do not depend on a fit.
    probe = FeatureTransform(shape.get("features", DEFAULT_FEATURES), log=shape.get("log", True),
                             scaling=shape.get("scaling", "zscore"))
    values, rows = _rows_by_group(table, group)
    out = np.zeros(table.num_rows, dtype=np.int32)
    valid = np.zeros(table.num_rows, dtype=np.bool_)
    parts, small_rows = [], []
    for key, r in zip(values, rows):
        sub = table.take(pa.array(r))
        X, _ = probe.raw(sub, where)
        reason = _too_small(X, int(k), min_size, method, probe.features)
        if reason is not None:
            parts.append(GroupPart(key, X.shape[0], reason=reason, pooled=small_groups == "pooled"))
            small_rows.append(r)
            continue
        model, clusters = fit_clusters(sub, k, where=f"{where}, group {', '.join(key)}", **shape, **options)
        parts.append(GroupPart(key, X.shape[0], model))
        out[r] = np.asarray(clusters.fill_null(0))
        valid[r] = np.asarray(clusters.is_valid())
    pooled = None
    if small_groups == "pooled" and small_rows:
        pooled, clusters = fit_clusters(table, k, where=f"{where}, all groups", **shape, **options)
        every = np.concatenate(small_rows)
        out[every] = np.asarray(clusters.fill_null(0))[every]
        valid[every] = np.asarray(clusters.is_valid())[every]
    types = [str(table.schema.field(g).type) for g in group]
    model = GroupClusters(group, parts, k=int(k), min_group_size=min_size, small_groups=small_groups,
                          pooled=pooled, types=types)
    return model, pa.array(out, mask=None if valid.all() else ~valid)


def add_group_cluster_column(table: pa.Table, k: int = 8, *, name: str = "cluster", **options) -> pa.Table:
    """``table`` with a ``cluster`` column fitted within each group (:func:`fit_by_group`;
    ``options`` are its keywords); the run's counts go to the ``rfmx.group_clusters``
    metadata (:func:`group_clusters_info`), with the groups left out."""
    model, clusters = fit_by_group(table, k, **options)
    if name in table.column_names:
        table = table.set_column(table.column_names.index(name), name, clusters)
    else:
        table = table.append_column(name, clusters)
    info = model.info()
    info["left_out_groups"] = [{"values": list(p.values), "customers": p.customers, "reason": p.reason}
                               for p in model.left_out[:20]]
    meta = dict(table.schema.metadata or {})
    meta[GROUP_CLUSTERS_META] = json.dumps(info).encode()
    return table.replace_schema_metadata(meta)


def group_clusters_info(table: pa.Table) -> dict | None:
    """The ``rfmx.group_clusters`` metadata of a table clustered within groups, or None."""
    raw = (table.schema.metadata or {}).get(GROUP_CLUSTERS_META)
    return json.loads(raw) if raw is not None else None
