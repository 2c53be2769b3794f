"""Load (or compile, the first time) every kernel of the aggregation path up front.

Numba compiles a kernel on its first call and caches the machine code on disk; a fresh
process still pays for loading each cached kernel the first time it runs (and, once per
install, for compiling it).  ``warmup()`` runs the whole aggregation path — integer and
string ids, order ids, a window, table growth, merge, finalize — on a few thousand
generated lines, so a long job or a benchmark does not pay that in its first batch.
"""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

__all__ = ["warmup"]


def warmup() -> float:
    """Run every aggregation kernel once on tiny data; returns the seconds it took."""
    from .state import RFMState

    start = time.perf_counter()
    n = 40_000  # enough customers to make a partition's table grow (and rehash)
    rng = np.random.default_rng(0)
    ids = rng.permutation(n).astype(np.int64)
    times = pa.array(np.arange(n, dtype=np.int64) * 1_000_000).view(pa.timestamp("us"))
    amounts = pa.array(np.where(np.arange(n) % 50 == 0, -1.5, 10.25))
    order_ids = pa.array(np.arange(n, dtype=np.int64) // 2)
    for id_array in (pa.array(ids), pa.array(ids).cast(pa.string())):
        batch = pa.record_batch({"customer_id": id_array, "order_time": times, "amount": amounts,
                                 "order_id": order_ids})
        for order_id, until in ((None, None), ("order_id", n * 1_000_000 // 2)):
            state = RFMState(order_id=order_id, until=until).update(batch)
            other = RFMState(order_id=order_id, until=until).update(batch.slice(0, 100))
            state.merge(other)
            state.finalize()
    return time.perf_counter() - start
