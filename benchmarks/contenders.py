"""What every contender computes, written the way its own users would write it.

Shared definitions (docs/benchmarks.md "Definitions"):

- ``as_of`` = midnight after the latest line (order or refund);
- a line with ``amount < 0`` is a refund: it counts in the net money total but is not an
  order and does not move the first/last order time;
- ``recency_days`` = calendar days from the day of the last order to the ``as_of`` day
  (pandas ``(as_of - last.dt.floor("D")).dt.days``, DuckDB ``date_diff('day', last, as_of)``);
  ``n_orders`` = order lines;
- ``money_cents`` = sum of round(amount * 100) as integers (exact);
- quintile scores = ``pd.qcut(x.rank(method="first"), 5, labels=[1, 2, 3, 4, 5])``, higher
  is better: x is ``n_orders`` and ``money_cents`` ranked ascending; ``recency_days`` is
  ranked ascending too with the labels reversed (``labels=[5, 4, 3, 2, 1]``: the most
  recent customers score 5), as the tutorial recipe and rfmx's ``ties="first"``.
  Rank k of n (ties broken by row order) falls in bin ``max(1, ceil(5 (k - 1) / (n - 1)))``.
  DuckDB's ``ntile`` and Polars' ``qcut`` cut the ranks differently (their bin sizes differ
  by one for some n), so those two contenders spell out the qcut formula over
  ``row_number()`` / ``rank("ordinal")``.

Each contender class has ``load(inputs)`` (untimed: read small inputs), ``run(data)``
(timed) and ``canonical(out)`` (untimed: the result as plain columns for the checksum).
Peers are imported inside the classes, so a missing one only skips that contender.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import shutil
import tempfile
import time

import numpy as np

COLUMNS = ["customer_id", "order_time", "amount"]
QUINTILES = 5
US_PER_DAY = 86_400_000_000
SCORE_COLUMNS = {"r_score": "recency_days", "f_score": "n_orders", "m_score": "money_cents"}
BATCH_ROWS = 1 << 20  # rfmx's default batch size; the scan floor uses the same


class Skip(Exception):
    """This contender cannot run here: a peer is not installed, or an rfmx API does not exist yet."""


def require(module: str, extra: str = "bench"):
    """Import a peer, or :class:`Skip` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"{module} is not installed ({exc.__class__.__name__}: {exc}); "
                   f"pip install -e '.[{extra}]'") from None


