"""rfmx.dask.snapshots against a timeline state on one machine: the same snapshots (every
period boundary, or given dates), customer for customer and bit for bit, on a LocalCluster
of worker processes, for random data, file splits, bucket counts and periods.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfmx import RfmxError

distributed = pytest.importorskip("distributed")
import rfmx.dask as rd  # noqa: E402

from test_dask import frame_table, random_orders, write_split  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=50)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def one_machine(paths, as_of_dates=None, **options) -> pa.Table:
    from rfmx.api import build_state
    from rfmx.history import TimelineState
    from rfmx.pipeline import with_as_of

    state = TimelineState(order_id="order_id", **options)
    build_state(paths, order_id="order_id", state=state)
    return pa.concat_tables([with_as_of(t, a, state.timezone) for a, t in state.snapshots(as_of_dates)])


def assert_same_snapshots(got: pa.Table, want: pa.Table) -> None:
    keys = [("as_of", "ascending"), ("customer_id", "ascending")]
    got, want = got.sort_by(keys), want.sort_by(keys)
    assert got.schema.remove_metadata() == want.schema.remove_metadata()
    for name in want.column_names:
        assert got.column(name).equals(want.column(name)), name


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), n=st.integers(1, 500), string_ids=st.booleans(), n_files=st.integers(1, 3),
       buckets=st.integers(1, 5), every=st.sampled_from(["day", "week", "month"]),
       week_start=st.sampled_from(["monday", "sunday"]))
def test_snapshots_equal_one_machine(client, tmp_path_factory, seed, n, string_ids, n_files, buckets, every,
                                     week_start):
    root = tmp_path_factory.mktemp("snap")
    table = random_orders(seed, n, string_ids=string_ids)
    rng = np.random.default_rng(seed)
    paths = write_split(table, root, rng.integers(0, n + 1, n_files - 1), 60)
    try:
        want = one_machine(paths, period=every, week_start=week_start)
    except ValueError:  # no boundary at all (one period of lines): nothing to concatenate
        with pytest.raises(RfmxError, match="no snapshot"):
            rd.snapshots(paths, order_id="order_id", every=every, week_start=week_start, client=client)
        return
    report = {}
    rd.snapshots(paths, order_id="order_id", every=every, week_start=week_start, client=client, buckets=buckets,
                 share_rows=150, output=root / "out", report=report)
    assert len(os.listdir(root / "out")) == 1 + buckets
    got = pq.read_table(root / "out")
    assert_same_snapshots(got, want)
    assert report["rows"] == want.num_rows and len(report["boundaries"]) == len(set(want.column("as_of").to_pylist()))


def test_snapshots_at_given_dates_as_dataframe(client, tmp_path):
    table = random_orders(4, 2_000, customers=300)
    paths = write_split(table, tmp_path, [700], 100)
    dates = ["2024-02-01", "2024-03-01", "2024-04-01"]
    want = one_machine(paths, dates, period="month")
    got = frame_table(rd.snapshots(paths, order_id="order_id", as_of_dates=dates, client=client, buckets=3), client)
    assert_same_snapshots(got, want)
    with pytest.raises(RfmxError, match="not the start of a month"):
        rd.snapshots(paths, order_id="order_id", as_of_dates=["2024-02-15"], client=client)
    with pytest.raises(RfmxError, match="every|period"):
        rd.snapshots(paths, every="year", client=client)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), buckets=st.integers(1, 4),
       options=st.sampled_from([{}, {"bins": 4, "segments": "pymc-quartiles"}, {"bins": 3, "segments": None}]))
def test_scored_snapshots_equal_one_machine(client, tmp_path_factory, seed, buckets, options):
    """Each snapshot scored over its buckets equals ``rfmx score --as-of`` that boundary:
    what ``rfmx timeline`` writes, snapshot by snapshot."""
    import json

    from rfmx.api import build_state
    from rfmx.history import TimelineState
    from rfmx.pipeline import with_as_of
    from rfmx.scores import score_table

    root = tmp_path_factory.mktemp("scored")
    table = random_orders(seed, 1_500, customers=250)
    paths = write_split(table, root, [600], 100)
    state = TimelineState(order_id="order_id", period="month")
    build_state(paths, order_id="order_id", state=state)
    snaps = [(a, score_table(t, **options)) for a, t in state.snapshots()]
    report = {}
    rd.snapshots(paths, order_id="order_id", scores=True, client=client, buckets=buckets, output=root / "out",
                 report=report, **options)
    assert len(os.listdir(root / "out")) == 1 + buckets * len(snaps)
    got = pq.read_table(root / "out")
    assert_same_snapshots(got, pa.concat_tables([with_as_of(t, a, state.timezone) for a, t in snaps]))
    for j, (_, want) in enumerate(snaps):  # every part of a snapshot carries that snapshot's score metadata
        part = pq.read_table(root / "out" / f"part-{j * buckets:05d}.parquet")
        assert json.loads(part.schema.metadata[b"rfmx.scores"]) == json.loads(want.schema.metadata[b"rfmx.scores"])
