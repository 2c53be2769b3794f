"""BTYD summaries (frequency, recency, T, monetary value) from an order stream.

:class:`BTYDState` is an :class:`rfmx.RFMState` that also remembers, per customer, the
purchase periods and the money spent in each (an exact ``(customer, period)`` hash
table, see :mod:`rfmx.kernels.btyd`).  It streams, merges, saves and loads like the RFM
state, and its :meth:`~BTYDState.summary` gives the inputs of the BG/NBD, Pareto/NBD and
Gamma-Gamma models with lifetimes' definitions (``summary_data_from_transaction_data``,
``calibration_and_holdout_data``):

- purchases are collapsed per period (``day``, ``week`` — Monday to Sunday — or calendar
  ``month``); refund lines (negative amounts) are not purchases;
- ``frequency``: purchase periods after the first one (repeat purchase periods);
- ``recency``: from the first to the last purchase period;
- ``T``: from the first purchase period to the last period of the observation (the
  period that holds the instant just before ``as_of``);
- ``monetary_value``: mean money per repeat purchase period (0 without repeats);
- times are in ``unit`` (default: the period; ``day``/``week``/``month`` = 1/7/30 days,
  the month as lifetimes' CLV counts it) divided by ``scale`` (lifetimes' ``freq_multiplier``).

With ``holdout_start`` the periods before it form the calibration summary (``*_cal``
columns, T up to the period before ``holdout_start``) and those from it on give
``frequency_holdout`` (purchase periods in the holdout), ``monetary_value_holdout``
(mean money per holdout purchase period) and ``duration_holdout``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..calendar import instant_to_wall
from ..errors import RfmxError
from ..state import _GROUP, RFMState, _next_pow2, _us_to_iso, read_state_file, read_state_meta, to_us

__all__ = ["BTYDState", "summary", "rf_matrix", "periods_per_unit", "BTYD_STATE_FORMAT", "BTYD_STATE_VERSION",
           "UNIT_DAYS"]

BTYD_STATE_FORMAT = "rfmx-btyd-state"
BTYD_STATE_VERSION = 2  # as the RFM state's: 2 records the time zone
#: length of a time unit in days (a month is 30 days, as in lifetimes' CLV method).
UNIT_DAYS = {"day": 1, "week": 7, "month": 30}
#: slots per partition a period table's reservation is sized for (half of it: 537 M entries)
_PERIOD_RESERVED_SLOTS = 1 << 26
_PERIOD_DAYS = {"day": 1, "week": 7}
_ALIASES = {"d": "day", "D": "day", "days": "day", "w": "week", "W": "week", "weeks": "week",
            "m": "month", "M": "month", "months": "month"}


def _period_name(period: str, what: str = "period") -> str:
    name = _ALIASES.get(period, period)
    if name not in UNIT_DAYS:
        raise RfmxError(f"{what} must be 'day', 'week' or 'month', got {period!r}")
    return name


def time_divisor(period: str, unit: str | None, scale: float) -> float:
    """Periods per ``unit``, times ``scale``: BTYD times are period counts divided by this."""
    period = _period_name(period)
    unit = period if unit is None else _period_name(unit, "unit")
    if not (np.isfinite(scale) and scale > 0):
        raise RfmxError(f"scale must be a positive number, got {scale}")
    if period == "month":
        if unit != "month":
            raise RfmxError(f"with period='month' the time unit is 'month', not {unit!r}")
        return float(scale)
    return UNIT_DAYS[unit] / _PERIOD_DAYS[period] * float(scale)


def periods_per_unit(table) -> tuple[str | None, float]:
    """``(period, periods per time unit)`` of a BTYD summary from its schema metadata: recency
    and T times the second are counts of ``period`` (the BG/BB model's opportunities).
    ``(None, 1.0)`` for a table without rfmx metadata (its times are taken as counts)."""
    meta = getattr(getattr(table, "schema", None), "metadata", None) or {}
    period = meta.get(b"rfmx.btyd.period")
    if period is None:
        return None, 1.0
    period = period.decode()
    unit = meta.get(b"rfmx.btyd.unit")
    scale = meta.get(b"rfmx.btyd.scale")
    return period, time_divisor(period, unit.decode() if unit else None, float(scale) if scale else 1.0)


class BTYDState(RFMState):
    """An :class:`rfmx.RFMState` that also keeps each customer's purchase periods.

    Parameters as :class:`rfmx.RFMState`, plus ``period``: ``"day"`` (default), ``"week"``
    or ``"month"``, the period purchases are collapsed into.  ``update``/``merge``/
    ``save``/``load`` work as for the RFM state (merge is exact, associative and
    commutative); :meth:`finalize` still gives the RFM table and :meth:`summary` the
    BTYD summary.  Memory: the RFM state plus 16 bytes per (customer, purchase period) and
    their hash table (32-128 bytes per entry while streaming; :meth:`drop_index` frees it).
    """

    def __init__(self, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
                 order_id: str | None = None, *, period: str = "day", since=None, until=None,
                 amount_scale: int = 2, on_null: str = "error", threads: int | None = None,
                 timezone: str | None = None):
        self.period = _period_name(period)
        super().__init__(customer, time, amount, order_id, since=since, until=until, amount_scale=amount_scale,
                         on_null=on_null, threads=threads, timezone=timezone)

    # --- storage: the RFM arrays plus the (customer, period) tables -----------------

    def _init_arrays(self, kind):
        super()._init_arrays(kind)
        P = len(self._n)
        self._pn = np.zeros(P, dtype=np.int64)
        self._ecap = 1024
        self._ptable = np.zeros((P, 2048, 2), dtype=np.int64)
        self._pkeys = np.empty((P, self._ecap), dtype=np.int64)
        self._pmoney = np.empty((P, self._ecap), dtype=np.int64)

    def _reserve(self, incoming, incoming_bytes):
        super()._reserve(incoming, incoming_bytes)
        self._reserve_entries(incoming)

    def _reserve_entries(self, incoming: np.ndarray) -> None:
        """Make room for ``incoming`` new (customer, period) entries per partition."""
        from ..kernels.customers import rehash_int64
        from ..memory import grow

        need = int((self._pn + incoming).max())
        if need > self._ecap:
            # Grow as the RFM state does (rfmx.memory): at least 4x, into uninitialized
            # memory, copying only entries in use; big arrays never move again.  An
            # entry's money is set on insert, so nothing needs zeroing.
            cap = max(need, 4 * self._ecap)
            self._pkeys = grow(self._pkeys, self._pn, cap)
            self._pmoney = grow(self._pmoney, self._pn, self._pkeys.shape[1])
            self._ecap = self._pkeys.shape[1]
        slots = _next_pow2(2 * need)
        if self._ptable is None or slots > self._ptable.shape[1]:
            # a growing table grows 4x: half the rehashes (they cost as much as the updates)
            slots = max(slots, 2048, 4 * self._ptable.shape[1] if self._ptable is not None else 0)
            self._ptable = self._empty_table("_ptable", (len(self._pn), slots, 2), _PERIOD_RESERVED_SLOTS)
            rehash_int64(self._pkeys, self._pn, self._ptable)

    def drop_index(self) -> None:
        """Free the hash tables (customers and (customer, period) entries): summaries and
        the RFM table do not need them; a later update or merge rebuilds them."""
        super().drop_index()
        self._ptable = None

    @property
    def n_periods(self) -> int:
        """Stored (customer, purchase period) entries."""
        return int(self._pn.sum())

    # --- the three operations -----------------------------------------------------

    def _fold(self, ids, t, amt, oid, keep, hashed=None) -> np.ndarray:
        """Fold prepared lines into the RFM rows and the per-(customer, period) table; per
        worker the first line whose money total left int64, or -1."""
        from ..kernels._policy import threads
        from ..kernels.btyd import PERIOD_KINDS, btyd_update_partitioned_bytes, btyd_update_partitioned_int64
        from ..kernels.customers import PARTITION_BITS

        hashes = self._hash_and_reserve(ids, hashed)
        kind = PERIOD_KINDS[self.period]
        local = instant_to_wall(t, self.timezone)  # periods are the business's days, weeks, months
        with threads(self.threads) as n_workers:
            wrapped = np.empty(n_workers, dtype=np.int64)
            if ids.kind == "int":
                btyd_update_partitioned_int64(
                    ids.ints, hashes, t, local, amt, oid, keep, kind, n_workers, PARTITION_BITS, _GROUP,
                    self._table, self._keys, self._n, self._agg,
                    self._ptable, self._pkeys, self._pn, self._pmoney, self._pmoney[:, :, None], wrapped)
            else:
                btyd_update_partitioned_bytes(
                    ids.offsets, ids.data, hashes, t, local, amt, oid, keep, kind, n_workers, PARTITION_BITS, _GROUP,
                    self._table, self._key_offsets, self._key_data, self._n, self._nbytes, self._agg,
                    self._ptable, self._pkeys, self._pn, self._pmoney, self._pmoney[:, :, None], wrapped)
        return wrapped

    def _check_compatible(self, other, what):
        if not isinstance(other, BTYDState):
            raise RfmxError(f"{what} is an RFM state without purchase periods; a BTYD state merges only BTYD states")
        if other.period != self.period:
            raise RfmxError(f"{what} collapses purchases per {other.period} but this state per {self.period}")
        super()._check_compatible(other, what)

    def merge(self, other: "BTYDState", *, what: str = "the other state") -> "BTYDState":
        """Fold ``other`` into this state (in place; returns self); exact in every field."""
        super().merge(other, what=what)  # the RFM rows (and every customer)
        if other._kind is not None:
            ids, _ = other._flat()
            entry_offsets, periods, money = other._entries()
            self._merge_entries(ids, entry_offsets, periods, money)
        return self

    def _merge_entries(self, ids, entry_offsets, periods, money) -> None:
        from ..kernels._policy import threads
        from ..kernels.btyd import btyd_merge_periods_bytes, btyd_merge_periods_int64
        from ..kernels.customers import PARTITION_BITS

        if len(periods) == 0:
            return
        hashes = self._hash_and_reserve(ids)  # reserves room for the customers (they exist after an RFM merge)
        part = (hashes.view(np.uint64) >> np.uint64(64 - PARTITION_BITS)).astype(np.intp)
        per_customer = np.diff(entry_offsets)
        self._reserve_entries(np.bincount(part, weights=per_customer, minlength=len(self._n)).astype(np.int64))
        with threads(self.threads) as n_workers:
            if ids.kind == "int":
                btyd_merge_periods_int64(ids.ints, hashes, entry_offsets, periods, money, n_workers, PARTITION_BITS,
                                         _GROUP, self._table, self._keys, self._n, self._ptable, self._pkeys,
                                         self._pn, self._pmoney)
            else:
                btyd_merge_periods_bytes(ids.offsets, ids.data, hashes, entry_offsets, periods, money, n_workers,
                                         PARTITION_BITS, _GROUP, self._table, self._key_offsets, self._key_data,
                                         self._n, self._nbytes, self._ptable, self._pkeys, self._pn, self._pmoney)

    def _customer_offsets(self) -> np.ndarray:
        offsets = np.zeros(len(self._n), dtype=np.int64)
        np.cumsum(self._n[:-1], out=offsets[1:])
        return offsets

    def _stats(self, holdout_period: int):
        from ..kernels.btyd import btyd_period_stats

        m = self.n_customers
        out = [np.empty(m, dtype=np.int64) for _ in range(7)]
        if self._kind is not None:
            btyd_period_stats(self._pkeys, self._pmoney, self._pn, self._n, self._customer_offsets(),
                              holdout_period, *out)
        return out

    def _entries(self):
        """(entry_offsets (customers + 1,), periods, money): every customer's entries, flattened."""
        from ..kernels.btyd import btyd_entries

        count = self._stats(np.iinfo(np.int64).max)[0]
        entry_offsets = np.zeros(len(count) + 1, dtype=np.int64)
        np.cumsum(count, out=entry_offsets[1:])
        periods = np.empty(entry_offsets[-1], dtype=np.int64)
        money = np.empty(entry_offsets[-1], dtype=np.int64)
        if self._kind is not None:
            btyd_entries(self._pkeys, self._pmoney, self._pn, self._n, self._customer_offsets(), entry_offsets,
                         periods, money)
        return entry_offsets, periods, money

    # --- the BTYD summary -----------------------------------------------------------

    def _last_period(self, end_us: int) -> int:
        """The period holding the instant just before ``end_us`` (the observation's last period)."""
        from ..kernels.btyd import PERIOD_KINDS, period_of

        return int(period_of(self._wall(end_us - 1), PERIOD_KINDS[self.period]))

    def _wall(self, instant_us: int) -> int:
        """An instant as wall-clock microseconds in the state's time zone (periods are local)."""
        return int(instant_to_wall(np.array([instant_us], dtype=np.int64), self.timezone)[0])

    def summary(self, as_of=None, *, holdout_start=None, unit: str | None = None, scale: float = 1.0) -> pa.Table:
        """The per-customer BTYD summary (see the module docstring for the definitions).

        Columns: ``customer_id``, ``frequency`` (float64, whole numbers), ``recency``,
        ``T``, ``monetary_value`` (money units: minor units / 10**amount_scale); with
        ``holdout_start`` the same with a ``_cal`` suffix, then ``frequency_holdout``,
        ``monetary_value_holdout`` and ``duration_holdout``.  Customers whose first purchase
        is at or after ``holdout_start`` (or who only have refunds) are not in the table.
        Schema metadata: ``rfmx.as_of``, ``rfmx.btyd.period``, ``rfmx.btyd.unit``,
        ``rfmx.btyd.scale``, ``rfmx.btyd.holdout_start``, ``rfmx.amount_scale``.
        """
        div = time_divisor(self.period, unit, scale)
        unit = self.period if unit is None else _period_name(unit, "unit")
        as_of_us = self.resolve_as_of(as_of)
        if as_of_us is None:
            raise RfmxError("the BTYD summary needs orders (the state is empty) or an as_of date")
        last = self._last_period(as_of_us)
        hold_us = to_us(holdout_start, self.timezone)
        if hold_us is not None:
            from ..kernels.btyd import PERIOD_KINDS, period_of, period_start_us

            kind = PERIOD_KINDS[self.period]
            hold_wall = self._wall(hold_us)
            holdout_period = int(period_of(hold_wall, kind))
            if int(period_start_us(holdout_period, kind)) != hold_wall:
                raise RfmxError(f"holdout_start {_us_to_iso(hold_us)} is not the start of a {self.period}; "
                                f"split at a {self.period} boundary so no {self.period} falls on both sides")
            if hold_us >= as_of_us:
                raise RfmxError(f"holdout_start {_us_to_iso(hold_us)} must be before the end of the observation "
                                f"({_us_to_iso(as_of_us)})")
            if self.since_us is not None and hold_us <= self.since_us:
                raise RfmxError(f"holdout_start {_us_to_iso(hold_us)} must be after since ({_us_to_iso(self.since_us)})")
            cal_last = holdout_period - 1
        else:
            holdout_period = np.iinfo(np.int64).max
            cal_last = last
        count, first, last_p, money, first_money, h_count, h_money = self._stats(holdout_period)
        ids, _ = self._flat()
        keep = count > 0
        unit_money = 10 ** self.amount_scale
        frequency = (count - 1)[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            repeat_money = (money - first_money)[keep] / unit_money
            monetary = np.where(frequency > 0, repeat_money / np.maximum(frequency, 1), 0.0)
        cols = {
            "frequency": frequency.astype(np.float64),
            "recency": (last_p - first)[keep] / div,
            "T": (cal_last - first)[keep] / div,
            "monetary_value": monetary,
        }
        id_arr = self._id_array(ids)
        if not keep.all():
            id_arr = id_arr.filter(pa.array(keep))
        if hold_us is not None:
            cols = {f"{k}_cal": v for k, v in cols.items()}
            hc = h_count[keep]
            with np.errstate(divide="ignore", invalid="ignore"):
                hm = np.where(hc > 0, h_money[keep] / unit_money / np.maximum(hc, 1), 0.0)
            cols["frequency_holdout"] = hc.astype(np.float64)
            cols["monetary_value_holdout"] = hm
            cols["duration_holdout"] = np.full(len(hc), (last - cal_last) / div)
        table = pa.table({"customer_id": id_arr, **{k: pa.array(v) for k, v in cols.items()}})
        meta = {"rfmx.as_of": _us_to_iso(as_of_us), "rfmx.btyd.period": self.period, "rfmx.btyd.unit": unit,
                "rfmx.btyd.scale": repr(float(scale)), "rfmx.btyd.holdout_start": _us_to_iso(hold_us) or "",
                "rfmx.amount_scale": str(self.amount_scale), "rfmx.customer_column": self.columns.customer}
        return table.replace_schema_metadata(meta)

    # --- persistence --------------------------------------------------------------

    def to_table(self) -> pa.Table:
        """The raw state: the RFM state's columns plus ``periods`` and ``period_money``
        (list<int64>, one list per customer), with its metadata."""
        base = super().to_table()
        entry_offsets, periods, money = self._entries()
        offs = pa.array(entry_offsets.astype(np.int64))
        table = base.append_column("periods", pa.LargeListArray.from_arrays(offs, pa.array(periods)))
        table = table.append_column("period_money", pa.LargeListArray.from_arrays(offs, pa.array(money)))
        meta = json.loads(base.schema.metadata[b"rfmx.state"])
        meta.update(format=BTYD_STATE_FORMAT, version=BTYD_STATE_VERSION, period=self.period)
        return table.replace_schema_metadata({"rfmx.state": json.dumps(meta)})

    @classmethod
    def load(cls, path, *, threads: int | None = None) -> "BTYDState":
        """Read a state written by :meth:`save`; refuses other formats and versions."""
        path = Path(path)
        return cls._restored(read_state_file(path), path, "damaged state file", threads)

    @classmethod
    def from_table(cls, table: pa.Table, *, what="<state table>", threads: int | None = None) -> "BTYDState":
        """The state whose :meth:`to_table` is ``table`` (checked as :meth:`load` checks a
        file; ``what`` names it in errors): how partial BTYD states cross process boundaries
        as Arrow data (:mod:`rfmx.dask`)."""
        return cls._restored(table, what, "damaged state", threads)

    @classmethod
    def _restored(cls, table: pa.Table, where, damaged: str, threads: int | None) -> "BTYDState":
        meta = read_state_meta(where, table, BTYD_STATE_FORMAT, {"period": (str,)}, ("periods", "period_money"))
        if meta["period"] not in UNIT_DAYS:
            raise RfmxError(f"{where}: {damaged}: metadata 'period' is {meta['period']!r}")
        for name in ("periods", "period_money"):
            if table.schema.field(name).type != pa.large_list(pa.int64()):
                raise RfmxError(f"{where}: {damaged}: column '{name}' is {table.schema.field(name).type}, "
                                f"not large_list<int64>")
        c = meta["columns"]
        state = cls(c["customer"], c["time"], c["amount"], c["order_id"], period=meta["period"],
                    since=meta["since_us"], until=meta["until_us"], amount_scale=meta["amount_scale"],
                    threads=threads, timezone=meta["timezone"])
        ids = state._restore(meta, table, where)
        if ids is not None:
            plist = table.column("periods").combine_chunks()
            mlist = table.column("period_money").combine_chunks()
            if not plist.offsets.equals(mlist.offsets) or plist.values.null_count or mlist.values.null_count:
                raise RfmxError(f"{where}: {damaged}: columns 'periods' and 'period_money' do not match")
            # int64 already (no copy): every copy of a 61 M-entry list is 0.5 GB of fresh memory
            state._merge_entries(ids, np.asarray(plist.offsets).astype(np.int64, copy=False),
                                 np.asarray(plist.values).astype(np.int64, copy=False),
                                 np.asarray(mlist.values).astype(np.int64, copy=False))
        return state

    def __repr__(self) -> str:
        return (f"BTYDState({self.n_customers} customers, {self.n_periods} purchase periods ({self.period}), "
                f"{self.rows_read} rows read, columns={self.columns}, amount_scale={self.amount_scale})")


def summary(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount", *,
            as_of=None, since=None, holdout_start=None, period: str = "day", unit: str | None = None,
            scale: float = 1.0, amount_scale: int = 2, on_null: str = "error", threads: int | None = None,
            batch_size: int = 1 << 20, state: BTYDState | None = None, progress: bool = False,
            delimiter: str | None = None, timezone: str | None = None) -> pa.Table:
    """The BTYD summary (frequency, recency, T, monetary_value) of an order stream.

    ``source`` as for :func:`rfmx.aggregate` (paths, globs, Arrow objects); ``as_of``
    (exclusive; default: midnight after the latest line) ends the observation and
    ``since`` starts it; ``holdout_start`` splits calibration and holdout; ``period``,
    ``unit`` and ``scale`` as in :mod:`rfmx.clv.summary`.  Pass ``state`` (a
    :class:`BTYDState`, e.g. loaded from a file) to fold new orders into it.  Equals
    lifetimes' ``summary_data_from_transaction_data(..., freq='D' or 'W', freq_multiplier=scale)``
    with ``observation_period_end`` = the day before ``as_of``.
    """
    from ..api import build_state

    if state is not None and _period_name(period) != state.period:
        raise RfmxError(f"the state collapses purchases per {state.period}, not per {period}")
    own = state is None
    if own:
        state = BTYDState(customer, time, amount, period=period, since=since, until=as_of,
                          amount_scale=amount_scale, on_null=on_null, threads=threads, timezone=timezone)
    build_state(source, customer, time, amount, state.columns.order_id, state=state, on_null=on_null,
                threads=threads, batch_size=batch_size, progress=progress, delimiter=delimiter)
    if own:
        state.drop_index()  # nobody updates this state again: free the tables before the result
    return state.summary(as_of, holdout_start=holdout_start, unit=unit, scale=scale)


def rf_matrix(summary_table, *, column: str = "customers") -> pa.Table:
    """The recency/frequency matrix of a BTYD summary in opportunities, for BG/BB: one row per
    distinct ``(frequency, recency, n_periods)`` with the number of customers in ``column``
    (Fader, Hardie & Shang 2010's table; lifetimes' donations data has this form).

    Recency and T are converted to counts of the summary's period (the opportunity; see
    :func:`periods_per_unit`), so they must be whole periods; the ``_cal`` columns are used
    when present.  Rows are sorted by frequency, recency, n_periods.  Fit it with
    ``BGBB().fit(matrix, weights="customers")``; the metadata keeps the period.
    """
    from .models import compress, opportunities_from

    x, tx, n = opportunities_from(summary_table)
    px, ptx, pn, pw, _ = compress(x, tx, n)
    order = np.lexsort((pn, ptx, px))
    table = pa.table({"frequency": pa.array(px[order].astype(np.int64)),
                      "recency": pa.array(ptx[order].astype(np.int64)),
                      "n_periods": pa.array(pn[order].astype(np.int64)),
                      column: pa.array(pw[order].astype(np.int64))})
    period = periods_per_unit(summary_table)[0]
    meta = {"rfmx.btyd.period": period, "rfmx.btyd.unit": period, "rfmx.btyd.scale": "1.0"} if period else {}
    return table.replace_schema_metadata(meta or None)
