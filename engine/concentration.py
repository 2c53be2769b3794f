"""Value concentration: revenue shares of the top customers, Gini, ABC classes, segment summary.

Revenue here is each customer's net money (``monetary_minor``, exact minor units, when the
table has it and its scale; else ``monetary_total``), *clipped at zero* for the concentration metrics
(top shares, Gini, ABC): a customer whose refunds exceed their orders counts as 0, as in
a Lorenz curve.  The segment summary reports net revenue unclipped.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from .errors import RfmxError
from .tables import group_codes, money_column, numeric_column, readonly, summable

__all__ = ["concentration", "abc_classes", "abc_summary", "segment_summary", "with_segment_summary",
           "stored_segment_summary", "summary", "top_customers", "TOP_PERCENTS", "ABC_PERCENTS"]

TOP_PERCENTS = (1, 5, 10, 20, 50)
ABC_PERCENTS = (80, 95)   # A: customers making the first 80 % of revenue, B: the next 15 %, C: the rest
_MANTISSA_BITS = 10   # log buckets: 2**-10 of a value wide


def _revenue(table: pa.Table) -> tuple[np.ndarray, float]:
    """Revenue per customer clipped at 0 (int64 minor units or float64) and the unit divisor."""
    name, unit = money_column(table)
    col = numeric_column(table, name)
    v = np.maximum(col.values, 0)
    if col.valid is not None:
        v[~col.valid] = 0
    return summable(v), unit


def _sorted(revenue: np.ndarray) -> np.ndarray:
    from .kernels.scores import sort_nonneg

    return sort_nonneg(readonly(revenue), np.int64(_MANTISSA_BITS))


def abc_classes(table: pa.Table, *, percents=ABC_PERCENTS, groups=None, thresholds=None) -> np.ndarray:
    """ABC class per customer: 0 = A, 1 = B, 2 = C (int8).

    Customers sorted by revenue, highest first: A are those making the first 80 % of
    revenue (the customer crossing 80 % included), B the next 15 %, C the rest.  Equal
    revenues share a class (the better one); zero or negative revenue is always C.
    With ``groups`` (a :class:`rfmx.groups.GroupIndex`) within each group's revenue.
    ``thresholds``: ``(min_a, min_b)`` of a larger table this one is a part of (the
    smallest revenues in A and in A or B there): the part's customers are then classed as
    in the whole.
    """
    from .kernels.scores import abc_thresholds, classify_abc

    col = numeric_column(table, money_column(table)[0])
    revenue = readonly(summable(col.values if col.valid is None else np.where(col.valid, col.values, 0)))
    out = np.empty(len(revenue), dtype=np.int8)
    if len(revenue) == 0:
        return out
    if groups is not None and revenue.dtype.kind == "i":
        from .kernels.groups import grouped_abc_int

        grouped_abc_int(groups.order, groups.starts, revenue, np.int64(percents[0]), np.int64(percents[1]), out)
        return out
    if groups is not None:  # float revenue: the one-group kernel per group, for its exact float sums
        for g in range(groups.n_groups):
            rows = groups.order[groups.starts[g]:groups.starts[g + 1]]
            part = readonly(revenue[rows])
            min_a, min_b = abc_thresholds(part, np.int64(percents[0]), np.int64(percents[1]),
                                          np.int64(_MANTISSA_BITS))
            classes = np.empty(len(rows), dtype=np.int8)
            classify_abc(part, min_a, min_b, classes)
            out[rows] = classes
        return out
    if thresholds is not None:
        min_a, min_b = (revenue.dtype.type(t) for t in thresholds)
    else:
        min_a, min_b = abc_thresholds(revenue, np.int64(percents[0]), np.int64(percents[1]),
                                      np.int64(_MANTISSA_BITS))
    classify_abc(revenue, min_a, min_b, out)
    return out


def concentration(table: pa.Table) -> dict:
    """Revenue concentration of a per-customer table.

    Returns ``{"customers", "revenue", "top_shares": {percent: share}, "gini"}``: the
    share of (clipped) revenue made by the top ``ceil(p * n / 100)`` customers for p in
    1, 5, 10, 20, 50, and the Gini coefficient ``sum((2i - n + 1) x_i) / (n * sum x)``
    over revenues sorted ascending (0: all equal, -> 1: one customer has everything).
    Shares and Gini are None when there is no revenue.
    """
    from .kernels.scores import lorenz_sorted

    revenue, unit = _revenue(table)
    n = len(revenue)
    s = _sorted(revenue)
    if s.dtype.kind == "i":
        total = int(s.sum(dtype=np.int64))
    else:
        total = float(s.sum())
    tops = {}
    for p in TOP_PERCENTS:
        k = max(1, math.ceil(p * n / 100)) if n else 0
        top = s[n - k:].sum() if k else 0
        tops[p] = (int(top) / total if s.dtype.kind == "i" else float(top) / total) if total > 0 else None
    gini = None
    if total > 0:
        tot, weighted = lorenz_sorted(s)
        gini = weighted / (n * tot)
    return {"customers": n, "revenue": total / unit, "top_shares": tops, "gini": gini}


def _grouped_stats(table: pa.Table, column: str, group: np.ndarray, n_groups: int, scale: float = 1.0):
    """Per-group (mean, median) of a numeric column; nulls skipped; None for empty groups."""
    from .kernels.scores import group_medians
    from .scores import RADIX_BITS, _float_keys, _key_to_float

    col = numeric_column(table, column)
    valid = col.valid if col.valid is not None else np.ones(len(col.values), dtype=np.bool_)
    g = np.where(valid, group, -1)
    counts = np.bincount(g + 1, minlength=n_groups + 1)[1:]
    sums = np.bincount(g + 1, weights=np.where(valid, col.values, 0), minlength=n_groups + 1)[1:]
    keys = _float_keys(col.values, 1.0) if col.is_float else col.values
    lower, upper, _ = group_medians(readonly(keys), readonly(valid), readonly(group.astype(np.int64)),
                                    np.int64(n_groups), np.int64(RADIX_BITS))
    means, medians = [], []
    for k in range(n_groups):
        if counts[k] == 0:
            means.append(None)
            medians.append(None)
            continue
        means.append(sums[k] / counts[k] / scale)
        if col.is_float:
            medians.append((_key_to_float(lower[k]) + _key_to_float(upper[k])) / 2 / scale)
        else:
            medians.append((int(lower[k]) + int(upper[k])) / 2 / scale)
    return means, medians


#: schema metadata key of a scored table's own segment summary (:func:`with_segment_summary`)
SUMMARY_KEY = b"rfmx.segment_summary"


def _fingerprint(table: pa.Table, by: str) -> dict:
    """What a stored summary was computed from: rows, customers per label, money and
    orders in total — a table edited since (rows dropped, relabelled) no longer matches."""
    group, names = group_codes(table, by)
    counts = np.bincount(group + 1, minlength=len(names) + 1)
    money_col, _ = money_column(table)
    money = numeric_column(table, money_col)
    orders = numeric_column(table, "n_orders") if "n_orders" in table.column_names else None
    total = lambda c: None if c is None else repr(  # noqa: E731
        c.values[c.valid].sum() if c.valid is not None else c.values.sum())
    return {"rows": table.num_rows, "labels": dict(zip(["(null)"] + names, counts.tolist())),
            "money": [money_col, total(money)], "orders": total(orders)}


def with_segment_summary(table: pa.Table, by: str = "segment") -> tuple[pa.Table, pa.Table]:
    """``(table with its segment summary in its metadata, the summary)``: ``rfmx score``
    prints the summary anyway, and a report over the written file then reads it instead
    of computing it again (:func:`stored_segment_summary`)."""
    import json

    summary_table = segment_summary(table, by)
    meta = dict(table.schema.metadata or {})
    meta[SUMMARY_KEY] = json.dumps({"by": by, "of": _fingerprint(table, by), "rows": summary_table.to_pylist()})
    return table.replace_schema_metadata(meta), summary_table


def stored_segment_summary(table: pa.Table, by: str = "segment") -> pa.Table | None:
    """The summary :func:`with_segment_summary` stored with ``table``, when it is still the
    table's own (same rows, labels, money and order totals), else None."""
    import json

    raw = (table.schema.metadata or {}).get(SUMMARY_KEY)
    if raw is None or by not in table.column_names:
        return None
    try:
        stored = json.loads(raw)
        if stored.get("by") != by or stored.get("of") != _fingerprint(table, by):
            return None
        like = segment_summary(table.slice(0, 0), by).schema  # the columns and types of a summary
        return pa.Table.from_pylist(stored["rows"], schema=like)
    except (ValueError, TypeError, KeyError, pa.ArrowException, RfmxError):
        return None


