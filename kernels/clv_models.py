"""BTYD model kernels: BG/NBD (and MBG/NBD), Pareto/NBD and Gamma-Gamma log-likelihoods with
gradients, and their predictions (NumPy in, NumPy out).  The discrete-time models (BG/BB,
sBG) are in :mod:`rfmx.kernels.clv_discrete`.

Conventions
-----------
- A customer is ``(x, t_x, T)``: repeat purchase periods, recency and age (float64, in
  the model's time unit).  Fits run over *patterns* (unique triples) with integer
  ``weights``; every per-``x`` quantity (log-gamma and digamma terms) is computed once per
  unique ``x`` (``ux`` with ``xi`` the pattern's index into it), so a fit costs a few
  logarithms per pattern.
- Log-likelihood kernels return the weighted sum ``sum(w * LL)`` and write its gradient
  with respect to the *natural* parameters into ``grad``.  Sums run over ``n_chunks``
  fixed chunks added in order, so results do not depend on the thread count.
- Everything is in log space: ``exp`` of a difference that is at most 0, ``log1p``/``expm1``
  near 1, so frequencies in the thousands neither overflow nor lose the small terms.
- Pareto/NBD's Gauss hypergeometric function ``2F1(a, b; a + 1; z)`` is evaluated after the
  Euler transformation, ``(1 - z)**(1 - b) * 2F1(1, a + 1 - b; a + 1; z)``, whose series has
  positive, decreasing terms (ratio below ``z``): no cancellation and no overflow for any
  ``x``.  A series that has not converged after ``max_terms`` terms gives NaN, which the
  engine turns into an error.

Parameters: BG/NBD ``(r, alpha, a, b)``, Pareto/NBD ``(r, alpha, s, beta)``, Gamma-Gamma
``(p, q, v)`` (lifetimes' names; ``v`` is the paper's gamma).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._policy import kernel
from .customers import mix64

__all__ = [
    "digamma",
    "hash_patterns",
    "compress_patterns_small",
    "check_btyd_inputs",
    "scatter_patterns",
    "compress_patterns",
    "scatter_back",
    "unique_index",
    "bgnbd_loglik_hessian",
    "trigamma",
    "pareto_loglik",
    "gamma_gamma_loglik",
    "bgnbd_expected_if_alive",
    "bgnbd_combine",
    "pareto_predict",
    "gamma_gamma_spend",
    "hyp2f1_series",
    "chunk_range",
    "sum_chunks",
]

_MAX_TERMS = 2_000_000


@kernel(inline=True)
def sum_chunks(part):
    """Column sums of the per-chunk partial sums, chunk by chunk in order (the same
    result for any thread count: the chunks, not the threads, fix the order)."""
    tot = np.zeros(part.shape[1])
    for k in range(part.shape[0]):
        for q_ in range(part.shape[1]):
            tot[q_] += part[k, q_]
    return tot


@kernel
def digamma(x):
    """psi(x) for x > 0 (recurrence to x >= 10, then the asymptotic series; ~1e-15 relative)."""
    r = 0.0
    while x < 10.0:
        r -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return r + math.log(x) - 0.5 / x - f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))))


@kernel
def trigamma(x):
    """psi'(x) for x > 0 (recurrence to x >= 10, then the asymptotic series)."""
    r = 0.0
    while x < 10.0:
        r += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    return r + 1.0 / x + f / 2.0 + f / x * (1.0 / 6 - f * (1.0 / 30 - f * (1.0 / 42 - f * (1.0 / 30 - f * 5.0 / 66))))


@kernel
def hash_patterns(x_bits, tx_bits, T_bits, bucket_bits, out, counts):
    """``out[i]``: a 64-bit hash of row i's ``(x, t_x, T)`` float64 bit patterns (as int64);
    ``counts[b]`` += rows whose hash's top ``bucket_bits`` bits are b."""
    for i in range(x_bits.shape[0]):
        h = mix64(x_bits[i] ^ mix64(tx_bits[i] ^ mix64(T_bits[i])))
        out[i] = h
        b = np.int64(np.uint64(h) >> np.uint64(64 - bucket_bits)) if bucket_bits > 0 else 0
        counts[b] += 1


