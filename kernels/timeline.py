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

``bhead``  (P, ncap)            per customer: ``(latest bucket + 1) << 32 | (its period & 0xFFFFFFFF)``;
                                0: no bucket (so a grown array is zero past the customers)
``blink``  (P, bcap)            per bucket: ``(next older bucket + 1) << 32 | (period & 0xFFFFFFFF)``;
                                0 above bit 32: the customer's oldest bucket
``bagg``   (P, bcap, N_FIELDS)  the bucket's fields (identities for a new bucket)
``bn``     (P,)                 buckets per partition

A customer's buckets form a chain from its newest period to its oldest, so there is no
bucket hash table: a line of the customer's latest period (or of a newer one, which
starts a bucket at the head) finds its bucket from the head word alone, one random
access per line beside the customer row and the bucket row.  A line older than the
customer's latest period walks the chain to its place: one step per newer bucket of that
customer, none for time-ordered input (the usual order-line export).

Periods are those of :mod:`rfmx.kernels.periods` (``period_kind``), computed from the
lines' wall-clock times in the calendar's zone (``period_us``); they must fit in 32 bits.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel, prefetch
from .customers import partition_of, probe_int64
from .periods import period_of
from .rfm import (GROSS, N_FIELDS, REFUNDS, accumulate, combine, encode_group_bytes, encode_group_int64,
                  finalize_row, find_group_bytes, init_row, select_group)

__all__ = [
    "find_bucket",
    "timeline_update_partitioned_int64",
    "timeline_update_partitioned_bytes",
    "timeline_merge_buckets_int64",
    "timeline_merge_buckets_bytes",
    "timeline_bucket_counts",
    "timeline_export",
    "timeline_min_period",
    "timeline_advance",
    "timeline_snapshot",
]

_LOW32 = 0xFFFFFFFF
_HIGH32 = -(1 << 32)  # the bits above the low 32 (as int64)


@kernel(inline=True)
def _period32(word):
    """The period held in the low 32 bits of a head or link word (sign-extended)."""
    return (word << 32) >> 32


@kernel(inline=True)
def _new_bucket(blink, bn, bagg, p, next_word, period):
    """A new bucket of ``period`` whose next older bucket is ``next_word``'s (its high half)."""
    e = bn[p]
    bn[p] = e + 1
    blink[p, e] = (next_word & _HIGH32) | (period & _LOW32)
    init_row(bagg, p, e)
    return e


@kernel(inline=True)
def find_bucket(bhead, blink, bn, bagg, p, c, period):
    """Customer ``c``'s bucket for ``period`` in partition ``p``, added (initialized) if new."""
    h = bhead[p, c]
    hp = _period32(h)
    if h != 0 and hp == period:
        return (h >> 32) - 1
    if h == 0 or hp < period:  # a newer period than any: the new head
        e = _new_bucket(blink, bn, bagg, p, h, period)
        bhead[p, c] = ((e + 1) << 32) | (period & _LOW32)
        return e
    prev = (h >> 32) - 1  # an older period: walk the chain to its place
    while True:
        nxt = (blink[p, prev] >> 32) - 1
        if nxt < 0:
            break
        q = _period32(blink[p, nxt])
        if q == period:
            return nxt
        if q < period:
            break
        prev = nxt
    e = _new_bucket(blink, bn, bagg, p, blink[p, prev], period)
    blink[p, prev] = ((e + 1) << 32) | (blink[p, prev] & _LOW32)
    return e


# The update kernels take lines in groups like the RFM kernels: the group's customer
# slots are prefetched and probed (rfm.select_group / encode_group_int64, which prefetches
# the customer rows), then the group's periods are computed and the customers' head words
# prefetched, then the customer rows are folded and the buckets found (their rows
# prefetched), then the lines are folded into their buckets.