def require_rfmx_module(module: str, attr: str, issue: str):
    """``rfmx.<module>.<attr>``, or :class:`Skip` while that part of rfmx does not exist yet."""
    try:
        mod = importlib.import_module(f"rfmx.{module}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"rfmx.{module}",):
            raise Skip(f"rfmx.{module} does not exist yet ({issue})") from None
        raise
    if not hasattr(mod, attr):
        raise Skip(f"rfmx.{module}.{attr} does not exist yet ({issue})")
    return getattr(mod, attr)


def call_with_supported(fn, *args, **kwargs):
    """Call ``fn`` with the keyword arguments its signature accepts (APIs still settling)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


def _sql_string(path: str) -> str:
    return "'" + os.fspath(path).replace("'", "''") + "'"


def parquet_glob(path: str) -> str:
    """A directory of Parquet files as the glob Polars and DuckDB read; a file as it is."""
    return os.path.join(path, "**", "*.parquet") if os.path.isdir(path) else path


# --- checksums --------------------------------------------------------------------------

def table_checksum(table, *, scores: bool = False) -> dict:
    """An order-independent fingerprint of a per-customer result.

    ``table`` (pyarrow) has ``customer_id``, ``recency_days``, ``n_orders``,
    ``money_cents`` and, with ``scores``, ``r_score``, ``f_score``, ``m_score``.  The rows
    are sorted by customer id and hashed with the three aggregates (nulls as -1).  Scores
    are not hashed per customer: ``rank(method="first")`` breaks ties by row order, which
    differs between engines.  Instead, per dimension, the customers per score and the sum
    of value * score are kept: both are the same for every tie order (tied customers have
    the same value) and both change when a bin edge or the direction is wrong.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = table.column("customer_id")
    if pa.types.is_integer(ids.type):
        ids = ids.cast(pa.int64())
    else:
        ids = ids.cast(pa.large_string())
    order = pc.sort_indices(ids)
    sorted_ids = ids.take(order).combine_chunks()
    digest = hashlib.sha256()
    if pa.types.is_integer(sorted_ids.type):
        digest.update(np.ascontiguousarray(sorted_ids.to_numpy()).tobytes())
    else:
        n = len(sorted_ids)
        offsets = np.frombuffer(sorted_ids.buffers()[1], dtype=np.int64)[sorted_ids.offset: sorted_ids.offset + n + 1]
        data = sorted_ids.buffers()[2]
        digest.update((offsets - offsets[0]).tobytes())
        if data is not None:
            digest.update(memoryview(data)[int(offsets[0]): int(offsets[-1])])
    out = {"customers": table.num_rows}
    values = {}
    for name in ("recency_days", "n_orders", "money_cents"):
        col = table.column(name)
        out[f"{name}_nulls"] = col.null_count
        v = col.cast(pa.int64()).fill_null(-1).to_numpy()
        values[name] = v
        out[f"{name}_sum"] = int(v.sum())
        digest.update(np.ascontiguousarray(v[order.to_numpy()]).tobytes())
    out["digest"] = digest.hexdigest()[:16]
    if scores:
        for score, value in SCORE_COLUMNS.items():
            s = table.column(score).cast(pa.int64()).fill_null(0).to_numpy()
            out[f"{score}_counts"] = np.bincount(s, minlength=QUINTILES + 1).tolist()
            out[f"{score}_x_value"] = int((s * values[value]).sum())
    return out


def checksum_differences(a: dict, b: dict) -> list[str]:
    """The keys on which two exact checksums differ, as ``key: a != b``."""
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def close_differences(a: dict, b: dict, key: str, rtol: float) -> list[str]:
    """``key`` of two float checksums differs by more than ``rtol`` (relative)."""
    x, y = a.get(key), b.get(key)
    if x is None or y is None or not np.isfinite(x) or not np.isfinite(y):
        return [f"{key}: {x!r} vs {y!r}"]
    if abs(x - y) > rtol * max(abs(x), abs(y), 1e-300):
        return [f"{key}: {x!r} vs {y!r} (relative difference {abs(x - y) / max(abs(x), abs(y)):.2e} > {rtol:g})"]
    return []


def arrow_of(result):
    """A pandas/polars/duckdb/pyarrow result as a pyarrow Table."""
    import pyarrow as pa

    if isinstance(result, pa.Table):
        return result
    if hasattr(result, "to_arrow"):  # polars
        return result.to_arrow()
    return pa.Table.from_pandas(result, preserve_index=False)


# --- per-customer aggregates ------------------------------------------------------------

class ScanFloor:
    """pyarrow's dataset scanner streaming the three columns, touching nothing: the limit."""

    label = "scan floor (pyarrow)"

    def __init__(self, params):
        import pyarrow.dataset as ds

        self.ds = ds

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        rows = 0
        for batch in self.ds.dataset(path, format="parquet").to_batches(columns=COLUMNS, batch_size=BATCH_ROWS,
                                                                          use_threads=True):
            rows += batch.num_rows
        return rows

    def canonical(self, rows):
        return {"rows_read": rows}


class AggregationBound:
    """The least work an exact streaming aggregation must do: rfmx's scan, conversions and
    hashes, then one random 64-byte row per line (:mod:`benchmarks.bound`; not a result)."""

    label = "bound: scan + 1 random row/line"

    def __init__(self, params):
        from . import bound

        self.bound = bound
        self.customers = params.get("customers")

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        return self.bound.bound_run(path, self.customers, BATCH_ROWS)

    def canonical(self, rows):
        return {"rows_read": rows}


class RfmxAggregate:
    """``rfmx.aggregate(path)``: the streaming engine, all cores."""

    label = "rfmx"

    def __init__(self, params):
        import rfmx

        self.rfmx = rfmx
        rfmx.warmup()  # load every cached kernel now: compile/load time is reported apart

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        return self.rfmx.aggregate(path)

    def canonical(self, table):
        return table_checksum(rfmx_columns(table))


def rfmx_columns(table):
    """rfmx's finalized table under the suite's column names."""
    return table.select(["customer_id", "recency_days", "n_orders", "monetary_minor"]).rename_columns(
        ["customer_id", "recency_days", "n_orders", "money_cents"])


def pandas_per_customer(pd, path):
    df = pd.read_parquet(path, columns=COLUMNS)
    as_of = df["order_time"].max().floor("D") + pd.Timedelta(days=1)
    df["is_order"] = df["amount"] >= 0
    df["order_time"] = df["order_time"].where(df["is_order"])  # refunds do not move last_order
    df["money_cents"] = (df["amount"] * 100).round().astype("int64")
    per = df.groupby("customer_id", sort=False).agg(
        last_order=("order_time", "max"), n_orders=("is_order", "sum"), money_cents=("money_cents", "sum"))
    del df
    per["recency_days"] = (as_of - per["last_order"].dt.floor("D")).dt.days
    return per


class PandasAggregate:
    """pandas: ``read_parquet`` + ``groupby().agg()``."""

    label = "pandas"

    def __init__(self, params):
        self.pd = require("pandas")

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        return pandas_per_customer(self.pd, path)

    def canonical(self, per):
        return table_checksum(arrow_of(per.reset_index()))


def polars_per_customer(pl, path):
    return (
        pl.scan_parquet(parquet_glob(path))
        .select(COLUMNS)
        .group_by("customer_id")
        .agg(
            last_order=pl.col("order_time").filter(pl.col("amount") >= 0).max(),
            n_orders=(pl.col("amount") >= 0).sum(),
            money_cents=(pl.col("amount") * 100).round().cast(pl.Int64).sum(),
            last_line=pl.col("order_time").max(),
        )
        .with_columns(
            recency_days=(pl.col("last_line").max().dt.truncate("1d") + pl.duration(days=1)
                          - pl.col("last_order").dt.truncate("1d")).dt.total_days())
        .drop("last_line", "last_order")
    )


def collect_streaming(lazy):
    try:
        return lazy.collect(engine="streaming")
    except TypeError:  # polars < 1.23
        return lazy.collect(streaming=True)


class PolarsAggregate:
    """Polars: lazy ``scan_parquet`` + ``group_by`` on the streaming engine."""

    label = "polars"

    def __init__(self, params):
        self.pl = require("polars")

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        return collect_streaming(polars_per_customer(self.pl, path))

    def canonical(self, df):
        return table_checksum(df.to_arrow())


DUCKDB_PER_CUSTOMER = """
WITH per AS (
    SELECT customer_id,
           max(order_time) FILTER (WHERE amount >= 0) AS last_order,
           count(*) FILTER (WHERE amount >= 0) AS n_orders,
           CAST(sum(CAST(round(amount * 100) AS BIGINT)) AS BIGINT) AS money_cents,
           max(order_time) AS last_line
    FROM read_parquet({path})
    GROUP BY customer_id
),
horizon AS (SELECT date_trunc('day', max(last_line)) + INTERVAL 1 DAY AS as_of FROM per),
rfm AS (
    SELECT customer_id,
           date_diff('day', last_order, as_of) AS recency_days,
           n_orders, money_cents
    FROM per, horizon
)
"""

# pd.qcut(rank, 5)'s bin of rank k among n, in SQL integer arithmetic.
SQL_QBIN = "greatest(1, (5 * ({k} - 1) + n - 2) // (n - 1))"
DUCKDB_SCORES = DUCKDB_PER_CUSTOMER + """,
ranked AS (
    SELECT *, count(*) OVER () AS n,
           row_number() OVER (ORDER BY recency_days) AS r_rank,
           row_number() OVER (ORDER BY n_orders) AS f_rank,
           row_number() OVER (ORDER BY money_cents) AS m_rank
    FROM rfm
)
SELECT customer_id, recency_days, n_orders, money_cents,
       6 - {r} AS r_score, {f} AS f_score, {m} AS m_score
FROM ranked
""".replace("{r}", SQL_QBIN.format(k="r_rank")).replace("{f}", SQL_QBIN.format(k="f_rank")).replace(
    "{m}", SQL_QBIN.format(k="m_rank"))


def duckdb_arrow(con, sql):
    rel = con.sql(sql)
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        if hasattr(rel, name):
            return getattr(rel, name)()
    raise RuntimeError("cannot fetch an Arrow table from this duckdb")


class DuckDBAggregate:
    """DuckDB: SQL ``GROUP BY`` over ``read_parquet``, result fetched as Arrow."""

    label = "duckdb"
    sql = DUCKDB_PER_CUSTOMER + "SELECT * FROM rfm"

    def __init__(self, params):
        self.duckdb = require("duckdb")
        self.con = self.duckdb.connect()

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        return duckdb_arrow(self.con, self.sql.replace("{path}", _sql_string(parquet_glob(path))))

    def canonical(self, table):
        return table_checksum(table, scores="r_score" in table.column_names)


# --- aggregate + quintile scores ----------------------------------------------------------

class PandasScores(PandasAggregate):
    """pandas: the aggregate above, then the tutorial recipe ``qcut(x.rank(method="first"), 5)``."""

    def run(self, path):
        pd = self.pd
        per = pandas_per_customer(pd, path)
        labels = list(range(1, QUINTILES + 1))
        per["r_score"] = pd.qcut(per["recency_days"].rank(method="first"), QUINTILES,
                                 labels=labels[::-1]).astype("int64")
        per["f_score"] = pd.qcut(per["n_orders"].rank(method="first"), QUINTILES, labels=labels).astype("int64")
        per["m_score"] = pd.qcut(per["money_cents"].rank(method="first"), QUINTILES, labels=labels).astype("int64")
        return per

    def canonical(self, per):
        return table_checksum(arrow_of(per.reset_index()), scores=True)


class PolarsScores(PolarsAggregate):
    """Polars: the streaming aggregate, then ``rank("ordinal")`` cut like ``pd.qcut``."""

    def run(self, path):
        pl = self.pl

        def qbin(column, descending=False):
            k = pl.col(column).rank("ordinal", descending=descending).cast(pl.Int64)
            n = pl.len().cast(pl.Int64)
            return ((QUINTILES * (k - 1) + n - 2) // (n - 1)).clip(lower_bound=1)

        return collect_streaming(polars_per_customer(pl, path).with_columns(
            r_score=QUINTILES + 1 - qbin("recency_days"), f_score=qbin("n_orders"), m_score=qbin("money_cents")))

    def canonical(self, df):
        return table_checksum(df.to_arrow(), scores=True)


class DuckDBScores(DuckDBAggregate):
    """DuckDB: the SQL aggregate, then ``row_number()`` windows cut like ``pd.qcut``."""

    sql = DUCKDB_SCORES


# rfmx.score's rank-based option: equal-size bins, as pd.qcut(x.rank(method="first"), q);
# segments with the default map (the R x F grid).
RFMX_SCORE_OPTIONS = {"bins": QUINTILES, "ties": "first", "segments": "rfm-grid"}
_RFMX_SCORE_NAMES = {
    "r_score": ("r_score", "recency_score", "R", "r"),
    "f_score": ("f_score", "frequency_score", "F", "f"),
    "m_score": ("m_score", "monetary_score", "M", "m"),
}


class RfmxScores:
    """rfmx: ``rfmx.score(path, ties="first")``: aggregate, quintile scores, RFM code, value score,
    segments (R x F grid) and ABC classes in one streaming pass plus one finalize."""

    label = "rfmx"

    def __init__(self, params):
        import rfmx

        self.rfmx = rfmx
        self.score = getattr(rfmx, "score", None)
        if self.score is None:
            raise Skip("rfmx.score does not exist yet (issue 3: scores and segments)")
        rfmx.warmup()  # load every cached kernel now: compile/load time is reported apart

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        return self.score(path, **RFMX_SCORE_OPTIONS)

    def canonical(self, table):
        names = table.column_names
        picked = {}
        for ours, candidates in _RFMX_SCORE_NAMES.items():
            found = next((c for c in candidates if c in names), None)
            if found is None:
                raise RuntimeError(f"rfmx.score's result has no {ours} column (columns: {names})")
            picked[ours] = table.column(found)
        base = table if "monetary_minor" in names else None
        if base is None:
            raise RuntimeError(f"rfmx.score's result lacks the aggregate columns (columns: {names})")
        out = rfmx_columns(base)
        for name, col in picked.items():
            out = out.append_column(name, col)
        return table_checksum(out, scores=True)

    def extra(self, table):
        for name in ("segment", "segment_name"):
            if name in table.column_names:
                return {"segments": len(table.column(name).unique())}
        return {}


# --- k-means --------------------------------------------------------------------------------

class SklearnKMeans:
    """scikit-learn ``KMeans(init=centres, n_init=1, algorithm="lloyd")``."""

    label = "scikit-learn"

    def __init__(self, params):
        require("sklearn")
        from sklearn.cluster import KMeans

        self.KMeans = KMeans
        self.max_iter = int(params.get("kmeans_iter", 20))

    def load(self, inputs):
        with np.load(inputs["features"]) as f:
            return np.ascontiguousarray(f["X"]), np.ascontiguousarray(f["init"])

    def run(self, data):
        X, init = data
        return self.KMeans(n_clusters=len(init), init=init, n_init=1, max_iter=self.max_iter, tol=0.0,
                           algorithm="lloyd").fit(X)

    def warm_data(self, data):
        X, init = data
        return X[: max(len(init), 2000)], init

    def canonical(self, model):
        return {"inertia": float(model.inertia_), "n_iter": int(model.n_iter_)}

    def extra(self, model):
        return self.canonical(model)


class RfmxKMeans(SklearnKMeans):
    """``rfmx.cluster.KMeans`` with the same parameters."""

    label = "rfmx"

    def __init__(self, params):
        self.KMeans = require_rfmx_module("cluster", "KMeans", "the clustering issue")
        self.max_iter = int(params.get("kmeans_iter", 20))

    def run(self, data):
        X, init = data
        model = call_with_supported(self.KMeans, n_clusters=len(init), init=init, n_init=1,
                                    max_iter=self.max_iter, tol=0.0, algorithm="lloyd")
        return model.fit(X)


# --- BG/NBD -----------------------------------------------------------------------------------

def bgnbd_loglik(params: dict, x, t_x, T) -> float:
    """Total BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6) of ``params`` (r, alpha, a, b)."""
    from scipy.special import gammaln

    r, alpha, a, b = (float(params[k]) for k in ("r", "alpha", "a", "b"))
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf)
    return float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))


