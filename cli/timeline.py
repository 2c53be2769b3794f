"""``rfmx timeline``: scored snapshots at every period boundary, segment migration and cohorts."""
from __future__ import annotations

import click

from .options import build_timeline_from_options, column_options, report_state, score_options, \
    stream_options

PERIODS = ("day", "week", "month", "quarter")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Scored snapshots as one long table (as_of, customer, aggregates, scores, segment, tier), "
                   "written snapshot by snapshot: .parquet (a row group per snapshot), .csv, .arrow, a database "
                   "(with --table) or - (standard output, --format).")
@click.option("--every", type=click.Choice(PERIODS), default="month", show_default=True,
              help="One snapshot per period boundary; also the state's bucket size.")
@click.option("--week-start", type=click.Choice(WEEKDAYS), default="monday", show_default=True,
              help="First day of a week (--every week).")
@click.option("--start", default=None,
              help="First as-of date, a period boundary [default: the end of the data's first period].")
@click.option("--end", default=None,
              help="Last as-of date, a period boundary [default: the boundary after the latest order].")
@click.option("--changes-only", is_flag=True,
              help="Keep a customer's row only in the snapshots where their segment or value tier changed "
                   "(and where they first appear).")
@click.option("--max-snapshots", type=click.IntRange(min=1), default=120, show_default=True,
              help="Refuse to write more snapshots than this without --changes-only.")
@click.option("--migration-out", type=click.Path(dir_okay=False), default=None,
              help="Segment migration between consecutive snapshots: from x to segment counts and revenue.")
@click.option("--cohorts-out", type=click.Path(dir_okay=False), default=None,
              help="Cohort retention table: customers by first-order period x periods since.")
@click.option("--lifecycle/--no-lifecycle", "with_lifecycle", default=True, show_default=True,
              help="Add each customer's lifecycle stage (new, developing, growing, mature, declining, lost, "
                   "reactivated) next to the segment.")
@click.option("--lifecycle-map", type=click.Path(dir_okay=False), default=None,
              help="A TOML map of [[stage]] rules replacing the default stages (docs/scores.md, 'Lifecycle stages').")
@click.option("--lost-days", type=click.FloatRange(min=0), default=None,
              help="Lost: no order for more than this many days [default: 365].")
@click.option("--overdue", type=click.FloatRange(min=0), default=None,
              help="Declining: more than this many times the customer's typical gap since the last order "
                   "[default: 2].")
@click.option("--decline", type=click.FloatRange(min=0, max=1), default=None,
              help="Declining: spend of the last window down by more than this share of the customer's average "
                   "[default: 0.5].")
@click.option("--growth", type=click.FloatRange(min=0), default=None,
              help="Growing: spend of the last window up by more than this share [default: 0.25].")
@click.option("--mature-days", type=click.FloatRange(min=0), default=None,
              help="Mature: at least this many days since the first order [default: 365] ...")
@click.option("--mature-orders", type=click.FloatRange(min=0), default=None,
              help="... and at least this many orders [default: 4].")
@click.option("--lifecycle-out", type=click.Path(dir_okay=False), default=None,
              help="Stage flows: customers and revenue per stage at each snapshot and from stage x to stage "
                   "between consecutive snapshots.")
@score_options
@column_options
@stream_options
def timeline(sources, output, every, week_start, start, end, changes_only, max_snapshots, migration_out,
             cohorts_out, with_lifecycle, lifecycle_map, lost_days, overdue, decline, growth, mature_days, mature_orders,
             lifecycle_out, bins, ties, monetary, cuts, segments, weights, tiers, customer, time_col, amount, order_id,
             as_of, since, threads, batch_size, amount_scale, on_null, delimiter, state_in, state_out, progress):
    """Customers over time: the scores, segment and value tier of every customer at every
    --every boundary, from one pass over SOURCES (or a saved --state-in timeline state).

    \b
    Examples:
      rfmx timeline orders.parquet --every month -o snapshots.parquet
      rfmx timeline orders.parquet --every quarter --changes-only -o changes.csv \\
          --migration-out migration.csv --cohorts-out cohorts.csv
      rfmx timeline new.parquet --state-in t.arrow --state-out t.arrow --start 2026-01-01 -o jan.parquet

    Each snapshot equals `rfmx score SOURCES --as-of DATE` for that date (with the same
    scoring options); snapshots are made one at a time, so memory holds one, never all.
    """
    from .main import run_guarded

    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    if not (output or state_out or migration_out or cohorts_out):
        raise click.UsageError("give -o/--output, --migration-out, --cohorts-out and/or --state-out")
    if as_of is not None:
        raise click.UsageError("--as-of: a timeline has many as-of dates; give --start and --end")
    thresholds = {k: v for k, v in dict(lost_days=lost_days, overdue=overdue, decline=decline, growth=growth,
                                        mature_days=mature_days, mature_orders=mature_orders).items() if v is not None}
    if not with_lifecycle and (lifecycle_map or thresholds or lifecycle_out):
        raise click.UsageError("--no-lifecycle: drop --lifecycle-map, --lifecycle-out and the stage thresholds")
    options = dict(bins=bins, ties=ties, monetary=monetary, cuts=cuts, segments=segments, weights=weights,
                   tiers=tiers, clv=None, clusters=None, threads=threads)

    def run():
        from rfmx.errors import RfmxError
        from rfmx.outputs import CommandFiles

        from .score import build_steps

        files = (CommandFiles().read("SOURCES", *sources).read("--segments", segments).read("--weights", weights)
                 .state("--state-in", state_in, "--state-out", state_out).write("-o", output, table=True)
                 .write("--migration-out", migration_out, table=True).write("--cohorts-out", cohorts_out, table=True)
                 .read("--lifecycle-map", lifecycle_map).write("--lifecycle-out", lifecycle_out, table=True))
        with files:  # checks every output before anything is read; commits them together at the end
            steps = build_steps(options)  # scoring options are checked before any row is read
            stages = None
            if with_lifecycle:
                from rfmx.stages import lifecycle_map as resolve_stages

                stages = resolve_stages(lifecycle_map, **thresholds)
            check_span(start, end)
            state = build_timeline_from_options(sources, customer, time_col, amount, order_id, since, threads,
                                                batch_size, amount_scale, on_null, delimiter, state_in, progress,
                                                every=every, week_start=week_start)
            if state_out:
                files.save("--state-out", state)
            boundaries = state.boundaries(start, end)
            if not boundaries:
                raise RfmxError(f"no {every} boundary from --start to --end"
                                + ("" if state.n_customers else " (the input has no orders)"))
            if migration_out and len(boundaries) < 2:
                raise RfmxError(f"--migration-out needs two snapshots or more; from --start to --end there "
                                f"{'is' if len(boundaries) == 1 else 'are'} {len(boundaries)}")
            if len(boundaries) > max_snapshots and output and not changes_only:
                raise click.UsageError(
                    f"{len(boundaries)} snapshots of up to {state.n_customers:,} customers "
                    f"(up to {len(boundaries) * state.n_customers:,} rows) is more than --max-snapshots "
                    f"{max_snapshots}; raise it, narrow --start/--end, or pass --changes-only")
            written = write_snapshots(files, state, boundaries, steps, output=output, changes_only=changes_only,
                                      migration_out=migration_out, stages=stages, lifecycle_out=lifecycle_out,
                                      progress=progress)
            if cohorts_out:
                from rfmx.cohorts import cohort_table

                files.write_table("--cohorts-out", cohort_table(state.buckets(), period=every,
                                                                week_start=state.week_start,
                                                                amount_scale=state.amount_scale))
        report_state(state)
        click.echo(f"rfmx timeline: {len(boundaries)} snapshot(s) every {every}, {written:,} rows"
                   + (f" -> {output}" if output else ""), err=True)

    run_guarded(run)


