"""``rfmx cluster``: k-means or Ward clusters of customers, within segments or not, the
profile table, choosing k."""
from __future__ import annotations

import click

from .options import (
    build_state_from_options,
    check_dask_run,
    column_options,
    dask_options,
    dask_settings,
    fit_within_options,
    group_cluster_lines,
    group_option,
    report_state,
    segments_option,
    stream_options,
)


def profile_lines(profiles) -> list[str]:
    """The cluster profile table (``rfmx.cluster.cluster_profiles``) as text lines."""
    from .summary import _grid, _num, _pct

    cols = profiles.column_names
    header = ["cluster", "label"] + (["description"] if "description" in cols else []) + ["customers", "share"]
    if "revenue" in cols:
        header += ["revenue", "rev. share"]
    dims = [(d, t) for d, t in (("recency", "recency d (mean/med)"), ("frequency", "orders (mean/med)"),
                                ("monetary", "monetary (mean/med)")) if f"{d}_mean" in cols]
    header += [t for _, t in dims]
    if "segment" in cols:
        header += ["top segment"]
    rows = []
    for r in profiles.to_pylist():
        row = ["-" if r["cluster"] is None else str(r["cluster"]), r["label"] or ""]
        if "description" in cols:
            row.append(r["description"] or "")
        row += [f"{r['customers']:,}", _pct(r["share_customers"])]
        if "revenue" in cols:
            row += [_num(r["revenue"], 2), _pct(r["share_revenue"])]
        for d, _ in dims:
            digits = 2 if d == "monetary" else 1
            row.append(f"{_num(r[d + '_mean'], digits)} / {_num(r[d + '_median'], digits)}")
        if "segment" in cols:
            row.append("-" if r["segment"] is None else f"{r['segment']} ({_pct(r['segment_share'])})")
        rows.append(row)
    return _grid(header, rows, left=3 if "description" in cols else 2)


def group_profile_lines(profiles, group) -> list[str]:
    """Per-group cluster profiles (``rfmx.group_clusters.GroupClusters.profiles``): one block
    per group, headed by its values and which model placed it."""
    lines = []
    if not profiles.num_rows:
        return lines
    keys = list(zip(*[profiles[c].to_pylist() for c in group], profiles["model"].to_pylist()))
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            head = ", ".join(f"{c} = {v}" for c, v in zip(group, keys[start][:-1]))
            lines.append(f"== {head} ({'its own model' if keys[start][-1] == 'group' else 'the all-groups model'})")
            lines += profile_lines(profiles.slice(start, i - start).drop_columns(list(group) + ["model"]))
            lines.append("")
            start = i
    return lines[:-1]


def k_table_lines(table) -> list[str]:
    """The k comparison table (``rfmx.cluster.choose_k``) as text lines; ``*`` marks the
    recommended k."""
    from .summary import _grid, _num

    rows = []
    for r in table.to_pylist():
        ve = r["variance_explained"]
        elbow = r.get("elbow_distance")
        rows.append([str(r["k"]) + (" *" if r.get("recommended") else ""), _num(r["inertia"], 1),
                     "-" if ve is None else f"{ve:.3f}",
                     "-" if r["silhouette"] is None else f"{r['silhouette']:.3f}",
                     "-" if elbow is None else f"{elbow:.3f}",
                     "-" if r["n_iter"] is None else str(r["n_iter"])])
    return _grid(["k", "inertia", "variance explained", "silhouette", "below chord", "iterations"], rows)


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-k", "--clusters", "k", type=click.IntRange(min=1), default=None,
              help="Number of clusters (per segment with --within) [default: 8; with --k-range alone, the "
                   "recommended k].")
@click.option("--method", type=click.Choice(["kmeans", "ward"]), default="kmeans", show_default=True,
              help="k-means, or Ward hierarchical clustering in two stages (k-means micro-clusters, then Ward "
                   "linkage of their weighted means).")
@click.option("--distance", type=click.FloatRange(min=0), default=None, metavar="D",
              help="With --method ward: cut the tree at height D (standardized units) instead of at k clusters.")
@click.option("--micro-clusters", "n_micro", type=click.IntRange(min=1, max=10_000), default=None,
              help="With --method ward: micro-clusters of the first stage, the leaves of the tree [default: 256].")
@click.option("--micro-sample", type=click.IntRange(min=1), default=None,
              help="With --method ward: customers the micro-clusters are fitted on before every customer is "
                   "placed [default: 100000].")
@click.option("--dendrogram-out", type=click.Path(dir_okay=False), default=None,
              help="With --method ward: write the tree (merges with heights and sizes, and the cut) as JSON, "
                   "for rfmx report --dendrogram.")