@kernel
def compress_patterns_small(x_bits, tx_bits, T_bits, hashes, table, first, count, inverse):
    """Unique ``(x, t_x, T)`` rows with one hash table ``table`` (cap, 4) of zeros, for inputs
    with few patterns (the table stays in cache).  Returns the number of patterns (numbered
    in order of first row: ``first``, ``count``, ``inverse`` as :func:`compress_patterns`), or
    -1 as soon as more than cap / 2 patterns appear (the caller then partitions instead)."""
    cap = table.shape[0]
    mask = cap - 1
    limit = cap // 2
    c = 0
    for i in range(hashes.shape[0]):
        s = hashes[i] & mask
        while True:
            code = table[s, 3]
            if code == 0:
                if c == limit:
                    return -1
                table[s, 0] = x_bits[i]
                table[s, 1] = tx_bits[i]
                table[s, 2] = T_bits[i]
                table[s, 3] = c + 1
                first[c] = i
                count[c] = 1
                inverse[i] = c
                c += 1
                break
            if table[s, 0] == x_bits[i] and table[s, 1] == tx_bits[i] and table[s, 2] == T_bits[i]:
                count[code - 1] += 1
                inverse[i] = code - 1
                break
            s = (s + 1) & mask
    return c


@kernel
def check_btyd_inputs(x, tx, T, out):
    """First row breaking each rule (or -1), and how many do, into ``out`` (8, 2): 0 x not
    finite, 1 t_x not finite, 2 T not finite, 3 a negative value, 4 x not whole, 5 t_x > T,
    6 x = 0 with t_x != 0, 7 x > 0 with T = 0.  One pass instead of one per rule."""
    for r in range(8):
        out[r, 0] = -1
        out[r, 1] = 0
    for i in range(x.shape[0]):
        xi, ti, Ti = x[i], tx[i], T[i]
        bad = -1
        if not math.isfinite(xi):
            bad = 0
        elif not math.isfinite(ti):
            bad = 1
        elif not math.isfinite(Ti):
            bad = 2
        elif xi < 0 or ti < 0 or Ti < 0:
            bad = 3
        elif xi != math.floor(xi):
            bad = 4
        elif ti > Ti:
            bad = 5
        elif xi == 0 and ti != 0:
            bad = 6
        elif xi > 0 and Ti <= 0:
            bad = 7
        if bad >= 0:
            if out[bad, 0] < 0:
                out[bad, 0] = i
            out[bad, 1] += 1


@kernel
def scatter_patterns(x_bits, tx_bits, T_bits, hashes, bucket_bits, starts, rows, keys):
    """Radix-partition rows by the top ``bucket_bits`` of their hash (stable): bucket b's rows
    go to ``rows[starts[b]:starts[b+1]]`` and their (x, t_x, T bits, hash) to ``keys``
    (m, 4), so each bucket is then read sequentially and its table stays in cache."""
    fill = starts[:-1].copy()
    for i in range(hashes.shape[0]):
        h = hashes[i]
        b = np.int64(np.uint64(h) >> np.uint64(64 - bucket_bits)) if bucket_bits > 0 else 0
        k = fill[b]
        fill[b] = k + 1
        rows[k] = i
        keys[k, 0] = x_bits[i]
        keys[k, 1] = tx_bits[i]
        keys[k, 2] = T_bits[i]
        keys[k, 3] = h


@kernel(parallel=True)
def compress_patterns(keys, rows, starts, n, first, count, local):
    """Unique ``(x, t_x, T)`` rows of each bucket made by :func:`scatter_patterns`, by an
    exact hash table per bucket (sized to the bucket, so it stays in cache).

    Bucket b (positions ``lo = starts[b]`` to ``starts[b+1]``) numbers its patterns
    ``0..n[b]-1`` in order of first row and writes, for pattern c, its first row to
    ``first[lo + c]`` and its rows to ``count[lo + c]``; ``local[k]`` is position k's
    pattern number.  Buckets are independent: the result does not depend on the thread count.
    """
    nb = starts.shape[0] - 1
    for b in prange(nb):
        lo, hi = starts[b], starts[b + 1]
        cap = 16
        while cap < 2 * (hi - lo):
            cap *= 2
        mask = cap - 1
        slot_pos = np.full(cap, -1, dtype=np.int64)
        slot_id = np.empty(cap, dtype=np.int64)
        c = 0
        for k in range(lo, hi):
            s = keys[k, 3] & mask
            while True:
                j = slot_pos[s]
                if j < 0:
                    slot_pos[s] = k
                    slot_id[s] = c
                    first[lo + c] = rows[k]
                    count[lo + c] = 1
                    local[k] = c
                    c += 1
                    break
                if keys[j, 0] == keys[k, 0] and keys[j, 1] == keys[k, 1] and keys[j, 2] == keys[k, 2]:
                    cid = slot_id[s]
                    count[lo + cid] += 1
                    local[k] = cid
                    break
                s = (s + 1) & mask
        n[b] = c