def _params_of(model) -> dict:
    out = {}
    table = getattr(model, "params_", None)
    for k in ("r", "alpha", "a", "b"):
        if table is not None:
            try:
                out[k] = float(table[k])
                continue
            except (KeyError, TypeError, IndexError):
                pass
        for attr in (f"{k}_", k):
            if hasattr(model, attr):
                out[k] = float(getattr(model, attr))
                break
        else:
            raise RuntimeError(f"cannot find BG/NBD parameter {k!r} on {type(model).__name__}")
    return out


class LifetimesBGNBD:
    """lifetimes ``BetaGeoFitter(penalizer_coef=0).fit(frequency, recency, T)``."""

    label = "lifetimes"

    def __init__(self, params):
        try:
            from lifetimes import BetaGeoFitter
        except ImportError as exc:
            raise Skip(f"lifetimes is not installed ({exc}); pip install lifetimes") from None
        except Exception as exc:  # noqa: BLE001 - an old lifetimes breaking on numpy 2 / pandas 3
            raise Skip(f"lifetimes does not import with this numpy/pandas: {type(exc).__name__}: {exc}") from None
        self.Fitter = BetaGeoFitter

    def load(self, inputs):
        with np.load(inputs["clv"]) as f:
            self.data = (f["frequency"].astype(np.float64), f["recency"].astype(np.float64), f["T"].astype(np.float64))
        return self.data

    def warm_data(self, data):
        return tuple(a[:5000] for a in data)

    def run(self, data):
        frequency, recency, T = data
        return self.Fitter(penalizer_coef=0.0).fit(frequency, recency, T)

    def canonical(self, model):
        params = _params_of(model)
        return {"loglik": bgnbd_loglik(params, *self.data), "params": params}

    def extra(self, model):
        return self.canonical(model)


