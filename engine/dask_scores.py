"""Population-wide steps over customer buckets: exact quantile edges, RFM code counts and ABC
thresholds reduced from small per-bucket summaries (:func:`rfmx.dask.score`).

A score depends on the whole population through a few numbers only: each dimension's
quantile edges (the values at the sorted positions :func:`rfmx.scores.rank_thresholds`
gives), the customers per RFM code (value tiers, metadata) and the two ABC revenue
thresholds.  Each is found exactly without any machine seeing every customer:

- **Edges** by a radix select over buckets: every bucket counts its members' sort keys
  (:func:`rfmx.scores.dimension_keys`, int64) in at most 4,096 equal bins of the range
  still in question; the counts are added up on a worker in bucket order, the client finds
  the bin holding the wanted position and asks again inside that bin, until the bin is one
  key wide.  Small integer ranges (recency, orders) take one round; money and float keys
  (average order value) at most six.
- **ABC thresholds** the same way over the positive revenues, with the revenue of each
  bin: walking the bins from the top, the first bin whose revenue takes the running sum to
  80 % (95 %) of the total holds the smallest revenue still in A (A or B), as
  :func:`rfmx.kernels.scores.abc_thresholds` finds it on one machine.
- **Code counts** (q³ numbers) added up over buckets once the edges are known.

Everything here runs on plain NumPy arrays and tables; the functions with a leading
``bucket_`` run inside a task on a worker, the others on the client.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import RfmxError
from .scores import DIMENSIONS, Population, code_counts, dimension_columns, dimension_keys, rank_thresholds
from .tables import money_column, numeric_column, summable

__all__ = ["ScoreSpec", "population", "bucket_score", "bucket_ranges", "bucket_histograms", "bucket_code_counts",
           "add_histograms", "add_code_counts", "HISTOGRAM_BITS"]

#: bins of one histogram round: 2**12 (32 KB of counts per bucket and question)
HISTOGRAM_BITS = 12
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class ScoreSpec:
    """The scoring options, resolved and checked once on the client (as :func:`rfmx.scores.score_table` does)."""

    bins: int
    monetary: str
    cuts: dict
    segments: object          # a SegmentMap or None
    weights: dict
    tiers: object

    @classmethod
    def resolve(cls, *, bins, ties, monetary, cuts, segments, weights, tiers) -> "ScoreSpec":
        from .scores import (AGGREGATE_FIELDS, DEFAULT_BINS, MONETARY, SCORE_FIELDS, TIES, check_bins,
                             check_feature_names, parse_cuts, parse_tiers, parse_weights)
        from .segments import SegmentMap

        if monetary not in MONETARY:
            raise RfmxError(f"monetary must be one of {', '.join(MONETARY)}, got {monetary!r}")
        if ties not in TIES:
            raise RfmxError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
        if ties == "first":
            raise RfmxError("ties='first' (--ties first) breaks ties by the row order of one machine's table, "
                            "which a run over customer buckets does not have; on Dask use ties='keep' (equal "
                            "values share a score)")
        smap = SegmentMap.resolve(segments) if segments is not None else None
        if bins is None:
            bins = smap.bins if smap is not None and smap.bins else DEFAULT_BINS
        q = check_bins(bins)
        if smap is not None:
            smap.check_bins(q)
            smap.check_fields(AGGREGATE_FIELDS)
        if weights is None and smap is not None and smap.weights is not None:
            weights = smap.weights
        if tiers is None and smap is not None and smap.tiers is not None:
            tiers = smap.tiers
        weights = parse_weights(weights)
        check_feature_names(weights, AGGREGATE_FIELDS)
        if not all(k in SCORE_FIELDS for k in weights):
            raise RfmxError("weights on raw columns rank each customer among all customers, which a Dask run "
                            "does not gather; on Dask weigh recency, frequency, monetary and rfm_score")
        parse_tiers(tiers)  # checked here; kept as given, so the metadata reads as one machine's
        return cls(q, monetary, parse_cuts(cuts, q), smap, weights, tiers)


# --- inside a task: one bucket --------------------------------------------------------------

def _revenue(table: pa.Table) -> np.ndarray:
    """Each customer's revenue as :func:`rfmx.concentration.abc_classes` reads it (int64 minor units)."""
    col = numeric_column(table, money_column(table)[0])
    revenue = summable(col.values if col.valid is None else np.where(col.valid, col.values, 0))
    if revenue.dtype.kind != "i":
        raise RfmxError("ABC classes over buckets need exact money (monetary_minor and its scale, as rfmx "
                        "aggregate writes them), not float totals")
    return revenue


