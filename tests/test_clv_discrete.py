"""MBG/NBD, BG/BB and sBG: lifetimes' fits and predictions on its shipped CDNOW and donations
data (tests/data/lifetimes_btyd_reference.json, made by make_lifetimes_btyd_reference.py),
the published BG/BB and sBG parameters, log-likelihoods against plain-Python references,
analytic gradients and Hessians against finite differences, parameter recovery, the holdout
comparison and bad input."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naive_clv import (bgbb_alive_and_expected, bgbb_ll, mbgnbd_ll, sbg_derl_direct, sbg_ll, simulate_bgbb,
                       simulate_mbgnbd)
from rfmx import RfmxError
from rfmx.clv import (BGBB, BGNBD, MBGNBD, SBG, GammaGamma, calibration_holdout_table, compare_models,
                      customer_lifetime_value, load_model, rf_matrix, summary)
from rfmx.clv.models import compress

DATA = os.path.join(os.path.dirname(__file__), "data")
CDNOW = os.path.join(DATA, "cdnow_sample.csv.gz")
REL = 1e-5  # "equal to lifetimes'": parameters and log-likelihoods of two optimizers


@pytest.fixture(scope="module")
def ref():
    with open(os.path.join(DATA, "lifetimes_btyd_reference.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def cdnow():
    pub = pd.read_csv(os.path.join(DATA, "cdnow_customers_summary.csv"))
    return {"frequency": pub["x"].to_numpy(float), "recency": pub["t_x"].to_numpy(float),
            "T": pub["T"].to_numpy(float), "monetary_value": pub["zbar"].to_numpy(float)}


@pytest.fixture(scope="module")
def donations():
    d = pd.read_csv(os.path.join(DATA, "donations.csv"))
    return {"frequency": d["frequency"].to_numpy(), "recency": d["recency"].to_numpy(),
            "n_periods": d["periods"].to_numpy(), "weights": d["weights"].to_numpy()}


def _values(model):
    return np.array([model.params_[k] for k in model.param_names])


def _with_params(cls, values, unit=None):
    m = cls()
    m.params_ = dict(zip(cls.param_names, values))
    m.time_unit_ = unit
    return m


def _lifetimes_ll(entry, n, shift=0.0):
    """Total log-likelihood from lifetimes' objective (mean negative log-likelihood); ``shift``:
    what lifetimes' rescaling of time to T / max(T) adds to it."""
    return -entry["objective"] * n - shift


# --- MBG/NBD against lifetimes' ModifiedBetaGeoFitter on CDNOW -----------------------------

def test_mbgnbd_fit_equals_lifetimes(cdnow, ref):
    m = MBGNBD().fit(cdnow)
    r = ref["mbgnbd"]
    np.testing.assert_allclose(_values(m), r["params"], rtol=REL)
    np.testing.assert_allclose([m.standard_errors_[k] for k in m.param_names], r["standard_errors"], rtol=1e-4)
    # lifetimes fits on T / max(T): its likelihood of purchase times differs by sum(x) log(max T)
    shift = cdnow["frequency"].sum() * math.log(cdnow["T"].max())
    np.testing.assert_allclose(m.log_likelihood_, _lifetimes_ll(r, r["n"], shift), rtol=REL)
    np.testing.assert_allclose(m.log_likelihood_, mbgnbd_ll(_values(m), cdnow["frequency"], cdnow["recency"],
                                                            cdnow["T"]).sum(), rtol=1e-12)
    assert m.n_customers_ == 2357 and m.optimizer_["message"] == "Newton: converged"


def test_mbgnbd_penalizer_equals_lifetimes(cdnow, ref):
    # lifetimes penalizes alpha in units of max(T): so does rfmx, whatever the time unit
    m = MBGNBD(penalizer=0.05).fit(cdnow)
    np.testing.assert_allclose(_values(m), ref["mbgnbd_penalized"]["params"], rtol=REL)
    days = {k: v * 7 if k in ("recency", "T") else v for k, v in cdnow.items()}
    d = MBGNBD(penalizer=0.05).fit(days)
    np.testing.assert_allclose(_values(d) / [1, 7, 1, 1], _values(m), rtol=1e-7)