class RfmxBGNBD(LifetimesBGNBD):
    """``rfmx.clv.BGNBD(penalizer=0).fit(frequency=..., recency=..., T=...)``."""

    label = "rfmx"

    def __init__(self, params):
        self.Fitter = require_rfmx_module("clv", "BGNBD", "the lifetime-value issue")

    def run(self, data):
        frequency, recency, T = data
        return self.Fitter(penalizer=0.0).fit(frequency=frequency, recency=recency, T=T)


# --- incremental update ---------------------------------------------------------------------

class RfmxIncrement:
    """Fold the newest 1 % of lines into the state saved for the other 99 %, finalize, save."""

    label = "rfmx increment"

    def __init__(self, params):
        import rfmx

        self.rfmx = rfmx
        self.tmp = tempfile.mkdtemp(prefix="rfmx-bench-")

    def load(self, inputs):
        return inputs

    def run(self, inputs):
        state = self.rfmx.RFMState.load(inputs["state"])
        self.rfmx.build_state(inputs["delta"], state=state)
        table = state.finalize()
        state.save(os.path.join(self.tmp, "state.arrow"))
        return table

    def canonical(self, table):
        return table_checksum(rfmx_columns(table))

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


class RfmxRescan(RfmxAggregate):
    """Aggregate the whole history again (what the increment saves)."""

    label = "rfmx full rescan"


