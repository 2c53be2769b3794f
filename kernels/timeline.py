"""Per-(customer, period) buckets of the RFM fields: a state with a time axis (NumPy in, NumPy out).

Every customer keeps, beside its aggregate row (:mod:`rfmx.kernels.rfm`), one *bucket* per
calendar period in which it has lines: a row of the same :data:`rfmx.kernels.rfm.FIELDS`,
folded with the same :func:`~rfmx.kernels.rfm.accumulate` and merged with the same
:func:`~rfmx.kernels.rfm.combine`.  A snapshot at a period boundary is then the
prefix-combine of each customer's buckets in period order — the same kernel as a merge —
so it equals the aggregate of the lines before that boundary.

Layouts (all int64), per partition ``p`` (customer tables ``table``/``keys``/``n`` as in
:mod:`rfmx.kernels.customers`; buckets live in their customer's partition, so the worker
that owns a partition owns its buckets too):

``btable`` (P, cap, 2)          slot = (bucket key, bucket + 1); 0 marks an empty slot
``bkeys``  (P, bcap)            bucket key by bucket: ``local_code << 32 | (period & 0xFFFFFFFF)``
``bagg``   (P, bcap, N_FIELDS)  the bucket's fields (identities for a new bucket)
``bn``     (P,)                 buckets per partition

Periods are those of :mod:`rfmx.kernels.periods` (``period_kind``), computed from the
lines' wall-clock times in the calendar's zone (``period_us``); they must fit in 32 bits.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel, prefetch
from .customers import mix64, partition_of, prefetch_bytes_id, probe_bytes, probe_int64
from .periods import period_of
from .rfm import N_FIELDS, accumulate, combine, encode_bytes, encode_group_int64, init_row, select_group

__all__ = [
    "bucket_key",
    "timeline_update_partitioned_int64",
    "timeline_update_partitioned_bytes",
    "timeline_merge_buckets_int64",
    "timeline_merge_buckets_bytes",
    "timeline_bucket_counts",
    "timeline_export",
    "timeline_advance",
]

_LOW32 = 0xFFFFFFFF
#: a customer's buckets up to this many are put in period order by insertion sort (they
#: come in time order from the usual export, so that is one pass); longer runs by argsort
_INSERTION_SORT_MAX = 32


@kernel(inline=True)
def bucket_key(code, period):
    """The key of customer ``code``'s bucket for ``period`` (low 32 bits of the period)."""
    return (code << 32) | (period & _LOW32)


# The update kernels take lines in groups like the RFM kernels: the group's customer
# slots are prefetched and probed (rfm.select_group / encode_group_int64), then the
# bucket slots are prefetched, probed (folding the customer rows meanwhile) and the
# bucket rows prefetched, then the lines are folded into their buckets.

@kernel(inline=True)
def _fold_group(rows, codes, bkey, ents, k, hashes, time_us, period_us, amount_minor, order_id, period_kind,
                partition_bits, agg, btable, bkeys, bn, bagg):
    """Fold probed lines ``rows[:k]`` (customers ``codes[:k]``) into their customer rows and
    their buckets; the first line whose money left int64, or -1."""
    has_oid = order_id.shape[0] > 0
    bmask = btable.shape[1] - 1
    first_wrapped = -1
    for j in range(k):
        r = rows[j]
        key = bucket_key(codes[j], period_of(period_us[r], period_kind))
        bkey[j] = key
        prefetch(btable, partition_of(hashes[r], partition_bits), mix64(key) & bmask)
    for j in range(k):
        r = rows[j]
        p = partition_of(hashes[r], partition_bits)
        if accumulate(agg, p, codes[j], time_us[r], amount_minor[r], order_id[r] if has_oid else 0, has_oid):
            if first_wrapped < 0:
                first_wrapped = r
        before = bn[p]
        e = probe_int64(btable, bkeys, bn, p, bkey[j], mix64(bkey[j]))
        if e == before:
            init_row(bagg, p, e)
        ents[j] = e
        prefetch(bagg, p, e)
    for j in range(k):
        r = rows[j]
        p = partition_of(hashes[r], partition_bits)
        # a bucket's money is part of its customer's, so it cannot leave int64 first
        if accumulate(bagg, p, ents[j], time_us[r], amount_minor[r], order_id[r] if has_oid else 0, has_oid):
            if first_wrapped < 0:
                first_wrapped = r
    return first_wrapped


