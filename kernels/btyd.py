"""Purchase periods per customer for BTYD ("buy till you die") summaries (NumPy in, NumPy out).

BTYD models see a customer as (frequency, recency, T): purchases are collapsed per period
(day, week or month) and only the periods matter.  To compute that from a stream of order
lines exactly and mergeably, every customer keeps the set of periods in which they bought
and the money spent in each: an exact hash table keyed by ``(customer code, period)``,
partitioned like the customer index of :mod:`rfmx.kernels.customers` (a customer's
periods live in the customer's partition, so the worker that owns the partition owns
them).  Memory grows with purchase periods (customers x periods each), never with rows.

Layouts (all int64), per partition ``p`` (see :mod:`rfmx.kernels.customers` for the
customer tables ``table``/``keys``/``n``):

``ptable`` (P, cap, 2)  slot = (period key, entry + 1); 0 marks an empty slot (as the customer tables)
``pkeys``  (P, ecap)    period key by entry: ``local_code << 32 | (period & 0xFFFFFFFF)``
``pmoney`` (P, ecap)    money (minor units) of the customer's order lines in that period
``pn``     (P,)         entries per partition

Periods are integers: days since 1970-01-01 (``period_kind`` 0), weeks starting Monday
counted from the week of 1970-01-01 (1, pandas' ``W`` periods), months since 1970-01
(2); the period arithmetic lives in :mod:`rfmx.kernels.periods` (shared with the
timeline state, which also has quarters and other week starts).  Refund lines (negative
amounts) are not purchases and never create a period.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel, prefetch
from .customers import mix64, partition_of, probe_int64
from .periods import PERIOD_KINDS, US_PER_DAY, period_of, period_start_us, periods_of
from .rfm import accumulate, encode_group_bytes, encode_group_int64, find_group_bytes, select_group

__all__ = [
    "PERIOD_KINDS",
    "US_PER_DAY",
    "period_of",
    "periods_of",
    "period_start_us",
    "btyd_update_partitioned_int64",
    "btyd_update_partitioned_bytes",
    "btyd_merge_periods_int64",
    "btyd_merge_periods_bytes",
    "btyd_period_stats",
    "btyd_entries",
]

_LOW32 = 0xFFFFFFFF


@kernel(inline=True)
def _add_period(ptable, pkeys, pn, pmoney, p, key, money):
    # money is set on insert and added after, so grown money arrays need no zero fill
    before = pn[p]
    e = probe_int64(ptable, pkeys, pn, p, key, mix64(key))
    if e == before:
        pmoney[p, e] = money
    else:
        pmoney[p, e] += money


@kernel(inline=True)
def _period_key(code, period):
    return (code << 32) | (period & _LOW32)


# The update kernels handle lines in groups of ``group`` (as the RFM kernels do): the
# group's customer-table slots are prefetched, then probed (prefetching the aggregate rows
# and the period-table slots), then folded and their periods probed (prefetching the money
# cells, ``pmoney3`` being ``pmoney`` viewed as (P, ecap, 1)), then the money is added, so
# the cache misses of a group overlap.

@kernel(inline=True)
def _fold_group(rows, codes, pkey, ents, k, hashes, time_us, period_us, amount_minor, order_id, period_kind,
                partition_bits, agg, ptable, pkeys, pn, pmoney, pmoney3):
    """Fold probed lines ``rows[:k]`` (customers ``codes[:k]``) into their RFM rows and
    their purchase lines into the ``(customer, period)`` entries; ``codes`` is reused.

    Three passes over the group, each issuing the loads the next one needs: the entry
    slots, then the entries' money.  Returns the first line whose money took its
    customer's total out of int64, or -1 (a period's money is part of that customer's
    gross, so it cannot wrap before the gross does).
    """
    has_oid = order_id.shape[0] > 0
    pmask = ptable.shape[1] - 1
    first_wrapped = -1
    for j in range(k):
        r = rows[j]
        if amount_minor[r] >= 0:
            key = _period_key(codes[j], period_of(period_us[r], period_kind))
            pkey[j] = key
            prefetch(ptable, partition_of(hashes[r], partition_bits), mix64(key) & pmask)
    for j in range(k):
        r = rows[j]
        p = partition_of(hashes[r], partition_bits)
        amt = amount_minor[r]
        if accumulate(agg, p, codes[j], time_us[r], amt, order_id[r] if has_oid else 0, has_oid):
            if first_wrapped < 0:
                first_wrapped = r
        if amt >= 0:
            before = pn[p]
            e = probe_int64(ptable, pkeys, pn, p, pkey[j], mix64(pkey[j]))
            ents[j] = e - before  # >= 0: a new entry
            codes[j] = e
            prefetch(pmoney3, p, e)
    for j in range(k):
        r = rows[j]
        amt = amount_minor[r]
        if amt >= 0:
            p = partition_of(hashes[r], partition_bits)
            if ents[j] >= 0:
                pmoney[p, codes[j]] = amt
            else:
                pmoney[p, codes[j]] += amt
    return first_wrapped


@kernel(parallel=True)
def btyd_update_partitioned_int64(ids, hashes, time_us, period_us, amount_minor, order_id, keep, period_kind,
                                  n_workers, partition_bits, group, table, keys, n, agg,
                                  ptable, pkeys, pn, pmoney, pmoney3, wrapped):
    """Encode integer ids, fold every line into the RFM row ``agg[p, code]`` (see
    :func:`rfmx.kernels.rfm.accumulate`) and every purchase line (amount >= 0) into its
    ``(customer, period)`` entry.  Arguments as :func:`rfmx.kernels.rfm.rfm_update_partitioned_int64`
    plus ``period_us`` (the lines' wall-clock times in the calendar's time zone, which decide
    their periods; ``time_us`` itself in UTC), ``period_kind`` and the period tables; the caller reserves room for every line
    being a new customer and a new entry.  Rows of new customers are initialized here."""
    m = ids.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        pkey = np.empty(group, dtype=np.int64)
        ents = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            encode_group_int64(rows, k, ids, hashes, partition_bits, table, keys, n, agg, codes)
            r = _fold_group(rows, codes, pkey, ents, k, hashes, time_us, period_us, amount_minor, order_id,
                            period_kind, partition_bits, agg, ptable, pkeys, pn, pmoney, pmoney3)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def btyd_update_partitioned_bytes(offsets, data, hashes, time_us, period_us, amount_minor, order_id, keep,
                                  period_kind,
                                  n_workers, partition_bits, group, table, key_offsets, key_data, n, nbytes, agg,
                                  ptable, pkeys, pn, pmoney, pmoney3, wrapped):
    """As :func:`btyd_update_partitioned_int64` for byte-string ids (Arrow offsets/data)."""
    m = hashes.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        pkey = np.empty(group, dtype=np.int64)
        ents = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            encode_group_bytes(rows, k, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n,
                               nbytes, agg, codes)
            r = _fold_group(rows, codes, pkey, ents, k, hashes, time_us, period_us, amount_minor, order_id,
                            period_kind, partition_bits, agg, ptable, pkeys, pn, pmoney, pmoney3)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


# The merge kernels (merging states, and loading a saved one, which merges its entries
# into an empty state) take customers in groups like the update kernels: the group's
# customer slots are prefetched and probed, then its customers' entries go into the period
# tables ``group`` at a time, their slots prefetched before any is probed.  Entries stay
# in input order within a partition, so the result is the same for any number of workers.
# (Before: one entry at a time with an ownership ``if`` per entry, and the customer probed
# again for every one of its entries.)

@kernel(inline=True)
def _add_buffered(b, buf, ptable, pkeys, pn, pmoney):
    # buf rows: entry key, partition, money
    for i in range(b):
        _add_period(ptable, pkeys, pn, pmoney, buf[1, i], buf[0, i], buf[2, i])


@kernel(inline=True)
def _merge_group_entries(rows, codes, k, hashes, entry_offsets, periods, money, partition_bits,
                         buf, ptable, pkeys, pn, pmoney):
    """Add the entries of customers ``rows[:k]`` (local codes ``codes[:k]``) to the period
    tables, ``buf.shape[1]`` entries at a time (``buf``: (3, size) int64 scratch)."""
    pmask = ptable.shape[1] - 1
    size = buf.shape[1]
    b = 0
    for j in range(k):
        r = rows[j]
        p = partition_of(hashes[r], partition_bits)
        for e in range(entry_offsets[r], entry_offsets[r + 1]):
            key = _period_key(codes[j], periods[e])
            buf[0, b] = key
            buf[1, b] = p
            buf[2, b] = money[e]
            prefetch(ptable, p, mix64(key) & pmask)
            b += 1
            if b == size:
                _add_buffered(b, buf, ptable, pkeys, pn, pmoney)
                b = 0
    _add_buffered(b, buf, ptable, pkeys, pn, pmoney)


@kernel(parallel=True)
def btyd_merge_periods_int64(ids, hashes, entry_offsets, periods, money, n_workers, partition_bits, group,
                             table, keys, n, ptable, pkeys, pn, pmoney):
    """Fold customer ``j``'s entries ``(ids[j], periods[e]) += money[e]``, ``e`` in
    ``entry_offsets[j]:entry_offsets[j + 1]``, into the state.

    ``ids``/``hashes``: the customers (u,), already in the state (the RFM rows are merged
    first); ``entry_offsets`` (u + 1,); ``periods``, ``money``: (m,).  Money of an entry
    that exists is added, so merging is exact and order-free.  ``group``: customers (and
    entries) whose memory loads are issued together."""
    u = ids.shape[0]
    every_customer = np.empty(0, dtype=np.bool_)
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        buf = np.empty((3, group), dtype=np.int64)
        i = 0
        while i < u:
            i, k = select_group(hashes, every_customer, i, group, rows, w, n_workers, partition_bits, table)
            for j in range(k):
                r = rows[j]
                codes[j] = probe_int64(table, keys, n, partition_of(hashes[r], partition_bits), ids[r], hashes[r])
            _merge_group_entries(rows, codes, k, hashes, entry_offsets, periods, money, partition_bits,
                                 buf, ptable, pkeys, pn, pmoney)


@kernel(parallel=True)
def btyd_merge_periods_bytes(offsets, data, hashes, entry_offsets, periods, money, n_workers, partition_bits, group,
                             table, key_offsets, key_data, n, nbytes, ptable, pkeys, pn, pmoney):
    """As :func:`btyd_merge_periods_int64` for byte-string customer ids."""
    u = hashes.shape[0]
    every_customer = np.empty(0, dtype=np.bool_)
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        buf = np.empty((3, group), dtype=np.int64)
        i = 0
        while i < u:
            i, k = select_group(hashes, every_customer, i, group, rows, w, n_workers, partition_bits, table)
            find_group_bytes(rows, k, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n, nbytes,
                             codes)
            _merge_group_entries(rows, codes, k, hashes, entry_offsets, periods, money, partition_bits,
                                 buf, ptable, pkeys, pn, pmoney)


@kernel(parallel=True)
def btyd_period_stats(pkeys, pmoney, pn, n, offsets, holdout_period, count, first, last, money, first_money,
                      holdout_count, holdout_money):
    """Per-customer period statistics, customers flattened in partition order.

    Customer ``code`` of partition ``p`` is row ``offsets[p] + code`` of the outputs (all
    int64, length ``sum(n)``).  Periods ``>= holdout_period`` count in ``holdout_count``/
    ``holdout_money`` only; the others give ``count`` (distinct periods), ``first``/``last``
    period, ``money`` (total) and ``first_money`` (money of the first period).  Customers
    without a calibration period get ``count`` 0 and ``first``/``last`` undefined.
    """
    for p in prange(pn.shape[0]):
        base = offsets[p]
        for c in range(n[p]):
            k = base + c
            count[k] = 0
            first[k] = np.iinfo(np.int64).max
            last[k] = np.iinfo(np.int64).min
            money[k] = 0
            first_money[k] = 0
            holdout_count[k] = 0
            holdout_money[k] = 0
        for e in range(pn[p]):
            key = pkeys[p, e]
            k = base + (key >> 32)
            per = (key << 32) >> 32  # sign-extend the low 32 bits
            mny = pmoney[p, e]
            if per >= holdout_period:
                holdout_count[k] += 1
                holdout_money[k] += mny
                continue
            count[k] += 1
            money[k] += mny
            if per < first[k]:
                first[k] = per
                first_money[k] = mny
            if per > last[k]:
                last[k] = per


@kernel(parallel=True)
def btyd_entries(pkeys, pmoney, pn, n, offsets, entry_offsets, periods, money):
    """All entries grouped by customer (flattened in partition order, like
    :func:`btyd_period_stats`): customer ``k``'s periods are
    ``periods[entry_offsets[k]:entry_offsets[k + 1]]`` (in insertion order).

    Partitions in parallel: a partition's customers own a range of the output of their
    own, so no two threads write the same place."""
    fill = entry_offsets[:-1].copy()
    for p in prange(pn.shape[0]):
        base = offsets[p]
        for e in range(pn[p]):
            key = pkeys[p, e]
            k = base + (key >> 32)
            j = fill[k]
            fill[k] = j + 1
            periods[j] = (key << 32) >> 32
            money[j] = pmoney[p, e]
