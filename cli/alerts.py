"""``rfmx alerts``: the valuable customers who started to fade since the last run."""
from __future__ import annotations

import click

from .options import build_timeline_from_options, column_options, report_state, score_options, \
    stream_options
from .timeline import PERIODS, WEEKDAYS

#: the exit status of ``--exit-code`` when there are alerts (1: an error, 2: a usage error)
ALERTS_FOUND = 3


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The alerts, most value at stake first: .parquet, .csv, .arrow, a database (with --table) or - (standard output, --format).")
@click.option("--every", type=click.Choice(PERIODS), default="day", show_default=True,
              help="The period of the timeline state: a run compares consecutive boundaries (run it once a period).")
@click.option("--week-start", type=click.Choice(WEEKDAYS), default="monday", show_default=True,
              help="First day of a week (--every week).")
@click.option("--start", default=None,
              help="Report the alerts from this boundary on [default: since the previous run saved in "
                   "--state-in, else the last period only].")
@click.option("--rules", type=click.Path(dir_okay=False), default=None,
              help="A TOML file of [[alert]] rules replacing the default ones (docs/scores.md, 'Alerts').")
@click.option("--overdue", type=click.FloatRange(min=0), default=None,
              help="Default rules: overdue after this many times the customer's typical gap [default: 2].")
@click.option("--spend-drop", type=click.FloatRange(min=0, max=1), default=None,
              help="Default rules: window spend below last year's by more than this share [default: 0.5].")
@click.option("--lifecycle-map", type=click.Path(dir_okay=False), default=None,
              help="A TOML map of [[stage]] rules for the lifecycle stages the alerts show.")
@click.option("--exit-code", "exit_code", is_flag=True,
              help=f"Exit with status {ALERTS_FOUND} when there are alerts (0 when none), for schedulers.")
@click.option("--webhook", default=None, metavar="URL",
              help="POST the run's alerts as JSON to this URL (3 tries; an error when it cannot be delivered).")
@score_options
@column_options
@stream_options
def alerts(sources, output, every, week_start, start, rules, overdue, spend_drop, lifecycle_map, exit_code, webhook,
           bins, ties, monetary, cuts, segments, weights, tiers, customer, time_col, amount, order_id, as_of, since,
           threads, batch_size, amount_scale, on_null, delimiter, state_in, state_out, progress):
    """Early warnings: the valuable customers (top value tier, Champions, Loyal Customers,
    Can't Lose Them) who moved down a segment, became overdue against their own rhythm or
    spend far less than a year ago — since the previous run, with the value at stake.

    \b
    Examples:
      rfmx alerts history.parquet --state-out s.arrow -o alerts.csv       # once, on the history
      rfmx alerts today.parquet --state-in s.arrow --state-out s.arrow \\
          -o alerts.csv --exit-code --webhook https://crm.example/hooks/rfmx  # then every day

    A run folds SOURCES into the timeline state (--state-in), compares each pair of
    consecutive --every boundaries since the previous run up to --as-of (default: the
    boundary after the latest order) and saves the state with the new position
    (--state-out), so the next run reports only what is new.
    """
    from .main import run_guarded

    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    thresholds = {k: v for k, v in dict(overdue=overdue, spend_drop=spend_drop).items() if v is not None}
    if rules and thresholds:
        raise click.UsageError("--overdue and --spend-drop set the default rules; a --rules file sets its own")
    options = dict(bins=bins, ties=ties, monetary=monetary, cuts=cuts, segments=segments, weights=weights,
                   tiers=tiers, clv=None, clusters=None, threads=threads)

    def run():
        from rfmx.early_warnings import alert_rules, alert_run, post_alerts
        from rfmx.outputs import CommandFiles
        from rfmx.segments import SegmentMap
        from rfmx.stages import lifecycle_map as resolve_stages

        from .score import build_steps, run_steps

        files = (CommandFiles().read("SOURCES", *sources).read("--segments", segments).read("--weights", weights)
                 .read("--rules", rules).read("--lifecycle-map", lifecycle_map)
                 .state("--state-in", state_in, "--state-out", state_out).write("-o", output, table=True))
        with files:  # every output is checked before anything is read; all are committed together at the end
            steps = build_steps(options)  # rules and maps are checked before any row is read
            stages = resolve_stages(lifecycle_map)
            order = SegmentMap.resolve(segments).order
            checks = alert_rules(rules, segments=order, stages=stages.order, **thresholds)
            state = build_timeline_from_options(sources, customer, time_col, amount, order_id, since, threads,
                                                batch_size, amount_scale, on_null, delimiter, state_in, progress,
                                                every=every, week_start=week_start)
            found, pairs, reason = alert_run(state, lambda table: run_steps(table, steps), stages=stages,
                                             checks=checks, segments=order, as_of=as_of, start=start)
            if found is None:
                from rfmx.early_warnings import empty_alerts

                found = empty_alerts(state.id_type)
            if output:
                files.write_table("-o", found)
            if state_out:
                files.save("--state-out", state)
            if webhook and found.num_rows:
                # before the outputs are committed: an undelivered run leaves the saved state
                # as it was, so the next run reports these alerts again
                post_alerts(webhook, found, as_of=pairs[-1].isoformat() if pairs else None)
        report_state(state)
        if reason:
            click.echo(f"rfmx alerts: {reason}", err=True)
        else:
            counts = found.column("alert").value_counts().to_pylist() if found.num_rows else []
            named = ", ".join(f"{c['values']} {c['counts']:,}" for c in counts)
            click.echo(f"rfmx alerts: {found.num_rows:,} alert(s) from {len(pairs)} {every} boundary pair(s) up to "
                       f"{pairs[-1]:%Y-%m-%d}" + (f" ({named})" if named else "")
                       + (f" -> {output}" if output else ""), err=True)
        return found.num_rows

    n = run_guarded(run)
    if exit_code and n:
        raise SystemExit(ALERTS_FOUND)
