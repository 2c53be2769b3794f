"""Customer lifetime value: BTYD summaries and the BG/NBD, MBG/NBD, Pareto/NBD, BG/BB, sBG and
Gamma-Gamma models.

Importing this package is cheap (no Numba, no SciPy until a kernel or a fit runs).

>>> from rfmx import clv
>>> s = clv.summary("orders.parquet", holdout_start="2024-10-01")
>>> bg = clv.BGNBD().fit(s)                       # maximum likelihood, Numba gradients
>>> bg.params_, bg.standard_errors_
>>> spend = clv.GammaGamma().fit(s)
>>> table = clv.customer_lifetime_value(bg, spend, s, horizon=12, discount=0.01)
>>> s2 = clv.summary("orders.parquet", holdout_start="2024-10-01", unit="week")
>>> clv.compare_models(s2, ["bgnbd", "mbgnbd", "pareto", "bgbb"]).best
>>> clv.SBG().fit(survivors=[1000, 631, 468, 382, 326]).projection(5)
"""
from __future__ import annotations

from .models import BGBB, BGNBD, MBGNBD, SBG, GammaGamma, ParetoNBD, load_model, model_class
from .summary import BTYDState, rf_matrix, summary
from .value import (
    COMPARABLE_MODELS,
    ModelComparison,
    add_clv_columns,
    calibration_holdout_table,
    compare_models,
    customer_lifetime_value,
    frequency_spend_correlation,
)

__all__ = [
    "BTYDState",
    "summary",
    "rf_matrix",
    "BGNBD",
    "MBGNBD",
    "ParetoNBD",
    "BGBB",
    "SBG",
    "GammaGamma",
    "load_model",
    "model_class",
    "compare_models",
    "ModelComparison",
    "COMPARABLE_MODELS",
    "customer_lifetime_value",
    "calibration_holdout_table",
    "frequency_spend_correlation",
    "add_clv_columns",
]
