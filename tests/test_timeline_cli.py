"""``rfmx timeline`` and ``rfmx.timeline``: every snapshot is what ``rfmx score --as-of`` gives
for its date; changes-only, migration, cohorts and incremental runs agree with the pieces."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import rfmx
from badinput import fails_cleanly, run_cli

SCORED = ["customer_id", "recency_days", "tenure_days", "n_orders", "monetary_minor", "r_score", "f_score",
          "m_score", "rfm_code", "value_score", "value_tier", "segment", "abc_class"]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    path = root / "orders.parquet"
    rfmx.write_orders(str(path), 6000, seed=3)
    return path


def by_customer(table: pa.Table, columns=SCORED) -> dict:
    table = table.select(columns)
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
    return {r["customer_id"]: r for r in table.to_pylist()}


def test_every_snapshot_is_the_score_as_of_its_date(history, tmp_path):
    out = tmp_path / "snaps.parquet"
    r = run_cli("timeline", history, "--every", "quarter", "-o", out)
    assert r.exit_code == 0, r.stderr
    snaps = pq.read_table(out)
    dates = sorted(set(snaps.column("as_of").to_pylist()))
    assert len(dates) >= 4
    for as_of in dates:
        got = snaps.filter(pc.equal(snaps.column("as_of"), pa.scalar(as_of, snaps.schema.field("as_of").type)))
        want = rfmx.score(str(history), as_of=as_of)
        assert by_customer(got) == by_customer(want), as_of


def test_python_timeline_yields_the_scores(history):
    n = 0
    for as_of, table in rfmx.timeline(str(history), every="month", ties="first"):
        assert table.column_names[0] == "as_of"
        assert by_customer(table) == by_customer(rfmx.score(str(history), as_of=as_of, ties="first"))
        n += 1
    assert n >= 12


def test_changes_only_keeps_rows_whose_segment_or_tier_changed(history, tmp_path):
    assert run_cli("timeline", history, "--every", "month", "-o", tmp_path / "all.parquet").exit_code == 0
    assert run_cli("timeline", history, "--every", "month", "--changes-only",
                   "-o", tmp_path / "changes.parquet").exit_code == 0
    full = pq.read_table(tmp_path / "all.parquet").select(["as_of", "customer_id", "segment", "value_tier"])
    want, last = set(), {}
    for row in sorted(full.to_pylist(), key=lambda r: r["as_of"]):
        key = (row["segment"], row["value_tier"])
        if last.get(row["customer_id"]) != key:
            want.add((row["as_of"], row["customer_id"]))
        last[row["customer_id"]] = key
    changes = pq.read_table(tmp_path / "changes.parquet").select(["as_of", "customer_id"]).to_pylist()
    assert {(r["as_of"], r["customer_id"]) for r in changes} == want
    assert len(changes) < full.num_rows


def test_migration_and_cohorts_outputs_equal_the_functions(history, tmp_path):
    r = run_cli("timeline", history, "--every", "quarter", "--migration-out", tmp_path / "m.parquet",
                "--cohorts-out", tmp_path / "c.parquet")
    assert r.exit_code == 0, r.stderr
    snaps = [t for _, t in rfmx.timeline(str(history), every="quarter")]
    want = pa.concat_tables([rfmx.migration(a, b) for a, b in zip(snaps, snaps[1:])])
    assert pq.read_table(tmp_path / "m.parquet").to_pylist() == want.to_pylist()
    state = rfmx.build_state(str(history), state=rfmx.TimelineState(period="quarter"))
    cohorts = rfmx.cohort_table(state.buckets(), period="quarter", amount_scale=2)
    assert pq.read_table(tmp_path / "c.parquet").to_pylist() == cohorts.to_pylist()


def test_incremental_timeline_equals_one_pass(history, tmp_path):
    table = pq.read_table(history)
    cut = table.num_rows * 2 // 3
    pq.write_table(table.slice(0, cut), tmp_path / "old.parquet")
    pq.write_table(table.slice(cut), tmp_path / "new.parquet")
    state = tmp_path / "t.arrow"
    assert run_cli("timeline", tmp_path / "old.parquet", "--state-out", state).exit_code == 0
    r = run_cli("timeline", tmp_path / "new.parquet", "--state-in", state, "--state-out", state,
                "-o", tmp_path / "inc.parquet")
    assert r.exit_code == 0, r.stderr
    assert run_cli("timeline", history, "-o", tmp_path / "one.parquet").exit_code == 0
    inc, one = pq.read_table(tmp_path / "inc.parquet"), pq.read_table(tmp_path / "one.parquet")
    key = ["as_of", "customer_id"]
    assert inc.sort_by([(k, "ascending") for k in key]).equals(one.sort_by([(k, "ascending") for k in key]))


@pytest.mark.parametrize("args,pattern,code", [
    (["--every", "fortnight"], r"Invalid value for '--every'", 2),
    (["--start", "2025-06-01", "--end", "2025-01-01"], r"--start 2025-06-01 is after --end 2025-01-01", 1),
    (["--every", "day", "--max-snapshots", "5"], r"snapshots of up to [\d,]+ customers .* more than "
                                                  r"--max-snapshots 5", 2),
    (["--as-of", "2025-01-01"], r"--as-of: a timeline has many as-of dates", 2),
    (["--lifecycle-map", "MISSING"], r"missing.toml: file not found", 1),
    (["--lifecycle-map", "BADFIELD"], r"stages.toml line 3: stage 'x': unknown field 'spend'; fields: recency_days", 1),
    (["--lifecycle-map", "BADTOML"], r"stages.toml: malformed TOML", 1),
    (["--lifecycle-map", "BADFIELD", "--lost-days", "30"], r"lifecycle thresholds apply to the default map", 1),
    (["--decline", "1.5"], r"Invalid value for '--decline'", 2),
    (["--no-lifecycle", "--lifecycle-out", "FLOWS"], r"--no-lifecycle: drop --lifecycle-map", 2),
])
def test_bad_timeline_options(history, tmp_path, args, pattern, code):
    stages = tmp_path / "stages.toml"
    if "BADFIELD" in args:
        stages.write_text('default = "a"\n[[stage]]\nspend = { gt = 1 }\nname = "x"\n')
    if "BADTOML" in args:
        stages.write_text('[[stage]\n')
    names = {"MISSING": tmp_path / "missing.toml", "BADFIELD": stages, "BADTOML": stages, "FLOWS": tmp_path / "f.csv"}
    args = [names.get(a, a) for a in args]
    fails_cleanly(["timeline", history, *args, "-o", tmp_path / "out.parquet"], pattern, tmp_path,
                  exit_code=code)


def test_a_monthly_state_cannot_give_weekly_snapshots(history, tmp_path):
    state = tmp_path / "t.arrow"
    assert run_cli("timeline", history, "--every", "month", "--state-out", state).exit_code == 0
    fails_cleanly(["timeline", "--state-in", state, "--every", "week", "-o", tmp_path / "w.parquet"],
                  r"one bucket per month; it cannot give snapshots every week starting monday; "
                  r"use every='month'", tmp_path)


def test_csv_and_arrow_outputs_hold_the_same_rows(history, tmp_path):
    for name in ("s.parquet", "s.csv", "s.arrow"):
        assert run_cli("timeline", history, "--every", "quarter", "-o", tmp_path / name).exit_code == 0
    import pyarrow.csv as pcsv
    import pyarrow.feather as feather

    parquet = pq.read_table(tmp_path / "s.parquet")
    assert feather.read_table(tmp_path / "s.arrow").equals(parquet)
    assert pcsv.read_csv(tmp_path / "s.csv").num_rows == parquet.num_rows


def test_migration_needs_two_snapshots(history, tmp_path):
    fails_cleanly(["timeline", history, "--every", "quarter", "--start", "2025-01-01", "--end", "2025-01-01",
                   "--migration-out", tmp_path / "m.csv"], r"--migration-out needs two snapshots or more", tmp_path)


def test_snapshots_equal_the_pandas_recipe(history):
    """Every monthly snapshot against tests/naive.py's pandas recipe: filter the lines before
    as_of, group by customer (customers with refunds only have no recency there)."""
    pd = pytest.importorskip("pandas")
    from naive import pandas_snapshot

    lines = pq.read_table(history).to_pandas()
    orders = pd.DataFrame({"customer_id": lines.customer_id,
                           "order_time": pd.to_datetime(lines.order_time).dt.tz_localize("UTC"),
                           "amount_minor": (lines.amount * 100).round().astype("int64")})
    state = rfmx.build_state(str(history), state=rfmx.TimelineState(period="month"))
    n = 0
    for as_of, table in state.snapshots():
        want = pandas_snapshot(orders, pd.Timestamp(as_of).tz_convert("UTC"))
        got = table.to_pandas().set_index("customer_id")[want.columns].sort_index()
        pd.testing.assert_frame_equal(got, want.sort_index(), check_dtype=False)
        n += 1
    assert n >= 12
