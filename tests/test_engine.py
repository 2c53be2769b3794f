"""The streaming engine against tests/naive.py: random order tables, random chunkings.

Every test compares rfmx's per-customer table with the slow reference after keying both
by customer id; money is compared exactly (``monetary_minor`` and the float columns,
which are one rounding of an exact integer).
"""
from __future__ import annotations

import datetime as dt
import decimal
import os
import tempfile

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import RFMState, RfmxError
from naive import (
    RESULT_COLUMNS,
    US_PER_DAY,
    amount_to_minor,
    date32_to_us,
    date64_to_us,
    iso_to_us,
    naive_rfm,
    result_rows,
    timestamp_to_us,
)

T0 = 1_709_251_200_000_000  # 2024-03-01T00:00:00 in microseconds

# --- strategies --------------------------------------------------------------------------

_TEXT = st.text(alphabet="ab\x00é", max_size=4)
ID_KINDS = {
    "int8": (pa.int8(), st.integers(-128, 127)),
    "int16": (pa.int16(), st.integers(-(2**15), 2**15 - 1)),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "int64": (pa.int64(), st.one_of(st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1]),
                                    st.integers(-(2**63), 2**63 - 1))),
    "uint8": (pa.uint8(), st.integers(0, 255)),
    "uint32": (pa.uint32(), st.integers(0, 2**32 - 1)),
    "uint64": (pa.uint64(), st.one_of(st.integers(2**64 - 6, 2**64 - 1), st.integers(2**63 - 3, 2**63 + 3),
                                      st.integers(0, 3), st.integers(0, 2**64 - 1))),
    "string": (pa.string(), _TEXT),
    "large_string": (pa.large_string(), _TEXT),
    "string_view": (pa.string_view(), _TEXT),
    "binary": (pa.binary(), st.binary(max_size=3)),
    "large_binary": (pa.large_binary(), st.binary(max_size=3)),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), _TEXT),
    "dictionary_view": (pa.dictionary(pa.int8(), pa.string_view()), _TEXT),
}


def id_array(values, kind: str) -> pa.Array:
    arrow_type, _ = ID_KINDS[kind]
    if kind == "dictionary":
        return pa.array(values, type=pa.string()).dictionary_encode()
    if kind == "dictionary_view":
        uniques = sorted(set(values), reverse=True)
        indices = pa.array([uniques.index(v) for v in values], pa.int8())
        return pa.DictionaryArray.from_arrays(indices, pa.array(uniques, pa.string_view()))
    return pa.array(values, type=arrow_type)


def output_id_type(kind: str) -> pa.DataType:
    """Dictionaries come out decoded (view-typed values as their large type)."""
    return {"dictionary": pa.string(), "dictionary_view": pa.large_string()}.get(kind) or ID_KINDS[kind][0]


@st.composite
def order_lines(draw, kinds=tuple(ID_KINDS), max_rows: int = 40):
    """A dict of Python lists: customer, time_us, amount_minor, order_id; plus the id kind.

    Few distinct customers, times and order ids, so customers repeat, orders have several
    lines, and refunds (negative amounts) interleave with them.
    """
    kind = draw(st.sampled_from(kinds))
    pool = draw(st.lists(ID_KINDS[kind][1], min_size=1, max_size=6, unique=True))
    n = draw(st.integers(0, max_rows))
    times_pool = draw(st.lists(st.integers(-3 * US_PER_DAY, 40 * US_PER_DAY), min_size=1, max_size=5))
    line = st.tuples(
        st.sampled_from(pool),
        st.one_of(st.sampled_from(times_pool), st.integers(-3 * US_PER_DAY, 40 * US_PER_DAY)),
        st.one_of(st.integers(-5_000, -1), st.integers(0, 1_000_000), st.just(0)),
        st.integers(0, 3),
    )
    rows = draw(st.lists(line, min_size=n, max_size=n))
    return {
        "kind": kind,
        "customer": [r[0] for r in rows],
        "time_us": [T0 + r[1] for r in rows],
        "amount_minor": [r[2] for r in rows],
        "order_id": [r[3] for r in rows],
    }


_OID_KINDS = {
    "int64": (pa.int64(), lambda k: k),
    "uint64": (pa.uint64(), lambda k: 2**64 - 1 - k),
    "string": (pa.string(), lambda k: f"order-{k}"),
    "large_binary": (pa.large_binary(), lambda k: b"o" * k),
}


def orders_table(lines, *, amount: str = "decimal", order_ids: bool = True, oid_kind: str = "int64") -> pa.Table:
    """The lines as an Arrow table; ``amount``: how money is typed (value is the same);
    ``oid_kind``: the order-id type (distinct small ints map to distinct ids)."""
    minor = lines["amount_minor"]
    if amount == "decimal":
        money = pa.array([decimal.Decimal(m).scaleb(-2) for m in minor], type=pa.decimal128(18, 2))
    elif amount == "float":
        money = pa.array([m / 100 for m in minor], type=pa.float64())
    else:
        money = pa.array(minor, type=pa.int64())  # whole units: minor = 100 * value
    cols = {
        "customer_id": id_array(lines["customer"], lines["kind"]),
        "order_time": pa.array(lines["time_us"], type=pa.timestamp("us")),
        "amount": money,
    }
    if order_ids:
        oid_type, oid_value = _OID_KINDS[oid_kind]
        cols["order_id"] = pa.array([oid_value(k) for k in lines["order_id"]], type=oid_type)
    return pa.table(cols)


def expected(lines, *, amount: str = "decimal", order_ids: bool = True, since_us=None, as_of_us=None):
    """The naive answer for :func:`orders_table` of the same arguments."""
    table = orders_table(lines, amount=amount, order_ids=order_ids)
    money = [amount_to_minor(v, 2) for v in table.column("amount").to_pylist()]
    rows, as_of = naive_rfm(lines["customer"], lines["time_us"], money,
                            lines["order_id"] if order_ids else None, since_us=since_us, as_of_us=as_of_us)
    return rows, as_of


@st.composite
def windows(draw):
    """(since_us, as_of_us), each maybe None, since < as_of."""
    point = st.integers(T0 - 4 * US_PER_DAY, T0 + 42 * US_PER_DAY)
    since = draw(st.one_of(st.none(), point))
    as_of = draw(st.one_of(st.none(), point))
    if since is not None and as_of is not None:
        assume(since != as_of)
        since, as_of = min(since, as_of), max(since, as_of)
    return since, as_of


