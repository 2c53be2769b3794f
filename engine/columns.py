"""Arrow columns → the NumPy arrays the kernels take, with one-line errors for bad input.

Conventions (see README "Definitions"):

- times become int64 microseconds since the Unix epoch; zoned timestamps are their UTC
  instant, naive timestamps and dates are taken as they are; ISO-8601 strings are parsed
  (a trailing zone offset makes them UTC instants);
- money becomes int64 *minor units* at ``amount_scale`` decimals: integers are whole units,
  floats are rounded to the nearest minor unit, decimals of any type and scale and decimal
  strings (CSV) are converted exactly: a value with non-zero digits beyond ``amount_scale``
  is an error rather than a silent rounding, unless rounding was asked for (``half-even``
  or ``half-up``, counted);
- customer ids are integers of any width (kept as int64 bit patterns) or byte strings
  (string, binary, large and view variants), passed to the kernels as Arrow buffers.
"""
from __future__ import annotations

import decimal
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .calendar import wall_to_instant
from .errors import RfmxError

US_PER_DAY = 86_400_000_000
#: Order times must lie in [MIN_TIME_US, MAX_TIME_US): 0001-01-01 to 9999-12-31 (exclusive).
MIN_TIME_US = -62_135_596_800_000_000
MAX_TIME_US = 253_402_214_400_000_000
_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
_EMPTY_I64 = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class ColumnMap:
    """Which input columns hold the customer, the order time, the amount, the order id and
    the line's cost (optional: gross profit and cost-to-serve, see README "Profit")."""

    customer: str = "customer_id"
    time: str = "order_time"
    amount: str = "amount"
    order_id: str | None = None
    cost: str | None = None

    def names(self) -> list[str]:
        return [c for c in (self.customer, self.time, self.amount, self.order_id, self.cost) if c]


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


def _cast_kind(arr: pa.Array, tz: str | None) -> pa.Array:
    """ISO-8601 strings of one kind (all naive or all zoned) → timestamp[us] (with ``tz``).

    Microseconds first; strings with 7-9 fractional digits (nanosecond exports) only parse
    as nanoseconds, so those are parsed so and floored to the microsecond.
    """
    try:
        return arr.cast(pa.timestamp("us", tz=tz))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ns = arr.cast(pa.timestamp("ns", tz=tz)).view(pa.int64())
        us = np.floor_divide(np.asarray(ns.fill_null(0)), 1000)
        return pa.array(us, mask=np.asarray(ns.is_null())).view(pa.timestamp("us", tz=tz))


def _cast_times(arr: pa.Array, timezone: str = "UTC") -> pa.Array:
    """ISO-8601 strings → timestamp[us] (naive) or timestamp[us, UTC] (if any has a zone;
    strings without a zone beside them are wall-clock times in ``timezone``)."""
    for tz in (None, "UTC"):
        try:
            return _cast_kind(arr, tz)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    # Naive and zoned strings mixed: parse each kind on its own, keep UTC instants for
    # the zoned ones and the wall-clock reading for the others (as for whole columns).
    zoned = pc.match_substring_regex(arr, _ZONED)
    naive = pc.invert(zoned)
    if not pc.any(zoned).as_py() or not pc.any(naive).as_py():
        raise pa.ArrowInvalid("unparseable time")
    t_zoned = _cast_kind(arr.filter(zoned), "UTC").view(pa.int64())
    t_naive = _cast_kind(arr.filter(naive), None).view(pa.int64())
    out = np.empty(len(arr), dtype=np.int64)
    mask = np.asarray(zoned.fill_null(False))
    out[mask] = np.asarray(t_zoned)
    out[~mask] = wall_to_instant(np.asarray(t_naive), timezone)
    return pa.array(out).view(pa.timestamp("us", tz="UTC"))


def source_row(row0, i: int) -> int:
    """Row number in the source of line ``i`` of a batch: ``row0`` is the batch's first row,
    or the source row of every line when some lines were dropped."""
    return int(row0 + i) if np.isscalar(row0) else int(row0[i])


