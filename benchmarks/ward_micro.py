"""Two-stage Ward (rfmx.hierarchy.Ward) against k-means of the same k, and against full Ward.

    python benchmarks/ward_micro.py                          # 1 M synthetic customers, k = 8
    python benchmarks/ward_micro.py --customers 7250000      # the scale of the issue (heavy: run on a quiet machine)
    python benchmarks/ward_micro.py --quality --sample 20000 # + two-stage vs full Ward (scipy) on a sample

Time: the customers are rfmx's synthetic per-customer table (``kmeans_micro.synthetic_customers``:
heavy-tailed orders and money), log1p and z-scored, written once to a temporary .npy.  Each
contender runs in its own process, warms up on a small problem first (compile time
excluded), and the best of ``--rounds`` alternating rounds is kept:

- ``kmeans``: ``rfmx.cluster.KMeans(k, random_state=seed).fit(X)`` -- k-means++ on all
  customers, then Lloyd to convergence (the default ``rfmx cluster -k K``);
- ``ward``: ``rfmx.hierarchy.Ward(k, random_state=seed).fit(X)`` -- 256 micro-clusters
  fitted on 100,000 sampled customers, every customer placed, Ward linkage, the cut
  (the default ``rfmx cluster --method ward -k K``), with its stages timed apart.

Quality (``--quality``): on a uniform sample of ``--sample`` customers, full Ward
(``scipy.cluster.hierarchy.linkage(method="ward")``, O(s^2) memory: 20,000 need ~3 GB) and
two-stage Ward on the same points, both cut at each k of ``--quality-k``: the adjusted Rand
index (scikit-learn) and the share of customers in matching clusters (the best one-to-one
matching) between the two, and each one's within-cluster sum of squares.  As a yardstick,
the same numbers for full Ward against full Ward of the points moved by a N(0, 1e-3) jitter
(in standardized units): how far a partition that small a change can move is the
agreement one can expect.  The same for well-separated synthetic blobs (``--data blobs``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def customer_features(args):
    """(n, d) standardized log features of the synthetic customers (or blobs)."""
    import numpy as np

    if args.data == "blobs":
        rng = np.random.default_rng(args.seed)
        centres = rng.uniform(-6, 6, (8, 3))
        return centres[rng.integers(0, 8, args.customers)] + rng.normal(0, 1.0, (args.customers, 3))
    sys.path.insert(0, HERE)
    from kmeans_micro import synthetic_customers

    from rfmx.cluster import FeatureTransform

    table = synthetic_customers(args.customers, args.seed)
    X, _ = FeatureTransform().fit(table).transform(table)
    return X


def worker(args, X):
    import numpy as np

    from rfmx.cluster import KMeans
    from rfmx.hierarchy import Ward, ward_linkage
    from rfmx.points import kernel_threads

    out = {}
    with kernel_threads(args.threads) as n_threads:
        out["threads"] = n_threads
        small = np.asfortranarray(X[: min(len(X), 30_000)])
        if args.worker == "kmeans":
            KMeans(args.k, random_state=0, max_iter=5).fit(small)  # compile
            t = time.perf_counter()
            km = KMeans(args.k, random_state=args.seed).fit(X)
            out["fit"] = time.perf_counter() - t
            out.update(inertia=km.inertia_, n_iter=int(km.n_iter_))
        else:
            Ward(args.k, n_micro=64, micro_sample=10_000, random_state=0).fit(small)  # compile
            t = time.perf_counter()
            w = Ward(args.k, random_state=args.seed).fit(X)
            out["fit"] = time.perf_counter() - t
            out.update(inertia=w.inertia_, micro=len(w.micro_counts_))
            t = time.perf_counter()
            ward_linkage(w.micro_means_, w.micro_counts_)
            out["linkage"] = time.perf_counter() - t
    return out


def quality(args, X):
    """Two-stage vs full Ward on a sample, and full Ward vs full Ward of jittered points."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    from rfmx.hierarchy import Ward

    rs = np.random.RandomState(args.seed + 1)
    S = np.ascontiguousarray(X[np.sort(rs.choice(len(X), min(args.sample, len(X)), replace=False))])

    def sse(labels):
        return float(sum(((S[labels == c] - S[labels == c].mean(axis=0)) ** 2).sum() for c in np.unique(labels)))

    def matched(a, b):
        _, a = np.unique(a, return_inverse=True)
        _, b = np.unique(b, return_inverse=True)
        counts = np.zeros((a.max() + 1, b.max() + 1))
        np.add.at(counts, (a, b), 1)
        r, c = linear_sum_assignment(-counts)
        return float(counts[r, c].sum() / len(a))

    t = time.perf_counter()
    full = linkage(S, method="ward")
    full_s = time.perf_counter() - t
    jittered = linkage(S + np.random.default_rng(args.seed).normal(0, 1e-3, S.shape), method="ward")
    rows = []
    for k in args.quality_k:
        ref = fcluster(full, k, "maxclust")
        jit = fcluster(jittered, k, "maxclust")
        two = Ward(k, random_state=args.seed).fit(S).labels_
        rows.append({"k": k, "ari_two_stage": adjusted_rand_score(ref, two), "matched_two_stage": matched(ref, two),
                     "ari_jitter": adjusted_rand_score(ref, jit), "matched_jitter": matched(ref, jit),
                     "sse_full": sse(ref), "sse_two_stage": sse(two)})
    return {"sample": len(S), "full_ward_s": full_s, "rows": rows}


