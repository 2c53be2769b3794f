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
                               "--model-out", str(model)])
    assert res.exit_code == 0, res.output
    # fitted parameters are diagnostics: on stderr, as with rfmx score --clv; the check table on stdout
    assert "alpha = 4.4136" in res.stderr and "log-likelihood -9582.43" in res.stderr and "(se 0.378" in res.stderr
    assert "p = 6.2" in res.stderr and "frequency-spend correlation" in res.stderr
    assert "alpha" not in res.stdout and "7+" in res.stdout
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
    res = runner.invoke(main, ["clv", *ARGS, "--holdout-start", "1997-10-01", "--unit", "week", "--model-in",
                               str(model), "--no-spend", "-o", str(out2)])
    assert res.exit_code == 0, res.output
    t2 = pq.read_table(out2)
    np.testing.assert_array_equal(t2.column("probability_alive").to_numpy(), t.column("probability_alive").to_numpy())
    assert "clv" not in t2.column_names
    res = runner.invoke(main, ["clv", *ARGS, "--model-in", str(model), "-o", str(out2)])
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


def _cdnow_with_a_zero_spend_repeat_buyer():
    """The CDNOW sample plus, as in CDNOW_master, a repeat buyer whose repeat purchases cost 0."""
    import pyarrow as pa

    t = pcsv.read_csv(CDNOW)
    extra = pa.table({"customer_id": [99999] * 3, "date": ["1997-02-03", "1997-05-06", "1997-09-09"],
                      "n_cds": [1, 1, 1], "amount": [12.5, 0.0, 0.0]})
    return pa.concat_tables([t, extra.cast(t.schema)])