def check_schema(table: pa.Table, id_type: pa.DataType, tz=None) -> None:
    ts = pa.timestamp("us", tz=tz)
    want = pa.schema([
        ("customer_id", id_type), ("first_order", ts), ("last_order", ts), ("recency_days", pa.int64()),
        ("tenure_days", pa.int64()), ("n_orders", pa.int64()), ("n_refunds", pa.int64()),
        ("monetary_total", pa.float64()), ("monetary_minor", pa.int64()), ("avg_order_value", pa.float64()),
        ("gross_total", pa.float64()), ("refunds_total", pa.float64()),
    ])
    assert table.schema.remove_metadata() == want, table.schema


def check_as_of(table: pa.Table, as_of_us) -> None:
    meta = table.schema.metadata[b"rfmx.as_of"].decode()
    if as_of_us is None:
        assert meta == ""
    else:
        assert rfmx.state.to_us(meta) == as_of_us


# --- the one-call API -----------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(lines=order_lines(), window=windows(), amount=st.sampled_from(["decimal", "float", "int"]),
       use_oid=st.booleans(), oid_kind=st.sampled_from(sorted(_OID_KINDS)), batch_size=st.integers(1, 45),
       n_threads=st.sampled_from([1, 2]))
def test_aggregate_matches_naive(lines, window, amount, use_oid, oid_kind, batch_size, n_threads):
    since, as_of = window
    table = orders_table(lines, amount=amount, order_ids=use_oid, oid_kind=oid_kind)
    got = rfmx.aggregate(table, order_id="order_id" if use_oid else None, since=since, as_of=as_of,
                         batch_size=batch_size, threads=n_threads)
    want, want_as_of = expected(lines, amount=amount, order_ids=use_oid, since_us=since, as_of_us=as_of)
    check_schema(got, output_id_type(lines["kind"]))
    check_as_of(got, want_as_of)
    assert result_rows(got) == want


@settings(max_examples=25, deadline=None)
@given(lines=order_lines(max_rows=60), use_oid=st.booleans(), sizes=st.tuples(st.integers(1, 60), st.integers(1, 60)))
def test_threads_and_batch_size_give_identical_tables(lines, use_oid, sizes):
    """Not only the same rows: the same table, row order included (it is deterministic)."""
    table = orders_table(lines, order_ids=use_oid)
    oid = "order_id" if use_oid else None
    one = rfmx.aggregate(table, order_id=oid, threads=1, batch_size=sizes[0])
    two = rfmx.aggregate(table, order_id=oid, threads=2, batch_size=sizes[1])
    assert one.equals(two, check_metadata=True)


def test_threads_restores_numba_setting():
    import numba

    before = numba.get_num_threads()
    lines = {"kind": "int64", "customer": [1, 2], "time_us": [T0, T0], "amount_minor": [100, 200], "order_id": [1, 2]}
    rfmx.aggregate(orders_table(lines), threads=1)
    assert numba.get_num_threads() == before


# --- split, merge, save, load ------------------------------------------------------------

def _tree_merge(states, draw):
    """Merge ``states`` left to right along a random binary tree."""
    if len(states) == 1:
        return states[0]
    k = draw(st.integers(1, len(states) - 1))
    left = _tree_merge(states[:k], draw)
    right = _tree_merge(states[k:], draw)
    return left.merge(right)


@settings(max_examples=60, deadline=None)
@given(lines=order_lines(), window=windows(), use_oid=st.booleans(), data=st.data())
def test_split_merge_tree_and_save_load(lines, window, use_oid, data):
    """Contiguous pieces, one state per piece (some saved and reloaded), merged along a
    random tree: merge is associative; without order ids the pieces may also come in any
    order (commutative)."""
    since, as_of = window
    table = orders_table(lines, order_ids=use_oid)
    n = table.num_rows
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=5), label="cuts"))
    bounds = [0] + cuts + [n]
    oid = "order_id" if use_oid else None
    states = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            state = rfmx.build_state(table.slice(lo, hi - lo), order_id=oid, since=since, as_of=as_of,
                                     threads=data.draw(st.sampled_from([1, 2]), label="threads"),
                                     batch_size=data.draw(st.integers(1, 20), label="batch"))
            if data.draw(st.booleans(), label="save/load"):
                path = os.path.join(tmp, f"piece{i}.arrow")
                state.save(path)
                state = RFMState.load(path)
            states.append(state)
        if not use_oid:
            states = data.draw(st.permutations(states), label="order")
        merged = _tree_merge(states, data.draw)
        if data.draw(st.booleans(), label="save/load merged"):
            path = os.path.join(tmp, "merged.arrow")
            merged.save(path)
            assert not [f for f in os.listdir(tmp) if f.endswith(".tmp")]
            merged = RFMState.load(path)
    got = merged.finalize(as_of)
    want, want_as_of = expected(lines, order_ids=use_oid, since_us=since, as_of_us=as_of)
    check_schema(got, output_id_type(lines["kind"]))
    check_as_of(got, want_as_of)
    assert result_rows(got) == want
    assert merged.rows_read == n


@settings(max_examples=15, deadline=None)
@given(a=order_lines(kinds=("int64",)), b=order_lines(kinds=("int64",)), use_oid=st.booleans())
def test_merge_with_identity_and_counters(a, b, use_oid):
    """Merging an empty state is the identity; counters add up."""
    oid = "order_id" if use_oid else None
    sa = rfmx.build_state(orders_table(a, order_ids=use_oid), order_id=oid)
    before = sa.finalize()
    sa.merge(RFMState(order_id=oid))
    assert sa.finalize().equals(before, check_metadata=True)
    empty = RFMState(order_id=oid).merge(sa)
    assert result_rows(empty.finalize()) == result_rows(before)
    sb = rfmx.build_state(orders_table(b, order_ids=use_oid), order_id=oid)
    sa.merge(sb)
    assert sa.rows_read == len(a["customer"]) + len(b["customer"])
    both = {k: a[k] + b[k] for k in ("customer", "time_us", "amount_minor", "order_id")}
    both["kind"] = "int64"
    want, _ = expected(both, order_ids=use_oid)
    assert result_rows(sa.finalize()) == want


def test_incremental_state_equals_one_pass(tmp_path):
    """Yesterday's orders folded into last month's saved state = one pass over both."""
    orders = pa.Table.from_batches(list(rfmx.generate_orders(3000, customers=150, seed=3, string_ids=True)))
    first, second = orders.slice(0, 1700), orders.slice(1700)
    state = rfmx.build_state(first, order_id="order_id")
    state.save(tmp_path / "month.arrow")
    state = RFMState.load(tmp_path / "month.arrow")
    rfmx.build_state(second, order_id="order_id", state=state)
    one_pass = rfmx.aggregate(orders, order_id="order_id")
    assert result_rows(state.finalize()) == result_rows(one_pass)


