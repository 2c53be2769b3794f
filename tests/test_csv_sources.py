"""Inputs as users have them: exported CSV files, decimals of any scale, globs whose files
type their ids differently, and Python sources (Arrow datasets, polars LazyFrames, DuckDB).

Every case is checked against the same orders written to Parquet with exact types, and
every bad input against :func:`badinput.fails_cleanly` (one line, 0-based data row).
"""
from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from badinput import fails_cleanly, run_cli
from rfmx import RFMState, RfmxError
from rfmx.columns import ColumnMap, amount_minor
from rfmx.sources import iter_batches

T0 = dt.datetime(2024, 1, 1)
# Rows before the first unusual value: more than one of Arrow's 1 MB CSV blocks, so a
# type guessed from the first block would meet the unusual value half-way through.
FIRST_BLOCK = 40_000


def _orders(n: int = FIRST_BLOCK + 2000, seed: int = 0) -> dict:
    """Python lists of one order history: ids, naive times, amounts (Decimal cents), order ids."""
    rng = np.random.default_rng(seed)
    customers = rng.integers(0, 300, n).tolist()
    times = [T0 + dt.timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 200 * 86_400, n))]
    cents = rng.integers(-500, 20_000, n)
    amounts = [Decimal(int(c)).scaleb(-2) for c in cents]
    return {"customer_id": customers, "order_time": times, "amount": amounts,
            "order_id": list(range(n))}


def _write_csv(path, header, rows) -> None:
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        f.writelines(",".join(map(str, row)) + "\n" for row in rows)


def _parquet(tmp_path, columns: dict, name="orders.parquet") -> str:
    """The same orders with exact Arrow types: the reference every CSV must match."""
    types = {"customer_id": pa.int64() if isinstance(columns["customer_id"][0], int) else pa.string(),
             "order_time": pa.timestamp("us", tz=columns.get("tz")), "amount": pa.decimal128(18, 2),
             "order_id": pa.int64() if isinstance(columns["order_id"][0], int) else pa.string()}
    table = pa.table({k: pa.array(columns[k], types[k]) for k in types})
    path = tmp_path / name
    pq.write_table(table, path)
    return str(path)


def _by_customer(table: pa.Table) -> pa.Table:
    return table.sort_by("customer_id")


def _same_through_api_and_cli(tmp_path, csv_path, parquet_path, *options, **api) -> pa.Table:
    """Aggregate the CSV through the API and the CLI; both must equal the Parquet result."""
    want = _by_customer(rfmx.aggregate(parquet_path, **api))
    got = _by_customer(rfmx.aggregate(str(csv_path), **api))
    assert got.equals(want), (got.slice(0, 3).to_pylist(), want.slice(0, 3).to_pylist())
    out = tmp_path / "cli.parquet"
    result = run_cli("aggregate", csv_path, "-o", out, *options)
    assert result.exit_code == 0, (result.output, result.stderr)
    assert _by_customer(pq.read_table(out)).equals(want)
    return got


def _rows(o: dict, time_text=None, amount_text=None, id_text=None):
    for i in range(len(o["customer_id"])):
        t = o["order_time"][i]
        yield ((id_text or str)(o["customer_id"][i]),
               time_text(i, t) if time_text else t.isoformat(sep=" "),
               amount_text(i, o["amount"][i]) if amount_text else o["amount"][i],
               o["order_id"][i])


HEADER = ["customer_id", "order_time", "amount", "order_id"]


# --- CSV as exported ---------------------------------------------------------------------

def test_fractional_amounts_after_whole_ones(tmp_path):
    o = _orders()
    whole = {i for i in range(FIRST_BLOCK)}
    # the first block has whole amounts only (12), later rows cents (12.50)
    o["amount"] = [a.to_integral_value() if i in whole else a for i, a in enumerate(o["amount"])]
    _write_csv(tmp_path / "o.csv", HEADER,
               _rows(o, amount_text=lambda i, a: str(int(a)) if i in whole else f"{a:.2f}"))
    got = _same_through_api_and_cli(tmp_path, tmp_path / "o.csv", _parquet(tmp_path, o),
                                    "--order-id", "order_id", order_id="order_id")
    assert got.num_rows > 0


