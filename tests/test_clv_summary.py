"""BTYD summary: equal to lifetimes on CDNOW, to a pandas reference on random data, and
the same for every batch split, merge tree, thread count and save/load round trip."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from naive_clv import btyd_summary
from rfmx import RfmxError
from rfmx.clv import BTYDState, summary

DATA = os.path.join(os.path.dirname(__file__), "data")
CDNOW = os.path.join(DATA, "cdnow_sample.csv.gz")


def _sorted(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas().sort_values("customer_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def cdnow_tx() -> pd.DataFrame:
    return pd.read_csv(CDNOW, parse_dates=["date"])


# --- lifetimes on CDNOW (expected outputs made by tests/data/make_lifetimes_expected.py) ----

def test_cdnow_equals_lifetimes_summary_days_in_weeks():
    got = _sorted(summary(CDNOW, time="date", as_of="1998-07-01", scale=7))
    exp = pd.read_csv(os.path.join(DATA, "lifetimes_summary_day_weeks.csv.gz"))
    assert len(got) == len(exp) == 2357
    assert (got["customer_id"].to_numpy() == exp["customer_id"].to_numpy()).all()
    for c in ("frequency", "recency", "T"):  # bit for bit
        np.testing.assert_array_equal(got[c].to_numpy(), exp[c].to_numpy(), err_msg=c)
    # lifetimes sums float amounts; rfmx sums exact cents and divides once
    np.testing.assert_allclose(got["monetary_value"], exp["monetary_value"], rtol=1e-13, atol=0)


def test_cdnow_equals_lifetimes_summary_weeks():
    got = _sorted(summary(CDNOW, time="date", period="week"))
    exp = pd.read_csv(os.path.join(DATA, "lifetimes_summary_week.csv.gz"))
    for c in ("frequency", "recency", "T"):
        np.testing.assert_array_equal(got[c].to_numpy(), exp[c].to_numpy(), err_msg=c)
    np.testing.assert_allclose(got["monetary_value"], exp["monetary_value"], rtol=1e-13, atol=0)


def test_cdnow_calibration_holdout_equals_lifetimes(cdnow_tx):
    table = summary(CDNOW, time="date", as_of="1998-07-01", holdout_start="1997-10-01", unit="week")
    got = _sorted(table)
    exp = pd.read_csv(os.path.join(DATA, "lifetimes_calibration_holdout.csv.gz"))
    for c in ("frequency_cal", "recency_cal", "T_cal", "frequency_holdout", "duration_holdout"):
        np.testing.assert_array_equal(got[c].to_numpy(), exp[c].to_numpy(), err_msg=c)
    np.testing.assert_allclose(got["monetary_value_cal"], exp["monetary_value_cal"], rtol=1e-13, atol=0)
    # holdout spend: rfmx averages per purchase period (as the calibration does); lifetimes
    # per transaction line.  They agree wherever a customer has one line per holdout day.
    hold = cdnow_tx[cdnow_tx["date"] >= "1997-10-01"]
    one_line_days = hold.groupby("customer_id")["date"].agg(lambda d: d.is_unique)
    same = got["customer_id"].map(one_line_days).fillna(True).to_numpy(dtype=bool)
    assert (~same).sum() > 0
    np.testing.assert_allclose(got["monetary_value_holdout"][same], exp["monetary_value_holdout"][same], rtol=1e-13)
    naive = btyd_summary(cdnow_tx.rename(columns={"date": "order_time"}), "1998-07-01", divisor=7,
                         holdout_start="1997-10-01")
    np.testing.assert_allclose(got["monetary_value_holdout"], naive["monetary_value_holdout"].sort_index(), rtol=1e-13)
    meta = table.schema.metadata
    assert meta[b"rfmx.btyd.unit"] == b"week" and meta[b"rfmx.btyd.holdout_start"] == b"1997-10-01T00:00:00"


def test_cdnow_calibration_matches_published_summary():
    """Fader, Hardie & Lee's 39-week calibration data are this summary rounded to 2 decimals."""
    got = _sorted(summary(CDNOW, time="date", as_of="1997-10-01", scale=7))
    pub = pd.read_csv(os.path.join(DATA, "cdnow_customers_summary.csv"))
    got = got.set_index("customer_id").reindex(pub["ID"]).fillna(0)
    np.testing.assert_array_equal(got["frequency"].to_numpy(), pub["x"].to_numpy())
    np.testing.assert_allclose(got["recency"].to_numpy(), pub["t_x"].to_numpy(), atol=0.005 + 1e-9)
    np.testing.assert_allclose(got["T"].to_numpy(), pub["T"].to_numpy(), atol=0.005 + 1e-9)


