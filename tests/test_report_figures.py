"""Each figure's data (cells, shares, curve points, bins) equals the numbers computed
independently with pandas/NumPy from the input tables, on tables made by the rfmx commands
and on random tables (money in exact minor units and in floats, null segments, empty cells)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from rfmx import figures
from rfmx.errors import RfmxError
from rfmx.figures import MissingColumns
from reportdata import make_report_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_report_inputs(tmp_path_factory.mktemp("report-inputs"))


@pytest.fixture(scope="module")
def scores(inputs):
    return pq.read_table(inputs["scores"])


def _random_scores(seed: int, n: int, *, q: int = 5, exact: bool = True, nulls: bool = False) -> pa.Table:
    """A scored-looking table: random scores 1..q (some cells empty), segments, money with refunds."""
    rng = np.random.default_rng(seed)
    r = rng.integers(1, q + 1, n)
    f = np.minimum(rng.integers(1, q + 1, n), rng.integers(1, q + 1, n))  # uneven cells
    minor = (rng.pareto(1.3, n) * 4000).astype(np.int64) - (rng.random(n) < 0.05) * 10_000
    names = ["Best", "Good", "Fading", "Gone"]
    seg = rng.integers(0, len(names), n).astype(np.int8)
    seg_arr = pa.DictionaryArray.from_arrays(pa.array(seg, mask=(rng.random(n) < 0.1) if nulls else None),
                                             pa.array(names))
    data = {"recency_days": pa.array(rng.integers(0, 900, n)), "n_orders": pa.array(rng.integers(1, 60, n)),
            "monetary_total": pa.array(minor / 100), "r_score": pa.array(r.astype(np.int8)),
            "f_score": pa.array(f.astype(np.int8)), "segment": seg_arr}
    meta = {"rfmx.scores": f'{{"bins": {q}}}'}
    if exact:
        data["monetary_minor"] = pa.array(minor)
        meta["rfmx.amount_scale"] = "2"
    return pa.table(data).replace_schema_metadata(meta)


def _money(df: pd.DataFrame) -> pd.Series:
    return df["monetary_minor"] / 100 if "monetary_minor" in df else df["monetary_total"]


# --- headline and Lorenz --------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3000), exact=st.booleans())
def test_headline_and_lorenz_equal_pandas(seed, n, exact):
    table = _random_scores(seed, n, exact=exact)
    df = table.to_pandas()
    revenue = _money(df).clip(lower=0).sort_values(ascending=False).to_numpy()
    total = revenue.sum()
    head = figures.headline(table)
    assert head["customers"] == n
    assert head["revenue"] == pytest.approx(total, rel=1e-12)
    curve = figures.lorenz(table).to_pandas()
    if total <= 0:
        assert len(curve) == 0
        return
    for p, share in head["top_shares"].items():
        k = max(1, math.ceil(p * n / 100))
        assert share == pytest.approx(revenue[:k].sum() / total, rel=1e-12)
    assert curve.customer_share.iloc[0] == 0 and curve.revenue_share.iloc[0] == 0
    assert curve.customer_share.iloc[-1] == 1 and curve.revenue_share.iloc[-1] == pytest.approx(1, rel=1e-12)
    for row in curve.itertuples():
        p = round(row.customer_share * 100, 9)   # the percent the curve was drawn at
        k = max(1, math.ceil(p * n / 100)) if p > 0 else 0
        assert row.customers == k
        assert row.revenue_share == pytest.approx(revenue[:k].sum() / total, rel=1e-12, abs=1e-15)
        assert row.revenue == pytest.approx(revenue[:k].sum(), rel=1e-12, abs=1e-9)
    assert (np.diff(curve.revenue_share) >= -1e-15).all()  # a Lorenz curve never falls
    # the 20/80 point is on the curve and equals the headline's top-20 % share
    at20 = curve[np.isclose(curve.customer_share, 0.2)]
    assert len(at20) == 1 and at20.revenue_share.iloc[0] == pytest.approx(head["top_shares"][20], rel=1e-12)
    # Gini from the sorted revenues (ascending): sum((2i - n + 1) x_i) / (n * sum x)
    asc = revenue[::-1]
    gini = ((2 * np.arange(n) - n + 1) * asc).sum() / (n * total)
    assert head["gini"] == pytest.approx(gini, rel=1e-9, abs=1e-12)


def test_headline_abc_matches_rfmx_summary(scores):
    from rfmx.concentration import summary

    head = figures.headline(scores)
    expected = summary(scores)
    assert head["abc"] == expected["abc"].to_pylist()
    assert head["gini"] == expected["concentration"]["gini"]
    assert head["as_of"] == scores.schema.metadata[b"rfmx.as_of"].decode()


# --- R x F grid and segments ----------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 2000), q=st.sampled_from([3, 5, 7]), exact=st.booleans(),
       nulls=st.booleans())
def test_rf_grid_equals_pandas(seed, n, q, exact, nulls):
    table = _random_scores(seed, n, q=q, exact=exact, nulls=nulls)
    df = table.to_pandas()
    df["money"] = _money(df)
    df["segment"] = df["segment"].astype(object).fillna("(none)")
    grid = figures.rf_grid(table).to_pandas()
    assert len(grid) == q * q
    assert sorted(zip(grid.r_score, grid.f_score)) == [(r, f) for r in range(1, q + 1) for f in range(1, q + 1)]
    by = df.groupby(["r_score", "f_score"])
    counts, revenue = by.size(), by["money"].sum()
    for row in grid.itertuples():
        key = (row.r_score, row.f_score)
        c = int(counts.get(key, 0))
        assert row.customers == c
        assert row.customer_share == pytest.approx(c / n)
        assert row.revenue == pytest.approx(float(revenue.get(key, 0.0)), rel=1e-12, abs=1e-9)
        if c == 0:
            assert pd.isna(row.segment) and pd.isna(row.mean_revenue)
            continue
        assert row.mean_revenue == pytest.approx(revenue[key] / c, rel=1e-12, abs=1e-9)
        cell = df[(df.r_score == key[0]) & (df.f_score == key[1])]["segment"].value_counts()
        best = cell.max()
        order = ["Best", "Good", "Fading", "Gone", "(none)"]   # ties go to the map's first
        winner = min((s for s in cell.index if cell[s] == best), key=order.index)
        assert row.segment == winner
        assert row.segment_share == pytest.approx(best / c)


def test_rf_grid_of_rfm_grid_names_each_cell_by_its_segment(scores):
    """With rfm-grid, the segment depends on R and F only: every non-empty cell is all one segment."""
    grid = figures.rf_grid(scores).to_pandas()
    filled = grid[grid.customers > 0]
    assert (filled.segment_share == 1).all()
    df = scores.to_pandas()
    for row in filled.itertuples():
        assert set(df[(df.r_score == row.r_score) & (df.f_score == row.f_score)].segment) == {row.segment}
    assert grid.customers.sum() == scores.num_rows


def test_segments_equal_pandas(scores):
    table = figures.segments(scores).to_pandas().set_index("segment")
    df = scores.to_pandas()
    df["money"] = df["monetary_minor"] / 100
    by = df.groupby("segment", observed=True)
    assert list(table.index) == scores.column("segment").chunk(0).dictionary.to_pylist()  # the map's order
    for name, g in by:
        row = table.loc[name]
        assert row.customers == len(g)
        assert row.customer_share == pytest.approx(len(g) / len(df))
        assert row.revenue == pytest.approx(g.money.sum(), rel=1e-12)
        assert row.revenue_share == pytest.approx(g.money.sum() / df.money.sum(), rel=1e-12)
        assert row.recency_mean == pytest.approx(g.recency_days.mean())
        assert row.recency_median == pytest.approx(g.recency_days.median())
        assert row.orders_mean == pytest.approx(g.n_orders.mean())
        assert row.orders_median == pytest.approx(g.n_orders.median())
        assert row.monetary_mean == pytest.approx(g.money.mean(), rel=1e-12)
        assert row.monetary_median == pytest.approx(g.money.median(), rel=1e-12)


def test_missing_score_columns_are_missing_columns_not_crashes(inputs):
    aggregates = pq.read_table(inputs["clusters"]).drop_columns(["cluster"])
    with pytest.raises(MissingColumns, match="r_score"):
        figures.rf_grid(aggregates)
    with pytest.raises(MissingColumns, match="segment"):
        figures.segments(aggregates)
    assert isinstance(MissingColumns("x", "y"), RfmxError)


# --- timeline -------------------------------------------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), chunks=st.lists(st.integers(1, 900), min_size=1, max_size=6))
def test_segment_sizes_equal_pandas_in_any_chunking(inputs, seed, chunks):
    snaps = pq.read_table(inputs["timeline"], columns=["as_of", "segment"])
    df = snaps.to_pandas()
    expected = df.groupby(["as_of", "segment"]).size()
    # the same snapshots cut into pieces of random sizes (as row groups of a file are)
    pieces, start = [], 0
    for size in chunks * (snaps.num_rows // sum(chunks) + 1):
        if start >= snaps.num_rows:
            break
        pieces.append(snaps.slice(start, size))
        start += size
    sizes = figures.segment_sizes(iter(pieces)).to_pandas()
    assert sizes.equals(figures.segment_sizes(snaps).to_pandas())
    dates = sorted(df.as_of.unique())
    assert list(dict.fromkeys(sizes.as_of)) == [d.strftime("%Y-%m-%d") for d in dates]
    labels = list(dict.fromkeys(sizes.label))
    assert len(sizes) == len(dates) * len(labels)
    from rfmx.segments import SegmentMap

    known = SegmentMap.builtin("rfm-grid").order
    assert labels == [s for s in known if s in labels]     # the map's order, best first
    for row in sizes.itertuples():
        stamp = next(d for d in dates if d.strftime("%Y-%m-%d") == row.as_of)
        c = int(expected.get((stamp, row.label), 0))
        assert row.customers == c
        assert row.share == pytest.approx(c / (df.as_of == stamp).sum())


def test_migration_cells_are_the_last_pair(inputs):
    table = pq.read_table(inputs["migration"])
    df = table.to_pandas()
    last = df[df.as_of_to == df.as_of_to.max()]
    cells = figures.migration_cells(table).to_pandas()
    assert len(cells) == len(last)
    assert (cells.as_of_to == df.as_of_to.max()).all()
    totals = last.groupby("from_segment").customers.sum()
    for row, exp in zip(cells.itertuples(), last.itertuples()):
        assert (row.from_segment, row.to_segment, row.customers, row.revenue) == \
            (exp.from_segment, exp.to_segment, exp.customers, exp.revenue)
        t = totals[row.from_segment]
        assert (row.from_share == pytest.approx(exp.customers / t)) if t else pd.isna(row.from_share)


def test_migration_without_dates_must_be_one_pair(inputs):
    table = pq.read_table(inputs["migration"]).drop_columns(["as_of_from", "as_of_to"])
    with pytest.raises(RfmxError, match="several snapshot pairs"):
        figures.migration_cells(table)


def test_cohort_cells_keep_the_latest_cohorts(inputs):
    table = pq.read_table(inputs["cohorts"])
    df = table.to_pandas()
    cells, n = figures.cohort_cells(table, max_cohorts=3, max_periods=2)
    cells = cells.to_pandas()
    latest = sorted(df.cohort.unique())[-3:]
    assert n == df.cohort.nunique()
    exp = df[df.cohort.isin(latest) & (df.period_index < 2)]
    assert len(cells) == len(exp)
    assert list(cells.cohort) == [c.strftime("%Y-%m-%d") for c in exp.cohort]
    for col in ("period_index", "customers_in_cohort", "active_customers", "retention", "revenue"):
        assert list(cells[col]) == list(exp[col])


# --- clusters -------------------------------------------------------------------------------------

def test_cluster_snake_and_sizes_equal_pandas(inputs):
    table = pq.read_table(inputs["clusters"])
    df = table.to_pandas()
    snake = figures.cluster_snake(table).to_pandas()
    clustered = df[df.cluster.notna()]
    for column, label in figures.SNAKE_FEATURES:
        v = np.sign(clustered[column]) * np.log1p(clustered[column].abs())
        z = (v - v.mean()) / v.std(ddof=0)
        means = z.groupby(clustered.cluster).mean()
        raw = clustered[column].groupby(clustered.cluster).mean()
        got = snake[snake.feature == label].set_index("cluster")
        assert len(got) == df.cluster.nunique()
        for c in means.index:
            assert got.loc[f"cluster {int(c)}", "z_mean"] == pytest.approx(means[c], abs=1e-9)
            assert got.loc[f"cluster {int(c)}", "mean"] == pytest.approx(raw[c], rel=1e-12)
    sizes = figures.cluster_sizes(table).to_pandas().set_index("cluster")
    money = df.monetary_minor / 100
    for c, g in df.groupby("cluster"):
        row = sizes.loc[f"cluster {int(c)}"]
        assert row.customers == len(g)
        assert row.customer_share == pytest.approx(len(g) / len(df))
        assert row.revenue == pytest.approx(money[g.index].sum(), rel=1e-12)
        assert row.revenue_share == pytest.approx(money[g.index].sum() / money.sum(), rel=1e-12)


def test_unclustered_customers_are_their_own_bar():
    table = pa.table({"cluster": pa.array([0, 1, None, 1], pa.int32()), "recency_days": [1, 2, 3, 4],
                      "n_orders": [1, 1, 1, 2], "monetary_total": [10.0, 20.0, 30.0, 40.0]})
    sizes = figures.cluster_sizes(table).to_pydict()
    assert sizes["cluster"] == ["cluster 0", "cluster 1", "not clustered"]
    assert sizes["customers"] == [1, 2, 1]
    assert sizes["revenue_share"] == [0.1, 0.6, 0.3]


def test_k_curve_is_the_k_table_by_k(inputs):
    table = pcsv.read_csv(inputs["k_table"])
    curve = figures.k_curve(table.take([2, 0, 1])).to_pydict()
    assert curve["k"] == [2, 3, 4]
    assert curve["inertia"] == table.column("inertia").to_pylist()
    assert curve["silhouette"] == table.column("silhouette").to_pylist()


# --- CLV ------------------------------------------------------------------------------------------

def _expected_clv_cells(df: pd.DataFrame, bins=24, q=0.995):
    """The frequency x recency binning written out independently."""
    x = np.floor(df.frequency.to_numpy()).astype(int)
    cap = int(np.sort(x)[math.ceil(q * len(x)) - 1])
    width = max(1, math.ceil((cap + 1) / bins))
    closed = cap // width + 1
    fbin = np.minimum(x // width, closed)
    top = df.recency.max()
    edges = np.linspace(0, top, bins + 1) if top > 0 else np.array([0.0, 1.0])
    rbin = np.clip(np.digitize(df.recency, edges) - 1, 0, len(edges) - 2)
    return df.assign(fbin=fbin, rbin=rbin).groupby(["fbin", "rbin"]), width, closed, edges


@pytest.mark.parametrize("which", ["clv", "synthetic"])
def test_clv_matrix_equals_pandas(inputs, which):
    if which == "clv":
        table = pq.read_table(inputs["clv"])
    else:
        rng = np.random.default_rng(5)
        n = 5000
        x = np.floor(rng.pareto(1.2, n) * 3)
        table = pa.table({"frequency": x, "recency": np.where(x > 0, rng.random(n) * 100, 0.0),
                          "probability_alive": rng.random(n), "expected_purchases": rng.random(n) * 4})
    df = table.to_pandas()
    cells, info = figures.clv_matrix(table)
    cells = cells.to_pandas()
    groups, width, closed, edges = _expected_clv_cells(df)
    assert info["frequency"] == "frequency" and info["recency"] == "recency"
    assert len(cells) == groups.ngroups
    assert cells.customers.sum() == len(df)
    for row, ((fb, rb), g) in zip(cells.itertuples(), groups):
        assert row.frequency_lo == fb * width
        assert (pd.isna(row.frequency_hi) if fb == closed else row.frequency_hi == (fb + 1) * width)
        assert row.recency_lo == pytest.approx(edges[rb]) and row.recency_hi == pytest.approx(edges[rb + 1])
        assert row.customers == len(g)
        assert row.probability_alive == pytest.approx(g.probability_alive.mean(), rel=1e-12)
        assert row.expected_purchases == pytest.approx(g.expected_purchases.mean(), rel=1e-12)


def test_clv_matrix_needs_frequency_and_recency(scores):
    table = scores.append_column("probability_alive", pa.array(np.ones(scores.num_rows))) \
        .append_column("expected_purchases", pa.array(np.ones(scores.num_rows)))
    with pytest.raises(MissingColumns, match="frequency/recency"):
        figures.clv_matrix(table)


def test_calibration_is_the_table_in_long_form(inputs):
    table = pcsv.read_csv(inputs["calibration"])
    long = figures.calibration(table).to_pandas()
    df = table.to_pandas()
    assert len(long) == 2 * len(df)
    for series in ("actual", "predicted"):
        part = long[long.series == series]
        assert list(part.bucket) == [str(b) for b in df.bucket]
        assert list(part.purchases) == list(df[series])
        assert list(part.n_customers) == list(df.n_customers)


@pytest.mark.parametrize("which", ["clv", "tiny values"])
def test_value_distribution_equals_numpy(inputs, which):
    if which == "clv":
        table = pq.read_table(inputs["clv"])
    else:
        table = pa.table({"clv": [0.0, -1.0, 1e-80, 2e-12, 0.5, 3.0, 3.1, 250.0, None]})
    v = table.column("clv").to_pandas().dropna().to_numpy()
    bins, info = figures.value_distribution(table)
    bins = bins.to_pandas()
    positive = v[v > 0]
    idx = np.floor(np.log10(positive) * 10).astype(int)
    first = max(idx.min(), idx.max() + 1 - 60)
    shown = idx >= first
    assert info["customers"] == len(v) and info["zero_or_less"] == int((v <= 0).sum())
    assert info["below"] == int((~shown).sum())
    assert info["missing"] == table.column("clv").null_count
    counts = pd.Series(positive[shown]).groupby(idx[shown]).agg(["size", "sum"])
    assert len(bins) == len(counts)
    for row, (i, exp) in zip(bins.itertuples(), counts.iterrows()):
        assert row.lo == pytest.approx(10 ** (i / 10)) and row.hi == pytest.approx(10 ** ((i + 1) / 10))
        assert row.customers == exp["size"]
        assert row.value == pytest.approx(exp["sum"], rel=1e-12)
        assert row.customer_share == pytest.approx(exp["size"] / len(v))
        assert row.value_share == pytest.approx(exp["sum"] / v.sum(), rel=1e-12)


def test_alerts_top_by_value_at_stake():
    table = pa.table({"customer_id": [5, 6, 7, 8], "value_at_stake": [10.0, None, 30.0, 20.0],
                      "reason": ["a", "b", "c", "d"]})
    top = figures.alerts(table, top=2).to_pydict()
    assert top == {"label": ["7", "8"], "customer_id": ["7", "8"], "value_at_stake": [30.0, 20.0],
                   "reason": ["c", "d"]}


def test_alerts_of_rfmx_alerts_keep_each_alert_apart(inputs, tmp_path):
    from badinput import run_cli
    from reportdata import ok

    out = tmp_path / "alerts.csv"
    ok(run_cli("alerts", inputs["orders"], "--every", "month", "--start", "2025-01-01", "-o", out))
    table = pcsv.read_csv(out)
    df = table.to_pandas()
    top = figures.alerts(table, top=10).to_pandas()
    expected = df.sort_values("value_at_stake", ascending=False, kind="stable").head(10)
    assert list(top.value_at_stake) == list(expected.value_at_stake)
    assert list(top.label) == [f"{c} · {a} · {d[:10]}" for c, a, d in
                               zip(expected.customer_id, expected.alert, expected.as_of_to.astype(str))]
    assert top.label.is_unique and "segment_before" in top


# --- the Ward tree --------------------------------------------------------------------------------

def _ward_tree(n=3000, n_micro=80, k=5, seed=0):
    from rfmx.hierarchy import Ward

    X = np.random.default_rng(seed).normal(0, 1, (n, 3))
    return Ward(k, n_micro=n_micro, random_state=0).fit(X)


@pytest.mark.parametrize("n_micro,k,leaves", [(80, 5, 30), (80, 40, 30), (12, 3, 30), (50, 1, 7)])
def test_dendrogram_draws_scipys_truncated_tree(n_micro, k, leaves):
    from scipy.cluster.hierarchy import dendrogram

    w = _ward_tree(n_micro=n_micro, k=k)
    links, tips, info = figures.dendrogram(w.dendrogram(), leaves=leaves)
    m = len(w.micro_counts_)
    p = min(m, max(leaves, k))
    assert info == {"n_clusters": k, "cut_y": info["cut_y"], "groups": p, "leaves": m}
    Z = w.linkage_.copy()  # scipy wants the number of leaves under a node, not its customers
    for i, (a, b) in enumerate(Z[:, :2].astype(int)):
        Z[i, 3] = (1 if a < m else Z[a - m, 3]) + (1 if b < m else Z[b - m, 3])
    theirs = dendrogram(Z, truncate_mode="lastp", p=p, no_plot=True)
    # scipy labels a group of several leaves "(n)" and a single leaf by its index, left to right
    assert [f"({n})" if n > 1 else "x" for n in tips.column("leaves").to_pylist()] == \
        [s if s.startswith("(") else "x" for s in theirs["ivl"]]
    assert tips.column("customers").to_pylist() and sum(tips.column("customers").to_pylist()) == 3000
    # three lines per merge drawn, at scipy's heights
    assert links.num_rows == 3 * (p - 1)
    assert sorted({round(y, 9) for y in links.column("y2").to_pylist() if y > 0}) == \
        sorted({round(d[1], 9) for d in theirs["dcoord"]})
    # lines below the cut belong to the tip's cluster; the cut line lies between the merges applied and the rest
    heights = w.linkage_[:, 2]
    assert (heights[: m - k] <= info["cut_y"]).all() and (heights[m - k:] >= info["cut_y"]).all()
    clusters = set(links.filter(pc.less(links["y2"], info["cut_y"]))["cluster"].to_pylist())
    assert clusters <= set(tips["cluster"].to_pylist()) and figures.ABOVE_CUT not in clusters
    above = links.filter(pc.greater(links["y2"], info["cut_y"]))["cluster"].to_pylist()
    assert set(above) <= {figures.ABOVE_CUT}
    tip_cluster = dict(zip(tips["x"].to_pylist(), tips["cluster"].to_pylist()))
    leaf_cluster = w.leaf_clusters_
    assert sorted({int(c.split()[-1]) for c in tip_cluster.values()}) == sorted(set(leaf_cluster.tolist()))


def test_dendrogram_of_a_distance_cut_and_labels(tmp_path):
    w = _ward_tree()
    w.recut(distance=float(w.linkage_[-4, 2]))
    doc = {**w.dendrogram(), "labels": [f"group {i}" for i in range(4)]}
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(doc))
    links, tips, info = figures.dendrogram(path)
    assert info["n_clusters"] == 4 and info["cut_y"] == float(w.linkage_[-4, 2])
    assert set(tips["label"].to_pylist()) == {"group 0", "group 1", "group 2", "group 3"}
