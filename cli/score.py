"""``rfmx score``: aggregate -> scores -> segments (-> later steps) in one streaming pass and one finalize.

The command is a small pipeline over the finalized per-customer table: :func:`build_steps`
returns the ordered steps, each a function from the table to the table with more columns.
A new step (clusters, CLV) is one option on :func:`score` and one ``steps.append`` in
:func:`build_steps`; nothing else changes.
"""
from __future__ import annotations

import functools

import click

from .clv import ORDER_MODELS
from .options import (
    attributes_options,
    build_state_from_options,
    check_dask_run,
    column_options,
    cost_column,
    dask_options,
    dask_settings,
    fit_within_options,
    group_cluster_lines,
    group_option,
    join_attributes_reported,
    rank_within_option,
    report_state,
    score_options,
    stream_options,
)


def build_steps(options: dict) -> list[tuple[str, object]]:
    """The per-customer steps, in order, as ``(name, table -> table)``.

    ``options``: the command's keyword arguments.  Validates everything it can before any
    order row is read (weights, tiers, cuts, the segment map and its fields), so a typo
    fails in a second, not after the scan.  ``options["attributes"]``: the checked
    attribute table (``rfmx.attributes.Attributes``), whose columns rules may name.
    """
    from rfmx.scores import (AGGREGATE_FIELDS, DEFAULT_BINS, PROFIT_FIELDS, check_bins, check_feature_names,
                             parse_cuts, parse_tiers, parse_weights, score_table)
    from rfmx.segments import SegmentMap

    # --segments none: scores, value score and tier without a segment column
    smap = SegmentMap.resolve(options["segments"]) if options["segments"] != "none" else None
    if options["monetary"] == "profit" and not options.get("cost"):
        raise click.UsageError("--monetary profit scores M on gross profit: give the line cost column (--cost)")
    bins = options["bins"] if options["bins"] is not None else ((smap and smap.bins) or DEFAULT_BINS)
    q = check_bins(bins)
    attrs = options.get("attributes")
    numeric = (AGGREGATE_FIELDS + (PROFIT_FIELDS if options.get("cost") else ())
               + tuple(attrs.numeric_columns() if attrs is not None else ()))
    strings = ("customer_id",) + tuple(attrs.string_columns() if attrs is not None else ())
    if smap is not None:
        smap.check_bins(q)
        if not options.get("clv"):  # CLV adds columns that rules may name: checked on the table then
            smap.check_fields(numeric, strings)
    weights = (parse_weights(options["weights"]) if options["weights"] is not None
               else smap.weights if smap is not None else None)
    if weights is not None and not options.get("clv"):
        check_feature_names(parse_weights(weights), numeric)
    tiers = (parse_tiers(options["tiers"]) if options["tiers"] is not None
             else smap.tiers if smap is not None else None)
    cuts = parse_cuts(list(options["cuts"]), q)

    steps = [("score", functools.partial(score_table, bins=q, ties=options["ties"], monetary=options["monetary"],
                                         cuts=cuts, segments=smap, weights=weights, tiers=tiers,
                                         threads=options.get("threads"), group=options.get("group"),
                                         rank_within=options.get("rank_within", "group")))]
    # Later steps append here, e.g.: if options.get("clusters"): steps.append(("clusters", ...))
    if options.get("clusters") and options.get("fit_within", "all") == "group":
        from rfmx.group_clusters import add_group_cluster_column

        steps.append(("clusters", functools.partial(add_group_cluster_column, k=options["clusters"],
                                                    min_group_size=options.get("min_group_size"),
                                                    small_groups=options.get("small_groups", "skip"),
                                                    threads=options.get("threads"))))
    elif options.get("clusters"):
        from rfmx.cluster import add_cluster_column

        steps.append(("clusters", functools.partial(add_cluster_column, k=options["clusters"],
                                                    threads=options.get("threads"))))
    if options.get("scorecard"):  # last: it reads the scores and the CLV columns
        from rfmx.scorecard import Scorecard, add_scorecard

        card = Scorecard.resolve(options["scorecard"], influence=options.get("influence"))  # a bad file fails now
        steps.append(("scorecard", functools.partial(add_scorecard, scorecard=card, tiers=tiers,
                                                     rank_within=options.get("rank_within", "group"))))
    if options.get("clv"):  # first, so its columns exist when segments are assigned
        from .clv import clv_score_step

        steps.insert(0, ("clv", clv_score_step(options)))
    return steps


