"""Lifecycle stages: hand-built histories with known stages, spend windows against a pandas
reference, the features against their definitions, custom maps, and the CLI's flows."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from naive import orders_from_lines as history
from rfmx import RfmxError, TimelineState
from rfmx.cli.main import main as cli
from rfmx.stages import FEATURES, STAGES, default_map_toml, lifecycle, lifecycle_features, lifecycle_map

US_PER_DAY = 86_400_000_000


def stages_by_month(lines, **options):
    """{customer: {as_of date: stage}} over the monthly timeline of ``lines``."""
    out: dict = {}
    for as_of, table in rfmx.timeline(history(lines), every="month", **options):
        for c, s in zip(table["customer_id"].to_pylist(), table["lifecycle"].to_pylist()):
            out.setdefault(c, {})[as_of.date().isoformat()] = s
    return out


def monthly(customer, first, last, amount=100.0, day=10):
    """One order a month from month ``first`` to ``last`` (``(year, month)`` pairs)."""
    out = []
    y, m = first
    while (y, m) <= last:
        out.append((customer, f"{y}-{m:02d}-{day:02d}", amount))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def test_a_steady_customer_is_never_flagged():
    stages = stages_by_month(monthly(1, (2022, 1), (2023, 12)))[1]
    assert stages["2022-02-01"] == "new"
    assert set(stages.values()) <= {"new", "developing", "mature"}
    assert stages["2023-12-01"] == "mature"
    # mature once a year old with four orders or more, developing before
    assert stages["2022-12-01"] == "developing" and stages["2023-02-01"] == "mature"


def test_a_champion_who_stops_is_declining_when_overdue_and_not_before():
    # Monthly orders through June 2022 (gap ~30 days), then nothing.
    stages = stages_by_month(monthly(1, (2022, 1), (2022, 6)) + monthly(2, (2022, 1), (2023, 12)))[1]
    # Last order 2022-06-10.  Overdue ratio = recency / 30.0: 2022-07-01 -> 21 d, 08-01 -> 52 d,
    # 08-01 is not yet 2x (52 < 60); 09-01 -> 83 d > 60: declining from September on.
    assert stages["2022-07-01"] == "developing"
    assert stages["2022-08-01"] == "developing"
    assert stages["2022-09-01"] == "declining"
    # lost once more than 365 days have passed: 2023-06-10 + 365 d -> the 2023-07-01 snapshot
    # has 386 days; 2023-06-01 has 356.
    assert stages["2023-06-01"] == "declining"
    assert stages["2023-07-01"] == "lost"


def test_a_reactivated_customer_is_labelled_so_once():
    lines = [(1, "2021-01-05", 50), (1, "2021-02-05", 50), (1, "2022-06-15", 80), (1, "2022-07-15", 80)]
    lines += monthly(2, (2021, 1), (2022, 12))
    stages = stages_by_month(lines)[1]
    assert stages["2022-06-01"] == "lost"           # 481 days since 2021-02-05
    assert stages["2022-07-01"] == "reactivated"    # ordered in June after being lost
    assert stages["2022-08-01"] != "reactivated"    # once only
    assert list(stages.values()).count("reactivated") == 1


def test_growing_and_declining_by_spend():
    # Customer 1 spends 100 a month for a year, then 300 a month; customer 2 drops to 20.
    lines = monthly(1, (2022, 1), (2022, 12), 100) + monthly(1, (2023, 1), (2023, 6), 300)
    lines += monthly(2, (2022, 1), (2022, 12), 100) + monthly(2, (2023, 1), (2023, 6), 20)
    stages = stages_by_month(lines, mature_days=10_000)
    assert stages[1]["2023-04-01"] == "growing"
    assert stages[2]["2023-04-01"] == "declining"
    assert stages[1]["2022-12-01"] == stages[2]["2022-12-01"] == "developing"


def test_thresholds_move_the_stages():
    lines = monthly(1, (2022, 1), (2022, 6)) + monthly(2, (2022, 1), (2023, 12))
    # 2022-09-01: 83 days since the last order (< 3 x 30), and the window's spend (100) is
    # 69 % below the earlier average (500 over the 142 days before the window): spend decides
    assert stages_by_month(lines, overdue=3.0)[1]["2022-09-01"] == "declining"
    assert stages_by_month(lines, overdue=3.0, decline=0.9)[1]["2022-09-01"] == "developing"
    assert stages_by_month(lines, lost_days=100)[1]["2022-10-01"] == "lost"


def _orders(seed, n=3000, customers=150, days=900):
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2021-01-01", "us").astype(np.int64)
    t = np.sort(t0 + (rng.random(n) * days * US_PER_DAY).astype(np.int64))
    amount = np.round(rng.lognormal(3, 1, n), 2)
    amount[rng.random(n) < 0.1] *= -1
    return pa.table({"customer_id": pa.array(rng.integers(0, customers, n)),
                     "order_time": pa.array(t, pa.int64()).view(pa.timestamp("us")),
                     "amount": pa.array(amount)})


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["day", "week", "month", "quarter"]), st.integers(1, 4))
def test_spend_windows_equal_pandas(seed, period, window):
    """window_net_minor / year_ago_net_minor: the net money of each customer's lines in the
    ``window`` periods before as_of, and in the same periods a year back."""
    from rfmx.history import YEAR_PERIODS

    orders = _orders(seed, days=500 if period == "day" else 900)
    state = rfmx.build_state(orders, state=TimelineState(period=period))
    df = orders.to_pandas()
    df["minor"] = np.round(df["amount"] * 100).astype(np.int64)
    freq = {"day": "D", "week": "W-SUN", "month": "MS", "quarter": "QS"}[period]
    count = {"day": 1200, "week": 200, "month": 80, "quarter": 30}[period]
    bounds = pd.date_range("2021-01-01", periods=count, freq=freq) if period != "week" else \
        pd.date_range("2020-12-28", periods=count, freq="W-MON")
    boundaries = [b for b in state.boundaries()]
    picks = boundaries[:: max(1, len(boundaries) // 5)]
    for as_of, table in state.snapshots(picks, window=window):
        at = pd.Timestamp(as_of.replace(tzinfo=None))
        k = bounds.get_loc(at) if at in bounds else None
        assert k is not None
        lo, hi = bounds[k - window] if k - window >= 0 else pd.Timestamp.min, at
        lag = YEAR_PERIODS[period]
        lo2 = bounds[k - window - lag] if k - window - lag >= 0 else pd.Timestamp.min
        hi2 = bounds[k - lag] if k - lag >= 0 else pd.Timestamp.min
        got = dict(zip(table["customer_id"].to_pylist(), table["window_net_minor"].to_pylist()))
        got2 = dict(zip(table["customer_id"].to_pylist(), table["year_ago_net_minor"].to_pylist()))
        for c in got:
            mine = df[df.customer_id == c]
            assert got[c] == int(mine[(mine.order_time >= lo) & (mine.order_time < hi)].minor.sum())
            assert got2[c] == int(mine[(mine.order_time >= lo2) & (mine.order_time < hi2)].minor.sum())


def test_features_follow_their_definitions():
    orders = _orders(7)
    state = rfmx.build_state(orders, state=TimelineState(period="month"))
    (as_of, table), = state.snapshots(["2022-06-01"], window=3)
    f = lifecycle_features(table)
    assert set(f) == set(FEATURES)
    df = table.to_pandas()
    n = df.n_orders.to_numpy(float)
    gap = np.where(n >= 2, (df.tenure_days - df.recency_days) / (n - 1), np.nan)
    assert np.allclose(f["typical_gap_days"], gap, equal_nan=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.allclose(f["overdue_ratio"], np.where(gap > 0, df.recency_days / gap, np.nan), equal_nan=True)
    assert np.array_equal(f["window_spend"], df.window_net_minor / 100)
    window_days = (dt.date(2022, 6, 1) - dt.date(2022, 3, 1)).days
    before = df.tenure_days - window_days
    earlier = np.where(before >= window_days, (df.monetary_minor / 100 - df.window_net_minor / 100) * window_days
                       / before, np.nan)
    assert np.allclose(f["earlier_window_avg"], earlier, equal_nan=True)
    # first order in May 2022 <=> new this period
    first = pd.to_datetime(df.first_order)
    assert np.array_equal(f["new_this_period"] == 1, (first >= "2022-05-01").to_numpy())
    assert np.isnan(f["previous_stage"]).all()


def test_stages_add_up_and_match_the_rules_in_plain_python():
    orders = _orders(3, n=6000, customers=300)
    previous = None
    for as_of, table in rfmx.timeline(orders, every="month"):
        stages = table["lifecycle"].to_pylist()
        assert None not in stages and len(stages) == table.num_rows
        f = lifecycle_features(table.drop_columns(["lifecycle"]).append_column(
            "window_net_minor", pa.array(np.zeros(table.num_rows, np.int64))).append_column(
            "year_ago_net_minor", pa.array(np.zeros(table.num_rows, np.int64)))
            .replace_schema_metadata({**table.schema.metadata, b"rfmx.period_days": b"28",
                                      b"rfmx.window_days": b"90"}), fields=["recency_days"])
        lost = [s == "lost" for s in stages]
        assert all(not lo or r > 365 for lo, r in zip(lost, f["recency_days"]))
        if previous is not None:
            before = dict(zip(previous["customer_id"].to_pylist(), previous["lifecycle"].to_pylist()))
            for c, s in zip(table["customer_id"].to_pylist(), stages):
                if s == "reactivated":
                    assert before.get(c) == "lost"
        previous = table


def test_a_late_start_gives_the_stages_of_the_full_timeline():
    orders = _orders(5, n=5000, customers=200)
    full = {a: t for a, t in rfmx.timeline(orders, every="month")}
    late = list(rfmx.timeline(orders, every="month", start="2022-03-01"))
    for as_of, table in late:
        assert table["lifecycle"].equals(full[as_of]["lifecycle"])


def test_a_map_of_ones_own(tmp_path):
    path = tmp_path / "stages.toml"
    path.write_text('name = "mine"\ndefault = "active"\n\n[[stage]]\nname = "sleeping"\nrecency_days = { gt = 90 }\n'
                    '\n[[stage]]\nname = "woke up"\nprevious_stage = "sleeping"\nordered_this_period = 1\n')
    lines = [(1, "2022-01-05", 10), (1, "2022-06-05", 10)] + monthly(2, (2022, 1), (2022, 8))
    stages = stages_by_month(lines, stages=str(path))[1]
    assert stages["2022-05-01"] == "sleeping" and stages["2022-07-01"] == "woke up"
    assert stages["2022-08-01"] == "active"
    (_, table), = list(rfmx.timeline(history(lines), every="month", stages=str(path)))[-1:]
    import json
    info = json.loads(table.schema.metadata[b"rfmx.lifecycle"])
    assert info["map"] == "mine" and [r["segment"] for r in info["rules"]] == ["sleeping", "woke up"]


@pytest.mark.parametrize("text, message", [
    ('[[stage]]\nname = "x"\nspend = { gt = 1 }\n', "unknown field 'spend'"),
    ('default = "a"\n[[stage]]\nname = "x"\nprevious_stage = "nope"\n', "unknown stage 'nope'"),
    ('default = "a"\n[[stage]]\nname = "x"\nprevious_stage = 3\n', "takes a name"),
    ('[[segment]]\nname = "x"\nrecency_days = 1\n', "unknown key 'segment'"),
])
def test_bad_maps_are_one_line(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    orders = history(monthly(1, (2022, 1), (2022, 4)))
    with pytest.raises(RfmxError, match=message) as err:
        list(rfmx.timeline(orders, every="month", stages=str(path)))
    assert "\n" not in str(err.value) and "m.toml" in str(err.value)


def test_bad_thresholds():
    with pytest.raises(RfmxError, match="unknown lifecycle threshold 'lost'"):
        lifecycle_map(lost=3)
    with pytest.raises(RfmxError, match="decline is a share"):
        lifecycle_map(decline=2)
    with pytest.raises(RfmxError, match="a map file sets its own"):
        lifecycle_map("x.toml", lost_days=3)


def test_lifecycle_needs_a_snapshot_with_windows():
    table = rfmx.aggregate(history(monthly(1, (2022, 1), (2022, 4))))
    with pytest.raises(RfmxError, match="spend window"):
        lifecycle(table)


def test_default_map_is_valid_toml_with_every_stage():
    smap = lifecycle_map()
    assert smap.names() == ["new", "reactivated", "lost", "declining", "growing", "mature", "developing"]
    assert smap.order == list(STAGES)
    assert "lt = -0.3" in default_map_toml(decline=0.3)


def test_cli_flows_add_up_to_the_snapshots(tmp_path):
    orders = _orders(11, n=8000, customers=400)
    src = tmp_path / "o.parquet"
    pq.write_table(orders, src)
    out, flows = tmp_path / "s.parquet", tmp_path / "flows.csv"
    res = CliRunner().invoke(cli, ["timeline", str(src), "-o", str(out), "--lifecycle-out", str(flows)])
    assert res.exit_code == 0, res.output
    assert "lifecycle as of" in res.output
    snaps = pq.read_table(out).to_pandas()
    fl = pd.read_csv(flows)
    sizes = fl.groupby(["as_of_to", "to_stage"]).customers.sum()
    for (as_of, stage), n in snaps.groupby([snaps.as_of.dt.strftime("%Y-%m-%dT%H:%M:%S"), "lifecycle"]).size().items():
        assert sizes[(as_of, stage)] == n
    # each from-stage of a pair sums to that stage's size in the earlier snapshot
    pairs = fl[fl.as_of_from.notna() & (fl.from_stage != "(new)")]
    by_from = pairs.groupby(["as_of_from", "from_stage"]).customers.sum()
    for (as_of, stage), n in by_from.items():
        assert sizes.get((as_of, stage), 0) == n
    revenue = fl.groupby("as_of_to").revenue.sum()
    for as_of, total in snaps.groupby(snaps.as_of.dt.strftime("%Y-%m-%dT%H:%M:%S")).monetary_total.sum().items():
        assert revenue[as_of] == pytest.approx(total)


def test_cli_no_lifecycle(tmp_path):
    src = tmp_path / "o.parquet"
    pq.write_table(_orders(2), src)
    out = tmp_path / "s.parquet"
    res = CliRunner().invoke(cli, ["timeline", str(src), "-o", str(out), "--no-lifecycle"])
    assert res.exit_code == 0, res.output
    assert "lifecycle" not in pq.read_table(out).column_names
    res = CliRunner().invoke(cli, ["timeline", str(src), "-o", str(out), "--no-lifecycle", "--lost-days", "3"])
    assert res.exit_code == 2 and "--no-lifecycle" in res.output