@kernel
def scatter_back(rows, local, bucket_offset, starts, inverse):
    """``inverse[rows[k]] = bucket_offset[b] + local[k]`` for every bucket b and its rows k."""
    for b in range(starts.shape[0] - 1):
        off = bucket_offset[b]
        for k in range(starts[b], starts[b + 1]):
            inverse[rows[k]] = off + local[k]


@kernel
def unique_index(bits, ids, uniq):
    """Exact unique values of ``bits`` (int64 bit patterns) in order of first appearance:
    writes ``ids`` (row -> value id) and ``uniq`` (value id -> bits); returns the count."""
    n = bits.shape[0]
    cap = 16
    while cap < 2 * n:
        cap *= 2
    mask = cap - 1
    slots = np.zeros(cap, dtype=np.int64)
    k = 0
    for i in range(n):
        b = bits[i]
        s = mix64(b) & mask
        while True:
            code = slots[s]
            if code == 0:
                slots[s] = k + 1
                uniq[k] = b
                ids[i] = k
                k += 1
                break
            if uniq[code - 1] == b:
                ids[i] = code - 1
                break
            s = (s + 1) & mask
    return k


@kernel
def _logaddexp(u, v):
    if u == -np.inf:
        return v
    if v == -np.inf:
        return u
    m = max(u, v)
    return m + math.log1p(math.exp(-abs(u - v)))


@kernel
def _sigmoid(u):
    if u >= 0.0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)


@kernel
def chunk_range(n, n_chunks, k):
    size = (n + n_chunks - 1) // n_chunks
    return k * size, min(n, (k + 1) * size)


# --- BG/NBD ------------------------------------------------------------------------