# --- customers over time: the aggregate at every month boundary ------------------------------
#
# as_of = the first instant (UTC) of every month from the second month with lines to the
# month after the latest line (TimelineState(period="month").boundaries()); each snapshot
# holds the customers with a line before its as_of, with the aggregate's columns.
#
# Every contender hands each snapshot, as it is made, to a SnapshotSink and keeps nothing,
# so one snapshot is in memory at a time wherever the approach allows it.  In measured runs
# the sink only counts rows; in the checksum run it also fingerprints each snapshot with
# table_checksum, and the child takes that time (wall and CPU) out of the run's numbers.

def _as_of_us(as_of) -> int:
    """A boundary (aware or naive datetime, pandas Timestamp, numpy datetime64) in UTC microseconds."""
    import datetime as dt

    if isinstance(as_of, np.datetime64):
        return int(as_of.astype("datetime64[us]").astype(np.int64))
    if hasattr(as_of, "to_pydatetime"):  # pandas Timestamp
        as_of = as_of.to_pydatetime()
    if as_of.tzinfo is not None:
        as_of = as_of.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return (as_of - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)


def _iso(us: int) -> str:
    import datetime as dt

    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)).isoformat()


class SnapshotSink:
    """Where a timeline contender puts each snapshot as it is made.

    ``add(as_of, snapshot, to_arrow)``: one snapshot in the contender's native form
    (``to_arrow`` turns it into a pyarrow Table of customer_id, recency_days, n_orders,
    money_cents); ``as_of=None``: a batch of rows of several snapshots with an ``as_of``
    column (DuckDB's one result, streamed), split by as_of in the checksum run.
    """

    def __init__(self, checksum: bool = False):
        self.checksum = checksum
        self.snapshots = 0
        self.rows = 0
        self.parts: dict[int, dict] = {}
        self.pending: list = []
        self.cost_wall = 0.0  # time spent on the checksum, taken out of the measurement
        self.cost_cpu = 0.0

    def add(self, as_of, snapshot, to_arrow=None) -> None:
        if as_of is not None:
            self.snapshots += 1
        self.rows += len(snapshot)
        if not self.checksum:
            return
        w0, c0 = time.perf_counter(), time.process_time()
        table = to_arrow(snapshot) if to_arrow else snapshot
        if as_of is None:
            self.pending.append(table)
        else:
            self._fingerprint(_as_of_us(as_of), table)
        self.cost_wall += time.perf_counter() - w0
        self.cost_cpu += time.process_time() - c0

    def _fingerprint(self, as_of_us: int, table) -> None:
        if as_of_us in self.parts:
            raise RuntimeError(f"two snapshots as of {_iso(as_of_us)}")
        self.parts[as_of_us] = table_checksum(table)

    def finish(self) -> None:
        """Split the rows given without an as_of into snapshots (checksum run only)."""
        if not self.pending:
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        w0, c0 = time.perf_counter(), time.process_time()
        table = pa.concat_tables(self.pending)
        self.pending = []
        as_of = table.column("as_of").cast(pa.timestamp("us")).cast(pa.int64())
        for value in sorted(pc.unique(as_of).to_pylist()):
            self._fingerprint(value, table.filter(pc.equal(as_of, value)))
        self.snapshots = len(self.parts)
        self.cost_wall += time.perf_counter() - w0
        self.cost_cpu += time.process_time() - c0

    def checksum_dict(self) -> dict:
        """Order-independent: each snapshot's table_checksum (rows sorted by customer id,
        sha256 of ids and values), the digests combined in as_of order, sums over all rows."""
        if not self.checksum:
            raise RuntimeError("the sink of a run without checksum has none")
        keys = sorted(self.parts)
        digest = hashlib.sha256()
        for k in keys:
            digest.update(f"{k}:{self.parts[k]['digest']};".encode())
        out = {"snapshots": len(keys), "rows": sum(p["customers"] for p in self.parts.values())}
        if keys:
            out["first_as_of"], out["last_as_of"] = _iso(keys[0]), _iso(keys[-1])
            out["customers"] = self.parts[keys[-1]]["customers"]  # the last snapshot has every customer
        for name in ("recency_days", "n_orders", "money_cents"):
            for what in ("sum", "nulls"):
                out[f"{name}_{what}"] = sum(p[f"{name}_{what}"] for p in self.parts.values())
        out["digest"] = digest.hexdigest()[:16]
        return out


