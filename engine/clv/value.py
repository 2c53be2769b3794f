"""Customer lifetime value and model checks over BTYD summaries."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import RfmxError
from .models import _pick

__all__ = ["customer_lifetime_value", "add_clv_columns", "calibration_holdout_table", "compare_models",
           "ModelComparison", "COMPARABLE_MODELS", "frequency_spend_correlation", "CLV_COLUMNS"]

#: columns :func:`add_clv_columns` appends (``expected_spend`` and ``clv`` need a spend model).
CLV_COLUMNS = ("probability_alive", "expected_purchases", "expected_spend", "clv")


def customer_lifetime_value(model, spend_model, data=None, *, frequency=None, recency=None, T=None,
                            monetary_value=None, horizon: int = 12, discount: float = 0.01,
                            unit: str | None = None, horizon_unit: str = "month") -> np.ndarray:
    """Discounted CLV over ``horizon`` periods of ``horizon_unit`` (default months), per
    customer (lifetimes' method).

    For each month k = 1..horizon: expected purchases in month k (from ``model``, BG/NBD or
    Pareto/NBD) x expected spend per purchase (``spend_model``, Gamma-Gamma) / (1 + discount)**k.
    With ``horizon_unit`` ``"week"`` or ``"day"`` the steps are weeks or days and the monthly
    ``discount`` is compounded over each step's share of a month.  ``unit``: the model's time
    unit (default: from the summary it was fitted on); months are 30 days or 4.345 weeks, as
    in lifetimes.
    """
    if data is not None:
        x, m = _pick(data, "frequency"), _pick(data, "monetary_value")
    else:
        x, m = np.asarray(frequency, dtype=np.float64), np.asarray(monetary_value, dtype=np.float64)
    spend = spend_model.expected_spend(frequency=x, monetary_value=m)
    _, _, weight = model.value_weights(data, frequency=frequency, recency=recency, T=T, horizon=horizon,
                                       discount=discount, unit=unit, horizon_unit=horizon_unit)
    return spend * weight


def add_clv_columns(table: pa.Table, model, spend_model=None, *, summary: pa.Table | None = None,
                    horizon: int = 12, discount: float = 0.01, unit: str | None = None,
                    key: str = "customer_id", horizon_unit: str = "month") -> pa.Table:
    """``table`` with :data:`CLV_COLUMNS` appended: ``probability_alive``,
    ``expected_purchases`` (over ``horizon`` periods of ``horizon_unit``, default months),
    and with ``spend_model``
    ``expected_spend`` and ``clv`` (discounted at the monthly ``discount`` rate).

    ``summary``: the BTYD summary to predict from, matched to ``table`` on ``key`` (e.g. an
    RFM score table); by default ``table`` is the summary.  Rows of ``table`` without a
    summary row (customers with refunds only) get nulls.
    """
    src = table if summary is None else summary
    alive, expected, weight = model.value_weights(src, horizon=horizon, discount=discount, unit=unit,
                                                  horizon_unit=horizon_unit)
    cols = {"probability_alive": alive, "expected_purchases": expected}
    if spend_model is not None:
        x, m = _pick(src, "frequency"), _pick(src, "monetary_value")
        spend = spend_model.expected_spend(frequency=x, monetary_value=m)
        cols["expected_spend"] = spend
        cols["clv"] = spend * weight
    if summary is None:
        out = table
        for name, v in cols.items():
            out = _set_column(out, name, pa.array(v))
        return out
    import pyarrow.compute as pc

    if key not in table.column_names or key not in summary.column_names:
        raise RfmxError(f"both tables need the key column '{key}'")
    left = table.column(key)
    right = summary.column(key)
    if not left.type.equals(right.type):
        try:
            right = right.cast(left.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise RfmxError(f"key '{key}' has type {left.type} in the table but {summary.column(key).type} "
                            f"in the summary") from None
    idx = pc.index_in(left, value_set=right.combine_chunks())
    out = table
    for name, v in cols.items():
        out = _set_column(out, name, pa.array(v).take(idx))
    return out


def _set_column(table: pa.Table, name: str, arr) -> pa.Table:
    i = table.schema.get_field_index(name)
    if i >= 0:
        return table.set_column(i, name, arr)
    return table.append_column(name, arr)


def calibration_holdout_table(model, summary, *, max_frequency: int = 7) -> pa.Table:
    """Predicted vs actual holdout purchases by calibration frequency, ready to plot.

    ``summary``: a calibration/holdout summary (``holdout_start`` given).  One row per
    ``frequency_cal`` bucket 0, 1, ..., ``max_frequency`` (the last holds every customer
    with at least that many): ``frequency_cal``, ``bucket`` (label, e.g. ``"7+"``),
    ``n_customers``, ``actual`` (mean ``frequency_holdout``) and ``predicted`` (mean
    expected purchases over ``duration_holdout``); as lifetimes'
    ``plot_calibration_purchases_vs_holdout_purchases``.
    """
    x, actual, predicted = _holdout_predictions(model, summary)
    return _frequency_groups(x, actual, predicted, max_frequency)


def _holdout_columns(summary):
    from .models import _column, _has

    for col in ("frequency_cal", "frequency_holdout", "duration_holdout"):
        if not _has(summary, col):
            raise RfmxError(f"the summary has no '{col}' column; make it with holdout_start=...")
    return (_column(summary, "frequency_cal"), _column(summary, "frequency_holdout"),
            float(_column(summary, "duration_holdout")[0]))


def _holdout_predictions(model, summary):
    """(calibration frequency, actual holdout purchases, the model's expected purchases over
    the holdout) per customer; BG/BB's holdout is counted in opportunities (periods)."""
    x, actual, duration = _holdout_columns(summary)
    if getattr(model, "counts_opportunities", False):
        from .summary import periods_per_unit

        duration = round(duration * periods_per_unit(summary)[1], 6)
    return x, actual, model.expected_purchases(duration, summary)


def _frequency_groups(x, actual, predicted, max_frequency):
    bucket = np.minimum(x, max_frequency).astype(np.int64)
    k = int(max_frequency) + 1
    n = np.bincount(bucket, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        act = np.bincount(bucket, weights=actual, minlength=k) / n
        pred = np.bincount(bucket, weights=predicted, minlength=k) / n
    present = n > 0
    labels = [str(i) if i < max_frequency else f"{i}+" for i in range(k)]
    return pa.table({
        "frequency_cal": pa.array(np.arange(k)[present]),
        "bucket": pa.array([lb for lb, p in zip(labels, present) if p]),
        "n_customers": pa.array(n[present]),
        "actual": pa.array(act[present]),
        "predicted": pa.array(pred[present]),
    })


#: the purchase models :func:`compare_models` can fit (all but the spend and contract models)
COMPARABLE_MODELS = ("bgnbd", "mbgnbd", "pareto", "bgbb")


@dataclass
class ModelComparison:
    """The result of :func:`compare_models`.

    ``table``: one row per model — ``model``, ``status`` ("ok" or why the fit failed),
    ``log_likelihood`` (calibration; BG/BB's is a probability of discrete outcomes, the
    others' a density of purchase times, so it ranks models of one kind only),
    ``n_params``, ``mae_customer`` (mean absolute error of each customer's holdout
    purchases), ``mae_frequency_group`` (mean over calibration-frequency groups 0..7+ of
    the absolute error of the group's mean), ``predicted_mean`` and ``actual_mean`` (holdout
    purchases per customer); ``groups``: the predicted-vs-actual table of every model, long
    (``model`` + :func:`calibration_holdout_table`'s columns); ``best``: the model with the
    lowest ``mae_customer``; ``best_by_group``: the one with the lowest
    ``mae_frequency_group``; ``models``: the fitted models by name (None where a fit failed).
    """

    table: pa.Table
    groups: pa.Table
    best: str
    best_by_group: str
    models: dict


def compare_models(summary, models=COMPARABLE_MODELS, *, penalizer: float = 0.0,
                   max_frequency: int = 7) -> ModelComparison:
    """Fit each purchase model on the calibration period of ``summary`` (a calibration/holdout
    BTYD summary) and measure how well it predicts each customer's holdout purchases.

    ``models``: names among ``bgnbd``, ``mbgnbd``, ``pareto``, ``bgbb``.  A model whose fit
    fails is reported with its error in ``status`` and left out of the ranking (an error is
    raised only if every fit fails).  See :class:`ModelComparison`.

    >>> s = clv.summary("orders.parquet", holdout_start="2024-07-01", unit="week")
    >>> cmp = clv.compare_models(s)
    >>> cmp.best, cmp.table
    """
    from .models import model_class

    names = list(dict.fromkeys(models))
    if not names:
        raise RfmxError("name at least one model to compare")
    for name in names:
        if name not in COMPARABLE_MODELS:
            raise RfmxError(f"cannot compare {name!r} on purchase data; choose from {', '.join(COMPARABLE_MODELS)}")
    x_cal, actual, _ = _holdout_columns(summary)
    rows, groups, fitted = [], [], {}
    for name in names:
        cls = model_class(name)
        row = {"model": name, "status": "ok", "log_likelihood": None, "n_params": len(cls.param_names),
               "mae_customer": None, "mae_frequency_group": None, "predicted_mean": None,
               "actual_mean": float(actual.mean())}
        try:
            model = cls(penalizer=penalizer).fit(summary)
            _, _, predicted = _holdout_predictions(model, summary)
        except RfmxError as exc:
            fitted[name] = None
            row["status"] = str(exc)
            rows.append(row)
            continue
        fitted[name] = model
        by_group = _frequency_groups(x_cal, actual, predicted, max_frequency)
        gap = np.abs(by_group.column("predicted").to_numpy() - by_group.column("actual").to_numpy())
        row.update(log_likelihood=model.log_likelihood_, mae_customer=float(np.mean(np.abs(predicted - actual))),
                   mae_frequency_group=float(gap.mean()), predicted_mean=float(predicted.mean()))
        rows.append(row)
        groups.append(by_group.add_column(0, "model", pa.array([name] * by_group.num_rows)))
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise RfmxError("no model could be fitted: " + "; ".join(f"{r['model']}: {r['status']}" for r in rows))
    best = min(ok, key=lambda r: r["mae_customer"])["model"]
    best_by_group = min(ok, key=lambda r: r["mae_frequency_group"])["model"]
    table = pa.table({
        "model": pa.array([r["model"] for r in rows]),
        "status": pa.array([r["status"] for r in rows]),
        "log_likelihood": pa.array([r["log_likelihood"] for r in rows], pa.float64()),
        "n_params": pa.array([r["n_params"] for r in rows], pa.int64()),
        "mae_customer": pa.array([r["mae_customer"] for r in rows], pa.float64()),
        "mae_frequency_group": pa.array([r["mae_frequency_group"] for r in rows], pa.float64()),
        "predicted_mean": pa.array([r["predicted_mean"] for r in rows], pa.float64()),
        "actual_mean": pa.array([r["actual_mean"] for r in rows], pa.float64()),
        "best": pa.array([r["model"] == best for r in rows]),
    })
    return ModelComparison(table, pa.concat_tables(groups), best, best_by_group, fitted)


def frequency_spend_correlation(data=None, *, frequency=None, monetary_value=None) -> dict:
    """Pearson correlation of frequency and mean spend among repeat buyers: Gamma-Gamma
    assumes they are independent (|r| near 0).  Returns ``{"pearson_r", "p_value", "n"}``;
    r and p are NaN when undefined (fewer than 3 repeat buyers or a constant column)."""
    if data is not None:
        x, m = _pick(data, "frequency"), _pick(data, "monetary_value")
    else:
        x, m = np.asarray(frequency, dtype=np.float64), np.asarray(monetary_value, dtype=np.float64)
    rep = x > 0
    x, m = x[rep], m[rep]
    n = int(rep.sum())
    if n < 3 or np.ptp(x) == 0 or np.ptp(m) == 0:
        return {"pearson_r": float("nan"), "p_value": float("nan"), "n": n}
    from scipy.special import stdtr

    dx, dm = x - x.mean(), m - m.mean()
    r = float(np.clip(np.dot(dx, dm) / np.sqrt(np.dot(dx, dx) * np.dot(dm, dm)), -1.0, 1.0))
    t = abs(r) * np.sqrt((n - 2) / max(1.0 - r * r, 1e-300))
    return {"pearson_r": r, "p_value": float(2.0 * stdtr(n - 2, -t)), "n": n}
