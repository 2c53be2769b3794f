"""Slow, obviously correct references for scores, segments, value scores and concentration.

Plain Python over lists (pandas only where the reference *is* pandas).  Each function
states the definition it implements; the rfmx kernels must agree exactly.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def oriented(values, lower_is_better: bool):
    return [-v if lower_is_better else v for v in values]


def edge_positions(n: int, q: int) -> list[int]:
    """Sorted positions of the q-1 quantile edges, taken from pandas itself: the bins of
    pd.qcut over the ranks 1..n; rank r is above bin edge e when r > e, i.e. position
    p = r - 1 is above when p > floor(e) - 1.  (Exact arithmetic: floor((n-1)*k/q).)"""
    import pandas as pd

    if n < 2:
        return [0] * (q - 1)
    _, bins = pd.qcut(pd.Series(range(1, n + 1)), q, retbins=True, labels=False)
    return [math.floor(e) - 1 for e in bins[1:-1]]


def keep_scores_by_edges(values, member, q: int, lower_is_better: bool = False) -> list[int]:
    """Tie-keeping scores from brute-force edges: sort the population, take the value at
    each edge position as edge k, score = 1 + number of edges strictly below the value."""
    vals = oriented(values, lower_is_better)
    pop = sorted(v for v, m in zip(vals, member) if m)
    n = len(pop)
    edges = [pop[j] for j in edge_positions(n, q)] if n else []
    return [1 + sum(v > e for e in edges) if m else 1 for v, m in zip(vals, member)]


def keep_scores_by_count(values, member, q: int, lower_is_better: bool = False) -> list[int]:
    """The same from the definition: L = members strictly worse; score = 1 + #{k : L > J_k},
    i.e. the score the first member of a run of equal values gets when ranking by row."""
    vals = oriented(values, lower_is_better)
    pop = [v for v, m in zip(vals, member) if m]
    positions = edge_positions(len(pop), q)
    out = []
    for v, m in zip(vals, member):
        if not m:
            out.append(1)
            continue
        below = sum(u < v for u in pop)
        out.append(1 + sum(below > j for j in positions))
    return out


def pandas_first_scores(values, member, q: int, lower_is_better: bool = False) -> list[int]:
    """The tutorial recipe on the population, verbatim: for frequency and money
    ``pd.qcut(x.rank(method="first"), q, labels=False) + 1``; for recency (lower is better)
    ``pd.qcut(recency.rank(method="first"), q, labels=[q, ..., 1])`` — ranked as it is,
    ties by row order, labels reversed."""
    import pandas as pd

    pop = pd.Series([v for v, m in zip(values, member) if m])  # int64 stays exact
    out = [1] * len(values)
    if len(pop) < 2:
        return out  # pandas refuses (duplicate edges); rfmx defines it as 1
    ranks = pop.rank(method="first")
    if lower_is_better:
        scores = pd.qcut(ranks, q, labels=list(range(q, 0, -1))).astype(int).tolist()
    else:
        scores = (pd.qcut(ranks, q, labels=False) + 1).tolist()
    it = iter(scores)
    return [int(next(it)) if m else 1 for m in member]


def cut_scores(values, member, cuts, q: int, lower_is_better: bool = False) -> list[int]:
    """b = number of cuts strictly below the value (bins closed on the right); 1+b or q-b."""
    out = []
    for v, m in zip(values, member):
        if not m:
            out.append(1)
            continue
        b = sum(v > c for c in cuts)
        out.append(q - b if lower_is_better else 1 + b)
    return out


def rule_matches(rule: dict, row: dict, q: int) -> bool:
    """One [[segment]] table (as parsed from TOML) against one customer's fields."""
    for key, cond in rule.items():
        if key in ("name", "description"):
            continue
        if key == "rfm_code":
            codes = cond if isinstance(cond, list) else [cond]
            sep = "" if q <= 9 else "-"
            if f"{row['r_score']}{sep}{row['f_score']}{sep}{row['m_score']}" not in codes:
                return False
            continue
        v = row[key]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return False
        if isinstance(cond, dict):
            if "min" in cond and not v >= cond["min"]:
                return False
            if "max" in cond and not v <= cond["max"]:
                return False
            if "gt" in cond and not v > cond["gt"]:
                return False
            if "lt" in cond and not v < cond["lt"]:
                return False
        elif isinstance(cond, list):
            if v not in cond:
                return False
        elif v != cond:
            return False
    return True


