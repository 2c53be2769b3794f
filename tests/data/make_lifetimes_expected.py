"""Regenerate the lifetimes reference outputs committed beside this script.

Not a test: run it with a Python that has ``lifetimes`` 0.11.3 (it does not import with
NumPy 2 / pandas 3, so use a separate environment, e.g.
``python -m venv /tmp/lt && /tmp/lt/bin/pip install lifetimes==0.11.3 "numpy<2" "pandas<2.2" "scipy<1.13"``)::

    /tmp/lt/bin/python tests/data/make_lifetimes_expected.py

Writes (all small):

- ``cdnow_sample.csv.gz``: the CDNOW 2,357-customer sample transactions shipped with
  lifetimes (``CDNOW_sample.txt``) as tidy CSV: customer_id, date, n_cds, amount;
- ``cdnow_customers_summary.csv``: Fader-Hardie-Lee's 39-week calibration summary
  (x, t_x, T in weeks, rounded to 2 decimals) and ``zbar`` (mean repeat spend);
- ``lifetimes_summary_*.csv.gz``: ``summary_data_from_transaction_data`` /
  ``calibration_and_holdout_data`` outputs on the sample;
- ``lifetimes_models.json``: lifetimes' fitted parameters on the published summary;
- ``lifetimes_predictions.csv.gz``: its predictions for every customer at those parameters.
"""
import json
import os
import warnings

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter
from lifetimes.utils import calibration_and_holdout_data, summary_data_from_transaction_data

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DS = os.path.join(os.path.dirname(__import__("lifetimes").__file__), "datasets")

raw = pd.read_csv(os.path.join(DS, "CDNOW_sample.txt"), sep=r"\s+", header=None,
                  names=["master_id", "customer_id", "date", "n_cds", "amount"], dtype={"date": str})
tx = raw[["customer_id", "date", "n_cds", "amount"]].copy()
tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d").dt.strftime("%Y-%m-%d")
tx.to_csv(os.path.join(HERE, "cdnow_sample.csv.gz"), index=False)
tx["date"] = pd.to_datetime(tx["date"])

# lifetimes' summary outputs on the raw transactions
full_d = summary_data_from_transaction_data(tx, "customer_id", "date", "amount", freq="D", freq_multiplier=7,
                                            observation_period_end="1998-06-30")
full_d.reset_index().to_csv(os.path.join(HERE, "lifetimes_summary_day_weeks.csv.gz"), index=False, float_format="%.17g")
full_w = summary_data_from_transaction_data(tx, "customer_id", "date", "amount", freq="W")
full_w.reset_index().to_csv(os.path.join(HERE, "lifetimes_summary_week.csv.gz"), index=False, float_format="%.17g")
cal = calibration_and_holdout_data(tx, "customer_id", "date", calibration_period_end="1997-09-30",
                                   observation_period_end="1998-06-30", freq="D", freq_multiplier=7,
                                   monetary_value_col="amount")
cal.reset_index().to_csv(os.path.join(HERE, "lifetimes_calibration_holdout.csv.gz"), index=False, float_format="%.17g")

# The published summary (Fader, Hardie & Lee 2005) with mean repeat spend
pub = pd.read_csv(os.path.join(DS, "cdnow_customers_summary_with_transactions.csv"))
pub.to_csv(os.path.join(HERE, "cdnow_customers_summary.csv"), index=False)
x, tx_, T, m = pub["x"].values, pub["t_x"].values, pub["T"].values, pub["zbar"].values

bg = BetaGeoFitter().fit(x, tx_, T)
pn = ParetoNBDFitter().fit(x, tx_, T)
rep = x > 0
gg = GammaGammaFitter().fit(x[rep], m[rep])
bg_params = bg.params_[["r", "alpha", "a", "b"]]
pn_params = pn.params_[["r", "alpha", "s", "beta"]]
gg_params = gg.params_[["p", "q", "v"]]
s = pd.Series
out = {
    "bgnbd": {"params": bg_params.tolist(), "standard_errors": bg.standard_errors_[["r", "alpha", "a", "b"]].tolist(),
              "neg_mean_ll": float(bg._negative_log_likelihood_),
              "prob_alive": bg.conditional_probability_alive(x, tx_, T).tolist(),
              "expected_10": bg.conditional_expected_number_of_purchases_up_to_time(10, x, tx_, T).tolist(),
              "expected_39": bg.conditional_expected_number_of_purchases_up_to_time(39, x, tx_, T).tolist(),
              "expected_new_39": bg.expected_number_of_purchases_up_to_time(np.array([39.0, 78.0])).tolist(),
              "clv_12_weeks": gg.customer_lifetime_value(bg, s(x), s(tx_), s(T), s(m), time=12, discount_rate=0.01,
                                                         freq="W").tolist()},
    "pareto": {"params": pn_params.tolist(), "neg_mean_ll": float(pn._negative_log_likelihood_),
               "prob_alive": pn.conditional_probability_alive(x, tx_, T).tolist(),
               "expected_10": pn.conditional_expected_number_of_purchases_up_to_time(10, x, tx_, T).tolist(),
               "expected_new_39": pn.expected_number_of_purchases_up_to_time(np.array([39.0, 78.0])).tolist(),
               "clv_12_weeks": gg.customer_lifetime_value(pn, s(x), s(tx_), s(T), s(m), time=12, discount_rate=0.01,
                                                          freq="W").tolist()},
    "gamma_gamma": {"params": gg_params.tolist(), "standard_errors": gg.standard_errors_[["p", "q", "v"]].tolist(),
                    "expected_spend": gg.conditional_expected_average_profit(s(x), s(m)).tolist()},
}
per_customer = {}
for model, d in out.items():
    for key in [k for k, v in d.items() if isinstance(v, list) and len(v) == len(x)]:
        per_customer[f"{model}_{key}"] = d.pop(key)
pd.DataFrame({"ID": pub["ID"], **per_customer}).to_csv(os.path.join(HERE, "lifetimes_predictions.csv.gz"),
                                                       index=False, float_format="%.17g")
with open(os.path.join(HERE, "lifetimes_models.json"), "w") as f:
    json.dump(out, f, indent=1)
print({k: v["params"] for k, v in out.items()})
