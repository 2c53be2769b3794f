"""Grouped scoring end to end: ``rfmx score --group shop_id`` against DuckDB's
``GROUP BY shop_id, customer_id`` with quintiles ``PARTITION BY shop_id``, file in to Parquet out.

    rfmx generate data/market-1e8.parquet --rows 100000000 --customers 7250000 --shops 10000
    python -m benchmarks.groups --orders data/market-1e8.parquet --repeats 3 \\
        --out benchmarks/results/groups-1e8.md
    python -m benchmarks.groups --rows 1000000 --shops 10000     # generates a small input itself

Contenders, each a fresh process per run (after one unmeasured round), the clock around the
whole process as in :mod:`benchmarks.end_to_end` (whose runner, checksum and table this
reuses):

* **rfmx-groups**: ``rfmx score ORDERS --group shop_id --ties first -o out.parquet`` — per
  (shop, customer) the 12 aggregate columns, R, F and M quintiles ranked within the shop
  (``pd.qcut(x.rank(method="first"), 5)`` per shop), RFM code, value score and tier,
  segment and ABC class within the shop;
* **duckdb-groups**: ``COPY (… GROUP BY shop_id, customer_id …, row_number() OVER
  (PARTITION BY shop_id ORDER BY …)) TO 'out.parquet'``: the same 12 columns and the three
  quintile scores with the same bin rule (a shop's only customer scores 1).

Outputs are checked with the suite's checksum over (shop, customer) keys: ids, recency,
orders and cents per pair, and per dimension the pairs per score and the sum of value ×
score.  Peak memory is the process's own peak RSS.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import end_to_end as e2e
from .contenders import SQL_QBIN, table_checksum

_PER_PAIR = e2e._DUCKDB_PER_CUSTOMER.replace("SELECT customer_id,", "SELECT shop_id, customer_id,", 1).replace(
    "GROUP BY customer_id", "GROUP BY shop_id, customer_id").replace(
    "SELECT customer_id, first_order", "SELECT shop_id, customer_id, first_order")


def _bin(k: str) -> str:
    return f"CASE WHEN n = 1 THEN 1 ELSE {SQL_QBIN.format(k=k)} END"


DUCKDB_GROUPS = _PER_PAIR + """,
ranked AS (
    SELECT *, count(*) OVER (PARTITION BY shop_id) AS n,
           row_number() OVER (PARTITION BY shop_id ORDER BY recency_days) AS r_rank,
           row_number() OVER (PARTITION BY shop_id ORDER BY n_orders) AS f_rank,
           row_number() OVER (PARTITION BY shop_id ORDER BY monetary_minor) AS m_rank
    FROM rfm
)
SELECT * EXCLUDE (n, r_rank, f_rank, m_rank),
       CASE WHEN n = 1 THEN 1 ELSE 6 - {r} END AS r_score, {f} AS f_score, {m} AS m_score
FROM ranked""".replace("{r}", SQL_QBIN.format(k="r_rank")).replace("{f}", _bin("f_rank")).replace(
    "{m}", _bin("m_rank"))

CONTENDERS = ("rfmx-groups", "duckdb-groups")


def command(contender: str, src: str, out: str) -> list[str]:
    if contender == "rfmx-groups":
        return e2e.rfmx_command() + ["score", src, "--group", "shop_id", "--ties", "first", "-o", out,
                                     "--no-progress"]
    sql = f"COPY ({DUCKDB_GROUPS.replace('{path}', e2e._sql_string(src))}) TO {e2e._sql_string(out)} (FORMAT parquet)"
    return [sys.executable, "-c", e2e._DUCKDB_CHILD, sql]


def checksum_of(path: str) -> dict:
    """The suite's checksum with (shop, customer) as the key: ``shop_id * 2**44 + customer_id``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    key = pc.add(pc.multiply(table["shop_id"].cast(pa.int64()), pa.scalar(1 << 44, pa.int64())),
                 table["customer_id"].cast(pa.int64()))
    table = table.set_column(table.schema.get_field_index("customer_id"), "customer_id", key)
    table = table.rename_columns(["money_cents" if n == "monetary_minor" else n for n in table.column_names])
    return table_checksum(table, scores=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.groups", description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", default=None, metavar="PATH", help="an order history with shop_id (rfmx generate --shops)")
    p.add_argument("--rows", type=int, default=1_000_000, help="without --orders: lines to generate")
    p.add_argument("--shops", type=int, default=10_000, help="without --orders: shops to generate")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    a = p.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="rfmx-groups-"))
    work.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        src = a.orders
        if src is None:
            from rfmx.generate import write_orders

            src = str(work / "market.parquet")
            write_orders(src, a.rows, shops=a.shops, customers=max(1, int(a.rows * 0.0725)))
        src = os.path.abspath(src)
        saved = e2e.command, e2e.checksum_of
        e2e.command = command  # the end-to-end runner, with these contenders and this checksum
        e2e.checksum_of = lambda path, workload: checksum_of(path)
        try:
            rows = e2e.measure([src], list(CONTENDERS), a.repeats, work, log, warmup=a.warmup)
        finally:
            e2e.command, e2e.checksum_of = saved
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    rfmx_row = next(r for r in rows if r["contender"] == "rfmx-groups")
    duck_row = next(r for r in rows if r["contender"] == "duckdb-groups")
    lines = [f"`python -m benchmarks.groups {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| contender | wall s (median) | min–max | CPU s | peak RSS MB | output MB | check |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['contender']} | {r['wall_s']:.2f} | {r['wall_min']:.2f}–{r['wall_max']:.2f} | "
                     f"{r['cpu_s']:.1f} | {r['peak_rss_bytes'] / 2**20:,.0f} | {r['out_bytes'] / 2**20:,.1f} | "
                     f"{r['status']} |")
    lines += ["", f"DuckDB / rfmx wall time: {duck_row['wall_s'] / rfmx_row['wall_s']:.2f}× "
                  f"(above 1: rfmx is faster)"]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
