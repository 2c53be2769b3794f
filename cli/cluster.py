"""``rfmx cluster``: k-means clusters of customers, the profile table, choosing k."""
from __future__ import annotations

import click

from .options import (
    build_state_from_options,
    check_dask_run,
    column_options,
    dask_options,
    dask_settings,
    report_state,
    segments_option,
    stream_options,
)


def profile_lines(profiles) -> list[str]:
    """The cluster profile table (``rfmx.cluster.cluster_profiles``) as text lines."""
    from .summary import _grid, _num, _pct

    cols = profiles.column_names
    header = ["cluster", "label", "customers", "share"]
    if "revenue" in cols:
        header += ["revenue", "rev. share"]
    dims = [(d, t) for d, t in (("recency", "recency d (mean/med)"), ("frequency", "orders (mean/med)"),
                                ("monetary", "monetary (mean/med)")) if f"{d}_mean" in cols]
    header += [t for _, t in dims]
    if "segment" in cols:
        header += ["top segment"]
    rows = []
    for r in profiles.to_pylist():
        row = ["-" if r["cluster"] is None else str(r["cluster"]), r["label"] or "", f"{r['customers']:,}",
               _pct(r["share_customers"])]
        if "revenue" in cols:
            row += [_num(r["revenue"], 2), _pct(r["share_revenue"])]
        for d, _ in dims:
            digits = 2 if d == "monetary" else 1
            row.append(f"{_num(r[d + '_mean'], digits)} / {_num(r[d + '_median'], digits)}")
        if "segment" in cols:
            row.append("-" if r["segment"] is None else f"{r['segment']} ({_pct(r['segment_share'])})")
        rows.append(row)
    return _grid(header, rows, left=2)


def k_table_lines(table) -> list[str]:
    """The k comparison table (``rfmx.cluster.choose_k``) as text lines."""
    from .summary import _grid, _num

    rows = []
    for r in table.to_pylist():
        ve = r["variance_explained"]
        rows.append([str(r["k"]), _num(r["inertia"], 1), "-" if ve is None else f"{ve:.3f}",
                     "-" if r["silhouette"] is None else f"{r['silhouette']:.3f}", str(r["n_iter"])])
    return _grid(["k", "inertia", "variance explained", "silhouette", "iterations"], rows)


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-k", "--clusters", "k", type=click.IntRange(min=1), default=None,
              help="Number of clusters [default: 8, or none with --k-range alone].")
@click.option("--k-range", default=None, metavar="A..B",
              help="Compare k = A..B (or a list 2,4,8): inertia, variance explained and silhouette, printed.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Per-customer aggregates + a 'cluster' column: .parquet, .csv, .arrow/.feather, a database (with --table) or - (standard output, --format); with --dask a folder for a Parquet dataset.")
@click.option("--features", default="recency_days,n_orders,monetary_total", show_default=True,
              help="Per-customer columns to cluster on, comma-separated.")
@click.option("--scaling", type=click.Choice(["zscore", "robust", "none"]), default="zscore", show_default=True,
              help="Standardize features by mean/std (zscore) or median/IQR (robust).")
@click.option("--log/--no-log", "log_features", default=True, show_default=True,
              help="sign(x) * log1p(|x|) each feature before standardizing.")
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True,
              help="k-means++ seedings; the run with the lowest inertia is kept.")
@click.option("--max-iter", type=click.IntRange(min=1), default=300, show_default=True,
              help="Lloyd iterations per run.")