@kernel(parallel=True)
def bgnbd_loglik_hessian(params, ux, xi, ut, ri, ti, w, n_chunks, modified, grad, hess):
    """Weighted BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6), its gradient
    (4,) and its Hessian (4, 4) with respect to (r, alpha, a, b), for Newton steps and
    standard errors.

    ``modified``: the MBG/NBD instead (Batislam, Denizel & Filiztekin 2007; Wagner & Hoppe
    2008), where a customer may also drop out right after the first purchase: every
    ``b + x`` of BG/NBD becomes ``b + x + 1`` and the "dropped out after the last purchase"
    term applies to customers without repeat purchases too.

    ``params``: (r, alpha, a, b); ``ux``: unique x (u,); ``ut``: unique times; per pattern
    (m,): ``xi`` index into ``ux``, ``ri``/``ti`` indices of t_x / T into ``ut``, weight
    ``w``.  Returns ``sum(w * LL)``.  Logs are taken once per unique x and per unique time,
    so a pattern costs one exp and one log1p.  Per pattern LL = c(x) + r log(alpha) +
    logaddexp(A3, A4): with p4 the softmax weight of A4, grad = p3 g3 + p4 g4 and
    hess = p3 H3 + p4 H4 + p3 p4 (g4 - g3)(g4 - g3)'.
    """
    r, alpha, a, b = params[0], params[1], params[2], params[3]
    sh = 1.0 if modified else 0.0  # MBG/NBD: b + x + 1 wherever BG/NBD has b + x
    nu = ux.shape[0]
    cx = np.empty((nu, 10))  # ll, dr, da, db, drr, daa, dab, dbb, log(a/(b+x-1)), 1/(b+x-1)
    lg_r, lg_b, lg_ab = math.lgamma(r), math.lgamma(b), math.lgamma(a + b)
    dg_r, dg_b, dg_ab = digamma(r), digamma(b), digamma(a + b)
    tg_r, tg_b, tg_ab = trigamma(r), trigamma(b), trigamma(a + b)
    log_a = math.log(a)
    for j in range(nu):
        x = ux[j]
        xs = x + sh
        cx[j, 0] = math.lgamma(r + x) - lg_r + lg_ab + math.lgamma(b + xs) - lg_b - math.lgamma(a + b + xs)
        cx[j, 1] = digamma(r + x) - dg_r
        dabx = digamma(a + b + xs)
        cx[j, 2] = dg_ab - dabx
        cx[j, 3] = dg_ab + digamma(b + xs) - dg_b - dabx
        cx[j, 4] = trigamma(r + x) - tg_r
        tabx = trigamma(a + b + xs)
        cx[j, 5] = tg_ab - tabx
        cx[j, 6] = tg_ab - tabx
        cx[j, 7] = tg_ab + trigamma(b + xs) - tg_b - tabx
        if x > 0 or modified:
            cx[j, 8] = log_a - math.log(b + xs - 1.0)
            cx[j, 9] = 1.0 / (b + xs - 1.0)
        else:
            cx[j, 8] = 0.0
            cx[j, 9] = 0.0
    nt = ut.shape[0]
    lt = np.empty(nt)
    it = np.empty(nt)
    for k in range(nt):
        lt[k] = math.log(alpha + ut[k])
        it[k] = 1.0 / (alpha + ut[k])
    m = xi.shape[0]
    part = np.zeros((n_chunks, 16))
    ia = 1.0 / a
    for k in prange(n_chunks):
        lo, hi = chunk_range(m, n_chunks, k)
        acc = np.zeros(16)  # ll, g(4), h00 h01 h02 h03 h11 h12 h13 h22 h23 h33, wsum
        for i in range(lo, hi):
            j = xi[i]
            x = ux[j]
            rx = r + x
            wi = w[i]
            kT = ti[i]
            lT = lt[kT]
            iT = it[kT]
            L = -rx * lT
            # g3 = (-lT, -rx iT, 0, 0); H3: h01 = -iT, h11 = rx iT^2
            g0, g1, g2, g3 = -lT, -rx * iT, 0.0, 0.0
            h01, h11, h22, h33 = -iT, rx * iT * iT, 0.0, 0.0
            h00 = h02 = h03 = h12 = h13 = h23 = 0.0
            if x > 0 or modified:
                kx = ri[i]
                ltx = lt[kx]
                itx = it[kx]
                ib = cx[j, 9]
                u = cx[j, 8] - rx * (ltx - lT)
                e = math.exp(-abs(u))
                if u > 0.0:
                    L += u + math.log1p(e)
                    p4 = 1.0 / (1.0 + e)
                else:
                    L += math.log1p(e)
                    p4 = e / (1.0 + e)
                p3 = 1.0 - p4
                # g4 = (-ltx, -rx itx, 1/a, -ib); d = g4 - g3
                d0, d1, d2, d3 = lT - ltx, -rx * (itx - iT), ia, -ib
                g0 += p4 * d0
                g1 += p4 * d1
                g2 = p4 * ia
                g3 = -p4 * ib
                q = p3 * p4
                h01 = p3 * -iT + p4 * -itx + q * d0 * d1
                h11 = rx * (p3 * iT * iT + p4 * itx * itx) + q * d1 * d1
                h22 = -p4 * ia * ia + q * d2 * d2
                h33 = p4 * ib * ib + q * d3 * d3
                h00 = q * d0 * d0
                h02 = q * d0 * d2
                h03 = q * d0 * d3
                h12 = q * d1 * d2
                h13 = q * d1 * d3
                h23 = q * d2 * d3
            acc[0] += wi * (cx[j, 0] + L)
            acc[1] += wi * (cx[j, 1] + g0)
            acc[2] += wi * g1
            acc[3] += wi * (cx[j, 2] + g2)
            acc[4] += wi * (cx[j, 3] + g3)
            acc[5] += wi * (cx[j, 4] + h00)
            acc[6] += wi * h01
            acc[7] += wi * h02
            acc[8] += wi * h03
            acc[9] += wi * h11
            acc[10] += wi * h12
            acc[11] += wi * h13
            acc[12] += wi * (cx[j, 5] + h22)
            acc[13] += wi * (cx[j, 6] + h23)
            acc[14] += wi * (cx[j, 7] + h33)
            acc[15] += wi
        for q_ in range(16):
            part[k, q_] = acc[q_]
    tot = sum_chunks(part)
    wsum = tot[15]
    log_alpha = math.log(alpha)
    # the r log(alpha) term of A1, once for all customers
    total = tot[0] + wsum * r * log_alpha
    grad[0] = tot[1] + wsum * log_alpha
    grad[1] = tot[2] + wsum * r / alpha
    grad[2] = tot[3]
    grad[3] = tot[4]
    idx = 5
    for u_ in range(4):
        for v_ in range(u_, 4):
            hess[u_, v_] = tot[idx]
            hess[v_, u_] = tot[idx]
            idx += 1
    hess[0, 1] += wsum / alpha
    hess[1, 0] += wsum / alpha
    hess[1, 1] -= wsum * r / (alpha * alpha)
    return total


