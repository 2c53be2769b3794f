"""The one-call Python API over sources, the state and its finalize step."""
from __future__ import annotations

import pyarrow as pa

from .columns import ColumnMap
from .errors import RfmxError
from .progress import Progress
from .sources import iter_batches
from .state import RFMState

__all__ = ["aggregate", "build_state"]


def build_state(source=None, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
                order_id: str | None = None, *, as_of=None, since=None, amount_scale: int = 2,
                on_null: str = "error", threads: int | None = None, batch_size: int = 1 << 20,
                state: RFMState | None = None, progress: bool = False, delimiter: str | None = None) -> RFMState:
    """Stream ``source`` into an :class:`RFMState` (a new one, or ``state`` to extend it).

    With a new state, ``as_of`` becomes the end of the window: lines at or after it are
    skipped.  When extending ``state``, its own window and column mapping apply, and the
    mapping given here must match it.
    """
    if batch_size < 1:
        raise RfmxError(f"batch_size must be >= 1, got {batch_size}")
    if state is None:
        state = RFMState(customer, time, amount, order_id, since=since, until=as_of,
                         amount_scale=amount_scale, on_null=on_null, threads=threads)
    else:
        wanted = ColumnMap(customer, time, amount, order_id)
        if wanted != state.columns:
            raise RfmxError(f"the state was made with columns {state.columns}, not {wanted}")
        state.on_null = on_null
        if threads is not None:
            state.threads = threads
    if source is None:
        return state
    with Progress(progress) as bar:
        for where, row0, batch in iter_batches(source, state.columns, since_us=state.since_us,
                                               until_us=state.until_us, batch_size=batch_size,
                                               delimiter=delimiter):
            state.update(batch, source=where, row0=row0)
            bar.advance(batch.num_rows, state.n_customers)
    return state


def aggregate(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
              order_id: str | None = None, *, as_of=None, since=None, amount_scale: int = 2,
              on_null: str = "error", threads: int | None = None, batch_size: int = 1 << 20,
              state: RFMState | None = None, progress: bool = False, delimiter: str | None = None) -> pa.Table:
    """Per-customer RFM aggregates of an order stream, as a ``pyarrow.Table``.

    ``source``: a Parquet/IPC/CSV path, directory or glob, a list of them, or an Arrow
    table/batch/reader/C-stream object (pandas, polars, DuckDB).  ``as_of`` (default: the
    day after the latest line) ends the window; ``since`` starts it.  See
    :meth:`RFMState.finalize` for the columns and README "Definitions" for their meaning.
    """
    st = build_state(source, customer, time, amount, order_id, as_of=as_of, since=since,
                     amount_scale=amount_scale, on_null=on_null, threads=threads, batch_size=batch_size,
                     state=state, progress=progress, delimiter=delimiter)
    return st.finalize(as_of)
