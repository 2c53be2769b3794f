"""Quantile scores, codes, value scores and tiers against tests/naive_scores.py; the score CLI."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import naive_scores as naive
import rfmx
from rfmx import RfmxError
from rfmx.cli.main import main
from rfmx.kernels.scores import key_range, select_ranks
from rfmx.scores import (parse_cuts, parse_tiers, parse_weights, quantile_scores, readonly, score_info,
                         score_table)

SETTINGS = settings(max_examples=60, deadline=None)


# --- strategies --------------------------------------------------------------------------

@st.composite
def populations(draw, floats: bool = False, max_size: int = 40):
    """Values with heavy ties (small alphabets), tiny populations, random member masks."""
    n = draw(st.integers(0, max_size))
    if floats:
        alphabet = draw(st.sampled_from([[0.0, -0.0, 1.5], [-2.5, 0.1, 0.2, 1e300, -1e-300],
                                         [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]))
        elem = st.one_of(st.sampled_from(alphabet), st.floats(-1e6, 1e6, allow_nan=False))
    else:
        alphabet = draw(st.sampled_from([[1], [1, 2], [0, 1, 1, 1, 2, 3], list(range(10))]))
        elem = st.one_of(st.sampled_from(alphabet), st.integers(-(2**62), 2**62))
    values = draw(st.lists(elem, min_size=n, max_size=n))
    member = draw(st.lists(st.booleans().map(lambda b: b or draw(st.booleans())), min_size=n, max_size=n))
    return values, member


def _arrays(values, member, floats):
    return np.array(values, dtype=np.float64 if floats else np.int64), np.array(member, dtype=np.bool_)


# --- quantile scores ----------------------------------------------------------------------

@SETTINGS
@given(populations(), st.integers(2, 12), st.booleans())
def test_keep_scores_match_brute_force_edges(pop, q, lower):
    values, member = pop
    x, m = _arrays(values, member, False)
    got, _, n = quantile_scores(x, m, q, ties="keep", lower_is_better=lower)
    assert got.tolist() == naive.keep_scores_by_edges(values, member, q, lower)
    assert got.tolist() == naive.keep_scores_by_count(values, member, q, lower)
    assert n == sum(member)


@SETTINGS
@given(populations(floats=True), st.integers(2, 12), st.booleans())
def test_keep_scores_floats(pop, q, lower):
    values, member = pop
    x, m = _arrays(values, member, True)
    got, _, _ = quantile_scores(x, m, q, ties="keep", lower_is_better=lower)
    # -0.0 and 0.0 are one value
    assert got.tolist() == naive.keep_scores_by_edges([v + 0.0 for v in values], member, q, lower)


@SETTINGS
@given(populations(), st.integers(2, 12), st.booleans())
def test_first_scores_reproduce_pandas_qcut_rank_first(pop, q, lower):
    values, member = pop
    x, m = _arrays(values, member, False)
    got, _, _ = quantile_scores(x, m, q, ties="first", lower_is_better=lower)
    assert got.tolist() == naive.pandas_first_scores(values, member, q, lower)


@SETTINGS
@given(populations(floats=True), st.integers(2, 12), st.booleans())
def test_first_scores_floats_reproduce_pandas(pop, q, lower):
    values, member = pop
    x, m = _arrays(values, member, True)
    got, _, _ = quantile_scores(x, m, q, ties="first", lower_is_better=lower)
    assert got.tolist() == naive.pandas_first_scores([v + 0.0 for v in values], member, q, lower)


def test_first_scores_every_small_population_against_pandas():
    # Exact-rational edges must agree with pandas' floating-point ones for every n and q.
    rng = np.random.default_rng(0)
    for n in range(2, 120):
        x = rng.permutation(n).astype(np.int64)
        m = np.ones(n, dtype=np.bool_)
        for q in (2, 3, 4, 5, 6, 7, 10, 12):
            got, _, _ = quantile_scores(x, m, q, ties="first")
            assert got.tolist() == naive.pandas_first_scores(x.tolist(), [True] * n, q), (n, q)


def test_rank_thresholds_follow_pandas_rounding():
    from rfmx.scores import rank_thresholds

    for n in range(1, 400):
        for q in range(2, 13):
            exact = [((n - 1) * k) // q for k in range(1, q)]
            got = rank_thresholds(n, q).tolist()
            # pandas' floating point can only move an edge down one position, never up
            assert all(e - 1 <= g <= e for g, e in zip(got, exact)), (n, q)
    assert rank_thresholds(31, 6).tolist() == [5, 10, 15, 20, 24]
    assert rank_thresholds(31, 6).tolist() == naive.edge_positions(31, 6)


def test_large_population_with_wide_range_takes_the_bucket_path():
    rng = np.random.default_rng(5)
    n = 20_000
    # Heavy tail plus a dense cluster: log buckets, gathered buckets and ties at the edges.
    x = np.concatenate([(rng.lognormal(4, 2, n) * 100).astype(np.int64), np.full(3000, 12345),
                        rng.integers(-(2**62), 2**62, 50)])
    m = rng.random(len(x)) < 0.97
    for q in (4, 5, 10):
        keep, edges, n_pop = quantile_scores(x, m, q)
        pop = np.sort(x[m])
        want_edges = pop[naive.edge_positions(n_pop, q)]
        assert edges == want_edges.tolist()
        want = np.where(m, 1 + (x[:, None] > want_edges[None, :]).sum(axis=1), 1)
        assert (keep == want).all()
        first, _, _ = quantile_scores(x, m, q, ties="first")
        import pandas as pd

        ranks = pd.Series(x[m]).rank(method="first")
        want_first = np.ones(len(x), dtype=np.int64)
        want_first[m] = pd.qcut(ranks, q, labels=False).to_numpy() + 1
        assert (first == want_first).all()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=300), st.sampled_from([2, 3, 4, 8, 16]),
       st.data())
def test_select_ranks_every_radix_width(values, radix_bits, data):
    x = readonly(np.array(values, dtype=np.int64))  # read-only, as the engine passes them: one compilation
    m = readonly(np.ones(len(x), dtype=np.bool_))
    n, lo, hi = key_range(x, np.int64(1), m)
    ranks = np.unique(np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6)), dtype=np.int64))
    out_v = np.empty(len(ranks), dtype=np.int64)
    out_b = np.empty(len(ranks), dtype=np.int64)
    select_ranks(x, np.int64(1), m, lo, hi, ranks, np.int64(radix_bits), out_v, out_b)
    s = np.sort(x)
    assert out_v.tolist() == s[ranks].tolist()
    assert out_b.tolist() == np.searchsorted(s, out_v, side="left").tolist()


def test_select_ranks_full_int64_range():
    # offsets up to 2**64 - 1 round up to 2**64 as floats: the top log bucket must exist
    x = readonly(np.array([-(2**63), 2**63 - 1, 2**63 - 2, 5, -(2**63) + 1, 0], dtype=np.int64))
    m = readonly(np.ones(len(x), dtype=np.bool_))
    n, lo, hi = key_range(x, np.int64(1), m)
    for radix_bits in (2, 3, 8, 16):
        out_v = np.empty(n, dtype=np.int64)
        out_b = np.empty(n, dtype=np.int64)
        select_ranks(x, np.int64(1), m, lo, hi, np.arange(n, dtype=np.int64), np.int64(radix_bits), out_v, out_b)
        assert out_v.tolist() == sorted(x.tolist())


def test_fewer_customers_or_values_than_bins():
    m1 = np.ones(1, dtype=np.bool_)
    assert quantile_scores(np.array([7]), m1, 5)[0].tolist() == [1]
    assert quantile_scores(np.array([7]), m1, 5, ties="first")[0].tolist() == [1]
    m = np.ones(2, dtype=np.bool_)
    assert quantile_scores(np.array([3, 9]), m, 5)[0].tolist() == [1, 5]
    assert quantile_scores(np.array([3, 9, 5]), np.ones(3, dtype=np.bool_), 5)[0].tolist() == [1, 5, 3]
    # all equal: nobody is better than anybody
    assert quantile_scores(np.full(6, 4), np.ones(6, dtype=np.bool_), 5)[0].tolist() == [1] * 6
    # two distinct values among many: the run below every edge keeps score 1
    x = np.array([1] * 8 + [2] * 2)
    assert quantile_scores(x, np.ones(10, dtype=np.bool_), 5)[0].tolist() == [1] * 8 + [5] * 2
    # nobody in the population
    assert quantile_scores(np.array([1, 2]), np.zeros(2, dtype=np.bool_), 5)[0].tolist() == [1, 1]


def test_edge_inside_a_run_of_ties():
    # 60 % one-order customers: the 20 %, 40 % and 60 % edges (positions 19, 39, 59 of 100)
    # fall inside their run, so all of them score 1, scores 2 and 3 stay empty, and
    # two-order customers, above three edges, score 4.
    x = np.array([1] * 60 + [2] * 20 + [3] * 10 + [4] * 10)
    s, edges, _ = quantile_scores(x, np.ones(100, dtype=np.bool_), 5)
    assert edges == [1, 1, 1, 2]
    assert np.bincount(s, minlength=6)[1:].tolist() == [60, 0, 0, 20, 20]
    first, _, _ = quantile_scores(x, np.ones(100, dtype=np.bool_), 5, ties="first")
    assert np.bincount(first, minlength=6)[1:].tolist() == [20, 20, 20, 20, 20]


# --- the whole scoring step --------------------------------------------------------------

def _table(n=400, seed=0, refund_only=5):
    rng = np.random.default_rng(seed)
    n_orders = rng.zipf(1.7, n).clip(max=60)
    n_orders[:refund_only] = 0
    recency = rng.integers(0, 400, n)
    mask = n_orders == 0
    minor = (rng.lognormal(3, 1, n) * 100).astype(np.int64) * n_orders
    minor[mask] = -rng.integers(100, 900, mask.sum())
    aov = np.where(mask, 0, minor / 100 / np.maximum(n_orders, 1))
    return pa.table({
        "customer_id": pa.array([f"c{i}" for i in range(n)]),
        "recency_days": pa.array(recency, mask=mask),
        "tenure_days": pa.array(recency + rng.integers(0, 300, n), mask=mask),
        "n_orders": pa.array(n_orders.astype(np.int64)),
        "n_refunds": pa.array(rng.integers(0, 3, n)),
        "monetary_total": pa.array(minor / 100),
        "monetary_minor": pa.array(minor),
        "avg_order_value": pa.array(aov, mask=mask),
    }).replace_schema_metadata({"rfmx.amount_scale": "2"})


def _col(t, name):
    return t.column(name).to_pylist()


def test_score_table_against_references():
    t = _table()
    out = score_table(t)
    member = [o > 0 for o in _col(t, "n_orders")]
    rec = [r if r is not None else 0 for r in _col(t, "recency_days")]
    r = naive.keep_scores_by_edges(rec, member, 5, lower_is_better=True)
    f = naive.keep_scores_by_edges(_col(t, "n_orders"), member, 5)
    m = naive.keep_scores_by_edges(_col(t, "monetary_minor"), member, 5)
    assert _col(out, "r_score") == r and _col(out, "f_score") == f and _col(out, "m_score") == m
    assert _col(out, "rfm_code") == [f"{a}{b}{c}" for a, b, c in zip(r, f, m)]
    assert _col(out, "rfm_score") == [a + b + c for a, b, c in zip(r, f, m)]
    # default value score: equal weights on the three scores
    norms = {k: [(s - 1) / 4 for s in v] for k, v in (("r", r), ("f", f), ("m", m))}
    want_value = naive.value_scores(norms, {"r": 1, "f": 1, "m": 1}, member)
    assert np.allclose(_col(out, "value_score"), want_value, rtol=0, atol=1e-12)
    tiers = naive.tiers(_col(out, "value_score"), member, [20, 30, 50])
    assert _col(out, "value_tier") == [("high", "medium", "low")[i] for i in tiers]
    assert _col(out, "abc_class") == naive.abc(_col(t, "monetary_minor"))
    from rfmx.segments import RFM_GRID_TOML
    import tomllib

    rules = tomllib.loads(RFM_GRID_TOML)["segment"]
    rows = [{"r_score": a, "f_score": b, "m_score": c} for a, b, c in zip(r, f, m)]
    assert _col(out, "segment") == [naive.first_match(rules, row, 5) for row in rows]
    info = score_info(out)
    assert info["dimensions"]["frequency"]["counts"] == np.bincount(f, minlength=6)[1:].tolist()
    assert info["population"] == sum(member)


def test_refund_only_customers_score_lowest():
    t = _table(n=50, refund_only=3)
    out = score_table(t)
    for row in out.slice(0, 3).to_pylist():
        assert row["recency_days"] is None and row["n_orders"] == 0
        assert (row["r_score"], row["f_score"], row["m_score"]) == (1, 1, 1)
        assert row["value_score"] == 0.0 and row["value_tier"] == "low"
        assert row["segment"] == "Lost" and row["abc_class"] == "C"


def test_monetary_on_average_order_value_and_ties_first():
    t = _table(seed=3)
    out = score_table(t, monetary="aov", ties="first", bins=4, segments=None)
    member = [o > 0 for o in _col(t, "n_orders")]
    aov = [a if a is not None else 0.0 for a in _col(t, "avg_order_value")]
    assert _col(out, "m_score") == naive.pandas_first_scores(aov, member, 4)
    rec = [r if r is not None else 0 for r in _col(t, "recency_days")]
    assert _col(out, "r_score") == naive.pandas_first_scores(rec, member, 4, lower_is_better=True)
    assert "segment" not in out.column_names


def test_fixed_cut_points():
    t = _table(seed=4)
    out = score_table(t, cuts=["recency=30,90,180,365", "frequency=1,2,4,8"], segments=None)
    member = [o > 0 for o in _col(t, "n_orders")]
    rec = [r if r is not None else 0 for r in _col(t, "recency_days")]
    assert _col(out, "r_score") == naive.cut_scores(rec, member, [30, 90, 180, 365], 5, lower_is_better=True)
    assert _col(out, "f_score") == naive.cut_scores(_col(t, "n_orders"), member, [1, 2, 4, 8], 5)
    out = score_table(t, cuts={"monetary": [10, 50, 100, 500]}, segments=None)
    assert _col(out, "m_score") == naive.cut_scores(_col(t, "monetary_total"), member, [10, 50, 100, 500], 5)
    assert score_info(out)["dimensions"]["monetary"]["cuts"] == [10, 50, 100, 500]


def test_weighted_value_score_with_raw_features_and_custom_tiers():
    t = _table(seed=6)
    weights = "monetary=40,frequency=25,recency=20,tenure_days=15"
    out = score_table(t, weights=weights, tiers="top=10,mid=40,rest=50", segments=None)
    member = [o > 0 for o in _col(t, "n_orders")]
    ten = [v if v is not None else 0 for v in _col(t, "tenure_days")]
    norms = {"m_score": [(s - 1) / 4 for s in _col(out, "m_score")],
             "f_score": [(s - 1) / 4 for s in _col(out, "f_score")],
             "r_score": [(s - 1) / 4 for s in _col(out, "r_score")],
             "tenure_days": naive.positions(ten, member)}
    want = naive.value_scores(norms, {"m_score": 40, "f_score": 25, "r_score": 20, "tenure_days": 15}, member)
    assert np.allclose(_col(out, "value_score"), want, rtol=0, atol=1e-9)
    tiers = naive.tiers(_col(out, "value_score"), member, [10, 40, 50])
    assert _col(out, "value_tier") == [("top", "mid", "rest")[i] for i in tiers]
    # a negative weight reverses a feature: more refunds, lower value
    out = score_table(t, weights={"n_refunds": -1}, segments=None)
    want = naive.value_scores({"n_refunds": naive.positions(_col(t, "n_refunds"), member)}, {"n_refunds": -1}, member)
    assert np.allclose(_col(out, "value_score"), want, rtol=0, atol=1e-9)


def test_one_and_several_threads_agree():
    t = _table(n=70_000, seed=9)  # above the size where the dimensions run in threads
    for ties in ("keep", "first"):
        assert score_table(t, threads=1, ties=ties).equals(score_table(t, threads=3, ties=ties))


def test_rescoring_replaces_score_columns_and_is_deterministic():
    t = _table(seed=8)
    a = score_table(t)
    b = score_table(a, bins=5)
    assert a.column_names == b.column_names
    assert a.drop_columns(["segment"]).equals(b.drop_columns(["segment"]))
    assert _col(a, "segment") == _col(b, "segment")


def test_score_api_from_orders_state_and_frames(tmp_path):
    orders = pa.Table.from_batches(list(rfmx.generate_orders(3000, seed=2)))
    direct = rfmx.score(orders)
    state = rfmx.build_state(orders)
    from_state = rfmx.score(state)
    from_table = rfmx.score(rfmx.aggregate(orders))
    from_pandas = rfmx.score(rfmx.aggregate(orders).to_pandas())
    key = ["customer_id"]
    for other in (from_state, from_table):
        assert direct.sort_by([(key[0], "ascending")]).select(["r_score", "f_score", "m_score", "segment"]).equals(
            other.sort_by([(key[0], "ascending")]).select(["r_score", "f_score", "m_score", "segment"]))
    assert sorted(_col(from_pandas, "rfm_code")) == sorted(_col(direct, "rfm_code"))


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"bins": 1}, "bins must be an integer between 2"),
    ({"bins": 2.5}, "bins must be an integer"),
    ({"bins": 101}, "between 2 and 100"),
    ({"ties": "average"}, "ties must be one of"),
    ({"monetary": "gross"}, "monetary must be one of"),
    ({"weights": "monetary40"}, "weights: cannot parse 'monetary40'"),
    ({"weights": "monetary=lots"}, "weights: 'monetary': 'lots' is not a number"),
    ({"weights": "loyalty=3"}, "weights: unknown feature 'loyalty'"),
    ({"weights": "recency=0"}, "weights: all weights are zero"),
    ({"tiers": "high=20,low=70"}, "tiers: shares must sum to 100"),
    ({"tiers": "all=100"}, "at least two tiers"),
    ({"cuts": "recency=1,2"}, "recency has 2 cut points but 5 bins need 4"),
    ({"cuts": "loyalty=1,2,3,4"}, "cuts: unknown dimension 'loyalty'"),
    ({"cuts": "recency=4,3,2,1"}, "strictly ascending"),
    ({"segments": "nope"}, "unknown segment map 'nope'"),
    ({"segments": "rfm-grid", "bins": 4}, "written for 5 bins, not 4"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(RfmxError, match=message) as exc:
        score_table(_table(n=30), **kwargs)
    assert "\n" not in str(exc.value)


def test_missing_columns():
    with pytest.raises(RfmxError, match="column 'recency_days' not found"):
        score_table(pa.table({"n_orders": [1, 2], "monetary_total": [1.0, 2.0]}))


def test_option_parsers():
    assert parse_weights("monetary=40, frequency=25,recency=20,tenure_days=15") == {
        "m_score": 40, "f_score": 25, "r_score": 20, "tenure_days": 15}
    assert parse_tiers({"a": 50, "b": 50}) == (("a", 50), ("b", 50))
    assert parse_cuts(["r=1,2", "monetary=5,6"], 3) == {"recency": [1, 2], "monetary": [5, 6]}


# --- CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def orders_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("scores")
    path = d / "orders.parquet"
    rfmx.write_orders(str(path), 4000, seed=11)
    return path


def test_cli_score_writes_table_and_prints_segments(orders_file, tmp_path):
    out = tmp_path / "scores.parquet"
    state = tmp_path / "state.arrow"
    res = CliRunner().invoke(main, ["score", str(orders_file), "-o", str(out), "--state-out", str(state)])
    assert res.exit_code == 0, res.output
    assert "Champions" in res.stdout and "customers" in res.stdout
    table = pq.read_table(out)
    assert {"r_score", "segment", "abc_class", "value_tier"} <= set(table.column_names)
    expected = rfmx.score(str(orders_file))
    assert sorted(_col(table, "rfm_code")) == sorted(_col(expected, "rfm_code"))
    # re-score the saved state without the orders, with other options
    out2 = tmp_path / "scores.csv"
    res = CliRunner().invoke(main, ["score", "--state-in", str(state), "-o", str(out2), "--segments", "pymc",
                                    "--ties", "first", "--weights", "monetary=40,frequency=25,recency=20,tenure_days=15"])
    assert res.exit_code == 0, res.output
    assert "Premium Customer" in res.stdout
    assert "match no rule -> segment 'Other'" in res.stderr


def test_cli_summary_formats(orders_file, tmp_path):
    out = tmp_path / "scores.parquet"
    assert CliRunner().invoke(main, ["score", str(orders_file), "-o", str(out)]).exit_code == 0
    res = CliRunner().invoke(main, ["summary", str(out)])
    assert res.exit_code == 0, res.output
    assert "Gini coefficient" in res.stdout and "ABC classes" in res.stdout and "Champions" in res.stdout
    res = CliRunner().invoke(main, ["summary", str(out), "--format", "json"])
    doc = json.loads(res.stdout)
    assert set(doc) == {"concentration", "abc", "segments"}
    assert abs(sum(r["customer_share"] for r in doc["segments"]) - 1) < 1e-12
    js = tmp_path / "summary.json"
    assert CliRunner().invoke(main, ["summary", str(out), "-o", str(js)]).exit_code == 0
    assert json.loads(js.read_text()) == doc
    res = CliRunner().invoke(main, ["summary", str(out), "--format", "csv", "--section", "abc"])
    assert res.stdout.splitlines()[0] == '"class","customers","customer_share","revenue","revenue_share"'
    res = CliRunner().invoke(main, ["summary", str(out), "--format", "csv", "--section", "all"])
    assert res.exit_code != 0 and "CSV holds one table" in res.output


@pytest.mark.parametrize("args, message", [
    (["--weights", "monetary40"], "weights: cannot parse 'monetary40'"),
    (["--weights", "bogus=1"], "weights: unknown feature 'bogus'"),
    (["--bins", "1"], "bins must be an integer between 2"),
    (["--segments", "missing.toml"], "missing.toml: file not found"),
])
def test_cli_bad_options_exit_nonzero_with_one_line(orders_file, args, message):
    res = CliRunner().invoke(main, ["score", str(orders_file)] + args)
    assert res.exit_code == 1
    assert message in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_demo_scores(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--rows", "3000", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert "Champions" in res.stdout
    assert (tmp_path / "demo" / "scores.parquet").exists()


def _tutorial_scores(df, q):
    """The tutorial recipe, written as users write it (pandas on the customers with orders)."""
    import pandas as pd

    r = pd.qcut(df.recency_days.rank(method="first"), q, labels=list(range(q, 0, -1))).astype(int)
    f = pd.qcut(df.n_orders.rank(method="first"), q, labels=False) + 1
    m = pd.qcut(df.monetary_total.rank(method="first"), q, labels=False) + 1
    return r.tolist(), f.tolist(), m.tolist()


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.sampled_from([2, 3, 4, 5, 7, 10]), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_ties_first_is_the_tutorial_recipe_for_r_f_and_m(n, q, distinct, seed):
    # few distinct values: most customers tie with others, edges fall inside runs
    rng = np.random.default_rng(seed)
    t = pa.table({"customer_id": np.arange(n), "recency_days": rng.integers(0, distinct, n),
                  "n_orders": rng.integers(1, distinct + 1, n),
                  "monetary_total": rng.integers(1, distinct + 1, n) * 12.5})
    out = score_table(t, ties="first", bins=q, segments=None)
    want = _tutorial_scores(t.to_pandas(), q)
    assert (_col(out, "r_score"), _col(out, "f_score"), _col(out, "m_score")) == want


def test_ties_first_matches_the_tutorial_on_a_large_population():
    # days and order counts tie heavily; the range of money takes the radix-bucket path
    rng = np.random.default_rng(11)
    n = 100_000
    t = pa.table({"customer_id": np.arange(n), "recency_days": rng.integers(0, 365, n),
                  "n_orders": rng.zipf(1.8, n).clip(max=200),
                  "monetary_total": np.round(rng.lognormal(4, 1.5, n), 2)})
    df = t.to_pandas()
    for q in (4, 5):
        out = score_table(t, ties="first", bins=q, segments=None)
        assert (_col(out, "r_score"), _col(out, "f_score"), _col(out, "m_score")) == _tutorial_scores(df, q)
        # the bins are equal-size (±1), the most recent customers score q
        r = np.array(_col(out, "r_score"))
        assert np.ptp(np.bincount(r)[1:]) <= 1
        assert r[np.argmin(df.recency_days.to_numpy())] == q
