"""Per-customer RFM aggregation kernels (NumPy in, NumPy out).

A customer's aggregate is one row of eight int64 fields (one cache line, so an update
touches one line of memory).  Each field is declared once in :data:`FIELDS` with its
identity and its merge; :func:`accumulate` folds one order line into a row and
:func:`combine` folds one row into another — the same merge serves threads, batches,
files, saved increments and Dask partitions.

Units: times are int64 microseconds since the Unix epoch (UTC for zoned inputs); money is
int64 *minor units* (``amount * 10**scale``, exact), so totals never depend on the order in
which rows are added.  A line with a negative amount is a refund: it nets out of the
money and is counted in ``n_refunds``, never as an order.

Order counting.  Without order ids every non-refund line is one order.  With order ids a
line starts a new order when its id differs from the previous non-refund line *of the
same customer*, so the lines of one order count once when they are contiguous for that
customer in the input (the usual order-line export).  ``first_order_id``/``last_order_id``
remember a customer's first and last order so that :func:`combine` (which treats its
second argument as coming *after* the first) counts an order whose lines straddle two
states once.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel, prefetch
from .customers import partition_of, prefetch_bytes_id, probe_bytes, probe_int64

__all__ = [
    "FIELDS",
    "N_FIELDS",
    "FIRST_ORDER",
    "LAST_ORDER",
    "N_ORDERS",
    "N_REFUNDS",
    "GROSS",
    "REFUNDS",
    "FIRST_ORDER_ID",
    "LAST_ORDER_ID",
    "new_aggregates",
    "accumulate",
    "combine",
    "rfm_update",
    "rfm_merge",
    "rfm_update_partitioned_int64",
    "rfm_update_partitioned_bytes",
    "rfm_merge_partitioned_int64",
    "rfm_merge_partitioned_bytes",
    "rfm_fields_partitioned",
    "rfm_finalize_partitioned",
    "finalize_row",
    "COST_FIELDS",
    "N_COST_FIELDS",
    "COST",
    "COST_RETURNED",
    "split_cost",
    "cost_fold_partitioned_int64",
    "cost_fold_partitioned_bytes",
    "cost_fields_partitioned",
]

_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min

# name, identity, merge — the single declaration of the per-customer state.
FIELDS = (
    ("first_order_us", _I64_MAX, "min"),   # earliest order time
    ("last_order_us", _I64_MIN, "max"),    # latest order time
    ("n_orders", 0, "sum"),                # orders (refund lines excluded)
    ("n_refunds", 0, "sum"),               # refund lines
    ("gross_minor", 0, "sum"),             # money of non-refund lines
    ("refunds_minor", 0, "sum"),           # money of refund lines (<= 0)
    ("first_order_id", 0, "first"),        # first order's id (order-id counting only)
    ("last_order_id", 0, "last"),          # last order's id (order-id counting only)
)
N_FIELDS = len(FIELDS)
(FIRST_ORDER, LAST_ORDER, N_ORDERS, N_REFUNDS, GROSS, REFUNDS,
 FIRST_ORDER_ID, LAST_ORDER_ID) = range(N_FIELDS)
_IDENTITY = np.array([f[1] for f in FIELDS], dtype=np.int64)

# The per-customer cost of the lines (only with a cost column): a second row block beside
# the aggregate rows, so that runs without cost keep their one-cache-line row.  Costs of
# one sign go to a total of that sign, as money does, so a total leaves int64 only when
# the final total does, whatever the order lines and merges come in.
COST_FIELDS = (
    ("cost_minor", 0, "sum"),              # costs >= 0 (goods sold, the cost of serving)
    ("cost_returned_minor", 0, "sum"),     # costs < 0 (goods coming back with a refund)
)
N_COST_FIELDS = len(COST_FIELDS)
COST, COST_RETURNED = range(N_COST_FIELDS)


def new_aggregates(shape) -> np.ndarray:
    """A fresh aggregate array of ``shape + (N_FIELDS,)`` holding every field's identity."""
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    out = np.empty(shape + (N_FIELDS,), dtype=np.int64)
    out[...] = _IDENTITY
    return out