@kernel
def hyp2f1_series(p, q, c, z, max_terms):
    """Gauss 2F1(p, q; c; z) for 0 <= z < 1 and c > 0 by its power series (signed terms allowed).

    Meant for the Euler-transformed BG/NBD term, whose parameters are small next to ``c``.
    Returns NaN if the series has not converged after ``max_terms`` terms.
    """
    s = 1.0
    t = 1.0
    if z == 0.0:
        return 1.0
    for n in range(max_terms):
        ratio = (p + n) * (q + n) / ((c + n) * (n + 1.0)) * z
        t *= ratio
        s += t
        ar = abs(ratio)
        if t == 0.0 or (n + 1.0 > abs(p) + abs(q) and ar < 1.0 and abs(t) * ar / (1.0 - ar) <= 1e-17 * abs(s)):
            return s
    return np.nan


@kernel
def _bgnbd_log_growth(t, x, T, r, alpha, a, b):
    """log of  2F1(r+x, b+x; a+b+x-1; z) * (1-z)**(r+x),  z = t / (alpha + T + t).

    After Euler's transformation it is (a-1) log(1-z) + log 2F1(a+b-1-r, a-1; a+b+x-1; z),
    a series with small numerator parameters for any x.
    """
    if t <= 0.0:
        return 0.0
    z = t / (alpha + T + t)
    log1mz = math.log(alpha + T) - math.log(alpha + T + t)
    c = a + b + x - 1.0
    if c <= 0.0:
        return np.nan
    f = hyp2f1_series(a + b - 1.0 - r, a - 1.0, c, z, _MAX_TERMS)
    if not f > 0.0:
        return np.nan
    return (a - 1.0) * log1mz + math.log(f)


@kernel
def _bgnbd_expected_given_alive(t, x, T, r, alpha, a, b):
    # (a+b+x-1)/(a-1) * (1 - growth term); a == 1 is a removable singularity: average a +- h
    if abs(a - 1.0) < 1e-7:
        h = 1e-7
        e1 = (a + h + b + x - 1.0) / (a + h - 1.0) * -math.expm1(_bgnbd_log_growth(t, x, T, r, alpha, a + h, b))
        e2 = (a - h + b + x - 1.0) / (a - h - 1.0) * -math.expm1(_bgnbd_log_growth(t, x, T, r, alpha, a - h, b))
        return 0.5 * (e1 + e2)
    return (a + b + x - 1.0) / (a - 1.0) * -math.expm1(_bgnbd_log_growth(t, x, T, r, alpha, a, b))


@kernel(parallel=True)
def bgnbd_expected_if_alive(params, x, T, times, modified, out):
    """``out[i, k]``: BG/NBD expected purchases in ``(T, T + times[k]]`` of a customer who is
    alive with ``x`` repeat purchases at age ``T`` (it does not depend on recency, so callers
    evaluate it once per unique (x, T)).  ``modified``: MBG/NBD's (BG/NBD's with b + 1)."""
    r, alpha, a, b = params[0], params[1], params[2], params[3]
    if modified:
        b = b + 1.0
    for i in prange(x.shape[0]):
        for k in range(times.shape[0]):
            out[i, k] = _bgnbd_expected_given_alive(times[k], x[i], T[i], r, alpha, a, b)


