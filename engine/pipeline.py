"""Steps chained over finalized per-customer tables: the scored timeline.

A timeline is one pass over the order history into a :class:`~rfmx.history.TimelineState`
(per customer and period, the same exact fields as the one-window state), then, for each
as-of date on a period boundary, the snapshot that ``rfmx.aggregate(..., as_of=that date)``
would give, scored with the options of ``rfmx score``.  Snapshots are made one at a time,
so a long timeline of millions of customers never sits in memory at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from .errors import RfmxError

__all__ = ["timeline", "timeline_state", "check_period", "scored_snapshots", "Snapshot", "SCORE_OPTIONS"]

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


@dataclass
class Snapshot:
    """One scored snapshot of a timeline (see :func:`scored_snapshots`)."""

    as_of: object               # zone-aware datetime
    table: pa.Table             # scored (and with ``lifecycle`` when asked)
    state_rows: np.ndarray      # each row's row in the state's customer order
    earlier_rows: np.ndarray | None  # each row's row in the previous snapshot (-1: new); None first


def scored_snapshots(state, boundaries, score: Callable[[pa.Table], pa.Table], *, lifecycle=None,
                     windows: bool = False) -> Iterator[Snapshot]:
    """The snapshots of ``state`` at ``boundaries``, each passed through ``score`` (a table
    -> table step such as :func:`rfmx.scores.score_table`), one at a time.

    ``lifecycle``: a lifecycle map (:func:`rfmx.stages.lifecycle_map`) to add the
    ``lifecycle`` column, or None; ``windows``: keep the money windows it reads
    (:data:`rfmx.history.WINDOW_COLUMNS`), as alerts do.  A stage may depend on the previous one (reactivated:
    lost before), so when the first boundary is not the data's first, the snapshot one
    period before it is made too (not yielded) to give its stages.  Consecutive snapshots
    are matched by position in the state (``earlier_rows``), never by hashing the ids.
    """
    from .history import WINDOW_COLUMNS
    from .stages import WINDOW_PERIODS
    from .stages import lifecycle as add_lifecycle
    from .migrations import rows_in_earlier

    if not boundaries:
        return
    window = WINDOW_PERIODS[state.period] if lifecycle is not None or windows else None
    wanted = list(boundaries)
    warmup = False
    if lifecycle is not None:
        before = state.boundaries(None, wanted[0])[-2:-1]  # the boundary one period earlier, if any
        if before and before[0] < wanted[0]:
            wanted.insert(0, before[0])
            warmup = True
    earlier, earlier_rows = None, None
    for n, (as_of, table, state_rows) in enumerate(state.snapshots(wanted, with_state_rows=True, window=window)):
        rows = rows_in_earlier(earlier_rows, state_rows) if earlier_rows is not None else None
        first = warmup and n == 0
        scored = table if first else score(table)  # the warm-up snapshot only gives stages
        if lifecycle is not None:
            scored = add_lifecycle(scored, earlier, earlier_rows=rows, stages=lifecycle)
            if not windows:
                scored = scored.drop_columns(list(WINDOW_COLUMNS))
        if not first:
            yield Snapshot(as_of, scored, state_rows, None if warmup and n == 1 else rows)
        earlier, earlier_rows = scored, state_rows


def timeline(source=None, *, every: str = "month", start=None, end=None, state=None,
             customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
             order_id: str | None = None, week_start: str = "monday", timezone: str | None = None,
             threads: int | None = None, lifecycle: bool = True, stages=None, **options) -> Iterator[tuple[object, pa.Table]]:
    """Yield ``(as_of, table)`` for every ``every`` boundary from ``start`` to ``end``: the
    per-customer aggregates as of that instant (equal to ``rfmx.aggregate(source,
    as_of=as_of)``), scored and segmented as ``rfmx.score`` does, with an ``as_of`` column
    first and (``lifecycle=True``) each customer's ``lifecycle`` stage after the segment.

    ``source`` as for :func:`rfmx.aggregate`; or pass ``state`` (a TimelineState) alone.
    ``start``/``end`` default to the data's span; they must be period boundaries in the
    state's time zone.  ``options``: the scoring options of :func:`rfmx.scores.score_table`
    (``bins``, ``ties``, ``monetary``, ``cuts``, ``segments``, ``weights``, ``tiers``), the
    lifecycle thresholds of :data:`rfmx.stages.THRESHOLDS` (or ``stages``: a lifecycle
    map file) and the reading options of :func:`rfmx.aggregate` (``amount_scale``, ...).
    """
    from .stages import THRESHOLDS, lifecycle_map
    from .scores import score_table

    scoring = {k: options.pop(k) for k in SCORE_OPTIONS if k in options}
    thresholds = {k: options.pop(k) for k in THRESHOLDS if k in options}
    stage_map = lifecycle_map(stages, **thresholds) if lifecycle else None
    if source is not None or state is None:
        state = timeline_state(source, customer, time, amount, order_id, every=every, week_start=week_start,
                               timezone=timezone, threads=threads, state=state, **options)
    for snap in scored_snapshots(state, state.boundaries(start, end),
                                 lambda t: score_table(t, threads=threads, **scoring), lifecycle=stage_map):
        yield snap.as_of, with_as_of(snap.table, snap.as_of, state.timezone)


def with_as_of(table: pa.Table, as_of, timezone: str) -> pa.Table:
    """``table`` with a constant ``as_of`` column (timestamp in ``timezone``) in front."""
    from .state import to_us

    column = pa.repeat(pa.scalar(to_us(as_of), pa.timestamp("us", tz=timezone)), table.num_rows)
    return table.add_column(0, "as_of", column)
