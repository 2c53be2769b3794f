"""The one-call Python API over sources, the state and its finalize step."""
from __future__ import annotations

import gc

import numpy as np
import pyarrow as pa

from .calendar import UTC, US_PER_DAY, check_timezone
from .columns import ColumnMap, check_rounding
from .errors import RfmxError
from .progress import Progress
from .sources import iter_batches, known_rows
from .state import RFMState

__all__ = ["aggregate", "build_state"]


def build_state(source=None, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
                order_id: str | None = None, *, as_of=None, since=None, amount_scale: int = 2,
                on_null: str = "error", threads: int | None = None, batch_size: int = 1 << 20,
                state: RFMState | None = None, progress: bool = False, delimiter: str | None = None,
                timezone: str | None = None, customer_type: str = "auto", round: str | None = None,
                group=None, cost: str | None = None) -> RFMState:
    """Stream ``source`` into an :class:`RFMState` (a new one, or ``state`` to extend it).

    With a new state, ``as_of`` becomes the end of the window: lines at or after it are
    skipped.  When extending ``state``, its own window, time zone and column mapping
    apply, and the mapping (and ``timezone``, if given) must match it.

    ``timezone`` (IANA name, default UTC) is the calendar days are counted in (see
    :mod:`rfmx.calendar`).  ``customer_type`` (``"auto"``, ``"int"``, ``"string"``) says
    how CSV customer ids are read: ``auto`` makes them integers when every id in the file
    is a canonical integer (``0`` or ``-?[1-9][0-9]*``, fitting int64), strings otherwise.
    ``round`` (None, ``"half-even"``, ``"half-up"``) rounds decimal amounts with more
    decimals than ``amount_scale`` instead of refusing them, counting them in
    ``state.amounts_rounded``.  ``cost`` names an optional column of each line's cost
    (money, parsed as the amount): the state then keeps cost totals and its table gains
    gross profit, margin and refund rates (README "Profit and cost-to-serve").

    ``group`` (a column name, ``"a,b"`` or a list) keys the state by (group, customer): a
    :class:`~rfmx.groups.GroupedState` (see :mod:`rfmx.groups`); extending a grouped
    ``state``, it must name the state's group columns (or be None).
    """
    from .groups import GroupedState, check_group

    if batch_size < 1:
        raise RfmxError(f"batch_size must be >= 1, got {batch_size}")
    check_rounding(round)
    if state is None:
        state = RFMState(customer, time, amount, order_id, since=since, until=as_of,
                         amount_scale=amount_scale, on_null=on_null, threads=threads, timezone=timezone, cost=cost)
        if group:
            state = GroupedState(state, group)
    else:
        wanted_group = check_group(group)
        have_group = state.group if isinstance(state, GroupedState) else ()
        if wanted_group and wanted_group != have_group:
            raise RfmxError(f"the state is grouped by {', '.join(have_group) or 'nothing'}, "
                            f"not by {', '.join(wanted_group)}")
        wanted = ColumnMap(customer, time, amount, order_id, cost)
        if wanted != state.columns:
            raise RfmxError(f"the state was made with columns {state.columns}, not {wanted}")
        if timezone is not None and check_timezone(timezone) != state.timezone:
            raise RfmxError(f"the state counts days in {state.timezone}, not in {timezone}")
        state.on_null = on_null
        if threads is not None:
            state.threads = threads
    state.rounding = round
    if source is None:
        return state
    since_us, until_us = state.since_us, state.until_us
    if state.timezone != UTC:
        # The pushed-down filter compares naive times and dates (wall-clock readings in the
        # state's zone) with instants; zones lie within a day of UTC, so two days of slack
        # keep it a superset of the window.  The kernels apply the exact window.
        since_us = since_us - 2 * US_PER_DAY if since_us is not None else None
        until_us = until_us + 2 * US_PER_DAY if until_us is not None else None
    # A grouped state reads its group columns too.
    columns = getattr(state, "read_columns", state.columns)
    batches = iter_batches(source, columns, since_us=since_us, until_us=until_us,
                           batch_size=batch_size, delimiter=delimiter, customer_type=customer_type)
    # The loop makes no reference cycles, but its Arrow objects keep triggering the cyclic
    # collector, which then walks every object Numba keeps alive (~10 % of the time with
    # string ids); it is paused for the loop and restored after.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with Progress(progress, total=known_rows(source) if progress else None) as bar:
            for where, row0, batch in batches:
                if state.on_null == "error":
                    _raise_on_nulls(batches, where, row0, batch, columns)
                state.update(batch, source=where, row0=row0)
                bar.advance(batch.num_rows, state.n_customers)
    finally:
        batches.close()  # on an error, stop reader threads now, not when the traceback is freed
        if gc_was_enabled:
            gc.enable()
        # Arrow's allocator keeps the decoded batches' memory for reuse; the stream is over,
        # so hand it back before the per-customer result is built.
        pa.default_memory_pool().release_unused()
    return state