def test_mbgnbd_predictions_equal_lifetimes(cdnow, ref):
    pred = pd.read_csv(os.path.join(DATA, "lifetimes_mbgnbd_predictions.csv.gz"))
    m = _with_params(MBGNBD, ref["mbgnbd"]["params"], "week")

    def close(got, exp):
        np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-12)

    close(m.probability_alive(cdnow), pred["prob_alive"])
    both = m.expected_purchases([10.0, 39.0], cdnow)
    close(both[:, 0], pred["expected_10"])
    close(both[:, 1], pred["expected_39"])
    close(m.expected_purchases_new([1.0, 39.0, 78.0]), ref["mbgnbd"]["expected_new"])
    # one-time buyers are not certainly alive under MBG/NBD (they are under BG/NBD)
    one_time = cdnow["frequency"] == 0
    assert (m.probability_alive(cdnow)[one_time] < 1).all()
    assert (_with_params(BGNBD, ref["mbgnbd"]["params"]).probability_alive(cdnow)[one_time] == 1).all()


def test_mbgnbd_loglik_gradient_hessian():
    rng = np.random.default_rng(4)
    T = rng.uniform(1, 80, 300)
    x = rng.integers(0, 40, 300).astype(float)
    x[:5] = [0, 0, 3000, 1, 2]
    tx = np.where(x > 0, rng.uniform(0.1, 1, 300) * T, 0.0)
    data = MBGNBD()._prepare(*compress(x, tx, T)[:4])
    m = MBGNBD()
    for params in ([0.52, 6.2, 0.89, 1.6], [3.0, 0.5, 5.0, 0.3], [0.05, 60.0, 0.2, 40.0]):
        params = np.array(params)
        ll, g, H = m._loglik_hessian(params, data)
        np.testing.assert_allclose(ll, mbgnbd_ll(params, x, tx, T).sum(), rtol=1e-11)
        _check_derivatives(m, params, data, g, H)


def test_mbgnbd_recovers_simulated_parameters():
    rng = np.random.default_rng(77)
    true = dict(r=0.6, alpha=5.0, a=0.8, b=2.0)
    T = rng.integers(20, 60, 40_000).astype(float)
    x, tx = simulate_mbgnbd(len(T), *true.values(), T, rng)
    m = MBGNBD().fit(frequency=x, recency=np.floor(tx * 7) / 7, T=T)
    for k, v in true.items():
        assert abs(m.params_[k] - v) < 4 * m.standard_errors_[k] + 0.02 * v, (k, m.params_[k], v)


# --- BG/BB against lifetimes' BetaGeoBetaBinomFitter and the published donations fit ---------

def test_bgbb_donations_published_and_lifetimes(donations, ref):
    bb = BGBB().fit(frequency=donations["frequency"], recency=donations["recency"],
                    n_periods=donations["n_periods"], weights=donations["weights"])
    # Fader, Hardie & Shang (2010): alpha 1.204, beta 0.750, gamma 0.657, delta 2.783, LL -33,225.6
    assert [round(bb.params_[k], 3) for k in bb.param_names] == [1.204, 0.750, 0.657, 2.783]
    assert round(bb.log_likelihood_, 1) == -33225.6 and bb.n_customers_ == 11104 and bb.n_patterns_ == 22
    r = ref["bgbb_donations"]
    np.testing.assert_allclose(_values(bb), r["params"], rtol=REL)
    np.testing.assert_allclose(bb.log_likelihood_, _lifetimes_ll(r, r["n"]), rtol=REL)
    np.testing.assert_allclose([bb.standard_errors_[k] for k in bb.param_names], r["standard_errors"], rtol=1e-4)
    expanded = {k: np.repeat(donations[k], donations["weights"]) for k in ("frequency", "recency", "n_periods")}
    np.testing.assert_allclose(bb.log_likelihood_, bgbb_ll(_values(bb), expanded["frequency"], expanded["recency"],
                                                           expanded["n_periods"]).sum(), rtol=1e-12)


def test_bgbb_penalizer_equals_lifetimes(donations, ref):
    bb = BGBB(penalizer=0.01).fit(frequency=donations["frequency"], recency=donations["recency"],
                                  n_periods=donations["n_periods"], weights=donations["weights"])
    np.testing.assert_allclose(_values(bb), ref["bgbb_donations_penalized"]["params"], rtol=REL)


