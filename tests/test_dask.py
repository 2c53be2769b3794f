"""rfmx.dask against one machine: the same per-customer tables, bit for bit, on a LocalCluster
of worker processes, for random data, random file splits, row groups, shares and buckets.

One cluster of 2 single-threaded worker processes serves the module; runs with 1 and 3
workers start their own.  Tables are compared after sorting by customer id (a distributed
result comes bucket by bucket): every column, type and the schema metadata must be equal.
"""
from __future__ import annotations

import decimal
import json
import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import RfmxError

distributed = pytest.importorskip("distributed")
import rfmx.dask as rd  # noqa: E402

from naive import naive_rfm, result_rows  # noqa: E402
from rfmx.buckets import from_ipc  # noqa: E402

T0 = 1_709_251_200_000_000  # 2024-03-01 in microseconds
DAY = 86_400_000_000


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=50)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def random_orders(seed: int, n: int, *, string_ids: bool = False, customers: int = 50, nulls: bool = False):
    """Order lines with repeating customers, multi-line orders (contiguous per customer and
    order) and refunds; decimal amounts, so money is exact."""
    rng = np.random.default_rng(seed)
    # Orders: runs of lines of one customer share an order id.
    oid = np.cumsum(rng.random(n) < 0.5)
    cust = rng.integers(0, customers, n + 1)[oid]
    times = T0 + rng.integers(-40, 40, n) * DAY + rng.integers(0, DAY, n)
    minor = rng.integers(-3_000, 90_000, n)
    minor[rng.random(n) < 0.2] = 0
    ids = pa.array([f"c{c:03d}" for c in cust]) if string_ids else pa.array(cust * 7919 - 100_000, pa.int64())
    amounts = pa.array([decimal.Decimal(int(m)).scaleb(-2) for m in minor], pa.decimal128(18, 2))
    return pa.table({"customer_id": ids, "order_time": pa.array(times, pa.timestamp("us")), "amount": amounts,
                     "order_id": pa.array(oid, pa.int64())})


def write_split(table: pa.Table, root, cuts, row_group_rows) -> list[str]:
    """``table`` cut at ``cuts`` into Parquet files with row groups of ``row_group_rows``."""
    paths, bounds = [], [0, *sorted(cuts), table.num_rows]
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        path = os.path.join(root, f"part-{i:03d}.parquet")
        pq.write_table(table.slice(lo, hi - lo), path, row_group_size=max(1, row_group_rows))
        paths.append(path)
    return paths


def by_customer(table: pa.Table) -> pa.Table:
    return table.sort_by("customer_id")


def frame_table(ddf_or_table, client) -> pa.Table:
    if isinstance(ddf_or_table, pa.Table):
        return ddf_or_table
    frame = client.compute(ddf_or_table).result()
    return pa.Table.from_pandas(frame, preserve_index=False)


def assert_same(got: pa.Table, want: pa.Table, *, metadata: bool = True) -> None:
    got, want = by_customer(got), by_customer(want)
    assert got.schema.remove_metadata() == want.schema.remove_metadata(), (got.schema, want.schema)
    if metadata:
        assert got.schema.metadata == want.schema.metadata
    for name in want.column_names:
        assert got.column(name).equals(want.column(name)), name


# --- aggregate ------------------------------------------------------------------------------

@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), n=st.integers(0, 400), string_ids=st.booleans(), use_oid=st.booleans(),
       n_files=st.integers(1, 4), row_group_rows=st.integers(1, 120), share_rows=st.integers(40, 300),
       buckets=st.integers(1, 5), fan_in=st.integers(2, 4), as_of=st.sampled_from([None, "2024-03-20"]))
def test_aggregate_equals_one_machine(client, tmp_path_factory, seed, n, string_ids, use_oid, n_files,
                                      row_group_rows, share_rows, buckets, fan_in, as_of):
    root = tmp_path_factory.mktemp("agg")
    table = random_orders(seed, n, string_ids=string_ids)
    rng = np.random.default_rng(seed + 1)
    paths = write_split(table, root, rng.integers(0, n + 1, n_files - 1), row_group_rows)
    oid = "order_id" if use_oid else None
    one = rfmx.build_state(paths, order_id=oid, as_of=as_of)
    want = one.finalize(as_of)
    report = {}
    got = rd.aggregate(paths, order_id=oid, as_of=as_of, client=client, buckets=buckets, share_rows=share_rows,
                       fan_in=fan_in, output=root / "out", report=report)
    assert got is None
    parts = sorted(os.listdir(root / "out"))
    assert parts == [rd.MARKER] + [f"part-{b:05d}.parquet" for b in range(buckets)]
    assert_same(pq.read_table(root / "out"), want)
    assert (report["rows_read"], report["rows_outside_window"]) == (one.rows_read, one.rows_outside_window)
    assert report["customers"] == want.num_rows and report["buckets"] == buckets