@click.option("--within", default=None, metavar="COLUMN",
              help="Cluster each segment on its own (COLUMN: segment, from --segments): -k per segment or a k "
                   "chosen per segment with --k-range; labels like 'Champions / 2'.")
@click.option("--k-range", default=None, metavar="A..B",
              help="Compare k = A..B (or a list 2,4,8): inertia, variance explained and silhouette, and "
                   "recommend a k (silhouette and elbow).")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Per-customer aggregates + a 'cluster' column (+ 'subsegment' with --within): .parquet, .csv, "
                   ".arrow/.feather, a database (with --table) or - (standard output, --format); with --dask a "
                   "folder for a Parquet dataset.")
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
              help="Save the fitted model (features, scaling, centres; Ward: micro-clusters and tree) as JSON.")
@click.option("--model-in", type=click.Path(dir_okay=False), default=None,
              help="Place customers with a saved model (JSON) instead of fitting one; a Ward model is cut "
                   "again with -k or --distance.")
@segments_option
@column_options
@group_option
@fit_within_options
@stream_options
@dask_options
def cluster(sources, k, method, distance, n_micro, micro_sample, dendrogram_out, within, k_range, output, features,
            scaling, log_features, n_init, max_iter, tol, seed, init_sample, mini_batch, epochs, silhouette_sample,
            k_table, profiles_out, model_out, model_in, segments, customer, time_col, amount, order_id, group,
            fit_within, min_group_size, small_groups, as_of, since, threads, batch_size, amount_scale, on_null,
            delimiter, state_in, state_out, progress):
    """Clusters of customers on log RFM features -- k-means or Ward hierarchical, over all
    customers or within each segment -- with a profile per cluster.

    \b
    Examples:
      rfmx cluster orders.parquet -k 6 -o clusters.parquet --model-out clusters.json
      rfmx cluster orders.parquet --k-range 2..10 --k-table k.csv
      rfmx cluster orders.parquet --method ward -k 8 --dendrogram-out tree.json -o clusters.parquet
      rfmx cluster orders.parquet --within segment --k-range 2..5 -o subsegments.parquet
      rfmx cluster new.parquet --model-in clusters.json -o clusters.csv
      rfmx cluster 'orders/*.parquet' -k 6 --dask local:4 -o clusters/ --model-out clusters.json
      rfmx cluster orders.parquet --group shop_id -k 4 --fit-within group --model-out by_shop.json -o c.parquet

    Streams SOURCES (files, globs, a database with --query/--table, - for standard input;
    or --state-in) into the per-customer table, standardizes the features and clusters
    the customers: k-means (k-means++ seeding, parallel Lloyd) or, with --method ward,
    k-means into micro-clusters and Ward linkage of those (cut at -k or --distance).  Writes
    each customer's cluster to -o and prints one line per cluster: size, revenue share,
    mean and median recency, orders and money, and a unique label read from the centre.
    --k-range compares k first and recommends one (the highest silhouette, the elbow of the
    inertia curve on near ties), which is fitted unless -k is given.  --within segment
    splits each segment of the segment map on its own; segments too small for k stay whole.
    Customers without an order in the window (refunds only) have no recency and get a null
    cluster.
    """
    from .main import run_guarded

    if not sources and not state_in:
        raise click.UsageError("give at least one SOURCE or --state-in")
    if fit_within == "group":
        if not group or k is None:
            raise click.UsageError("--fit-within group fits -k clusters in each --group: give --group and -k")
        given = [name for name, value in (("--within", within), ("--k-range", k_range), ("--model-in", model_in),
                                          ("--distance", distance), ("--dendrogram-out", dendrogram_out),
                                          ("--k-table", k_table)) if value is not None]
        if given:
            raise click.UsageError(f"{given[0]} does not apply to --fit-within group (one -k model per group)")
    elif min_group_size is not None or small_groups != "skip":
        raise click.UsageError("--min-group-size and --small-groups apply to --fit-within group")
    ward_only = [name for name, value in (("--distance", distance), ("--micro-clusters", n_micro),
                                          ("--micro-sample", micro_sample)) if value is not None]
    if ward_only and method != "ward" and not model_in:
        raise click.UsageError(f"{ward_only[0]} is an option of --method ward")
    if dendrogram_out and method != "ward" and not model_in:
        raise click.UsageError("--dendrogram-out writes the tree of --method ward")
    if mini_batch and method == "ward":
        raise click.UsageError("--mini-batch is a k-means option: drop it with --method ward")
    if distance is not None and (k is not None or k_range):
        raise click.UsageError("--distance cuts the tree instead of -k/--k-range: give one")
    if model_in and (k_range or within or method != "kmeans" or (ward_only and ward_only != ["--distance"])):
        raise click.UsageError("--model-in places customers with a saved model: drop --k-range, --within, --method "
                               "and the micro-cluster options (-k/--distance re-cut a Ward model)")
    if within and (distance is not None or dendrogram_out):
        raise click.UsageError("--within cuts each segment at -k or a k chosen by --k-range: drop --distance and "
                               "--dendrogram-out")
    if within and k is not None and k_range:
        raise click.UsageError("--within takes -k (the same k in every segment) or --k-range (a k chosen per "
                               "segment), not both")
    if within and segments == "none":
        raise click.UsageError("--within clusters the segments of --segments: drop --segments none")
    if k_table and not k_range:
        raise click.UsageError("--k-table needs --k-range")
    if k_table and within:
        raise click.UsageError("--k-table writes one comparison: with --within, k is chosen per segment (shown on "
                               "standard error)")
    if k is None and distance is None and not k_range and not model_in:
        k = 8
    if method == "ward" and not model_in:
        from rfmx.cluster import parse_k_range

        leaves = n_micro or 256  # rfmx.hierarchy.DEFAULT_MICRO, without importing the engine here
        largest = max([k or 0] + (parse_k_range(k_range) if k_range else []))
        if largest > leaves:
            raise click.UsageError(f"k = {largest} is more than the {leaves} micro-clusters, the leaves of the Ward "
                                   f"tree: give --micro-clusters {largest} or more")
        if micro_sample is not None and micro_sample < leaves:
            raise click.UsageError(f"--micro-sample {micro_sample} is fewer customers than the {leaves} "
                                   f"micro-clusters fitted on them")
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
                                    "--profiles": profiles_out, "--method ward": method != "kmeans",
                                    "--within": within})
    shape = dict(features=names, log=log_features, scaling=scaling)
    if method == "ward":
        options = dict(method="ward", n_micro=n_micro, micro_sample=micro_sample, threads=threads)
    else:
        options = dict(algorithm="minibatch" if mini_batch else "lloyd", n_init=n_init, max_iter=max_iter, tol=tol,
                       init_sample=init_sample, mini_batch_size=mini_batch or 65_536, epochs=epochs, threads=threads)

    def run():
        from rfmx.outputs import CommandFiles

        files = (CommandFiles().read("SOURCES", *sources).read("--model-in", model_in).read("--segments", segments)
                 .state("--state-in", state_in, "--state-out", state_out)
                 .write("-o", output, table=True).write("--k-table", k_table, table=True)
                 .write("--profiles", profiles_out, table=True).write("--model-out", model_out)
                 .write("--dendrogram-out", dendrogram_out))
        with files:  # checks every output before anything is read; commits them together at the end
            fit_and_profile(files)

    def fit_and_profile(files):
        import time

        from rfmx.subclusters import WithinClusters, load_cluster_model

        model = load_cluster_model(model_in) if model_in else None
        if model is not None:
            check_model_options(model)
        state = build_state_from_options(sources, customer, time_col, amount, order_id, as_of, since, threads,
                                         batch_size, amount_scale, on_null, delimiter, state_in, progress,
                                         group=group)
        if state_out:
            files.save("--state-out", state)
        report_state(state)
        state.drop_index()  # not needed from here on: free it before the result is built
        table = state.finalize(as_of, consume=True)  # the result takes the state's memory over
        described = table
        if segments != "none" and "segment" not in table.column_names:
            from rfmx.scores import score_table

            described = score_table(table, segments=segments)
        start = time.perf_counter()
        if model is not None:
            clusters = model.predict(described)
            what = f"placed customers in the {model.n_clusters} clusters{' per group' if group else ''} of {model_in}"
            if k is not None or distance is not None:
                what += f" (tree cut again at {'k = ' + str(k) if k is not None else 'height ' + str(distance)})"
        elif fit_within == "group":
            from rfmx.group_clusters import fit_by_group

            model, clusters = fit_by_group(described, k, group=group, min_group_size=min_group_size,
                                           small_groups=small_groups, where="per-customer table", random_state=seed,
                                           **shape, **options)
            what = f"fitted k = {k} within each {', '.join(model.group)}"
            for line in group_cluster_lines({**model.info(), "left_out_groups": [
                    {"values": list(p.values), "reason": p.reason} for p in model.left_out[:5]]}):
                click.echo(f"rfmx: {line}", err=True)
        elif within:
            model, clusters, what = fit_within_segments(described)
        else:
            model, clusters, what = fit_all(described, files)
        if clusters.null_count:
            what += f"; {clusters.null_count:,} customers with a null feature{' or segment' if within else ''} " \
                    f"not clustered"
        click.echo(f"rfmx: {what} ({time.perf_counter() - start:.2f} s)", err=True)
        within_model = isinstance(model, WithinClusters)
        if within_model:
            for name, reason in model.whole:
                click.echo(f"rfmx: segment '{name}' left whole: {reason}", err=True)
        profiles = model.profiles(described, clusters)
        if output:
            out = (described if within_model else table).append_column("cluster", clusters)
            if within_model:
                out = out.append_column("subsegment", model.subsegments(clusters))
            files.write_table("-o", out)
        if profiles_out:
            files.write_table("--profiles", profiles)
        if model_out:
            files.save("--model-out", model)
        if dendrogram_out:
            import json

            files.write_text("--dendrogram-out", json.dumps(model.dendrogram(), indent=1, allow_nan=False) + "\n")
        from rfmx.group_clusters import GroupClusters

        if isinstance(model, GroupClusters):
            click.echo("\n".join(group_profile_lines(profiles, model.group)))
        else:
            click.echo("\n".join(profile_lines(profiles)))

    def check_model_options(model):
        kind = getattr(model, "method", "within-segment")
        if (k is not None or distance is not None) and kind != "ward":
            raise click.UsageError("-k/--distance with --model-in re-cut a Ward model's tree; "
                                   f"{model_in} is a {kind} model")
        if dendrogram_out and kind != "ward":
            raise click.UsageError(f"--dendrogram-out writes a Ward tree; {model_in} is not a Ward model")
        if k is not None or distance is not None:
            model.recut(k, distance)

    def compare(X_or_table, ks, files):
        import json
        import time

        from rfmx.cluster import K_CHOICE_KEY, choose_k

        start = time.perf_counter()
        compared = choose_k(X_or_table, ks, silhouette_sample=silhouette_sample, random_state=seed, **shape,
                            **options)
        choice = json.loads(compared.schema.metadata[K_CHOICE_KEY.encode()])
        click.echo(f"rfmx: compared k = {', '.join(map(str, ks))} in {time.perf_counter() - start:.2f} s "
                   f"(silhouette on {compared.schema.metadata[b'rfmx.silhouette_sample'].decode()} customers)",
                   err=True)
        click.echo(f"rfmx: recommended {choice['reason']}" if choice["k"] is not None else f"rfmx: {choice['reason']}",
                   err=True)
        click.echo("\n".join(k_table_lines(compared)))
        click.echo("")
        if k_table:
            files.write_table("--k-table", compared)
        return choice["k"]

    def fit_all(described, files):
        from rfmx.cluster import fit_clusters, parse_k_range

        chosen = k
        if k_range:
            recommended = compare(described, parse_k_range(k_range), files)
            if chosen is None:
                if recommended is None:
                    raise click.UsageError("no k to recommend in --k-range (give -k)")
                chosen = recommended
        model, clusters = fit_clusters(described, chosen, where="per-customer table", distance=distance,
                                       random_state=seed, **shape, **options)
        est = model.estimator
        if model.method == "ward":
            cut = f"k = {est.n_clusters_}" if distance is None else \
                f"height {distance:g} ({est.n_clusters_} clusters)"
            what = (f"Ward over {len(est.micro_counts_):,} micro-clusters cut at {cut}, inertia {est.inertia_:,.1f}")
        else:
            steps = f"{est.n_iter_} {'epochs of mini-batches' if mini_batch else 'iterations'}"
            what = f"fitted k = {chosen} ({steps}, inertia {est.inertia_:,.1f})"
        return model, clusters, what

    def fit_within_segments(described):
        from rfmx.cluster import parse_k_range
        from rfmx.subclusters import fit_within

        ks = parse_k_range(k_range) if k_range else None
        model, clusters = fit_within(described, k if ks is None else None, column=within, k_values=ks,
                                     silhouette_sample=silhouette_sample, random_state=seed,
                                     where="per-customer table", **shape, **options)
        if ks is not None:
            for part in model.parts:
                if part.estimator is not None and part.k_choice is not None:
                    click.echo(f"rfmx: segment '{part.name}': {part.k_choice['reason']}", err=True)
        split = sum(1 for p in model.parts if p.estimator is not None)
        per = f"k = {k} per segment" if ks is None else f"k chosen per segment from {k_range}"
        what = (f"clustered within '{within}' ({per}, {'Ward' if method == 'ward' else 'k-means'}): "
                f"{split} of {len(model.parts)} segments split, {model.n_clusters} clusters")
        return model, clusters, what

    run_guarded(run)
