"""Revenue concentration, Gini, ABC classes and the segment summary: hand-computed cases and
tests/naive_scores.py references."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive_scores as naive
from rfmx.concentration import abc_classes, abc_summary, concentration, segment_summary
from rfmx.kernels.scores import sort_nonneg
from rfmx.scores import readonly, score_table


def _money(minor, scale=2):
    minor = np.asarray(minor, dtype=np.int64)
    return pa.table({"monetary_minor": minor, "monetary_total": minor / 10 ** scale}).replace_schema_metadata(
        {"rfmx.amount_scale": str(scale)})


def test_hand_computed_case():
    t = _money([100, 50, 50, 0, -20])  # clipped: 100, 50, 50, 0, 0; total 200 cents
    c = concentration(t)
    assert c["customers"] == 5 and c["revenue"] == 2.0
    # top p % = the ceil(p * 5 / 100) best customers: 1, 1, 1, 1, 3
    assert c["top_shares"] == {1: 0.5, 5: 0.5, 10: 0.5, 20: 0.5, 50: 1.0}
    # sum |xi - xj| over ordered pairs = 1000; / (2 * n^2 * mean) = 1000 / (2 * 25 * 40)
    assert c["gini"] == pytest.approx(0.5, abs=1e-15)
    # 100 (nothing above) and the run of 50s (100 above < 80 % of 200) are A; zeros are C
    assert abc_classes(t).tolist() == [0, 0, 0, 2, 2]


@pytest.mark.parametrize("revenue, classes", [
    ([60, 30, 10], "AAB"),           # 30: 60 above < 80; 10: 90 above, < 95
    ([10, 10, 10, 10], "AAAA"),      # one run, nothing above it
    ([80, 15, 5], "ABC"),            # exactly 80 % above the 15: not A
    ([79, 16, 5], "AAC"),            # 16: 79 above < 80; 5: exactly 95 % above: C
    ([0, 0], "CC"),                  # no revenue at all
    ([-5, 3], "CA"),
])
def test_abc_edges(revenue, classes):
    assert "".join("ABC"[c] for c in abc_classes(_money(revenue))) == classes
    assert "".join(naive.abc(revenue)) == classes


def test_no_revenue():
    c = concentration(_money([0, -3]))
    assert c["gini"] is None and all(v is None for v in c["top_shares"].values())
    s = abc_summary(_money([0, -3]))
    assert s.column("customers").to_pylist() == [0, 0, 2]
    assert s.column("revenue_share").to_pylist() == [None, None, None]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(-100, 100), st.integers(0, 10**12), st.sampled_from([0, 7, 7, 7])),
                min_size=1, max_size=60))
def test_concentration_matches_naive(revenue):
    t = _money(revenue)
    c = concentration(t)
    want = naive.top_shares(revenue)
    for p, share in c["top_shares"].items():
        assert share == pytest.approx(want[p], rel=1e-12) if want[p] is not None else share is None
    g = naive.gini(revenue)
    assert (c["gini"] is None) if g is None else c["gini"] == pytest.approx(g, rel=1e-9, abs=1e-12)
    assert ["ABC"[k] for k in abc_classes(t)] == naive.abc(revenue)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**62), st.integers(0, 5)), max_size=300),
       st.lists(st.floats(0, 1e300), max_size=300))
def test_sort_nonneg(ints, floats):
    a = readonly(np.array(ints, dtype=np.int64))
    assert sort_nonneg(a, np.int64(10)).tolist() == sorted(ints)
    f = readonly(np.array(floats, dtype=np.float64))
    assert sort_nonneg(f, np.int64(4)).tolist() == sorted(floats)


def test_large_abc_against_sorting():
    rng = np.random.default_rng(1)
    revenue = np.concatenate([(rng.lognormal(5, 2, 50_000) * 100).astype(np.int64), np.full(5000, 2500),
                              np.zeros(100, np.int64)])
    t = _money(revenue)
    s = np.sort(revenue)[::-1]
    total = s.sum()
    above = np.concatenate([[0], np.cumsum(s)[:-1]])
    first_above = pd.Series(above).groupby(s).transform("min").to_numpy()
    cls_sorted = np.where(100 * first_above < 80 * total, 0, np.where(100 * first_above < 95 * total, 1, 2))
    by_value = dict(zip(s.tolist(), cls_sorted.tolist()))
    assert abc_classes(t).tolist() == [by_value[v] for v in revenue.tolist()]
    c = concentration(t)
    n = len(revenue)
    for p in (1, 5, 10, 20, 50):
        k = math.ceil(p * n / 100)
        assert c["top_shares"][p] == s[:k].sum() / total
    asc = s[::-1].astype(np.float64)
    assert c["gini"] == pytest.approx(((2 * np.arange(n) - n + 1) * asc).sum() / (n * asc.sum()), rel=1e-12)


def test_segment_summary_against_pandas():
    rng = np.random.default_rng(4)
    n = 500
    n_orders = rng.integers(0, 9, n)
    mask = n_orders == 0
    minor = rng.integers(-500, 90000, n)
    t = pa.table({
        "customer_id": np.arange(n),
        "recency_days": pa.array(rng.integers(0, 300, n), mask=mask),
        "n_orders": n_orders,
        "monetary_total": minor / 100,
        "monetary_minor": minor,
    }).replace_schema_metadata({"rfmx.amount_scale": "2"})
    out = score_table(t)
    got = segment_summary(out).to_pandas().set_index("segment")
    df = out.to_pandas()
    df["segment"] = df["segment"].astype(str)
    g = df.groupby("segment")
    for seg, rows in g:
        row = got.loc[seg]
        assert row["customers"] == len(rows)
        assert row["customer_share"] == len(rows) / n
        assert row["revenue"] == pytest.approx(rows["monetary_minor"].sum() / 100, abs=1e-9)
        assert row["revenue_share"] == pytest.approx(rows["monetary_minor"].sum() / df["monetary_minor"].sum())
        rec = rows["recency_days"].dropna()
        assert (pd.isna(row["recency_mean"]) and rec.empty) or row["recency_mean"] == pytest.approx(rec.mean())
        assert (pd.isna(row["recency_median"]) and rec.empty) or row["recency_median"] == rec.median()
        assert row["orders_median"] == rows["n_orders"].median()
        assert row["monetary_median"] == pytest.approx(rows["monetary_minor"].median() / 100, abs=1e-12)
        assert row["monetary_mean"] == pytest.approx(rows["monetary_minor"].mean() / 100)
        assert row["r_score_mean"] == pytest.approx(rows["r_score"].mean())
    # segments without customers are listed with zero counts, in map order
    assert list(got.index[:3]) == ["Champions", "Loyal Customers", "Potential Loyalists"]
    assert got["customers"].sum() == n


def test_summary_medians_of_float_columns():
    t = pa.table({"segment": pa.array(["a", "b", "a", "a", None]),
                  "recency_days": pa.array([1, 2, 3, None, 5]),
                  "n_orders": [1, 2, 3, 4, 5],
                  "monetary_total": [1.5, -2.0, 0.25, 10.0, 3.0]})
    s = segment_summary(t).to_pylist()
    assert [r["segment"] for r in s] == ["a", "b", "(none)"]
    a = s[0]
    assert (a["customers"], a["recency_median"], a["monetary_median"]) == (3, 2.0, 1.5)
    assert a["monetary_mean"] == pytest.approx((1.5 + 0.25 + 10) / 3)
    assert s[2]["customers"] == 1


def test_a_scored_file_carries_its_segment_summary(tmp_path):
    """rfmx score stores the summary it prints; it reads back equal to a recomputation, and
    a table edited since (rows dropped, labels changed) no longer offers it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import rfmx
    from rfmx.concentration import stored_segment_summary
    from rfmx.cli.main import main
    from click.testing import CliRunner

    orders = tmp_path / "o.parquet"
    rfmx.write_orders(str(orders), 20000, seed=4)
    out = tmp_path / "s.parquet"
    res = CliRunner().invoke(main, ["score", str(orders), "-o", str(out)])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    stored = stored_segment_summary(table)
    assert stored is not None and stored.equals(rfmx.segment_summary(table))
    assert stored_segment_summary(table.slice(1)) is None
    relabelled = table.set_column(table.column_names.index("segment"), "segment",
                                  pc.if_else(pc.equal(table["segment"].cast(pa.string()), "Champions"), "Lost",
                                             table["segment"].cast(pa.string())))
    assert stored_segment_summary(relabelled) is None
    money = table.column_names.index("monetary_minor")
    assert stored_segment_summary(table.set_column(money, "monetary_minor",
                                                   pc.add(table["monetary_minor"], 1))) is None
