"""The numbers behind each figure of the report: small tables of aggregates, never one row per customer.

Each function reads columns of an rfmx table (a scored per-customer table, timeline
snapshots, a migration, cohort, k or calibration table, a CLV table) as NumPy and returns
a small ``pyarrow.Table`` (or, for the headline, a dict) whose size depends on bins,
segments, clusters or periods, not on customers: that is what ``rfmx.plot`` draws and
``rfmx report`` embeds, so a report of 10 M customers is as small as one of 1,000.

Nothing here imports a plotting library.  A table without the columns a figure needs
raises :class:`MissingColumns` (an :class:`~rfmx.errors.RfmxError`), which the report
turns into a note instead of the figure.  Money is net money (``monetary_minor`` with the
table's ``rfmx.amount_scale``, else ``monetary_total``), as in ``rfmx summary``.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import RfmxError
from .tables import combined, group_codes, money_column, numeric_column, readonly, summable

__all__ = ["MissingColumns", "headline", "lorenz", "rf_grid", "segments", "segment_sizes", "migration_cells",
           "cohort_cells", "cluster_snake", "cluster_sizes", "k_curve", "k_choice", "dendrogram", "clv_matrix",
           "calibration", "value_distribution", "alerts", "label_order", "HEADLINE_PERCENTS", "LORENZ_PERCENTS",
           "SNAKE_FEATURES", "DENDROGRAM_LEAVES"]

HEADLINE_PERCENTS = (1, 5, 10, 20)
#: Customer shares (percent, top customers first) at which the Lorenz curve is drawn: every
#: 0.1 % up to 1 % (where a few customers move the curve most), then every 0.5 %.
LORENZ_PERCENTS = tuple(i / 10 for i in range(10)) + tuple(1 + i / 2 for i in range(199))
#: The snake plot's features: (column, label) — the columns rfmx cluster clusters on by default.
SNAKE_FEATURES = (("recency_days", "Recency"), ("n_orders", "Frequency"), ("monetary_total", "Monetary"))
NEW_SEGMENT = "(new)"    # as rfmx.migrations: customers without an earlier order
NONE_SEGMENT = "(none)"  # a null segment


class MissingColumns(RfmxError):
    """A table lacks the columns one figure needs: the report leaves that figure out with a
    note.  ``what``: the figure; ``reason``: why, in a few words."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what}: {reason}")
        self.what, self.reason = what, reason


def _require(table: pa.Table, columns, what: str, hint: str = "") -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        names = ", ".join(missing)
        raise MissingColumns(what, f"the table has no {names} column{'s' if len(missing) > 1 else ''}"
                             + (f" ({hint})" if hint else ""))


