"""``rfmx clv``: BTYD summary, purchase model (BG/NBD, MBG/NBD, Pareto/NBD, BG/BB) + Gamma-Gamma
fits and CLV per customer, the model comparison on a holdout, and sBG on contracts."""
from __future__ import annotations

import click

from .options import (check_dask_run, check_state_timezone, column_options, dask_options, dask_settings,
                      given_on_command_line, order_sources, read_options, renamed_option, report_state, show_progress,
                      stream_options)

#: what --horizon counts: lifetimes' monthly cash flows by default, as saved jobs expect
HORIZON_UNITS = ("day", "week", "month")


#: the models --model fits (Gamma-Gamma is the spend model, fitted with --spend)
MODELS = ("bgnbd", "mbgnbd", "pareto", "bgbb", "sbg")
#: the models fitted on order histories (sBG is fitted on contracts)
ORDER_MODELS = tuple(m for m in MODELS if m != "sbg")
#: options of the purchase models that --model sbg (contracts, not orders) has no use for
_NOT_FOR_CONTRACTS = ("holdout_start", "compare", "compare_out", "calibration_out", "state_in", "state_out",
                      "spend", "spend_model_in", "spend_model_out", "period", "unit", "horizon_unit", "customer",
                      "time_col", "amount", "order_id", "as_of", "since", "batch_size", "amount_scale", "on_null",
                      "delimiter", "round_mode", "customer_type", "timezone")
#: options of --model sbg only
_CONTRACTS_ONLY = ("survivors", "last_period", "projection_out")


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Per-customer summary and predictions: .parquet, .csv, .arrow/.feather, a database (with "
                   "--table) or - (standard output).  With --model sbg: the contracts and their predictions, or "
                   "with --survivors the survival projection.  With --dask a folder for a Parquet dataset.")
@click.option("--model", "model_name", type=click.Choice(MODELS), default="bgnbd", show_default=True,
              help="BG/NBD, MBG/NBD or Pareto/NBD (purchases in continuous time); BG/BB (purchases at discrete "
                   "opportunities: one per --period); sBG (contract renewals: SOURCES is a table of contracts, "
                   "or give --survivors).")
@click.option("--holdout-start", default=None,
              help="Fit on the orders before this date and compare predictions with the orders from it on.")
@click.option("--compare", default=None, metavar="MODEL,MODEL,...",
              help="With --holdout-start: also fit these purchase models (bgnbd, mbgnbd, pareto, bgbb; 'all' for "
                   "every one) on the calibration period and rank them by the mean absolute error of each "
                   "customer's holdout purchases.")
@click.option("--compare-out", type=click.Path(dir_okay=False), default=None,
              help="With --compare: write the comparison table (.csv, .parquet, ...).")
@click.option("--horizon", type=click.IntRange(min=1), default=12, show_default=True,
              help="CLV and expected purchases over this many --horizon-unit periods (12 months by default); "
                   "--model sbg: expected renewals in, and projection over, this many contract periods.")
@click.option("--horizon-unit", type=click.Choice(HORIZON_UNITS), default="month", show_default=True,
              help="The unit of --horizon, and the step of the discounted cash flow; independent of --unit (the "
                   "model's time unit), so --horizon 12 stays 12 months whatever --unit is.")
@click.option("--discount", type=click.FloatRange(min=-1, min_open=True), default=0.01, show_default=True,
              help="Monthly discount rate of the CLV (compounded per day or week with --horizon-unit); "
                   "--model sbg: the rate per contract period of the DERL.")
@click.option("--period", type=click.Choice(["day", "week", "month"]), default="day", show_default=True,
              help="Purchases in one period count once; BG/BB's opportunity.")
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
@click.option("--survivors", multiple=True, metavar="N0,N1,...",
              help="--model sbg: a cohort's customers still active after 0, 1, 2, ... renewals, instead of "
                   "SOURCES (repeat for several cohorts).")
@click.option("--start-column", default="start", show_default=True,
              help="--model sbg: the contracts' first period paid for (whole period numbers).")
@click.option("--end-column", default="end", show_default=True,
              help="--model sbg: the first period no longer paid for (the cancellation); null while running.")
@click.option("--last-period", type=int, default=None,
              help="--model sbg: the period the contracts describe; ends after it count as running [default: the "
                   "latest start or end].")
@click.option("--projection-out", type=click.Path(dir_okay=False), default=None,
              help="--model sbg: write the survival and retention projection (.csv, .parquet, ...).")
@column_options
@stream_options
@dask_options
def clv(sources, output, model_name, holdout_start, compare, compare_out, horizon, horizon_unit, discount, period,
        unit, penalizer, spend, model_out, spend_model_out, model_in, spend_model_in, calibration_out, survivors,
        start_column, end_column, last_period, projection_out, customer, time_col, amount, order_id, as_of, since,
        threads, batch_size, amount_scale, on_null, delimiter, state_in, state_out, progress):
    """Customer lifetime value: fit BTYD purchase models and Gamma-Gamma on order histories,
    or the sBG model on contract renewals.

    \b
    Examples:
      rfmx clv orders.parquet --unit week -o clv.parquet --model-out bgnbd.json
      rfmx clv new.parquet --unit week --model-in bgnbd.json --horizon 26 --horizon-unit week -o clv.csv
      rfmx clv orders.parquet --holdout-start 2025-07-01 --calibration-out check.csv
      rfmx clv orders.parquet --holdout-start 2025-06-30 --period week --compare all --compare-out models.csv
      rfmx clv orders.parquet --model bgbb --period week --horizon 26 --horizon-unit week -o clv.parquet
      rfmx clv --model sbg --survivors 1000,631,468,382,326,289,262,241 --horizon 5
      rfmx clv contracts.parquet --model sbg --discount 0.1 -o derl.parquet --projection-out retention.csv
      rfmx clv 'orders/*.parquet' --unit week --dask local:4 -o clv/

    Streams SOURCES (files, globs, a database with --query/--table, or - for standard
    input) into a BTYD summary (frequency, recency, T, monetary value per customer), fits
    the models by maximum likelihood, prints the parameters with standard errors on
    stderr, and writes per customer: probability_alive, expected_purchases (over --horizon
    --horizon-unit periods), expected_spend and clv.  With --holdout-start the models are
    fitted on the calibration period and a predicted-vs-actual table by calibration
    frequency is printed; --compare ranks several models on it.  --state-in/--state-out
    hold a BTYD state (purchase periods per customer).

    --model bgbb counts purchases at discrete opportunities, one per --period: frequency
    is the purchase periods after the first, recency the period of the last, n the
    periods since the first; expected_purchases counts them over the horizon, which must
    be whole periods.  --model sbg reads contracts instead of orders (SOURCES: tables with
    --start-column and --end-column; or --survivors) and writes per contract the renewal
    probability, expected renewals over --horizon periods and the DERL (discounted expected
    residual lifetime, in periods, at --discount per period); it prints the survival and
    retention projection.
    """
    from .main import run_guarded

    ctx = click.get_current_context()
    typed = [name for name in (_NOT_FOR_CONTRACTS if model_name == "sbg" else _CONTRACTS_ONLY)
             if given_on_command_line(ctx, name)]
    if typed:
        flag = next(p.opts[0] for p in ctx.command.params if p.name == typed[0])
        raise click.UsageError(f"{flag} is not an option of --model sbg (it reads contracts, not orders)"
                               if model_name == "sbg" else f"{flag} is for --model sbg")
    on_dask = dask_settings()
    if on_dask:
        from .on_dask import clv_on_dask

        check_dask_run(sources, output, state_in=state_in, state_out=state_out, threads=threads)
        return run_guarded(clv_on_dask, on_dask, sources, output, customer, time_col, amount, order_id, as_of, since,
                           batch_size, amount_scale, on_null, delimiter, model=model_name, period=period, unit=unit,
                           penalizer=penalizer, spend=spend, horizon=horizon, horizon_unit=horizon_unit,
                           discount=discount, holdout_start=holdout_start, model_in=model_in,
                           spend_model_in=spend_model_in, model_out=model_out, spend_model_out=spend_model_out,
                           compare=compare)
    if model_name == "sbg":
        if sources and survivors:
            raise click.UsageError("give SOURCES (contracts) or --survivors, not both")
        if not sources and not survivors and not model_in:
            raise click.UsageError("--model sbg needs SOURCES (contracts), --survivors or --model-in")
        run_guarded(fit_contracts, sources, survivors, output, model_in, model_out, projection_out, penalizer,
                    horizon, discount, start_column, end_column, last_period, threads)
        return
    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    if calibration_out and not holdout_start:
        raise click.UsageError("--calibration-out needs --holdout-start")
    if compare and not holdout_start:
        raise click.UsageError("--compare needs --holdout-start")
    if compare_out and not compare:
        raise click.UsageError("--compare-out needs --compare")
    compared = _compared_models(compare) if compare else None

    def run():
        from rfmx.outputs import CommandFiles

        files = (CommandFiles().read("SOURCES", *sources).read("--model-in", model_in)
                 .read("--spend-model-in", spend_model_in)
                 .state("--state-in", state_in, "--state-out", state_out)
                 .write("-o", output, table=True).write("--calibration-out", calibration_out, table=True)
                 .write("--compare-out", compare_out, table=True)
                 .write("--model-out", model_out).write("--spend-model-out", spend_model_out))
        with files:  # checks every output before anything is read; commits them together at the end
            fit_and_predict(files)

    def fit_and_predict(files):
        import numpy as np

        from rfmx.clv import GammaGamma, add_clv_columns, calibration_holdout_table, model_class
        from rfmx.kernels._policy import threads as kernel_threads

        cls = model_class(model_name)
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
            # BG/BB's time is the opportunity (the period); the others' the summary's unit
            summary_unit = summary.schema.metadata[
                b"rfmx.btyd.period" if getattr(cls, "counts_opportunities", False) else b"rfmx.btyd.unit"].decode()
            if model_in:
                model = loaded
                if model.time_unit_ not in (None, summary_unit):
                    flag = "--period" if getattr(cls, "counts_opportunities", False) else "--unit"
                    raise click.UsageError(f"the saved model measures time in {model.time_unit_}s but the summary in "
                                           f"{summary_unit}s; pass {flag} {model.time_unit_}")
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
            if compared:
                compare_and_report(files, summary, compared, penalizer, compare_out)
            if output:
                table = add_clv_columns(summary, model, spend_model, horizon=horizon, discount=discount,
                                        horizon_unit=horizon_unit)
                files.write_table("-o", table)
                click.echo(f"rfmx clv: wrote {table.num_rows:,} customers to {output}", err=True)

    run_guarded(run)