@kernel(inline=True)
def init_row(agg, p, c):
    """Set ``agg[p, c]`` to every field's identity (a customer seen for the first time)."""
    agg[p, c, FIRST_ORDER] = _I64_MAX
    agg[p, c, LAST_ORDER] = _I64_MIN
    for f in range(N_ORDERS, N_FIELDS):
        agg[p, c, f] = 0


@kernel(inline=True)
def accumulate(agg, p, c, time_us, amount_minor, order_id, has_order_id):
    """Fold one order line into the aggregate row ``agg[p, c]`` (``agg``: (P, n, N_FIELDS)).

    Returns True when the line's money would take the customer's gross or refund total
    out of int64; that money is then not added and the caller must not use the state.
    Money of one sign goes to a total of that sign (gross >= 0, refunds <= 0), so one
    compare against the room left tells, before adding: a wrapped sum cannot be tested
    after the fact (LLVM takes signed overflow to be impossible and drops such a test).
    """
    if amount_minor < 0:
        agg[p, c, N_REFUNDS] += 1
        if amount_minor < _I64_MIN - agg[p, c, REFUNDS]:
            return True
        agg[p, c, REFUNDS] += amount_minor
        return False
    wrapped = amount_minor > _I64_MAX - agg[p, c, GROSS]
    if not wrapped:
        agg[p, c, GROSS] += amount_minor
    if not has_order_id:
        agg[p, c, N_ORDERS] += 1
    elif agg[p, c, N_ORDERS] == 0:
        agg[p, c, N_ORDERS] = 1
        agg[p, c, FIRST_ORDER_ID] = order_id
        agg[p, c, LAST_ORDER_ID] = order_id
    elif agg[p, c, LAST_ORDER_ID] != order_id:
        agg[p, c, N_ORDERS] += 1
        agg[p, c, LAST_ORDER_ID] = order_id
    if time_us < agg[p, c, FIRST_ORDER]:
        agg[p, c, FIRST_ORDER] = time_us
    if time_us > agg[p, c, LAST_ORDER]:
        agg[p, c, LAST_ORDER] = time_us
    return wrapped


@kernel(inline=True)
def combine(agg, p, c, later, j, has_order_id):
    """Fold row ``later[j]`` into ``agg[p, c]``; ``later``'s lines are taken to follow ``agg``'s.

    Every field but the order-id boundary is order-free (min, max, sums); the boundary
    only decides whether an order straddling the two counts once.  Returns True when a
    money total would leave int64 (as :func:`accumulate`).
    """
    if later[j, N_ORDERS] > 0:
        if agg[p, c, N_ORDERS] == 0:
            agg[p, c, FIRST_ORDER_ID] = later[j, FIRST_ORDER_ID]
        elif has_order_id and agg[p, c, LAST_ORDER_ID] == later[j, FIRST_ORDER_ID]:
            agg[p, c, N_ORDERS] -= 1
        agg[p, c, LAST_ORDER_ID] = later[j, LAST_ORDER_ID]
    agg[p, c, N_ORDERS] += later[j, N_ORDERS]
    agg[p, c, N_REFUNDS] += later[j, N_REFUNDS]
    wrapped = (later[j, GROSS] > _I64_MAX - agg[p, c, GROSS]) or (later[j, REFUNDS] < _I64_MIN - agg[p, c, REFUNDS])
    if not wrapped:
        agg[p, c, GROSS] += later[j, GROSS]
        agg[p, c, REFUNDS] += later[j, REFUNDS]
    if later[j, FIRST_ORDER] < agg[p, c, FIRST_ORDER]:
        agg[p, c, FIRST_ORDER] = later[j, FIRST_ORDER]
    if later[j, LAST_ORDER] > agg[p, c, LAST_ORDER]:
        agg[p, c, LAST_ORDER] = later[j, LAST_ORDER]
    return wrapped


# --- dense kernels: for tools that already have customer codes -----------------------

