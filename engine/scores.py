"""Quantile RFM scores, the RFM code and totals, the weighted value score and value tiers.

``score(source_or_table)`` is the one-call API: it aggregates an order source (or takes a
finalized per-customer table or an :class:`~rfmx.state.RFMState`, e.g. a loaded saved state), then adds
scores, segments, value score and tier and ABC class in one finalize-side step
(:func:`score_table`).  Definitions are in ``docs/scores.md``; in short:

- The *population* of a dimension is the customers with at least one order and a value;
  the others (refund-only customers) score 1 on R, F and M, value 0 and the lowest tier.
- Scores run 1..q, higher is better (recency is reversed: the most recent score highest).
- Sorted from worst to best, the k-th quantile edge sits at position
  ``J_k = floor((n-1)*k/q)`` (:func:`rank_thresholds`); a customer at position ``p`` scores
  ``1 + #{k : p > J_k}``.
- ``ties="keep"`` (default): ``p`` is the number of customers strictly worse, so equal
  values always share a score (the score of the first of their run).
- ``ties="first"``: ties broken by row order, which reproduces
  ``pd.qcut(x.rank(method="first"), q, labels=False) + 1`` exactly for F and M, and for R
  the tutorial's ``pd.qcut(recency.rank(method="first"), q, labels=[q, ..., 1])``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pyarrow as pa

from .errors import RfmxError
# The column helpers live in the neutral module ``tables``; their names stay importable here.
from .tables import Column as _Column, money_column, numeric_column as _column, readonly  # noqa: F401

__all__ = [
    "feature_percentiles",
    "member_mask",
    "tier_index",
    "Population",
    "code_counts",
    "dimension_columns",
    "dimension_keys",
    "score",
    "score_table",
    "quantile_scores",
    "parse_weights",
    "parse_tiers",
    "parse_cuts",
    "read_table",
    "score_info",
    "SCORE_COLUMNS",
    "AGGREGATE_FIELDS",
    "PROFIT_FIELDS",
    "DEFAULT_TIERS",
]

TIES = ("keep", "first")
RANK_WITHIN = ("group", "all")
MONETARY = ("total", "aov", "profit")
DEFAULT_BINS = 5
MAX_BINS = 100
RADIX_BITS = 16
# Numeric columns of the finalized table (RFMState.finalize): the raw aggregates that
# weights and segment rules may name.
AGGREGATE_FIELDS = ("recency_days", "tenure_days", "n_orders", "n_refunds", "monetary_total", "monetary_minor",
                    "avg_order_value", "gross_total", "refunds_total")
# With a cost column (rfmx.aggregate(cost=...)) the table also has these (rfmx.state.PROFIT_COLUMNS).
PROFIT_FIELDS = ("cost_total", "profit_total", "profit_minor", "margin_rate", "refund_rate", "refund_money_rate")
SCORE_FIELDS = ("r_score", "f_score", "m_score", "rfm_score")
SCORE_COLUMNS = ("r_score", "f_score", "m_score", "rfm_code", "rfm_score", "value_score",
                 "value_tier", "segment", "abc_class")
WEIGHT_ALIASES = {"recency": "r_score", "frequency": "f_score", "monetary": "m_score",
                  "r": "r_score", "f": "f_score", "m": "m_score", "rfm": "rfm_score"}
DEFAULT_WEIGHTS = {"r_score": 1.0, "f_score": 1.0, "m_score": 1.0}
DEFAULT_TIERS = (("high", 20), ("medium", 30), ("low", 50))
LOWER_IS_BETTER = ("recency_days",)
DIMENSIONS = ("recency", "frequency", "monetary")
_DIM_SCORE = {"recency": "r_score", "frequency": "f_score", "monetary": "m_score"}


# --- option parsing ----------------------------------------------------------------

def _pairs(spec: str, what: str) -> list[tuple[str, str]]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise RfmxError(f"{what}: cannot parse {part!r}; expected name=number, e.g. monetary=40,frequency=25")
        name, value = part.split("=", 1)
        out.append((name.strip(), value.strip()))
    if not out:
        raise RfmxError(f"{what}: empty; expected name=number pairs, e.g. monetary=40,frequency=25")
    return out


def _number(value, what: str) -> float:
    if isinstance(value, bool):
        raise RfmxError(f"{what}: {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RfmxError(f"{what}: {value!r} is not a number") from None
    if not np.isfinite(x):
        raise RfmxError(f"{what}: {value!r} is not a finite number")
    return x


def parse_weights(spec) -> dict[str, float]:
    """Weights as ``{feature: weight}`` from ``"monetary=40,frequency=25"``, a dict, or a
    TOML file path (its ``[weights]`` table).

    Feature names: ``recency``/``frequency``/``monetary`` (aliases of ``r_score``/
    ``f_score``/``m_score``), ``rfm_score``, or a numeric aggregate column.  Names are
    checked against the table later (:func:`score_table`); here only the syntax.
    """
    if spec is None:
        return dict(DEFAULT_WEIGHTS)
    if isinstance(spec, str) and spec.strip().lower().endswith(".toml"):
        from .segments import read_toml

        doc, _ = read_toml(spec)
        if "weights" not in doc:
            raise RfmxError(f"{spec}: no [weights] table")
        spec = doc["weights"]
        if not isinstance(spec, dict):
            raise RfmxError(f"{spec}: 'weights' must be a table of name = number")
    items = spec.items() if isinstance(spec, dict) else _pairs(str(spec), "weights")
    weights: dict[str, float] = {}
    for name, value in items:
        key = WEIGHT_ALIASES.get(str(name).lower(), str(name))
        w = _number(value, f"weights: '{name}'")
        if key in weights:
            raise RfmxError(f"weights: '{name}' given twice")
        weights[key] = w
    if all(w == 0 for w in weights.values()):
        raise RfmxError("weights: all weights are zero")
    return weights


def parse_tiers(spec) -> tuple[tuple[str, float], ...]:
    """Value tiers, best first, as ``(name, percent of customers)``; shares sum to 100.

    ``"high=20,medium=30,low=50"``, a dict (insertion order is best first), pairs as this
    function returns them (so parsing twice is harmless), or None for the default (top
    20 % high, next 30 % medium, the rest low).
    """
    if spec is None:
        return DEFAULT_TIERS
    if isinstance(spec, dict):
        items = spec.items()
    elif isinstance(spec, (tuple, list)):
        items = spec
    else:
        items = _pairs(str(spec), "tiers")
    tiers = []
    for name, value in items:
        share = _number(value, f"tiers: '{name}'")
        if share <= 0:
            raise RfmxError(f"tiers: '{name}' must have a share above 0, got {value}")
        tiers.append((str(name), share))
    if len({n for n, _ in tiers}) != len(tiers):
        raise RfmxError("tiers: a tier name is given twice")
    if len(tiers) < 2:
        raise RfmxError("tiers: give at least two tiers, e.g. high=20,low=80")
    total = sum(s for _, s in tiers)
    if abs(total - 100) > 1e-9:
        raise RfmxError(f"tiers: shares must sum to 100 (percent of customers), they sum to {total:g}")
    return tuple(tiers)


def parse_cuts(spec, bins: int) -> dict[str, list[float]]:
    """Fixed cut points per dimension: ``{"recency": [30, 90, 180, 365], ...}``.

    Accepts a dict or strings like ``"recency=30,90,180,365"`` (one or a list of them).
    Each list has ``bins - 1`` ascending values; bins are closed on the right, so with
    recency cuts 30, 90, ... a customer seen 30 days ago gets the top score.
    """
    if not spec:
        return {}
    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, dict):
        parsed: dict[str, list] = {}
        for item in spec:
            if "=" not in item:
                raise RfmxError(f"cuts: cannot parse {item!r}; expected DIMENSION=v1,v2,..., e.g. recency=30,90,180,365")
            name, values = item.split("=", 1)
            parsed[name.strip()] = [v for v in values.split(",") if v.strip()]
        spec = parsed
    cuts = {}
    for name, values in spec.items():
        dim = {"r": "recency", "f": "frequency", "m": "monetary", "recency_days": "recency",
               "n_orders": "frequency"}.get(str(name).lower(), str(name).lower())
        if dim not in DIMENSIONS:
            raise RfmxError(f"cuts: unknown dimension '{name}'; use recency, frequency or monetary")
        vals = [_number(v, f"cuts: {dim}") for v in values]
        if len(vals) != bins - 1:
            raise RfmxError(f"cuts: {dim} has {len(vals)} cut points but {bins} bins need {bins - 1}")
        if any(b <= a for a, b in zip(vals, vals[1:])):
            raise RfmxError(f"cuts: {dim} cut points must be strictly ascending, got {vals}")
        cuts[dim] = vals
    return cuts


def check_bins(bins) -> int:
    try:
        q = int(bins)
    except (TypeError, ValueError):
        raise RfmxError(f"bins must be an integer, got {bins!r}") from None
    if q != bins or not 2 <= q <= MAX_BINS:
        raise RfmxError(f"bins must be an integer between 2 and {MAX_BINS}, got {bins!r}")
    return q


# --- columns -----------------------------------------------------------------------

def _float_keys(values: np.ndarray, sign: float) -> np.ndarray:
    from .kernels.scores import float_order_keys

    keys = np.empty(len(values), dtype=np.int64)
    float_order_keys(readonly(values), float(sign), keys)
    return readonly(keys)


def _key_to_float(key: int) -> float:
    bits = np.int64(key)
    if bits < 0:
        bits ^= np.int64(0x7FFFFFFFFFFFFFFF)
    return float(np.array([bits], dtype=np.int64).view(np.float64)[0])


# --- scores ------------------------------------------------------------------------

@dataclass
class DimensionScores:
    """One dimension's scores and how they came about (for the metadata and the docs)."""

    dimension: str
    column: str
    scores: np.ndarray            # int8, 1..q
    population: int               # customers ranked (at least one order and a value)
    edges: list                   # quantile edges in the column's units (empty with cuts)
    cuts: list | None = None
    counts: list = field(default_factory=list)
    group_members: np.ndarray | None = None  # ranked within groups: the population of each group