# --- random data against the pandas reference -----------------------------------------

def _orders(rng, n, n_customers, string_ids=False, days=120):
    cust = rng.integers(0, n_customers, n)
    t0 = np.datetime64("2023-12-20T00:00:00", "us")
    t = t0 + (rng.random(n) * days * 86400e6).astype("timedelta64[us]")
    amount = np.round(rng.lognormal(3, 1, n), 2)
    amount[rng.random(n) < 0.08] *= -1  # refunds: not purchases
    ids = pa.array(cust * 7919 + 10**9) if not string_ids else pa.array([f"c{c}" for c in cust])
    return pa.table({"customer_id": ids, "order_time": pa.array(t), "amount": pa.array(amount)})


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), n_customers=st.integers(1, 40),
       period=st.sampled_from(["day", "week", "month"]), string_ids=st.booleans(),
       holdout=st.booleans(), splits=st.lists(st.integers(0, 400), max_size=4), threads=st.sampled_from([1, 2]))
def test_random_orders_match_reference(seed, n, n_customers, period, string_ids, holdout, splits, threads):
    rng = np.random.default_rng(seed)
    table = _orders(rng, n, n_customers, string_ids)
    as_of = "2024-04-20"
    hold = {"day": "2024-02-10", "week": "2024-02-12", "month": "2024-02-01"}[period] if holdout else None
    ref = btyd_summary(table.to_pandas(), as_of, period=period, holdout_start=hold)
    # split the rows into batches, fold each into its own state, merge them in a random tree
    cuts = sorted({min(c, n) for c in splits} | {0, n})
    states = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        s = BTYDState(period=period, until=as_of, threads=threads)
        s.update(table.slice(lo, hi - lo))
        states.append(s)
    while len(states) > 1:
        i = int(rng.integers(0, len(states) - 1))
        states[i].merge(states.pop(i + 1))
    if not ref.size:
        got = states[0].summary(as_of, holdout_start=hold)
        assert got.num_rows == 0
        return
    got = _sorted(states[0].summary(as_of, holdout_start=hold)).set_index("customer_id")
    ref = ref.sort_index()
    if string_ids:
        ref.index = ref.index.astype(str)
    assert list(got.index) == list(ref.index)
    for c in ref.columns:
        np.testing.assert_allclose(got[c].to_numpy(), ref[c].to_numpy(), rtol=1e-12, atol=1e-12, err_msg=c)


def test_same_for_batch_sizes_threads_and_save_load(tmp_path):
    rng = np.random.default_rng(3)
    table = _orders(rng, 5000, 700)
    whole = BTYDState(until="2024-05-01", threads=1).update(table)
    expect = _sorted(whole.summary())
    for threads in (1, 2):
        st_ = BTYDState(until="2024-05-01", threads=threads)
        for i, b in enumerate(table.to_batches(max_chunksize=333)):
            if i == 5:
                st_.drop_index()  # freed hash tables are rebuilt by the next update
            st_.update(b)
        pd.testing.assert_frame_equal(_sorted(st_.summary()), expect)
        path = tmp_path / f"s{threads}.arrow"
        st_.save(path)
        back = BTYDState.load(path, threads=threads)
        assert back.n_periods == whole.n_periods and back.n_customers == whole.n_customers
        pd.testing.assert_frame_equal(_sorted(back.summary()), expect)
        # the RFM table comes along
        pd.testing.assert_frame_equal(_sorted(back.finalize()), _sorted(whole.finalize()))