def test_bgbb_predictions_equal_lifetimes(donations, ref):
    r = ref["bgbb_donations"]
    bb = _with_params(BGBB, r["params"])
    args = {k: donations[k] for k in ("frequency", "recency", "n_periods")}
    for m in (0, 1, 5):
        np.testing.assert_allclose(bb.probability_alive(**args, future=m), r["predictions"][f"prob_alive_{m}"],
                                   rtol=1e-9)
    e = bb.expected_purchases([10, 1, 5], **args)
    for j, m in enumerate((10, 1, 5)):
        np.testing.assert_allclose(e[:, j], r["predictions"][f"expected_{m}"], rtol=1e-9)
    dist = r["expected_in_first_6"]
    np.testing.assert_allclose(bb.frequency_distribution(6)[dist["frequency"]] * r["n"], dist["customers"],
                               rtol=1e-9)
    assert abs(bb.frequency_distribution(6).sum() - 1) < 1e-12
    # the scenario sums, customer by customer
    for i in range(len(args["frequency"])):
        x, tx, n = (int(args[k][i]) for k in ("frequency", "recency", "n_periods"))
        alive, expected = bgbb_alive_and_expected(r["params"], x, tx, n, 5)
        assert abs(bb.probability_alive(frequency=x, recency=tx, n_periods=n)[0] - alive) < 1e-12 * max(alive, 1e-3)
        assert abs(bb.expected_purchases(5, frequency=x, recency=tx, n_periods=n)[0] - expected) < 1e-11 * expected
    # a new customer: E[X(n)] = sum_x x P(X(n) = x)
    np.testing.assert_allclose(bb.expected_purchases_new(6), (np.arange(7) * bb.frequency_distribution(6)).sum(),
                               rtol=1e-12)


def test_bgbb_simulated_cohorts_equal_lifetimes(ref):
    sim = pd.read_csv(os.path.join(DATA, "bgbb_simulated.csv"))
    r = ref["bgbb_simulated"]
    args = dict(frequency=sim["frequency"], recency=sim["recency"], n_periods=sim["n_periods"])
    bb = BGBB().fit(**args, weights=sim["weights"])
    np.testing.assert_allclose(_values(bb), r["params"], rtol=REL)
    np.testing.assert_allclose(bb.log_likelihood_, _lifetimes_ll(r, r["n"]), rtol=REL)
    at = _with_params(BGBB, r["params"])
    np.testing.assert_allclose(at.probability_alive(**args), r["predictions"]["prob_alive_1"], rtol=1e-9)
    np.testing.assert_allclose(at.expected_purchases(8, **args), r["predictions"]["expected_8"], rtol=1e-9)
    for k, v in zip(bb.param_names, r["true"]):
        assert abs(bb.params_[k] - v) < 4 * bb.standard_errors_[k], (k, bb.params_[k], v)


def _bgbb_data(x, tx, n, w=None):
    px, ptx, pn, pw, _ = compress(np.asarray(x, float), np.asarray(tx, float), np.asarray(n, float),
                                  None if w is None else np.asarray(w, float))
    order = np.lexsort((pn, ptx, px))
    return BGBB()._prepare(px[order], ptx[order], pn[order], pw[order])


def _random_opportunities(rng, size, top):
    n = rng.integers(0, top + 1, size)
    tx = np.floor(rng.random(size) * (n + 1)).astype(np.int64)
    x = np.where(tx > 0, 1 + np.floor(rng.random(size) * tx).astype(np.int64), 0)
    return x, tx, n


def test_bgbb_loglik_gradient_hessian():
    rng = np.random.default_rng(8)
    x, tx, n = _random_opportunities(rng, 400, 60)
    x[:3], tx[:3], n[:3] = [0, 5, 300], [0, 5, 310], [0, 5, 400]  # a new customer, t_x = n, long histories
    data = _bgbb_data(x, tx, n)
    m = BGBB()
    for params in ([1.2, 0.75, 0.66, 2.8], [0.3, 4.0, 3.0, 0.4], [20.0, 30.0, 0.05, 50.0]):
        params = np.array(params)
        ll, g, H = m._loglik_hessian(params, data)
        np.testing.assert_allclose(ll, bgbb_ll(params, x, tx, n).sum(), rtol=1e-11)
        _check_derivatives(m, params, data, g, H)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 60), top=st.integers(0, 40),
       params=st.tuples(*[st.floats(0.05, 20.0)] * 4))
def test_bgbb_loglik_property(seed, size, top, params):
    rng = np.random.default_rng(seed)
    x, tx, n = _random_opportunities(rng, size, top)
    w = rng.integers(1, 4, size).astype(float)
    ll = BGBB()._loglik_hessian(np.array(params), _bgbb_data(x, tx, n, w))[0]
    np.testing.assert_allclose(ll, (w * bgbb_ll(params, x, tx, n)).sum(), rtol=1e-10, atol=1e-12 * size)