@click.option("--tol", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Stop when the squared centre shift is below tol x the mean feature variance.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (k-means++, samples).")
@click.option("--init-sample", type=click.IntRange(min=1), default=None,
              help="Seed k-means++ on a random sample of this many customers (very large populations).")
@click.option("--mini-batch", type=click.IntRange(min=1), default=None, metavar="SIZE",
              help="Mini-batch k-means with batches of SIZE customers instead of full Lloyd.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Passes over the customers with --mini-batch.")
@click.option("--silhouette-sample", type=click.IntRange(min=2), default=10_000, show_default=True,
              help="Customers sampled for silhouettes with --k-range (O(n^2) distances).")
@click.option("--k-table", type=click.Path(dir_okay=False), default=None,
              help="Write the --k-range comparison (.parquet, .csv, .arrow) for plotting.")
@click.option("--profiles", "profiles_out", type=click.Path(dir_okay=False), default=None,
              help="Write the cluster profile table (.parquet, .csv, .arrow).")
@click.option("--model-out", type=click.Path(dir_okay=False), default=None,
              help="Save the fitted model (features, scaling, centres) as JSON.")
@click.option("--model-in", type=click.Path(dir_okay=False), default=None,
              help="Place customers with a saved model (JSON) instead of fitting one.")
@segments_option
@column_options
@stream_options
@dask_options
def cluster(sources, k, k_range, output, features, scaling, log_features, n_init, max_iter, tol, seed, init_sample,
            mini_batch, epochs, silhouette_sample, k_table, profiles_out, model_out, model_in, segments, customer,
            time_col, amount, order_id, as_of, since, threads, batch_size, amount_scale, on_null, delimiter, state_in,
            state_out, progress):
    """k-means clusters of customers on log RFM features, with a profile per cluster.

    \b
    Examples:
      rfmx cluster orders.parquet -k 6 -o clusters.parquet --model-out clusters.json
      rfmx cluster orders.parquet --k-range 2..10 --k-table k.csv
      rfmx cluster new.parquet --model-in clusters.json -o clusters.csv
      rfmx cluster 'orders/*.parquet' -k 6 --dask local:4 -o clusters/ --model-out clusters.json

    Streams SOURCES (files, globs, a database with --query/--table, - for standard input;
    or --state-in) into the per-customer table, standardizes the
    features, fits k-means (k-means++ seeding, parallel Lloyd), writes each customer's
    cluster to -o and prints one line per cluster: size, revenue share, mean and median
    recency, orders and money, and a label read from the centre.  --k-range compares k
    first.  Customers without an order in the window (refunds only) have no recency and
    get a null cluster.
    """
    from .main import run_guarded

    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    if k is None and k_range is None and model_in is None:
        k = 8
    if model_in and (k is not None or k_range):
        raise click.UsageError("--model-in places customers with a saved model: drop -k/--k-range")
    if k is None and not model_in and (output or profiles_out or model_out):
        raise click.UsageError("-o/--profiles/--model-out need -k (the number of clusters)")
    if k_table and not k_range:
        raise click.UsageError("--k-table needs --k-range")
    names = tuple(f.strip() for f in features.split(",") if f.strip())
    on_dask = dask_settings()
    if on_dask:
        from .on_dask import cluster_on_dask

        check_dask_run(sources, output, state_in=state_in, state_out=state_out, threads=threads)
        return run_guarded(cluster_on_dask, on_dask, sources, output, customer, time_col, amount, order_id, as_of,
                           since, batch_size, amount_scale, on_null, delimiter, k=k, features=names, log=log_features,
                           scaling=scaling, max_iter=max_iter, tol=tol, random_state=seed, model_out=model_out,
                           refused={"--k-range": k_range, "--model-in": model_in, "--n-init": n_init != 1,
                                    "--init-sample": init_sample, "--mini-batch": mini_batch,
                                    "--profiles": profiles_out})
    fit_options = dict(features=names, log=log_features, scaling=scaling,
                       algorithm="minibatch" if mini_batch else "lloyd", n_init=n_init, max_iter=max_iter, tol=tol,
                       random_state=seed, init_sample=init_sample, mini_batch_size=mini_batch or 65_536,
                       epochs=epochs, threads=threads)

    def run():
        from rfmx.outputs import CommandFiles

        files = (CommandFiles().read("SOURCES", *sources).read("--model-in", model_in).read("--segments", segments)
                 .state("--state-in", state_in, "--state-out", state_out)
                 .write("-o", output, table=True).write("--k-table", k_table, table=True)
                 .write("--profiles", profiles_out, table=True).write("--model-out", model_out))
        with files:  # checks every output before anything is read; commits them together at the end
            fit_and_profile(files)

    def fit_and_profile(files):
        import time

        from rfmx.cluster import CustomerClusters, choose_k, fit_clusters, parse_k_range

        ks = parse_k_range(k_range) if k_range else None
        model = CustomerClusters.load(model_in) if model_in else None
        state = build_state_from_options(sources, customer, time_col, amount, order_id, as_of, since, threads,
                                         batch_size, amount_scale, on_null, delimiter, state_in, progress)
        if state_out:
            files.save("--state-out", state)
        report_state(state)
        state.drop_index()  # not needed from here on: free it before the result is built
        table = state.finalize(as_of, consume=True)  # the result takes the state's memory over
        if ks:
            start = time.perf_counter()
            compared = choose_k(table, ks, silhouette_sample=silhouette_sample, **fit_options)
            click.echo(f"rfmx: compared k = {', '.join(map(str, ks))} in {time.perf_counter() - start:.2f} s "
                       f"(silhouette on {compared.schema.metadata[b'rfmx.silhouette_sample'].decode()} customers)",
                       err=True)
            click.echo("\n".join(k_table_lines(compared)))
            if k_table:
                files.write_table("--k-table", compared)
        if k is None and model is None:
            return
        start = time.perf_counter()
        if model is None:
            model, clusters = fit_clusters(table, k, where="per-customer table", **fit_options)
            steps = f"{model.kmeans.n_iter_} {'epochs of mini-batches' if mini_batch else 'iterations'}"
            what = (f"fitted k={k} in {time.perf_counter() - start:.2f} s "
                    f"({steps}, inertia {model.kmeans.inertia_:,.1f})")
        else:
            clusters = model.predict(table)
            what = f"placed customers in the {model.n_clusters} clusters of {model_in}"
        if clusters.null_count:
            what += f"; {clusters.null_count:,} customers with a null feature not clustered"
        click.echo(f"rfmx: {what}", err=True)
        described = table
        if segments != "none" and "segment" not in table.column_names:
            from rfmx.scores import score_table

            described = score_table(table, segments=segments)
        profiles = model.profiles(described, clusters)
        if output:
            files.write_table("-o", table.append_column("cluster", clusters))
        if profiles_out:
            files.write_table("--profiles", profiles)
        if model_out:
            files.save("--model-out", model)
        if ks:
            click.echo("")
        click.echo("\n".join(profile_lines(profiles)))

    run_guarded(run)