def test_increment_from_saved_state_equals_one_pass(tmp_path):
    rng = np.random.default_rng(4)
    table = _orders(rng, 3000, 300, string_ids=True)
    first, rest = table.slice(0, 1700), table.slice(1700)
    st_ = BTYDState(period="week", until="2024-05-01").update(first)
    st_.save(tmp_path / "s.arrow")
    again = summary(rest, period="week", state=BTYDState.load(tmp_path / "s.arrow"))
    one = summary(table, period="week", as_of="2024-05-01")
    pd.testing.assert_frame_equal(_sorted(again), _sorted(one))


def test_unit_and_scale():
    t = pa.table({"customer_id": [1, 1, 1], "order_time": pa.array(
        np.array(["2024-01-01", "2024-01-15", "2024-03-01"], dtype="datetime64[us]")), "amount": [1.0, 2.0, 4.0]})
    days = _sorted(summary(t, as_of="2024-04-01"))
    assert days.loc[0, "frequency"] == 2 and days.loc[0, "recency"] == 60 and days.loc[0, "T"] == 90  # to the last observed day, as lifetimes
    assert days.loc[0, "monetary_value"] == 3.0
    weeks = _sorted(summary(t, as_of="2024-04-01", unit="week"))
    assert weeks.loc[0, "recency"] == 60 / 7 and weeks.loc[0, "T"] == 90 / 7
    months = _sorted(summary(t, as_of="2024-04-01", unit="month", scale=2))
    assert months.loc[0, "T"] == 90 / 60
    cal = _sorted(summary(t, as_of="2024-04-01", period="month"))
    assert cal.loc[0, "recency"] == 2 and cal.loc[0, "T"] == 2  # calendar months
    with pytest.raises(RfmxError, match="period='month'"):
        summary(t, as_of="2024-04-01", period="month", unit="day")
    with pytest.raises(RfmxError, match="scale"):
        summary(t, as_of="2024-04-01", scale=0)


def test_bad_splits_and_states():
    t = _orders(np.random.default_rng(5), 200, 20)
    s = BTYDState(period="week", until="2024-04-20").update(t)
    with pytest.raises(RfmxError, match="not the start of a week"):
        s.summary(holdout_start="2024-02-14")  # a Wednesday
    with pytest.raises(RfmxError, match="before the end"):
        s.summary(holdout_start="2024-05-06")
    with pytest.raises(RfmxError, match="per day"):
        s.merge(BTYDState(period="day", until="2024-04-20"))
    from rfmx import RFMState

    with pytest.raises(RfmxError, match="without purchase periods"):
        s.merge(RFMState(until="2024-04-20"))
    with pytest.raises(RfmxError, match="needs orders"):
        BTYDState().summary()


def test_refund_only_customers_are_not_in_the_summary():
    t = pa.table({"customer_id": [1, 2, 2], "order_time": pa.array(
        np.array(["2024-01-01", "2024-01-02", "2024-01-03"], dtype="datetime64[us]")), "amount": [-5.0, 3.0, 0.0]})
    got = _sorted(summary(t))
    assert got["customer_id"].tolist() == [2]
    assert got.loc[0, "frequency"] == 1 and got.loc[0, "monetary_value"] == 0.0  # a zero amount is a purchase


def test_null_rows_error_or_skip():
    t = pa.table({"customer_id": pa.array([1, None, 1, 2]), "order_time": pa.array(
        np.array(["2024-01-01", "2024-01-02", "2024-01-09", "2024-01-03"], dtype="datetime64[us]")),
        "amount": [1.0, 2.0, 4.0, 5.0]})
    with pytest.raises(RfmxError, match="null"):
        summary(t, as_of="2024-02-01")
    st_ = BTYDState(until="2024-02-01", on_null="skip").update(t)
    assert st_.rows_null_skipped == 1
    got = _sorted(st_.summary())
    assert got["customer_id"].tolist() == [1, 2] and got["frequency"].tolist() == [1.0, 0.0]
    assert got.loc[0, "monetary_value"] == 4.0 and got.loc[0, "recency"] == 8
