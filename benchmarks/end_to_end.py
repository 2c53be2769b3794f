"""End to end, as a user runs it: a fresh process reads the order file and writes the
per-customer result to Parquet.  rfmx's commands against DuckDB (``COPY (…) TO``) and Polars
(``sink_parquet``), same input, same definitions, every output checked.

    python -m benchmarks.end_to_end --orders data/orders.parquet --repeats 3
    python -m benchmarks.end_to_end --orders a.parquet --orders b.parquet --workloads aggregate \\
        --out benchmarks/results/end-to-end-1e8.md
    python -m benchmarks.end_to_end --tiny --repeats 7        # the fixed cost of a command
    python -m benchmarks.end_to_end --tiny --baseline /old/venv/bin/rfmx   # against an earlier build

Contenders, each one process per run (after one unmeasured round, ``--warmup``), the clock around the whole process (start-up,
imports, kernel loading, reading, computing, writing and closing the file):

* **rfmx-aggregate**: ``rfmx aggregate ORDERS -o out.parquet`` — the 12 per-customer columns
  (first/last order, recency and tenure in whole days, orders, refunds, exact money in
  minor units and as a decimal total, average order value, gross and refund totals);
* **duckdb-aggregate**: ``COPY (… GROUP BY customer_id) TO 'out.parquet'`` computing the
  same 12 columns with the same definitions (refund lines — negative amounts — are not
  orders and move no order date; money summed in integer cents; whole calendar days to the
  day after the last line);
* **polars-aggregate**: the same as a lazy query on the streaming engine, ``sink_parquet``;
* **rfmx-score** / **duckdb-score** / **polars-score**: the aggregate plus R, F and M
  quintile scores cut as ``pd.qcut(x.rank(method="first"), 5)`` (``rfmx score --ties
  first``, which also writes the RFM code, value score, tier, segment and ABC class; the
  peers write the aggregate and the three scores).

Each engine writes Parquet with its own default compression (all Snappy or LZ4-class
except Polars' zstd); the output size is reported beside the time.  Every contender's first
output of each input is read back and reduced to the suite's checksum
(:func:`benchmarks.contenders.table_checksum`: ids, recency, orders, cents, and for scores
the customers per score and sum of value × score); a contender that disagrees with rfmx
is reported as wrong.  Runs alternate between contenders (the order rotates each repeat),
medians are reported with the ratio to the faster of DuckDB and Polars.  Peak memory is
the process's own peak RSS, measured by GNU ``time`` (``/usr/bin/time``), which starts the
contender from its own small process.

``--tiny`` times the same commands on a 10-line file: the fixed cost of a command.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .contenders import SQL_QBIN, checksum_differences, table_checksum
from .data import rfmx_command

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = ("aggregate", "score")

_DUCKDB_PER_CUSTOMER = """
WITH per AS (
    SELECT customer_id,
           min(order_time) FILTER (WHERE amount >= 0) AS first_order,
           max(order_time) FILTER (WHERE amount >= 0) AS last_order,
           count(*) FILTER (WHERE amount >= 0) AS n_orders,
           count(*) FILTER (WHERE amount < 0) AS n_refunds,
           sum(CAST(round(amount * 100) AS BIGINT)) AS monetary_minor,
           coalesce(sum(CAST(round(amount * 100) AS BIGINT)) FILTER (WHERE amount >= 0), 0) AS gross_minor,
           max(order_time) AS last_line
    FROM read_parquet({path})
    GROUP BY customer_id
),
horizon AS (SELECT date_trunc('day', max(last_line)) + INTERVAL 1 DAY AS as_of FROM per),
rfm AS (
    SELECT customer_id, first_order, last_order,
           date_diff('day', last_order, as_of) AS recency_days,
           date_diff('day', first_order, as_of) AS tenure_days,
           n_orders, n_refunds,
           monetary_minor / 100.0 AS monetary_total, monetary_minor,
           monetary_minor / 100.0 / nullif(n_orders, 0) AS avg_order_value,
           gross_minor / 100.0 AS gross_total,
           (monetary_minor - gross_minor) / 100.0 AS refunds_total
    FROM per, horizon
)"""

_DUCKDB_SQL = {
    "aggregate": _DUCKDB_PER_CUSTOMER + "\nSELECT * FROM rfm",
    "score": _DUCKDB_PER_CUSTOMER + """,