def _parse_time_strings(arr: pa.Array, where: str, column: str, row0, timezone: str = "UTC") -> pa.Array:
    try:
        return _cast_times(arr, timezone)
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
    raise RfmxError(f"{where}: column '{column}' (order time) has an unparseable time {bad!r} at row {source_row(row0, lo)}")


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
                    f"{source_row(row0, i)} is outside the years 0001 to 9999")


def time_us(arr: pa.Array, where: str, column: str, row0, timezone: str = "UTC") -> tuple[np.ndarray, str | None]:
    """Order times as int64 microseconds, and the input's time zone (None if naive).

    A string column that mixes zoned and naive times gives instants (zone ``UTC``), its
    naive strings taken as wall-clock times in ``timezone``; wholly naive columns stay
    wall-clock readings (the caller places them in its time zone).

    Times must lie in [0001-01-01, 9999-12-31) (see :data:`MIN_TIME_US`, :data:`MAX_TIME_US`).
    """
    arr = _large(_decoded(arr))  # Arrow parses times from (large_)string only
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = _parse_time_strings(arr, where, column, row0, timezone)
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


#: How ``round=`` names a rounding, and the Arrow and Python ``decimal`` modes it means.
ROUNDINGS = {"half-even": ("half_to_even", decimal.ROUND_HALF_EVEN),
             "half-up": ("half_towards_infinity", decimal.ROUND_HALF_UP)}  # ties away from zero
#: The largest ``amount_scale``: one minor unit is 10**-18, and int64 minor units still hold ±9.2.
MAX_AMOUNT_SCALE = 18
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# What a decimal amount string may look like (as Arrow's decimal parser takes it):
# an optional sign, digits with an optional point, an optional exponent.
_DECIMAL_STRING = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def check_rounding(rounding: str | None) -> str | None:
    """``rounding`` if it names a rounding rfmx knows (or is None), else a one-line error."""
    if rounding is not None and rounding not in ROUNDINGS:
        raise RfmxError(f"round must be None, 'half-even' or 'half-up', got {rounding!r}")
    return rounding


_EXACT = decimal.Context(prec=200, traps=[decimal.InvalidOperation])  # wider than any amount rfmx reads


def _decimals_of(value: decimal.Decimal) -> int:
    """Decimals a value needs: 12.50 needs 1, 1200 needs 0."""
    return max(0, -value.normalize(context=_EXACT).as_tuple().exponent)


def _too_precise(value, decimals: int, scale: int, where: str, column: str, row: int) -> RfmxError:
    """The error for a value with non-zero digits beyond the money scale, with the ways out."""
    ways = "pass round='half-even' or 'half-up' (--round half-even|half-up) to round it"
    if decimals <= MAX_AMOUNT_SCALE:
        ways += f", or amount_scale={decimals} (--amount-scale {decimals})"
    return RfmxError(f"{where}: column '{column}' (amount) value {value} at row {row} has {decimals} decimals "
                     f"but amounts are kept with {scale}; {ways}")


def _python_minor(values: list, scale: int, rounding: str | None, where: str, column: str, row0,
                  parse: bool) -> tuple[np.ndarray, int]:
    """Minor units of Python values (``Decimal``s, or decimal strings with ``parse``), one by one.

    The exact reference for what the vectorized paths compute; it runs only where Arrow
    cannot (strings of more than 38 digits) or to find the row an Arrow kernel refused.
    """
    ctx = _EXACT
    mode = ROUNDINGS[rounding][1] if rounding else None
    out = np.zeros(len(values), dtype=np.int64)
    n_rounded = 0
    for i, v in enumerate(values):
        if v is None:
            continue
        if parse:
            if not _DECIMAL_STRING.fullmatch(v):
                raise RfmxError(f"{where}: column '{column}' (amount) has an unparseable amount {v!r} at row "
                                f"{source_row(row0, i)}")
            d = ctx.create_decimal(v)
        else:
            d = v
        scaled = d.scaleb(scale, context=ctx)
        whole = scaled.to_integral_value(rounding=mode or decimal.ROUND_HALF_EVEN, context=ctx)
        if whole != scaled:
            if mode is None:
                raise _too_precise(v, _decimals_of(d), scale, where, column, source_row(row0, i))
            n_rounded += 1
        if not _INT64_MIN <= int(whole) <= _INT64_MAX:
            raise RfmxError(f"{where}: column '{column}' (amount) value {v} at row {source_row(row0, i)} "
                            f"overflows int64 minor units")
        out[i] = int(whole)
    return out, n_rounded