def rank_thresholds(n: int, q: int) -> np.ndarray:
    """Sorted positions ``J_k`` (k = 1..q-1) of the quantile edges among ``n`` customers.

    A customer at position ``p`` (0-based, from worst) scores ``1 + #{k : p > J_k}``.
    ``J_k = floor((n - 1) * k / q)``, computed with pandas' floating point so that scoring
    rank positions reproduces ``pd.qcut(x.rank(method="first"), q)`` exactly: pandas takes
    the quantiles ``np.linspace(0, 1, q + 1)`` (nudged up where ``q * p != k``) of the ranks
    ``1..n`` by linear interpolation, and rank ``r`` is above edge ``e`` when ``r > e``.
    For a few ``(n, q)`` (e.g. n = 31, q = 6) that rounding puts an edge one position
    lower than exact arithmetic would.
    """
    return rank_thresholds_many(np.array([n], dtype=np.int64), q)[0]


def rank_thresholds_many(ns: np.ndarray, q: int) -> np.ndarray:
    """:func:`rank_thresholds` for each population size in ``ns``: shape ``(len(ns), q - 1)``
    (the same floating-point steps, element by element, so each row equals the scalar one)."""
    qs = np.linspace(0, 1, q + 1)
    np.putmask(qs, q * qs != np.arange(q + 1), np.nextafter(qs, 1))
    n = np.asarray(ns, dtype=np.int64)[:, None]
    vi = (n - 1) * qs[None, 1:-1]
    lo = np.floor(vi)
    gamma = vi - lo
    # numpy's _lerp between ranks lo + 1 and lo + 2 (a difference of exactly 1)
    edge = np.where(gamma >= 0.5, (lo + 2) - (1 - gamma), (lo + 1) + gamma)
    edge = np.where(vi >= n - 1, n.astype(np.float64), edge)
    return (np.floor(edge) - 1).astype(np.int64)


