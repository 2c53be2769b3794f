"""Slow, obviously correct references for the CLV code (pandas, SciPy, plain Python)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import integrate
from scipy.special import betaln, gammaln, hyp2f1

US_PER_DAY = 86_400_000_000


def period_index(times: pd.Series, period: str) -> np.ndarray:
    """Integer period of each time: pandas' own periods (D, W = Monday..Sunday, M), as ordinals
    counted from 1970-01-01's period."""
    freq = {"day": "D", "week": "W", "month": "M"}[period]
    t = pd.to_datetime(times)
    return (t.dt.to_period(freq).astype("int64") - pd.Timestamp("1970-01-01").to_period(freq).ordinal).to_numpy()


def btyd_summary(df: pd.DataFrame, as_of, *, period="day", divisor=1.0, holdout_start=None, scale=100):
    """The BTYD summary by pandas group-bys, with lifetimes' definitions.

    ``df``: customer_id, order_time, amount (float, already rounded to 1/scale); lines with a
    negative amount are refunds and are dropped; ``as_of`` is exclusive.  Money is summed in
    integer minor units.  Returns a DataFrame indexed by customer_id.
    """
    d = df[(df["amount"] >= 0) & (pd.to_datetime(df["order_time"]) < pd.Timestamp(as_of))].copy()
    d["per"] = period_index(d["order_time"], period)
    d["minor"] = np.rint(d["amount"] * scale).astype(np.int64)
    last = period_index(pd.Series([pd.Timestamp(as_of) - pd.Timedelta(microseconds=1)]), period)[0]
    if holdout_start is not None:
        h = period_index(pd.Series([pd.Timestamp(holdout_start)]), period)[0]
        cal_last = h - 1
    else:
        h = np.iinfo(np.int64).max
        cal_last = last
    per = d.groupby(["customer_id", "per"])["minor"].sum().reset_index()
    cal = per[per["per"] < h]
    rows = {}
    for cid, g in cal.groupby("customer_id"):
        g = g.sort_values("per")
        freq = len(g) - 1
        repeat = int(g["minor"].iloc[1:].sum())
        rows[cid] = {
            "frequency": float(freq),
            "recency": (g["per"].iloc[-1] - g["per"].iloc[0]) / divisor,
            "T": (cal_last - g["per"].iloc[0]) / divisor,
            "monetary_value": repeat / scale / freq if freq else 0.0,
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "customer_id"
    if holdout_start is None:
        return out
    out.columns = [c + "_cal" for c in out.columns]
    hold = per[per["per"] >= h].groupby("customer_id")["minor"].agg(["count", "sum"])
    out["frequency_holdout"] = hold["count"].reindex(out.index).fillna(0).astype(float)
    money = (hold["sum"] / scale / hold["count"]).reindex(out.index).fillna(0.0)
    out["monetary_value_holdout"] = money
    out["duration_holdout"] = (last - cal_last) / divisor
    return out


# --- log-likelihoods in the papers' closed forms --------------------------------------

def bgnbd_ll(params, x, tx, T):
    """Fader, Hardie & Lee (2005) eq. 6, per customer (as lifetimes writes it)."""
    r, alpha, a, b = params
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    A1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    A2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    A3 = -(r + x) * np.log(alpha + T)
    A4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + tx)
    return A1 + A2 + np.where(x > 0, np.logaddexp(A3, A4), A3)


