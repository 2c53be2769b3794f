"""The timeline state: every snapshot equals rfmx.aggregate(as_of=boundary) bit for bit, for
random inputs, periods, zones, batch sizes, thread counts, merge trees and save/load round
trips; buckets equal a naive per-(customer, period) reference; bad input is one line."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from naive import WEEKDAYS, amount_to_minor, naive_buckets
from rfmx import RfmxError, TimelineState

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "America/Sao_Paulo"]
PERIODS = ["day", "week", "month", "quarter"]
US_PER_DAY = 86_400_000_000


def _orders(rng, n, n_customers, *, string_ids=False, with_oid=False, days=730, start="2017-06-01"):
    """Random order lines over ~2 years, in time order (so each customer's lines are too),
    with refunds; order ids: a customer's next line continues its order or starts a new one."""
    cust = rng.integers(0, n_customers, n)
    t0 = np.datetime64(start, "us").astype(np.int64)
    t = np.sort(t0 + (rng.random(n) * days * US_PER_DAY).astype(np.int64))
    amount = np.round(rng.lognormal(3, 1, n), 2)
    amount[rng.random(n) < 0.1] *= -1
    cols = {
        "customer_id": pa.array([f"c{c}" for c in cust]) if string_ids else pa.array(cust * 7919 - 50),
        "order_time": pa.array(t, type=pa.int64()).view(pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount),
    }
    if with_oid:
        oid = np.empty(n, dtype=np.int64)
        current = {}
        for i, c in enumerate(cust.tolist()):
            if c not in current or rng.random() < 0.6:
                current[c] = int(rng.integers(0, 2**40))
            oid[i] = current[c]
        cols["order_id"] = pa.array(oid)
    return pa.table(cols)


def _aggregate(table, as_of, zone, with_oid):
    return rfmx.aggregate(table, order_id="order_id" if with_oid else None, as_of=as_of, timezone=zone)


def _same(got: pa.Table, expected: pa.Table, what=""):
    a, b = got.sort_by("customer_id"), expected.sort_by("customer_id")
    assert a.schema.equals(b.schema, check_metadata=True), (what, a.schema, b.schema)
    assert a.equals(b, check_metadata=True), (what, a.to_pandas().compare(b.to_pandas()) if a.num_rows == b.num_rows
                                             else (a.num_rows, b.num_rows))


def _build(table, cuts, rng, *, threads, batch, **options):
    """One state per slice of ``table`` (each fed in batches of ``batch``), merged in a
    random tree that keeps the slices' order."""
    states = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        s = TimelineState(threads=threads, **options)
        for b in table.slice(lo, hi - lo).to_batches(max_chunksize=batch):
            s.update(b)
        states.append(s)
    while len(states) > 1:
        i = int(rng.integers(0, len(states) - 1))
        states[i].merge(states.pop(i + 1))
    return states[0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 500), n_customers=st.integers(1, 40),
       period=st.sampled_from(PERIODS), week_start=st.sampled_from(WEEKDAYS), zone=st.sampled_from(ZONES),
       string_ids=st.booleans(), with_oid=st.booleans(), parts=st.integers(1, 4), batch=st.integers(1, 300),
       threads=st.sampled_from([1, 2]), pick=st.integers(1, 6))
def test_snapshots_equal_aggregate_at_every_boundary(seed, n, n_customers, period, week_start, zone, string_ids,
                                                     with_oid, parts, batch, threads, pick):
    rng = np.random.default_rng(seed)
    table = _orders(rng, n, n_customers, string_ids=string_ids, with_oid=with_oid)
    cuts = sorted({0, n} | set(rng.integers(0, n + 1, parts - 1).tolist()))
    options = dict(order_id="order_id" if with_oid else None, period=period, week_start=week_start, timezone=zone)
    state = _build(table, cuts, rng, threads=threads, batch=batch, **options)
    # the customer rows are those of a plain RFM state
    _same(state.finalize(), _aggregate(table, None, zone, with_oid), "finalize")
    bounds = state.boundaries()
    chosen = sorted(rng.choice(len(bounds), size=min(pick, len(bounds)), replace=False).tolist()) if bounds else []
    as_ofs = [bounds[i] for i in chosen]
    got = list(state.snapshots(as_ofs))
    assert [a for a, _ in got] == as_ofs
    for as_of, snap in got:
        _same(snap, _aggregate(table, as_of, zone, with_oid), f"{period} {zone} {as_of}")
    # saved and loaded, the same snapshots
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.arrow")
        state.save(path)
        back = TimelineState.load(path, threads=threads)
    assert back.boundaries() == bounds
    for (a1, s1), (a2, s2) in zip(got, back.snapshots(as_ofs)):
        assert a1 == a2
        _same(s2, s1)
    assert back.buckets().equals(state.buckets())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), n_customers=st.integers(1, 30),
       period=st.sampled_from(PERIODS), week_start=st.sampled_from(WEEKDAYS), zone=st.sampled_from(ZONES),
       with_oid=st.booleans(), threads=st.sampled_from([1, 2]), shuffle=st.booleans())
