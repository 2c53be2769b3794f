"""rfmx report, rfmx.plot and the report's hooks: the page holds every figure the inputs
allow and nothing from the network, figures export to SVG/PNG, missing columns give notes,
wrong files give one-line errors with nothing written, and nothing imports the plotting
library unless a report or figure is asked for."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import altair as alt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import rfmx
from badinput import fails_cleanly, run_cli
from reportdata import make_report_inputs, ok
from rfmx import figures, plot
from rfmx.report import FIGURES, build_report

ALL_TABLES = ("scores", "timeline", "cohorts", "clusters", "k_table", "dendrogram", "clv", "calibration")
FROM_ALL = {"lorenz", "rf_heatmap", "segments", "migration", "segment_sizes", "lifecycle_sizes", "cohort_retention",
            "cluster_snake", "cluster_sizes", "k_curve", "dendrogram", "clv_probability_alive", "clv_expected_purchases",
            "calibration", "value_distribution"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_report_inputs(tmp_path_factory.mktemp("report-inputs"))


def _options(inputs, names=ALL_TABLES):
    args = []
    for name in names:
        args += [f"--{name.replace('_', '-')}", inputs[name]]
    return args


def _figures_in(page: str) -> list[str]:
    return re.findall(r'<figure class="rfmx-figure" id="figure-[a-z_]+" data-figure="([a-z_]+)"', page)


def _values(spec: dict, key: str | None = None) -> list[dict]:
    """The rows of a spec's first inline data set (whose rows have ``key``); Altair may move
    them to ``datasets``."""
    for view in [spec] + spec.get("layer", []) + spec.get("hconcat", []):
        data = view.get("data") or {}
        rows = data.get("values", spec.get("datasets", {}).get(data.get("name")))
        if rows is not None and (key is None or (rows and key in rows[0])):
            return rows
    raise AssertionError("no inline data")


def _specs_in(page: str) -> dict:
    found = re.findall(r'data-figure="([a-z_]+)".*?<script type="application/json" class="spec">(.*?)</script>',
                       page, flags=re.S)
    return {key: json.loads(text) for key, text in found}


# --- the page -------------------------------------------------------------------------------------

def test_report_of_every_table_is_one_offline_file(inputs, tmp_path):
    out = tmp_path / "report.html"
    r = ok(run_cli("report", *_options(inputs), "-o", out))
    page = out.read_text(encoding="utf-8")
    assert set(_figures_in(page)) == FROM_ALL
    assert _figures_in(page) == [k for k, _, _ in FIGURES if k in FROM_ALL]   # page order
    assert f"{len(FROM_ALL)} figures" in r.stderr and "Not shown" not in page
    # self-contained: no external script, style, font or image; the Vega libraries are inline
    markup = re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S | re.I)
    assert markup.count("<script") == 2 + len(FROM_ALL)   # the libraries, the drawing code, one spec each
    assert not re.search(r"<(script|img|iframe|source|embed)[^>]*\bsrc=", markup, flags=re.I)
    assert not re.search(r"<link\b", markup, flags=re.I)
    assert "@import" not in markup and "url(" not in markup
    assert "vegaEmbed" in page and len(page.encode()) < 3_000_000
    # headline numbers are rfmx summary's
    conc = rfmx.value_concentration(pq.read_table(inputs["scores"]))
    assert f"{conc['customers']:,}</div>" in page
    assert f"{100 * conc['top_shares'][20]:.1f} %" in page
    assert 'id="segment-table"' in page and 'id="abc"' in page


def _views(spec: dict) -> list[dict]:
    """A spec and every view nested in it (layers, concatenations)."""
    out = [spec]
    for key in ("layer", "hconcat", "vconcat"):
        for view in spec.get(key, []):
            out += _views(view)
    return out


def test_every_figure_has_title_hint_axis_titles_and_tooltips(inputs):
    report = build_report(**{k: inputs[k] for k in ALL_TABLES})
    assert {f.key for f in report.figures} == FROM_ALL
    for fig in report.figures:
        spec = fig.chart.to_dict()  # validates against the Vega-Lite schema
        assert spec["title"]["text"] and spec["title"]["subtitle"], fig.key
        text = json.dumps(spec)
        assert '"tooltip"' in text, fig.key
        views = _views(spec)
        axes = [enc[ch] for v in views for ch in ("x", "y") if (enc := v.get("encoding")) and ch in enc]
        assert axes and all("title" in a for a in axes if a.get("field") not in ("x", "y")), fig.key


def test_figures_folder_gets_svg_and_png_of_each(inputs, tmp_path):
    folder = tmp_path / "figs" / "deck"
    ok(run_cli("report", *_options(inputs, ("scores", "clusters", "clv")), "--figures", folder))
    names = sorted(p.name for p in folder.iterdir())
    keys = {"lorenz", "rf_heatmap", "segments", "cluster_snake", "cluster_sizes", "clv_probability_alive",
            "clv_expected_purchases", "value_distribution"}
    assert names == sorted(f"{k}{s}" for k in keys for s in (".svg", ".png"))
    for key in keys:
        png = (folder / f"{key}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        svg = (folder / f"{key}.svg").read_text()
        assert svg.lstrip().startswith("<svg") and "<text" in svg


def test_report_from_order_sources_scores_them_first(inputs, tmp_path):
    out = tmp_path / "r.html"
    r = ok(run_cli("report", inputs["orders"], "--bins", "5", "-o", out))
    page = out.read_text()
    assert _figures_in(page) == ["lorenz", "rf_heatmap", "segments"]
    assert "scored from" in page and "customers" in r.stderr
    # the same numbers as scoring first and reporting the scores
    cells = _values(_specs_in(page)["rf_heatmap"])
    expected = figures.rf_grid(pq.read_table(inputs["scores"])).to_pylist()
    assert cells == expected


def test_missing_columns_leave_figures_out_with_a_note(inputs, tmp_path):
    scores = pq.read_table(inputs["scores"]).drop_columns(["segment", "r_score"])
    path = tmp_path / "partial.parquet"
    pq.write_table(scores, path)
    aggregates = tmp_path / "agg.csv"
    ok(run_cli("aggregate", inputs["orders"], "-o", aggregates))
    for source, gone in ((path, ("rf_heatmap", "segments")), (aggregates, ("rf_heatmap", "segments"))):
        out = tmp_path / "r.html"
        r = ok(run_cli("report", "--scores", source, "-o", out))
        page = out.read_text()
        assert _figures_in(page) == ["lorenz"]
        assert 'id="section-notes"' in page
        for key in gone:
            title = dict((k, t) for k, _, t in FIGURES)[key]
            assert f"{title} left out" in page and f"{title} left out" in r.stderr


def test_clv_columns_of_a_score_table_draw_what_they_can(inputs):
    scores = pq.read_table(inputs["scores"])
    clv = pq.read_table(inputs["clv"]).select(["customer_id", "probability_alive", "expected_purchases", "clv"])
    joined = scores.join(clv, "customer_id")
    report = build_report(scores=joined)
    keys = [f.key for f in report.figures]
    assert "value_distribution" in keys and "clv_probability_alive" not in keys
    assert any("frequency/recency" in n for n in report.notes)


def test_lifecycle_sizes_appear_when_the_snapshots_have_a_lifecycle(inputs, tmp_path):
    snaps = pq.read_table(inputs["timeline"])           # rfmx timeline adds each customer's lifecycle stage
    assert "lifecycle" in snaps.column_names
    without = tmp_path / "no-lifecycle.parquet"
    pq.write_table(snaps.drop_columns(["lifecycle"]), without)
    assert "lifecycle_sizes" not in {f.key for f in build_report(timeline=without).figures}
    report = build_report(timeline=inputs["timeline"])
    values = _values(next(f for f in report.figures if f.key == "lifecycle_sizes").spec)
    df = snaps.to_pandas()
    expected = df.groupby(["as_of", "lifecycle"]).size()
    got = {(v["as_of"], v["label"]): v["customers"] for v in values}
    assert got and sum(got.values()) == len(df)
    for (stamp, label), c in expected.items():
        assert got[(stamp.strftime("%Y-%m-%d"), label)] == c
    from rfmx.stages import STAGES

    labels = list(dict.fromkeys(v["label"] for v in values))
    assert labels == [s for s in STAGES if s in labels]  # new ... lost, in the stages' order


def test_alerts_table_is_drawn_when_given(inputs, tmp_path):
    scores = pq.read_table(inputs["scores"]).slice(0, 40)
    alerts = pa.table({"customer_id": scores.column("customer_id"),
                       "value_at_stake": pc.multiply(scores.column("monetary_total"), 0.5),
                       "segment": scores.column("segment").cast(pa.string())})
    path = tmp_path / "alerts.csv"
    pcsv.write_csv(alerts, path)
    out = tmp_path / "r.html"
    ok(run_cli("report", "--alerts", path, "-o", out))
    values = _values(_specs_in(out.read_text())["alerts"])
    top = sorted(alerts.column("value_at_stake").to_pylist(), reverse=True)[:25]
    assert [v["value_at_stake"] for v in values] == top


def test_migration_from_the_timeline_is_that_of_its_last_two_snapshots(inputs):
    snaps = pq.read_table(inputs["timeline"])
    stamps = sorted(set(snaps.column("as_of").to_pylist()))
    earlier, later = (snaps.filter(pc.equal(snaps.column("as_of"), pa.scalar(s, snaps.schema.field("as_of").type)))
                      for s in stamps[-2:])
    expected = figures.migration_cells(rfmx.migration(earlier, later)).drop_columns(["as_of_from", "as_of_to"])
    report = build_report(timeline=inputs["timeline"])
    fig = next(f for f in report.figures if f.key == "migration")
    values = _values(fig.spec)
    got = [{k: v for k, v in row.items() if not k.startswith("as_of")} for row in values]
    assert got == expected.to_pylist()
    assert values[0]["as_of_to"].startswith(stamps[-1].strftime("%Y-%m-%d"))
    # the same from a table in memory and from the migration table of rfmx timeline
    assert next(f for f in build_report(timeline=snaps).figures if f.key == "migration").spec == fig.spec
    # rfmx timeline's own migration table, last pair: the same customers, the same revenue
    table = next(f for f in build_report(migration=inputs["migration"]).figures if f.key == "migration")
    from_table = _values(table.spec)
    assert [(v["from_segment"], v["to_segment"], v["customers"]) for v in from_table] == \
        [(v["from_segment"], v["to_segment"], v["customers"]) for v in values]
    assert [v["revenue"] for v in from_table] == pytest.approx([v["revenue"] for v in values], rel=1e-9)


def test_one_and_two_threads_give_the_same_page(inputs):
    pages = [build_report(**{k: inputs[k] for k in ALL_TABLES}, threads=t).html() for t in (1, 2)]
    assert pages[0] == pages[1]


def test_report_and_html_size_do_not_grow_with_customers(inputs, tmp_path):
    """A report of 20x the customers is the same size to within the digits of its numbers."""
    scores = pq.read_table(inputs["scores"])
    big = pa.concat_tables([scores] * 20)
    small_page = build_report(scores=scores).html()
    big_page = build_report(scores=big).html()
    assert abs(len(big_page) - len(small_page)) < 0.02 * len(small_page)


# --- rfmx.plot: a figure test per plot --------------------------------------------------------------

def _svg(chart) -> str:
    import vl_convert as vlc

    return vlc.vegalite_to_svg(chart.to_dict(), vl_version=plot.vegalite_version())


def _chart_values(chart) -> list[dict]:
    return _values(chart.to_dict())


def test_dendrogram_and_recommended_k_plots(inputs):
    chart = plot.dendrogram(inputs["dendrogram"])
    spec = chart.to_dict()
    links, tips, info = figures.dendrogram(inputs["dendrogram"])
    assert _values(spec, "x2") == links.to_pylist() and _values(spec, "leaves") == tips.to_pylist()
    assert spec["title"]["text"] == "Ward tree, cut into 4 clusters"
    svg = _svg(chart)
    assert len(re.findall(r"<(path|line)\b", svg)) >= links.num_rows
    k = pcsv.read_csv(inputs["k_table"])
    choice = figures.k_choice(k)
    assert choice.k in k["k"].to_pylist()
    assert f"Recommended: {choice.reason}." in " ".join(plot.k_curve(k).to_dict()["title"]["subtitle"])
    assert figures.k_curve(k)["recommended"].to_pylist() == [v == choice.k for v in sorted(k["k"].to_pylist())]


@pytest.mark.parametrize("name", ["cluster_snake", "cluster_sizes", "k_curve", "clv_probability_alive",
                                  "clv_expected_purchases", "calibration", "value_distribution"])
def test_cluster_and_clv_plots(inputs, name, tmp_path):
    tables = {"clusters": pq.read_table(inputs["clusters"]), "k": pcsv.read_csv(inputs["k_table"]),
              "clv": pq.read_table(inputs["clv"]), "calibration": pcsv.read_csv(inputs["calibration"])}
    chart, data, title = {
        "cluster_snake": (plot.cluster_snake(tables["clusters"]), figures.cluster_snake(tables["clusters"]),
                          "snake plot"),
        "cluster_sizes": (plot.cluster_sizes(tables["clusters"]), figures.cluster_sizes(tables["clusters"]),
                          "Cluster sizes"),
        "k_curve": (plot.k_curve(tables["k"]), figures.k_curve(tables["k"]), "elbow and silhouette"),
        "clv_probability_alive": (plot.clv_matrix(tables["clv"]), figures.clv_matrix(tables["clv"])[0],
                                  "mean probability alive"),
        "clv_expected_purchases": (plot.clv_matrix(tables["clv"], "expected_purchases"),
                                   figures.clv_matrix(tables["clv"])[0], "mean expected purchases"),
        "calibration": (plot.calibration(tables["calibration"]), figures.calibration(tables["calibration"]),
                        "Calibration vs holdout"),
        "value_distribution": (plot.value_distribution(tables["clv"]), figures.value_distribution(tables["clv"])[0],
                               "Distribution of predicted value"),
    }[name]
    assert isinstance(chart, alt.TopLevelMixin)
    assert _chart_values(chart) == data.to_pylist()       # the chart draws exactly the figure's data
    svg = _svg(chart)
    assert title in svg
    marks = len(re.findall(r"<(path|rect|circle)\b", svg))
    assert marks >= data.num_rows // 2, (name, marks)
    plot.save(chart, tmp_path / f"{name}.png")
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_module_is_rfmx_plot(inputs):
    scores = pq.read_table(inputs["scores"])
    assert rfmx.plot is plot
    for fn in (plot.rf_heatmap, plot.segment_bars, plot.lorenz):
        assert isinstance(fn(scores), alt.TopLevelMixin)
    assert _values(plot.lorenz(scores).to_dict(), "revenue_share") == figures.lorenz(scores).to_pylist()
    with pytest.raises(rfmx.RfmxError, match="json"):
        plot.save(plot.lorenz(scores), "fig.gif")


def test_python_api_writes_the_page_and_figures(inputs, tmp_path):
    report = rfmx.write_report(tmp_path / "r.html", scores=inputs["scores"], figures=tmp_path / "f")
    assert (tmp_path / "r.html").stat().st_size > 100_000
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == sorted(
        f"{f.key}{s}" for f in report.figures for s in (".png", ".svg"))


# --- hooks: demo, imports ---------------------------------------------------------------------------

def test_demo_ends_with_the_report(tmp_path):
    r = ok(run_cli("demo", "--rows", 5000, "--out", tmp_path / "demo"))
    page = tmp_path / "demo" / "report.html"
    assert page.is_file() and f"-> {page}" in r.output
    assert _figures_in(page.read_text()) == ["lorenz", "rf_heatmap", "segments"]


def test_import_and_help_do_not_import_the_plotting_library():
    code = ("import sys, rfmx, rfmx.cli.main; "
            "from click.testing import CliRunner; "
            "CliRunner().invoke(rfmx.cli.main.main, ['--help']); "
            "CliRunner().invoke(rfmx.cli.main.main, ['report', '--help']); "
            "rfmx.score, rfmx.write_report; "
            "print(sorted(m for m in ('altair', 'vl_convert', 'numba', 'jsonschema') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- bad input --------------------------------------------------------------------------------------

def test_bad_inputs_fail_cleanly(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    page, figs = out / "r.html", out / "figs"
    watched = (out, inputs["scores"].parent)
    # not an rfmx table: the orders themselves, a migration table given as scores (with a hint)
    fails_cleanly(["report", "--scores", inputs["orders"], "-o", page],
                  r"--scores .*orders.parquet: not a scored per-customer table made by rfmx", *watched)
    fails_cleanly(["report", "--scores", inputs["migration"], "-o", page, "--figures", figs],
                  r"looks like a segment migration table .*give it with --migration", *watched)
    fails_cleanly(["report", "--cohorts", inputs["clv"], "-o", page], r"--cohorts .*not a cohort table", *watched)
    fails_cleanly(["report", "--scores", inputs["scores"], "--k-table", inputs["calibration"], "-o", page],
                  r"--k-table .*no columns 'k', 'inertia', 'silhouette'.*--calibration", *watched)
    fails_cleanly(["report", "--scores", tmp_path / "missing.parquet", "-o", page], r"file not found", *watched)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    fails_cleanly(["report", "--scores", notes, "-o", page], r"unknown table format '.txt'", *watched)
    # another version: a column of another type, metadata this rfmx does not write
    scores = pq.read_table(inputs["scores"])
    retyped = tmp_path / "retyped.parquet"
    pq.write_table(scores.set_column(scores.column_names.index("r_score"), "r_score",
                                     scores.column("r_score").cast(pa.string())), retyped)
    fails_cleanly(["report", "--scores", retyped, "-o", page], r"column 'r_score' has type string.*another rfmx "
                  r"version", *watched)
    old = tmp_path / "old.parquet"
    meta = dict(scores.schema.metadata)
    meta[b"rfmx.scores"] = b'{"q": 5}'
    pq.write_table(scores.replace_schema_metadata(meta), old)
    fails_cleanly(["report", "--scores", old, "-o", page], r"rfmx.scores metadata is not what this rfmx", *watched)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really")
    fails_cleanly(["report", "--timeline", garbage, "-o", page], r"--timeline .*garbage.parquet: cannot read",
                  *watched)
    # usage errors
    fails_cleanly(["report", inputs["orders"], "--scores", inputs["scores"], "-o", page], r"not both", *watched,
                  exit_code=2)
    fails_cleanly(["report", "-o", page], r"give order SOURCES", *watched, exit_code=2)
    fails_cleanly(["report", "--scores", inputs["scores"]], r"-o/--output and/or --figures", *watched, exit_code=2)
    # an output that is an input
    fails_cleanly(["report", "--scores", inputs["scores"], "-o", inputs["scores"]], r"would overwrite the input",
                  *watched)
    assert not figs.exists()


def test_without_the_report_extra_the_error_is_one_line(inputs, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("altair", "vl_convert") else real(name, *a))
    fails_cleanly(["report", "--scores", inputs["scores"], "-o", tmp_path / "r.html"],
                  r"need the report extra .*pip install 'rfmx\[report\]'", tmp_path)
    r = ok(run_cli("demo", "--rows", 2000, "--out", tmp_path / "demo"))
    assert "pip install 'rfmx[report]'" in r.output and not (tmp_path / "demo" / "report.html").exists()
