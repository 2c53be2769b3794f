"""Reading orders from PostgreSQL: rfmx (ADBC, streamed) against DuckDB's postgres scanner and
Polars' ``read_database_uri`` (connectorx and ADBC engines), on the same table, in one run.

    python benchmarks/database_read.py --rows 1e5,1e6 --repeats 3
    python benchmarks/database_read.py --uri postgresql://me@db/bench --rows 1e8 --repeats 3
    python benchmarks/database_read.py --rows 1e6 --duckdb-python /other/venv/bin/python

Without ``--uri`` a throwaway server is started as the tests start one (``tests/pgserver.py``:
``initdb`` + ``pg_ctl`` in a temporary folder, stopped at the end).  For each size the script
loads a generated history (``rfmx.generate_orders``, seed 0: int64 customer ids,
``timestamp`` times, ``numeric(12,2)`` amounts, or ``double precision`` with
``--amount-type double``) into table ``orders_N`` (kept when it is already there with N
rows), then times every contender in a fresh process per run, the contenders' order rotating
between repeats so that the shared machine's drifts fall on all of them:

* **rfmx**: ``rfmx.aggregate(rfmx.DatabaseSource(uri, table=...))`` — the full per-customer
  aggregate (first/last order, counts, exact money, ...), rows streamed through ADBC (binary
  COPY) batch by batch;
* **DuckDB**: ``ATTACH`` through the ``postgres`` extension, then ``GROUP BY customer_id``
  (sum, count, max) in DuckDB; skipped with the reason when the extension cannot be loaded
  offline (it is not bundled with DuckDB and its PyPI packages exist only for some DuckDB
  versions: ``--duckdb-python`` runs this contender under another interpreter that has a
  matching ``duckdb`` and ``duckdb-extension-postgres-scanner``);
* **Polars** (``connectorx`` / ``adbc`` engine): ``pl.read_database_uri`` of the three
  columns (the whole result in memory: that is how it reads), then the same ``group_by``.

The peers compute less than rfmx (sum of money, count, latest order time per customer;
the latest order skips refund lines, as rfmx's ``last_order`` does).

Each child imports its library and warms up (rfmx loads its kernels) before the clock
starts; it reports wall and CPU time of the read-and-aggregate and the process's peak RSS.
Every contender's result is reduced to one checksum — customers, total money in cents, sum
of each customer's latest order time — and a contender whose checksum disagrees with
rfmx's is reported as wrong, not timed.  Output: a Markdown table (medians over repeats,
rows/s, peak RSS, × rfmx) on stdout and, with ``--out``, in that file.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("rfmx", "duckdb", "polars-connectorx", "polars-adbc")

_CHILD = r'''
import json, resource, sys, time
contender, uri, table = sys.argv[1:4]

def checksum(n_customers, cents, latest_us):
    return [int(n_customers), int(cents), int(latest_us)]

t_import = time.perf_counter()
if contender == "rfmx":
    import pyarrow.compute as pc
    import rfmx
    rfmx.aggregate(rfmx.generate_orders(1000, seed=1))  # kernels loaded (or compiled) before the clock
    def run():
        t = rfmx.aggregate(rfmx.DatabaseSource(uri, table=table))
        latest = pc.sum(t.column("last_order").cast("int64")).as_py()
        return checksum(t.num_rows, pc.sum(t.column("monetary_minor")).as_py(), latest)
elif contender == "duckdb":
    import duckdb
    con = duckdb.connect()
    try:
        con.sql("LOAD postgres")
    except duckdb.Error:
        sys.exit(f"DuckDB {duckdb.__version__} has no postgres extension here and cannot download it "
                 f"(its PyPI package, duckdb-extension-postgres-scanner, must match this DuckDB version); "
                 f"see --duckdb-python")
    def run():
        con.sql(f"ATTACH '{uri}' AS pg (TYPE postgres, READ_ONLY)")
        n, cents, latest = con.sql(
            f"SELECT count(*), sum(cents), sum(epoch_us(latest)) FROM (SELECT customer_id, "
            f"sum(round(amount * 100)::BIGINT) AS cents, max(order_time) FILTER (WHERE amount > 0) AS latest "
            f"FROM pg.public.{table} "
            f"GROUP BY customer_id)").fetchone()
        return checksum(n, cents, latest)
else:
    import polars as pl
    engine = contender.split("-", 1)[1]
    def run():
        df = pl.read_database_uri(f"SELECT customer_id, order_time, amount FROM {table}", uri, engine=engine)
        amount = pl.col("amount")
        if isinstance(df.schema["amount"], pl.Extension):  # the ADBC engine: numeric as opaque text
            amount = amount.ext.storage()
        amount = amount.cast(pl.Float64)
        per = df.group_by("customer_id").agg((amount * 100).round().cast(pl.Int64).sum().alias("cents"),
                                               pl.col("order_time").filter(amount > 0).max().alias("latest"))
        return checksum(per.height, per["cents"].sum(), per["latest"].cast(pl.Int64).sum())
import_s = time.perf_counter() - t_import
t0, c0 = time.perf_counter(), time.process_time()
result = run()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"wall": wall, "cpu": cpu, "import_s": import_s, "checksum": result,
                  # VmHWM, not ru_maxrss: Linux keeps the parent's resident memory at the fork in
                  # ru_maxrss, and this parent has just generated and loaded the table
                  "rss_mb": [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]}))
'''


def _rows(text: str) -> int:
    return int(float(text))


def load(uri: str, rows: int, amount_type: str) -> str:
    """Table ``orders_<rows>`` in the database (made once): the generated history."""
    import adbc_driver_postgresql.dbapi as pg
    import pyarrow as pa

    import rfmx

    table = f"orders_{rows}" + ("_double" if amount_type == "double" else "")
    with pg.connect(uri) as con:
        with con.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM pg_tables WHERE tablename = '{table}'")
            if cur.fetchone()[0]:
                cur.execute(f"SELECT count(*) FROM {table}")
                if cur.fetchone()[0] == rows:
                    return table
            batches = rfmx.generate_orders(rows, seed=0, decimal_amounts=amount_type == "numeric")
            first = next(batches)
            reader = pa.RecordBatchReader.from_batches(first.schema, [first, *batches])
            cur.adbc_ingest(table, reader, mode="replace")
        con.commit()
        with con.cursor() as cur:
            cur.execute(f"ANALYZE {table}")
        con.commit()
    return table


def run_child(python: str, contender: str, uri: str, table: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([python, "-c", _CHILD, contender, uri, table], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1e5,1e6", help="comma-separated table sizes (order lines)")
    parser.add_argument("--uri", default=None, help="a PostgreSQL server to use (default: start a throwaway one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--amount-type", choices=["numeric", "double"], default="numeric")
    parser.add_argument("--duckdb-python", default=sys.executable,
                        help="interpreter for the DuckDB contender (one with the postgres extension)")
    parser.add_argument("--out", default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    contenders = [c for c in args.contenders.split(",") if c]

    server = None
    uri = args.uri
    if uri is None:
        sys.path.insert(0, str(REPO / "tests"))
        from pgserver import PostgresServer

        server = PostgresServer().start()
        uri = server.uri()
        print(f"# throwaway PostgreSQL server at {uri}", file=sys.stderr)
    lines = ["| rows | contender | wall s (median) | rows/s | CPU s | peak RSS MB | wall × rfmx | runs |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    notes = []
    try:
        for rows in map(_rows, args.rows.split(",")):
            start = time.perf_counter()
            table = load(uri, rows, args.amount_type)
            print(f"# {table}: {rows:,} lines ready in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            results: dict[str, list] = {c: [] for c in contenders}
            failed: dict[str, str] = {}
            for repeat in range(args.repeats):
                order = contenders[repeat % len(contenders):] + contenders[:repeat % len(contenders)]
                for contender in order:
                    if contender in failed:
                        continue
                    python = args.duckdb_python if contender == "duckdb" else sys.executable
                    r = run_child(python, contender, uri, table)
                    if "error" in r:
                        failed[contender] = r["error"]
                        print(f"# {contender}: skipped: {r['error']}", file=sys.stderr)
                        continue
                    results[contender].append(r)
                    print(f"# {rows:,} {contender}: {r['wall']:.3f} s, {r['rss_mb']:.0f} MB", file=sys.stderr)
            reference = results.get("rfmx") and results["rfmx"][0]["checksum"]
            rfmx_wall = statistics.median(r["wall"] for r in results["rfmx"]) if results.get("rfmx") else None
            for contender in contenders:
                runs = results[contender]
                if contender in failed and not runs:
                    notes.append(f"{contender} at {rows:,} rows: skipped — {failed[contender]}")
                    continue
                if reference is not None and any(r["checksum"] != reference for r in runs):
                    notes.append(f"{contender} at {rows:,} rows: checksum {runs[0]['checksum']} differs from "
                                 f"rfmx's {reference}: not reported")
                    continue
                wall = statistics.median(r["wall"] for r in runs)
                cpu = statistics.median(r["cpu"] for r in runs)
                rss = statistics.median(r["rss_mb"] for r in runs)
                ratio = f"{wall / rfmx_wall:.2f}×" if rfmx_wall else "—"
                lines.append(f"| {rows:,} | {contender} | {wall:.3f} | {rows / wall:,.0f} | {cpu:.2f} | {rss:,.0f} | "
                             f"{ratio} | {len(runs)} |")
    finally:
        if server is not None:
            server.stop()
    text = "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