@kernel
def rfm_update(codes, time_us, amount_minor, order_id, agg):
    """Fold order lines into ``agg`` (n_customers, N_FIELDS) by dense customer code.

    ``codes``: int64 (m,), a negative code skips the line; ``time_us``, ``amount_minor``:
    int64 (m,); ``order_id``: int64 (m,) or empty (every line is an order).  Serial and
    nogil: call it from several threads on *disjoint* ``agg`` arrays, then :func:`rfm_merge`.
    Returns the first line whose money took its customer's total out of int64, or -1;
    after such a line ``agg`` holds a wrapped total and must not be used.
    """
    has_oid = order_id.shape[0] > 0
    agg3 = agg.reshape((1, agg.shape[0], agg.shape[1]))
    first_wrapped = -1
    for i in range(codes.shape[0]):
        c = codes[i]
        if c < 0:
            continue
        if accumulate(agg3, 0, c, time_us[i], amount_minor[i], order_id[i] if has_oid else 0, has_oid):
            if first_wrapped < 0:
                first_wrapped = i
    return first_wrapped


@kernel
def rfm_merge(codes, later, agg, has_order_id):
    """Fold rows ``later[j]`` into ``agg[codes[j]]`` (codes < 0 skip); ``later`` follows ``agg``.

    Returns the first ``j`` whose money total left int64, or -1 (as :func:`rfm_update`)."""
    agg3 = agg.reshape((1, agg.shape[0], agg.shape[1]))
    first_wrapped = -1
    for j in range(codes.shape[0]):
        c = codes[j]
        if c >= 0:
            if combine(agg3, 0, c, later, j, has_order_id) and first_wrapped < 0:
                first_wrapped = j
    return first_wrapped


# --- partitioned kernels: the engine's hot path -------------------------------------
#
# Each worker scans the whole batch and handles the lines whose customer falls in the
# partitions it owns (a contiguous block of partitions per worker).  A partition's lines
# are folded in input order by exactly one worker, so the state is the same for any
# number of workers, and no two workers ever write the same table slot or aggregate row.
#
# The work per line is two random memory accesses (a table slot, an aggregate row), so
# lines are handled in groups of ``group``: the group's table slots are prefetched, then
# probed (and their aggregate rows prefetched), then folded, letting the cache misses of
# a group overlap.  Within a partition the lines are still folded in input order.


@kernel(inline=True)
def _owner(p, n_workers, partition_bits):
    return (p * n_workers) >> partition_bits


@kernel(inline=True)
def select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table):
    """The next lines from ``i`` that worker ``w`` owns and keeps, at most ``group``, into ``rows``.

    Prefetches their table slots; returns ``(next i, k)`` with the lines in ``rows[:k]``.
    ``keep`` empty: keep every line.

    Branch-free: with two workers a line is the worker's own one time in two at random,
    so an ``if`` here mispredicted on every other line.  Every line is written to
    ``rows[k]`` and ``k`` moves on only for an own, kept line; any other line prefetches
    slot 0 of partition 0, which is already in cache.  Steady-state kernel, 2 workers,
    ns per line, side by side: 14.3-15.7 -> 10.9-13.3 at 100 k customers, 16.7-17.5 ->
    13.7-14.3 at 1 M, 19.6-22.1 -> 17.7-18.6 at 3 M; whole 1e8-line runs 6.3-7.4 -> 5.5-5.8 s.
    """
    m = hashes.shape[0]
    k = 0
    if keep.shape[0] > 0:  # two loops, so that neither tests for a window per line
        while i < m and k < group:
            k = _pick_line(hashes[i], keep[i], i, k, rows, w, n_workers, partition_bits, table)
            i += 1
    else:
        while i < m and k < group:
            k = _pick_line(hashes[i], True, i, k, rows, w, n_workers, partition_bits, table)
            i += 1
    return i, k


@kernel(inline=True)
def _pick_line(h, kept, i, k, rows, w, n_workers, partition_bits, table):
    p = partition_of(h, partition_bits)
    mine = (_owner(p, n_workers, partition_bits) == w) & kept
    rows[k] = i
    prefetch(table, p if mine else 0, (h & (table.shape[1] - 1)) if mine else 0)
    return k + 1 if mine else k