def test_string_customer_ids_after_numeric_ones(tmp_path):
    o = _orders()
    o["customer_id"] = [str(c) if i < FIRST_BLOCK else f"C-{c:04d}" for i, c in enumerate(o["customer_id"])]
    _write_csv(tmp_path / "o.csv", HEADER, _rows(o))
    got = _same_through_api_and_cli(tmp_path, tmp_path / "o.csv", _parquet(tmp_path, o))
    assert got.schema.field("customer_id").type == pa.string()
    assert "C-0042" in got.column("customer_id").to_pylist()


def test_offsets_and_fractional_seconds_after_plain_times(tmp_path):
    o = _orders()

    def text(i, t):
        if i < FIRST_BLOCK:
            return t.isoformat(sep=" ")
        # the same instant, written with an offset and fractional seconds
        return (t + dt.timedelta(hours=2)).isoformat(timespec="microseconds") + "+02:00"

    _write_csv(tmp_path / "o.csv", HEADER, _rows(o, time_text=text))
    o["tz"] = "UTC"
    got = _same_through_api_and_cli(tmp_path, tmp_path / "o.csv", _parquet(tmp_path, o))
    assert got.schema.field("first_order").type == pa.timestamp("us", tz="UTC")


def test_every_iso_time_form_parses_mixed_in_one_column(tmp_path):
    forms = {  # text -> UTC microseconds since 1970 (naive values taken as they are)
        "2024-03-01": dt.datetime(2024, 3, 1),
        "2024-03-01 10:00:00": dt.datetime(2024, 3, 1, 10),
        "2024-03-01T10:00:00": dt.datetime(2024, 3, 1, 10),
        "2024-03-01T10:00:00.25": dt.datetime(2024, 3, 1, 10, 0, 0, 250_000),
        "2024-03-01 10:00:00.123456": dt.datetime(2024, 3, 1, 10, 0, 0, 123_456),
        "2024-03-01T10:00:00.123456789": dt.datetime(2024, 3, 1, 10, 0, 0, 123_456),
        "2024-03-01T10:00:00Z": dt.datetime(2024, 3, 1, 10),
        "2024-03-01T10:00:00+02:00": dt.datetime(2024, 3, 1, 8),
        "2024-03-01T10:00:00+0200": dt.datetime(2024, 3, 1, 8),
        "2024-03-01 10:00:00.5-05:00": dt.datetime(2024, 3, 1, 15, 0, 0, 500_000),
    }
    texts = list(forms)
    _write_csv(tmp_path / "t.csv", HEADER[:3], [(i, t, "1") for i, t in enumerate(texts)])
    got = rfmx.aggregate(str(tmp_path / "t.csv"), as_of="2024-04-01").sort_by("customer_id")
    assert got.column("first_order").cast(pa.int64()).to_pylist() == [
        (forms[t] - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1) for t in texts]


def test_leading_zeros_and_na_stay_distinct_string_ids(tmp_path):
    _write_csv(tmp_path / "o.csv", HEADER[:3], [("7", "2024-01-01", "1"), ("007", "2024-01-02", "2"),
                                                ("NA", "2024-01-03", "3"), ("7", "2024-01-04", "4")])
    got = rfmx.aggregate(str(tmp_path / "o.csv"))
    assert dict(zip(got.column("customer_id").to_pylist(), got.column("n_orders").to_pylist())) == \
        {"7": 2, "007": 1, "NA": 1}


def test_customer_type_int_and_string(tmp_path):
    # told they are integers, 007 is customer 7
    _write_csv(tmp_path / "o.csv", HEADER[:3], [("7", "2024-01-01", "1"), ("007", "2024-01-02", "2")])
    as_int = rfmx.aggregate(str(tmp_path / "o.csv"), customer_type="int")
    assert as_int.column("customer_id").to_pylist() == [7] and as_int.column("n_orders").to_pylist() == [2]
    _write_csv(tmp_path / "n.csv", HEADER[:3], [("7", "2024-01-01", "1"), ("8", "2024-01-02", "2")])
    assert rfmx.aggregate(str(tmp_path / "n.csv")).schema.field("customer_id").type == pa.int64()
    as_str = rfmx.aggregate(str(tmp_path / "n.csv"), customer_type="string")
    assert sorted(as_str.column("customer_id").to_pylist()) == ["7", "8"]
    result = run_cli("aggregate", tmp_path / "n.csv", "-o", tmp_path / "r.parquet", "--customer-type", "string")
    assert result.exit_code == 0, result.stderr
    assert pq.read_table(tmp_path / "r.parquet").schema.field("customer_id").type == pa.string()


