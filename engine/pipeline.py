"""Steps chained over finalized per-customer tables: the scored timeline.

A timeline is one pass over the order history into a :class:`~rfmx.history.TimelineState`
(per customer and period, the same exact fields as the one-window state), then, for each
as-of date on a period boundary, the snapshot that ``rfmx.aggregate(..., as_of=that date)``
would give, scored with the options of ``rfmx score``.  Snapshots are made one at a time,
so a long timeline of millions of customers never sits in memory at once.
"""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from .errors import RfmxError

__all__ = ["timeline", "timeline_state", "check_period", "SCORE_OPTIONS"]

#: keyword arguments of :func:`timeline` that go to :func:`rfmx.scores.score_table`
SCORE_OPTIONS = ("bins", "ties", "monetary", "cuts", "segments", "weights", "tiers")


def timeline_state(source=None, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
                   order_id: str | None = None, *, every: str = "month", week_start: str = "monday",
                   since=None, amount_scale: int = 2, on_null: str = "error", threads: int | None = None,
                   batch_size: int = 1 << 20, state=None, progress: bool = False, delimiter: str | None = None,
                   timezone: str | None = None, customer_type: str = "auto", round: str | None = None):
    """Stream ``source`` into a :class:`~rfmx.history.TimelineState` with one bucket per
    ``every`` period (a new one, or ``state`` — e.g. loaded from a file — to extend it)."""
    from .api import build_state
    from .history import TimelineState

    if state is None:
        state = TimelineState(customer, time, amount, order_id, period=every, week_start=week_start, since=since,
                              amount_scale=amount_scale, on_null=on_null, threads=threads, timezone=timezone)
    else:
        check_period(state, every, week_start)
    return build_state(source, customer, time, amount, order_id, state=state, on_null=on_null, threads=threads,
                       batch_size=batch_size, progress=progress, delimiter=delimiter, timezone=timezone,
                       customer_type=customer_type, round=round)


def check_period(state, every: str, week_start: str = "monday") -> None:
    """Refuse snapshots every ``every`` from a state with buckets of another period (a
    monthly state cannot give weekly snapshots) or weeks starting on another day."""
    if every != state.period or (every == "week" and week_start != state.week_start):
        kind = state.period + (f"s starting {state.week_start}" if state.period == "week" else "")
        raise RfmxError(f"the timeline state has one bucket per {kind}; it cannot give snapshots every {every}"
                        + (f" starting {week_start}" if every == "week" else "") + f"; use every={state.period!r}")


def timeline(source=None, *, every: str = "month", start=None, end=None, state=None,
             customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
             order_id: str | None = None, week_start: str = "monday", timezone: str | None = None,
             threads: int | None = None, **options) -> Iterator[tuple[object, pa.Table]]:
    """Yield ``(as_of, table)`` for every ``every`` boundary from ``start`` to ``end``: the
    per-customer aggregates as of that instant (equal to ``rfmx.aggregate(source,
    as_of=as_of)``), scored and segmented as ``rfmx.score`` does, with an ``as_of`` column first.

    ``source`` as for :func:`rfmx.aggregate`; or pass ``state`` (a TimelineState) alone.
    ``start``/``end`` default to the data's span; they must be period boundaries in the
    state's time zone.  ``options``: the scoring options of :func:`rfmx.scores.score_table`
    (``bins``, ``ties``, ``monetary``, ``cuts``, ``segments``, ``weights``, ``tiers``) and
    the reading options of :func:`rfmx.aggregate` (``amount_scale``, ``on_null``, ...).
    """
    from .scores import score_table

    scoring = {k: options.pop(k) for k in SCORE_OPTIONS if k in options}
    if source is not None or state is None:
        state = timeline_state(source, customer, time, amount, order_id, every=every, week_start=week_start,
                               timezone=timezone, threads=threads, state=state, **options)
    for as_of, table in state.snapshots(state.boundaries(start, end)):
        yield as_of, with_as_of(score_table(table, threads=threads, **scoring), as_of, state.timezone)


def with_as_of(table: pa.Table, as_of, timezone: str) -> pa.Table:
    """``table`` with a constant ``as_of`` column (timestamp in ``timezone``) in front."""
    from .state import to_us

    column = pa.repeat(pa.scalar(to_us(as_of), pa.timestamp("us", tz=timezone)), table.num_rows)
    return table.add_column(0, "as_of", column)
