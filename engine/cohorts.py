"""Acquisition cohorts: retention and revenue by periods since each customer's first order.

A pure function over a bucket table — one row per (customer, period) with the exact
per-period fields of the time-axis state (``TimelineState.buckets()``): ``customer_id``,
``period_start``, ``n_orders``, ``n_refunds``, ``gross_minor``, ``refunds_minor``,
``first_order``, ``last_order``.  Definitions are in ``docs/scores.md`` ("Migration and
cohorts").
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .calendar import WEEKDAYS
from .columns import MAX_AMOUNT_SCALE, US_PER_DAY
from .errors import RfmxError
from .tables import combined, readonly, summable

__all__ = ["cohort_table", "PERIODS", "BUCKET_COLUMNS"]

PERIODS = ("day", "week", "month", "quarter", "year")
#: The bucket table's columns (those the cohort table reads: customer_id, period_start,
#: n_orders, gross_minor, refunds_minor).
BUCKET_COLUMNS = ("customer_id", "period_start", "n_orders", "n_refunds", "gross_minor", "refunds_minor",
                  "first_order", "last_order")
_USED = ("customer_id", "period_start", "n_orders", "gross_minor", "refunds_minor")
_MONDAY_SHIFT = 3  # 1970-01-01 was a Thursday: (day + 3) // 7 counts Monday-to-Sunday weeks


def _week_shift(week_start: str) -> int:
    """``s`` such that ``(day + s) // 7`` counts weeks starting on ``week_start``."""
    return (_MONDAY_SHIFT - WEEKDAYS.index(week_start)) % 7


def _ints(table: pa.Table, name: str) -> np.ndarray:
    arr = combined(table.column(name))
    if not pa.types.is_integer(arr.type):
        raise RfmxError(f"bucket column '{name}' has type {arr.type}; expected integers")
    if arr.null_count:
        raise RfmxError(f"bucket column '{name}' has a null at row "
                        f"{int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])}")
    return np.asarray(arr.cast(pa.int64()))


def _local_days(arr: pa.Array) -> np.ndarray:
    """Calendar day numbers (days since 1970-01-01) of ``period_start`` in its own time zone."""
    t = arr.type
    if pa.types.is_date(t):
        return np.asarray(arr.cast(pa.date32()).view(pa.int32())).astype(np.int64)
    if not pa.types.is_timestamp(t):
        raise RfmxError(f"bucket column 'period_start' has type {t}; expected a timestamp")
    if t.tz is not None:
        arr = pc.local_timestamp(arr)  # the wall-clock reading: which calendar day it starts
    us = np.asarray(arr.cast(pa.timestamp("us", None), safe=False).view(pa.int64()))
    return np.floor_divide(us, US_PER_DAY)


def _ordinals(days: np.ndarray, period: str, shift: int) -> np.ndarray:
    """Period number of each day: consecutive periods have consecutive numbers."""
    if period == "day":
        return days
    if period == "week":
        return np.floor_divide(days + shift, 7)
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return {"month": months, "quarter": np.floor_divide(months, 3), "year": np.floor_divide(months, 12)}[period]


def _first_days(ordinals: np.ndarray, period: str, shift: int) -> np.ndarray:
    """The first calendar day (days since 1970-01-01) of each period number."""
    if period == "day":
        return ordinals
    if period == "week":
        return ordinals * 7 - shift
    months = ordinals * {"month": 1, "quarter": 3, "year": 12}[period]
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _period_starts(days: np.ndarray, t: pa.DataType) -> pa.Array:
    """Local midnights of ``days`` as the input's ``period_start`` type."""
    if pa.types.is_date(t):
        return pa.array(days.astype(np.int32), pa.date32()).cast(t)
    naive = pa.array(days * US_PER_DAY, pa.timestamp("us"))
    if t.tz is not None:
        # A midnight skipped by a clock change starts at the first instant after the gap.
        naive = pc.assume_timezone(naive, t.tz, ambiguous="earliest", nonexistent="latest")
    return naive.cast(t)


