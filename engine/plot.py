"""Figures of every rfmx analysis, as Altair (Vega-Lite) charts.

Each function takes an rfmx table — a scored per-customer table, timeline snapshots, a
migration, cohort, cluster, k, CLV or calibration table — and returns an Altair chart
whose data are the aggregates of :mod:`rfmx.figures` (cells, curves, bins: never one point
per customer), with a title, a one-line reading hint as its subtitle, axis titles with
units and tooltips with the exact numbers.  In a notebook the chart draws itself; save it
with ``chart.save("fig.svg")`` / ``.png`` / ``.html``, or :func:`save`.

>>> import rfmx
>>> rfmx.plot.rf_heatmap(rfmx.score("orders.parquet"))

Needs the ``report`` extra (``pip install 'rfmx[report]'``: Altair and vl-convert); the
rest of rfmx never imports it.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from . import figures
from .errors import RfmxError

try:
    import altair as alt
except ImportError:  # pragma: no cover - depends on the installation
    raise RfmxError("figures need the report extra: pip install 'rfmx[report]' (Altair and vl-convert)") from None

__all__ = ["rf_heatmap", "segment_bars", "lorenz", "migration_matrix", "segment_sizes", "cohort_retention",
           "cluster_snake", "cluster_sizes", "k_curve", "dendrogram", "clv_matrix", "calibration", "value_distribution",
           "alerts", "save", "spec", "vegalite_version", "WIDTH"]

WIDTH = 640
COUNT = ",d"        # customers: exact integers
MONEY = ",.2f"      # money in units, to the cent
SHARE = ".2%"
MEAN = ",.2f"
_HEATMAP_TEXT_MAX_BINS = 7   # above this, cells are too small for names: tooltips only


def _data(table: pa.Table) -> alt.Data:
    """A small table as inline Vega-Lite data (rows of plain JSON values)."""
    return alt.Data(values=table.to_pylist())


def _title(text: str, hint: str) -> alt.TitleParams:
    """The title, with the reading hint under it (wrapped: a subtitle never wraps by itself)."""
    import textwrap

    return alt.TitleParams(text=text, subtitle=textwrap.wrap(hint, 115), anchor="start", subtitleColor="#555")


def _tip(field: str, kind: str, title: str, fmt: str | None = None) -> alt.Tooltip:
    return alt.Tooltip(f"{field}:{kind}", title=title, **({"format": fmt} if fmt else {}))


# --- scores ---------------------------------------------------------------------------------------

def rf_heatmap(scores: pa.Table) -> alt.LayerChart:
    """The R x F grid of a scored table: one cell per (R score, F score), coloured by
    customers (or revenue, or mean revenue: the radio buttons in the HTML report), with
    the segment of each cell written on it; tooltips give all three and the segment."""
    grid = figures.rf_grid(scores)
    q = int(max(grid.column("r_score").to_pylist() or [1]))
    measure = alt.param(name="measure", value="customers",
                        bind=alt.binding_radio(options=["customers", "revenue", "mean revenue"], name="colour by "))
    base = alt.Chart(_data(grid)).transform_calculate(
        shown="measure == 'revenue' ? datum.revenue : measure == 'mean revenue' ? datum.mean_revenue "
              ": datum.customers"
    ).transform_joinaggregate(shown_max="max(shown)").encode(
        x=alt.X("f_score:O", title="F score (frequency; higher = more orders)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("r_score:O", title="R score (recency; higher = more recent)", sort="descending"),
    )
    tips = [_tip("r_score", "O", "R score"), _tip("f_score", "O", "F score"),
            _tip("segment", "N", "segment"), _tip("customers", "Q", "customers", COUNT),
            _tip("customer_share", "Q", "share of customers", SHARE),
            _tip("revenue", "Q", "revenue (money units)", MONEY),
            _tip("mean_revenue", "Q", "mean revenue per customer", MONEY),
            _tip("segment_share", "Q", "share of the cell in this segment", SHARE)]
    cells = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("shown:Q", title="colour: selected measure", scale=alt.Scale(scheme="blues")),
        tooltip=tips,
    ).add_params(measure)
    layers = [cells]
    if q <= _HEATMAP_TEXT_MAX_BINS:
        ink = alt.condition("datum.shown > 0.55 * datum.shown_max", alt.value("white"), alt.value("#222"))
        layers.append(base.mark_text(dy=-7, fontSize=10, fontWeight="bold").encode(
            text=alt.Text("segment:N"), color=ink, tooltip=tips))
        layers.append(base.mark_text(dy=8, fontSize=10).encode(
            text=alt.Text("customers:Q", format=COUNT), color=ink, tooltip=tips))
    return alt.layer(*layers).properties(
        width=WIDTH, height=min(WIDTH, 80 * q),
        title=_title("Recency x frequency: customers, revenue and segment per cell",
                     "Top right are recent, frequent buyers; bottom right frequent buyers who stopped coming. "
                     "Hover a cell for exact numbers."))


def segment_bars(scores: pa.Table | None = None, *, summary: pa.Table | None = None) -> alt.Chart:
    """Share of customers and share of revenue per segment (in the map's order), with the
    mean and median recency, orders and money of each segment in the tooltips.  ``summary``:
    the segment table of ``scores`` (:func:`rfmx.figures.segments`) if already made."""
    table = summary if summary is not None else figures.segments(scores)
    order = table.column("segment").to_pylist()
    tips = [_tip("segment", "N", "segment"), _tip("customers", "Q", "customers", COUNT),
            _tip("customer_share", "Q", "share of customers", SHARE),
            _tip("revenue", "Q", "revenue (money units)", MONEY), _tip("revenue_share", "Q", "share of revenue", SHARE),
            _tip("recency_mean", "Q", "recency, mean (days)", ",.1f"),
            _tip("recency_median", "Q", "recency, median (days)", ",.1f"),
            _tip("orders_mean", "Q", "orders, mean", ",.2f"), _tip("orders_median", "Q", "orders, median", ",.1f"),
            _tip("monetary_mean", "Q", "money per customer, mean", MONEY),
            _tip("monetary_median", "Q", "money per customer, median", MONEY)]
    return alt.Chart(_data(table)).transform_fold(
        ["customer_share", "revenue_share"], as_=["measure_key", "share"]
    ).transform_calculate(
        measure="datum.measure_key == 'customer_share' ? 'share of customers' : 'share of revenue'"
    ).mark_bar().encode(
        y=alt.Y("segment:N", sort=order, title=None),
        yOffset=alt.YOffset("measure:N", sort=["share of customers", "share of revenue"]),
        x=alt.X("share:Q", title="share of all customers / of net revenue (%)", axis=alt.Axis(format="%")),
        color=alt.Color("measure:N", title=None, scale=alt.Scale(range=["#9ecae1", "#08519c"]),
                        sort=["share of customers", "share of revenue"]),
        tooltip=tips,
    ).properties(width=WIDTH, height=alt.Step(11),
                 title=_title("Segments: share of customers and of revenue",
                              "A segment whose dark bar is longer than its light one earns more than its "
                              "head count; hover for mean and median recency, orders and money."))


def lorenz(scores: pa.Table) -> alt.LayerChart:
    """The Lorenz curve of revenue, top customers first, with the equality line, the
    share of the top 20 % marked and the 80/20 rule's point for comparison."""
    curve = figures.lorenz(scores)
    rows = curve.to_pylist()
    at20 = next((r for r in rows if abs(r["customer_share"] - 0.2) < 1e-12), None)
    line = alt.Chart(_data(curve)).mark_line(point=alt.OverlayMarkDef(size=10)).encode(
        x=alt.X("customer_share:Q", title="share of customers, biggest spenders first (%)",
                axis=alt.Axis(format="%")),
        y=alt.Y("revenue_share:Q", title="share of revenue (%)", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        tooltip=[_tip("customer_share", "Q", "top share of customers", ".1%"),
                 _tip("customers", "Q", "customers", COUNT),
                 _tip("revenue", "Q", "their revenue (money units)", MONEY),
                 _tip("revenue_share", "Q", "share of revenue", SHARE)],
    )
    equal = alt.Chart(alt.Data(values=[{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}])).mark_line(
        strokeDash=[4, 4], color="#999").encode(x="x:Q", y="y:Q")
    layers = [equal, line]
    if at20 is not None:
        mark = {"x": 0.2, "y": at20["revenue_share"], "customers": at20["customers"],
                "label": f"top 20 % of customers: {100 * at20['revenue_share']:.1f} % of revenue"}
        rule = {"x": 0.2, "y": 0.8, "label": "80/20 rule"}
        points = alt.Chart(alt.Data(values=[mark])).encode(
            x="x:Q", y="y:Q",
            tooltip=[alt.Tooltip("label:N", title="20/80 point"), _tip("customers", "Q", "customers", COUNT),
                     _tip("y", "Q", "share of revenue", SHARE)])
        layers += [points.mark_point(size=140, color="#d62728", filled=True),
                   points.mark_text(align="left", dx=10, dy=14, color="#d62728").encode(text="label:N"),
                   alt.Chart(alt.Data(values=[rule])).mark_point(shape="cross", size=120, color="#777").encode(
                       x="x:Q", y="y:Q", tooltip=[alt.Tooltip("label:N", title="reference")]),
                   alt.Chart(alt.Data(values=[rule])).mark_text(align="left", dx=8, dy=-8, color="#777").encode(
                       x="x:Q", y="y:Q", text="label:N")]
    return alt.layer(*layers).properties(
        width=WIDTH, height=360,
        title=_title("Revenue concentration (Lorenz curve)",
                     "The further the curve bows above the dashed line, the more revenue depends on a few "
                     "customers; the red dot is what the top 20 % bring."))


# --- timeline -------------------------------------------------------------------------------------

def migration_matrix(migration: pa.Table, order=None) -> alt.LayerChart:
    """Where the customers of each segment went between the last two snapshots of a
    migration table (``rfmx timeline --migration-out`` or :func:`rfmx.migration`):
    rows are the earlier segment, columns the later one, colour the share of the row."""
    cells = figures.migration_cells(migration)
    froms = figures.label_order(list(dict.fromkeys(cells.column("from_segment").to_pylist())), order)
    tos = figures.label_order(list(dict.fromkeys(cells.column("to_segment").to_pylist())), order)
    first = cells.slice(0, 1).to_pylist()
    when = (f" ({first[0]['as_of_from'][:10]} -> {first[0]['as_of_to'][:10]})"
            if first and first[0]["as_of_from"] and first[0]["as_of_to"] else "")
    tips = [_tip("from_segment", "N", "from"), _tip("to_segment", "N", "to"),
            _tip("customers", "Q", "customers", COUNT), _tip("from_share", "Q", "share of the from-segment", SHARE),
            _tip("revenue", "Q", "their revenue at the later date (money units)", MONEY)]
    base = alt.Chart(_data(cells)).encode(
        x=alt.X("to_segment:N", sort=tos, title="segment at the later snapshot", axis=alt.Axis(labelAngle=-35)),
        y=alt.Y("from_segment:N", sort=froms, title="segment at the earlier snapshot"))
    layers = [base.mark_rect(stroke="white").encode(
        color=alt.Color("from_share:Q", title="share of row", scale=alt.Scale(scheme="oranges", domain=[0, 1]),
                        legend=alt.Legend(format="%")), tooltip=tips)]
    if max(len(froms), len(tos)) <= 14:
        layers.append(base.mark_text(fontSize=9).encode(
            text=alt.Text("customers:Q", format=COUNT),
            color=alt.condition("datum.from_share > 0.6", alt.value("white"), alt.value("#222")), tooltip=tips))
    return alt.layer(*layers).properties(
        width=WIDTH, height=alt.Step(30),
        title=_title(f"Segment migration between the last two snapshots{when}",
                     "Each row sums to 100 %: the diagonal is who stayed; right of it usually means moving "
                     "towards the lapsed segments. Numbers are customers."))


def segment_sizes(snapshots, by: str = "segment", order=None) -> alt.Chart:
    """Customers per segment (``by="segment"``) or lifecycle stage (``by="lifecycle"``) at
    every snapshot of a timeline, as stacked bars."""
    sizes = figures.segment_sizes(snapshots, by=by, order=order)
    labels = list(dict.fromkeys(sizes.column("label").to_pylist()))
    what = "Segment" if by == "segment" else by.replace("_", " ").capitalize()
    return alt.Chart(_data(sizes)).transform_calculate(
        rank=f"indexof({labels!r}, datum.label)"
    ).mark_bar().encode(
        x=alt.X("as_of:O", title="snapshot (as of, midnight starting the date)", axis=alt.Axis(labelAngle=-45)),
        y=alt.Y("customers:Q", title="customers", stack="zero"),
        color=alt.Color("label:N", sort=labels, title=by),
        order=alt.Order("rank:Q"),
        tooltip=[_tip("as_of", "O", "as of"), _tip("label", "N", by), _tip("customers", "Q", "customers", COUNT),
                 _tip("share", "Q", "share of customers", SHARE)],
    ).properties(width=WIDTH, height=320,
                 title=_title(f"{what} sizes over time",
                              f"Bar height is every customer with an order before the date; a band that "
                              f"thickens is a {by} that grows."))


def cohort_retention(cohorts: pa.Table, *, max_cohorts: int = 48, max_periods: int = 48) -> alt.LayerChart:
    """The cohort retention heatmap of ``rfmx timeline --cohorts-out``: one row per
    acquisition cohort, one column per period since, colour the share still buying."""
    cells, n_cohorts = figures.cohort_cells(cohorts, max_cohorts=max_cohorts, max_periods=max_periods)
    later = [r for r in cells.column("retention").to_pylist() if r is not None]
    periods = cells.column("period_index").to_pylist()
    top = max([r for r, p in zip(later, periods) if p > 0] or [1.0]) or 1.0
    shown = "" if n_cohorts <= max_cohorts else f" (the latest {max_cohorts} of {n_cohorts} cohorts)"
    tips = [_tip("cohort", "O", "cohort (first order in the period from)"),
            _tip("period_index", "O", "periods since"), _tip("customers_in_cohort", "Q", "customers in cohort", COUNT),
            _tip("active_customers", "Q", "active customers", COUNT), _tip("retention", "Q", "retention", SHARE)]
    if "revenue" in cells.column_names:
        tips.append(_tip("revenue", "Q", "revenue in the period (money units)", MONEY))
    if "cumulative_revenue_per_customer" in cells.column_names:
        tips.append(_tip("cumulative_revenue_per_customer", "Q", "cumulative revenue per customer", MONEY))
    return alt.Chart(_data(cells)).mark_rect().encode(
        x=alt.X("period_index:O", title="periods since the cohort's first order", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("cohort:O", title="cohort (period of first order)"),
        color=alt.Color("retention:Q", title="retention",
                        scale=alt.Scale(scheme="greens", domain=[0, top], clamp=True), legend=alt.Legend(format="%")),
        tooltip=tips,
    ).properties(width=WIDTH, height=alt.Step(12),
                 title=_title(f"Cohort retention{shown}",
                              "Each row is the customers who first bought in one period: the share of them buying "
                              "again n periods later. Period 0 is 100 % by definition; colours are scaled to the "
                              "later periods."))


def alerts(table: pa.Table, top: int = 25) -> alt.Chart:
    """The top alerts by value at stake (``rfmx alerts -o``: ``customer_id``,
    ``value_at_stake`` and, shown in the tooltips, the alert and the customer's before/after)."""
    rows = figures.alerts(table, top=top)
    extra = [c for c in rows.column_names if c not in figures.ALERT_COLUMNS + ("label",)]
    return alt.Chart(_data(rows)).mark_bar(color="#d62728").encode(
        y=alt.Y("label:N", sort="-x", title="customer · alert · date", axis=alt.Axis(labelLimit=360)),
        x=alt.X("value_at_stake:Q", title="value at stake (money units)"),
        tooltip=[_tip("customer_id", "N", "customer"), _tip("value_at_stake", "Q", "value at stake", MONEY)]
        + [_tip(c, "N", c) for c in extra],
    ).properties(width=WIDTH, height=alt.Step(16),
                 title=_title(f"Alerts: the top {rows.num_rows} by value at stake",
                              "Start with the longest bars: these customers are worth the most and are slipping; "
                              "hover for the segment, tier and lifecycle before and after."))


# --- clusters -------------------------------------------------------------------------------------

def cluster_snake(clusters: pa.Table) -> alt.Chart:
    """The snake plot: per cluster, the mean standardized (log, z-score) recency, frequency
    and money — the profile that tells clusters apart."""
    points = figures.cluster_snake(clusters)
    features = [label for _, label in figures.SNAKE_FEATURES]
    return alt.Chart(_data(points)).mark_line(point=True).encode(
        x=alt.X("feature:N", sort=features, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("z_mean:Q", title="mean standardized value (z-score of log1p)"),
        color=alt.Color("cluster:N", title="cluster"),
        tooltip=[_tip("cluster", "N", "cluster"), _tip("feature", "N", "feature"),
                 _tip("z_mean", "Q", "mean z-score", ".3f"), _tip("mean", "Q", "mean of the raw column", MEAN),
                 _tip("column", "N", "column"), _tip("customers", "Q", "customers", COUNT)],
    ).properties(width=WIDTH, height=320,
                 title=_title("Cluster profiles (snake plot)",
                              "0 is the average customer; above 0 on Recency means longer since the last order "
                              "(worse), above 0 on Frequency and Monetary means more."))


def cluster_sizes(clusters: pa.Table) -> alt.Chart:
    """Share of customers and share of revenue per cluster."""
    table = figures.cluster_sizes(clusters)
    order = table.column("cluster").to_pylist()
    angle = 0 if max((len(n) for n in order), default=0) * len(order) <= 110 else -40  # long names: slanted
    return alt.Chart(_data(table)).transform_fold(
        ["customer_share", "revenue_share"], as_=["measure_key", "share"]
    ).transform_calculate(
        measure="datum.measure_key == 'customer_share' ? 'share of customers' : 'share of revenue'"
    ).mark_bar().encode(
        x=alt.X("cluster:N", sort=order, title=None, axis=alt.Axis(labelAngle=angle, labelLimit=160)),
        xOffset=alt.XOffset("measure:N", sort=["share of customers", "share of revenue"]),
        y=alt.Y("share:Q", title="share of all customers / of net revenue (%)", axis=alt.Axis(format="%")),
        color=alt.Color("measure:N", title=None, scale=alt.Scale(range=["#9ecae1", "#08519c"]),
                        sort=["share of customers", "share of revenue"]),
        tooltip=[_tip("cluster", "N", "cluster"), _tip("customers", "Q", "customers", COUNT),
                 _tip("customer_share", "Q", "share of customers", SHARE),
                 _tip("revenue", "Q", "revenue (money units)", MONEY),
                 _tip("revenue_share", "Q", "share of revenue", SHARE)],
    ).properties(width=WIDTH, height=280,
                 title=_title("Cluster sizes", "A cluster whose dark bar is taller than its light one earns more "
                                               "than its head count."))


def k_curve(k_table: pa.Table) -> alt.HConcatChart:
    """Inertia (the elbow) and mean silhouette against k, from ``rfmx cluster --k-table``,
    with the recommended k marked and the reason for it in the subtitle."""
    data = figures.k_curve(k_table)
    choice = figures.k_choice(k_table)
    tips = [_tip("k", "O", "k"), _tip("inertia", "Q", "inertia", ",.1f"),
            _tip("variance_explained", "Q", "variance explained", ".2%"),
            _tip("silhouette", "Q", "silhouette", ".4f"), _tip("recommended", "N", "recommended")]
    base = alt.Chart(_data(data)).encode(x=alt.X("k:O", title="k (number of clusters)", axis=alt.Axis(labelAngle=0)),
                                         tooltip=tips)
    size = alt.condition("datum.recommended", alt.value(160), alt.value(30))
    fill = alt.condition("datum.recommended", alt.value("#d62728"), alt.value("#555"))

    def panel(field, title, colour):
        y = alt.Y(f"{field}:Q", title=title)
        line = base.mark_line(color=colour).encode(y=y)
        points = base.mark_point(filled=True).encode(y=y, size=size, color=fill)
        return alt.layer(line, points).properties(width=WIDTH // 2 - 30, height=260)

    elbow = panel("inertia", "inertia (sum of squared distances, standardized units)", "#1f77b4")
    silhouette = panel("silhouette", "mean silhouette (-1..1, higher = better separated)", "#2ca02c")
    why = (f"Recommended: {choice.reason}." if choice.k is not None else f"{choice.reason[0].upper()}"
           f"{choice.reason[1:]}.")
    return alt.hconcat(elbow, silhouette).properties(
        title=_title("Choosing k: elbow and silhouette",
                     f"{why} The red point marks it. Pick k where the inertia stops falling steeply (the elbow) "
                     f"and the silhouette is high."))


def dendrogram(tree) -> alt.LayerChart:
    """A Ward tree (``rfmx cluster --dendrogram-out``, a path or its dict), drawn down to
    the groups :func:`rfmx.figures.dendrogram` keeps, coloured by the cut's clusters, with
    the cut as a dashed line and each group's customers at the bottom."""
    links, tips, info = figures.dendrogram(tree)
    clusters = sorted(set(tips.column("cluster").to_pylist()), key=lambda c: int(c.split()[-1]))
    domain = clusters + [figures.ABOVE_CUT]
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
               "#7f7f7f"]
    colours = [palette[i % len(palette)] for i in range(len(clusters))] + ["#b0b0b0"]
    colour = alt.Color("cluster:N", title="cluster", scale=alt.Scale(domain=domain, range=colours))
    x = alt.X("x:Q", axis=None, scale=alt.Scale(domain=[-0.5, info["groups"] - 0.5]))
    height = alt.Y("y:Q", title="Ward height (standardized units)")
    lines = alt.Chart(_data(links)).mark_rule(strokeWidth=1.6).encode(
        x=x, x2="x2:Q", y=height, y2="y2:Q", color=colour,
        tooltip=[_tip("cluster", "N", "cluster"), _tip("y2", "Q", "merge height", ".3f")])
    cut = alt.Chart(alt.Data(values=[{"y": info["cut_y"]}])).mark_rule(strokeDash=[6, 4], color="#333").encode(
        y=height, tooltip=[_tip("y", "Q", "cut height", ".3f")])
    bottoms = alt.Chart(_data(tips)).transform_calculate(y="0").mark_text(
        angle=270, align="right", dx=-4, fontSize=9).encode(
        x=x, y=height, text=alt.Text("customers:Q", format=","), color=colour,
        tooltip=[_tip("cluster", "N", "cluster"), _tip("label", "N", "label"),
                 _tip("customers", "Q", "customers", COUNT), _tip("leaves", "Q", "micro-clusters", COUNT)])
    shown = (f"the top of the tree: {info['groups']} groups of its {info['leaves']:,} micro-clusters"
             if info["groups"] < info["leaves"] else f"all {info['leaves']:,} leaves")
    return alt.layer(lines, cut, bottoms).properties(
        width=WIDTH, height=260,
        title=_title(f"Ward tree, cut into {info['n_clusters']} clusters",
                     f"Drawn: {shown}; numbers at the bottom are customers. The dashed line is the cut: "
                     f"branches below it are one cluster each; a tall branch above it is a merge that would "
                     f"mix very different customers."))


# --- CLV ------------------------------------------------------------------------------------------

_CLV_VALUES = {"probability_alive": ("P(alive)", "mean probability alive", ".3f", "viridis"),
               "expected_purchases": ("expected purchases", "mean expected purchases", ".3f", "plasma")}


def clv_matrix(clv: pa.Table, value: str = "probability_alive") -> alt.Chart:
    """Frequency x recency matrix of a CLV table (``rfmx clv -o``): the mean ``value``
    (``probability_alive`` or ``expected_purchases``) of the customers in each cell."""
    if value not in _CLV_VALUES:
        raise RfmxError(f"value must be one of {', '.join(_CLV_VALUES)}, got {value!r}")
    cells, info = figures.clv_matrix(clv)
    name, long_name, fmt, scheme = _CLV_VALUES[value]
    unit = f"{info['unit']}s" if info["unit"] else "the table's time unit"
    rows = cells.to_pylist()
    f_sort = [b for b in dict.fromkeys(r["frequency_bin"] for r in sorted(rows, key=lambda r: r["frequency_lo"]))]
    r_sort = [b for b in dict.fromkeys(r["recency_bin"] for r in sorted(rows, key=lambda r: -r["recency_lo"]))]
    scale = alt.Scale(scheme=scheme, domain=[0, 1]) if value == "probability_alive" else alt.Scale(scheme=scheme)
    hint = ("Customers who bought often and recently (top right) are most likely still active; frequent buyers "
            "who have been silent long (bottom right) are probably gone." if value == "probability_alive" else
            "Expected purchases over the CLV horizon: the customers to court are in the brightest cells.")
    return alt.Chart(_data(cells)).mark_rect().encode(
        x=alt.X("frequency_bin:O", sort=f_sort, title=f"frequency: repeat purchase periods ({info['frequency']})",
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y("recency_bin:O", sort=r_sort, title=f"recency: first to last purchase ({unit}; {info['recency']})"),
        color=alt.Color(f"{value}:Q", title=name, scale=scale),
        tooltip=[_tip("frequency_bin", "O", "frequency"), _tip("recency_bin", "O", f"recency ({unit})"),
                 _tip("customers", "Q", "customers", COUNT),
                 _tip("probability_alive", "Q", "mean probability alive", ".4f"),
                 _tip("expected_purchases", "Q", "mean expected purchases", ".4f")],
    ).properties(width=WIDTH, height=alt.Step(13),
                 title=_title(f"Frequency x recency: {long_name}", hint))


def calibration(table: pa.Table) -> alt.Chart:
    """Calibration vs holdout (``rfmx clv --calibration-out``): mean repeat purchases in the
    holdout, actual and predicted, by calibration-period frequency."""
    data = figures.calibration(table)
    order = list(dict.fromkeys(data.column("bucket").to_pylist()))
    return alt.Chart(_data(data)).mark_line(point=True).encode(
        x=alt.X("bucket:O", sort=order, title="repeat purchases in the calibration period",
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y("purchases:Q", title="mean repeat purchases in the holdout (per customer)"),
        color=alt.Color("series:N", title=None, scale=alt.Scale(range=["#1f77b4", "#ff7f0e"])),
        strokeDash=alt.StrokeDash("series:N", title=None),
        tooltip=[_tip("bucket", "O", "calibration purchases"), _tip("series", "N", "series"),
                 _tip("purchases", "Q", "mean holdout purchases", ".4f"),
                 _tip("n_customers", "Q", "customers", COUNT)],
    ).properties(width=WIDTH, height=300,
                 title=_title("Calibration vs holdout",
                              "The closer the two lines, the better the model predicts purchases it did not see."))


def value_distribution(clv: pa.Table, column: str = "clv") -> alt.Chart:
    """The distribution of predicted value (``clv`` by default) over log-spaced bins:
    customers per bin, with the bin's total value in the tooltip."""
    bins, info = figures.value_distribution(clv, column)
    left = []
    if info["below"]:
        left.append(f"{info['below']:,} below {bins.column('lo')[0].as_py():.3g}")
    if info["zero_or_less"]:
        left.append(f"{info['zero_or_less']:,} at 0 or less")
    note = f" Not drawn: {', '.join(left)}." if left else ""
    return alt.Chart(_data(bins)).mark_rect(color="#6a51a3", stroke="white", strokeWidth=0.5).encode(
        x=alt.X("lo:Q", scale=alt.Scale(type="log"), title=f"predicted {column} (money units, log scale)"),
        x2="hi:Q",
        y=alt.Y("customers:Q", title="customers"),
        y2=alt.datum(0),
        tooltip=[_tip("lo", "Q", "from", ",.4g"), _tip("hi", "Q", "to", ",.4g"),
                 _tip("customers", "Q", "customers", COUNT), _tip("customer_share", "Q", "share of customers", SHARE),
                 _tip("value", "Q", f"total {column} (money units)", MONEY),
                 _tip("value_share", "Q", f"share of total {column}", SHARE)],
    ).properties(width=WIDTH, height=280,
                 title=_title(f"Distribution of predicted value ({column})",
                              "Most customers sit on the left; the few bars on the right hold much of the value: "
                              "hover for each bin's total." + note))


# --- output ---------------------------------------------------------------------------------------

def spec(chart) -> dict:
    """The chart's Vega-Lite specification (a JSON-ready dict)."""
    return chart.to_dict()


def vegalite_version() -> str | None:
    """The Vega-Lite version Altair writes (``"6.4"``) when vl-convert has it, else None
    (vl-convert's newest): the version to render specs and to bundle for the HTML with."""
    import vl_convert as vlc

    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vlc.get_vegalite_versions() else None


def save(chart, path) -> None:
    """Write ``chart`` as SVG or PNG (from the suffix; no browser needed) or as Vega-Lite JSON."""
    import vl_convert as vlc

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(vlc.vegalite_to_svg(spec(chart), vl_version=vegalite_version()), encoding="utf-8")
    elif suffix == ".png":
        path.write_bytes(vlc.vegalite_to_png(spec(chart), vl_version=vegalite_version(), scale=2))
    elif suffix == ".json":
        import json

        path.write_text(json.dumps(spec(chart)), encoding="utf-8")
    else:
        raise RfmxError(f"{path}: unknown figure format '{suffix}'; use .svg, .png or .json")