def test_buckets_equal_naive_reference(seed, n, n_customers, period, week_start, zone, with_oid, threads, shuffle):
    rng = np.random.default_rng(seed)
    table = _orders(rng, n, n_customers, with_oid=with_oid)
    if shuffle:  # buckets hold whatever the order of the lines (order counts per period, input order)
        table = table.take(pa.array(rng.permutation(n)))
    state = TimelineState(order_id="order_id" if with_oid else None, period=period, week_start=week_start,
                          timezone=zone, threads=threads).update(table)
    got = state.buckets()
    assert got.column_names == ["customer_id", "period_start", "n_orders", "n_refunds", "gross_minor",
                                "refunds_minor", "first_order", "last_order"]
    rows = got.to_pylist()
    times = table.column("order_time").cast(pa.int64()).to_pylist()
    amounts = [amount_to_minor(a, 2) for a in table.column("amount").to_pylist()]
    ref = naive_buckets(table.column("customer_id").to_pylist(), times, amounts,
                        table.column("order_id").to_pylist() if with_oid else None,
                        period=period, week_start=week_start, timezone=zone)
    assert len(rows) == len(ref)
    seen = []
    for r in rows:
        start = r["period_start"]
        cu = ref[(r["customer_id"], start.date())]
        assert (r["n_orders"], r["n_refunds"], r["gross_minor"], r["refunds_minor"]) == \
            (cu.n_orders, cu.n_refunds, cu.gross_minor, cu.refunds_minor)
        firsts = [r["first_order"], r["last_order"]]
        as_us = [None if d is None else pa.scalar(d, type=pa.timestamp("us", tz=zone)).cast(pa.int64()).as_py()
                 for d in firsts]
        assert as_us == [cu.first_order_us, cu.last_order_us]
        seen.append((r["customer_id"], start))
    # customers together, periods ascending within each
    for (c1, s1), (c2, s2) in zip(seen, seen[1:]):
        assert c1 != c2 or s1 < s2
    # the same with another thread count
    other = TimelineState(order_id="order_id" if with_oid else None, period=period, week_start=week_start,
                          timezone=zone, threads=3 - threads).update(table)
    assert other.buckets().sort_by([("customer_id", "ascending"), ("period_start", "ascending")]).equals(
        got.sort_by([("customer_id", "ascending"), ("period_start", "ascending")]))


def test_incremental_fold_equals_one_pass(tmp_path):
    rng = np.random.default_rng(11)
    table = _orders(rng, 4000, 300, string_ids=True, with_oid=True)
    opts = dict(order_id="order_id", period="week", week_start="sunday", timezone="Europe/Berlin")
    first = rfmx.build_state(table.slice(0, 2500), "customer_id", "order_time", "amount", "order_id",
                             state=TimelineState(**opts), batch_size=700)
    first.save(tmp_path / "t.arrow")
    loaded = TimelineState.load(tmp_path / "t.arrow")
    again = rfmx.build_state(table.slice(2500), "customer_id", "order_time", "amount", "order_id", state=loaded,
                             batch_size=333)
    one = TimelineState(**opts).update(table)
    assert again.buckets().equals(one.buckets())
    for (a1, s1), (a2, s2) in zip(again.snapshots(), one.snapshots()):
        assert a1 == a2
        _same(s1, s2)
    assert again.n_buckets == one.n_buckets and again.rows_read == 4000


def test_default_boundaries_until_and_window():
    t = pa.table({"customer_id": [1, 2, 1], "order_time": pa.array(
        np.array(["2024-01-15", "2024-02-03", "2024-04-02"], dtype="datetime64[us]")), "amount": [1.0, 2.0, -1.0]})
    s = TimelineState(period="month").update(t)
    assert [b.date().isoformat() for b in s.boundaries()] == ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]
    assert [b.date().isoformat() for b in s.boundaries("2024-02-15", "2024-04-01")] == ["2024-03-01", "2024-04-01"]
    snaps = dict((a.date().isoformat(), tab) for a, tab in s.snapshots())
    assert snaps["2024-02-01"].column("customer_id").to_pylist() == [1]
    assert sorted(snaps["2024-05-01"].column("customer_id").to_pylist()) == [1, 2]
    _same(snaps["2024-05-01"], rfmx.aggregate(t, as_of="2024-05-01"))
    # a window: snapshots up to its end, which may itself be an as_of
    w = TimelineState(period="month", until="2024-04-02T12:00").update(t)
    assert [b.date().isoformat() for b in w.boundaries()] == ["2024-02-01", "2024-03-01", "2024-04-01"]
    (a, tab), = w.snapshots(["2024-04-02T12:00"])
    _same(tab, rfmx.aggregate(t, as_of="2024-04-02T12:00"))
    with pytest.raises(RfmxError, match="after the state's window ends"):
        list(w.snapshots(["2024-05-01"]))
    assert list(TimelineState().snapshots()) == [] and TimelineState().boundaries() == []