def segment_summary(table: pa.Table, by: str = "segment") -> pa.Table:
    """One row per segment: customers, shares, net revenue, mean and median R/F/M, mean scores.

    Columns: ``segment``, ``customers``, ``customer_share``, ``revenue``,
    ``revenue_share`` (of net revenue; None if it is not positive), ``recency_mean``,
    ``recency_median`` (days; refund-only customers have none), ``orders_mean``,
    ``orders_median``, ``monetary_mean``, ``monetary_median`` (net money per customer),
    ``r_score_mean``, ``f_score_mean``, ``m_score_mean``.  Segments are listed in the map's
    order (customers without a segment last, as ``(none)``).
    """
    if by not in table.column_names:
        raise RfmxError(f"the table has no '{by}' column; score it first (rfmx score)")
    group, names = group_codes(table, by)
    if (group < 0).any():
        group = np.where(group < 0, len(names), group)
        names = names + ["(none)"]
    k = len(names)
    n = table.num_rows
    counts = np.bincount(group, minlength=k)
    money_col, money_scale = money_column(table)

    money = numeric_column(table, money_col)
    from .kernels.scores import group_sums

    mvals = summable(np.where(money.valid, money.values, 0) if money.valid is not None else money.values)
    rev = group_sums(readonly(mvals), readonly(group), np.int64(k))
    exact = rev.dtype.kind == "i"
    revenue = [(int(r) if exact else float(r)) / money_scale for r in rev]
    total = (sum(int(r) for r in rev) if exact else float(rev.sum())) / money_scale
    data = {
        "segment": names,
        "customers": counts.tolist(),
        "customer_share": [c / n if n else None for c in counts.tolist()],
        "revenue": revenue,
        "revenue_share": [r / total if total > 0 else None for r in revenue],
    }
    for label, column, sc in (("recency", "recency_days", 1.0), ("orders", "n_orders", 1.0),
                              ("monetary", money_col, money_scale)):
        means, medians = _grouped_stats(table, column, group, k, sc)
        data[f"{label}_mean"] = means
        data[f"{label}_median"] = medians
    for s in ("r_score", "f_score", "m_score"):
        if s in table.column_names:
            col = numeric_column(table, s)
            sums = np.bincount(group, weights=col.values, minlength=k)
            data[f"{s}_mean"] = [sums[i] / counts[i] if counts[i] else None for i in range(k)]
    return _typed(data)


