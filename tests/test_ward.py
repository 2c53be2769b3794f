"""Ward linkage and two-stage hierarchical clustering: against scipy, against the naive
reference, threads, cuts, models and dendrogram files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import naive_hierarchy as naive
from rfmx.errors import RfmxError
from rfmx.hierarchy import Ward, cut_tree, leaf_order, read_dendrogram, ward_linkage

hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
distance_module = pytest.importorskip("scipy.spatial.distance")


def scipy_ward(X):
    """scipy's Ward linkage of the points ``X`` (through ``pdist``: scipy warns when points
    happen to look like a square distance matrix)."""
    return hierarchy.linkage(distance_module.pdist(X), method="ward")


@st.composite
def point_sets(draw, max_n=40, lattice=None):
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(1, 4))
    grid = draw(st.booleans()) if lattice is None else lattice
    elements = (st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0]) if grid
                else st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64))
    return draw(hnp.arrays(np.float64, (n, d), elements=elements))


def random_points(seed, n, d, weighted=False):
    """Points in general position (no tied costs) and integer weights."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, d)) * rng.uniform(0.5, 3, d)
    w = rng.integers(1, 20, n).astype(np.float64) if weighted else None
    return X, w


# --- the kernel against scipy and the naive reference -----------------------------------------------


@settings(max_examples=80, deadline=None)
@given(point_sets())
def test_ward_linkage_is_scipys_bit_for_bit(X):
    """Same merges, same heights, same sizes -- ties (lattice points, repeated points) too."""
    np.testing.assert_array_equal(ward_linkage(X), scipy_ward(X))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 30), st.integers(1, 4), st.booleans())
def test_weighted_ward_matches_the_naive_agglomeration(seed, n, d, weighted):
    X, w = random_points(seed, n, d, weighted)
    Z = ward_linkage(X, w)
    expected = naive.ward(X, w)
    got = naive.linkage_merges(Z)
    np.testing.assert_allclose([h for *_, h, _ in got], [h for *_, h, _ in expected], rtol=1e-9, atol=1e-12)
    assert [s for *_, s in got] == [s for *_, s in expected]
    for r in range(n):
        assert naive.partition_after(n, got, r) == naive.partition_after(n, expected, r)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 15), st.integers(1, 3))
def test_a_weight_stands_for_that_many_customers_at_the_point(seed, m, d):
    """Ward of distinct points weighted by multiplicity = scipy's Ward of the raw points
    (each repeated), above the zero-height merges of the repeats."""
    X, w = random_points(seed, m, d, weighted=True)
    w = np.minimum(w, 6)
    raw = np.repeat(X, w.astype(int), axis=0)
    owner = np.repeat(np.arange(m), w.astype(int))
    Z = ward_linkage(X, w)
    S = scipy_ward(raw)
    zero = len(raw) - m
    np.testing.assert_array_equal(S[:zero, 2], 0.0)
    np.testing.assert_allclose(Z[:, 2], S[zero:, 2], rtol=1e-9, atol=1e-12)
    for k in range(1, m + 1):
        ours = naive.labels_partition(cut_tree(Z, k)[owner])
        theirs = naive.labels_partition(hierarchy.fcluster(S, k, "maxclust"))
        assert ours == theirs


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 25))
def test_cuts_match_the_naive_partition_and_scipys_fcluster(seed, n):
    X, _ = random_points(seed, n, 2)
    Z = ward_linkage(X)
    merges = naive.linkage_merges(Z)
    for k in range(1, n + 1):
        labels = cut_tree(Z, k)
        part = naive.partition_after(n, merges, n - k)
        np.testing.assert_array_equal(labels, naive.dendrogram_numbering(Z, part))
        assert naive.labels_partition(labels) == naive.labels_partition(hierarchy.fcluster(Z, k, "maxclust"))
    for distance in np.r_[0.0, Z[:, 2], Z[:, 2] * 1.0001, Z[-1, 2] * 2]:
        got = naive.labels_partition(cut_tree(Z, distance=float(distance)))
        assert got == naive.labels_partition(hierarchy.fcluster(Z, distance, "distance"))
    order = leaf_order(Z)
    assert sorted(order.tolist()) == list(range(n))
    assert order.tolist() == hierarchy.leaves_list(Z).tolist()


@settings(max_examples=60, deadline=None)
@given(point_sets(max_n=60, lattice=True), st.integers(1, 70))
def test_distinct_points_match_the_naive_numbering(X, limit):
    from rfmx.kernels.hierarchy import distinct_points

    X = np.where(X == 0.0, -0.0, X) if limit % 2 else X  # -0.0 and 0.0 are one value
    codes, first = naive.distinct_points(X)
    got_codes = np.empty(len(X), dtype=np.int64)
    got_first = np.empty(limit, dtype=np.int64)
    found = distinct_points(np.ascontiguousarray(X.T), limit, got_codes, got_first)
    if len(first) > limit:
        assert found == -1
    else:
        assert found == len(first)
        np.testing.assert_array_equal(got_codes, codes)
        np.testing.assert_array_equal(got_first[:found], first)


