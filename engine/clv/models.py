"""BTYD models fitted by maximum likelihood: BG/NBD, MBG/NBD and Pareto/NBD (purchases in
continuous time), BG/BB (purchases at discrete opportunities), sBG (contract renewals) and
Gamma-Gamma (spend).

Estimators in scikit-learn's shape: the constructor stores options (``penalizer``), ``fit``
returns the model, fitted attributes end in ``_`` (``params_``, ``standard_errors_``,
``log_likelihood_``).  Log-likelihoods and gradients are Numba kernels
(:mod:`rfmx.kernels.clv_models`, :mod:`rfmx.kernels.clv_discrete`) over unique
``(frequency, recency, T)`` patterns, so a fit costs time per pattern, not per customer.
BG/NBD, MBG/NBD, BG/BB, sBG and Gamma-Gamma have analytic Hessians too and are fitted by
Newton's method on log-parameters (a large fit starts from a 50,000 customer sample's
optimum, so the full data see ~4 passes); Pareto/NBD uses SciPy's L-BFGS-B (Newton falls
back to it as well).  Standard errors come from the Hessian of the (penalised) total
negative log-likelihood at the optimum (analytic, or differences of the analytic gradient
for Pareto/NBD).

The objective is lifetimes': mean negative log-likelihood plus ``penalizer * sum(params**2)``,
with BG/NBD's, MBG/NBD's and Pareto/NBD's rate parameters (alpha, and Pareto's beta) in
units of the longest T, as lifetimes fits them.  Models save and load as JSON
(:meth:`save`, :meth:`load`, :func:`load_model`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RfmxError

__all__ = ["BGNBD", "MBGNBD", "ParetoNBD", "GammaGamma", "BGBB", "SBG", "load_model", "model_class", "customers_from",
           "opportunities_from", "contracts_from", "MODEL_FORMAT", "MODEL_VERSION"]

MODEL_FORMAT = "rfmx-clv-model"
MODEL_VERSION = 1
_N_CHUNKS = 64          # fixed reduction chunks: sums do not depend on the thread count
_LOG_BOUND = 18.42      # parameters live in [1e-8, 1e8]
_SERIAL_BELOW = 20_000  # rows below which kernels run on one thread (a parallel launch costs more)
_WARM_START_ABOVE = 50_000  # patterns above which a fit starts from a sample's fit


def _threads_for(n: int):
    from ..kernels._policy import threads

    return threads(1 if n < _SERIAL_BELOW else None)


# --- input handling -----------------------------------------------------------------

def _has(data, name: str) -> bool:
    if hasattr(data, "column_names"):
        return name in data.column_names
    if hasattr(data, "columns"):
        return name in list(data.columns)
    return name in data


def _column(data, name: str) -> np.ndarray:
    col = data[name]
    if hasattr(col, "null_count") and col.null_count:
        raise RfmxError(f"column '{name}' has {col.null_count} null value(s)")
    if hasattr(col, "to_numpy") and not isinstance(col, np.ndarray):
        col = col.to_numpy()
    return np.asarray(col, dtype=np.float64)


def _pick(data, base: str) -> np.ndarray:
    """``base`` or, in a calibration/holdout summary, ``base + '_cal'``."""
    for name in (base + "_cal", base):
        if _has(data, name):
            return _column(data, name)
    raise RfmxError(f"the data has no column '{base}' (or '{base}_cal')")


def _time_meta(data) -> tuple[str | None, float]:
    meta = getattr(getattr(data, "schema", None), "metadata", None) or {}
    unit = meta.get(b"rfmx.btyd.unit")
    scale = meta.get(b"rfmx.btyd.scale")
    return (unit.decode() if unit else None), (float(scale) if scale else 1.0)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def customers_from(data=None, frequency=None, recency=None, T=None):
    """Validated float64 ``(frequency, recency, T)`` arrays from a summary table or arrays."""
    if data is not None:
        x, tx, t = _pick(data, "frequency"), _pick(data, "recency"), _pick(data, "T")
    else:
        if frequency is None or recency is None or T is None:
            raise RfmxError("give a summary table or frequency, recency and T")
        x, tx, t = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (frequency, recency, T))
        x, tx, t = np.broadcast_arrays(x, tx, t)
    check_customers(x, tx, t)
    # (-0.0 and 0.0 may land in two patterns: only the compression, not a result, can tell)
    return np.ascontiguousarray(x), np.ascontiguousarray(tx), np.ascontiguousarray(t)


def check_customers(x, tx, T) -> None:
    """Raise RfmxError on inputs no BTYD model can take (naming the first bad row)."""
    from ..kernels.clv_models import check_btyd_inputs

    if len(x) == 0:
        raise RfmxError("no customers")
    out = np.empty((8, 2), dtype=np.int64)
    check_btyd_inputs(x, tx, T, out)
    rule = int(np.flatnonzero(out[:, 0] >= 0)[0]) if (out[:, 0] >= 0).any() else -1
    if rule < 0:
        return
    i, count = int(out[rule, 0]), int(out[rule, 1])
    if rule <= 2:
        name = ("frequency", "recency", "T")[rule]
        raise RfmxError(f"{name} has {count} non-finite value(s), first at row {i}")
    if rule == 3:
        raise RfmxError(f"{count} customer(s) have a negative frequency, recency or T, first at row {i} "
                        f"(frequency {x[i]}, recency {tx[i]}, T {T[i]})")
    if rule == 4:
        raise RfmxError(f"frequency must count repeat purchase periods; {count} value(s) are not whole "
                        f"numbers, first at row {i}: {x[i]}")
    if rule == 5:
        raise RfmxError(f"recency is greater than T for {count} customer(s), first at row {i} "
                        f"(recency {tx[i]}, T {T[i]}); recency runs from the first to the last purchase, T to the end")
    if rule == 6:
        raise RfmxError(f"{count} customer(s) have no repeat purchase but a non-zero recency, first at row "
                        f"{i}; recency is 0 without repeat purchases")
    raise RfmxError(f"{count} customer(s) have repeat purchases but T = 0, first at row {i}")


def compress(x, tx, T, weights=None):
    """Unique (x, t_x, T) patterns: ``(px, ptx, pT, pw, inverse)`` with ``pw`` the customers
    (or summed ``weights``) per pattern and ``inverse`` each row's pattern; patterns come in
    a fixed order (hash bucket, then first row) whatever the thread count.

    Rows are radix-partitioned by hash into buckets small enough that each bucket's hash
    table stays in cache (one sequential pass), then each bucket is deduplicated.
    """
    from ..kernels.clv_models import (compress_patterns, compress_patterns_small, hash_patterns, scatter_back,
                                      scatter_patterns)
    from ..state import _next_pow2

    bits = [np.ascontiguousarray(v, dtype=np.float64).view(np.int64) for v in (x, tx, T)]
    m = len(bits[0])
    bucket_bits = int(min(12, max(0, np.ceil(np.log2(max(m, 1) / 32768)))))  # ~32k rows a bucket
    P = 1 << bucket_bits
    hashes = np.empty(m, dtype=np.int64)
    counts = np.zeros(P, dtype=np.int64)
    with _threads_for(m):
        hash_patterns(*bits, bucket_bits, hashes, counts)
        # few patterns (a cache-sized table holds them): one pass, no partitioning
        cap = min(_next_pow2(2 * m + 2), 1 << 17)
        first = np.empty(min(m, cap // 2), dtype=np.int64)
        count = np.empty(len(first), dtype=np.int64)
        inverse = np.empty(m, dtype=np.int64)
        k = compress_patterns_small(*bits, hashes, np.zeros((cap, 4), dtype=np.int64), first, count, inverse)
        if k >= 0:
            first = first[:k]
            pw = count[:k].astype(np.float64) if weights is None else np.bincount(inverse, weights=weights, minlength=k)
            return np.asarray(x)[first], np.asarray(tx)[first], np.asarray(T)[first], pw, inverse
        starts = np.zeros(P + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        rows = np.empty(m, dtype=np.int64)
        keys = np.empty((m, 4), dtype=np.int64)
        scatter_patterns(*bits, hashes, bucket_bits, starts, rows, keys)
        del hashes
        n = np.zeros(P, dtype=np.int64)
        first = np.empty(m, dtype=np.int64)
        count = np.empty(m, dtype=np.int64)
        local = np.empty(m, dtype=np.int64)
        compress_patterns(keys, rows, starts, n, first, count, local)
        del keys
        offsets = np.zeros(P, dtype=np.int64)
        np.cumsum(n[:-1], out=offsets[1:])
        inverse = np.empty(m, dtype=np.int64)
        scatter_back(rows, local, offsets, starts, inverse)
    # pattern order: bucket, then first row within the bucket
    used = np.repeat(starts[:-1], n) + (np.arange(int(n.sum())) - np.repeat(offsets, n))
    first = first[used]
    if weights is None:
        pw = count[used].astype(np.float64)
    else:
        pw = np.bincount(inverse, weights=weights, minlength=len(first))
    return np.asarray(x)[first], np.asarray(tx)[first], np.asarray(T)[first], pw, inverse


def _unique_values(v):
    """(unique values in order of first appearance, index of each element into them)."""
    from ..kernels.clv_models import unique_index

    bits = np.ascontiguousarray(v, dtype=np.float64).view(np.int64)
    ids = np.empty(len(bits), dtype=np.int64)
    uniq = np.empty(len(bits), dtype=np.int64)
    k = unique_index(bits, ids, uniq)
    return uniq[:k].view(np.float64).copy(), ids


def time_index(tx, T):
    """Unique times of ``tx`` and ``T`` (one array) with each pattern's indices into it."""
    from ..kernels.clv_models import unique_index

    both = np.concatenate([tx, T]).view(np.int64)
    ids = np.empty(len(both), dtype=np.int64)
    uniq = np.empty(len(both), dtype=np.int64)
    k = unique_index(both, ids, uniq)
    return uniq[:k].view(np.float64).copy(), ids[: len(tx)].copy(), ids[len(tx):].copy()