def first_match(rules: list[dict], row: dict, q: int, default=None):
    for rule in rules:
        if rule_matches(rule, row, q):
            return rule["name"]
    return default


def value_scores(norms: dict, weights: dict, member) -> list[float]:
    """100 * sum(|w| * (x if w > 0 else 1 - x)) / sum(|w|); 0 for non-members."""
    total = sum(abs(w) for w in weights.values())
    out = []
    for i, m in enumerate(member):
        if not m:
            out.append(0.0)
            continue
        s = sum(abs(w) * (norms[k][i] if w > 0 else 1 - norms[k][i]) for k, w in weights.items())
        out.append(100 * s / total)
    return out


def positions(values, member, lower_is_better: bool = False) -> list:
    """Members strictly worse / (n - 1) (0 when n <= 1); 0 for non-members."""
    vals = oriented(values, lower_is_better)
    pop = [v for v, m in zip(vals, member) if m]
    n = len(pop)
    return [sum(u < v for u in pop) / (n - 1) if m and n > 1 else 0.0 for v, m in zip(vals, member)]


def tiers(values, member, shares) -> list[int]:
    """Tier index (0 best) from shares (best first, percent): with L members strictly below,
    level = 1 + #{k : L > floor(cum_k * (n - 1) / 100)} counted bottom-up; non-members lowest."""
    pop = [v for v, m in zip(values, member) if m]
    n = len(pop)
    t = len(shares)
    cum, bounds = Fraction(0), []
    for s in list(shares)[::-1][:-1]:
        cum += Fraction(str(s))
        bounds.append(int(cum * (n - 1) // 100))
    out = []
    for v, m in zip(values, member):
        if not m:
            out.append(t - 1)
            continue
        below = sum(u < v for u in pop)
        level = 1 + sum(below > b for b in bounds)
        out.append(t - level)
    return out


def abc(revenue, a_percent: int = 80, b_percent: int = 95) -> list[str]:
    """Sort by revenue (clipped at 0) descending; a run of equal values is A while the revenue
    strictly above it is below a% of the total, B while below b%, else C."""
    r = [max(v, 0) for v in revenue]
    total = sum(r)
    out = []
    for v in r:
        above = sum(u for u in r if u > v)
        if total > 0 and 100 * above < a_percent * total:
            out.append("A")
        elif total > 0 and 100 * above < b_percent * total:
            out.append("B")
        else:
            out.append("C")
    return out


def top_shares(revenue, percents=(1, 5, 10, 20, 50)) -> dict:
    r = sorted((max(v, 0) for v in revenue), reverse=True)
    total = sum(r)
    n = len(r)
    out = {}
    for p in percents:
        k = max(1, math.ceil(p * n / 100)) if n else 0
        out[p] = sum(r[:k]) / total if total > 0 else None
    return out


def gini(revenue):
    """Mean absolute difference over twice the mean: sum_i sum_j |x_i - x_j| / (2 n^2 mean)."""
    r = [max(v, 0) for v in revenue]
    n = len(r)
    total = sum(r)
    if total <= 0:
        return None
    return sum(abs(a - b) for a in r for b in r) / (2 * n * total)


def median(values):
    v = sorted(values)
    if not v:
        return None
    n = len(v)
    return (v[(n - 1) // 2] + v[n // 2]) / 2


def as_numpy_member(n_orders, *valids) -> np.ndarray:
    m = np.asarray(n_orders) > 0
    for v in valids:
        m &= np.asarray(v)
    return m