@kernel(inline=True)
def accumulate_group(agg, rows, codes, k, hashes, time_us, amount_minor, order_id, partition_bits):
    """Fold the lines ``rows[:k]`` into their customers' rows ``codes[:k]``, in order; returns
    the first of them whose money total left int64, or -1."""
    has_oid = order_id.shape[0] > 0
    first_wrapped = -1
    for j in range(k):
        r = rows[j]
        p = partition_of(hashes[r], partition_bits)
        if accumulate(agg, p, codes[j], time_us[r], amount_minor[r], order_id[r] if has_oid else 0, has_oid):
            if first_wrapped < 0:
                first_wrapped = r
    return first_wrapped


@kernel(inline=True)
def encode_group_int64(rows, k, ids, hashes, partition_bits, table, keys, n, agg, codes):
    """Codes of the lines ``rows[:k]`` into ``codes[:k]`` (new customers inserted, their rows
    initialized), prefetching each customer's aggregate row for the fold that follows."""
    for j in range(k):
        r = rows[j]
        h = hashes[r]
        p = partition_of(h, partition_bits)
        before = n[p]
        c = probe_int64(table, keys, n, p, ids[r], h)
        if c == before:
            init_row(agg, p, c)
        codes[j] = c
        prefetch(agg, p, c)


@kernel(inline=True)
def prefetch_group_bytes(rows, k, offsets, hashes, partition_bits, table, key_data, agg):
    """Start loading, for the lines ``rows[:k]``, the stored bytes of the id each probe will
    compare against and that candidate's aggregate row.

    Strings need one more load before the full compare: the candidate's bytes, whose arena
    offset the slot holds.  The candidate is the line's customer unless a tag collision
    hides it, so the exact probe that follows rarely waits, and each line is folded right
    after it (steady state, 17-byte ids: 36 -> 33 ns per line).
    """
    for j in range(k):
        r = rows[j]
        h = hashes[r]
        p = partition_of(h, partition_bits)
        c = prefetch_bytes_id(table, key_data, p, h, offsets[r + 1] - offsets[r])
        if c >= 0:
            prefetch(agg, p, c)


@kernel(inline=True)
def encode_bytes(r, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n, nbytes, agg):
    """``(partition, code)`` of line ``r``'s byte-string id; a new id is inserted and its row
    initialized."""
    h = hashes[r]
    p = partition_of(h, partition_bits)
    before = n[p]
    c = probe_bytes(table, key_offsets, key_data, n, nbytes, p, data, offsets[r], offsets[r + 1], h)
    if c == before:
        init_row(agg, p, c)
    return p, c


@kernel(inline=True)
def encode_group_bytes(rows, k, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n, nbytes,
                       agg, codes):
    """Codes of the byte-string ids of lines ``rows[:k]`` into ``codes[:k]`` (new customers
    inserted, their rows initialized): the candidates' stored bytes are prefetched for the
    whole group first, and each customer's aggregate row as soon as it is known.  For
    kernels that fold a group after encoding it (the BTYD and timeline updates)."""
    for j in range(k):
        r = rows[j]
        h = hashes[r]
        prefetch_bytes_id(table, key_data, partition_of(h, partition_bits), h, offsets[r + 1] - offsets[r])
    for j in range(k):
        p, c = encode_bytes(rows[j], offsets, data, hashes, partition_bits, table, key_offsets, key_data, n, nbytes,
                            agg)
        codes[j] = c
        prefetch(agg, p, c)


@kernel(inline=True)
def find_group_bytes(rows, k, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n, nbytes,
                     codes):
    """Codes of the byte-string ids of lines ``rows[:k]``, customers the state already holds
    (as in a merge after the customer rows were merged), candidates' bytes prefetched first."""
    for j in range(k):
        r = rows[j]
        h = hashes[r]
        prefetch_bytes_id(table, key_data, partition_of(h, partition_bits), h, offsets[r + 1] - offsets[r])
    for j in range(k):
        r = rows[j]
        codes[j] = probe_bytes(table, key_offsets, key_data, n, nbytes, partition_of(hashes[r], partition_bits),
                               data, offsets[r], offsets[r + 1], hashes[r])