def _typed(data: dict) -> pa.Table:
    """A table whose columns keep their types when every value is null (empty input)."""
    types = {"segment": pa.string(), "class": pa.string(), "customers": pa.int64()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.float64())) for k, v in data.items()})


def abc_summary(table: pa.Table) -> pa.Table:
    """One row per ABC class: customers, customer share, revenue (clipped), revenue share."""
    revenue, unit = _revenue(table)
    if "abc_class" in table.column_names:
        cls, names = group_codes(table, "abc_class")
        remap = np.array([("A", "B", "C").index(c) if c in ("A", "B", "C") else 2 for c in names] + [2])
        cls = remap[np.where(cls < 0, len(names), cls)]
    else:
        cls = abc_classes(table)
    n = len(revenue)
    counts = np.bincount(cls, minlength=3)
    from .kernels.scores import group_sums

    cast = int if revenue.dtype.kind == "i" else float
    sums = [cast(v) for v in group_sums(readonly(revenue), readonly(cls.astype(np.int64)), np.int64(3))]
    total = sum(sums)
    return _typed({
        "class": ["A", "B", "C"],
        "customers": counts.tolist(),
        "customer_share": [c / n if n else None for c in counts.tolist()],
        "revenue": [s / unit for s in sums],
        "revenue_share": [s / total if total > 0 else None for s in sums],
    })