class _Timeline:
    """The shared frame of the timeline contenders: ``snapshots(path, sink)`` is the work."""

    def __init__(self, params):
        self.want_checksum = False
        self.sink = None
        self.phases = {}

    def set_checksum(self, on: bool) -> None:
        """Called by the child before the measured run: fingerprint the snapshots in this run."""
        self.want_checksum = bool(on)

    def load(self, inputs):
        return inputs["orders"]

    def run(self, path):
        self.sink = SnapshotSink(self.want_checksum)
        self.phases = {}
        self._lap = (time.perf_counter(), 0.0)
        self.snapshots(path, self.sink)
        self.sink.finish()
        return self.sink

    def lap(self, name: str) -> None:
        """Record the seconds since the last lap as phase ``name`` (checksum time taken out)."""
        now, cost = time.perf_counter(), self.sink.cost_wall
        self.phases[name] = (now - self._lap[0]) - (cost - self._lap[1])
        self._lap = (now, cost)

    def checksum_cost(self) -> tuple[float, float]:
        """(wall, CPU) seconds the last run spent on its checksum."""
        return (self.sink.cost_wall, self.sink.cost_cpu) if self.sink else (0.0, 0.0)

    def breakdown(self) -> dict:
        return dict(self.phases)

    def canonical(self, sink):
        return sink.checksum_dict()

    def extra(self, sink):
        return {"snapshots": sink.snapshots, "snapshot_rows": sink.rows}