def pareto_ll_quad(params, x, tx, T):
    """Pareto/NBD log-likelihood per customer from the integral form (no 2F1):

    L = G(r+x) a^r b^s / G(r) [ (a+T)^-(r+x) (b+T)^-s + s int_tx^T (a+y)^-(r+x) (b+y)^-(s+1) dy ]
    with the integrand scaled by its value at y = tx (so x in the thousands is fine).
    """
    r, alpha, s, beta = params
    out = []
    for xi, ti, Ti in zip(np.atleast_1d(x), np.atleast_1d(tx), np.atleast_1d(T)):
        log_f0 = -(r + xi) * math.log(alpha + ti) - (s + 1) * math.log(beta + ti)

        def f(y):
            return math.exp(-(r + xi) * math.log(alpha + y) - (s + 1) * math.log(beta + y) - log_f0)

        integral, _ = integrate.quad(f, ti, Ti, epsabs=0, epsrel=1e-13, limit=500)
        alive = -(r + xi) * math.log(alpha + Ti) - s * math.log(beta + Ti)
        dead = math.log(s) + log_f0 + math.log(integral) if integral > 0 else -math.inf
        out.append(math.lgamma(r + xi) - math.lgamma(r) + r * math.log(alpha) + s * math.log(beta)
                   + np.logaddexp(alive, dead))
    return np.array(out)


def pareto_ll_hyp2f1(params, x, tx, T):
    """lifetimes' Pareto/NBD log-likelihood with SciPy's hyp2f1 (fine for moderate x)."""
    r, alpha, s, beta = params
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    if alpha < beta:
        lo, hi, t = alpha, beta, r + x
    else:
        lo, hi, t = beta, alpha, s + 1
    rsx = r + s + x
    d = hi - lo
    p1 = hyp2f1(rsx, t, rsx + 1, d / (hi + tx))
    p2 = hyp2f1(rsx, t, rsx + 1, d / (hi + T))
    log_A0 = np.log(p1 / (hi + tx) ** rsx - p2 / (hi + T) ** rsx)
    A1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    A2 = np.logaddexp(-(r + x) * np.log(alpha + T) - s * np.log(beta + T), np.log(s) + log_A0 - np.log(rsx))
    return A1 + A2


def gamma_gamma_ll(params, x, m):
    """lifetimes' Gamma-Gamma log-likelihood per customer."""
    p, q, v = params
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    return (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v) + (p * x - 1) * np.log(m)
            + p * x * np.log(x) - (p * x + q) * np.log(x * m + v))


# --- simulated populations -------------------------------------------------------------

def simulate_bgnbd(n, r, alpha, a, b, T, rng):
    """(x, t_x) of n BG/NBD customers observed for T (array) after their first purchase.

    A customer buys at a Poisson rate lambda ~ gamma(r, 1/alpha) and drops out after each
    repeat purchase with probability p ~ beta(a, b): x = min(K, N(T)) with K ~ geometric(p)
    and N(T) ~ Poisson(lambda T), and t_x is the x-th of N(T) uniform arrival times.
    """
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    N = rng.poisson(lam * T)
    K = rng.geometric(p)
    x = np.minimum(K, N)
    tx = np.where(x > 0, rng.beta(np.maximum(x, 1), np.maximum(N - x + 1, 1)) * T, 0.0)
    return x.astype(float), tx


def simulate_pareto(n, r, alpha, s, beta, T, rng):
    """(x, t_x) of n Pareto/NBD customers: Poisson purchases at lambda ~ gamma(r, 1/alpha)
    while alive, lifetime ~ exponential(mu), mu ~ gamma(s, 1/beta)."""
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    active = np.minimum(rng.exponential(1.0 / mu), T)
    x = rng.poisson(lam * active)
    tx = np.where(x > 0, rng.beta(np.maximum(x, 1), 1.0) * active, 0.0)
    return x.astype(float), tx


# --- MBG/NBD, BG/BB and sBG ------------------------------------------------------------

def mbgnbd_ll(params, x, tx, T):
    """MBG/NBD log-likelihood per customer as lifetimes writes it (Batislam et al. 2007)."""
    r, alpha, a, b = params
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    A1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    A2 = gammaln(a + b) + gammaln(b + x + 1) - gammaln(b) - gammaln(a + b + x + 1)
    A3 = -(r + x) * np.log(alpha + T)
    A4 = np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
    return A1 + A2 + A3 + np.logaddexp(A4, 0.0)


