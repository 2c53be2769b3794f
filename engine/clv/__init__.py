"""Customer lifetime value: BTYD summaries and the BG/NBD, Pareto/NBD and Gamma-Gamma models.

Importing this package is cheap (no Numba, no SciPy until a kernel or a fit runs).

>>> from rfmx import clv
>>> s = clv.summary("orders.parquet", holdout_start="2024-10-01")
>>> bg = clv.BGNBD().fit(s)                       # maximum likelihood, Numba gradients
>>> bg.params_, bg.standard_errors_
>>> spend = clv.GammaGamma().fit(s)
>>> table = clv.customer_lifetime_value(bg, spend, s, horizon=12, discount=0.01)
"""
from __future__ import annotations

from .models import BGNBD, GammaGamma, ParetoNBD, load_model
from .summary import BTYDState, summary
from .value import (
    add_clv_columns,
    calibration_holdout_table,
    customer_lifetime_value,
    frequency_spend_correlation,
)

__all__ = [
    "BTYDState",
    "summary",
    "BGNBD",
    "ParetoNBD",
    "GammaGamma",
    "load_model",
    "customer_lifetime_value",
    "calibration_holdout_table",
    "frequency_spend_correlation",
    "add_clv_columns",
]