@pytest.mark.parametrize("string_ids", [False, True], ids=["int-ids", "string-ids"])
def test_many_customers_grow_tables_and_arenas(string_ids, tmp_path):
    """20k customers: the id tables, aggregate rows and byte arenas grow and rehash several
    times, in one pass and across saved, reloaded and merged states."""
    orders = pa.Table.from_batches(list(rfmx.generate_orders(50_000, customers=20_000, seed=8,
                                                             string_ids=string_ids)))
    want = _naive_of(orders)
    one = rfmx.aggregate(orders, order_id="order_id", batch_size=7_000, threads=2)
    assert one.num_rows == len(want) > 15_000
    assert result_rows(one) == want
    a = rfmx.build_state(orders.slice(0, 20_000), order_id="order_id", batch_size=5_000, threads=1)
    b = rfmx.build_state(orders.slice(20_000), order_id="order_id", batch_size=9_000, threads=2)
    b.save(tmp_path / "b.arrow")
    a.merge(RFMState.load(tmp_path / "b.arrow"))
    assert result_rows(a.finalize()) == want


def test_merge_refuses_other_columns_window_scale_and_id_kind():
    base = RFMState(order_id="order_id")
    for other in (RFMState(order_id=None), RFMState("cust", order_id="order_id"),
                  RFMState(order_id="order_id", amount_scale=3), RFMState(order_id="order_id", since=T0)):
        with pytest.raises(RfmxError, match="was made with"):
            base.merge(other)
    ints = RFMState().update(pa.table({"customer_id": [1], "order_time": pa.array([T0], pa.timestamp("us")),
                                       "amount": [1.0]}))
    strs = RFMState().update(pa.table({"customer_id": ["a"], "order_time": pa.array([T0], pa.timestamp("us")),
                                       "amount": [1.0]}))
    with pytest.raises(RfmxError, match="customer ids of type"):
        ints.merge(strs)


def test_state_file_is_arrow_ipc_not_pickle(tmp_path):
    lines = {"kind": "string", "customer": ["a", "b", "a"], "time_us": [T0, T0 + 1, T0 + 2],
             "amount_minor": [100, -50, 30], "order_id": [1, 1, 2]}
    state = rfmx.build_state(orders_table(lines), order_id="order_id")
    state.save(tmp_path / "s.arrow")
    with pa.memory_map(str(tmp_path / "s.arrow")) as f:
        raw = pa.ipc.open_file(f).read_all()
    assert raw.column("customer_id").to_pylist() is not None
    assert b"rfmx.state" in raw.schema.metadata
    assert sorted(raw.column("customer_id").to_pylist()) == ["a", "b"]


def test_finalize_as_of_must_follow_the_data():
    lines = {"kind": "int64", "customer": [1], "time_us": [T0 + 5 * US_PER_DAY], "amount_minor": [100], "order_id": [1]}
    state = rfmx.build_state(orders_table(lines))
    with pytest.raises(RfmxError, match="not after"):
        state.finalize(T0)
    got = result_rows(state.finalize(T0 + 10 * US_PER_DAY))
    assert got[1]["recency_days"] == 5


# --- time types ------------------------------------------------------------------------------

_TS_RANGE = {"s": 10**10, "ms": 10**13, "us": 10**16, "ns": 10**18}
TIME_KINDS = ["s", "ms", "us", "ns", "s/UTC", "ms/Europe/Berlin", "us/+05:30", "ns/America/New_York",
              "date32", "date64", "iso"]


@st.composite
def iso_string(draw):
    value = draw(st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(2090, 1, 1)))
    style = draw(st.sampled_from(["date", "hours", "minutes", "seconds", "milliseconds", "microseconds"]))
    if style == "date":
        return value.date().isoformat()
    text = value.isoformat(sep=draw(st.sampled_from(["T", " "])), timespec=style)
    zone = draw(st.sampled_from(["", "", "Z", "+HH:MM", "+HHMM", "+HH"]))
    if zone == "Z":
        return text + "Z"
    if zone:
        minutes = draw(st.integers(-14 * 4, 14 * 4)) * 15
        if zone == "+HH":
            minutes = minutes // 60 * 60
        sign = "+" if minutes >= 0 else "-"
        hh, mm = divmod(abs(minutes), 60)
        text += {"+HH:MM": f"{sign}{hh:02d}:{mm:02d}", "+HHMM": f"{sign}{hh:02d}{mm:02d}", "+HH": f"{sign}{hh:02d}"}[zone]
    return text


@st.composite
def time_column(draw, kind: str, n: int):
    """(Arrow array, times in microseconds by the naive definition, expected output tz)."""
    if kind == "iso":
        texts = draw(st.lists(iso_string(), min_size=n, max_size=n))
        zoned = any(t.endswith("Z") or "+" in t[10:] or "-" in t[10:] for t in texts)
        arr = pa.array(texts, type=draw(st.sampled_from([pa.string(), pa.large_string(), pa.string_view()])))
        if draw(st.booleans()):
            arr = arr.dictionary_encode()
        return arr, [iso_to_us(t) for t in texts], ("UTC" if zoned else None)
    if kind in ("date32", "date64"):
        days = draw(st.lists(st.integers(-10_000, 40_000), min_size=n, max_size=n))
        if kind == "date32":
            return pa.array(days, type=pa.date32()), [date32_to_us(d) for d in days], None
        ms = [d * 86_400_000 for d in days]
        return pa.array(ms, type=pa.date64()), [date64_to_us(m) for m in ms], None
    unit, _, tz = kind.partition("/")
    lim = _TS_RANGE[unit]
    raw = draw(st.lists(st.one_of(st.integers(-lim, lim), st.integers(-3000, 3000)), min_size=n, max_size=n))
    return pa.array(raw, type=pa.timestamp(unit, tz=tz or None)), [timestamp_to_us(r, unit) for r in raw], tz or None


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(TIME_KINDS), data=st.data())
def test_every_time_type(kind, data):
    n = data.draw(st.integers(1, 30), label="n")
    customers = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n), label="customers")
    amounts = data.draw(st.lists(st.integers(-500, 5000), min_size=n, max_size=n), label="amounts")
    times, times_us, tz = data.draw(time_column(kind, n), label="times")
    table = pa.table({"customer_id": customers, "order_time": times, "amount": amounts})
    got = rfmx.aggregate(table, batch_size=data.draw(st.integers(1, n), label="batch"))
    want, as_of = naive_rfm(customers, times_us, [a * 100 for a in amounts])
    check_schema(got, pa.int64(), tz=tz)
    check_as_of(got, as_of)
    assert result_rows(got) == want


