"""``rfmx aggregate`` and ``rfmx demo``."""
from __future__ import annotations

import click

from .options import (
    attributes_options,
    build_state_from_options,
    check_dask_run,
    column_options,
    cost_column,
    dask_options,
    dask_settings,
    group_option,
    join_attributes_reported,
    report_state,
    stream_options,
)


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Per-customer aggregates: .parquet, .csv, .arrow/.feather, a database (with --table) or - "
                   "(standard output, --format); with --dask a folder for a Parquet dataset.")
@column_options
@group_option
@attributes_options
@stream_options
@dask_options
def aggregate(sources, output, customer, time_col, amount, order_id, group, attributes, on, as_of, since, threads,
              batch_size, amount_scale, on_null, delimiter, state_in, state_out, progress):
    """Per-customer RFM aggregates of order histories.

    \b
    Examples:
      rfmx aggregate orders.parquet -o rfm.parquet
      rfmx aggregate 'exports/*.csv' --customer user_id --time created_at --amount total -o rfm.csv
      rfmx aggregate new.parquet --state-in s.arrow --state-out s.arrow -o rfm.parquet
      rfmx aggregate orders.parquet --group shop_id -o rfm_by_shop.parquet
      rfmx aggregate orders.parquet --cost cost -o rfm.parquet
      rfmx aggregate orders.parquet --attributes customers.parquet --on customer_id -o rfm.parquet
      rfmx aggregate 'orders/*.parquet' --dask local:4 -o rfm/
      rfmx aggregate s3://shop/orders/ --dask tcp://scheduler:8786 -o s3://shop/rfm/

    Streams SOURCES (Parquet, Arrow IPC/Feather or CSV files, directories, globs, a
    database with --query or --table, or - for standard input) in order; with --state-in
    the lines are folded into a saved state, so only new orders are read.
    """
    from .main import run_guarded

    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    if not output and not state_out:
        raise click.UsageError("give -o/--output and/or --state-out")
    if attributes and not output:
        raise click.UsageError("--attributes joins to the -o table; give -o/--output (a state holds no attributes)")
    on_dask = dask_settings()
    if on_dask and cost_column():
        raise click.UsageError("--cost does not run on --dask; aggregate on one machine (partial states carry "
                               "costs: rfmx.RFMState.to_table/from_table)")
    if on_dask:
        if attributes:
            raise click.UsageError("--attributes runs on one machine; leave out --dask")
        if group:
            raise click.UsageError("--group runs on one machine; leave out --dask")
        check_dask_run(sources, output, state_in=state_in, state_out=state_out, threads=threads)
        return run_guarded(run_on_dask, "aggregate", on_dask, sources, output, customer, time_col, amount,
                           order_id, as_of, since, batch_size, amount_scale, on_null, delimiter)

    def run():
        from rfmx.outputs import CommandFiles

        from rfmx.attributes import read_attributes

        files = (CommandFiles().read("SOURCES", *sources).read("--attributes", attributes)
                 .state("--state-in", state_in, "--state-out", state_out).write("-o", output, table=True))
        with files:  # checks every output before anything is read; commits them together at the end
            attrs = read_attributes(attributes, on) if attributes else None  # checked before the scan
            state = build_state_from_options(sources, customer, time_col, amount, order_id, as_of, since, threads,
                                             batch_size, amount_scale, on_null, delimiter, state_in, progress,
                                             group=group)
            state.drop_index()  # not needed to finalize or save: free it before the result is built
            # Without --state-out the state is not needed after: the result takes its memory over.
            if output:
                files.write_table("-o", join_attributes_reported(state.finalize(as_of, consume=not state_out), attrs))
            if state_out:
                files.save("--state-out", state)
        report_state(state)

    run_guarded(run)