def _one_line(exc_info):
    assert "\n" not in str(exc_info.value)


def test_bad_arguments_are_one_line_errors():
    t = _orders(np.random.default_rng(5), 200, 20)
    s = TimelineState(period="week").update(t)
    with pytest.raises(RfmxError, match="not the start of a week.*weekly state gives snapshots at week boundaries") as e:
        s.snapshots(["2018-01-03"])  # a Wednesday: refused at the call, before any table
    _one_line(e)
    m = TimelineState(period="month").update(t)
    with pytest.raises(RfmxError, match="monthly state gives snapshots at month boundaries") as e:
        list(m.snapshots(["2018-01-01", "2018-01-08"]))
    _one_line(e)
    for bad, match in ((dict(period="year"), "period must be one of"), (dict(week_start="mon"), "week_start must")):
        with pytest.raises(RfmxError, match=match) as e:
            TimelineState(**bad)
        _one_line(e)
    with pytest.raises(RfmxError, match=r"weekly \(Monday to Sunday\) buckets but this state monthly"):
        m.merge(s)
    with pytest.raises(RfmxError, match=r"weekly \(Sunday to Saturday\)"):
        s.merge(TimelineState(period="week", week_start="sunday"))
    with pytest.raises(RfmxError, match="without a time axis"):
        m.merge(rfmx.RFMState())


def _damage(path, out, *, meta=None, column=None):
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    m = json.loads(table.schema.metadata[b"rfmx.state"])
    if meta:
        m.update(meta)
    if column:
        name, arr = column
        table = table.set_column(table.schema.get_field_index(name), name, arr)
    table = table.replace_schema_metadata({"rfmx.state": json.dumps(m)})
    with pa.OSFile(str(out), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    return out


def test_damaged_timeline_files_are_one_line_errors(tmp_path):
    t = _orders(np.random.default_rng(6), 300, 30)
    path = tmp_path / "t.arrow"
    TimelineState(period="month").update(t).save(path)
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    gross = table.column("bucket_gross_minor").combine_chunks()
    periods = table.column("periods").combine_chunks()
    shifted = pa.LargeListArray.from_arrays(periods.offsets, pa.array(np.asarray(periods.values) + 1))
    doubled = pa.LargeListArray.from_arrays(gross.offsets, pa.array(np.asarray(gross.values) * 2))
    dup = np.asarray(periods.values).copy()
    offs = np.asarray(periods.offsets)
    many = np.flatnonzero(np.diff(offs) > 1)[0]
    dup[offs[many] + 1] = dup[offs[many]]
    cases = [
        (dict(meta={"period": "year"}), "metadata 'period' is 'year'"),
        (dict(meta={"week_start": 3}), "metadata 'week_start' is 3"),
        (dict(meta={"format": "rfmx-state"}), "state format 'rfmx-state'"),
        (dict(column=("periods", pa.array([[1]] * table.num_rows, type=pa.large_list(pa.int64())))),
         "bucket columns do not match"),
        (dict(column=("bucket_n_orders", table.column("bucket_n_orders").cast(pa.list_(pa.int64())))),
         "not large_list<int64>"),
        (dict(column=("bucket_gross_minor", doubled)), "do not add up"),
        (dict(column=("periods", pa.LargeListArray.from_arrays(periods.offsets, pa.array(dup)))),
         "two buckets for one period"),
        (dict(column=("bucket_refunds_minor", pa.LargeListArray.from_arrays(gross.offsets, gross.values))),
         "outside what a state can hold"),
    ]
    for i, (change, match) in enumerate(cases):
        bad = _damage(path, tmp_path / f"bad{i}.arrow", **change)
        with pytest.raises(RfmxError, match=match) as e:
            TimelineState.load(bad)
        _one_line(e)
    # periods moved by one still add up (a different, valid timeline): loads
    TimelineState.load(_damage(path, tmp_path / "shift.arrow", column=("periods", shifted)))
    with pytest.raises(RfmxError, match="state format 'rfmx-timeline-state'"):
        rfmx.RFMState.load(path)
    plain = tmp_path / "plain.arrow"
    rfmx.RFMState().update(t).save(plain)
    with pytest.raises(RfmxError, match="this rfmx reads 'rfmx-timeline-state'"):
        TimelineState.load(plain)


def test_money_beyond_int64_is_refused():
    t = pa.table({"customer_id": [3, 4, 3], "order_time": pa.array([1, 2, 3], type=pa.timestamp("s")),
                  "amount": [5e16, 1.0, 5e16]})
    with pytest.raises(RfmxError, match="customer 3 leaves the exact range at row 2"):
        TimelineState(period="day").update(t)
    a = TimelineState(period="day").update(t.slice(0, 1))
    b = TimelineState(period="day").update(t.slice(2))
    with pytest.raises(RfmxError, match="merged, the money total of customer 3 leaves the exact range"):
        a.merge(b)


def test_import_stays_cheap():
    import subprocess
    import sys

    code = "import sys, rfmx; rfmx.TimelineState; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