def test_aggregate_matches_naive_and_dataframe_result(client, tmp_path):
    table = random_orders(7, 3_000, customers=400)
    paths = write_split(table, tmp_path, [1_000, 1_700], 250)
    got = frame_table(rd.aggregate(paths, order_id="order_id", client=client, share_rows=500), client)
    want = rfmx.aggregate(paths, order_id="order_id")
    assert_same(got, want, metadata=False)  # a DataFrame keeps the columns, not the table's metadata
    minor = [int(d.scaleb(2)) for d in table.column("amount").to_pylist()]
    rows, _ = naive_rfm(table.column("customer_id").to_pylist(), table.column("order_time").cast(pa.int64()).to_pylist(),
                        minor, table.column("order_id").to_pylist(), as_of_us=None)
    assert result_rows(got) == rows


def test_dask_dataframe_source(client):
    dd = pytest.importorskip("dask.dataframe")
    table = random_orders(3, 900, string_ids=True)
    frame = table.to_pandas()
    ddf = dd.from_pandas(frame, npartitions=4, sort=False)
    got = frame_table(rd.aggregate(ddf, order_id="order_id", client=client, buckets=3), client)
    want = rfmx.aggregate(pa.Table.from_pandas(frame, preserve_index=False), order_id="order_id")
    assert_same(got, want, metadata=False)


@pytest.mark.parametrize("workers", [1, 3])
def test_one_and_three_workers(tmp_path, workers):
    table = random_orders(11, 2_000, customers=300)
    paths = write_split(table, tmp_path, [800], 150)
    want = rfmx.aggregate(paths, order_id="order_id")
    with rd.cluster(f"local:{workers}") as c:
        got = rd.aggregate(paths, order_id="order_id", client=c, share_rows=300, output=tmp_path / "out")
        assert got is None
    assert_same(pq.read_table(tmp_path / "out"), want)
    assert len(os.listdir(tmp_path / "out")) == 1 + 4 * workers  # default: 4 buckets per worker


def test_single_file_and_file_uris(client, tmp_path):
    table = random_orders(5, 1_200, customers=200)
    paths = write_split(table, tmp_path, [600], 100)
    want = rfmx.aggregate(paths)
    uris = [f"file://{os.path.abspath(p)}" for p in paths]
    rd.aggregate(uris, client=client, output=f"file://{tmp_path}/ds", buckets=3, share_rows=200)
    assert_same(pq.read_table(tmp_path / "ds"), want)
    rd.aggregate(f"file://{tmp_path}/part-*.parquet", client=client, output=tmp_path / "one.csv", single_file=True)
    from rfmx.scores import read_table

    assert read_table(tmp_path / "one.csv").num_rows == want.num_rows
    rd.aggregate(tmp_path / "part-000.parquet", client=client, output=tmp_path / "one.parquet", single_file=True,
                 buckets=5)
    assert_same(pq.read_table(tmp_path / "one.parquet"), rfmx.aggregate(paths[0]))


def test_dataset_output_replaces_only_its_own(client, tmp_path):
    table = random_orders(2, 500)
    paths = write_split(table, tmp_path, [], 100)
    out = tmp_path / "rfm"
    rd.aggregate(paths, client=client, output=out, buckets=4)
    rd.aggregate(paths, client=client, output=out, buckets=2)  # an rfmx dataset: replaced whole
    assert sorted(os.listdir(out)) == [rd.MARKER, "part-00000.parquet", "part-00001.parquet"]
    assert json.loads((out / rd.MARKER).read_text())["rows"] == rfmx.aggregate(paths).num_rows
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(RfmxError, match="not a dataset rfmx wrote"):
        rd.aggregate(paths, client=client, output=other)
    assert os.listdir(other) == ["notes.txt"]
    with pytest.raises(RfmxError, match="would overwrite the input"):
        rd.aggregate(tmp_path / "rfm" / "part-00000.parquet", client=client, output=tmp_path / "rfm")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging folder left behind


# --- bad input: the one-machine error, whichever task meets it ----------------------------

def _bad_files(tmp_path, kind: str) -> list[str]:
    table = random_orders(9, 600)
    paths = write_split(table, tmp_path, [200, 400], 40)
    bad = pq.read_table(paths[1])
    if kind == "null":
        amount = bad.column("amount").to_pylist()
        for row in (77, 150, 151):
            amount[row] = None
        bad = bad.set_column(2, "amount", pa.array(amount, pa.decimal128(18, 2)))
    elif kind == "scale":
        amount = bad.column("amount").cast(pa.decimal128(18, 3)).to_pylist()
        amount[123] = decimal.Decimal("1.005")
        bad = bad.set_column(2, "amount", pa.array(amount, pa.decimal128(18, 3)))
    else:
        bad = bad.drop_columns(["order_time"])
    pq.write_table(bad, paths[1], row_group_size=40)
    # a later file is bad too: the first bad one in input order is the one reported
    later = pq.read_table(paths[2])
    amount = later.column("amount").to_pylist()
    amount[3] = None
    pq.write_table(later.set_column(2, "amount", pa.array(amount, pa.decimal128(18, 2))), paths[2], row_group_size=40)
    return paths


