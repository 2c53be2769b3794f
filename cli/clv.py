"""``rfmx clv``: BTYD summary, BG/NBD or Pareto/NBD + Gamma-Gamma fits, CLV per customer."""
from __future__ import annotations

import click

from .options import (check_dask_run, check_state_timezone, column_options, dask_options, dask_settings, order_sources,
                      read_options, renamed_option, report_state, show_progress, stream_options)

#: what --horizon counts: lifetimes' monthly cash flows by default, as saved jobs expect
HORIZON_UNITS = ("day", "week", "month")


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Per-customer summary and predictions: .parquet, .csv, .arrow/.feather, a database (with "
                   "--table) or - (standard output); with --dask a folder for a Parquet dataset.")
@click.option("--model", "model_name", type=click.Choice(["bgnbd", "pareto"]), default="bgnbd", show_default=True,
              help="Purchase/dropout model: BG/NBD or Pareto/NBD.")
@click.option("--holdout-start", default=None,
              help="Fit on the orders before this date and compare predictions with the orders from it on.")
@click.option("--horizon", type=click.IntRange(min=1), default=12, show_default=True,
              help="CLV and expected purchases over this many --horizon-unit periods (12 months by default).")
@click.option("--horizon-unit", type=click.Choice(HORIZON_UNITS), default="month", show_default=True,
              help="The unit of --horizon, and the step of the discounted cash flow; independent of --unit (the "
                   "model's time unit), so --horizon 12 stays 12 months whatever --unit is.")
@click.option("--discount", type=click.FloatRange(min=-1, min_open=True), default=0.01, show_default=True,
              help="Monthly discount rate of the CLV (compounded per day or week with --horizon-unit).")
@click.option("--period", type=click.Choice(["day", "week", "month"]), default="day", show_default=True,
              help="Purchases in one period count once.")
@click.option("--unit", type=click.Choice(["day", "week", "month"]), default=None,
              help="Time unit of recency/T and of the model (default: the period; a month is 30 days).")
@click.option("--penalizer", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="L2 penalty on the parameters (lifetimes' penalizer_coef).")
@click.option("--spend/--no-spend", default=True, show_default=True,
              help="Fit Gamma-Gamma on spend and output expected spend and CLV.")
@click.option("--model-out", type=click.Path(dir_okay=False), default=None,
              help="Save the fitted purchase model (JSON).")
@click.option("--spend-model-out", type=click.Path(dir_okay=False), default=None,
              help="Save the Gamma-Gamma model (JSON).")
@click.option("--model-in", type=click.Path(dir_okay=False), default=None,
              help="Predict with this saved purchase model instead of fitting one.")
@click.option("--spend-model-in", type=click.Path(dir_okay=False), default=None,
              help="Predict spend with this saved Gamma-Gamma model instead of fitting one.")
@renamed_option("--save-model", "--model-out", "model_out", type=click.Path(dir_okay=False))
@renamed_option("--save-spend-model", "--spend-model-out", "spend_model_out", type=click.Path(dir_okay=False))
@renamed_option("--load-model", "--model-in", "model_in", type=click.Path(dir_okay=False))
@renamed_option("--load-spend-model", "--spend-model-in", "spend_model_in", type=click.Path(dir_okay=False))
@click.option("--calibration-out", type=click.Path(dir_okay=False), default=None,
              help="With --holdout-start: write the predicted-vs-actual table (.csv, .parquet, ...).")
