"""Profit and cost-to-serve: a per-line cost column against tests/naive.py.

Cost totals, gross profit, margin and refund rates under random batch sizes, threads,
windows, order ids, split-and-merge trees and saved states; exact cost parsing and its
one-line errors; old state files without cost still load; runs without cost keep their
columns.
"""
from __future__ import annotations

import decimal
import json
import os
import tempfile

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import RFMState, RfmxError
from rfmx.state import PROFIT_COLUMNS
from naive import RESULT_COLUMNS, naive_profit, result_rows
from test_engine import T0, _tree_merge, expected, order_lines, orders_table, windows


@st.composite
def costed_lines(draw, max_rows: int = 40):
    """:func:`order_lines` plus each line's cost in minor units (negative costs too: goods
    returned with a refund)."""
    lines = draw(order_lines(max_rows=max_rows))
    n = len(lines["customer"])
    lines["cost_minor"] = draw(st.lists(st.one_of(st.integers(-3_000, -1), st.integers(0, 800_000), st.just(0)),
                                        min_size=n, max_size=n))
    return lines


def costed_table(lines, *, order_ids: bool) -> pa.Table:
    costs = pa.array([decimal.Decimal(m).scaleb(-2) for m in lines["cost_minor"]], type=pa.decimal128(18, 2))
    return orders_table(lines, order_ids=order_ids).append_column("cost", costs)


def profit_rows(table: pa.Table) -> dict:
    assert table.column_names == RESULT_COLUMNS + list(PROFIT_COLUMNS), table.column_names
    ids = table.column("customer_id").to_pylist()
    cols = {name: table.column(name).to_pylist() for name in PROFIT_COLUMNS}
    return {key: {name: cols[name][i] for name in PROFIT_COLUMNS} for i, key in enumerate(ids)}


def want_profit(lines, *, order_ids: bool, since_us=None, as_of_us=None) -> dict:
    return naive_profit(lines["customer"], lines["time_us"], lines["amount_minor"], lines["cost_minor"],
                        lines["order_id"] if order_ids else None, since_us=since_us, as_of_us=as_of_us)


def check(got: pa.Table, lines, *, use_oid: bool, since=None, as_of=None) -> None:
    want, _ = expected(lines, order_ids=use_oid, since_us=since, as_of_us=as_of)
    assert result_rows(got.select(RESULT_COLUMNS)) == want  # the RFM columns do not move
    assert profit_rows(got) == want_profit(lines, order_ids=use_oid, since_us=since, as_of_us=as_of)


@settings(max_examples=60, deadline=None)
@given(lines=costed_lines(), window=windows(), use_oid=st.booleans(), batch_size=st.integers(1, 45),
       n_threads=st.sampled_from([1, 2]))
def test_profit_columns_match_naive(lines, window, use_oid, batch_size, n_threads):
    since, as_of = window
    table = costed_table(lines, order_ids=use_oid)
    got = rfmx.aggregate(table, order_id="order_id" if use_oid else None, cost="cost", since=since, as_of=as_of,
                         batch_size=batch_size, threads=n_threads)
    check(got, lines, use_oid=use_oid, since=since, as_of=as_of)


@settings(max_examples=50, deadline=None)
@given(lines=costed_lines(), window=windows(), use_oid=st.booleans(), data=st.data())
def test_profit_under_split_merge_tree_and_save_load(lines, window, use_oid, data):
    since, as_of = window
    table = costed_table(lines, order_ids=use_oid)
    n = table.num_rows
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=5), label="cuts"))
    bounds = [0] + cuts + [n]
    oid = "order_id" if use_oid else None
    states = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            state = rfmx.build_state(table.slice(lo, hi - lo), order_id=oid, cost="cost", since=since, as_of=as_of,
                                     threads=data.draw(st.sampled_from([1, 2]), label="threads"),
                                     batch_size=data.draw(st.integers(1, 20), label="batch"))
            how = data.draw(st.sampled_from(["keep", "file", "table"]), label="save/load")
            if how == "file":
                path = os.path.join(tmp, f"piece{i}.arrow")
                state.save(path)
                state = RFMState.load(path)
            elif how == "table":  # how Dask's partial states travel
                state = RFMState.from_table(state.to_table())
            states.append(state)
        if not use_oid:
            states = data.draw(st.permutations(states), label="order")
        merged = _tree_merge(states, data.draw)
        if data.draw(st.booleans(), label="save/load merged"):
            path = os.path.join(tmp, "merged.arrow")
            merged.save(path)
            merged = RFMState.load(path)
    check(merged.finalize(as_of), lines, use_oid=use_oid, since=since, as_of=as_of)


