"""Exact quantile-scoring kernels (NumPy in, NumPy out): order keys, radix selection, score assignment.

Everything here works on *oriented int64 keys*: for a dimension where more is better
(orders, money) the key is the value; where less is better (recency) the kernels are
given ``sign = -1`` and use ``-x``.  Floating-point columns are first turned into int64
keys with the same order by :func:`float_order_keys`, so one set of integer kernels
serves every dimension and every comparison is exact.

A *member* mask says which customers belong to the scored population (customers with
at least one order and a value); the others are skipped by the selection and get the
lowest score.

Quantile edges are found by radix selection (:func:`select_ranks`): one pass builds a
histogram over the population — of the keys themselves when their range is small (days,
order counts), else of logarithmic buckets (exponent and top mantissa bits of the offset,
so heavy-tailed money spreads evenly) — and a second pass gathers only the buckets that
hold a wanted rank, which are resolved the same way.  Exact, deterministic, O(n) — never
sampled.  The histograms are plain sums, so the same selection can run over Dask
partitions (sum the histograms, then gather).
"""
from __future__ import annotations

import numpy as np

from ._policy import kernel

__all__ = [
    "float_order_keys",
    "key_range",
    "select_ranks",
    "scores_from_edges",
    "scores_from_lut",
    "scores_rank_first",
    "scores_rank_first_lut",
    "scores_from_cuts",
    "rfm_code_index",
    "match_rules",
    "positions_small",
    "take_by_code",
    "sort_nonneg",
    "group_medians",
    "group_sums",
    "abc_thresholds",
    "classify_abc",
    "lorenz_sorted",
    "rows_of_ascending",
    "check_match",
    "migration_cells",
]


@kernel
def float_order_keys(x, sign, out):
    """``out[i]``: an int64 whose order is the order of ``sign * x[i]`` (float64 in).

    ``-0.0`` and ``0.0`` get the same key; NaN gets some key (callers mask NaN out).
    """
    fbuf = np.empty(1, dtype=np.float64)
    ibuf = fbuf.view(np.int64)
    for i in range(len(x)):
        fbuf[0] = x[i] * sign + 0.0  # + 0.0 turns -0.0 into 0.0
        bits = ibuf[0]
        if bits < 0:
            bits ^= np.int64(0x7FFFFFFFFFFFFFFF)
        out[i] = bits


@kernel
def key_range(x, sign, member):
    """``(count, lo, hi)`` of ``sign * x`` over the members (``lo = hi = 0`` when none)."""
    count = 0
    lo = np.int64(0)
    hi = np.int64(0)
    for i in range(len(x)):
        if member[i]:
            v = np.int64(x[i]) * sign
            if count == 0:
                lo = v
                hi = v
            elif v < lo:
                lo = v
            elif v > hi:
                hi = v
            count += 1
    return count, lo, hi


@kernel
def _bucket_of(d, linear, mbits, fbuf, ibuf):
    """Bucket of offset ``d`` (uint64): ``d`` itself when ``linear``; else a log bucket.

    A log bucket is the exponent of ``float(d)`` and its top ``mbits`` mantissa bits
    (0 for ``d == 0``; at most ``65 << mbits``, as ``float(d)`` may round up to 2**64):
    monotone in ``d``, each bucket about ``2**-mbits`` of its values'
    magnitude wide, so a heavy-tailed column (money) spreads over many buckets instead of
    piling into the first few as with equal-width buckets.  ``fbuf``/``ibuf``: a float64
    scratch of one element and its int64 view (the float's bits).
    """
    if linear:
        return np.intp(d)
    if d == np.uint64(0):
        return np.intp(0)
    fbuf[0] = np.float64(d)
    return np.intp((ibuf[0] >> (52 - mbits)) - ((1023 << mbits) - 1))


@kernel
def _select_dense(values, rank, radix_bits):
    """``(value, below)``: the ``rank``-th smallest of ``values`` (int64) and the count of
    values strictly smaller.  ``values`` is reused as scratch."""
    fbuf = np.empty(1, dtype=np.float64)
    ibuf = fbuf.view(np.int64)
    mbits = radix_bits - 6 if radix_bits > 6 else 0
    below = np.int64(0)
    cur = values
    while True:
        m = len(cur)
        lo = cur[0]
        hi = cur[0]
        for i in range(m):
            v = cur[i]
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        if lo == hi:
            return lo, below
        if m <= 64:
            s = np.sort(cur)
            v = s[rank]
            j = rank
            while j > 0 and s[j - 1] == v:
                j -= 1
            return v, below + j
        ulo = np.uint64(lo)
        span = np.uint64(hi) - ulo
        linear = span < (np.uint64(1) << np.uint64(radix_bits))
        nb = np.intp(span) + 1 if linear else (65 << mbits) + 1
        hist = np.zeros(nb, dtype=np.int64)
        for i in range(m):
            hist[_bucket_of(np.uint64(cur[i]) - ulo, linear, mbits, fbuf, ibuf)] += 1
        cum = np.int64(0)
        b = 0
        while cum + hist[b] <= rank:
            cum += hist[b]
            b += 1
        rank -= cum
        below += cum
        if linear:
            return np.int64(ulo + np.uint64(b)), below
        nxt = np.empty(hist[b], dtype=np.int64)
        k = 0
        for i in range(m):
            if _bucket_of(np.uint64(cur[i]) - ulo, linear, mbits, fbuf, ibuf) == b:
                nxt[k] = cur[i]
                k += 1
        cur = nxt


@kernel
def select_ranks(x, sign, member, lo, hi, ranks, radix_bits, out_value, out_below):
    """Order statistics of ``sign * x`` over the members, exactly.

    ``ranks``: sorted int64 ranks (0-based, each < member count).  Writes
    ``out_value[j]`` = the ``ranks[j]``-th smallest key and ``out_below[j]`` = how many
    members have a strictly smaller key.  ``lo``/``hi``: the keys' range (from
    :func:`key_range`).  ``radix_bits``: histogram width (16: 65,536 buckets).

    One pass builds a histogram (exact values when the range is below ``2**radix_bits``,
    log buckets otherwise); a second gathers the members of the few buckets holding a
    wanted rank, which are then resolved by :func:`_select_dense`.
    """
    fbuf = np.empty(1, dtype=np.float64)
    ibuf = fbuf.view(np.int64)
    mbits = radix_bits - 6 if radix_bits > 6 else 0
    k = len(ranks)
    ulo = np.uint64(lo)
    span = np.uint64(hi) - ulo
    linear = span < (np.uint64(1) << np.uint64(radix_bits))
    nb = np.intp(span) + 1 if linear else (65 << mbits) + 1
    hist = np.zeros(nb, dtype=np.int64)
    for i in range(len(x)):
        if member[i]:
            hist[_bucket_of(np.uint64(np.int64(x[i]) * sign) - ulo, linear, mbits, fbuf, ibuf)] += 1
    bucket = np.empty(k, dtype=np.intp)
    base_below = np.empty(k, dtype=np.int64)
    cum = np.int64(0)
    j = 0
    for b in range(nb):
        c = hist[b]
        while j < k and ranks[j] < cum + c:
            bucket[j] = b
            base_below[j] = cum
            j += 1
        cum += c
    if linear:
        for j in range(k):
            out_value[j] = np.int64(ulo + np.uint64(bucket[j]))
            out_below[j] = base_below[j]
        return
    # Gather the members of the wanted buckets, grouped by bucket, in one pass.
    slot = np.full(nb, -1, dtype=np.intp)
    n_slots = 0
    for j in range(k):
        if slot[bucket[j]] < 0:
            slot[bucket[j]] = n_slots
            n_slots += 1
    start = np.zeros(n_slots + 1, dtype=np.int64)
    for j in range(k):
        start[slot[bucket[j]] + 1] = hist[bucket[j]]
    for s in range(n_slots):
        start[s + 1] += start[s]
    fill = start[:n_slots].copy()
    buf = np.empty(start[n_slots], dtype=np.int64)
    for i in range(len(x)):
        if member[i]:
            v = np.int64(x[i]) * sign
            s = slot[_bucket_of(np.uint64(v) - ulo, linear, mbits, fbuf, ibuf)]
            if s >= 0:
                buf[fill[s]] = v
                fill[s] += 1
    for j in range(k):
        s = slot[bucket[j]]
        v, below = _select_dense(buf[start[s]:start[s + 1]].copy(), ranks[j] - base_below[j], radix_bits)
        out_value[j] = v
        out_below[j] = base_below[j] + below


@kernel
def scores_from_edges(x, sign, member, edges, out):
    """``out[i] = 1 + #{k : sign*x[i] > edges[k]}`` for members, 1 for the others."""
    ne = len(edges)
    for i in range(len(x)):
        v = np.int64(x[i]) * sign
        s = 1
        for k in range(ne):
            s += v > edges[k]
        out[i] = s if member[i] else 1