def run_on_dask(command, on_dask, sources, output, customer, time_col, amount, order_id, as_of, since, batch_size,
                amount_scale, on_null, delimiter, **options):
    """Run ``command`` (``aggregate`` or ``score``) through ``rfmx.dask`` and report like one machine does."""
    import rfmx.dask as rd

    from .options import read_options

    counters: dict = {}
    with rd.cluster(on_dask["address"]) as client:
        getattr(rd, command)(list(sources), customer, time_col, amount, order_id, as_of=as_of, since=since,
                             amount_scale=amount_scale, on_null=on_null, batch_size=batch_size, delimiter=delimiter,
                             client=client, buckets=on_dask["buckets"], output=output,
                             single_file=on_dask["single_file"], report=counters, **read_options(), **options)
    parts = [f"{counters['rows_read']:,} rows read", f"{counters['customers']:,} customers"]
    if counters["rows_null_skipped"]:
        parts.append(f"{counters['rows_null_skipped']:,} rows with nulls skipped")
    if counters["rows_outside_window"]:
        parts.append(f"{counters['rows_outside_window']:,} rows outside the window skipped")
    if counters["amounts_rounded"]:
        parts.append(f"{counters['amounts_rounded']:,} amounts rounded to {amount_scale} decimals")
    parts.append(f"on Dask: shares {counters['shares']:,}, buckets {counters['buckets']:,} -> {output}")
    click.echo("rfmx: " + ", ".join(parts), err=True)
    return counters


@click.command()
@click.option("--rows", type=click.IntRange(min=1), default=1_000_000, show_default=True, help="Order lines to generate.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="rfmx-demo", show_default=True,
              help="Folder for the sample history and the results.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(rows, out_dir, seed):
    """Generate a sample order history and score it: the quick start.

    \b
    Examples:
      rfmx demo
      rfmx demo --rows 100000 --out /tmp/rfmx-demo
    """
    from .main import run_guarded

    def run():
        import os
        import time

        from rfmx.api import aggregate as aggregate_api
        from rfmx.generate import write_orders
        from rfmx.sinks import write_table

        os.makedirs(out_dir, exist_ok=True)
        orders = os.path.join(out_dir, "orders.parquet")
        write_orders(orders, rows, seed=seed)
        click.echo(f"rfmx demo: wrote {rows:,} sample order lines to {orders}", err=True)
        start = time.perf_counter()
        table = aggregate_api(orders)
        elapsed = time.perf_counter() - start
        out = os.path.join(out_dir, "rfm.parquet")
        write_table(table, out)
        click.echo(f"rfmx demo: aggregated {table.num_rows:,} customers in {elapsed:.2f} s "
                   f"(first run includes compiling the kernels) -> {out}")
        top = table.sort_by([("monetary_total", "descending")]).slice(0, 5)
        click.echo("top customers by money spent:")
        for row in top.select(["customer_id", "recency_days", "n_orders", "monetary_total"]).to_pylist():
            click.echo(f"  {row['customer_id']}: recency {row['recency_days']} d, "
                       f"{row['n_orders']} orders, {row['monetary_total']:,.2f}")

        from rfmx.concentration import segment_summary
        from rfmx.scores import score_table

        from .summary import segment_lines

        start = time.perf_counter()
        scores = score_table(table)
        elapsed = time.perf_counter() - start
        out = os.path.join(out_dir, "scores.parquet")
        write_table(scores, out)
        click.echo(f"rfmx demo: scored and segmented them in {elapsed:.2f} s -> {out}")
        click.echo("\n".join(segment_lines(segment_summary(scores))))
        from importlib.util import find_spec

        if find_spec("altair") and find_spec("vl_convert"):  # the report extra is installed
            from rfmx.report import write_report

            page = os.path.join(out_dir, "report.html")
            write_report(page, scores=scores, title="rfmx demo: customer value report")
            click.echo(f"rfmx demo: wrote the report -> {page} (open it in a browser; it works offline)")
        else:
            click.echo("rfmx demo: for an HTML report of these scores: pip install 'rfmx[report]', then "
                       f"rfmx report --scores {out} -o report.html")
        click.echo(f"next: rfmx summary {out}")

    run_guarded(run)