def test_time_strings_naive_and_zoned_mixed():
    texts = ["2024-03-01T10:00:00+02:00", "2024-03-01 09:00:00", "2024-03-02", "2024-03-01T23:30:00Z"]
    table = pa.table({"customer_id": [1, 1, 2, 2], "order_time": texts, "amount": [1, 2, 3, 4]})
    got = result_rows(rfmx.aggregate(table))
    want, _ = naive_rfm([1, 1, 2, 2], [iso_to_us(t) for t in texts], [100, 200, 300, 400])
    assert got == want


def test_unparseable_time_string_names_the_row():
    texts = ["2024-03-01T10:00:00+02:00"] * 5 + ["2024-03-01T10:00:00+02:00x"] + ["2024-03-01"] * 3
    table = pa.table({"customer_id": list(range(9)), "order_time": texts, "amount": [1] * 9})
    with pytest.raises(RfmxError, match=r"'order_time'.*'2024-03-01T10:00:00\+02:00x' at row 5"):
        rfmx.aggregate(table)
    # The row counts from the start of the source, across batches.
    table = pa.table({"customer_id": list(range(9)), "amount": [1] * 9,
                      "order_time": ["2024-01-01"] * 7 + ["yesterday", "x"]})
    with pytest.raises(RfmxError, match=r"'yesterday' at row 7"):
        rfmx.aggregate(table, batch_size=4)


def test_time_window_on_zoned_and_ns_timestamps():
    # ns floors to microseconds; a line exactly at as_of is out, exactly at since is in.
    raw = [T0 * 1000 - 1, T0 * 1000, T0 * 1000 + 999, (T0 + US_PER_DAY) * 1000]
    table = pa.table({"customer_id": [1, 2, 3, 4], "order_time": pa.array(raw, pa.timestamp("ns", tz="Asia/Tokyo")),
                      "amount": [1, 1, 1, 1]})
    got = result_rows(rfmx.aggregate(table, since=T0, as_of=T0 + US_PER_DAY))
    assert sorted(got) == [2, 3]
    assert got[2]["first_order"] == T0 and got[3]["first_order"] == T0


# --- amount types ------------------------------------------------------------------------------

_INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


@st.composite
def amount_column(draw, n: int, scale: int):
    """(Arrow array, Python values, minor units by the naive definition)."""
    kind = draw(st.sampled_from(["int", "float32", "float64", "decimal128", "decimal256"]))
    if kind == "int":
        t = draw(st.sampled_from(_INT_TYPES))
        lo = max(-(10**12), -(2 ** (t.bit_width - 1)) if pa.types.is_signed_integer(t) else 0)
        hi = min(10**12, 2 ** (t.bit_width - (1 if pa.types.is_signed_integer(t) else 0)) - 1)
        values = draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
        arr = pa.array(values, type=t)
    elif kind.startswith("float"):
        # Ties (k/200) exercise round-half-to-even; others are arbitrary floats.
        value = st.one_of(st.integers(-(10**7), 10**7).map(lambda k: k / 200),
                          st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False))
        values = draw(st.lists(value, min_size=n, max_size=n))
        if kind == "float32":
            values = [float(np.float32(v)) for v in values]
        arr = pa.array(values, type=pa.float32() if kind == "float32" else pa.float64())
    else:
        s = draw(st.integers(0, scale))
        values = draw(st.lists(st.decimals(min_value=-(10**8), max_value=10**8, places=s, allow_nan=False,
                                           allow_infinity=False), min_size=n, max_size=n))
        t = pa.decimal128(18, s) if kind == "decimal128" else pa.decimal256(40, s)
        arr = pa.array(values, type=t)
    return arr, values, [amount_to_minor(v, scale) for v in values]


@settings(max_examples=40, deadline=None)
@given(scale=st.integers(0, 4), data=st.data())
def test_every_amount_type(scale, data):
    n = data.draw(st.integers(1, 25), label="n")
    customers = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n), label="customers")
    times = [T0 + i * 3_600_000_000 for i in range(n)]
    arr, values, minor = data.draw(amount_column(n, scale), label="amounts")
    table = pa.table({"customer_id": customers, "order_time": pa.array(times, pa.timestamp("us")), "amount": arr})
    got = rfmx.aggregate(table, amount_scale=scale, batch_size=data.draw(st.integers(1, n), label="batch"))
    want, _ = naive_rfm(customers, times, minor, amount_scale=scale)
    assert result_rows(got) == want
    assert got.schema.metadata[b"rfmx.amount_scale"] == str(scale).encode()


def test_decimal_with_more_decimals_than_amount_scale_is_an_error():
    table = pa.table({"customer_id": [1], "order_time": pa.array([T0], pa.timestamp("us")),
                      "amount": pa.array([decimal.Decimal("1.234")], pa.decimal128(10, 3))})
    with pytest.raises(RfmxError, match=r"'amount'.*3 decimals.*amount_scale=3"):
        rfmx.aggregate(table)
    assert result_rows(rfmx.aggregate(table, amount_scale=3))[1]["monetary_minor"] == 1234


@pytest.mark.parametrize("values, arrow_type", [
    ([2**63], pa.uint64()),
    ([10**17], pa.int64()),
    ([float("nan")], pa.float64()),
    ([float("inf")], pa.float64()),
    ([1e17], pa.float64()),
    ([decimal.Decimal("1e30")], pa.decimal128(38, 2)),
])
def test_amount_out_of_range_is_an_error(values, arrow_type):
    table = pa.table({"customer_id": [7], "order_time": pa.array([T0], pa.timestamp("us")),
                      "amount": pa.array(values, arrow_type)})
    with pytest.raises(RfmxError, match=r"'amount'.*row 0"):
        rfmx.aggregate(table)


@pytest.mark.parametrize("column, values, arrow_type, message", [
    ("amount", [True], pa.bool_(), "'amount' .*has type bool"),
    ("order_time", [5], pa.int64(), "'order_time' .*has type int64"),
    ("customer_id", [1.5], pa.float64(), "'customer_id' .*has type double"),
])
def test_wrong_column_types(column, values, arrow_type, message):
    cols = {"customer_id": pa.array([1]), "order_time": pa.array([T0], pa.timestamp("us")), "amount": pa.array([1.0])}
    cols[column] = pa.array(values, arrow_type)
    with pytest.raises(RfmxError, match=message):
        rfmx.aggregate(pa.table(cols))


