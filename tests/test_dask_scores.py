"""rfmx.dask.score against rfmx.score on one machine: the same scores, codes, value scores,
tiers, segments, ABC classes and ``rfmx.scores`` metadata, bit for bit, on a LocalCluster of
worker processes, for random data, file splits, bucket counts and scoring options.
"""
from __future__ import annotations

import decimal
import json
import os

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

from test_dask import assert_same, frame_table, random_orders, write_split  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=50)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def wide_money(table: pa.Table, seed: int) -> pa.Table:
    """Amounts spread over ten orders of magnitude: the money edges and ABC thresholds then
    take several histogram rounds."""
    rng = np.random.default_rng(seed)
    minor = (10 ** rng.uniform(0, 10, table.num_rows)).astype(np.int64) * rng.choice([1, 1, 1, -1], table.num_rows)
    amounts = pa.array([decimal.Decimal(int(m)).scaleb(-2) for m in minor], pa.decimal128(18, 2))
    return table.set_column(2, "amount", amounts)


OPTIONS = st.sampled_from([
    {},
    {"bins": 4, "segments": "pymc-quartiles"},
    {"bins": 3, "segments": None, "monetary": "aov"},
    {"bins": 7, "segments": None, "tiers": "top=10,mid=45,rest=45", "weights": "recency=2,monetary=1"},
    {"cuts": ["recency=5,10,20,30"], "monetary": "aov"},
    {"bins": 5, "weights": "rfm=1,frequency=-1"},
])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), n=st.integers(0, 600), string_ids=st.booleans(), wide=st.booleans(),
       n_files=st.integers(1, 3), buckets=st.integers(1, 6), options=OPTIONS,
       as_of=st.sampled_from([None, "2024-03-20"]))
def test_score_equals_one_machine(client, tmp_path_factory, seed, n, string_ids, wide, n_files, buckets, options,
                                  as_of):
    root = tmp_path_factory.mktemp("score")
    table = random_orders(seed, n, string_ids=string_ids, customers=max(1, n // 3))
    if wide:
        table = wide_money(table, seed)
    rng = np.random.default_rng(seed + 1)
    paths = write_split(table, root, rng.integers(0, n + 1, n_files - 1), 50)
    want = rfmx.score(paths, order_id="order_id", as_of=as_of, **options)
    report = {}
    got = rd.score(paths, order_id="order_id", as_of=as_of, client=client, buckets=buckets, share_rows=100,
                   output=root / "out", report=report, **options)
    assert got is None
    assert sorted(os.listdir(root / "out")) == [rd.MARKER] + [f"part-{b:05d}.parquet" for b in range(buckets)]
    assert_same(pq.read_table(root / "out"), want)
    assert report["scores"] == json.loads(want.schema.metadata[b"rfmx.scores"])
    assert json.loads((root / "out" / rd.MARKER).read_text())["command"] == "score"


def test_score_with_many_histogram_rounds(client, tmp_path):
    """Money over ten orders of magnitude and float average order values (64-bit keys): the
    edges take up to six histogram rounds; ABC thresholds from the revenue walk."""
    table = wide_money(random_orders(17, 4_000, customers=1_500), 17)
    paths = write_split(table, tmp_path, [1_300, 2_900], 300)
    for options in ({}, {"monetary": "aov", "bins": 10, "segments": None}):
        want = rfmx.score(paths, order_id="order_id", **options)
        got = frame_table(rd.score(paths, order_id="order_id", client=client, buckets=4, share_rows=700, **options),
                          client)
        assert_same(got, want, metadata=False)
        assert got.column("abc_class").to_pylist() != [] and len(set(want.column("abc_class").to_pylist())) == 3


@pytest.mark.parametrize("workers", [1, 3])
def test_score_one_and_three_workers(tmp_path, workers):
    table = random_orders(5, 2_500, customers=700)
    paths = write_split(table, tmp_path, [900], 200)
    want = rfmx.score(paths, bins=4, segments="pymc-quartiles")
    with rd.cluster(f"local:{workers}") as c:
        rd.score(paths, bins=4, segments="pymc-quartiles", client=c, share_rows=500, output=tmp_path / "out")
    assert_same(pq.read_table(tmp_path / "out"), want)


def test_score_refuses_what_buckets_cannot_give(client, tmp_path):
    paths = write_split(random_orders(1, 300), tmp_path, [], 100)
    with pytest.raises(RfmxError, match="ties='first'.*row order"):
        rd.score(paths, ties="first", client=client)
    with pytest.raises(RfmxError, match="weights on raw columns"):
        rd.score(paths, weights="monetary_total=1,recency=1", client=client)
    with pytest.raises(RfmxError, match="bins must be"):
        rd.score(paths, bins=1, client=client)
    assert not os.path.exists(tmp_path / "out")


def test_score_client_receives_no_customer_data(client, tmp_path, monkeypatch):
    from rfmx.dask_scores import HISTOGRAM_BITS

    table = wide_money(random_orders(4, 40_000, customers=15_000), 4)
    paths = write_split(table, tmp_path, [20_000], 5_000)
    received = []
    gather = distributed.Client.gather

    def recording_gather(self, futures, *args, **kwargs):
        out = gather(self, futures, *args, **kwargs)
        received.append(out)
        return out

    monkeypatch.setattr(distributed.Client, "gather", recording_gather)
    rd.score(paths, client=client, share_rows=10_000, output=tmp_path / "out")
    monkeypatch.undo()
    assert pq.read_table(tmp_path / "out").num_rows > 10_000

    def check(value):
        if isinstance(value, (list, tuple)):
            for v in value:
                check(v)
        elif isinstance(value, dict):
            for v in value.values():
                check(v)
        elif isinstance(value, np.ndarray):  # histograms and counts per RFM code: bounded, not per customer
            assert value.size <= 2 * ((1 << HISTOGRAM_BITS) + 1)
        elif isinstance(value, bytes):
            from rfmx.buckets import from_ipc

            assert from_ipc(value).num_rows <= 1  # the shares' summaries
        else:
            assert value is None or isinstance(value, (int, float, str, np.integer, np.floating)), type(value)

    check(received)


def test_cli_score_on_dask(client, tmp_path):
    from click.testing import CliRunner

    from rfmx.cli.main import main

    table = random_orders(8, 1_500, customers=400)
    paths = write_split(table, tmp_path, [700], 100)
    address = client.scheduler.address
    out = tmp_path / "scores"
    result = CliRunner().invoke(main, ["score", *paths, "--dask", address, "--buckets", "3", "--bins", "4",
                                       "--segments", "pymc-quartiles", "-o", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    want = rfmx.score(paths, bins=4, segments="pymc-quartiles")
    assert "on Dask" in result.stderr and f"scored {want.num_rows:,} customers into 4 bins" in result.stderr
    assert "match no rule" in result.stderr  # the coverage of the whole population
    assert_same(pq.read_table(out), want)
    for args, message in ((["--ties", "first"], "ties='first'"), (["--clusters", "3"], "--clusters"),
                          (["--clv", "bgnbd"], "--clv")):
        result = CliRunner().invoke(main, ["score", *paths, "--dask", address, "-o", str(out), *args])
        assert result.exit_code in (1, 2) and message in result.stderr, result.stderr
        assert "Traceback" not in result.output