@kernel
def scores_from_lut(x, sign, member, lo, lut, out):
    """``out[i] = lut[sign*x[i] - lo]`` for members, 1 for the others (small key ranges)."""
    for i in range(len(x)):
        if member[i]:
            out[i] = lut[np.int64(x[i]) * sign - lo]
        else:
            out[i] = 1


@kernel(inline=True)
def _runs_start(edge_below, ranks):
    """Per run of members equal to an edge (indexed by its first edge): members seen so far,
    and ranks passed so far (members below the run already pass some)."""
    ne = len(ranks)
    seen = np.zeros(ne, dtype=np.int64)
    passed = np.zeros(ne, dtype=np.int64)
    for a in range(ne):
        for k in range(ne):
            passed[a] += edge_below[a] > ranks[k]
    return seen, passed


@kernel(inline=True)
def _run_score(at, seen, passed, edge_below, ranks):
    """Score of the next member of run ``at``: its position is the members below the run plus
    those of the run seen before it; positions only grow along a run."""
    p = edge_below[at] + seen[at]
    seen[at] += 1
    c = passed[at]
    while c < len(ranks) and p > ranks[c]:
        c += 1
    passed[at] = c
    return 1 + c


@kernel
def scores_rank_first(x, sign, member, edges, edge_below, ranks, out):
    """Equal-size scores from rank positions, ties broken by row order (``rank(method="first")``).

    A member's position ``p`` (0-based) is the number of members with a smaller key plus
    the members with an equal key in earlier rows; its score is
    ``1 + #{k : p > ranks[k]}`` (``ranks`` ascending).  ``edges[k]`` is the key at sorted
    position ``ranks[k]`` and ``edge_below[k]`` the members strictly below it: only
    members whose key equals an edge need their position (their run straddles an edge),
    every other member scores ``1 + #{k : key > edges[k]}``.
    """
    ne = len(edges)
    seen, passed = _runs_start(edge_below, ranks)
    for i in range(len(x)):
        if not member[i]:
            out[i] = 1
            continue
        v = np.int64(x[i]) * sign
        s = 1
        at = -1
        for k in range(ne):
            s += v > edges[k]
            if at < 0 and v == edges[k]:
                at = k
        if at >= 0:
            s = _run_score(at, seen, passed, edge_below, ranks)
        out[i] = s


@kernel
def scores_rank_first_lut(x, sign, member, lo, lut, edge_below, ranks, out):
    """:func:`scores_rank_first` for small key ranges: ``lut[key - lo]`` is the score of a
    key that is not an edge, or ``-a`` for a key equal to ``edges[a]`` (its first index),
    whose members take their position in the run."""
    seen, passed = _runs_start(edge_below, ranks)
    for i in range(len(x)):
        if not member[i]:
            out[i] = 1
            continue
        s = lut[np.int64(x[i]) * sign - lo]
        if s <= 0:
            s = _run_score(-s, seen, passed, edge_below, ranks)
        out[i] = s


@kernel
def scores_from_cuts(x, member, cuts, reverse, q, out):
    """Fixed cut points: ``b = #{c in cuts : x > c}``; score ``1 + b`` (``q - b`` if ``reverse``).

    Bins are closed on the right, as in ``pd.cut``: with cuts ``[30, 90]`` on recency,
    30 days is in the first bin.  Non-members score 1.
    """
    nc = len(cuts)
    for i in range(len(x)):
        if member[i]:
            v = x[i]
            b = 0
            for k in range(nc):
                b += v > cuts[k]
            out[i] = q - b if reverse else 1 + b
        else:
            out[i] = 1


@kernel
def rfm_code_index(r, f, m, member, q, segment_lut, out_code, out_sum, out_segment, counts, member_counts):
    """Per customer the RFM code's index ``c = (r-1)*q*q + (f-1)*q + (m-1)``, ``r + f + m``
    and, when ``segment_lut`` is not empty, the segment ``segment_lut[c]``; and how many
    customers (and members) have each code: ``counts``/``member_counts`` (length q**3,
    zeroed by the caller)."""
    with_segment = len(segment_lut) > 0
    for i in range(len(r)):
        c = (np.int64(r[i]) - 1) * q * q + (np.int64(f[i]) - 1) * q + (np.int64(m[i]) - 1)
        out_code[i] = c
        out_sum[i] = np.int64(r[i]) + np.int64(f[i]) + np.int64(m[i])
        if with_segment:
            out_segment[i] = segment_lut[c]
        counts[c] += 1
        if member[i]:
            member_counts[c] += 1


