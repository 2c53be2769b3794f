"""``rfmx report``: one offline HTML page (and, with --figures, SVG/PNG files) of every figure."""
from __future__ import annotations

import click

from .options import build_state_from_options, column_options, files_only_output, report_state, score_options, \
    stream_options

# (option name, build_report keyword, what it takes)
TABLE_OPTIONS = (
    ("--scores", "scores", "A scored per-customer table (rfmx score -o)."),
    ("--timeline", "timeline", "Scored snapshots (rfmx timeline -o, not --changes-only): segment (and lifecycle) "
                               "sizes over time, and the migration between the last two snapshots."),
    ("--migration", "migration", "A migration table (rfmx timeline --migration-out): its last pair is drawn."),
    ("--cohorts", "cohorts", "A cohort table (rfmx timeline --cohorts-out)."),
    ("--clusters", "clusters", "A clustered per-customer table (rfmx cluster -o, or rfmx score --clusters)."),
    ("--k-table", "k_table", "A k comparison table (rfmx cluster --k-range ... --k-table): the recommended k "
                             "is marked."),
    ("--dendrogram", "dendrogram", "A Ward tree (rfmx cluster --method ward --dendrogram-out, JSON): drawn with "
                                   "its cut."),
    ("--clv", "clv", "A CLV table (rfmx clv -o, or rfmx score --clv)."),
    ("--calibration", "calibration", "A calibration vs holdout table (rfmx clv --calibration-out)."),
    ("--alerts", "alerts", "An alerts table (rfmx alerts -o): the top alerts by value at stake."),
)


def table_options(f):
    """The --scores ... --alerts options, one per rfmx table the report draws from."""
    for option, _, text in reversed(TABLE_OPTIONS):
        f = click.option(option, type=click.Path(dir_okay=False), default=None, help=text)(f)
    return f


@files_only_output
@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The report: one self-contained HTML file that opens offline.")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), default=None,
              help="Also write each figure as FIGURE.svg and FIGURE.png into this folder (made if missing).")
@click.option("--title", default=None, help="The report's title [default: Customer value report].")
@table_options
@score_options
@column_options
@stream_options
def report(sources, output, figures_dir, title, scores, timeline, migration, cohorts, clusters, k_table, dendrogram,
           clv, calibration, alerts, bins, ties, monetary, cuts, segments, weights, tiers, customer, time_col, amount,
           order_id, as_of, since, threads, batch_size, amount_scale, on_null, delimiter, state_in, state_out,
           progress):
    """An offline HTML report of every analysis: headline numbers, the R x F heatmap,
    segments, the Lorenz curve; with the other tables, migration, sizes over time, cohorts,
    cluster profiles, k choice, the Ward tree and CLV matrices.

    \b
    Examples:
      rfmx report orders.parquet -o report.html            # scores the orders first (as rfmx score)
      rfmx report --scores scores.parquet --timeline snapshots.parquet --cohorts cohorts.parquet \\
          --clusters clusters.parquet --k-table k.csv --dendrogram tree.json --clv clv.parquet \\
          --calibration check.csv -o report.html
      rfmx report --scores scores.parquet --figures figures/   # SVG and PNG files for slides

    SOURCES are order files, globs, a database (with --query or --table) or - for
    standard input.  A table without the columns of one figure gives the report without it and a note; a
    file that is not the rfmx table it is given as is an error.  Needs the report extra:
    pip install 'rfmx[report]'.
    """
    from .main import run_guarded

    tables = dict(scores=scores, timeline=timeline, migration=migration, cohorts=cohorts, clusters=clusters,
                  k_table=k_table, dendrogram=dendrogram, clv=clv, calibration=calibration, alerts=alerts)
    if (sources or state_in) and scores:
        raise click.UsageError("give order SOURCES (or --state-in) to score, or --scores, not both")
    if not (sources or state_in) and all(v is None for v in tables.values()):
        raise click.UsageError("give order SOURCES to score, or --scores and/or the other tables (see --help)")
    if not output and not figures_dir:
        raise click.UsageError("give -o/--output and/or --figures")
    options = dict(bins=bins, ties=ties, monetary=monetary, cuts=cuts, segments=segments, weights=weights,
                   tiers=tiers, clv=None, clusters=None, threads=threads)

    def run():
        from pathlib import Path

        from rfmx.outputs import CommandFiles
        from rfmx.report import FIGURES, check_extra

        check_extra()  # before anything is read: the figures cannot be drawn without it
        files = CommandFiles().read("SOURCES", *sources).write("-o", output)
        if sources or state_in:
            files.read("--segments", segments).read("--weights", weights).state("--state-in", state_in,
                                                                               "--state-out", state_out)
        for option, key, _ in TABLE_OPTIONS:
            files.read(option, tables[key])
        folder = Path(figures_dir) if figures_dir else None
        if folder is not None:
            for key, _, _ in FIGURES:
                for suffix in (".svg", ".png"):
                    files.write(f"--figures {key}{suffix}", folder / f"{key}{suffix}")
        made = folder is not None and not folder.exists()
        if made:
            folder.mkdir(parents=True)
        try:
            with files:  # checks every output before anything is read; commits them together at the end
                built = build(files, folder)
        except BaseException:
            if made and not any(folder.iterdir()):
                folder.rmdir()
            raise
        n = len(built.figures)
        where = f" -> {output} ({Path(output).stat().st_size / 1e6:.2f} MB)" if output else ""
        click.echo(f"rfmx report: {n} figure{'s' if n != 1 else ''}{where}"
                   + (f", SVG and PNG in {figures_dir}" if folder is not None else ""), err=True)
        for note in built.notes:
            click.echo(f"rfmx report: {note}", err=True)

    def build(files, folder):
        from rfmx.report import build_report

        inputs = dict(tables)
        if sources or state_in:
            from .score import build_steps, run_steps

            steps = build_steps(options)  # scoring options are checked before any row is read
            state = build_state_from_options(sources, customer, time_col, amount, order_id, as_of, since, threads,
                                             batch_size, amount_scale, on_null, delimiter, state_in, progress)
            if state_out:
                files.save("--state-out", state)
            report_state(state)
            state.drop_index()  # not needed from here on: free it before the result is built
            inputs["scores"] = run_steps(state.finalize(as_of, consume=True), steps)
        built = build_report(title=title, threads=threads, **inputs)
        if sources or state_in:
            built.inputs[0] = ("scored per-customer table", "scored from " + ", ".join(
                list(sources) + ([f"--state-in {state_in}"] if state_in else [])))
        if output:
            files.write_text("-o", built.html())
        if folder is not None:
            for fig in built.figures:
                files.write_text(f"--figures {fig.key}.svg", fig.svg())
                files.staged(f"--figures {fig.key}.png").write_bytes(fig.png())
        return built

    run_guarded(run)