def run_steps(table, steps):
    """Apply ``steps`` (from :func:`build_steps`) to the finalized table, in order."""
    for _name, step in steps:
        table = step(table)
    return table


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Per-customer aggregates + scores + segments: .parquet, .csv, .arrow/.feather, a database "
                   "(with --table) or - (standard output); with --dask a folder for a Parquet dataset.")
@score_options
@click.option("--clv", type=click.Choice(ORDER_MODELS), default=None,
              help="Add probability_alive, expected_purchases, expected_spend and clv from this BTYD model "
                   "+ Gamma-Gamma (see rfmx clv); --state-in/--state-out then hold a BTYD state.")
@click.option("--clv-horizon", type=click.IntRange(min=1), default=12, show_default=True,
              help="CLV horizon in --clv-horizon-unit periods (12 months by default).")
@click.option("--clv-horizon-unit", type=click.Choice(("day", "week", "month")), default="month", show_default=True,
              help="The unit of --clv-horizon (as rfmx clv --horizon-unit).")
@click.option("--clv-discount", type=click.FloatRange(min=-1, min_open=True), default=0.01, show_default=True,
              help="Monthly discount rate of the CLV.")
@click.option("--clusters", type=click.IntRange(min=1), default=None, metavar="K",
              help="Add a 'cluster' column: k-means with K clusters on log R, F, M (see rfmx cluster).")
@click.option("--scorecard", default=None, metavar="hvc|FILE",
              help="Add the high-value customer scorecard (hvc: financial 40, growth 25, loyalty 20, influence "
                   "15) or a TOML scorecard: hvc_<dimension> scores 0-100, hvc_score and hvc_tier; an absent "
                   "dimension's weight is spread over the others (said on stderr).")
@click.option("--influence", default=None, metavar="COLUMN",
              help="With --scorecard: the column of the influence dimension (e.g. referrals, joined with "
                   "--attributes).")