@kernel(parallel=True)
def bgnbd_combine(params, x, tx, T, pair, if_alive, discount, modified, alive, expected, value_weight):
    """BG/NBD predictions per customer: ``alive[i]`` = P(alive | x, t_x, T); expected purchases
    in ``(T, T + times[k]]`` = P(alive) * ``if_alive[pair[i], k]``, written to ``expected[i, k]``
    for every k if ``expected`` has a column per time, else the last one to ``expected[i, 0]``;
    ``value_weight[i]`` = ``sum_k (E_k - E_{k-1}) * discount[k]`` (times the expected spend it
    is the discounted CLV: lifetimes' monthly method with ``times`` the month ends and
    ``discount[k] = (1 + rate)**-(k+1)``).  ``modified``: MBG/NBD's P(alive), which has
    b + x in place of b + x - 1 and holds for customers without repeat purchases too."""
    r, alpha, a, b = params[0], params[1], params[2], params[3]
    if modified:
        b = b + 1.0
    nt = discount.shape[0]
    every = expected.shape[1] == nt
    for i in prange(x.shape[0]):
        xi = x[i]
        if xi > 0 or modified:
            d = math.log(a / (b + xi - 1.0)) + (r + xi) * (math.log(alpha + T[i]) - math.log(alpha + tx[i]))
            pa = _sigmoid(-d)
        else:
            pa = 1.0
        alive[i] = pa
        prev = 0.0
        acc = 0.0
        j = pair[i]
        for k in range(nt):
            e = pa * if_alive[j, k]
            if every:
                expected[i, k] = e
            acc += (e - prev) * discount[k]
            prev = e
        if not every:
            expected[i, 0] = prev
        value_weight[i] = acc


# --- Pareto/NBD --------------------------------------------------------------------

@kernel
def _log_euler_series(e, c, z, omz, out):
    """log S and d log S / d(e, c, z) for S = sum_n prod_{k<n} (e+k)/(c+k) z^n (0 <= e <= c).

    ``omz`` = 1 - z computed without cancellation.  Writes (log S, dle, dlc, dlz) to ``out``.
    """
    if z <= 0.0:
        out[0] = 0.0
        out[1] = 0.0
        out[2] = 0.0
        out[3] = e / c
        return
    s = 1.0
    t = 1.0
    se = 0.0
    sc = 0.0
    de = 0.0
    dc = 0.0
    dz = 0.0
    converged = False
    for n in range(1, _MAX_TERMS):
        se += 1.0 / (e + n - 1.0)
        sc += 1.0 / (c + n - 1.0)
        ratio = (e + n - 1.0) / (c + n - 1.0) * z
        t *= ratio
        s += t
        de += t * se
        dc -= t * sc
        dz += t * n
        if t * ratio <= 1e-17 * s * omz:
            converged = True
            break
    if not converged:
        out[0] = np.nan
        return
    out[0] = math.log(s)
    out[1] = de / s
    out[2] = dc / s
    out[3] = dz / (z * s)


@kernel
def _pareto_log_term(r, alpha, s, beta, x, y, buf, g):
    """L(y) = log of the y-end of Pareto/NBD's A_0 (lifetimes' ``_log_A_0`` terms):
    ``2F1(r+s+x, b; r+s+x+1; z) / (max(alpha,beta) + y)**(r+s+x)``; writes dL/d(r, alpha, s, beta) to ``g``."""
    a = r + s + x
    if alpha < beta:
        e, c = s + 1.0, a + 1.0
        z = (beta - alpha) / (beta + y)
        omz = (alpha + y) / (beta + y)
        _log_euler_series(e, c, z, omz, buf)
        la, lb = math.log(alpha + y), math.log(beta + y)
        L = (1.0 - r - x) * la - (s + 1.0) * lb + buf[0]
        g[0] = -la + buf[2]
        g[1] = (1.0 - r - x) / (alpha + y) - buf[3] / (beta + y)
        g[2] = -lb + buf[1] + buf[2]
        g[3] = -(s + 1.0) / (beta + y) + buf[3] * (alpha + y) / ((beta + y) * (beta + y))
    else:
        e, c = r + x, a + 1.0
        z = (alpha - beta) / (alpha + y)
        omz = (beta + y) / (alpha + y)
        _log_euler_series(e, c, z, omz, buf)
        la, lb = math.log(alpha + y), math.log(beta + y)
        L = -s * lb - (r + x) * la + buf[0]
        g[0] = -la + buf[1] + buf[2]
        g[1] = -(r + x) / (alpha + y) + buf[3] * (beta + y) / ((alpha + y) * (alpha + y))
        g[2] = -lb + buf[2]
        g[3] = -s / (beta + y) - buf[3] / (alpha + y)
    return L