def test_bgbb_same_result_with_one_and_two_threads():
    from rfmx.kernels._policy import threads

    rng = np.random.default_rng(3)
    x, tx, n = _random_opportunities(rng, 50_000, 120)
    data = _bgbb_data(x, tx, n)
    out = []
    for k in (1, 2):
        with threads(k):
            ll, g, H = BGBB()._loglik_hessian(np.array([1.1, 0.8, 0.6, 2.5]), data)
        out.append((ll, g, H))
    assert out[0][0] == out[1][0] and (out[0][1] == out[1][1]).all() and (out[0][2] == out[1][2]).all()


def test_bgbb_fit_does_not_depend_on_customer_order():
    rng = np.random.default_rng(5)
    n = rng.integers(1, 30, 5000).astype(float)
    x, tx = simulate_bgbb(n, 1.2, 0.75, 0.66, 2.8, rng)
    ref_fit = BGBB().fit(frequency=x, recency=tx, n_periods=n)
    perm = rng.permutation(len(n))
    again = BGBB().fit(frequency=x[perm], recency=tx[perm], n_periods=n[perm])
    assert (again.params_, again.log_likelihood_, again.standard_errors_) == \
        (ref_fit.params_, ref_fit.log_likelihood_, ref_fit.standard_errors_)


# --- BG/BB on rfmx summaries: opportunities, the RF matrix, CLV -----------------------------

@pytest.fixture(scope="module")
def weekly():
    return summary(CDNOW, time="date", as_of="1998-07-01", holdout_start="1997-09-29", period="week")


def test_bgbb_on_a_summary_counts_periods(weekly):
    s = weekly.to_pandas()
    bb = BGBB().fit(weekly)
    assert bb.time_unit_ == "week" and bb.n_customers_ == len(s)
    arrays = BGBB().fit(frequency=s["frequency_cal"], recency=s["recency_cal"], n_periods=s["T_cal"])
    assert arrays.params_ == bb.params_
    # the same periods expressed in days (unit=day, period=week): converted back to weeks
    in_days = summary(CDNOW, time="date", as_of="1998-07-01", holdout_start="1997-09-29", period="week", unit="day")
    assert BGBB().fit(in_days).params_ == bb.params_
    # the recency/frequency matrix: one row per (x, t_x, n) with its customers
    m = rf_matrix(weekly)
    assert m.column_names == ["frequency", "recency", "n_periods", "customers"]
    assert m.column("customers").to_numpy().sum() == len(s)
    assert m.schema.metadata[b"rfmx.btyd.period"] == b"week"
    from_matrix = BGBB().fit(m, weights="customers")
    np.testing.assert_allclose(_values(from_matrix), _values(bb), rtol=1e-12)
    assert from_matrix.time_unit_ == "week"


def test_bgbb_holdout_and_clv(weekly):
    bb = BGBB().fit(weekly)
    tab = calibration_holdout_table(bb, weekly).to_pandas()
    s = weekly.to_pandas()
    duration = int(s["duration_holdout"].iloc[0])
    assert duration == 40  # Monday 1997-09-29 to the week holding 1998-06-30
    pred = bb.expected_purchases(duration, weekly)
    np.testing.assert_allclose(tab["predicted"].iloc[0], pred[s["frequency_cal"].to_numpy() == 0].mean())
    gg = GammaGamma().fit(weekly)
    # undiscounted: the CLV is expected spend x expected purchases over the horizon's weeks
    clv = customer_lifetime_value(bb, gg, weekly, horizon=10, discount=0.0, horizon_unit="week")
    np.testing.assert_allclose(clv, gg.expected_spend(weekly) * bb.expected_purchases(10, weekly), rtol=1e-12)
    alive, expected, _ = bb.value_weights(weekly, horizon=10, horizon_unit="week")
    np.testing.assert_allclose(alive, bb.probability_alive(weekly), rtol=0)
    with pytest.raises(RfmxError, match="a month is not a whole number of weeks"):
        customer_lifetime_value(bb, gg, weekly, horizon=3)
    daily = _with_params(BGBB, _values(bb), "day")
    _, e, _ = daily.value_weights(frequency=[1], recency=[3], n_periods=[10], horizon=2)  # 2 months = 60 days
    np.testing.assert_allclose(e, daily.expected_purchases(60, frequency=[1], recency=[3], n_periods=[10]))