def _order_keys(values: np.ndarray, sign: int) -> np.ndarray:
    """int64 keys that sort as ``sign * values`` (floats through their order-preserving bits)."""
    if values.dtype.kind == "f":
        return _float_keys(values, float(sign))
    return np.ascontiguousarray(values, dtype=np.int64) * np.int64(sign)


def grouped_positions(values: np.ndarray, member: np.ndarray, groups, *, sign: int = 1,
                      by_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each member's position among its group's members ordered by ``sign * values``
    ascending (-1 for non-members), and the members per group.  ``by_row``: ties ordered by
    row; else equal values share the position of the first of their run."""
    from .kernels.groups import grouped_positions as positions

    pos = np.empty(len(values), dtype=np.int64)
    n_members = np.empty(groups.n_groups, dtype=np.int64)
    positions(groups.order, groups.starts, readonly(_order_keys(values, sign)),
              readonly(np.ascontiguousarray(member, dtype=np.bool_)), bool(by_row), pos, n_members)
    return pos, n_members


def grouped_quantile_scores(values: np.ndarray, member: np.ndarray, q: int, groups, *, ties: str = "keep",
                            lower_is_better: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantile_scores` within each group of ``groups`` (a :class:`rfmx.groups.GroupIndex`):
    every group's members are ranked among themselves, with the thresholds of their own
    count.  Returns ``(scores int8, members per group)``."""
    from .kernels.groups import scores_from_positions

    first = ties == "first"
    # ties="first" ranks recency as it is and reverses the labels (see quantile_scores)
    sign = -1 if lower_is_better and not first else 1
    pos, n_members = grouped_positions(values, member, groups, sign=sign, by_row=first)
    out = np.empty(len(values), dtype=np.int8)
    scores_from_positions(groups.codes, pos, member, rank_thresholds_many(n_members, q), n_members,
                          bool(first and lower_is_better), np.int64(q), out)
    return out, n_members


@dataclass(frozen=True)
class Population:
    """Population-wide quantities of a table scored in parts (customer hash buckets on a
    Dask cluster, :mod:`rfmx.dask`): with them :func:`score_table` scores one part exactly
    as it scores those customers inside the whole table.

    ``customers``: rows of all parts.  ``edges``: per dimension ``(population, edge keys)``
    — the members and the oriented sort keys (:func:`dimension_keys`) at the sorted
    positions :func:`rank_thresholds` gives (None for a dimension scored by fixed cuts).
    ``counts``/``member_counts``: customers (and members) per RFM code index, all parts
    (:func:`code_counts`).  ``abc``: the ABC thresholds ``(min_a, min_b)`` of the whole
    table's revenue.
    """

    customers: int
    edges: dict
    counts: np.ndarray | None = None
    member_counts: np.ndarray | None = None
    abc: tuple | None = None


def quantile_scores(values: np.ndarray, member: np.ndarray, q: int, *, ties: str = "keep",
                    lower_is_better: bool = False, population=None) -> tuple[np.ndarray, list, int]:
    """Exact quantile scores 1..q of ``values`` over the ``member`` customers.

    ``values``: int64 or float64 (NaN only where ``member`` is False).  Returns
    ``(scores int8, edges, n)``: ``edges[k-1]`` is the value at sorted position ``J_k``
    (:func:`rank_thresholds`; oriented: for ``lower_is_better`` the order is reversed).
    With ``ties="keep"`` a member scores ``1 + #{k : value better than edges[k-1]}`` (the
    score of the first member of its run of equal values); with ``ties="first"``
    ``1 + #{k : position > J_k}``, ties ordered by row: for ``lower_is_better`` positions
    count from the lowest value and the score is reversed (``q + 1 - bin``), as the
    tutorial's ``pd.qcut(x.rank(method="first"), q, labels=[q, ..., 1])``; edges are then
    listed from the worst value too, so ``edges[k-1]`` still separates scores k and k+1.
    Non-members score 1.  ``population``: ``(n, edge keys)`` of a population these values
    are a part of (:class:`Population`); the part then scores as inside the whole
    (``ties="keep"`` only).
    """
    if ties not in TIES:
        raise RfmxError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    if population is not None:
        if ties != "keep":
            raise RfmxError("ties='first' orders ties by row: a table scored in parts has no such order")
        return _oriented_scores(values, member, q, ties, lower_is_better, population)
    if ties == "first" and lower_is_better:
        # The tutorial recipe ranks recency as it is (ascending, ties by row order) and
        # reverses the labels: pd.qcut(recency.rank(method="first"), q, labels=[q..1]).
        # Ranking -recency instead would order ties the other way and put the edges at
        # positions counted from the other end.
        out, edges, n = _oriented_scores(values, member, q, "first", False)
        if n > 1:  # one customer scores 1, as everywhere (pandas refuses a population of one)
            np.subtract(q + 1, out, out=out, where=np.asarray(member, dtype=np.bool_))
        return out, edges[::-1], n
    return _oriented_scores(values, member, q, ties, lower_is_better)


def dimension_keys(values: np.ndarray, lower_is_better: bool = False) -> tuple[np.ndarray, np.int64]:
    """``(x, sign)``: ``sign * x`` (int64) orders ``values`` from worst to best — the keys
    quantile edges are selected on (floats by their order-preserving bit pattern)."""
    if values.dtype.kind == "f":
        return _float_keys(values, -1.0 if lower_is_better else 1.0), np.int64(1)
    return readonly(np.ascontiguousarray(values, dtype=np.int64)), np.int64(-1 if lower_is_better else 1)


def _raw_edges(edges, is_float: bool, sign, lower_is_better: bool) -> list:
    if is_float:
        return [_key_to_float(e) * (-1.0 if lower_is_better else 1.0) for e in edges]
    return [int(e) * int(sign) for e in edges]


def _oriented_scores(values, member, q: int, ties: str, lower_is_better: bool, population=None):
    """:func:`quantile_scores` on the oriented order (``-values`` when lower is better)."""
    from .kernels.scores import (key_range, scores_from_edges, scores_from_lut, scores_rank_first,
                                 scores_rank_first_lut, select_ranks)

    n_all = len(values)
    out = np.empty(n_all, dtype=np.int8)
    is_float = values.dtype.kind == "f"
    x, sign = dimension_keys(values, lower_is_better)
    member = readonly(np.ascontiguousarray(member, dtype=np.bool_))
    if population is not None:
        # Edges of the whole population: a value scores by the edges it passes, as in
        # the whole table (the lookup-table path below gives the same scores).
        n, edges = population
        if n == 0:
            out[:] = 1
            return out, [], 0
        edges = np.asarray(edges, dtype=np.int64)
        scores_from_edges(x, sign, member, edges, out)
        return out, _raw_edges(edges, is_float, sign, lower_is_better), int(n)
    n, lo, hi = key_range(x, sign, member)
    if n == 0:
        out[:] = 1
        return out, [], 0
    ranks = rank_thresholds(n, q)
    uranks = np.unique(ranks)
    uval = np.empty(len(uranks), dtype=np.int64)
    ubelow = np.empty(len(uranks), dtype=np.int64)
    select_ranks(x, sign, member, lo, hi, uranks, np.int64(RADIX_BITS), uval, ubelow)
    pos = np.searchsorted(uranks, ranks)
    edges, below = uval[pos], ubelow[pos]
    small = hi - lo < (1 << RADIX_BITS)
    if small:
        keys = np.arange(lo, hi + 1, dtype=np.int64)
        lut = (1 + np.searchsorted(edges, keys, side="left")).astype(np.int8)
    if ties == "first" and small:
        first_at = np.searchsorted(edges, edges, side="left")       # first index of each edge value
        lut[edges - lo] = -first_at                                # members on an edge: by position
        scores_rank_first_lut(x, sign, member, lo, lut, below, ranks, out)
    elif ties == "first":
        scores_rank_first(x, sign, member, edges, below, ranks, out)
    elif small:
        scores_from_lut(x, sign, member, lo, lut, out)
    else:
        scores_from_edges(x, sign, member, edges, out)
    return out, _raw_edges(edges, is_float, sign, lower_is_better), int(n)


def cut_scores(values: np.ndarray, member: np.ndarray, cuts, q: int, *, lower_is_better: bool = False) -> np.ndarray:
    """Scores from fixed cut points (``len(cuts) == q - 1``, ascending, bins closed on the right)."""
    from .kernels.scores import scores_from_cuts

    out = np.empty(len(values), dtype=np.int8)
    scores_from_cuts(readonly(np.ascontiguousarray(values)), readonly(np.ascontiguousarray(member, dtype=np.bool_)),
                     np.asarray(cuts, dtype=np.float64), bool(lower_is_better), np.int64(q), out)
    return out


def _member_mask(table: pa.Table) -> tuple[np.ndarray, _Column]:
    orders = _column(table, "n_orders")
    member = orders.values > 0
    if orders.valid is not None:
        member &= orders.valid
    return member, orders


def dimension_columns(table: pa.Table, monetary: str = "total", cuts=None) -> tuple[dict, np.ndarray]:
    """``({dimension: (column name, values, members, unit)}, members)``: what each
    dimension scores (members: customers with an order and a value in that column; unit:
    the divisor from the column's units to the currency's) and the customers with an order."""
    cuts = cuts or {}
    member, orders = _member_mask(table)
    if monetary == "total":
        m_name, unit = money_column(table) if "monetary" not in cuts else ("monetary_total", 1.0)
    elif monetary == "profit":
        m_name, unit = money_column(table, "profit") if "monetary" not in cuts else ("profit_total", 1.0)
    else:
        m_name, unit = "avg_order_value", 1.0
    out = {}
    for dim, name in (("recency", "recency_days"), ("frequency", "n_orders"), ("monetary", m_name)):
        col = orders if name == "n_orders" else _column(table, name)
        mem = member if col.valid is None else member & col.valid
        out[dim] = (name, col.values, mem, unit if dim == "monetary" else 1.0)
    return out, member


def _score_dimensions(table: pa.Table, q: int, ties: str, monetary: str, cuts: dict,
                      threads: int | None = None, groups=None,
                      population: Population | None = None) -> tuple[dict, np.ndarray]:
    columns, member = dimension_columns(table, monetary, cuts)

    def one(dim):
        name, values, mem, unit = columns[dim]
        lower = dim == "recency"
        if dim in cuts:
            s = cut_scores(values, mem, cuts[dim], q, lower_is_better=lower)
            n = int(mem.sum()) if population is None else int(population.edges[dim][0])
            return DimensionScores(dim, name, s, n, [], cuts=list(cuts[dim]))
        if groups is not None:  # edges differ per group: none are listed
            s, n_members = grouped_quantile_scores(values, mem, q, groups, ties=ties, lower_is_better=lower)
            return DimensionScores(dim, name, s, int(n_members.sum()), [], group_members=n_members)
        s, edges, n = quantile_scores(values, mem, q, ties=ties, lower_is_better=lower,
                                      population=population.edges[dim] if population is not None else None)
        if unit != 1.0:
            edges = [e / unit for e in edges]
        return DimensionScores(dim, name, s, n, edges)

    workers = min(len(DIMENSIONS), threads if threads is not None else (os.cpu_count() or 1))
    if workers > 1 and table.num_rows >= 1 << 16 and groups is None:  # grouped kernels run in parallel
        # The kernels release the GIL: the three dimensions run side by side.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, DIMENSIONS))
    else:
        results = [one(d) for d in DIMENSIONS]
    return {d.dimension: d for d in results}, member


def code_counts(table: pa.Table, q: int, *, monetary: str = "total", cuts=None,
                population: Population | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(customers, members)`` per RFM code index (``q**3`` int64 each) of ``table``'s
    scores (scored inside ``population`` when given): a part's share of the counts that
    value tiers, segment coverage and the score metadata read."""
    from .kernels.scores import rfm_code_index

    dims, member = _score_dimensions(table, q, "keep", monetary, parse_cuts(cuts, q), 1, population=population)
    n, n_codes = table.num_rows, q ** 3
    code = np.empty(n, dtype=np.int16 if n_codes < 32768 else np.int32)
    total = np.empty(n, dtype=np.int16)
    counts = np.zeros(n_codes, dtype=np.int64)
    member_counts = np.zeros(n_codes, dtype=np.int64)
    rfm_code_index(dims["recency"].scores, dims["frequency"].scores, dims["monetary"].scores, member, np.int64(q),
                   np.empty(0, np.int8), code, total, np.empty(0, np.int8), counts, member_counts)
    return counts, member_counts


def _code_strings(q: int, idx: np.ndarray) -> list[str]:
    r, rem = np.divmod(idx, q * q)
    f, m = np.divmod(rem, q)
    sep = "" if q <= 9 else "-"
    return [f"{a + 1}{sep}{b + 1}{sep}{c + 1}" for a, b, c in zip(r.tolist(), f.tolist(), m.tolist())]


def _dictionary(indices: np.ndarray, names: list[str], null_below_zero: bool = False) -> pa.DictionaryArray:
    itype = pa.int8() if len(names) < 128 else (pa.int16() if len(names) < 32768 else pa.int32())
    indices = indices.astype(itype.to_pandas_dtype(), copy=False)
    mask = indices < 0 if null_below_zero and len(indices) and indices.min() < 0 else None
    idx = pa.array(indices, type=itype, mask=mask)
    return pa.DictionaryArray.from_arrays(idx, pa.array(names, type=pa.string()))


# --- value score and tiers -----------------------------------------------------------

def _feature_norm(name: str, table: pa.Table, member: np.ndarray, groups=None) -> np.ndarray:
    """A raw aggregate as its percentile position among the members (of its group, with
    ``groups``), 0..1 (ties share)."""
    from .kernels.scores import key_range, positions_small

    col = _column(table, name)
    mem = readonly(member if col.valid is None else member & col.valid)
    lower = name in LOWER_IS_BETTER
    if groups is not None:
        pos, n_members = grouped_positions(col.values, mem, groups, sign=-1 if lower else 1)
        n_of = n_members[groups.codes]
        out = np.zeros(len(pos), dtype=np.float64)
        ok = mem & (n_of > 1)
        out[ok] = pos[ok] / (n_of[ok] - 1)
        return out
    if col.is_float:
        x, sign = _float_keys(col.values, -1.0 if lower else 1.0), np.int64(1)
    else:
        x, sign = col.values, np.int64(-1 if lower else 1)
    n, lo, hi = key_range(x, sign, mem)
    out = np.zeros(len(x), dtype=np.float64)
    if n <= 1:
        return out
    if hi - lo < (1 << 24):
        pos = positions_small(x, sign, mem, lo, hi)
        np.divide(pos, n - 1, out=out, where=mem)
    else:
        keys = x[mem] * sign
        out[mem] = np.searchsorted(np.sort(keys), keys, side="left") / (n - 1)
    return out


def feature_percentiles(table: pa.Table, name: str, member: np.ndarray, groups=None) -> np.ndarray:
    """Column ``name`` as each member's percentile position among the members (of its group,
    with ``groups``: :func:`rfmx.groups.group_index`), 0..1, ties sharing; 0 for others.
    Lower is better for recency (as in the value score)."""
    return _feature_norm(name, table, member, groups)


def member_mask(table: pa.Table) -> np.ndarray:
    """The customers with at least one order (bool per row): those scores rank."""
    return _member_mask(table)[0]


def tier_index(value: np.ndarray, member: np.ndarray, tiers, groups=None) -> np.ndarray:
    """Tier (0 = best, as :func:`parse_tiers` lists them) of each customer by ``value``'s
    position among the members (of its group, with ``groups``); non-members get the last."""
    tiers = parse_tiers(tiers)
    if groups is not None:
        return _grouped_tiers(value, member, tiers, groups)
    return _tiers(value, member, tiers)[0]


def check_feature_names(names, available) -> None:
    """Raise a one-line error for a weight feature that is neither a score nor a numeric column."""
    known = set(SCORE_FIELDS) | set(available)
    for name in names:
        if name not in known:
            raise RfmxError(f"weights: unknown feature '{name}'; use recency, frequency, monetary, rfm_score "
                            f"or one of the numeric columns: {', '.join(sorted(available))}")


def _score_norms(idx: np.ndarray, q: int) -> dict:
    """The score features normalized to 0..1 for code indices ``idx``."""
    r, rem = np.divmod(idx, q * q)
    f, m = np.divmod(rem, q)
    return {"r_score": r / (q - 1), "f_score": f / (q - 1), "m_score": m / (q - 1),
            "rfm_score": (r + f + m) / (3 * (q - 1))}


def _value_scores(table, weights: dict, q: int, code: np.ndarray, member: np.ndarray, numeric: list[str],
                  groups=None):
    """Value score 0..100 per customer (the weighted mean of the features' normalized values)
    and, when it depends on the scores only, its value per RFM code (else None).

    Customers without orders get 0.
    """
    from .kernels.scores import take_by_code

    check_feature_names(weights, numeric)
    total = sum(abs(w) for w in weights.values())
    if all(k in SCORE_FIELDS for k in weights):
        norm = _score_norms(np.arange(q ** 3), q)
        lut = np.zeros(q ** 3)
        for k, w in weights.items():
            lut += abs(w) * (norm[k] if w > 0 else 1.0 - norm[k])
        lut *= 100.0 / total
        value = np.empty(len(code))
        take_by_code(code, member, lut, 0.0, value)
        return value, lut
    value = np.zeros(len(code))
    norm = None
    for k, w in weights.items():
        if k in SCORE_FIELDS:
            norm = norm or _score_norms(code, q)
            v = norm[k]
        else:
            v = _feature_norm(k, table, member, groups)
        value += abs(w) * (v if w > 0 else 1.0 - v)
    value *= 100.0 / total
    value[~member] = 0.0
    return value, None


def _tier_ranks(tiers, n: int) -> np.ndarray:
    """Sorted-position boundaries ``floor(cum_share * (n - 1) / 100)``, bottom tier up."""
    shares = [Fraction(str(s)) for _, s in tiers][::-1]
    cum, ranks = Fraction(0), []
    for s in shares[:-1]:
        cum += s
        ranks.append(int((cum * (n - 1)) // 100))
    return np.array(ranks, dtype=np.int64)


def _grouped_tiers(value: np.ndarray, member: np.ndarray, tiers, groups) -> np.ndarray:
    """:func:`_tiers` within each group: positions among the group's members against the
    boundaries of the group's own member count."""
    from .kernels.groups import scores_from_positions

    t = len(tiers)
    pos, n_members = grouped_positions(value, member, groups)
    sizes, inverse = np.unique(n_members, return_inverse=True)
    bounds = np.array([_tier_ranks(tiers, int(n)) for n in sizes], dtype=np.int64).reshape(len(sizes), t - 1)
    level = np.empty(len(value), dtype=np.int8)
    scores_from_positions(groups.codes, pos, member, bounds[inverse.reshape(-1)], n_members, False, np.int64(t),
                          level)
    return (t - level).astype(np.int8)


def _tiers(value: np.ndarray, member: np.ndarray, tiers, *, code=None, lut=None, member_counts=None):
    """Tier index (0 = best) per customer, by position among the members.

    A member is above boundary k when more than ``cum_share_k * (n - 1)`` members have a
    strictly lower value, so equal values share a tier (the lower one).  Non-members get
    the lowest tier.  With ``lut`` (value per RFM code) the positions come from the
    members per code, without a pass over the customers.
    """
    from .kernels.scores import key_range, scores_from_edges, select_ranks, take_by_code

    t = len(tiers)
    if lut is not None:
        n = int(member_counts.sum())
        if n == 0:
            return np.full(len(value), t - 1, dtype=np.int8), []
        ranks = _tier_ranks(tiers, n)
        present = np.flatnonzero(member_counts)
        order = present[np.argsort(lut[present], kind="stable")]
        sorted_vals = lut[order]
        cum = np.concatenate([[0], np.cumsum(member_counts[order])])
        below = cum[np.searchsorted(sorted_vals, lut, side="left")]   # members strictly below each code's value
        level = 1 + (below[:, None] > ranks[None, :]).sum(axis=1)
        tier_of_code = (t - level).astype(np.int8)
        out = np.empty(len(value), dtype=np.int8)
        take_by_code(code, member, tier_of_code, np.int8(t - 1), out)
        edges = [float(sorted_vals[np.searchsorted(cum[1:], r, side="right")]) for r in ranks]
        return out, edges
    x = _float_keys(value, 1.0)
    member = readonly(member)
    n, lo, hi = key_range(x, np.int64(1), member)
    if n == 0:
        return np.full(len(value), t - 1, dtype=np.int8), []
    ranks = _tier_ranks(tiers, n)
    uranks = np.unique(ranks)
    uval = np.empty(len(uranks), dtype=np.int64)
    ubelow = np.empty(len(uranks), dtype=np.int64)
    select_ranks(x, np.int64(1), member, lo, hi, uranks, np.int64(RADIX_BITS), uval, ubelow)
    edges = uval[np.searchsorted(uranks, ranks)]
    level = np.empty(len(value), dtype=np.int8)
    scores_from_edges(x, np.int64(1), member, edges, level)  # 1 = lowest tier
    return (t - level).astype(np.int8), [_key_to_float(e) for e in edges]


# --- the scoring step ----------------------------------------------------------------

def _numeric_columns(table: pa.Table) -> list[str]:
    out = []
    for f in table.schema:
        t = f.type
        if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)) and f.name not in SCORE_COLUMNS:
            out.append(f.name)
    return out