ranked AS (
    SELECT *, count(*) OVER () AS n,
           row_number() OVER (ORDER BY recency_days) AS r_rank,
           row_number() OVER (ORDER BY n_orders) AS f_rank,
           row_number() OVER (ORDER BY monetary_minor) AS m_rank
    FROM rfm
)
SELECT * EXCLUDE (n, r_rank, f_rank, m_rank),
       6 - {r} AS r_score, {f} AS f_score, {m} AS m_score
FROM ranked""".replace("{r}", SQL_QBIN.format(k="r_rank")).replace("{f}", SQL_QBIN.format(k="f_rank")).replace(
        "{m}", SQL_QBIN.format(k="m_rank")),
}

_DUCKDB_CHILD = """
import sys, duckdb
con = duckdb.connect()
con.execute(sys.argv[1])
"""

_POLARS_CHILD = """
import sys
import polars as pl
workload, src, out = sys.argv[1:4]
orders = pl.scan_parquet(src).select("customer_id", "order_time", "amount")
is_order = pl.col("amount") >= 0
cents = (pl.col("amount") * 100).round().cast(pl.Int64)
per = orders.group_by("customer_id").agg(
    first_order=pl.col("order_time").filter(is_order).min(),
    last_order=pl.col("order_time").filter(is_order).max(),
    n_orders=is_order.sum().cast(pl.Int64),
    n_refunds=(~is_order).sum().cast(pl.Int64),
    monetary_minor=cents.sum(),
    gross_minor=cents.filter(is_order).sum(),
    last_line=pl.col("order_time").max(),
)
as_of = pl.col("last_line").max().dt.truncate("1d") + pl.duration(days=1)
rfm = per.with_columns(
    recency_days=(as_of - pl.col("last_order").dt.truncate("1d")).dt.total_days(),
    tenure_days=(as_of - pl.col("first_order").dt.truncate("1d")).dt.total_days(),
    monetary_total=pl.col("monetary_minor") / 100,
    avg_order_value=pl.when(pl.col("n_orders") > 0).then(pl.col("monetary_minor") / 100 / pl.col("n_orders")),
    gross_total=pl.col("gross_minor") / 100,
    refunds_total=(pl.col("monetary_minor") - pl.col("gross_minor")) / 100,
).select("customer_id", "first_order", "last_order", "recency_days", "tenure_days", "n_orders", "n_refunds",
         "monetary_total", "monetary_minor", "avg_order_value", "gross_total", "refunds_total")
