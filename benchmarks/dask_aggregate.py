"""The ``dask`` workload of ``python -m benchmarks``: the per-customer aggregate on a Dask
``LocalCluster`` of 2 single-threaded worker processes, beside rfmx on one process.

Contenders (each in its own process, as every contender of the suite):

* **rfmx** — ``rfmx.aggregate(path)``: one process, the kernels on all cores (the reference);
* **rfmx on Dask** — ``rfmx.dask.aggregate(path, client=...)`` on ``LocalCluster(2 processes)``:
  the result stays on the workers as a Dask DataFrame (one partition per customer bucket);
  the price of distribution on one machine (the issue's target: at most 1.4x rfmx);
* **Dask groupby** — what a Dask user writes: ``dd.read_parquet(...)`` then
  ``groupby("customer_id").agg(...)`` (latest order, orders, money in cents) and the
  recency from the latest line, persisted on the same kind of cluster.

The cluster is started before the clock (and warmed on the small input); the timed run
ends with the result held on the workers.  Besides the client process's peak RSS, each
worker's own peak (``VmHWM``, which counts the warm-up too) is reported (``extra``:
``worker_peak_bytes``).  Checksums as the aggregate workload's: the table is collected to
the client for them, outside the measurement.

    python -m benchmarks --rows 1e6 --ids int --workloads dask --customers none
    python -m benchmarks --rows 1e8 --ids int --workloads aggregate,dask --customers none --repeats 3
    python -m benchmarks --orders /data/orders-1e9/ --workloads dask --skip dask-groupby --repeats 1
"""
from __future__ import annotations

# The suite's shared helpers are imported where they are used: worker processes import this
# module to run its functions, and benchmarks.contenders imports it to register the workload.
WORKERS = 2


def _peak_bytes() -> int | None:
    """This process's peak resident memory (Linux ``VmHWM``), or None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _OnCluster:
    """A LocalCluster of :data:`WORKERS` single-threaded worker processes for one contender."""

    def __init__(self, params):
        from .contenders import Skip

        try:
            import distributed
        except ImportError:
            raise Skip("dask/distributed are not installed; pip install -e '.[dask]'") from None
        self.cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                                dashboard_address=":0", silence_logs=40)
        self.client = distributed.Client(self.cluster)

    def load(self, inputs):
        return inputs["orders"]

    def extra(self, out):
        peaks = self.client.run(_peak_bytes)
        return {"workers": WORKERS, "worker_peak_bytes": sorted(v for v in peaks.values() if v is not None)}

    def close(self):
        self.client.close()
        self.cluster.close()


class RfmxDaskAggregate(_OnCluster):
    """``rfmx.dask.aggregate(path)`` on LocalCluster(2 worker processes); result kept on the workers."""

    label = f"rfmx on Dask (LocalCluster, {WORKERS} processes)"

    def __init__(self, params):
        super().__init__(params)
        import rfmx.dask

        self.rd = rfmx.dask

    def run(self, path):
        return self.rd.aggregate(path, client=self.client)

    def canonical(self, ddf):
        import pyarrow as pa

        from .contenders import rfmx_columns, table_checksum

        frame = self.client.compute(ddf).result()
        return table_checksum(rfmx_columns(pa.Table.from_pandas(frame, preserve_index=False)))


class DaskGroupby(_OnCluster):
    """``dd.read_parquet(...).groupby("customer_id").agg(...)``, persisted on the same kind of cluster."""

    label = f"Dask groupby (LocalCluster, {WORKERS} processes)"

    def __init__(self, params):
        super().__init__(params)
        import dask
        import dask.dataframe as dd

        self.dask, self.dd = dask, dd

    def run(self, path):
        import pandas as pd

        from .contenders import COLUMNS

        df = self.dd.read_parquet(path, columns=COLUMNS)
        df = df.assign(is_order=df["amount"] >= 0,
                       money_cents=(df["amount"] * 100).round().astype("int64"))
        df = df.assign(order_time=df["order_time"].where(df["is_order"]))  # refunds do not move last_order
        latest = df["order_time"].max()
        per = df.groupby("customer_id").agg(last_order=("order_time", "max"), n_orders=("is_order", "sum"),
                                            money_cents=("money_cents", "sum"))
        latest, per = self.dask.persist(latest, per)
        as_of = latest.compute().floor("D") + pd.Timedelta(days=1)
        per = per.assign(recency_days=(as_of - per["last_order"].dt.floor("D")).dt.days)
        return self.client.persist(per)

    def canonical(self, per):
        import pyarrow as pa

        from .contenders import table_checksum

        frame = self.client.compute(per).result().reset_index()
        table = pa.Table.from_pandas(frame[["customer_id", "recency_days", "n_orders", "money_cents"]],
                                     preserve_index=False)
        return table_checksum(table)
