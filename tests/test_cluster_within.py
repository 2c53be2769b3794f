"""Clusters within segments: each segment clustered on its own equals clustering its rows
alone; small segments stay whole; models save, load and place new customers."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from rfmx.cluster import K_CHOICE_KEY, KMeans, choose_k
from rfmx.customer_features import FeatureTransform
from rfmx.errors import RfmxError
from rfmx.hierarchy import Ward
from rfmx.subclusters import WithinClusters, fit_within, load_cluster_model

SEGMENTS = ["Champions", "Loyal", "At Risk", "Lost"]


def customers(n=6000, seed=0, tiny=None, null_segment=0, refund_only=0):
    """A per-customer table with a dictionary ``segment`` column in map order."""
    rng = np.random.default_rng(seed)
    orders = rng.geometric(0.2, n)
    seg = rng.integers(0, len(SEGMENTS), n)
    if tiny is not None:  # a segment with only a few customers
        seg[seg == SEGMENTS.index(tiny)] = 0
        seg[:3] = SEGMENTS.index(tiny)
    mask = np.zeros(n, bool)
    mask[3:3 + null_segment] = True
    rec_mask = np.zeros(n, bool)
    rec_mask[n - refund_only:] = True if refund_only else False
    return pa.table({
        "customer_id": np.arange(n),
        "recency_days": pa.array(rng.integers(0, 700, n), mask=rec_mask),
        "n_orders": orders,
        "monetary_total": orders * rng.lognormal(3, 0.8, n),
        "segment": pa.DictionaryArray.from_arrays(pa.array(seg.astype(np.int32), mask=mask), pa.array(SEGMENTS)),
    })


def _rows_of(table, name):
    seg = table["segment"].to_pylist()
    return np.array([s == name for s in seg])


@pytest.mark.parametrize("method", ["kmeans", "ward"])
def test_each_segment_is_clustered_on_its_own(method):
    t = customers()
    model, clusters = fit_within(t, 3, method=method, **({"n_micro": 50} if method == "ward" else {}))
    X, kept = FeatureTransform().fit(t).transform(t)
    labels = clusters.to_numpy(zero_copy_only=False)
    assert model.labels == [f"{s} / {r}" for s in SEGMENTS for r in (1, 2, 3)]
    for i, name in enumerate(SEGMENTS):
        rows = _rows_of(t, name)
        alone = (Ward(3, n_micro=50, random_state=0) if method == "ward" else KMeans(3, random_state=0)).fit(X[rows])
        got = labels[rows] - 3 * i
        sizes = np.bincount(alone.labels_, minlength=3)
        rank = np.empty(3, dtype=int)
        rank[np.lexsort((np.arange(3), -sizes))] = np.arange(3)  # sub-clusters numbered largest first
        np.testing.assert_array_equal(got, rank[alone.labels_])
        assert list(np.bincount(got, minlength=3)) == sorted(sizes, reverse=True)
    sub = model.subsegments(clusters).to_pylist()
    assert sub[0] == model.labels[labels[0]] and all(" / " in s for s in sub)


def test_small_and_unknown_segments():
    t = customers(tiny="Lost", null_segment=5, refund_only=4)
    model, clusters = fit_within(t, 4)
    assert model.whole == [("Lost", "fewer customers (3 customers) than k = 4")]
    assert model.labels[-1] == "Lost" and model.n_clusters == 13
    lab = clusters.to_pylist()
    assert lab[:3] == [12, 12, 12]                        # the tiny segment is one cluster
    assert lab[3:8] == [None] * 5                           # null segment
    assert lab[-4:] == [None] * 4                           # null recency
    profiles = model.profiles(t, clusters)
    assert profiles.num_rows == 14 and profiles["description"][12].as_py() == ""
    # a Ward tree cannot have more leaves than distinct customers
    t = customers(2000)
    loyal = _rows_of(t, "Loyal")
    same = {"recency_days": 5, "n_orders": 2, "monetary_total": 10.0}
    for name, value in same.items():
        i = t.column_names.index(name)
        t = t.set_column(i, name, pa.array(np.where(loyal, value, t[name].to_numpy())))
    model, _ = fit_within(t, 2, method="ward", n_micro=40)
    assert model.whole == [("Loyal", f"fewer distinct customers ({loyal.sum():,} customers) than k = 2")]


def test_k_chosen_per_segment_is_each_segments_recommendation():
    t = customers(4000, seed=2)
    model, clusters = fit_within(t, k_values=range(2, 6), silhouette_sample=800)
    X, _ = FeatureTransform().fit(t).transform(t)
    for part in model.parts:
        rows = _rows_of(t, part.name)
        table = choose_k(X[rows], range(2, 6), silhouette_sample=800)
        expected = json.loads(table.schema.metadata[K_CHOICE_KEY.encode()])
        assert part.n_clusters == expected["k"] and part.k_choice["reason"] == expected["reason"]


def test_save_load_and_place_new_customers(tmp_path):
    t = customers(tiny="At Risk")
    model, clusters = fit_within(t, 3, method="ward", n_micro=40)
    model.save(tmp_path / "m.json")
    back = load_cluster_model(tmp_path / "m.json")
    assert isinstance(back, WithinClusters) and back.labels == model.labels
    assert back.predict(t).equals(clusters)
    new = customers(500, seed=9)
    X, _ = model.transform.transform(new)
    placed = back.predict(new).to_numpy(zero_copy_only=False)
    for part in model.parts:
        rows = _rows_of(new, part.name)
        want = part.first if part.estimator is None else part.first + part.order[part.estimator.predict(X[rows])]
        np.testing.assert_array_equal(placed[rows], want)
    other = new.set_column(4, "segment", pa.array(["Someone else"] * 500))
    assert back.predict(other).null_count == 500            # a segment the model does not know: no cluster
    with pytest.raises(RfmxError, match="no column 'segment' to cluster within"):
        back.predict(new.drop_columns(["segment"]))


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["segments"][1].update(first=7), r"segments\[1\].first is 7, expected 3"),
    (lambda d: d["segments"][0].update(order=[0, 0, 1]), r"segments\[0\].order must number the 3 clusters"),
    (lambda d: d["segments"][0].update(method="dbscan"), r"segments\[0\].method must be one of"),
    (lambda d: d["segments"].append(dict(d["segments"][0], first=12)), "a segment appears twice"),
    (lambda d: d.update(format="other"), "not an rfmx cluster model .* reads 'rfmx-clusters' and"),
    (lambda d: d.update(version=2), "not an rfmx within-segment cluster model"),
    (lambda d: d["segments"][2]["estimator"]["fitted"]["cluster_centers"][0].__setitem__(0, float("nan")),
     r"cluster_centers\[0\]\[0\] is nan"),
])
def test_damaged_within_model_is_a_one_line_error(tmp_path, edit, message):
    model, _ = fit_within(customers(2000), 3)
    doc = model.to_dict()
    edit(doc)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RfmxError, match=message) as err:
        load_cluster_model(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_bad_requests_are_clear_errors():
    t = customers(500)
    with pytest.raises(RfmxError, match="give k .* or k_values"):
        fit_within(t)
    with pytest.raises(RfmxError, match="not at a distance"):
        fit_within(t, 3, method="ward", distance=1.0)
    with pytest.raises(RfmxError, match="no column 'tier' to cluster within"):
        fit_within(t, 3, column="tier")


# --- the command --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    from rfmx.generate import write_orders

    path = tmp_path_factory.mktemp("orders") / "orders.parquet"
    write_orders(str(path), 30_000, seed=4)
    return path


def test_cli_within_segment(orders, tmp_path):
    import pyarrow.parquet as pq

    from badinput import run_cli

    out, model = tmp_path / "sub.parquet", tmp_path / "m.json"
    res = run_cli("cluster", orders, "--within", "segment", "-k", 2, "--method", "ward", "-o", out,
                  "--model-out", model, "--profiles", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    assert "clustered within 'segment'" in res.stderr and "Champions / 2" in res.stdout
    table = pq.read_table(out)
    assert table.column_names[-2:] == ["cluster", "subsegment"] and "segment" in table.column_names
    for seg, sub in zip(table["segment"].to_pylist(), table["subsegment"].to_pylist()):
        assert sub is None or sub == seg or sub.startswith(seg + " / ")
    again = run_cli("cluster", orders, "--model-in", model, "-o", tmp_path / "again.parquet")
    assert again.exit_code == 0, again.output
    assert pq.read_table(tmp_path / "again.parquet")["subsegment"].equals(table["subsegment"])
    chosen = run_cli("cluster", orders, "--within", "segment", "--k-range", "2..4", "--silhouette-sample", 500)
    assert chosen.exit_code == 0, chosen.output
    assert "rfmx: segment 'Champions': k = " in chosen.stderr


@pytest.mark.parametrize("args,message", [
    (["--within", "segment", "--segments", "none"], "--within clusters the segments of --segments"),
    (["--within", "segment", "-k", "2", "--k-range", "2..4"], "not both"),
    (["--within", "segment", "--method", "ward", "--distance", "1"], "drop --distance"),
    (["--within", "segment", "--k-range", "2..3", "--k-table", "k.csv"], "k is chosen per segment"),
])
def test_cli_within_usage_errors(orders, args, message):
    from badinput import run_cli

    res = run_cli("cluster", orders, *args)
    assert res.exit_code == 2 and message in res.output