class RfmxTimeline(_Timeline):
    """rfmx: one pass into ``TimelineState(period="month")``, then ``state.snapshots()``."""

    label = "rfmx"

    def __init__(self, params):
        super().__init__(params)
        import rfmx

        self.rfmx = rfmx
        self.TimelineState = getattr(rfmx, "TimelineState", None)
        if self.TimelineState is None:
            raise Skip("rfmx.TimelineState does not exist yet (customers over time)")
        rfmx.warmup()  # load every cached kernel now: compile/load time is reported apart

    def snapshots(self, path, sink):
        state = self.rfmx.build_state(path, state=self.TimelineState(period="month"))
        self.lap("state")
        for as_of, table in state.snapshots():
            sink.add(as_of, table, rfmx_columns)
            del table
        self.lap("snapshots")


def _pandas_snapshot_arrow(per):
    return arrow_of(per.reset_index())


class PandasTimeline(_Timeline):
    """pandas: ``read_parquet`` once, then per month start ``df[df.order_time < as_of].groupby().agg()``."""

    label = "pandas"

    def __init__(self, params):
        super().__init__(params)
        self.pd = require("pandas")

    def snapshots(self, path, sink):
        pd = self.pd
        df = pd.read_parquet(path, columns=COLUMNS)
        df["is_order"] = df["amount"] >= 0
        df["last_order"] = df["order_time"].where(df["is_order"])  # refunds do not move last_order
        df["money_cents"] = (df["amount"] * 100).round().astype("int64")
        months = pd.period_range(df["order_time"].min().to_period("M") + 1,
                                 df["order_time"].max().to_period("M") + 1, freq="M")
        self.lap("read")
        for as_of in months.to_timestamp():
            per = df[df["order_time"] < as_of].groupby("customer_id", sort=False).agg(
                last_order=("last_order", "max"), n_orders=("is_order", "sum"), money_cents=("money_cents", "sum"))
            per["recency_days"] = (as_of - per["last_order"].dt.floor("D")).dt.days
            sink.add(as_of, per, _pandas_snapshot_arrow)
            del per
        self.lap("snapshots")


class PolarsTimeline(_Timeline):
    """Polars: ``read_parquet`` once, then per month start a lazy ``filter(order_time < as_of)``
    + ``group_by`` collected on the streaming engine."""

    label = "polars"

    def __init__(self, params):
        super().__init__(params)
        self.pl = require("polars")

    def snapshots(self, path, sink):
        pl = self.pl
        df = pl.read_parquet(parquet_glob(path), columns=COLUMNS)
        month = pl.col("order_time").dt.truncate("1mo").dt.offset_by("1mo")
        lo, hi = df.select(month.min().alias("lo"), month.max().alias("hi")).row(0)
        self.lap("read")
        lf = df.lazy()
        for as_of in pl.datetime_range(lo, hi, "1mo", eager=True):
            per = collect_streaming(
                lf.filter(pl.col("order_time") < as_of)
                .group_by("customer_id")
                .agg(last_order=pl.col("order_time").filter(pl.col("amount") >= 0).max(),
                     n_orders=(pl.col("amount") >= 0).sum(),
                     money_cents=(pl.col("amount") * 100).round().cast(pl.Int64).sum())
                .with_columns(recency_days=(pl.lit(as_of) - pl.col("last_order").dt.truncate("1d")).dt.total_days())
                .drop("last_order"))
            sink.add(as_of, per, lambda d: d.to_arrow())
            del per
        self.lap("snapshots")


DUCKDB_TIMELINE = """
WITH per_month AS (
    SELECT customer_id,
           date_trunc('month', order_time) AS month,
           max(order_time) FILTER (WHERE amount >= 0) AS last_order,
           count(*) FILTER (WHERE amount >= 0) AS n_orders,
           CAST(sum(CAST(round(amount * 100) AS BIGINT)) AS BIGINT) AS money_cents
    FROM read_parquet({path})
    GROUP BY customer_id, month
),
boundaries AS (
    SELECT unnest(generate_series(min(month) + INTERVAL 1 MONTH, max(month) + INTERVAL 1 MONTH,
                                  INTERVAL 1 MONTH)) AS as_of
    FROM per_month
)
SELECT as_of, customer_id,
       date_diff('day', max(last_order), as_of) AS recency_days,
       CAST(sum(n_orders) AS BIGINT) AS n_orders,
       CAST(sum(money_cents) AS BIGINT) AS money_cents
FROM per_month JOIN boundaries ON per_month.month < boundaries.as_of
GROUP BY as_of, customer_id
"""


