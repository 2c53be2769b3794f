"""The mergeable per-customer RFM state: ``update(batch)``, ``merge(other)``, ``finalize(as_of)``.

The state is the centre of rfmx.  It holds, per customer, one row of the fields declared in
:data:`rfmx.kernels.rfm.FIELDS` (exact integers: microseconds and minor money units), keyed
by the customer's original id through an exact partitioned hash index.  Every way of
splitting the work — record batches, threads, files, yesterday's increment, Dask
partitions — ends in the same :meth:`RFMState.merge`, and because every field is an
integer min, max or sum, the result is bit-identical however the input was split.

Memory grows with customers: per customer one 64-byte aggregate row, its id, and 16-32
bytes of hash table; order rows are never kept.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from .columns import (
    MAX_AMOUNT_SCALE,
    US_PER_DAY,
    ColumnMap,
    CustomerIds,
    _EMPTY_I64,
    amount_minor,
    check_columns,
    cost_minor,
    customer_ids,
    null_mask,
    order_ids,
    raise_on_nulls,
    source_row,
    time_us,
)
from .calendar import UTC, check_timezone, day_start, local_day, local_days, wall_to_instant
from .errors import RfmxError
from . import memory
from .memory import grow, release

__all__ = ["RFMState", "to_us", "STATE_FORMAT", "STATE_VERSION", "PROFIT_COLUMNS", "profit_columns"]

STATE_FORMAT = "rfmx-state"
STATE_VERSION = 3  # 2: the calendar's time zone ("timezone"); 3: the cost column and rows (versions 1 and 2 load)
#: state file versions this rfmx reads (1: UTC, no cost; 2: no cost)
STATE_VERSIONS = (1, 2, 3)
#: slots per partition an id table's reservation is sized for (70 % of it: 188 M customers)
_TABLE_RESERVED_SLOTS = 1 << 24
_GROUP = 64  # order lines whose memory loads the kernels issue together (measured best of 16-128)
_FIELD_NAMES = (
    "first_order_us", "last_order_us", "n_orders", "n_refunds",
    "gross_minor", "refunds_minor", "first_order_id", "last_order_id",
)
#: the cost rows' columns in a saved state (only with a cost column; see kernels.rfm.COST_FIELDS)
_COST_NAMES = ("cost_minor", "cost_returned_minor")


#: the columns a finalized table gains with a cost column (README "Profit and cost-to-serve")
PROFIT_COLUMNS = ("cost_total", "profit_total", "profit_minor", "margin_rate", "refund_rate", "refund_money_rate")


def profit_columns(id_array: pa.Array, net_minor: np.ndarray, gross: np.ndarray, refunds: np.ndarray,
                   n_orders: np.ndarray, n_refunds: np.ndarray, cost: np.ndarray, amount_scale: int) -> dict:
    """The :data:`PROFIT_COLUMNS` of customers with net money ``net_minor`` (minor units),
    ``gross``/``refunds`` money (currency units), order and refund-line counts and cost rows
    ``cost`` (N_COST_FIELDS, m).

    ``profit_minor = net_minor - (cost + returned cost)``, exact; a profit beyond int64 is
    an error naming the customer, never a wrapped number.  ``margin_rate = profit / net
    money`` (null when net money is 0), ``refund_rate = refund lines / orders`` (null
    without orders), ``refund_money_rate = -refund money / gross money`` (null when gross
    money is 0).
    """
    net_cost = cost[0] + cost[1]  # totals of opposite signs: the sum cannot leave int64
    profit = net_minor - net_cost
    # int64 arrays wrap silently: a wrapped difference moved the wrong way.
    wrapped = ((net_cost < 0) & (profit < net_minor)) | ((net_cost > 0) & (profit > net_minor))
    if wrapped.any():
        i = int(np.flatnonzero(wrapped)[0])
        raise RfmxError(f"the gross profit of customer {id_array[i].as_py()!r} (net money {net_minor[i]} minus cost "
                        f"{net_cost[i]}, minor units) leaves the exact range (±{money_limit(amount_scale)} at "
                        f"amount_scale {amount_scale})")
    unit = float(10 ** amount_scale)

    def ratio(num, den):
        ok = den != 0
        out = np.zeros(len(num), dtype=np.float64)
        np.divide(num, den, out=out, where=ok)
        return pa.array(out, mask=~ok)

    profit_money = profit / unit
    return {
        "cost_total": pa.array(net_cost / unit),
        "profit_total": pa.array(profit_money),
        "profit_minor": pa.array(profit),
        "margin_rate": ratio(profit.astype(np.float64), net_minor.astype(np.float64)),
        "refund_rate": ratio(n_refunds.astype(np.float64), n_orders.astype(np.float64)),
        "refund_money_rate": ratio(np.abs(refunds), gross),  # refunds <= 0; abs keeps 0 from being -0
    }


def to_us(value, timezone: str = UTC) -> int | None:
    """An instant as int64 microseconds since the epoch (UTC).

    Accepts None, ISO-8601 strings (``2024-03-01``, ``2024-03-01T12:00:00+02:00``),
    ``datetime.date``/``datetime.datetime`` (pandas Timestamps too), ``numpy.datetime64``
    and integers (already microseconds since the epoch).  A value without a zone (a date,
    a naive time) is a wall-clock time in ``timezone``; a date means midnight at its start
    (see :mod:`rfmx.calendar`).
    """
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.datetime64):
        return _wall(int(value.astype("datetime64[us]").astype(np.int64)), timezone)
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RfmxError(f"cannot parse {value!r} as an ISO-8601 date or time") from None
    if isinstance(value, _dt.datetime):
        zoned = value.tzinfo is not None
        if zoned:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        delta = value - _dt.datetime(1970, 1, 1)
        us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return us if zoned else _wall(us, timezone)
    if isinstance(value, _dt.date):
        return _wall((value - _dt.date(1970, 1, 1)).days * US_PER_DAY, timezone)
    raise RfmxError(f"cannot use {value!r} as a date or time")


def _wall(us: int, timezone: str) -> int:
    return us if timezone == UTC else int(wall_to_instant(np.array([us], dtype=np.int64), timezone)[0])


def _us_to_iso(us: int | None, timezone: str = UTC) -> str | None:
    """An instant as ISO-8601 text: as a naive UTC time, or with its offset in ``timezone``."""
    if us is None:
        return None
    utc = _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=int(us))
    if timezone == UTC:
        return utc.isoformat()
    import zoneinfo

    return utc.replace(tzinfo=_dt.timezone.utc).astimezone(zoneinfo.ZoneInfo(timezone)).isoformat()


def read_state_file(path: Path) -> pa.Table:
    """The table of a saved state file (Arrow IPC), with one-line errors for missing or bad files."""
    try:
        with pa.memory_map(str(path)) as f:
            return pa.ipc.open_file(f).read_all()
    except FileNotFoundError:
        raise RfmxError(f"{path}: state file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise RfmxError(f"{path}: not an rfmx state file (Arrow IPC): {exc}") from None


def money_limit(amount_scale: int) -> str:
    """The largest exact money total, in currency units, as text: ``(2**63 - 1) / 10**scale``."""
    from decimal import Decimal

    return f"{Decimal(2**63 - 1).scaleb(-int(amount_scale)):,}"


def _describe_id(ids: CustomerIds, i: int) -> str:
    """Customer ``i`` of ``ids`` as a user wrote it, for messages."""
    if ids.kind == "int":
        v = int(ids.ints[i])
        return str(v + 2**64 if v < 0 and ids.arrow_type == pa.uint64() else v)
    raw = bytes(ids.data[ids.offsets[i]: ids.offsets[i + 1]])
    try:
        return repr(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(raw)


# Every key a saved state's metadata has, with the JSON types it may take.
_META_KEYS = {
    "columns": (dict,), "amount_scale": (int,), "since_us": (int, type(None)), "until_us": (int, type(None)),
    "time_zone": (str, type(None)), "id_type": (str, type(None)), "id_kind": (str, type(None)),
    "rows_read": (int,), "rows_null_skipped": (int,), "rows_outside_window": (int,),
    "max_time_us": (int, type(None)),
}
_COUNTERS = ("rows_read", "rows_null_skipped", "rows_outside_window")
# Per saved field, the values save() can have written: counts and gross money >= 0, refunds <= 0.
_FIELD_RANGES = {"n_orders": (0, None), "n_refunds": (0, None), "gross_minor": (0, None), "refunds_minor": (None, 0),
                 "cost_minor": (0, None), "cost_returned_minor": (None, 0)}


def read_state_meta(path, table: pa.Table, fmt: str, extra_keys: dict | None = None,
                    extra_columns: tuple = ()) -> dict:
    """The metadata of a saved state file (format ``fmt``, a version of :data:`STATE_VERSIONS`), checked.

    Each way a file can be damaged or foreign is a one-line error naming the file and what
    is wrong: metadata that is not JSON, a missing key or a value of the wrong type, a
    missing column or one of the wrong type, nulls, values that no saved state holds.
    Version 1 (before states recorded their time zone) reads as UTC; versions before 3
    have no cost column (``columns["cost"]`` reads as None).  With a cost column the cost
    rows' columns are checked as the other fields are.
    """
    raw = (table.schema.metadata or {}).get(b"rfmx.state")
    if raw is None:
        raise RfmxError(f"{path}: not an rfmx state file (no 'rfmx.state' metadata)")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RfmxError(f"{path}: damaged state file: its metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise RfmxError(f"{path}: damaged state file: its metadata is not a JSON object")
    if meta.get("format") != fmt or meta.get("version") not in STATE_VERSIONS:
        raise RfmxError(f"{path}: state format {meta.get('format')!r} version {meta.get('version')!r}; "
                        f"this rfmx reads {fmt!r} versions {', '.join(map(str, STATE_VERSIONS))}")
    keys = dict(_META_KEYS, **(extra_keys or {}))
    if meta["version"] >= 2:
        keys["timezone"] = (str,)
    for key, kinds in keys.items():
        if key not in meta:
            raise RfmxError(f"{path}: damaged state file: its metadata lacks '{key}'")
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise RfmxError(f"{path}: damaged state file: metadata '{key}' is {value!r}")
    c = meta["columns"]
    if not (all(isinstance(c.get(k), str) for k in ("customer", "time", "amount"))
            and isinstance(c.get("order_id"), (str, type(None))) and isinstance(c.get("cost"), (str, type(None)))):
        raise RfmxError(f"{path}: damaged state file: metadata 'columns' is {c!r}")
    c.setdefault("cost", None)
    if c["cost"] is not None:
        extra_columns = tuple(extra_columns) + _COST_NAMES
    bad = [k for k in _COUNTERS if meta[k] < 0]
    if bad or not 0 <= meta["amount_scale"] <= 18 or meta["id_kind"] not in (None, "int", "bytes"):
        key = bad[0] if bad else ("amount_scale" if not 0 <= meta["amount_scale"] <= 18 else "id_kind")
        raise RfmxError(f"{path}: damaged state file: metadata '{key}' is {meta[key]!r}")
    rounded = meta.setdefault("amounts_rounded", 0)  # absent in states saved before it was kept
    if isinstance(rounded, bool) or not isinstance(rounded, int) or rounded < 0:
        raise RfmxError(f"{path}: damaged state file: metadata 'amounts_rounded' is {rounded!r}")
    try:
        meta["timezone"] = check_timezone(meta.get("timezone", UTC)) if meta["version"] >= 2 else UTC
    except RfmxError as exc:
        raise RfmxError(f"{path}: damaged state file: metadata 'timezone': {exc}") from None
    if meta["id_kind"] is None and table.num_rows:
        raise RfmxError(f"{path}: damaged state file: {table.num_rows} customers but no id type in its metadata")
    for name in ("customer_id",) + _FIELD_NAMES + tuple(extra_columns):
        if table.schema.get_field_index(name) < 0:
            raise RfmxError(f"{path}: damaged state file: column '{name}' is missing")
        col = table.column(name)
        if col.null_count:
            raise RfmxError(f"{path}: damaged state file: column '{name}' has {col.null_count} null value(s)")
        if (name in _FIELD_NAMES or name in _COST_NAMES) and col.type != pa.int64():
            raise RfmxError(f"{path}: damaged state file: column '{name}' is {col.type}, not int64")
    if table.num_rows:
        import pyarrow.compute as pc

        for name, (lo, hi) in _FIELD_RANGES.items():
            if table.schema.get_field_index(name) < 0:
                continue  # cost rows: checked present above when the state has a cost column
            mm = pc.min_max(table.column(name)).as_py()
            if (lo is not None and mm["min"] < lo) or (hi is not None and mm["max"] > hi):
                raise RfmxError(f"{path}: damaged state file: column '{name}' holds values from {mm['min']} to "
                                f"{mm['max']}, outside what a state can hold")
    return meta


def _next_pow2(x: int) -> int:
    return 1 << max(int(x) - 1, 1).bit_length()


class _Converted:
    """One batch, validated and converted by :meth:`RFMState._convert`, waiting to be folded."""

    __slots__ = ("rows", "nulls_skipped", "outside", "rounded", "latest", "tz", "ids", "empty", "lines", "hashed",
                 "row0", "cost")

    def __init__(self, rows: int):
        self.rows = rows            # lines offered
        self.nulls_skipped = 0      # dropped for nulls (on_null="skip")
        self.outside = 0            # outside the window
        self.rounded = 0            # amounts rounded to the money scale (rounding asked for)
        self.latest = None          # latest kept time (us)
        self.tz = None
        self.ids = None             # CustomerIds of the lines (after null filtering)
        self.empty = False          # no line after null filtering
        self.lines = None           # (ids, time_us, amount_minor, order_id, keep); None: nothing kept
        self.hashed = None          # RFMState._hash(ids)
        self.row0 = 0               # source row of the first line, or of every line once some were dropped
        self.cost = None            # (m, N_COST_FIELDS) cost by sign per line (with a cost column)


class RFMState:
    """Per-customer RFM aggregates of an order stream; mergeable, saveable, exact.

    Parameters
    ----------
    customer, time, amount, order_id:
        Input column names.  Without ``order_id`` every non-refund line is an order; with
        it, the lines of one order count once (see README "Order counting").
    since, until:
        Optional window ``[since, until)``; lines outside it are skipped (and counted).
    amount_scale:
        Decimals kept for money (2: cents).  Totals are exact integers in these units.
    on_null:
        ``"error"`` (default) raises on a null customer, time or amount; ``"skip"`` drops
        those rows and counts them in :attr:`rows_null_skipped`.
    threads:
        Numba threads for the kernels (None: Numba's setting, all cores by default).
    timezone:
        IANA time zone of the business's calendar (default ``UTC``): which day an order
        falls on, and what times without a zone (naive timestamps, dates, a bare ``since``
        or ``as_of`` date) mean.  See :mod:`rfmx.calendar`.
    cost:
        Optional column of each line's cost (money, parsed exactly as the amount).  The
        state then also keeps each customer's cost total, and :meth:`finalize` adds gross
        profit, margin and refund rates (README "Profit and cost-to-serve").

    Amounts with non-zero digits beyond ``amount_scale`` are refused unless
    :attr:`rounding` is ``"half-even"`` or ``"half-up"`` (``build_state(round=...)`` sets
    it); rounded values are counted in :attr:`amounts_rounded`.
    """

    def __init__(self, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
                 order_id: str | None = None, *, since=None, until=None, amount_scale: int = 2,
                 on_null: str = "error", threads: int | None = None, timezone: str | None = None,
                 cost: str | None = None):
        if on_null not in ("error", "skip"):
            raise RfmxError(f"on_null must be 'error' or 'skip', got {on_null!r}")
        if not 0 <= int(amount_scale) <= MAX_AMOUNT_SCALE:
            raise RfmxError(f"amount_scale must be between 0 and {MAX_AMOUNT_SCALE}, got {amount_scale}")
        self.columns = ColumnMap(customer, time, amount, order_id, cost)
        self.amount_scale = int(amount_scale)
        self.timezone = check_timezone(timezone)
        self.since_us = to_us(since, self.timezone)
        self.until_us = to_us(until, self.timezone)
        if self.since_us is not None and self.until_us is not None and self.since_us >= self.until_us:
            raise RfmxError(f"since ({_us_to_iso(self.since_us)}) must be before until/as_of ({_us_to_iso(self.until_us)})")
        self.on_null = on_null
        self.threads = threads
        self.time_zone: str | None = None
        self.id_type: pa.DataType | None = None
        # Integer ids are kept as int64 bit patterns, so uint64 ids of 2**63 and up share
        # their patterns with negative int64 ids: once such ids are in, negative ones are
        # refused (and the other way round) instead of two customers becoming one.
        self._ids_above_int64 = False
        self.rows_read = 0            # rows offered to update()
        self.rows_loaded = 0          # of them, rows read by the runs that made a loaded state
        self.customers_loaded = 0     # customers of the loaded state
        self.rows_null_skipped = 0    # dropped for nulls (on_null="skip")
        self.rows_outside_window = 0  # outside [since, until)
        self.rounding: str | None = None  # None: refuse amounts finer than amount_scale
        self.amounts_rounded = 0      # amounts rounded to amount_scale (with a rounding)
        self.max_time_us: int | None = None  # latest line (order or refund) kept
        self._consumed = False
        self._kind: str | None = None
        self._init_arrays(None)

    # --- storage ------------------------------------------------------------------

    def _init_arrays(self, kind: str | None) -> None:
        from .kernels.customers import N_PARTITIONS
        from .kernels.rfm import new_aggregates

        self._kind = kind
        self._n = np.zeros(N_PARTITIONS, dtype=np.int64)
        self._ncap = 256
        self._table = np.zeros((N_PARTITIONS, 1024, 2), dtype=np.int64)
        self._agg = new_aggregates((N_PARTITIONS, self._ncap))
        self._keys = np.empty((N_PARTITIONS, self._ncap), dtype=np.int64)
        self._key_offsets = np.zeros((N_PARTITIONS, self._ncap + 1), dtype=np.int64)
        self._key_data = np.empty((N_PARTITIONS, 4096 if kind == "bytes" else 1), dtype=np.uint8)
        self._nbytes = np.zeros(N_PARTITIONS, dtype=np.int64)
        self._cost = self._new_cost(self._ncap) if self.columns.cost else None

    def _new_cost(self, capacity: int) -> np.ndarray:
        """Zeroed cost rows (P, capacity, N_COST_FIELDS): a customer's row is zero until its
        first cost is added, so rows past the customers must stay zero (unlike ``_agg``'s,
        which the kernels initialize on insert)."""
        from .kernels.rfm import N_COST_FIELDS

        return np.zeros((len(self._n), capacity, N_COST_FIELDS), dtype=np.int64)

    def _grow_cost(self) -> None:
        """Give the cost rows the aggregate rows' capacity (after ``_agg`` grew)."""
        if self._cost is not None and self._cost.shape[1] != self._agg.shape[1]:
            new = self._new_cost(self._agg.shape[1])
            new[:, : self._cost.shape[1]] = self._cost
            self._cost = new

    def _reserve(self, incoming: np.ndarray, incoming_bytes: np.ndarray | None) -> None:
        """Make room for ``incoming`` new customers (and bytes) per partition."""
        from .kernels.customers import MAX_ARENA_BYTES, rehash_bytes, rehash_int64

        need = int((self._n + incoming).max())
        if need > self._ncap:
            # Grow at least 4x, into uninitialized memory: rows of new customers are
            # initialized by the kernels on insert, so only rows in use are copied and the
            # rest is never touched here.  Big states land in a reservation (see
            # rfmx.memory) and never move again.
            cap = max(need, 4 * self._ncap)
            self._agg = grow(self._agg, self._n, cap)
            if self._kind == "int":
                self._keys = grow(self._keys, self._n, self._agg.shape[1])
            else:
                self._key_offsets = grow(self._key_offsets, self._n, self._agg.shape[1] + 1, extra=1)
            self._ncap = self._agg.shape[1]
            self._grow_cost()
        if incoming_bytes is not None:
            bneed = int((self._nbytes + incoming_bytes).max())
            if bneed >= MAX_ARENA_BYTES:
                raise RfmxError(f"customer ids of over {MAX_ARENA_BYTES // 2**30} GiB in one of {len(self._n)} id "
                                f"partitions (~{len(self._n) * MAX_ARENA_BYTES // 2**30} GiB in all): too many or too "
                                f"long string ids; aggregate parts of the input apart or use integer ids")
            if bneed > self._key_data.shape[1]:
                self._key_data = grow(self._key_data, self._nbytes, max(bneed, 4 * self._key_data.shape[1]),
                                      reserve_rows=32 * memory.RESERVED_ROWS)  # id bytes
        # Tables are kept at most 70 % full.  At most half full, 10 M customers needed 32 M
        # slots (512 MB); at 70 % they fit 16 M (one doubling and 256 MB less: peak RSS
        # 1.91 -> 1.65 GB there), and a probe still reads one or two cache lines.
        slots = _next_pow2(-(-10 * need // 7))
        if self._table is None or slots > self._table.shape[1]:
            slots = max(slots, 1024)
            self._table = self._empty_table("_table", (len(self._n), slots, 2), _TABLE_RESERVED_SLOTS)
            if self._kind == "int":
                rehash_int64(self._keys, self._n, self._table)
            else:
                rehash_bytes(self._key_offsets, self._key_data, self._n, self._table)

    def _empty_table(self, attr: str, shape: tuple, reserve_slots: int) -> np.ndarray:
        """An all-zero hash table to replace ``self.<attr>``: a rehash fills it from the
        stored keys and never reads the old table, so the new one takes the old one's
        memory where it can (rfmx.memory.regrow_table); else the old one is freed first."""
        table = memory.regrow_table(getattr(self, attr), shape)
        if table is None:
            setattr(self, attr, None)
            table = memory.new_table(shape, reserve_slots)
        return table

    def _adopt_ids(self, ids: CustomerIds, where: str, row_of=None) -> None:
        """Check ``ids`` against the ids already in the state and widen the output id type.

        Integer ids of any width and signedness mix exactly: one type is kept as it is,
        mixed types become int64, or uint64 once ids beyond int64 appear.  Refused, before
        anything is folded: string ids after integer ids (or the other way round), and
        negative ids beside uint64 ids of 2**63 and up (no 64-bit type holds both, and their
        bit patterns would alias).  ``row_of(i)`` gives the source row of id ``i`` (None:
        ids of a merged or loaded state).
        """
        if self._kind is not None and ids.kind != self._kind:
            raise RfmxError(
                f"{where}: column '{self.columns.customer}' (customer id) has type {ids.arrow_type} "
                f"but earlier input had {self.id_type}; customer ids must be all integers or all strings"
            )
        if ids.kind == "int":
            self._check_int_ids(ids, where, row_of)
        if self._kind is None:
            self._init_arrays(ids.kind)
            self.id_type = ids.arrow_type
        elif ids.arrow_type != self.id_type and ids.kind == "int":
            self.id_type = pa.uint64() if self._ids_above_int64 else pa.int64()

    def _check_int_ids(self, ids: CustomerIds, where: str, row_of) -> None:
        unsigned = ids.arrow_type == pa.uint64()
        if not (unsigned or self._ids_above_int64):
            return  # the common case: no pass over the ids
        # In the int64 view a uint64 id of 2**63 and up is negative, as a negative id is.
        negative = np.flatnonzero(ids.ints < 0)
        if not len(negative):
            return
        i = int(negative[0])
        at = f" at row {row_of(i)}" if row_of is not None else ""
        if unsigned and not self._ids_above_int64:
            if self._kind == "int" and self.n_customers and self._has_negative_ids():
                raise RfmxError(
                    f"{where}: column '{self.columns.customer}' (customer id) value {_describe_id(ids, i)}{at} is "
                    f"above int64's range, but earlier input has negative ids: no 64-bit integer type holds both "
                    f"exactly; give the ids as strings")
            self._ids_above_int64 = True
        elif not unsigned:
            raise RfmxError(
                f"{where}: column '{self.columns.customer}' (customer id) value {_describe_id(ids, i)}{at} is "
                f"negative, but earlier input has uint64 ids above int64's range: no 64-bit integer type holds "
                f"both exactly; give the ids as strings")

    def _has_negative_ids(self) -> bool:
        return any(bool((self._keys[p, : self._n[p]] < 0).any()) for p in range(len(self._n)))

    @staticmethod
    def _hash(ids: CustomerIds) -> tuple:
        """``(hashes, new lines per partition, new id bytes per partition or None)`` of ``ids``."""
        from .kernels import customers as kc

        hashes = np.empty(len(ids), dtype=np.int64)
        incoming = np.zeros(kc.N_PARTITIONS, dtype=np.int64)
        incoming_bytes = None
        if ids.kind == "int":
            kc.hash_int64(ids.ints, kc.PARTITION_BITS, hashes, incoming)
        else:
            incoming_bytes = np.zeros(kc.N_PARTITIONS, dtype=np.int64)
            kc.hash_bytes(ids.offsets, ids.data, kc.PARTITION_BITS, hashes, incoming, incoming_bytes)
        return hashes, incoming, incoming_bytes

    def _hash_and_reserve(self, ids: CustomerIds, hashed: tuple | None = None) -> np.ndarray:
        """Hashes of ``ids`` (computed here unless ``hashed`` by :meth:`_hash`), with room made for them."""
        hashes, incoming, incoming_bytes = hashed if hashed is not None else self._hash(ids)
        self._reserve(incoming, incoming_bytes)
        return hashes

    # --- the three operations -----------------------------------------------------

    def update(self, batch, *, source: str = "<batch>", row0: int = 0) -> "RFMState":
        """Fold a ``pyarrow.RecordBatch`` (or Table) of order lines into the state.

        ``source`` and ``row0`` (the batch's first row number in its source) only make
        error messages point at the right file and row.
        """
        self._check_usable()
        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self.update(b, source=source, row0=row0)
                row0 += b.num_rows
            return self
        self._apply(self._convert(batch, source, row0), source)
        return self

    def _convert(self, batch: pa.RecordBatch, source: str, row0: int) -> "_Converted":
        """Validate, convert and hash a batch, without changing the state.

        Reads only the state's settings (columns, window, scale, null policy); raises on
        bad input, naming ``source`` and the row.  (Running it on a helper thread a batch
        ahead of :meth:`_apply` was measured: no gain on 2 cores, which the kernels and
        Arrow's decoder already keep busy.)
        """
        cols = self.columns
        check_columns(batch.schema, cols, source)
        conv = _Converted(batch.num_rows)
        valid, null_counts = null_mask(batch, cols)
        if null_counts:
            if self.on_null == "error":
                raise_on_nulls(batch, cols, source, row0)
            batch = batch.filter(pa.array(valid))
            conv.nulls_skipped = int(len(valid) - valid.sum())
            row0 = row0 + np.flatnonzero(valid)  # source row of each kept line, for error messages
        conv.ids = customer_ids(batch.column(cols.customer), source, cols.customer)
        if batch.num_rows == 0:
            conv.empty = True
            return conv
        t, conv.tz = time_us(batch.column(cols.time), source, cols.time, row0, self.timezone)
        if conv.tz is None and self.timezone != UTC:
            t = wall_to_instant(t, self.timezone)  # naive times and dates are the business's wall clock
        amt, rounded = amount_minor(batch.column(cols.amount), self.amount_scale, source, cols.amount, row0,
                                         rounding=self.rounding)
        conv.rounded += rounded
        oid = order_ids(batch.column(cols.order_id), source, cols.order_id) if cols.order_id else _EMPTY_I64
        if cols.cost:
            from .kernels.rfm import N_COST_FIELDS, split_cost

            cst, rounded = cost_minor(batch.column(cols.cost), self.amount_scale, source, cols.cost, row0,
                                      rounding=self.rounding)
            conv.rounded += rounded
            conv.cost = np.empty((len(cst), N_COST_FIELDS), dtype=np.int64)
            split_cost(cst, conv.cost)
        keep = np.empty(0, dtype=np.bool_)
        if self.since_us is not None or self.until_us is not None:
            keep = np.ones(len(t), dtype=np.bool_)
            if self.since_us is not None:
                keep &= t >= self.since_us
            if self.until_us is not None:
                keep &= t < self.until_us
            kept = int(keep.sum())
            conv.outside = len(t) - kept
            if kept == 0:
                return conv
            conv.latest = int(t[keep].max())
        else:
            conv.latest = int(t.max())
        conv.lines = (conv.ids, t, amt, oid, keep)
        conv.hashed = self._hash(conv.ids)
        conv.row0 = row0
        return conv

    def _apply(self, conv: "_Converted", source: str) -> None:
        """Fold a converted batch into the state: counters, id type, then the kernels."""
        self.rows_read += conv.rows
        self.rows_null_skipped += conv.nulls_skipped
        if conv.empty:
            # An empty batch only tells the id type, and a column of nulls (a header-only
            # CSV) not even that.
            if self._kind is None and not pa.types.is_null(conv.ids.arrow_type):
                self._adopt_ids(conv.ids, source)
            return
        self._adopt_ids(conv.ids, source, lambda i: source_row(conv.row0, i))
        if conv.tz is not None and self.time_zone is None:
            self.time_zone = conv.tz
        self.rows_outside_window += conv.outside
        self.amounts_rounded += conv.rounded
        if conv.lines is None:
            return
        self.max_time_us = conv.latest if self.max_time_us is None else max(self.max_time_us, conv.latest)
        wrapped = self._fold(*conv.lines, hashed=conv.hashed)
        self._refuse_wrapped(wrapped, conv.ids, lambda r, customer: (
            f"{source}: column '{self.columns.amount}' (amount): the money total of customer "
            f"{customer} leaves the exact range at row {source_row(conv.row0, r)}"))
        if conv.cost is not None:
            ids, keep = conv.lines[0], conv.lines[4]
            wrapped = self._fold_cost(ids, conv.hashed[0], conv.cost, keep)
            self._refuse_wrapped(wrapped, ids, lambda r, customer: (
                f"{source}: column '{self.columns.cost}' (cost): the cost total of customer "
                f"{customer} leaves the exact range at row {source_row(conv.row0, r)}"))

    def _fold_cost(self, ids: CustomerIds, hashes: np.ndarray, values: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Add cost rows ``values`` (one per line or per customer of ``ids``, customers the
        state already holds) to the customers' cost totals; per worker, the first row whose
        total left int64, or -1."""
        from .kernels._policy import threads
        from .kernels.customers import PARTITION_BITS
        from .kernels.rfm import cost_fold_partitioned_bytes, cost_fold_partitioned_int64

        self._grow_cost()
        with threads(self.threads) as n_workers:
            wrapped = np.empty(n_workers, dtype=np.int64)
            if ids.kind == "int":
                cost_fold_partitioned_int64(ids.ints, hashes, values, keep, n_workers, PARTITION_BITS, _GROUP,
                                            self._table, self._keys, self._n, self._cost, wrapped)
            else:
                cost_fold_partitioned_bytes(ids.offsets, ids.data, hashes, values, keep, n_workers, PARTITION_BITS,
                                            _GROUP, self._table, self._key_offsets, self._key_data, self._n,
                                            self._nbytes, self._cost, wrapped)
        return wrapped

    def _fold(self, ids: CustomerIds, t: np.ndarray, amt: np.ndarray, oid: np.ndarray, keep: np.ndarray,
              hashed: tuple | None = None) -> np.ndarray:
        """Run the aggregation kernel over converted lines; per worker, the first line whose
        money total left int64, or -1 (see :meth:`_refuse_wrapped`)."""
        from .kernels._policy import threads
        from .kernels.customers import PARTITION_BITS
        from .kernels.rfm import rfm_update_partitioned_bytes, rfm_update_partitioned_int64

        hashes = self._hash_and_reserve(ids, hashed)
        with threads(self.threads) as n_workers:
            wrapped = np.empty(n_workers, dtype=np.int64)
            if ids.kind == "int":
                rfm_update_partitioned_int64(
                    ids.ints, hashes, t, amt, oid, keep, n_workers, PARTITION_BITS, _GROUP,
                    self._table, self._keys, self._n, self._agg, wrapped)
            else:
                rfm_update_partitioned_bytes(
                    ids.offsets, ids.data, hashes, t, amt, oid, keep, n_workers, PARTITION_BITS, _GROUP,
                    self._table, self._key_offsets, self._key_data, self._n, self._nbytes, self._agg, wrapped)
        return wrapped

    def _refuse_wrapped(self, wrapped: np.ndarray, ids: CustomerIds, message) -> None:
        """Raise if a kernel reported a money total that left int64 (``wrapped``: per worker,
        the first such line or row, -1 for none), and keep the state from being used again.

        Totals are exact int64 minor units; a total beyond them would wrap to a plausible
        wrong number, so the state that holds it is unusable from here on.  ``message(r)``
        gives the start of the error for line ``r`` and the customer's id as text.
        """
        hit = wrapped[wrapped >= 0]
        if not len(hit):
            return
        r = int(hit.min())  # each worker reports its first; the smallest is the first in input order
        hint = "; aggregate with a smaller amount_scale (--amount-scale)" if self.amount_scale else ""
        text = (f"{message(r, _describe_id(ids, r))} (exact money totals reach "
                f"±{money_limit(self.amount_scale)} at amount_scale {self.amount_scale}){hint}")
        self._broken = text
        raise RfmxError(text)

    def _check_usable(self) -> None:
        if getattr(self, "_consumed", False):
            raise RfmxError("this state was consumed by finalize(consume=True) and holds no customers any more")
        broken = getattr(self, "_broken", None)
        if broken:
            raise RfmxError(f"this state cannot be used: {broken}")

    def _check_compatible(self, other: "RFMState", what: str) -> None:
        mine = (self.columns, self.amount_scale, self.since_us, self.until_us, self.timezone)
        theirs = (other.columns, other.amount_scale, other.since_us, other.until_us, other.timezone)
        if mine != theirs:
            raise RfmxError(
                f"{what} was made with columns={other.columns}, amount_scale={other.amount_scale}, "
                f"window=[{_us_to_iso(other.since_us)}, {_us_to_iso(other.until_us)}), timezone={other.timezone} "
                f"but this state has columns={self.columns}, amount_scale={self.amount_scale}, "
                f"window=[{_us_to_iso(self.since_us)}, {_us_to_iso(self.until_us)}), timezone={self.timezone}"
            )
        if self._kind and other._kind and self._kind != other._kind:
            raise RfmxError(f"{what} has customer ids of type {other.id_type} but this state has {self.id_type}; "
                            f"customer ids must be all integers or all strings")

    def merge(self, other: "RFMState", *, what: str = "the other state") -> "RFMState":
        """Fold ``other`` into this state (in place; returns self).

        Exact, associative and commutative in every field; ``other``'s lines are taken to
        come after this state's only to count an order whose lines straddle both once.
        """
        self._check_usable()
        other._check_usable()
        self._check_compatible(other, what)
        ids = rows = None
        if other._kind is not None:
            ids, rows = other._flat()
            self._adopt_ids(ids, what)  # refuses ids that cannot mix before anything changes
        self.rows_read += other.rows_read
        self.rows_null_skipped += other.rows_null_skipped
        self.rows_outside_window += other.rows_outside_window
        self.amounts_rounded += other.amounts_rounded
        if other.max_time_us is not None:
            self.max_time_us = other.max_time_us if self.max_time_us is None else max(self.max_time_us, other.max_time_us)
        if self.time_zone is None:
            self.time_zone = other.time_zone
        if ids is not None:
            self._merge_rows(ids, rows, what, other._flat_cost())
        return self

    def _flat_cost(self) -> np.ndarray | None:
        """The cost rows (m, N_COST_FIELDS) in :meth:`_flat`'s customer order (None: no cost column)."""
        if self._cost is None:
            return None
        n = self._n
        return np.concatenate([self._cost[p, : n[p]] for p in range(len(n))])

    def _merge_rows(self, ids: CustomerIds, rows: np.ndarray, what: str, cost_rows: np.ndarray | None = None) -> None:
        from .kernels._policy import threads
        from .kernels.customers import PARTITION_BITS
        from .kernels.rfm import rfm_merge_partitioned_bytes, rfm_merge_partitioned_int64

        if len(ids) == 0:
            return
        hashes = self._hash_and_reserve(ids)
        has_oid = self.columns.order_id is not None
        with threads(self.threads) as n_workers:
            wrapped = np.empty(n_workers, dtype=np.int64)
            if ids.kind == "int":
                rfm_merge_partitioned_int64(ids.ints, hashes, rows, has_oid, n_workers, PARTITION_BITS, _GROUP,
                                            self._table, self._keys, self._n, self._agg, wrapped)
            else:
                rfm_merge_partitioned_bytes(ids.offsets, ids.data, hashes, rows, has_oid, n_workers,
                                            PARTITION_BITS, _GROUP, self._table, self._key_offsets, self._key_data,
                                            self._n, self._nbytes, self._agg, wrapped)
        self._refuse_wrapped(wrapped, ids, lambda r, customer: (
            f"{what}: merged, the money total of customer {customer} leaves the exact range"))
        if cost_rows is not None:
            wrapped = self._fold_cost(ids, hashes, cost_rows, np.empty(0, dtype=np.bool_))
            self._refuse_wrapped(wrapped, ids, lambda r, customer: (
                f"{what}: merged, the cost total of customer {customer} leaves the exact range"))

    def drop_index(self) -> None:
        """Free the id → customer hash table (a quarter of the state's memory).

        Finalizing does not need it, so ``finalize(consume=True)`` (the one-call API's)
        drops it before building the result; a later update or merge rebuilds it from
        the stored ids.
        """
        self._table = None

    def _threads(self):
        from .kernels._policy import threads

        return threads(self.threads)

    @property
    def n_customers(self) -> int:
        return int(self._n.sum())

    def _flat(self, with_rows: bool = True) -> tuple[CustomerIds, np.ndarray | None]:
        """Customers in partition order, first appearance within a partition."""
        n = self._n
        rows = None
        if with_rows:
            rows = np.concatenate([self._agg[p, : n[p]] for p in range(len(n))]) if self._kind else \
                np.empty((0, self._agg.shape[-1]), dtype=np.int64)
        if self._kind == "int":
            ints = np.concatenate([self._keys[p, : n[p]] for p in range(len(n))])
            return CustomerIds("int", self.id_type, ints=ints), rows
        if self._kind is None:
            return CustomerIds("int", pa.int64(), ints=_EMPTY_I64), rows
        lengths = np.concatenate([np.diff(self._key_offsets[p, : n[p] + 1]) for p in range(len(n))])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.concatenate([self._key_data[p, : self._nbytes[p]] for p in range(len(n))])
        if len(data) == 0:
            data = np.zeros(1, np.uint8)
        return CustomerIds("bytes", self.id_type, offsets=offsets, data=data), rows

    def _id_array(self, ids: CustomerIds) -> pa.Array:
        if ids.kind == "int":
            t = self.id_type or pa.int64()
            if t == pa.uint64():
                return pa.array(ids.ints.view(np.uint64))
            return pa.array(ids.ints).cast(t)
        t = self.id_type
        textual = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        big = pa.large_string() if textual else pa.large_binary()
        arr = pa.Array.from_buffers(big, len(ids), [None, pa.py_buffer(ids.offsets), pa.py_buffer(ids.data)])
        try:
            return arr.cast(t)
        except (pa.ArrowInvalid, pa.ArrowCapacityError):
            return arr  # over 2 GiB of ids: keep the 64-bit-offset type

    def finalize(self, as_of=None, *, consume: bool = False) -> pa.Table:
        """The per-customer RFM table as of ``as_of`` (see README "Definitions").

        ``as_of`` defaults to the state's ``until`` if it has one, else midnight after the
        latest line (in the state's time zone).  Columns: ``customer_id``, ``first_order``,
        ``last_order``, ``recency_days``, ``tenure_days`` (whole calendar days from the day
        of the last/first order to the ``as_of`` day, in the state's time zone),
        ``n_orders``, ``n_refunds``, ``monetary_total``, ``monetary_minor``,
        ``avg_order_value``, ``gross_total``, ``refunds_total``.  Customers with refunds but
        no order in the window have null times and recency.  With a cost column, the
        profit columns of :data:`PROFIT_COLUMNS` follow (README "Profit and cost-to-serve").

        ``consume=True`` hands the state's memory back partition by partition while the
        result is built, so the state and the result are never in memory together (peak
        memory ~ the larger of the two, not their sum); the state cannot be used after.
        """
        from .kernels import rfm as k

        self._check_usable()
        as_of_us = self.resolve_as_of(as_of)
        as_of_day = local_day(as_of_us, self.timezone) if as_of_us is not None else 0
        if consume:
            # Finalizing never probes the id table: its pages, freed first, are the ones the
            # result's columns fault in next (recycled pages cost a fraction of fresh ones
            # here; 1e8 lines, 7.2 M customers: finalize 0.45 -> 0.12 s, peak 1.37 -> 1.22 GB).
            self.drop_index()
            self._consumed = True  # from here on the state is being taken apart
        m = self.n_customers
        ids, _ = self._flat(with_rows=False)
        if consume:
            self._keys = self._key_offsets = self._key_data = None  # copied into ``ids``
        ints = np.empty((7, m), dtype=np.int64)
        floats = np.empty((4, m), dtype=np.float64)
        has_orders = np.empty(m, dtype=np.bool_)
        cost = self._cost_columns()
        if consume:
            self._cost = None
        if self._kind is not None:
            P = len(self._n)
            with self._threads() as n_workers:
                # Consuming, a few partitions at a time (one per worker): the pages of
                # finished partitions are returned before the next ones' output is written,
                # and the output reuses them.
                step = max(1, n_workers) if consume else P
                for lo in range(0, P, step):
                    hi = min(P, lo + step)
                    k.rfm_finalize_partitioned(self._agg, self._n, lo, hi, as_of_day, US_PER_DAY,
                                               float(10 ** self.amount_scale), ints, floats, has_orders)
                    if consume:
                        for p in range(lo, hi):
                            release(self._agg, p)
        if consume:
            self._agg = None
        return self._result_table(self._id_array(ids), ints, floats, has_orders, as_of_us, cost)

    def _cost_columns(self) -> np.ndarray | None:
        """The cost rows as columns (N_COST_FIELDS, m), customers as :meth:`_flat` lays them out."""
        if self._cost is None:
            return None
        from .kernels.rfm import N_COST_FIELDS, cost_fields_partitioned

        out = np.zeros((N_COST_FIELDS, self.n_customers), dtype=np.int64)
        if self._kind is not None:
            with self._threads():
                cost_fields_partitioned(self._cost, self._n, out)
        return out

    def _timestamp_type(self) -> pa.DataType:
        """The type of the output's times: zoned in the state's zone (naive for naive UTC input)."""
        return pa.timestamp("us", tz=self.time_zone if self.timezone == UTC else self.timezone)

    def _result_table(self, id_array: pa.Array, ints: np.ndarray, floats: np.ndarray, has_orders: np.ndarray,
                      as_of_us: int | None, cost: np.ndarray | None = None) -> pa.Table:
        """The finalized table from the outputs of ``rfm_finalize_partitioned`` (the one place
        that turns them into columns, for :meth:`finalize` and the timeline's snapshots);
        ``cost`` (N_COST_FIELDS, m): the customers' cost rows, with a cost column."""
        from .kernels import rfm as k

        m = len(has_orders)
        as_of_day = local_day(as_of_us, self.timezone) if as_of_us is not None else 0
        if self.timezone != UTC and m:
            # The kernel counts UTC days; the business's days start at its own midnight.
            for out, when in ((k.OUT_RECENCY, k.OUT_LAST), (k.OUT_TENURE, k.OUT_FIRST)):
                ints[out] = np.where(has_orders, as_of_day - local_days(ints[when], self.timezone), 0)
        ts = self._timestamp_type()
        if has_orders.all():
            def masked(values, t):
                return pa.array(values, t)
        else:
            # Customers with refunds only have no order times, recency, tenure or average
            # order value: one validity bitmap (has_orders, bit-packed) serves the five
            # columns, each over its NumPy values without a copy.
            validity = pa.array(has_orders).buffers()[1]
            n_null = m - int(np.count_nonzero(has_orders))

            def masked(values, t):
                return pa.Array.from_buffers(t, m, [validity, pa.py_buffer(values)], null_count=n_null)
        table = pa.table({
            "customer_id": id_array,
            "first_order": masked(ints[k.OUT_FIRST], ts),
            "last_order": masked(ints[k.OUT_LAST], ts),
            "recency_days": masked(ints[k.OUT_RECENCY], pa.int64()),
            "tenure_days": masked(ints[k.OUT_TENURE], pa.int64()),
            "n_orders": pa.array(ints[k.OUT_N_ORDERS]),
            "n_refunds": pa.array(ints[k.OUT_N_REFUNDS]),
            "monetary_total": pa.array(floats[k.OUT_MONETARY]),
            "monetary_minor": pa.array(ints[k.OUT_NET_MINOR]),
            "avg_order_value": masked(floats[k.OUT_AOV], pa.float64()),
            "gross_total": pa.array(floats[k.OUT_GROSS]),
            "refunds_total": pa.array(floats[k.OUT_REFUNDS]),
        })
        if cost is not None:
            for name, column in profit_columns(id_array, ints[k.OUT_NET_MINOR], floats[k.OUT_GROSS],
                                               floats[k.OUT_REFUNDS], ints[k.OUT_N_ORDERS], ints[k.OUT_N_REFUNDS],
                                               cost, self.amount_scale).items():
                table = table.append_column(name, column)
        meta = {"rfmx.as_of": _us_to_iso(as_of_us, self.timezone) or "", "rfmx.amount_scale": str(self.amount_scale),
                "rfmx.customer_column": self.columns.customer, "rfmx.timezone": self.timezone}
        return table.replace_schema_metadata(meta)

    def resolve_as_of(self, as_of=None) -> int | None:
        """``as_of`` in microseconds, after the defaults and the checks against the window."""
        if as_of is None:
            if self.until_us is not None:
                return self.until_us
            if self.max_time_us is None:
                return None
            return day_start(local_day(self.max_time_us, self.timezone) + 1, self.timezone)
        as_of_us = to_us(as_of, self.timezone)
        if self.max_time_us is not None and self.max_time_us >= as_of_us:
            raise RfmxError(
                f"as_of {_us_to_iso(as_of_us)} is not after the state's latest line ({_us_to_iso(self.max_time_us)}); "
                f"aggregate with as_of={_us_to_iso(as_of_us)} (it becomes the window's end) instead"
            )
        return as_of_us

    # --- persistence --------------------------------------------------------------

    def to_table(self) -> pa.Table:
        """The raw state: ``customer_id`` plus the exact integer fields, with its metadata."""
        self._check_usable()
        from .kernels.rfm import rfm_fields_partitioned

        ids, _ = self._flat(with_rows=False)
        fields = np.empty((len(_FIELD_NAMES), len(ids)), dtype=np.int64)
        if self._kind is not None:
            with self._threads():
                rfm_fields_partitioned(self._agg, self._n, fields)
        data = {"customer_id": self._id_array(ids)}
        for j, name in enumerate(_FIELD_NAMES):
            data[name] = pa.array(fields[j])  # no copy: each column is a view of its row of ``fields``
        cost = self._cost_columns()
        if cost is not None:
            for j, name in enumerate(_COST_NAMES):
                data[name] = pa.array(cost[j])
        meta = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "columns": {"customer": self.columns.customer, "time": self.columns.time,
                        "amount": self.columns.amount, "order_id": self.columns.order_id,
                        "cost": self.columns.cost},
            "amount_scale": self.amount_scale,
            "since_us": self.since_us,
            "until_us": self.until_us,
            "time_zone": self.time_zone,
            "timezone": self.timezone,
            "id_type": str(self.id_type) if self.id_type is not None else None,
            "id_kind": self._kind,
            "rows_read": self.rows_read,
            "rows_null_skipped": self.rows_null_skipped,
            "rows_outside_window": self.rows_outside_window,
            "amounts_rounded": self.amounts_rounded,
            "max_time_us": self.max_time_us,
        }
        return pa.table(data).replace_schema_metadata({"rfmx.state": json.dumps(meta)})

    def save(self, path) -> None:
        """Write the state as an Arrow IPC file (atomically: temporary file, then rename)."""
        from .sinks import atomic_path

        table = self.to_table()
        with atomic_path(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)

    @classmethod
    def load(cls, path, *, threads: int | None = None) -> "RFMState":
        """Read a state written by :meth:`save`; refuses other formats and versions, and
        damaged files (metadata, columns or values that :meth:`save` cannot have written)."""
        path = Path(path)
        return cls.from_table(read_state_file(path), what=path, threads=threads)

    @classmethod
    def from_table(cls, table: pa.Table, *, what="<state table>", threads: int | None = None) -> "RFMState":
        """The state whose :meth:`to_table` is ``table`` (checked as :meth:`load` checks a file;
        ``what`` names it in errors): how partial states cross process boundaries as Arrow data."""
        meta = read_state_meta(what, table, STATE_FORMAT)
        c = meta["columns"]
        state = cls(c["customer"], c["time"], c["amount"], c["order_id"], since=meta["since_us"],
                    until=meta["until_us"], amount_scale=meta["amount_scale"], threads=threads,
                    timezone=meta["timezone"], cost=c["cost"])
        state._restore(meta, table, what)
        return state

    def _restore(self, meta: dict, table: pa.Table, path) -> CustomerIds | None:
        """Fill this new state with the counters and customers of a saved one; its ids (None: no customers)."""
        self.time_zone = meta["time_zone"]
        self.rows_read = self.rows_loaded = meta["rows_read"]
        self.rows_null_skipped = meta["rows_null_skipped"]
        self.rows_outside_window = meta["rows_outside_window"]
        self.amounts_rounded = meta["amounts_rounded"]
        self.max_time_us = meta["max_time_us"]
        if meta["id_kind"] is None:
            return None
        ids = customer_ids(table.column("customer_id").combine_chunks(), str(path), "customer_id")
        self._adopt_ids(ids, str(path))
        rows = np.empty((table.num_rows, len(_FIELD_NAMES)), dtype=np.int64)
        for j, name in enumerate(_FIELD_NAMES):
            rows[:, j] = table.column(name).to_numpy()
        cost_rows = None
        if self.columns.cost:
            cost_rows = np.empty((table.num_rows, len(_COST_NAMES)), dtype=np.int64)
            for j, name in enumerate(_COST_NAMES):
                cost_rows[:, j] = table.column(name).to_numpy()
        self._merge_rows(ids, rows, str(path), cost_rows)
        self.customers_loaded = self.n_customers
        if self.customers_loaded != table.num_rows:
            self._broken = f"{path}: damaged state file: a customer id occurs more than once"
            raise RfmxError(self._broken)
        return ids

    def __repr__(self) -> str:
        return (f"RFMState({self.n_customers} customers, {self.rows_read} rows read, "
                f"columns={self.columns}, amount_scale={self.amount_scale})")