def _keys(table: pa.Table, spec: ScoreSpec) -> dict:
    """Per quantity the members' sort keys (int64): the quantile-scored dimensions and ``abc``
    (positive revenues)."""
    columns, _ = dimension_columns(table, spec.monetary, spec.cuts)
    out = {}
    for dim in DIMENSIONS:
        _, values, member, _ = columns[dim]
        x, sign = dimension_keys(values, dim == "recency")
        out[dim] = x[member] * sign
    revenue = _revenue(table)
    out["abc"] = revenue[revenue > 0]
    return out


def bucket_ranges(table: pa.Table, spec: ScoreSpec) -> dict:
    """``{quantity: (members, lowest key, highest key, sum)}`` of one bucket, and its rows."""
    out = {"customers": table.num_rows}
    for name, keys in _keys(table, spec).items():
        if len(keys):
            out[name] = (len(keys), int(keys.min()), int(keys.max()), int(keys.sum()) if name == "abc" else 0)
        else:
            out[name] = (0, None, None, 0)
    return out


def bucket_histograms(table: pa.Table, spec: ScoreSpec, questions: list) -> list:
    """Counts (and for ``abc`` the revenue) of one bucket's keys per bin: ``questions`` are
    ``(quantity, lo, span, shift)`` — keys in ``[lo, lo + span]`` (as uint64 offsets from
    ``lo``), bin ``(key - lo) >> shift``."""
    keys = _keys(table, spec)
    out = []
    for name, lo, span, shift in questions:
        x = keys[name]
        off = x.view(np.uint64) - np.uint64(lo)
        inside = off <= np.uint64(span)
        bins = (off[inside] >> np.uint64(shift)).astype(np.intp)
        nb = (span >> shift) + 1
        counts = np.bincount(bins, minlength=nb).astype(np.int64)
        if name == "abc":
            sums = np.zeros(nb, dtype=np.int64)
            np.add.at(sums, bins, x[inside])   # exact: integer minor units
            out.append(np.stack([counts, sums]))
        else:
            out.append(counts)
    return out


def add_histograms(*parts: list) -> list:
    """Histograms of several buckets added up, in the order given."""
    total = [h.copy() for h in parts[0]]
    for part in parts[1:]:
        for t, h in zip(total, part):
            t += h
    return total


def add_code_counts(*parts: tuple) -> tuple:
    """``(customers, members)`` per RFM code of several buckets added up, in the order given."""
    counts, members = parts[0][0].copy(), parts[0][1].copy()
    for c, m in parts[1:]:
        counts += c
        members += m
    return counts, members


def bucket_code_counts(table: pa.Table, spec: ScoreSpec, edges: dict) -> tuple:
    return code_counts(table, spec.bins, monetary=spec.monetary, cuts=spec.cuts,
                       population=Population(0, edges))


def bucket_score(table: pa.Table, spec: ScoreSpec, population: Population) -> tuple:
    """One bucket scored inside the population: ``(table, its rfmx.scores metadata as a dict)``."""
    from .scores import score_info, score_table

    scored = score_table(table, bins=spec.bins, ties="keep", monetary=spec.monetary, cuts=spec.cuts,
                         segments=spec.segments, weights=spec.weights, tiers=spec.tiers, threads=1,
                         population=population)
    return scored, score_info(scored)


# --- on the client: the reductions ------------------------------------------------------------

