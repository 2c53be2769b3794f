"""Arrow columns → the NumPy arrays the kernels take, with one-line errors for bad input.

Conventions (see README "Definitions"):

- times become int64 microseconds since the Unix epoch; zoned timestamps are their UTC
  instant, naive timestamps and dates are taken as they are; ISO-8601 strings are parsed
  (a trailing zone offset makes them UTC instants);
- money becomes int64 *minor units* at ``amount_scale`` decimals: integers are whole units,
  floats are rounded to the nearest minor unit, decimals are rescaled exactly (a decimal
  with more decimals than ``amount_scale`` is an error rather than a silent rounding);
- customer ids are integers of any width (kept as int64 bit patterns) or byte strings
  (string, binary, large and view variants), passed to the kernels as Arrow buffers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import RfmxError

US_PER_DAY = 86_400_000_000
#: Order times must lie in [MIN_TIME_US, MAX_TIME_US): 0001-01-01 to 9999-12-31 (exclusive).
MIN_TIME_US = -62_135_596_800_000_000
MAX_TIME_US = 253_402_214_400_000_000
_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
_EMPTY_I64 = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class ColumnMap:
    """Which input columns hold the customer, the order time, the amount and the order id."""

    customer: str = "customer_id"
    time: str = "order_time"
    amount: str = "amount"
    order_id: str | None = None

    def names(self) -> list[str]:
        return [c for c in (self.customer, self.time, self.amount, self.order_id) if c]


@dataclass
class CustomerIds:
    """Customer ids of one batch: ``ints`` (int64) or ``offsets``/``data`` byte buffers."""

    kind: str                      # "int" or "bytes"
    arrow_type: pa.DataType
    ints: np.ndarray | None = None
    offsets: np.ndarray | None = None
    data: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ints) if self.kind == "int" else len(self.offsets) - 1


def _first_null(arr: pa.Array) -> int:
    return int(np.flatnonzero(~np.asarray(arr.is_valid()))[0])


def check_columns(schema: pa.Schema, columns: ColumnMap, where: str) -> None:
    """Raise if a mapped column is missing, listing the columns that exist."""
    for name in columns.names():
        if schema.get_field_index(name) < 0:
            have = ", ".join(schema.names) or "none"
            raise RfmxError(f"{where}: column '{name}' not found; columns are: {have}")


def null_mask(batch: pa.RecordBatch, columns: ColumnMap) -> tuple[np.ndarray | None, dict[str, int]]:
    """Rows where every mapped column is valid (None if no nulls) and null counts per column."""
    counts = {}
    valid = None
    for name in columns.names():
        arr = batch.column(name)
        if arr.null_count:
            counts[name] = arr.null_count
            v = np.asarray(arr.is_valid())
            valid = v if valid is None else valid & v
    return valid, counts


def raise_on_nulls(batch: pa.RecordBatch, columns: ColumnMap, where: str, row0: int) -> None:
    for name in columns.names():
        arr = batch.column(name)
        if arr.null_count:
            raise RfmxError(
                f"{where}: column '{name}' has {arr.null_count} null value(s) in this batch, "
                f"first at row {row0 + _first_null(arr)}; pass on_null='skip' (--on-null skip) to drop such rows"
            )


def _large(arr: pa.Array) -> pa.Array:
    """View types as their large equivalents (Arrow's casts and takes lack view kernels)."""
    if pa.types.is_string_view(arr.type):
        return arr.cast(pa.large_string())
    if pa.types.is_binary_view(arr.type):
        return arr.cast(pa.large_binary())
    return arr


def _decoded(arr: pa.Array) -> pa.Array:
    """A dictionary-encoded column as plain values (view-typed dictionaries become large)."""
    if pa.types.is_dictionary(arr.type):
        return _large(arr.dictionary).take(arr.indices)
    return arr


def customer_ids(arr: pa.Array, where: str, column: str) -> CustomerIds:
    arr = _decoded(arr)
    t = arr.type
    if pa.types.is_null(t):
        # A column with no values at all (a header-only CSV): no type to keep, no ids.
        return CustomerIds("int", pa.int64(), ints=np.zeros(len(arr), dtype=np.int64))
    if pa.types.is_integer(t):
        if t == pa.uint64():
            ints = np.asarray(arr).view(np.int64)
        else:
            ints = np.asarray(arr.cast(pa.int64()))
        return CustomerIds("int", t, ints=ints)
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        arr = arr.cast(pa.large_string() if pa.types.is_string_view(t) else pa.large_binary())
        t_kernel = arr.type
    else:
        t_kernel = t
    if pa.types.is_string(t_kernel) or pa.types.is_binary(t_kernel):
        off_dtype = np.int32
    elif pa.types.is_large_string(t_kernel) or pa.types.is_large_binary(t_kernel):
        off_dtype = np.int64
    else:
        raise RfmxError(f"{where}: column '{column}' (customer id) has type {t}; expected integers or strings")
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    if len(data) == 0:
        data = np.zeros(1, np.uint8)
    return CustomerIds("bytes", t, offsets=offsets.astype(np.int64, copy=False), data=data)


# A zone designator after a time of day: Z, +HH, +HHMM or +HH:MM (a date alone has none).
_ZONED = r"[T ]\d{2}(:?\d{2}(:?\d{2}(\.\d+)?)?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"


def _cast_times(arr: pa.Array) -> pa.Array:
    """ISO-8601 strings → timestamp[us] (naive) or timestamp[us, UTC] (if any has a zone)."""
    for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            return arr.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    # Naive and zoned strings mixed: parse each kind on its own, keep UTC instants for
    # the zoned ones and the wall-clock reading for the others (as for whole columns).
    zoned = pc.match_substring_regex(arr, _ZONED)
    naive = pc.invert(zoned)
    if not pc.any(zoned).as_py() or not pc.any(naive).as_py():
        raise pa.ArrowInvalid("unparseable time")
    t_zoned = arr.filter(zoned).cast(pa.timestamp("us", tz="UTC")).view(pa.int64())
    t_naive = arr.filter(naive).cast(pa.timestamp("us")).view(pa.int64())
    out = np.empty(len(arr), dtype=np.int64)
    mask = np.asarray(zoned.fill_null(False))
    out[mask] = np.asarray(t_zoned)
    out[~mask] = np.asarray(t_naive)
    return pa.array(out).view(pa.timestamp("us", tz="UTC"))


def _row(row0, i: int) -> int:
    """Row number in the source of line ``i`` of a batch: ``row0`` is the batch's first row,
    or the source row of every line when some lines were dropped."""
    return int(row0 + i) if np.isscalar(row0) else int(row0[i])


def _parse_time_strings(arr: pa.Array, where: str, column: str, row0) -> pa.Array:
    try:
        return _cast_times(arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Bisect for the first row that does not parse, so the message can point at it.
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            _cast_times(arr.slice(lo, mid - lo))
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    bad = arr[lo].as_py()
    raise RfmxError(f"{where}: column '{column}' (order time) has an unparseable time {bad!r} at row {_row(row0, lo)}")


def _check_time_range(raw: pa.Array, us_per_unit: int, where: str, column: str, row0) -> None:
    """Reject times outside [0001-01-01, 9999-12-31): beyond them microseconds overflow or
    the default ``as_of`` (the midnight after the latest line) is no longer a date.

    ``raw`` holds integers of ``us_per_unit`` microseconds; one pass (Arrow's min_max).
    """
    if len(raw) == 0:
        return
    lo = -(-MIN_TIME_US // us_per_unit)  # smallest raw value >= MIN_TIME_US
    hi = -(-MAX_TIME_US // us_per_unit)  # smallest raw value >= MAX_TIME_US
    mm = pc.min_max(raw)
    if mm["min"].as_py() >= lo and mm["max"].as_py() < hi:
        return
    values = np.asarray(raw)
    i = int(np.flatnonzero((values < lo) | (values >= hi))[0])
    unit = {1: "us", 1000: "ms", 1_000_000: "s", US_PER_DAY: "days"}[us_per_unit]
    raise RfmxError(f"{where}: column '{column}' (order time) value {values[i]} {unit} since 1970 at row "
                    f"{_row(row0, i)} is outside the years 0001 to 9999")


def time_us(arr: pa.Array, where: str, column: str, row0) -> tuple[np.ndarray, str | None]:
    """Order times as int64 microseconds, and the input's time zone (None if naive).

    Times must lie in [0001-01-01, 9999-12-31) (see :data:`MIN_TIME_US`, :data:`MAX_TIME_US`).
    """
    arr = _large(_decoded(arr))  # Arrow parses times from (large_)string only
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = _parse_time_strings(arr, where, column, row0)
        t = arr.type
    if pa.types.is_timestamp(t):
        raw = arr.view(pa.int64())
        if t.unit == "ns":  # every int64 nanosecond is within the range
            return np.floor_divide(np.asarray(raw), 1000), t.tz
        factor = _UNIT_US[t.unit]
        _check_time_range(raw, factor, where, column, row0)
        return (np.asarray(raw) * factor if factor != 1 else np.asarray(raw)), t.tz
    if pa.types.is_date32(t):
        raw = arr.view(pa.int32())
        _check_time_range(raw, US_PER_DAY, where, column, row0)
        return np.asarray(raw).astype(np.int64) * US_PER_DAY, None
    if pa.types.is_date64(t):
        raw = arr.view(pa.int64())
        _check_time_range(raw, 1000, where, column, row0)
        return np.asarray(raw) * 1000, None
    raise RfmxError(f"{where}: column '{column}' (order time) has type {t}; expected a timestamp, date or ISO-8601 string")


def amount_minor(arr: pa.Array, scale: int, where: str, column: str, row0) -> np.ndarray:
    """Money as exact int64 minor units (``amount * 10**scale``)."""
    arr = _decoded(arr)
    t = arr.type
    unit = 10 ** scale
    if pa.types.is_integer(t):
        limit = np.iinfo(np.int64).max // unit
        if t == pa.uint64():
            big = np.asarray(arr) > limit
            if big.any():
                i = int(np.flatnonzero(big)[0])
                raise RfmxError(f"{where}: column '{column}' (amount) value {arr[i].as_py()} at row {_row(row0, i)} "
                                f"overflows int64 minor units")
        from .kernels.money import int_to_minor  # deferred: importing numba is not cheap

        v = np.asarray(arr.cast(pa.int64()))
        out = np.empty(len(v), dtype=np.int64)
        i = int_to_minor(v, unit, out)
        if i >= 0:
            raise RfmxError(f"{where}: column '{column}' (amount) value {v[i]} at row {_row(row0, i)} overflows int64 minor units")
        return out
    if pa.types.is_floating(t):
        from .kernels.money import float_to_minor

        v = np.asarray(arr.cast(pa.float64()))
        out = np.empty(len(v), dtype=np.int64)
        i = float_to_minor(v, float(unit), out)
        if i >= 0:
            raise RfmxError(f"{where}: column '{column}' (amount) has a non-finite or too large value {arr[i].as_py()} at row {_row(row0, i)}")
        return out
    if pa.types.is_decimal(t):
        if t.scale > scale:
            raise RfmxError(
                f"{where}: column '{column}' (amount) is {t} with {t.scale} decimals but amounts are kept "
                f"with {scale}; pass amount_scale={t.scale} (--amount-scale {t.scale})"
            )
        try:
            d = arr.cast(pa.decimal128(38, scale))
        except pa.ArrowInvalid as exc:
            raise RfmxError(f"{where}: column '{column}' (amount) does not fit decimal(38, {scale}): {exc}") from None
        words = np.frombuffer(d.buffers()[1], dtype=np.int64)[2 * d.offset: 2 * (d.offset + len(d))]
        lo, hi = words[0::2], words[1::2]
        fits = hi == (lo >> 63)
        if not fits.all():
            i = int(np.flatnonzero(~fits)[0])
            raise RfmxError(f"{where}: column '{column}' (amount) value {arr[i].as_py()} at row {_row(row0, i)} overflows int64 minor units")
        return np.ascontiguousarray(lo)
    raise RfmxError(f"{where}: column '{column}' (amount) has type {t}; expected integers, floats or decimals")


def order_ids(arr: pa.Array, where: str, column: str) -> np.ndarray:
    """Order ids as int64 labels: integers as they are, strings by a 64-bit hash.

    Order ids are only compared with the *previous* order id of the same customer, so a
    string hash can mistake two orders for one only if two consecutive orders of one
    customer collide in 64 bits.
    """
    t = arr.type
    if pa.types.is_integer(t):
        return np.asarray(arr).view(np.int64) if t == pa.uint64() else np.asarray(arr.cast(pa.int64()))
    ids = customer_ids(arr, where, column)
    from .kernels.customers import hash_bytes  # deferred: importing numba is not cheap

    out = np.empty(len(ids), dtype=np.int64)
    hash_bytes(ids.offsets, ids.data, 1, out, np.zeros(2, np.int64), np.zeros(2, np.int64))
    return out


__all__ = [
    "ColumnMap",
    "CustomerIds",
    "US_PER_DAY",
    "MIN_TIME_US",
    "MAX_TIME_US",
    "check_columns",
    "null_mask",
    "raise_on_nulls",
    "customer_ids",
    "time_us",
    "amount_minor",
    "order_ids",
    "_EMPTY_I64",
]