def _widened(arr: pa.Array) -> pa.Array:
    """A decimal array with room for one more integer digit (a rounding carry: 9.999 → 10.00)."""
    t = arr.type
    if t.precision < 38:
        return arr.cast(pa.decimal128(38, t.scale))
    return arr.cast(pa.decimal256(76, t.scale))


def _decimal_minor(arr: pa.Array, scale: int, rounding: str | None, where: str, column: str, row0,
                   shown: pa.Array) -> tuple[np.ndarray, int]:
    """Decimals of any width and scale as int64 minor units; ``shown`` holds the values errors quote."""
    t = arr.type
    n_rounded = 0
    if t.scale > scale:
        try:
            wide = _widened(arr)
            rounded = pc.round(wide, ndigits=scale, round_mode=ROUNDINGS[rounding or "half-even"][0])
        except pa.ArrowInvalid:  # a 76-digit value: it overflows int64 minor units, found below
            return _python_minor(arr.to_pylist(), scale, rounding, where, column, row0, parse=False)
        changed = pc.not_equal(rounded, wide)
        n_changed = pc.sum(changed).as_py() or 0
        if n_changed and rounding is None:
            i = int(np.flatnonzero(np.asarray(changed.fill_null(False)))[0])
            value = arr[i].as_py()
            raise _too_precise(shown[i].as_py() if shown is not arr else value, _decimals_of(value), scale,
                               where, column, source_row(row0, i))
        n_rounded = n_changed
        arr = rounded
    try:
        # Exact: every value now has at most ``scale`` decimals, and any value that does not
        # fit 38 digits is far beyond int64 minor units.
        d = arr.cast(pa.decimal128(38, scale))
    except pa.ArrowInvalid:
        return _python_minor(arr.to_pylist(), scale, rounding, where, column, row0, parse=False)
    if d.null_count:
        d = d.fill_null(pa.scalar(0, pa.decimal128(38, scale)))  # null rows are dropped or refused later
    words = np.frombuffer(d.buffers()[1], dtype=np.int64)[2 * d.offset: 2 * (d.offset + len(d))]
    lo, hi = words[0::2], words[1::2]
    fits = hi == (lo >> 63)
    if not fits.all():
        i = int(np.flatnonzero(~fits)[0])
        raise RfmxError(f"{where}: column '{column}' (amount) value {shown[i].as_py()} at row {source_row(row0, i)} "
                        f"overflows int64 minor units")
    return np.ascontiguousarray(lo), n_rounded


def _string_minor(arr: pa.Array, scale: int, rounding: str | None, where: str, column: str,
                  row0) -> tuple[np.ndarray, int]:
    """Decimal strings (CSV amounts) as exact int64 minor units, by the decimal rule."""
    arr = _large(arr)
    try:
        # Most exports: every value has at most ``scale`` decimals; one exact Arrow cast.
        return _decimal_minor(arr.cast(pa.decimal128(38, scale)), scale, rounding, where, column, row0, arr)
    except pa.ArrowInvalid:
        pass
    try:
        # More decimals somewhere: parse them all (up to 38 either side of the point), then round or refuse.
        return _decimal_minor(arr.cast(pa.decimal256(76, 38)), scale, rounding, where, column, row0, arr)
    except pa.ArrowInvalid:
        # Unparseable, or more than 38 digits on a side: value by value, naming the first bad one.
        return _python_minor(arr.to_pylist(), scale, rounding, where, column, row0, parse=True)