def test_bgbb_bad_inputs():
    for kwargs, message in [
        (dict(frequency=[1, 2], recency=[5, 3], n_periods=[4, 9]), "recency is greater than n"),
        (dict(frequency=[3, 2], recency=[2, 3], n_periods=[4, 9]), "more transactions than opportunities"),
        (dict(frequency=[0, 2], recency=[2, 3], n_periods=[4, 9]), "non-zero recency without"),
        (dict(frequency=[1, 2], recency=[1.5, 3], n_periods=[4, 9]), "whole numbers of periods"),
        (dict(frequency=[1, -2], recency=[1, 3], n_periods=[4, 9]), "negative"),
        (dict(frequency=[1, 2], recency=[np.nan, 3], n_periods=[4, 9]), "non-finite"),
        (dict(frequency=[0] * 10, recency=[0] * 10, n_periods=range(10)), "one-time buyers only"),
    ]:
        with pytest.raises(RfmxError, match=message):
            BGBB().fit(**kwargs)
    with pytest.raises(RfmxError, match="first at row 1"):
        BGBB().fit(frequency=[1, 2], recency=[1, 3.5], n_periods=[4, 9])
    with pytest.raises(RfmxError, match="n_periods or T"):
        BGBB().fit(frequency=[1], recency=[1], n_periods=[2], T=[2])
    bb = _with_params(BGBB, [1.2, 0.75, 0.66, 2.8])
    with pytest.raises(RfmxError, match="whole numbers of opportunities"):
        bb.expected_purchases(2.5, frequency=[1], recency=[1], n_periods=[3])
    with pytest.raises(RfmxError, match="opportunity period is unknown"):
        bb.value_weights(frequency=[1], recency=[1], n_periods=[3])
    # a summary without rfmx metadata is taken to count periods: fractional times are refused
    frame = {"frequency": np.array([1.0, 2.0]), "recency": np.array([1.0, 2.5]), "T": np.array([3.0, 4.0])}
    with pytest.raises(RfmxError, match="whole numbers of periods"):
        BGBB().fit(frame)


def test_bgbb_extreme_histories_give_numbers():
    bb = _with_params(BGBB, [1.2, 0.75, 0.66, 2.8], "day")
    x = np.array([0, 1, 2000, 5000, 3000], float)
    tx = np.array([0, 1, 2000, 5000, 3000], float)
    n = np.array([5000, 5000, 2000, 5000, 5000], float)
    alive = bb.probability_alive(frequency=x, recency=tx, n_periods=n)
    e = bb.expected_purchases(365, frequency=x, recency=tx, n_periods=n)
    assert np.isfinite(alive).all() and np.isfinite(e).all() and ((alive >= 0) & (alive <= 1)).all()
    assert alive[3] > 0.99 and alive[4] < 1e-6 and e[3] > 300


# --- sBG: Fader & Hardie (2007) ---------------------------------------------------------------

REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491]


@pytest.mark.parametrize("curve, published", [(REGULAR, (0.704, 1.182)), (HIGH_END, (0.668, 3.806))])
def test_sbg_published_retention_curves(curve, published):
    sbg = SBG().fit(survivors=curve)
    assert (round(sbg.params_["alpha"], 3), round(sbg.params_["beta"], 3)) == published
    churned = [t for t in range(1, len(curve)) for _ in range(curve[t - 1] - curve[t])]
    survived = [len(curve) - 1] * curve[-1]
    np.testing.assert_allclose(sbg.log_likelihood_, sbg_ll(_values(sbg), churned, survived), rtol=1e-12)
    # the survivor curve is the model's own: S(t) from the recursions, retention (beta+t-1)/(alpha+beta+t-1)
    a, b = _values(sbg)
    t = np.arange(1, 13)
    np.testing.assert_allclose(sbg.retention(t), (b + t - 1) / (a + b + t - 1), rtol=1e-14)
    np.testing.assert_allclose(sbg.survival(t), np.cumprod(sbg.retention(t)), rtol=1e-13)
    np.testing.assert_allclose(sbg.churn_probability(t), -np.diff(sbg.survival(np.arange(13))), rtol=1e-12)
    proj = sbg.projection(5).to_pandas()
    assert len(proj) == 13
    np.testing.assert_allclose(proj["observed_survival"].iloc[:8], np.array(curve) / 1000, rtol=1e-12)
    assert proj["observed_survival"].iloc[8:].isna().all() and proj["at_risk"].iloc[1] == 1000


