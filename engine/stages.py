"""Lifecycle stages: where each customer stands in their own history, at every snapshot.

A stage is decided by a map of rules, first match wins — the rule engine of segment maps
(:class:`rfmx.segments.SegmentMap`), over *lifecycle features* instead of scores.  The
features of a customer at a snapshot come from the snapshot's aggregates, the customer's
own rhythm and two money windows that a timeline state keeps
(:meth:`rfmx.TimelineState.snapshots` with ``window=``), plus the customer's stage in the
previous snapshot:

=====================  ====================================================================
``recency_days``       days since the last order (as in the aggregate)
``tenure_days``        days since the first order
``n_orders``           orders so far
``monetary_total``     net money so far
``new_this_period``    1 when the first order falls in the latest period, else 0
``ordered_this_period`` 1 when the last order falls in the latest period, else 0
``typical_gap_days``   the customer's mean days between orders (first to last order over
                       ``n_orders - 1``); missing with one order
``overdue_ratio``      ``recency_days / typical_gap_days``: 2 means twice their usual gap
                       has passed since they last ordered
``window_spend``       net money of the last window (3 months, 13 weeks, 91 days or a quarter)
``earlier_window_avg`` the customer's average net money per window of the same length
                       before it, over their history up to it (missing with less than one
                       window of history before it)
``spend_change``       ``window_spend / earlier_window_avg - 1`` (missing when the average is
                       not positive): -0.5 is half their usual spend
``year_ago_spend``     net money of the same window one year earlier
``previous_stage``     the stage in the previous snapshot (missing for a customer not in it,
                       and in the first snapshot); rules name stages: ``previous_stage = "lost"``
=====================  ====================================================================

The default map (:func:`default_map_toml`, thresholds as keyword options)::

    new          first order in the latest period
    reactivated  previous stage lost, and an order in the latest period
    lost         no order for more than lost_days (365)
    declining    overdue: more than overdue (2) x their typical gap since the last order,
                 or window spend down by more than decline (50 %) against their average
    growing      window spend up by more than growth (25 %) against their average
    mature       tenure of at least mature_days (365) and mature_orders (4) orders or more
    developing   everyone else (few orders, recent)

A missing feature satisfies no condition, so a one-order customer is never overdue by
rhythm and a customer without a window of history neither grows nor declines by spend.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .errors import RfmxError
from .tables import group_codes, numeric_column

__all__ = ["lifecycle", "lifecycle_features", "lifecycle_map", "default_map_toml", "THRESHOLDS", "STAGES",
           "WINDOW_PERIODS", "FEATURES"]

#: the default map's thresholds (keyword options of :func:`lifecycle`)
THRESHOLDS = {"lost_days": 365, "overdue": 2.0, "decline": 0.5, "growth": 0.25, "mature_days": 365,
              "mature_orders": 4}
#: the default stages, in the order flows list them (a customer's path runs left to right)
STAGES = ("new", "developing", "growing", "mature", "declining", "lost", "reactivated")
#: periods in the spend window, per timeline period: about a quarter of a year
WINDOW_PERIODS = {"day": 91, "week": 13, "month": 3, "quarter": 1}
FEATURES = ("recency_days", "tenure_days", "n_orders", "monetary_total", "new_this_period", "ordered_this_period",
            "typical_gap_days", "overdue_ratio", "window_spend", "earlier_window_avg", "spend_change",
            "year_ago_spend", "previous_stage")


def default_map_toml(lost_days: float = THRESHOLDS["lost_days"], overdue: float = THRESHOLDS["overdue"],
                     decline: float = THRESHOLDS["decline"], growth: float = THRESHOLDS["growth"],
                     mature_days: float = THRESHOLDS["mature_days"],
                     mature_orders: float = THRESHOLDS["mature_orders"]) -> str:
    """The default lifecycle map as TOML, with the given thresholds: a starting point for
    a map of one's own (``rfmx timeline --lifecycle-map FILE``)."""
    for name, value in (("lost_days", lost_days), ("overdue", overdue), ("decline", decline), ("growth", growth),
                        ("mature_days", mature_days), ("mature_orders", mature_orders)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise RfmxError(f"lifecycle threshold {name} must be a number >= 0, got {value!r}")
    if decline > 1:
        raise RfmxError(f"lifecycle threshold decline is a share of the usual spend (0 to 1), got {decline!r}")
    return f"""\
# rfmx lifecycle stages: first match wins; features in docs/scores.md ("Lifecycle stages").
name = "lifecycle"
description = "rfmx default lifecycle stages"
default = "developing"
order = {json.dumps(list(STAGES))}
lapsed = ["lost"]

[[stage]]
name = "new"
new_this_period = 1

[[stage]]
name = "reactivated"
previous_stage = "lost"
ordered_this_period = 1

[[stage]]
name = "lost"
recency_days = {{ gt = {lost_days} }}

[[stage]]
name = "declining"
overdue_ratio = {{ gt = {overdue} }}

[[stage]]
name = "declining"
spend_change = {{ lt = {-decline} }}

[[stage]]
name = "growing"
spend_change = {{ gt = {growth} }}

[[stage]]
name = "mature"
tenure_days = {{ min = {mature_days} }}
n_orders = {{ min = {mature_orders} }}
"""


def lifecycle_map(spec=None, **thresholds):
    """The lifecycle map: the default one with ``thresholds`` (see :data:`THRESHOLDS`), or
    a TOML file (``[[stage]]`` rules over :data:`FEATURES`) or a :class:`SegmentMap`."""
    from .segments import SegmentMap

    unknown = [k for k in thresholds if k not in THRESHOLDS]
    if unknown:
        raise RfmxError(f"unknown lifecycle threshold '{unknown[0]}'; thresholds: {', '.join(THRESHOLDS)}")
    if spec is None:
        smap = SegmentMap.from_toml(default_map_toml(**thresholds), "lifecycle", table="stage",
                                    label_fields=("previous_stage",))
    elif thresholds:
        raise RfmxError("lifecycle thresholds apply to the default map; a map file sets its own")
    elif isinstance(spec, SegmentMap):
        smap = spec
    else:
        from .segments import read_toml

        _, text = read_toml(spec)
        smap = SegmentMap.from_toml(text, str(spec), table="stage", label_fields=("previous_stage",))
    smap.label({f: np.empty(0) for f in FEATURES})  # every rule names a feature: checked before any row is read
    return smap


def _meta_int(table: pa.Table, key: str) -> int:
    raw = (table.schema.metadata or {}).get(key.encode())
    if raw is None:
        raise RfmxError(f"the snapshot has no '{key}' metadata: lifecycle stages need the snapshots of a timeline "
                        f"state with a spend window (TimelineState.snapshots(window=...), rfmx.timeline)")
    return int(raw)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    col = numeric_column(table, name)
    v = col.values.astype(np.float64)
    if col.valid is not None:
        v[~col.valid] = np.nan
    return v


def lifecycle_features(table: pa.Table, previous_stage: np.ndarray | None = None, fields=FEATURES) -> dict:
    """The features ``fields`` (default: all of :data:`FEATURES`) for each row of a snapshot
    with spend windows, as float64 arrays (NaN: missing).  ``previous_stage``: each row's
    previous stage as an index into the map's stage names (NaN: none).  Only the asked
    fields are computed: a snapshot of millions of customers makes each one a pass."""
    for c in ("window_net_minor", "year_ago_net_minor", "recency_days", "tenure_days", "n_orders"):
        if c not in table.column_names:
            raise RfmxError(f"the snapshot has no '{c}' column: lifecycle stages need the snapshots of a timeline "
                            f"state with a spend window (TimelineState.snapshots(window=...), rfmx.timeline)")
    unit = float(10 ** _meta_int(table, "rfmx.amount_scale"))
    period_days = _meta_int(table, "rfmx.period_days")
    window_days = _meta_int(table, "rfmx.window_days")
    cache: dict = {}

    def get(name):
        if name not in cache:
            cache[name] = _FEATURE[name](get, table, unit, period_days, window_days, previous_stage)
        return cache[name]

    with np.errstate(divide="ignore", invalid="ignore"):
        return {name: get(name) for name in fields}


def _earlier_avg(get, window_days):
    # History before the window, in days: the tenure at the window's start.
    before = get("tenure_days") - window_days
    return np.where(before >= window_days, (get("monetary_total") - get("window_spend")) * window_days / before,
                    np.nan)


#: how each feature is computed: (get, table, unit, period_days, window_days, previous) -> float64 array
_FEATURE = {
    "recency_days": lambda get, t, *_: _floats(t, "recency_days"),
    "tenure_days": lambda get, t, *_: _floats(t, "tenure_days"),
    "n_orders": lambda get, t, *_: _floats(t, "n_orders"),
    "monetary_total": lambda get, t, unit, *_: _floats(t, "monetary_minor") / unit,
    # NaN (a customer with refunds only) compares False: neither new nor ordering this period
    "new_this_period": lambda get, t, unit, pd, *_: (get("tenure_days") <= pd).astype(np.float64),
    "ordered_this_period": lambda get, t, unit, pd, *_: (get("recency_days") <= pd).astype(np.float64),
    "typical_gap_days": lambda get, *_: np.where(get("n_orders") >= 2, (get("tenure_days") - get("recency_days"))
                                                 / (get("n_orders") - 1), np.nan),
    "overdue_ratio": lambda get, *_: np.where(get("typical_gap_days") > 0,
                                              get("recency_days") / get("typical_gap_days"), np.nan),
    "window_spend": lambda get, t, unit, *_: _floats(t, "window_net_minor") / unit,
    "earlier_window_avg": lambda get, t, unit, pd, wd, _: _earlier_avg(get, wd),
    "spend_change": lambda get, *_: np.where(get("earlier_window_avg") > 0,
                                             get("window_spend") / get("earlier_window_avg") - 1.0, np.nan),
    "year_ago_spend": lambda get, t, unit, *_: _floats(t, "year_ago_net_minor") / unit,
    "previous_stage": lambda get, t, unit, pd, wd, prev: np.full(t.num_rows, np.nan) if prev is None else prev,
}


def lifecycle(table: pa.Table, previous: pa.Table | None = None, *, earlier_rows=None, stages=None,
              **thresholds) -> pa.Table:
    """``table`` (a snapshot with spend windows, scored or not) with a ``lifecycle`` column
    (dictionary strings) after ``segment`` (or last).

    ``previous``: the previous snapshot with its ``lifecycle`` column (None for the first
    snapshot: nobody is then reactivated); customers are matched on ``customer_id``, or by
    ``earlier_rows`` (:func:`rfmx.migrations.rows_in_earlier`) for snapshots of one state.
    ``stages``: a lifecycle map (TOML path or :class:`~rfmx.segments.SegmentMap`); default:
    the built-in map with ``thresholds`` (:data:`THRESHOLDS`).  The map's coverage report
    (customers per rule) is in the ``rfmx.lifecycle`` metadata, as JSON.
    """
    smap = lifecycle_map(stages, **thresholds)
    names = smap.names()
    prev = None
    if previous is not None:
        from .migrations import earlier_rows_of

        if "lifecycle" not in previous.column_names:
            raise RfmxError("the previous snapshot has no 'lifecycle' column; give the previous snapshot as "
                            "lifecycle() returned it")
        rows = earlier_rows_of(previous, table, earlier_rows)
        codes, prev_names = group_codes(previous, "lifecycle")
        position = np.array([names.index(s) if s in names else -1 for s in prev_names] + [-1], dtype=np.float64)
        position[position < 0] = np.nan
        stage_of_prev = position[np.where(codes < 0, len(prev_names), codes)]
        prev = np.where(rows >= 0, stage_of_prev[np.maximum(rows, 0)], np.nan) if len(rows) else np.empty(0)
    seg, names, info = smap.label(lifecycle_features(table, prev, fields=sorted(smap.fields())))
    column = pa.DictionaryArray.from_arrays(pa.array(seg.astype(np.int32), mask=seg < 0), pa.array(names))
    at = table.column_names.index("segment") + 1 if "segment" in table.column_names else table.num_columns
    out = table.add_column(at, "lifecycle", column)
    meta = dict(out.schema.metadata or {})
    meta[b"rfmx.lifecycle"] = json.dumps({"map": info["map"], "order": smap.order, "rules": info["rules"],
                                          "unassigned": info["unassigned"]}).encode()
    return out.replace_schema_metadata(meta)