class _Target:
    """One order statistic being narrowed down: the ``rank``-th smallest key of a quantity
    (``kind="rank"``) or an ABC threshold (``kind="abc"``: the smallest revenue whose run
    starts below ``percent`` % of the total, walking from the top)."""

    def __init__(self, quantity: str, lo: int, hi: int, *, rank: int = 0, percent: int = 0, total: int = 0):
        self.quantity, self.lo, self.hi = quantity, lo & _U64, hi & _U64
        self.rank, self.percent, self.total, self.above = rank, percent, total, 0
        self.value = None if lo != hi else lo

    def question(self) -> tuple:
        span = (self.hi - self.lo) & _U64
        shift = max(0, span.bit_length() - HISTOGRAM_BITS)
        return self.quantity, self.lo, span, shift

    def narrow(self, hist: np.ndarray) -> None:
        _, lo, span, shift = self.question()
        if self.quantity == "abc":
            sums = hist[1]
            b = len(sums) - 1
            while 100 * (self.above + int(sums[b])) < self.percent * self.total:
                self.above += int(sums[b])
                b -= 1
        else:
            cum, b = 0, 0
            while cum + int(hist[b]) <= self.rank:
                cum += int(hist[b])
                b += 1
            self.rank -= cum
        # offsets from lo are exact in uint64 arithmetic (keys are int64; lo the lowest asked)
        self.lo = (lo + (b << shift)) & _U64
        self.hi = (self.lo + min(span - (b << shift), (1 << shift) - 1)) & _U64
        if shift == 0 or self.lo == self.hi:
            self.value = self.lo - (1 << 64) if self.lo >= 1 << 63 else self.lo


def _select(client, tables: list, spec: ScoreSpec, targets: list, key: str) -> None:
    """Narrow every target down to its key: rounds of per-bucket histograms added up on a worker."""
    round_ = 0
    while True:
        open_ = [t for t in targets if t.value is None]
        if not open_:
            return
        questions = sorted({t.question() for t in open_})
        hists = [client.submit(bucket_histograms, t, spec, questions, key=f"{key}-h{round_}-{b}")
                 for b, t in enumerate(tables)]
        total = client.gather(client.submit(add_histograms, *hists, key=f"{key}-sum{round_}"))
        found = dict(zip(questions, total))
        for t in open_:
            t.narrow(found[t.question()])
        round_ += 1


def population(client, tables: list, spec: ScoreSpec, key: str) -> Population:
    """The :class:`~rfmx.scores.Population` of the finalized buckets ``tables`` (futures)."""
    ranges = client.gather([client.submit(bucket_ranges, t, spec, key=f"{key}-range-{b}")
                            for b, t in enumerate(tables)])
    customers = sum(r["customers"] for r in ranges)
    merged = {}
    for name in (*DIMENSIONS, "abc"):
        got = [r[name] for r in ranges if r[name][0]]
        merged[name] = (sum(g[0] for g in got), min((g[1] for g in got), default=0),
                        max((g[2] for g in got), default=0), sum(g[3] for g in got))
    targets: dict = {}
    for dim in DIMENSIONS:
        n, lo, hi, _ = merged[dim]
        if dim not in spec.cuts and n:
            targets[dim] = [_Target(dim, lo, hi, rank=int(r)) for r in rank_thresholds(n, spec.bins)]
    n, lo, hi, total = merged["abc"]
    if total > 0:
        from .concentration import ABC_PERCENTS

        targets["abc"] = [_Target("abc", lo, hi, percent=p, total=total) for p in ABC_PERCENTS]
    _select(client, tables, spec, [t for ts in targets.values() for t in ts], key)
    edges = {dim: (merged[dim][0], np.array([t.value for t in targets[dim]], dtype=np.int64)
                   if dim in targets else None) for dim in DIMENSIONS}
    # as the kernel: thresholds above every revenue when there is none
    abc = tuple(t.value for t in targets["abc"]) if "abc" in targets else (hi + 1, hi + 1)
    parts = [client.submit(bucket_code_counts, t, spec, edges, key=f"{key}-codes-{b}") for b, t in enumerate(tables)]
    counts, members = client.gather(client.submit(add_code_counts, *parts, key=f"{key}-codes"))
    return Population(customers, edges, counts, members, abc)

