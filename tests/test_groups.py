"""Group keys: per-(group, customer) states and scores ranked within groups.

The reference for a grouped run is rfmx run separately on each group's rows (and, for
the aggregates, the naive reference of tests/naive.py): equal bit for bit, over random
groupings, id types, batch splits, merges and save/load round trips.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import GroupedState, RFMState, RfmxError
from naive import naive_rfm, result_rows

T0 = 1_709_251_200_000_000
AS_OF = "2025-01-01"


def orders(n, n_customers, n_groups, seed, *, string_ids=False, string_groups=False, two_columns=False,
           big_ids=False):
    rng = np.random.default_rng(seed)
    cust = rng.integers(0, n_customers, n)
    if big_ids:
        cust = cust + (1 << 50)
    data = {"customer_id": pa.array([f"c{c}" for c in cust]) if string_ids else pa.array(cust)}
    shop = rng.integers(0, n_groups, n)
    data["shop"] = pa.array([f"s{s}" for s in shop]) if string_groups else pa.array(shop.astype(np.int32))
    if two_columns:
        data["market"] = pa.array(rng.choice(["DE", "FR"], n))
    data["order_time"] = pa.array(T0 + rng.integers(0, 300 * 86_400_000_000, n), pa.timestamp("us"))
    data["amount"] = pa.array(rng.integers(-2000, 20000, n) / 100)
    return pa.table(data)


def group_filter(table, cols, values):
    mask = None
    for c, v in zip(cols, values):
        m = pc.equal(table[c], pa.scalar(v, table.schema.field(c).type))
        mask = m if mask is None else pc.and_(mask, m)
    return table.filter(mask)


def group_values(table, cols):
    return sorted(set(zip(*[table[c].to_pylist() for c in cols])))


def assert_equal_per_group(grouped, t, cols, run):
    """``grouped`` (a grouped result) equals ``run(rows of one group)`` for every group."""
    total = 0
    for values in group_values(t, cols):
        alone = run(group_filter(t, cols, values).drop_columns(list(cols))).sort_by("customer_id")
        mine = group_filter(grouped, cols, values).drop_columns(list(cols)).sort_by("customer_id")
        for c in alone.column_names:
            assert alone[c].equals(mine[c]), (values, c)
        total += alone.num_rows
    assert total == grouped.num_rows


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), n_customers=st.integers(1, 40), n_groups=st.integers(1, 6), seed=st.integers(0, 99),
       string_ids=st.booleans(), string_groups=st.booleans(), two=st.booleans(), big=st.booleans(),
       splits=st.lists(st.integers(0, 400), max_size=4))
def test_aggregate_per_group_equals_separate_runs(n, n_customers, n_groups, seed, string_ids, string_groups, two,
                                                  big, splits):
    t = orders(n, n_customers, n_groups, seed, string_ids=string_ids, string_groups=string_groups,
               two_columns=two, big_ids=big and not string_ids)
    cols = ("shop", "market") if two else ("shop",)
    batches = [t.slice(a, b - a) for a, b in zip([0] + sorted(splits), sorted(splits) + [n])]
    grouped = rfmx.aggregate(batches, group=list(cols), as_of=AS_OF)
    assert grouped.column_names[:len(cols) + 1] == list(cols) + ["customer_id"]
    assert grouped.schema.field("shop").type == t.schema.field("shop").type
    assert grouped.schema.field("customer_id").type == t.schema.field("customer_id").type
    assert_equal_per_group(grouped, t, cols, lambda rows: rfmx.aggregate(rows, as_of=AS_OF))
    # the naive reference, one group at a time
    for values in group_values(t, cols)[:2]:
        rows = group_filter(t, cols, values)
        ref, _ = naive_rfm(rows["customer_id"].to_pylist(), rows["order_time"].cast(pa.int64()).to_pylist(),
                           [round(a * 100) for a in rows["amount"].to_pylist()],
                           as_of_us=rfmx.state.to_us(AS_OF))
        mine = group_filter(grouped, cols, values).drop_columns(list(cols))
        assert result_rows(mine) == ref


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 99), cut=st.integers(0, 300), string_ids=st.booleans(),
       big_second=st.booleans(), save=st.booleans())
def test_merges_and_saved_states_equal_one_run(tmp_path_factory, n, seed, cut, string_ids, big_second, save):
    t = orders(n, 30, 4, seed, string_ids=string_ids)
    cut = min(cut, n)
    first, second = t.slice(0, cut), t.slice(cut)
    if big_second and not string_ids:  # ids past 2**44 arrive late: the state re-keys itself
        second = second.set_column(0, "customer_id", pc.add(second["customer_id"], 1 << 45))
        t = pa.concat_tables([first, second])
    a = rfmx.build_state(first, group="shop", as_of=AS_OF)
    b = rfmx.build_state(second, group="shop", as_of=AS_OF)
    if save:
        path = tmp_path_factory.mktemp("g") / "a.arrow"
        a.save(path)
        a = rfmx.load_state(path)
        assert isinstance(a, GroupedState) and a.group == ("shop",)
    a.merge(b)
    whole = rfmx.aggregate(t, group="shop", as_of=AS_OF)
    assert_equal_per_group(a.finalize(), t, ("shop",), lambda rows: rfmx.aggregate(rows, as_of=AS_OF))
    assert a.finalize().sort_by([("shop", "ascending"), ("customer_id", "ascending")]).equals(
        whole.sort_by([("shop", "ascending"), ("customer_id", "ascending")]))
    # extending a state with more lines is the same as a merge
    c = rfmx.build_state(first, group="shop", as_of=AS_OF)
    rfmx.build_state(second, state=c, group="shop")
    assert c.finalize().sort_by([("shop", "ascending"), ("customer_id", "ascending")]).equals(
        whole.sort_by([("shop", "ascending"), ("customer_id", "ascending")]))


SCORE_OPTIONS = [dict(), dict(bins=4, segments="pymc-quartiles"), dict(weights="monetary=40,frequency=25,recency=20,"
                                                                        "tenure_days=15"),
                 dict(monetary="aov", tiers="top=10,mid=40,rest=50"), dict(bins=3, segments=None, cuts=["recency=30,90"])]


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 500), n_groups=st.integers(1, 8), seed=st.integers(0, 99),
       options=st.sampled_from(SCORE_OPTIONS), string_groups=st.booleans())
def test_scores_per_group_equal_separate_runs(n, n_groups, seed, options, string_groups):
    t = orders(n, 60, n_groups, seed, string_groups=string_groups)
    scored = rfmx.score(t, group="shop", as_of=AS_OF, **options)
    assert_equal_per_group(scored, t, ("shop",), lambda rows: rfmx.score(rows, as_of=AS_OF, **options))
    info = rfmx.scores.score_info(scored)["groups"]
    assert info["columns"] == ["shop"] and info["count"] == len(group_values(t, ("shop",)))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 99), ties=st.sampled_from(["keep", "first"]))
def test_score_table_within_groups_equals_each_groups_slice(n, seed, ties):
    """Ranking within groups equals scoring each group's rows of the same table alone, for
    both tie rules (ties="first" orders ties by table row)."""
    from rfmx.scores import score_table

    table = rfmx.aggregate(orders(n, 50, 5, seed), group="shop", as_of=AS_OF)
    scored = score_table(table, ties=ties)
    for (shop,) in group_values(table, ("shop",)):
        rows = group_filter(table, ("shop",), (shop,))
        alone = score_table(rows.replace_schema_metadata(None), ties=ties)
        mine = group_filter(scored, ("shop",), (shop,))
        for c in ("r_score", "f_score", "m_score", "value_score", "value_tier", "segment", "abc_class"):
            assert alone[c].equals(mine[c]), (shop, c)
    # over everyone: the scores of the table without groups
    every = score_table(table, ties=ties, rank_within="all")
    plain = score_table(table.replace_schema_metadata(None), ties=ties)
    for c in ("r_score", "f_score", "m_score", "value_tier", "segment", "abc_class"):
        assert every[c].equals(plain[c])


def test_rank_thresholds_many_equal_scalar():
    from rfmx.scores import rank_thresholds, rank_thresholds_many

    for q in (2, 3, 5, 6, 10):
        ns = np.arange(0, 400)
        many = rank_thresholds_many(ns, q)
        for n in ns:
            assert (many[n] == rank_thresholds(int(n), q)).all()


def test_group_nulls_error_or_skip():
    t = orders(50, 10, 3, 0)
    shop = t["shop"].to_numpy().copy()
    t = t.set_column(1, "shop", pa.array(shop, mask=np.arange(50) % 7 == 3))
    with pytest.raises(RfmxError, match=r"column 'shop' has 7 null value\(s\), first at row 3"):
        rfmx.aggregate(t, group="shop", as_of=AS_OF)
    st_ = rfmx.build_state(t, group="shop", as_of=AS_OF, on_null="skip")
    assert st_.rows_null_skipped == 7 and st_.rows_read == 50
    kept = t.filter(pc.is_valid(t["shop"]))
    assert st_.finalize().sort_by([("shop", "ascending"), ("customer_id", "ascending")]).equals(
        rfmx.aggregate(kept, group="shop", as_of=AS_OF).sort_by([("shop", "ascending"), ("customer_id", "ascending")]))


def test_bad_group_input():
    t = orders(20, 5, 2, 0)
    with pytest.raises(RfmxError, match="column 'branch' not found"):
        rfmx.aggregate(t, group="branch")
    with pytest.raises(RfmxError, match="already mapped"):
        rfmx.aggregate(t, group="customer_id")
    floats = t.set_column(1, "shop", pc.cast(t["shop"], pa.float64()))
    with pytest.raises(RfmxError, match="group by exact values"):
        rfmx.aggregate(floats, group="shop")
    st_ = rfmx.build_state(t, group="shop")
    mixed = t.set_column(1, "shop", pa.array([str(x) for x in t["shop"].to_pylist()]))
    with pytest.raises(RfmxError, match="earlier input had int32"):
        st_.update(mixed)
    with pytest.raises(RfmxError, match="grouped by shop, not by market"):
        rfmx.build_state(t, state=st_, group="market")


def test_grouped_state_file_is_not_read_as_plain(tmp_path):
    st_ = rfmx.build_state(orders(30, 5, 2, 1), group="shop")
    st_.save(tmp_path / "s.arrow")
    with pytest.raises(RfmxError, match="rfmx-grouped-state"):
        RFMState.load(tmp_path / "s.arrow")
    loaded = GroupedState.load(tmp_path / "s.arrow")
    assert loaded.finalize().equals(st_.finalize()) or loaded.finalize().sort_by(
        [("shop", "ascending"), ("customer_id", "ascending")]).equals(
        st_.finalize().sort_by([("shop", "ascending"), ("customer_id", "ascending")]))


def test_small_groups_are_reported():
    t = orders(200, 40, 3, 2)
    one = pa.table({"customer_id": [999], "shop": pa.array([77], pa.int32()),
                    "order_time": pa.array([T0], pa.timestamp("us")), "amount": [5.0]})
    scored = rfmx.score(pa.concat_tables([t, one]), group="shop", as_of=AS_OF)
    info = rfmx.scores.score_info(scored)["groups"]
    assert info["fewer_than_bins"] == 1
    row = group_filter(scored, ("shop",), (77,))
    assert row["r_score"].to_pylist() == [1]  # one customer scores 1, as when scored alone


def test_cli_group_state_round_trip(tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from rfmx.cli.main import main as cli

    t = orders(300, 30, 4, 3)
    pq.write_table(t.slice(0, 150), tmp_path / "a.parquet")
    pq.write_table(t.slice(150), tmp_path / "b.parquet")
    run = CliRunner().invoke
    r = run(cli, ["aggregate", str(tmp_path / "a.parquet"), "--group", "shop", "--as-of", AS_OF,
                  "--state-out", str(tmp_path / "s.arrow")])
    assert r.exit_code == 0, r.output
    r = run(cli, ["score", str(tmp_path / "b.parquet"), "--state-in", str(tmp_path / "s.arrow"),
                  "-o", str(tmp_path / "scores.parquet")])
    assert r.exit_code == 0, r.output
    mine = pq.read_table(tmp_path / "scores.parquet")
    whole = rfmx.score(t, group="shop", as_of=AS_OF)
    key = [("shop", "ascending"), ("customer_id", "ascending")]
    assert mine.sort_by(key).select(whole.column_names).replace_schema_metadata(None).equals(
        whole.sort_by(key).replace_schema_metadata(None))
    r = run(cli, ["score", "--state-in", str(tmp_path / "s.arrow"), "--group", "market", "-o",
                  str(tmp_path / "x.parquet")])
    assert r.exit_code != 0 and "grouped by shop, not by market" in r.output


# --- breakdowns: rfmx summary --by ------------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 600), n_groups=st.integers(1, 6), seed=st.integers(0, 99), top=st.integers(1, 8))
def test_grouped_summary_against_pandas(n, n_groups, seed, top):
    pd = pytest.importorskip("pandas")
    from rfmx.concentration import grouped_summary

    scored = rfmx.score(orders(n, 40, n_groups, seed), group="shop", as_of=AS_OF)
    df = scored.to_pandas()
    df["segment"] = df["segment"].astype(str)
    revenue = df.groupby("shop", sort=False)["monetary_minor"].sum()
    first = {s: i for i, s in enumerate(dict.fromkeys(df["shop"]))}
    expected_order = sorted(revenue.index, key=lambda s: (-revenue[s], first[s]))[:top]
    result = grouped_summary(scored, "shop", top_groups=top)
    assert [r["group"]["shop"] for r in result] == expected_order
    for r in result:
        part = df[df["shop"] == r["group"]["shop"]]
        assert r["customers"] == len(part)
        assert r["revenue"] == pytest.approx(part["monetary_minor"].sum() / 100, abs=1e-9)
        seg = r["segments"].to_pandas().set_index("segment")
        ref = part.groupby("segment").agg(customers=("customer_id", "size"), revenue=("monetary_minor", "sum"),
                                          orders_mean=("n_orders", "mean"))
        for name, row in ref.iterrows():
            assert seg.loc[name, "customers"] == row["customers"]
            assert seg.loc[name, "revenue"] == pytest.approx(row["revenue"] / 100)
            assert seg.loc[name, "orders_mean"] == pytest.approx(row["orders_mean"])
        assert int(seg["customers"].sum()) == len(part)
        # concentration within the group: Gini over clipped revenue sorted ascending
        x = np.sort(np.clip(part["monetary_minor"].to_numpy(), 0, None)).astype(float)
        k = len(x)
        gini = ((2 * np.arange(k) - k + 1) * x).sum() / (k * x.sum()) if x.sum() > 0 else None
        got = r["concentration"]["gini"]
        assert (got is None and gini is None) or got == pytest.approx(gini, abs=1e-12)
        abc = r["abc"].to_pandas().set_index("class")["customers"]
        assert abc.to_dict() == {c: int((part["abc_class"].astype(str) == c).sum()) for c in "ABC"}


def test_cli_summary_by(tmp_path):
    import json

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from rfmx.cli.main import main as cli

    pq.write_table(rfmx.score(orders(400, 40, 5, 4), group="shop", as_of=AS_OF), tmp_path / "s.parquet")
    r = CliRunner().invoke(cli, ["summary", str(tmp_path / "s.parquet"), "--by", "shop", "--top-groups", "2",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert len(doc) == 2 and doc[0]["revenue"] >= doc[1]["revenue"] and "segments" in doc[0]
    r = CliRunner().invoke(cli, ["summary", str(tmp_path / "s.parquet"), "--by", "shop", "--format", "csv"])
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith('"shop","segment"')
    r = CliRunner().invoke(cli, ["summary", str(tmp_path / "s.parquet"), "--by", "branch"])
    assert r.exit_code == 1 and "group column 'branch' not found" in r.output


# --- clusters fitted within groups: --fit-within group --------------------------------------

@settings(max_examples=8, deadline=None)
@given(n=st.integers(50, 1500), n_groups=st.integers(1, 5), seed=st.integers(0, 99), k=st.integers(1, 4),
       min_size=st.integers(1, 200), pooled=st.booleans())
def test_clusters_within_groups(n, n_groups, seed, k, min_size, pooled):
    """Each group large enough gets the model fit_clusters fits on its rows alone; a smaller
    group is left out (null) or placed by the model fitted on every pair; the JSON model
    round trip places every customer as the fit did."""
    from rfmx.cluster import fit_clusters
    from rfmx.group_clusters import GroupClusters, fit_by_group

    table = rfmx.aggregate(orders(n, 120, n_groups, seed), group="shop", as_of=AS_OF)
    model, clusters = fit_by_group(table, k, min_group_size=min_size, small_groups="pooled" if pooled else "skip")
    assert len(model.parts) == len(set(table["shop"].to_pylist()))
    everyone = fit_clusters(table, k)[1] if pooled and model.left_out else None
    for part in model.parts:
        rows = np.flatnonzero(np.asarray(pc.equal(pc.cast(table["shop"], pa.string()), part.values[0])))
        mine = clusters.take(pa.array(rows))
        alone = table.take(pa.array(rows))
        with_features = int(np.asarray(alone["recency_days"].is_valid()).sum())
        assert part.customers == with_features
        if part.model is not None:
            assert with_features >= max(k, min_size)
            assert mine.equals(fit_clusters(alone, k)[1])
        else:
            assert part.reason
            if pooled:
                assert mine.equals(everyone.take(pa.array(rows)))
            else:
                assert mine.null_count == len(rows)
    again = GroupClusters.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.predict(table).equals(clusters)


def test_cli_score_fit_within_group(tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from rfmx.cli.main import main as cli
    from rfmx.group_clusters import group_clusters_info

    t = orders(2000, 200, 4, 5)
    # one tiny shop: too few customers for its own model
    tiny = t.slice(0, 3).set_column(1, "shop", pa.array([99, 99, 99], pa.int32()))
    pq.write_table(pa.concat_tables([t, tiny]), tmp_path / "o.parquet")
    run = CliRunner().invoke
    r = run(cli, ["score", str(tmp_path / "o.parquet"), "--group", "shop", "--clusters", "3", "--fit-within", "group",
                  "--min-group-size", "20", "--as-of", AS_OF, "-o", str(tmp_path / "s.parquet")])
    assert r.exit_code == 0, r.output
    assert "clusters fitted within shop: 4 of 5 groups" in r.output
    assert "group 99: " in r.output and "fewer than the minimum group size 20" in r.output
    out = pq.read_table(tmp_path / "s.parquet")
    info = group_clusters_info(out)
    assert info["left_out"] == 1 and info["left_out_customers"] <= 3
    assert pc.all(pc.is_null(out.filter(pc.equal(out["shop"], 99))["cluster"])).as_py()
    r = run(cli, ["score", str(tmp_path / "o.parquet"), "--clusters", "3", "--fit-within", "group"])
    assert r.exit_code == 2 and "give --group and --clusters" in r.output


def test_cli_cluster_fit_within_group_model_file(tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from rfmx.cli.main import main as cli
    from rfmx.group_clusters import GroupClusters

    pq.write_table(orders(1500, 150, 3, 6), tmp_path / "o.parquet")
    run = CliRunner().invoke
    r = run(cli, ["cluster", str(tmp_path / "o.parquet"), "--group", "shop", "-k", "3", "--fit-within", "group",
                  "--as-of", AS_OF, "--model-out", str(tmp_path / "m.json"), "-o", str(tmp_path / "c.parquet"),
                  "--profiles", str(tmp_path / "p.parquet")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["format"] == "rfmx-clusters-by-group" and len(doc["groups"]) == 3
    assert all("model" in g for g in doc["groups"]) and "== shop = " in r.output
    profiles = pq.read_table(tmp_path / "p.parquet")
    assert profiles.column_names[:2] == ["shop", "model"]
    clustered = pq.read_table(tmp_path / "c.parquet")
    assert GroupClusters.load(tmp_path / "m.json").predict(clustered).equals(clustered["cluster"].combine_chunks())
    r = run(cli, ["cluster", str(tmp_path / "o.parquet"), "--group", "shop", "--model-in", str(tmp_path / "m.json"),
                  "--as-of", AS_OF, "-o", str(tmp_path / "c2.parquet")])
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "c2.parquet")["cluster"].equals(clustered["cluster"])
    r = run(cli, ["cluster", str(tmp_path / "o.parquet"), "--group", "shop", "-k", "3", "--fit-within", "group",
                  "--k-range", "2..4"])
    assert r.exit_code == 2 and "--k-range does not apply to --fit-within group" in r.output