# --- nulls ---------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(lines=order_lines(kinds=("int64", "string")), use_oid=st.booleans(), data=st.data())
def test_nulls_error_or_skip(lines, use_oid, data):
    n = len(lines["customer"])
    assume(n > 0)
    cols = ["customer", "time_us", "amount_minor"] + (["order_id"] if use_oid else [])
    holes = data.draw(st.lists(st.tuples(st.sampled_from(cols), st.integers(0, n - 1)), min_size=1, max_size=4),
                      label="nulls")
    for col, i in holes:
        lines[col][i] = None
    table = orders_table(lines, amount="int", order_ids=use_oid)
    oid = "order_id" if use_oid else None
    batch_size = data.draw(st.integers(1, n), label="batch")
    with pytest.raises(RfmxError, match=r"null value.*first at row \d+.*on-null skip"):
        rfmx.aggregate(table, order_id=oid, batch_size=batch_size)
    state = rfmx.build_state(table, order_id=oid, on_null="skip", batch_size=batch_size)
    want, _ = naive_rfm(lines["customer"], lines["time_us"],
                        [None if a is None else a * 100 for a in lines["amount_minor"]],
                        lines["order_id"] if use_oid else None)
    assert result_rows(state.finalize()) == want
    bad_rows = {i for _, i in holes}
    assert state.rows_null_skipped == len(bad_rows)


def test_null_error_names_source_column_count_and_first_row():
    table = pa.table({"customer_id": [1, 2, 3, 4, 5], "order_time": pa.array([T0] * 5, pa.timestamp("us")),
                      "amount": [1.0, 2.0, None, 4.0, None]})
    with pytest.raises(RfmxError, match=r"<Table>: column 'amount' has 2 null value\(s\).*first at row 2"):
        rfmx.aggregate(table, batch_size=2)


# --- sources -----------------------------------------------------------------------------------

def _sample(string_ids: bool) -> pa.Table:
    orders = pa.Table.from_batches(list(rfmx.generate_orders(600, customers=40, seed=11, string_ids=string_ids)))
    return orders


def _naive_of(table: pa.Table, *, order_ids: bool = True):
    times = [timestamp_to_us(v, "us") for v in table.column("order_time").cast(pa.int64()).to_pylist()]
    money = [amount_to_minor(v, 2) for v in table.column("amount").to_pylist()]
    rows, _ = naive_rfm(table.column("customer_id").to_pylist(), times, money,
                        table.column("order_id").to_pylist() if order_ids else None)
    return rows


def _write(kind: str, table: pa.Table, root):
    """Write ``table`` as source ``kind`` under ``root``; return what to pass to aggregate."""
    import pyarrow.csv as pcsv
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    thirds = [table.slice(0, 200), table.slice(200, 200), table.slice(400)]
    if kind == "parquet":
        pq.write_table(table, root / "o.parquet", row_group_size=100)
        return str(root / "o.parquet")
    if kind == "directory":
        (root / "d").mkdir()
        for i, part in enumerate(thirds):
            pq.write_table(part, root / "d" / f"part-{i}.parquet")
        (root / "d" / "_SUCCESS").write_text("")
        return str(root / "d")
    if kind == "glob":
        for i, part in enumerate(thirds):
            pq.write_table(part, root / f"g-{i}.parquet")
        return str(root / "g-*.parquet")
    if kind == "list of files":
        for i, part in enumerate(thirds):
            pq.write_table(part, root / f"l-{i}.parquet")
        return [str(root / f"l-{i}.parquet") for i in range(3)]
    if kind == "hive":
        # Each customer lives in one partition, in input order, so order counting is unchanged.
        bucket = pa.array([hash(str(c)) % 3 for c in table.column("customer_id").to_pylist()])
        pq.write_to_dataset(table.append_column("bucket", bucket), root / "h", partition_cols=["bucket"])
        return str(root / "h")
    if kind == "arrow":
        with pa.OSFile(str(root / "o.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=97)
        return str(root / "o.arrow")
    if kind == "feather":
        feather.write_feather(table, root / "o.feather")
        return str(root / "o.feather")
    if kind == "csv":
        pcsv.write_csv(table, root / "o.csv")
        return str(root / "o.csv")
    if kind == "table":
        return table
    if kind == "record batch":
        return table.combine_chunks().to_batches()[0]
    if kind == "reader":
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=77))
    if kind == "iterable":
        return (b for b in table.to_batches(max_chunksize=55))
    if kind == "list of batches":
        return table.to_batches(max_chunksize=55)
    if kind == "pandas":
        pytest.importorskip("pandas")
        return table.to_pandas()
    if kind == "polars":
        pl = pytest.importorskip("polars")
        return pl.from_arrow(table)
    if kind == "duckdb":
        duckdb = pytest.importorskip("duckdb")
        con = duckdb.connect()
        con.register("orders", table)
        return con.sql("select * from orders")
    raise AssertionError(kind)


SOURCE_KINDS = ["parquet", "directory", "glob", "list of files", "hive", "arrow", "feather", "csv", "table",
                "record batch", "reader", "iterable", "list of batches", "pandas", "polars", "duckdb"]


@pytest.mark.parametrize("string_ids", [False, True], ids=["int-ids", "string-ids"])
@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_source_kind(kind, string_ids, tmp_path):
    table = _sample(string_ids)
    source = _write(kind, table, tmp_path)
    # DuckDB may reorder rows, so order-id counting is not compared there.
    use_oid = kind != "duckdb"
    got = rfmx.aggregate(source, order_id="order_id" if use_oid else None, batch_size=64)
    assert result_rows(got) == _naive_of(table, order_ids=use_oid)


def test_window_pushdown_into_parquet(tmp_path):
    import pyarrow.parquet as pq

    table = _sample(False)
    pq.write_table(table, tmp_path / "o.parquet", row_group_size=50)
    times = table.column("order_time").cast(pa.int64()).to_pylist()
    since, as_of = sorted(times)[100] + 1, sorted(times)[500]
    got = rfmx.aggregate(str(tmp_path / "o.parquet"), order_id="order_id", since=since, as_of=as_of)
    money = [amount_to_minor(v, 2) for v in table.column("amount").to_pylist()]
    want, _ = naive_rfm(table.column("customer_id").to_pylist(), times, money, table.column("order_id").to_pylist(),
                        since_us=since, as_of_us=as_of)
    assert result_rows(got) == want
    # Zoned, second- and nanosecond-unit timestamps and dates are pruned too.
    for t in (pa.timestamp("s", tz="UTC"), pa.timestamp("ns"), pa.date32()):
        col = table.column("order_time").cast(t, safe=False)
        pq.write_table(table.set_column(2, "order_time", col), tmp_path / "t.parquet", row_group_size=50)
        if t == pa.date32():
            cast_times = [date32_to_us(v) for v in col.cast(pa.int32()).to_pylist()]
        else:
            cast_times = [timestamp_to_us(v, t.unit) for v in col.cast(pa.int64()).to_pylist()]
        got = rfmx.aggregate(str(tmp_path / "t.parquet"), order_id="order_id", since=since, as_of=as_of)
        want, _ = naive_rfm(table.column("customer_id").to_pylist(), cast_times, money,
                            table.column("order_id").to_pylist(), since_us=since, as_of_us=as_of)
        assert result_rows(got) == want, t


