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

from ._policy import kernel
from .customers import mix64, partition_of, probe_bytes, probe_int64

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


def new_aggregates(shape) -> np.ndarray:
    """A fresh aggregate array of ``shape + (N_FIELDS,)`` holding every field's identity."""
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    out = np.empty(shape + (N_FIELDS,), dtype=np.int64)
    out[...] = _IDENTITY
    return out


@kernel
def accumulate(row, time_us, amount_minor, order_id, has_order_id):
    """Fold one order line into the aggregate ``row`` (1-D int64 view of length N_FIELDS)."""
    if amount_minor < 0:
        row[N_REFUNDS] += 1
        row[REFUNDS] += amount_minor
        return
    row[GROSS] += amount_minor
    if not has_order_id:
        row[N_ORDERS] += 1
    elif row[N_ORDERS] == 0:
        row[N_ORDERS] = 1
        row[FIRST_ORDER_ID] = order_id
        row[LAST_ORDER_ID] = order_id
    elif row[LAST_ORDER_ID] != order_id:
        row[N_ORDERS] += 1
        row[LAST_ORDER_ID] = order_id
    if time_us < row[FIRST_ORDER]:
        row[FIRST_ORDER] = time_us
    if time_us > row[LAST_ORDER]:
        row[LAST_ORDER] = time_us


@kernel
def combine(row, later, has_order_id):
    """Fold aggregate ``later`` into ``row``; ``later``'s lines are taken to follow ``row``'s.

    Every field but the order-id boundary is order-free (min, max, sums); the boundary
    only decides whether an order straddling the two counts once.
    """
    if later[N_ORDERS] > 0:
        if row[N_ORDERS] == 0:
            row[FIRST_ORDER_ID] = later[FIRST_ORDER_ID]
        elif has_order_id and row[LAST_ORDER_ID] == later[FIRST_ORDER_ID]:
            row[N_ORDERS] -= 1
        row[LAST_ORDER_ID] = later[LAST_ORDER_ID]
    row[N_ORDERS] += later[N_ORDERS]
    row[N_REFUNDS] += later[N_REFUNDS]
    row[GROSS] += later[GROSS]
    row[REFUNDS] += later[REFUNDS]
    if later[FIRST_ORDER] < row[FIRST_ORDER]:
        row[FIRST_ORDER] = later[FIRST_ORDER]
    if later[LAST_ORDER] > row[LAST_ORDER]:
        row[LAST_ORDER] = later[LAST_ORDER]


# --- dense kernels: for tools that already have customer codes -----------------------

@kernel
def rfm_update(codes, time_us, amount_minor, order_id, agg):
    """Fold order lines into ``agg`` (n_customers, N_FIELDS) by dense customer code.

    ``codes``: int64 (m,), a negative code skips the line; ``time_us``, ``amount_minor``:
    int64 (m,); ``order_id``: int64 (m,) or empty (every line is an order).  Serial and
    nogil: call it from several threads on *disjoint* ``agg`` arrays, then :func:`rfm_merge`.
    """
    has_oid = order_id.shape[0] > 0
    for i in range(codes.shape[0]):
        c = codes[i]
        if c < 0:
            continue
        accumulate(agg[c], time_us[i], amount_minor[i], order_id[i] if has_oid else 0, has_oid)


@kernel
def rfm_merge(codes, later, agg, has_order_id):
    """Fold rows ``later[j]`` into ``agg[codes[j]]`` (codes < 0 skip); ``later`` follows ``agg``."""
    for j in range(codes.shape[0]):
        c = codes[j]
        if c >= 0:
            combine(agg[c], later[j], has_order_id)


# --- partitioned kernels: the engine's hot path -------------------------------------
#
# Each worker scans the whole batch and handles the lines whose customer falls in the
# partitions it owns (partition % n_workers == worker).  A partition's lines are folded in
# input order by exactly one worker, so the state is the same for any number of workers,
# and no two workers ever write the same table slot or aggregate row.

@kernel(parallel=True)
def rfm_update_partitioned_int64(ids, hashes, time_us, amount_minor, order_id, keep,
                                 n_workers, partition_bits, table, keys, n, agg):
    """Encode integer ids and fold their lines into per-partition aggregates.

    ``ids``, ``hashes`` (= mix64(ids)), ``time_us``, ``amount_minor``: int64 (m,);
    ``order_id``: int64 (m,) or empty; ``keep``: bool (m,) or empty (keep all).
    ``table``/``keys``/``n``: see :mod:`rfmx.kernels.customers`; ``agg``: (P, ncap, N_FIELDS).
    The caller reserves room for every line being a new customer.
    """
    has_oid = order_id.shape[0] > 0
    has_keep = keep.shape[0] > 0
    m = ids.shape[0]
    for w in prange(n_workers):
        for i in range(m):
            h = hashes[i]
            p = partition_of(h, partition_bits)
            if p % n_workers != w or (has_keep and not keep[i]):
                continue
            c = probe_int64(table, keys, n, p, ids[i], h)
            accumulate(agg[p, c], time_us[i], amount_minor[i], order_id[i] if has_oid else 0, has_oid)


@kernel(parallel=True)
def rfm_update_partitioned_bytes(offsets, data, hashes, time_us, amount_minor, order_id, keep,
                                 n_workers, partition_bits, table, key_offsets, key_data, n, nbytes, agg):
    """As :func:`rfm_update_partitioned_int64` for byte-string ids given as Arrow-style
    ``offsets`` (m + 1,) and ``data`` (uint8) buffers; ``hashes`` from ``hash_bytes``."""
    has_oid = order_id.shape[0] > 0
    has_keep = keep.shape[0] > 0
    m = hashes.shape[0]
    for w in prange(n_workers):
        for i in range(m):
            h = hashes[i]
            p = partition_of(h, partition_bits)
            if p % n_workers != w or (has_keep and not keep[i]):
                continue
            c = probe_bytes(table, key_offsets, key_data, n, nbytes, p, data, offsets[i], offsets[i + 1], h)
            accumulate(agg[p, c], time_us[i], amount_minor[i], order_id[i] if has_oid else 0, has_oid)


@kernel(parallel=True)
def rfm_merge_partitioned_int64(ids, hashes, later, has_order_id, n_workers, partition_bits,
                                table, keys, n, agg):
    """Fold aggregate rows ``later`` (m, N_FIELDS) of customers ``ids`` into the state."""
    m = ids.shape[0]
    for w in prange(n_workers):
        for j in range(m):
            h = hashes[j]
            p = partition_of(h, partition_bits)
            if p % n_workers != w:
                continue
            c = probe_int64(table, keys, n, p, ids[j], h)
            combine(agg[p, c], later[j], has_order_id)


@kernel(parallel=True)
def rfm_merge_partitioned_bytes(offsets, data, hashes, later, has_order_id, n_workers, partition_bits,
                                table, key_offsets, key_data, n, nbytes, agg):
    """Fold aggregate rows ``later`` of byte-string customers into the state."""
    m = hashes.shape[0]
    for w in prange(n_workers):
        for j in range(m):
            h = hashes[j]
            p = partition_of(h, partition_bits)
            if p % n_workers != w:
                continue
            c = probe_bytes(table, key_offsets, key_data, n, nbytes, p, data, offsets[j], offsets[j + 1], h)
            combine(agg[p, c], later[j], has_order_id)
