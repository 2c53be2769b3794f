"""rfmx.dask.clv against one machine: the same BTYD summary, the same fitted BG/NBD, Pareto/NBD
and Gamma-Gamma parameters (bit for bit: the fits sort their inputs into a canonical order)
and the same predictions, on a LocalCluster of worker processes, for random histories, file
splits, bucket counts, periods and time units.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfmx import RfmxError

distributed = pytest.importorskip("distributed")
import rfmx.dask as rd  # noqa: E402

from test_dask import assert_same, frame_table, write_split  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=50)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def history(seed: int, rows: int, customers: int, string_ids: bool = False) -> pa.Table:
    from rfmx.generate import generate_orders

    return pa.Table.from_batches(list(generate_orders(rows, customers=customers, seed=seed, days=400,
                                                      decimal_amounts=True, string_ids=string_ids)))


def one_machine(paths, *, model="bgnbd", spend=True, period="day", unit=None, penalizer=0.0, **predict):
    """What ``rfmx clv`` does on one machine: BTYD state, summary, fits, CLV columns."""
    from rfmx.api import build_state
    from rfmx.clv import BGNBD, BTYDState, GammaGamma, ParetoNBD, add_clv_columns

    state = BTYDState(order_id="order_id", period=period)
    build_state(paths, order_id="order_id", state=state)
    summary = state.summary(None, unit=unit)
    fitted = (BGNBD if model == "bgnbd" else ParetoNBD)(penalizer=penalizer).fit(summary)
    spend_model = GammaGamma(penalizer=penalizer).fit(summary) if spend else None
    return add_clv_columns(summary, fitted, spend_model, **predict), fitted, spend_model


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), customers=st.integers(300, 900), string_ids=st.booleans(),
       n_files=st.integers(1, 3), buckets=st.integers(1, 6),
       time=st.sampled_from([("day", None), ("day", "week"), ("week", None), ("month", None)]),
       model=st.sampled_from(["bgnbd", "pareto"]))
def test_clv_equals_one_machine(client, tmp_path_factory, seed, customers, string_ids, n_files, buckets, time, model):
    root = tmp_path_factory.mktemp("clv")
    table = history(seed, 8 * customers, customers, string_ids)
    rng = np.random.default_rng(seed)
    paths = write_split(table, root, rng.integers(0, table.num_rows + 1, n_files - 1), 1_000)
    period, unit = time
    try:
        want, fitted, spend = one_machine(paths, model=model, period=period, unit=unit, penalizer=0.001,
                                          horizon=6, discount=0.02)
    except RfmxError as exc:  # a history the models cannot fit: the same error on Dask
        with pytest.raises(RfmxError) as many:
            rd.clv(paths, order_id="order_id", model=model, period=period, unit=unit, penalizer=0.001,
                   client=client, buckets=buckets)
        assert str(many.value) == str(exc)
        return
    report = {}
    rd.clv(paths, order_id="order_id", model=model, period=period, unit=unit, penalizer=0.001, horizon=6,
           discount=0.02, client=client, buckets=buckets, share_rows=2_000, output=root / "out", report=report)
    assert report["model"].params_ == fitted.params_          # bit for bit
    assert report["spend_model"].params_ == spend.params_
    assert report["model"].to_dict() == fitted.to_dict() and report["spend_model"].to_dict() == spend.to_dict()
    assert len(os.listdir(root / "out")) == 1 + buckets
    assert_same(pq.read_table(root / "out"), want)


def test_clv_without_spend_as_dataframe(client, tmp_path):
    table = history(3, 6_000, 700)
    paths = write_split(table, tmp_path, [2_500], 500)
    want, fitted, _ = one_machine(paths, spend=False, horizon=3, horizon_unit="week")
    got = frame_table(rd.clv(paths, order_id="order_id", spend=False, horizon=3, horizon_unit="week",
                             client=client, buckets=3), client)
    assert_same(got, want, metadata=False)
    assert "clv" not in got.column_names


def test_clv_client_receives_patterns_not_customers(client, tmp_path, monkeypatch):
    table = history(5, 30_000, 4_000)
    paths = write_split(table, tmp_path, [12_000], 3_000)
    received = []
    gather = distributed.Client.gather

    def recording_gather(self, futures, *args, **kwargs):
        out = gather(self, futures, *args, **kwargs)
        received.append(out)
        return out

    monkeypatch.setattr(distributed.Client, "gather", recording_gather)
    report = {}
    rd.clv(paths, order_id="order_id", period="month", client=client, output=tmp_path / "out", report=report)
    monkeypatch.undo()
    customers = pq.read_table(tmp_path / "out").num_rows
    assert report["patterns"] < customers / 2

    def check(value):
        if isinstance(value, (list, tuple)):
            for v in value:
                check(v)
        elif isinstance(value, dict):
            for v in value.values():
                check(v)
        elif isinstance(value, np.ndarray):  # pattern columns: one value per distinct pattern
            assert value.dtype == np.float64 and len(value) <= report["patterns"]
        elif isinstance(value, bytes):
            from rfmx.buckets import from_ipc

            assert from_ipc(value).num_rows <= 1  # the shares' summaries
        else:  # counts, metadata, the fitted Gamma-Gamma model
            assert not isinstance(value, pa.Table), type(value)

    check(received)


def test_clv_bad_options(client, tmp_path):
    paths = write_split(history(1, 2_000, 200), tmp_path, [], 500)
    with pytest.raises(RfmxError, match="model must be one of"):
        rd.clv(paths, model="gamma", client=client)
    with pytest.raises(RfmxError, match="period must be"):
        rd.clv(paths, period="year", client=client)


def test_cli_clv_on_dask(client, tmp_path):
    from click.testing import CliRunner

    from rfmx.cli.main import main

    table = history(8, 6_000, 600)
    paths = write_split(table, tmp_path, [3_000], 500)
    out = tmp_path / "clv"
    result = CliRunner().invoke(main, ["clv", *paths, "--order-id", "order_id", "--unit", "week", "--dask",
                                       client.scheduler.address, "--buckets", "3", "-o", str(out),
                                       "--model-out", str(tmp_path / "bg.json")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "on Dask" in result.stderr and "BG/NBD" in result.stderr
    want, fitted, _ = one_machine(paths, unit="week")
    assert_same(pq.read_table(out), want)
    from rfmx.clv import load_model

    assert load_model(tmp_path / "bg.json").params_ == fitted.params_
    for args, message in ((["--holdout-start", "2024-06-01"], "--holdout-start"),
                          (["--model-in", str(tmp_path / "bg.json")], "--model-in")):
        result = CliRunner().invoke(main, ["clv", *paths, "--dask", client.scheduler.address, "-o", str(out), *args])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