def test_order_ids_are_integers_unless_a_value_is_not(tmp_path):
    rows = [("1", "2024-01-01", "1", "10"), ("1", "2024-01-01", "2", "10"), ("1", "2024-01-02", "3", "11")]
    _write_csv(tmp_path / "i.csv", HEADER, rows)
    _write_csv(tmp_path / "s.csv", HEADER, rows[:2] + [("1", "2024-01-02", "3", "A-11")])
    for name in ("i.csv", "s.csv"):
        got = rfmx.aggregate(str(tmp_path / name), order_id="order_id")
        assert got.column("n_orders").to_pylist() == [2]
    # an integer order id in CSV is the same order label as in Parquet: states merge across them
    state = rfmx.build_state(str(tmp_path / "i.csv"), order_id="order_id")
    assert state.to_table().column("last_order_id").to_pylist() == [11]


def test_empty_fields_are_nulls(tmp_path):
    _write_csv(tmp_path / "o.csv", HEADER[:3], [("1", "2024-01-01", "1"), ("", "2024-01-02", "2"),
                                                ("2", "2024-01-03", ""), ("3", "2024-01-04", "5")])
    fails_cleanly(["aggregate", tmp_path / "o.csv", "-o", tmp_path / "r.parquet"],
                  r"o\.csv: column 'customer_id' has 1 null value\(s\), first at row 1", tmp_path)
    result = run_cli("aggregate", tmp_path / "o.csv", "-o", tmp_path / "r.parquet", "--on-null", "skip")
    assert result.exit_code == 0 and "2 rows with nulls skipped" in result.stderr
    assert sorted(pq.read_table(tmp_path / "r.parquet").column("customer_id").to_pylist()) == [1, 3]


def test_only_mapped_columns_are_read(tmp_path):
    # a free-text column that no explicit type could hold (and whose quoting is fine)
    _write_csv(tmp_path / "o.csv", HEADER[:3] + ["note"],
               [("1", "2024-01-01", "1.50", "x"), ("1", "2024-01-02", "2", "12:30 or 1.5 or maybe")])
    got = rfmx.aggregate(str(tmp_path / "o.csv"))
    assert got.column("monetary_minor").to_pylist() == [350]


def test_header_only_csv_in_a_glob_of_string_ids(tmp_path):
    _write_csv(tmp_path / "a.csv", HEADER[:3], [])
    _write_csv(tmp_path / "b.csv", HEADER[:3], [("C-1", "2024-01-01", "1")])
    got = rfmx.aggregate(str(tmp_path / "*.csv"))
    assert got.column("customer_id").to_pylist() == ["C-1"]
    empty = rfmx.aggregate(str(tmp_path / "a.csv"))
    assert empty.num_rows == 0


# --- CSV errors: one line, 0-based data rows ---------------------------------------------

@pytest.mark.parametrize("rows, options, pattern", [
    ([("1", "2024-01-01", "1"), ("2", "2024-01-02", "2", "9"), ("3", "2024-01-03", "3")], [],
     r"o\.csv: cannot read as CSV at row 1: CSV parse error: Expected 3 columns, got 4"),
    ([("1", "2024-01-01", "1"), ("2", "2024-01-02", "2"), ('"3', "2024-01-03", "3")], [],
     r"o\.csv: cannot read as CSV at row 2: CSV parse error: Expected 3 columns, got 1"),
    ([("1", "2024-01-01", "1"), ("C-2", "2024-01-02", "2")], ["--customer-type", "int"],
     r"o\.csv: cannot read as CSV at row 1: column 'customer_id': CSV conversion error to int64: invalid value 'C-2'"),
    ([("1", "2024-01-01", "1"), ("2", "2024-01-02", "1,5")], ["--delimiter", ";"],
     r"o\.csv: column 'customer_id' not found; columns are: customer_id,order_time,amount"),
    ([("1", "2024-01-01", "1"), ("2", "2024-01-02", "$5")], [],
     r"o\.csv: column 'amount' \(amount\) has an unparseable amount '\$5' at row 1"),
    ([("1", "2024-01-01", "1"), ("2", "yesterday", "5")], [],
     r"o\.csv: column 'order_time' \(order time\) has an unparseable time 'yesterday' at row 1"),
    ([("1", "2024-01-01", "1"), ("2", "2024-01-02", "5.125")], [],
     r"o\.csv: column 'amount' \(amount\) value 5\.125 at row 1 has 3 decimals but amounts are kept with 2; "
     r"pass round='half-even' or 'half-up' \(--round half-even\|half-up\) to round it, or amount_scale=3 "
     r"\(--amount-scale 3\)$"),
    ([("1", "2024-01-01", "0." + "0" * 20 + "1")], [],
     r"value 0\.0+1 at row 0 has 21 decimals but amounts are kept with 2; pass round=.*to round it$"),
])
def test_csv_errors_name_file_and_row(tmp_path, rows, options, pattern):
    _write_csv(tmp_path / "o.csv", HEADER[:3], rows)
    fails_cleanly(["aggregate", tmp_path / "o.csv", "-o", tmp_path / "r.parquet", *options], pattern, tmp_path)
    api = {"--customer-type": "customer_type", "--delimiter": "delimiter"}
    with pytest.raises(RfmxError, match=pattern):
        rfmx.aggregate(str(tmp_path / "o.csv"), **{api[k]: v for k, v in zip(options[::2], options[1::2])})