@pytest.mark.parametrize("kind", ["table", "parquet", "csv", "arrow", "reader", "iterable", "pandas", "polars"])
def test_empty_input_gives_empty_result_with_full_schema(kind, tmp_path):
    table = pa.table({"customer_id": pa.array([], pa.string()), "order_time": pa.array([], pa.timestamp("us")),
                      "amount": pa.array([], pa.float64()), "order_id": pa.array([], pa.int64())})
    source = _write(kind, table, tmp_path)
    got = rfmx.aggregate(source, order_id="order_id")
    assert got.num_rows == 0
    # A header-only CSV and an iterable without batches cannot tell the id type (int64
    # then); every other source keeps it.
    id_type = pa.int64() if kind in ("csv", "iterable") else (pa.string_view() if kind == "polars" else
                                                pa.large_string() if kind == "pandas" else pa.string())
    check_schema(got, id_type)
    check_as_of(got, None)


def test_missing_column_lists_the_columns_that_exist():
    table = pa.table({"cust": [1], "order_time": pa.array([T0], pa.timestamp("us")), "amount": [1.0]})
    with pytest.raises(RfmxError, match=r"column 'customer_id' not found; columns are: cust, order_time, amount"):
        rfmx.aggregate(table)


def test_unknown_source_type_is_an_error():
    with pytest.raises(RfmxError, match="cannot read"):
        rfmx.aggregate(42)
    with pytest.raises(RfmxError, match="no such file"):
        rfmx.aggregate("/nonexistent/orders.parquet")


# --- kernels ---------------------------------------------------------------------------------------

@st.composite
def coded_lines(draw):
    n_customers = draw(st.integers(1, 6))
    m = draw(st.integers(0, 40))
    codes = draw(st.lists(st.integers(-1, n_customers - 1), min_size=m, max_size=m))
    times = draw(st.lists(st.integers(-(10**12), 10**12), min_size=m, max_size=m))
    amounts = draw(st.lists(st.integers(-(10**6), 10**6), min_size=m, max_size=m))
    oids = draw(st.one_of(st.just([]), st.lists(st.integers(-2, 2), min_size=m, max_size=m)))
    return n_customers, codes, times, amounts, oids


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


@settings(max_examples=80, deadline=None)
@given(lines=coded_lines(), data=st.data())
def test_rfm_update_and_merge_kernels_match_naive(lines, data):
    from naive import naive_kernel_rows
    from rfmx.kernels.rfm import new_aggregates, rfm_merge, rfm_update

    n, codes, times, amounts, oids = lines
    want = naive_kernel_rows(codes, times, amounts, oids, n)
    agg = new_aggregates(n)
    rfm_update(_i64(codes), _i64(times), _i64(amounts), _i64(oids), agg)
    assert agg.tolist() == want
    # Split the lines into contiguous pieces and merge the pieces' rows left to right.
    m = len(codes)
    cuts = sorted(data.draw(st.lists(st.integers(0, m), max_size=3), label="cuts"))
    bounds = [0] + cuts + [m]
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = new_aggregates(n)
        rfm_update(_i64(codes[lo:hi]), _i64(times[lo:hi]), _i64(amounts[lo:hi]),
                   _i64(oids[lo:hi]) if oids else _i64([]), part)
        pieces.append(part)
    has_oid = bool(oids)
    if not has_oid:
        pieces = data.draw(st.permutations(pieces), label="order")
    while len(pieces) > 1:
        k = data.draw(st.integers(0, len(pieces) - 2), label="pair")
        left, right = pieces[k], pieces[k + 1]
        # Some merges go through a code map with skips and repeats of an identity row.
        rfm_merge(np.arange(n, dtype=np.int64), right, left, has_oid)
        rfm_merge(np.full(3, -1, dtype=np.int64), right, left, has_oid)
        pieces[k:k + 2] = [left]
    assert pieces[0].tolist() == want
    identity = new_aggregates(n)
    rfm_merge(np.arange(n, dtype=np.int64), identity, pieces[0], has_oid)
    assert pieces[0].tolist() == want


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.sampled_from([-(2**63), -1, 0, 1, 2, 3, 2**63 - 1, 12345]), min_size=1, max_size=40),
       n_hashes=st.integers(1, 3))
def test_probe_int64_collisions_never_merge_customers(keys, n_hashes):
    """Every key hashes to one of ``n_hashes`` slots of a 16-slot table: long probe chains."""
    from rfmx.kernels.customers import _EMPTY, probe_int64

    table = np.full((2, 16, 2), _EMPTY, dtype=np.int64)  # the documented empty table
    store = np.zeros((2, 8), dtype=np.int64)
    n = np.zeros(2, dtype=np.int64)
    seen = {}
    for key in keys:
        h = (key % n_hashes) * 7
        code = probe_int64(table, store, n, 1, key, h)
        assert code == seen.setdefault(key, len(seen))
    assert n.tolist() == [0, len(seen)]
    assert store[1, : len(seen)].tolist() == list(seen)
    assert (table[0] == _EMPTY).all()


