"""A lower bound for exact streaming aggregation on this machine, measured like a contender.

rfmx's own pipeline up to the kernels: the same scanner, batch size, checks, time and
money conversions and id hashes (``RFMState._convert``), then the least any per-customer
aggregation can do with a line of an unsorted stream: touch one random 64-byte row.  The
row is found from the hash alone: no id is stored or compared, no table grows, and the
row table is sized once for the final customer count.  Two customers whose hashes share
the low bits therefore share a row, so its numbers are not a result; only its time is.

An exact engine needs at least this (it must reach the customer's row) and, to stay exact,
more: a table slot per line to map the id to its row, and the ids themselves to compare
(for string ids, a third random access).  If this bound is slower than a target, so is
every exact design on the same machine.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from rfmx.kernels.customers import N_PARTITIONS, PARTITION_BITS, partition_of
from rfmx.kernels.rfm import select_group

GROUP = 64  # lines whose row loads are issued together, as in rfmx's kernels


@njit(parallel=True, nogil=True, cache=True)
def fold_one_row_per_line(hashes, time_us, amount_minor, n_workers, partition_bits, group, rows):
    """Each worker folds the lines of the partitions it owns (as rfmx does) into ``rows``
    (P, cap, 8): row ``hash & (cap - 1)`` of the line's partition.  Lines are picked and
    their rows prefetched by rfmx's own ``select_group`` (given ``rows`` where rfmx gives
    its id table, so it prefetches the row)."""
    m = hashes.shape[0]
    mask = rows.shape[1] - 1
    every_line = np.empty(0, dtype=np.bool_)
    for w in prange(n_workers):
        picked = np.empty(group, dtype=np.int64)
        i = 0
        while i < m:
            i, k = select_group(hashes, every_line, i, group, picked, w, n_workers, partition_bits, rows)
            for j in range(k):
                r = picked[j]
                h = hashes[r]
                p = partition_of(h, partition_bits)
                s = h & mask
                if amount_minor[r] < 0:
                    rows[p, s, 3] += 1
                    rows[p, s, 5] += amount_minor[r]
                    continue
                rows[p, s, 2] += 1
                rows[p, s, 4] += amount_minor[r]
                if time_us[r] < rows[p, s, 0]:
                    rows[p, s, 0] = time_us[r]
                if time_us[r] > rows[p, s, 1]:
                    rows[p, s, 1] = time_us[r]


def bound_run(path, customers: int | None, batch_size: int) -> int:
    """Stream ``path`` through the bound; returns the number of lines read."""
    import rfmx
    from rfmx.kernels._policy import threads
    from rfmx.sources import iter_batches

    state = rfmx.RFMState()
    per_partition = max(1, int(customers or 1) // N_PARTITIONS)
    cap = 1 << max(0, (per_partition - 1).bit_length())  # a power of two >= customers per partition
    rows = np.zeros((N_PARTITIONS, cap, 8), dtype=np.int64)
    rows[:, :, 0] = np.iinfo(np.int64).max
    rows[:, :, 1] = np.iinfo(np.int64).min
    read = 0
    with threads(None) as n_workers:
        for where, row0, batch in iter_batches(path, state.columns, batch_size=batch_size):
            conv = state._convert(batch, where, row0)
            read += conv.rows
            if conv.lines is None:
                continue
            _, t, amt, _, _ = conv.lines
            fold_one_row_per_line(conv.hashed[0], t, amt, n_workers, PARTITION_BITS, GROUP, rows)
    return read