def test_incremental_state_with_cost_equals_one_pass(tmp_path):
    lines = {"kind": "int64", "customer": [1, 2, 1, 3, 2, 1], "time_us": [T0 + k for k in range(6)],
             "amount_minor": [1000, 500, -300, 700, 200, 0], "order_id": [1, 2, 3, 4, 5, 6],
             "cost_minor": [600, 450, -200, 800, 100, 50]}
    table = costed_table(lines, order_ids=False)
    one = rfmx.aggregate(table, cost="cost")
    rfmx.build_state(table.slice(0, 3), cost="cost").save(tmp_path / "a.arrow")
    state = rfmx.build_state(table.slice(3), cost="cost", state=RFMState.load(tmp_path / "a.arrow"))
    assert state.finalize().equals(one)
    got = profit_rows(one)
    assert got[1] == {"cost_total": 4.5, "profit_total": 2.5, "profit_minor": 250, "margin_rate": 250 / 700,
                      "refund_rate": 0.5, "refund_money_rate": 0.3}
    assert got[3]["profit_minor"] == -100  # costs more than it brings
    assert got[3]["refund_money_rate"] == 0.0 and got[3]["refund_rate"] == 0.0


def test_without_cost_the_columns_and_state_are_unchanged(tmp_path):
    lines = {"kind": "int64", "customer": [1, 2], "time_us": [T0, T0], "amount_minor": [100, 200],
             "order_id": [1, 2], "cost_minor": [1, 2]}
    table = costed_table(lines, order_ids=False)
    assert rfmx.aggregate(table).column_names == RESULT_COLUMNS
    st_ = rfmx.build_state(table)
    assert "cost_minor" not in st_.to_table().column_names and st_._cost is None


def test_merge_refuses_a_state_with_other_cost_column():
    table = costed_table({"kind": "int64", "customer": [1], "time_us": [T0], "amount_minor": [100],
                          "order_id": [1], "cost_minor": [50]}, order_ids=False)
    with pytest.raises(RfmxError, match="cost"):
        rfmx.build_state(table, cost="cost").merge(rfmx.build_state(table))


def test_old_state_file_without_cost_loads(tmp_path):
    """A version-2 state (before the cost column) reads as a state without cost."""
    table = orders_table({"kind": "int64", "customer": [1, 2], "time_us": [T0, T0 + 1], "amount_minor": [100, -20],
                          "order_id": [1, 2]}, order_ids=False)
    state = rfmx.build_state(table)
    t = state.to_table()
    meta = json.loads(t.schema.metadata[b"rfmx.state"])
    meta["version"] = 2
    del meta["columns"]["cost"]
    old = t.replace_schema_metadata({"rfmx.state": json.dumps(meta)})
    with pa.OSFile(str(tmp_path / "old.arrow"), "wb") as sink, pa.ipc.new_file(sink, old.schema) as w:
        w.write_table(old)
    loaded = RFMState.load(tmp_path / "old.arrow")
    assert loaded.columns.cost is None and loaded.finalize().equals(state.finalize())


def test_damaged_cost_rows_are_refused(tmp_path):
    table = costed_table({"kind": "int64", "customer": [1], "time_us": [T0], "amount_minor": [100],
                          "order_id": [1], "cost_minor": [50]}, order_ids=False)
    t = rfmx.build_state(table, cost="cost").to_table()
    with pytest.raises(RfmxError, match="column 'cost_returned_minor' is missing"):
        RFMState.from_table(t.drop_columns(["cost_returned_minor"]))
    bad = t.set_column(t.schema.get_field_index("cost_minor"), "cost_minor", pa.array([-1], pa.int64()))
    with pytest.raises(RfmxError, match="cost_minor.*outside what a state can hold"):
        RFMState.from_table(bad)