@pytest.mark.parametrize("kind", ["null", "scale", "missing column"])
def test_bad_input_is_the_one_machine_error(client, tmp_path, kind):
    paths = _bad_files(tmp_path, kind)
    with pytest.raises(RfmxError) as one:
        rfmx.aggregate(paths)
    with pytest.raises(RfmxError) as many:
        rd.aggregate(paths, client=client, share_rows=50, output=tmp_path / "out")
    assert str(many.value) == str(one.value)
    assert paths[1] in str(one.value) and "\n" not in str(one.value)
    assert not os.path.exists(tmp_path / "out") and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


# --- failures and where the data goes ---------------------------------------------------------

class KillOnce(distributed.WorkerPlugin):
    """Kills its worker's process (SIGKILL) when a task whose key starts with ``prefix`` starts
    running there; once per marker file, whichever worker gets there first."""

    name = "rfmx-test-kill-once"

    def __init__(self, marker: str, prefix: str):
        self.marker, self.prefix = marker, prefix

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith(self.prefix):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("stage", ["rfmx-fold-", "rfmx-merge-"])
def test_worker_killed_mid_run_result_still_exact(client, tmp_path, stage):
    table = random_orders(21, 4_000, customers=500)
    paths = write_split(table, tmp_path, [1_500, 2_500], 200)
    want = rfmx.aggregate(paths, order_id="order_id")
    marker = str(tmp_path / "killed")
    client.register_plugin(KillOnce(marker, stage))
    try:
        rd.aggregate(paths, order_id="order_id", client=client, share_rows=400, buckets=6, fan_in=2,
                     output=tmp_path / "out")
    finally:
        client.unregister_worker_plugin(KillOnce.name)
    assert os.path.exists(marker)  # a worker did die mid-run
    assert_same(pq.read_table(tmp_path / "out"), want)
    client.wait_for_workers(2, timeout=60)


def test_client_receives_no_customer_data(client, tmp_path, monkeypatch):
    table = random_orders(4, 60_000, customers=20_000)
    paths = write_split(table, tmp_path, [30_000], 5_000)
    received = []
    gather = distributed.Client.gather

    def recording_gather(self, futures, *args, **kwargs):
        out = gather(self, futures, *args, **kwargs)
        received.extend(out if isinstance(out, list) else [out])
        return out

    monkeypatch.setattr(distributed.Client, "gather", recording_gather)
    rd.aggregate(paths, client=client, share_rows=10_000, output=tmp_path / "out")
    monkeypatch.undo()
    assert pq.read_table(tmp_path / "out").num_rows == rfmx.aggregate(paths).num_rows > 10_000
    size = 0
    for value in received:
        if isinstance(value, bytes):
            assert from_ipc(value).num_rows <= 1  # summaries: counters and at most one id
            size += len(value)
        else:
            assert isinstance(value, (int, np.integer))  # rows written per part
    assert 0 < size < 64 * 1024


# --- the command line ---------------------------------------------------------------------------

def test_cli_aggregate_on_dask(client, tmp_path):
    from click.testing import CliRunner

    from rfmx.cli.main import main

    table = random_orders(8, 1_000)
    paths = write_split(table, tmp_path, [500], 100)
    address = client.scheduler.address
    out = tmp_path / "rfm"
    result = CliRunner().invoke(main, ["aggregate", *paths, "--dask", address, "--buckets", "3", "-o", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "on Dask" in result.stderr and "1,000 rows read" in result.stderr
    assert_same(pq.read_table(out), rfmx.aggregate(paths))
    (tmp_path / "bad").mkdir()
    bad = _bad_files(tmp_path / "bad", "null")
    result = CliRunner().invoke(main, ["aggregate", *bad, "--dask", address, "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"Error: {bad[1]}: column 'amount' has 3 null value(s), first at row 77")
    for args, message in ((["--state-out", str(tmp_path / "s.arrow")], "--state-in/--state-out"),
                          (["--threads", "2"], "--threads"), ):
        result = CliRunner().invoke(main, ["aggregate", *paths, "--dask", address, "-o", str(out), *args])
        assert result.exit_code == 2 and message in result.stderr
    result = CliRunner().invoke(main, ["aggregate", *paths, "--single-file", "-o", str(tmp_path / "y.parquet")])
    assert result.exit_code == 2 and "--single-file is for --dask" in result.stderr


def test_csv_and_ipc_files_and_file_uris_on_one_machine(client, tmp_path):
    import pyarrow.csv as pcsv
    import pyarrow.feather as feather

    table = random_orders(12, 900, string_ids=True)
    pcsv.write_csv(table.slice(0, 300), tmp_path / "a.csv")
    feather.write_feather(table.slice(300, 300), tmp_path / "b.arrow")
    pcsv.write_csv(table.slice(600), tmp_path / "c.csv")
    paths = [str(tmp_path / n) for n in ("a.csv", "b.arrow", "c.csv")]
    want = rfmx.aggregate(paths, order_id="order_id")
    got = rd.aggregate(paths, order_id="order_id", client=client, buckets=2, output=tmp_path / "out")
    assert got is None
    assert_same(pq.read_table(tmp_path / "out"), want)
    # file:// URIs read as the local paths they name, on one machine too
    assert_same(rfmx.aggregate([f"file://{p}" for p in paths], order_id="order_id"), want)
