"""Inputs that must never give a plausible wrong number: money totals beyond int64, ids of
different integer types, calendar days and time zones, damaged state files."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from badinput import fails_cleanly, run_cli

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def orders(ids, amounts, times=None, id_type=pa.int64(), amount_type=None):
    n = len(ids)
    times = times if times is not None else list(range(1, n + 1))
    return pa.table({
        "customer_id": pa.array(ids, type=id_type),
        "order_time": pa.array(times, type=pa.timestamp("s")),
        "amount": pa.array(amounts, type=amount_type),
    })


# --- money beyond int64 ---------------------------------------------------------------

def test_money_total_beyond_int64_is_an_error_naming_customer_and_row():
    t = orders([7, 8, 7, 7], [4e16, 1.0, 4e16, 4e16])
    with pytest.raises(rfmx.RfmxError, match=r"customer 7 leaves the exact range at row 3 .*92,233,720,368,547,758\.07"):
        rfmx.aggregate(t)


def test_refund_total_beyond_int64_is_an_error():
    t = orders([7, 7, 7], [-4e16, -4e16, -4e16])
    with pytest.raises(rfmx.RfmxError, match=r"customer 7 leaves the exact range at row 2"):
        rfmx.aggregate(t)


def test_string_customer_named_in_the_overflow_error():
    t = orders(["C-1", "C-1"], [5_000_000_000, 5_000_000_000], id_type=pa.string(), amount_type=pa.int64())
    with pytest.raises(rfmx.RfmxError, match=r"customer 'C-1' leaves the exact range at row 1 .*amount_scale 9"):
        rfmx.aggregate(t, amount_scale=9)


def test_merge_beyond_int64_is_an_error_and_the_state_is_unusable_after():
    a = rfmx.build_state(orders([1], [6e16]))
    b = rfmx.build_state(orders([1], [6e16]))
    with pytest.raises(rfmx.RfmxError, match=r"b\.arrow: merged, the money total of customer 1 leaves the exact range"):
        a.merge(b, what="b.arrow")
    with pytest.raises(rfmx.RfmxError, match="this state cannot be used"):
        a.finalize()


def test_btyd_state_refuses_money_beyond_int64():
    state = rfmx.BTYDState()
    with pytest.raises(rfmx.RfmxError, match="leaves the exact range at row 2"):
        rfmx.build_state(orders([3, 4, 3], [5e16, 1.0, 5e16]), state=state)


def test_cli_amount_scale_9_overflow_fails_cleanly(tmp_path):
    src = tmp_path / "o.parquet"
    pq.write_table(orders([1, 1], [5_000_000_000, 5_000_000_000], amount_type=pa.int64()), src)
    for command in ("aggregate", "score"):
        fails_cleanly([command, src, "--amount-scale", "9", "-o", tmp_path / "out.parquet"],
                      r"o\.parquet: column 'amount' \(amount\): the money total of customer 1 leaves the exact range "
                      r"at row 1", tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-(2**62), 2**62)), min_size=1, max_size=40),
       st.sampled_from([1, 2]))
def test_update_kernel_reports_the_first_line_whose_total_leaves_int64(lines, n_workers):
    """Against Python's unbounded integers: no report while every running total fits, and
    the report names exactly the first line at which one would not."""
    from rfmx.kernels.rfm import GROSS, REFUNDS, new_aggregates, rfm_update

    codes = np.array([c for c, _ in lines], dtype=np.int64)
    money = np.array([m for _, m in lines], dtype=np.int64)
    gross, refunds = [0] * 4, [0] * 4
    expected = -1
    for i, (c, m) in enumerate(lines):
        if m < 0:
            refunds[c] += m
            if refunds[c] < I64_MIN:
                expected = i
                break
        else:
            gross[c] += m
            if gross[c] > I64_MAX:
                expected = i
                break
    agg = new_aggregates(4)
    got = rfm_update(codes, np.arange(len(lines), dtype=np.int64), money, np.empty(0, np.int64), agg)
    assert got == expected
    if expected < 0:
        assert agg[:, GROSS].tolist() == gross
        assert agg[:, REFUNDS].tolist() == refunds
    # the engine's partitioned kernels, 1 or 2 workers, say the same
    state = rfmx.RFMState(amount_scale=0, threads=n_workers)
    batch = orders(codes.tolist(), money.tolist(), amount_type=pa.int64())
    if expected < 0:
        table = state.update(batch).finalize()
        by_id = dict(zip(table.column("customer_id").to_pylist(), table.column("monetary_minor").to_pylist()))
        assert by_id == {c: gross[c] + refunds[c] for c in set(codes.tolist())}
    else:
        with pytest.raises(rfmx.RfmxError, match=f"leaves the exact range at row {expected} "):
            state.update(batch)


def test_population_totals_beyond_int64_give_exact_shares_and_classes():
    """Each customer fits, their sum does not: shares, Gini and ABC classes stay right."""
    t = orders([1, 2, 3, 4], [4e16, 1.0, 4e16, 4e16])
    scores = rfmx.score(t)
    classes = dict(zip(scores.column("customer_id").to_pylist(), scores.column("abc_class").to_pylist()))
    assert classes == {1: "A", 2: "C", 3: "A", 4: "A"}
    conc = rfmx.value_concentration(scores)
    assert conc["revenue"] == pytest.approx(1.2e17)
    assert conc["top_shares"][50] == pytest.approx(2 / 3)
    seg = rfmx.segment_summary(scores)
    assert sum(seg.column("revenue").to_pylist()) == pytest.approx(1.2e17)