def test_csv_error_row_far_into_a_big_file(tmp_path):
    rows = [(str(i % 50), "2024-01-01", "1") for i in range(150_000)]
    rows[123_456] = ("7", "2024-01-01", "1", "x")
    _write_csv(tmp_path / "o.csv", HEADER[:3], rows)
    fails_cleanly(["aggregate", tmp_path / "o.csv", "-o", tmp_path / "r.parquet"],
                  r"o\.csv: cannot read as CSV at row 123456: CSV parse error", tmp_path)


# --- decimals of any scale -----------------------------------------------------------------

DECIMAL_TYPES = [pa.decimal32(9, 4), pa.decimal64(18, 4), pa.decimal128(38, 4), pa.decimal256(76, 4)]


def _decimal_table(values, arrow_type) -> pa.Table:
    n = len(values)
    return pa.table({"customer_id": pa.array(range(n), pa.int64()),
                     "order_time": pa.array([T0] * n, pa.timestamp("us")),
                     "amount": pa.array([Decimal(v) for v in values], arrow_type)})


@pytest.mark.parametrize("arrow_type", DECIMAL_TYPES, ids=str)
def test_decimals_beyond_the_scale_with_zero_digits_are_exact(tmp_path, arrow_type):
    table = _decimal_table(["12.3400", "-0.5000", "99999.9900"], arrow_type)
    got = rfmx.aggregate(table).sort_by("customer_id")
    assert got.column("monetary_minor").to_pylist() == [1234, -50, 9999999]
    pq.write_table(table, tmp_path / "d.parquet")
    assert rfmx.aggregate(str(tmp_path / "d.parquet")).sort_by("customer_id").equals(got)


@pytest.mark.parametrize("arrow_type", DECIMAL_TYPES, ids=str)
def test_decimals_with_digits_beyond_the_scale_are_refused_or_rounded(tmp_path, arrow_type):
    values = ["1.0050", "-1.0050", "2.0150", "9.9950", "3.1200", "-2.0049"]
    table = _decimal_table(values, arrow_type)
    pq.write_table(table, tmp_path / "d.parquet")
    fails_cleanly(["aggregate", tmp_path / "d.parquet", "-o", tmp_path / "r.parquet"],
                  r"d\.parquet: column 'amount' \(amount\) value 1\.0050 at row 0 has 3 decimals", tmp_path)
    for mode, reference in (("half-even", decimal.ROUND_HALF_EVEN), ("half-up", decimal.ROUND_HALF_UP)):
        want = [int(Decimal(v).scaleb(2).to_integral_value(rounding=reference)) for v in values]
        state = rfmx.build_state(table, round=mode)
        assert state.amounts_rounded == 5
        assert state.finalize().sort_by("customer_id").column("monetary_minor").to_pylist() == want
        result = run_cli("aggregate", tmp_path / "d.parquet", "-o", tmp_path / f"{mode}.parquet", "--round", mode)
        assert result.exit_code == 0, result.stderr
        assert "5 amounts rounded to 2 decimals" in result.stderr
        assert pq.read_table(tmp_path / f"{mode}.parquet").sort_by("customer_id") \
            .column("monetary_minor").to_pylist() == want