# Ids long enough for the eight-byte compares, sharing prefixes, differing near the end.
_similar_ids = st.builds(lambda head, tail: head + tail,
                         st.sampled_from([b"", b"cus-00000", b"cus-000000000000", b"customer-0000000000000000"]),
                         st.binary(max_size=3))


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.binary(max_size=3) | _similar_ids, min_size=1, max_size=30), n_hashes=st.integers(1, 2))
def test_probe_bytes_collisions_never_merge_customers(keys, n_hashes):
    """Byte strings with equal hashes (even equal lengths, or prefixes) stay apart."""
    from rfmx.kernels.customers import _EMPTY, probe_bytes

    data = np.frombuffer(b"".join(keys) or b"\0", dtype=np.uint8)
    offsets = np.cumsum([0] + [len(k) for k in keys])
    table = np.full((1, 64, 2), _EMPTY, dtype=np.int64)
    key_offsets = np.zeros((1, 33), dtype=np.int64)
    key_data = np.zeros((1, 1024), dtype=np.uint8)
    n = np.zeros(1, dtype=np.int64)
    nbytes = np.zeros(1, dtype=np.int64)
    seen = {}
    for i, key in enumerate(keys):
        h = len(key) % n_hashes  # many distinct keys share one hash
        code = probe_bytes(table, key_offsets, key_data, n, nbytes, 0, data, offsets[i], offsets[i + 1], h)
        assert code == seen.setdefault(key, len(seen))
    assert int(n[0]) == len(seen)
    for key, code in seen.items():
        lo, hi = key_offsets[0, code], key_offsets[0, code + 1]
        assert key_data[0, lo:hi].tobytes() == key


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(_similar_ids, min_size=1, max_size=60), n_hashes=st.integers(1, 3),
       group=st.sampled_from([1, 3, 64]), n_workers=st.integers(1, 2), data=st.data())
def test_bytes_update_kernel_with_colliding_hashes_is_exact(ids, n_hashes, group, n_workers, data):
    """The string update kernel, fed hashes that collide on purpose (same partition, same
    tag for ids of one length), still gives every distinct id its own row, in order of
    first appearance: the prefetched candidate is only a hint, the byte compare decides."""
    from rfmx.kernels.customers import PARTITION_BITS, hash_bytes
    from rfmx.kernels.rfm import GROSS, LAST_ORDER, N_ORDERS, new_aggregates, rfm_update_partitioned_bytes

    m = len(ids)
    buf = np.frombuffer(b"".join(ids) or b"\0", dtype=np.uint8)
    offsets = np.cumsum([0] + [len(k) for k in ids]).astype(np.int64)
    real = np.empty(m, dtype=np.int64)
    hash_bytes(offsets, buf, PARTITION_BITS, real, np.zeros(16, np.int64), np.zeros(16, np.int64))
    # n_hashes distinct hash values, all in the partition of the first real hash
    picks = data.draw(st.lists(st.integers(0, n_hashes - 1), min_size=m, max_size=m), label="hash of each line")
    hashes = np.array([int(real[0]) ^ (k << 8) for k in picks], dtype=np.int64)
    t = np.arange(m, dtype=np.int64) * 1000
    amount = np.arange(1, m + 1, dtype=np.int64)
    P = 1 << PARTITION_BITS
    table = np.zeros((P, 256, 2), dtype=np.int64)
    key_offsets = np.zeros((P, 129), dtype=np.int64)
    key_data = np.zeros((P, 4096), dtype=np.uint8)
    n = np.zeros(P, dtype=np.int64)
    nbytes = np.zeros(P, dtype=np.int64)
    agg = new_aggregates((P, 128))
    rfm_update_partitioned_bytes(offsets, buf, hashes, t, amount, np.empty(0, np.int64), np.empty(0, np.bool_),
                                 n_workers, PARTITION_BITS, group, table, key_offsets, key_data, n, nbytes, agg,
                                 np.empty(n_workers, np.int64))
    first_seen = list(dict.fromkeys(ids))
    p = int(np.uint64(hashes[0]) >> np.uint64(64 - PARTITION_BITS))
    assert int(n.sum()) == int(n[p]) == len(first_seen)
    for code, key in enumerate(first_seen):
        assert key_data[p, key_offsets[p, code]:key_offsets[p, code + 1]].tobytes() == key
        lines = [i for i, k in enumerate(ids) if k == key]
        assert agg[p, code, N_ORDERS] == len(lines)
        assert agg[p, code, GROSS] == sum(i + 1 for i in lines)
        assert agg[p, code, LAST_ORDER] == max(lines) * 1000


@settings(max_examples=60, deadline=None)
@given(customers=st.lists(st.integers(0, 40), min_size=1, max_size=400), string_ids=st.booleans(),
       group=st.sampled_from([1, 3, 64]), n_workers=st.integers(1, 3), data=st.data())
def test_update_kernels_fold_exactly_the_kept_lines_of_every_worker(customers, string_ids, group, n_workers, data):
    """Each worker picks its own lines out of a group of the batch without a branch per
    line (a line of another worker, or outside the window, is written and overwritten):
    every kept line must land once on its customer, none of the others, for any number of
    workers and any group size, ids in order of first appearance per partition."""
    from rfmx.kernels.customers import PARTITION_BITS, hash_bytes, hash_int64, partition_of
    from rfmx.kernels.rfm import (FIRST_ORDER, GROSS, N_ORDERS, new_aggregates, rfm_update_partitioned_bytes,
                                  rfm_update_partitioned_int64)

    m = len(customers)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=m, max_size=m), label="keep"), dtype=np.bool_)
    if data.draw(st.booleans(), label="no window"):
        keep = np.empty(0, dtype=np.bool_)
    kept = [i for i in range(m) if keep.shape[0] == 0 or keep[i]]
    t = (np.arange(m, dtype=np.int64) * 7919) % 1000
    amount = np.arange(1, m + 1, dtype=np.int64)
    no_oid = np.empty(0, np.int64)
    P = 1 << PARTITION_BITS
    table = np.zeros((P, 1024, 2), dtype=np.int64)
    n = np.zeros(P, dtype=np.int64)
    agg = new_aggregates((P, 512))
    hashes = np.empty(m, dtype=np.int64)
    counts = np.zeros(P, np.int64)
    if string_ids:
        keys = [f"customer-{c:04d}".encode() for c in customers]
        buf = np.frombuffer(b"".join(keys), dtype=np.uint8)
        offsets = np.cumsum([0] + [len(k) for k in keys]).astype(np.int64)
        hash_bytes(offsets, buf, PARTITION_BITS, hashes, counts, np.zeros(P, np.int64))
        key_offsets = np.zeros((P, 513), dtype=np.int64)
        key_data = np.zeros((P, 16384), dtype=np.uint8)
        rfm_update_partitioned_bytes(offsets, buf, hashes, t, amount, no_oid, keep, n_workers, PARTITION_BITS,
                                     group, table, key_offsets, key_data, n, np.zeros(P, np.int64), agg,
                                     np.empty(n_workers, np.int64))
        stored = [[key_data[p, key_offsets[p, c]:key_offsets[p, c + 1]].tobytes() for c in range(n[p])]
                  for p in range(P)]
    else:
        keys = [c * 1_000_003 for c in customers]
        ids = np.array(keys, dtype=np.int64)
        hash_int64(ids, PARTITION_BITS, hashes, counts)
        key_store = np.zeros((P, 512), dtype=np.int64)
        rfm_update_partitioned_int64(ids, hashes, t, amount, no_oid, keep, n_workers, PARTITION_BITS, group,
                                     table, key_store, n, agg, np.empty(n_workers, np.int64))
        stored = [[int(key_store[p, c]) for c in range(n[p])] for p in range(P)]
    # reference: per partition, customers in order of first appearance among kept lines
    want = [dict() for _ in range(P)]
    for i in kept:
        p = int(partition_of(hashes[i], PARTITION_BITS))
        row = want[p].setdefault(keys[i], [0, 0, 10**9])
        row[0] += 1
        row[1] += int(amount[i])
        row[2] = min(row[2], int(t[i]))
    for p in range(P):
        assert stored[p] == list(want[p])
        for c, (orders, gross, first) in enumerate(want[p].values()):
            assert (agg[p, c, N_ORDERS], agg[p, c, GROSS], agg[p, c, FIRST_ORDER]) == (orders, gross, first)