def test_sbg_individual_contracts_equal_the_curve():
    cohort = SBG().fit(survivors=HIGH_END)
    paid = [t for t in range(1, 8) for _ in range(HIGH_END[t - 1] - HIGH_END[t])] + [8] * HIGH_END[-1]
    active = [False] * (1000 - HIGH_END[-1]) + [True] * HIGH_END[-1]
    by_customer = SBG().fit(periods=paid, active=active)
    assert by_customer.params_ == cohort.params_ and by_customer.log_likelihood_ == cohort.log_likelihood_
    # a table: started in period 0, cancelled in period `end` (the first one not paid for)
    table = pa.table({"start": [0] * 1000, "end": [p if not a else None for p, a in zip(paid, active)]})
    as_table = SBG().fit(table, last_period=7)
    assert as_table.params_ == cohort.params_
    # two cohorts: the sum of their log-likelihoods
    two = SBG().fit(survivors=[REGULAR, HIGH_END[:5]])
    a = SBG().fit(survivors=REGULAR)
    assert two.n_customers_ == 2000 and a.log_likelihood_ < 0


def test_sbg_contract_table_rules():
    from rfmx.clv.models import contracts_from

    t = pa.table({"start": [0, 0, 2, 3, 5], "end": [3, None, 4, 6, None]})
    paid, active = contracts_from(t)  # last period: the latest start or end, 6
    assert paid.tolist() == [3, 7, 2, 3, 2] and active.tolist() == [False, True, False, False, True]
    paid, active = contracts_from(t, last_period=5)  # the cancellation in 6 is not seen yet
    assert paid.tolist() == [3, 6, 2, 3, 1] and active.tolist() == [False, True, False, True, True]
    for table, message in [
        (pa.table({"start": [0, 3], "end": [2, 3]}), r"end before they start, first at row 1"),
        (pa.table({"start": [0, None], "end": [2, 3]}), "'start' must hold whole period numbers .no nulls.; row 1"),
        (pa.table({"start": [0, 1.5], "end": [2, 3]}), "row 1 has 1.5"),
        (pa.table({"start": [0, 1]}), "no column 'end'"),
    ]:
        with pytest.raises(RfmxError, match=message):
            contracts_from(table)
    with pytest.raises(RfmxError, match="start after last_period 2"):
        contracts_from(pa.table({"start": [0, 3], "end": [2, None]}), last_period=2)
    # pandas frames and dicts with None
    frame = pd.DataFrame({"start": [0, 1], "end": [2.0, np.nan]})
    assert contracts_from(frame)[0].tolist() == [2, 2]
    assert contracts_from({"start": [0, 1], "end": [2, None]})[1].tolist() == [False, True]


def test_sbg_predictions():
    sbg = SBG().fit(survivors=HIGH_END)
    a, b = _values(sbg)
    for k in (0, 3, 7, 40):
        for d in (0.1, 0.01):
            np.testing.assert_allclose(sbg.derl([k], d)[0], sbg_derl_direct((a, b), k, d, terms=200_000), rtol=1e-9)
    # DEL of a new customer: the first period plus the discounted survivors
    d = 0.1
    direct = 1 + sum(sbg.survival([t])[0] / (1 + d) ** t for t in range(1, 3000))
    np.testing.assert_allclose(sbg.discounted_expected_lifetime(d), direct, rtol=1e-10)
    out = sbg.predict(periods=[1, 4, 4, 9], active=[True, True, False, True], horizon=3, discount=0.1)
    assert out["renewals"].tolist() == [0, 3, 3, 8] and out["active"].tolist() == [True, True, False, True]
    k = out["renewals"].astype(float)
    np.testing.assert_allclose(out["renewal_probability"][[0, 1, 3]], ((b + k) / (a + b + k))[[0, 1, 3]])
    assert out["renewal_probability"][2] == out["expected_renewals"][2] == out["derl"][2] == 0
    s = sbg.survival(np.arange(20))
    np.testing.assert_allclose(out["expected_renewals"][1], s[4:7].sum() / s[3], rtol=1e-12)
    with pytest.raises(RfmxError, match="expected lifetime is infinite"):
        sbg.derl([1], 0.0)  # alpha < 1
    steady = _with_params(SBG, [3.0, 2.0])
    np.testing.assert_allclose(steady.derl([4], 0.0), (2.0 + 4) / (3.0 - 1))