def test_rounding_in_csv_counts_like_decimals(tmp_path):
    _write_csv(tmp_path / "o.csv", HEADER[:3], [("1", "2024-01-01", "0.125"), ("1", "2024-01-02", "0.135"),
                                                ("2", "2024-01-03", "-0.125"), ("2", "2024-01-04", "1.10")])
    even = rfmx.build_state(str(tmp_path / "o.csv"), round="half-even")
    up = rfmx.build_state(str(tmp_path / "o.csv"), round="half-up")
    assert (even.amounts_rounded, up.amounts_rounded) == (3, 3)
    assert even.finalize().sort_by("customer_id").column("monetary_minor").to_pylist() == [12 + 14, -12 + 110]
    assert up.finalize().sort_by("customer_id").column("monetary_minor").to_pylist() == [13 + 14, -13 + 110]


def test_rounded_count_is_merged_saved_and_optional_in_old_states(tmp_path):
    import json

    a = rfmx.build_state(_decimal_table(["1.0050", "2.0000"], pa.decimal128(10, 4)), round="half-up")
    b = rfmx.build_state(_decimal_table(["1.0051"], pa.decimal128(10, 4)), round="half-up")
    a.merge(b)
    assert a.amounts_rounded == 2
    a.save(tmp_path / "s.arrow")
    assert RFMState.load(tmp_path / "s.arrow").amounts_rounded == 2
    table = a.to_table()
    meta = json.loads(table.schema.metadata[b"rfmx.state"])
    del meta["amounts_rounded"]  # a state saved before the count was kept
    with pa.OSFile(str(tmp_path / "old.arrow"), "wb") as sink, \
            pa.ipc.new_file(sink, table.schema.with_metadata({"rfmx.state": json.dumps(meta)})) as w:
        w.write_table(table.replace_schema_metadata({"rfmx.state": json.dumps(meta)}))
    old = RFMState.load(tmp_path / "old.arrow")
    assert old.amounts_rounded == 0 and old.finalize().equals(a.finalize())


def test_amount_scale_up_to_18(tmp_path):
    table = _decimal_table(["1.000000000000000001", "-2.5"], pa.decimal128(38, 18))
    got = rfmx.aggregate(table, amount_scale=18).sort_by("customer_id")
    assert got.column("monetary_minor").to_pylist() == [10**18 + 1, -25 * 10**17]
    with pytest.raises(RfmxError, match="amount_scale must be between 0 and 18, got 19"):
        rfmx.aggregate(table, amount_scale=19)
    pq.write_table(table, tmp_path / "d.parquet")
    result = run_cli("aggregate", tmp_path / "d.parquet", "-o", tmp_path / "r.parquet", "--amount-scale", 19)
    assert result.exit_code == 2 and "0<=x<=18" in result.stderr
    # a value needing more decimals than any scale allows suggests rounding only
    fails_cleanly(["aggregate", tmp_path / "d.parquet", "-o", tmp_path / "r.parquet"],
                  r"value 1\.000000000000000001 at row 0 has 18 decimals.*amount_scale=18 \(--amount-scale 18\)$",
                  tmp_path)
    wide = _decimal_table(["1.0000000000000000000001"], pa.decimal128(38, 22))
    with pytest.raises(RfmxError, match=r"has 22 decimals but amounts are kept with 18; pass round=[^;]*to round it$"):
        rfmx.aggregate(wide, amount_scale=18)


_SCALES = st.integers(0, 18)


@st.composite
def _decimal_strings(draw):
    digits = draw(st.integers(1, 30))
    point = draw(st.integers(0, digits))
    body = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits)))
    text = body[:point] + "." + body[point:] if point < digits else body
    return draw(st.sampled_from(["", "-", "+"])) + (text if not text.startswith(".") else "0" + text)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_decimal_strings(), min_size=1, max_size=20), scale=_SCALES,
       rounding=st.sampled_from([None, "half-even", "half-up"]))