def test_clv_default_options_with_a_zero_spend_repeat_buyer(runner, tmp_path):
    src = tmp_path / "cdnow.csv"
    pcsv.write_csv(_cdnow_with_a_zero_spend_repeat_buyer(), src)
    out = tmp_path / "clv.parquet"
    res = runner.invoke(main, ["clv", str(src), "--time", "date", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 repeat buyer(s) with zero repeat spend left out of the Gamma-Gamma fit" in res.stderr
    assert "zero repeat spend" not in res.stdout
    t = pq.read_table(out).to_pandas().set_index("customer_id")
    assert len(t) == 2358 and np.isfinite(t[["expected_spend", "clv"]].to_numpy()).all()
    row = t.loc[99999]
    assert row.frequency == 2 and row.monetary_value == 0 and 0 < row.expected_spend < t.expected_spend.max()


def test_clv_is_identical_whatever_the_order_of_the_input_files(runner, tmp_path):
    # the same orders, split by customer into files given in several random orders
    table = _cdnow_with_a_zero_spend_repeat_buyer()
    rng = np.random.default_rng(7)
    ids = np.unique(table.column("customer_id").to_numpy())
    part = dict(zip(ids, rng.integers(0, 4, len(ids))))
    which = np.array([part[c] for c in table.column("customer_id").to_numpy()])
    files = []
    for k in range(4):
        files.append(tmp_path / f"part-{k}.csv")
        pcsv.write_csv(table.filter(which == k), files[-1])
    results = []
    for trial in range(3):
        order = rng.permutation(4)
        out, model, spend = (tmp_path / f"{trial}-{name}" for name in ("clv.parquet", "bg.json", "gg.json"))
        res = runner.invoke(main, ["clv", *[str(files[i]) for i in order], "--time", "date", "--as-of", "1998-07-01",
                                   "-o", str(out), "--model-out", str(model), "--spend-model-out", str(spend)])
        assert res.exit_code == 0, res.output
        fitted = [{k: v for k, v in json.loads(p.read_text()).items() if k != "optimizer"} for p in (model, spend)]
        results.append((fitted, pq.read_table(out).sort_by("customer_id")))
    (fitted0, t0), rest = results[0], results[1:]
    for fitted, t in rest:
        assert fitted == fitted0  # parameters, standard errors, log-likelihoods: bit for bit
        assert t.equals(t0)       # every prediction column, bit for bit, by customer


@pytest.mark.parametrize("option, content, message", [
    ("--model-in", '{"format": "rfmx-clv-model", "version": 1, "model": "bgnbd", '
                     '"params": {"r": 0.24, "alpha": NaN, "a": 0.79, "b": 2.4}}', "BG/NBD parameter 'alpha' is nan"),
    ("--model-in", '{"format": "rfmx-clv-model", "version": 1, "model": "bgnbd", '
                     '"params": {"r": 0.24, "alpha": 4.4, "a": -0.79, "b": 2.4}}', "parameter 'a' must be positive"),
    ("--model-in", "not json", "not an rfmx CLV model file"),
    ("--spend-model-in", '{"format": "rfmx-clv-model", "version": 1, "model": "gamma_gamma", '
                           '"params": {"p": 6.2, "q": 3.7}}', "missing Gamma-Gamma parameter 'v'"),
    ("--spend-model-in", '{"format": "rfmx-clv-model", "version": 1, "model": "gammagamma", '
                           '"params": {"p": 6.2, "q": 3.7, "v": 15}}', "unknown model 'gammagamma'"),
])
def test_clv_with_a_damaged_model_file_writes_nothing(tmp_path, option, content, message):
    from badinput import fails_cleanly

    model = tmp_path / "model.json"
    model.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    fails_cleanly(["clv", *ARGS, option, model, "-o", out / "clv.parquet", "--state-out", out / "s.arrow"],
                  rf"model\.json: .*{message}", out)


def test_former_model_option_names_still_work_with_a_note(runner, tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    for folder, names in ((new, ("--model-out", "--spend-model-out")), (old, ("--save-model", "--save-spend-model"))):
        folder.mkdir()
        res = runner.invoke(main, ["clv", *ARGS, "--unit", "week", "-o", str(folder / "clv.parquet"), names[0],
                                   str(folder / "bg.json"), names[1], str(folder / "gg.json")])
        assert res.exit_code == 0, res.output
    assert "rfmx: --save-model is deprecated; use --model-out" in res.stderr
    assert "rfmx: --save-spend-model is deprecated; use --spend-model-out" in res.stderr
    assert pq.read_table(new / "clv.parquet").equals(pq.read_table(old / "clv.parquet"))
    res = runner.invoke(main, ["clv", *ARGS, "--unit", "week", "--load-model", str(old / "bg.json"),
                               "--load-spend-model", str(old / "gg.json"), "-o", str(old / "again.parquet")])
    assert res.exit_code == 0, res.output
    assert "--load-model is deprecated; use --model-in" in res.stderr
    assert pq.read_table(old / "again.parquet").equals(pq.read_table(old / "clv.parquet"))
    assert "--save-model" not in runner.invoke(main, ["clv", "--help"]).output  # hidden


def test_horizon_unit(runner, tmp_path):
    def clv_total(*args):
        out = tmp_path / "clv.parquet"
        res = runner.invoke(main, ["clv", *ARGS, "--unit", "week", "-o", str(out), *args])
        assert res.exit_code == 0, res.output
        t = pq.read_table(out)
        return t.column("clv").to_numpy().sum(), t.column("expected_purchases").to_numpy()

    months, purchases_12m = clv_total("--horizon", "12")
    assert clv_total("--horizon", "12", "--horizon-unit", "month")[0] == months  # the default: months
    weeks, purchases_52w = clv_total("--horizon", "52", "--horizon-unit", "week")
    # 52 weeks is 11.97 lifetimes months: nearly the same value and purchases, discounted per week
    assert abs(weeks / months - 1) < 0.01
    np.testing.assert_allclose(purchases_52w, purchases_12m, rtol=0.01)
    days, _ = clv_total("--horizon", "360", "--horizon-unit", "day")
    assert abs(days / months - 1) < 0.01
    # --unit does not change what --horizon counts
    out = tmp_path / "d.parquet"
    assert runner.invoke(main, ["clv", *ARGS, "--unit", "day", "-o", str(out)]).exit_code == 0
    assert abs(pq.read_table(out).column("clv").to_numpy().sum() / months - 1) < 0.05


def test_score_clv_horizon_unit(runner, tmp_path):
    totals = []
    for args in (["--clv-horizon", "12"], ["--clv-horizon", "52", "--clv-horizon-unit", "week"]):
        out = tmp_path / "s.parquet"
        res = runner.invoke(main, ["score", *ARGS, "--clv", "bgnbd", "-o", str(out), *args])
        assert res.exit_code == 0, res.output
        totals.append(np.nansum(pq.read_table(out).column("clv").to_numpy(zero_copy_only=False)))
    assert abs(totals[1] / totals[0] - 1) < 0.01


def test_clv_mbgnbd_writes_what_bgnbd_writes(runner, tmp_path):
    outs = {}
    for name in ("bgnbd", "mbgnbd"):
        out = tmp_path / f"{name}.parquet"
        res = runner.invoke(main, ["clv", *ARGS, "--model", name, "--unit", "week", "-o", str(out)])
        assert res.exit_code == 0, res.output
        outs[name] = pq.read_table(out)
    assert outs["mbgnbd"].schema.equals(outs["bgnbd"].schema)
    assert "MBG/NBD: 2,357 customers" in res.stderr
    alive = outs["mbgnbd"].column("probability_alive").to_numpy()
    one_time = outs["mbgnbd"].column("frequency").to_numpy() == 0
    assert (alive[one_time] < 1).all()  # MBG/NBD: one-time buyers may have left


def test_clv_bgbb_counts_periods(runner, tmp_path):
    out, model = tmp_path / "bb.parquet", tmp_path / "bb.json"
    res = runner.invoke(main, ["clv", *ARGS, "--model", "bgbb", "--period", "week", "--horizon", "26",
                               "--horizon-unit", "week", "-o", str(out), "--model-out", str(model)])
    assert res.exit_code == 0, res.output
    assert "BG/BB: 2,357 customers" in res.stderr and "delta =" in res.stderr
    t = pq.read_table(out)
    assert np.isfinite(t.column("clv").to_numpy()).all()
    from rfmx.clv import BGBB

    saved = BGBB.load(model)
    assert saved.time_unit_ == "week"
    np.testing.assert_allclose(t.column("expected_purchases").to_numpy(), saved.expected_purchases(26, t), rtol=1e-12)
    # --unit day with --period week: the same weeks (times converted back to periods)
    res = runner.invoke(main, ["clv", *ARGS, "--model", "bgbb", "--period", "week", "--unit", "day", "--horizon",
                               "26", "--horizon-unit", "week", "--model-in", str(model), "--no-spend",
                               "-o", str(tmp_path / "bb2.parquet")])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(pq.read_table(tmp_path / "bb2.parquet").column("expected_purchases").to_numpy(),
                                  t.column("expected_purchases").to_numpy())
    for args, message in [
        (["--period", "week"], "a month is not a whole number of weeks"),
        (["--model-in", str(model)], "pass --period week"),
    ]:
        res = runner.invoke(main, ["clv", *ARGS, "--model", "bgbb", *args, "-o", str(tmp_path / "x.parquet")])
        assert res.exit_code != 0 and message in res.output, res.output


def test_clv_compare(runner, tmp_path):
    cmp = tmp_path / "models.csv"
    res = runner.invoke(main, ["clv", *ARGS, "--holdout-start", "1997-09-29", "--period", "week", "--compare", "all",
                               "--compare-out", str(cmp), "--no-spend"])
    assert res.exit_code == 0, res.output
    table = pcsv.read_csv(cmp).to_pandas()
    assert table["model"].tolist() == ["bgnbd", "mbgnbd", "pareto", "bgbb"] and (table["status"] == "ok").all()
    best = table.loc[table["mae_customer"].idxmin(), "model"]
    assert table.set_index("model")["best"][best] and f"best: {best} (lowest MAE per customer" in res.stdout
    assert "MAE/customer" in res.stdout
    res = runner.invoke(main, ["clv", *ARGS, "--holdout-start", "1997-09-29", "--period", "week", "--compare",
                               "bgnbd,bgbb", "--no-spend"])
    assert res.exit_code == 0 and "pareto" not in res.stdout.split("model comparison")[1]
    for args, message in [
        (["--compare", "bgnbd"], "--compare needs --holdout-start"),
        (["--holdout-start", "1997-10-01", "--compare", "bgnbd,sbg"], "choose from bgnbd, mbgnbd, pareto, bgbb"),
        (["--holdout-start", "1997-10-01", "--compare-out", "x.csv"], "--compare-out needs --compare"),
    ]:
        res = runner.invoke(main, ["clv", *ARGS, *args])
        assert res.exit_code == 2 and message in res.output, res.output


def test_clv_sbg_survivors_and_contracts(runner, tmp_path):
    proj, model = tmp_path / "proj.csv", tmp_path / "sbg.json"
    res = runner.invoke(main, ["clv", "--model", "sbg", "--survivors", "1000,631,468,382,326,289,262,241",
                               "--horizon", "5", "-o", str(proj), "--model-out", str(model)])
    assert res.exit_code == 0, res.output
    assert "alpha = 0.704" in res.stderr and "beta = 1.182" in res.stderr and "survival" in res.stdout
    p = pcsv.read_csv(proj).to_pandas()
    assert p["period"].tolist() == list(range(13)) and p["observed_survival"].iloc[7] == pytest.approx(0.241, rel=1e-14)
    contracts = tmp_path / "contracts.csv"
    contracts.write_text("customer_id,start,end\n1,0,3\n2,0,\n3,2,4\n4,5,\n5,1,2\n")
    out = tmp_path / "derl.parquet"
    res = runner.invoke(main, ["clv", str(contracts), "--model", "sbg", "--model-in", str(model), "--discount", "0.1",
                               "-o", str(out), "--projection-out", str(tmp_path / "ret.csv")])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out).to_pandas()
    assert t["customer_id"].tolist() == [1, 2, 3, 4, 5] and t["active"].tolist() == [False, True, False, True, False]
    assert t["periods"].tolist() == [3, 6, 2, 1, 1]
    from rfmx.clv import SBG

    sbg = SBG.load(model)
    np.testing.assert_allclose(t["derl"][[1, 3]], sbg.derl([5, 0], 0.1), rtol=1e-14)
    assert (t["derl"][[0, 2, 4]] == 0).all()
    res = runner.invoke(main, ["clv", str(contracts), "--model", "sbg", "-o", str(tmp_path / "fit.csv")])
    assert res.exit_code == 0 and "sBG: 5 customers" in res.stderr, res.output
    for args, message in [
        (["--model", "sbg"], "needs SOURCES (contracts), --survivors or --model-in"),
        (["--model", "sbg", str(contracts), "--survivors", "10,5"], "SOURCES (contracts) or --survivors, not both"),
        (["--model", "sbg", "--survivors", "10,5", "--holdout-start", "2020-01-01"],
         "--holdout-start is not an option"),
        (["--model", "sbg", "--survivors", "10,x"], "give whole numbers separated by commas"),
        ([*ARGS, "--survivors", "10,5"], "--survivors is for --model sbg"),
    ]:
        res = runner.invoke(main, ["clv", *args])
        assert res.exit_code == 2 and message in res.output, res.output
    res = runner.invoke(main, ["clv", "--model", "sbg", "--survivors", "10,12"])
    assert res.exit_code == 1 and "rises from 10 to 12" in res.output


def test_clv_bgbb_holdout(runner, tmp_path):
    cal = tmp_path / "cal.csv"
    res = runner.invoke(main, ["clv", *ARGS, "--model", "bgbb", "--period", "week", "--holdout-start", "1997-09-29",
                               "--horizon", "4", "--horizon-unit", "week", "--calibration-out", str(cal),
                               "-o", str(tmp_path / "bb.parquet")])
    assert res.exit_code == 0, res.output
    check = pcsv.read_csv(cal).to_pandas()
    assert check["n_customers"].sum() == 2357 and (check["predicted"] > 0).all()