#: months per step of a CLV horizon, with lifetimes' month of 30 days or 4.345 weeks
MONTHS_PER = {"day": 1 / 30.0, "week": 1 / 4.345, "month": 1.0}


def _units_per_month(unit: str | None, scale: float) -> float:
    """Model time units per month, with lifetimes' factors (30 days, 4.345 weeks, 1 month)."""
    from .summary import UNIT_DAYS

    if unit is None:
        raise RfmxError("the model's time unit is unknown (fit it on an rfmx summary, or pass unit='day'|'week'|'month')")
    if unit not in UNIT_DAYS:
        raise RfmxError(f"unit must be 'day', 'week' or 'month', got {unit!r}")
    days = UNIT_DAYS[unit] * scale
    return {1: 30.0, 7: 4.345, 30: 1.0}.get(days, 30.0 / days) if float(days).is_integer() else 30.0 / days


# --- the shared estimator ------------------------------------------------------------

class _Model:
    name = ""
    param_names: tuple[str, ...] = ()

    def __init__(self, penalizer: float = 0.0):
        if not (np.isfinite(penalizer) and penalizer >= 0):
            raise RfmxError(f"penalizer must be a non-negative number, got {penalizer}")
        self.penalizer = float(penalizer)
        self.params_: dict[str, float] | None = None
        self.standard_errors_: dict[str, float] | None = None
        self.log_likelihood_: float | None = None
        self.n_customers_: int | None = None
        self.n_patterns_: int | None = None
        self.time_unit_: str | None = None
        self.time_scale_: float = 1.0
        self.optimizer_: dict | None = None
        self._penalty_scale: np.ndarray | None = None

    # subclasses: _loglik(params, data) -> (ll, grad); _initial(data); _prepare(...)

    def _pen_weights(self, k: int) -> np.ndarray:
        """c**2 of the penalty ``penalizer * sum((c * params)**2)``: c = 1, except that the
        time-scale parameters of the continuous-time models are measured in units of the
        longest T (as lifetimes fits them on T / max(T)), so the penalty does not depend on
        the time unit (see :meth:`_TransactionModel._penalty_scale_for`)."""
        c = np.ones(k) if self._penalty_scale is None else self._penalty_scale
        return c * c

    def _penalty_scale_for(self, T):
        return None  # (continuous-time models scale their rate parameters: _TransactionModel)

    def _objective_fns(self, data, n):
        pen = self.penalizer * self._pen_weights(len(self.param_names))

        def objective(theta):
            p = np.exp(theta)
            ll, g = self._loglik(p, data)
            if not np.isfinite(ll) or not np.all(np.isfinite(g)):
                raise _NonFinite(p)
            f = -ll / n + float(np.sum(pen * p * p))
            return f, (-g / n + 2.0 * pen * p) * p

        return objective

    def _optimize(self, data, n, initial, maxiter):
        if hasattr(self, "_loglik_hessian"):
            return self._optimize_newton(data, n, initial, maxiter)
        return self._optimize_lbfgs(data, n, initial, maxiter)

    def _optimize_newton(self, data, n, initial, maxiter):
        """Newton's method on log-parameters with the analytic Hessian and a backtracking
        line search (Levenberg damping where the Hessian is not positive definite): a few
        passes over the patterns instead of L-BFGS's dozens.  Falls back to L-BFGS-B if it
        stalls."""
        k = len(initial)
        pen = self.penalizer * self._pen_weights(k)

        def fgh(theta):
            p = np.exp(theta)
            ll, g, H = self._loglik_hessian(p, data)
            if not (np.isfinite(ll) and np.all(np.isfinite(g)) and np.all(np.isfinite(H))):
                return np.inf, None, None
            f = -ll / n + float(np.sum(pen * p * p))
            gp = -g / n + 2.0 * pen * p
            Hp = -H / n + 2.0 * np.diag(pen)
            return f, p * gp, p[:, None] * Hp * p[None, :] + np.diag(p * gp)

        theta = np.log(np.asarray(initial, dtype=np.float64))
        f, g, H = fgh(theta)
        if not np.isfinite(f):
            raise RfmxError(f"{self.name} fit failed: the log-likelihood is not finite at the start "
                            f"{self._fmt(np.exp(theta))}; {self._hint()}")
        evaluations, it = 1, 0
        for it in range(1, maxiter + 1):
            if np.max(np.abs(g)) < 1e-10:
                break
            lam = 0.0
            while True:
                try:
                    c = np.linalg.cholesky(H + lam * np.eye(k))
                    break
                except np.linalg.LinAlgError:
                    lam = max(2 * lam, 1e-6 * (1.0 + np.max(np.abs(np.diag(H)))))
            step = -np.linalg.solve(c.T, np.linalg.solve(c, g))
            big = np.max(np.abs(step))
            if big > 5.0:  # never more than a factor e**5 in one step
                step *= 5.0 / big
            slope = float(g @ step)
            # Near the optimum the decrease a step can make is below the rounding of f (a sum
            # over millions of customers): there a step that shrinks the gradient is taken,
            # instead of halving it ~40 times in search of a decrease rounding hides.
            noise = 64 * np.finfo(np.float64).eps * max(1.0, abs(f))
            t = 1.0
            while True:
                cand = np.clip(theta + t * step, -_LOG_BOUND, _LOG_BOUND)
                fc, gc, Hc = fgh(cand)
                evaluations += 1
                if np.isfinite(fc) and (fc <= f + 1e-4 * t * slope or
                                        (abs(fc - f) <= noise and np.max(np.abs(gc)) < np.max(np.abs(g)))):
                    break
                t *= 0.5
                if t < 1e-12:
                    break
            if t < 1e-12:
                if np.max(np.abs(g)) < 1e-7:  # at the optimum to rounding: no descent left
                    break
                return self._optimize_lbfgs(data, n, np.exp(theta), maxiter)
            done = np.max(np.abs(cand - theta)) < 1e-12
            theta, f, g, H = cand, fc, gc, Hc
            if done:
                break
        grad_norm = float(np.max(np.abs(g)))
        if grad_norm > 1e-6:
            raise RfmxError(f"{self.name} fit did not converge: Newton's method stopped after {it} iterations "
                            f"(maxiter={maxiter}) with largest gradient {grad_norm:.2g} at "
                            f"{self._fmt(np.exp(theta))}; {self._hint()}")
        self._check_edge(theta)
        self.optimizer_ = {"message": "Newton: converged", "iterations": it, "evaluations": evaluations,
                           "max_gradient": grad_norm}
        return np.exp(theta)

    def _fit_patterns(self, px, ptx, pT, pw, initial, maxiter):
        """Fit on weighted patterns: (x, t_x, T) for BG/NBD, MBG/NBD and Pareto/NBD, (x, t_x, n)
        for BG/BB; the first must have a non-zero value somewhere (repeat purchases)."""
        keep = pw > 0
        # Canonical pattern order: compress() lists patterns by first appearance, and the
        # likelihood's float sums follow that order, so without this the fit (to ~1e-7)
        # would depend on the order of the input files.
        keep = np.flatnonzero(keep)[np.lexsort((pT[keep], ptx[keep], px[keep]))]
        px, ptx, pT, pw = px[keep], ptx[keep], pT[keep], pw[keep]
        self._penalty_scale = self._penalty_scale_for(pT)
        n = float(pw.sum())
        if n < len(self.param_names):
            raise RfmxError(f"{self.name} has {len(self.param_names)} parameters; fitting it needs more customers "
                            f"than that, got {n:g}")
        if not (px > 0).any():
            raise RfmxError(f"{self.name} cannot be fitted on one-time buyers only: none of the {n:,.0f} customers "
                            f"has a repeat purchase, so purchase and dropout rates are not identified")
        data_ = self._prepare(px, ptx, pT, pw)
        if initial is None:
            initial = self._initial(pT)
            if len(px) > _WARM_START_ABOVE:
                # start from the fit of a random sample of customers: the full data then
                # need only the last, quadratically converging Newton steps
                pick = np.random.default_rng(0).choice(len(pw), size=_WARM_START_ABOVE, p=pw / n)
                sw = np.bincount(pick, minlength=len(pw)).astype(np.float64)
                keep = sw > 0
                sample = self._prepare(px[keep], ptx[keep], pT[keep], sw[keep])
                try:
                    initial = self._optimize(sample, float(sw.sum()), initial, maxiter)
                except RfmxError:
                    pass  # the sample may not identify the model; start from scratch
        params = self._optimize(data_, n, initial, maxiter)
        return self._finish_fit(params, data_, n, len(px))

    def _check_edge(self, theta):
        at_edge = np.abs(theta) >= _LOG_BOUND - 1e-6
        if at_edge.any():
            names = ", ".join(f"{nm} = {v:.3g}" for nm, v, e in zip(self.param_names, np.exp(theta), at_edge) if e)
            raise RfmxError(f"{self.name} fit ran to the edge of the parameter space ({names}): the data do not "
                            f"identify the model; {self._hint()}")

    def _optimize_lbfgs(self, data, n, initial, maxiter):
        from scipy.optimize import minimize

        theta0 = np.log(np.asarray(initial, dtype=np.float64))
        objective = self._objective_fns(data, n)
        bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(theta0)
        try:
            with _blas_single_thread():
                res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                               options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20})
                if not res.success and res.nit < maxiter:
                    # a line-search stop near the optimum: a restart refreshes L-BFGS's curvature memory
                    res2 = minimize(objective, res.x, jac=True, method="L-BFGS-B", bounds=bounds,
                                    options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20})
                    if res2.fun <= res.fun:
                        res = res2
        except _NonFinite as exc:
            raise RfmxError(f"{self.name} fit failed: the log-likelihood is not finite at "
                            f"{self._fmt(exc.params)}; {self._hint()}") from None
        grad_norm = float(np.max(np.abs(res.jac))) if res.jac is not None else np.inf
        if not res.success and grad_norm > 1e-5:
            raise RfmxError(f"{self.name} fit did not converge: {res.message} after {res.nit} iterations "
                            f"(largest gradient {grad_norm:.2g} at {self._fmt(np.exp(res.x))}); {self._hint()}")
        self._check_edge(res.x)
        self.optimizer_ = {"message": str(res.message), "iterations": int(res.nit), "evaluations": int(res.nfev),
                           "max_gradient": grad_norm}
        return np.exp(res.x)

    def _hint(self) -> str:
        return "try a small penalizer (e.g. penalizer=0.001) or check the summary's time unit"

    def _fmt(self, p) -> str:
        return ", ".join(f"{nm}={v:.6g}" for nm, v in zip(self.param_names, p))

    def _fd_hessian(self, params, data, n, H):
        k = len(params)
        pen = self.penalizer * self._pen_weights(k)

        def grad(p):
            return -self._loglik(p, data)[1] + 2 * n * pen * p

        g0 = grad(params)
        for i in range(k):
            h = 1e-6 * params[i]
            up = params.copy()
            up[i] += h
            H[:, i] = (grad(up) - g0) / (up[i] - params[i])

    def _errors_from(self, H):
        H = 0.5 * (H + H.T)
        try:
            np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            self.hessian_positive_definite_ = False
            return {nm: float("nan") for nm in self.param_names}
        self.hessian_positive_definite_ = True
        cov = np.linalg.inv(H)
        self.covariance_ = cov
        return {nm: float(np.sqrt(cov[i, i])) for i, nm in enumerate(self.param_names)}

    def _finish_fit(self, params, data, n, n_patterns):
        self.params_ = {nm: float(v) for nm, v in zip(self.param_names, params)}
        k = len(params)
        if hasattr(self, "_loglik_hessian"):
            ll, _, H = self._loglik_hessian(params, data)
            H = -H + 2 * n * self.penalizer * np.diag(self._pen_weights(k))
        else:
            ll, _ = self._loglik(params, data)
            H = np.empty((k, k))
            self._fd_hessian(params, data, n, H)
        self.log_likelihood_ = float(ll)
        self.n_customers_ = int(round(n))
        self.n_patterns_ = int(n_patterns)
        self.standard_errors_ = self._errors_from(H)
        return self

    def _params(self) -> np.ndarray:
        if self.params_ is None:
            raise RfmxError(f"the {self.name} model is not fitted; call fit() or load() first")
        return np.array([self.params_[nm] for nm in self.param_names], dtype=np.float64)

    # --- persistence --------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "model": self.key,
                "params": self.params_, "standard_errors": self.standard_errors_,
                "log_likelihood": self.log_likelihood_, "n_customers": self.n_customers_,
                "n_patterns": self.n_patterns_, "penalizer": self.penalizer,
                "time_unit": self.time_unit_, "time_scale": self.time_scale_, "optimizer": self.optimizer_}

    def save(self, path) -> None:
        """Write the fitted model as JSON (atomically)."""
        from ..sinks import atomic_path

        self._params()
        text = json.dumps(self.to_dict(), indent=1, allow_nan=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text + "\n")

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`."""
        model = load_model(path)
        if type(model) is not cls:  # (an MBG/NBD file is not a BG/NBD model, though MBGNBD derives from BGNBD)
            raise RfmxError(f"{path}: holds a {model.name} model, not {cls.name}")
        return model

    def summary(self) -> str:
        """Fitted parameters with standard errors, one per line."""
        p = self._params()

        def count(v):  # a loaded model may not say (a hand-written file)
            return "?" if v is None else f"{v:,}"

        ll = "?" if self.log_likelihood_ is None else f"{self.log_likelihood_:.2f}"
        lines = [f"{self.name}: {count(self.n_customers_)} customers ({count(self.n_patterns_)} patterns), "
                 f"log-likelihood {ll}"]
        for nm, v in zip(self.param_names, p):
            se = (self.standard_errors_ or {}).get(nm, float("nan"))
            se_txt = f"{se:.4g}" if np.isfinite(se) else "n/a (Hessian not positive definite)"
            lines.append(f"  {nm:>6} = {v:.6g}  (se {se_txt})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if self.params_ is None:
            return f"{type(self).__name__}(penalizer={self.penalizer})"
        return f"{type(self).__name__}({self._fmt(self._params())})"


def _blas_single_thread():
    """One BLAS thread while optimizing: L-BFGS-B's tiny BLAS calls otherwise wake OpenBLAS's
    thread pool on every iteration (milliseconds each on a busy machine)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


class _NonFinite(Exception):
    def __init__(self, params):
        self.params = params


class _ExactHessian:
    """For models whose kernel returns the Hessian with the gradient (``_loglik_hessian``):
    the plain log-likelihood is that call without the Hessian."""

    def _loglik(self, params, data):
        ll, grad, _ = self._loglik_hessian(params, data)
        return ll, grad


class _TransactionModel(_Model):
    """BG/NBD and Pareto/NBD: fit on (frequency, recency, T) patterns; shared predictions."""

    def fit(self, data=None, *, frequency=None, recency=None, T=None, weights=None, initial=None,
            maxiter: int = 2000):
        """Fit by maximum likelihood on a BTYD summary (a table from :func:`rfmx.clv.summary`,
        pandas/polars frame or dict; ``*_cal`` columns are used when present) or arrays.

        ``weights``: customers per row (default 1).  Raises RfmxError with the optimizer's
        reason if the fit fails.  Returns self.
        """
        x, tx, T_ = customers_from(data, frequency, recency, T)
        if data is not None:
            self.time_unit_, self.time_scale_ = _time_meta(data)
        w = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != x.shape or not np.all(np.isfinite(w)) or (w < 0).any():
                raise RfmxError("weights must be finite, non-negative and one per customer")
        return self._fit_patterns(*compress(x, tx, T_, w)[:4], initial, maxiter)

    #: parameters that are rates per time unit (alpha: BG/NBD, MBG/NBD, Pareto/NBD; beta: Pareto/NBD)
    _time_scale_params: tuple[str, ...] = ("alpha",)

    def _penalty_scale_for(self, T) -> np.ndarray:
        """The penalty's c (see :meth:`_Model._pen_weights`): 1 / max(T) for the time-scale
        parameters, so ``penalizer`` means what lifetimes' ``penalizer_coef`` means (lifetimes
        fits BG/NBD, MBG/NBD and Pareto/NBD on T / max(T)) in any time unit."""
        longest = float(np.max(T)) if len(T) else 1.0
        return np.array([1.0 / longest if nm in self._time_scale_params and longest > 0 else 1.0
                         for nm in self.param_names])

    def _prepare(self, px, ptx, pT, pw):
        """Kernel inputs from patterns: unique x and each pattern's index into them, then t_x, T, w."""
        ux, xi = _unique_values(px)
        return ux, xi, ptx, pT, pw

    def _loglik(self, params, data):
        grad = np.empty(len(params))
        with _threads_for(len(data[-1])):
            ll = self._ll_kernel()(params, *data, _N_CHUNKS, grad)
        return ll, grad

    def _initial(self, T):
        return np.array([1.0, max(float(T.max()) / 10.0, 1e-6), 1.0, 1.0])

    def _run(self, x, tx, T, times, discount, every=True):
        """Predictions on unique patterns, gathered back to customers: (alive, expected,
        discounted weight); ``expected`` has a column per time, or only the last (``every=False``)."""
        p = self._params()
        px, ptx, pT, _, inverse = compress(x, tx, T)
        times = np.ascontiguousarray(times, dtype=np.float64)
        alive = np.empty(len(px))
        expected = np.empty((len(px), len(times) if every else 1))
        vw = np.empty(len(px))
        with _threads_for(len(px) * max(len(times), 1)):
            self._predict_kernel()(p, px, ptx, pT, times, np.ascontiguousarray(discount, dtype=np.float64),
                                   alive, expected, vw)
        self._check_finite(p, alive, expected, vw, px, ptx, pT)
        return alive[inverse], expected[inverse], vw[inverse]

    def _check_finite(self, p, alive, expected, vw, x, tx, T):
        bad = ~np.isfinite(vw) | ~np.isfinite(alive) | ~np.isfinite(expected).all(axis=1)
        if bad.any():
            i = _first_bad(bad)
            raise RfmxError(f"{self.name} prediction is not finite for frequency={x[i]:g}, recency={tx[i]:g}, "
                            f"T={T[i]:g} at {self._fmt(p)} (a series did not converge or a parameter is out "
                            f"of the model's range)")

    def probability_alive(self, data=None, *, frequency=None, recency=None, T=None) -> np.ndarray:
        """P(customer is still alive | frequency, recency, T), one per customer."""
        x, tx, T_ = customers_from(data, frequency, recency, T)
        return self._run(x, tx, T_, np.empty(0), np.empty(0))[0]

    def expected_purchases(self, t, data=None, *, frequency=None, recency=None, T=None) -> np.ndarray:
        """Expected purchases in the next ``t`` time units (the summary's unit), per customer.

        ``t`` is a number, or an array of horizons (then the result is (customers, len(t))).
        """
        ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if not np.all(np.isfinite(ts)) or (ts < 0).any():
            raise RfmxError(f"t must be finite and non-negative, got {t}")
        x, tx, T_ = customers_from(data, frequency, recency, T)
        e = self._run(x, tx, T_, ts, np.zeros(len(ts)))[1]
        return e[:, 0] if np.ndim(t) == 0 else e

    def expected_purchases_new(self, t) -> np.ndarray | float:
        """Expected purchases in ``(0, t]`` of a new customer (unconditional: lifetimes'
        ``expected_number_of_purchases_up_to_time``); a number, or an array for an array ``t``."""
        ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
        e = self._run(np.zeros(1), np.zeros(1), np.zeros(1), ts, np.zeros(len(ts)))[1][0]
        return float(e[0]) if np.ndim(t) == 0 else e

    def value_weights(self, data=None, *, frequency=None, recency=None, T=None, horizon: int = 12,
                      discount: float = 0.01, unit: str | None = None, scale: float | None = None,
                      horizon_unit: str = "month"):
        """(probability alive, expected purchases over ``horizon`` periods of ``horizon_unit``,
        discounted purchase weight) per customer; CLV = expected spend x the weight
        (lifetimes' monthly method; with ``"week"`` or ``"day"`` steps the monthly
        ``discount`` is compounded over each step's share of a month)."""
        if horizon_unit not in MONTHS_PER:
            raise RfmxError(f"horizon_unit must be 'day', 'week' or 'month', got {horizon_unit!r}")
        if int(horizon) != horizon or horizon < 1:
            raise RfmxError(f"horizon must be a whole number of {horizon_unit}s >= 1, got {horizon}")
        if not (np.isfinite(discount) and discount > -1):
            raise RfmxError(f"discount must be a monthly rate > -1, got {discount}")
        factor = _units_per_month(unit or self.time_unit_, self.time_scale_ if scale is None else scale)
        months = np.arange(1, int(horizon) + 1, dtype=np.float64) * MONTHS_PER[horizon_unit]
        times = months * factor
        disc = (1.0 + discount) ** -months
        x, tx, T_ = customers_from(data, frequency, recency, T)
        alive, expected, vw = self._run(x, tx, T_, times, disc, every=False)
        return alive, expected[:, 0], vw


class BGNBD(_ExactHessian, _TransactionModel):
    """The BG/NBD model (Fader, Hardie & Lee 2005): Poisson purchases at a gamma(r, alpha)
    rate, dropout with a beta(a, b) probability after each purchase.

    >>> bg = BGNBD().fit(summary_table)
    >>> bg.params_        # {'r': ..., 'alpha': ..., 'a': ..., 'b': ...}
    >>> bg.probability_alive(summary_table)
    """

    name = "BG/NBD"
    key = "bgnbd"
    param_names = ("r", "alpha", "a", "b")
    _modified = False  # MBG/NBD: the same kernels with b + x + 1 (see MBGNBD)

    def _loglik_hessian(self, params, data):
        from ..kernels.clv_models import bgnbd_loglik_hessian

        grad = np.empty(4)
        hess = np.empty((4, 4))
        with _threads_for(len(data[-1])):
            ll = bgnbd_loglik_hessian(params, *data, _N_CHUNKS, self._modified, grad, hess)
        return ll, grad, hess

    def _prepare(self, px, ptx, pT, pw):
        # logs are taken once per unique time: patterns carry indices into the unique times
        ux, xi = _unique_values(px)
        ut, ri, ti = time_index(ptx, pT)
        return ux, xi, ut, ri, ti, pw

    def _run(self, x, tx, T, times, discount, every=True):
        """BG/NBD predictions: the 2F1 part once per unique (x, T) (it does not depend on
        recency), then P(alive) and the products per customer."""
        from ..kernels.clv_models import bgnbd_combine, bgnbd_expected_if_alive

        p = self._params()
        times = np.ascontiguousarray(times, dtype=np.float64)
        discount = np.ascontiguousarray(discount, dtype=np.float64)
        px, _, pT, _, pair = compress(x, np.zeros_like(x), T)
        if_alive = np.empty((len(px), len(times)))
        with _threads_for(len(px) * max(len(times), 1)):
            bgnbd_expected_if_alive(p, px, pT, times, self._modified, if_alive)
        alive = np.empty(len(x))
        expected = np.empty((len(x), len(times) if every else 1))
        vw = np.empty(len(x))
        with _threads_for(len(x)):
            bgnbd_combine(p, x, tx, T, pair, if_alive, discount, self._modified, alive, expected, vw)
        self._check_finite(p, alive, expected, vw, x, tx, T)
        return alive, expected, vw


class MBGNBD(BGNBD):
    """The modified BG/NBD model (MBG/NBD; Batislam, Denizel & Filiztekin 2007, with Wagner
    & Hoppe's 2008 erratum): as BG/NBD, but a customer may also drop out right after the
    first purchase, so customers without repeat purchases are not certainly alive.  Same
    parameters ``(r, alpha, a, b)``, fitted and predicting exactly as :class:`BGNBD`
    (lifetimes' ``ModifiedBetaGeoFitter``).

    >>> mbg = MBGNBD().fit(summary_table)
    """

    name = "MBG/NBD"
    key = "mbgnbd"
    _modified = True


class ParetoNBD(_TransactionModel):
    """The Pareto/NBD model (Schmittlein, Morrison & Colombo 1987): Poisson purchases at a
    gamma(r, alpha) rate, exponential lifetimes at a gamma(s, beta) dropout rate."""

    name = "Pareto/NBD"
    key = "pareto"
    param_names = ("r", "alpha", "s", "beta")
    _time_scale_params = ("alpha", "beta")

    def _ll_kernel(self):
        from ..kernels.clv_models import pareto_loglik
        return pareto_loglik

    def _predict_kernel(self):
        from ..kernels.clv_models import pareto_predict
        return pareto_predict

    def _initial(self, T):
        scale = max(float(T.max()) / 10.0, 1e-6)
        return np.array([1.0, scale, 1.0, scale])


class GammaGamma(_ExactHessian, _Model):
    """The Gamma-Gamma spend model (Fader, Hardie & Lee 2005b; Colombo & Jiang 1999): a
    customer's spends are gamma(p, nu) with nu ~ gamma(q, v).  Fitted on repeat buyers
    with a positive mean spend per repeat period (frequency > 0 and monetary_value > 0,
    as lifetimes and PyMC-Marketing); repeat buyers whose repeat spend is 0 are left out
    of the fit and counted in :attr:`n_zero_spend_`.  It assumes spend is independent of
    frequency: check :attr:`independence_` (Pearson correlation)."""

    name = "Gamma-Gamma"
    key = "gamma_gamma"
    param_names = ("p", "q", "v")

    def __init__(self, penalizer: float = 0.0):
        super().__init__(penalizer)
        self.n_zero_spend_: int | None = None

    def fit(self, data=None, *, frequency=None, monetary_value=None, weights=None, initial=None,
            maxiter: int = 2000):
        """Fit on repeat buyers with a positive mean spend (frequency > 0, monetary_value > 0).

        Repeat buyers whose mean repeat spend is 0 (free or fully discounted repeat
        orders) cannot come from a gamma spend distribution: they are left out and counted
        in ``n_zero_spend_`` (customers, or summed ``weights``).  Returns self.
        """
        from .value import frequency_spend_correlation

        x, m = _spend_inputs(data, frequency, monetary_value)
        if data is not None:
            self.time_unit_, self.time_scale_ = _time_meta(data)
        w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != x.shape or not np.all(np.isfinite(w)) or (w < 0).any():
            raise RfmxError("weights must be finite, non-negative and one per customer")
        rep = x > 0
        spent = rep & (m > 0)
        self.n_zero_spend_ = int(round(float(w[rep & ~spent].sum())))
        x, m, w = x[spent], m[spent], w[spent]
        # Canonical order (by frequency, then spend, then weight): the likelihood's float
        # sums follow the row order, so without it the fit would depend on the order of
        # the input files.
        order = _canonical_order(x, m, w if weights is not None else None)
        x, m, w = x[order], m[order], w[order]
        n = float(w.sum())
        if n < 3:
            left_out = f" ({self.n_zero_spend_:,} more have zero repeat spend)" if self.n_zero_spend_ else ""
            raise RfmxError(f"Gamma-Gamma needs at least 3 repeat buyers (frequency > 0) with a positive mean spend, "
                            f"got {n:g}{left_out}")
        ux, xi = _unique_values(x)
        data_ = (ux, xi, np.ascontiguousarray(m), np.log(m), np.ascontiguousarray(w))
        self.independence_ = frequency_spend_correlation(frequency=x, monetary_value=m)
        if initial is None:
            initial = np.array([1.0, 1.0, max(float(np.mean(m)), 1e-6)])
            if len(x) > _WARM_START_ABOVE:  # start from a random sample's optimum (see BG/NBD)
                pick = np.random.default_rng(0).choice(len(x), _WARM_START_ABOVE, replace=False)
                sx, sm, sw = x[pick], m[pick], w[pick]
                su, si = _unique_values(sx)
                try:
                    initial = self._optimize((su, si, sm, np.log(sm), sw), float(sw.sum()), initial, maxiter)
                except RfmxError:
                    pass
        params = self._optimize(data_, n, initial, maxiter)
        return self._finish_fit(params, data_, n, len(x))

    def _loglik_hessian(self, params, data):
        from ..kernels.clv_models import gamma_gamma_loglik

        grad = np.empty(3)
        hess = np.empty((3, 3))
        with _threads_for(len(data[-1])):
            ll = gamma_gamma_loglik(params, *data, _N_CHUNKS, grad, hess)
        return ll, grad, hess

    def to_dict(self) -> dict:
        return {**super().to_dict(), "n_zero_spend": self.n_zero_spend_}

    def expected_spend(self, data=None, *, frequency=None, monetary_value=None) -> np.ndarray:
        """E[mean spend per purchase period | frequency, monetary_value], per customer:
        ``(1 - w) p v / (q - 1) + w m`` with ``w = p x / (p x + q - 1)`` (lifetimes'
        conditional expected average profit).  Customers without repeat purchases get the
        population mean ``p v / (q - 1)``; repeat buyers with zero repeat spend (left out of
        the fit) get the same formula with ``m = 0``: the population mean shrunk towards 0
        the more zero-spend repeat periods they have."""
        from ..kernels.clv_models import gamma_gamma_spend

        p = self._params()
        if p[1] <= 1:
            raise RfmxError(f"Gamma-Gamma with q = {p[1]:.4g} <= 1 has no finite mean spend")
        x, m = _spend_inputs(data, frequency, monetary_value)
        out = np.empty(len(x))
        with _threads_for(len(x)):
            gamma_gamma_spend(p, x, m, out)
        return out


def _spend_inputs(data, frequency, monetary_value):
    if data is not None:
        x, m = _pick(data, "frequency"), _pick(data, "monetary_value")
    else:
        if frequency is None or monetary_value is None:
            raise RfmxError("give a summary table or frequency and monetary_value")
        x, m = np.broadcast_arrays(np.atleast_1d(np.asarray(frequency, dtype=np.float64)),
                                   np.atleast_1d(np.asarray(monetary_value, dtype=np.float64)))
    for name, v in (("frequency", x), ("monetary_value", m)):
        bad = ~np.isfinite(v)
        if bad.any():
            raise RfmxError(f"{name} has {int(bad.sum())} non-finite value(s), first at row {_first_bad(bad)}")
    bad = x < 0
    if bad.any():
        raise RfmxError(f"frequency has {int(bad.sum())} negative value(s), first at row {_first_bad(bad)}")
    bad = m < 0
    if bad.any():
        raise RfmxError(f"monetary_value has {int(bad.sum())} negative value(s), first at row {_first_bad(bad)}: "
                        f"a mean spend per purchase cannot be negative")
    if len(x) == 0:
        raise RfmxError("no customers")
    return np.ascontiguousarray(x) + 0.0, np.ascontiguousarray(m) + 0.0


def _canonical_order(x, m, w=None) -> np.ndarray:
    """Row order by (x, m[, w]) that depends only on the rows' values, not on their input order.

    Without weights, rows equal in (x, m) are interchangeable, so an unstable sort on m
    followed by a stable one on x suffices; that is ~3x faster than ``np.lexsort`` on
    millions of repeat buyers (frequencies below 65,536 sort as uint16, by radix).
    """
    if w is not None:
        return np.lexsort((w, m, x))
    by_m = np.argsort(m)
    xs = x[by_m]
    if len(xs) and xs.max() < 65536 and np.array_equal(xs, np.floor(xs)):
        xs = xs.astype(np.uint16)
    return by_m[np.argsort(xs, kind="stable")]


# --- discrete-time models: BG/BB (purchase opportunities) and sBG (contract renewals) ----------

def _whole_periods(v: np.ndarray, per: float) -> np.ndarray:
    """``v * per`` (times in the summary's unit to counts of its period), snapped to whole
    numbers where the product is one to rounding; other values are left for the checks."""
    if per == 1.0:
        return v
    out = v * per
    near = np.rint(out)
    close = np.abs(out - near) <= 1e-9 * np.maximum(1.0, np.abs(out))
    return np.where(close, near, out)


def opportunities_from(data=None, frequency=None, recency=None, n_periods=None, T=None):
    """Validated whole-number ``(x, t_x, n)`` for BG/BB (float64 arrays): transactions after
    the first, the opportunity of the last one, and opportunities since the first purchase.

    From a BTYD summary (``*_cal`` columns when present): ``frequency``, ``recency`` and
    ``n_periods`` or ``T``, with recency and T converted to counts of the summary's period
    (its schema metadata; a table without it is taken to count periods already).  From
    arrays: ``n_periods`` (or its alias ``T``) in opportunities.
    """
    if data is not None:
        x, tx = _pick(data, "frequency"), _pick(data, "recency")
        if _has(data, "n_periods_cal") or _has(data, "n_periods"):
            n, per = _pick(data, "n_periods"), 1.0
        else:
            from .summary import periods_per_unit

            n, per = _pick(data, "T"), periods_per_unit(data)[1]
        tx, n = _whole_periods(tx, per), _whole_periods(n, per)
    else:
        if n_periods is not None and T is not None:
            raise RfmxError("give n_periods or T (the same thing for BG/BB), not both")
        n = n_periods if n_periods is not None else T
        if frequency is None or recency is None or n is None:
            raise RfmxError("give a summary table or frequency, recency and n_periods")
        x, tx, n = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (frequency, recency, n))
        x, tx, n = np.broadcast_arrays(x, tx, n)
    check_opportunities(x, tx, n)
    return np.ascontiguousarray(x) + 0.0, np.ascontiguousarray(tx) + 0.0, np.ascontiguousarray(n) + 0.0


def check_opportunities(x, tx, n) -> None:
    """Raise RfmxError on inputs BG/BB cannot take (naming the first bad row)."""
    from ..kernels.clv_discrete import check_bgbb_inputs

    if len(x) == 0:
        raise RfmxError("no customers")
    out = np.empty((7, 2), dtype=np.int64)
    check_bgbb_inputs(np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(tx, dtype=np.float64),
                      np.ascontiguousarray(n, dtype=np.float64), out)
    if not (out[:, 0] >= 0).any():
        return
    rule = int(np.flatnonzero(out[:, 0] >= 0)[0])
    i, count = int(out[rule, 0]), int(out[rule, 1])
    where = f"first at row {i} (frequency {x[i]:g}, recency {tx[i]:g}, n {n[i]:g})"
    if rule <= 2:
        name = ("frequency", "recency", "n_periods")[rule]
        raise RfmxError(f"{name} has {count} non-finite value(s), first at row {i}")
    if rule == 3:
        raise RfmxError(f"{count} customer(s) have a negative frequency, recency or n, {where}")
    if rule == 4:
        raise RfmxError(f"BG/BB counts discrete opportunities: frequency, recency and n must be whole numbers of "
                        f"periods; {count} customer(s) are not, {where} (fit on a summary whose --unit is its "
                        f"--period)")
    if rule == 5:
        raise RfmxError(f"recency is greater than n for {count} customer(s), {where}")
    raise RfmxError(f"{count} customer(s) have more transactions than opportunities up to the last one, or a "
                    f"non-zero recency without repeat transactions, {where}")


class BGBB(_ExactHessian, _Model):
    """The BG/BB model (Fader, Hardie & Shang 2010) for purchases at discrete opportunities:
    at each opportunity a living customer transacts with probability p ~ beta(alpha, beta)
    and, first, dies with probability theta ~ beta(gamma, delta).

    A customer is ``(x, t_x, n)``: transactions after the first purchase (``frequency``),
    the opportunity of the last one (``recency``; 0 without repeats) and the opportunities
    since the first purchase (``n_periods``) — an rfmx BTYD summary with the period as
    the opportunity (recency and T in periods).  Fitted by Newton's method with the
    analytic Hessian over unique ``(x, t_x, n)`` patterns; equals lifetimes'
    ``BetaGeoBetaBinomFitter`` (same objective and penalizer).

    >>> bb = BGBB().fit(summary_table)                     # day, week or month opportunities
    >>> bb.probability_alive(summary_table)                # alive at the next opportunity
    >>> bb.expected_purchases(52, summary_table)           # in the next 52 opportunities
    """

    name = "BG/BB"
    key = "bgbb"
    param_names = ("alpha", "beta", "gamma", "delta")
    #: expected_purchases counts opportunities (periods), not time units
    counts_opportunities = True

    def fit(self, data=None, *, frequency=None, recency=None, n_periods=None, T=None, weights=None, initial=None,
            maxiter: int = 2000):
        """Fit by maximum likelihood on a BTYD summary (recency and T converted to periods)
        or on arrays (``n_periods``, alias ``T``, in opportunities).

        ``weights``: customers per row (an array, or the name of a column of ``data``, e.g.
        the ``customers`` of :func:`rfmx.clv.rf_matrix`).  Returns self.
        """
        x, tx, n = opportunities_from(data, frequency, recency, n_periods, T)
        if data is not None:
            from .summary import periods_per_unit

            self.time_unit_, self.time_scale_ = periods_per_unit(data)[0], 1.0
        w = None
        if weights is not None:
            w = _column(data, weights) if isinstance(weights, str) else np.asarray(weights, dtype=np.float64)
            if w.shape != x.shape or not np.all(np.isfinite(w)) or (w < 0).any():
                raise RfmxError("weights must be finite, non-negative and one per customer")
        return self._fit_patterns(*compress(x, tx, n, w)[:4], initial, maxiter)

    def _initial(self, n):
        return np.ones(4)

    def _prepare(self, px, ptx, pn, pw):
        """Patterns (sorted by x, t_x, n) as int64 with the starts of their (x, t_x) groups and
        the number of terms the likelihood adds (its cost)."""
        from ..kernels.clv_discrete import bgbb_groups

        x, tx, n = (np.ascontiguousarray(v, dtype=np.int64) for v in (px, ptx, pn))
        starts = np.empty(len(x) + 1, dtype=np.int64)
        G = int(bgbb_groups(x, tx, starts))
        last = starts[1:G + 1] - 1
        work = int(np.sum(n[last] - tx[last])) + len(x)
        return x, tx, n, np.ascontiguousarray(pw, dtype=np.float64), starts, G, work

    def _loglik_hessian(self, params, data):
        from ..kernels.clv_discrete import bgbb_loglik_hessian

        x, tx, n, w, starts, G, work = data
        grad = np.empty(4)
        hess = np.empty((4, 4))
        with _threads_for(work):
            ll = bgbb_loglik_hessian(params, x, tx, n, w, starts, G, _N_CHUNKS, grad, hess)
        return ll, grad, hess

    def _run(self, x, tx, n, future, steps, discount, every=True):
        """Predictions on unique patterns, gathered back to customers: (P(alive at n + future),
        expected transactions by ``steps`` (ascending whole opportunities), discounted weight)."""
        from ..kernels.clv_discrete import bgbb_predict

        p = self._params()
        px, ptx, pn, _, inverse = compress(x, tx, n)
        xi, ti, ni = (np.ascontiguousarray(v, dtype=np.int64) for v in (px, ptx, pn))
        steps = np.ascontiguousarray(steps, dtype=np.int64)
        alive = np.empty(len(px))
        expected = np.empty((len(px), len(steps) if every else 1))
        vw = np.empty(len(px))
        work = int(np.sum(ni - ti)) + len(px) * (int(steps[-1]) if len(steps) else 1)
        with _threads_for(work):
            bgbb_predict(p, xi, ti, ni, int(future), steps, np.ascontiguousarray(discount, dtype=np.float64),
                         alive, expected, vw)
        bad = ~np.isfinite(vw) | ~np.isfinite(alive) | ~np.isfinite(expected).all(axis=1)
        if bad.any():
            i = _first_bad(bad)
            raise RfmxError(f"{self.name} prediction is not finite for frequency={px[i]:g}, recency={ptx[i]:g}, "
                            f"n={pn[i]:g} at {self._fmt(p)}")
        return alive[inverse], expected[inverse], vw[inverse]

    @staticmethod
    def _opportunities(m, what: str) -> np.ndarray:
        ms = np.atleast_1d(np.asarray(m, dtype=np.float64))
        if not np.all(np.isfinite(ms)) or (ms < 0).any() or (ms != np.floor(ms)).any() or (ms > 2**40).any():
            raise RfmxError(f"{what} must be whole numbers of opportunities >= 0, got {m}")
        return ms.astype(np.int64)

    def probability_alive(self, data=None, *, frequency=None, recency=None, n_periods=None, T=None,
                          future: int = 1) -> np.ndarray:
        """P(alive at opportunity n + ``future`` | x, t_x, n), per customer: by default at the
        next opportunity (FHS 2010 eq. 11); ``future=0`` gives alive at the last one observed
        (lifetimes' ``conditional_probability_alive(m_periods_in_future=future, ...)``)."""
        future = int(self._opportunities(future, "future")[0])
        x, tx, n = opportunities_from(data, frequency, recency, n_periods, T)
        return self._run(x, tx, n, future, np.empty(0, np.int64), np.empty(0))[0]

    def expected_purchases(self, t, data=None, *, frequency=None, recency=None, n_periods=None,
                           T=None) -> np.ndarray:
        """Expected transactions in the next ``t`` opportunities (FHS eq. 13), per customer;
        ``t`` a whole number or an array of them (then the result is (customers, len(t)))."""
        ms = self._opportunities(t, "t")
        order = np.argsort(ms, kind="stable")
        x, tx, n = opportunities_from(data, frequency, recency, n_periods, T)
        e = self._run(x, tx, n, 1, ms[order], np.zeros(len(ms)))[1]
        out = np.empty_like(e)
        out[:, order] = e
        return out[:, 0] if np.ndim(t) == 0 else out

    def expected_purchases_new(self, t) -> np.ndarray | float:
        """Expected transactions of a new customer in its first ``t`` opportunities after the
        first purchase (FHS eq. 9); a number, or an array for an array ``t``."""
        ms = self._opportunities(t, "t")
        order = np.argsort(ms, kind="stable")
        e = self._run(np.zeros(1), np.zeros(1), np.zeros(1), 1, ms[order], np.zeros(len(ms)))[1][0]
        out = np.empty_like(e)
        out[order] = e
        return float(out[0]) if np.ndim(t) == 0 else out

    def frequency_distribution(self, n: int) -> np.ndarray:
        """P(X(n) = x) for x = 0..n: transactions of a new customer in its first ``n``
        opportunities (FHS eq. 7); times the customers, lifetimes'
        ``expected_number_of_transactions_in_first_n_periods``."""
        from ..kernels.clv_discrete import bgbb_frequency_pmf

        n = int(self._opportunities(n, "n")[0])
        out = np.empty(n + 1)
        bgbb_frequency_pmf(self._params(), n, out)
        return out

    def value_weights(self, data=None, *, frequency=None, recency=None, n_periods=None, T=None, horizon: int = 12,
                      discount: float = 0.01, unit: str | None = None, scale: float | None = None,
                      horizon_unit: str = "month"):
        """(P(alive at the next opportunity), expected transactions over ``horizon`` periods of
        ``horizon_unit``, discounted transaction weight) per customer, as the continuous-time
        models' :meth:`value_weights`: steps of ``horizon_unit`` (a month is 30 days), each a
        whole number of opportunities (``unit``: the opportunity's period, default the one of
        the summary the model was fitted on), discounted at the monthly ``discount`` rate."""
        from .summary import UNIT_DAYS, _period_name

        if horizon_unit not in MONTHS_PER:
            raise RfmxError(f"horizon_unit must be 'day', 'week' or 'month', got {horizon_unit!r}")
        if int(horizon) != horizon or horizon < 1:
            raise RfmxError(f"horizon must be a whole number of {horizon_unit}s >= 1, got {horizon}")
        if not (np.isfinite(discount) and discount > -1):
            raise RfmxError(f"discount must be a monthly rate > -1, got {discount}")
        period = unit or self.time_unit_
        if period is None:
            raise RfmxError("the BG/BB model's opportunity period is unknown (fit it on an rfmx summary, or pass "
                            "unit='day'|'week'|'month')")
        period = _period_name(period, "unit")
        per_step = UNIT_DAYS[horizon_unit] / UNIT_DAYS[period]
        if per_step != int(per_step):
            raise RfmxError(f"a {horizon_unit} is not a whole number of {period}s (BG/BB's opportunities): give the "
                            f"horizon in {period}s (horizon_unit={period!r}, --horizon-unit {period})")
        steps = np.arange(1, int(horizon) + 1, dtype=np.int64) * int(per_step)
        months = np.arange(1, int(horizon) + 1, dtype=np.float64) * MONTHS_PER[horizon_unit]
        x, tx, n = opportunities_from(data, frequency, recency, n_periods, T)
        alive, expected, vw = self._run(x, tx, n, 1, steps, (1.0 + discount) ** -months, every=False)
        return alive, expected[:, 0], vw


def _nullable_column(data, name: str) -> np.ndarray:
    """Column ``name`` as float64 with NaN for nulls (Arrow, pandas, Polars or a dict of lists)."""
    if not _has(data, name):
        raise RfmxError(f"the data has no column '{name}'")
    col = data[name]
    if hasattr(col, "null_count") and hasattr(col, "type"):  # Arrow
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            col = pc.fill_null(col.cast(pa.float64()), float("nan"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise RfmxError(f"column '{name}' has type {col.type}; contract periods are numbers") from None
        return np.asarray(col.to_numpy() if hasattr(col, "to_numpy") else col, dtype=np.float64)
    if hasattr(col, "to_numpy"):
        try:
            return np.asarray(col.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        except TypeError:  # Polars: nulls become NaN on the way out
            return np.asarray(col.to_numpy(), dtype=np.float64)
    try:
        return np.array([np.nan if v is None else v for v in col], dtype=np.float64)
    except (TypeError, ValueError):
        raise RfmxError(f"column '{name}' holds values that are not numbers") from None


def contracts_from(data=None, *, start: str = "start", end: str = "end", last_period=None, periods=None,
                   active=None):
    """``(periods, active)`` per customer for sBG: periods paid for (whole, >= 1) and whether
    the contract is still running.

    From a table: column ``start`` (the first period paid for) and ``end`` (the first period
    no longer paid for: the cancellation; null while the contract runs), whole numbers.
    ``last_period`` is the period the data describe (default: the latest start or end in
    the table): a contract is cancelled if its end is at most ``last_period`` (it paid
    ``end - start`` periods and churned at its ``end - start``-th renewal decision), else
    running with ``last_period + 1 - start`` periods paid (its decision at the end of
    ``last_period`` is not yet known).  From arrays: ``periods`` and ``active``.
    """
    if data is not None:
        s, e = _nullable_column(data, start), _nullable_column(data, end)
        if len(s) == 0:
            raise RfmxError("no customers")
        for name, v, null_ok in ((start, s, False), (end, e, True)):
            bad = (~np.isfinite(v) & ~(null_ok & np.isnan(v))) | (np.isfinite(v) & (v != np.floor(v)))
            if bad.any():
                i = _first_bad(bad)
                raise RfmxError(f"column '{name}' must hold whole period numbers{'' if null_ok else ' (no nulls)'}; "
                                f"row {i} has {v[i]}")
        ended = np.isfinite(e)
        bad = ended & (e <= s)
        if bad.any():
            i = _first_bad(bad)
            raise RfmxError(f"{int(bad.sum())} contract(s) end before they start, first at row {i} ({start} {s[i]:g}, "
                            f"{end} {e[i]:g}); '{end}' is the first period not paid for, after '{start}'")
        if last_period is None:
            last = float(np.max(s))
            if ended.any():
                last = max(last, float(np.max(e[ended])))
        else:
            last = float(last_period)
            if not (np.isfinite(last) and last == np.floor(last)):
                raise RfmxError(f"last_period must be a whole period number, got {last_period}")
            bad = s > last
            if bad.any():
                i = _first_bad(bad)
                raise RfmxError(f"{int(bad.sum())} contract(s) start after last_period {last:g}, first at row {i} "
                                f"({start} {s[i]:g})")
        cancelled = ended & (e <= last)
        paid = np.where(cancelled, e - s, last + 1 - s)
        return paid.astype(np.int64), ~cancelled
    if periods is None or active is None:
        raise RfmxError("give a table with start and end columns, survivor counts, or periods and active")
    p = np.atleast_1d(np.asarray(periods, dtype=np.float64))
    a = np.atleast_1d(np.asarray(active))
    if p.shape != a.shape:
        raise RfmxError("periods and active must have one value per customer")
    bad = ~np.isfinite(p) | (p < 1) | (p != np.floor(p))
    if bad.any():
        i = _first_bad(bad)
        raise RfmxError(f"periods must be whole numbers >= 1 (periods paid for); row {i} has {p[i]}")
    if len(p) == 0:
        raise RfmxError("no customers")
    return p.astype(np.int64), a.astype(bool)


def _survivor_counts(survivors):
    """(churned at decision t, survived t decisions) from one survivor curve [n_0, n_1, ...]
    (customers still active after 0, 1, ... renewal decisions) or a list of curves."""
    curves = survivors
    if np.ndim(np.asarray(survivors[0], dtype=object)) == 0:
        curves = [survivors]
    longest = max(len(c) for c in curves)
    churned = np.zeros(longest)
    survived = np.zeros(longest)
    for j, c in enumerate(curves):
        c = np.asarray(c, dtype=np.float64)
        label = f"survivor curve {j + 1}" if len(curves) > 1 else "the survivor curve"
        if c.ndim != 1 or len(c) < 2:
            raise RfmxError(f"{label} needs the cohort's size and at least one later count, got {list(c)}")
        if not np.all(np.isfinite(c)) or (c < 0).any():
            raise RfmxError(f"{label} must hold non-negative counts, got {list(c)}")
        drop = -np.diff(c)
        if (drop < 0).any():
            i = int(np.flatnonzero(drop < 0)[0]) + 1
            raise RfmxError(f"{label} rises from {c[i - 1]:g} to {c[i]:g} at period {i}: survivors can only fall")
        churned[1:len(c)] += drop
        survived[len(c) - 1] += c[-1]
    return churned, survived


def _contract_counts(paid, running, weights=None):
    """(churned at renewal decision t, survived t decisions) from periods paid and running flags:
    a cancelled contract of t periods churned at its t-th decision, a running one of t periods
    has survived t - 1."""
    w = np.ones(len(paid)) if weights is None else weights
    size = int(paid.max()) + 1
    return (np.bincount(paid[~running], weights=w[~running], minlength=size),
            np.bincount(paid[running] - 1, weights=w[running], minlength=size))


class SBG(_ExactHessian, _Model):
    """The shifted-beta-geometric model of contract renewals (Fader & Hardie 2007): at each
    period's end a customer renews with probability 1 - theta, theta ~ beta(alpha, beta)
    across customers, so the retention rate rises with tenure as the likely churners leave.

    Fitted by Newton's method with the analytic Hessian on survivor counts of cohorts, or
    on customers' contracts (start and cancellation periods, or periods paid and whether
    still active); predicts survival, retention and, per customer, the renewal probability,
    expected renewals and the discounted expected residual lifetime (DERL, Fader & Hardie
    2010).

    >>> sbg = SBG().fit(survivors=[1000, 631, 468, 382, 326, 289, 262, 241])
    >>> sbg.params_                    # {'alpha': 0.704, 'beta': 1.182}
    >>> sbg.survival(range(13))        # S(t): share of a cohort still active after t renewals
    """

    name = "sBG"
    key = "sbg"
    param_names = ("alpha", "beta")

    def __init__(self, penalizer: float = 0.0):
        super().__init__(penalizer)
        self._counts: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, data=None, *, survivors=None, start: str = "start", end: str = "end", last_period=None,
            periods=None, active=None, weights=None, initial=None, maxiter: int = 2000):
        """Fit by maximum likelihood on ``survivors`` (a cohort's active customers after 0, 1,
        2, ... renewal decisions, or a list of such curves, one per cohort), a table of
        contracts (``start``/``end`` columns, see :func:`contracts_from`) or arrays
        ``periods``/``active``.  ``weights``: customers per row of the table or arrays.
        Returns self."""
        if survivors is not None:
            if data is not None or periods is not None:
                raise RfmxError("give survivor counts or customers' contracts, not both")
            churned, survived = _survivor_counts(survivors)
        else:
            paid, running = contracts_from(data, start=start, end=end, last_period=last_period, periods=periods,
                                           active=active)
            w = None
            if weights is not None:
                w = _column(data, weights) if isinstance(weights, str) else np.asarray(weights, dtype=np.float64)
                if w.shape != paid.shape or not np.all(np.isfinite(w)) or (w < 0).any():
                    raise RfmxError("weights must be finite, non-negative and one per customer")
            churned, survived = _contract_counts(paid, running, w)
        n = float(churned.sum() + survived.sum())
        if n < 2:
            raise RfmxError(f"sBG has 2 parameters; fitting it needs more customers than that, got {n:g}")
        decisions = float(churned.sum() + survived[1:].sum())
        if churned.sum() == 0 or decisions == churned.sum():
            what = "no customer cancelled" if churned.sum() == 0 else "no customer ever renewed"
            raise RfmxError(f"sBG cannot be fitted when {what}: the churn probabilities are not identified")
        self._counts = (churned, survived)
        self.time_unit_, self.time_scale_ = None, 1.0
        data_ = self._prepare(churned, survived)
        params = self._optimize(data_, n, np.ones(2) if initial is None else initial, maxiter)
        return self._finish_fit(params, data_, n, len(data_[0]))

    @staticmethod
    def _prepare(churned, survived):
        """Kernel inputs: the period counts with customers, and their churned and survived counts."""
        t = np.arange(len(churned), dtype=np.int64)
        keep = (churned > 0) | (survived > 0)
        return t[keep], churned[keep], survived[keep]

    def _loglik_hessian(self, params, data):
        from ..kernels.clv_discrete import sbg_loglik_hessian

        grad = np.empty(2)
        hess = np.empty((2, 2))
        ll = sbg_loglik_hessian(params, *data, grad, hess)
        return ll, grad, hess

    @staticmethod
    def _periods(t, what: str = "t") -> np.ndarray:
        ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if not np.all(np.isfinite(ts)) or (ts < 0).any() or (ts != np.floor(ts)).any() or (ts > 2**31).any():
            raise RfmxError(f"{what} must be whole numbers of periods >= 0, got {t}")
        return ts.astype(np.int64)

    def survival(self, t) -> np.ndarray:
        """S(t) = B(alpha, beta + t) / B(alpha, beta): the share of a cohort still active after
        ``t`` renewal decisions (array of whole numbers)."""
        alpha, beta = self._params()
        ts = self._periods(t)
        top = int(ts.max()) if len(ts) else 0
        j = np.arange(top, dtype=np.float64)
        s = np.concatenate([[1.0], np.cumprod((beta + j) / (alpha + beta + j))])
        return s[ts]

    def retention(self, t) -> np.ndarray:
        """r(t) = S(t) / S(t - 1) = (beta + t - 1) / (alpha + beta + t - 1): the share of customers
        up for their ``t``-th renewal who renew (t >= 1)."""
        alpha, beta = self._params()
        ts = self._periods(t)
        if (ts < 1).any():
            raise RfmxError("retention is defined from the first renewal decision on: t >= 1")
        return (beta + ts - 1.0) / (alpha + beta + ts - 1.0)

    def churn_probability(self, t) -> np.ndarray:
        """P(T = t) = S(t - 1) - S(t): a new customer's lifetime is exactly ``t`` periods (t >= 1)."""
        ts = self._periods(t)
        if (ts < 1).any():
            raise RfmxError("a lifetime is at least one period: t >= 1")
        return self.survival(ts - 1) - self.survival(ts)

    def derl(self, renewals, discount: float) -> np.ndarray:
        """Discounted expected residual lifetime of customers active after ``renewals``
        renewals (Fader & Hardie 2010): expected future periods paid for, the next renewal
        undiscounted and each later period discounted by ``1 / (1 + discount)`` more; times
        the margin per period it is the customer's residual value.  ``discount`` per period,
        > 0 (or 0 when alpha > 1: the undiscounted expectation, (beta + k) / (alpha - 1))."""
        return self._customer_arrays(self._periods(renewals, "renewals"), 1, discount)[2]

    def discounted_expected_lifetime(self, discount: float) -> float:
        """DEL: a new customer's expected discounted periods paid for, the first (paid at
        acquisition) included, = 2F1(1, beta; alpha + beta; 1 / (1 + d)) (Fader & Hardie 2010)."""
        z = 1.0 / (1.0 + self._check_discount(discount))
        return float(1.0 + z * self.derl(np.zeros(1), discount)[0])

    def _check_discount(self, discount: float) -> float:
        alpha = self._params()[0]
        if not (np.isfinite(discount) and discount >= 0):
            raise RfmxError(f"discount must be a rate per period >= 0, got {discount}")
        if discount == 0 and alpha <= 1:
            raise RfmxError(f"with alpha = {alpha:.4g} <= 1 the expected lifetime is infinite: give a discount "
                            f"rate > 0")
        return float(discount)

    def _customer_arrays(self, renewals, horizon, discount):
        from ..kernels.clv_discrete import sbg_customer_predict

        z = 1.0 / (1.0 + self._check_discount(discount))
        if int(horizon) != horizon or horizon < 0:
            raise RfmxError(f"horizon must be a whole number of periods >= 0, got {horizon}")
        uniq, inverse = np.unique(renewals, return_inverse=True)
        out = [np.empty(len(uniq)) for _ in range(3)]
        with _threads_for(len(uniq) * max(int(horizon), 1)):
            sbg_customer_predict(self._params(), np.ascontiguousarray(uniq, dtype=np.int64), int(horizon), z,
                                 100_000_000, *out)
        bad = ~np.isfinite(out[2])
        if bad.any():
            raise RfmxError(f"sBG DERL did not converge for {uniq[_first_bad(bad)]} renewals at discount {discount} "
                            f"(the series needs more than 1e8 terms: use a larger discount rate)")
        return tuple(v[inverse] for v in out)

    def predict(self, data=None, *, start: str = "start", end: str = "end", last_period=None, periods=None,
                active=None, horizon: int = 12, discount: float = 0.1) -> dict:
        """Per customer (contracts as in :meth:`fit`): ``periods`` paid, ``active``,
        ``renewals`` made, ``renewal_probability`` (of the next renewal), ``expected_renewals``
        in the next ``horizon`` decisions and ``derl`` at the per-period ``discount`` rate;
        the last three are 0 for cancelled contracts.  Returns a dict of NumPy arrays."""
        paid, running = contracts_from(data, start=start, end=end, last_period=last_period, periods=periods,
                                       active=active)
        renewals = paid - 1
        prob, expected, derl = self._customer_arrays(renewals, horizon, discount)
        zero = ~running
        for v in (prob, expected, derl):
            v[zero] = 0.0
        return {"periods": paid, "active": running, "renewals": renewals, "renewal_probability": prob,
                "expected_renewals": expected, "derl": derl}

    def add_columns(self, table, *, start: str = "start", end: str = "end", last_period=None, horizon: int = 12,
                    discount: float = 0.1):
        """``table`` (a pyarrow Table of contracts, see :func:`contracts_from`) with the columns
        of :meth:`predict` appended (``periods``, ``active``, ``renewals``,
        ``renewal_probability``, ``expected_renewals``, ``derl``)."""
        import pyarrow as pa

        cols = self.predict(table, start=start, end=end, last_period=last_period, horizon=horizon, discount=discount)
        out = table
        for name, v in cols.items():
            i = out.schema.get_field_index(name)
            arr = pa.array(v)
            out = out.set_column(i, name, arr) if i >= 0 else out.append_column(name, arr)
        return out

    def projection(self, horizon: int = 5):
        """Survival and retention by period, observed (from the data the model was fitted on:
        the Kaplan-Meier estimate, which for one cohort is its survivor share) and projected:
        ``period`` t = 0..(longest observed + ``horizon``), ``at_risk`` (customers up for their
        t-th renewal), ``churned``, ``observed_retention``, ``observed_survival``, ``survival``
        S(t) and ``retention`` r(t).  Observed columns are null beyond the data (and for a
        loaded model)."""
        import pyarrow as pa

        if int(horizon) != horizon or horizon < 0:
            raise RfmxError(f"horizon must be a whole number of periods >= 0, got {horizon}")
        if self._counts is not None:
            churned, survived = self._counts
            # the last renewal decision the data saw (a survivor of k decisions saw 1..k)
            seen = int(np.flatnonzero((churned > 0) | (survived > 0)).max())
            churned, survived = churned[:seen + 1], survived[:seen + 1]
        else:
            churned = survived = np.zeros(1)
            seen = 0
        t = np.arange(seen + int(horizon) + 1)
        size = len(t)
        c = np.zeros(size)
        c[:len(churned)] = churned
        s = np.zeros(size)
        s[:len(survived)] = survived
        # up for decision t: churned at a decision >= t, or survived >= t decisions
        at_risk = np.cumsum(c[::-1])[::-1] + np.cumsum(s[::-1])[::-1]
        at_risk[0] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            kept = np.where(at_risk > 0, 1.0 - c / at_risk, np.nan)
        kept[0] = 1.0
        observed = np.cumprod(np.where(np.isnan(kept), 1.0, kept))
        has = (at_risk > 0) & (t <= seen)
        has[0] = self._counts is not None
        retention = np.full(size, np.nan)
        retention[1:] = self.retention(t[1:])

        def masked(v, mask):
            return pa.array(v, mask=~mask)

        risk_mask = (t >= 1) & (t <= seen) & (self._counts is not None)
        return pa.table({
            "period": pa.array(t.astype(np.int64)),
            "at_risk": masked(np.rint(at_risk), risk_mask),
            "churned": masked(c, risk_mask),
            "observed_retention": masked(kept, risk_mask & (at_risk > 0)),
            "observed_survival": masked(observed, has),
            "survival": pa.array(self.survival(t)),
            "retention": masked(retention, t >= 1),
        })


_MODELS = {cls.key: cls for cls in (BGNBD, MBGNBD, ParetoNBD, GammaGamma, BGBB, SBG)}


def model_class(key: str):
    """The model class of a name used on the command line and in model files: ``bgnbd``,
    ``mbgnbd``, ``pareto``, ``bgbb``, ``sbg`` or ``gamma_gamma``."""
    cls = _MODELS.get(key)
    if cls is None:
        raise RfmxError(f"unknown model {key!r}; expected one of {', '.join(map(repr, _MODELS))}")
    return cls


def load_model(path):
    """Read any model written by ``save`` (BG/NBD, MBG/NBD, Pareto/NBD, BG/BB, sBG or Gamma-Gamma).

    A damaged file (not JSON, another format, an unknown model, missing, NaN, infinite,
    zero or negative parameters, fields of the wrong type) is a one-line RfmxError naming
    the file and the field.
    """
    from ..modelfile import Fields, read_model_json
    from .summary import UNIT_DAYS

    what = "CLV model file"
    meta = read_model_json(path, what)
    f = Fields(path)
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        f.fail(f"not an rfmx {what} (format {meta.get('format')!r} version {meta.get('version')!r}; this rfmx "
               f"reads {MODEL_FORMAT!r} version {MODEL_VERSION})")
    key = f.get(meta, "model", "the model name ('model')")
    cls = _MODELS.get(key) if isinstance(key, str) else None
    if cls is None:
        f.fail(f"unknown model {key!r}; expected one of {', '.join(map(repr, _MODELS))}")
    params = f.mapping(f.get(meta, "params", f"the {cls.name} parameters ('params')"), "params")
    unknown = sorted(set(params) - set(cls.param_names))
    if unknown:
        f.fail(f"{cls.name} has no parameter {unknown[0]!r}; its parameters are {', '.join(cls.param_names)}")
    values = {nm: f.number(f.get(params, nm, f"{cls.name} parameter {nm!r}"), f"{cls.name} parameter {nm!r}",
                           positive=True) for nm in cls.param_names}
    model = cls(penalizer=f.number(meta.get("penalizer", 0.0), "penalizer", minimum=0.0))
    model.params_ = values
    se = f.mapping(meta.get("standard_errors"), "standard_errors", optional=True) or {}
    model.standard_errors_ = {nm: f.number(se.get(nm, float("nan")), f"standard error of {nm!r}", minimum=0.0,
                                           nan_ok=True) for nm in cls.param_names}
    model.log_likelihood_ = f.number(meta.get("log_likelihood"), "log_likelihood", optional=True)
    model.n_customers_ = f.integer(meta.get("n_customers"), "n_customers", minimum=0, optional=True)
    model.n_patterns_ = f.integer(meta.get("n_patterns"), "n_patterns", minimum=0, optional=True)
    model.time_unit_ = f.string(meta.get("time_unit"), "time_unit", choices=tuple(UNIT_DAYS), optional=True)
    model.time_scale_ = f.number(meta.get("time_scale", 1.0), "time_scale", positive=True, optional=True) or 1.0
    model.optimizer_ = f.mapping(meta.get("optimizer"), "optimizer", optional=True)
    if cls is GammaGamma:
        model.n_zero_spend_ = f.integer(meta.get("n_zero_spend"), "n_zero_spend", minimum=0, optional=True)
    return model