def summary(table: pa.Table) -> dict:
    """Everything ``rfmx summary`` prints: ``{"concentration": dict, "abc": Table, "segments": Table}``."""
    return {"concentration": concentration(table), "abc": abc_summary(table),
            "segments": segment_summary(table) if "segment" in table.column_names else None}


def grouped_summary(table: pa.Table, by, *, top_groups: int | None = None) -> list[dict]:
    """:func:`summary` for each group of ``table`` by the column(s) ``by``, largest first.

    Returns one dict per group: ``group`` (``{column: value}``), ``customers``, ``revenue``
    (net, the money column's units) and the keys of :func:`summary` computed over that
    group's customers alone.  Groups are sorted by net revenue, highest first (equal
    revenue: by first appearance in the table); ``top_groups`` keeps the first N.  Rows
    with a null in a ``by`` column form one group whose value there is None (customers
    without attributes, in a breakdown by a joined attribute).
    """
    from .groups import group_index
    from .kernels.scores import group_sums

    if top_groups is not None and top_groups < 1:
        raise RfmxError(f"top_groups must be >= 1, got {top_groups}")
    groups = group_index(table, by, nulls="group")  # e.g. customers without an attribute: a group of their own
    money_col, money_scale = money_column(table)
    money = numeric_column(table, money_col)
    values = summable(np.where(money.valid, money.values, 0) if money.valid is not None else money.values)
    revenue = group_sums(readonly(values), readonly(groups.codes), np.int64(groups.n_groups))
    ranked = np.lexsort((np.arange(groups.n_groups), -revenue.astype(np.float64)))
    if revenue.dtype.kind == "i":  # exact order for integer money (the float key only breaks ties)
        ranked = np.array(sorted(range(groups.n_groups), key=lambda g: (-int(revenue[g]), g)), dtype=np.int64)
    if top_groups is not None:
        ranked = ranked[:top_groups]
    names = [a.to_pylist() for a in groups.values()]
    out = []
    for g in ranked.tolist():
        rows = groups.order[groups.starts[g]:groups.starts[g + 1]]
        part = table.take(pa.array(rows))
        total = (int(revenue[g]) if revenue.dtype.kind == "i" else float(revenue[g])) / money_scale
        entry = {"group": {c: names[j][g] for j, c in enumerate(groups.columns)}, "customers": len(rows),
                 "revenue": total}
        entry.update(summary(part))
        out.append(entry)
    return out


#: the columns of :func:`top_customers`, those a scored table has
TOP_COLUMNS = ("customer_id", "segment", "value_tier", "monetary_total", "n_orders", "recency_days")


def top_customers(table: pa.Table, n: int) -> pa.Table:
    """The ``n`` most valuable customers of a per-customer table, by net money
    (``monetary_minor``, exact; equal money keeps the table's order), with their segment,
    value tier, money, orders and recency (the columns of :data:`TOP_COLUMNS` it has)."""
    if n < 1:
        raise RfmxError(f"top: the number of customers must be >= 1, got {n}")
    key = "monetary_minor" if "monetary_minor" in table.column_names else "monetary_total"
    if key not in table.column_names:
        raise RfmxError(f"the table has no money column (monetary_minor or monetary_total); "
                        f"columns: {', '.join(table.column_names)}")
    import pyarrow.compute as pc

    # Arrow's sort is stable: customers with equal money keep the table's order
    order = pc.array_sort_indices(table.column(key), order="descending", null_placement="at_end")
    picked = table.take(order.slice(0, n))
    return picked.select([c for c in TOP_COLUMNS if c in table.column_names])