def _string_columns(table: pa.Table) -> list[str]:
    from .attributes import is_string_type

    return [f.name for f in table.schema if is_string_type(f.type) and f.name not in SCORE_COLUMNS]


def score_table(table: pa.Table, *, bins: int | None = None, ties: str = "keep", monetary: str = "total",
                cuts=None, segments="rfm-grid", weights=None, tiers=None, threads: int | None = None,
                group=None, rank_within: str = "group", population: Population | None = None) -> pa.Table:
    """Add scores, code, totals, value score and tier, segment and ABC class to a finalized table.

    ``table``: the per-customer table of :func:`rfmx.aggregate` (at least ``recency_days``,
    ``n_orders`` and ``monetary_total`` or ``avg_order_value``).  ``bins``: q, scores run
    1..q (default: the segment map's ``bins``, else 5).  ``ties``: ``"keep"`` or
    ``"first"``.  ``monetary``: ``"total"``, ``"aov"`` or ``"profit"`` (gross profit: the table needs the
    profit columns of a cost column).  ``cuts``: fixed cut points per
    dimension (see :func:`parse_cuts`).  ``segments``: a built-in map name, a TOML path, a
    :class:`~rfmx.segments.SegmentMap` or None.  ``weights``/``tiers``: see
    :func:`parse_weights` / :func:`parse_tiers`.  ``threads``: how many dimensions are
    scored at once (None: up to the number of cores; the kernels release the GIL).

    Returns the input columns (earlier score columns replaced) plus ``r_score``,
    ``f_score``, ``m_score`` (int8), ``rfm_code`` (dictionary string), ``rfm_score``
    (int16, R + F + M; divide by 3 for the mean), ``value_score`` (float64, 0..100),
    ``value_tier``, ``segment`` and ``abc_class`` (dictionary strings).  The schema
    metadata ``rfmx.scores`` (JSON) records the options, edges, counts and the segment
    map's coverage report (:func:`score_info`).

    ``group``: group columns (default: those the table records, as a grouped
    :func:`rfmx.aggregate` leaves them); with ``rank_within="group"`` (default) scores,
    value score percentiles, tiers and ABC classes are computed among each group's
    customers, as if each group were scored alone; ``"all"`` ranks everyone together.
    Segments follow the scores.  See ``docs/groups.md``.

    ``population``: the population-wide quantities when ``table`` is one part of a larger
    table (:class:`Population`): the part is then scored exactly as inside the whole, and
    the metadata describes the whole, except the segment coverage, which counts the part.
    """
    from .concentration import abc_classes
    from .groups import check_group, group_columns_of, group_index
    from .kernels.scores import rfm_code_index
    from .segments import SegmentMap

    if monetary not in MONETARY:
        raise RfmxError(f"monetary must be one of {', '.join(MONETARY)}, got {monetary!r}")
    if ties not in TIES:
        raise RfmxError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    smap = SegmentMap.resolve(segments) if segments is not None else None
    if smap is not None and "profit_minor" in table.column_names:
        smap = smap.with_unprofitable()  # built-in maps: negative-profit customers made visible
    if bins is None:
        bins = smap.bins if smap is not None and smap.bins else DEFAULT_BINS
    q = check_bins(bins)
    if smap is not None:
        smap.check_bins(q)
    cuts = parse_cuts(cuts, q)
    if weights is None and smap is not None and smap.weights is not None:
        weights = smap.weights
    if tiers is None and smap is not None and smap.tiers is not None:
        tiers = smap.tiers
    weights = parse_weights(weights)
    tiers = parse_tiers(tiers)

    keep = [c for c in table.column_names if c not in SCORE_COLUMNS]
    if len(keep) != table.num_columns:
        table = table.select(keep)
    numeric = _numeric_columns(table)
    check_feature_names(weights, numeric)
    if smap is not None:
        smap.check_fields(numeric, _string_columns(table))

    if threads is not None and threads < 1:
        raise RfmxError(f"threads must be >= 1, got {threads}")
    if rank_within not in RANK_WITHIN:
        raise RfmxError(f"rank_within must be one of {', '.join(RANK_WITHIN)}, got {rank_within!r}")
    group = check_group(group) if group is not None else group_columns_of(table)
    groups = group_index(table, group) if group and rank_within == "group" else None
    if population is not None and groups is not None:
        raise RfmxError("a table scored in parts (population=) is ranked over everyone: no groups")
    if population is not None and not all(k in SCORE_FIELDS for k in weights):
        raise RfmxError("weights on raw columns rank each customer among all customers; a table scored in "
                        "parts takes weights on recency, frequency, monetary and rfm_score only")
    dims, member = _score_dimensions(table, q, ties, monetary, cuts or {}, threads, groups, population)
    r, f, m = dims["recency"].scores, dims["frequency"].scores, dims["monetary"].scores
    n = table.num_rows
    n_codes = q ** 3
    code = np.empty(n, dtype=np.int16 if n_codes < 32768 else np.int32)
    total = np.empty(n, dtype=np.int16)
    counts = np.zeros(n_codes, dtype=np.int64)
    member_counts = np.zeros(n_codes, dtype=np.int64)
    seg_lut = smap.code_segments(q) if smap is not None else None
    segment = np.empty(n if seg_lut is not None else 0, dtype=seg_lut.dtype if seg_lut is not None else np.int8)
    rfm_code_index(r, f, m, member, np.int64(q), seg_lut if seg_lut is not None else np.empty(0, np.int8), code,
                   total, segment, counts, member_counts)
    by_code = (counts if population is None else population.counts).reshape(q, q, q)
    for d, axes in (("recency", (1, 2)), ("frequency", (0, 2)), ("monetary", (0, 1))):
        dims[d].counts = by_code.sum(axis=axes).tolist()

    value, value_lut = _value_scores(table, weights, q, code, member, numeric, groups)
    if groups is None:
        tier_idx, tier_edges = _tiers(value, member, tiers, code=code, lut=value_lut,
                                      member_counts=member_counts if population is None else population.member_counts)
    else:
        tier_idx, tier_edges = _grouped_tiers(value, member, tiers, groups), []

    if n_codes <= 4096:
        rfm_code = _dictionary(code, _code_strings(q, np.arange(n_codes)))
    else:
        used = np.flatnonzero(counts)
        remap = np.full(n_codes, -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        rfm_code = _dictionary(remap[code], _code_strings(q, used))
    columns = {"r_score": pa.array(r), "f_score": pa.array(f), "m_score": pa.array(m), "rfm_code": rfm_code,
               "rfm_score": pa.array(total), "value_score": pa.array(value),
               "value_tier": _dictionary(tier_idx, [t for t, _ in tiers])}
    seg_info = None
    if smap is not None:
        seg_idx, names, seg_info = smap.assign(table, q=q, code=code, counts=counts, scores=(r, f, m),
                                               value=value, numeric=numeric, strings=_string_columns(table),
                                               segment=segment if seg_lut is not None else None)
        columns["segment"] = _dictionary(seg_idx, names, null_below_zero=True)
    columns["abc_class"] = _dictionary(abc_classes(table, groups=groups,
                                                   thresholds=population.abc if population else None), ["A", "B", "C"])

    for name, arr in columns.items():
        table = table.append_column(name, arr)
    info = {
        "bins": q, "ties": ties, "monetary": monetary, "population": dims["recency"].population,
        "customers": n if population is None else population.customers,
        "dimensions": {d.dimension: {"column": d.column, "population": d.population, "edges": d.edges,
                                     "cuts": d.cuts, "counts": d.counts} for d in dims.values()},
        "weights": weights, "tiers": [[t, s] for t, s in tiers], "tier_edges": tier_edges,
        "segments": seg_info,
    }
    if group:
        info["groups"] = _group_info(group, rank_within, groups, member, q)
    meta = dict(table.schema.metadata or {})
    meta[b"rfmx.scores"] = json.dumps(info).encode()
    return table.replace_schema_metadata(meta)


def _group_info(group, rank_within: str, groups, member: np.ndarray, q: int) -> dict:
    """The ``groups`` entry of the score metadata: how customers were ranked, and the groups
    with fewer ranked customers than bins (their scores cannot use every bin)."""
    info = {"columns": list(group), "rank_within": rank_within}
    if groups is not None:
        members = np.bincount(groups.codes[member], minlength=groups.n_groups)
        small = (members > 0) & (members < q)
        info.update(count=int(groups.n_groups), fewer_than_bins=int(small.sum()),
                    without_orders=int((members == 0).sum()))
    return info


def score_info(table: pa.Table) -> dict:
    """The ``rfmx.scores`` metadata of a scored table (options, edges, counts, coverage)."""
    raw = (table.schema.metadata or {}).get(b"rfmx.scores")
    if raw is None:
        raise RfmxError("the table has no rfmx score metadata; score it with rfmx.score first")
    return json.loads(raw)


# --- the one-call API ----------------------------------------------------------------

def _is_customer_table(obj) -> bool:
    return isinstance(obj, pa.Table) and "n_orders" in obj.column_names and "recency_days" in obj.column_names


def read_table(path) -> pa.Table:
    """Read a per-customer table file (Parquet, Arrow IPC/Feather or CSV, from the suffix)."""
    from pathlib import Path

    from .sinks import FORMATS

    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt not in ("parquet", "ipc", "csv"):
        raise RfmxError(f"{path}: unknown table format '{p.suffix}'; use .parquet, .arrow/.feather or .csv")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p)
        if fmt == "ipc":
            import pyarrow.feather as feather

            return feather.read_table(p)
        import pyarrow.csv as pcsv

        return pcsv.read_csv(p)
    except FileNotFoundError:
        raise RfmxError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise RfmxError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None


