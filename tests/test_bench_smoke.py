"""Smoke test of the benchmark suite (``python -m benchmarks``) at tiny scale, so it never rots.

Runs the real entry point in a subprocess from the repository top, with every input and
output under pytest's tmp_path, once with the peers that are installed and once with all
peers hidden (fake packages that raise ImportError first on the path), and checks that the
contenders agree, missing peers are skipped with a message, the result files are written
and nothing is left in the repository.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PEERS = ("pandas", "polars", "duckdb", "sklearn", "lifetimes", "matplotlib", "psutil")
TINY = ["--rows", "2e4", "--repeats", "1", "--warmup", "0", "--kmeans-iter", "5", "--no-cold", "--quiet"]


def _repo_files() -> set[str]:
    """What the suite would write by default: benchmarks/data and benchmarks/results."""
    return {str(p.relative_to(REPO)) for d in ("data", "results") for p in (REPO / "benchmarks" / d).rglob("*")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-data")


def run_suite(out: Path, data_dir: Path, args: list[str], pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    before = _repo_files()
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *TINY, "--data-dir", str(data_dir), "--out", str(out),
                           "--name", "smoke", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert _repo_files() == before, "the suite wrote to benchmarks/data or benchmarks/results"
    assert (out / "smoke.md").read_text().startswith("# rfmx benchmarks")
    results = json.loads((out / "smoke.json").read_text())
    assert "rfmx" in proc.stdout  # the table is printed too
    return results


def _by_workload(results) -> dict:
    out: dict = {}
    for bench in results["benchmarks"]:
        out.setdefault((bench["workload"], bench["ids"], bench.get("series")), []).append(bench)
    return out


def test_suite_runs_and_contenders_agree(tmp_path, data_dir):
    out = tmp_path / "results"
    results = run_suite(out, data_dir, ["--ids", "string", "--customers", "3000", "--customers-rows", "2e4"])
    benches = _by_workload(results)
    assert set(benches) == {("aggregate", "string", "rows"), ("scores", "string", None), ("incremental", "string", None),
                            ("timeline", "string", None), ("kmeans", "string", None), ("bgnbd", "string", None),
                            ("dask", "string", None), ("aggregate", "int", "customers")}
    installed = {name for name in PEERS if find_spec(name) is not None}
    for bench in results["benchmarks"]:
        for e in bench["contenders"]:
            assert e["status"] in ("ok", "skipped"), (bench["workload"], e)
            if e["status"] == "ok":
                assert e["median"]["wall_s"] > 0 and e["median"]["peak_rss_bytes"] > 0
                if e["name"] in ("scan", "bound"):
                    assert e["check"] == "rows"
            elif e["name"] in ("pandas", "polars", "duckdb", "sklearn"):
                assert e["name"] not in installed, f"{e['name']} is installed but was skipped: {e['message']}"
        ran = [e for e in bench["contenders"] if e["status"] == "ok" and e["name"] not in ("scan", "bound")]
        if len(ran) > 1:
            assert all(e["check"] == "agrees" for e in ran), bench
            assert all("wall_s" in e["ratios"] for e in ran if any(x["name"] == "rfmx" for x in ran))
    on_dask = {e["name"]: e for e in benches[("dask", "string", None)][0]["contenders"]}
    assert on_dask["rfmx-dask"]["status"] == "ok" and on_dask["rfmx-dask"]["check"] == "agrees"
    assert len(on_dask["rfmx-dask"]["extra"]["worker_peak_bytes"]) == 2
    rfmx = {b["workload"]: next(e for e in b["contenders"] if e["name"] == "rfmx") for b in results["benchmarks"]}
    assert rfmx["aggregate"]["status"] == "ok" and rfmx["incremental"]["status"] == "ok"
    customers = benches[("aggregate", "int", "customers")][0]
    assert customers["customers"] == 3000
    if {"pandas", "polars", "duckdb"} <= installed:
        agg = {e["name"]: e for e in benches[("aggregate", "string", "rows")][0]["contenders"]}
        assert all(agg[n]["check"] == "agrees" for n in ("rfmx", "pandas", "polars", "duckdb"))
    timeline = {e["name"]: e for e in benches[("timeline", "string", None)][0]["contenders"]}
    assert timeline["rfmx"]["status"] == "ok"
    assert timeline["rfmx"]["checksum"]["snapshots"] == 24  # two years of data: Feb 2024 ... Jan 2026
    assert set(timeline["rfmx"]["breakdown"]) == {"state", "snapshots"}
    for name in ("pandas", "polars", "duckdb"):
        if name in installed:
            assert timeline[name]["check"] == "agrees" and timeline["rfmx"]["check"] == "agrees", timeline[name]
    md = (out / "smoke.md").read_text()
    assert "| **rfmx** |" in md and "Scaling with customers" in md
    assert "Customers over time" in md and "state " in md and " + snapshots " in md
    assert results["machine"]["logical_cpus"] >= 1 and results["machine"]["versions"]["numpy"]


def test_suite_skips_missing_peers(tmp_path, data_dir):
    hidden = tmp_path / "hidden"
    for name in PEERS:
        (hidden / name).mkdir(parents=True)
        (hidden / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by the smoke test')\n")
    out = tmp_path / "results"
    results = run_suite(out, data_dir, ["--ids", "int", "--workloads", "aggregate", "--customers", "none"],
                        pythonpath=str(hidden))
    [agg] = results["benchmarks"]
    status = {e["name"]: e for e in agg["contenders"]}
    assert status["scan"]["status"] == "ok" and status["rfmx"]["status"] == "ok"
    assert status["bound"]["status"] == "ok" and status["bound"]["check"] == "rows"
    assert status["rfmx"]["check"] == "unchecked"
    for name in ("pandas", "polars", "duckdb"):
        assert status[name]["status"] == "skipped" and "not installed" in status[name]["message"]
    md = (out / "smoke.md").read_text()
    assert "## Skipped" in md and "pandas is not installed" in md
    assert not list(out.glob("*.png"))


def test_plot_of_a_series(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import report

    def bench(rows, wall):
        entry = {"name": "rfmx", "label": "rfmx", "status": "ok",
                 "median": {"wall_s": wall, "cpu_s": wall, "peak_rss_bytes": 100 * report.MB}}
        return {"workload": "aggregate", "ids": "int", "rows": rows, "customers": rows // 14, "series": "rows",
                "contenders": [entry]}

    results = {"suite": {"started": "now"}, "benchmarks": [bench(10**6, 0.1), bench(10**7, 1.0)]}
    path = report.plot(results, "rows", tmp_path / "rows.png")
    assert path and Path(path).stat().st_size > 1000
    assert report.plot(results, "customers", tmp_path / "customers.png") is None


def test_bound_folds_every_line_once(tmp_path, monkeypatch):
    """The lower-bound contender does the work it claims: each line lands in one row, once."""
    monkeypatch.syspath_prepend(str(REPO))
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import rfmx
    from benchmarks import bound
    from rfmx.kernels._policy import threads as use_threads

    path = tmp_path / "orders.parquet"
    pq.write_table(pa.Table.from_batches(list(rfmx.generate_orders(30_000, seed=3, refund_rate=0.05))), path)
    kept = {}
    fold = bound.fold_one_row_per_line

    def spy(hashes, time_us, amount_minor, n_workers, partition_bits, group, rows):
        fold(hashes, time_us, amount_minor, n_workers, partition_bits, group, rows)
        kept["rows"] = rows

    monkeypatch.setattr(bound, "fold_one_row_per_line", spy)
    for threads in (1, 2):
        with use_threads(threads):
            assert bound.bound_run(str(path), 2_000, 4_096) == 30_000
        rows = kept["rows"]
        table = pq.read_table(path)
        refunds = int(np.sum(table.column("amount").to_numpy() < 0))
        assert int(rows[:, :, 2].sum()) == 30_000 - refunds and int(rows[:, :, 3].sum()) == refunds


def test_timeline_contenders_agree_on_edge_cases(tmp_path, monkeypatch):
    """Refund-only customers (null recency), lines exactly at a month start (in the later
    snapshot only), a customer who appears late: every timeline contender gives the same
    snapshots, and the checksum sees a changed value."""
    monkeypatch.syspath_prepend(str(REPO))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.contenders import WORKLOADS, Skip, SnapshotSink

    t = lambda s: np.datetime64(s, "us")  # noqa: E731
    rows = [(1, "2024-01-05T10:00", 10.0), (2, "2024-01-31T23:59:59.999999", -3.25), (1, "2024-02-01T00:00", 5.5),
            (2, "2024-03-10T08:00", 7.0), (3, "2024-03-01T00:00", -1.0), (1, "2024-03-31T12:00", -5.5),
            (4, "2024-04-15T00:00", 0.0), (3, "2024-04-30T23:00", 2.01)]
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.table({"customer_id": pa.array([r[0] for r in rows], pa.int64()),
                             "order_time": pa.array([t(r[1]) for r in rows], pa.timestamp("us")),
                             "amount": pa.array([r[2] for r in rows], pa.float64())}), path)
    sums = {}
    for name, cls in WORKLOADS["timeline"].items():
        try:
            runner = cls({})
        except Skip:
            continue
        runner.set_checksum(True)
        sums[name] = runner.canonical(runner.run(str(path)))
    assert "rfmx" in sums and sums["rfmx"]["snapshots"] == 4 and sums["rfmx"]["recency_days_nulls"] == 3
    assert sums["rfmx"]["last_as_of"] == "2024-05-01T00:00:00" and sums["rfmx"]["customers"] == 4
    for name, checksum in sums.items():
        assert checksum == sums["rfmx"], name
    # The fingerprint moves with one value of one snapshot.
    table = pa.table({"customer_id": [1, 2], "recency_days": [3, None], "n_orders": [1, 0], "money_cents": [5, -3]})
    changed = table.set_column(3, "money_cents", pa.array([5, -4]))
    a, b = SnapshotSink(True), SnapshotSink(True)
    for sink, tab in ((a, table), (b, changed)):
        sink.add(t("2024-02-01"), tab)
    assert a.checksum_dict()["digest"] != b.checksum_dict()["digest"]


def test_end_to_end_contenders_agree(tmp_path):
    # fresh processes, file in to Parquet out; every output read back and checked against rfmx's
    from rfmx.generate import write_orders

    orders = tmp_path / "orders.parquet"
    write_orders(orders, 30_000, shape="even")
    engines = ",".join(["rfmx"] + [e for e in ("duckdb", "polars") if find_spec(e)])
    out = tmp_path / "e2e.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.end_to_end", "--orders", str(orders), "--tiny",
                           "--repeats", "1", "--warmup", "0", "--engines", engines, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {r["contender"] for r in rows} == {f"{e}-{w}" for e in engines.split(",") for w in ("aggregate", "score")}
    assert all(r["status"] == "ok" and r["wall_s"] > 0 and r["out_bytes"] > 0 for r in rows), rows
    assert len({r["input"] for r in rows}) == 2


@pytest.mark.skipif(find_spec("duckdb") is None, reason="the grouped contender is DuckDB")
def test_grouped_contenders_agree(tmp_path):
    out = tmp_path / "groups.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.groups", "--rows", "30000", "--shops", "20",
                           "--repeats", "1", "--warmup", "0", "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "| rfmx-groups |" in text and "| duckdb-groups |" in text and "differ" not in text
