"""State memory: reservations that grow without copying, and finalize(consume=True).

Reservations only change where the state's arrays live, never what they hold: every
test here compares against the ordinary path table for table (row order included).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import RFMState, RfmxError, memory
from test_engine import order_lines, orders_table


@pytest.fixture
def tiny_reservations(monkeypatch):
    """Every state array lands in a (small) reservation, and outgrows it quickly."""
    monkeypatch.setattr(memory, "RESERVE_FROM", 0)
    monkeypatch.setattr(memory, "RESERVED_ROWS", 4)


def test_small_arrays_are_plain_and_aligned():
    a = memory.allocate((16, 100, 8))
    assert not memory.is_reserved(a)
    assert a.shape == (16, 100, 8) and a.ctypes.data % 64 == 0


def test_big_arrays_are_reserved_with_room_to_grow():
    a = memory.allocate((16, 1 << 17, 8))  # 128 MiB: past RESERVE_FROM
    assert memory.is_reserved(a)
    assert a.shape == (16, memory.RESERVED_ROWS, 8) and a.ctypes.data % 64 == 0
    a[15, -1] = 7  # the whole reservation is usable
    assert a[15, -1, 0] == 7


@pytest.mark.parametrize("reserve_from", [0, 1 << 40], ids=["reserved", "plain"])
def test_grow_keeps_the_used_rows_of_every_partition(monkeypatch, reserve_from):
    monkeypatch.setattr(memory, "RESERVE_FROM", reserve_from)
    rng = np.random.default_rng(0)
    old = rng.integers(0, 1000, size=(4, 10, 3))
    used = np.array([0, 3, 10, 7])
    new = memory.grow(old, used, 25, extra=0)
    assert new.shape[0] == 4 and new.shape[1] >= 25 and new.shape[2:] == (3,)
    assert memory.is_reserved(new) == (reserve_from == 0)
    for p in range(4):
        assert np.array_equal(new[p, : used[p]], old[p, : used[p]])


def test_big_arrays_fall_back_to_numpy_where_mappings_are_refused(monkeypatch):
    def refuse(nbytes):
        raise OSError("mmap refused")

    monkeypatch.setattr(memory, "_Reservation", refuse)
    a = memory.allocate((16, 1 << 17, 8))
    assert not memory.is_reserved(a)
    assert a.shape == (16, 1 << 17, 8) and a.ctypes.data % 64 == 0
    rng = np.random.default_rng(2)
    table = pa.table({"customer_id": pa.array(rng.integers(0, 5000, 20_000)),
                      "order_time": pa.array(rng.integers(0, 10**12, 20_000), pa.timestamp("us")),
                      "amount": pa.array(rng.integers(1, 999, 20_000) / 100)})
    monkeypatch.setattr(memory, "RESERVE_FROM", 0)  # every growth asks for a mapping, and is refused
    got = rfmx.aggregate(table, batch_size=999)
    monkeypatch.undo()
    assert got.equals(rfmx.aggregate(table, batch_size=999), check_metadata=True)


def test_release_zeroes_one_partition_of_a_reservation_only(tiny_reservations):
    a = memory.allocate((3, 2048, 8))  # 4 KiB pages: each partition spans whole pages
    a[:] = 5
    memory.release(a, 1)
    assert (a[0] == 5).all() and (a[2] == 5).all()
    assert (a[1] == 0).all()
    plain = np.full((2, 10), 3)
    memory.release(plain, 0)  # not a reservation: left alone
    assert (plain == 3).all()


@settings(max_examples=30, deadline=None)
@given(lines=order_lines(kinds=("int64", "string", "binary")), use_oid=st.booleans(),
       batch_size=st.integers(1, 20), n_threads=st.sampled_from([1, 2]))
def test_reserved_state_gives_the_same_table(lines, use_oid, batch_size, n_threads):
    table = orders_table(lines, order_ids=use_oid)
    oid = "order_id" if use_oid else None
    want = rfmx.aggregate(table, order_id=oid, batch_size=batch_size, threads=n_threads)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memory, "RESERVE_FROM", 0)
        mp.setattr(memory, "RESERVED_ROWS", 2)  # tiny: states outgrow their reservations
        got = rfmx.aggregate(table, order_id=oid, batch_size=batch_size, threads=n_threads)
        state = rfmx.build_state(table, order_id=oid, batch_size=batch_size, threads=n_threads)
        merged = RFMState(order_id=oid).merge(state)
        merged_table = merged.finalize()
    assert got.equals(want, check_metadata=True)
    assert merged_table.equals(want, check_metadata=True)


@pytest.mark.parametrize("string_ids", [False, True], ids=["int-ids", "string-ids"])
def test_finalize_consume_equals_finalize_and_ends_the_state(string_ids, tiny_reservations, tmp_path):
    rng = np.random.default_rng(1)
    n = 5_000
    ids = rng.integers(0, 700, n)
    table = pa.table({
        "customer_id": pa.array([f"c{i}" for i in ids]) if string_ids else pa.array(ids),
        "order_time": pa.array(1_700_000_000_000_000 + rng.integers(0, 10**12, n), pa.timestamp("us")),
        "amount": pa.array(rng.integers(-500, 5000, n) / 100),
    })
    keep = rfmx.build_state(table, batch_size=333)
    eaten = rfmx.build_state(table, batch_size=333)
    want = keep.finalize()
    got = eaten.finalize(consume=True)
    assert got.equals(want, check_metadata=True)
    assert eaten.n_customers == keep.n_customers  # counters survive for reports
    for use in (lambda s: s.update(table), lambda s: s.finalize(), lambda s: s.save(tmp_path / "s.arrow"),
                lambda s: keep.merge(s), lambda s: s.merge(keep)):
        with pytest.raises(RfmxError, match="consumed"):
            use(eaten)
    assert not (tmp_path / "s.arrow").exists()


@pytest.mark.parametrize("string_ids", [False, True], ids=["int-ids", "string-ids"])
def test_consuming_finalize_frees_the_id_table_before_the_result_is_built(string_ids, monkeypatch):
    """The result's columns fault in the id table's freed pages (cheaper than fresh ones),
    so the table must be gone when the first output column is written."""
    from rfmx.kernels import rfm as k

    ids = np.arange(3_000) % 1_000
    table = pa.table({
        "customer_id": pa.array([f"c{i}" for i in ids]) if string_ids else pa.array(ids),
        "order_time": pa.array(1_700_000_000_000_000 + ids * 1_000_000, pa.timestamp("us")),
        "amount": pa.array(np.ones(len(ids))),
    })
    state = rfmx.build_state(table)
    want = rfmx.build_state(table).finalize()
    table_alive = []
    real = k.rfm_finalize_partitioned

    def spy(*args):
        table_alive.append(state._table is not None)
        return real(*args)

    monkeypatch.setattr(k, "rfm_finalize_partitioned", spy)
    assert state.finalize(consume=True).equals(want, check_metadata=True)
    assert table_alive and not any(table_alive)


@pytest.mark.parametrize("string_ids", [False, True], ids=["int-ids", "string-ids"])
@pytest.mark.parametrize("reserved_slots", [2048, 1 << 24], ids=["outgrown", "roomy"])
def test_hash_tables_that_grow_in_their_reservation_give_the_same_results(string_ids, reserved_slots, monkeypatch):
    """Id and period tables rebuilt in their old memory (zeroed in place) hold exactly what
    fresh tables would: the RFM table and the BTYD summary are the same, row for row."""
    from rfmx import state as state_module
    import importlib

    from rfmx.clv import BTYDState

    summary_module = importlib.import_module("rfmx.clv.summary")

    rng = np.random.default_rng(11)
    n = 60_000
    cust = rng.integers(0, 40_000, n)
    ids = pa.array([f"c-{c}" for c in cust]) if string_ids else pa.array(cust * 7919 + 10**12)
    times = np.datetime64("2024-01-01T00:00:00", "us") + (rng.random(n) * 400 * 86400e6).astype("timedelta64[us]")
    table = pa.table({"customer_id": ids, "order_time": pa.array(times), "amount": pa.array(np.round(rng.lognormal(3, 1, n), 2))})
    want = rfmx.aggregate(table, batch_size=4_000)
    want_btyd = BTYDState().update(table).summary()

    reused = []
    regrow_table = memory.regrow_table

    def spy(old, shape):
        new = regrow_table(old, shape)
        reused.append(new is not None)
        return new

    monkeypatch.setattr(memory, "TABLE_RESERVE_FROM", 0)
    monkeypatch.setattr(memory, "regrow_table", spy)
    monkeypatch.setattr(state_module, "_TABLE_RESERVED_SLOTS", reserved_slots)
    monkeypatch.setattr(summary_module, "_PERIOD_RESERVED_SLOTS", reserved_slots)
    got = rfmx.aggregate(table, batch_size=4_000)
    state = BTYDState()
    for batch in table.to_batches(max_chunksize=4_000):
        state.update(batch)
    assert got.equals(want, check_metadata=True)
    assert state.summary().equals(want_btyd, check_metadata=True)
    if reserved_slots > 4096:
        assert sum(reused) >= 2  # the id tables grew in place
    else:
        assert not any(reused)  # each table outgrew its reservation: a new one every time