@kernel
def take_by_code(code, member, lut, default, out):
    """``out[i] = lut[code[i]]`` for members, ``default`` for the others."""
    for i in range(len(code)):
        out[i] = lut[code[i]] if member[i] else default


@kernel
def match_rules(fields, cond_field, cond_kind, cond_lo, cond_hi, cond_set_start, cond_set_end, set_values,
                rule_cond_start, rule_cond_end, out_rule):
    """First matching rule per row: ``out_rule[i]`` = index of the first rule all of whose
    conditions hold for row ``i`` of ``fields`` (shape ``(n_fields, n)``, float64), or -1.

    A condition is ``lo <= field <= hi`` (kind 0) or ``field in set_values[start:end]``
    (kind 1).  NaN (a null) satisfies no condition.  A rule without conditions matches
    every row.
    """
    n = fields.shape[1]
    n_rules = len(rule_cond_start)
    for i in range(n):
        hit = -1
        for r in range(n_rules):
            ok = True
            for c in range(rule_cond_start[r], rule_cond_end[r]):
                v = fields[cond_field[c], i]
                if cond_kind[c] == 0:
                    if not (v >= cond_lo[c] and v <= cond_hi[c]):
                        ok = False
                        break
                else:
                    found = False
                    for s in range(cond_set_start[c], cond_set_end[c]):
                        if v == set_values[s]:
                            found = True
                            break
                    if not found:
                        ok = False
                        break
            if ok:
                hit = r
                break
        out_rule[i] = hit


@kernel
def positions_small(x, sign, member, lo, hi):
    """Per member, how many members have a strictly smaller ``sign * x`` (small key ranges).

    Returns an int64 array (-1 for non-members).  Histogram over ``hi - lo + 1`` keys.
    """
    nb = hi - lo + 1
    hist = np.zeros(nb + 1, dtype=np.int64)
    for i in range(len(x)):
        if member[i]:
            hist[np.int64(x[i]) * sign - lo + 1] += 1
    for b in range(nb):
        hist[b + 1] += hist[b]
    out = np.empty(len(x), dtype=np.int64)
    for i in range(len(x)):
        out[i] = hist[np.int64(x[i]) * sign - lo] if member[i] else -1
    return out


@kernel
def lorenz_sorted(sorted_values):
    """``(total, weighted)`` of ascending ``sorted_values`` (int64 >= 0) for the Gini
    coefficient: ``total = sum(x)``, ``weighted = sum((2*i - n + 1) * x[i])`` (i 0-based)
    as float64, so ``gini = weighted / (n * total)``."""
    n = len(sorted_values)
    total = 0.0
    weighted = 0.0
    for i in range(n):
        v = np.float64(sorted_values[i])
        total += v
        weighted += (2.0 * i - n + 1.0) * v
    return total, weighted


@kernel
def sort_nonneg(x, mbits):
    """A sorted copy of ``x`` (int64 or float64, all >= 0).

    One pass spreads the values over log buckets (exponent and ``mbits`` mantissa bits,
    monotone), one pass scatters them, then each small bucket is sorted: O(n) passes
    plus sorts of about n / 2**(mbits+6) values each.
    """
    n = len(x)
    fbuf = np.empty(1, dtype=np.float64)
    ibuf = fbuf.view(np.int64)
    nb = (128 << mbits) + 1
    bucket = np.empty(n, dtype=np.int32)
    count = np.zeros(nb + 1, dtype=np.int64)
    for i in range(n):
        b = _value_bucket(x[i], mbits, fbuf, ibuf)
        bucket[i] = b
        count[b + 1] += 1
    for b in range(nb):
        count[b + 1] += count[b]
    fill = count[:nb].copy()
    out = np.empty_like(x)
    for i in range(n):
        b = bucket[i]
        out[fill[b]] = x[i]
        fill[b] += 1
    for b in range(nb):
        if count[b + 1] - count[b] > 1:
            out[count[b]:count[b + 1]] = np.sort(out[count[b]:count[b + 1]])
    return out


