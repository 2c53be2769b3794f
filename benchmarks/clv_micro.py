"""CLV: rfmx's BG/NBD fit against lifetimes, fit + predictions at 10 M customers, the BTYD
summary of an order file against the plain RFM aggregate of the same file, and the MBG/NBD,
BG/BB and sBG fits against lifetimes.

    python benchmarks/clv_micro.py fit --customers 1000000 --lifetimes-python /tmp/lt/bin/python
    python benchmarks/clv_micro.py big --customers 10000000
    python benchmarks/clv_micro.py summary --orders /tmp/x.parquet      # rfmx generate /tmp/x.parquet --rows 10000000
    python benchmarks/clv_micro.py models --customers 1000000 --lifetimes-python /tmp/lt/bin/python

``models`` fits each of MBG/NBD, BG/BB and sBG on the same simulated customers in rfmx and
in lifetimes, each in its own process: MBG/NBD on 1 M (x, t_x, T) rows as for BG/NBD
(lifetimes' ``ModifiedBetaGeoFitter``); BG/BB on customers with 1..24 monthly opportunities,
which lifetimes' ``BetaGeoBetaBinomFitter`` gets compressed to its (frequency, recency,
n_periods, weights) patterns as its documentation recommends (the pandas group-by timed
with it) while rfmx gets the customer rows (with 1..52 opportunities lifetimes' unbounded
BFGS steps to parameters of e**800 and fails, from its default start and from the true
parameters alike); sBG on contracts (periods paid, still active)
of 36 monthly cohorts — lifetimes has no sBG model, so its contender is the sBG likelihood
written the way lifetimes writes its fitters (per-customer autograd log-likelihood,
``BaseFitter._fit``: SciPy's BFGS on log-parameters).  Every pair must agree (parameters to
1e-4 relative, and neither optimum better than the other by more than 1e-6 of the
log-likelihood) or the run fails.

lifetimes (0.11.3) does not import with NumPy 2 / pandas 3; give it its own environment:
``python -m venv /tmp/lt && /tmp/lt/bin/pip install lifetimes==0.11.3 "numpy<2" "pandas<2.2" "scipy<1.13"``.

Populations are simulated from BG/NBD (T in days, 1..730, day-resolution recency; spends
from Gamma-Gamma), written once to .npy files; each contender runs in its own process, warms
up on a small problem first (compile time excluded) and reports wall-clock seconds, best of
``--repeat``.  Parameters (and log-likelihoods) of the contenders are compared, so a faster
wrong answer cannot pass unnoticed.  Ratios are from the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TRUE = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}  # per day: a CDNOW-like population
SPEND = {"p": 6.0, "q": 3.8, "v": 15.0}


def simulate(n: int, seed: int, workdir: str) -> None:
    """BG/NBD customers (x, t_x, T in days) and Gamma-Gamma mean spends, saved as .npy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    T = rng.integers(1, 731, n).astype(np.float64)
    lam = rng.gamma(TRUE["r"], 1.0 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    N = rng.poisson(lam * T)
    K = rng.geometric(p)
    x = np.minimum(K, N)
    tx = np.where(x > 0, np.floor(rng.beta(np.maximum(x, 1), np.maximum(N - x + 1, 1)) * T), 0.0)
    nu = rng.gamma(SPEND["q"], 1.0 / SPEND["v"], n)
    m = np.where(x > 0, np.round(rng.gamma(SPEND["p"] * np.maximum(x, 1), 1.0 / (nu * np.maximum(x, 1))), 2), 0.0)
    m = np.where((x > 0) & (m <= 0), 0.01, m)
    for name, v in (("x", x.astype(np.float64)), ("tx", tx), ("T", T), ("m", m)):
        np.save(os.path.join(workdir, f"{name}.npy"), v)


def _load(workdir):
    import numpy as np

    return [np.load(os.path.join(workdir, f"{k}.npy")) for k in ("x", "tx", "T", "m")]


def _best(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# --- children (each in its own process) -----------------------------------------------------

def child_rfmx_fit(workdir, repeat, threads):
    from rfmx.clv import BGNBD
    from rfmx.kernels._policy import threads as nthreads

    x, tx, T, _ = _load(workdir)
    with nthreads(threads):
        k = 200_000  # large enough to take every code path of the full fit (compile / cache load)
        BGNBD().fit(frequency=x[:k], recency=tx[:k], T=T[:k])
        secs, bg = _best(lambda: BGNBD().fit(frequency=x, recency=tx, T=T), max(repeat, 5))
    return {"seconds": secs, "params": [bg.params_[k] for k in ("r", "alpha", "a", "b")],
            "log_likelihood": bg.log_likelihood_, "patterns": bg.n_patterns_}


def child_lifetimes_fit(workdir, repeat, threads):
    import warnings

    import numpy as np
    from lifetimes import BetaGeoFitter

    warnings.simplefilter("ignore")
    x, tx, T, _ = _load(workdir)
    BetaGeoFitter().fit(x[:2000], tx[:2000], T[:2000])
    secs, bg = _best(lambda: BetaGeoFitter().fit(x, tx, T), repeat)
    params = [float(bg.params_[k]) for k in ("r", "alpha", "a", "b")]
    return {"seconds": secs, "params": params, "version": __import__("lifetimes").__version__,
            "numpy": np.__version__}


def child_rfmx_big(workdir, repeat, threads):
    from rfmx.clv import BGNBD, GammaGamma
    from rfmx.kernels._policy import threads as nthreads

    x, tx, T, m = _load(workdir)
    k = 200_000
    with nthreads(threads):
        warm = BGNBD().fit(frequency=x[:k], recency=tx[:k], T=T[:k])
        warm.value_weights(frequency=x[:k], recency=tx[:k], T=T[:k], unit="day")
        GammaGamma().fit(frequency=x[:k], monetary_value=m[:k]).expected_spend(frequency=x[:k], monetary_value=m[:k])
        parts = {}

        def run():
            t0 = time.perf_counter()
            bg = BGNBD().fit(frequency=x, recency=tx, T=T)
            t1 = time.perf_counter()
            gg = GammaGamma().fit(frequency=x, monetary_value=m)
            t2 = time.perf_counter()
            alive, expected, weight = bg.value_weights(frequency=x, recency=tx, T=T, horizon=12, discount=0.01,
                                                       unit="day")
            t3 = time.perf_counter()
            clv = gg.expected_spend(frequency=x, monetary_value=m) * weight
            t4 = time.perf_counter()
            parts.update(bgnbd_fit=t1 - t0, gamma_gamma_fit=t2 - t1, predictions=t3 - t2, spend_and_clv=t4 - t3)
            return bg, gg, alive, expected, clv

        secs, (bg, gg, alive, expected, clv) = _best(run, repeat)
    import numpy as np

    return {"seconds": secs, "parts": parts, "customers": len(x), "patterns": bg.n_patterns_,
            "params": bg.params_, "spend_params": gg.params_,
            "finite": bool(np.isfinite(alive).all() and np.isfinite(expected).all() and np.isfinite(clv).all())}


def child_aggregate(path, repeat, threads):
    import rfmx

    rfmx.aggregate(rfmx.generate_orders(20000), threads=threads)  # compile (warm the cache)
    secs, table = _best(lambda: rfmx.aggregate(path, threads=threads), repeat)
    return {"seconds": secs, "customers": table.num_rows}


def child_btyd(path, repeat, threads):
    import rfmx
    from rfmx.clv import summary

    summary(rfmx.generate_orders(20000), threads=threads)
    secs, table = _best(lambda: summary(path, threads=threads), repeat)
    import numpy as np

    return {"seconds": secs, "customers": table.num_rows,
            "repeat_buyers": int(np.count_nonzero(table.column("frequency").to_numpy()))}


# --- MBG/NBD, BG/BB and sBG against lifetimes ----------------------------------------------------

MBG_TRUE = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}   # per day, as the BG/NBD population
BGBB_TRUE = {"alpha": 1.2, "beta": 0.75, "gamma": 0.66, "delta": 2.78}  # Fader, Hardie & Shang's donors
SBG_TRUE = {"alpha": 0.7, "beta": 1.2}                     # Fader & Hardie's "regular" customers
NEW_MODELS = ("mbgnbd", "bgbb", "sbg")


def simulate_models(n: int, seed: int, workdir: str) -> None:
    """The three populations of ``models``, saved as .npy files."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # MBG/NBD: Poisson purchases, a dropout chance right after the first purchase and each repeat
    T = rng.integers(1, 731, n).astype(np.float64)
    lam = rng.gamma(MBG_TRUE["r"], 1.0 / MBG_TRUE["alpha"], n)
    p = rng.beta(MBG_TRUE["a"], MBG_TRUE["b"], n)
    N = rng.poisson(lam * T)
    x = np.minimum(rng.geometric(p) - 1, N)
    tx = np.where(x > 0, np.floor(rng.beta(np.maximum(x, 1), np.maximum(N - x + 1, 1)) * T), 0.0)
    for name, v in (("mbgnbd_x", x.astype(np.float64)), ("mbgnbd_tx", tx), ("mbgnbd_T", T)):
        np.save(os.path.join(workdir, f"{name}.npy"), v)
    # BG/BB: 1..24 opportunities; at each, a living customer first dies with theta, then buys with p
    nopp = rng.integers(1, 25, n)
    p = rng.beta(BGBB_TRUE["alpha"], BGBB_TRUE["beta"], n)
    theta = rng.beta(BGBB_TRUE["gamma"], BGBB_TRUE["delta"], n)
    alive = np.minimum(rng.geometric(theta) - 1, nopp)
    x = np.zeros(n, dtype=np.int64)
    tx = np.zeros(n, dtype=np.int64)
    for t in range(1, 25):
        buy = (t <= alive) & (rng.random(n) < p)
        x += buy
        tx = np.where(buy, t, tx)
    for name, v in (("bgbb_x", x), ("bgbb_tx", tx), ("bgbb_n", nopp)):
        np.save(os.path.join(workdir, f"{name}.npy"), v.astype(np.float64))
    # sBG: 36 monthly cohorts observed at month 35; lifetime ~ shifted geometric(theta)
    start = rng.integers(0, 36, n)
    theta = rng.beta(SBG_TRUE["alpha"], SBG_TRUE["beta"], n)
    life = rng.geometric(theta)  # periods paid before cancelling
    seen = 36 - start  # periods paid by month 35; the decision at its end is not seen yet
    np.save(os.path.join(workdir, "sbg_periods.npy"), np.minimum(life, seen).astype(np.float64))
    np.save(os.path.join(workdir, "sbg_active.npy"), life >= seen)


def _load_model_data(workdir, model):
    import numpy as np

    names = {"mbgnbd": ("x", "tx", "T"), "bgbb": ("x", "tx", "n"), "sbg": ("periods", "active")}[model]
    return [np.load(os.path.join(workdir, f"{model}_{k}.npy")) for k in names]


def _rfmx_fit(model, arrays):
    from rfmx.clv import BGBB, MBGNBD, SBG

    if model == "mbgnbd":
        return MBGNBD().fit(frequency=arrays[0], recency=arrays[1], T=arrays[2])
    if model == "bgbb":
        return BGBB().fit(frequency=arrays[0], recency=arrays[1], n_periods=arrays[2])
    return SBG().fit(periods=arrays[0], active=arrays[1])


def child_rfmx_model(spec, repeat, threads):
    from rfmx.kernels._policy import threads as nthreads

    workdir, model = spec.split("::")
    arrays = _load_model_data(workdir, model)
    with nthreads(threads):
        _rfmx_fit(model, [a[:200_000] for a in arrays])  # every code path once (compile / cache load)
        secs, fitted = _best(lambda: _rfmx_fit(model, arrays), max(repeat, 3))
    return {"seconds": secs, "params": [fitted.params_[k] for k in fitted.param_names],
            "log_likelihood": fitted.log_likelihood_, "patterns": fitted.n_patterns_,
            "optimizer": fitted.optimizer_}


def _lifetimes_sbg_fitter():
    """sBG written as lifetimes writes its fitters: a per-customer autograd log-likelihood
    minimized by lifetimes' BaseFitter._fit (SciPy BFGS on log-parameters, autograd Hessian)."""
    import autograd.numpy as anp
    from autograd.scipy.special import betaln
    from lifetimes.fitters import BaseFitter

    class ShiftedBetaGeoFitter(BaseFitter):
        def __init__(self, penalizer_coef=0.0):
            self.penalizer_coef = penalizer_coef

        @staticmethod
        def _negative_log_likelihood(log_params, periods, active, weights, penalizer_coef):
            alpha, beta = anp.exp(log_params)
            churn = betaln(alpha + 1, beta + periods - 1) - betaln(alpha, beta)   # P(T = t)
            survive = betaln(alpha, beta + periods - 1) - betaln(alpha, beta)     # S(t - 1)
            ll = anp.where(active, survive, churn)
            return -(weights * ll).sum() / weights.sum() + penalizer_coef * anp.sum(anp.exp(log_params) ** 2)

        def fit(self, periods, active):
            import numpy as np
            import pandas as pd

            weights = np.ones(len(periods))
            log_params, self._negative_log_likelihood_, self._hessian_ = self._fit(
                (periods, active, weights, self.penalizer_coef), None, 2, False)
            self.params_ = pd.Series(np.exp(log_params), index=["alpha", "beta"])
            return self

    return ShiftedBetaGeoFitter


def child_lifetimes_model(spec, repeat, threads):
    import warnings

    import numpy as np
    import pandas as pd
    from lifetimes import BetaGeoBetaBinomFitter, ModifiedBetaGeoFitter

    warnings.simplefilter("ignore")
    workdir, model = spec.split("::")
    arrays = _load_model_data(workdir, model)
    if model == "mbgnbd":
        names = ("r", "alpha", "a", "b")

        def fit(a):
            return ModifiedBetaGeoFitter().fit(a[0], a[1], a[2])
    elif model == "bgbb":
        names = ("alpha", "beta", "gamma", "delta")

        def fit(a):  # the (frequency, recency, n_periods, weights) patterns lifetimes' docs recommend
            df = pd.DataFrame({"f": a[0], "r": a[1], "n": a[2]})
            rf = df.groupby(["f", "r", "n"]).size().reset_index(name="w")
            return BetaGeoBetaBinomFitter().fit(rf["f"].to_numpy(), rf["r"].to_numpy(), rf["n"].to_numpy(),
                                                weights=rf["w"].to_numpy())
    else:
        names = ("alpha", "beta")
        fitter = _lifetimes_sbg_fitter()

        def fit(a):
            return fitter().fit(a[0], a[1])
    fit([v[:2000] for v in arrays])
    secs, fitted = _best(lambda: fit(arrays), repeat)
    return {"seconds": secs, "params": [float(fitted.params_[k]) for k in names],
            "version": __import__("lifetimes").__version__, "numpy": np.__version__}


CHILDREN = {"rfmx-fit": child_rfmx_fit, "lifetimes-fit": child_lifetimes_fit, "rfmx-big": child_rfmx_big,
            "aggregate": child_aggregate, "btyd": child_btyd, "rfmx-model": child_rfmx_model,
            "lifetimes-model": child_lifetimes_model}


def _loglik_at(model, workdir, params):
    """rfmx's log-likelihood of the simulated data at ``params`` (to check both optima)."""
    import numpy as np

    from rfmx.clv import model_class
    from rfmx.clv.models import _contract_counts, compress

    arrays = _load_model_data(workdir, model)
    cls = model_class(model)
    if model == "sbg":
        data = cls._prepare(*_contract_counts(arrays[0].astype(np.int64), arrays[1]))
    else:
        px, ptx, pT, pw, _ = compress(*arrays)
        order = np.lexsort((pT, ptx, px))
        data = cls()._prepare(px[order], ptx[order], pT[order], pw[order])
    return cls()._loglik(np.array(params), data)[0]


def run_models(args) -> dict:
    """The ``models`` comparison: each new model in rfmx and in lifetimes, same data, same run."""
    import numpy as np

    n = int(args.customers or 1e6)
    out = {"customers": n, "true_params": {"mbgnbd": MBG_TRUE, "bgbb": BGBB_TRUE, "sbg": SBG_TRUE}}
    with tempfile.TemporaryDirectory(prefix="rfmx-clv-models-") as workdir:
        t = time.perf_counter()
        simulate_models(n, args.seed, workdir)
        print(f"simulated {n:,} customers per model in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        for model in NEW_MODELS:
            ours = run_child(sys.executable, "rfmx-model", f"{workdir}::{model}", args)
            row = {"rfmx": ours}
            if args.lifetimes_python:
                theirs = run_child(args.lifetimes_python, "lifetimes-model", f"{workdir}::{model}", args)
                ll_theirs = _loglik_at(model, workdir, theirs["params"])
                rel = float(np.max(np.abs(np.array(theirs["params"]) / ours["params"] - 1)))
                gap = (ours["log_likelihood"] - ll_theirs) / abs(ours["log_likelihood"])
                row.update(lifetimes=theirs, speedup_rfmx_vs_lifetimes=theirs["seconds"] / ours["seconds"],
                           max_param_rel_diff=rel, log_likelihood_at_lifetimes_params=ll_theirs,
                           relative_log_likelihood_gain_of_rfmx=gap)
                if rel > 1e-4 or gap < -1e-6 or gap > 1e-6:
                    raise SystemExit(f"{model}: rfmx and lifetimes disagree: parameters {ours['params']} vs "
                                     f"{theirs['params']} (log-likelihood gap {gap:.3g})")
            out[model] = row
            print(json.dumps({model: row}), file=sys.stderr)
    return out


def run_child(python, name, target, args):
    cmd = [python, os.path.abspath(__file__), "child", name, target, str(args.repeat), str(args.threads or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["fit", "big", "summary", "models", "child"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--customers", type=float, default=None)
    ap.add_argument("--orders", default="/tmp/x.parquet", help="order file for 'summary' (rfmx generate ...)")
    ap.add_argument("--lifetimes-python", default=None, help="a Python that imports lifetimes (for 'fit')")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.what == "child":
        name, target, repeat, threads = args.rest
        out = CHILDREN[name](target, int(repeat), int(threads) or None)
        print(json.dumps(out))
        return

    if args.what == "models":
        print(json.dumps(run_models(args), indent=1))
        return

    if args.what == "summary":
        if not os.path.exists(args.orders):
            raise SystemExit(f"{args.orders} not found; make it with: rfmx generate {args.orders} --rows 10000000")
        agg = run_child(sys.executable, "aggregate", args.orders, args)
        btyd = run_child(sys.executable, "btyd", args.orders, args)
        assert btyd["customers"] <= agg["customers"]
        print(json.dumps({"orders": args.orders, "aggregate": agg, "btyd_summary": btyd,
                          "ratio_btyd_over_aggregate": btyd["seconds"] / agg["seconds"]}, indent=1))
        return

    n = int(args.customers or (1e6 if args.what == "fit" else 1e7))
    with tempfile.TemporaryDirectory(prefix="rfmx-clv-bench-") as workdir:
        t = time.perf_counter()
        simulate(n, args.seed, workdir)
        print(f"simulated {n:,} BG/NBD customers in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        if args.what == "big":
            print(json.dumps({"rfmx": run_child(sys.executable, "rfmx-big", workdir, args)}, indent=1))
            return
        ours = run_child(sys.executable, "rfmx-fit", workdir, args)
        result = {"customers": n, "true_params": TRUE, "rfmx": ours}
        if args.lifetimes_python:
            theirs = run_child(args.lifetimes_python, "lifetimes-fit", workdir, args)
            result["lifetimes"] = theirs
            result["speedup_rfmx_vs_lifetimes"] = theirs["seconds"] / ours["seconds"]
            # the same optimum: our log-likelihood at lifetimes' parameters is not better than ours
            import numpy as np

            from rfmx.clv import BGNBD

            x, tx, T, _ = _load(workdir)
            at_theirs = BGNBD()._loglik(np.array(theirs["params"]), _patterns(x, tx, T))[0]
            result["log_likelihood_at_lifetimes_params"] = at_theirs
            result["max_param_rel_diff"] = float(np.max(np.abs(np.array(theirs["params"]) / ours["params"] - 1)))
        print(json.dumps(result, indent=1))


def _patterns(x, tx, T):
    from rfmx.clv import BGNBD
    from rfmx.clv.models import compress

    px, ptx, pT, w, _ = compress(x, tx, T)
    return BGNBD()._prepare(px, ptx, pT, w)


if __name__ == "__main__":
    main()