if workload == "score":
    def qbin(column, descending=False):
        k = pl.col(column).rank("ordinal", descending=descending).cast(pl.Int64)
        n = pl.len().cast(pl.Int64)
        return ((5 * (k - 1) + n - 2) // (n - 1)).clip(lower_bound=1)
    rfm = rfm.with_columns(r_score=6 - qbin("recency_days"), f_score=qbin("n_orders"),
                           m_score=qbin("monetary_minor"))
try:
    rfm.sink_parquet(out, engine="streaming")
except TypeError:  # polars < 1.23
    rfm.sink_parquet(out)
"""


def _sql_string(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


BASELINE: list[str] = []  # --baseline: another rfmx executable (e.g. an earlier commit's)


def command(contender: str, src: str, out: str) -> list[str]:
    """The argv of one run of ``contender`` (``engine-workload``) reading ``src``, writing ``out``."""
    engine, workload = contender.split("-", 1)
    if engine in ("rfmx", "baseline"):
        extra = ["--ties", "first", "--segments", "rfm-grid"] if workload == "score" else []
        exe = BASELINE if engine == "baseline" else rfmx_command()
        return exe + [workload, src, "-o", out, "--no-progress"] + extra
    if engine == "duckdb":
        sql = f"COPY ({_DUCKDB_SQL[workload].replace('{path}', _sql_string(src))}) TO {_sql_string(out)} " \
              "(FORMAT parquet)"
        return [sys.executable, "-c", _DUCKDB_CHILD, sql]
    if engine == "polars":
        return [sys.executable, "-c", _POLARS_CHILD, workload, src, out]
    raise ValueError(f"unknown contender {contender!r}")


# GNU time forks the contender from its own small process: ru_maxrss of a child started
# straight from this runner would include the runner's resident memory (Linux carries the
# forking process's peak over exec).
TIME = shutil.which("time", path="/usr/bin:/bin")


def run_once(argv: list[str]) -> dict:
    """Run one process; wall seconds, CPU seconds and peak RSS (through GNU time when present)."""
    if TIME:
        argv = [TIME, "-f", "rfmx-bench-maxrss-kb=%M"] + argv
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} … exited {proc.returncode}: {err.strip()[-2000:]}")
    peak = ru.ru_maxrss * 1024
    for line in err.splitlines():
        if line.startswith("rfmx-bench-maxrss-kb="):
            peak = int(line.split("=", 1)[1]) * 1024
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_bytes": peak}


def checksum_of(path: str, workload: str) -> dict:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = {"monetary_minor": "money_cents", "recency_score": "r_score", "frequency_score": "f_score",
             "monetary_score": "m_score"}
    table = table.rename_columns([names.get(n, n) for n in table.column_names])
    return table_checksum(table, scores=workload == "score")


def tiny_orders(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    us = 1_700_000_000_000_000
    pq.write_table(pa.table({
        "customer_id": pa.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 4], pa.int64()),
        "order_id": pa.array(range(10), pa.int64()),
        "order_time": pa.array([us + i * 3_600_000_000 for i in range(10)], pa.timestamp("us")),
        "amount": pa.array([12.5, 3.0, 8.25, 4.0, -1.0, 9.99, 15.0, 2.5, 7.0, 1.0]),
    }), str(path))


def measure(inputs: list[str], contenders: list[str], repeats: int, work: Path, log, check: bool = True,
            warmup: int = 1) -> list[dict]:
    """Every contender on every input, ``repeats`` rotated rounds after ``warmup`` unmeasured
    ones; one row per (input, contender)."""
    rows = []
    for src in inputs:
        for _ in range(warmup):  # Numba's cache filled, the input in the page cache
            for c in contenders:
                out = work / f"{c}.parquet"
                run_once(command(c, src, str(out)))
                out.unlink()
        runs = {c: [] for c in contenders}
        sums, sizes = {}, {}
        for r in range(repeats):
            order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
            for c in order:
                out = work / f"{c}.parquet"
                if out.exists():
                    out.unlink()
                got = run_once(command(c, src, str(out)))
                runs[c].append(got)
                log(f"{Path(src).name} {c} round {r + 1}: {got['wall_s']:.2f} s, "
                    f"{got['peak_rss_bytes'] / 2**20:,.0f} MB")
                if c not in sums:
                    sizes[c] = out.stat().st_size
                    if check:
                        sums[c] = checksum_of(str(out), c.split("-", 1)[1])
                out.unlink()
        for c in contenders:
            wall = [g["wall_s"] for g in runs[c]]
            row = {"input": src, "contender": c, "wall_s": statistics.median(wall), "wall_min": min(wall),
                   "wall_max": max(wall), "cpu_s": statistics.median(g["cpu_s"] for g in runs[c]),
                   "peak_rss_bytes": max(g["peak_rss_bytes"] for g in runs[c]), "out_bytes": sizes[c],
                   "runs": len(wall), "status": "ok"}
            reference = sums.get(f"rfmx-{c.split('-', 1)[1]}")
            if check and reference is not None and c in sums:
                diff = checksum_differences(reference, sums[c])
                if diff:
                    row["status"] = "differs from rfmx: " + "; ".join(diff[:3])
            rows.append(row)
    return rows


def markdown(rows: list[dict], command_line: str) -> str:
    out = [f"`{command_line}`", "",
           "| input | contender | wall s (median) | min–max | CPU s | peak RSS MB | output MB | × fastest peer | check |",
           "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for row in rows:
        workload = row["contender"].split("-", 1)[1]
        peers = [r["wall_s"] for r in rows if r["input"] == row["input"] and r["contender"].split("-")[0] in
                 ("duckdb", "polars") and r["contender"].endswith("-" + workload)]
        ratio = f"{row['wall_s'] / min(peers):.2f}×" if peers else "—"
        out.append(f"| {Path(row['input']).name} | {row['contender']} | {row['wall_s']:.2f} | "
                   f"{row['wall_min']:.2f}–{row['wall_max']:.2f} | {row['cpu_s']:.1f} | "
                   f"{row['peak_rss_bytes'] / 2**20:,.0f} | {row['out_bytes'] / 2**20:,.1f} | {ratio} | "
                   f"{row['status']} |")
    out += ["", "× fastest peer: the contender's median wall time over the faster of DuckDB's and Polars' medians "
                "for the same workload and input (below 1 is faster than both)."]
    base = {(r["input"], r["contender"].split("-", 1)[1]): r["wall_s"] for r in rows
            if r["contender"].startswith("baseline-")}
    for row in rows:
        b = base.get((row["input"], row["contender"].split("-", 1)[1]))
        if b and row["contender"].startswith("rfmx-"):
            out.append(f"- {Path(row['input']).name}, {row['contender']}: {row['wall_s']:.2f} s against the baseline's "
                       f"{b:.2f} s ({row['wall_s'] / b:.2f}×)")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", action="append", default=[], metavar="PATH",
                   help="an order history (Parquet: customer_id, order_time, amount); repeatable")
    p.add_argument("--tiny", action="store_true", help="time the commands on a 10-line file (the fixed cost)")
    p.add_argument("--workloads", default="aggregate,score", help="aggregate, score or both")
    p.add_argument("--engines", default="rfmx,duckdb,polars", help="which of rfmx, duckdb, polars")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--baseline", default=None, metavar="EXE",
                   help="also run this rfmx executable (e.g. an earlier commit's, installed in another environment) "
                        "as contender 'baseline'")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured rounds before the measured ones, per input")
    p.add_argument("--no-check", action="store_true", help="skip reading the outputs back for the checksums")
    p.add_argument("--work", type=Path, default=None, help="folder for the outputs (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None,
                   help="also write the Markdown table here (and the rows as JSON beside it, .json)")
    a = p.parse_args(argv)
    workloads = [w for w in a.workloads.split(",") if w]
    engines = [e for e in a.engines.split(",") if e]
    if a.baseline:
        BASELINE[:] = [a.baseline]
        engines.insert(1, "baseline")
    contenders = [f"{e}-{w}" for w in workloads for e in engines]
    work = Path(a.work or tempfile.mkdtemp(prefix="rfmx-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = [os.path.abspath(o) for o in a.orders]
    if a.tiny:
        tiny = work / "tiny-orders.parquet"
        tiny_orders(tiny)
        inputs.append(str(tiny))
    if not inputs:
        p.error("give --orders PATH or --tiny")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        rows = measure(inputs, contenders, a.repeats, work, log, check=not a.no_check, warmup=a.warmup)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = markdown(rows, "python -m benchmarks.end_to_end " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if a.out:
        import json

        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(json.dumps({"command": sys.argv[1:], "rows": rows}, indent=1) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
