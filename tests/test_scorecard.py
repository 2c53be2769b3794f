"""The high-value customer scorecard: each dimension against a hand computation."""
from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from rfmx.errors import RfmxError
from rfmx.scorecard import Scorecard, add_scorecard, scorecard_line


def percentile(values, member):
    """Each member's position among the members, 0..1: members strictly below / (n - 1)."""
    v = np.asarray(values, dtype=float)
    m = np.asarray(member, dtype=bool)
    n = m.sum()
    out = np.zeros(len(v))
    if n > 1:
        for i in np.flatnonzero(m):
            out[i] = (v[m] < v[i]).sum() / (n - 1)
    return out


def customers(n_orders, tenure, money, profit=None, **extra):
    cols = {"customer_id": pa.array(range(len(n_orders)), pa.int64()),
            "recency_days": pa.array([10] * len(n_orders), pa.int64()),
            "tenure_days": pa.array(tenure, pa.int64()),
            "n_orders": pa.array(n_orders, pa.int64()),
            "monetary_minor": pa.array(money, pa.int64()),
            "monetary_total": pa.array([m / 100 for m in money], pa.float64())}
    if profit is not None:
        cols["profit_minor"] = pa.array(profit, pa.int64())
    for k, v in extra.items():
        cols[k] = pa.array(v, pa.float64())
    return pa.table(cols).replace_schema_metadata({"rfmx.amount_scale": "2"})


def test_hvc_dimensions_by_hand():
    n_orders = [1, 3, 0, 7, 2, 3]
    tenure = [10, 400, 50, 800, 100, 30]
    money = [500, 9000, -200, 40000, 3000, 9000]
    profit = [100, -50, -80, 9000, 700, 1200]
    p_alive = [0.2, 0.9, 0.1, 0.5, 0.7, 0.95]
    clv = [10.0, 200.0, 0.0, 300.0, 80.0, 50.0]
    refs = [0, 5, 1, 2, 9, 0]
    t = customers(n_orders, tenure, money, profit, probability_alive=p_alive, clv=clv, referrals=refs)
    out = add_scorecard(t, "hvc", influence="referrals")
    member = np.array(n_orders) > 0
    years = np.maximum(np.array(tenure) / 365.25, 30 / 365.25)
    financial = 100 * percentile(profit, member)
    growth_raw = np.array(clv) / (np.array(money) / 100 / years)
    growth_raw[np.array(money) <= 0] = np.nan
    growth_member = member & np.isfinite(growth_raw)
    growth = 100 * percentile(np.nan_to_num(growth_raw, nan=-1), growth_member)
    loyalty = 100 * (percentile(tenure, member) + percentile(np.array(n_orders) / years, member)
                     + percentile(p_alive, member)) / 3
    influence = 100 * percentile(refs, member)
    for name, want in (("financial", financial), ("growth", growth), ("loyalty", loyalty), ("influence", influence)):
        got = np.array(out.column(f"hvc_{name}").to_pylist())
        want = np.where(member, want, 0.0)
        np.testing.assert_allclose(got, want, atol=1e-9, err_msg=name)
    total = 0.40 * financial + 0.25 * growth + 0.20 * loyalty + 0.15 * influence
    np.testing.assert_allclose(out.column("hvc_score").to_pylist(), np.where(member, total, 0.0), atol=1e-9)
    info = json.loads(out.schema.metadata[b"rfmx.scorecard"])
    assert info["absent"] == [] and info["weights"] == {"financial": 40.0, "growth": 25.0, "loyalty": 20.0,
                                                       "influence": 15.0}
    assert out.column("hvc_tier").to_pylist()[2] == "low"  # no order: the lowest tier


def test_absent_dimensions_spread_their_weight_and_say_so():
    t = customers([1, 2, 3, 4], [10, 20, 30, 40], [100, 200, 300, 400])
    out = add_scorecard(t, "hvc")
    info = json.loads(out.schema.metadata[b"rfmx.scorecard"])
    assert info["absent"] == ["growth", "influence"]
    assert info["weights"] == pytest.approx({"financial": 200 / 3, "loyalty": 100 / 3})
    assert out.column("hvc_growth").null_count == 4 and out.column("hvc_influence").null_count == 4
    f, lo = np.array(out.column("hvc_financial").to_pylist()), np.array(out.column("hvc_loyalty").to_pylist())
    np.testing.assert_allclose(out.column("hvc_score").to_pylist(), (2 * f + lo) / 3)
    # without profit the financial dimension reads net money (the fallback)
    assert info["features"]["financial"] == {"monetary_minor": 1}
    assert "weight spread over the others" in scorecard_line(out)