@kernel(parallel=True)
def timeline_update_partitioned_int64(ids, hashes, time_us, period_us, amount_minor, order_id, keep, period_kind,
                                      n_workers, partition_bits, group, table, keys, n, agg,
                                      btable, bkeys, bn, bagg, wrapped):
    """Encode integer ids, fold every line into its customer row ``agg[p, code]`` and into
    its ``(customer, period)`` bucket.  Arguments as
    :func:`rfmx.kernels.rfm.rfm_update_partitioned_int64` plus ``period_us`` (the lines'
    wall-clock times, which decide their periods), ``period_kind`` and the bucket arrays;
    the caller reserves room for every line being a new customer and a new bucket."""
    m = ids.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        bkey = np.empty(group, dtype=np.int64)
        ents = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            encode_group_int64(rows, k, ids, hashes, partition_bits, table, keys, n, agg, codes)
            r = _fold_group(rows, codes, bkey, ents, k, hashes, time_us, period_us, amount_minor, order_id,
                            period_kind, partition_bits, agg, btable, bkeys, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def timeline_update_partitioned_bytes(offsets, data, hashes, time_us, period_us, amount_minor, order_id, keep,
                                      period_kind, n_workers, partition_bits, group, table, key_offsets, key_data,
                                      n, nbytes, agg, btable, bkeys, bn, bagg, wrapped):
    """As :func:`timeline_update_partitioned_int64` for byte-string ids (Arrow offsets/data)."""
    m = hashes.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        bkey = np.empty(group, dtype=np.int64)
        ents = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            for j in range(k):
                r = rows[j]
                h = hashes[r]
                prefetch_bytes_id(table, key_data, partition_of(h, partition_bits), h, offsets[r + 1] - offsets[r])
            for j in range(k):
                p, c = encode_bytes(rows[j], offsets, data, hashes, partition_bits, table, key_offsets, key_data,
                                    n, nbytes, agg)
                codes[j] = c
                prefetch(agg, p, c)
            r = _fold_group(rows, codes, bkey, ents, k, hashes, time_us, period_us, amount_minor, order_id,
                            period_kind, partition_bits, agg, btable, bkeys, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


# --- merging buckets (merging states, loading a saved one) ------------------------------

@kernel(inline=True)
def _merge_group_buckets(sel, codes, k, hashes, bucket_offsets, periods, rows, has_order_id, partition_bits,
                         btable, bkeys, bn, bagg):
    """Combine the buckets of customers ``sel[:k]`` (local codes ``codes[:k]``) into the
    state's buckets; the first customer whose money left int64, or -1."""
    first_wrapped = -1
    for j in range(k):
        r = sel[j]
        p = partition_of(hashes[r], partition_bits)
        for e in range(bucket_offsets[r], bucket_offsets[r + 1]):
            key = bucket_key(codes[j], periods[e])
            before = bn[p]
            b = probe_int64(btable, bkeys, bn, p, key, mix64(key))
            if b == before:
                init_row(bagg, p, b)
            if combine(bagg, p, b, rows, e, has_order_id) and first_wrapped < 0:
                first_wrapped = r
    return first_wrapped


@kernel(parallel=True)
def timeline_merge_buckets_int64(ids, hashes, bucket_offsets, periods, rows, has_order_id, n_workers,
                                 partition_bits, group, table, keys, n, btable, bkeys, bn, bagg, wrapped):
    """Combine customer ``j``'s buckets ``rows[e]`` (period ``periods[e]``), ``e`` in
    ``bucket_offsets[j]:bucket_offsets[j + 1]``, into the state's buckets (``rows`` taken
    to follow them, as :func:`rfmx.kernels.rfm.combine`).

    ``ids``/``hashes`` (u,): customers already in the state (their rows are merged first);
    ``rows`` (m, N_FIELDS).  ``wrapped`` (n_workers,): per worker the first customer whose
    money left int64, or -1."""
    u = ids.shape[0]
    every_customer = np.empty(0, dtype=np.bool_)
    for w in prange(n_workers):
        sel = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < u:
            i, k = select_group(hashes, every_customer, i, group, sel, w, n_workers, partition_bits, table)
            for j in range(k):
                r = sel[j]
                codes[j] = probe_int64(table, keys, n, partition_of(hashes[r], partition_bits), ids[r], hashes[r])
            r = _merge_group_buckets(sel, codes, k, hashes, bucket_offsets, periods, rows, has_order_id,
                                     partition_bits, btable, bkeys, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def timeline_merge_buckets_bytes(offsets, data, hashes, bucket_offsets, periods, rows, has_order_id, n_workers,
                                 partition_bits, group, table, key_offsets, key_data, n, nbytes,
                                 btable, bkeys, bn, bagg, wrapped):
    """As :func:`timeline_merge_buckets_int64` for byte-string customer ids."""
    u = hashes.shape[0]
    every_customer = np.empty(0, dtype=np.bool_)
    for w in prange(n_workers):
        sel = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < u:
            i, k = select_group(hashes, every_customer, i, group, sel, w, n_workers, partition_bits, table)
            for j in range(k):
                r = sel[j]
                h = hashes[r]
                prefetch_bytes_id(table, key_data, partition_of(h, partition_bits), h, offsets[r + 1] - offsets[r])
            for j in range(k):
                r = sel[j]
                codes[j] = probe_bytes(table, key_offsets, key_data, n, nbytes, partition_of(hashes[r], partition_bits),
                                       data, offsets[r], offsets[r + 1], hashes[r])
            r = _merge_group_buckets(sel, codes, k, hashes, bucket_offsets, periods, rows, has_order_id,
                                     partition_bits, btable, bkeys, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


# --- reading the buckets out: per customer, in period order ------------------------------

@kernel(parallel=True)
def timeline_bucket_counts(bkeys, bn, offsets, count):
    """``count[k]`` += buckets of customer ``k`` (customers flattened in partition order:
    customer ``code`` of partition ``p`` is ``offsets[p] + code``)."""
    for p in prange(bn.shape[0]):
        base = offsets[p]
        for e in range(bn[p]):
            count[base + (bkeys[p, e] >> 32)] += 1


@kernel(parallel=True)
def timeline_export(bkeys, bagg, bn, offsets, bucket_offsets, periods, rows, src):
    """Every customer's buckets, in period order: customer ``k``'s are
    ``periods[j]``/``rows[j]`` for ``j`` in ``bucket_offsets[k]:bucket_offsets[k + 1]``.

    ``offsets`` (P + 1,): partition ``p``'s customers are ``offsets[p]:offsets[p + 1]``; ``periods`` (E,), ``rows`` (E,
    N_FIELDS), ``src`` (E,) scratch.  Partitions in parallel: a partition's customers own
    a range of the outputs, so no two threads write the same place; the result is the
    same for any number of threads."""
    fill = bucket_offsets[:-1].copy()
    for p in prange(bn.shape[0]):
        base = offsets[p]
        for e in range(bn[p]):
            key = bkeys[p, e]
            k = base + (key >> 32)
            j = fill[k]
            fill[k] = j + 1
            periods[j] = (key << 32) >> 32  # sign-extend the low 32 bits
            src[j] = e
        for k in range(base, offsets[p + 1]):
            lo = bucket_offsets[k]
            hi = bucket_offsets[k + 1]
            if hi - lo <= _INSERTION_SORT_MAX:
                for a in range(lo + 1, hi):
                    per = periods[a]
                    s = src[a]
                    b = a - 1
                    while b >= lo and periods[b] > per:
                        periods[b + 1] = periods[b]
                        src[b + 1] = src[b]
                        b -= 1
                    periods[b + 1] = per
                    src[b + 1] = s
            else:
                order = np.argsort(periods[lo:hi])
                sp = periods[lo:hi][order]
                ss = src[lo:hi][order]
                periods[lo:hi] = sp
                src[lo:hi] = ss
            for j in range(lo, hi):
                for f in range(N_FIELDS):
                    rows[j, f] = bagg[p, src[j], f]


@kernel(parallel=True)
def timeline_advance(bucket_offsets, periods, rows, order, k, upto, has_order_id, run, pos):
    """Fold into the running rows the buckets of periods before ``upto`` not folded yet.

    Customers are taken in ``order`` (ranks ``0 .. k - 1``; customer ``order[r]`` of the
    export of :func:`timeline_export`); rank ``r``'s running row is ``run[r // c, r % c]``
    (``run``: (P, c, N_FIELDS), so :func:`rfmx.kernels.rfm.rfm_finalize_partitioned`
    finalizes it as it is) and ``pos[r]`` its next bucket.  Buckets are combined in period
    order with :func:`rfmx.kernels.rfm.combine`, exactly as a merge.  Returns the number
    of customers whose money left int64 (0 for any state that was built without error).
    """
    c = run.shape[1]
    bad = 0
    for r in prange(k):
        i = order[r]
        j = pos[r]
        hi = bucket_offsets[i + 1]
        while j < hi and periods[j] < upto:
            if combine(run, r // c, r % c, rows, j, has_order_id):
                bad += 1
            j += 1
        pos[r] = j
    return bad