@kernel(inline=True)
def _fold_group(rows, codes, bper, ents, k, hashes, time_us, period_us, amount_minor, order_id, period_kind,
                partition_bits, agg, bhead, blink, bn, bagg):
    """Fold probed lines ``rows[:k]`` (customers ``codes[:k]``) into their customer rows and
    their buckets; the first line whose money left int64, or -1."""
    has_oid = order_id.shape[0] > 0
    first_wrapped = -1
    for j in range(k):
        r = rows[j]
        bper[j] = period_of(period_us[r], period_kind)
        prefetch(bhead, partition_of(hashes[r], partition_bits), codes[j])
    for j in range(k):
        r = rows[j]
        p = partition_of(hashes[r], partition_bits)
        if accumulate(agg, p, codes[j], time_us[r], amount_minor[r], order_id[r] if has_oid else 0, has_oid):
            if first_wrapped < 0:
                first_wrapped = r
        e = find_bucket(bhead, blink, bn, bagg, p, codes[j], bper[j])
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
                                      bhead, blink, bn, bagg, wrapped):
    """Encode integer ids, fold every line into its customer row ``agg[p, code]`` and into
    its ``(customer, period)`` bucket.  Arguments as
    :func:`rfmx.kernels.rfm.rfm_update_partitioned_int64` plus ``period_us`` (the lines'
    wall-clock times, which decide their periods), ``period_kind`` and the bucket arrays;
    the caller reserves room for every line being a new customer and a new bucket, and
    keeps ``bhead`` zero past the customers."""
    m = ids.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        bper = np.empty(group, dtype=np.int64)
        ents = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            encode_group_int64(rows, k, ids, hashes, partition_bits, table, keys, n, agg, codes)
            r = _fold_group(rows, codes, bper, ents, k, hashes, time_us, period_us, amount_minor, order_id,
                            period_kind, partition_bits, agg, bhead, blink, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def timeline_update_partitioned_bytes(offsets, data, hashes, time_us, period_us, amount_minor, order_id, keep,
                                      period_kind, n_workers, partition_bits, group, table, key_offsets, key_data,
                                      n, nbytes, agg, bhead, blink, bn, bagg, wrapped):
    """As :func:`timeline_update_partitioned_int64` for byte-string ids (Arrow offsets/data)."""
    m = hashes.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        bper = np.empty(group, dtype=np.int64)
        ents = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            encode_group_bytes(rows, k, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n,
                               nbytes, agg, codes)
            r = _fold_group(rows, codes, bper, ents, k, hashes, time_us, period_us, amount_minor, order_id,
                            period_kind, partition_bits, agg, bhead, blink, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


# --- merging buckets (merging states, loading a saved one) ------------------------------

@kernel(inline=True)
def _merge_group_buckets(sel, codes, k, hashes, bucket_offsets, periods, rows, has_order_id, partition_bits,
                         bhead, blink, bn, bagg):
    """Combine the buckets of customers ``sel[:k]`` (local codes ``codes[:k]``) into the
    state's buckets; the first customer whose money left int64, or -1.

    A customer's incoming buckets are taken newest first with a cursor moving down its
    chain (one pass over both when they are in period order, as an export gives them)."""
    first_wrapped = -1
    for j in range(k):
        r = sel[j]
        c = codes[j]
        p = partition_of(hashes[r], partition_bits)
        prev = -1  # the cursor: the bucket before ``cur`` in the chain (-1: the head word)
        cur = (bhead[p, c] >> 32) - 1
        for e in range(bucket_offsets[r + 1] - 1, bucket_offsets[r] - 1, -1):
            q = periods[e]
            if prev >= 0 and _period32(blink[p, prev]) <= q:
                if _period32(blink[p, prev]) == q:  # two incoming buckets of one period
                    b = prev
                    if combine(bagg, p, b, rows, e, has_order_id) and first_wrapped < 0:
                        first_wrapped = r
                    continue
                prev = -1  # out of order: start again from the head
                cur = (bhead[p, c] >> 32) - 1
            while cur >= 0 and _period32(blink[p, cur]) > q:
                prev = cur
                cur = (blink[p, cur] >> 32) - 1
            if cur >= 0 and _period32(blink[p, cur]) == q:
                b = cur
            else:
                b = _new_bucket(blink, bn, bagg, p, (cur + 1) << 32, q)
                if prev < 0:
                    bhead[p, c] = ((b + 1) << 32) | (q & _LOW32)
                else:
                    blink[p, prev] = ((b + 1) << 32) | (blink[p, prev] & _LOW32)
            prev = b
            cur = (blink[p, b] >> 32) - 1
            if combine(bagg, p, b, rows, e, has_order_id) and first_wrapped < 0:
                first_wrapped = r
    return first_wrapped


@kernel(parallel=True)
def timeline_merge_buckets_int64(ids, hashes, bucket_offsets, periods, rows, has_order_id, n_workers,
                                 partition_bits, group, table, keys, n, bhead, blink, bn, bagg, wrapped):
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
                                     partition_bits, bhead, blink, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def timeline_merge_buckets_bytes(offsets, data, hashes, bucket_offsets, periods, rows, has_order_id, n_workers,
                                 partition_bits, group, table, key_offsets, key_data, n, nbytes,
                                 bhead, blink, bn, bagg, wrapped):
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
            find_group_bytes(sel, k, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n, nbytes,
                             codes)
            r = _merge_group_buckets(sel, codes, k, hashes, bucket_offsets, periods, rows, has_order_id,
                                     partition_bits, bhead, blink, bn, bagg)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


# --- reading the buckets out: per customer, in period order ------------------------------

@kernel(parallel=True)
def timeline_bucket_counts(bhead, blink, n, offsets, count):
    """``count[k]`` += buckets of customer ``k`` (customers flattened in partition order:
    customer ``code`` of partition ``p`` is ``offsets[p] + code``)."""
    for p in prange(n.shape[0]):
        base = offsets[p]
        for c in range(n[p]):
            e = (bhead[p, c] >> 32) - 1
            while e >= 0:
                count[base + c] += 1
                e = (blink[p, e] >> 32) - 1


#: customers whose bucket chains :func:`timeline_export` walks side by side
_EXPORT_LANES = 16


@kernel(parallel=True)
def timeline_export(bhead, blink, bagg, n, offsets, bucket_offsets, periods, rows):
    """Every customer's buckets, in period order: customer ``k``'s are
    ``periods[j]``/``rows[j]`` for ``j`` in ``bucket_offsets[k]:bucket_offsets[k + 1]``.

    ``offsets`` (P + 1,): partition ``p``'s customers are ``offsets[p]:offsets[p + 1]``;
    ``periods`` (E,), ``rows`` (E, N_FIELDS).  Partitions in parallel: a partition's
    customers own a range of the outputs, so no two threads write the same place; the
    result is the same for any number of threads.

    A chain is a walk of dependent random reads (each link names the next), so one walk
    waits on memory at every step; the customers of a partition are walked
    :data:`_EXPORT_LANES` at a time, a step of each in turn with the next links
    prefetched, so that their misses overlap."""
    for p in prange(n.shape[0]):
        base = offsets[p]
        e = np.empty(_EXPORT_LANES, dtype=np.int64)
        j = np.empty(_EXPORT_LANES, dtype=np.int64)
        for c0 in range(0, n[p], _EXPORT_LANES):
            lanes = min(_EXPORT_LANES, n[p] - c0)
            for g in range(lanes):
                c = c0 + g
                j[g] = bucket_offsets[base + c + 1] - 1  # the chain runs newest first
                e[g] = (bhead[p, c] >> 32) - 1
                if e[g] >= 0:
                    prefetch(blink, p, e[g])
                    prefetch(bagg, p, e[g])
            active = lanes
            while active > 0:
                active = 0
                for g in range(lanes):
                    if e[g] < 0:
                        continue
                    word = blink[p, e[g]]
                    jj = j[g]
                    periods[jj] = _period32(word)
                    for f in range(N_FIELDS):
                        rows[jj, f] = bagg[p, e[g], f]
                    j[g] = jj - 1
                    nxt = (word >> 32) - 1
                    e[g] = nxt
                    if nxt >= 0:
                        prefetch(blink, p, nxt)
                        prefetch(bagg, p, nxt)
                        active += 1


@kernel(parallel=True)
def timeline_min_period(blink, bn, out):
    """``out[p]`` = the earliest period of partition ``p``'s buckets (``bn[p] > 0``)."""
    for p in prange(bn.shape[0]):
        lo = np.int64(1 << 40)
        for e in range(bn[p]):
            q = _period32(blink[p, e])
            if q < lo:
                lo = q
        out[p] = lo


@kernel(inline=True)
def _advance(bucket_offsets, periods, rows, k, upto, has_order_id, run, pos):
    """Fold into customer ``k``'s running row ``run[0, k]`` its buckets from ``pos[k]`` on
    that are of periods before ``upto``, in period order with
    :func:`rfmx.kernels.rfm.combine` (exactly as a merge); True when its money left int64.
    The row is set to the identities before the first bucket, so ``run`` may start empty."""
    bad = False
    j = pos[k]
    hi = bucket_offsets[k + 1]
    if j == bucket_offsets[k] and j < hi and periods[j] < upto:
        init_row(run, 0, k)
    while j < hi and periods[j] < upto:
        if combine(run, 0, k, rows, j, has_order_id):
            bad = True
        j += 1
    pos[k] = j
    return bad


@kernel(parallel=True)
def timeline_advance(bucket_offsets, periods, rows, upto, has_order_id, run, pos):
    """Fold into every customer's running row (``run``: (1, m, N_FIELDS), customers as in
    :func:`timeline_export`) its buckets of periods before ``upto`` not folded yet
    (``pos[k]``: customer ``k``'s next bucket).  Returns the number of customers whose
    money left int64 (0 for any state that was built without error)."""
    bad = 0
    for k in prange(run.shape[1]):
        if _advance(bucket_offsets, periods, rows, k, upto, has_order_id, run, pos):
            bad += 1
    return bad


@kernel(parallel=True)
def timeline_snapshot(bucket_offsets, periods, rows, customers, upto, has_order_id, run, pos, as_of_day,
                      us_per_day, unit, ints, floats, has_orders, window, lag, windows):
    """The snapshot before period ``upto``: advance the running rows of ``customers``
    (ascending customer indices of :func:`timeline_export`: those with a bucket before
    ``upto``) as :func:`timeline_advance` does, and finalize each into column ``i`` of the
    outputs of :func:`rfmx.kernels.rfm.rfm_finalize_partitioned` (``ints`` (7, n), ``floats``
    (4, n), ``has_orders`` (n,) for ``n = len(customers)``).

    ``windows`` (3, n) int64, or (0, n) for none: the net money (minor units) of the last
    ``window`` periods before ``upto``, of the same periods ``lag`` periods earlier (a year
    back), and of the last ``lag`` periods (the last year) — read from the buckets just
    folded, a few steps back from ``pos``.

    One pass: each customer's buckets are read in place (the export keeps a customer's
    buckets together, customers in order, so the reads run forward through memory), and
    the result keeps the state's customer order, so no sort and no gather follows.
    Returns the number of customers whose money left int64."""
    bad = 0
    for i in prange(customers.shape[0]):
        k = customers[i]
        if _advance(bucket_offsets, periods, rows, k, upto, has_order_id, run, pos):
            bad += 1
        finalize_row(run, 0, k, i, as_of_day, us_per_day, unit, ints, floats, has_orders)
        if windows.shape[0]:
            windows[0, i] = _window_net(periods, rows, bucket_offsets[k], pos[k], upto - window, upto)
            windows[1, i] = _window_net(periods, rows, bucket_offsets[k], pos[k], upto - window - lag, upto - lag)
            windows[2, i] = _window_net(periods, rows, bucket_offsets[k], pos[k], upto - lag, upto)
    return bad


@kernel(inline=True)
def _window_net(periods, rows, lo, hi, start, stop):
    """Net money of the buckets ``lo <= j < hi`` (one customer's, in period order) whose
    period is in ``[start, stop)``.  Gross and refunds are summed apart: each is a part of
    the customer's total of its sign, so neither can leave int64, nor can their sum."""
    gross = 0
    refunds = 0
    j = hi - 1
    while j >= lo and periods[j] >= start:
        if periods[j] < stop:
            gross += rows[j, GROSS]
            refunds += rows[j, REFUNDS]
        j -= 1
    return gross + refunds