def main():
    sys.path.insert(0, os.path.dirname(HERE))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--data", choices=["customers", "blobs"], default="customers")
    p.add_argument("-k", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each contender (best kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", action="store_true", help="also: two-stage vs full Ward (scipy) on a sample")
    p.add_argument("--sample", type=int, default=20_000, help="customers of the --quality sample")
    p.add_argument("--quality-k", type=lambda s: [int(v) for v in s.split(",")], default=[4, 8, 12])
    p.add_argument("--no-timing", action="store_true", help="only --quality")
    p.add_argument("--worker", choices=["kmeans", "ward"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        import numpy as np

        X = np.asfortranarray(np.load(os.path.join(args.workdir, "X.npy")))
        print(json.dumps(worker(args, X)))
        return

    import numpy as np

    X = customer_features(args)
    print(f"{len(X):,} {'synthetic customers' if args.data == 'customers' else 'blob points'} x {X.shape[1]} "
          f"features, k = {args.k}")
    if not args.no_timing:
        with tempfile.TemporaryDirectory(prefix="rfmx-ward-") as workdir:
            np.save(os.path.join(workdir, "X.npy"), np.ascontiguousarray(X))
            results = {}
            for _ in range(args.rounds):
                for name in ("kmeans", "ward"):
                    cmd = [sys.executable, __file__, "--worker", name, "--workdir", workdir] + sys.argv[1:]
                    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                    got = json.loads(done.stdout.strip().splitlines()[-1])
                    if name not in results or got["fit"] < results[name]["fit"]:
                        results[name] = got
        km, w = results["kmeans"], results["ward"]
        print(f"threads {km['threads']}")
        print(f"{'k-means (k-means++ + Lloyd, ' + str(km['n_iter']) + ' iterations)':52}{km['fit']:9.3f} s  "
              f"inertia {km['inertia']:.6g}")
        print(f"{'two-stage Ward (' + str(w['micro']) + ' micro-clusters)':52}{w['fit']:9.3f} s  "
              f"inertia {w['inertia']:.6g}  (linkage {w['linkage'] * 1000:.1f} ms)")
        print(f"ratio Ward / k-means: {w['fit'] / km['fit']:.2f}")
    if args.quality:
        q = quality(args, X)
        print(f"\nquality on a sample of {q['sample']:,} (full Ward by scipy: {q['full_ward_s']:.1f} s)")
        print(f"{'k':>3}{'ARI two-stage':>15}{'matched':>9}{'ARI jitter 1e-3':>17}{'matched':>9}"
              f"{'SSE two-stage / full':>22}")
        for r in q["rows"]:
            print(f"{r['k']:>3}{r['ari_two_stage']:>15.3f}{r['matched_two_stage']:>9.3f}{r['ari_jitter']:>17.3f}"
                  f"{r['matched_jitter']:>9.3f}{r['sse_two_stage'] / r['sse_full']:>22.3f}")


if __name__ == "__main__":
    main()