@column_options
@group_option
@rank_within_option
@fit_within_options
@attributes_options
@stream_options
@dask_options
def score(sources, output, bins, ties, monetary, cuts, segments, weights, tiers, clv, clv_horizon, clv_horizon_unit,
          clv_discount, clusters, scorecard, influence, customer, time_col, amount, order_id, group, rank_within,
          fit_within, min_group_size,
          small_groups, attributes, on, as_of, since, threads, batch_size, amount_scale, on_null, delimiter, state_in,
          state_out, progress):
    """Scores, RFM codes, segments and value tiers of order histories.

    \b
    Examples:
      rfmx score orders/*.parquet -o scores.parquet
      rfmx score orders.parquet --segments pymc-quartiles --bins 4 --clv bgnbd --clusters 6 -o scores.csv
      rfmx score 'postgresql://analyst@db/shop' --table orders -o - --format jsonl
      rfmx score orders.parquet --group shop_id -o scores_by_shop.parquet
      rfmx score orders.parquet --cost cost --monetary profit -o scores.parquet
      rfmx score orders.parquet --cost cost --scorecard hvc -o scores.parquet
      rfmx score 'orders/*.parquet' --dask local:4 -o scores/
      rfmx score orders.parquet --group shop_id --clusters 4 --fit-within group --min-group-size 200 -o s.parquet
      rfmx score orders.parquet --attributes customers.parquet --segments by_country.toml -o scores.parquet

    SOURCES are files, directories, globs, a database (with --query or --table) or - for
    standard input.  Streams SOURCES once into the per-customer state (or starts from
    --state-in, so a saved state is re-scored without rescanning), finalizes it, adds exact
    quantile R, F, M scores, the RFM code, the value score and tier, the segment (none
    with --segments none) and the ABC class, writes the table to -o and prints the
    segment summary.
    """
    from .main import run_guarded
    from .summary import coverage_lines, segment_lines

    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    if group and clv:
        raise click.UsageError("--group with --clv: fit CLV models per group with rfmx clv on each group's "
                               "rows; --group scores, segments and clusters")
    if fit_within == "group" and not (group and clusters):
        raise click.UsageError("--fit-within group fits the --clusters model per group: give --group and --clusters")
    if fit_within != "group" and (min_group_size is not None or small_groups != "skip"):
        raise click.UsageError("--min-group-size and --small-groups apply to --fit-within group")
    options = dict(group=group, rank_within=rank_within, fit_within=fit_within, min_group_size=min_group_size,
                   small_groups=small_groups, bins=bins, ties=ties, monetary=monetary, cuts=cuts, segments=segments, weights=weights,
                   tiers=tiers, clv=clv, clv_horizon=clv_horizon, clv_horizon_unit=clv_horizon_unit,
                   clv_discount=clv_discount, as_of=as_of,
                   clusters=clusters, threads=threads, cost=cost_column(), scorecard=scorecard, influence=influence)
    if influence and not scorecard:
        raise click.UsageError("--influence names a column of the scorecard: give --scorecard too")
    if clv and cost_column():
        raise click.UsageError("--cost with --clv: the CLV state keeps no line costs; score profit without --clv")
    on_dask = dask_settings()
    if on_dask:
        if group or cost_column():
            raise click.UsageError("--group and --cost run on one machine; leave out --dask")
        check_dask_run(sources, output, state_in=state_in, state_out=state_out, threads=threads)
        if clv or clusters:
            raise click.UsageError("--clv and --clusters are not part of score --dask; run rfmx clv / rfmx cluster "
                                   "on its output")
        return run_guarded(score_on_dask, on_dask, sources, output, customer, time_col, amount, order_id, as_of,
                           since, batch_size, amount_scale, on_null, delimiter, bins=bins, ties=ties,
                           monetary=monetary, cuts=list(cuts), segments=None if segments == "none" else segments,
                           weights=weights, tiers=tiers)

    def run():
        import time

        from rfmx.concentration import with_segment_summary
        from rfmx.outputs import CommandFiles
        from rfmx.scores import score_info

        files = (CommandFiles().read("SOURCES", *sources).read("--segments", segments).read("--weights", weights)
                 .read("--attributes", attributes).state("--state-in", state_in, "--state-out", state_out)
                 .write("-o", output, table=True))
        with files:  # checks every output before anything is read; commits them together at the end
            if attributes:  # read and checked before the scan, so the rules can be checked against it
                from rfmx.attributes import read_attributes

                options["attributes"] = read_attributes(attributes, on)
            steps = build_steps(options)
            if clv:  # a BTYD state finalizes to the same table and also keeps purchase periods
                from .clv import build_btyd_state

                state = options["btyd_state"] = build_btyd_state(
                    sources, customer, time_col, amount, order_id, as_of, since, threads, batch_size, amount_scale,
                    on_null, delimiter, state_in, progress)
            else:
                state = build_state_from_options(sources, customer, time_col, amount, order_id, as_of, since,
                                                 threads, batch_size, amount_scale, on_null, delimiter, state_in,
                                                 progress, group=group)
            if state_out:
                files.save("--state-out", state)  # staged now: finalize below consumes the state
            start = time.perf_counter()
            state.drop_index()  # not needed from here on: free it before the result is built
            # The CLV step still reads the BTYD state; otherwise the result takes its memory over.
            table = state.finalize(as_of, consume=not clv)
            table = run_steps(join_attributes_reported(table, options.get("attributes")), steps)
            elapsed = time.perf_counter() - start
            # printed below; stored with the table, so a report over the file reads it back
            segments_table = None
            if "segment" in table.column_names:  # --segments none: no segments to summarize
                table, segments_table = with_segment_summary(table)
            if output:
                files.write_table("-o", table)
        report_state(state)
        info = score_info(table)
        click.echo(f"rfmx: scored {table.num_rows:,} customers into {info['bins']} bins in {elapsed:.2f} s"
                   + (f" -> {output}" if output else ""), err=True)
        from rfmx.group_clusters import group_clusters_info

        for line in group_cluster_lines(group_clusters_info(table)):
            click.echo(f"rfmx: {line}", err=True)
        from rfmx.scorecard import scorecard_line

        if scorecard_line(table):
            click.echo(f"rfmx: {scorecard_line(table)}", err=True)
        for line in coverage_lines(info["segments"]):
            click.echo(f"rfmx: {line}", err=True)
        if segments_table is not None:
            click.echo("\n".join(segment_lines(segments_table)))

    run_guarded(run)


def score_on_dask(on_dask, *args, **options):
    """``rfmx score --dask``: :func:`rfmx.dask.score`, reported as one machine reports (the
    segment coverage; the per-segment summary needs medians over all customers and is not
    printed)."""
    from .aggregate import run_on_dask
    from .summary import coverage_lines

    counters = run_on_dask("score", on_dask, *args, **options)
    info = counters["scores"]
    click.echo(f"rfmx: scored {info['customers']:,} customers into {info['bins']} bins on Dask", err=True)
    for line in coverage_lines(info["segments"]):
        click.echo(f"rfmx: {line}", err=True)
