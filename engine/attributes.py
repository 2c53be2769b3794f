"""Customer attributes: a table of per-customer facts (country, signup channel, ...) joined
to the per-customer result, so segments can be broken down by them and segment-map rules
can read them.

The join is exact, on the customer id, with the customer ids' own exactness rules: integer
keys match integer ids (any integer width), string keys match string ids, and a key of the
other kind is an error, never a silent conversion.  A key occurring twice is an error (which
row would a customer take?); a customer without a row gets null attributes, and the count
is reported (:attr:`AttributeJoin.customers_without`, the ``rfmx.attributes`` metadata).
With groups the join is still on the customer id: attributes describe a customer, so every
(group, customer) row of that customer gets the same values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import canonical_integers
from .errors import RfmxError
from .tables import combined

__all__ = ["Attributes", "AttributeJoin", "read_attributes", "join_attributes", "attributes_info",
           "ATTRIBUTES_META"]

#: schema metadata key of a table with joined attributes (JSON, see :func:`attributes_info`)
ATTRIBUTES_META = b"rfmx.attributes"
#: the customer column of finalized per-customer tables
CUSTOMER = "customer_id"


@dataclass
class Attributes:
    """A checked attribute table: ``on`` (the key) and the attribute columns, one row per key."""

    table: pa.Table
    on: str
    what: str            # the file (or "<table>") for messages

    @property
    def columns(self) -> list[str]:
        """The attribute columns (every column but the key)."""
        return [c for c in self.table.column_names if c != self.on]

    def numeric_columns(self) -> list[str]:
        return [c for c in self.columns if _is_number(self.table.schema.field(c).type)]

    def string_columns(self) -> list[str]:
        return [c for c in self.columns if is_string_type(self.table.schema.field(c).type)]


@dataclass
class AttributeJoin:
    """What :func:`join_attributes` did: the counts a user checks the join by."""

    what: str
    on: str
    columns: list
    rows: int                 # rows of the attribute table
    customers: int            # rows of the per-customer result
    customers_without: int    # result rows whose customer has no attribute row (null attributes)
    unused_rows: int          # attribute rows whose key is no customer of the result

    def as_dict(self) -> dict:
        return {"file": self.what, "on": self.on, "columns": self.columns, "rows": self.rows,
                "customers": self.customers, "customers_without": self.customers_without,
                "unused_rows": self.unused_rows}

    def line(self) -> str:
        """One line for stderr."""
        out = (f"attributes {', '.join(self.columns) or '(none)'} from {self.what} (on {self.on}): "
               f"{self.customers_without:,} of {self.customers:,} rows without attributes (null)")
        if self.unused_rows:
            out += f", {self.unused_rows:,} attribute row(s) match no customer"
        return out


def is_string_type(t: pa.DataType) -> bool:
    """A string column (plain, large, view or dictionary-encoded)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _id_kind(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "integer"
    if is_string_type(t):
        return "string"
    return None


def _plain(arr) -> pa.Array:
    arr = combined(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary.take(arr.indices)
    return arr


def _read_file(path: Path, on: str) -> pa.Table:
    from .sinks import FORMATS

    fmt = FORMATS.get(path.suffix.lower())
    if fmt not in ("parquet", "ipc", "csv"):
        raise RfmxError(f"{path}: unknown attribute table format '{path.suffix}'; use .parquet, .arrow/.feather "
                        f"or .csv")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if fmt == "ipc":
            import pyarrow.feather as feather

            return feather.read_table(path)
        import pyarrow.csv as pcsv

        # The key is read as text and made integers only when every key is written as one
        # (the customer-id rule of CSV order files): "007" stays a string, never 7.
        table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={on: pa.string()}))
        if on in table.column_names:
            key = combined(table.column(on))
            if len(key) and canonical_integers(key):
                table = table.set_column(table.column_names.index(on), on, key.cast(pa.int64()))
        return table
    except FileNotFoundError:
        raise RfmxError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise RfmxError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None