def _raise_on_nulls(batches, where: str, row0: int, batch: pa.RecordBatch, columns: ColumnMap) -> None:
    """If ``batch`` has a null in a mapped column, raise with the count over the rest of its file.

    Only on the error path does this read on (the rest of the same source), so the message
    gives the total a user has to deal with, not just the first batch's share.
    """
    for name in columns.names():
        arr = batch.column(name)
        if not arr.null_count:
            continue
        first = row0 + int(np.flatnonzero(~np.asarray(arr.is_valid()))[0])
        count, more = arr.null_count, ""
        try:
            for w, _, b in batches:
                if w != where:
                    break
                count += b.column(name).null_count
        except RfmxError:  # the rest of the file is unreadable: report what was counted
            more = " or more"
        raise RfmxError(
            f"{where}: column '{name}' has {count:,}{more} null value(s), first at row {first}; "
            f"pass on_null='skip' (--on-null skip) to drop such rows"
        )


def aggregate(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
              order_id: str | None = None, *, as_of=None, since=None, amount_scale: int = 2,
              on_null: str = "error", threads: int | None = None, batch_size: int = 1 << 20,
              state: RFMState | None = None, progress: bool = False, delimiter: str | None = None,
              timezone: str | None = None, customer_type: str = "auto", round: str | None = None,
              group=None, cost: str | None = None, attributes=None, on: str = "customer_id") -> pa.Table:
    """Per-customer RFM aggregates of an order stream, as a ``pyarrow.Table``.

    ``source``: a Parquet/IPC/CSV path, directory or glob, a list of them, an Arrow
    table/batch/reader/C-stream object (pandas, polars), a ``pyarrow.dataset.Dataset``, a
    polars LazyFrame or a DuckDB relation/connection (both streamed).  ``as_of`` (default:
    the day after the latest line) ends the window; ``since`` starts it.  ``timezone``,
    ``customer_type``, ``round`` and ``cost`` (a line-cost column: profit columns) as in
    :func:`build_state`.  See
    :meth:`RFMState.finalize` for the columns and README "Definitions" for their meaning.

    ``group`` (a column, ``"a,b"`` or a list): one row per (group, customer) pair, the
    group columns first (see ``docs/groups.md``).

    ``attributes`` (a Parquet/Arrow/CSV path or a table) with key column ``on``: customer
    attributes joined exactly on ``customer_id`` (:func:`rfmx.attributes.join_attributes`;
    customers without a row get nulls, counted in the ``rfmx.attributes`` metadata).
    """
    attrs = None
    if attributes is not None:  # read and checked before the scan: a bad file fails in a second
        from .attributes import read_attributes

        attrs = read_attributes(attributes, on)
    st = build_state(source, customer, time, amount, order_id, as_of=as_of, since=since,
                     amount_scale=amount_scale, on_null=on_null, threads=threads, batch_size=batch_size,
                     state=state, progress=progress, delimiter=delimiter, timezone=timezone,
                     customer_type=customer_type, round=round, group=group, cost=cost)
    # Nobody uses a new state again: the result takes its memory over as it is built.
    table = st.finalize(as_of, consume=state is None)
    if attrs is not None:
        from .attributes import join_attributes

        table, _ = join_attributes(table, attrs)
    return table
