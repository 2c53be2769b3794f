"""Micro-benchmark: where the streaming engine's time goes, stage by stage.

    python benchmarks/engine_micro.py ORDERS.parquet                  # every stage, 2 threads
    python benchmarks/engine_micro.py ORDERS.parquet --batches 30 --groups 16,32,64,128

The whole-pipeline numbers of ``python -m benchmarks`` mix decoding, conversion, id
encoding, page faults of a growing state and the aggregation kernels, all competing for
the same cores.  This script takes them apart on one file (int or string ids):

1. read: the Parquet reader alone (rfmx's reader thread, batches dropped);
2. first pass: folding pre-decoded batches into a new state (inserts, growth, page faults);
3. convert: checks and conversions per batch (times, money, hashing ids), no folding;
4. steady state: the update kernel alone over batches whose customers are all known
   (``ns/line``, per group size: lines whose memory loads are issued together);
5. finalize with ``consume=True``.

Times on a shared 2-core VM are noisy (fresh memory costs up to ~2.7 s/GB to fault in
here): compare numbers from the same run, and repeat.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("orders", help="a Parquet order history (customer_id, order_time, amount)")
    ap.add_argument("--batches", type=int, default=0, help="use only the first N batches (0: all)")
    ap.add_argument("--groups", default="32,64,128", help="group sizes for the steady-state kernel")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import numpy as np

    import rfmx
    import rfmx.state as state_module
    from rfmx.kernels._policy import threads
    from rfmx.kernels.customers import PARTITION_BITS
    from rfmx.kernels.rfm import rfm_update_partitioned_bytes, rfm_update_partitioned_int64
    from rfmx.sources import iter_batches

    rfmx.warmup()
    cols = rfmx.RFMState().columns

    def clock():
        return time.perf_counter(), time.process_time()

    def report(name, start, lines):
        wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
        print(f"{name:<34} wall {wall:7.3f} s  cpu {cpu:7.3f} s  {wall / max(lines, 1) * 1e9:6.1f} ns/line (wall)")

    start = clock()
    lines = 0
    for _, _, b in iter_batches(args.orders, cols):
        lines += b.num_rows
    report("1 read (Parquet reader only)", start, lines)

    batches = [b for _, _, b in iter_batches(args.orders, cols)]
    if args.batches:
        batches = batches[: args.batches]
    lines = sum(b.num_rows for b in batches)
    st = rfmx.RFMState(threads=args.threads)
    start = clock()
    for b in batches:
        st.update(b)
    report(f"2 first pass ({st.n_customers:,} customers)", start, lines)

    start = clock()
    for b in batches:  # results dropped as they come, as in the stream (keeping them would time page faults)
        st._convert(b, "<batch>", 0)
    report("3 convert (checks, money, hashing)", start, lines)
    converted = [st._convert(b, "<batch>", 0) for b in batches]

    for g in [int(x) for x in args.groups.split(",")]:
        start = clock()
        with threads(args.threads) as n_workers:
            for conv in converted:
                ids, t, amt, oid, keep = conv.lines
                hashes = conv.hashed[0]
                if ids.kind == "int":
                    rfm_update_partitioned_int64(ids.ints, hashes, t, amt, oid, keep, n_workers, PARTITION_BITS, g,
                                                 st._table, st._keys, st._n, st._agg, np.empty(n_workers, np.int64))
                else:
                    rfm_update_partitioned_bytes(ids.offsets, ids.data, hashes, t, amt, oid, keep, n_workers,
                                                 PARTITION_BITS, g, st._table, st._key_offsets, st._key_data,
                                                 st._n, st._nbytes, st._agg, np.empty(n_workers, np.int64))
        mark = " (default)" if g == state_module._GROUP else ""
        report(f"4 steady-state kernel, group {g}{mark}", start, lines)

    st.drop_index()
    start = clock()
    st.finalize(consume=True)
    report("5 finalize(consume=True)", start, lines)


if __name__ == "__main__":
    main()