@kernel(parallel=True)
def rfm_update_partitioned_int64(ids, hashes, time_us, amount_minor, order_id, keep,
                                 n_workers, partition_bits, group, table, keys, n, agg, wrapped):
    """Encode integer ids and fold their lines into per-partition aggregates.

    ``ids``, ``hashes`` (= mix64(ids)), ``time_us``, ``amount_minor``: int64 (m,);
    ``order_id``: int64 (m,) or empty; ``keep``: bool (m,) or empty (keep all); ``group``:
    lines whose memory loads are issued together (64 measured best).
    ``table``/``keys``/``n``: see :mod:`rfmx.kernels.customers`; ``agg``: (P, ncap, N_FIELDS).
    The caller reserves room for every line being a new customer; rows of new customers
    are initialized here, so ``agg`` may be grown with ``np.empty``.  ``wrapped``
    (n_workers,) int64 gets, per worker, the first line whose money took its customer's
    total out of int64, or -1 (then the state holds a wrapped total: see :func:`accumulate`).
    """
    m = ids.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            encode_group_int64(rows, k, ids, hashes, partition_bits, table, keys, n, agg, codes)
            r = accumulate_group(agg, rows, codes, k, hashes, time_us, amount_minor, order_id, partition_bits)
            if r >= 0 and first_wrapped < 0:
                first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def rfm_update_partitioned_bytes(offsets, data, hashes, time_us, amount_minor, order_id, keep,
                                 n_workers, partition_bits, group, table, key_offsets, key_data, n, nbytes, agg,
                                 wrapped):
    """As :func:`rfm_update_partitioned_int64` for byte-string ids given as Arrow-style
    ``offsets`` (m + 1,) and ``data`` (uint8) buffers; ``hashes`` from ``hash_bytes``."""
    m = hashes.shape[0]
    has_oid = order_id.shape[0] > 0
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            prefetch_group_bytes(rows, k, offsets, hashes, partition_bits, table, key_data, agg)
            for j in range(k):
                r = rows[j]
                p, c = encode_bytes(r, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n,
                                    nbytes, agg)
                if accumulate(agg, p, c, time_us[r], amount_minor[r], order_id[r] if has_oid else 0, has_oid):
                    if first_wrapped < 0:
                        first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def rfm_merge_partitioned_int64(ids, hashes, later, has_order_id, n_workers, partition_bits, group,
                                table, keys, n, agg, wrapped):
    """Fold aggregate rows ``later`` (m, N_FIELDS) of customers ``ids`` into the state.

    Grouped and prefetched like the update kernels (``group``: rows whose memory loads are
    issued together): loading a saved state of 7.25 M customers is one such merge.
    ``wrapped`` (n_workers,): per worker the first row whose money total left int64, or -1.
    """
    m = ids.shape[0]
    every_row = np.empty(0, dtype=np.bool_)
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, every_row, i, group, rows, w, n_workers, partition_bits, table)
            encode_group_int64(rows, k, ids, hashes, partition_bits, table, keys, n, agg, codes)
            for j in range(k):
                r = rows[j]
                if combine(agg, partition_of(hashes[r], partition_bits), codes[j], later, r, has_order_id):
                    if first_wrapped < 0:
                        first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def rfm_merge_partitioned_bytes(offsets, data, hashes, later, has_order_id, n_workers, partition_bits, group,
                                table, key_offsets, key_data, n, nbytes, agg, wrapped):
    """Fold aggregate rows ``later`` of byte-string customers into the state (grouped and
    prefetched like :func:`rfm_update_partitioned_bytes`; ``wrapped`` as in
    :func:`rfm_merge_partitioned_int64`)."""
    m = hashes.shape[0]
    every_row = np.empty(0, dtype=np.bool_)
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, every_row, i, group, rows, w, n_workers, partition_bits, table)
            prefetch_group_bytes(rows, k, offsets, hashes, partition_bits, table, key_data, agg)
            for j in range(k):
                r = rows[j]
                p, c = encode_bytes(r, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n,
                                    nbytes, agg)
                if combine(agg, p, c, later, r, has_order_id) and first_wrapped < 0:
                    first_wrapped = r
        wrapped[w] = first_wrapped