def amount_minor(arr: pa.Array, scale: int, where: str, column: str, row0, *,
                 rounding: str | None = None) -> tuple[np.ndarray, int]:
    """Money as exact int64 minor units (``amount * 10**scale``), and how many values were rounded.

    Integers are whole units; floats are rounded once to the nearest minor unit (ties to
    even; not counted).  Decimals (any width, any scale) and decimal strings are exact: a
    value with non-zero digits beyond ``scale`` is an error naming its row, unless
    ``rounding`` (``"half-even"`` or ``"half-up"``, see :data:`ROUNDINGS`) rounds it.
    """
    arr = _decoded(arr)
    t = arr.type
    unit = 10 ** scale
    if pa.types.is_integer(t):
        limit = np.iinfo(np.int64).max // unit
        if t == pa.uint64():
            big = np.asarray(arr) > limit
            if big.any():
                i = int(np.flatnonzero(big)[0])
                raise RfmxError(f"{where}: column '{column}' (amount) value {arr[i].as_py()} at row {source_row(row0, i)} "
                                f"overflows int64 minor units")
        from .kernels.money import int_to_minor  # deferred: importing numba is not cheap

        v = np.asarray(arr.cast(pa.int64()))
        out = np.empty(len(v), dtype=np.int64)
        i = int_to_minor(v, unit, out)
        if i >= 0:
            raise RfmxError(f"{where}: column '{column}' (amount) value {v[i]} at row {source_row(row0, i)} overflows int64 minor units")
        return out, 0
    if pa.types.is_floating(t):
        from .kernels.money import float_to_minor

        v = np.asarray(arr.cast(pa.float64()))
        out = np.empty(len(v), dtype=np.int64)
        i = float_to_minor(v, float(unit), out)
        if i >= 0:
            raise RfmxError(f"{where}: column '{column}' (amount) has a non-finite or too large value {arr[i].as_py()} at row {source_row(row0, i)}")
        return out, 0
    if pa.types.is_decimal(t):
        return _decimal_minor(arr, scale, rounding, where, column, row0, arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _string_minor(arr, scale, rounding, where, column, row0)
    raise RfmxError(f"{where}: column '{column}' (amount) has type {t}; expected integers, floats or decimals "
                    f"(numbers or decimal strings)")


def cost_minor(arr: pa.Array, scale: int, where: str, column: str, row0, *,
               rounding: str | None = None) -> tuple[np.ndarray, int]:
    """A line's cost as exact int64 minor units: parsed exactly as money (:func:`amount_minor`:
    the same scale, decimal checks and rounding), errors naming the column as the cost."""
    try:
        return amount_minor(arr, scale, where, column, row0, rounding=rounding)
    except RfmxError as exc:
        raise RfmxError(str(exc).replace(f"column '{column}' (amount)", f"column '{column}' (cost)", 1)) from None


def canonical_integers(arr: pa.Array) -> bool:
    """True if every non-null string in ``arr`` is an integer written the one way (``0`` or
    ``-?[1-9][0-9]*``) that fits int64, so reading them as integers merges no two ids:
    ``007`` and ``7`` stay two strings, ``NA`` stays a string.  Vacuously true without values."""
    if arr.null_count == len(arr):
        return True
    try:
        ints = arr.cast(pa.int64())
    except pa.ArrowInvalid:  # not an integer, or beyond int64
        return False
    # Printing an int64 gives its canonical form: a value equal to it was written that way
    # (a round trip measured 1.6x faster than matching a regular expression).
    return pc.all(pc.equal(ints.cast(arr.type), arr)).as_py() is not False


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
    "cost_minor",
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
    "check_rounding",
    "canonical_integers",
    "ROUNDINGS",
    "MAX_AMOUNT_SCALE",
    "order_ids",
    "source_row",
    "_EMPTY_I64",
]
