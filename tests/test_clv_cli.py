"""``rfmx clv`` and ``rfmx score --clv`` end to end on the CDNOW sample."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rfmx.cli.main import main

CDNOW = os.path.join(os.path.dirname(__file__), "data", "cdnow_sample.csv.gz")
ARGS = [CDNOW, "--time", "date", "--as-of", "1998-07-01"]


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_clv_holdout_run(runner, tmp_path):
    out, cal, model = tmp_path / "clv.parquet", tmp_path / "cal.csv", tmp_path / "bg.json"
    res = runner.invoke(main, ["clv", *ARGS, "--model", "bgnbd", "--holdout-start", "1997-10-01", "--unit", "week",
                               "--horizon", "12", "--discount", "0.01", "-o", str(out), "--calibration-out", str(cal),
                               "--save-model", str(model)])
    assert res.exit_code == 0, res.output
    assert "alpha = 4.4136" in res.output and "log-likelihood -9582.43" in res.output and "(se 0.378" in res.output
    assert "p = 6.2" in res.output and "frequency-spend correlation" in res.output
    assert "7+" in res.output
    t = pq.read_table(out)
    assert t.num_rows == 2357
    for c in ("frequency_cal", "frequency_holdout", "probability_alive", "expected_purchases", "expected_spend", "clv"):
        assert c in t.column_names
    assert np.isfinite(t.column("clv").to_numpy()).all()
    check = pcsv.read_csv(cal)
    assert check.column("n_customers").to_pylist()[0] == 1411
    saved = json.loads(model.read_text())
    assert saved["model"] == "bgnbd" and saved["time_unit"] == "week"

    # predict with the saved model: same numbers, no refit
    out2 = tmp_path / "clv2.parquet"
    res = runner.invoke(main, ["clv", *ARGS, "--holdout-start", "1997-10-01", "--unit", "week", "--load-model",
                               str(model), "--no-spend", "-o", str(out2)])
    assert res.exit_code == 0, res.output
    t2 = pq.read_table(out2)
    np.testing.assert_array_equal(t2.column("probability_alive").to_numpy(), t.column("probability_alive").to_numpy())
    assert "clv" not in t2.column_names
    res = runner.invoke(main, ["clv", *ARGS, "--load-model", str(model), "-o", str(out2)])
    assert res.exit_code != 0 and "pass --unit week" in res.output


def test_clv_pareto_with_saved_state(runner, tmp_path):
    state, out = tmp_path / "btyd.arrow", tmp_path / "p.csv"
    res = runner.invoke(main, ["clv", *ARGS, "--model", "pareto", "--period", "week", "--threads", "1", "--state-out", str(state),
                               "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "Pareto/NBD" in res.output and "beta =" in res.output
    res2 = runner.invoke(main, ["clv", "--state-in", str(state), "--model", "pareto", "--period", "week",
                                "-o", str(tmp_path / "p2.csv")])
    assert res2.exit_code == 0, res2.output
    assert pcsv.read_csv(out).equals(pcsv.read_csv(tmp_path / "p2.csv"))


@pytest.mark.parametrize("args, message", [
    (["--holdout-start", "1997-10-01", "--period", "week", "-o", "x.parquet"], "not the start of a week"),
    (["--calibration-out", "c.csv"], "needs --holdout-start"),
    (["-o", "x.txt"], "unknown output format"),
    (["--discount", "-2", "-o", "x.parquet"], "discount"),
])
def test_clv_errors(runner, tmp_path, args, message):
    res = runner.invoke(main, ["clv", *ARGS, *[a if not a.endswith(("parquet", "csv", "txt")) else str(tmp_path / a)
                                               for a in args]])
    assert res.exit_code != 0
    assert message in res.output


def test_score_with_clv(runner, tmp_path):
    out = tmp_path / "scores.parquet"
    res = runner.invoke(main, ["score", *ARGS, "--clv", "bgnbd", "-o", str(out)])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out)
    for c in ("segment", "r_score", "probability_alive", "expected_purchases", "expected_spend", "clv"):
        assert c in t.column_names
    alive = t.column("probability_alive").to_numpy()
    assert ((alive >= 0) & (alive <= 1)).all()
    # the same numbers as rfmx clv (days, 12 months, 1 %)
    res = runner.invoke(main, ["clv", *ARGS, "-o", str(tmp_path / "c.parquet")])
    c = pq.read_table(tmp_path / "c.parquet").to_pandas().set_index("customer_id")
    s = t.to_pandas().set_index("customer_id").loc[c.index]
    np.testing.assert_allclose(s["clv"], c["clv"], rtol=1e-12)