def bgbb_ll(params, x, tx, n):
    """BG/BB log-likelihood per customer, FHS (2010) eq. 5 term by term in plain Python."""
    al, be, ga, de = params
    out = []
    for xi, ti, ni in zip(np.atleast_1d(x), np.atleast_1d(tx), np.atleast_1d(n)):
        xi, ti, ni = int(xi), int(ti), int(ni)
        terms = [betaln(al + xi, be + ni - xi) - betaln(al, be) + betaln(ga, de + ni) - betaln(ga, de)]
        for i in range(ni - ti):
            terms.append(betaln(al + xi, be + ti - xi + i) - betaln(al, be) + betaln(ga + 1, de + ti + i)
                         - betaln(ga, de))
        out.append(float(np.logaddexp.reduce(terms)))
    return np.array(out)


def bgbb_alive_and_expected(params, x, tx, n, m):
    """(P(alive at n + 1), E[transactions in opportunities n+1..n+m]) of one BG/BB customer,
    by the scenario sums of FHS (2010): only "alive through n + j" scenarios transact at
    n + j, each weighted by exact beta integrals, over the likelihood of :func:`bgbb_ll`."""
    al, be, ga, de = params
    L = math.exp(bgbb_ll(params, [x], [tx], [n])[0])
    alive = math.exp(betaln(al + x, be + n - x) - betaln(al, be) + betaln(ga, de + n + 1) - betaln(ga, de)) / L
    expected = sum(math.exp(betaln(al + x + 1, be + n - x) - betaln(al, be) + betaln(ga, de + n + j)
                            - betaln(ga, de)) for j in range(1, m + 1)) / L
    return alive, expected


def sbg_ll(params, churned_at, survived):
    """sBG log-likelihood: sum over churn periods t of log P(T = t) and over survivors of
    log S(t), P and S by the recursions of Fader & Hardie (2007, eqs. 7-8)."""
    al, be = params

    def P(t):
        v = al / (al + be)
        for j in range(2, t + 1):
            v *= (be + j - 2) / (al + be + j - 1)
        return v

    def S(t):
        return 1.0 - sum(P(j) for j in range(1, t + 1))

    return sum(math.log(P(t)) for t in churned_at) + sum(math.log(S(t)) for t in survived)


def sbg_derl_direct(params, k, d, terms=20000):
    """DERL of a customer active after k renewals by the defining sum over future periods:
    sum_{t>=k+1} S(t)/S(k) / (1 + d)**(t - k - 1)."""
    al, be = params
    s, tot, disc = 1.0, 0.0, 1.0
    for j in range(terms):
        s *= (be + k + j) / (al + be + k + j)
        tot += s * disc
        disc /= 1.0 + d
    return tot


def simulate_bgbb(n_opp, alpha, beta, gamma, delta, rng):
    """(x, t_x) of BG/BB customers with ``n_opp`` (array) opportunities each: at each
    opportunity a living customer dies with probability theta, then transacts with p."""
    size = len(n_opp)
    p = rng.beta(alpha, beta, size)
    theta = rng.beta(gamma, delta, size)
    life = rng.geometric(theta) - 1  # opportunities survived before death
    alive_until = np.minimum(life, n_opp)
    top = int(n_opp.max())
    t = np.arange(1, top + 1)[None, :]
    buys = (rng.random((size, top)) < p[:, None]) & (t <= alive_until[:, None])
    x = buys.sum(axis=1)
    tx = np.where(x > 0, top - np.argmax(buys[:, ::-1], axis=1), 0)
    return x.astype(float), tx.astype(float)


def simulate_mbgnbd(n, r, alpha, a, b, T, rng):
    """(x, t_x) of MBG/NBD customers: as BG/NBD, but the first dropout chance comes right
    after the first purchase (before any repeat)."""
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    N = rng.poisson(lam * T)
    K = rng.geometric(p) - 1  # repeat purchases before dropping out (0: gone at once)
    x = np.minimum(K, N)
    tx = np.where(x > 0, rng.beta(np.maximum(x, 1), np.maximum(N - x + 1, 1)) * T, 0.0)
    return x.astype(float), tx
