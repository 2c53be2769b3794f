"""rfmx.dask.cluster_customers against rfmx.cluster on one machine: given the same initial
centres, the same labels and iterations, and centres, inertia and feature transform equal to
1e-12 (sums are added bucket by bucket instead of in one table's 1,024-row chunks); k-means++
seeding over buckets gives the same result on any number of workers.
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rfmx
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


def one_machine(paths, init, **options):
    """The single-machine fit from ``init``: (transform, KMeans, labels per customer id)."""
    from rfmx.cluster import FeatureTransform, KMeans

    table = rfmx.aggregate(paths, order_id="order_id")
    transform = FeatureTransform(**options).fit(table)
    X, kept = transform.transform(table)
    km = KMeans(len(init), init=init).fit(X)
    ids = table.column("customer_id").to_pylist()
    labels = dict(zip([i for i, k in zip(ids, kept) if k], km.labels_.tolist()))
    return transform, km, labels, X


def assert_agrees(got_table, report, transform, km, labels):
    model = report["model"]
    np.testing.assert_allclose(model.transform.center_, transform.center_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.transform.scale_, transform.scale_, rtol=1e-12)
    np.testing.assert_allclose(model.estimator.cluster_centers_, km.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert model.estimator.inertia_ == pytest.approx(km.inertia_, rel=1e-12)
    assert model.estimator.n_iter_ == km.n_iter_
    got = dict(zip(got_table.column("customer_id").to_pylist(), got_table.column("cluster").to_pylist()))
    assert {i: c for i, c in got.items() if c is not None} == labels
    assert all(got[i] is None for i in got if i not in labels)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), n=st.integers(300, 2_000), k=st.integers(1, 6), buckets=st.integers(1, 6),
       n_files=st.integers(1, 3), log=st.booleans(), scaling=st.sampled_from(["zscore", "none"]))
def test_same_initial_centres_same_clusters(client, tmp_path_factory, seed, n, k, buckets, n_files, log, scaling):
    root = tmp_path_factory.mktemp("kmeans")
    table = random_orders(seed, n, customers=max(k + 5, n // 4))
    rng = np.random.default_rng(seed)
    paths = write_split(table, root, rng.integers(0, n + 1, n_files - 1), 100)
    try:
        transform, _, _, X = one_machine(paths, np.zeros((1, 3)), log=log, scaling=scaling)
    except RfmxError as exc:  # e.g. a constant feature: the same refusal on Dask
        with pytest.raises(RfmxError, match="constant|no customers"):
            rd.cluster_customers(paths, order_id="order_id", k=1, log=log, scaling=scaling, client=client)
        assert "constant" in str(exc) or "no customers" in str(exc)
        return
    init = X[rng.choice(len(X), size=k, replace=False)]
    transform, km, labels, _ = one_machine(paths, init, log=log, scaling=scaling)
    report = {}
    rd.cluster_customers(paths, order_id="order_id", k=k, init=init, log=log, scaling=scaling, client=client,
                         buckets=buckets, share_rows=300, output=root / "out", report=report)
    assert_agrees(pq.read_table(root / "out"), report, transform, km, labels)


def test_empty_cluster_takes_the_farthest_customer(client, tmp_path):
    table = random_orders(2, 3_000, customers=700)
    paths = write_split(table, tmp_path, [1_000], 200)
    _, _, _, X = one_machine(paths, np.zeros((1, 3)))
    init = np.vstack([X[:3], [[50.0, 50.0, 50.0], [-60.0, 40.0, 0.0]]])  # two centres no customer is near
    transform, km, labels, _ = one_machine(paths, init)
    assert len(set(labels.values())) == 5  # the far centres were given customers
    report = {}
    got = rd.cluster_customers(paths, order_id="order_id", k=5, init=init, client=client, buckets=4, report=report)
    assert_agrees(frame_table(got, client), report, transform, km, labels)


def test_kmeans_plusplus_does_not_depend_on_workers(client, tmp_path):
    table = random_orders(6, 4_000, customers=900)
    paths = write_split(table, tmp_path, [1_500], 250)
    runs = []
    for c in (client, "local:1"):
        with rd.cluster(c) as cl:
            report = {}
            got = rd.cluster_customers(paths, order_id="order_id", k=4, random_state=3, client=cl, buckets=5,
                                       share_rows=1_000, output=tmp_path / f"out{len(runs)}", report=report)
            assert got is None
            runs.append((pq.read_table(tmp_path / f"out{len(runs)}"), report))
    (a, ra), (b, rb) = runs
    assert a.equals(b)
    assert np.array_equal(ra["model"].estimator.cluster_centers_, rb["model"].estimator.cluster_centers_)
    assert np.array_equal(ra["initial_centres"], rb["initial_centres"])
    # the seeds are customers' points, and from them Lloyd ends where one machine ends
    transform, km, labels, X = one_machine(paths, ra["initial_centres"])
    assert all((np.abs(X - s).max(axis=1) < 1e-12).any() for s in ra["initial_centres"])
    assert_agrees(a, ra, transform, km, labels)


def test_kmeans_refusals(client, tmp_path):
    paths = write_split(random_orders(1, 400), tmp_path, [], 100)
    with pytest.raises(RfmxError, match="scaling='robust'"):
        rd.cluster_customers(paths, k=2, scaling="robust", client=client)
    with pytest.raises(RfmxError, match="init must be"):
        rd.cluster_customers(paths, k=2, init="random", client=client)
    with pytest.raises(RfmxError, match="shape"):
        rd.cluster_customers(paths, k=2, init=np.zeros((3, 3)), client=client)
    with pytest.raises(RfmxError, match="only"):
        rd.cluster_customers(paths, k=10_000, client=client)


def test_cli_cluster_on_dask(client, tmp_path):
    from click.testing import CliRunner

    from rfmx.cli.main import main
    from rfmx.cluster import CustomerClusters

    table = random_orders(8, 2_000, customers=500)
    paths = write_split(table, tmp_path, [1_000], 100)
    out = tmp_path / "clusters"
    args = ["cluster", *paths, "--order-id", "order_id", "-k", "3", "--seed", "5", "--dask", client.scheduler.address,
            "--buckets", "3"]
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--model-out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "on Dask" in result.stderr and "fitted k=3" in result.stderr and result.output.count("cluster ") == 3
    report = {}
    rd.cluster_customers(paths, order_id="order_id", k=3, random_state=5, client=client, buckets=3, report=report)
    saved = CustomerClusters.load(tmp_path / "m.json")
    assert np.array_equal(saved.estimator.cluster_centers_, report["model"].estimator.cluster_centers_)
    got = pq.read_table(out)
    assert got.num_rows == rfmx.aggregate(paths).num_rows and "cluster" in got.column_names
    for extra in (["--k-range", "2..4"], ["--profiles", str(tmp_path / "p.csv")], ["--mini-batch", "100"]):
        result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x"), *extra])
        assert result.exit_code == 2 and extra[0] in result.stderr, result.stderr
