"""Segment migration between two scored snapshots, against plain pandas references."""
import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import RfmxError
from rfmx.migrations import GONE, NEW, migration, migration_summary, segment_changes
from rfmx.segments import SegmentMap

GRID = SegmentMap.builtin("rfm-grid")
NAMES = GRID.order
TIERS = ["high", "medium", "low"]


def scored(ids, segments, tiers, minor, *, as_of=None, string_ids=False, scale=2):
    """A scored table as rfmx.score writes it (the columns migration reads)."""
    meta = {"rfmx.amount_scale": str(scale)}
    if as_of:
        meta["rfmx.as_of"] = as_of
    return pa.table({
        "customer_id": pa.array([f"c{i}" for i in ids] if string_ids else list(ids),
                                pa.string() if string_ids else pa.int64()),
        "monetary_total": pa.array([m / 10 ** scale for m in minor], pa.float64()),
        "monetary_minor": pa.array(list(minor), pa.int64()),
        "value_tier": pa.array(list(tiers), pa.string()).dictionary_encode(),
        "segment": pa.array(list(segments), pa.string()).dictionary_encode(),
    }).replace_schema_metadata(meta)


@st.composite
def snapshots(draw):
    """Two snapshots over a shared id pool: stayers, new customers and (sometimes) gone ones."""
    pool = draw(st.integers(1, 40))
    in_a = draw(st.lists(st.booleans(), min_size=pool, max_size=pool))
    in_b = draw(st.lists(st.booleans(), min_size=pool, max_size=pool))
    windowed = draw(st.booleans())  # without a window, every earlier customer is still there later
    in_b = [b or (a and not windowed) for a, b in zip(in_a, in_b)]
    order = draw(st.permutations(range(pool)))
    seg = st.sampled_from(NAMES)
    tier = st.sampled_from(TIERS)
    money = st.integers(-5000, 10**7)
    string_ids = draw(st.booleans())

    def table(mask):
        ids = [i for i in order if mask[i]]
        n = len(ids)
        return scored(ids, draw(st.lists(seg, min_size=n, max_size=n)), draw(st.lists(tier, min_size=n, max_size=n)),
                      draw(st.lists(money, min_size=n, max_size=n)), string_ids=string_ids)

    return table(in_a), table(in_b)


def frames(earlier, later):
    """The outer join of the two snapshots, written plainly in pandas."""
    a = earlier.to_pandas()[["customer_id", "segment", "value_tier"]].astype({"segment": object, "value_tier": object})
    b = later.to_pandas()[["customer_id", "segment", "value_tier", "monetary_minor"]]
    b = b.astype({"segment": object, "value_tier": object})
    m = a.merge(b, on="customer_id", how="outer", suffixes=("_a", "_b"), indicator=True)
    m["from_segment"] = m["segment_a"].where(m["_merge"] != "right_only", NEW)
    m["to_segment"] = m["segment_b"].where(m["_merge"] != "left_only", GONE)
    m["monetary_minor"] = m["monetary_minor"].fillna(0).astype("int64")
    return m


def same(a, b):
    """Equal, a missing value (None or NaN) matching only a missing value."""
    return (pd.isna(a) and pd.isna(b)) if pd.isna(a) or pd.isna(b) else a == b


def reference_migration(earlier, later):
    m = frames(earlier, later)
    g = m.groupby(["from_segment", "to_segment"]).agg(customers=("customer_id", "size"),
                                                      revenue=("monetary_minor", "sum")).reset_index()
    g["revenue"] = g["revenue"] / 100
    return g


