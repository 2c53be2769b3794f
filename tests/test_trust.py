"""Inputs that must never give a plausible wrong number: money totals beyond int64, ids of
different integer types, calendar days and time zones, damaged state files."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from badinput import fails_cleanly, run_cli

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def orders(ids, amounts, times=None, id_type=pa.int64(), amount_type=None):
    n = len(ids)
    times = times if times is not None else list(range(1, n + 1))
    return pa.table({
        "customer_id": pa.array(ids, type=id_type),
        "order_time": times if isinstance(times, pa.Array) else pa.array(times, type=pa.timestamp("s")),
        "amount": pa.array(amounts, type=amount_type),
    })


# --- money beyond int64 ---------------------------------------------------------------

def test_money_total_beyond_int64_is_an_error_naming_customer_and_row():
    t = orders([7, 8, 7, 7], [4e16, 1.0, 4e16, 4e16])
    with pytest.raises(rfmx.RfmxError, match=r"customer 7 leaves the exact range at row 3 .*92,233,720,368,547,758\.07"):
        rfmx.aggregate(t)


def test_refund_total_beyond_int64_is_an_error():
    t = orders([7, 7, 7], [-4e16, -4e16, -4e16])
    with pytest.raises(rfmx.RfmxError, match=r"customer 7 leaves the exact range at row 2"):
        rfmx.aggregate(t)


def test_string_customer_named_in_the_overflow_error():
    t = orders(["C-1", "C-1"], [5_000_000_000, 5_000_000_000], id_type=pa.string(), amount_type=pa.int64())
    with pytest.raises(rfmx.RfmxError, match=r"customer 'C-1' leaves the exact range at row 1 .*amount_scale 9"):
        rfmx.aggregate(t, amount_scale=9)


def test_merge_beyond_int64_is_an_error_and_the_state_is_unusable_after():
    a = rfmx.build_state(orders([1], [6e16]))
    b = rfmx.build_state(orders([1], [6e16]))
    with pytest.raises(rfmx.RfmxError, match=r"b\.arrow: merged, the money total of customer 1 leaves the exact range"):
        a.merge(b, what="b.arrow")
    with pytest.raises(rfmx.RfmxError, match="this state cannot be used"):
        a.finalize()


def test_btyd_state_refuses_money_beyond_int64():
    state = rfmx.BTYDState()
    with pytest.raises(rfmx.RfmxError, match="leaves the exact range at row 2"):
        rfmx.build_state(orders([3, 4, 3], [5e16, 1.0, 5e16]), state=state)


def test_cli_amount_scale_9_overflow_fails_cleanly(tmp_path):
    src = tmp_path / "o.parquet"
    pq.write_table(orders([1, 1], [5_000_000_000, 5_000_000_000], amount_type=pa.int64()), src)
    for command in ("aggregate", "score"):
        fails_cleanly([command, src, "--amount-scale", "9", "-o", tmp_path / "out.parquet"],
                      r"o\.parquet: column 'amount' \(amount\): the money total of customer 1 leaves the exact range "
                      r"at row 1", tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-(2**62), 2**62)), min_size=1, max_size=40),
       st.sampled_from([1, 2]))
def test_update_kernel_reports_the_first_line_whose_total_leaves_int64(lines, n_workers):
    """Against Python's unbounded integers: no report while every running total fits, and
    the report names exactly the first line at which one would not."""
    from rfmx.kernels.rfm import GROSS, REFUNDS, new_aggregates, rfm_update

    codes = np.array([c for c, _ in lines], dtype=np.int64)
    money = np.array([m for _, m in lines], dtype=np.int64)
    gross, refunds = [0] * 4, [0] * 4
    expected = -1
    for i, (c, m) in enumerate(lines):
        if m < 0:
            refunds[c] += m
            if refunds[c] < I64_MIN:
                expected = i
                break
        else:
            gross[c] += m
            if gross[c] > I64_MAX:
                expected = i
                break
    agg = new_aggregates(4)
    got = rfm_update(codes, np.arange(len(lines), dtype=np.int64), money, np.empty(0, np.int64), agg)
    assert got == expected
    if expected < 0:
        assert agg[:, GROSS].tolist() == gross
        assert agg[:, REFUNDS].tolist() == refunds
    # the engine's partitioned kernels, 1 or 2 workers, say the same
    state = rfmx.RFMState(amount_scale=0, threads=n_workers)
    batch = orders(codes.tolist(), money.tolist(), amount_type=pa.int64())
    if expected < 0:
        table = state.update(batch).finalize()
        by_id = dict(zip(table.column("customer_id").to_pylist(), table.column("monetary_minor").to_pylist()))
        assert by_id == {c: gross[c] + refunds[c] for c in set(codes.tolist())}
    else:
        with pytest.raises(rfmx.RfmxError, match=f"leaves the exact range at row {expected} "):
            state.update(batch)


def test_population_totals_beyond_int64_give_exact_shares_and_classes():
    """Each customer fits, their sum does not: shares, Gini and ABC classes stay right."""
    t = orders([1, 2, 3, 4], [4e16, 1.0, 4e16, 4e16])
    scores = rfmx.score(t)
    classes = dict(zip(scores.column("customer_id").to_pylist(), scores.column("abc_class").to_pylist()))
    assert classes == {1: "A", 2: "C", 3: "A", 4: "A"}
    conc = rfmx.value_concentration(scores)
    assert conc["revenue"] == pytest.approx(1.2e17)
    assert conc["top_shares"][50] == pytest.approx(2 / 3)
    seg = rfmx.segment_summary(scores)
    assert sum(seg.column("revenue").to_pylist()) == pytest.approx(1.2e17)


# --- customer ids of different integer types -------------------------------------------

def _write(path, ids, id_type, amounts=None):
    pq.write_table(orders(ids, amounts or [1.0] * len(ids), id_type=id_type), path)


def test_int32_then_int64_beyond_int32_keeps_both_exactly(tmp_path):
    _write(tmp_path / "a.parquet", [1, 2], pa.int32())
    _write(tmp_path / "b.parquet", [2**40, 1], pa.int64())
    out = rfmx.aggregate(str(tmp_path / "*.parquet"))
    assert out.schema.field("customer_id").type == pa.int64()
    got = dict(zip(out.column("customer_id").to_pylist(), out.column("n_orders").to_pylist()))
    assert got == {1: 2, 2: 1, 2**40: 1}


def test_small_unsigned_and_uint64_beyond_int64_give_uint64():
    out = rfmx.aggregate([orders([5, 7], [1.0, 1.0], id_type=pa.uint8()),
                          orders([2**64 - 1, 5], [1.0, 1.0], id_type=pa.uint64())])
    assert out.schema.field("customer_id").type == pa.uint64()
    assert sorted(out.column("customer_id").to_pylist()) == [5, 7, 2**64 - 1]


def test_one_type_throughout_is_kept():
    out = rfmx.aggregate([orders([5], [1.0], id_type=pa.int16()), orders([-7], [1.0], id_type=pa.int16())])
    assert out.schema.field("customer_id").type == pa.int16()


@pytest.mark.parametrize("first,second,row,what", [
    (([-1], pa.int64()), ([3, 2**64 - 1], pa.uint64()), 1, "above int64's range, but earlier input has negative ids"),
    (([2**64 - 1], pa.uint64()), ([3, -1], pa.int8()), 1, "negative, but earlier input has uint64 ids above"),
])
def test_ids_that_would_alias_in_64_bits_are_refused_with_file_and_row(tmp_path, first, second, row, what):
    _write(tmp_path / "a.parquet", *first)
    _write(tmp_path / "b.parquet", *second)
    with pytest.raises(rfmx.RfmxError, match=rf"b\.parquet: column 'customer_id' \(customer id\) value -?\d+ "
                                             rf"at row {row} is {what}"):
        rfmx.aggregate([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])


def test_aliasing_ids_are_refused_across_merges_and_saved_states(tmp_path):
    big = rfmx.build_state(orders([2**64 - 1], [1.0], id_type=pa.uint64()))
    big.save(tmp_path / "big.arrow")
    loaded = rfmx.RFMState.load(tmp_path / "big.arrow")
    assert loaded.finalize().column("customer_id").to_pylist() == [2**64 - 1]
    negative = rfmx.build_state(orders([-1], [1.0]))
    with pytest.raises(rfmx.RfmxError, match="other: column 'customer_id' .* value -1 is negative"):
        loaded.merge(negative, what="other")
    # refused before anything changed: the state is still whole and usable
    assert loaded.n_customers == 1 and loaded.rows_read == 1
    with pytest.raises(rfmx.RfmxError, match="value 18446744073709551615 is above int64's range"):
        negative.merge(rfmx.RFMState.load(tmp_path / "big.arrow"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]),
                          st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=5)), min_size=1, max_size=4),
       st.booleans())
def test_integer_ids_of_any_types_stay_distinct_customers(parts, allow_negative):
    """Ids that every type holds exactly become exactly those customers, whatever the mix."""
    tables, want = [], {}
    for type_name, values in parts:
        t = getattr(pa, type_name)()
        info = np.iinfo(np.dtype(type_name))
        vals = [int(v) % (int(info.max) + 1) for v in values]
        if allow_negative and info.min < 0:
            vals = [v - (int(info.max) + 1) // 2 for v in vals]
        vals = [min(max(v, int(info.min)), int(info.max)) for v in vals]
        tables.append(orders(vals, [1.0] * len(vals), id_type=t))
        for v in vals:
            want[v] = want.get(v, 0) + 1
    if any(v < 0 for v in want) and any(v >= 2**63 for v in want):
        with pytest.raises(rfmx.RfmxError, match="no 64-bit integer type holds both exactly"):
            rfmx.aggregate(tables)
        return
    out = rfmx.aggregate(tables)
    assert dict(zip(out.column("customer_id").to_pylist(), out.column("n_orders").to_pylist())) == want


# --- calendar days and time zones ------------------------------------------------------

def test_recency_counts_calendar_days_for_timestamps_and_dates_alike():
    import datetime as dt

    stamp = orders([1], [1.0], times=pa.array([dt.datetime(2025, 12, 31, 15, 0)], pa.timestamp("us")))
    date = pa.table({"customer_id": [1], "order_time": pa.array([dt.date(2025, 12, 31)], pa.date32()), "amount": [1.0]})
    zoned = stamp.set_column(1, "order_time", stamp.column("order_time").cast(pa.timestamp("us", tz="UTC")))
    for t in (stamp, date, zoned):
        out = rfmx.aggregate(t, as_of="2026-01-01")
        assert out.column("recency_days").to_pylist() == [1]
        assert out.column("tenure_days").to_pylist() == [1]


ZONES = ["UTC", "Asia/Tokyo", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1_700_000_000, 1_740_000_000)), min_size=1, max_size=40),
       st.sampled_from(ZONES))
def test_calendar_days_in_a_time_zone_match_pandas(lines, zone):
    """recency/tenure = days between the local dates, as the pandas recipe computes them
    (wall-clock times in the zone, normalized to midnight), across DST changes."""
    pd = pytest.importorskip("pandas")
    ids = [c for c, _ in lines]
    secs = [s for _, s in lines]
    t = orders(ids, [1.0] * len(ids), times=pa.array(secs, pa.timestamp("s", tz="UTC")))
    out = rfmx.aggregate(t, timezone=zone)
    df = pd.DataFrame({"c": ids, "t": pd.to_datetime(secs, unit="s", utc=True)})
    wall = df["t"].dt.tz_convert(zone).dt.tz_localize(None)
    as_of = wall.max().normalize() + pd.Timedelta(days=1)        # midnight after the latest line, local
    per = df.assign(wall=wall).groupby("c")["wall"].agg(["min", "max"])
    want_recency = (as_of - per["max"].dt.normalize()).dt.days.to_dict()
    want_tenure = (as_of - per["min"].dt.normalize()).dt.days.to_dict()
    got = {r["customer_id"]: r for r in out.to_pylist()}
    assert {c: r["recency_days"] for c, r in got.items()} == want_recency
    assert {c: r["tenure_days"] for c, r in got.items()} == want_tenure
    assert out.schema.metadata[b"rfmx.timezone"].decode() == zone


def test_calendar_days_in_a_time_zone_match_duckdb():
    duckdb = pytest.importorskip("duckdb")
    secs = [1_735_689_000, 1_735_700_000, 1_711_846_800, 1_720_000_000]  # around midnights and a DST change
    t = orders([1, 1, 2, 3], [1.0] * 4, times=pa.array(secs, pa.timestamp("s", tz="UTC")))
    for zone in ("Asia/Tokyo", "Europe/Berlin"):
        out = rfmx.aggregate(t, timezone=zone, as_of="2025-02-01")
        con = duckdb.connect()
        con.execute(f"SET TimeZone = '{zone}'")
        con.register("t", t)
        want = dict(con.execute("SELECT customer_id, date_diff('day', max(order_time), "
                                "TIMESTAMPTZ '2025-02-01 00:00:00') FROM t GROUP BY ALL").fetchall())
        assert dict(zip(out.column("customer_id").to_pylist(), out.column("recency_days").to_pylist())) == want


def test_naive_times_and_bare_dates_are_wall_clock_in_the_time_zone():
    import datetime as dt

    naive = orders([1, 2], [1.0, 1.0], times=pa.array([dt.datetime(2025, 12, 31, 23, 30),
                                                       dt.datetime(2026, 1, 1, 0, 30)], pa.timestamp("us")))
    out = rfmx.aggregate(naive, timezone="Asia/Tokyo", as_of="2026-01-01")   # as_of: Tokyo midnight
    assert out.column("customer_id").to_pylist() == [1]                      # 00:30 Tokyo is not before it
    last = out.column("last_order")
    assert last.type == pa.timestamp("us", tz="Asia/Tokyo")
    assert last.to_pylist()[0].replace(tzinfo=None) == dt.datetime(2025, 12, 31, 23, 30)
    assert out.column("recency_days").to_pylist() == [1]


def test_btyd_periods_are_days_of_the_time_zone():
    # 23:30 and 00:30 UTC: two UTC days, one Tokyo day (08:30 and 09:30)
    t = orders([1, 1], [1.0, 2.0], times=pa.array([1_735_774_200, 1_735_777_800], pa.timestamp("s", tz="UTC")))
    assert rfmx.btyd_summary(t).column("frequency").to_pylist() == [1.0]
    assert rfmx.btyd_summary(t, timezone="Asia/Tokyo").column("frequency").to_pylist() == [0.0]


def test_states_of_different_zones_do_not_merge_and_the_zone_is_saved(tmp_path):
    a = rfmx.build_state(orders([1], [1.0]), timezone="Asia/Tokyo")
    b = rfmx.build_state(orders([2], [1.0]))
    with pytest.raises(rfmx.RfmxError, match="timezone=UTC but this state has .*timezone=Asia/Tokyo"):
        a.merge(b)
    a.save(tmp_path / "a.arrow")
    assert rfmx.RFMState.load(tmp_path / "a.arrow").timezone == "Asia/Tokyo"
    with pytest.raises(rfmx.RfmxError, match="counts days in Asia/Tokyo, not in Europe/Berlin"):
        rfmx.build_state(orders([3], [1.0]), state=rfmx.RFMState.load(tmp_path / "a.arrow"), timezone="Europe/Berlin")
    with pytest.raises(rfmx.RfmxError, match="unknown time zone 'Mars/Base'"):
        rfmx.aggregate(orders([1], [1.0]), timezone="Mars/Base")


# --- damaged state files -----------------------------------------------------------------

def _rewrite(path, *, meta=None, drop=None, column=None):
    """Save a copy of the state at ``path`` with its metadata, a column or its values changed."""
    import json

    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    m = json.loads(table.schema.metadata[b"rfmx.state"])
    raw = json.dumps(meta(m)) if callable(meta) else (meta if meta is not None else json.dumps(m))
    if drop:
        table = table.drop_columns([drop])
    if column:
        name, values = column
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.int64()))
    table = table.replace_schema_metadata({"rfmx.state": raw})
    out = path.with_name("damaged.arrow")
    with pa.OSFile(str(out), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    return out


@pytest.mark.parametrize("change,message", [
    (dict(meta="{not json"), "its metadata is not JSON"),
    (dict(meta="[1, 2]"), "its metadata is not a JSON object"),
    (dict(meta=lambda m: {k: v for k, v in m.items() if k != "amount_scale"}), "metadata lacks 'amount_scale'"),
    (dict(meta=lambda m: {**m, "rows_read": "many"}), "metadata 'rows_read' is 'many'"),
    (dict(meta=lambda m: {**m, "timezone": "Mars/Base"}), "unknown time zone 'Mars/Base'"),
    (dict(meta=lambda m: {**m, "columns": {"customer": 1}}), "metadata 'columns' is"),
    (dict(drop="gross_minor"), "column 'gross_minor' is missing"),
    (dict(column=("gross_minor", [-5, 1])), "column 'gross_minor' holds values from -5"),
    (dict(column=("refunds_minor", [0, 3])), "column 'refunds_minor' holds values from 0 to 3"),
])
def test_damaged_state_files_are_one_line_errors(tmp_path, change, message):
    rfmx.build_state(orders([1, 2], [1.0, 2.0])).save(tmp_path / "s.arrow")
    damaged = _rewrite(tmp_path / "s.arrow", **change)
    with pytest.raises(rfmx.RfmxError, match=rf"damaged\.arrow: .*{message}"):
        rfmx.RFMState.load(damaged)


def test_state_with_a_customer_twice_is_refused(tmp_path):
    rfmx.build_state(orders([1, 2], [1.0, 2.0])).save(tmp_path / "s.arrow")
    table = pa.ipc.open_file(pa.memory_map(str(tmp_path / "s.arrow"))).read_all()
    twice = pa.concat_tables([table, table.slice(0, 1)])
    with pa.OSFile(str(tmp_path / "d.arrow"), "wb") as f, pa.ipc.new_file(f, twice.schema) as w:
        w.write_table(twice)
    with pytest.raises(rfmx.RfmxError, match=r"d\.arrow: damaged state file: a customer id occurs more than once"):
        rfmx.RFMState.load(tmp_path / "d.arrow")


def test_version_1_states_load_as_utc(tmp_path):
    rfmx.build_state(orders([1, 2], [1.0, 2.0])).save(tmp_path / "s.arrow")
    old = _rewrite(tmp_path / "s.arrow", meta=lambda m: {k: v for k, v in m.items() if k != "timezone"} | {"version": 1})
    state = rfmx.RFMState.load(old)
    assert state.timezone == "UTC" and state.n_customers == 2


def test_rows_read_counts_this_run_and_names_the_saved_state(tmp_path):
    src = tmp_path / "o.parquet"
    pq.write_table(orders([1, 2, 3], [1.0, 2.0, 3.0]), src)
    assert run_cli("aggregate", src, "--state-out", tmp_path / "s.arrow").exit_code == 0
    new = tmp_path / "n.parquet"
    pq.write_table(orders([4], [1.0], times=[10]), new)
    r = run_cli("aggregate", new, "--state-in", tmp_path / "s.arrow", "--state-out", tmp_path / "s.arrow")
    assert r.exit_code == 0, r.output
    assert "1 rows read into a saved state of 3 customers (from 3 earlier rows), 4 customers" in r.stderr