@kernel
def _value_bucket(v, mbits, fbuf, ibuf):
    """Log bucket of a value (int or float) in ``0 .. (128 << mbits) + 1``: 0 for ``v <= 0``,
    else the exponent and top ``mbits`` mantissa bits of ``float(v)``, clamped to
    exponents -64..63 (monotone in ``v``)."""
    if v <= 0:
        return np.intp(0)
    fbuf[0] = np.float64(v)
    raw = np.intp(ibuf[0] >> (52 - mbits)) - ((1023 - 64) << mbits)
    top = (128 << mbits) - 1
    if raw < 0:
        raw = 0
    elif raw > top:
        raw = top
    return raw + 1


@kernel
def group_medians(x, valid, group, n_groups, radix_bits):
    """Exact median of ``x`` (int64 keys) per group: ``(lower, upper, count)`` arrays.

    ``group[i]`` in ``0..n_groups-1`` (negative: skip), ``valid[i]`` False: skip.  The
    median is ``(lower + upper) / 2`` of the two middle values (equal for odd counts);
    groups without values have count 0.
    """
    n = len(x)
    count = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(n):
        g = group[i]
        if g >= 0 and valid[i]:
            count[g + 1] += 1
    for g in range(n_groups):
        count[g + 1] += count[g]
    fill = count[:n_groups].copy()
    buf = np.empty(count[n_groups], dtype=np.int64)
    for i in range(n):
        g = group[i]
        if g >= 0 and valid[i]:
            buf[fill[g]] = x[i]
            fill[g] += 1
    lower = np.zeros(n_groups, dtype=np.int64)
    upper = np.zeros(n_groups, dtype=np.int64)
    sizes = np.zeros(n_groups, dtype=np.int64)
    for g in range(n_groups):
        c = count[g + 1] - count[g]
        sizes[g] = c
        if c == 0:
            continue
        part = buf[count[g]:count[g + 1]]
        v, _ = _select_dense(part.copy(), (c - 1) // 2, radix_bits)
        lower[g] = v
        v, _ = _select_dense(part.copy(), c // 2, radix_bits)
        upper[g] = v
    return lower, upper, sizes


@kernel
def abc_thresholds(x, a_percent, b_percent, mbits):
    """ABC class thresholds of revenues ``x`` (int64 or float64; values <= 0 count as 0).

    Walking customers from the highest revenue down, a run of equal values is class A
    while the revenue of all strictly higher customers is below ``a_percent`` % of the
    total (so the customer that crosses the line is still A), then B below ``b_percent``
    %, then C.  Integer revenues are compared exactly (``100 * above < a_percent * total``).
    Returns ``(min_a, min_b)``: the smallest revenues still in A and in A or B (larger
    than every revenue when a class is empty).

    One pass sums counts and revenue per log bucket; the buckets are walked from the top
    and only the bucket where a line is crossed is gathered and sorted (second pass).
    """
    n = len(x)
    fbuf = np.empty(1, dtype=np.float64)
    ibuf = fbuf.view(np.int64)
    nb = (128 << mbits) + 1
    zero = x[0] - x[0]  # 0 of x's type (callers pass n >= 1)
    sums = np.zeros(nb, dtype=x.dtype)
    counts = np.zeros(nb, dtype=np.int64)
    total = zero
    top = zero
    for i in range(n):
        v = x[i]
        if v > 0:
            b = _value_bucket(v, mbits, fbuf, ibuf)
            sums[b] += v
            counts[b] += 1
            total += v
            if v > top:
                top = v
    none = top + 1
    if total <= 0:
        return none, none
    # The bucket holding each line's crossing run, and the revenue above that bucket: the
    # first bucket from the top whose revenue takes the running sum to the line.
    cross = np.full(2, -1, dtype=np.intp)
    cross_above = np.zeros(2, dtype=x.dtype)
    pct = (a_percent, b_percent)
    above = zero
    for b in range(nb - 1, -1, -1):
        for t in range(2):
            if cross[t] < 0 and 100 * (above + sums[b]) >= pct[t] * total:
                cross[t] = b
                cross_above[t] = above
        above += sums[b]
    # Gather the (one or two) crossing buckets in one pass.
    b0 = cross[0]
    b1 = cross[1]
    size1 = counts[b1] if b1 != b0 else 0
    vals0 = np.empty(counts[b0], dtype=x.dtype)
    vals1 = np.empty(size1, dtype=x.dtype)
    k0 = 0
    k1 = 0
    for i in range(n):
        v = x[i]
        if v > 0:
            b = _value_bucket(v, mbits, fbuf, ibuf)
            if b == b0:
                vals0[k0] = v
                k0 += 1
            elif b == b1:
                vals1[k1] = v
                k1 += 1
    vals0 = np.sort(vals0)
    vals1 = np.sort(vals1) if b1 != b0 else vals0
    result = np.full(2, none, dtype=x.dtype)
    for t in range(2):
        vals = vals0 if t == 0 else vals1
        a = cross_above[t]
        # The crossing bucket's first run is always in: the revenue above it is below the line.
        last_in = vals[len(vals) - 1]
        i = len(vals) - 1
        while i >= 0 and 100 * a < pct[t] * total:
            v = vals[i]
            last_in = v
            while i >= 0 and vals[i] == v:
                a += v
                i -= 1
        result[t] = last_in
    return result[0], result[1]


@kernel
def classify_abc(x, min_a, min_b, out):
    """``out[i]``: 0 (A) if ``x[i] >= min_a``, 1 (B) if ``>= min_b``, else 2 (C); ``x`` clipped at 0."""
    for i in range(len(x)):
        v = x[i] if x[i] > 0 else 0
        out[i] = 0 if v >= min_a else (1 if v >= min_b else 2)


@kernel
def group_sums(x, group, n_groups):
    """Sum of ``x`` per group (``group[i]`` in ``0..n_groups-1``; negative: skip); exact for int64."""
    out = np.zeros(n_groups, dtype=x.dtype)
    for i in range(len(x)):
        g = group[i]
        if g >= 0:
            out[g] += x[i]
    return out


# --- migration between two snapshots --------------------------------------------------

@kernel
def rows_of_ascending(earlier, later, out):
    """``out[i]``: the position of ``later[i]`` in ``earlier`` (-1: absent), for two strictly
    ascending arrays (the state rows of two snapshots of one timeline).  One merge walk;
    False (``out`` unusable) when either array is not strictly ascending."""
    for a in (earlier, later):
        for i in range(1, len(a)):
            if a[i] <= a[i - 1]:
                return False
    j = 0
    for i in range(len(later)):
        v = later[i]
        while j < len(earlier) and earlier[j] < v:
            j += 1
        out[i] = j if j < len(earlier) and earlier[j] == v else -1
    return True


@kernel
def check_match(row_in_a, n_a, a_keys, b_keys, seen):
    """Check a given match of later rows to earlier rows (``row_in_a[i]``: -1 or a row
    below ``n_a``, none twice), marking the matched earlier rows in ``seen``; with int64
    keys (``a_keys``/``b_keys`` non-empty) also that both sides of each match hold the
    same key.  Returns -1 when all holds, else the first later row where it does not
    (``-2 - i``: the keys differ)."""
    compare = len(a_keys) > 0
    for i in range(len(row_in_a)):
        r = row_in_a[i]
        if r < 0:
            if r != -1:
                return i
            continue
        if r >= n_a or seen[r]:
            return i
        seen[r] = True
        if compare and a_keys[r] != b_keys[i]:
            return -2 - i
    return -1


@kernel
def migration_cells(row_in_a, codes_a, remap_a, codes_b, remap_b, money, new_state, gone_state, counts, revenue,
                    seen):
    """Customers and revenue per (from state, to state) cell, in one pass over the later
    snapshot and one over the earlier.

    Segments come as dictionary codes (-1: null) and a ``remap`` from code to state
    (its last entry: the state of a null).  Later row ``i`` is in cell
    ``from * k + to`` (``k = sqrt(len(counts))``) with ``from`` its earlier row's state
    (``new_state`` when ``row_in_a[i] < 0``) and ``to`` its own, and adds ``money[i]``
    to the cell's revenue; earlier rows no
    later row matched (``seen``, all False in) go to ``(from, gone_state)`` with no money.
    ``revenue`` int64 sums exactly (the caller has checked they cannot wrap) or float64.
    """
    k = np.int64(np.sqrt(len(counts)) + 0.5)
    none_a = len(remap_a) - 1
    none_b = len(remap_b) - 1
    for i in range(len(codes_b)):
        r = row_in_a[i]
        if r < 0:
            f = new_state
        else:
            seen[r] = True
            c = codes_a[r]
            f = remap_a[c if c >= 0 else none_a]
        c = codes_b[i]
        cell = f * k + remap_b[c if c >= 0 else none_b]
        counts[cell] += 1
        revenue[cell] += money[i]
    for r in range(len(codes_a)):
        if not seen[r]:
            c = codes_a[r]
            counts[remap_a[c if c >= 0 else none_a] * k + gone_state] += 1