def test_sbg_bad_inputs():
    for kwargs, message in [
        (dict(survivors=[1000]), "at least one later count"),
        (dict(survivors=[1000, 1100]), "rises from 1000 to 1100"),
        (dict(survivors=[1000, -5]), "non-negative counts"),
        (dict(survivors=[1000, 1000, 1000]), "no customer cancelled"),
        (dict(survivors=[1000, 0]), "no customer ever renewed"),
        (dict(periods=[0, 2], active=[True, False]), "whole numbers >= 1"),
        (dict(periods=[1], active=[True]), "needs more customers"),
    ]:
        with pytest.raises(RfmxError, match=message):
            SBG().fit(**kwargs)
    with pytest.raises(RfmxError, match="not fitted"):
        SBG().survival([1])


# --- the holdout comparison ------------------------------------------------------------------

def test_compare_models_on_cdnow(weekly):
    cmp = compare_models(weekly)
    t = cmp.table.to_pandas()
    assert t["model"].tolist() == ["bgnbd", "mbgnbd", "pareto", "bgbb"] and (t["status"] == "ok").all()
    s = weekly.to_pandas()
    actual = s["frequency_holdout"].to_numpy()
    for name, row in t.set_index("model").iterrows():
        model = cmp.models[name]
        duration = int(s["duration_holdout"].iloc[0])
        pred = model.expected_purchases(duration, weekly)
        assert row["mae_customer"] == pytest.approx(np.abs(pred - actual).mean(), rel=1e-12)
        groups = calibration_holdout_table(model, weekly).to_pandas()
        assert row["mae_frequency_group"] == pytest.approx(np.abs(groups["predicted"] - groups["actual"]).mean(),
                                                           rel=1e-12)
        assert row["log_likelihood"] == model.log_likelihood_
    assert cmp.best == t.loc[t["mae_customer"].idxmin(), "model"] and t.set_index("model")["best"][cmp.best]
    assert cmp.best_by_group == t.loc[t["mae_frequency_group"].idxmin(), "model"]
    assert set(cmp.groups.column("model").to_pylist()) == set(t["model"])
    # a fit that fails is reported, not raised (a summary without metadata and fractional times)
    frame = s.copy()
    frame["T_cal"] = frame["T_cal"] + 0.5
    partial = compare_models(pa.Table.from_pandas(frame, preserve_index=False), ["bgnbd", "bgbb"])
    status = dict(zip(partial.table.column("model").to_pylist(), partial.table.column("status").to_pylist()))
    assert status["bgnbd"] == "ok" and "whole numbers" in status["bgbb"] and partial.best == "bgnbd"
    assert partial.models["bgbb"] is None
    with pytest.raises(RfmxError, match="cannot compare 'sbg'"):
        compare_models(weekly, ["bgnbd", "sbg"])
    with pytest.raises(RfmxError, match="holdout_start"):
        compare_models(summary(CDNOW, time="date"))


# --- saved models ------------------------------------------------------------------------------

def test_save_load_new_models(tmp_path, weekly, cdnow):
    for model, data in ((MBGNBD().fit(cdnow), cdnow), (BGBB().fit(weekly), weekly),
                        (SBG().fit(survivors=REGULAR), None)):
        path = tmp_path / f"{model.key}.json"
        model.save(path)
        back = type(model).load(path)
        assert back.params_ == model.params_ and back.standard_errors_ == model.standard_errors_
        assert back.time_unit_ == model.time_unit_ and isinstance(load_model(path), type(model))
        if data is not None:
            np.testing.assert_array_equal(back.probability_alive(data), model.probability_alive(data))
    with pytest.raises(RfmxError, match="holds a MBG/NBD model, not BG/NBD"):
        BGNBD.load(tmp_path / "mbgnbd.json")
    with pytest.raises(RfmxError, match="holds a BG/NBD model, not MBG/NBD"):
        BGNBD().fit(cdnow).save(tmp_path / "bg.json") or MBGNBD.load(tmp_path / "bg.json")
    assert "alpha = 0.704" in SBG.load(tmp_path / "sbg.json").summary()


# --- shared checks --------------------------------------------------------------------------------

def _check_derivatives(model, params, data, g, H):
    """The analytic gradient and Hessian against central differences of the log-likelihood and gradient."""
    ll0 = model._loglik(params, data)[0]
    for i in range(len(params)):
        h = 1e-6 * params[i]
        up, dn = params.copy(), params.copy()
        up[i] += h
        dn[i] -= h
        fd = (model._loglik(up, data)[0] - model._loglik(dn, data)[0]) / (2 * h)
        scale = max(abs(fd), abs(ll0) / params[i] * 1e-3, 1e-3)
        assert abs(g[i] - fd) <= 1e-5 * scale, (i, g[i], fd)
        h = 1e-5 * params[i]
        up, dn = params.copy(), params.copy()
        up[i] += h
        dn[i] -= h
        fdh = (model._loglik(up, data)[1] - model._loglik(dn, data)[1]) / (2 * h)
        np.testing.assert_allclose(H[:, i], fdh, rtol=1e-6, atol=1e-6 * np.abs(H).max())


