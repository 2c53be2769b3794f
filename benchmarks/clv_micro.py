"""CLV: rfmx's BG/NBD fit against lifetimes, fit + predictions at 10 M customers, and the BTYD
summary of an order file against the plain RFM aggregate of the same file.

    python benchmarks/clv_micro.py fit --customers 1000000 --lifetimes-python /tmp/lt/bin/python
    python benchmarks/clv_micro.py big --customers 10000000
    python benchmarks/clv_micro.py summary --orders /tmp/x.parquet      # rfmx generate /tmp/x.parquet --rows 10000000

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


CHILDREN = {"rfmx-fit": child_rfmx_fit, "lifetimes-fit": child_lifetimes_fit, "rfmx-big": child_rfmx_big,
            "aggregate": child_aggregate, "btyd": child_btyd}


def run_child(python, name, target, args):
    cmd = [python, os.path.abspath(__file__), "child", name, target, str(args.repeat), str(args.threads or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["fit", "big", "summary", "child"])
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
