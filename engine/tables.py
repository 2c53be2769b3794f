"""Per-customer table columns as NumPy, for the finalize-side modules.

The helpers that scores, segments, value concentration, migration and cohorts all need
— a numeric column with its validity mask, the money column and its unit, a label column
as integer codes — live here, so those modules import from one neutral place instead of
from each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import RfmxError

__all__ = ["value_kind", "readonly", "Column", "numeric_column", "money_column", "group_codes", "summable", "combined"]


def value_kind(t: pa.DataType) -> str:
    """``integer``, ``string`` or ``binary``: the kinds of key values that compare with one
    another (int8 and uint64 ids are both integers), else the type's name."""
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    return str(t)


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only view.  Numba compiles a kernel once per argument type, and
    read-only (zero-copy Arrow buffers) and writable arrays are different types: handing
    the kernels read-only inputs everywhere keeps it to one compilation."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def combined(col) -> pa.Array:
    """A column (chunked or not) as one array."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks() if col.num_chunks else pa.array([], type=col.type)
    return col


@dataclass
class Column:
    """A numeric column as NumPy: ``values`` (int64 or float64), ``valid`` (bool) or None."""

    name: str
    values: np.ndarray
    valid: np.ndarray | None
    is_float: bool


def numeric_column(table: pa.Table, name: str) -> Column:
    """Column ``name`` of a per-customer table as int64 (integers) or float64 (floats, decimals)."""
    if name not in table.column_names:
        raise RfmxError(f"column '{name}' not found; scoring needs the per-customer table of rfmx aggregate "
                        f"(columns recency_days, n_orders, monetary_total, ...)")
    arr = combined(table.column(name))
    t = arr.type
    valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_integer(t):
        if t != pa.int64():
            try:
                arr = arr.cast(pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise RfmxError(f"column '{name}': {exc}") from None
        # The data buffer as is: values under nulls are never read (masked by ``valid``).
        values = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + arr.offset)[arr.offset:] \
            if len(arr) else np.empty(0, np.int64)
        return Column(name, readonly(values), valid, False)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        nan = np.isnan(values)
        if nan.any():
            valid = ~nan if valid is None else valid & ~nan
        return Column(name, readonly(values), valid, True)
    raise RfmxError(f"column '{name}' has type {t}; scores and rules need numbers")


# what to do when a table lacks the money column a step reads
_NO_MONEY = {
    "monetary": "column 'monetary_total' not found; scoring needs the per-customer table of rfmx aggregate "
                "(columns recency_days, n_orders, monetary_total, ...)",
    "profit": "monetary='profit' (--monetary profit) scores M on gross profit: aggregate with a cost column "
              "(cost=..., --cost COLUMN) so the table has profit_total",
}


def money_column(table: pa.Table, what: str = "monetary") -> tuple[str, float]:
    """The column holding each customer's net money (``what="monetary"``) or gross profit
    (``"profit"``), and its unit divisor.

    ``<what>_minor`` (exact minor units) when the table says its scale (schema metadata
    ``rfmx.amount_scale``, lost e.g. in CSV), else ``<what>_total`` (unit 1).
    """
    raw = (table.schema.metadata or {}).get(b"rfmx.amount_scale")
    if f"{what}_minor" in table.column_names and raw:
        return f"{what}_minor", float(10 ** int(raw))
    if f"{what}_total" not in table.column_names:
        raise RfmxError(_NO_MONEY[what])
    return f"{what}_total", 1.0


def group_codes(table: pa.Table, name: str) -> tuple[np.ndarray, list[str]]:
    """A string/dictionary column as (int64 codes, -1 for null; names in dictionary order)."""
    col = table.column(name)
    if not pa.types.is_dictionary(col.type):
        col = col.cast(pa.string()).dictionary_encode()
    if isinstance(col, pa.ChunkedArray):
        col = col.unify_dictionaries().combine_chunks() if col.num_chunks else pa.array([], col.type)
    names = col.dictionary.to_pylist()
    idx = col.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return idx, names


def summable(values: np.ndarray) -> np.ndarray:
    """``values`` as they are if int64 sums over them (and 100 times such a sum, for the
    ABC percent tests) cannot leave int64, else as float64.

    Each customer's total is exact, but the population's may not fit: 10 M customers of
    10**12 minor units already do not.  Past that bound sums are computed in float64
    (relative error ~1e-16) instead of wrapping.
    """
    if values.dtype.kind != "i" or not len(values):
        return values
    biggest = max(abs(int(values.max())), abs(int(values.min())))
    if 100 * biggest * len(values) < 2**63:
        return values
    return values.astype(np.float64)
