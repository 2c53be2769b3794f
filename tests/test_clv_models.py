"""BG/NBD, Pareto/NBD and Gamma-Gamma: published CDNOW results, lifetimes' predictions,
log-likelihoods against closed forms and quadrature, analytic gradients against finite
differences, parameter recovery from simulated populations, and bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from naive_clv import (bgnbd_ll, gamma_gamma_ll, pareto_ll_hyp2f1, pareto_ll_quad, simulate_bgnbd,
                       simulate_pareto)
from rfmx import RfmxError
from rfmx.clv import (BGNBD, GammaGamma, ParetoNBD, calibration_holdout_table, customer_lifetime_value,
                      frequency_spend_correlation, load_model, summary)
from rfmx.clv.models import compress

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def cdnow():
    pub = pd.read_csv(os.path.join(DATA, "cdnow_customers_summary.csv"))
    return {"frequency": pub["x"].to_numpy(float), "recency": pub["t_x"].to_numpy(float),
            "T": pub["T"].to_numpy(float), "monetary_value": pub["zbar"].to_numpy(float)}


@pytest.fixture(scope="module")
def lifetimes_ref():
    with open(os.path.join(DATA, "lifetimes_models.json")) as f:
        models = json.load(f)
    return models, pd.read_csv(os.path.join(DATA, "lifetimes_predictions.csv.gz"))


@pytest.fixture(scope="module")
def bg_fit(cdnow):
    return BGNBD().fit(cdnow)


# --- published results (Fader, Hardie & Lee 2005; Fader & Hardie's notes) ------------------

def test_bgnbd_published_cdnow(bg_fit):
    # the published summary is rounded to 2 decimals, which moves alpha and b in the 4th
    # decimal (lifetimes gets the same); the raw transactions give the paper's values exactly
    p = bg_fit.params_
    np.testing.assert_allclose([p["r"], p["alpha"], p["a"], p["b"]], [0.2426, 4.4136, 0.7929, 2.4259], atol=2e-4)
    assert round(bg_fit.log_likelihood_, 2) == -9582.43
    assert bg_fit.n_customers_ == 2357 and bg_fit.n_patterns_ < 2357


def test_bgnbd_published_from_raw_transactions():
    s = summary(os.path.join(DATA, "cdnow_sample.csv.gz"), time="date", as_of="1997-10-01", unit="week")
    bg = BGNBD().fit(s)
    p = bg.params_
    assert (round(p["r"], 4), round(p["alpha"], 4), round(p["a"], 4), round(p["b"], 4)) == (0.2426, 4.4136, 0.7929, 2.4259)
    assert round(bg.log_likelihood_, 2) == -9582.43
    assert bg.time_unit_ == "week"


def test_gamma_gamma_published_cdnow(cdnow):
    gg = GammaGamma().fit(cdnow)
    assert gg.n_customers_ == 946
    p = gg.params_
    assert abs(p["p"] - 6.25) < 0.005 and abs(p["q"] - 3.74) < 0.005 and abs(p["v"] - 15.44) < 0.01
    ind = gg.independence_
    assert ind["n"] == 946 and abs(ind["pearson_r"] - 0.11) < 0.01


def test_pareto_published_cdnow(cdnow):
    pn = ParetoNBD().fit(cdnow)
    p = pn.params_
    assert (round(p["r"], 3), round(p["alpha"], 2), round(p["s"], 3), round(p["beta"], 2)) == (0.553, 10.58, 0.606, 11.67)
    # at least as good as lifetimes' Nelder-Mead optimum
    models, _ = lifetimes_ref_values()
    ll_lifetimes = ParetoNBD()._loglik(np.array(models["pareto"]["params"]), _pattern_data(cdnow))[0]
    assert pn.log_likelihood_ >= ll_lifetimes - 1e-9


def lifetimes_ref_values():
    with open(os.path.join(DATA, "lifetimes_models.json")) as f:
        return json.load(f), None


def _pattern_data(d, model=ParetoNBD):
    x, tx, T, w, _ = compress(*(np.ascontiguousarray(d[k], dtype=float) for k in ("frequency", "recency", "T")))
    return model()._prepare(x, tx, T, w)


def test_standard_errors_match_lifetimes(bg_fit, lifetimes_ref, cdnow):
    models, _ = lifetimes_ref
    se = [bg_fit.standard_errors_[k] for k in ("r", "alpha", "a", "b")]
    np.testing.assert_allclose(se, models["bgnbd"]["standard_errors"], rtol=2e-3)
    gg = GammaGamma().fit(cdnow)
    np.testing.assert_allclose([gg.standard_errors_[k] for k in ("p", "q", "v")],
                               models["gamma_gamma"]["standard_errors"], rtol=2e-3)


# --- predictions against lifetimes at lifetimes' own parameters ----------------------------

def _with_params(cls, values, unit="week"):
    m = cls()
    m.params_ = dict(zip(cls.param_names, values))
    m.time_unit_ = unit
    return m


def test_predictions_match_lifetimes(cdnow, lifetimes_ref):
    models, pred = lifetimes_ref
    bg = _with_params(BGNBD, models["bgnbd"]["params"])
    pn = _with_params(ParetoNBD, models["pareto"]["params"])
    gg = _with_params(GammaGamma, models["gamma_gamma"]["params"])

    def close(got, exp):
        np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-12)

    close(bg.probability_alive(cdnow), pred["bgnbd_prob_alive"])
    close(bg.expected_purchases(10, cdnow), pred["bgnbd_expected_10"])
    close(bg.expected_purchases(39, cdnow), pred["bgnbd_expected_39"])
    close(bg.expected_purchases_new([39.0, 78.0]), models["bgnbd"]["expected_new_39"])
    close(pn.probability_alive(cdnow), pred["pareto_prob_alive"])
    close(pn.expected_purchases(10, cdnow), pred["pareto_expected_10"])
    close(pn.expected_purchases_new([39.0, 78.0]), models["pareto"]["expected_new_39"])
    close(gg.expected_spend(cdnow), pred["gamma_gamma_expected_spend"])
    close(customer_lifetime_value(bg, gg, cdnow, horizon=12, discount=0.01), pred["bgnbd_clv_12_weeks"])
    close(customer_lifetime_value(pn, gg, cdnow, horizon=12, discount=0.01), pred["pareto_clv_12_weeks"])
    both = bg.expected_purchases([10.0, 39.0], cdnow)
    assert both.shape == (2357, 2)
    close(both[:, 1], pred["bgnbd_expected_39"])


# --- log-likelihoods and gradients --------------------------------------------------------

def _random_customers(rng, n, big=False):
    T = rng.uniform(1, 80, n)
    x = rng.integers(0, 4000 if big else 30, n).astype(float)
    tx = np.where(x > 0, rng.uniform(0.1, 1, n) * T, 0.0)
    return x, tx, T


@pytest.mark.parametrize("big", [False, True])
def test_bgnbd_loglik_and_gradient(big):
    rng = np.random.default_rng(11 + big)
    x, tx, T = _random_customers(rng, 300, big)
    data = _pattern_data({"frequency": x, "recency": tx, "T": T}, BGNBD)
    m = BGNBD()
    for params in ([0.24, 4.4, 0.79, 2.4], [3.0, 0.5, 5.0, 0.3], [0.05, 60.0, 0.2, 40.0]):
        params = np.array(params)
        ll, g = m._loglik(params, data)
        np.testing.assert_allclose(ll, bgnbd_ll(params, x, tx, T).sum(), rtol=1e-11)
        _check_gradient(m, params, data, g)
        _check_hessian(m, params, data)


@pytest.mark.parametrize("big", [False, True])
def test_pareto_loglik_and_gradient(big):
    rng = np.random.default_rng(21 + big)
    x, tx, T = _random_customers(rng, 60, big)
    x[:3], tx[:3] = 5, T[:3]  # bought on the last day: A0 = 0
    data = _pattern_data({"frequency": x, "recency": tx, "T": T})
    m = ParetoNBD()
    for params in ([0.55, 10.6, 0.61, 11.7], [0.55, 11.7, 0.61, 10.6], [2.0, 3.0, 1.0, 3.0], [0.3, 1.0, 3.0, 25.0]):
        params = np.array(params)
        ll, g = m._loglik(params, data)
        assert np.isfinite(ll)
        np.testing.assert_allclose(ll, pareto_ll_quad(params, x, tx, T).sum(), rtol=1e-10)
        if not big:  # SciPy's hyp2f1 form (lifetimes') cannot take t_x = T: log(0)
            ll_rest = m._loglik(params, _pattern_data({"frequency": x[3:], "recency": tx[3:], "T": T[3:]}))[0]
            np.testing.assert_allclose(ll_rest, pareto_ll_hyp2f1(params, x[3:], tx[3:], T[3:]).sum(), rtol=1e-10)
        _check_gradient(m, params, data, g)


def test_gamma_gamma_loglik_and_gradient(cdnow):
    rep = cdnow["frequency"] > 0
    x, mv = cdnow["frequency"][rep], cdnow["monetary_value"][rep]
    ux, xi = np.unique(x, return_inverse=True)
    data = (ux, xi.astype(np.int64), mv, np.log(mv), np.ones(len(x)))
    m = GammaGamma()
    for params in ([6.25, 3.74, 15.44], [0.5, 1.5, 100.0], [40.0, 12.0, 2.0]):
        params = np.array(params)
        ll, g = m._loglik(params, data)
        np.testing.assert_allclose(ll, gamma_gamma_ll(params, x, mv).sum(), rtol=1e-11)
        _check_gradient(m, params, data, g)
        _check_hessian(m, params, data)


def _check_gradient(model, params, data, g):
    for i in range(len(params)):
        h = 1e-6 * params[i]
        up, dn = params.copy(), params.copy()
        up[i] += h
        dn[i] -= h
        fd = (model._loglik(up, data)[0] - model._loglik(dn, data)[0]) / (2 * h)
        scale = max(abs(fd), abs(model._loglik(params, data)[0]) / params[i] * 1e-3, 1e-3)
        assert abs(g[i] - fd) <= 1e-5 * scale, (i, g[i], fd)


def _check_hessian(model, params, data):
    """The analytic Hessian (Newton steps, standard errors) against differences of the gradient."""
    ll, g, H = model._loglik_hessian(params, data)
    assert ll == model._loglik(params, data)[0] and (g == model._loglik(params, data)[1]).all()
    for i in range(len(params)):
        h = 1e-5 * params[i]
        up, dn = params.copy(), params.copy()
        up[i] += h
        dn[i] -= h
        fd = (model._loglik(up, data)[1] - model._loglik(dn, data)[1]) / (2 * h)
        np.testing.assert_allclose(H[:, i], fd, rtol=1e-6, atol=1e-6 * np.abs(H).max())


def test_same_result_with_one_and_two_threads(cdnow):
    from rfmx.kernels._policy import threads
    from rfmx.kernels.clv_models import bgnbd_loglik_hessian

    rng = np.random.default_rng(5)
    x, tx, T = _random_customers(rng, 200_000)
    x[:100_000], tx[:100_000] = x[100_000:], tx[100_000:]  # repeated patterns
    T[:100_000] = T[100_000:]
    out = []
    for n in (1, 2):
        with threads(n):
            comp = compress(x, tx, T)
            data = BGNBD()._prepare(*comp[:4])
            g, H = np.empty(4), np.empty((4, 4))
            ll = bgnbd_loglik_hessian(np.array([0.3, 5.0, 0.8, 2.0]), *data, 64, False, g, H)
        out.append((ll, np.concatenate([g, H.ravel()]), comp))
    assert out[0][0] == out[1][0] and (out[0][1] == out[1][1]).all()
    for a, b in zip(out[0][2], out[1][2]):
        np.testing.assert_array_equal(a, b)
    px, ptx, pT, w, inverse = out[0][2]
    assert len(px) == 100_000 and w.sum() == 200_000 and (w == 2).all()
    np.testing.assert_array_equal(px[inverse], x)
    np.testing.assert_array_equal(pT[inverse], T)


# --- parameter recovery from simulated populations ----------------------------------------

def test_bgnbd_recovers_simulated_parameters():
    rng = np.random.default_rng(2024)
    true = dict(r=0.5, alpha=6.0, a=0.7, b=2.5)
    T = rng.integers(20, 60, 40_000).astype(float)
    x, tx = simulate_bgnbd(len(T), *true.values(), T, rng)
    tx = np.floor(tx * 7) / 7  # day resolution, as a summary has
    bg = BGNBD().fit(frequency=x, recency=tx, T=T)
    for k, v in true.items():
        assert abs(bg.params_[k] - v) < 4 * bg.standard_errors_[k] + 0.02 * v, (k, bg.params_[k], v)


def test_pareto_recovers_simulated_parameters():
    rng = np.random.default_rng(7)
    true = dict(r=0.6, alpha=8.0, s=0.8, beta=12.0)
    T = rng.integers(20, 60, 30_000).astype(float)
    x, tx = simulate_pareto(len(T), *true.values(), T, rng)
    tx = np.floor(tx * 7) / 7
    pn = ParetoNBD().fit(frequency=x, recency=tx, T=T)
    for k, v in true.items():
        assert abs(pn.params_[k] - v) < 4 * pn.standard_errors_[k] + 0.02 * v, (k, pn.params_[k], v)


# --- bad input, edge cases and numerics ---------------------------------------------------

@pytest.mark.parametrize("cls", [BGNBD, ParetoNBD])
def test_bad_inputs_are_clear_errors(cls):
    with pytest.raises(RfmxError, match="recency is greater than T"):
        cls().fit(frequency=[1, 2], recency=[5, 3], T=[4, 9])
    with pytest.raises(RfmxError, match="negative"):
        cls().fit(frequency=[1, -2], recency=[1, 1], T=[4, 9])
    with pytest.raises(RfmxError, match="non-finite"):
        cls().fit(frequency=[1, 2], recency=[np.nan, 1], T=[4, 9])
    with pytest.raises(RfmxError, match="whole numbers"):
        cls().fit(frequency=[1.5, 2], recency=[1, 1], T=[4, 9])
    with pytest.raises(RfmxError, match="non-zero recency"):
        cls().fit(frequency=[0, 2], recency=[1, 1], T=[4, 9])
    with pytest.raises(RfmxError, match="one-time buyers only"):
        cls().fit(frequency=np.zeros(100), recency=np.zeros(100), T=np.arange(1, 101.0))
    with pytest.raises(RfmxError, match="needs more customers"):
        cls().fit(frequency=[3], recency=[2], T=[5])
    with pytest.raises(RfmxError, match="not fitted"):
        cls().probability_alive(frequency=[1], recency=[1], T=[2])
    with pytest.raises(RfmxError, match="no column 'recency'"):
        cls().fit({"frequency": [1], "T": [2]})


def test_failed_fit_reports_the_optimizer_reason(cdnow):
    with pytest.raises(RfmxError, match="did not converge: Newton's method stopped after 1 iterations"):
        BGNBD().fit(cdnow, maxiter=1)
    with pytest.raises(RfmxError, match="did not converge: .*ITERATIONS REACHED LIMIT"):  # SciPy's own words
        ParetoNBD().fit(cdnow, maxiter=2)


def test_single_customer_and_huge_frequencies_give_numbers(bg_fit):
    pn = _with_params(ParetoNBD, [0.553, 10.58, 0.606, 11.67])
    gg = _with_params(GammaGamma, [6.25, 3.74, 15.44])
    x = np.array([0.0, 1.0, 5000.0, 20000.0, 3000.0])
    tx = np.array([0.0, 0.5, 38.0, 38.9, 1.0])
    T = np.array([38.9, 38.9, 38.9, 38.9, 38.9])
    m = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    for model in (bg_fit, pn):
        alive = model.probability_alive(frequency=x, recency=tx, T=T)
        e = model.expected_purchases(39, frequency=x, recency=tx, T=T)
        clv = customer_lifetime_value(model, gg, frequency=x, recency=tx, T=T, monetary_value=m, unit="week")
        assert np.all(np.isfinite(alive)) and np.all(np.isfinite(e)) and np.all(np.isfinite(clv))
        assert np.all((alive >= 0) & (alive <= 1)) and np.all(e >= 0)
        assert alive[3] > 0.5 and e[3] > e[1]  # a heavy buyer seen recently is alive and buys more
        assert alive[4] < 1e-6  # ... and one with thousands of purchases, none for weeks, has left
        one = model.probability_alive(frequency=[2], recency=[10], T=[20])
        assert one.shape == (1,) and 0 < one[0] < 1


def test_gamma_gamma_errors():
    with pytest.raises(RfmxError, match="at least 3 repeat buyers .*with a positive mean spend, got 2 "
                                        r"\(1 more have zero repeat spend\)"):
        GammaGamma().fit(frequency=[1, 2, 3, 0], monetary_value=[5, 0, 7, 0])
    with pytest.raises(RfmxError, match="at least 3 repeat buyers"):
        GammaGamma().fit(frequency=[1, 0, 0], monetary_value=[5, 0, 0])
    with pytest.raises(RfmxError, match="monetary_value has 1 negative value.*first at row 1"):
        GammaGamma().fit(frequency=[1, 2, 3, 1], monetary_value=[5, -2, 7, 3])
    gg = _with_params(GammaGamma, [2.0, 0.9, 3.0])
    with pytest.raises(RfmxError, match="no finite mean spend"):
        gg.expected_spend(frequency=[1], monetary_value=[3])
    r = frequency_spend_correlation(frequency=[1, 2, 3, 0], monetary_value=[1, 2, 3, 100])
    assert r["n"] == 3 and abs(r["pearson_r"] - 1) < 1e-12
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    x, m = rng.integers(1, 10, 500).astype(float), rng.gamma(2, 10, 500)
    m += x
    r, ref = frequency_spend_correlation(frequency=x, monetary_value=m), pearsonr(x, m)
    assert abs(r["pearson_r"] - ref.statistic) < 1e-12 and abs(r["p_value"] - ref.pvalue) < 1e-9


def test_penalizer_shrinks_parameters(cdnow, bg_fit):
    pen = BGNBD(penalizer=0.1).fit(cdnow)
    assert sum(v * v for v in pen.params_.values()) < sum(v * v for v in bg_fit.params_.values())
    with pytest.raises(RfmxError, match="penalizer"):
        BGNBD(penalizer=-1)


def test_save_load_json(tmp_path, bg_fit, cdnow):
    path = tmp_path / "bg.json"
    bg_fit.save(path)
    back = BGNBD.load(path)
    assert back.params_ == bg_fit.params_ and back.standard_errors_ == bg_fit.standard_errors_
    np.testing.assert_array_equal(back.probability_alive(cdnow), bg_fit.probability_alive(cdnow))
    assert isinstance(load_model(path), BGNBD)
    with pytest.raises(RfmxError, match="not Pareto/NBD"):
        ParetoNBD.load(path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(RfmxError, match="not an rfmx CLV model"):
        load_model(tmp_path / "bad.json")
    with pytest.raises(RfmxError, match="not found"):
        load_model(tmp_path / "missing.json")
    assert "alpha = 4.41" in bg_fit.summary() and "se 0.378" in bg_fit.summary()


def test_clv_months_and_units(bg_fit, cdnow):
    gg = _with_params(GammaGamma, [6.25, 3.74, 15.44])
    weeks = customer_lifetime_value(bg_fit, gg, cdnow, horizon=3, discount=0.0, unit="week")
    e = bg_fit.expected_purchases(3 * 4.345, cdnow) * gg.expected_spend(cdnow)
    np.testing.assert_allclose(weeks, e, rtol=1e-12)  # undiscounted CLV = spend x purchases
    with pytest.raises(RfmxError, match="whole number of months"):
        customer_lifetime_value(bg_fit, gg, cdnow, horizon=0)
    no_unit = _with_params(BGNBD, list(bg_fit.params_.values()), unit=None)
    with pytest.raises(RfmxError, match="time unit is unknown"):
        customer_lifetime_value(no_unit, gg, cdnow)


def test_calibration_holdout_table():
    s = summary(os.path.join(DATA, "cdnow_sample.csv.gz"), time="date", as_of="1998-07-01",
                holdout_start="1997-10-01", unit="week")
    bg = BGNBD().fit(s)
    tab = calibration_holdout_table(bg, s).to_pandas()
    assert tab["bucket"].tolist() == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert tab["n_customers"].sum() == 2357 and tab["n_customers"].iloc[0] == 1411
    df = s.to_pandas()
    assert tab["actual"].iloc[1] == df.loc[df["frequency_cal"] == 1, "frequency_holdout"].mean()
    pred = bg.expected_purchases(39, s)
    np.testing.assert_allclose(tab["predicted"].iloc[0], pred[df["frequency_cal"].to_numpy() == 0].mean())
    assert (np.abs(tab["predicted"] - tab["actual"]) < 0.4 * tab["actual"] + 0.05).all()
    with pytest.raises(RfmxError, match="holdout_start"):
        calibration_holdout_table(bg, summary(os.path.join(DATA, "cdnow_sample.csv.gz"), time="date"))


def test_gamma_gamma_leaves_out_repeat_buyers_with_zero_spend(cdnow):
    # lifetimes and PyMC-Marketing fit on frequency > 0 & monetary_value > 0: two zero-spend
    # repeat buyers change nothing in the fit and are counted
    x = np.concatenate([cdnow["frequency"], [3.0, 1.0]])
    m = np.concatenate([cdnow["monetary_value"], [0.0, 0.0]])
    gg = GammaGamma().fit(frequency=x, monetary_value=m)
    ref = GammaGamma().fit(cdnow)
    assert gg.n_zero_spend_ == 2 and ref.n_zero_spend_ == 0
    assert gg.params_ == ref.params_ and gg.n_customers_ == ref.n_customers_ == 946
    # their expected spend follows the model: the posterior mean for a mean spend of 0
    p, q, v = (gg.params_[k] for k in ("p", "q", "v"))
    spend = gg.expected_spend(frequency=[3.0, 1.0, 0.0], monetary_value=[0.0, 0.0, 0.0])
    np.testing.assert_allclose(spend, [p * v / (p * 3 + q - 1), p * v / (p + q - 1), p * v / (q - 1)], rtol=1e-14)
    assert spend[0] < spend[1] < spend[2]  # shrunk towards 0 the more zero-spend repeats
    assert json.loads(json.dumps(gg.to_dict()))["n_zero_spend"] == 2


def test_fits_do_not_depend_on_customer_order(cdnow):
    # float sums over patterns / repeat buyers run in a canonical order, not row order
    rng = np.random.default_rng(3)
    ref_bg, ref_gg, ref_pn = BGNBD().fit(cdnow), GammaGamma().fit(cdnow), ParetoNBD().fit(cdnow)
    for _ in range(3):
        perm = rng.permutation(len(cdnow["frequency"]))
        shuffled = {k: v[perm] for k, v in cdnow.items()}
        bg, gg = BGNBD().fit(shuffled), GammaGamma().fit(shuffled)
        assert (bg.params_, bg.log_likelihood_, bg.standard_errors_) == \
            (ref_bg.params_, ref_bg.log_likelihood_, ref_bg.standard_errors_)
        assert (gg.params_, gg.log_likelihood_, gg.standard_errors_, gg.independence_) == \
            (ref_gg.params_, ref_gg.log_likelihood_, ref_gg.standard_errors_, ref_gg.independence_)
        assert ParetoNBD().fit(shuffled).params_ == ref_pn.params_


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["params"].update(alpha=float("nan")), "BG/NBD parameter 'alpha' is nan"),
    (lambda d: d["params"].update(r=float("inf")), "BG/NBD parameter 'r' is inf"),
    (lambda d: d["params"].update(a=-0.5), "BG/NBD parameter 'a' must be positive, got -0.5"),
    (lambda d: d["params"].update(b=0), "BG/NBD parameter 'b' must be positive, got 0"),
    (lambda d: d["params"].update(b="2.4"), "BG/NBD parameter 'b' must be a number, got the string '2.4'"),
    (lambda d: d["params"].pop("alpha"), "missing BG/NBD parameter 'alpha'"),
    (lambda d: d["params"].update(beta=1.0), "BG/NBD has no parameter 'beta'"),
    (lambda d: d.pop("params"), r"missing the BG/NBD parameters \('params'\)"),
    (lambda d: d.update(params=[1, 2, 3, 4]), "params must be a JSON object, got a list of 4"),
    (lambda d: d.update(model="bg-nbd"), "unknown model 'bg-nbd'; expected one of 'bgnbd', 'mbgnbd', 'pareto', "
                                        "'gamma_gamma', 'bgbb', 'sbg'"),
    (lambda d: d.pop("model"), r"missing the model name \('model'\)"),
    (lambda d: d.update(version=2), "not an rfmx CLV model file .*version 2"),
    (lambda d: d["standard_errors"].update(r=-1.0), "standard error of 'r' must be >= 0"),
    (lambda d: d.update(penalizer=float("nan")), "penalizer is nan"),
    (lambda d: d.update(time_unit="fortnight"), "time_unit must be one of 'day', 'week', 'month'"),
    (lambda d: d.update(time_scale=0), "time_scale must be positive"),
    (lambda d: d.update(n_customers=-3), "n_customers must be >= 0"),
])
def test_damaged_clv_model_file_is_a_one_line_error(tmp_path, bg_fit, edit, message):
    doc = bg_fit.to_dict()
    doc["params"], doc["standard_errors"] = dict(doc["params"]), dict(doc["standard_errors"])
    edit(doc)
    path = tmp_path / "bg.json"
    path.write_text(json.dumps(doc))  # NaN and Infinity written as the literals Python's json accepts
    for load in (load_model, BGNBD.load):
        with pytest.raises(RfmxError, match=message) as err:
            load(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_clv_model_file_that_is_not_json(tmp_path, cdnow):
    path = tmp_path / "gg.json"
    for text, message in [("", "not valid JSON"), ("params: 1", "not valid JSON"), ("[]", "holds a list of 0"),
                          ("\xff\xfe", "not UTF-8")]:
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(RfmxError, match=f"{path}: not an rfmx CLV model file .*{message}"):
            GammaGamma.load(path)
    # a model saved without standard errors (n/a: NaN) or counts still loads
    gg = GammaGamma().fit(cdnow)
    doc = gg.to_dict()
    doc.update(standard_errors={"p": float("nan")}, n_customers=None, n_patterns=None, log_likelihood=None)
    path.write_text(json.dumps(doc))
    back = GammaGamma.load(path)
    assert back.params_ == gg.params_ and np.isnan(back.standard_errors_["q"])
    assert back.summary().startswith("Gamma-Gamma: ? customers (? patterns), log-likelihood ?")
