"""The ``--dask`` runs of commands whose single-machine body lives elsewhere (``rfmx clv --dask``):
the options a distributed run cannot take are usage errors, the rest goes to :mod:`rfmx.dask`."""
from __future__ import annotations

import click


def clv_on_dask(on_dask, sources, output, customer, time_col, amount, order_id, as_of, since, batch_size,
                amount_scale, on_null, delimiter, *, holdout_start, model_in, spend_model_in, model_out,
                spend_model_out, compare=None, **options):
    """``rfmx clv --dask``: :func:`rfmx.dask.clv`, the fitted models printed (and saved) as one
    machine prints them."""
    from rfmx.outputs import CommandFiles

    from .aggregate import run_on_dask
    from .clv import report_zero_spend

    if options["model"] not in ("bgnbd", "pareto"):
        raise click.UsageError(f"--model {options['model']} is not available with --dask; use bgnbd or pareto")
    for flag, given in (("--holdout-start", holdout_start), ("--model-in", model_in),
                        ("--spend-model-in", spend_model_in), ("--compare", compare)):
        if given:
            raise click.UsageError(f"{flag} is not available with --dask: a Dask run fits the models on all "
                                   f"customers and writes their predictions")
    files = CommandFiles().write("--model-out", model_out).write("--spend-model-out", spend_model_out)
    with files:  # checked before anything is read; the models are saved once the run has written -o
        counters = run_on_dask("clv", on_dask, sources, output, customer, time_col, amount, order_id, as_of, since,
                               batch_size, amount_scale, on_null, delimiter, **options)
        model, spend_model = counters["model"], counters["spend_model"]
        click.echo(f"rfmx clv: fitted on {counters['patterns']:,} distinct (frequency, recency, T) patterns", err=True)
        click.echo(model.summary(), err=True)
        if model_out:
            files.save("--model-out", model)
        if spend_model is not None:
            report_zero_spend(spend_model)
            click.echo(spend_model.summary(), err=True)
            if spend_model_out:
                files.save("--spend-model-out", spend_model)


def cluster_on_dask(on_dask, sources, output, customer, time_col, amount, order_id, as_of, since, batch_size,
                    amount_scale, on_null, delimiter, *, k, refused, model_out, **options):
    """``rfmx cluster --dask``: :func:`rfmx.dask.cluster_customers`; the fit and the centres
    printed (cluster profiles need medians over every customer: not on Dask)."""
    from rfmx.outputs import CommandFiles

    from .aggregate import run_on_dask

    for flag, given in refused.items():
        if given:
            raise click.UsageError(f"{flag} is not available with --dask (k-means++ and Lloyd over all customers; "
                                   f"profiles need every customer's values)")
    files = CommandFiles().write("--model-out", model_out)
    with files:  # checked before anything is read; the model is saved once the run has written -o
        counters = run_on_dask("cluster_customers", on_dask, sources, output, customer, time_col, amount, order_id,
                               as_of, since, batch_size, amount_scale, on_null, delimiter, k=k or 8, **options)
        model = counters["model"]
        click.echo(f"rfmx: fitted k={model.n_clusters} on Dask ({model.estimator.n_iter_} iterations, inertia "
                   f"{model.estimator.inertia_:,.1f})", err=True)
        centres = model.centres()
        labels = model.labels
        for row, label in zip(centres.to_pylist(), labels):
            values = ", ".join(f"{name} {row[name]:,.2f}" for name in centres.column_names[1:])
            click.echo(f"  cluster {row['cluster']}: {label}: centre {values}")
        if model_out:
            files.save("--model-out", model)