@kernel
def _pareto_pattern(r, alpha, s, beta, x, tx, T, c_ll, c_dr, buf, g1, g2, gout):
    """Pareto/NBD log-likelihood of one customer minus its per-x part, the log of the
    "still alive" term (A3) and of the "dropped out" term (B); gradient of LL to ``gout``."""
    la, lb = math.log(alpha), math.log(beta)
    lT_a, lT_b = math.log(alpha + T), math.log(beta + T)
    A3 = -(r + x) * lT_a - s * lT_b
    B = -np.inf
    for q in range(4):
        g1[q] = 0.0
    if T > tx:
        L1 = _pareto_log_term(r, alpha, s, beta, x, tx, buf, g1)
        L2 = _pareto_log_term(r, alpha, s, beta, x, T, buf, g2)
        if L1 != L1 or L2 != L2:
            for q in range(4):
                gout[q] = np.nan
            return np.nan, np.nan, np.nan
        if L2 < L1:
            rho = math.exp(L2 - L1)
            logA0 = L1 + math.log1p(-rho)
            a = r + s + x
            B = math.log(s) + logA0 - math.log(a)
            for q in range(4):
                g1[q] = (g1[q] - rho * g2[q]) / (1.0 - rho)
            g1[0] -= 1.0 / a
            g1[2] += 1.0 / s - 1.0 / a
    L = _logaddexp(A3, B)
    pB = math.exp(B - L) if B > -np.inf else 0.0
    pA = 1.0 - pB
    gout[0] = c_dr + la + pA * (-lT_a) + pB * g1[0]
    gout[1] = r / alpha + pA * (-(r + x) / (alpha + T)) + pB * g1[1]
    gout[2] = lb + pA * (-lT_b) + pB * g1[2]
    gout[3] = s / beta + pA * (-s / (beta + T)) + pB * g1[3]
    return c_ll + r * la + s * lb + L, A3, B


@kernel(parallel=True)
def pareto_loglik(params, ux, xi, tx, T, w, n_chunks, grad):
    """Weighted Pareto/NBD log-likelihood (Schmittlein, Morrison & Colombo 1987, in the
    form of Fader & Hardie's note and lifetimes) and its gradient (4,); ``params`` =
    (r, alpha, s, beta); ``ux``/``xi`` as in :func:`bgnbd_loglik_hessian`; ``tx``, ``T``,
    ``w``: per pattern.  NaN if a series failed."""
    r, alpha, s, beta = params[0], params[1], params[2], params[3]
    nu = ux.shape[0]
    c_ll = np.empty(nu)
    c_dr = np.empty(nu)
    lg_r, dg_r = math.lgamma(r), digamma(r)
    for j in range(nu):
        c_ll[j] = math.lgamma(r + ux[j]) - lg_r
        c_dr[j] = digamma(r + ux[j]) - dg_r
    m = xi.shape[0]
    part = np.zeros((n_chunks, 5))
    for k in prange(n_chunks):
        lo, hi = chunk_range(m, n_chunks, k)
        buf = np.empty(4)
        g1 = np.empty(4)
        g2 = np.empty(4)
        gout = np.empty(4)
        acc = np.zeros(5)
        for i in range(lo, hi):
            j = xi[i]
            ll, _, _ = _pareto_pattern(r, alpha, s, beta, ux[j], tx[i], T[i], c_ll[j], c_dr[j], buf, g1, g2, gout)
            acc[0] += w[i] * ll
            for q in range(4):
                acc[q + 1] += w[i] * gout[q]
        for q in range(5):
            part[k, q] = acc[q]
    total = 0.0
    for q in range(4):
        grad[q] = 0.0
    for k in range(n_chunks):
        total += part[k, 0]
        for q in range(4):
            grad[q] += part[k, q + 1]
    return total


@kernel(parallel=True)
def pareto_predict(params, x, tx, T, times, discount, alive, expected, value_weight):
    """Pareto/NBD predictions per customer (or pattern); outputs as :func:`bgnbd_combine`.

    E[X(t) | x, t_x, T] = P(alive) (r+x)(beta+T) / ((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+t))**(s-1)],
    the bracket over (s-1) evaluated with expm1 so s = 1 is its limit, -log((beta+T)/(beta+T+t)).
    """
    r, alpha, s, beta = params[0], params[1], params[2], params[3]
    nt = times.shape[0]
    every = expected.shape[1] == nt
    for i in prange(x.shape[0]):
        buf = np.empty(4)
        g1 = np.empty(4)
        g2 = np.empty(4)
        gout = np.empty(4)
        _, A3, B = _pareto_pattern(r, alpha, s, beta, x[i], tx[i], T[i], 0.0, 0.0, buf, g1, g2, gout)
        if A3 != A3:
            alive[i] = np.nan
            value_weight[i] = np.nan
            for k in range(expected.shape[1]):
                expected[i, k] = np.nan
            continue
        pa = _sigmoid(A3 - B)
        alive[i] = pa
        scale = pa * (r + x[i]) * (beta + T[i]) / (alpha + T[i])
        prev = 0.0
        acc = 0.0
        for k in range(nt):
            lu = math.log(beta + T[i]) - math.log(beta + T[i] + times[k])
            if s == 1.0:
                br = -lu
            else:
                br = -math.expm1((s - 1.0) * lu) / (s - 1.0)
            e = scale * br
            if every:
                expected[i, k] = e
            acc += (e - prev) * discount[k]
            prev = e
        if not every:
            expected[i, 0] = prev
        value_weight[i] = acc