def _values(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as (float64 values, valid mask): nulls and NaN are not valid."""
    col = numeric_column(table, name)
    valid = col.valid if col.valid is not None else np.ones(len(col.values), dtype=np.bool_)
    return col.values.astype(np.float64, copy=False), valid


def _money(table: pa.Table) -> tuple[np.ndarray, float]:
    """Net money per customer (exact int64 minor units when the sums fit, else float64; null = 0) and its unit."""
    name, unit = money_column(table)
    col = numeric_column(table, name)
    values = col.values if col.valid is None else np.where(col.valid, col.values, 0)
    return summable(values), unit


def _as_float(total, unit: float) -> float:
    return (int(total) if isinstance(total, (int, np.integer)) else float(total)) / unit


def _group_sums(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sums of ``values`` per group (negative group: skipped); exact in int64."""
    from .kernels.scores import group_sums

    return group_sums(readonly(values), readonly(group.astype(np.int64, copy=False)), np.int64(n_groups))


def _labels(table: pa.Table, name: str) -> tuple[np.ndarray, list[str]]:
    """A label column as codes (null -> a trailing ``(none)`` name, only when some label is null)."""
    codes, names = group_codes(table, name)
    names = [str(n) for n in names]
    if (codes < 0).any():
        codes = np.where(codes < 0, len(names), codes)
        names = names + [NONE_SEGMENT]
    return codes, names


def _share(part, whole):
    return part / whole if whole else None


# --- scores ---------------------------------------------------------------------------------------

def headline(scores: pa.Table) -> dict:
    """The report's headline numbers, as ``rfmx summary`` computes them.

    ``{"customers", "revenue", "top_shares": {1, 5, 10, 20: share}, "gini", "abc": [rows of
    rfmx.concentration.abc_summary], "as_of"}`` — revenue shares and Gini over revenue
    clipped at 0 (see :func:`rfmx.concentration.concentration`).
    """
    from .concentration import abc_summary, concentration

    conc = concentration(scores)
    raw = (scores.schema.metadata or {}).get(b"rfmx.as_of")
    return {"customers": conc["customers"], "revenue": conc["revenue"],
            "top_shares": {p: conc["top_shares"][p] for p in HEADLINE_PERCENTS}, "gini": conc["gini"],
            "abc": abc_summary(scores).to_pylist(), "as_of": raw.decode() if raw else None}


def lorenz(scores: pa.Table, percents=LORENZ_PERCENTS) -> pa.Table:
    """The Lorenz (cumulative revenue) curve, top customers first.

    One row per customer share ``p`` (percent; 0 and 100 always included): ``customer_share``
    (p / 100), ``customers`` (the top ``ceil(p * n / 100)``, as :func:`rfmx.value_concentration`
    counts its top percents), ``revenue`` (their revenue clipped at 0, in money units) and
    ``revenue_share``.  Empty when there is no revenue.
    """
    money, unit = _money(scores)
    n = len(money)
    clipped = np.maximum(money, 0)
    total = clipped.sum()
    names = ("customer_share", "customers", "revenue", "revenue_share")
    if n == 0 or total <= 0:
        return pa.table({k: pa.array([], pa.int64() if k == "customers" else pa.float64()) for k in names})
    top_first = np.sort(clipped)[::-1]
    running = np.cumsum(top_first)  # int64 stays exact: summable() checked that the total fits
    ps = sorted(set(float(p) for p in percents) | {0.0, 100.0})
    ks = np.array([max(1, math.ceil(p * n / 100)) if p > 0 else 0 for p in ps], dtype=np.int64)
    tops = np.where(ks > 0, running[np.maximum(ks - 1, 0)], 0)
    exact = tops.dtype.kind == "i"
    total = int(total) if exact else float(total)
    return pa.table({
        "customer_share": pa.array([p / 100 for p in ps], pa.float64()),
        "customers": pa.array(ks, pa.int64()),
        "revenue": pa.array([(int(t) if exact else float(t)) / unit for t in tops], pa.float64()),
        "revenue_share": pa.array([(int(t) if exact else float(t)) / total for t in tops], pa.float64()),
    })


def _bins(scores: pa.Table, r: np.ndarray, f: np.ndarray) -> int:
    raw = (scores.schema.metadata or {}).get(b"rfmx.scores")
    q = None
    if raw:
        try:
            q = int(json.loads(raw)["bins"])
        except (ValueError, KeyError, TypeError):
            raise RfmxError("the table's rfmx.scores metadata is not one this version of rfmx writes "
                            "(no 'bins'); score it again with this rfmx") from None
    biggest = int(max(r.max(initial=1), f.max(initial=1)))
    return max(q or 1, biggest)


def _score_column(table: pa.Table, name: str) -> np.ndarray:
    """A score column as it is stored (int8: no copy), checked to be scores rfmx writes."""
    arr = combined(table.column(name))
    if not pa.types.is_integer(arr.type):
        raise RfmxError(f"column '{name}' has type {arr.type}; rfmx writes integer scores")
    if arr.null_count:
        raise RfmxError(f"column '{name}' has nulls; rfmx score gives every customer a score")
    values = arr.to_numpy(zero_copy_only=False)
    if len(values) and values.min() < 1:
        raise RfmxError(f"column '{name}' has scores below 1; rfmx scores run from 1 to the number of bins")
    return values


def rf_grid(scores: pa.Table) -> pa.Table:
    """The R x F grid: one row per (r_score, f_score) cell, every cell of 1..q x 1..q.

    Columns: ``r_score``, ``f_score``, ``customers``, ``customer_share``, ``revenue`` (net
    money of the cell's customers), ``mean_revenue`` (revenue / customers; null for an
    empty cell), ``segment`` (the cell's most common segment; the first in the map's order
    on a tie; null for an empty cell or a table without segments) and ``segment_share``
    (the share of the cell's customers in it: 1 for the R x F maps such as rfm-grid).
    """
    _require(scores, ("r_score", "f_score"), "R x F heatmap", "score the table with rfmx score")
    r, f = _score_column(scores, "r_score"), _score_column(scores, "f_score")
    q = _bins(scores, r, f)
    cell = (r.astype(np.int64) - 1) * q + (f - 1)
    n = len(cell)
    counts = np.bincount(cell, minlength=q * q)
    money, unit = _money(scores)
    revenue = _group_sums(money, cell, q * q)
    seg_names, seg_top, seg_share = [None] * (q * q), [None] * (q * q), [None] * (q * q)
    if "segment" in scores.column_names:
        codes, names = _labels(scores, "segment")
        per = np.bincount(cell * len(names) + codes, minlength=q * q * len(names)).reshape(q * q, len(names)) \
            if names else np.zeros((q * q, 0), np.int64)
        for c in np.flatnonzero(counts):
            best = int(np.argmax(per[c]))
            seg_top[c] = names[best]
            seg_share[c] = float(per[c, best] / counts[c])
        seg_names = seg_top
    cells = np.arange(q * q)
    return pa.table({
        "r_score": pa.array(cells // q + 1, pa.int64()),
        "f_score": pa.array(cells % q + 1, pa.int64()),
        "customers": pa.array(counts, pa.int64()),
        "customer_share": pa.array([_share(int(c), n) for c in counts], pa.float64()),
        "revenue": pa.array([_as_float(v, unit) for v in revenue], pa.float64()),
        "mean_revenue": pa.array([_as_float(v, unit) / c if c else None for v, c in zip(revenue, counts)],
                                 pa.float64()),
        "segment": pa.array(seg_names, pa.string()),
        "segment_share": pa.array(seg_share, pa.float64()),
    })


def segments(scores: pa.Table) -> pa.Table:
    """The segment table of ``rfmx summary`` (:func:`rfmx.segment_summary`): customers,
    revenue and their shares, mean and median recency, orders and money per segment, in
    the segment map's order."""
    from .concentration import segment_summary, stored_segment_summary

    _require(scores, ("segment",), "segments", "the table was scored without a segment map")
    stored = stored_segment_summary(scores)  # rfmx score stores the summary it printed
    return stored if stored is not None else segment_summary(scores)


# --- timeline -------------------------------------------------------------------------------------

def segment_sizes(snapshots, by: str = "segment", order=None) -> pa.Table:
    """Customers per ``by`` label (segment, lifecycle stage) in every snapshot.

    ``snapshots``: the long table of ``rfmx timeline -o`` (``as_of`` and ``by`` columns;
    every customer of each snapshot, not ``--changes-only``), or an iterable of pieces of
    it (record batches or tables, e.g. row groups of a file), so a timeline is counted
    without being held whole.  Returns ``as_of`` (the date, ``YYYY-MM-DD``, of each
    snapshot's as-of midnight; a full ISO time if it is not a midnight), ``label``,
    ``customers`` and ``share`` (of that snapshot's customers), in time order; every label
    appears in every snapshot (0 customers too), in ``order`` (e.g. the segment map's,
    best first), else in the order of a built-in segment map that lists them all, else in
    order of first appearance.
    """
    pieces = [snapshots] if isinstance(snapshots, (pa.Table, pa.RecordBatch)) else snapshots
    counts: dict[tuple, int] = {}
    labels: dict[str, None] = {}
    stamps: dict = {}
    for piece in pieces:
        table = piece if isinstance(piece, pa.Table) else pa.Table.from_batches([piece])
        _require(table, ("as_of", by), f"{by} sizes over time")
        if table.num_rows == 0:
            continue
        stamp = combined(table.column("as_of"))
        if stamp.null_count:
            raise RfmxError("the timeline has a null as_of; rfmx timeline writes one per row")
        enc = stamp.dictionary_encode()
        when = enc.dictionary.to_pylist()
        when_code = np.asarray(enc.indices.cast(pa.int64()))
        codes, names = _labels(table, by)
        k = max(len(names), 1)
        per = np.bincount(when_code * k + codes, minlength=len(when) * k).reshape(len(when), k)
        for i, w in enumerate(when):
            stamps[w] = None
            for j, name in enumerate(names):
                labels[name] = None
                if per[i, j]:
                    counts[(w, name)] = counts.get((w, name), 0) + int(per[i, j])
    names = label_order(list(labels), order)
    rows = {"as_of": [], "label": [], "customers": [], "share": []}
    for w in sorted(stamps):
        total = sum(counts.get((w, name), 0) for name in names)
        for name in names:
            c = counts.get((w, name), 0)
            rows["as_of"].append(_iso_date(w))
            rows["label"].append(name)
            rows["customers"].append(c)
            rows["share"].append(_share(c, total))
    return pa.table({"as_of": pa.array(rows["as_of"], pa.string()), "label": pa.array(rows["label"], pa.string()),
                     "customers": pa.array(rows["customers"], pa.int64()),
                     "share": pa.array(rows["share"], pa.float64())})


_MIGRATION = ("from_segment", "to_segment", "customers", "revenue")


def migration_cells(migration: pa.Table) -> pa.Table:
    """The migration matrix between the last two snapshots of a migration table.

    ``migration``: ``rfmx timeline --migration-out`` (or :func:`rfmx.migration`): one block
    of (from, to) rows per pair of consecutive snapshots; the block with the latest
    ``as_of_to`` is kept.  Columns: ``from_segment``, ``to_segment``, ``customers``,
    ``revenue``, ``from_share`` (the share of the from-segment's customers that went to
    ``to_segment``; ``(new)`` customers are their own row), ``as_of_from``, ``as_of_to``.
    """
    _require(migration, _MIGRATION, "migration matrix")
    t = migration
    if "as_of_to" in t.column_names and t.num_rows:
        last = pc.max(t.column("as_of_to")).as_py()
        t = t.filter(pc.equal(t.column("as_of_to"), last))
    pairs = list(zip(t.column("from_segment").to_pylist(), t.column("to_segment").to_pylist()))
    if len(set(pairs)) != len(pairs):
        raise RfmxError("the migration table holds several snapshot pairs but no as_of_to column to tell "
                        "them apart; write it with rfmx timeline --migration-out")
    customers = np.asarray(t.column("customers").cast(pa.int64()).fill_null(0))
    from_codes, from_names = _labels(t, "from_segment")
    totals = np.bincount(from_codes, weights=customers, minlength=len(from_names))
    share = [_share(int(c), int(totals[g])) for c, g in zip(customers, from_codes)]
    def text(name):
        return t.column(name).cast(pa.string()) if name in t.column_names else pa.nulls(t.num_rows, pa.string())
    return pa.table({"from_segment": t.column("from_segment").cast(pa.string()),
                     "to_segment": t.column("to_segment").cast(pa.string()),
                     "customers": pa.array(customers, pa.int64()),
                     "revenue": t.column("revenue").cast(pa.float64()),
                     "from_share": pa.array(share, pa.float64()),
                     "as_of_from": text("as_of_from"), "as_of_to": text("as_of_to")})


_COHORTS = ("cohort", "period_index", "customers_in_cohort", "active_customers", "retention")


def cohort_cells(cohorts: pa.Table, *, max_cohorts: int = 48, max_periods: int = 48) -> tuple[pa.Table, int]:
    """The cohort retention heatmap's cells: the latest ``max_cohorts`` cohorts, periods
    ``0 .. max_periods - 1`` of each.

    ``cohorts``: ``rfmx timeline --cohorts-out`` (:func:`rfmx.cohort_table`).  Returns
    (cells, number of cohorts in the input); cells have ``cohort`` (ISO date), and the
    input's ``period_index``, ``customers_in_cohort``, ``active_customers``, ``retention``,
    ``revenue`` and ``cumulative_revenue_per_customer`` (when present).
    """
    _require(cohorts, _COHORTS, "cohort retention")
    starts = combined(cohorts.column("cohort"))
    distinct = pc.unique(starts).sort() if len(starts) else starts
    keep = distinct.slice(max(len(distinct) - max_cohorts, 0))
    mask = pc.and_(pc.is_in(starts, value_set=keep), pc.less(cohorts.column("period_index"), max_periods))
    t = cohorts.filter(mask)
    out = {"cohort": pa.array([_iso_date(v) for v in t.column("cohort").to_pylist()], pa.string())}
    for name in ("period_index", "customers_in_cohort", "active_customers"):
        out[name] = t.column(name).cast(pa.int64())
    for name in ("retention", "revenue", "cumulative_revenue_per_customer"):
        if name in t.column_names:
            out[name] = t.column(name).cast(pa.float64())
    return pa.table(out), len(distinct)


def _iso_date(v) -> str:
    """A date or a midnight as ``YYYY-MM-DD`` (its wall-clock date), other times in full ISO 8601."""
    if hasattr(v, "hour") and (v.hour, v.minute, v.second, v.microsecond) != (0, 0, 0, 0):
        return v.isoformat()
    return v.isoformat()[:10] if hasattr(v, "isoformat") else str(v)


def label_order(labels: list[str], order=None) -> list[str]:
    """``labels`` in ``order`` (those it does not list after, as given), else in the order of
    the first built-in segment map that lists every label (best first), else as given;
    ``(new)``, ``(none)`` and ``(gone)`` last."""
    if order is None:
        from .segments import BUILTIN_MAPS, SegmentMap

        for name in BUILTIN_MAPS:
            known = SegmentMap.builtin(name).order
            if set(labels) - {NEW_SEGMENT, NONE_SEGMENT, "(gone)"} <= set(known):
                order = known
                break
    rank = {name: i for i, name in enumerate(order or [])}
    last = {NEW_SEGMENT: 1, NONE_SEGMENT: 2, "(gone)": 3}
    return sorted(labels, key=lambda n: (last.get(n, 0), rank.get(n, len(rank)), labels.index(n)))


# --- clusters -------------------------------------------------------------------------------------

def _cluster_codes(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Cluster per customer as 0..k-1 codes over the sorted cluster ids (-1: not clustered),
    and names: "cluster 3", or the sub-segment ("Champions / 2") of ``rfmx cluster
    --within`` when the table has that column."""
    _require(table, ("cluster",), "clusters", "give the output of rfmx cluster -o or rfmx score --clusters")
    arr = combined(table.column("cluster"))
    if not pa.types.is_integer(arr.type):
        raise RfmxError(f"column 'cluster' has type {arr.type}; rfmx cluster writes integers")
    ids = np.asarray(arr.cast(pa.int64()).fill_null(-1))
    present, first = np.unique(ids, return_index=True)
    first = first[present >= 0]
    present = present[present >= 0]
    codes = np.where(ids >= 0, np.searchsorted(present, ids), -1)
    names = [f"cluster {int(c)}" for c in present]
    if "subsegment" in table.column_names and len(first):
        sub = combined(table.column("subsegment")).take(pa.array(first)).cast(pa.string()).to_pylist()
        names = [s if s is not None else n for s, n in zip(sub, names)]
    return codes, names


def cluster_snake(clusters: pa.Table, features=SNAKE_FEATURES) -> pa.Table:
    """The snake plot's points: per cluster and feature, the mean standardized value.

    Each feature is put in the space rfmx cluster clusters in by default: ``sign(x) *
    log1p(|x|)``, then standardized (z-score) over the clustered customers with a valid
    value.  Columns: ``cluster`` (label), ``feature`` (Recency, Frequency, Monetary),
    ``column``, ``z_mean`` (the cluster's mean z-score), ``mean`` (the cluster's mean of
    the raw column) and ``customers`` (with a valid value).
    """
    codes, names = _cluster_codes(clusters)
    _require(clusters, [c for c, _ in features], "cluster snake plot")
    rows = {"cluster": [], "feature": [], "column": [], "z_mean": [], "mean": [], "customers": []}
    k = len(names)
    for column, label in features:
        x, ok = _values(clusters, column)
        ok = ok & (codes >= 0)
        g = np.where(ok, codes, -1)
        v = np.sign(x) * np.log1p(np.abs(x))
        v = np.where(ok, v, 0.0)
        n = int(ok.sum())
        mu = v.sum() / n if n else 0.0
        sd = math.sqrt(float(((v - mu) ** 2 * ok).sum()) / n) if n else 0.0
        cnt = np.bincount(g + 1, minlength=k + 1)[1:]
        sums = np.bincount(g + 1, weights=v, minlength=k + 1)[1:]
        raw = np.bincount(g + 1, weights=np.where(ok, x, 0.0), minlength=k + 1)[1:]
        for c in range(k):
            rows["cluster"].append(names[c])
            rows["feature"].append(label)
            rows["column"].append(column)
            rows["customers"].append(int(cnt[c]))
            rows["mean"].append(float(raw[c] / cnt[c]) if cnt[c] else None)
            rows["z_mean"].append(float((sums[c] / cnt[c] - mu) / sd) if cnt[c] and sd > 0 else
                                  (0.0 if cnt[c] else None))
    return pa.table({"cluster": pa.array(rows["cluster"], pa.string()),
                     "feature": pa.array(rows["feature"], pa.string()),
                     "column": pa.array(rows["column"], pa.string()),
                     "z_mean": pa.array(rows["z_mean"], pa.float64()),
                     "mean": pa.array(rows["mean"], pa.float64()),
                     "customers": pa.array(rows["customers"], pa.int64())})


def cluster_sizes(clusters: pa.Table) -> pa.Table:
    """Per cluster: ``cluster`` (label; ``not clustered`` for customers with a null
    cluster), ``customers``, ``customer_share``, ``revenue`` (net money) and
    ``revenue_share`` (of the net revenue of all customers; null if it is not positive)."""
    codes, names = _cluster_codes(clusters)
    if (codes < 0).any():
        codes = np.where(codes < 0, len(names), codes)
        names = names + ["not clustered"]
    k = len(names)
    counts = np.bincount(codes, minlength=k)
    money, unit = _money(clusters)
    revenue = [_as_float(v, unit) for v in _group_sums(money, codes, k)]
    total = sum(revenue)
    n = int(counts.sum())
    return pa.table({"cluster": pa.array(names, pa.string()), "customers": pa.array(counts, pa.int64()),
                     "customer_share": pa.array([_share(int(c), n) for c in counts], pa.float64()),
                     "revenue": pa.array(revenue, pa.float64()),
                     "revenue_share": pa.array([r / total if total > 0 else None for r in revenue], pa.float64())})


def k_curve(k_table: pa.Table) -> pa.Table:
    """The elbow and silhouette curves of ``rfmx cluster --k-range ... --k-table``: ``k``,
    ``inertia``, ``variance_explained``, ``silhouette`` (null for k = 1) and
    ``recommended`` (true on the k :func:`k_choice` recommends), by k."""
    _require(k_table, ("k", "inertia", "silhouette"), "elbow and silhouette")
    t = k_table.sort_by("k")
    out = {"k": t.column("k").cast(pa.int64()), "inertia": t.column("inertia").cast(pa.float64())}
    out["variance_explained"] = (t.column("variance_explained").cast(pa.float64())
                                 if "variance_explained" in t.column_names else pa.nulls(t.num_rows, pa.float64()))
    out["silhouette"] = t.column("silhouette").cast(pa.float64())
    choice = k_choice(k_table)
    out["recommended"] = pa.array([k == choice.k for k in out["k"].to_pylist()], pa.bool_())
    return pa.table(out)


def k_choice(k_table: pa.Table):
    """The k a k table recommends, and why (:func:`rfmx.kchoice.recommend_k` over its
    ``k``, ``inertia`` and ``silhouette``: the same rule ``rfmx cluster --k-range`` applies)."""
    from .kchoice import recommend_k

    _require(k_table, ("k", "inertia", "silhouette"), "elbow and silhouette")
    t = k_table.sort_by("k")
    return recommend_k(t.column("k").to_pylist(), t.column("inertia").cast(pa.float64()).to_pylist(),
                       t.column("silhouette").cast(pa.float64()).to_pylist())


# --- CLV ------------------------------------------------------------------------------------------

def _clv_column(clv: pa.Table, base: str) -> str | None:
    """``base`` or its calibration twin ``base_cal`` (a holdout run of rfmx clv)."""
    for name in (base, f"{base}_cal"):
        if name in clv.column_names:
            return name
    return None


def clv_matrix(clv: pa.Table, *, bins: int = 24, cap_quantile: float = 0.995) -> tuple[pa.Table, dict]:
    """Frequency x recency cells of a CLV table: customers, mean P(alive), mean expected purchases.

    ``clv``: the output of ``rfmx clv -o`` (``frequency``, ``recency`` in the table's time
    unit, ``probability_alive``, ``expected_purchases``; or their ``_cal`` twins of a
    holdout run).  Frequency (repeat purchase periods) is cut into at most ``bins``
    integer-bounded bins up to its ``cap_quantile`` quantile, the last bin open-ended
    (``>= lo``); recency into ``bins`` equal-width bins from 0 to its maximum (the last
    closed).  Returns (cells, info): one row per non-empty cell — ``frequency_lo``,
    ``frequency_hi`` (exclusive; null for the open bin), ``frequency_bin`` (label),
    ``recency_lo``, ``recency_hi``, ``recency_bin`` (label), ``customers``,
    ``probability_alive`` and ``expected_purchases`` (means over the cell's customers);
    info has the ``unit`` (``rfmx.btyd.unit`` metadata) and the columns read.
    """
    fcol, rcol = _clv_column(clv, "frequency"), _clv_column(clv, "recency")
    if fcol is None or rcol is None:
        raise MissingColumns("frequency x recency matrices", "the table has no frequency/recency columns "
                             "(give the output of rfmx clv -o, not of rfmx score --clv)")
    _require(clv, ("probability_alive", "expected_purchases"), "frequency x recency matrices")
    x, x_ok = _values(clv, fcol)
    t, t_ok = _values(clv, rcol)
    if (x[x_ok] < 0).any() or (t[t_ok] < 0).any():
        raise RfmxError(f"{fcol}/{rcol} below 0; rfmx clv counts purchase periods and time from 0")
    alive, a_ok = _values(clv, "probability_alive")
    expected, e_ok = _values(clv, "expected_purchases")
    ok = x_ok & t_ok & a_ok & e_ok
    x, t, alive, expected = x[ok], t[ok], alive[ok], expected[ok]
    raw = (clv.schema.metadata or {}).get(b"rfmx.btyd.unit")
    info = {"unit": raw.decode() if raw else None, "frequency": fcol, "recency": rcol}
    names = ("frequency_lo", "frequency_hi", "frequency_bin", "recency_lo", "recency_hi", "recency_bin",
             "customers", "probability_alive", "expected_purchases")
    if not len(x):
        return pa.table({n: pa.array([], pa.string() if n.endswith("_bin") else pa.float64()) for n in names}), info
    # Frequency: integer-bounded bins of one width up to the cap quantile, then one open bin.
    whole = np.floor(x).astype(np.int64)
    cap = int(np.searchsorted(np.cumsum(np.bincount(whole)), cap_quantile * len(whole)))
    width = max(1, math.ceil((cap + 1) / bins))
    closed = cap // width + 1
    fi = np.minimum(whole // width, closed)
    n_f = closed + (1 if whole.max() >= closed * width else 0)
    # Recency: equal-width bins from 0 to the largest recency (the last bin closed).
    top = float(t.max())
    r_edges = np.linspace(0.0, top, bins + 1) if top > 0 else np.array([0.0, 1.0])
    n_r = len(r_edges) - 1
    ri = np.clip(np.searchsorted(r_edges, t, side="right") - 1, 0, n_r - 1)
    cell = fi * n_r + ri
    cnt = np.bincount(cell, minlength=n_f * n_r)
    sa = np.bincount(cell, weights=alive, minlength=n_f * n_r)
    se = np.bincount(cell, weights=expected, minlength=n_f * n_r)
    rows = {n: [] for n in names}
    for c in np.flatnonzero(cnt):
        i, j = divmod(int(c), n_r)
        lo = i * width
        hi = lo + width if i < closed else None
        rows["frequency_lo"].append(float(lo))
        rows["frequency_hi"].append(None if hi is None else float(hi))
        rows["frequency_bin"].append(f"{lo}+" if hi is None else (str(lo) if width == 1 else f"{lo}-{hi - 1}"))
        rows["recency_lo"].append(float(r_edges[j]))
        rows["recency_hi"].append(float(r_edges[j + 1]))
        rows["recency_bin"].append(f"{r_edges[j]:.4g}-{r_edges[j + 1]:.4g}")
        rows["customers"].append(int(cnt[c]))
        rows["probability_alive"].append(float(sa[c] / cnt[c]))
        rows["expected_purchases"].append(float(se[c] / cnt[c]))
    types = {n: pa.string() if n.endswith("_bin") else (pa.int64() if n == "customers" else pa.float64())
             for n in names}
    return pa.table({n: pa.array(v, types[n]) for n, v in rows.items()}), info


def calibration(table: pa.Table) -> pa.Table:
    """Calibration vs holdout (``rfmx clv --calibration-out``), long: ``bucket`` (calibration
    frequency, e.g. ``7+``), ``order`` (its position), ``series`` (``actual`` or
    ``predicted``), ``purchases`` (mean repeat purchases in the holdout) and ``n_customers``."""
    _require(table, ("bucket", "n_customers", "actual", "predicted"), "calibration vs holdout")
    t = table.sort_by("frequency_cal") if "frequency_cal" in table.column_names else table
    bucket = t.column("bucket").cast(pa.string()).to_pylist()
    n = t.column("n_customers").cast(pa.int64()).to_pylist()
    rows = {"bucket": [], "order": [], "series": [], "purchases": [], "n_customers": []}
    for series in ("actual", "predicted"):
        values = t.column(series).cast(pa.float64()).to_pylist()
        for i, (b, v, c) in enumerate(zip(bucket, values, n)):
            rows["bucket"].append(b)
            rows["order"].append(i)
            rows["series"].append(series)
            rows["purchases"].append(v)
            rows["n_customers"].append(c)
    return pa.table({"bucket": pa.array(rows["bucket"], pa.string()), "order": pa.array(rows["order"], pa.int64()),
                     "series": pa.array(rows["series"], pa.string()),
                     "purchases": pa.array(rows["purchases"], pa.float64()),
                     "n_customers": pa.array(rows["n_customers"], pa.int64())})


def value_distribution(clv: pa.Table, column: str = "clv", *, per_decade: int = 10,
                       decades: int = 6) -> tuple[pa.Table, dict]:
    """The distribution of predicted value: customers and value per log-spaced bin.

    Positive values fall in bins ``[10**(i / per_decade), 10**((i + 1) / per_decade))``,
    over the ``decades`` decades below the largest value (a near-zero CLV, such as 1e-90
    for a customer long gone, would otherwise stretch the axis over dozens of empty
    decades).  Returns (bins, info): ``lo``, ``hi``, ``customers``, ``value`` (sum),
    ``customer_share`` and ``value_share`` (of all customers with a value), one row per
    non-empty bin; info has ``column``, ``customers`` (with a value), ``below`` and
    ``below_value`` (positive values under the first bin: how many, their sum),
    ``zero_or_less`` (values <= 0) and ``missing`` (nulls).
    """
    _require(clv, (column,), "distribution of predicted value",
             "give the output of rfmx clv -o, or rfmx score --clv")
    v, ok = _values(clv, column)
    v = v[ok]
    positive = v[v > 0]
    total_value = float(v.sum())
    info = {"column": column, "customers": int(len(v)), "below": 0, "below_value": 0.0,
            "zero_or_less": int((v <= 0).sum()), "missing": int((~ok).sum())}
    names = ("lo", "hi", "customers", "value", "customer_share", "value_share")
    if not len(positive):
        return pa.table({n: pa.array([], pa.int64() if n == "customers" else pa.float64()) for n in names}), info
    idx = np.floor(np.log10(positive) * per_decade).astype(np.int64)
    base = max(int(idx.min()), int(idx.max()) + 1 - decades * per_decade)
    shown = idx >= base
    info["below"] = int((~shown).sum())
    info["below_value"] = float(positive[~shown].sum())
    cnt = np.bincount(idx[shown] - base)
    val = np.bincount(idx[shown] - base, weights=positive[shown])
    keep = np.flatnonzero(cnt)
    lo = 10.0 ** ((keep + base) / per_decade)
    hi = 10.0 ** ((keep + base + 1) / per_decade)
    shares = val[keep] / total_value if total_value > 0 else [None] * len(keep)
    return pa.table({"lo": pa.array(lo, pa.float64()), "hi": pa.array(hi, pa.float64()),
                     "customers": pa.array(cnt[keep], pa.int64()), "value": pa.array(val[keep], pa.float64()),
                     "customer_share": pa.array(cnt[keep] / len(v), pa.float64()),
                     "value_share": pa.array(shares, pa.float64())}), info


# --- alerts ---------------------------------------------------------------------------------------

#: The columns an alerts table must have: one row per customer (and alert) to act on, and
#: the value at stake — as ``rfmx alerts`` writes them.
ALERT_COLUMNS = ("customer_id", "value_at_stake")


def alerts(table: pa.Table, top: int = 25) -> pa.Table:
    """The ``top`` rows of an alerts table (``rfmx alerts -o``) by ``value_at_stake``,
    highest first: ``label`` (the customer id, with the alert's name and the snapshot date
    when the table has ``alert`` and ``as_of_to`` columns, so that one customer's several
    alerts stay apart), ``customer_id`` (as text), ``value_at_stake`` and the table's other
    columns as text (at most 12, for tooltips)."""
    _require(table, ALERT_COLUMNS, "alerts")
    value, ok = _values(table, "value_at_stake")
    order = np.argsort(-np.where(ok, value, -np.inf), kind="stable")[:top]
    t = table.take(pa.array(order, pa.int64()))
    ids = t.column("customer_id").cast(pa.string()).to_pylist()
    parts = [ids]
    for name, width in (("alert", None), ("as_of_to", 10)):
        if name in t.column_names:
            parts.append([None if v is None else str(v)[:width] for v in t.column(name).cast(pa.string()).to_pylist()])
    labels = [" · ".join(p for p in row if p) for row in zip(*parts)]
    out = {"label": pa.array(labels, pa.string()), "customer_id": pa.array(ids, pa.string()),
           "value_at_stake": t.column("value_at_stake").cast(pa.float64())}
    for name in [c for c in t.column_names if c not in ALERT_COLUMNS][:12]:
        try:
            out[name] = t.column(name).cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return pa.table(out)


# --- the Ward tree --------------------------------------------------------------------------------

#: Leaves drawn of a dendrogram at most (the tree is drawn down to this many clusters, or to the cut's k if more).
DENDROGRAM_LEAVES = 30
ABOVE_CUT = "above the cut"


def dendrogram(tree, *, leaves: int = DENDROGRAM_LEAVES) -> tuple[pa.Table, pa.Table, dict]:
    """The lines of a Ward tree (``rfmx cluster --dendrogram-out``, a path or its dict) down
    to ``max(leaves, k)`` groups, as scipy's ``dendrogram(truncate_mode="lastp")`` draws it.

    Returns (links, tips, info).  ``links``: one row per line -- ``x``, ``y``, ``x2``,
    ``y2`` (x: positions 0..p-1 of the groups left to right; y: Ward heights) and
    ``cluster`` (the cut's cluster a line lies in, or ``above the cut``).  ``tips``: one row
    per group drawn at the bottom -- ``x``, ``cluster``, ``label`` (the cluster's label when
    the file has them), ``customers``, ``leaves`` (micro-clusters in it).  ``info``:
    ``n_clusters``, ``cut_y`` (where the cut line is drawn: between the last merge applied
    and the next, or at the distance cut at), ``groups`` (p) and ``leaves`` (all
    micro-clusters).  Size: O(p), never one row per micro-cluster beyond p.
    """
    from .hierarchy import cut_tree, read_dendrogram

    info = read_dendrogram(tree)
    Z, sizes, k = info["linkage"], info["leaf_sizes"], info["n_clusters"]
    m = len(sizes)
    p = min(m, max(int(leaves), k))
    if info["distance"] is not None:
        leaf_cluster = cut_tree(Z, distance=info["distance"])
    else:
        leaf_cluster = cut_tree(Z, k)
    names = [f"cluster {c}" for c in range(int(leaf_cluster.max()) + 1)]
    labels = info["labels"] if info["labels"] is not None and len(info["labels"]) == len(names) else None
    shown = m - p  # merges below the drawn groups
    # per node: customers, leaves, one leaf (for its cluster); groups = nodes made by the first `shown` merges or leaves
    weight = np.concatenate([sizes.astype(np.float64), Z[:, 3]]) if m > 1 else sizes.astype(np.float64)
    n_leaves = np.ones(2 * m - 1, dtype=np.int64)
    any_leaf = np.arange(2 * m - 1)
    for i, (a, b, _, _) in enumerate(Z):
        n_leaves[m + i] = n_leaves[int(a)] + n_leaves[int(b)]
        any_leaf[m + i] = any_leaf[int(a)]
    applied = m - k if info["distance"] is None else int(np.searchsorted(Z[:, 2], info["distance"], side="right"))
    x_of, y_of = {}, {}
    tips = {"x": [], "cluster": [], "label": [], "customers": [], "leaves": []}
    links = {"x": [], "y": [], "x2": [], "y2": [], "cluster": []}

    def cluster_of(node):
        return names[int(leaf_cluster[any_leaf[node]])]

    # left-to-right: a group's position is its rank among the groups
    stack = [2 * m - 2] if m > 1 else [0]
    order = []
    while stack:
        node = stack.pop()
        if node < m or node - m < shown:
            order.append(node)
        else:
            a, b = int(Z[node - m, 0]), int(Z[node - m, 1])
            stack += [b, a]
    for pos, node in enumerate(order):
        x_of[node], y_of[node] = float(pos), 0.0
        c = int(leaf_cluster[any_leaf[node]])
        tips["x"].append(float(pos))
        tips["cluster"].append(names[c])
        tips["label"].append(labels[c] if labels else names[c])
        tips["customers"].append(int(weight[node]))
        tips["leaves"].append(int(n_leaves[node]))
    for r in range(shown, m - 1):
        a, b, h = int(Z[r, 0]), int(Z[r, 1]), float(Z[r, 2])
        node = m + r
        x_of[node], y_of[node] = (x_of[a] + x_of[b]) / 2, h
        inside = r < applied
        for child in (a, b):  # the vertical line from the child up to this merge
            links["x"].append(x_of[child])
            links["y"].append(y_of[child])
            links["x2"].append(x_of[child])
            links["y2"].append(h)
            links["cluster"].append(cluster_of(child) if inside else ABOVE_CUT)
        links["x"].append(x_of[a])
        links["y"].append(h)
        links["x2"].append(x_of[b])
        links["y2"].append(h)
        links["cluster"].append(cluster_of(node) if inside else ABOVE_CUT)
    heights = Z[:, 2]
    if info["distance"] is not None:
        cut_y = float(info["distance"])
    elif applied < m - 1:
        low = float(heights[applied - 1]) if applied > 0 else 0.0
        cut_y = (low + float(heights[applied])) / 2
    else:
        cut_y = float(heights[-1]) if m > 1 else 0.0
    out_links = pa.table({"x": pa.array(links["x"], pa.float64()), "y": pa.array(links["y"], pa.float64()),
                          "x2": pa.array(links["x2"], pa.float64()), "y2": pa.array(links["y2"], pa.float64()),
                          "cluster": pa.array(links["cluster"], pa.string())})
    out_tips = pa.table({"x": pa.array(tips["x"], pa.float64()), "cluster": pa.array(tips["cluster"], pa.string()),
                         "label": pa.array(tips["label"], pa.string()),
                         "customers": pa.array(tips["customers"], pa.int64()),
                         "leaves": pa.array(tips["leaves"], pa.int64())})
    return out_links, out_tips, {"n_clusters": len(names), "cut_y": cut_y, "groups": p, "leaves": m}