def test_spend_trend_is_growth_without_a_model():
    t = customers([1, 1, 1], [400, 400, 400], [100, 100, 100], year_net_minor=[300, 100, 50],
                  year_ago_net_minor=[100, 100, 0])
    out = add_scorecard(t, "hvc")
    # trends +200 %, 0 %, undefined (nothing a year before): members with a trend ranked
    assert out.column("hvc_growth").to_pylist() == [100.0, 0.0, 0.0]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5), st.integers(0, 1000), st.integers(-500, 5000)),
                min_size=2, max_size=40))
def test_within_groups_equals_each_group_alone(rows):
    from rfmx.groups import GROUP_META

    shop = [r[0] for r in rows]
    t = customers([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
    grouped = t.add_column(0, "shop_id", pa.array(shop, pa.int64()))
    meta = dict(grouped.schema.metadata)
    meta[GROUP_META] = json.dumps(["shop_id"]).encode()
    grouped = grouped.replace_schema_metadata(meta)
    out = add_scorecard(grouped, "hvc")
    for s in set(shop):
        rows_of = [i for i, x in enumerate(shop) if x == s]
        alone = add_scorecard(t.take(rows_of), "hvc")
        np.testing.assert_allclose(out.column("hvc_score").take(rows_of).to_pylist(),
                                   alone.column("hvc_score").to_pylist(), atol=1e-9)


def test_toml_scorecard_replaces_the_preset(tmp_path):
    f = tmp_path / "card.toml"
    f.write_text('[scorecard.money]\nweight = 3\nfeatures = { monetary_minor = 1 }\n'
                 '[scorecard.recent]\nweight = 1\nfeatures = { recency_days = 1, n_orders = -1 }\n')
    t = customers([1, 2, 3], [10, 20, 30], [100, 50, 300])
    out = add_scorecard(t, str(f))
    money = 100 * percentile([100, 50, 300], [True] * 3)
    # recency: lower is better (as in the value score); n_orders weighted -1: fewer is better
    recent = 100 * (percentile([-10, -10, -10], [True] * 3) + (1 - percentile([1, 2, 3], [True] * 3))) / 2
    np.testing.assert_allclose(out.column("hvc_score").to_pylist(), 0.75 * money + 0.25 * recent)
    assert "hvc_money" in out.column_names and "hvc_recent" in out.column_names


@pytest.mark.parametrize("text, message", [
    ("[other]\nx = 1\n", "no [scorecard.NAME] tables"),
    ("[scorecard.a]\nweight = 0\nfeatures = { n_orders = 1 }\n", "weight must be a number above 0"),
    ("[scorecard.a]\nweight = 1\nfeatures = { n_orders = 0 }\n", "features must be a table"),
    ("[scorecard.a]\nweight = 1\nfeature = { n_orders = 1 }\n", "unknown key 'feature'"),
])
def test_bad_scorecard_files(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(RfmxError, match=re.escape(message)):
        Scorecard.resolve(str(f))


def test_a_table_without_any_feature_is_an_error(tmp_path):
    f = tmp_path / "card.toml"
    f.write_text("[scorecard.a]\nweight = 1\nfeatures = { nothing_here = 1 }\n")
    with pytest.raises(RfmxError, match="none of its features"):
        add_scorecard(customers([1], [1], [1]), str(f))


def test_cli_scorecard(tmp_path):
    from rfmx.cli.main import main
    from rfmx.generate import write_orders

    orders = tmp_path / "orders.parquet"
    write_orders(orders, 20_000, cost_share=0.6)
    out = tmp_path / "scores.parquet"
    r = CliRunner().invoke(main, ["score", str(orders), "--cost", "cost", "--scorecard", "hvc", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "scorecard hvc: financial" in r.output and "growth, influence" in r.output
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert {"hvc_financial", "hvc_loyalty", "hvc_score", "hvc_tier"} <= set(table.column_names)
    assert table.column("hvc_financial").to_pylist() == add_scorecard(table, "hvc").column(
        "hvc_financial").to_pylist()
    r = CliRunner().invoke(main, ["score", str(orders), "--influence", "x", "-o", str(out)])
    assert r.exit_code == 2 and "--scorecard" in r.output
