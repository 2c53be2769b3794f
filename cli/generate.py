"""``rfmx generate``: write a synthetic order history."""
from __future__ import annotations

import click

from .options import show_progress


@click.command()
@click.argument("out", type=click.Path(dir_okay=True))
@click.option("--rows", type=click.IntRange(min=1), default=1_000_000, show_default=True, help="Order lines to write.")
@click.option("--customers", type=click.IntRange(min=1), default=None, help="Customers (default: rows / 13.8).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", default="2024-01-01", show_default=True, help="First day of the history.")
@click.option("--days", type=click.IntRange(min=1), default=730, show_default=True, help="Length of the history.")
@click.option("--string-ids", is_flag=True, help="String customer ids (cus-...) instead of int64.")
@click.option("--refund-rate", type=click.FloatRange(0, 1), default=0.02, show_default=True, help="Share of orders refunded later.")
@click.option("--lines-per-order", type=click.FloatRange(min=1), default=1.33, show_default=True, help="Mean lines per order.")
@click.option("--decimal-amounts", is_flag=True, help="Amounts as decimal(12, 2) instead of float64.")
@click.option("--cost-share", type=click.FloatRange(0, 2), default=None,
              help="Add a 'cost' column: each line's cost a random (SHARE ± 0.2) of its amount (refunds: half "
                   "returned goods, negative, half written off, 0).")
@click.option("--shape", type=click.Choice(["churn", "even"]), default="churn", show_default=True,
              help="churn: customers join at random and lapse after a random lifetime; even: every customer orders "
                   "across the whole history.")
@click.option("--shops", type=click.IntRange(min=1), default=None, metavar="N",
              help="A marketplace: add shop_id (1..N), power-law shop sizes, customers buying from several shops.")
@click.option("--files", type=click.IntRange(min=1), default=1, show_default=True, help="Split into this many Parquet files (OUT is a directory).")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr (default: when stderr is a terminal).")
def generate(out, rows, customers, seed, start, days, string_ids, refund_rate, lines_per_order, decimal_amounts,
             cost_share, shape, shops, files, progress):
    """Write a realistic synthetic order history to OUT (.parquet, .csv, .arrow).

    \b
    Examples:
      rfmx generate orders.parquet --rows 10000000
      rfmx generate orders.csv --rows 50000 --string-ids --seed 7
      rfmx generate orders/ --rows 100000000 --files 16
      rfmx generate even.parquet --rows 10000000 --shape even
      rfmx generate market.parquet --rows 100000000 --customers 7250000 --shops 10000
      rfmx generate costed.parquet --rows 1000000 --cost-share 0.6

    Power-law orders per customer, lognormal amounts, multi-line orders, refunds;
    deterministic by --seed.  Columns: customer_id, order_id, order_time, amount (and shop_id
    with --shops, cost with --cost-share).
    """
    from rfmx.generate import write_orders

    from .main import run_guarded

    paths = run_guarded(write_orders, out, rows, files=files, progress=show_progress(progress), customers=customers,
                        seed=seed, start=start, days=days, string_ids=string_ids, refund_rate=refund_rate,
                        lines_per_order=lines_per_order, decimal_amounts=decimal_amounts, shape=shape, shops=shops,
                        cost_share=cost_share)
    click.echo(f"rfmx: wrote {rows:,} order lines to {', '.join(paths) if len(paths) < 4 else out}", err=True)