@column_options
@stream_options
@dask_options
def clv(sources, output, model_name, holdout_start, horizon, horizon_unit, discount, period, unit, penalizer, spend,
        model_out, spend_model_out, model_in, spend_model_in, calibration_out, customer, time_col, amount,
        order_id, as_of, since, threads, batch_size, amount_scale, on_null, delimiter, state_in, state_out, progress):
    """Customer lifetime value: fit BG/NBD (or Pareto/NBD) and Gamma-Gamma on order histories.

    \b
    Examples:
      rfmx clv orders.parquet --unit week -o clv.parquet --model-out bgnbd.json
      rfmx clv new.parquet --unit week --model-in bgnbd.json --horizon 26 --horizon-unit week -o clv.csv
      rfmx clv orders.parquet --holdout-start 2025-07-01 --calibration-out check.csv
      rfmx clv 'orders/*.parquet' --unit week --dask local:4 -o clv/

    Streams SOURCES (files, globs, a database with --query/--table, or - for standard
    input) into a BTYD summary (frequency, recency, T, monetary value per customer), fits
    the models by maximum likelihood, prints the parameters with standard errors on
    stderr, and writes per customer: probability_alive, expected_purchases (over --horizon
    --horizon-unit periods), expected_spend and clv.  With --holdout-start the models are
    fitted on the calibration period and a predicted-vs-actual table by calibration
    frequency is printed.  --state-in/--state-out hold a BTYD state (purchase periods per
    customer).
    """
    from .main import run_guarded

    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    if calibration_out and not holdout_start:
        raise click.UsageError("--calibration-out needs --holdout-start")
    on_dask = dask_settings()
    if on_dask:
        from .on_dask import clv_on_dask

        check_dask_run(sources, output, state_in=state_in, state_out=state_out, threads=threads)
        return run_guarded(clv_on_dask, on_dask, sources, output, customer, time_col, amount, order_id, as_of, since,
                           batch_size, amount_scale, on_null, delimiter, model=model_name, period=period, unit=unit,
                           penalizer=penalizer, spend=spend, horizon=horizon, horizon_unit=horizon_unit,
                           discount=discount, holdout_start=holdout_start, model_in=model_in,
                           spend_model_in=spend_model_in, model_out=model_out, spend_model_out=spend_model_out)

    def run():
        from rfmx.outputs import CommandFiles

        files = (CommandFiles().read("SOURCES", *sources).read("--model-in", model_in)
                 .read("--spend-model-in", spend_model_in)
                 .state("--state-in", state_in, "--state-out", state_out)
                 .write("-o", output, table=True).write("--calibration-out", calibration_out, table=True)
                 .write("--model-out", model_out).write("--spend-model-out", spend_model_out))
        with files:  # checks every output before anything is read; commits them together at the end
            fit_and_predict(files)

    def fit_and_predict(files):
        import numpy as np

        from rfmx.clv import BGNBD, GammaGamma, ParetoNBD, add_clv_columns, calibration_holdout_table
        from rfmx.kernels._policy import threads as kernel_threads

        cls = BGNBD if model_name == "bgnbd" else ParetoNBD
        # a damaged model file fails before any input is read
        loaded = cls.load(model_in) if model_in else None
        loaded_spend = GammaGamma.load(spend_model_in) if spend and spend_model_in else None
        state = build_btyd_state(sources, customer, time_col, amount, order_id, as_of, since, threads, batch_size,
                                 amount_scale, on_null, delimiter, state_in, progress, period=period)
        if state_out:
            files.save("--state-out", state)
        report_state(state)
        state.drop_index()  # not updated again: free the hash tables before the models run
        summary = state.summary(as_of if state_in else None, holdout_start=holdout_start, unit=unit)
        click.echo(f"rfmx clv: {summary.num_rows:,} customers, "
                   f"{int(np.count_nonzero(summary.column(1).to_numpy())):,} with repeat purchases "
                   f"(time unit: {summary.schema.metadata[b'rfmx.btyd.unit'].decode()})", err=True)

        with kernel_threads(threads):  # --threads holds for the fits and predictions too
            summary_unit = summary.schema.metadata[b"rfmx.btyd.unit"].decode()
            if model_in:
                model = loaded
                if model.time_unit_ not in (None, summary_unit):
                    raise click.UsageError(f"the saved model measures time in {model.time_unit_}s but the summary in "
                                           f"{summary_unit}s; pass --unit {model.time_unit_}")
                model.time_unit_ = summary_unit
            else:
                model = cls(penalizer=penalizer).fit(summary)
            # the fitted parameters are diagnostics, on stderr as in `rfmx score --clv`
            click.echo(model.summary(), err=True)
            if model_out:
                files.save("--model-out", model)
            spend_model = None
            if spend:
                if spend_model_in:
                    spend_model = loaded_spend
                else:
                    spend_model = GammaGamma(penalizer=penalizer).fit(summary)
                    report_zero_spend(spend_model)
                click.echo(spend_model.summary(), err=True)
                ind = getattr(spend_model, "independence_", None)
                if ind:
                    click.echo(f"  frequency-spend correlation (Gamma-Gamma assumes ~0): r = {ind['pearson_r']:.3f} "
                               f"over {ind['n']:,} repeat buyers (p = {ind['p_value']:.3g})", err=True)
                if spend_model_out:
                    files.save("--spend-model-out", spend_model)
            if holdout_start:
                check = calibration_holdout_table(model, summary)
                click.echo("calibration vs holdout: mean repeat purchases in the holdout by calibration frequency")
                click.echo(f"  {'freq':>5} {'customers':>10} {'actual':>9} {'predicted':>9}")
                for row in check.to_pylist():
                    click.echo(f"  {row['bucket']:>5} {row['n_customers']:>10,} {row['actual']:>9.3f} {row['predicted']:>9.3f}")
                if calibration_out:
                    files.write_table("--calibration-out", check)
            if output:
                table = add_clv_columns(summary, model, spend_model, horizon=horizon, discount=discount,
                                        horizon_unit=horizon_unit)
                files.write_table("-o", table)
                click.echo(f"rfmx clv: wrote {table.num_rows:,} customers to {output}", err=True)

    run_guarded(run)


