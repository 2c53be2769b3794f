"""The stream: batches read ahead on a reader thread, converted and folded on the caller's.

An error in the middle of a stream must stop every helper thread, and streaming must
give what folding the same batches one by one gives.
"""
from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rfmx
from rfmx import RFMState, RfmxError


def _rfmx_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("rfmx-")]


def test_bad_batch_mid_stream_stops_every_helper(tmp_path):
    good = pa.table({"customer_id": pa.array(range(1000)),
                     "order_time": pa.array(np.arange(1000) * 10**9, pa.timestamp("us")),
                     "amount": pa.array(np.ones(1000))})
    bad = good.set_column(2, "amount", pa.array([1.0] * 999 + [float("nan")]))
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.concat_tables([good, good, bad, good]), path, row_group_size=1000)
    with pytest.raises(RfmxError, match=r"orders.parquet: column 'amount' .* at row 2999"):
        rfmx.aggregate(str(path), batch_size=1000)
    assert _rfmx_threads() == []


def test_stream_equals_update_by_update():
    rng = np.random.default_rng(3)
    n = 20_000
    table = pa.table({"customer_id": pa.array(rng.integers(0, 3000, n)),
                      "order_time": pa.array(1_700_000_000_000_000 + rng.integers(0, 10**13, n), pa.timestamp("us")),
                      "amount": pa.array(rng.integers(-300, 9000, n) / 100)})
    by_hand = RFMState()
    for batch in table.to_batches(max_chunksize=777):
        by_hand.update(batch)
    streamed = rfmx.build_state(table, batch_size=777)
    assert streamed.finalize().equals(by_hand.finalize(), check_metadata=True)
    assert _rfmx_threads() == []
