"""Cohort tables over per-(customer, period) buckets, against a plain pandas groupby reference."""
import datetime as dt
import zoneinfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import RfmxError
from rfmx.cohorts import BUCKET_COLUMNS, cohort_table

TZ = "Europe/Berlin"
ZONE = zoneinfo.ZoneInfo(TZ)


def month_start(k: int) -> dt.datetime:
    """Local midnight of the first day of month k after January 2023."""
    return dt.datetime(2023 + k // 12, k % 12 + 1, 1, tzinfo=ZONE)


def buckets(rows, ts=pa.timestamp("us", tz=TZ), string_ids=False):
    """A bucket table as TimelineState.buckets() writes it; rows: (customer, month, n_orders, gross, refunds)."""
    cols = list(zip(*rows)) if rows else [[]] * 5
    starts = [month_start(m) for m in cols[1]]
    return pa.table({
        "customer_id": pa.array([f"c{c}" for c in cols[0]] if string_ids else list(cols[0]),
                                pa.string() if string_ids else pa.int64()),
        "period_start": pa.array(starts, ts),
        "n_orders": pa.array(cols[2], pa.int64()),
        "n_refunds": pa.array([int(r < 0) for r in cols[4]], pa.int64()),
        "gross_minor": pa.array(cols[3], pa.int64()),
        "refunds_minor": pa.array(cols[4], pa.int64()),
        "first_order": pa.array(starts, ts),
        "last_order": pa.array(starts, ts),
    })


@st.composite
def bucket_rows(draw):
    """Several customers over up to 14 months, with gaps and refund-only buckets."""
    rows = []
    for c in range(draw(st.integers(0, 12))):
        months = sorted(draw(st.sets(st.integers(0, 13), min_size=1, max_size=6)))
        for m in months:
            orders = draw(st.integers(0, 3))
            gross = draw(st.integers(1, 10**6)) * orders
            refunds = -draw(st.integers(0, 10**5)) if orders == 0 or draw(st.booleans()) else 0
            if orders == 0 and refunds == 0:
                refunds = -1
            rows.append((c, m, orders, gross, refunds))
    return draw(st.permutations(rows))


def reference(table: pa.Table, scale: int = 2) -> pd.DataFrame:
    """The cohort triangle written plainly with pandas groupby (months only)."""
    df = table.to_pandas()
    df["p"] = [t.year * 12 + t.month - 1 for t in df["period_start"]]
    df["net"] = df["gross_minor"] + df["refunds_minor"]
    active = df[df["n_orders"] > 0]
    cohort = active.groupby("customer_id")["p"].min().rename("c")
    df = df.join(cohort, on="customer_id", how="inner")
    df = df[df["p"] >= df["c"]]
    size = cohort.value_counts().rename("size")
    act = df[df["n_orders"] > 0].groupby(["c", "p"])["customer_id"].nunique().rename("active")
    rev = df.groupby(["c", "p"])["net"].sum().rename("rev")
    last = table.to_pandas()["period_start"].map(lambda t: t.year * 12 + t.month - 1).max()
    out = []
    for c in sorted(size.index):
        cum = 0
        for p in range(c, last + 1):
            r = int(rev.get((c, p), 0))
            cum += r
            a = int(act.get((c, p), 0))
            out.append((c, p, p - c, int(size[c]), a, a / size[c], r / 10**scale, cum / 10**scale / size[c]))
    return pd.DataFrame(out, columns=["c", "p", "period_index", "customers_in_cohort", "active_customers",
                                      "retention", "revenue", "cumulative_revenue_per_customer"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bucket_rows(), st.booleans())
def test_cohorts_match_pandas(rows, string_ids):
    table = buckets(rows, string_ids=string_ids)
    got = cohort_table(table)
    ref = reference(table)
    assert got.num_rows == len(ref)
    if not len(ref):
        return
    g = got.to_pandas()
    months = lambda s: [t.year * 12 + t.month - 1 for t in s]  # noqa: E731
    assert months(g["cohort"]) == ref["c"].tolist()
    assert months(g["period_start"]) == ref["p"].tolist()
    for col in ("period_index", "customers_in_cohort", "active_customers"):
        assert g[col].tolist() == ref[col].tolist()
    for col in ("retention", "revenue", "cumulative_revenue_per_customer"):
        assert np.allclose(g[col], ref[col], rtol=1e-12, atol=1e-9)
    # Period starts are local midnights of the first of the month, in the input's type.
    assert got.schema.field("cohort").type == pa.timestamp("us", tz=TZ)
    assert all(t.day == 1 and t.hour == 0 for t in g["period_start"])


def test_worked_example():
    """The example of docs/scores.md ("Migration and cohorts")."""
    table = buckets([(1, 0, 1, 10000, 0), (1, 2, 2, 20000, -1000), (2, 0, 1, 5000, 0), (2, 1, 0, 0, -2000),
                     (3, 1, 3, 3000, 0), (4, 3, 0, 0, -500)])
    got = cohort_table(table).to_pandas()
    assert [str(t.date()) for t in got["cohort"]] == ["2023-01-01"] * 4 + ["2023-02-01"] * 3
    assert got["period_index"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert got["customers_in_cohort"].tolist() == [2, 2, 2, 2, 1, 1, 1]
    assert got["active_customers"].tolist() == [2, 0, 1, 0, 1, 0, 0]
    assert got["retention"].tolist() == [1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0]
    assert got["revenue"].tolist() == [150.0, -20.0, 190.0, 0.0, 30.0, 0.0, 0.0]
    assert got["cumulative_revenue_per_customer"].tolist() == [75.0, 65.0, 160.0, 160.0, 30.0, 30.0, 30.0]


def test_coarser_periods_and_weeks():
    table = buckets([(1, 0, 1, 100, 0), (1, 1, 1, 100, 0), (2, 2, 1, 100, 0), (1, 4, 1, 100, 0)])
    q = cohort_table(table, period="quarter").to_pandas()
    assert q["active_customers"].tolist() == [2, 1] and q["customers_in_cohort"].tolist() == [2, 2]
    assert q["revenue"].tolist() == [3.0, 1.0]
    y = cohort_table(table, period="year", amount_scale=0).to_pandas()
    assert y["revenue"].tolist() == [400.0] and str(y["period_start"][0].date()) == "2023-01-01"
    # Weeks run Monday to Sunday: 2023-01-01 (a Sunday) is in the week of 2022-12-26.
    w = cohort_table(table, period="week").to_pandas()
    assert str(w["cohort"][0].date()) == "2022-12-26" and w["period_start"][0].weekday() == 0
    # 2023-02-01 is 5 weeks and 3 days later: week index 6.
    assert w[w["active_customers"] > 0]["period_index"].tolist()[:2] == [0, 5]


def test_naive_times_and_dates_and_metadata_scale():
    naive = buckets([(1, 0, 1, 1234, 0), (2, 1, 1, 10, 0)], ts=pa.timestamp("ms"))
    got = cohort_table(naive.replace_schema_metadata({"rfmx.amount_scale": "3"}))
    assert got.schema.field("period_start").type == pa.timestamp("ms")
    assert got["revenue"].to_pylist() == [1.234, 0.0, 0.01]
    as_dates = naive.set_column(1, "period_start", naive.column("period_start").cast(pa.date32()))
    assert cohort_table(as_dates)["cohort"].type == pa.date32()


def test_empty_and_refund_only():
    assert cohort_table(buckets([])).num_rows == 0
    only_refunds = cohort_table(buckets([(1, 0, 0, 0, -100)]))
    assert only_refunds.num_rows == 0 and only_refunds.schema.names[0] == "cohort"


def test_lazy_export():
    assert rfmx.cohort_table is cohort_table
    assert BUCKET_COLUMNS == ("customer_id", "period_start", "n_orders", "n_refunds", "gross_minor", "refunds_minor",
                              "first_order", "last_order")


def test_errors_are_one_line():
    table = buckets([(1, 0, 1, 100, 0)])
    cases = [
        (lambda: cohort_table(table.drop_columns(["gross_minor"])),
         "the bucket table has no 'gross_minor' column; cohorts need the columns customer_id, period_start, "
         "n_orders, n_refunds, gross_minor, refunds_minor, first_order, last_order"),
        (lambda: cohort_table(table, period="fortnight"),
         "period must be one of day, week, month, quarter, year, got 'fortnight'"),
        (lambda: cohort_table(table, amount_scale=-1), "amount_scale must be an integer from 0 to 18, got -1"),
        (lambda: cohort_table(buckets([(1, 0, 1, 100, 5)])),
         "bucket column 'refunds_minor' is positive (5) at row 0; refund money is negative (<= 0), "
         "as in refunds_total"),
        (lambda: cohort_table(table.set_column(1, "period_start", pa.array(["2023-01-01"]))),
         "bucket column 'period_start' has type string; expected a timestamp"),
        (lambda: cohort_table(table.set_column(2, "n_orders", pa.array([1.5]))),
         "bucket column 'n_orders' has type double; expected integers"),
    ]
    for call, message in cases:
        with pytest.raises(RfmxError) as exc:
            call()
        assert str(exc.value) == message


@pytest.mark.parametrize("week_start", ["monday", "wednesday", "sunday"])
def test_weeks_from_any_weekday(week_start):
    """Weeks starting on ``week_start``: equal to Monday weeks of the same days moved so that
    ``week_start`` falls on a Monday (and moved back), and each cohort starts on that weekday."""
    from rfmx.cohorts import WEEKDAYS

    shift = WEEKDAYS.index(week_start)
    rng = np.random.default_rng(5)
    days = np.sort(rng.integers(19000, 19120, 300))
    table = pa.table({
        "customer_id": pa.array(rng.integers(0, 40, 300)),
        "period_start": pa.array(days.astype(np.int32), pa.date32()),
        "n_orders": pa.array(rng.integers(0, 3, 300)),
        "gross_minor": pa.array(rng.integers(0, 5000, 300)),
        "refunds_minor": pa.array(-rng.integers(0, 100, 300) * (rng.random(300) < 0.2)),
    })
    got = cohort_table(table, period="week", week_start=week_start)
    moved = table.set_column(1, "period_start", pa.array((days - shift).astype(np.int32), pa.date32()))
    ref = cohort_table(moved, period="week")
    back = lambda col: pa.array((np.asarray(col.cast(pa.int32())) + shift).astype(np.int32), pa.date32())  # noqa: E731
    ref = ref.set_column(0, "cohort", back(ref["cohort"])).set_column(1, "period_start", back(ref["period_start"]))
    assert got.equals(ref)
    assert {d.weekday() for d in got["cohort"].to_pylist()} == {shift}
    with pytest.raises(RfmxError, match="week_start must be a weekday"):
        cohort_table(table, period="week", week_start="funday")


def test_timeline_cohorts_follow_the_week_start(tmp_path):
    from badinput import run_cli

    src = tmp_path / "o.parquet"
    rfmx.write_orders(str(src), 3000, seed=2, days=120)
    out = tmp_path / "c.parquet"
    r = run_cli("timeline", src, "--every", "week", "--week-start", "sunday", "--cohorts-out", out)
    assert r.exit_code == 0, r.stderr
    import pyarrow.parquet as pq

    assert {d.weekday() for d in pq.read_table(out)["cohort"].to_pylist()} == {6}