def _scale(buckets: pa.Table, amount_scale) -> int:
    if amount_scale is None:
        raw = (buckets.schema.metadata or {}).get(b"rfmx.amount_scale")
        amount_scale = int(raw) if raw else 2
    if isinstance(amount_scale, bool) or not isinstance(amount_scale, (int, np.integer)) \
            or not 0 <= amount_scale <= MAX_AMOUNT_SCALE:
        raise RfmxError(f"amount_scale must be an integer from 0 to {MAX_AMOUNT_SCALE}, got {amount_scale!r}")
    return int(amount_scale)


def cohort_table(buckets: pa.Table, *, period: str = "month", week_start: str = "monday",
                 amount_scale: int | None = None) -> pa.Table:
    """Retention and revenue of each acquisition cohort, period by period.

    ``buckets``: one row per (customer, period) with ``customer_id`` (any type),
    ``period_start`` (timestamp, the period's first instant; or a date), ``n_orders``,
    ``gross_minor`` and ``refunds_minor`` (int64 minor units; refunds <= 0, as
    ``refunds_total``) — the columns of :data:`BUCKET_COLUMNS`, the others are not read.
    A row with ``n_orders == 0`` (refunds only) does not make its customer active.
    ``period``: ``day``, ``week`` (from ``week_start``, Monday by default), ``month``,
    ``quarter`` or ``year``, in ``period_start``'s own time zone; buckets finer than
    ``period`` are combined.
    ``amount_scale``: decimals of the minor units (default: the table's
    ``rfmx.amount_scale`` metadata, else 2).

    A customer's *cohort* is the period of its first order (the first row with
    ``n_orders > 0``); customers with refunds only have none and are left out.  Returns
    one row per (cohort, period) from the cohort's period to the last period in the data
    — periods without activity included — ordered by cohort and period:

    ``cohort``, ``period_start`` (``period_start``'s type), ``period_index`` (int64,
    periods since the cohort's: 0, 1, ...), ``customers_in_cohort``,
    ``active_customers`` (customers of the cohort with an order in the period; int64),
    ``retention`` (active / cohort size), ``revenue`` (the cohort's net money in the
    period, refunds included; float64 units) and ``cumulative_revenue_per_customer``
    (the cohort's net money up to and including the period / cohort size).  Refunds in
    periods before a customer's cohort (refunds of orders older than the data) are not
    counted.
    """
    from .kernels.scores import group_sums

    if not isinstance(buckets, pa.Table):
        raise RfmxError(f"buckets must be a pyarrow.Table, got {type(buckets).__name__}")
    missing = [c for c in _USED if c not in buckets.column_names]
    if missing:
        raise RfmxError(f"the bucket table has no '{missing[0]}' column; cohorts need the columns "
                        f"{', '.join(BUCKET_COLUMNS)}")
    if period not in PERIODS:
        raise RfmxError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
    if week_start not in WEEKDAYS:
        raise RfmxError(f"week_start must be a weekday name ('monday' ... 'sunday'), got {week_start!r}")
    shift = _week_shift(week_start)
    unit = 10 ** _scale(buckets, amount_scale)
    start_col = combined(buckets.column("period_start"))
    if start_col.null_count:
        raise RfmxError("bucket column 'period_start' has nulls")
    ids = combined(buckets.column("customer_id"))
    if ids.null_count:
        raise RfmxError("bucket column 'customer_id' has nulls")
    n_orders = _ints(buckets, "n_orders")
    net = _ints(buckets, "gross_minor")
    refunds = _ints(buckets, "refunds_minor")
    if (refunds > 0).any():
        i = int(np.flatnonzero(refunds > 0)[0])
        raise RfmxError(f"bucket column 'refunds_minor' is positive ({refunds[i]}) at row {i}; refund money is "
                        f"negative (<= 0), as in refunds_total")
    net = summable(net + refunds)  # float64 only if int64 sums could overflow
    ordinal = _ordinals(_local_days(start_col), period, shift)

    out_type = start_col.type
    names = ("cohort", "period_start", "period_index", "customers_in_cohort", "active_customers", "retention",
             "revenue", "cumulative_revenue_per_customer")
    types = (out_type, out_type, pa.int64(), pa.int64(), pa.int64(), pa.float64(), pa.float64(), pa.float64())
    active = n_orders > 0
    if not active.any():
        return pa.table({n: pa.array([], t) for n, t in zip(names, types)})

    # Customers as dense codes; each one's cohort is its first active period (Arrow group-by).
    enc = (ids.dictionary_decode() if pa.types.is_dictionary(ids.type) else ids).dictionary_encode()
    cust = np.asarray(enc.indices.cast(pa.int64()))
    n_cust = len(enc.dictionary)
    firsts = pa.table({"c": cust[active], "o": ordinal[active]}).group_by("c").aggregate([("o", "min")])
    first = np.full(n_cust, np.iinfo(np.int64).max, dtype=np.int64)
    first[np.asarray(firsts["c"])] = np.asarray(firsts["o_min"])

    base = int(first[first != np.iinfo(np.int64).max].min())
    last = int(ordinal.max())
    n_periods = last - base + 1
    cohort_ords = np.unique(first[first != np.iinfo(np.int64).max])
    n_cohorts = len(cohort_ords)
    # cohort number of each customer (-1: no order); cell = cohort number * n_periods + period number
    cohort_of = np.full(n_cust, -1, dtype=np.int64)
    has = first != np.iinfo(np.int64).max
    cohort_of[has] = np.searchsorted(cohort_ords, first[has])
    sizes = np.bincount(cohort_of[has], minlength=n_cohorts)

    row_cohort = cohort_of[cust]
    counted = (row_cohort >= 0) & (ordinal >= first[cust])
    cell = np.where(counted, row_cohort * n_periods + (ordinal - base), -1)
    revenue = group_sums(readonly(net), readonly(cell), np.int64(n_cohorts * n_periods)).reshape(n_cohorts,
                                                                                               n_periods)
    # Active customers: distinct (customer, period) pairs with an order (several finer
    # buckets of one customer may fall in one period).
    pairs = pa.table({"c": cust[active], "o": ordinal[active]}).group_by(["c", "o"]).aggregate([])
    pc_, po = np.asarray(pairs["c"]), np.asarray(pairs["o"])
    actives = np.bincount(cohort_of[pc_] * n_periods + (po - base), minlength=n_cohorts * n_periods)
    actives = actives.reshape(n_cohorts, n_periods)

    # The triangle: cohort k spans periods cohort_ords[k] .. last.
    spans = last - cohort_ords + 1
    k = np.repeat(np.arange(n_cohorts), spans)
    index = np.arange(len(k)) - np.repeat(np.cumsum(spans) - spans, spans)
    col = cohort_ords[k] - base + index
    rev = revenue[k, col]
    # Running sums per cohort (exact in int64): the running total minus the total before the cohort.
    running = np.cumsum(rev)
    before = np.concatenate([np.zeros(1, running.dtype), running[np.cumsum(spans)[:-1] - 1]])
    cum = (running - np.repeat(before, spans)) / unit / sizes[k]
    size = sizes[k]
    act = actives[k, col]
    starts = _period_starts(_first_days(np.arange(base, last + 1), period, shift), out_type)
    return pa.table({
        "cohort": starts.take(pa.array(cohort_ords[k] - base)),
        "period_start": starts.take(pa.array(col)),
        "period_index": pa.array(index, pa.int64()),
        "customers_in_cohort": pa.array(size, pa.int64()),
        "active_customers": pa.array(act, pa.int64()),
        "retention": pa.array(act / size, pa.float64()),
        "revenue": pa.array(rev / unit, pa.float64()),
        "cumulative_revenue_per_customer": pa.array(cum, pa.float64()),
    }, schema=pa.schema([pa.field(n, t) for n, t in zip(names, types)]))
