"""``rfmx generate`` and ``rfmx aggregate`` through click's CliRunner, and every bad input of
issue 2: each fails with a one-line message, exit code 1 and no file left behind."""
from __future__ import annotations

import decimal
import json
import os
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import rfmx
from naive import RESULT_COLUMNS, amount_to_minor, naive_rfm, result_rows, timestamp_to_us
from rfmx.cli.main import main


def rfmx_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def fails(result, pattern: str):
    """Exit code 1, exactly one line on stderr, ``Error: ...`` matching ``pattern``, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.output
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def listing(path) -> list[str]:
    return sorted(os.listdir(path))


def read_any(path) -> pa.Table:
    path = str(path)
    if path.endswith(".parquet"):
        return pq.read_table(path)
    if path.endswith(".csv"):
        return pcsv.read_csv(path)
    return feather.read_table(path)


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """A small generated history: 4000 lines, ~150 customers, multi-line orders, refunds."""
    root = tmp_path_factory.mktemp("orders")
    ok(rfmx_cli("generate", root / "orders.parquet", "--rows", 4000, "--customers", 150, "--seed", 5,
                "--no-progress"))
    return root / "orders.parquet"


def naive_of(table: pa.Table, *, order_ids=True, since_us=None, as_of_us=None):
    times = [timestamp_to_us(v, "us") for v in table.column("order_time").cast(pa.int64()).to_pylist()]
    money = [None if v is None else amount_to_minor(v, 2) for v in table.column("amount").to_pylist()]
    rows, _ = naive_rfm(table.column("customer_id").to_pylist(), times, money,
                        table.column("order_id").to_pylist() if order_ids else None,
                        since_us=since_us, as_of_us=as_of_us)
    return rows


# --- rfmx generate ------------------------------------------------------------------------------

def test_generate_is_deterministic_and_realistic(tmp_path):
    ok(rfmx_cli("generate", tmp_path / "a.parquet", "--rows", 3000, "--seed", 1, "--no-progress"))
    ok(rfmx_cli("generate", tmp_path / "b.parquet", "--rows", 3000, "--seed", 1, "--no-progress"))
    ok(rfmx_cli("generate", tmp_path / "c.parquet", "--rows", 3000, "--seed", 2, "--no-progress"))
    a, b, c = (pq.read_table(tmp_path / f"{x}.parquet") for x in "abc")
    assert a.equals(b) and not a.equals(c)
    assert a.num_rows == 3000
    assert a.column_names == ["customer_id", "order_id", "order_time", "amount"]
    assert a.schema.field("customer_id").type == pa.int64()
    assert a.schema.field("order_time").type == pa.timestamp("us")
    amounts = a.column("amount").to_pylist()
    assert any(x < 0 for x in amounts) and sum(x > 0 for x in amounts) > 2900  # some refunds
    oids = a.column("order_id").to_pylist()
    assert len(set(oids)) < len(oids)  # multi-line orders
    per_customer = a.group_by("customer_id").aggregate([("order_id", "count_distinct")])
    counts = sorted(per_customer.column(1).to_pylist())
    assert counts[0] >= 1 and counts[-1] >= 5 * counts[len(counts) // 2]  # a heavy tail
    assert listing(tmp_path) == ["a.parquet", "b.parquet", "c.parquet"]


@pytest.mark.parametrize("suffix", [".csv", ".arrow", ".feather"])
def test_generate_other_formats_string_ids_and_decimals(tmp_path, suffix):
    out = tmp_path / f"o{suffix}"
    ok(rfmx_cli("generate", out, "--rows", 500, "--string-ids", "--decimal-amounts", "--no-progress"))
    table = read_any(out)
    assert table.num_rows == 500
    assert all(str(x).startswith("cus-") for x in table.column("customer_id").to_pylist())
    if suffix != ".csv":
        assert table.schema.field("amount").type == pa.decimal128(12, 2)
    ok(rfmx_cli("aggregate", out, "-o", tmp_path / "r.parquet", "--order-id", "order_id"))


def test_generate_several_files_is_one_history(tmp_path):
    ok(rfmx_cli("generate", tmp_path / "one.parquet", "--rows", 2000, "--seed", 4, "--no-progress"))
    ok(rfmx_cli("generate", tmp_path / "parts", "--rows", 2000, "--seed", 4, "--files", 3, "--no-progress"))
    assert listing(tmp_path / "parts") == [f"part-0000{i}.parquet" for i in range(3)]
    one = pq.read_table(tmp_path / "one.parquet")
    parts = pa.concat_tables([pq.read_table(tmp_path / "parts" / f"part-0000{i}.parquet") for i in range(3)])
    assert parts.equals(one)


def test_generate_bad_suffix_leaves_nothing(tmp_path):
    fails(rfmx_cli("generate", tmp_path / "o.json", "--rows", 10), r"o\.json: unknown output format '\.json'")
    assert listing(tmp_path) == []


# --- rfmx aggregate: results ----------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".arrow", ".feather"])
def test_aggregate_every_output_format(orders, tmp_path, suffix):
    out = tmp_path / f"rfm{suffix}"
    result = ok(rfmx_cli("aggregate", orders, "-o", out, "--order-id", "order_id"))
    assert re.search(r"rfmx: 4,000 rows read, \d+ customers", result.stderr)
    assert listing(tmp_path) == [out.name]
    got = read_any(out)
    assert got.column_names == RESULT_COLUMNS
    want = naive_of(pq.read_table(orders))
    if suffix == ".csv":
        ids = got.column("customer_id").to_pylist()
        assert sorted(ids) == sorted(want)
        for name in ("n_orders", "n_refunds", "monetary_minor", "recency_days", "tenure_days"):
            assert dict(zip(ids, got.column(name).to_pylist())) == {k: v[name] for k, v in want.items()}, name
    else:
        assert result_rows(got) == want
        assert got.schema.metadata[b"rfmx.customer_column"] == b"customer_id"


def test_aggregate_threads_and_batch_size_give_identical_files(orders, tmp_path):
    ok(rfmx_cli("aggregate", orders, "-o", tmp_path / "a.arrow", "--threads", 1, "--batch-size", 7,
                "--order-id", "order_id"))
    ok(rfmx_cli("aggregate", orders, "-o", tmp_path / "b.arrow", "--threads", 2, "--batch-size", 1000,
                "--order-id", "order_id"))
    assert feather.read_table(tmp_path / "a.arrow").equals(feather.read_table(tmp_path / "b.arrow"))


def test_aggregate_as_of_and_since(orders, tmp_path):
    table = pq.read_table(orders)
    ok(rfmx_cli("aggregate", orders, "-o", tmp_path / "w.parquet", "--order-id", "order_id",
                "--since", "2024-06-01", "--as-of", "2025-01-01T12:00:00"))
    got = pq.read_table(tmp_path / "w.parquet")
    since, as_of = rfmx.state.to_us("2024-06-01"), rfmx.state.to_us("2025-01-01T12:00:00")
    assert result_rows(got) == naive_of(table, since_us=since, as_of_us=as_of)
    assert got.schema.metadata[b"rfmx.as_of"] == b"2025-01-01T12:00:00"


@pytest.mark.parametrize("as_of", [None, "2025-03-01"])
def test_state_out_then_state_in_equals_one_pass(orders, tmp_path, as_of):
    table = pq.read_table(orders)
    pq.write_table(table.slice(0, 2500), tmp_path / "old.parquet")
    pq.write_table(table.slice(2500, 1000), tmp_path / "new1.parquet")
    pq.write_table(table.slice(3500), tmp_path / "new2.parquet")
    window = ["--as-of", as_of] if as_of else []
    ok(rfmx_cli("aggregate", tmp_path / "old.parquet", "--state-out", tmp_path / "month.arrow",
                "--order-id", "order_id", *window))
    ok(rfmx_cli("aggregate", tmp_path / "new1.parquet", tmp_path / "new2.parquet", "--state-in",
                tmp_path / "month.arrow", "--state-out", tmp_path / "month2.arrow", "-o", tmp_path / "inc.parquet",
                "--order-id", "order_id"))
    ok(rfmx_cli("aggregate", orders, "-o", tmp_path / "one.parquet", "--order-id", "order_id", *window))
    inc, one = pq.read_table(tmp_path / "inc.parquet"), pq.read_table(tmp_path / "one.parquet")
    assert result_rows(inc) == result_rows(one)
    assert inc.schema.metadata == one.schema.metadata
    # The saved state alone gives the same answer again.
    ok(rfmx_cli("aggregate", "--state-in", tmp_path / "month2.arrow", "-o", tmp_path / "again.parquet",
                "--order-id", "order_id"))
    assert result_rows(pq.read_table(tmp_path / "again.parquet")) == result_rows(one)


def test_aggregate_directory_glob_and_csv_sources(orders, tmp_path):
    table = pq.read_table(orders)
    (tmp_path / "d").mkdir()
    for i in range(3):
        pq.write_table(table.slice(i * 1500, 1500), tmp_path / "d" / f"part-{i}.parquet")
    pcsv.write_csv(table, tmp_path / "orders.csv")
    with pa.CompressedOutputStream(str(tmp_path / "orders.csv.gz"), "gzip") as gz:
        pcsv.write_csv(table, gz)
    pcsv.write_csv(table, tmp_path / "semi.csv", pcsv.WriteOptions(delimiter=";"))
    want = naive_of(table)
    for source in (tmp_path / "d", str(tmp_path / "d" / "part-*.parquet"), tmp_path / "orders.csv",
                   tmp_path / "orders.csv.gz", tmp_path / "semi.csv"):
        out = tmp_path / "r.parquet"
        extra = ["--delimiter", ";"] if str(source).endswith("semi.csv") else []
        ok(rfmx_cli("aggregate", source, "-o", out, "--order-id", "order_id", *extra))
        assert result_rows(pq.read_table(out)) == want, source


def test_progress_goes_to_stderr(orders, tmp_path):
    result = ok(rfmx_cli("aggregate", orders, "-o", tmp_path / "r.parquet", "--progress"))
    # Parquet footers give the total: the percentage; stderr is no terminal here: plain lines
    assert re.search(r"4,000 / 4,000 rows \(100\.0 %\), [\d.]+ M rows/s", result.stderr)
    assert "\r" not in result.stderr
    assert "rows/s" not in result.stdout
    csv = tmp_path / "o.csv"
    pcsv.write_csv(pq.read_table(orders), csv)
    result = ok(rfmx_cli("aggregate", csv, "-o", tmp_path / "r2.parquet", "--progress"))
    assert re.search(r"rfmx: 4,000 rows, [\d.]+ M rows/s", result.stderr)  # CSV: no total without reading it


def test_progress_lines_percentage_and_time_left():
    import io

    from rfmx.progress import Progress, format_duration

    log = io.StringIO()
    with Progress(True, total=1000, stream=log, every=0) as bar:
        bar.advance(250, customers=10)
        bar.advance(250)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 3
    assert re.fullmatch(r"rfmx: 250 / 1,000 rows \(25\.0 %\), [\d.]+ M rows/s, 10 customers, [\d.]+ s, .* left",
                        lines[0])
    assert lines[1].startswith("rfmx: 500 / 1,000 rows (50.0 %)") and lines[1].endswith("left")
    assert lines[2].startswith("rfmx: 500 / 1,000 rows (50.0 %)") and "left" not in lines[2]  # the last line
    term = io.StringIO()
    with Progress(True, total=None, stream=term, interactive=True) as bar:
        bar.advance(5)
    assert term.getvalue().startswith("\rrfmx: 5 rows, ") and term.getvalue().endswith("\n")
    assert [format_duration(s) for s in (4.4, 75, 3723)] == ["4 s", "1:15", "1:02:03"]


@pytest.mark.parametrize("kind", ["parquet", "csv header only", "arrow"])
def test_empty_input_gives_empty_result_with_full_schema(tmp_path, kind):
    empty = pa.table({"customer_id": pa.array([], pa.string()), "order_time": pa.array([], pa.timestamp("us")),
                      "amount": pa.array([], pa.float64())})
    if kind == "parquet":
        pq.write_table(empty, tmp_path / "e.parquet")
        source = tmp_path / "e.parquet"
    elif kind == "arrow":
        feather.write_feather(empty, tmp_path / "e.arrow")
        source = tmp_path / "e.arrow"
    else:
        (tmp_path / "e.csv").write_text("customer_id,order_time,amount\n")
        source = tmp_path / "e.csv"
    result = ok(rfmx_cli("aggregate", source, "-o", tmp_path / "r.parquet"))
    assert "0 rows read, 0 customers" in result.stderr
    got = pq.read_table(tmp_path / "r.parquet")
    assert got.num_rows == 0 and got.column_names == RESULT_COLUMNS
    assert got.schema.field("customer_id").type == (pa.int64() if kind.startswith("csv") else pa.string())
    assert got.schema.field("first_order").type == pa.timestamp("us")


def test_help_is_instant_and_imports_no_numba():
    code = "import sys; from rfmx.cli.main import main; assert 'numba' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"
    assert "aggregate" in ok(rfmx_cli("--help")).output


# --- rfmx aggregate: bad input -------------------------------------------------------------------

@pytest.fixture()
def bad_dir(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


def _orders_table(n=2000) -> pa.Table:
    return pa.Table.from_batches(list(rfmx.generate_orders(n, customers=100, seed=9)))


def _expect_clean_failure(bad_dir, before, *args, pattern):
    """Run ``rfmx aggregate *args`` expecting failure; nothing new may appear in ``bad_dir``."""
    line = fails(rfmx_cli("aggregate", *args), pattern)
    assert listing(bad_dir) == before, "partial or temporary output left behind"
    return line


@pytest.mark.parametrize("out", ["r.parquet", "r.csv", "r.arrow"])
def test_missing_column_lists_existing_columns(orders, bad_dir, out):
    line = _expect_clean_failure(bad_dir, [], orders, "-o", bad_dir / out, "--state-out", bad_dir / "s.arrow",
                                 "--customer", "cust",
                                 pattern=r"orders\.parquet: column 'cust' not found; columns are: "
                                         r"customer_id, order_id, order_time, amount$")
    assert str(orders) in line


def test_wrong_type_amount_is_a_flag(bad_dir):
    table = _orders_table()
    table = table.set_column(3, "amount", table.column("amount").cast(pa.bool_()))
    pq.write_table(table, bad_dir / "o.parquet")
    _expect_clean_failure(bad_dir, ["o.parquet"], bad_dir / "o.parquet", "-o", bad_dir / "r.parquet",
                          pattern=r"o\.parquet: column 'amount' \(amount\) has type bool; expected integers, "
                                  r"floats or decimals")


def test_wrong_type_time_is_a_number(bad_dir):
    table = _orders_table()
    table = table.set_column(2, "order_time", table.column("order_time").cast(pa.int64()))
    pq.write_table(table, bad_dir / "o.parquet")
    _expect_clean_failure(bad_dir, ["o.parquet"], bad_dir / "o.parquet", "-o", bad_dir / "r.parquet",
                          pattern=r"o\.parquet: column 'order_time' \(order time\) has type int64")


@pytest.mark.parametrize("column", ["customer_id", "order_time", "amount", "order_id"])
def test_nulls_error_by_default_and_skip_on_request(bad_dir, column):
    table = _orders_table()
    null_rows = [5, 17, 1500]
    values = table.column(column).to_pylist()
    for i in null_rows:
        values[i] = None
    table = table.set_column(table.schema.get_field_index(column), column,
                             pa.array(values, table.schema.field(column).type))
    pq.write_table(table, bad_dir / "o.parquet", row_group_size=500)
    _expect_clean_failure(bad_dir, ["o.parquet"], bad_dir / "o.parquet", "-o", bad_dir / "r.parquet",
                          "--order-id", "order_id", "--batch-size", 100,
                          pattern=rf"o\.parquet: column '{column}' has 3 null value\(s\), first at row 5; "
                                  r".*--on-null skip")
    result = ok(rfmx_cli("aggregate", bad_dir / "o.parquet", "-o", bad_dir / "r.parquet", "--order-id", "order_id",
                         "--on-null", "skip", "--batch-size", 100))
    assert "3 rows with nulls skipped" in result.stderr
    keep = pa.array([i not in null_rows for i in range(table.num_rows)])
    assert result_rows(pq.read_table(bad_dir / "r.parquet")) == naive_of(table.filter(keep))


def test_unparseable_time_string_names_file_and_row(bad_dir):
    table = _orders_table(300)
    texts = [v.isoformat() for v in table.column("order_time").to_pylist()]
    texts[7] = "2024-02-30T10:00:00"
    texts[200] = "next tuesday"
    table = table.set_column(2, "order_time", pa.array(texts))
    pcsv.write_csv(table, bad_dir / "o.csv")
    pq.write_table(table, bad_dir / "o.parquet")
    before = ["o.csv", "o.parquet"]
    for name in before:
        _expect_clean_failure(bad_dir, before, bad_dir / name, "-o", bad_dir / "r.parquet", "--batch-size", 50,
                              pattern=rf"{name}: column 'order_time' \(order time\) has an unparseable time "
                                      r"'2024-02-30T10:00:00' at row 7$")


def test_time_strings_with_offsets_in_csv(bad_dir):
    (bad_dir / "o.csv").write_text("customer_id,order_time,amount\n"
                                   "1,2024-03-01T23:30:00-02:00,10.5\n"
                                   "1,2024-03-01 08:00:00,1.25\n"
                                   "2,2024-03-01,-3\n")
    ok(rfmx_cli("aggregate", bad_dir / "o.csv", "-o", bad_dir / "r.parquet"))
    got = result_rows(pq.read_table(bad_dir / "r.parquet"))
    assert got[1]["last_order"] == rfmx.state.to_us("2024-03-02T01:30:00")
    assert got[1]["monetary_minor"] == 1175 and got[2]["n_refunds"] == 1


def _valid_parquet(bad_dir) -> bytes:
    pq.write_table(_orders_table(), bad_dir / "ok.parquet", row_group_size=500)
    data = (bad_dir / "ok.parquet").read_bytes()
    os.unlink(bad_dir / "ok.parquet")
    return data


def test_truncated_parquet(bad_dir):
    data = _valid_parquet(bad_dir)
    (bad_dir / "t.parquet").write_bytes(data[: len(data) * 2 // 3])
    _expect_clean_failure(bad_dir, ["t.parquet"], bad_dir / "t.parquet", "-o", bad_dir / "r.parquet",
                          pattern=r"t\.parquet: cannot read as Parquet: .*(magic bytes|corrupt)")


def test_corrupt_parquet_pages(bad_dir):
    """Footer intact, data pages overwritten: the reader notices, the message names the file."""
    data = bytearray(_valid_parquet(bad_dir))
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    col = meta.row_group(1).column(0)
    start = col.data_page_offset
    data[start: start + 64] = b"\xff" * 64
    (bad_dir / "c.parquet").write_bytes(bytes(data))
    _expect_clean_failure(bad_dir, ["c.parquet"], bad_dir / "c.parquet", "-o", bad_dir / "r.parquet",
                          pattern=r"c\.parquet: cannot read as Parquet: ")


def test_not_parquet_at_all(bad_dir):
    (bad_dir / "x.parquet").write_text("customer_id,order_time,amount\n1,2024-01-01,3\n")
    _expect_clean_failure(bad_dir, ["x.parquet"], bad_dir / "x.parquet", "-o", bad_dir / "r.parquet",
                          pattern=r"x\.parquet: cannot read as Parquet")


def test_corrupt_file_in_the_middle_of_a_glob_leaves_no_output(bad_dir):
    table = _orders_table()
    pq.write_table(table.slice(0, 1000), bad_dir / "a.parquet")
    (bad_dir / "b.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    before = listing(bad_dir)
    # -o r.parquet would match the glob: an output never lands among the inputs (tests/test_outputs.py)
    _expect_clean_failure(bad_dir, before, str(bad_dir / "*.parquet"), "-o", bad_dir / "r.csv",
                          "--state-out", bad_dir / "s.arrow", pattern=r"b\.parquet: cannot read as Parquet")


def _saved_state(orders, bad_dir, *extra) -> str:
    path = bad_dir / "state.arrow"
    ok(rfmx_cli("aggregate", orders, "--state-out", path, *extra))
    return path


def test_state_file_of_another_version(orders, bad_dir):
    path = _saved_state(orders, bad_dir)
    with pa.memory_map(str(path)) as f:
        table = f and pa.ipc.open_file(f).read_all()
    meta = json.loads(table.schema.metadata[b"rfmx.state"])
    meta["version"] = 99
    table = table.replace_schema_metadata({"rfmx.state": json.dumps(meta)})
    with pa.OSFile(str(bad_dir / "v99.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    before = listing(bad_dir)
    _expect_clean_failure(bad_dir, before, orders, "--state-in", bad_dir / "v99.arrow", "-o", bad_dir / "r.parquet",
                          pattern=r"v99\.arrow: state format 'rfmx-state' version 99; this rfmx reads "
                                  r"'rfmx-state' versions 1, 2, 3")


def test_state_file_made_with_other_columns(orders, bad_dir):
    path = _saved_state(orders, bad_dir, "--order-id", "order_id")
    before = listing(bad_dir)
    _expect_clean_failure(bad_dir, before, orders, "--state-in", path, "-o", bad_dir / "r.parquet",
                          pattern=r"state\.arrow: the state was made with columns .*--order-id order_id; "
                                  r"this run maps .*--order-id \(none\)")
    _expect_clean_failure(bad_dir, before, orders, "--state-in", path, "-o", bad_dir / "r.parquet",
                          "--order-id", "order_id", "--amount-scale", 3,
                          pattern=r"state\.arrow: the state keeps amounts with 2 decimals, not --amount-scale 3")


@pytest.mark.parametrize("content", ["parquet", "garbage", "missing", "arrow without metadata"])
def test_state_file_that_is_not_a_state(orders, bad_dir, content):
    path = bad_dir / "s.arrow"
    if content == "parquet":
        pq.write_table(_orders_table(10), path)
    elif content == "garbage":
        path.write_bytes(b"ARROW1" + b"\0" * 50)
    elif content == "arrow without metadata":
        feather.write_feather(_orders_table(10), path)
    before = listing(bad_dir)
    _expect_clean_failure(bad_dir, before, orders, "--state-in", path, "-o", bad_dir / "r.parquet",
                          pattern=r"s\.arrow: (not an rfmx state file|state file not found)")


@pytest.mark.parametrize("out", ["r.json", "r.txt", "r", "r.parquet.tmp"])
def test_unknown_output_suffix_fails_before_reading(bad_dir, out):
    # The source does not exist either: the suffix is reported first, nothing is read.
    _expect_clean_failure(bad_dir, [], bad_dir / "missing.parquet", "-o", bad_dir / out,
                          pattern=rf"{re.escape(out)}: unknown output format")


@pytest.mark.parametrize("case", ["missing source", "empty directory", "glob without match", "unknown input suffix",
                                  "missing output folder", "missing state-out folder"])
def test_paths_that_do_not_work(orders, bad_dir, case):
    (bad_dir / "empty").mkdir()
    (bad_dir / "orders.txt").write_text("x")
    args, pattern = {
        "missing source": ([bad_dir / "nope.parquet", "-o", bad_dir / "r.parquet"], r"nope\.parquet: no such file"),
        "empty directory": ([bad_dir / "empty", "-o", bad_dir / "r.parquet"], r"empty: directory has no data files"),
        "glob without match": ([str(bad_dir / "*.pq"), "-o", bad_dir / "r.parquet"], r"\*\.pq: no files match"),
        "unknown input suffix": ([bad_dir / "orders.txt", "-o", bad_dir / "r.parquet"], r"orders\.txt: unknown input"),
        "missing output folder": ([orders, "-o", bad_dir / "no" / "r.parquet"], r"r\.parquet: directory .* does not"),
        "missing state-out folder": ([orders, "-o", bad_dir / "r.parquet", "--state-out", bad_dir / "no" / "s.arrow"],
                                     r"s\.arrow: directory .* does not exist"),
    }[case]
    before = listing(bad_dir)
    _expect_clean_failure(bad_dir, before, *args, pattern=pattern)


def test_output_that_is_a_folder_is_a_usage_error(orders, bad_dir):
    (bad_dir / "r.parquet").mkdir()
    result = rfmx_cli("aggregate", orders, "-o", bad_dir / "r.parquet")
    assert result.exit_code == 2 and "is a directory" in result.stderr
    result = rfmx_cli("aggregate", orders, "--state-out", bad_dir / "r.parquet")
    assert result.exit_code == 2 and "is a directory" in result.stderr
    assert listing(bad_dir) == ["r.parquet"] and listing(bad_dir / "r.parquet") == []


@pytest.mark.parametrize("options, pattern", [
    (["--as-of", "someday"], r"cannot parse 'someday' as an ISO-8601 date"),
    (["--since", "2025-01-01", "--as-of", "2024-01-01"], r"since \(2025-01-01T00:00:00\) must be before"),
    (["--amount-scale", "1"], r"'amount'.*2 decimals.*--amount-scale 2"),
])
def test_bad_options(bad_dir, options, pattern):
    table = _orders_table(100)
    table = table.set_column(3, "amount", table.column("amount").cast(pa.decimal128(12, 2)))
    pq.write_table(table, bad_dir / "o.parquet")
    _expect_clean_failure(bad_dir, ["o.parquet"], bad_dir / "o.parquet", "-o", bad_dir / "r.parquet", *options,
                          pattern=pattern)


def test_failed_write_leaves_no_file_and_keeps_the_old_one(orders, bad_dir, monkeypatch):
    """A writer that dies half way: no temporary file stays, an existing output is untouched."""
    (bad_dir / "r.parquet").write_bytes(b"previous result")

    def broken_write(table, where, *args, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", broken_write)
    _expect_clean_failure(bad_dir, ["r.parquet"], orders, "-o", bad_dir / "r.parquet", "--state-out",
                          bad_dir / "s.arrow", pattern=r"r\.parquet: cannot write parquet: .*No space left")
    assert (bad_dir / "r.parquet").read_bytes() == b"previous result"


def test_decimal_amounts_from_parquet_are_exact(bad_dir):
    values = [decimal.Decimal("0.10"), decimal.Decimal("0.20"), decimal.Decimal("-0.30"),
              decimal.Decimal("12345678901.99")]
    table = pa.table({"customer_id": [1, 1, 1, 2], "order_time": pa.array([0, 1, 2, 3], pa.timestamp("s")),
                      "amount": pa.array(values, pa.decimal128(15, 2))})
    pq.write_table(table, bad_dir / "o.parquet")
    ok(rfmx_cli("aggregate", bad_dir / "o.parquet", "-o", bad_dir / "r.parquet"))
    got = result_rows(pq.read_table(bad_dir / "r.parquet"))
    assert got[1]["monetary_minor"] == 0 and got[1]["n_refunds"] == 1
    assert got[2]["monetary_minor"] == 1234567890199


# --- one CLI: examples, names, --segments, summary --top ------------------------------------------

COMMANDS = ("generate", "aggregate", "demo", "score", "summary", "cluster", "clv", "timeline", "alerts", "report",
            "config")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_ends_with_examples(command):
    text = ok(rfmx_cli(command, "--help")).output
    examples = text[text.index("Examples:"):].splitlines()[1:]
    assert sum(line.strip().startswith("rfmx ") for line in examples) >= 2, text


def test_report_help_shows_only_the_options_that_apply():
    text = ok(rfmx_cli("report", "--help")).output
    assert "--if-exists" not in text and "--format" not in text
    assert "A database SOURCE's table of orders" in text
    assert "--if-exists" in ok(rfmx_cli("score", "--help")).output


def test_segments_none_is_one_value_everywhere(orders, tmp_path):
    out = tmp_path / "s.parquet"
    ok(rfmx_cli("score", orders, "--segments", "none", "-o", out))
    scored = pq.read_table(out)
    assert "segment" not in scored.column_names and "value_tier" in scored.column_names
    with_map = pq.read_table(ok(rfmx_cli("score", orders, "-o", tmp_path / "m.parquet")) and tmp_path / "m.parquet")
    assert scored.column("r_score").equals(with_map.column("r_score"))
    ok(rfmx_cli("cluster", orders, "-k", 3, "--segments", "none", "-o", tmp_path / "c.parquet"))
    for command in ("timeline", "alerts"):
        r = rfmx_cli(command, orders, "--segments", "none", "-o", tmp_path / "t.parquet")
        assert r.exit_code == 2 and "follows customers' segments" in r.stderr


def test_summary_top_lists_the_most_valuable_customers(orders, tmp_path):
    scores = tmp_path / "s.parquet"
    ok(rfmx_cli("score", orders, "-o", scores))
    table = pq.read_table(scores)
    r = ok(rfmx_cli("summary", scores, "--top", 5))
    lines = r.stdout.splitlines()
    at = lines.index("Top 5 customers by net money")
    assert lines[at + 1].split() == ["customer", "segment", "tier", "money", "orders", "recency", "d"]
    best = table.sort_by([("monetary_minor", "descending")]).slice(0, 5)
    assert [line.split()[0] for line in lines[at + 2:at + 7]] == [str(c) for c in best.column("customer_id").to_pylist()]
    got = pcsv.read_csv(pa.py_buffer(ok(rfmx_cli("summary", scores, "--top", 3, "--format", "csv")).stdout.encode()))
    assert got.column_names == ["customer_id", "segment", "value_tier", "monetary_total", "n_orders", "recency_days"]
    assert got.column("monetary_total").to_pylist() == best.column("monetary_total").to_pylist()[:3]
    doc = json.loads(ok(rfmx_cli("summary", scores, "--top", 2, "--format", "json")).stdout)
    assert [r["customer_id"] for r in doc["top_customers"]] == best.column("customer_id").to_pylist()[:2]


def test_summary_section_and_its_former_name(orders, tmp_path):
    scores = tmp_path / "s.parquet"
    ok(rfmx_cli("score", orders, "-o", scores))
    new = ok(rfmx_cli("summary", scores, "--section", "abc", "--format", "csv"))
    old = ok(rfmx_cli("summary", scores, "--table", "abc", "--format", "csv"))
    assert new.stdout == old.stdout
    assert old.stderr.strip() == "rfmx: --table is deprecated; use --section"
    assert "--table" not in ok(rfmx_cli("summary", "--help")).output
