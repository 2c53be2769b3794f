"""Choosing k (the elbow, the recommendation, the k table) and naming clusters (unique labels)."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rfmx.cluster import K_CHOICE_KEY, KMeans, choose_k, fit_clusters, silhouette_score
from rfmx.customer_features import FeatureTransform, centre_label, cluster_labels
from rfmx.hierarchy import Ward
from rfmx.kchoice import SILHOUETTE_TOLERANCE, elbow, recommend_k


def naive_elbow(ks, inertia):
    """The k farthest below the chord from the first to the last point, on 0..1 scales,
    with the point-to-line distance written out (|a x + b y + c| / sqrt(a^2 + b^2))."""
    order = sorted(range(len(ks)), key=lambda i: ks[i])
    ks = [ks[i] for i in order]
    ys = [inertia[i] for i in order]
    if len(ks) < 3 or not ys[0] > ys[-1]:
        return None
    try:
        pts = [((k - ks[0]) / (ks[-1] - ks[0]), (y - ys[-1]) / (ys[0] - ys[-1])) for k, y in zip(ks, ys)]
    except (OverflowError, ZeroDivisionError):
        return None
    if not all(math.isfinite(y) for _, y in pts):
        return None
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    a, b, c = y1 - y0, x0 - x1, x1 * y0 - x0 * y1
    dist = []
    for x, y in pts:
        below = y < y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        dist.append(abs(a * x + b * y + c) / math.hypot(a, b) if below else 0.0)
    top = max(dist)
    if top <= 1e-12:
        return None
    return next(k for k, d in zip(ks, dist) if d >= top - 1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=12), st.integers(1, 3))
def test_elbow_is_the_point_farthest_below_the_chord(values, start):
    ks = list(range(start, start + len(values)))
    got, dist = elbow(ks, values)
    assert got == naive_elbow(ks, values)
    assert set(dist) == set(ks)


def test_elbow_of_a_clear_bend():
    assert elbow([1, 2, 3, 4, 5, 6], [100, 40, 20, 15, 12, 10])[0] == 3
    assert elbow([2, 3, 4, 5], [10, 9, 8, 7])[0] is None        # a straight line has no bend
    assert elbow([2, 3], [10, 5])[0] is None                     # fewer than three k
    assert elbow([2, 3, 4], [5, 6, 7])[0] is None                # inertia does not fall


@pytest.mark.parametrize("sil,k,best,reason", [
    # the highest silhouette is the elbow
    ([0.30, 0.35, 0.41, 0.30, 0.28], 4, 4, "has the highest silhouette (0.410) and is the elbow"),
    # the elbow (k = 4) is within the tolerance of the highest (k = 3)
    ([0.30, 0.405, 0.40, 0.30, 0.28], 4, 3, "is the elbow of the inertia curve and its silhouette (0.400) is within"),
    # the elbow is far below: the highest wins
    ([0.50, 0.30, 0.20, 0.30, 0.28], 2, 2, "elbow of the inertia curve is at k = 4, whose silhouette is lower (0.200)"),
    # two near the highest, the elbow not among them: the nearer one to the elbow
    ([0.50, 0.495, 0.20, 0.30, 0.28], 3, 2, "it is the nearest such k to the elbow"),
])
def test_recommendation_rules(sil, k, best, reason):
    ks = [2, 3, 4, 5, 6]
    inertia = [100, 50, 20, 17, 15]  # elbow at 4
    assert elbow(ks, inertia)[0] == 4
    choice = recommend_k(ks, inertia, sil)
    assert (choice.k, choice.best_silhouette_k, choice.elbow_k) == (k, best, 4)
    assert reason in choice.reason and choice.reason.startswith(f"k = {k}")


def test_recommendation_without_elbow_or_silhouette():
    choice = recommend_k([2, 3], [10.0, 5.0], [0.2, 0.3])
    assert choice.k == 3 and "no elbow in 2..3 (fewer than three k compared)" in choice.reason
    choice = recommend_k([1], [10.0], [None])
    assert choice.k is None and "no k to recommend" in choice.reason
    choice = recommend_k([1, 2, 3], [10.0, 2.0, 1.5], [None, float("nan"), None])
    assert choice.k == 2 and "no silhouette" in choice.reason


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e5), st.one_of(st.none(), st.floats(-1, 1))), min_size=1, max_size=10))
def test_recommended_k_is_near_the_best_silhouette(rows):
    ks = list(range(2, 2 + len(rows)))
    inertia = [r[0] for r in rows]
    sil = [r[1] for r in rows]
    choice = recommend_k(ks, inertia, sil)
    scored = [s for s in sil if s is not None]
    if scored:
        assert sil[ks.index(choice.k)] >= max(scored) - SILHOUETTE_TOLERANCE
    else:
        assert choice.k == elbow(ks, inertia)[0]


# --- the k table ----------------------------------------------------------------------------------------------


def blobs(n=3000, centres=4, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.uniform(-8, 8, (centres, 3))
    return C[rng.integers(0, centres, n)] + rng.normal(0, 0.7, (n, 3))


def test_k_table_recommends_the_true_number_of_blobs():
    X = blobs(4000, 4)
    table = choose_k(X, range(2, 9), silhouette_sample=1000)
    info = json.loads(table.schema.metadata[K_CHOICE_KEY.encode()])
    assert info["k"] == 4 and table["recommended"].to_pylist() == [k == 4 for k in range(2, 9)]
    choice = recommend_k(table["k"].to_pylist(), table["inertia"].to_pylist(), table["silhouette"].to_pylist())
    assert choice.k == info["k"] and choice.reason == info["reason"]
    assert table["elbow_distance"].to_pylist() == [choice.elbow_distance[k] for k in range(2, 9)]


def test_ward_k_table_is_one_tree_cut_at_every_k():
    X = blobs(3000, 5, seed=1)
    table = choose_k(X, [2, 3, 5, 8], method="ward", n_micro=60, silhouette_sample=None)
    assert table["n_iter"].null_count == 4
    for k, inertia, sil in zip(table["k"].to_pylist(), table["inertia"].to_pylist(), table["silhouette"].to_pylist()):
        w = Ward(k, n_micro=60, random_state=0).fit(X)
        assert inertia == pytest.approx(w.inertia_, rel=1e-12)
        assert sil == pytest.approx(silhouette_score(X, w.labels_, sample_size=None), rel=1e-12)
    info = json.loads(table.schema.metadata[K_CHOICE_KEY.encode()])
    assert info["method"] == "ward"
    assert info["k"] == recommend_k([2, 3, 5, 8], table["inertia"].to_pylist(), table["silhouette"].to_pylist()).k


# --- labels ---------------------------------------------------------------------------------------------------


@st.composite
def centre_sets(draw):
    k = draw(st.integers(1, 30))
    d = draw(st.integers(1, 5))
    grid = draw(st.booleans())
    elements = (st.sampled_from([-1.0, -0.2, 0.0, 0.7, 2.0]) if grid
                else st.floats(-3, 3, allow_nan=False, allow_infinity=False))
    return draw(hnp.arrays(np.float64, (k, d), elements=elements))


FEATURES = ("recency_days", "n_orders", "monetary_total", "tenure_days", "avg_order_value")


@settings(max_examples=200, deadline=None)
@given(centre_sets(), st.booleans())
def test_labels_are_unique_for_random_centres(C, named):
    features = FEATURES[: C.shape[1]] if named else tuple(f"x{i}" for i in range(C.shape[1]))
    tr = FeatureTransform(features)
    labels = cluster_labels(tr, C)
    assert len(set(labels)) == len(labels)
    base = [centre_label(tr, c) for c in C]
    for text, own in zip(labels, base):
        assert text == own if base.count(own) == 1 else text.startswith(own + " (") or text.startswith(own + " #")


def test_labels_say_how_clusters_differ():
    tr = FeatureTransform()
    C = np.array([[1.0, 1.0, 2.5], [1.1, 1.2, 0.8], [-1.0, 0.0, 0.0], [1.2, 0.9, 1.6]])
    assert cluster_labels(tr, C) == ["lapsed, frequent, high spend (highest spend)",
                                     "lapsed, frequent, high spend (lowest spend)",
                                     "recent, occasional, mid spend",
                                     "lapsed, frequent, high spend (2nd highest spend)"]
    R = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # recency ranks the most recent (lowest days) first
    assert cluster_labels(tr, R) == ["lapsed, occasional, mid spend (most recent)",
                                     "lapsed, occasional, mid spend (least recent)"]
    same = np.array([[0.0, 0.0, 0.0]] * 3)
    assert cluster_labels(tr, same) == [f"lapsing, occasional, mid spend #{i}" for i in (1, 2, 3)]


def test_a_fitted_model_names_every_cluster_once():
    rng = np.random.default_rng(5)
    n = 20_000
    orders = rng.geometric(0.05, n)
    table = pa.table({"recency_days": rng.integers(0, 900, n), "n_orders": orders,
                      "monetary_total": orders * rng.lognormal(4, 0.2, n)})
    for method in ("kmeans", "ward"):
        model, _ = fit_clusters(table, 12, method=method)
        assert len(set(model.labels)) == 12
        assert model.profiles(table)["label"].to_pylist()[:12] == model.labels
    assert len(set(KMeans(3).fit(blobs()).labels_)) == 3
