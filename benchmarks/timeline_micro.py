"""Micro-benchmark: building a timeline state against the plain aggregate, old code against new.

    python benchmarks/timeline_micro.py ORDERS.parquet --repeats 5
    python benchmarks/timeline_micro.py ORDERS.parquet --a /old/venv/bin/python --b python --repeats 5
    python benchmarks/timeline_micro.py ORDERS.parquet --stages       # in one process, stage by stage

Every measurement is a fresh process (kernels loaded first, unmeasured) that times either
``rfmx.aggregate(FILE)`` or ``rfmx.pipeline.timeline_state(FILE, every=PERIOD)`` (what ``rfmx timeline`` builds) and reports its
wall time, CPU time and peak RSS.  Per repeat each interpreter runs both, and the order of
the four runs alternates between repeats, so drifts of a shared machine fall on every
side.  The report gives the medians and ranges and, per interpreter, the timeline build's
median over the aggregate's median.  An interpreter is any Python with rfmx importable
(a virtualenv, or ``PYTHONPATH=/copy/of/old/rfmx python`` through ``--a-env``).

``--stages`` times, in one process, the update kernels alone over pre-converted batches,
RFM kernel against timeline kernel: a first pass (inserts, growth) and a second pass of
the same lines.  The second pass is the timeline's worst order: every line is older than
its customer's newest bucket, so each walks its customer's chain of buckets (see
:mod:`rfmx.kernels.timeline`); it is no steady state of a real stream.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = """
import json, resource, sys, time
import rfmx
from rfmx.pipeline import timeline_state
rfmx.aggregate(rfmx.generate_orders(1000, seed=1))  # kernels compiled or loaded from the cache
timeline_state(rfmx.generate_orders(1000, seed=1), every=sys.argv[3])
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[2] == "aggregate":
    n = rfmx.aggregate(sys.argv[1]).num_rows
else:
    n = timeline_state(sys.argv[1], every=sys.argv[3]).n_buckets
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": n}))
"""


def run_once(python: str, env: dict, path: str, what: str, period: str) -> dict:
    out = subprocess.run([python, "-c", _CHILD, path, what, period], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def _env(spec: str | None) -> dict:
    return dict(kv.split("=", 1) for kv in spec.split(",")) if spec else {}


def ab(args) -> None:
    sides = [("A", args.a, _env(args.a_env))] + ([("B", args.b, _env(args.b_env))] if args.b else [])
    runs = [(label, py, env, what) for label, py, env in sides for what in ("aggregate", "timeline")]
    res = {(label, what): [] for label, _, _, what in runs}
    for label, py, env, what in runs:  # warm the kernel caches, unmeasured
        run_once(py, env, args.orders, what, args.period)
    for i in range(args.repeats):
        order = runs if i % 2 == 0 else runs[::-1]
        for label, py, env, what in order:
            r = run_once(py, env, args.orders, what, args.period)
            res[(label, what)].append(r)
            print(f"repeat {i + 1} {label} {what:<9} wall {r['wall']:6.3f} s  cpu {r['cpu']:6.3f} s  "
                  f"peak {r['rss_mb']:7.0f} MB  ({r['n']:,})", flush=True)
    print()
    med = {}
    for (label, what), rs in res.items():
        walls = [r["wall"] for r in rs]
        rss = [r["rss_mb"] for r in rs]
        med[(label, what)] = statistics.median(walls)
        print(f"{label} {what:<9} wall median {statistics.median(walls):6.3f} s (range {min(walls):.3f}-{max(walls):.3f})"
              f"  cpu median {statistics.median(r['cpu'] for r in rs):6.3f} s"
              f"  peak RSS median {statistics.median(rss):6.0f} MB (range {min(rss):.0f}-{max(rss):.0f})")
    for label, _, _ in sides:
        print(f"{label}: timeline / aggregate = {med[(label, 'timeline')] / med[(label, 'aggregate')]:.2f}")
    if args.b:
        print(f"timeline B / A = {med[('B', 'timeline')] / med[('A', 'timeline')]:.3f}; "
              f"aggregate B / A = {med[('B', 'aggregate')] / med[('A', 'aggregate')]:.3f}")


def stages(args) -> None:
    import time

    import numpy as np

    import rfmx
    from rfmx.history import TimelineState
    from rfmx.pipeline import timeline_state
    from rfmx.sources import iter_batches

    rfmx.warmup()
    timeline_state(rfmx.generate_orders(1000, seed=1), every=args.period)
    cols = rfmx.RFMState().columns
    batches = [b for _, _, b in iter_batches(args.orders, cols)]
    lines = sum(b.num_rows for b in batches)

    def timed(name, state, convs):
        t0, c0 = time.perf_counter(), time.process_time()
        for conv in convs:
            state._fold(*conv.lines, hashed=conv.hashed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{name:<44} wall {wall:6.3f} s  cpu {cpu:6.3f} s  {wall / lines * 1e9:6.1f} ns/line", flush=True)

    for rep in range(args.repeats):
        for name, make in (("rfm", lambda: rfmx.RFMState()), ("timeline", lambda: TimelineState(period=args.period))):
            st = make()
            convs = [st._convert(b, "<batch>", 0) for b in batches]
            st._adopt_ids(convs[0].ids, "<batch>")
            timed(f"{rep + 1} {name} first pass", st, convs)
            timed(f"{rep + 1} {name} second pass (same lines)", st, convs)
            del st, convs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("orders", help="a Parquet order history (customer_id, order_time, amount)")
    ap.add_argument("--a", default=sys.executable, help="interpreter (old rfmx with --b)")
    ap.add_argument("--a-env", default=None, help="environment for A, e.g. PYTHONPATH=/old/copy")
    ap.add_argument("--b", default=None, help="interpreter with the new rfmx")
    ap.add_argument("--b-env", default=None)
    ap.add_argument("--period", default="month")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stages", action="store_true", help="time the update kernels in one process instead")
    args = ap.parse_args()
    stages(args) if args.stages else ab(args)


if __name__ == "__main__":
    main()