def _compared_models(text: str) -> list[str]:
    from rfmx.clv import COMPARABLE_MODELS

    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(COMPARABLE_MODELS)
    bad = [t for t in names if t not in COMPARABLE_MODELS]
    if bad or not names:
        raise click.BadParameter(f"{bad[0] if bad else text!r}: choose from {', '.join(COMPARABLE_MODELS)} "
                                 f"(comma-separated) or all", param_hint="--compare")
    return names


def compare_and_report(files, summary, names, penalizer, compare_out) -> None:
    """Fit and rank ``names`` on the calibration/holdout ``summary``; print the table (stdout)
    and failed fits (stderr); write --compare-out."""
    from rfmx.clv import compare_models

    result = compare_models(summary, names, penalizer=penalizer)
    click.echo("model comparison: holdout purchases per customer, mean absolute error")
    click.echo(f"  {'model':>7} {'log-lik':>12} {'MAE/customer':>13} {'MAE/freq group':>15} {'predicted':>10} "
               f"{'actual':>8}")
    for row in result.table.to_pylist():
        if row["status"] != "ok":
            click.echo(f"  {row['model']:>7}  fit failed (see stderr)")
            click.echo(f"rfmx clv: --compare: {row['model']} not ranked: {row['status']}", err=True)
            continue
        mark = "  <- best" if row["best"] else ""
        click.echo(f"  {row['model']:>7} {row['log_likelihood']:>12.2f} {row['mae_customer']:>13.4f} "
                   f"{row['mae_frequency_group']:>15.4f} {row['predicted_mean']:>10.4f} {row['actual_mean']:>8.4f}"
                   f"{mark}")
    by_group = "" if result.best_by_group == result.best else f"; by frequency group: {result.best_by_group}"
    click.echo(f"best: {result.best} (lowest MAE per customer{by_group})")
    if compare_out:
        files.write_table("--compare-out", result.table)