@pytest.mark.parametrize("values, arrow_type, message", [
    (["1.00", "2.005"], pa.string(), r"t\.csv: column 'cost' \(cost\) value 2\.005 at row 1 has 3 decimals"),
    (["1.00", "x"], pa.string(), r"t\.csv: column 'cost' \(cost\) has an unparseable amount 'x' at row 1"),
    ([1.0, float("nan")], pa.float64(), r"column 'cost' \(cost\) has a non-finite .* at row 1"),
])
def test_bad_cost_is_a_one_line_error_naming_file_column_row(values, arrow_type, message):
    table = pa.table({"customer_id": [1, 2], "order_time": pa.array([T0, T0], pa.timestamp("us")),
                      "amount": [1.0, 2.0], "cost": pa.array(values, arrow_type)})
    with pytest.raises(RfmxError, match=message):
        rfmx.build_state(cost="cost").update(table, source="t.csv")


def test_cost_total_out_of_range_is_an_error():
    big = 2**62
    table = pa.table({"customer_id": [1, 1, 1], "order_time": pa.array([T0] * 3, pa.timestamp("us")),
                      "amount": [1, 1, 1], "cost": pa.array([big, big, 1], pa.int64())})
    with pytest.raises(RfmxError, match=r"column 'cost' \(cost\): the cost total of customer 1 leaves the exact "
                                        r"range at row 1"):
        rfmx.aggregate(table, cost="cost", amount_scale=0)


def test_profit_out_of_range_is_an_error_not_a_wrapped_number():
    table = pa.table({"customer_id": [7, 7], "order_time": pa.array([T0] * 2, pa.timestamp("us")),
                      "amount": pa.array([2**62, 2**62 - 1], pa.int64()), "cost": pa.array([-(2**62), 0], pa.int64())})
    with pytest.raises(RfmxError, match="gross profit of customer 7"):
        rfmx.aggregate(table, cost="cost", amount_scale=0)


def test_null_cost_is_refused_or_skipped():
    table = pa.table({"customer_id": [1, 2], "order_time": pa.array([T0, T0], pa.timestamp("us")),
                      "amount": [1.0, 2.0], "cost": pa.array([0.5, None])})
    with pytest.raises(RfmxError, match="column 'cost' has 1 null value"):
        rfmx.aggregate(table, cost="cost")
    got = rfmx.aggregate(table, cost="cost", on_null="skip")
    assert got.column("customer_id").to_pylist() == [1]