# --- Gamma-Gamma -------------------------------------------------------------------

@kernel(parallel=True)
def gamma_gamma_loglik(params, ux, xi, m, log_m, w, n_chunks, grad, hess):
    """Weighted Gamma-Gamma log-likelihood of mean spends (Fader, Hardie & Lee 2005b, as in
    lifetimes), its gradient (3,) and Hessian (3, 3); ``params`` = (p, q, v); ``ux``: unique
    frequencies (> 0), ``xi``: index per customer, ``m``: mean spend per repeat period (> 0)
    and ``log_m`` its log (fixed over a fit, so taken once), ``w``: weights."""
    p, q, v = params[0], params[1], params[2]
    nu = ux.shape[0]
    cx = np.empty((nu, 6))  # ll, dp, dq, dpp, dpq, dqq
    lg_q, dg_q, tg_q = math.lgamma(q), digamma(q), trigamma(q)
    for j in range(nu):
        x = ux[j]
        px = p * x
        dpq = digamma(px + q)
        tpq = trigamma(px + q)
        cx[j, 0] = math.lgamma(px + q) - math.lgamma(px) - lg_q + px * math.log(x)
        cx[j, 1] = x * (dpq - digamma(px) + math.log(x))
        cx[j, 2] = dpq - dg_q
        cx[j, 3] = x * x * (tpq - trigamma(px))
        cx[j, 4] = x * tpq
        cx[j, 5] = tpq - tg_q
    log_v = math.log(v)
    n = xi.shape[0]
    part = np.zeros((n_chunks, 11))
    for k in prange(n_chunks):
        lo, hi = chunk_range(n, n_chunks, k)
        acc = np.zeros(11)  # ll, gp, gq, gv, hpp, hpq, hpv, hqq, hqv, hvv, wsum
        for i in range(lo, hi):
            j = xi[i]
            x = ux[j]
            wi = w[i]
            xm = x * m[i] + v
            lxv = math.log(xm)
            ixv = 1.0 / xm
            acc[0] += wi * (cx[j, 0] + (p * x - 1.0) * log_m[i] - (p * x + q) * lxv)
            acc[1] += wi * (cx[j, 1] + x * (log_m[i] - lxv))
            acc[2] += wi * (cx[j, 2] - lxv)
            acc[3] += wi * (-(p * x + q) * ixv)
            acc[4] += wi * cx[j, 3]
            acc[5] += wi * cx[j, 4]
            acc[6] += wi * (-x * ixv)
            acc[7] += wi * cx[j, 5]
            acc[8] += wi * (-ixv)
            acc[9] += wi * (p * x + q) * ixv * ixv
            acc[10] += wi
        for q_ in range(11):
            part[k, q_] = acc[q_]
    tot = sum_chunks(part)
    wsum = tot[10]
    grad[0] = tot[1]
    grad[1] = tot[2] + wsum * log_v
    grad[2] = tot[3] + wsum * q / v
    hess[0, 0] = tot[4]
    hess[0, 1] = hess[1, 0] = tot[5]
    hess[0, 2] = hess[2, 0] = tot[6]
    hess[1, 1] = tot[7]
    hess[1, 2] = hess[2, 1] = tot[8] + wsum / v
    hess[2, 2] = tot[9] - wsum * q / (v * v)
    return tot[0] + wsum * q * log_v


@kernel
def gamma_gamma_spend(params, x, m, out):
    """E[mean spend | x, m] = (1 - w) v p / (q - 1) + w m,  w = p x / (p x + q - 1); q > 1."""
    p, q, v = params[0], params[1], params[2]
    pop = v * p / (q - 1.0)
    for i in range(x.shape[0]):
        wi = p * x[i] / (p * x[i] + q - 1.0)
        out[i] = (1.0 - wi) * pop + wi * m[i]
