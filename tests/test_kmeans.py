"""k-means: kernels against the naive reference, against scikit-learn, threads, features,
models, profiles and the ``rfmx cluster`` command."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import naive_kmeans as naive
from rfmx.cluster import (CustomerClusters, FeatureTransform, KMeans, MiniBatchKMeans, add_cluster_column, choose_k,
                          cluster_profiles, fit_clusters, kmeans_plusplus, parse_k_range, silhouette_score)
from rfmx.errors import RfmxError
from rfmx.kernels import threads

sklearn_cluster = pytest.importorskip("sklearn.cluster")
sklearn_metrics = pytest.importorskip("sklearn.metrics")


def blobs(n=3000, d=3, centres=5, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    C = rng.uniform(-6, 6, (centres, d))
    return C[rng.integers(0, centres, n)] + rng.normal(0, spread, (n, d))


@st.composite
def point_sets(draw, max_n=40):
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 4))
    grid = draw(st.booleans())
    elements = (st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0]) if grid
                else st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64))
    X = draw(hnp.arrays(np.float64, (n, d), elements=elements))
    k = draw(st.integers(1, n))
    return X, k


# --- against the naive reference -----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(point_sets(), st.sampled_from([1, 3, 8, 1024]), st.integers(0, 2**31 - 1), st.sampled_from([1, 2]))
def test_kmeans_plusplus_matches_naive(data, chunk_size, seed, n_threads):
    X, k = data
    expected = naive.kmeans_plusplus(X, k, seed, chunk_size)
    centres, idx = kmeans_plusplus(X, k, random_state=seed, chunk_size=chunk_size, threads=n_threads)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(centres, X[expected])


@settings(max_examples=40, deadline=None)
@given(point_sets(), st.sampled_from([1, 5, 8, 1024]), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 1e-4]),
       st.sampled_from([1, 2]))
def test_lloyd_matches_naive_bit_for_bit(data, chunk_size, seed, tol, n_threads):
    X, k = data
    init = X[np.random.default_rng(seed).choice(len(X), k, replace=True)]  # repeats force empty clusters
    labels, inertia, C, n_iter = naive.lloyd(X, init, 50, tol, chunk_size)
    km = KMeans(k, init=init, max_iter=50, tol=tol, chunk_size=chunk_size, threads=n_threads).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, C)
    np.testing.assert_array_equal(km.labels_, labels)
    assert km.inertia_ == inertia
    assert km.n_iter_ == n_iter
    np.testing.assert_array_equal(km.predict(X), labels)


def test_empty_cluster_is_relocated_to_the_farthest_point():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0], [10.2, 10.0]])
    init = np.array([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]])  # the third centre gets no point
    km = KMeans(3, init=init, max_iter=20, tol=0, chunk_size=2).fit(X)
    labels, inertia, C, n_iter = naive.lloyd(X, init, 20, 0, 2)
    np.testing.assert_array_equal(km.cluster_centers_, C)
    np.testing.assert_array_equal(km.labels_, labels)
    assert sorted(np.bincount(km.labels_, minlength=3)) == [1, 1, 3]


# --- against scikit-learn ---------------------------------------------------------------------------------


def test_same_initial_centres_same_inertia_as_sklearn():
    X = blobs(20_000, 3, 8, seed=1, spread=1.5)
    init = X[np.random.default_rng(2).choice(len(X), 8, replace=False)]
    ours = KMeans(8, init=init, max_iter=300, tol=1e-4).fit(X)
    theirs = sklearn_cluster.KMeans(8, init=init, n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(X)
    assert abs(ours.inertia_ - theirs.inertia_) <= 1e-9 * theirs.inertia_
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k,n_init", [(1, 1), (4, 1), (7, 3)])
def test_same_seed_same_clustering_as_sklearn(k, n_init):
    X = blobs(4000, 3, 6, seed=k)
    ours = KMeans(k, n_init=n_init, random_state=7).fit(X)
    theirs = sklearn_cluster.KMeans(k, n_init=n_init, random_state=7).fit(X)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    assert abs(ours.inertia_ - theirs.inertia_) <= 1e-9 * theirs.inertia_
    np.testing.assert_array_equal(kmeans_plusplus(X, k, random_state=3)[1],
                                  sklearn_cluster.kmeans_plusplus(X, k, random_state=3)[1])


def test_random_init_and_init_sample_draw_like_sklearn():
    X = blobs(3000, 2, 4, seed=3)
    ours = KMeans(4, init="random", random_state=5, n_init=2).fit(X)
    theirs = sklearn_cluster.KMeans(4, init="random", random_state=5, n_init=2).fit(X)
    assert abs(ours.inertia_ - theirs.inertia_) <= 1e-9 * theirs.inertia_
    sampled = KMeans(4, init_sample=300, random_state=5).fit(X)
    assert sampled.inertia_ <= 1.05 * ours.inertia_


def test_silhouette_matches_sklearn_and_naive():
    X = blobs(600, 3, 4, seed=4)
    labels = KMeans(4, random_state=0).fit(X).labels_
    ours = silhouette_score(X, labels, sample_size=None)
    assert ours == pytest.approx(sklearn_metrics.silhouette_score(X, labels), rel=1e-9)
    assert ours == pytest.approx(naive.silhouette(X, labels), rel=1e-12)
    sampled = silhouette_score(X, labels, sample_size=200, random_state=1)
    assert sampled == pytest.approx(sklearn_metrics.silhouette_score(X, labels, sample_size=200, random_state=1), rel=1e-9)
    singles = np.array([0, 1, 1, 2])
    assert silhouette_score(X[:4], singles, sample_size=None) == pytest.approx(naive.silhouette(X[:4], singles), rel=1e-12)
    assert np.isnan(silhouette_score(X, np.zeros(len(X), int), sample_size=None))


# --- threads, degenerate cases ------------------------------------------------------------------------------


def test_one_and_two_threads_identical():
    X = blobs(60_000, 3, 8, seed=5, spread=2.0)
    runs = []
    for n in (1, 2):
        km = KMeans(8, random_state=0, n_init=2, threads=n).fit(X)
        with threads(n):
            mb = MiniBatchKMeans(8, batch_size=5000, random_state=0).fit(X)
        runs.append((km.cluster_centers_, km.labels_, km.inertia_, km.n_iter_, mb.cluster_centers_,
                     silhouette_score(X, km.labels_, sample_size=500, random_state=0, threads=n)))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_degenerate_inputs():
    same = np.ones((10, 2))
    km = KMeans(3, random_state=0).fit(same)
    assert km.inertia_ == 0.0 and np.all(km.cluster_centers_ == 1.0)
    X = blobs(12, 3, 3, seed=6)
    exact = KMeans(12, random_state=0).fit(X)  # k = n: every point is a centre
    assert exact.inertia_ == 0.0
    assert sorted(exact.labels_) == list(range(12))
    one = KMeans(1, random_state=0).fit(X)
    np.testing.assert_allclose(one.cluster_centers_[0], X.mean(axis=0), rtol=1e-12)
    assert one.inertia_ == pytest.approx(((X - X.mean(axis=0)) ** 2).sum(), rel=1e-12)
    single = KMeans(1).fit(X[:1])
    assert single.inertia_ == 0.0 and list(single.labels_) == [0]


@pytest.mark.parametrize("X,k,message", [
    (np.ones((5, 2)), 0, "n_clusters must be >= 1"),
    (np.ones((5, 2)), 6, "more than the 5 customers"),
    (np.empty((0, 2)), 1, "empty population"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), 1, "feature 1 has 1 NaN or infinite values \\(first at row 0\\)"),
    (np.array([[1.0, 0.0], [np.inf, 1.0]]), 1, "feature 0 has 1 NaN or infinite values \\(first at row 1\\)"),
    (np.ones(5), 1, "2-dimensional"),
])
def test_bad_input_is_a_clear_error(X, k, message):
    with pytest.raises(RfmxError, match=message):
        KMeans(k).fit(X)


def test_bad_parameters_and_unfitted_model():
    X = blobs(50, 2, 2)
    with pytest.raises(RfmxError, match="init centres have shape"):
        KMeans(3, init=np.zeros((2, 2))).fit(X)
    with pytest.raises(RfmxError, match="init must be"):
        KMeans(3, init="kmeans").fit(X)
    with pytest.raises(RfmxError, match="not fitted"):
        KMeans(3).predict(X)
    with pytest.raises(RfmxError, match="has 3 features but the model was fitted with 2"):
        KMeans(2).fit(X).predict(np.ones((4, 3)))
    with pytest.raises(RfmxError, match="sample_weight"):
        KMeans(2).fit(X, sample_weight=np.ones(50))


# --- mini-batch ----------------------------------------------------------------------------------------------


def test_minibatch_partial_fit_is_a_running_mean():
    X = blobs(2000, 2, 3, seed=8)
    first, second = X[:1000], X[1000:]
    mb = MiniBatchKMeans(3, random_state=0, init_sample=500).partial_fit(first)
    after_first = mb.cluster_centers_.copy()
    mb.partial_fit(second)
    # Replay: seeds from k-means++ on the same sample, then every centre is the mean of the
    # points assigned to it so far (each batch labelled against the centres it met).
    rs = np.random.RandomState(0)
    seeds = kmeans_plusplus(first[rs.randint(0, 1000, 500)], 3, random_state=rs)[0]
    lab1 = naive.sq_dists(first, seeds).argmin(axis=1)
    lab2 = naive.sq_dists(second, after_first).argmin(axis=1)
    for j in range(3):
        np.testing.assert_allclose(after_first[j], first[lab1 == j].mean(axis=0), rtol=1e-12)
        pts = np.concatenate([first[lab1 == j], second[lab2 == j]])
        np.testing.assert_allclose(mb.cluster_centers_[j], pts.mean(axis=0), rtol=1e-12)
    assert mb.n_steps_ == 2


def test_minibatch_close_to_lloyd_and_saveable(tmp_path):
    X = blobs(40_000, 3, 6, seed=9)
    full = KMeans(6, random_state=0).fit(X)
    mb = MiniBatchKMeans(6, batch_size=4096, random_state=0, max_epochs=2).fit(X)
    assert mb.inertia_ <= 1.02 * full.inertia_
    mb.save(tmp_path / "mb.json")
    back = MiniBatchKMeans.load(tmp_path / "mb.json")
    np.testing.assert_array_equal(back.predict(X), mb.predict(X))
    back.partial_fit(X[:100])  # a loaded model keeps learning


# --- save / load -------------------------------------------------------------------------------------------------


def test_kmeans_json_round_trip(tmp_path):
    X = blobs(500, 3, 4)
    km = KMeans(4, random_state=0).fit(X)
    km.save(tmp_path / "km.json")
    text = (tmp_path / "km.json").read_text()
    assert json.loads(text)["estimator"] == "KMeans"
    back = KMeans.load(tmp_path / "km.json")
    np.testing.assert_array_equal(back.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(back.predict(X), km.labels_)
    assert back.inertia_ == km.inertia_ and back.n_iter_ == km.n_iter_
    assert back.score(X) == pytest.approx(-km.inertia_, rel=1e-12)
    assert (back.transform(X).min(axis=1) ** 2).sum() == pytest.approx(km.inertia_, rel=1e-12)
    with pytest.raises(RfmxError, match="not a saved MiniBatchKMeans"):
        MiniBatchKMeans.load(tmp_path / "km.json")


# --- customers: features, model, profiles ------------------------------------------------------------------------


def customers(n=3000, seed=0, refund_only=0):
    rng = np.random.default_rng(seed)
    n_orders = rng.geometric(0.3, n)
    recency = rng.integers(0, 700, n).astype(float)
    monetary = n_orders * rng.lognormal(3, 1, n)
    mask = np.zeros(n, bool)
    mask[:refund_only] = True
    return pa.table({
        "customer_id": pa.array(np.arange(n) + 100),
        "recency_days": pa.array(recency, mask=mask).cast(pa.int64()),
        "n_orders": pa.array(np.where(mask, 0, n_orders)),
        "monetary_total": pa.array(np.where(mask, -5.0, monetary)),
        "segment": pa.array(rng.choice(["champions", "loyal", "at risk"], n)),
    })


def test_feature_transform_zscore_and_robust():
    t = customers()
    X, kept = FeatureTransform().fit(t).transform(t)
    assert X.flags.f_contiguous and kept.all()
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X.std(axis=0), 1, rtol=1e-12)
    raw = np.log1p(t["monetary_total"].to_numpy())
    np.testing.assert_allclose(X[:, 2], (raw - raw.mean()) / raw.std(), rtol=1e-12)
    r = FeatureTransform(scaling="robust").fit(t)
    q1, med, q3 = np.percentile(raw, [25, 50, 75])
    assert r.center_[2] == med and r.scale_[2] == q3 - q1
    ones = t.set_column(2, "n_orders", pa.array(np.r_[np.ones(2900, int), np.arange(100) + 2]))
    fallback = FeatureTransform(scaling="robust").fit(ones)  # IQR 0: the std scales
    assert fallback.scale_[1] == pytest.approx(np.log1p(ones["n_orders"].to_numpy()).std())


@pytest.mark.parametrize("change,message", [
    (lambda t: t.set_column(1, "recency_days", pa.array(np.full(t.num_rows, 7))), "feature 'recency_days' is constant"),
    (lambda t: t.set_column(3, "monetary_total", pa.array(np.r_[np.nan, np.ones(t.num_rows - 1)])),
     "feature 'monetary_total' has 1 NaN or infinite values \\(first at row 0\\)"),
    (lambda t: t.drop_columns(["n_orders"]), "no column 'n_orders'"),
    (lambda t: t.set_column(2, "n_orders", t["segment"]), "feature 'n_orders' has type string"),
    (lambda t: t.slice(0, 0), "no customers to cluster"),
])
def test_bad_features_are_clear_errors(change, message):
    with pytest.raises(RfmxError, match=message):
        fit_clusters(change(customers()), 3)


def test_fit_clusters_nulls_predict_save_load(tmp_path):
    t = customers(2000, refund_only=30)
    model, clusters = fit_clusters(t, 5)
    assert clusters.null_count == 30 and clusters.type == pa.int32()
    assert not clusters.slice(0, 30).is_valid().to_numpy(zero_copy_only=False).any()
    model.save(tmp_path / "m.json")
    back = CustomerClusters.load(tmp_path / "m.json")
    assert back.predict(t).equals(clusters)
    new = customers(300, seed=5)  # new customers are placed with the stored transform
    X, _ = model.transform.transform(new)
    np.testing.assert_array_equal(back.predict(new).to_numpy(), model.estimator.predict(X))
    assert add_cluster_column(t, model=back)["cluster"].equals(pa.chunked_array([clusters]))
    assert add_cluster_column(t, 5).column_names[-1] == "cluster"
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(RfmxError, match="not an rfmx cluster model"):
        CustomerClusters.load(tmp_path / "bad.json")
    with pytest.raises(RfmxError, match="not found"):
        CustomerClusters.load(tmp_path / "missing.json")


def test_profiles_match_numpy():
    t = customers(2500, refund_only=10)
    model, clusters = fit_clusters(t, 4)
    prof = model.profiles(t, clusters)
    assert prof.num_rows == 5 and prof["cluster"][4].as_py() is None
    assert sum(prof["customers"].to_pylist()) == t.num_rows
    assert sum(prof["share_customers"].to_pylist()) == pytest.approx(1.0)
    lab = clusters.to_numpy(zero_copy_only=False)
    rec = t["recency_days"].to_numpy(zero_copy_only=False)
    money = t["monetary_total"].to_numpy()
    seg = np.array(t["segment"].to_pylist())
    for row in prof.to_pylist()[:4]:
        members = lab == row["cluster"]
        assert row["customers"] == members.sum()
        assert row["revenue"] == pytest.approx(money[members].sum())
        assert row["recency_median"] == np.median(rec[members])
        assert row["monetary_mean"] == pytest.approx(money[members].mean())
        names, counts = np.unique(seg[members], return_counts=True)
        assert row["segment"] == names[counts.argmax()]
        assert row["segment_share"] == pytest.approx(counts.max() / members.sum())
        assert row["label"].count(",") == 2
    assert prof["label"][4].as_py().startswith("not clustered")


def test_labels_read_from_the_centre():
    from rfmx.customer_features import centre_label

    tr = FeatureTransform()
    assert centre_label(tr, np.array([-1.0, 1.2, 0.9])) == "recent, frequent, high spend"
    assert centre_label(tr, np.array([1.0, 0.0, -0.7])) == "lapsed, occasional, low spend"
    assert centre_label(FeatureTransform(["x"]), np.array([0.6])) == "high x"


def test_choose_k_table():
    t = customers(1500)
    table = choose_k(t, [1, 2, 3, 4], silhouette_sample=400)
    assert table.column_names == ["k", "inertia", "variance_explained", "silhouette", "n_iter", "elbow_distance",
                                  "recommended"]
    assert table["k"].to_pylist() == [1, 2, 3, 4]
    assert table["silhouette"][0].as_py() is None
    assert table["variance_explained"][0].as_py() == pytest.approx(0.0, abs=1e-12)
    X, _ = FeatureTransform().fit(t).transform(t)
    km = KMeans(3, random_state=0).fit(X)
    assert table["inertia"][2].as_py() == km.inertia_
    sample = np.sort(np.random.RandomState(0).permutation(len(X))[:400])
    assert table["silhouette"][2].as_py() == silhouette_score(X[sample], km.labels_[sample], sample_size=None)
    assert parse_k_range("2..5") == [2, 3, 4, 5] and parse_k_range("8,2,4") == [2, 4, 8]
    with pytest.raises(RfmxError, match="cannot read"):
        parse_k_range("two..five")


# --- the command -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    from rfmx.generate import write_orders

    path = tmp_path_factory.mktemp("orders") / "orders.parquet"
    write_orders(str(path), 30_000, seed=3)
    return path


def test_cli_cluster_k_range_model_round_trip(orders, tmp_path):
    from rfmx.cli.main import main

    runner = CliRunner()
    out, model = tmp_path / "c.parquet", tmp_path / "m.json"
    res = runner.invoke(main, ["cluster", str(orders), "-k", "4", "--k-range", "2..4", "-o", str(out),
                               "--model-out", str(model), "--profiles", str(tmp_path / "p.csv"), "--threads", "1",
                               "--segments", "none"])
    assert res.exit_code == 0, res.output
    assert "silhouette" in res.output and "recency d (mean/med)" in res.output
    table = pq.read_table(out)
    assert table.column_names[-1] == "cluster" and table["cluster"].null_count < table.num_rows
    res2 = runner.invoke(main, ["cluster", str(orders), "--model-in", str(model), "-o", str(tmp_path / "c2.parquet"),
                                "--segments", "none"])
    assert res2.exit_code == 0, res2.output
    assert pq.read_table(tmp_path / "c2.parquet")["cluster"].equals(table["cluster"])


def test_cli_cluster_errors(orders, tmp_path):
    from rfmx.cli.main import main

    runner = CliRunner()
    res = runner.invoke(main, ["cluster", str(orders), "-k", "100000"])
    assert res.exit_code == 1 and "more than the" in res.output
    res = runner.invoke(main, ["cluster", str(orders), "--features", "recency_days,first_order"])
    assert res.exit_code == 1 and "has type timestamp" in res.output
    res = runner.invoke(main, ["cluster"])
    assert res.exit_code == 2


def test_help_imports_no_numba():
    code = "import sys; from rfmx.cli.main import main; import rfmx; rfmx.KMeans; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_score_clusters_option_adds_the_column(orders, tmp_path):
    from rfmx.cli.main import main

    out = tmp_path / "scored.parquet"
    res = CliRunner().invoke(main, ["score", str(orders), "--clusters", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert "segment" in table.column_names and table.column_names[-1] == "cluster"
    assert set(table["cluster"].drop_null().to_pylist()) == {0, 1, 2}


# --- damaged model files ------------------------------------------------------------------------------------------

def _edit(doc: dict, path: str, value):
    """``doc`` with the field at dotted ``path`` (list indices as numbers) set to ``value``,
    or removed when ``value`` is ``_DROP``."""
    doc = json.loads(json.dumps(doc))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = doc
    for p in parents:
        node = node[p]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return doc


_DROP = object()

DAMAGED_CLUSTER_MODELS = [
    ("kmeans.fitted.cluster_centers.1.0", float("nan"), r"cluster_centers\[1\]\[0\] is nan"),
    ("kmeans.fitted.cluster_centers.0.2", float("inf"), r"cluster_centers\[0\]\[2\] is inf"),
    ("kmeans.params.n_clusters", 5, "n_clusters is 5 but the model has 3 cluster centres"),
    ("kmeans.fitted.cluster_centers.2", [0.5, 1.0], r"cluster_centers\[2\] has 2 value\(s\), expected 3"),
    ("kmeans.fitted.cluster_centers", [], "cluster_centers must be a non-empty list"),
    ("labels", ["a", "b"], "labels has 2 entries, expected 3"),
    ("kmeans.fitted.cluster_centers", _DROP, "missing the cluster centres"),
    ("kmeans.params.n_clusters", _DROP, "missing 'n_clusters'"),
    ("features.center", [0.0, 1.0], "center has 2 value"),
    ("features.scale.1", 0.0, r"scale\[1\] must be positive"),
    ("features.scale.0", "1.5", r"scale\[0\] must be a number, got the string '1.5'"),
    ("features.log", [True, False], "log must be a list of 3 true/false flags"),
    ("features.features", ["recency_days", "n_orders"], "log must be a list of 2"),
    ("kmeans.params.n_clusters", "3", "n_clusters must be a whole number, got the string '3'"),
    ("kmeans.params.n_clusters", True, "n_clusters must be a whole number, got a boolean"),
    ("kmeans.fitted.inertia", -1.0, "inertia must be >= 0"),
    ("kmeans.estimator", "DBSCAN", "not a saved _Estimator: estimator 'DBSCAN'|estimator 'DBSCAN'"),
    ("kmeans", [1, 2], "the k-means model must be a JSON object, got a list of 2"),
    ("features", _DROP, "missing the feature transform"),
]


@pytest.fixture(scope="module")
def saved_cluster_model(tmp_path_factory):
    model, _ = fit_clusters(customers(800), 3)
    path = tmp_path_factory.mktemp("model") / "m.json"
    model.save(path)
    return json.loads(path.read_text())


@pytest.mark.parametrize("field, value, message", DAMAGED_CLUSTER_MODELS)
def test_damaged_cluster_model_is_a_one_line_error(saved_cluster_model, tmp_path, field, value, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_edit(saved_cluster_model, field, value)))  # NaN/inf written as literals
    with pytest.raises(RfmxError, match=message) as err:
        CustomerClusters.load(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("", "not valid JSON"), ("{\"format\": ", "not valid JSON"), ("[1, 2]", "holds a list of 2, not a JSON object"),
    ("\xff\xfe garbage", "not UTF-8"), ("null", "holds null, not a JSON object"),
])
def test_cluster_model_that_is_not_json(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_bytes(text.encode("latin-1"))
    for load in (CustomerClusters.load, KMeans.load):
        with pytest.raises(RfmxError, match=message) as err:
            load(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_damaged_kmeans_estimator_file(tmp_path):
    km = KMeans(3, random_state=0).fit(blobs(300, 2, 3))
    doc = km.to_dict()
    for field, value, message in [
            ("fitted.cluster_centers.0.1", float("nan"), r"cluster_centers\[0\]\[1\] is nan"),
            ("params.n_clusters", 4, "n_clusters is 4 but the model has 3"),
            ("fitted.counts", [1, 2], "counts has 2 value"),
            ("params.tol", -1, "tol must be >= 0"),
            ("params.init", "best", "init must be one of"),
            ("params.colour", "red", "KMeans has no parameter 'colour'"),
            ("fitted.n_iter", 2.5, "n_iter must be a whole number")]:
        path = tmp_path / "km.json"
        path.write_text(json.dumps(_edit(doc, field, value)))
        with pytest.raises(RfmxError, match=message):
            KMeans.load(path)
    path.write_text(json.dumps(doc).replace("3.", "1e999", 1))  # overflows to infinity in Python's json
    with pytest.raises(RfmxError, match="is inf"):
        KMeans.load(path)


def test_cli_cluster_with_a_damaged_model_writes_nothing(orders, saved_cluster_model, tmp_path):
    from badinput import fails_cleanly

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_edit(saved_cluster_model, "kmeans.fitted.cluster_centers.1.0", float("nan"))))
    out = tmp_path / "out"
    out.mkdir()
    fails_cleanly(["cluster", orders, "--model-in", bad, "-o", out / "c.parquet", "--segments", "none"],
                  r"bad\.json: cluster_centers\[1\]\[0\] is nan", out)
    bad.write_text("not json at all")
    fails_cleanly(["cluster", orders, "--model-in", bad, "-o", out / "c.parquet", "--segments", "none"],
                  r"bad\.json: not an rfmx cluster model \(not valid JSON", out)