def test_minor_units_equal_python_decimal_quantize(values, scale, rounding):
    modes = {"half-even": decimal.ROUND_HALF_EVEN, "half-up": decimal.ROUND_HALF_UP}
    ctx = decimal.Context(prec=100)
    want, n_rounded, refused = [], 0, False
    for v in values:
        d = ctx.create_decimal(v)
        q = d.quantize(Decimal(1).scaleb(-scale), rounding=modes.get(rounding, decimal.ROUND_HALF_EVEN), context=ctx)
        if q != d:
            n_rounded += 1
            refused = refused or rounding is None
        want.append(int(q.scaleb(scale, context=ctx)))
    overflow = any(not -(2**63) <= w < 2**63 for w in want)
    arrays = [pa.array(values)]
    if all(len(v.lstrip("+-").replace(".", "")) <= 38 for v in values):
        s = max(len(v.partition(".")[2]) for v in values)
        if all(len(v.lstrip("+-").partition(".")[0]) + s <= 38 for v in values):
            arrays.append(pa.array([Decimal(v) for v in values], pa.decimal128(38, s)))
    for arr in arrays:
        if refused or overflow:
            with pytest.raises(RfmxError, match="decimals but amounts are kept|overflows int64"):
                amount_minor(arr, scale, "x", "amount", 0, rounding=rounding)
            continue
        got, rounded = amount_minor(arr, scale, "x", "amount", 0, rounding=rounding)
        assert got.tolist() == want and rounded == n_rounded


# --- globs whose files type their ids differently -----------------------------------------

def _id_file(path, ids, arrow_type):
    n = len(ids)
    table = pa.table({"customer_id": pa.array(ids, arrow_type),
                      "order_time": pa.array([T0 + dt.timedelta(days=i) for i in range(n)], pa.timestamp("us")),
                      "amount": pa.array([1.0] * n)})
    if str(path).endswith(".parquet"):
        pq.write_table(table, path)
    else:
        feather.write_feather(table, str(path))


@pytest.mark.parametrize("suffix", ["parquet", "arrow"])
def test_each_file_keeps_its_own_integer_id_type(tmp_path, suffix):
    _id_file(tmp_path / f"a.{suffix}", [1, -1], pa.int32())
    _id_file(tmp_path / f"b.{suffix}", [2**40, -1], pa.int64())
    _id_file(tmp_path / f"c.{suffix}", [2**64 - 1], pa.uint64())
    seen = [(where.rsplit("/", 1)[-1], b.schema.field("customer_id").type, b.column("customer_id").to_pylist())
            for where, _, b in iter_batches(str(tmp_path / f"*.{suffix}"), ColumnMap()) if b.num_rows]
    assert seen == [(f"a.{suffix}", pa.int32(), [1, -1]), (f"b.{suffix}", pa.int64(), [2**40, -1]),
                    (f"c.{suffix}", pa.uint64(), [2**64 - 1])]
    listed = list(iter_batches([str(tmp_path / f"c.{suffix}"), str(tmp_path / f"a.{suffix}")], ColumnMap()))
    assert [b.schema.field("customer_id").type for _, _, b in listed] == [pa.uint64(), pa.int32()]


def test_string_and_integer_ids_across_files_fail_before_the_scan(tmp_path):
    _id_file(tmp_path / "a.parquet", [1, 2], pa.int64())
    _id_file(tmp_path / "b.parquet", ["x"], pa.string())
    pattern = (r"b\.parquet: column 'customer_id' \(customer id\) has type string but .*a\.parquet has int64; "
               r"one input's ids must be all integers or all strings$")
    batches = iter_batches(str(tmp_path / "*.parquet"), ColumnMap())
    with pytest.raises(RfmxError, match=pattern):
        next(batches)  # not one batch of a.parquet was read first
    fails_cleanly(["aggregate", tmp_path / "*.parquet", "-o", tmp_path / "r.arrow"], pattern, tmp_path)
    # across a list of sources, and between CSV files (with the way out)
    _write_csv(tmp_path / "n.csv", HEADER[:3], [("1", "2024-01-01", "1")])
    _write_csv(tmp_path / "s.csv", HEADER[:3], [("C-1", "2024-01-01", "1")])
    with pytest.raises(RfmxError, match=r"s\.csv: .* has type string but .*n\.csv has int64; .*"
                                        r"customer_type='string' \(--customer-type string\)"):
        next(iter_batches([str(tmp_path / "n.csv"), str(tmp_path / "s.csv")], ColumnMap()))
    both = rfmx.aggregate([str(tmp_path / "n.csv"), str(tmp_path / "s.csv")], customer_type="string")
    assert sorted(both.column("customer_id").to_pylist()) == ["1", "C-1"]


