"""Encode 100 M distinct customers exactly: the scale issue 2 asks the id table to reach.

Streams 1e8 order lines, each of a new customer (scattered 40-bit int64 ids), through
``RFMState.update``, then a sample of the same ids again, and checks that every line
landed on exactly one customer.  Prints customers, time and peak RSS.

    python benchmarks/customers_100m.py [--customers 100000000]

Needs about 12 GB of memory (64-byte aggregate row + 16-32 bytes of hash table + 8 bytes
of id per customer; the per-customer arrays grow in place, see rfmx.memory).  Measured on
the 2-core / 24 GB machine: 100,000,000 customers, peak RSS 11.6 GB, 24.4 s (before the
reservations of session 2: 13.7 GB, 158 s on a shared machine).
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pyarrow as pa


def _batch(k: np.ndarray) -> pa.RecordBatch:
    ids = ((k * np.uint64(0x9E3779B97F4A7C15)) & np.uint64((1 << 40) - 1)).astype(np.int64)
    return pa.record_batch({
        "customer_id": ids,
        "order_time": pa.array(k.astype(np.int64) * 1000).view(pa.timestamp("us")),
        "amount": pa.array(np.ones(len(k))),
    })


def main() -> None:
    import rfmx
    from rfmx.kernels.rfm import N_ORDERS
    from rfmx.state import RFMState

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=float, default=1e8)
    parser.add_argument("--batch", type=int, default=2_000_000)
    args = parser.parse_args()
    n = int(args.customers)
    rfmx.warmup()
    state = RFMState()
    start = time.perf_counter()
    for lo in range(0, n, args.batch):
        state.update(_batch(np.arange(lo, min(n, lo + args.batch), dtype=np.uint64)))
    sample = np.arange(0, n, 997, dtype=np.uint64)
    state.update(_batch(sample))
    elapsed = time.perf_counter() - start
    orders = sum(int(state._agg[p, : state._n[p], N_ORDERS].sum()) for p in range(len(state._n)))
    ok = state.n_customers == n and orders == n + len(sample)
    print(f"{state.n_customers:,} customers ({'exact' if ok else 'WRONG'}: {orders:,} orders), "
          f"{elapsed:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")


if __name__ == "__main__":
    main()