def build_btyd_state(sources, customer, time_col, amount, order_id, as_of, since, threads, batch_size,
                     amount_scale, on_null, delimiter, state_in, progress, *, period="day"):
    """As :func:`rfmx.cli.options.build_state_from_options`, for a BTYD state (an RFM state
    that also keeps purchase periods: it finalizes to the same RFM table)."""
    from rfmx.api import build_state
    from rfmx.clv import BTYDState

    if state_in:
        if since is not None:
            raise click.UsageError("--since cannot change the window of a saved state (--state-in)")
        state = BTYDState.load(state_in, threads=threads)
        if state.period != period:
            raise click.UsageError(f"the saved state collapses purchases per {state.period}; pass --period {state.period}")
        check_state_timezone(state, state_in)
    else:
        state = BTYDState(customer, time_col, amount, order_id, period=period, since=since, until=as_of,
                          amount_scale=amount_scale, on_null=on_null, threads=threads,
                          timezone=read_options()["timezone"])
    if not sources:
        return state
    return build_state(order_sources(sources), customer, time_col, amount, order_id, state=state, on_null=on_null,
                       threads=threads, batch_size=batch_size, progress=show_progress(progress), delimiter=delimiter,
                       **read_options())


def clv_score_step(options: dict):
    """The ``rfmx score --clv`` step (table -> table): fit the purchase model and Gamma-Gamma
    on the BTYD summary of ``options["btyd_state"]`` (set once the state is built) and add
    probability_alive, expected_purchases, expected_spend and clv to the score table."""
    def step(table):
        from rfmx.clv import BGNBD, GammaGamma, ParetoNBD, add_clv_columns

        summary = options["btyd_state"].summary(options.get("as_of"))
        model = (BGNBD if options["clv"] == "bgnbd" else ParetoNBD)().fit(summary)
        spend = GammaGamma().fit(summary)
        click.echo(model.summary() + "\n" + spend.summary(), err=True)
        report_zero_spend(spend)
        return add_clv_columns(table, model, spend, summary=summary, horizon=options["clv_horizon"],
                               discount=options["clv_discount"], horizon_unit=options["clv_horizon_unit"])
    return step


def report_zero_spend(spend_model) -> None:
    """Say on stderr how many repeat buyers Gamma-Gamma left out for zero repeat spend."""
    if spend_model.n_zero_spend_:
        click.echo(f"rfmx clv: {spend_model.n_zero_spend_:,} repeat buyer(s) with zero repeat spend left out of the "
                   f"Gamma-Gamma fit (fitted on monetary_value > 0); their expected spend is the model's for a mean "
                   f"spend of 0", err=True)