# --- Python sources ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parquet_orders(tmp_path_factory):
    """A Parquet history in two files, and its aggregate: what every Python source must give."""
    root = tmp_path_factory.mktemp("py_sources")
    o = _orders(20_000, seed=4)
    table = pa.table({"customer_id": pa.array(o["customer_id"], pa.int64()),
                      "order_time": pa.array(o["order_time"], pa.timestamp("us")),
                      "amount": pa.array(o["amount"], pa.decimal128(18, 2)),
                      "order_id": pa.array(o["order_id"], pa.int64()),
                      "note": pa.array(["unmapped"] * len(o["amount"]))})
    pq.write_table(table.slice(0, 12_000), root / "part-0.parquet", row_group_size=3000)
    pq.write_table(table.slice(12_000), root / "part-1.parquet", row_group_size=3000)
    want = _by_customer(rfmx.aggregate(str(root / "*.parquet"), order_id="order_id"))
    return root, table, want


def test_arrow_dataset_source(parquet_orders):
    root, table, want = parquet_orders
    dataset = ds.dataset(str(root), format="parquet")
    assert _by_customer(rfmx.aggregate(dataset, order_id="order_id", batch_size=1000)).equals(want)
    assert _by_customer(rfmx.aggregate(ds.dataset(table), order_id="order_id")).equals(want)
    # rows are numbered per file: a bad value in the second file names it and its own row
    bad = table.slice(12_000).set_column(2, "amount", pa.array([Decimal("1.005")] * 8000, pa.decimal128(18, 3)))
    pq.write_table(bad, root / "bad.parquet")
    with pytest.raises(RfmxError, match=r"bad\.parquet: column 'amount' \(amount\) value 1\.005 at row 0"):
        rfmx.aggregate(ds.dataset([str(root / "part-0.parquet"), str(root / "bad.parquet")], format="parquet"))
    (root / "bad.parquet").unlink()


def test_polars_lazyframe_is_streamed(parquet_orders, monkeypatch):
    pl = pytest.importorskip("polars")
    root, _, want = parquet_orders
    lazy = pl.scan_parquet(str(root / "*.parquet"))

    def no_collect(*args, **kwargs):
        raise AssertionError("the LazyFrame was collected whole")

    monkeypatch.setattr(pl.LazyFrame, "collect", no_collect)
    batches = list(iter_batches(lazy, ColumnMap(order_id="order_id"), batch_size=5000))
    assert len(batches) > 1 and batches[0][2].schema.names == ["customer_id", "order_time", "amount", "order_id"]
    got = rfmx.aggregate(lazy, order_id="order_id", batch_size=5000)
    assert _by_customer(got).equals(want)
    with pytest.raises(RfmxError, match=r"<LazyFrame>: column 'cust' not found; columns are: customer_id"):
        rfmx.aggregate(lazy, customer="cust")


def test_duckdb_relation_and_connection(parquet_orders):
    duckdb = pytest.importorskip("duckdb")
    root, _, want = parquet_orders
    con = duckdb.connect()
    query = f"select * from read_parquet('{root}/*.parquet') order by order_id"
    relation = con.sql(query)
    batches = list(iter_batches(relation, ColumnMap(order_id="order_id"), batch_size=4096))
    assert len(batches) > 1 and batches[0][2].schema.names == ["customer_id", "order_time", "amount", "order_id"]
    assert _by_customer(rfmx.aggregate(con.sql(query), order_id="order_id")).equals(want)
    con.execute(query)
    assert _by_customer(rfmx.aggregate(con, order_id="order_id")).equals(want)
    with pytest.raises(RfmxError, match=r"<DuckDBPyRelation>: column 'cust' not found"):
        rfmx.aggregate(con.sql(query), customer="cust")


def test_optional_libraries_are_not_imported_by_rfmx():
    code = ("import sys, rfmx, rfmx.api, rfmx.sources, rfmx.columns; "
            "print(sorted(m for m in ('polars', 'duckdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("customer_type", ["auto", "int"])
def test_csv_missing_column_lists_the_header(tmp_path, customer_type):
    _write_csv(tmp_path / "o.csv", ["customer_id", "order_time", "total"], [("1", "2024-01-01", "3")])
    fails_cleanly(["aggregate", tmp_path / "o.csv", "-o", tmp_path / "r.parquet", "--customer-type", customer_type],
                  r"o\.csv: column 'amount' not found; columns are: customer_id, order_time, total$", tmp_path)
