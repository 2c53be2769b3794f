"""rfmx cluster --method ward, --distance, --dendrogram-out, re-cutting a saved tree, and
--k-range fitting the recommended k."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import rfmx
from badinput import run_cli
from rfmx.cluster import CustomerClusters, fit_clusters
from rfmx.hierarchy import read_dendrogram


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    from rfmx.generate import write_orders

    path = tmp_path_factory.mktemp("orders") / "orders.parquet"
    write_orders(str(path), 40_000, seed=6)
    return path


@pytest.fixture(scope="module")
def customers(orders):
    return rfmx.aggregate(str(orders))


def test_ward_command_equals_the_api_and_saves_its_tree(orders, customers, tmp_path):
    out, model, tree = tmp_path / "c.parquet", tmp_path / "m.json", tmp_path / "tree.json"
    res = run_cli("cluster", orders, "--method", "ward", "-k", 5, "--micro-clusters", 90, "-o", out,
                  "--model-out", model, "--dendrogram-out", tree, "--segments", "none")
    assert res.exit_code == 0, res.output
    assert "Ward over 90 micro-clusters cut at k = 5" in res.stderr
    expected_model, expected = fit_clusters(customers, 5, method="ward", n_micro=90)
    assert pq.read_table(out)["cluster"].combine_chunks().equals(expected)
    doc = json.loads(tree.read_text())
    read = read_dendrogram(tree)
    np.testing.assert_array_equal(read["linkage"], expected_model.estimator.linkage_)
    assert read["n_clusters"] == 5 and doc["labels"] == expected_model.labels
    assert doc["features"] == ["recency_days", "n_orders", "monetary_total"]
    for line, label in zip(res.stdout.splitlines()[1:], expected_model.labels):
        assert label in line
    # the saved tree places customers again, and is cut again at another k without refitting
    again = run_cli("cluster", orders, "--model-in", model, "-o", tmp_path / "again.parquet", "--segments", "none")
    assert again.exit_code == 0, again.output
    assert pq.read_table(tmp_path / "again.parquet")["cluster"].equals(pq.read_table(out)["cluster"])
    recut = run_cli("cluster", orders, "--model-in", model, "-k", 8, "-o", tmp_path / "recut.parquet",
                    "--model-out", tmp_path / "m8.json", "--segments", "none")
    assert recut.exit_code == 0, recut.output
    assert "tree cut again at k = 8" in recut.stderr
    _, eight = fit_clusters(customers, 8, method="ward", n_micro=90)
    assert pq.read_table(tmp_path / "recut.parquet")["cluster"].combine_chunks().equals(eight)
    assert CustomerClusters.load(tmp_path / "m8.json").n_clusters == 8


def test_ward_cut_at_a_distance(orders, customers, tmp_path):
    model, _ = fit_clusters(customers, 4, method="ward")
    height = float(model.estimator.linkage_[-6, 2])  # the sixth-highest merge: 6 clusters at that height
    out = tmp_path / "d.parquet"
    res = run_cli("cluster", orders, "--method", "ward", "--distance", height, "-o", out, "--segments", "none")
    assert res.exit_code == 0, res.output
    assert f"cut at height {height:g} (6 clusters)" in res.stderr
    assert set(pq.read_table(out)["cluster"].drop_null().to_pylist()) == set(range(6))


def test_k_range_alone_fits_the_recommended_k(orders, tmp_path):
    out, table = tmp_path / "c.parquet", tmp_path / "k.csv"
    res = run_cli("cluster", orders, "--k-range", "2..6", "--k-table", table, "-o", out, "--silhouette-sample", 600,
                  "--segments", "none")
    assert res.exit_code == 0, res.output
    k = pcsv.read_csv(table)
    chosen = [v for v, r in zip(k["k"].to_pylist(), k["recommended"].to_pylist()) if r]
    assert len(chosen) == 1
    assert f"rfmx: recommended k = {chosen[0]}" in res.stderr
    assert f"{chosen[0]} *" in res.stdout
    assert len(set(pq.read_table(out)["cluster"].drop_null().to_pylist())) == chosen[0]
    ward = run_cli("cluster", orders, "--method", "ward", "--k-range", "2..5", "--silhouette-sample", 600,
                   "--segments", "none")
    assert ward.exit_code == 0 and "rfmx: recommended k = " in ward.stderr


@pytest.mark.parametrize("args,message", [
    (["--distance", "1.5"], "--distance is an option of --method ward"),
    (["--micro-clusters", "50"], "--micro-clusters is an option of --method ward"),
    (["--dendrogram-out", "t.json"], "--dendrogram-out writes the tree of --method ward"),
    (["--method", "ward", "--mini-batch", "1000"], "--mini-batch is a k-means option"),
    (["--method", "ward", "--distance", "1", "-k", "3"], "give one"),
    (["--method", "ward", "--model-in", "m.json"], "--model-in places customers with a saved model"),
    (["--method", "ward", "--micro-sample", "100"], "--micro-sample 100 is fewer customers than the 256"),
])
def test_ward_usage_errors(orders, args, message):
    res = run_cli("cluster", orders, *args)
    assert res.exit_code == 2 and message in res.output


def test_ward_errors_write_nothing(orders, customers, tmp_path):
    from badinput import snapshot

    res = run_cli("cluster", orders, "--method", "ward", "-k", 30, "--micro-clusters", 20)
    assert res.exit_code == 2 and "k = 30 is more than the 20 micro-clusters" in res.output
    # a tree with fewer leaves than k (few distinct customers): a one-line error after reading, nothing written
    out = tmp_path / "out"
    out.mkdir()
    few = tmp_path / "few.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"customer_id": [1, 2, 3, 4, 4], "order_time": pa.array(
        ["2025-01-01", "2025-01-01", "2025-01-01", "2025-02-01", "2025-02-02"]).cast(pa.timestamp("s")),
        "amount": [10.0, 10.0, 10.0, 20.0, 20.0]}), few)  # two distinct customers
    before = snapshot(out)
    res = run_cli("cluster", few, "--method", "ward", "-k", 3, "-o", out / "c.parquet", "--dendrogram-out",
                  out / "t.json", "--segments", "none")
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("Error: n_clusters=3 is more than the 2 leaves of the tree")
    assert snapshot(out) == before
    model = tmp_path / "km.json"
    fit_clusters(customers, 3)[0].save(model)
    res = run_cli("cluster", orders, "--model-in", model, "-k", 5)
    assert res.exit_code == 2 and "re-cut a Ward model's tree" in res.output