def _batch_table(batch):
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def duckdb_reader(con, sql, batch_rows=BATCH_ROWS):
    """The result of ``sql`` as a pyarrow RecordBatchReader (streamed, not collected)."""
    rel = con.sql(sql)
    for name in ("to_arrow_reader", "fetch_arrow_reader", "fetch_record_batch", "record_batch"):
        if hasattr(rel, name):
            return getattr(rel, name)(batch_rows)
    raise RuntimeError("cannot stream an Arrow result from this duckdb")


class DuckDBTimeline(_Timeline):
    """DuckDB: one query for all snapshots: per-customer-month aggregates joined with the month
    starts (``generate_series``), ``GROUP BY as_of, customer_id``; the result streamed as Arrow."""

    label = "duckdb"

    def __init__(self, params):
        super().__init__(params)
        self.duckdb = require("duckdb")
        self.con = self.duckdb.connect()

    def snapshots(self, path, sink):
        reader = duckdb_reader(self.con, DUCKDB_TIMELINE.replace("{path}", _sql_string(parquet_glob(path))))
        for batch in reader:
            sink.add(None, batch, _batch_table)
            del batch
        self.lap("query")

    def extra(self, sink):
        # One result for all snapshots: they are told apart only in the checksum run.
        return {"snapshots": sink.snapshots if sink.checksum else None, "snapshot_rows": sink.rows}


# --- the registry ---------------------------------------------------------------------------

WORKLOADS = {
    "aggregate": {"scan": ScanFloor, "rfmx": RfmxAggregate, "bound": AggregationBound, "pandas": PandasAggregate,
                  "polars": PolarsAggregate, "duckdb": DuckDBAggregate},
    "scores": {"rfmx": RfmxScores, "pandas": PandasScores, "polars": PolarsScores, "duckdb": DuckDBScores},
    "kmeans": {"rfmx": RfmxKMeans, "sklearn": SklearnKMeans},
    "bgnbd": {"rfmx": RfmxBGNBD, "lifetimes": LifetimesBGNBD},
    "incremental": {"rfmx": RfmxIncrement, "rescan": RfmxRescan},
    "timeline": {"rfmx": RfmxTimeline, "pandas": PandasTimeline, "polars": PolarsTimeline, "duckdb": DuckDBTimeline},
}
from .dask_aggregate import DaskGroupby, RfmxDaskAggregate  # noqa: E402

WORKLOADS["dask"] = {"rfmx": RfmxAggregate, "rfmx-dask": RfmxDaskAggregate, "dask-groupby": DaskGroupby}

# Contenders that compute no result: checked only for reading every row.
ROWS_ONLY = ("scan", "bound")

# The top-level module each contender needs, so the runner can skip a missing peer without
# starting a process; rfmx's own parts are checked inside the child.
PEER_MODULES = {"pandas": "pandas", "polars": "polars", "duckdb": "duckdb", "sklearn": "sklearn",
                "lifetimes": "lifetimes", "rfmx-dask": "distributed", "dask-groupby": "distributed"}

# Whose answer the others are checked against (the first of these that ran); aggregate and
# scores are decided by majority first.
REFERENCE = {
    "aggregate": ("pandas", "duckdb", "polars", "rfmx"),
    "scores": ("pandas", "duckdb", "polars", "rfmx"),
    "kmeans": ("sklearn", "rfmx"),
    "bgnbd": ("lifetimes", "rfmx"),
    "incremental": ("rescan", "rfmx"),
    "timeline": ("pandas", "duckdb", "polars", "rfmx"),
    "dask": ("rfmx", "rfmx-dask", "dask-groupby"),
}
KMEANS_RTOL = 1e-6
BGNBD_RTOL = 1e-5


def differences(workload: str, reference: dict, other: dict) -> list[str]:
    """Why ``other``'s checksum does not match ``reference``'s (empty: they agree)."""
    if workload == "kmeans":
        return close_differences(reference, other, "inertia", KMEANS_RTOL)
    if workload == "bgnbd":
        # Optimizers stop at slightly different points; a fit at least as likely as the
        # reference's (within BGNBD_RTOL) agrees.
        ref, got = reference.get("loglik"), other.get("loglik")
        if ref is not None and got is not None and np.isfinite(got) and got >= ref - BGNBD_RTOL * abs(ref):
            return []
        return close_differences(reference, other, "loglik", BGNBD_RTOL)
    return checksum_differences(reference, other)