def fit_contracts(sources, survivors, output, model_in, model_out, projection_out, penalizer, horizon, discount,
                  start_column, end_column, last_period, threads):
    """``rfmx clv --model sbg``: fit (or load) sBG on contracts or survivor counts, print the
    projection, write the per-contract predictions (or the projection) and the model."""
    from rfmx.outputs import CommandFiles

    files = (CommandFiles().read("SOURCES", *sources).read("--model-in", model_in)
             .write("-o", output, table=True).write("--projection-out", projection_out, table=True)
             .write("--model-out", model_out))
    with files:
        from rfmx.clv import SBG
        from rfmx.kernels._policy import threads as kernel_threads

        model = SBG.load(model_in) if model_in else None
        curves = [_survivor_curve(text) for text in survivors]
        contracts = _read_contracts(sources) if sources else None
        with kernel_threads(threads):
            if model is None:
                model = SBG(penalizer=penalizer).fit(contracts, survivors=curves or None, start=start_column,
                                                     end=end_column, last_period=last_period)
            click.echo(model.summary(), err=True)
            click.echo(f"  discounted expected lifetime of a new customer at {discount:g} per period: "
                       f"{model.discounted_expected_lifetime(discount):.4f} periods", err=True)
            if model_out:
                files.save("--model-out", model)
            projection = model.projection(horizon)
            click.echo("survival and retention by renewal (observed, and the model's projection)")
            click.echo(f"  {'period':>6} {'at risk':>9} {'observed':>9} {'survival':>9} {'retention':>9}")
            for row in projection.to_pylist():
                obs = "" if row["observed_survival"] is None else f"{row['observed_survival']:.4f}"
                risk = "" if row["at_risk"] is None else f"{row['at_risk']:,.0f}"
                ret = "" if row["retention"] is None else f"{row['retention']:.4f}"
                click.echo(f"  {row['period']:>6} {risk:>9} {obs:>9} {row['survival']:>9.4f} {ret:>9}")
            if projection_out:
                files.write_table("--projection-out", projection)
            if output:
                if contracts is None:
                    table = projection
                else:
                    table = model.add_columns(contracts, start=start_column, end=end_column,
                                              last_period=last_period, horizon=horizon, discount=discount)
                files.write_table("-o", table)
                what = "periods" if contracts is None else "contracts"
                click.echo(f"rfmx clv: wrote {table.num_rows:,} {what} to {output}", err=True)


def _survivor_curve(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give whole numbers separated by commas, e.g. 1000,631,468",
                                 param_hint="--survivors") from None


def _read_contracts(sources):
    """The contract tables of SOURCES (Parquet, Arrow IPC/Feather or CSV files), concatenated."""
    import pyarrow as pa

    from rfmx.errors import RfmxError
    from rfmx.scores import read_table

    tables = []
    for source in sources:
        if source == "-" or "://" in str(source):
            raise RfmxError(f"{source}: --model sbg reads contracts from files (.parquet, .csv, .arrow)")
        tables.append(read_table(source))
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise RfmxError(f"the contract tables do not share their columns: {str(exc).splitlines()[0]}") from None


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
        from rfmx.clv import GammaGamma, add_clv_columns, model_class

        summary = options["btyd_state"].summary(options.get("as_of"))
        model = model_class(options["clv"])().fit(summary)
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