def test_kernel_cache_is_keyed_on_every_kernel_file():
    """A cached kernel is reused only while no file of rfmx.kernels changed: kernels inline
    helpers from other files, which Numba's own key (the kernel's file) would miss."""
    import hashlib
    from pathlib import Path

    import rfmx.kernels.rfm as rfm_kernels
    from rfmx.kernels import _policy

    digest = hashlib.sha256()
    for path in sorted(Path(rfm_kernels.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    stamp = rfm_kernels.rfm_update_partitioned_bytes._cache._impl.locator.get_source_stamp()
    assert stamp[1] == digest.hexdigest() == _policy._kernels_fingerprint()


def test_kernel_example_in_package_docstring():
    from rfmx.kernels.rfm import GROSS, N_ORDERS, N_REFUNDS, new_aggregates, rfm_update

    agg = new_aggregates(3)
    rfm_update(np.array([0, 2, 0]), np.array([10, 20, 30]), np.array([500, 250, -100]), np.empty(0, np.int64), agg)
    assert agg[:, N_ORDERS].tolist() == [1, 0, 1]
    assert agg[:, N_REFUNDS].tolist() == [1, 0, 0]
    assert agg[:, GROSS].tolist() == [500, 0, 250]


def test_result_columns_are_the_documented_ones():
    lines = {"kind": "int64", "customer": [1], "time_us": [T0], "amount_minor": [-100], "order_id": [1]}
    got = rfmx.aggregate(orders_table(lines))
    assert got.column_names == RESULT_COLUMNS
    # A refund-only customer: no order, null times, recency and average.
    row = result_rows(got)[1]
    assert row["n_orders"] == 0 and row["first_order"] is None and row["recency_days"] is None
    assert row["avg_order_value"] is None and row["monetary_minor"] == -100


@pytest.mark.parametrize("raw, arrow_type, row", [
    ([0, 10**12], pa.timestamp("s"), 1),               # year 33658: microseconds would still fit, no date does
    ([2**62, 0], pa.timestamp("ms", tz="UTC"), 0),     # would overflow int64 microseconds
    ([0, 0, -(10**7)], pa.date32(), 2),                # before year 1
    ([253_402_214_400_000], pa.date64(), 0),           # 9999-12-31: its next midnight is no date
])
def test_time_out_of_range_is_an_error(raw, arrow_type, row):
    n = len(raw)
    table = pa.table({"customer_id": list(range(n)), "order_time": pa.array(raw, arrow_type), "amount": [1] * n})
    with pytest.raises(RfmxError, match=rf"'order_time'.*at row {row} is outside the years 0001 to 9999"):
        rfmx.aggregate(table)


def test_latest_possible_time_is_accepted():
    table = pa.table({"customer_id": [1, 2], "amount": [1, 2],
                      "order_time": pa.array([dt.datetime(1, 1, 1), dt.datetime(9999, 12, 30, 23, 59, 59)])})
    got = rfmx.aggregate(table)
    assert got.schema.metadata[b"rfmx.as_of"] == b"9999-12-31T00:00:00"


# --- row numbers in error messages ---------------------------------------------------------------

def test_error_rows_count_from_the_start_of_the_source():
    """Across the batches of a list or an iterable, and after rows dropped for nulls."""
    times = [f"2024-03-{d:02d}" for d in range(1, 31)]
    times[22] = "2024-03-32"
    table = pa.table({"customer_id": list(range(30)), "order_time": times, "amount": [1.0] * 30})
    for source in (table.to_batches(max_chunksize=10), iter(table.to_batches(max_chunksize=10))):
        with pytest.raises(RfmxError, match=r"'2024-03-32' at row 22$"):
            rfmx.aggregate(source)
    holes = table.set_column(0, "customer_id", pa.array([None, 1, None] + list(range(3, 30))))
    with pytest.raises(RfmxError, match=r"'2024-03-32' at row 22$"):
        rfmx.aggregate(holes, on_null="skip", batch_size=25)
    money = table.set_column(2, "amount", pa.array([None] * 3 + [1.0] * 20 + [float("nan")] * 7))
    with pytest.raises(RfmxError, match=r"'amount'.*non-finite.*at row 23$"):
        rfmx.aggregate(money.set_column(1, "order_time", pa.array([T0] * 30, pa.timestamp("us"))), on_null="skip")


def test_error_rows_in_a_windowed_parquet_scan(tmp_path):
    """Row groups outside [since, as_of) are skipped, but rows keep their number in the file."""
    import pyarrow.parquet as pq

    n = 2000
    times = [T0 + i * 60_000_000 for i in range(n)]
    amounts = [1.0] * n
    amounts[1500] = amounts[1700] = None
    table = pa.table({"customer_id": [i % 50 for i in range(n)], "order_time": pa.array(times, pa.timestamp("us")),
                      "amount": amounts})
    pq.write_table(table, tmp_path / "o.parquet", row_group_size=100)
    with pytest.raises(RfmxError, match=r"o\.parquet: column 'amount' has 2 null value\(s\), first at row 1500;"):
        rfmx.aggregate(str(tmp_path / "o.parquet"), since=times[1000] + 1, batch_size=64)
    state = rfmx.build_state(str(tmp_path / "o.parquet"), since=times[1000] + 1, as_of=times[1800], on_null="skip")
    # Whole row groups before 1000 and from 1800 on were never read.
    assert state.rows_read == 900 and state.rows_null_skipped == 2
    want, _ = naive_rfm(table.column("customer_id").to_pylist(), times,
                        [None if a is None else amount_to_minor(a, 2) for a in amounts],
                        since_us=times[1000] + 1, as_of_us=times[1800])
    assert result_rows(state.finalize()) == want