# --- the estimator ------------------------------------------------------------------------------------------


def test_few_distinct_points_give_full_ward_on_the_points():
    X, _ = random_points(3, 300, 3)
    S = scipy_ward(X)
    for k in (1, 2, 5, 17, 300):
        w = Ward(k, n_micro=300).fit(X)
        np.testing.assert_array_equal(w.linkage_, S)  # the identity first stage: scipy bit for bit
        np.testing.assert_array_equal(w.micro_centers_, X)
        assert naive.labels_partition(w.labels_) == naive.labels_partition(hierarchy.fcluster(S, k, "maxclust"))
        np.testing.assert_array_equal(w.labels_, cut_tree(S, k))
    d = float(S[-5, 2])
    w = Ward(distance=d, n_micro=300).fit(X)
    assert naive.labels_partition(w.labels_) == naive.labels_partition(hierarchy.fcluster(S, d, "distance"))
    assert w.n_clusters_ == 5 and w.cut_height_ == d


def test_repeated_points_are_weighted_leaves():
    rng = np.random.default_rng(4)
    pts, _ = random_points(5, 40, 2)
    X = pts[rng.integers(0, 40, 2000)]
    w = Ward(6, n_micro=64).fit(X)
    codes, first = naive.distinct_points(X)
    np.testing.assert_array_equal(w.micro_centers_, X[first])
    np.testing.assert_array_equal(w.micro_counts_, np.bincount(codes))
    np.testing.assert_array_equal(w.micro_labels_, codes)
    assert w.micro_inertia_ == 0.0
    S = scipy_ward(X)
    assert naive.labels_partition(w.labels_) == naive.labels_partition(hierarchy.fcluster(S, 6, "maxclust"))