def score(source, *, bins: int | None = None, ties: str = "keep", monetary: str = "total", cuts=None,
          segments="rfm-grid", weights=None, tiers=None, as_of=None, threads: int | None = None,
          group=None, rank_within: str = "group", attributes=None, on: str = "customer_id",
          scorecard=None, influence: str | None = None, **aggregate_options) -> pa.Table:
    """Per-customer scores and segments of an order source or of a per-customer table.

    ``source``: anything :func:`rfmx.aggregate` reads (paths, Arrow tables of order
    lines, ...), an :class:`~rfmx.state.RFMState`, or an already finalized per-customer
    table (a ``pyarrow.Table`` or pandas/Polars frame with ``recency_days`` and
    ``n_orders``).  ``aggregate_options`` (``customer=``, ``time=``, ``amount=``,
    ``order_id=``, ``since=``, ...) go to :func:`rfmx.aggregate`.  Scoring options: see
    :func:`score_table`.  ``group``: aggregate per (group, customer) and rank within each
    group (``rank_within="all"``: over everyone), see ``docs/groups.md``.
    ``attributes``/``on``: customer attributes joined before scoring (see
    :func:`rfmx.aggregate`), so segment-map rules can read them (``country = "DE"``).
    ``scorecard``: ``"hvc"`` or a TOML file adds the scorecard's dimension scores, total and
    tier (:func:`rfmx.scorecard.add_scorecard`; ``influence`` names the influence column).

    >>> scores = rfmx.score("orders.parquet", bins=5, segments="rfm-grid")
    """
    from .groups import GroupedState
    from .state import RFMState

    attrs = None
    if attributes is not None:  # read and checked before the scan
        from .attributes import read_attributes

        attrs = read_attributes(attributes, on)
    if isinstance(source, (RFMState, GroupedState)):
        table = source.finalize(as_of)
    else:
        table = None
        if not isinstance(source, (pa.Table, str, list, tuple)) and hasattr(source, "__arrow_c_stream__"):
            candidate = pa.table(source)
            if _is_customer_table(candidate):
                table = candidate
            else:
                source = candidate
        elif _is_customer_table(source):
            table = source
        if table is None:
            from .api import aggregate

            table = aggregate(source, as_of=as_of, threads=threads, group=group, **aggregate_options)
    if attrs is not None:
        from .attributes import join_attributes

        table, _ = join_attributes(table, attrs)
    scored = score_table(table, bins=bins, ties=ties, monetary=monetary, cuts=cuts, segments=segments,
                         weights=weights, tiers=tiers, threads=threads, group=group, rank_within=rank_within)
    if scorecard is None:
        if influence is not None:
            raise RfmxError("influence= names a column of the scorecard: give scorecard= too")
        return scored
    from .scorecard import add_scorecard

    return add_scorecard(scored, scorecard, influence=influence, tiers=tiers, rank_within=rank_within)