def check_span(start, end) -> None:
    """Refuse ``--start`` after ``--end`` before anything is read."""
    from rfmx.errors import RfmxError
    from rfmx.state import to_us

    if start is not None and end is not None and to_us(start) > to_us(end):
        raise RfmxError(f"--start {start} is after --end {end}")


def write_snapshots(files, state, boundaries, steps, *, output, changes_only, migration_out, stages, lifecycle_out,
                    progress) -> int:
    """Score each snapshot and stream it to ``-o`` (only changed rows with ``changes_only``),
    collecting the migration and the stage flows between consecutive snapshots; returns
    the rows written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from rfmx.migrations import migration, migration_summary, segment_changes
    from rfmx.pipeline import scored_snapshots, with_as_of
    from rfmx.sinks import TableStream, output_format

    from .options import show_progress
    from .score import run_steps
    from .summary import migration_lines

    stream = None
    if output:
        stream = TableStream(files.staged("-o"), output_format(output), where=output,
                             metadata={"rfmx.timeline.every": state.period, "rfmx.timezone": state.timezone})
    moves, flows, previous, earlier, last = [], [], None, None, None
    snapshots = scored_snapshots(state, boundaries, lambda table: run_steps(table, steps), lifecycle=stages)
    for n, snap in enumerate(snapshots, start=1):
        scored, rows = snap.table, snap.earlier_rows
        if stream is not None:
            kept = scored
            if changes_only and earlier is not None:
                changed = segment_changes(earlier, scored, earlier_rows=rows).column("customer_id")
                kept = scored.filter(pc.is_in(scored.column("customer_id"), value_set=changed))
            stream.write(with_as_of(kept, snap.as_of, state.timezone))
        if migration_out and earlier is not None:
            moves.append(migration(earlier, scored, earlier_rows=rows))
        if lifecycle_out:
            # The first snapshot against nobody: every customer comes from "(new)", so the
            # flows of each snapshot also sum to its stage sizes.
            before = earlier if earlier is not None else scored.slice(0, 0).replace_schema_metadata(
                {k: v for k, v in scored.schema.metadata.items() if k != b"rfmx.as_of"})
            match = rows if earlier is not None else np.full(scored.num_rows, -1, dtype=np.int64)
            flows.append(migration(before, scored, segments=stages.order, by="lifecycle", earlier_rows=match)
                         .rename_columns({"from_segment": "from_stage", "to_segment": "to_stage"}))
        previous, earlier, last = earlier, scored, rows
        if show_progress(progress):
            click.echo(f"rfmx timeline: snapshot {n}/{len(boundaries)}", err=True)
    if stream is not None:
        stream.close()
    if migration_out:
        files.write_table("--migration-out", pa.concat_tables(moves))
        click.echo(f"segment migration from {boundaries[-2]:%Y-%m-%d} to {boundaries[-1]:%Y-%m-%d}:")
        click.echo("\n".join(migration_lines(migration_summary(previous, earlier, earlier_rows=last))))
    if lifecycle_out:
        files.write_table("--lifecycle-out", pa.concat_tables(flows, promote_options="permissive"))
    if stages is not None and earlier is not None:
        counts = dict(zip(*np.unique(earlier.column("lifecycle").to_numpy(zero_copy_only=False).astype(str),
                                     return_counts=True)))
        click.echo(f"lifecycle as of {boundaries[-1]:%Y-%m-%d}: "
                   + ", ".join(f"{s} {int(counts.get(s, 0)):,}" for s in stages.order))
    return stream.rows if stream is not None else 0