def test_csv_cost_column_is_exact(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text("customer_id,order_time,amount,cost\n1,2024-03-01,10.10,7.07\n1,2024-03-02,-1.01,-0.70\n")
    got = profit_rows(rfmx.aggregate(str(path), cost="cost"))
    assert got[1]["profit_minor"] == 909 - 637


# --- scoring on profit, the Unprofitable segment ---------------------------------------------

@settings(max_examples=25, deadline=None)
@given(lines=costed_lines(max_rows=60), segments=st.sampled_from(["rfm-grid", "pymc-quartiles"]))
def test_monetary_profit_scores_m_on_profit_and_unprofitable_comes_first(lines, segments):
    from rfmx.scores import score_table

    table = costed_table(lines, order_ids=False)
    bins = 5 if segments == "rfm-grid" else 4
    got = rfmx.score(table, cost="cost", monetary="profit", segments=segments, bins=bins)
    # M on profit is M on net money of a table whose money is the profit
    agg = rfmx.aggregate(table, cost="cost")
    swapped = agg.set_column(agg.schema.get_field_index("monetary_minor"), "monetary_minor", agg["profit_minor"])
    ref = score_table(swapped.select(RESULT_COLUMNS), segments=segments, bins=bins)
    assert got["m_score"].to_pylist() == ref["m_score"].to_pylist()
    assert got["r_score"].to_pylist() == ref["r_score"].to_pylist()
    # negative profit: "Unprofitable"; everyone else keeps the map's own segment
    plain = score_table(agg.select(RESULT_COLUMNS), segments=segments, bins=bins, monetary="total")
    revenue = rfmx.score(table, cost="cost", segments=segments, bins=bins)
    for p, seg, own, m_rev, m_plain in zip(got["profit_minor"].to_pylist(), revenue["segment"].to_pylist(),
                                           plain["segment"].to_pylist(), revenue["m_score"].to_pylist(),
                                           plain["m_score"].to_pylist()):
        assert m_rev == m_plain
        assert seg == ("Unprofitable" if p < 0 else own)


def test_monetary_profit_without_cost_is_an_error():
    table = orders_table({"kind": "int64", "customer": [1], "time_us": [T0], "amount_minor": [100],
                          "order_id": [1]}, order_ids=False)
    with pytest.raises(RfmxError, match="cost column"):
        rfmx.score(table, monetary="profit")


def test_cli_cost_through_aggregate_state_and_score(tmp_path):
    from click.testing import CliRunner

    from rfmx.cli.main import main

    lines = {"kind": "int64", "customer": [1, 2, 1, 3, 2, 1], "time_us": [T0 + k * 10**9 for k in range(6)],
             "amount_minor": [1000, 500, -300, 700, 200, 0], "order_id": [1, 2, 3, 4, 5, 6],
             "cost_minor": [600, 450, -200, 800, 100, 50]}
    import pyarrow.parquet as pq

    pq.write_table(costed_table(lines, order_ids=False).slice(0, 4), tmp_path / "a.parquet")
    pq.write_table(costed_table(lines, order_ids=False).slice(4), tmp_path / "b.parquet")
    runner = CliRunner()
    r = runner.invoke(main, ["aggregate", str(tmp_path / "a.parquet"), "--cost", "cost",
                             "--state-out", str(tmp_path / "s.arrow")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["score", str(tmp_path / "b.parquet"), "--cost", "cost", "--state-in",
                             str(tmp_path / "s.arrow"), "--monetary", "profit", "-o", str(tmp_path / "s.parquet")])
    assert r.exit_code == 0, r.output
    got = pq.read_table(tmp_path / "s.parquet")
    assert profit_rows(got.select(RESULT_COLUMNS + list(PROFIT_COLUMNS))) == want_profit(lines, order_ids=False)
    assert dict(zip(got["customer_id"].to_pylist(), got["segment"].to_pylist()))[3] == "Unprofitable"
    # a state with costs refuses a run without them, and the other way round
    r = runner.invoke(main, ["score", "--state-in", str(tmp_path / "s.arrow"), "-o", str(tmp_path / "x.parquet")])
    assert r.exit_code == 1 and "--cost cost" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["timeline", str(tmp_path / "a.parquet"), "--cost", "cost", "-o", str(tmp_path / "t.csv")])
    assert r.exit_code == 2 and "does not use line costs" in r.output


def test_generate_cost_share_keeps_the_other_columns():
    from rfmx.generate import generate_orders

    plain = pa.Table.from_batches(list(generate_orders(3000, seed=3)))
    costed = pa.Table.from_batches(list(generate_orders(3000, seed=3, cost_share=0.6)))
    assert costed.drop_columns(["cost"]).equals(plain)
    amount, cost = costed["amount"].to_numpy(), costed["cost"].to_numpy()
    sold = amount > 0
    share = cost[sold] / amount[sold]
    assert share.min() >= 0.39 and share.max() <= 0.81
    assert (cost[~sold] <= 0).all() and (cost[~sold] == 0).any() and (cost[~sold] < 0).any()


def test_config_cost_reaches_the_commands_that_use_it(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import pyarrow.parquet as pq
    from rfmx.cli.main import main

    lines = {"kind": "int64", "customer": [1, 2], "time_us": [T0, T0 + 10**9], "amount_minor": [1000, 500],
             "order_id": [1, 2], "cost_minor": [1200, 100]}
    pq.write_table(costed_table(lines, order_ids=False), tmp_path / "o.parquet")
    (tmp_path / "rfmx.toml").write_text('cost = "cost"\n')
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(main, ["score", "o.parquet", "-o", "s.parquet"])
    assert r.exit_code == 0, r.output
    got = pq.read_table(tmp_path / "s.parquet")
    assert dict(zip(got["customer_id"].to_pylist(), got["profit_minor"].to_pylist())) == {1: -200, 2: 400}
    r = runner.invoke(main, ["timeline", "o.parquet", "-o", "t.csv"])  # ignores the shared key
    assert r.exit_code == 0, r.output