def read_attributes(source, on: str = CUSTOMER) -> Attributes:
    """Read and check an attribute table keyed by column ``on``.

    ``source``: a Parquet, Arrow IPC/Feather or CSV path, an :class:`Attributes`, or an
    Arrow table / pandas or Polars frame.  Refuses a missing key column, a key that is
    neither integers nor strings, a null key and a key occurring twice (with the count of
    such keys and the first one), each naming the file and column.
    """
    if isinstance(source, Attributes):
        return source
    if isinstance(source, (str, Path)):
        what = str(source)
        table = _read_file(Path(source), on)
    else:
        what = "<attribute table>"
        if isinstance(source, pa.Table):
            table = source
        elif hasattr(source, "__arrow_c_stream__"):
            table = pa.table(source)
        elif type(source).__module__.startswith("pandas"):
            table = pa.Table.from_pandas(source, preserve_index=False)
        else:
            raise RfmxError(f"attributes: expected a file path or a table, got {type(source).__name__}")
    if on not in table.column_names:
        raise RfmxError(f"{what}: key column '{on}' not found; columns are: {', '.join(table.column_names)}")
    if len(set(table.column_names)) != table.num_columns:
        twice = [c for i, c in enumerate(table.column_names) if c in table.column_names[:i]]
        raise RfmxError(f"{what}: column '{twice[0]}' occurs twice")
    key = _plain(table.column(on))
    if _id_kind(key.type) is None:
        raise RfmxError(f"{what}: key column '{on}' has type {key.type}; customer ids are integers or strings")
    if key.null_count:
        first = int(np.flatnonzero(~np.asarray(key.is_valid()))[0])
        raise RfmxError(f"{what}: key column '{on}' has {key.null_count:,} null value(s), first at row {first}")
    if len(key):
        codes = np.asarray(pc.dictionary_encode(key).indices).astype(np.int64)
        _, first_rows = np.unique(codes, return_index=True)
        if len(first_rows) != len(codes):
            seen = np.zeros(len(codes), dtype=np.bool_)
            seen[first_rows] = True
            again = np.flatnonzero(~seen)
            n_keys = len(np.unique(codes[again]))
            row = int(again[0])
            earlier = int(first_rows[codes[row]])  # dictionary codes number keys by first appearance
            raise RfmxError(f"{what}: key column '{on}' has {n_keys:,} duplicated key(s) ({len(again):,} extra "
                            f"row(s)); the first is {key[row].as_py()!r} at rows {earlier} and {row}; "
                            f"one row per customer")
    table = table.set_column(table.column_names.index(on), on, key)
    for name in table.column_names:
        t = table.schema.field(name).type
        if pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
            raise RfmxError(f"{what}: attribute column '{name}' has type {t}; attributes are plain values "
                            f"(strings, numbers, dates, booleans)")
    return Attributes(table, on, what)


def _matchable(ids: pa.Array, keys: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Customer ids and attribute keys of one type, without changing any value."""
    if _id_kind(ids.type) == "string":
        return ids.cast(pa.large_string()), keys.cast(pa.large_string())
    if ids.type == keys.type:
        return ids, keys
    try:
        return ids.cast(pa.int64()), keys.cast(pa.int64())
    except (pa.ArrowInvalid, OverflowError):
        pass
    # One side holds unsigned values above int64: compare as uint64, where a negative value
    # (which no uint64 equals) becomes null and so matches nothing.
    def unsigned(a):
        if pa.types.is_unsigned_integer(a.type):
            return a.cast(pa.uint64())
        a = a.cast(pa.int64())
        return pc.if_else(pc.less(a, 0), pa.scalar(None, pa.int64()), a).cast(pa.uint64())

    return unsigned(ids), unsigned(keys)


def join_attributes(table: pa.Table, attributes, on: str = CUSTOMER, *,
                    reserved=()) -> tuple[pa.Table, AttributeJoin]:
    """``table`` (a per-customer result, grouped or not) with the attribute columns appended,
    matched exactly on ``customer_id``; customers without an attribute row get nulls.

    ``attributes``: what :func:`read_attributes` takes (read with key ``on``).  An attribute
    named like a column of ``table``, of a later step (scores, clusters, CLV) or in
    ``reserved`` is refused.  The table's metadata gains
    ``rfmx.attributes`` (:func:`attributes_info`).
    """
    attrs = read_attributes(attributes, on)
    on, what = attrs.on, attrs.what
    if CUSTOMER not in table.column_names:
        raise RfmxError(f"attributes: the per-customer table has no '{CUSTOMER}' column to join on")
    ids = _plain(table.column(CUSTOMER))
    keys = _plain(attrs.table.column(on))
    id_kind, key_kind = _id_kind(ids.type), _id_kind(keys.type)
    if id_kind != key_kind:
        raise RfmxError(f"{what}: key column '{on}' holds {key_kind} ids ({keys.type}) but the customer ids are "
                        f"{id_kind}s ({ids.type}); write the key with the customer ids' type")
    taken = set(table.column_names) | set(reserved) | set(_later_columns())
    for name in attrs.columns:
        if name in taken:
            raise RfmxError(f"{what}: attribute column '{name}' is also a column of the per-customer result; "
                            f"rename it in the attribute table")
    ids, keys = _matchable(ids, keys)
    rows = pc.index_in(ids, value_set=keys)
    missing = rows.null_count
    used = np.zeros(len(keys), dtype=np.bool_)
    found = np.asarray(rows.drop_null()).astype(np.int64) if len(rows) else np.empty(0, np.int64)
    used[found] = True
    for name in attrs.columns:
        table = table.append_column(attrs.table.schema.field(name), combined(attrs.table.column(name)).take(rows))
    info = AttributeJoin(what, on, attrs.columns, attrs.table.num_rows, table.num_rows, int(missing),
                         int((~used).sum()))
    meta = dict(table.schema.metadata or {})
    meta[ATTRIBUTES_META] = json.dumps(info.as_dict()).encode()
    return table.replace_schema_metadata(meta), info


def _later_columns() -> tuple:
    """Columns the scoring, cluster, CLV and timeline steps add (an attribute must not shadow them)."""
    from .clv.value import CLV_COLUMNS
    from .scores import SCORE_COLUMNS

    return SCORE_COLUMNS + CLV_COLUMNS + ("cluster", "lifecycle", "as_of")


def attributes_info(table: pa.Table) -> dict | None:
    """The ``rfmx.attributes`` metadata of a table with joined attributes (file, key,
    columns, ``customers_without``, ``unused_rows``), or None."""
    raw = (table.schema.metadata or {}).get(ATTRIBUTES_META)
    return json.loads(raw) if raw is not None else None