# --- cost: the second row block -----------------------------------------------------
#
# With a cost column, each batch is folded by the update kernel above and then by
# cost_fold_*: a second pass over the lines that finds each (by then known) customer and
# adds the line's cost to its cost row.  The same kernel folds a merged or loaded state's
# cost rows, one per customer.  Runs without cost never touch it.


@kernel
def split_cost(cost_minor, out):
    """Per line, its cost by sign: ``out[i, COST]`` the cost if >= 0, ``out[i, COST_RETURNED]``
    the cost if < 0 (``cost_minor`` (m,), ``out`` (m, N_COST_FIELDS) int64)."""
    for i in range(cost_minor.shape[0]):
        v = cost_minor[i]
        if v < 0:
            out[i, COST] = 0
            out[i, COST_RETURNED] = v
        else:
            out[i, COST] = v
            out[i, COST_RETURNED] = 0


@kernel(inline=True)
def _add_cost(cost, p, c, values, r):
    """Fold ``values[r]`` into ``cost[p, c]``; True (nothing added) when a total would leave int64."""
    if values[r, COST] > _I64_MAX - cost[p, c, COST] or values[r, COST_RETURNED] < _I64_MIN - cost[p, c, COST_RETURNED]:
        return True
    cost[p, c, COST] += values[r, COST]
    cost[p, c, COST_RETURNED] += values[r, COST_RETURNED]
    return False


@kernel(parallel=True)
def cost_fold_partitioned_int64(ids, hashes, values, keep, n_workers, partition_bits, group, table, keys, n, cost,
                                wrapped):
    """Add cost rows ``values`` (m, N_COST_FIELDS) of customers ``ids`` (already in the
    table: folded or merged just before) into ``cost`` (P, ncap, N_COST_FIELDS).

    ``keep`` as in :func:`rfm_update_partitioned_int64`; ``wrapped`` (n_workers,): per
    worker the first row whose cost total left int64, or -1.
    """
    m = ids.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            for j in range(k):
                r = rows[j]
                p = partition_of(hashes[r], partition_bits)
                c = probe_int64(table, keys, n, p, ids[r], hashes[r])
                if _add_cost(cost, p, c, values, r) and first_wrapped < 0:
                    first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def cost_fold_partitioned_bytes(offsets, data, hashes, values, keep, n_workers, partition_bits, group, table,
                                key_offsets, key_data, n, nbytes, cost, wrapped):
    """As :func:`cost_fold_partitioned_int64` for byte-string ids."""
    m = hashes.shape[0]
    for w in prange(n_workers):
        rows = np.empty(group, dtype=np.int64)
        codes = np.empty(group, dtype=np.int64)
        first_wrapped = -1
        i = 0
        while i < m:
            i, k = select_group(hashes, keep, i, group, rows, w, n_workers, partition_bits, table)
            find_group_bytes(rows, k, offsets, data, hashes, partition_bits, table, key_offsets, key_data, n, nbytes,
                             codes)
            for j in range(k):
                r = rows[j]
                if _add_cost(cost, partition_of(hashes[r], partition_bits), codes[j], values, r) and first_wrapped < 0:
                    first_wrapped = r
        wrapped[w] = first_wrapped


@kernel(parallel=True)
def cost_fields_partitioned(cost, n, out):
    """The cost rows as columns, customers laid out as in :func:`rfm_fields_partitioned`
    (``out``: (N_COST_FIELDS, m) int64)."""
    P = n.shape[0]
    start = np.zeros(P + 1, dtype=np.int64)
    for p in range(P):
        start[p + 1] = start[p] + n[p]
    for p in prange(P):
        for c in range(n[p]):
            for f in range(N_COST_FIELDS):
                out[f, start[p] + c] = cost[p, c, f]


# --- finalize: per-customer rows -> output columns ------------------------------------

