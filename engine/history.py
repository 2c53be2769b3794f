"""Customers over time: an RFM state with a time axis, and its snapshots.

:class:`TimelineState` is an :class:`rfmx.RFMState` that also keeps, per customer and per
calendar period (day, week, month or quarter in the state's time zone), a *bucket*
holding the same exact fields as the customer's aggregate row (first/last order time,
orders, refunds, gross and refund money, first/last order id), folded with the same
kernels.  It streams, merges, saves and loads like the RFM state, and

- :meth:`~TimelineState.snapshots` gives, for a series of period boundaries, the RFM
  table as of each of them — each equal to ``rfmx.aggregate(source, as_of=boundary)``
  over the same input — in one pass, one snapshot in memory at a time;
- :meth:`~TimelineState.buckets` gives the buckets themselves, one row per
  (customer, period), for cohort tables and the like.

Order ids.  With ``order_id``, the lines of one order count once when they are contiguous
for their customer in input order (README "Order counting"); an order whose lines
straddle a period boundary counts once in a snapshot when each customer's lines come in
time order (the usual order-line export).  Without order ids every snapshot is exact
whatever the input order.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from .calendar import UTC, US_PER_DAY, WEEKDAYS, instant_to_wall, local_day, wall_to_instant
from .errors import RfmxError
from .state import (
    _FIELD_NAMES,
    _GROUP,
    RFMState,
    _us_to_iso,
    read_state_file,
    read_state_meta,
    to_us,
)

__all__ = ["TimelineState", "TIMELINE_STATE_FORMAT", "TIMELINE_STATE_VERSION", "PERIODS", "WEEKDAYS",
           "YEAR_PERIODS", "WINDOW_COLUMNS"]

TIMELINE_STATE_FORMAT = "rfmx-timeline-state"
TIMELINE_STATE_VERSION = 2  # the RFM state's version-2 layout: timeline states keep no line costs
#: the periods a timeline can have
PERIODS = ("day", "week", "month", "quarter")
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly"}
#: periods in a year, for comparing a window with the same window a year earlier (weeks and
#: days: whole weeks, so a window a year back starts on the same weekday)
YEAR_PERIODS = {"day": 364, "week": 52, "month": 12, "quarter": 4}
#: the columns ``snapshots(window=...)`` adds: net money (minor units) of the window, of the
#: same window a year back, and of the last year
WINDOW_COLUMNS = ("window_net_minor", "year_ago_net_minor", "year_net_minor")
#: saved list columns: the buckets' periods, then one per field (``bucket_`` + field name)
_BUCKET_COLUMNS = ("periods",) + tuple(f"bucket_{name}" for name in _FIELD_NAMES)
_BUCKET_RANGES = {"bucket_n_orders": (0, None), "bucket_n_refunds": (0, None), "bucket_gross_minor": (0, None),
                  "bucket_refunds_minor": (None, 0)}


def _check_period(period) -> str:
    if period not in PERIODS:
        raise RfmxError(f"period must be one of {', '.join(map(repr, PERIODS))}, got {period!r}")
    return period


def _check_week_start(week_start) -> str:
    name = week_start.strip().lower() if isinstance(week_start, str) else week_start
    if name not in WEEKDAYS:
        raise RfmxError(f"week_start must be a weekday name ('monday' ... 'sunday'), got {week_start!r}")
    return name


class TimelineState(RFMState):
    """An :class:`rfmx.RFMState` that also keeps each customer's fields per calendar period.

    Parameters as :class:`rfmx.RFMState`, plus ``period`` (``"day"``, ``"week"``,
    ``"month"`` (default) or ``"quarter"``: calendar periods in the state's ``timezone``)
    and ``week_start`` (the first weekday of a week, ``"monday"`` by default).
    ``update``/``merge``/``save``/``load`` work as for the RFM state (merge is exact,
    associative and commutative) and :meth:`finalize` gives the same table; the customer
    rows are those of a plain RFM state over the same input.

    Memory: the RFM state plus, per (customer, period) with lines, a 64-byte bucket and an
    8-byte link (its period and the customer's next older bucket), and 8 bytes per customer
    (its newest bucket): no bucket hash table, so nothing more while streaming and nothing
    for :meth:`drop_index` to free.  Measured on ``rfmx generate`` data, monthly, peak RSS
    of a whole build (``python benchmarks/timeline_micro.py FILE --repeats N``, fresh
    processes, medians): 1e7 lines (725 k customers, 2.56 M customer-months, 3.5 per
    customer) 0.81 GB against 0.61 GB for ``rfmx.aggregate``, in 0.66 s against 0.45 s;
    1e8 lines (7.25 M customers, 25.6 M customer-months) 3.03 GB against 1.18 GB, in 9.8 s
    against 5.0 s.  :meth:`snapshots` adds one copy of the buckets, customer by customer
    (72 bytes each), the running rows (64 per customer) and one result table.

    Speed: a line of its customer's newest period, or a newer one, costs one random access
    more than in the RFM state (the customer's newest-bucket word) plus its bucket's row;
    a line older than its customer's newest period steps down that customer's buckets to
    its own, so input in time order per customer (the usual export) is the fast order.
    """

    def __init__(self, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
                 order_id: str | None = None, *, period: str = "month", week_start: str = "monday", since=None,
                 until=None, amount_scale: int = 2, on_null: str = "error", threads: int | None = None,
                 timezone: str | None = None):
        self.period = _check_period(period)
        self.week_start = _check_week_start(week_start)
        #: the last boundary whose alerts were reported (``rfmx alerts``), microseconds; saved
        #: with the state so that the next run reports only what is new since
        self.alerted_until_us: int | None = None
        super().__init__(customer, time, amount, order_id, since=since, until=until, amount_scale=amount_scale,
                         on_null=on_null, threads=threads, timezone=timezone)

    @property
    def _period_kind(self) -> int:
        from .kernels.periods import period_kind

        return period_kind(self.period, WEEKDAYS.index(self.week_start))

    # --- storage: the RFM arrays plus the (customer, period) buckets ------------------

    def _init_arrays(self, kind):
        from .kernels.rfm import new_aggregates

        super()._init_arrays(kind)
        P = len(self._n)
        self._bhead = np.zeros((P, self._ncap), dtype=np.int64)
        self._bn = np.zeros(P, dtype=np.int64)
        self._bcap = 1024
        self._blink = np.empty((P, self._bcap), dtype=np.int64)
        self._bagg = new_aggregates((P, self._bcap))

    def _reserve(self, incoming, incoming_bytes):
        from . import memory

        super()._reserve(incoming, incoming_bytes)
        if self._bhead.shape[1] < self._ncap:
            # zero past the customers (the kernels take 0 for "no bucket yet"): a reservation's
            # untouched pages are zero already, other memory is zeroed here
            head = memory.allocate((len(self._n), self._ncap), np.int64)
            if not memory.is_reserved(head):
                head[...] = 0
            for p in range(len(self._n)):
                head[p, : self._n[p]] = self._bhead[p, : self._n[p]]
            self._bhead = head
        self._reserve_buckets(incoming)

    def _reserve_buckets(self, incoming: np.ndarray) -> None:
        """Make room for ``incoming`` new buckets per partition."""
        from .memory import grow

        need = int((self._bn + incoming).max())
        if need > self._bcap:
            # As the RFM state's rows: at least 4x, uninitialized (a new bucket is
            # initialized by the kernels), only buckets in use copied.
            cap = max(need, 4 * self._bcap)
            self._bagg = grow(self._bagg, self._bn, cap)
            self._blink = grow(self._blink, self._bn, self._bagg.shape[1])
            self._bcap = self._bagg.shape[1]

    @property
    def n_buckets(self) -> int:
        """Stored (customer, period) buckets."""
        return int(self._bn.sum())

    # --- the three operations -----------------------------------------------------

    def _fold(self, ids, t, amt, oid, keep, hashed=None) -> np.ndarray:
        from .kernels._policy import threads
        from .kernels.customers import PARTITION_BITS
        from .kernels.timeline import timeline_update_partitioned_bytes, timeline_update_partitioned_int64

        hashes = self._hash_and_reserve(ids, hashed)
        kind = self._period_kind
        local = instant_to_wall(t, self.timezone)  # periods are the business's days, weeks, months
        with threads(self.threads) as n_workers:
            wrapped = np.empty(n_workers, dtype=np.int64)
            if ids.kind == "int":
                timeline_update_partitioned_int64(
                    ids.ints, hashes, t, local, amt, oid, keep, kind, n_workers, PARTITION_BITS, _GROUP,
                    self._table, self._keys, self._n, self._agg, self._bhead, self._blink, self._bn, self._bagg,
                    wrapped)
            else:
                timeline_update_partitioned_bytes(
                    ids.offsets, ids.data, hashes, t, local, amt, oid, keep, kind, n_workers, PARTITION_BITS, _GROUP,
                    self._table, self._key_offsets, self._key_data, self._n, self._nbytes, self._agg,
                    self._bhead, self._blink, self._bn, self._bagg, wrapped)
        return wrapped

    def _check_compatible(self, other, what):
        if not isinstance(other, TimelineState):
            raise RfmxError(f"{what} is a state without a time axis; a timeline state merges only timeline states")
        if (other.period, other.week_start) != (self.period, self.week_start):
            raise RfmxError(f"{what} keeps {self._describe_period(other)} buckets but this state "
                            f"{self._describe_period(self)} buckets")
        super()._check_compatible(other, what)

    @staticmethod
    def _describe_period(state) -> str:
        if state.period == "week":
            return f"weekly ({state.week_start.capitalize()} to {WEEKDAYS[WEEKDAYS.index(state.week_start) - 1].capitalize()})"
        return _ADJECTIVE[state.period]

    def merge(self, other: "TimelineState", *, what: str = "the other state") -> "TimelineState":
        """Fold ``other`` into this state (in place; returns self); exact in every field.

        As :meth:`rfmx.RFMState.merge`, ``other``'s lines are taken to come after this
        state's only to count an order whose lines straddle both once."""
        super().merge(other, what=what)  # the customer rows (and every customer)
        if other._kind is not None:
            ids, _ = other._flat(with_rows=False)
            bucket_offsets, periods, rows = other._export()
            self._merge_buckets(ids, bucket_offsets, periods, rows, what)
        return self

    def _merge_buckets(self, ids, bucket_offsets, periods, rows, what) -> None:
        from .kernels._policy import threads
        from .kernels.customers import PARTITION_BITS
        from .kernels.timeline import timeline_merge_buckets_bytes, timeline_merge_buckets_int64

        if len(periods) == 0:
            return
        hashes = self._hash_and_reserve(ids)  # the customers exist after the row merge
        part = (hashes.view(np.uint64) >> np.uint64(64 - PARTITION_BITS)).astype(np.intp)
        per_customer = np.diff(bucket_offsets)
        self._reserve_buckets(np.bincount(part, weights=per_customer, minlength=len(self._n)).astype(np.int64))
        has_oid = self.columns.order_id is not None
        with threads(self.threads) as n_workers:
            wrapped = np.empty(n_workers, dtype=np.int64)
            if ids.kind == "int":
                timeline_merge_buckets_int64(ids.ints, hashes, bucket_offsets, periods, rows, has_oid, n_workers,
                                             PARTITION_BITS, _GROUP, self._table, self._keys, self._n,
                                             self._bhead, self._blink, self._bn, self._bagg, wrapped)
            else:
                timeline_merge_buckets_bytes(ids.offsets, ids.data, hashes, bucket_offsets, periods, rows, has_oid,
                                             n_workers, PARTITION_BITS, _GROUP, self._table, self._key_offsets,
                                             self._key_data, self._n, self._nbytes, self._bhead, self._blink,
                                             self._bn, self._bagg, wrapped)
        self._refuse_wrapped(wrapped, ids, lambda r, customer: (
            f"{what}: merged, a period's money total of customer {customer} leaves the exact range"))

    def _export(self, by_field: bool = False):
        """``(bucket_offsets (m + 1,), periods (E,), rows (E, N_FIELDS))``: every customer's
        buckets in period order, customers in the order of :meth:`_flat`.  ``by_field``:
        ``rows`` is the transpose of a (N_FIELDS, E) array, so each field is one contiguous
        column (what a save writes) instead of each bucket one row (what snapshots read)."""
        from .kernels.rfm import N_FIELDS
        from .kernels.timeline import timeline_bucket_counts, timeline_export

        m = self.n_customers
        offsets = np.zeros(len(self._n) + 1, dtype=np.int64)
        np.cumsum(self._n, out=offsets[1:])
        count = np.zeros(m, dtype=np.int64)
        bucket_offsets = np.zeros(m + 1, dtype=np.int64)
        E = self.n_buckets
        periods = np.empty(E, dtype=np.int64)
        rows = np.empty((N_FIELDS, E), dtype=np.int64).T if by_field else np.empty((E, N_FIELDS), dtype=np.int64)
        if self._kind is not None and E:
            with self._threads():
                timeline_bucket_counts(self._bhead, self._blink, self._n, offsets, count)
                np.cumsum(count, out=bucket_offsets[1:])
                timeline_export(self._bhead, self._blink, self._bagg, self._n, offsets, bucket_offsets, periods, rows)
        return bucket_offsets, periods, rows

    # --- periods and boundaries -----------------------------------------------------

    def _walls(self, instants) -> np.ndarray:
        return instant_to_wall(np.asarray(instants, dtype=np.int64), self.timezone)

    def _starts(self, periods: np.ndarray) -> np.ndarray:
        """The first instant of each period (in the state's zone)."""
        from .kernels.periods import period_starts_us

        walls = np.empty(len(periods), dtype=np.int64)
        if len(periods):
            period_starts_us(np.asarray(periods, dtype=np.int64), self._period_kind, walls)
        return wall_to_instant(walls, self.timezone)

    def _period_of(self, instant_us: int) -> int:
        from .kernels.periods import period_of

        return int(period_of(int(self._walls([instant_us])[0]), self._period_kind))

    def _data_periods(self) -> tuple[int, int] | None:
        """(first, last) period with lines, or None for an empty state."""
        if not self.n_buckets or self.max_time_us is None:
            return None
        from .kernels.timeline import timeline_min_period

        lows = np.empty(len(self._bn), dtype=np.int64)
        with self._threads():
            timeline_min_period(self._blink, self._bn, lows)
        return int(lows[self._bn > 0].min()), self._period_of(self.max_time_us)

    def _as_datetime(self, instant_us: int) -> _dt.datetime:
        utc = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(microseconds=int(instant_us))
        if self.timezone == UTC:
            return utc
        import zoneinfo

        return utc.astimezone(zoneinfo.ZoneInfo(self.timezone))

    def boundaries(self, start=None, end=None) -> list:
        """The period boundaries (first instants of periods in the state's zone) from
        ``start`` to ``end`` (both inclusive), as zone-aware ``datetime`` objects.

        ``start`` defaults to the start of the second period with lines, ``end`` to the
        boundary after the latest line (and to no later than the state's ``until``).
        Dates without a zone are read in the state's zone, as everywhere in rfmx.
        """
        self._check_usable()
        span = self._data_periods()
        start_us = to_us(start, self.timezone)
        end_us = to_us(end, self.timezone)
        if start_us is None:
            if span is None:
                return []
            lo = span[0] + 1
        else:
            lo = self._period_of(start_us)
            if int(self._starts([lo])[0]) < start_us:
                lo += 1
        if end_us is None:
            if span is None:
                return []
            hi = span[1] + 1
        else:
            hi = self._period_of(end_us)
        starts = self._starts(np.arange(lo, hi + 1, dtype=np.int64)) if hi >= lo else np.empty(0, np.int64)
        if end_us is not None:
            starts = starts[starts <= end_us]
        if self.until_us is not None:
            starts = starts[starts <= self.until_us]
        return [self._as_datetime(b) for b in starts]

    def _as_of_periods(self, as_of_dates) -> list[tuple[int, int]]:
        """``(instant, period)`` of each as_of, ascending and checked: each must start a period
        (or be the state's ``until``) and lie inside the window."""
        if as_of_dates is None:
            instants = [to_us(b) for b in self.boundaries()]
        else:
            if isinstance(as_of_dates, (str, int, _dt.date, np.datetime64)):
                as_of_dates = [as_of_dates]
            instants = [to_us(d, self.timezone) for d in as_of_dates]
            if any(i is None for i in instants):
                raise RfmxError("as_of dates must be dates or times, not None")
        out = []
        for a in sorted(set(instants)):
            q = self._period_of(a)
            if a == self.until_us:
                q = self._period_of(a - 1) + 1  # the end of the window: every bucket is before it
            elif int(self._starts([q])[0]) != a:
                raise RfmxError(f"as_of {_us_to_iso(a, self.timezone)} is not the start of a {self.period} in "
                                f"{self.timezone}: a {_ADJECTIVE[self.period]} state gives snapshots at "
                                f"{self.period} boundaries only")
            if self.until_us is not None and a > self.until_us:
                raise RfmxError(f"as_of {_us_to_iso(a, self.timezone)} is after the state's window ends "
                                f"({_us_to_iso(self.until_us, self.timezone)}): it never saw the lines before it")
            if self.since_us is not None and a <= self.since_us:
                raise RfmxError(f"as_of {_us_to_iso(a, self.timezone)} must be after since "
                                f"({_us_to_iso(self.since_us, self.timezone)})")
            out.append((a, q))
        return out

    # --- snapshots and buckets --------------------------------------------------------

    def snapshots(self, as_of_dates=None, *, with_state_rows: bool = False, window: int | None = None):
        """The RFM table as of each of ``as_of_dates``: an iterator of ``(as_of, table)``
        with ``as_of`` ascending (a zone-aware ``datetime``).

        Each ``as_of`` must be a period boundary (see :meth:`boundaries`; default: all of
        them) or the state's ``until``.  Each table is what :meth:`rfmx.RFMState.finalize`
        gives for a state built over the lines before ``as_of`` (``rfmx.aggregate(source,
        as_of=as_of)``): the same columns, types and values, customers with a line before
        ``as_of`` only, in the state's customer order (the order of :meth:`finalize`; for
        input in time order, the order ``aggregate(as_of=...)`` gives); see the module
        docstring for order ids.

        ``with_state_rows``: yield ``(as_of, table, state_rows)`` instead, where
        ``state_rows`` (int64, ascending) gives each table row's row in :meth:`finalize`'s
        customer order — so two snapshots of one state are matched by position
        (:func:`rfmx.migrations.rows_in_earlier`), without hashing the ids.

        ``window`` (a number of periods): add three int64 columns (:data:`WINDOW_COLUMNS`):
        ``window_net_minor`` (each customer's net money in the last ``window`` periods
        before ``as_of``, minor units), ``year_ago_net_minor`` (the same periods one year
        earlier: 12 months, 4 quarters, 52 weeks or 364 days back) and ``year_net_minor``
        (the last year) — what lifecycle stages and alerts compare.

        One pass: the buckets are read out once, customer by customer; each snapshot
        folds the newly covered periods into running per-customer rows with the merge
        kernel and finalizes them in the same step; one snapshot is in memory at a time.
        """
        self._check_usable()
        wanted = self._as_of_periods(as_of_dates)  # checked here, not at the first next()
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise RfmxError(f"window must be a whole number of periods >= 1, got {window!r}")
        return self._snapshots(wanted, with_state_rows, window)

    def _snapshots(self, wanted, with_state_rows, window):
        from .kernels import rfm as k
        from .kernels.timeline import timeline_snapshot

        if not wanted:
            return
        ids, _ = self._flat(with_rows=False)
        bucket_offsets, periods, rows = self._export()
        m = len(ids)
        firsts = periods[bucket_offsets[:-1]] if m else np.empty(0, np.int64)  # each customer's first period
        id_array = self._id_array(ids)
        run = np.empty((1, m, k.N_FIELDS), dtype=np.int64)  # rows set by the kernel at their first bucket
        pos = bucket_offsets[:-1].copy()
        has_oid = self.columns.order_id is not None
        unit = float(10 ** self.amount_scale)
        for as_of_us, q in wanted:
            customers = np.flatnonzero(firsts < q)
            n_in = len(customers)
            ints = np.empty((7, n_in), dtype=np.int64)
            floats = np.empty((4, n_in), dtype=np.float64)
            has_orders = np.empty(n_in, dtype=np.bool_)
            windows = np.empty((3 if window else 0, n_in), dtype=np.int64)
            with self._threads():
                bad = timeline_snapshot(bucket_offsets, periods, rows, customers, q, has_oid, run, pos,
                                        local_day(as_of_us, self.timezone), US_PER_DAY, unit, ints, floats,
                                        has_orders, window or 0, YEAR_PERIODS[self.period], windows)
            if bad:
                raise RfmxError("a snapshot's money total left the exact range: the state is damaged")
            ids_in = id_array if n_in == m else id_array.take(pa.array(customers))
            table = self._result_table(ids_in, ints, floats, has_orders, as_of_us)
            if window:
                table = self._with_windows(table, windows, q, window, as_of_us)
            as_of = self._as_datetime(as_of_us)
            yield (as_of, table, customers) if with_state_rows else (as_of, table)

    def _with_windows(self, table: pa.Table, windows: np.ndarray, q: int, window: int, as_of_us: int) -> pa.Table:
        """``table`` with the window money columns, and in its metadata the calendar days
        of the latest period and of the window (``rfmx.period_days``, ``rfmx.window_days``):
        a customer whose tenure is at most the period's days had their first order in it."""
        day = local_day(as_of_us, self.timezone)
        starts = self._starts(np.array([q - 1, q - window], dtype=np.int64))
        meta = dict(table.schema.metadata)
        meta.update({b"rfmx.timeline.period": self.period.encode(), b"rfmx.window_periods": str(window).encode(),
                     b"rfmx.period_days": str(day - local_day(int(starts[0]), self.timezone)).encode(),
                     b"rfmx.window_days": str(day - local_day(int(starts[1]), self.timezone)).encode()})
        for name, values in zip(WINDOW_COLUMNS, windows):
            table = table.append_column(name, pa.array(values))
        return table.replace_schema_metadata(meta)

    def buckets(self) -> pa.Table:
        """One row per (customer, period) with lines, customers together, periods ascending.

        Columns: ``customer_id``; ``period_start`` (the period's first instant, a timestamp
        in the state's zone); ``n_orders``, ``n_refunds``, ``gross_minor``, ``refunds_minor``
        (int64, money in minor units) and ``first_order``/``last_order`` (timestamps, null
        for a period with refunds only) of the customer's lines in that period.  Counting
        orders per period, an order whose lines straddle a boundary counts in both periods.
        """
        from .kernels import rfm as k

        self._check_usable()
        ids, _ = self._flat(with_rows=False)
        bucket_offsets, periods, rows = self._export()
        customer = np.repeat(np.arange(len(ids), dtype=np.int64), np.diff(bucket_offsets))
        ts = self._timestamp_type()
        no_orders = rows[:, k.N_ORDERS] == 0
        mask = no_orders if no_orders.any() else None
        return pa.table({
            "customer_id": self._id_array(ids).take(pa.array(customer)),
            "period_start": pa.array(self._starts(periods)).view(ts),
            "n_orders": pa.array(rows[:, k.N_ORDERS]),
            "n_refunds": pa.array(rows[:, k.N_REFUNDS]),
            "gross_minor": pa.array(rows[:, k.GROSS]),
            "refunds_minor": pa.array(rows[:, k.REFUNDS]),
            "first_order": pa.array(np.where(no_orders, 0, rows[:, k.FIRST_ORDER]), mask=mask).view(ts),
            "last_order": pa.array(np.where(no_orders, 0, rows[:, k.LAST_ORDER]), mask=mask).view(ts),
        }).replace_schema_metadata({"rfmx.timeline.period": self.period, "rfmx.timeline.week_start": self.week_start,
                                    "rfmx.timezone": self.timezone, "rfmx.amount_scale": str(self.amount_scale),
                                    "rfmx.customer_column": self.columns.customer})

    # --- persistence --------------------------------------------------------------

    def to_table(self) -> pa.Table:
        """The raw state: the RFM state's columns plus, per customer, its buckets in period
        order as list columns (large_list<int64>, one list per customer, all with the same
        offsets): ``periods`` (period indices of :mod:`rfmx.kernels.periods`) and
        ``bucket_<field>`` for each field of the customer row."""
        base = super().to_table()
        bucket_offsets, periods, rows = self._export(by_field=True)
        offs = pa.array(bucket_offsets)
        table = base
        for j, name in enumerate(_BUCKET_COLUMNS):
            values = periods if j == 0 else np.ascontiguousarray(rows[:, j - 1])
            table = table.append_column(name, pa.LargeListArray.from_arrays(offs, pa.array(values)))
        meta = json.loads(base.schema.metadata[b"rfmx.state"])
        meta.update(format=TIMELINE_STATE_FORMAT, version=TIMELINE_STATE_VERSION, period=self.period,
                    week_start=self.week_start, alerted_until_us=self.alerted_until_us)
        return table.replace_schema_metadata({"rfmx.state": json.dumps(meta)})

    @classmethod
    def load(cls, path, *, threads: int | None = None) -> "TimelineState":
        """Read a state written by :meth:`save`; refuses other formats and versions, and
        damaged files (metadata, columns or values :meth:`save` cannot have written,
        buckets that do not add up to their customer's row)."""
        path = Path(path)
        return cls.from_table(read_state_file(path), what=path, threads=threads)

    @classmethod
    def from_table(cls, table: pa.Table, *, what="<state table>", threads: int | None = None) -> "TimelineState":
        """The state whose :meth:`to_table` is ``table``, checked as :meth:`load` checks a file
        (``what`` names it in errors): how partial timeline states cross process boundaries
        as Arrow data (:mod:`rfmx.dask`)."""
        import pyarrow.compute as pc

        path = what
        meta = read_state_meta(path, table, TIMELINE_STATE_FORMAT, {"period": (str,), "week_start": (str,)},
                               _BUCKET_COLUMNS)
        if meta["version"] != TIMELINE_STATE_VERSION:
            raise RfmxError(f"{path}: damaged state file: timeline states have version {TIMELINE_STATE_VERSION}, "
                            f"not {meta['version']}")
        if meta["period"] not in PERIODS or meta["week_start"] not in WEEKDAYS:
            key = "period" if meta["period"] not in PERIODS else "week_start"
            raise RfmxError(f"{path}: damaged state file: metadata '{key}' is {meta[key]!r}")
        alerted = meta.get("alerted_until_us")
        if alerted is not None and (isinstance(alerted, bool) or not isinstance(alerted, int)):
            raise RfmxError(f"{path}: damaged state file: metadata 'alerted_until_us' is {alerted!r}")
        lists = {}
        for name in _BUCKET_COLUMNS:
            if table.schema.field(name).type != pa.large_list(pa.int64()):
                raise RfmxError(f"{path}: damaged state file: column '{name}' is {table.schema.field(name).type}, "
                                f"not large_list<int64>")
            lists[name] = table.column(name).combine_chunks()
            if lists[name].values.null_count or not lists[name].offsets.equals(lists["periods"].offsets):
                raise RfmxError(f"{path}: damaged state file: the bucket columns do not match ('{name}')")
            if name in _BUCKET_RANGES and len(lists[name].values):
                lo, hi = _BUCKET_RANGES[name]
                mm = pc.min_max(lists[name].values).as_py()
                if (lo is not None and mm["min"] < lo) or (hi is not None and mm["max"] > hi):
                    raise RfmxError(f"{path}: damaged state file: column '{name}' holds values from {mm['min']} to "
                                    f"{mm['max']}, outside what a state can hold")
        c = meta["columns"]
        state = cls(c["customer"], c["time"], c["amount"], c["order_id"], period=meta["period"],
                    week_start=meta["week_start"], since=meta["since_us"], until=meta["until_us"],
                    amount_scale=meta["amount_scale"], threads=threads, timezone=meta["timezone"])
        state.alerted_until_us = alerted
        ids = state._restore(meta, table, path)
        if ids is None:
            return state
        offsets = np.asarray(lists["periods"].offsets).astype(np.int64, copy=False)
        periods = np.asarray(lists["periods"].values).astype(np.int64, copy=False)
        if len(periods) and (periods.min() < -(2**31) or periods.max() >= 2**31):
            raise RfmxError(f"{path}: damaged state file: column 'periods' holds periods beyond 32 bits")
        rows = np.empty((len(periods), len(_FIELD_NAMES)), dtype=np.int64)
        for j, name in enumerate(_BUCKET_COLUMNS[1:]):
            rows[:, j] = np.asarray(lists[name].values)
        state._merge_buckets(ids, offsets, periods, rows, str(path))
        if state.n_buckets != len(periods):
            state._broken = f"{path}: damaged state file: a customer has two buckets for one period"
            raise RfmxError(state._broken)
        customer_rows = np.empty((table.num_rows, len(_FIELD_NAMES)), dtype=np.int64)
        for j, name in enumerate(_FIELD_NAMES):
            customer_rows[:, j] = table.column(name).to_numpy()
        state._check_buckets_add_up(path, offsets, periods, rows, customer_rows)
        return state

    def _check_buckets_add_up(self, path, bucket_offsets, periods, brows, rows) -> None:
        """Refuse a saved state whose buckets, combined, are not its customer rows (the
        file's own arrays: per customer, in the file's order, its buckets and its row).

        Compared: the fields that do not depend on the order of the lines (times, refunds,
        money; orders too without order ids: with them a customer whose lines were not in
        time order may count an order straddling two periods twice in its buckets)."""
        from .kernels import rfm as k
        from .kernels.timeline import timeline_advance

        m = len(rows)
        run = np.empty((1, m, k.N_FIELDS), dtype=np.int64)
        pos = bucket_offsets[:-1].copy()
        has_oid = self.columns.order_id is not None
        with self._threads():
            bad = timeline_advance(bucket_offsets, periods, brows, np.iinfo(np.int64).max, has_oid, run, pos)
        fields = [k.FIRST_ORDER, k.LAST_ORDER, k.N_REFUNDS, k.GROSS, k.REFUNDS] + ([] if has_oid else [k.N_ORDERS])
        differ = np.flatnonzero((run[0][:, fields] != rows[:, fields]).any(axis=1))
        if bad or len(differ) or (m and (np.diff(bucket_offsets) == 0).any()):
            self._broken = f"{path}: damaged state file: the buckets of a customer do not add up to its row"
            raise RfmxError(self._broken)

    def __repr__(self) -> str:
        return (f"TimelineState({self.n_customers} customers, {self.n_buckets} {self._describe_period(self)} "
                f"buckets, {self.rows_read} rows read, columns={self.columns}, amount_scale={self.amount_scale})")
