"""The population-wide steps on Dask beside one machine: ``score``, ``clv``, k-means and
monthly snapshots on a ``LocalCluster`` of single-threaded worker processes against the
same step in this process (the kernels on all cores), file in, Parquet out.

    python -m benchmarks.dask_steps --rows 1e5
    python -m benchmarks.dask_steps --rows 1e7 --workers 4 --steps score,clv --repeats 3

Each step runs once unmeasured on both sides (compiling the kernels in every process),
then ``--repeats`` times; the medians are printed with their ratio.  On one machine the
Dask side pays for what one process does not: partial states through Arrow IPC, the
merge per bucket, and the reduction rounds of the global steps (quantile-edge histograms,
k-means iterations), each a round trip through the scheduler.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

STEPS = ("score", "clv", "cluster", "snapshots")


def _one_machine(step: str, path: str, out: str):
    import rfmx
    from rfmx.sinks import write_table

    if step == "score":
        table = rfmx.score(path, order_id="order_id")
    elif step == "clv":
        from rfmx.api import build_state
        from rfmx.clv import BGNBD, BTYDState, GammaGamma, add_clv_columns

        state = BTYDState(order_id="order_id", period="week")
        build_state(path, order_id="order_id", state=state)
        summary = state.summary(None)
        table = add_clv_columns(summary, BGNBD(penalizer=0.001).fit(summary),
                                GammaGamma(penalizer=0.001).fit(summary))
    elif step == "cluster":
        from rfmx.cluster import add_cluster_column

        table = add_cluster_column(rfmx.aggregate(path, order_id="order_id"), 6)
    else:
        import pyarrow as pa
        from rfmx.api import build_state
        from rfmx.history import TimelineState
        from rfmx.pipeline import with_as_of

        state = TimelineState(order_id="order_id", period="month")
        build_state(path, order_id="order_id", state=state)
        table = pa.concat_tables([with_as_of(t, a, state.timezone) for a, t in state.snapshots()])
    write_table(table, out)


def _on_dask(step: str, path: str, out: str, client):
    import rfmx.dask as rd

    common = dict(order_id="order_id", client=client, output=out)
    if step == "score":
        rd.score(path, **common)
    elif step == "clv":
        rd.clv(path, period="week", penalizer=0.001, **common)
    elif step == "cluster":
        rd.cluster_customers(path, k=6, **common)
    else:
        rd.snapshots(path, every="month", **common)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=1e5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", default=",".join(STEPS))
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    import distributed
    from rfmx.generate import write_orders

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "orders.parquet")
        write_orders(path, int(args.rows), decimal_amounts=True)
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=40)
        client = distributed.Client(cluster)
        try:
            print(f"{int(args.rows):,} lines; Dask: LocalCluster of {args.workers} worker processes")
            print(f"{'step':<10} {'one machine s':>14} {'on Dask s':>10} {'ratio':>6}")
            for step in steps:
                times = {}
                for side in ("one", "dask"):
                    runs = []
                    for r in range(args.repeats + 1):  # the first run compiles: not measured
                        out = os.path.join(tmp, f"{step}-{side}-{r}" + (".parquet" if side == "one" else ""))
                        start = time.perf_counter()
                        if side == "one":
                            _one_machine(step, path, out)
                        else:
                            _on_dask(step, path, out, client)
                        if r:
                            runs.append(time.perf_counter() - start)
                    times[side] = statistics.median(runs)
                print(f"{step:<10} {times['one']:>14.3f} {times['dask']:>10.3f} {times['dask'] / times['one']:>6.2f}")
        finally:
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