@kernel(parallel=True)
def rfm_fields_partitioned(agg, n, out):
    """Every field of the aggregate rows as a column: ``out[f, i]`` (``out``: (N_FIELDS, m)
    int64) is field ``f`` of customer ``i``, customers laid out partition after partition
    as in :func:`rfm_finalize_partitioned`.  One pass over the rows, partitions in
    parallel: what a saved state holds, with no intermediate copy of the rows."""
    P = n.shape[0]
    start = np.zeros(P + 1, dtype=np.int64)
    for p in range(P):
        start[p + 1] = start[p] + n[p]
    for p in prange(P):
        for c in range(n[p]):
            i = start[p] + c
            for f in range(N_FIELDS):
                out[f, i] = agg[p, c, f]


#: rows of the ``ints`` output of :func:`rfm_finalize_partitioned`
OUT_FIRST, OUT_LAST, OUT_RECENCY, OUT_TENURE, OUT_N_ORDERS, OUT_N_REFUNDS, OUT_NET_MINOR = range(7)
#: rows of the ``floats`` output
OUT_MONETARY, OUT_AOV, OUT_GROSS, OUT_REFUNDS = range(4)


@kernel(inline=True)
def finalize_row(agg, p, c, i, as_of_day, us_per_day, unit, ints, floats, has_orders):
    """Column ``i`` of the outputs of :func:`rfm_finalize_partitioned` from the row ``agg[p, c]``."""
    orders = agg[p, c, N_ORDERS]
    net = agg[p, c, GROSS] + agg[p, c, REFUNDS]
    ints[OUT_N_ORDERS, i] = orders
    ints[OUT_N_REFUNDS, i] = agg[p, c, N_REFUNDS]
    ints[OUT_NET_MINOR, i] = net
    floats[OUT_MONETARY, i] = net / unit
    floats[OUT_GROSS, i] = agg[p, c, GROSS] / unit
    floats[OUT_REFUNDS, i] = agg[p, c, REFUNDS] / unit
    if orders > 0:
        first = agg[p, c, FIRST_ORDER]
        last = agg[p, c, LAST_ORDER]
        has_orders[i] = True
        ints[OUT_FIRST, i] = first
        ints[OUT_LAST, i] = last
        ints[OUT_RECENCY, i] = as_of_day - last // us_per_day
        ints[OUT_TENURE, i] = as_of_day - first // us_per_day
        floats[OUT_AOV, i] = (net / unit) / orders
    else:
        has_orders[i] = False
        ints[OUT_FIRST, i] = 0
        ints[OUT_LAST, i] = 0
        ints[OUT_RECENCY, i] = 0
        ints[OUT_TENURE, i] = 0
        floats[OUT_AOV, i] = 0.0



@kernel(parallel=True)
def rfm_finalize_partitioned(agg, n, p_lo, p_hi, as_of_day, us_per_day, unit, ints, floats, has_orders):
    """Turn per-partition aggregate rows into output columns in one pass.

    ``agg`` (P, ncap, N_FIELDS) with ``n[p]`` rows in use; customers are laid out
    partition after partition, and partitions ``p_lo <= p < p_hi`` are converted (all:
    ``0, P``; a range lets the caller free finished partitions between calls).  ``ints``
    (7, m) int64 gets first/last order time, recency and tenure in calendar days (``as_of_day``
    minus the UTC day of the last/first order: days since 1970, floored), orders, refunds,
    net money in minor units;
    ``floats`` (4, m) gets net money, average order value, gross and refund money in
    currency units (``minor / unit``); ``has_orders`` (m,) bool.  Values of customers
    without orders (refunds only) are 0 where they have no meaning; ``has_orders`` says so.
    """
    P = n.shape[0]
    start = np.zeros(P + 1, dtype=np.int64)
    for p in range(P):
        start[p + 1] = start[p] + n[p]
    for p in prange(p_lo, p_hi):
        for c in range(n[p]):
            finalize_row(agg, p, c, start[p] + c, as_of_day, us_per_day, unit, ints, floats, has_orders)
