"""Discrete-time BTYD kernels: the BG/BB model of purchases at discrete opportunities and the
shifted-beta-geometric (sBG) model of contract renewals (NumPy in, NumPy out).

BG/BB (Fader, Hardie & Shang 2010)
----------------------------------
A customer has ``n`` transaction opportunities after the first purchase; while alive they
transact at each with probability ``p ~ beta(alpha, beta)`` and, at the start of each, die
with probability ``theta ~ beta(gamma, delta)``.  ``x`` transactions, the last at
opportunity ``t_x`` (0 when ``x = 0``), have the likelihood (FHS eq. 5)

    L = B(alpha+x, beta+n-x)/B(alpha,beta) * B(gamma, delta+n)/B(gamma,delta)
        + sum_{i=0}^{n-t_x-1} B(alpha+x, beta+t_x-x+i)/B(alpha,beta) * B(gamma+1, delta+t_x+i)/B(gamma,delta)

Fits run over patterns ``(x, t_x, n)`` sorted by ``(x, t_x, n)``: customers with the same
``(x, t_x)`` (a *group*) share the sum's terms, which are added once, in order of ``i``,
up to the group's largest ``n`` — so a fit costs one pass over ``n - t_x`` terms per group,
not per pattern.  Each term is a few lookups in tables of ``lgamma``, ``digamma`` and
``trigamma`` at ``c + k`` (``c`` one of alpha, beta, alpha+beta, delta, gamma+delta, ``k``
a whole number): the arguments of every beta function above are such values.  The terms
of the sum decrease with ``i`` (each ratio is below 1), so the sum is kept relative to its
first term and cannot overflow.

sBG (Fader & Hardie 2007)
-------------------------
A contract customer renews at the end of each period with probability ``1 - theta``,
``theta ~ beta(alpha, beta)``: a lifetime of ``t`` periods (churn at the ``t``-th renewal
decision) has probability ``P(t) = B(alpha+1, beta+t-1)/B(alpha,beta)`` and surviving
``t`` decisions ``S(t) = B(alpha, beta+t)/B(alpha,beta)``.

Sums run over ``n_chunks`` fixed chunks added in order, so results do not depend on the
thread count.  Parameters: BG/BB ``(alpha, beta, gamma, delta)``, sBG ``(alpha, beta)``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._policy import kernel
from .clv_models import chunk_range, digamma, sum_chunks, trigamma

__all__ = [
    "gamma_tables",
    "check_bgbb_inputs",
    "bgbb_groups",
    "bgbb_loglik_hessian",
    "bgbb_predict",
    "bgbb_frequency_pmf",
    "sbg_loglik_hessian",
    "sbg_customer_predict",
]

_REANCHOR = 32  # table entries between direct evaluations (the recurrences in between lose ~1 ulp a step)


@kernel
def gamma_tables(c, out):
    """``out[0, k] = lgamma(c + k)``, ``out[1, k] = digamma(c + k)``, ``out[2, k] = trigamma(c + k)``
    for ``k = 0 .. out.shape[1] - 1`` (``c > 0``): direct every 32 entries and below 16 (where
    trigamma falls fast and its recurrence would cancel), recurrences between."""
    for k in range(out.shape[1]):
        z = c + k
        if k % _REANCHOR == 0 or z < 16.0:
            out[0, k] = math.lgamma(z)
            out[1, k] = digamma(z)
            out[2, k] = trigamma(z)
        else:
            zp = z - 1.0
            out[0, k] = out[0, k - 1] + math.log(zp)
            out[1, k] = out[1, k - 1] + 1.0 / zp
            out[2, k] = out[2, k - 1] - 1.0 / (zp * zp)


@kernel
def check_bgbb_inputs(x, tx, n, out):
    """First row breaking each rule (or -1), and how many do, into ``out`` (7, 2): 0 x not
    finite, 1 t_x not finite, 2 n not finite, 3 a negative value, 4 a value not a whole
    number, 5 t_x > n, 6 x > t_x or (x = 0 and t_x != 0): x transactions in opportunities
    1..t_x, the last at t_x."""
    for r in range(7):
        out[r, 0] = -1
        out[r, 1] = 0
    for i in range(x.shape[0]):
        xi, ti, ni = x[i], tx[i], n[i]
        bad = -1
        if not math.isfinite(xi):
            bad = 0
        elif not math.isfinite(ti):
            bad = 1
        elif not math.isfinite(ni):
            bad = 2
        elif xi < 0 or ti < 0 or ni < 0:
            bad = 3
        elif xi != math.floor(xi) or ti != math.floor(ti) or ni != math.floor(ni):
            bad = 4
        elif ti > ni:
            bad = 5
        elif xi > ti or (xi == 0 and ti != 0):
            bad = 6
        if bad >= 0:
            if out[bad, 0] < 0:
                out[bad, 0] = i
            out[bad, 1] += 1


@kernel
def bgbb_groups(x, tx, starts):
    """Starts of the runs of equal ``(x, t_x)`` in patterns sorted by ``(x, t_x, n)``, into
    ``starts`` (length >= patterns + 1); returns the number of groups G (``starts[G]`` = patterns)."""
    g = 0
    for i in range(x.shape[0]):
        if i == 0 or x[i] != x[i - 1] or tx[i] != tx[i - 1]:
            starts[g] = i
            g += 1
    starts[g] = x.shape[0]
    return g


@kernel(inline=True)
def _outer_add(acc, off, h, s):
    # acc[off:off+10] += s * upper triangle of h h' (00 01 02 03 11 12 13 22 23 33)
    q = off
    for u in range(4):
        for v in range(u, 4):
            acc[q] += s * h[u] * h[v]
            q += 1


@kernel(parallel=True)
def bgbb_loglik_hessian(params, x, tx, n, w, starts, n_groups, n_chunks, grad, hess):
    """Weighted BG/BB log-likelihood (FHS 2010 eq. 5), its gradient (4,) and Hessian (4, 4)
    with respect to (alpha, beta, gamma, delta).

    Patterns (m,) sorted by ``(x, t_x, n)``, whole numbers as int64: ``x``, ``tx``, ``n``,
    weights ``w`` (float64); ``starts[:n_groups + 1]`` from :func:`bgbb_groups`.  Returns
    ``sum(w * LL)``.  Per pattern, L is a mixture of terms ``exp(l_k)`` (the "alive at n"
    term and one per possible death opportunity), so with ``p_k = exp(l_k) / L``:
    grad log L = sum p_k g_k and hess log L = sum p_k (H_k + g_k g_k') - grad grad'.  Parts
    common to every term of a pattern (the ``alpha + x`` and normalising terms) are added
    once, outside the mixture.
    """
    al, be, ga, de = params[0], params[1], params[2], params[3]
    K = 1
    for i in range(n.shape[0]):
        if n[i] + 1 > K:
            K = n[i] + 1
    # tables: 0 alpha+k, 1 beta+k, 2 alpha+beta+k, 3 delta+k, 4 gamma+delta+k
    tab = np.empty((5, 3, K))
    gamma_tables(al, tab[0])
    gamma_tables(be, tab[1])
    gamma_tables(al + be, tab[2])
    gamma_tables(de, tab[3])
    gamma_tables(ga + de, tab[4])
    log_ga = math.log(ga)
    ig = 1.0 / ga
    part = np.zeros((n_chunks, 16))  # ll, grad (4), hess upper (10), wsum
    for k in prange(n_chunks):
        glo, ghi = chunk_range(n_groups, n_chunks, k)
        acc = np.zeros(16)
        s1 = np.zeros(4)
        s2 = np.zeros(10)
        sh = np.zeros(6)
        h = np.zeros(4)
        hA = np.zeros(4)
        gbar = np.zeros(4)
        for gi in range(glo, ghi):
            p0, p1 = starts[gi], starts[gi + 1]
            xx = x[p0]
            t = tx[p0]
            s0 = 0.0
            for q_ in range(4):
                s1[q_] = 0.0
            for q_ in range(10):
                s2[q_] = 0.0
            for q_ in range(6):
                sh[q_] = 0.0
            l0 = 0.0
            i = 0
            for p in range(p0, p1):
                nq = n[p]
                # the sum's terms up to i = nq - t - 1 (those of smaller n were added already)
                while i < nq - t:
                    v = t + i
                    u = t - xx + i
                    li = log_ga + tab[1, 0, u] - tab[2, 0, v] + tab[3, 0, v] - tab[4, 0, v + 1]
                    if i == 0:
                        l0 = li
                    e = math.exp(li - l0)
                    h[0] = -tab[2, 1, v]
                    h[1] = tab[1, 1, u] - tab[2, 1, v]
                    h[2] = ig - tab[4, 1, v + 1]
                    h[3] = tab[3, 1, v] - tab[4, 1, v + 1]
                    s0 += e
                    for q_ in range(4):
                        s1[q_] += e * h[q_]
                    _outer_add(s2, 0, h, e)
                    sh[0] += e * -tab[2, 2, v]                          # aa (= ab)
                    sh[1] += e * (tab[1, 2, u] - tab[2, 2, v])          # bb
                    sh[2] += e * (-ig * ig - tab[4, 2, v + 1])          # gg
                    sh[3] += e * -tab[4, 2, v + 1]                      # gd
                    sh[4] += e * (tab[3, 2, v] - tab[4, 2, v + 1])      # dd
                    i += 1
                # the "alive at n" term
                nx = nq - xx
                lA = tab[1, 0, nx] - tab[2, 0, nq] + tab[3, 0, nq] - tab[4, 0, nq]
                hA[0] = -tab[2, 1, nq]
                hA[1] = tab[1, 1, nx] - tab[2, 1, nq]
                hA[2] = -tab[4, 1, nq]
                hA[3] = tab[3, 1, nq] - tab[4, 1, nq]
                HA_aa = -tab[2, 2, nq]
                HA_bb = tab[1, 2, nx] - tab[2, 2, nq]
                HA_gg = -tab[4, 2, nq]
                HA_dd = tab[3, 2, nq] - tab[4, 2, nq]
                if s0 > 0.0:
                    lB = l0 + math.log(s0)
                    m = max(lA, lB)
                    eA = math.exp(lA - m)
                    eB = math.exp(lB - m)
                    tot = eA + eB
                    pA = eA / tot
                    pB = eB / tot
                    ll = m + math.log(tot)
                    cB = pB / s0
                else:
                    ll = lA
                    pA = 1.0
                    cB = 0.0
                for q_ in range(4):
                    gbar[q_] = pA * hA[q_] + cB * s1[q_]
                wi = w[p]
                acc[0] += wi * (ll + tab[0, 0, xx])
                acc[1] += wi * (gbar[0] + tab[0, 1, xx])
                acc[2] += wi * gbar[1]
                acc[3] += wi * gbar[2]
                acc[4] += wi * gbar[3]
                # hess = E[H_k] + E[h h'] - gbar gbar' (+ the alpha + x term)
                off = 5
                q = 0
                for uu in range(4):
                    for vv in range(uu, 4):
                        acc[off + q] += wi * (pA * hA[uu] * hA[vv] + cB * s2[q] - gbar[uu] * gbar[vv])
                        q += 1
                acc[5] += wi * (pA * HA_aa + cB * sh[0] + tab[0, 2, xx])    # aa
                acc[6] += wi * (pA * HA_aa + cB * sh[0])                    # ab
                acc[9] += wi * (pA * HA_bb + cB * sh[1])                    # bb
                acc[12] += wi * (pA * HA_gg + cB * sh[2])                   # gg
                acc[13] += wi * (pA * HA_gg + cB * sh[3])                   # gd
                acc[14] += wi * (pA * HA_dd + cB * sh[4])                   # dd
                acc[15] += wi
        for q_ in range(16):
            part[k, q_] = acc[q_]
    tot_ = sum_chunks(part)
    wsum = tot_[15]
    # the normalising terms shared by every customer: -lbeta(alpha, beta) - lgamma(delta) + lgamma(gamma + delta)
    c_ll = -(tab[0, 0, 0] + tab[1, 0, 0] - tab[2, 0, 0]) - tab[3, 0, 0] + tab[4, 0, 0]
    total = tot_[0] + wsum * c_ll
    grad[0] = tot_[1] + wsum * (-tab[0, 1, 0] + tab[2, 1, 0])
    grad[1] = tot_[2] + wsum * (-tab[1, 1, 0] + tab[2, 1, 0])
    grad[2] = tot_[3] + wsum * tab[4, 1, 0]
    grad[3] = tot_[4] + wsum * (-tab[3, 1, 0] + tab[4, 1, 0])
    idx = 5
    for u_ in range(4):
        for v_ in range(u_, 4):
            hess[u_, v_] = tot_[idx]
            hess[v_, u_] = tot_[idx]
            idx += 1
    hess[0, 0] += wsum * (-tab[0, 2, 0] + tab[2, 2, 0])
    hess[0, 1] += wsum * tab[2, 2, 0]
    hess[1, 0] += wsum * tab[2, 2, 0]
    hess[1, 1] += wsum * (-tab[1, 2, 0] + tab[2, 2, 0])
    hess[2, 2] += wsum * tab[4, 2, 0]
    hess[2, 3] += wsum * tab[4, 2, 0]
    hess[3, 2] += wsum * tab[4, 2, 0]
    hess[3, 3] += wsum * (-tab[3, 2, 0] + tab[4, 2, 0])
    return total


@kernel
def _lbeta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


@kernel
def _bgbb_log_lik(al, be, ga, de, x, t, n):
    """log L of one customer (FHS eq. 5), the sum's terms by their ratios."""
    common = math.lgamma(al + x) - _lbeta(al, be) - _lbeta(ga, de)
    lA = math.lgamma(be + n - x) - math.lgamma(al + be + n) + _lbeta(ga, de + n)
    if n <= t:
        return common + lA
    l0 = math.lgamma(be + t - x) - math.lgamma(al + be + t) + _lbeta(ga + 1.0, de + t)
    s = 1.0
    e = 1.0
    for i in range(n - t - 1):
        e *= (be + t - x + i) / (al + be + t + i) * (de + t + i) / (ga + de + t + i + 1.0)
        s += e
    lB = l0 + math.log(s)
    m = max(lA, lB)
    return common + m + math.log(math.exp(lA - m) + math.exp(lB - m))


@kernel(parallel=True)
def bgbb_predict(params, x, tx, n, future, steps, discount, alive, expected, value_weight):
    """BG/BB predictions per customer (or pattern), whole-number inputs as int64.

    ``alive[i]`` = P(alive at opportunity n + ``future`` | x, t_x, n) (FHS eq. 11 with
    ``future = 1``); ``steps`` (ascending, int64): opportunities after n at which the
    expected transactions E[X(n, n + steps[k])] (FHS eq. 13) are written to
    ``expected[i, k]`` if ``expected`` has a column per step, else the last one to
    ``expected[i, 0]``; ``value_weight[i]`` = ``sum_k (E_k - E_{k-1}) * discount[k]``.
    E is summed over the future opportunities j: E[p | data] * P(alive at n + j), whole
    numbers of opportunities only, with no singularity at gamma = 1.
    """
    al, be, ga, de = params[0], params[1], params[2], params[3]
    ns = steps.shape[0]
    every = expected.shape[1] == ns
    lb_gd = _lbeta(ga, de)
    for i in prange(x.shape[0]):
        xi, ti, ni = x[i], tx[i], n[i]
        ll = _bgbb_log_lik(al, be, ga, de, xi, ti, ni)
        # log P(alive at n) = log of the "alive at n" term over L
        log_alive_n = (math.lgamma(al + xi) + math.lgamma(be + ni - xi) - math.lgamma(al + be + ni) - _lbeta(al, be)
                       + _lbeta(ga, de + ni) - lb_gd - ll)
        alive[i] = math.exp(log_alive_n + _lbeta(ga, de + ni + future) - _lbeta(ga, de + ni))
        mean_p = (al + xi) / (al + be + ni)
        pa = math.exp(log_alive_n)
        cum = 0.0
        j = 0
        prev = 0.0
        acc = 0.0
        for k in range(ns):
            while j < steps[k]:
                pa *= (de + ni + j) / (ga + de + ni + j)  # alive at n + j + 1
                cum += pa
                j += 1
            e = mean_p * cum
            if every:
                expected[i, k] = e
            acc += (e - prev) * discount[k]
            prev = e
        if not every:
            expected[i, 0] = prev
        value_weight[i] = acc


@kernel
def bgbb_frequency_pmf(params, n, out):
    """``out[x]`` = P(X(n) = x), x = 0..n: transactions of a new customer in n opportunities
    (FHS eq. 7)."""
    al, be, ga, de = params[0], params[1], params[2], params[3]
    lb_ab = _lbeta(al, be)
    lb_gd = _lbeta(ga, de)
    for xx in range(n + 1):
        lc = math.lgamma(n + 1.0) - math.lgamma(xx + 1.0) - math.lgamma(n - xx + 1.0)
        s = math.exp(lc + _lbeta(al + xx, be + n - xx) - lb_ab + _lbeta(ga, de + n) - lb_gd)
        for i in range(xx, n):
            lci = math.lgamma(i + 1.0) - math.lgamma(xx + 1.0) - math.lgamma(i - xx + 1.0)
            s += math.exp(lci + _lbeta(al + xx, be + i - xx) - lb_ab + _lbeta(ga + 1.0, de + i) - lb_gd)
        out[xx] = s


# --- sBG ------------------------------------------------------------------------------

@kernel
def sbg_loglik_hessian(params, t, churned, survived, grad, hess):
    """Weighted sBG log-likelihood, its gradient (2,) and Hessian (2, 2) in (alpha, beta).

    Per unique period count ``t[j]`` (int64, >= 0): ``churned[j]`` customers churned at
    their ``t[j]``-th renewal decision (P(T = t), t >= 1) and ``survived[j]`` have survived
    ``t[j]`` decisions and are still active (S(t), right-censored)."""
    al, be = params[0], params[1]
    dg_ab, tg_ab = digamma(al + be), trigamma(al + be)
    dg_b, tg_b = digamma(be), trigamma(be)
    lg_ab_b = math.lgamma(al + be) - math.lgamma(be)
    total = 0.0
    g0 = g1 = h00 = h01 = h11 = 0.0
    for j in range(t.shape[0]):
        tt = t[j]
        wc, ws = churned[j], survived[j]
        dabt, tabt = digamma(al + be + tt), trigamma(al + be + tt)
        lg_abt = math.lgamma(al + be + tt)
        if wc > 0:
            # log P(t) = log(alpha) + lgamma(beta+t-1) - lgamma(alpha+beta+t) + lgamma(alpha+beta) - lgamma(beta)
            total += wc * (math.log(al) + math.lgamma(be + tt - 1.0) - lg_abt + lg_ab_b)
            g0 += wc * (1.0 / al - dabt + dg_ab)
            g1 += wc * (digamma(be + tt - 1.0) - dabt + dg_ab - dg_b)
            h00 += wc * (-1.0 / (al * al) - tabt + tg_ab)
            h01 += wc * (-tabt + tg_ab)
            h11 += wc * (trigamma(be + tt - 1.0) - tabt + tg_ab - tg_b)
        if ws > 0 and tt > 0:
            # log S(t) = lgamma(beta+t) - lgamma(alpha+beta+t) + lgamma(alpha+beta) - lgamma(beta)
            total += ws * (math.lgamma(be + tt) - lg_abt + lg_ab_b)
            g0 += ws * (-dabt + dg_ab)
            g1 += ws * (digamma(be + tt) - dabt + dg_ab - dg_b)
            h00 += ws * (-tabt + tg_ab)
            h01 += ws * (-tabt + tg_ab)
            h11 += ws * (trigamma(be + tt) - tabt + tg_ab - tg_b)
    grad[0] = g0
    grad[1] = g1
    hess[0, 0] = h00
    hess[0, 1] = h01
    hess[1, 0] = h01
    hess[1, 1] = h11
    return total


@kernel(parallel=True)
def sbg_customer_predict(params, renewals, horizon, z, max_terms, renew_prob, expected, derl):
    """sBG predictions for active customers who have made ``renewals[i]`` renewals (int64).

    ``renew_prob[i]`` = P(renewing at the next decision) = (beta + k) / (alpha + beta + k);
    ``expected[i]`` = expected renewals in the next ``horizon`` decisions; ``derl[i]`` = the
    discounted expected residual lifetime (Fader & Hardie 2010): the expected number of
    future periods paid for, the next one undiscounted, each later one discounted by
    ``z = 1 / (1 + d)`` more, = renew_prob * 2F1(1, beta + k + 1; alpha + beta + k + 1; z).
    ``z = 1`` (no discount) gives (beta + k) / (alpha - 1), infinite for alpha <= 1.  A series
    not converged after ``max_terms`` terms gives NaN.
    """
    al, be = params[0], params[1]
    for i in prange(renewals.shape[0]):
        k = renewals[i]
        r1 = (be + k) / (al + be + k)
        renew_prob[i] = r1
        s = 1.0
        cum = 0.0
        for j in range(horizon):
            s *= (be + k + j) / (al + be + k + j)  # S(k + j + 1) / S(k)
            cum += s
        expected[i] = cum
        if z >= 1.0:
            derl[i] = (be + k) / (al - 1.0) if al > 1.0 else np.inf
            continue
        tot = 1.0
        term = 1.0
        ok = False
        for j in range(max_terms):
            ratio = (be + k + 1.0 + j) / (al + be + k + 1.0 + j) * z
            term *= ratio
            tot += term
            if term * z <= 1e-17 * tot * (1.0 - z):
                ok = True
                break
        derl[i] = r1 * tot if ok else np.nan
