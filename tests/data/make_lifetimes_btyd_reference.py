"""Regenerate the lifetimes reference values for the MBG/NBD and BG/BB models.

Not a test: run it with a Python that has ``lifetimes`` 0.11.3 (it does not import with
NumPy 2 / pandas 3, so give it its own environment, e.g.
``python -m venv /tmp/lt && /tmp/lt/bin/pip install lifetimes==0.11.3 "numpy<2" "pandas<2.2" "scipy<1.14"``)::

    /tmp/lt/bin/python tests/data/make_lifetimes_btyd_reference.py

Reads ``cdnow_customers_summary.csv`` (written by ``make_lifetimes_expected.py``) and
writes (all small):

- ``donations.csv``: the BG/BB donations data shipped with lifetimes
  (``lifetimes/datasets/donations.csv``, MIT licence, 22 rows): the 11,104 first-time donors
  of 1995 by (frequency, recency, periods) with their count ``weights`` (Fader, Hardie &
  Shang 2010);
- ``lifetimes_btyd_reference.json``: lifetimes' fitted parameters, objective (mean negative
  log-likelihood plus penalty), standard errors and predictions of

  * ``ModifiedBetaGeoFitter`` on the published CDNOW summary (Fader, Hardie & Lee 2005;
    per-customer predictions in ``lifetimes_mbgnbd_predictions.csv.gz``), unpenalized and
    with ``penalizer_coef=0.05`` (and ``BetaGeoFitter`` with it, for BG/NBD's penalty);
  * ``BetaGeoBetaBinomFitter`` on the donations data (per-pattern predictions), unpenalized
    and with ``penalizer_coef=0.01``, and on four simulated cohorts observed for 4, 6, 9
    and 12 opportunities (``bgbb_simulated.csv``, made here with a fixed seed).
"""
import json
import os
import shutil
import warnings

import numpy as np
import pandas as pd
from lifetimes import BetaGeoBetaBinomFitter, BetaGeoFitter, ModifiedBetaGeoFitter

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DS = os.path.join(os.path.dirname(__import__("lifetimes").__file__), "datasets")


def floats(v):
    return [float(t) for t in np.asarray(v, dtype=float).ravel()]


def fitted(model, names):
    return {"params": floats(model.params_[list(names)]),
            "standard_errors": floats(model.standard_errors_[list(names)]),
            "objective": float(model._negative_log_likelihood_)}


out = {"lifetimes": __import__("lifetimes").__version__, "numpy": np.__version__, "pandas": pd.__version__,
       "scipy": __import__("scipy").__version__}

# --- MBG/NBD on the published CDNOW summary -------------------------------------------------
pub = pd.read_csv(os.path.join(HERE, "cdnow_customers_summary.csv"))
x, tx, T = pub["x"].to_numpy(float), pub["t_x"].to_numpy(float), pub["T"].to_numpy(float)
MBG = ("r", "alpha", "a", "b")
mbg = ModifiedBetaGeoFitter().fit(x, tx, T)
out["mbgnbd"] = {**fitted(mbg, MBG), "n": len(x),
                 "expected_new": floats(mbg.expected_number_of_purchases_up_to_time(np.array([1.0, 39.0, 78.0])))}
mbg_pen = ModifiedBetaGeoFitter(penalizer_coef=0.05).fit(x, tx, T)
out["mbgnbd_penalized"] = {**fitted(mbg_pen, MBG), "penalizer": 0.05}
# BG/NBD's penalty as lifetimes applies it (alpha in units of max T), for the penalizer test
bg_pen = BetaGeoFitter(penalizer_coef=0.05).fit(x, tx, T)
out["bgnbd_penalized"] = {**fitted(bg_pen, MBG), "penalizer": 0.05}
pd.DataFrame({
    "ID": pub["ID"],
    "prob_alive": mbg.conditional_probability_alive(x, tx, T),
    "expected_10": mbg.conditional_expected_number_of_purchases_up_to_time(10, x, tx, T),
    "expected_39": mbg.conditional_expected_number_of_purchases_up_to_time(39, x, tx, T),
}).to_csv(os.path.join(HERE, "lifetimes_mbgnbd_predictions.csv.gz"), index=False, float_format="%.17g")

# --- BG/BB on the donations data ---------------------------------------------------------------
shutil.copyfile(os.path.join(DS, "donations.csv"), os.path.join(HERE, "donations.csv"))
don = pd.read_csv(os.path.join(HERE, "donations.csv"))
f, r, n, w = (don[c].to_numpy() for c in ("frequency", "recency", "periods", "weights"))
BGBB = ("alpha", "beta", "gamma", "delta")
bb = BetaGeoBetaBinomFitter().fit(f, r, n, weights=w)
pred = {}
for m in (0, 1, 5):
    pred[f"prob_alive_{m}"] = floats(bb.conditional_probability_alive(m, f, r, n))
for m in (1, 5, 10):
    pred[f"expected_{m}"] = floats(bb.conditional_expected_number_of_purchases_up_to_time(m, f, r, n))
dist = bb.expected_number_of_transactions_in_first_n_periods(6)
out["bgbb_donations"] = {**fitted(bb, BGBB), "n": int(w.sum()), "predictions": pred,
                         "expected_in_first_6": {"frequency": [int(v) for v in dist.index],
                                                 "customers": floats(dist["model"])}}
bb_pen = BetaGeoBetaBinomFitter(penalizer_coef=0.01).fit(f, r, n, weights=w)
out["bgbb_donations_penalized"] = {**fitted(bb_pen, BGBB), "penalizer": 0.01}

# --- BG/BB on simulated cohorts of different lengths -------------------------------------------
# (CDNOW in weekly opportunities is no test: lifetimes' BFGS runs off to the edge of the
# parameter space from every start tried.)  Four cohorts of 2,000 customers observed for
# 4, 6, 9 and 12 opportunities, simulated from BG/BB with a fixed seed: each opportunity a
# living customer first dies with probability theta, then transacts with probability p.
rng = np.random.default_rng(20100611)
rows = []
for n_opp in (4, 6, 9, 12):
    p = rng.beta(1.2, 0.75, 2000)
    theta = rng.beta(0.66, 2.78, 2000)
    for pi, th in zip(p, theta):
        freq, last = 0, 0
        for t in range(1, n_opp + 1):
            if rng.random() < th:
                break
            if rng.random() < pi:
                freq, last = freq + 1, t
        rows.append((freq, last, n_opp))
sim = pd.DataFrame(rows, columns=["frequency", "recency", "n_periods"])
sim = sim.groupby(["frequency", "recency", "n_periods"]).size().rename("weights").reset_index()
sim.to_csv(os.path.join(HERE, "bgbb_simulated.csv"), index=False)
sf, sr, sn, sw = (sim[c].to_numpy() for c in ("frequency", "recency", "n_periods", "weights"))
bbs = BetaGeoBetaBinomFitter().fit(sf, sr, sn, weights=sw)
out["bgbb_simulated"] = {**fitted(bbs, BGBB), "n": int(sw.sum()), "true": [1.2, 0.75, 0.66, 2.78],
                         "predictions": {"prob_alive_1": floats(bbs.conditional_probability_alive(1, sf, sr, sn)),
                                         "expected_8": floats(bbs.conditional_expected_number_of_purchases_up_to_time(
                                             8, sf, sr, sn))}}

with open(os.path.join(HERE, "lifetimes_btyd_reference.json"), "w") as fh:
    json.dump(out, fh, indent=1)
    fh.write("\n")
print(json.dumps({k: v.get("params") for k, v in out.items() if isinstance(v, dict)}, indent=1))
