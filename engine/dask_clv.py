"""BTYD models over customer buckets (:func:`rfmx.dask.clv`): one fit of the whole population,
predictions per bucket.

- **BG/NBD, Pareto/NBD.** Their likelihood reads a customer only through its
  ``(frequency, recency, T)`` pattern, so each bucket compresses its summary to distinct
  patterns with customer counts (:func:`rfmx.clv.models.compress`), a worker merges the
  buckets' patterns (in bucket order, counts added) and the client fits once on them:
  the fit sorts patterns into a canonical order whatever their origin, so the parameters
  are the single-machine parameters bit for bit.
- **Gamma-Gamma.** Its likelihood reads each repeat buyer's ``(frequency, mean spend)``,
  and mean spends are nearly all distinct: there is no small summary. The repeat buyers'
  two columns (16 bytes each) are gathered on *one worker*, which fits the model there and
  returns the parameters — exact, and the client still receives no per-customer data, but
  that worker holds those two columns of every repeat buyer.
- **Predictions** (probability alive, expected purchases, spend, CLV) are per customer
  given the models, so each bucket computes its own where it lives.

The ``bucket_`` functions run inside tasks on the workers; nothing here imports Dask.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["bucket_summary", "bucket_patterns", "merge_patterns", "bucket_repeat_spend", "fit_spend",
           "fit_transactions", "bucket_clv", "summary_meta"]


def bucket_summary(part: bytes, as_of_us: int, id_type, time_zone, unit) -> pa.Table:
    """One bucket's merged BTYD state (Arrow IPC bytes) as its BTYD summary, as of the run's ``as_of``."""
    from .buckets import from_ipc, merge_states

    state = merge_states([from_ipc(part)], what="a bucket")
    if id_type is not None:
        state.id_type = id_type
    state.time_zone = time_zone
    state.drop_index()
    return state.summary(as_of_us, unit=unit)


def summary_meta(summary: pa.Table) -> dict:
    """A summary's schema metadata (time unit and scale, as-of): what a fit records of it."""
    return {k.decode(): v.decode() for k, v in (summary.schema.metadata or {}).items()}


def bucket_patterns(summary: pa.Table) -> tuple:
    """``(frequency, recency, T, customers)`` per distinct pattern of one bucket's summary."""
    from .clv.models import compress, customers_from

    if summary.num_rows == 0:
        return tuple(np.empty(0) for _ in range(4))
    x, tx, T = customers_from(summary)
    px, ptx, pT, pw, _ = compress(x, tx, T)
    return px, ptx, pT, pw


def merge_patterns(*parts: tuple) -> tuple:
    """The buckets' patterns (in bucket order) merged: each distinct pattern once, counts added."""
    from .clv.models import compress

    x, tx, T, w = (np.concatenate([p[i] for p in parts]) for i in range(4))
    if len(x) == 0:
        return x, tx, T, w
    px, ptx, pT, pw, _ = compress(x, tx, T, w)
    return px, ptx, pT, pw


def bucket_repeat_spend(summary: pa.Table) -> tuple:
    """``(frequency, monetary_value)`` of one bucket's repeat buyers (the rows Gamma-Gamma reads)."""
    x = summary.column("frequency").to_numpy().astype(np.float64)
    m = summary.column("monetary_value").to_numpy().astype(np.float64)
    rep = x > 0
    return x[rep], m[rep]


def fit_spend(penalizer: float, meta: dict, *parts: tuple):
    """Gamma-Gamma fitted on every bucket's repeat buyers (on the worker running this task)."""
    from .clv.models import GammaGamma

    x = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
    m = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
    if len(x) == 0:  # no repeat buyers: the one-machine message ("needs at least 3 repeat buyers")
        x, m = np.zeros(1), np.zeros(1)
    model = GammaGamma(penalizer=penalizer).fit(frequency=x, monetary_value=m)
    _set_time_meta(model, meta)
    return model


def _set_time_meta(model, meta: dict) -> None:
    """The time unit and scale a fit on the summary table itself records."""
    unit, scale = meta.get("rfmx.btyd.unit"), meta.get("rfmx.btyd.scale")
    model.time_unit_ = unit or None
    model.time_scale_ = float(scale) if scale else 1.0


def fit_transactions(cls, penalizer: float, patterns: tuple, meta: dict):
    """BG/NBD or Pareto/NBD fitted on the merged patterns (on the client)."""
    px, ptx, pT, pw = patterns
    model = cls(penalizer=penalizer)
    if len(px) == 0:
        from .errors import RfmxError

        raise RfmxError("no customers")
    model.fit(frequency=px, recency=ptx, T=pT, weights=pw)
    _set_time_meta(model, meta)
    return model


def bucket_clv(summary: pa.Table, model, spend_model, horizon: int, discount: float, horizon_unit: str, output):
    """One bucket's summary with the CLV columns; written as a Parquet part (``output``:
    ``(filesystem, path)``; returns the rows) or returned."""
    from .clv.value import add_clv_columns

    table = add_clv_columns(summary, model, spend_model, horizon=horizon, discount=discount,
                            horizon_unit=horizon_unit)
    if output is None:
        return table
    from .buckets import write_part

    return write_part(table, output)