def test_two_stage_statistics_are_those_of_the_labels():
    X, _ = random_points(6, 20_000, 3)
    w = Ward(7, n_micro=50, micro_sample=4000, random_state=0).fit(X)
    assert len(w.micro_counts_) == 50 and w.micro_counts_.sum() == len(X)
    np.testing.assert_array_equal(np.bincount(w.micro_labels_), w.micro_counts_)
    for j in (0, 17, 49):
        np.testing.assert_allclose(w.micro_means_[j], X[w.micro_labels_ == j].mean(axis=0), rtol=1e-10, atol=1e-12)
    # each customer sits at its nearest micro-centre
    d2 = ((X[:, None, :] - w.micro_centers_[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(w.micro_labels_, d2.argmin(axis=1))
    np.testing.assert_array_equal(w.linkage_, ward_linkage(w.micro_means_, w.micro_counts_))
    np.testing.assert_array_equal(w.labels_, w.leaf_clusters_[w.micro_labels_])
    sse = sum(((X[w.labels_ == c] - X[w.labels_ == c].mean(axis=0)) ** 2).sum() for c in range(7))
    assert w.inertia_ == pytest.approx(sse, rel=1e-9)
    np.testing.assert_allclose(w.cluster_centers_, [X[w.labels_ == c].mean(axis=0) for c in range(7)], rtol=1e-9)
    np.testing.assert_array_equal(w.cluster_sizes_, np.bincount(w.labels_))
    np.testing.assert_array_equal(w.predict(X), w.labels_)


def test_two_stage_is_identical_with_one_and_two_threads():
    X, _ = random_points(7, 60_000, 3)
    runs = []
    for n in (1, 2):
        w = Ward(9, n_micro=120, micro_sample=20_000, random_state=3, threads=n).fit(X)
        runs.append((w.micro_centers_, w.micro_means_, w.micro_counts_, w.linkage_, w.labels_, w.inertia_,
                     w.predict(X[:5000])))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_recut_without_refitting():
    X, _ = random_points(8, 5000, 3)
    w = Ward(4, n_micro=80, random_state=0).fit(X)
    fresh = Ward(9, n_micro=80, random_state=0).fit(X)
    w.recut(9)
    np.testing.assert_array_equal(w.labels_, fresh.labels_)
    assert w.inertia_ == pytest.approx(fresh.inertia_, rel=1e-12) and w.n_clusters == 9
    w.recut(distance=float(w.linkage_[-3, 2]))
    assert w.n_clusters_ == 3
    with pytest.raises(RfmxError, match="more than the 80 leaves"):
        w.recut(81)


@pytest.mark.parametrize("kwargs,X,message", [
    (dict(n_clusters=5, n_micro=3), np.arange(20.0).reshape(10, 2), "n_clusters=5 is more than the 3 leaves"),
    (dict(n_clusters=11), np.arange(20.0).reshape(10, 2), "n_clusters=11 is more than the 10 customers"),
    (dict(n_clusters=None), np.arange(20.0).reshape(10, 2), "give n_clusters or distance"),
    (dict(distance=-1.0), np.arange(20.0).reshape(10, 2), "distance must be a number >= 0"),
    (dict(n_micro=10, micro_sample=5), np.arange(40.0).reshape(20, 2), "micro_sample=5 is smaller than n_micro=10"),
    (dict(n_micro=10_001, micro_sample=20_000), np.arange(40.0).reshape(20, 2), "n_micro=10001 is more than 10,000"),
    (dict(n_clusters=2), np.array([[0.0, np.nan], [1.0, 1.0]]), "feature 1 has 1 NaN"),
    (dict(n_clusters=1), np.empty((0, 2)), "empty population"),
])
def test_bad_parameters_are_clear_errors(kwargs, X, message):
    with pytest.raises(RfmxError, match=message):
        Ward(**kwargs).fit(X)


def test_ward_linkage_checks_its_input():
    with pytest.raises(RfmxError, match="weights must be finite and > 0"):
        ward_linkage(np.ones((3, 2)), [1.0, 0.0, 2.0])
    with pytest.raises(RfmxError, match="weights have shape"):
        ward_linkage(np.ones((3, 2)), [1.0, 2.0])
    assert ward_linkage(np.ones((1, 2))).shape == (0, 4)
    assert cut_tree(np.empty((0, 4)), 1).tolist() == [0]


# --- models and dendrograms ----------------------------------------------------------------------------------


def test_json_round_trip_and_dendrogram(tmp_path):
    X, _ = random_points(9, 8000, 3)
    w = Ward(5, n_micro=60, random_state=0).fit(X)
    w.save(tmp_path / "w.json")
    back = Ward.load(tmp_path / "w.json")
    np.testing.assert_array_equal(back.predict(X), w.labels_)
    np.testing.assert_array_equal(back.linkage_, w.linkage_)
    assert back.inertia_ == pytest.approx(w.inertia_, rel=1e-12)
    back.recut(8)  # a loaded tree can be cut again
    np.testing.assert_array_equal(back.predict(X), Ward(8, n_micro=60, random_state=0).fit(X).labels_)
    doc = w.dendrogram()
    json.dumps(doc, allow_nan=False)
    read = read_dendrogram(doc)
    np.testing.assert_array_equal(read["linkage"], w.linkage_)
    assert read["n_clusters"] == 5 and read["leaf_sizes"].tolist() == w.micro_counts_.tolist()
    (tmp_path / "d.json").write_text(json.dumps(doc))
    assert read_dendrogram(tmp_path / "d.json")["height"] == w.cut_height_


def _edited(doc, path, value):
    doc = json.loads(json.dumps(doc))
    *parents, last = [int(p) if p.lstrip("-").isdigit() else p for p in path.split(".")]
    node = doc
    for p in parents:
        node = node[p]
    node[last] = value
    return doc


@pytest.mark.parametrize("field,value,message", [
    ("fitted.linkage.0.0", 99, "merge 0 joins nodes 99 and"),
    ("fitted.linkage.3.1", 1.5, "merge 3 joins nodes"),
    ("fitted.linkage.2.2", -1.0, "merge 2 has height -1"),
    ("fitted.linkage.-1.3", 3, "has size 3, but its two children hold"),
    ("fitted.micro_counts.0", 0, "micro_counts must be whole numbers >= 1"),
    ("fitted.micro_centers.1.0", float("nan"), r"micro_centers\[1\]\[0\] is nan"),
    ("fitted.micro_means.2", [1.0], r"micro_means\[2\] has 1 value"),
    ("params.n_clusters", 500, "more than the 30 leaves"),
    ("params.n_clusters", None, "the cut is missing"),
    ("params.colour", "red", "Ward has no parameter 'colour'"),
    ("estimator", "KMeans", "not a saved Ward model"),
])
def test_damaged_ward_model_is_a_one_line_error(tmp_path, field, value, message):
    X, _ = random_points(10, 3000, 2)
    doc = Ward(4, n_micro=30, random_state=0).fit(X).to_dict()
    path = tmp_path / "w.json"
    path.write_text(json.dumps(_edited(doc, field, value)))
    with pytest.raises(RfmxError, match=message) as err:
        Ward.load(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_damaged_dendrogram_is_a_one_line_error(tmp_path):
    X, _ = random_points(11, 500, 2)
    doc = Ward(4, n_micro=30, random_state=0).fit(X).dendrogram()
    for field, value, message in [("format", "x", "not an rfmx dendrogram"),
                                  ("merges.0.1", 0, "merge 0 joins nodes"),
                                  ("cut.n_clusters", 31, "more than the 30 leaves"),
                                  ("leaf_sizes", [], "leaf_sizes must be a non-empty list")]:
        path = tmp_path / "d.json"
        path.write_text(json.dumps(_edited(doc, field, value)))
        with pytest.raises(RfmxError, match=message) as err:
            read_dendrogram(path)
        assert str(err.value).startswith(f"{path}: ")
