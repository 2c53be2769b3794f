"""Inputs of the report tests: every table rfmx report draws from, made by the rfmx commands
themselves from one small generated order history, as a user would make them."""
from __future__ import annotations

from pathlib import Path

from badinput import run_cli

ROWS = 12_000


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.output, result.stderr, result.exception)
    return result


def make_report_inputs(folder: Path) -> dict[str, Path]:
    """Run generate, score, timeline, cluster (k-means and Ward) and clv on ``ROWS`` order lines in ``folder``;
    returns the path of each table by the name of ``rfmx.build_report``'s keyword."""
    folder = Path(folder)
    orders = folder / "orders.parquet"
    paths = {"orders": orders, "scores": folder / "scores.parquet", "timeline": folder / "snapshots.parquet",
             "migration": folder / "migration.parquet", "cohorts": folder / "cohorts.parquet",
             "clusters": folder / "clusters.parquet", "k_table": folder / "k.csv", "clv": folder / "clv.parquet",
             "calibration": folder / "calibration.csv", "dendrogram": folder / "tree.json"}
    ok(run_cli("generate", orders, "--rows", ROWS, "--seed", 3))
    ok(run_cli("score", orders, "-o", paths["scores"]))
    ok(run_cli("timeline", orders, "--every", "quarter", "-o", paths["timeline"],
               "--migration-out", paths["migration"], "--cohorts-out", paths["cohorts"]))
    ok(run_cli("cluster", orders, "-k", 4, "--k-range", "2..4", "--k-table", paths["k_table"],
               "--silhouette-sample", 500, "-o", paths["clusters"]))
    ok(run_cli("cluster", orders, "--method", "ward", "-k", 4, "--micro-clusters", 60, "--dendrogram-out",
               paths["dendrogram"], "--segments", "none"))
    ok(run_cli("clv", orders, "--unit", "week", "-o", paths["clv"]))
    ok(run_cli("clv", orders, "--unit", "week", "--holdout-start", "2025-07-01",
               "--calibration-out", paths["calibration"]))
    return paths


__all__ = ["make_report_inputs", "ok", "ROWS"]