def reference_summary(earlier, later, order, lapsed):
    m = frames(earlier, later)
    m = m[m["from_segment"] != NEW]
    rank = {s: i for i, s in enumerate(order)}

    def outcome(row):
        f, t = row["from_segment"], row["to_segment"]
        if t == f:
            return "stayed"
        if t == GONE or (t in lapsed and f not in lapsed):
            return "lapsed"
        return "up" if rank[t] < rank[f] else "down"

    m = m.assign(outcome=m.apply(outcome, axis=1) if len(m) else [])
    return m.groupby("from_segment")["outcome"].value_counts(normalize=True).unstack(fill_value=0.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_migration_matches_pandas(pair):
    earlier, later = pair
    got = migration(earlier, later)
    ref = reference_migration(earlier, later)
    nonzero = got.to_pandas()
    nonzero = nonzero[nonzero["customers"] > 0]
    merged = nonzero.merge(ref, on=["from_segment", "to_segment"], how="outer", suffixes=("", "_ref"))
    assert (merged["customers"] == merged["customers_ref"]).all()
    assert np.allclose(merged["revenue"], merged["revenue_ref"], rtol=1e-12, atol=1e-9)
    zero = got.to_pandas()
    assert (zero.loc[zero["customers"] == 0, "revenue"] == 0).all()

    # Each from-segment row sums to that segment's customers in the earlier snapshot; the
    # (new) row to the customers absent from it; revenue to the later snapshot's total.
    df = got.to_pandas()
    by_from = df.groupby("from_segment")["customers"].sum()
    earlier_counts = earlier.to_pandas()["segment"].astype(object).value_counts()
    for s in NAMES:
        assert by_from.get(s, 0) == earlier_counts.get(s, 0)
    new = set(later.column("customer_id").to_pylist()) - set(earlier.column("customer_id").to_pylist())
    assert by_from[NEW] == len(new)
    assert df["customers"].sum() == len(set(earlier.column("customer_id").to_pylist())
                                         | set(later.column("customer_id").to_pylist()))
    assert df["revenue"].sum() == pytest.approx(sum(later.column("monetary_minor").to_pylist()) / 100, abs=1e-6)
    # Every pair of the map's segments is a row, so a pivot is the full matrix.
    assert set(df["to_segment"]) >= set(NAMES)
    assert list(dict.fromkeys(df["from_segment"])) == NAMES + [NEW]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_summary_matches_pandas(pair):
    earlier, later = pair
    got = migration_summary(earlier, later).to_pandas().set_index("from_segment")
    assert list(got.index) == NAMES
    ref = reference_summary(earlier, later, NAMES, ["Hibernating", "Lost"])
    for s in NAMES:
        n = got.loc[s, "customers"]
        assert n == (earlier.to_pandas()["segment"].astype(object) == s).sum()
        if n == 0:
            assert got.loc[s, ["stayed", "up", "down", "lapsed"]].isna().all()
            continue
        for col in ("stayed", "up", "down", "lapsed"):
            want = ref.loc[s, col] if col in ref.columns else 0.0
            assert got.loc[s, col] == pytest.approx(want)
        assert got.loc[s, ["stayed", "up", "down", "lapsed"]].sum() == pytest.approx(1.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_segment_changes_match_pandas(pair):
    earlier, later = pair
    got = segment_changes(earlier, later).to_pandas()
    m = frames(earlier, later)
    changed = (m["_merge"] != "both") | (m["segment_a"] != m["segment_b"]) | (m["value_tier_a"] != m["value_tier_b"])
    ref = m[changed]
    assert sorted(got["customer_id"]) == sorted(ref["customer_id"])
    got = got.astype(object).set_index("customer_id")
    for _, row in ref.iterrows():
        g = got.loc[row["customer_id"]]
        assert g["from_segment"] == row["from_segment"]
        assert g["to_segment"] == row["to_segment"]
        assert same(g["from_tier"], row["value_tier_a"] if row["_merge"] != "right_only" else None)
        assert same(g["to_tier"], row["value_tier_b"] if row["_merge"] != "left_only" else None)


def test_worked_example():
    """The example of docs/scores.md ("Migration and cohorts")."""
    earlier = scored([1, 2, 3, 4], ["Champions", "Champions", "At Risk", "Hibernating"], ["high", "high", "low", "low"],
                     [50000, 30000, 8000, 2000], as_of="2024-07-01T00:00:00")
    later = scored([1, 2, 3, 4, 5], ["Champions", "Loyal Customers", "Lost", "Potential Loyalists", "New Customers"],
                   ["high", "medium", "low", "medium", "medium"], [62000, 30000, 8000, 9000, 4000],
                   as_of="2024-10-01T00:00:00")
    m = migration(earlier, later).to_pandas()
    m = m[m["customers"] > 0]
    rows = [tuple(r) for r in m[["from_segment", "to_segment", "customers", "revenue"]].itertuples(index=False)]
    assert rows == [("Champions", "Champions", 1, 620.0), ("Champions", "Loyal Customers", 1, 300.0),
                    ("At Risk", "Lost", 1, 80.0), ("Hibernating", "Potential Loyalists", 1, 90.0),
                    (NEW, "New Customers", 1, 40.0)]
    assert set(m["as_of_from"]) == {"2024-07-01T00:00:00"} and set(m["as_of_to"]) == {"2024-10-01T00:00:00"}
    s = migration_summary(earlier, later).to_pandas().set_index("from_segment")
    assert s.loc["Champions", ["customers", "stayed", "up", "down", "lapsed"]].tolist() == [2, 0.5, 0.0, 0.5, 0.0]
    assert s.loc["At Risk", "lapsed"] == 1.0
    assert s.loc["Hibernating", "up"] == 1.0
    c = segment_changes(earlier, later).to_pandas()
    assert c["customer_id"].tolist() == [2, 3, 4, 5]
    row = c.astype(object).iloc[3].tolist()
    assert row[:3] == [5, NEW, "New Customers"] and pd.isna(row[3]) and row[4] == "medium"


def test_rfm_grid_order_is_monotone():
    """Raising R or F never moves a customer to a worse segment of rfm-grid."""
    rank = {s: i for i, s in enumerate(GRID.order)}
    seg = GRID.code_segments(5)
    names = GRID.names()

    def at(r, f):
        return rank[names[seg[(r - 1) * 25 + (f - 1) * 5]]]

    for r, f in itertools.product(range(1, 6), repeat=2):
        if r < 5:
            assert at(r + 1, f) <= at(r, f)
        if f < 5:
            assert at(r, f + 1) <= at(r, f)
    assert GRID.order == ["Champions", "Loyal Customers", "Potential Loyalists", "New Customers", "Promising",
                          "Need Attention", "About to Sleep", "Can't Lose Them", "At Risk", "Hibernating", "Lost"]
    assert GRID.lapsed == ["Hibernating", "Lost"]
    pymc = SegmentMap.builtin("pymc-quartiles")
    assert sorted(pymc.order) == sorted(pymc.names()) and pymc.lapsed == ["Inactive Customer"]


MAP = """\
name = "shop"
default = "Other"
order = ["VIP", "Other", "Lapsed"]
lapsed = ["Lapsed"]
[[segment]]
name = "VIP"
m_score = 5
[[segment]]
name = "Lapsed"
r_score = 1
"""


def test_toml_order_and_lapsed():
    smap = SegmentMap.from_toml(MAP, source="shop.toml")
    assert smap.order == ["VIP", "Other", "Lapsed"] and smap.lapsed == ["Lapsed"]
    rule_order = SegmentMap.from_toml(MAP.replace('order = ["VIP", "Other", "Lapsed"]\n', "")
                                      .replace('lapsed = ["Lapsed"]\n', ""))
    assert rule_order.order == ["VIP", "Lapsed", "Other"] and rule_order.lapsed == ["Other"]
    earlier = scored([1, 2, 3], ["VIP", "Other", "Other"], TIERS, [1, 2, 3])
    later = scored([1, 2, 3], ["Other", "VIP", "Lapsed"], TIERS, [1, 2, 3])
    s = migration_summary(earlier, later, segments=smap).to_pandas().set_index("from_segment")
    assert s.loc["VIP", "down"] == 1.0
    assert s.loc["Other", ["up", "lapsed"]].tolist() == [0.5, 0.5]
    # An order list instead of a map: best first, the last one lapsed.
    s = migration_summary(earlier, later, segments=["Lapsed", "Other", "VIP"]).to_pandas().set_index("from_segment")
    assert s.loc["VIP", "up"] == 1.0 and s.loc["Other", ["up", "lapsed"]].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("edit, message", [
    ('order = ["VIP", "Other", "Lapsd"]', "shop.toml line 3: order: unknown segment 'Lapsd'; the map's segments: "
                                          "VIP, Lapsed, Other"),
    ('order = ["VIP", "Other"]', "shop.toml line 3: order must list every segment of the map, best first; "
                                 "missing: Lapsed"),
    ('order = ["VIP", "VIP", "Other", "Lapsed"]', "shop.toml line 3: order: segment 'VIP' is listed twice"),
    ('order = "VIP"', "shop.toml line 3: 'order' must be a list of segment names"),
])
def test_toml_order_errors(edit, message):
    with pytest.raises(RfmxError) as exc:
        SegmentMap.from_toml(MAP.replace('order = ["VIP", "Other", "Lapsed"]', edit), source="shop.toml")
    assert str(exc.value) == message


def test_errors_are_one_line():
    a = scored([1, 2], ["Champions", "Lost"], ["high", "low"], [1, 2])
    cases = [
        (lambda: migration(a.drop_columns(["segment"]), a),
         "the earlier snapshot has no 'segment' column; migration needs scored tables (rfmx.score) with "
         "customer_id, segment"),
        (lambda: migration(a, a.drop_columns(["customer_id"])),
         "the later snapshot has no 'customer_id' column; migration needs scored tables (rfmx.score) with "
         "customer_id, segment"),
        (lambda: segment_changes(a, a.drop_columns(["value_tier"])),
         "the later snapshot has no 'value_tier' column; migration needs scored tables (rfmx.score) with "
         "customer_id, segment, value_tier"),
        (lambda: migration(a, scored([1, 2], ["Champions", "Lost"], TIERS[:2], [1, 2], string_ids=True)),
         "customer_id has type int64 in the earlier snapshot but string in the later one; ids are matched exactly, "
         "so both must be integers or both strings"),
        (lambda: migration(a, scored([1, 1], ["Champions", "Lost"], TIERS[:2], [1, 2])),
         "the later snapshot lists customer_id 1 more than once; a scored table has one row per customer"),
        (lambda: migration(a, scored([1], ["VIP"], ["high"], [1])),
         "the later snapshot has segment 'VIP' in column 'segment', which segment map 'rfm-grid' does not list; "
         "pass segments= the map the tables were scored with (or an order list)"),
        (lambda: migration(scored([1], ["Lost"], ["low"], [1], as_of="2024-06-01"),
                           scored([1], ["Lost"], ["low"], [1], as_of="2024-01-01")),
         "the earlier snapshot (as of 2024-06-01) is after the later one (as of 2024-01-01); "
         "pass the snapshots in time order"),
        (lambda: migration(a, a, segments=["Champions", "Champions"]),
         "segments: 'Champions' is listed twice in the order"),
    ]
    for call, message in cases:
        with pytest.raises(RfmxError) as exc:
            call()
        assert str(exc.value) == message
        assert "\n" not in str(exc.value)


def test_id_widths_and_dictionary_ids_match():
    a = scored([1, 2], ["Champions", "Lost"], ["high", "low"], [1, 2])
    b = a.set_column(0, "customer_id", a.column("customer_id").cast(pa.int32()))
    assert migration(a, b).to_pandas().query("customers > 0")["from_segment"].tolist() == ["Champions", "Lost"]
    s = scored([1, 2], ["Champions", "Lost"], ["high", "low"], [1, 2], string_ids=True)
    d = s.set_column(0, "customer_id", s.column("customer_id").dictionary_encode())
    assert segment_changes(s, d).num_rows == 0
    assert NEW not in migration(s, d).to_pandas().query("customers > 0")["from_segment"].tolist()


def test_null_segments_and_monetary_total():
    """A map without a default leaves segments null: they are the (none) state; without
    the amount scale the revenue is monetary_total."""
    a = scored([1, 2], ["VIP", None], ["high", "low"], [100, 200]).replace_schema_metadata({})
    b = scored([1, 2], [None, "VIP"], ["high", "low"], [100, 250]).replace_schema_metadata({})
    m = migration(a, b, segments=["VIP", "Other"]).to_pandas()
    m = m[m["customers"] > 0]
    assert [tuple(r) for r in m.itertuples(index=False)] == [("VIP", "(none)", 1, 1.0), ("(none)", "VIP", 1, 2.5)]
    s = migration_summary(a, b, segments=["VIP", "Other"]).to_pandas()
    assert s["from_segment"].tolist() == ["VIP", "Other", "(none)"]
    s = s[s["customers"] > 0]
    assert s[["down", "up"]].values.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    changes = segment_changes(a, b)
    assert changes["from_segment"].to_pylist() == ["VIP", None]
    assert changes["to_segment"].to_pylist() == [None, "VIP"]


def test_on_scored_snapshots():
    """Two real snapshots: the map comes from the score metadata, totals add up."""
    orders = pa.Table.from_batches(list(rfmx.generate_orders(6000, seed=3, days=400)))
    earlier = rfmx.score(orders, as_of="2024-09-01", segments="pymc-quartiles")
    later = rfmx.score(orders, segments="pymc-quartiles")
    m = migration(earlier, later)
    assert list(dict.fromkeys(m["from_segment"].to_pylist())) == SegmentMap.builtin("pymc-quartiles").order + [NEW]
    assert sum(m["customers"].to_pylist()) == later.num_rows
    assert sum(m["revenue"].to_pylist()) == pytest.approx(sum(later["monetary_total"].to_pylist()))
    assert m["as_of_from"][0].as_py() < m["as_of_to"][0].as_py()
    summary = migration_summary(earlier, later)
    assert sum(summary["customers"].to_pylist()) == earlier.num_rows


def true_match(earlier, later):
    """Each later row's row in the earlier snapshot (-1: new), by a plain dict of the ids."""
    row = {v: i for i, v in enumerate(earlier.column("customer_id").to_pylist())}
    return np.array([row.get(v, -1) for v in later.column("customer_id").to_pylist()], dtype=np.int64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_a_given_match_gives_the_same_tables(pair):
    earlier, later = pair
    rows = true_match(earlier, later)
    assert migration(earlier, later, earlier_rows=rows).equals(migration(earlier, later))
    assert migration_summary(earlier, later, earlier_rows=rows).equals(migration_summary(earlier, later))
    assert segment_changes(earlier, later, earlier_rows=rows).equals(segment_changes(earlier, later))


@pytest.mark.parametrize("string_ids", [False, True])
def test_a_wrong_match_is_refused(string_ids):
    earlier = scored([1, 2, 3], ["Champions"] * 3, ["high"] * 3, [100, 200, 300], string_ids=string_ids)
    later = scored([2, 1, 4], ["Lost"] * 3, ["low"] * 3, [1, 2, 3], string_ids=string_ids)
    assert migration(earlier, later, earlier_rows=np.array([1, 0, -1])).equals(migration(earlier, later))
    for rows, message in [([0, 1, -1], "another customer"), ([1, 1, -1], "matches one row twice"),
                          ([1, 0, 3], "not a row"), ([1, 0, -2], "not a row"), ([1, 0], "one entry per row"),
                          (np.array([1.0, 0.0, -1.0]), "integer array")]:
        with pytest.raises(RfmxError, match=message) as err:
            migration(earlier, later, earlier_rows=np.asarray(rows))
        assert "\n" not in str(err.value)


@given(st.lists(st.booleans(), max_size=60), st.lists(st.booleans(), max_size=60))
def test_rows_in_earlier_is_the_position_lookup(in_a, in_b):
    from rfmx.migrations import rows_in_earlier

    a = np.flatnonzero(in_a)
    b = np.flatnonzero(in_b)
    where = {v: i for i, v in enumerate(a.tolist())}
    assert rows_in_earlier(a, b).tolist() == [where.get(v, -1) for v in b.tolist()]


def test_rows_in_earlier_needs_ascending_rows():
    from rfmx.migrations import rows_in_earlier

    with pytest.raises(RfmxError, match="ascending"):
        rows_in_earlier([0, 2, 1], [0, 1, 2])
    with pytest.raises(RfmxError, match="ascending"):
        rows_in_earlier([0, 1], [1, 1])


@pytest.mark.parametrize("string_ids", [False, True])
def test_snapshots_match_by_state_rows(string_ids):
    """A timeline's state rows locate each snapshot row in the state's customer order, and
    matching consecutive snapshots by them gives the hash join's migration."""
    from rfmx.migrations import rows_in_earlier
    from rfmx.scores import score_table

    orders = pa.Table.from_batches(list(rfmx.generate_orders(5000, seed=11, days=300, string_ids=string_ids)))
    state = rfmx.build_state(orders, state=rfmx.TimelineState(period="month"))
    everyone = state.finalize().column("customer_id")
    earlier = earlier_rows = None
    pairs = 0
    for as_of, table, state_rows in state.snapshots(with_state_rows=True):
        assert table.column("customer_id").equals(everyone.take(pa.array(state_rows)))
        later = score_table(table)
        if earlier is not None:
            rows = rows_in_earlier(earlier_rows, state_rows)
            assert migration(earlier, later, earlier_rows=rows).equals(migration(earlier, later))
            assert segment_changes(earlier, later, earlier_rows=rows).equals(segment_changes(earlier, later))
            pairs += 1
        earlier, earlier_rows = later, state_rows
    assert pairs >= 8