def test_gamma_tables_against_scipy():
    from scipy.special import digamma, gammaln, polygamma

    from rfmx.kernels.clv_discrete import gamma_tables

    for c in (0.01, 0.66, 3.8, 250.0):
        out = np.empty((3, 5000))
        gamma_tables(c, out)
        z = c + np.arange(5000)
        np.testing.assert_allclose(out[0], gammaln(z), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(out[1], digamma(z), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(out[2], polygamma(1, z), rtol=1e-12)


def test_models_benchmark_runs(tmp_path):
    """benchmarks/clv_micro.py models, rfmx only, at a tiny size: the module and its children work."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "clv_micro.py")
    proc = subprocess.run([sys.executable, script, "models", "--customers", "3000", "--repeat", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["customers"] == 3000
    for model in ("mbgnbd", "bgbb", "sbg"):
        assert out[model]["rfmx"]["optimizer"]["message"] == "Newton: converged"


def test_bgnbd_penalizer_equals_lifetimes(cdnow, ref):
    bg = BGNBD(penalizer=0.05).fit(cdnow)
    np.testing.assert_allclose(_values(bg), ref["bgnbd_penalized"]["params"], rtol=REL)


@settings(max_examples=40, deadline=None)
@given(curve=st.lists(st.integers(0, 400), min_size=1, max_size=12), top=st.integers(1, 2000),
       params=st.tuples(st.floats(0.05, 30.0), st.floats(0.05, 30.0)))
def test_sbg_loglik_property(curve, top, params):
    from rfmx.clv.models import _survivor_counts

    survivors = [top] + sorted((min(c, top) for c in curve), reverse=True)
    churned, survived = _survivor_counts(survivors)
    ll = SBG()._loglik_hessian(np.array(params), SBG._prepare(churned, survived))[0]
    t = [k for k in range(1, len(survivors)) for _ in range(survivors[k - 1] - survivors[k])]
    # The kernel builds each period's probability by the recursion and the reference from
    # the beta functions: rounding differs by ~1e-10 of the total at extreme parameters.
    np.testing.assert_allclose(ll, sbg_ll(params, t, [len(survivors) - 1] * survivors[-1]), rtol=1e-9, atol=1e-8)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 20), st.one_of(st.none(), st.integers(1, 25))), min_size=1,
                     max_size=40),
       last=st.one_of(st.none(), st.integers(20, 30)))
def test_contracts_from_property(rows, last):
    """Periods paid and status by the definition, contract by contract."""
    from rfmx.clv.models import contracts_from

    rows = [(s, None if e is None else s + e) for s, e in rows]
    table = pa.table({"start": [s for s, _ in rows], "end": [e for _, e in rows]})
    paid, active = contracts_from(table, last_period=last)
    L = last if last is not None else max([s for s, _ in rows] + [e for _, e in rows if e is not None])
    for (s, e), p, a in zip(rows, paid, active):
        if e is not None and e <= L:
            assert (p, a) == (e - s, False)
        else:
            assert (p, a) == (L + 1 - s, True)


def test_failed_fits_name_the_model(cdnow, donations):
    with pytest.raises(RfmxError, match="MBG/NBD fit did not converge: Newton's method stopped after 1 iterations"):
        MBGNBD().fit(cdnow, maxiter=1)
    with pytest.raises(RfmxError, match="BG/BB fit did not converge"):
        BGBB().fit(frequency=donations["frequency"], recency=donations["recency"],
                   n_periods=donations["n_periods"], weights=donations["weights"], maxiter=1)
    with pytest.raises(RfmxError, match="sBG fit did not converge"):
        SBG().fit(survivors=REGULAR, maxiter=1)
    # every customer buys at every opportunity: the likelihood's supremum is at p = 1, theta = 0;
    # the fit stops where the gradient vanishes and says its standard errors do not exist
    bb = BGBB().fit(frequency=[3, 5, 2, 4, 6], recency=[3, 5, 2, 4, 6], n_periods=[3, 5, 2, 4, 6])
    assert not bb.hessian_positive_definite_ and "n/a (Hessian not positive definite)" in bb.summary()
