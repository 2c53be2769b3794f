"""Kernels that rank customers within groups (shops, markets, channels) in one pass.

A finalized grouped table carries a dense group code per customer (``0..n_groups-1``).
:func:`group_order` lists each group's rows together (a stable counting sort, so rows of
one group keep their table order); :func:`grouped_positions` then sorts each group's
members by an order key and gives every member its position among them; the position is
all that quantile scores, value tiers and percentile features need (see
``rfmx.scores``), compared with per-group thresholds by :func:`scores_from_positions`.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel


@kernel
def group_order(codes, n_groups, starts, order):
    """Rows grouped by code, table order within a group (stable counting sort).

    ``codes``: int64 group code per row (``0..n_groups-1``).  Fills ``starts`` (n_groups + 1):
    group ``g``'s rows are ``order[starts[g]:starts[g+1]]``.
    """
    counts = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(len(codes)):
        counts[codes[i] + 1] += 1
    for g in range(n_groups):
        counts[g + 1] += counts[g]
    for g in range(n_groups + 1):
        starts[g] = counts[g]
    for i in range(len(codes)):
        g = codes[i]
        order[counts[g]] = i
        counts[g] += 1


@kernel(parallel=True)
def grouped_positions(order, starts, keys, member, by_row, pos, n_members):
    """Each member's 0-based position among its group's members sorted by ``keys`` ascending.

    ``by_row`` False: equal keys share the position of the first of their run (the number
    of members with a strictly smaller key); True: equal keys are ordered by row (the
    position in a stable sort).  Non-members get -1; ``n_members[g]``: members of group g.
    Groups are independent, so threads take whole groups and never share a row.
    """
    n_groups = len(starts) - 1
    for g in prange(n_groups):
        lo, hi = starts[g], starts[g + 1]
        m = 0
        for j in range(lo, hi):
            if member[order[j]]:
                m += 1
        rows = np.empty(m, dtype=np.int64)
        sub = np.empty(m, dtype=np.int64)
        m = 0
        for j in range(lo, hi):
            i = order[j]
            if member[i]:
                rows[m] = i
                sub[m] = keys[i]
                m += 1
            else:
                pos[i] = -1
        n_members[g] = m
        if m == 0:
            continue
        ranked = np.argsort(sub, kind="mergesort")  # stable: ties stay in row order
        first = 0
        for k in range(m):
            if k > 0 and sub[ranked[k]] != sub[ranked[k - 1]]:
                first = k
            pos[rows[ranked[k]]] = k if by_row else first


@kernel
def scores_from_positions(codes, pos, member, thresholds, n_members, reverse, q, out):
    """``out[i] = 1 + #{k : pos[i] > thresholds[codes[i], k]}`` for members, 1 otherwise.

    ``reverse``: members of groups with more than one member score ``q + 1 - that`` (the
    tutorial's reversed labels for recency ranked by row order).
    """
    n_k = thresholds.shape[1]
    for i in range(len(pos)):
        if not member[i]:
            out[i] = 1
            continue
        g = codes[i]
        s = 1
        for k in range(n_k):
            if pos[i] > thresholds[g, k]:
                s += 1
        if reverse and n_members[g] > 1:
            s = q + 1 - s
        out[i] = s


@kernel(parallel=True)
def grouped_abc_int(order, starts, revenue, a_percent, b_percent, out):
    """ABC class (0 = A, 1 = B, 2 = C) of integer revenues within each group, as
    ``abc_thresholds`` + ``classify_abc`` (kernels/scores.py) give for one group's revenues
    alone: walking the group's runs of equal positive revenue from the highest down, a
    run is A while ``100 * above < a_percent * total`` (``above``: the revenue of all
    strictly higher customers), then B while ``100 * above < b_percent * total``, then C;
    revenue <= 0 is C.  Exact integer arithmetic, so any order of summing agrees.
    """
    n_groups = len(starts) - 1
    for g in prange(n_groups):
        lo, hi = starts[g], starts[g + 1]
        m = 0
        total = 0
        for j in range(lo, hi):
            i = order[j]
            out[i] = 2
            if revenue[i] > 0:
                m += 1
                total += revenue[i]
        if m == 0:
            continue
        vals = np.empty(m, dtype=np.int64)
        rows = np.empty(m, dtype=np.int64)
        m = 0
        for j in range(lo, hi):
            i = order[j]
            if revenue[i] > 0:
                vals[m] = revenue[i]
                rows[m] = i
                m += 1
        ranked = np.argsort(vals)
        above = 0
        k = m - 1
        while k >= 0:
            v = vals[ranked[k]]
            cls = 0 if 100 * above < a_percent * total else (1 if 100 * above < b_percent * total else 2)
            while k >= 0 and vals[ranked[k]] == v:
                out[rows[ranked[k]]] = cls
                above += v
                k -= 1
