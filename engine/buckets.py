"""Customer hash buckets: how a distributed run splits customers, and the Arrow data its tasks exchange.

A distributed run (:mod:`rfmx.dask`) folds each share of the input (files, row groups,
DataFrame partitions) into a partial :class:`~rfmx.state.RFMState` with the same update
kernels as one machine, splits the partial by customer hash bucket and hands the buckets
on as Arrow IPC bytes of the state's own table (:meth:`RFMState.to_table`): plain Arrow
data, never Python or Numba objects.  The partials of one bucket are merged with the same
:meth:`RFMState.merge`, in input order (so an order whose lines straddle two shares counts
once), and the bucket is finalized where it was merged.

Everything here runs inside one task and imports no Dask: the functions take and return
bytes, tables and plain values.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .columns import customer_ids
from .errors import RfmxError
from .state import RFMState

__all__ = ["bucket_of", "split_by_bucket", "to_ipc", "from_ipc", "state_summary", "zero_counters", "merge_states",
           "state_class", "write_part",
           "COUNTERS"]

#: the counters of a state's metadata that add up over shares (kept once, in the share's summary)
COUNTERS = ("rows_read", "rows_null_skipped", "rows_outside_window", "amounts_rounded")


def bucket_of(ids: pa.Array, n_buckets: int, where: str = "customer_id") -> np.ndarray:
    """The bucket ``0 <= b < n_buckets`` of every customer id (int64 array).

    The bucket is the customer's 64-bit id hash (the one the state's index uses, so
    integer ids of any width and signedness that are one customer share a bucket) modulo
    ``n_buckets``: the same on every machine and in every run.
    """
    from .kernels import customers as kc

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = customer_ids(ids, where, "customer_id")
    hashes = np.empty(len(ids), dtype=np.int64)
    per_partition = np.zeros(kc.N_PARTITIONS, dtype=np.int64)
    if ids.kind == "int":
        kc.hash_int64(ids.ints, kc.PARTITION_BITS, hashes, per_partition)
    else:
        kc.hash_bytes(ids.offsets, ids.data, kc.PARTITION_BITS, hashes, per_partition,
                      np.zeros(kc.N_PARTITIONS, dtype=np.int64))
    # The top bits pick the state's partitions; the low bits are as well mixed and spread
    # each partition over every bucket.
    return (hashes.view(np.uint64) % np.uint64(n_buckets)).astype(np.int64)


def split_by_bucket(table: pa.Table, n_buckets: int) -> list[pa.Table]:
    """``table``'s rows by the bucket of their ``customer_id``, each bucket's rows in the
    order they had; every part keeps the table's metadata."""
    if table.num_rows == 0:
        return [table] * n_buckets
    bucket = bucket_of(table.column("customer_id"), n_buckets)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
    ordered = table.take(pa.array(order))
    return [ordered.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b])) for b in range(n_buckets)]


def to_ipc(table: pa.Table) -> bytes:
    """An Arrow table as the bytes of an Arrow IPC stream (schema metadata included)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    """The table of :func:`to_ipc`'s bytes."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _meta(table: pa.Table) -> dict:
    return json.loads(table.schema.metadata[b"rfmx.state"])


def _with_meta(table: pa.Table, meta: dict) -> pa.Table:
    return table.replace_schema_metadata({"rfmx.state": json.dumps(meta)})


def zero_counters(table: pa.Table) -> pa.Table:
    """A state table whose added-up counters are 0: a bucket of a share, whose counters its
    share's summary carries once (so merging every bucket counts each line once)."""
    meta = _meta(table)
    for key in COUNTERS:
        meta[key] = 0
    return _with_meta(table, meta)


def state_summary(table: pa.Table) -> pa.Table:
    """What the client needs of a share's state table: its metadata (counters, latest
    line, id type, time zone) and, of integer ids, at most the one id with the lowest
    int64 bit pattern when that is negative — what decides whether negative ids and uint64
    ids above int64's range meet, which no 64-bit type holds both of.  Merged in input order
    (:func:`merge_states`) the summaries give exactly the counters and types one pass gives."""
    meta = _meta(table)
    keep = table.slice(0, 0)
    if meta["id_kind"] == "int" and table.num_rows:
        ids = customer_ids(table.column("customer_id").combine_chunks(), "<share>", "customer_id").ints
        low = int(np.argmin(ids))
        if ids[low] < 0:
            keep = table.slice(low, 1)
    return keep


def state_class(table: pa.Table) -> type:
    """The state class a state table is of, by its format: :class:`RFMState`,
    :class:`~rfmx.clv.BTYDState` (also purchase periods) or :class:`~rfmx.history.TimelineState`
    (also a row per customer and calendar period)."""
    from .clv.summary import BTYD_STATE_FORMAT, BTYDState
    from .history import TIMELINE_STATE_FORMAT, TimelineState

    fmt = _meta(table).get("format")
    return BTYDState if fmt == BTYD_STATE_FORMAT else TimelineState if fmt == TIMELINE_STATE_FORMAT else RFMState


def merge_states(tables: list[pa.Table], *, what: str = "a share", threads: int | None = 1) -> RFMState:
    """One state from state tables in input order: the first loaded, the others merged into
    it one after another (:meth:`RFMState.merge`: a later table's lines follow an earlier's).
    RFM and BTYD states alike (:func:`state_class`)."""
    if not tables:
        raise RfmxError("no state to merge")
    cls = state_class(tables[0])
    state = cls.from_table(tables[0], what=what, threads=threads)
    for table in tables[1:]:
        state.merge(cls.from_table(table, what=what, threads=threads), what=what)
    return state


def write_part(table: pa.Table, output) -> int:
    """Write one bucket's ``table`` as a Parquet part at ``output`` (``(filesystem, path)``,
    as :class:`rfmx.dask.DatasetOutput` hands them out); returns its rows."""
    import pyarrow.parquet as pq

    filesystem, path = output
    try:
        pq.write_table(table, path, filesystem=filesystem)
    except (pa.ArrowException, OSError) as exc:
        raise RfmxError(f"{path}: cannot write parquet: {str(exc).splitlines()[0]}") from None
    return table.num_rows
