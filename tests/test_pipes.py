"""rfmx in a shell pipeline: ``-`` as a source (CSV, Arrow IPC stream, and files sniffed by
their first bytes) and ``-o -`` (CSV, JSON Lines, Arrow IPC stream), with every diagnostic on
standard error and nothing on standard output when the command fails."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import rfmx
from badinput import check_one_line_error
from rfmx.cli.main import main

KEY = [("customer_id", "ascending")]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipes")
    orders = pa.Table.from_batches(list(rfmx.generate_orders(5_000, seed=9)))
    pq.write_table(orders, folder / "orders.parquet")
    pcsv.write_csv(orders, folder / "orders.csv")
    with pa.ipc.new_stream(folder / "orders.arrows", orders.schema) as w:
        for batch in orders.to_batches(max_chunksize=1_000):
            w.write_batch(batch)
    return folder


def invoke(args, stdin: bytes = b""):
    result = CliRunner().invoke(main, [str(a) for a in args], input=stdin, catch_exceptions=True)
    return result


@pytest.mark.parametrize("name", ["orders.csv", "orders.arrows", "orders.parquet"])
def test_stdin_is_read_like_the_file(history, name, tmp_path):
    expected = rfmx.aggregate(str(history / "orders.parquet"), order_id="order_id")
    result = invoke(["aggregate", "-", "--order-id", "order_id", "-o", tmp_path / "r.parquet"],
                    (history / name).read_bytes())
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert pq.read_table(tmp_path / "r.parquet").sort_by(KEY).equals(expected.sort_by(KEY))


def test_gzipped_csv_on_stdin(history, tmp_path):
    import gzip

    expected = rfmx.aggregate(str(history / "orders.csv"))
    result = invoke(["aggregate", "-", "-o", tmp_path / "r.parquet"], gzip.compress((history / "orders.csv").read_bytes()))
    assert result.exit_code == 0, result.stderr
    assert pq.read_table(tmp_path / "r.parquet").sort_by(KEY).equals(expected.sort_by(KEY))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "arrow"])
def test_stdout_formats(history, fmt):
    expected = rfmx.score(rfmx.aggregate(str(history / "orders.parquet")))
    args = ["score", history / "orders.parquet", "-o", "-"] + (["--format", fmt] if fmt != "csv" else [])
    result = invoke(args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = result.stdout_bytes
    if fmt == "arrow":
        got = pa.ipc.open_stream(data).read_all()
        assert got.schema.names == expected.schema.names
        assert got.sort_by(KEY).equals(expected.sort_by(KEY))
    elif fmt == "csv":
        got = pcsv.read_csv(io.BytesIO(data))
        assert got.column_names == expected.column_names
        assert got.num_rows == expected.num_rows
        assert got.sort_by(KEY).column("monetary_minor").equals(expected.sort_by(KEY).column("monetary_minor"))
    else:
        rows = [json.loads(line) for line in data.decode().splitlines()]
        assert len(rows) == expected.num_rows
        by_id = {r["customer_id"]: r for r in rows}
        for want in expected.to_pylist()[:50]:
            have = by_id[want["customer_id"]]
            assert have["monetary_minor"] == want["monetary_minor"]
            assert have["segment"] == want["segment"]
            assert have["last_order"] == want["last_order"].isoformat()
    # what the command prints for people went to standard error, with the diagnostics
    assert "segment" in result.stderr and "rfmx: scored" in result.stderr


def test_a_failed_command_writes_nothing_to_stdout(history):
    result = invoke(["aggregate", "-", "--amount", "nope", "-o", "-", "--format", "jsonl"],
                    (history / "orders.arrows").read_bytes())
    check_one_line_error(result.exit_code, result.stderr, result.stdout,
                         r"<stdin>: column 'nope' not found; columns are: customer_id, order_id, order_time, amount")
    assert result.stdout_bytes == b""


def test_stdin_errors_name_stdin_and_the_row(tmp_path):
    csv = b"customer_id,order_time,amount\n1,2024-01-01,5\n2,2024-01-02,x\n"
    result = invoke(["aggregate", "-", "-o", tmp_path / "r.parquet"], csv)
    check_one_line_error(result.exit_code, result.stderr, result.stdout, r"^Error: <stdin>: column 'amount'.* at row 1")
    assert list(tmp_path.iterdir()) == []


def test_a_real_pipe_between_two_processes(history):
    """``rfmx aggregate FILE -o - --format arrow | rfmx aggregate - ...``: the per-customer
    table re-aggregated (one line per customer) gives the same money per customer."""
    first = subprocess.Popen([sys.executable, "-c", "from rfmx.cli.main import main; main()", "aggregate",
                              str(history / "orders.parquet"), "-o", "-", "--format", "arrow"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.run([sys.executable, "-c", "from rfmx.cli.main import main; main()", "aggregate", "-",
                             "--time", "last_order", "--amount", "monetary_total", "-o", "-", "--format", "jsonl"],
                            stdin=first.stdout, capture_output=True, timeout=300)
    first.stdout.close()
    first_stderr = first.stderr.read()
    first.stderr.close()
    assert first.wait(timeout=300) == 0, first_stderr
    assert second.returncode == 0, second.stderr
    expected = rfmx.aggregate(str(history / "orders.parquet"))
    money = {r["customer_id"]: r["monetary_minor"] for r in map(json.loads, second.stdout.decode().splitlines())}
    assert money == dict(zip(expected.column("customer_id").to_pylist(), expected.column("monetary_minor").to_pylist()))
    assert b"rows read" in second.stderr


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """``rfmx score ... -o - | head -c 10``: the reader leaving early ends rfmx quietly (the
    result, ~3 MB, is far more than a pipe's buffer holds)."""
    rfmx.write_orders(str(tmp_path / "big.parquet"), 300_000, seed=2)
    proc = subprocess.run(f"{sys.executable} -c 'from rfmx.cli.main import main; main()' score "
                          f"{tmp_path / 'big.parquet'} -o - | head -c 10 > /dev/null; echo ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "0", proc.stderr
    assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr
