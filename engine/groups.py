"""Group keys: one state keyed by (group, customer), for marketplaces of shops, markets, channels.

A grouped state is an :class:`~rfmx.state.RFMState` whose customer key is an exact
composite of the group value(s) and the customer id, so every guarantee of the state
(exact fields, merges in any order, atomic saves) holds per (group, customer) pair, and
memory grows with the pairs.  The composite is made per batch, before the kernels see it:

- ``int`` keys: ``group_code << 44 | customer_id`` when every customer id is an integer in
  ``[0, 2**44)`` and there are at most ``2**19`` groups (the integer id path);
- ``bytes`` keys otherwise: 4 bytes of group code (big-endian) followed by the customer
  id's bytes (8 bytes of an integer id, or a string id's bytes), on the byte-string path.

Group codes are dense numbers given to group values in order of first appearance; they
never leave this module: finalized tables and saved states carry the group columns with
their values and types, and a loaded or merged state codes them again.  A state starts
with ``int`` keys and re-keys itself to ``bytes`` once when an id or group count does not
fit, so a customer is never split or merged by the encoding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import ColumnMap, customer_ids
from .errors import RfmxError
from .tables import value_kind

__all__ = ["GroupedState", "GroupedColumns", "GroupKeys", "GroupIndex", "group_index", "group_columns_of",
           "load_state", "check_group", "GROUPED_STATE_FORMAT"]

GROUPED_STATE_FORMAT = "rfmx-grouped-state"
#: schema metadata key of finalized and scored tables: the group columns (JSON list)
GROUP_META = b"rfmx.group"
CUSTOMER_BITS = 44            # int keys: customer ids below 2**44 ...
MAX_INT_GROUPS = 1 << 19      # ... and group codes below 2**19 keep the key a positive int64
_CODE_BYTES = 4


def check_group(group, columns: ColumnMap | None = None) -> tuple[str, ...]:
    """Group column names as a tuple (``"shop_id"``, ``"shop_id,market"`` or a list); None
    or empty gives ``()``.  Refuses a repeated name or a column the order mapping uses."""
    if group is None:
        return ()
    if isinstance(group, str):
        names = [g.strip() for g in group.split(",")]
    else:
        names = [str(g).strip() for g in group]
    names = [g for g in names if g]
    if len(set(names)) != len(names):
        raise RfmxError(f"group: a column is named twice in {', '.join(names)}")
    if columns is not None:
        for g in names:
            if g in columns.names():
                raise RfmxError(f"group: column '{g}' is already mapped as a customer, time, amount or order id "
                                f"column; group by another column")
    return tuple(names)


@dataclass(frozen=True)
class GroupedColumns(ColumnMap):
    """The column mapping of a grouped state's input: the order columns plus the group columns."""

    group: tuple = field(default=())

    def names(self) -> list[str]:
        base = super().names()
        return base + [g for g in self.group if g not in base]

    def order_columns(self) -> ColumnMap:
        return ColumnMap(self.customer, self.time, self.amount, self.order_id, self.cost)


def _plain(arr) -> pa.Array:
    """A column as one plain (not dictionary-encoded, not chunked) array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary.take(arr.indices)
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    elif pa.types.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
    return arr


class GroupKeys:
    """Group values -> dense codes, and (group, customer) -> one exact composite key, both ways.

    One instance per grouped state: it remembers every group value seen (in order of
    first appearance), the group columns' and the customer ids' types, and whether keys
    are packed integers or byte strings.
    """

    def __init__(self, columns: tuple[str, ...], customer: str = "customer_id"):
        self.columns = tuple(columns)
        self.customer = customer
        self.values: list[tuple] = []            # group code -> its values
        self._codes: dict[tuple, int] = {}
        self.types: list[pa.DataType | None] = [None] * len(columns)
        self.mode = "int"
        self.customer_kind: str | None = None    # "int" or "bytes"
        self.customer_type: pa.DataType | None = None
        self._above_int64 = False                # uint64 customer ids of 2**63 and up seen
        self._negative = False                   # negative customer ids seen

    @property
    def n_groups(self) -> int:
        return len(self.values)

    # --- group values ------------------------------------------------------------

    def _check_type(self, j: int, t: pa.DataType, where: str) -> None:
        name = self.columns[j]
        if pa.types.is_floating(t) or pa.types.is_decimal(t):
            raise RfmxError(f"{where}: group column '{name}' has type {t}; group by exact values "
                            f"(integers, strings, dates), not by numbers with fractions")
        if pa.types.is_null(t):
            return
        known = self.types[j]
        if known is None:
            self.types[j] = t
        elif known != t:
            if value_kind(known) != value_kind(t):
                raise RfmxError(f"{where}: group column '{name}' has type {t} but earlier input had {known}; "
                                f"one group column's values must all be of one kind")
            if value_kind(t) == "integer":
                self.types[j] = pa.int64()  # widened; uint64 beyond int64 is decided when decoding

    def codes(self, columns: list, where: str, *, null_group: bool = False) -> np.ndarray:
        """Group code per row (int64; -1 where a group column is null) of the group ``columns``
        (Arrow arrays, in the order of :attr:`columns`), coding values seen for the first time.
        ``null_group``: a null is a value like any other (its group's value is None)."""
        n = len(columns[0]) if columns else 0
        local = None
        local_values: list[tuple] = []
        valid = np.ones(n, dtype=np.bool_)
        for j, arr in enumerate(columns):
            arr = _plain(arr)
            self._check_type(j, arr.type, where)
            enc = pc.dictionary_encode(arr, null_encoding="encode" if null_group else "mask")
            idx = enc.indices
            if idx.null_count:
                valid &= np.asarray(idx.is_valid())
                idx = idx.fill_null(0)
            idx = np.asarray(idx).astype(np.int64)
            values = enc.dictionary.to_pylist()
            if local is None:
                local, local_values = idx, [(v,) for v in values]
                continue
            # Combine with the earlier columns and make the combined index dense again, so it
            # never grows past the batch's row count squared.
            combined = local * max(len(values), 1) + idx
            uniq, inv = np.unique(combined, return_inverse=True)
            local_values = [local_values[int(u) // max(len(values), 1)] + (values[int(u) % max(len(values), 1)],)
                            for u in uniq]
            local = inv.astype(np.int64)
        if local is None:
            return np.zeros(n, dtype=np.int64)
        lut = np.empty(len(local_values), dtype=np.int64)
        codes_of = self._codes
        for i, key in enumerate(local_values):
            code = codes_of.get(key)
            if code is None:
                code = codes_of[key] = len(self.values)
                self.values.append(key)
            lut[i] = code
        out = lut[local] if len(lut) else np.zeros(n, dtype=np.int64)
        if not valid.all():
            out[~valid] = -1
        return out

    def group_arrays(self, codes: np.ndarray) -> list[pa.Array]:
        """The group columns' values of group ``codes``, with the input's types."""
        out = []
        take = pa.array(codes)
        for j, name in enumerate(self.columns):
            vals = [v[j] for v in self.values]
            t = self.types[j] or pa.null()
            try:
                arr = pa.array(vals, type=t)
            except (pa.ArrowInvalid, OverflowError):
                if value_kind(t) != "integer":
                    raise
                try:
                    arr = pa.array(vals, type=pa.uint64())
                except (pa.ArrowInvalid, OverflowError):
                    raise RfmxError(f"group column '{name}' holds negative values and values above int64's "
                                    f"range: no 64-bit integer type holds both exactly; give them as strings") from None
            out.append(arr.take(take))
        return out

    # --- customers ---------------------------------------------------------------

    def _adopt_customers(self, ids, where: str) -> None:
        if self.customer_kind is not None and ids.kind != self.customer_kind:
            raise RfmxError(f"{where}: column '{self.customer}' (customer id) has type {ids.arrow_type} but earlier "
                            f"input had {self.customer_type}; customer ids must be all integers or all strings")
        if ids.kind == "int" and len(ids):
            unsigned = ids.arrow_type == pa.uint64()
            has_negative = bool((ids.ints < 0).any())
            if unsigned:
                self._above_int64 |= has_negative
            else:
                self._negative |= has_negative
            if self._above_int64 and self._negative:
                raise RfmxError(f"{where}: column '{self.customer}' (customer id) holds negative ids and uint64 ids "
                                f"above int64's range: no 64-bit integer type holds both exactly; give the ids as strings")
        if self.customer_kind is None:
            self.customer_kind, self.customer_type = ids.kind, ids.arrow_type
        elif ids.kind == "int" and ids.arrow_type != self.customer_type:
            self.customer_type = pa.uint64() if self._above_int64 else pa.int64()

    def _fits_int(self, ids) -> bool:
        if ids.kind != "int" or self.n_groups > MAX_INT_GROUPS:
            return False
        if not len(ids):
            return True
        return bool(ids.ints.min() >= 0) and bool(ids.ints.max() < (1 << CUSTOMER_BITS))

    def keys(self, codes: np.ndarray, customer: pa.Array, where: str) -> tuple[pa.Array, bool]:
        """Composite keys of rows with group ``codes`` and ``customer`` ids (null where either
        is null), and whether the keys just switched from packed integers to byte strings
        (the state must then re-key what it holds: :meth:`GroupedState._rekey`)."""
        customer = _plain(customer)
        if pa.types.is_null(customer.type):
            return pa.nulls(len(customer), pa.int64() if self.mode == "int" else pa.large_binary()), False
        null = ~np.asarray(customer.is_valid()) if customer.null_count else None
        if null is not None:
            customer = customer.fill_null(0 if pa.types.is_integer(customer.type) else "")
        ids = customer_ids(customer, where, self.customer)
        self._adopt_customers(ids, where)
        switched = False
        if self.mode == "int" and not self._fits_int(ids):
            self.mode, switched = "bytes", True
        gnull = codes < 0
        mask = gnull if null is None else (gnull | null)
        safe = np.where(gnull, 0, codes)
        if self.mode == "int":
            keys = (safe << CUSTOMER_BITS) | ids.ints
            return pa.array(keys, mask=mask if mask.any() else None), switched
        return _bytes_keys(safe, ids, mask if mask.any() else None), switched

    def decode(self, keys: pa.Array) -> tuple[np.ndarray, pa.Array]:
        """``(group codes, customer ids with their input type)`` of composite ``keys``."""
        keys = _plain(keys)
        n = len(keys)
        if self.mode == "int" and pa.types.is_integer(keys.type):
            k = np.asarray(keys.cast(pa.int64()))
            codes = k >> CUSTOMER_BITS
            ints = k & ((1 << CUSTOMER_BITS) - 1)
            return codes, self._customer_array(ints=ints)
        bufs = keys.buffers()
        offsets = np.frombuffer(bufs[1], dtype=np.int64 if pa.types.is_large_binary(keys.type) else np.int32)
        offsets = offsets[keys.offset: keys.offset + n + 1].astype(np.int64)
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        head = offsets[:-1, None] + np.arange(_CODE_BYTES)
        codes = data[head].astype(np.int64) if n else np.zeros((0, _CODE_BYTES), np.int64)
        codes = (codes[:, 0] << 24) | (codes[:, 1] << 16) | (codes[:, 2] << 8) | codes[:, 3]
        if self.customer_kind == "int":
            body = data[offsets[:-1, None] + _CODE_BYTES + np.arange(8)] if n else np.zeros((0, 8), np.uint8)
            ints = np.ascontiguousarray(body).view("<i8").reshape(-1).astype(np.int64)
            return codes, self._customer_array(ints=ints)
        prefix = np.zeros(len(data), dtype=np.bool_)
        if n:
            prefix[head.reshape(-1)] = True
        body = data[offsets[0]:offsets[-1]][~prefix[offsets[0]:offsets[-1]]] if n else np.zeros(0, np.uint8)
        new_offsets = offsets - offsets[0] - _CODE_BYTES * np.arange(n + 1)
        return codes, self._customer_array(offsets=new_offsets, data=body)

    def _customer_array(self, ints=None, offsets=None, data=None) -> pa.Array:
        t = self.customer_type or pa.int64()
        if ints is not None:
            if t == pa.uint64():
                return pa.array(ints.view(np.uint64))
            return pa.array(ints).cast(t)
        textual = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
        big = pa.large_string() if textual else pa.large_binary()
        arr = pa.Array.from_buffers(big, len(offsets) - 1,
                                    [None, pa.py_buffer(offsets), pa.py_buffer(data if len(data) else b"")])
        try:
            return arr.cast(t)
        except (pa.ArrowInvalid, pa.ArrowCapacityError):
            return arr

    def meta(self) -> dict:
        return {"columns": list(self.columns), "types": [str(t) if t is not None else None for t in self.types]}


def _bytes_keys(codes: np.ndarray, ids, mask) -> pa.Array:
    """4 bytes of group code (big-endian) + the customer id's bytes, as large_binary."""
    n = len(codes)
    head = codes.astype(">u4").view(np.uint8).reshape(n, _CODE_BYTES)
    if ids.kind == "int":
        body = ids.ints.astype("<i8").view(np.uint8).reshape(n, 8)
        data = np.concatenate([head, body], axis=1).reshape(-1)
        offsets = np.arange(n + 1, dtype=np.int64) * (_CODE_BYTES + 8)
    else:
        src = ids.data[ids.offsets[0]:ids.offsets[-1]] if n else np.zeros(0, np.uint8)
        offsets = ids.offsets - ids.offsets[0] + _CODE_BYTES * np.arange(n + 1, dtype=np.int64)
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        prefix = np.zeros(len(data), dtype=np.bool_)
        at = (offsets[:-1, None] + np.arange(_CODE_BYTES)).reshape(-1)
        prefix[at] = True
        data[at] = head.reshape(-1)
        data[~prefix] = src
    validity = None
    if mask is not None:
        validity = pa.array(~mask).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), n, [validity, pa.py_buffer(offsets),
                                                         pa.py_buffer(data if len(data) else b"")],
                                 null_count=int(mask.sum()) if mask is not None else 0)


class GroupedState:
    """A per-(group, customer) state: :class:`~rfmx.state.RFMState` with a group key.

    ``update``, ``merge``, ``finalize``, ``save``/``load`` and ``to_table``/``from_table``
    behave as the state's do; outputs carry the group columns first, then ``customer_id``.
    Other attributes (counters, window, ``columns``) are the wrapped state's.
    """

    _OWN = ("inner", "group", "keys", "read_columns")

    def __init__(self, inner, group):
        from .state import RFMState

        if not isinstance(inner, RFMState):
            raise RfmxError("a grouped state wraps an RFMState")
        group = check_group(group, inner.columns)
        if not group:
            raise RfmxError("a grouped state needs at least one group column")
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "keys", GroupKeys(group, inner.columns.customer))
        c = inner.columns
        object.__setattr__(self, "read_columns", GroupedColumns(c.customer, c.time, c.amount, c.order_id, c.cost, group))

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def update(self, batch, *, source: str = "<batch>", row0: int = 0) -> "GroupedState":
        """Fold a batch of order lines (with the group columns) into the state."""
        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self.update(b, source=source, row0=row0)
                row0 += b.num_rows
            return self
        from .columns import check_columns, raise_on_nulls

        check_columns(batch.schema, self.read_columns, source)
        if self.inner.on_null == "error":
            raise_on_nulls(batch, self.read_columns, source, row0)
        codes = self.keys.codes([batch.column(g) for g in self.group], source)
        keys, switched = self.keys.keys(codes, batch.column(self.inner.columns.customer), source)
        if switched:
            self._rekey()
        i = batch.schema.get_field_index(self.inner.columns.customer)
        batch = batch.set_column(i, self.inner.columns.customer, keys)
        # The wrapped state reads the order columns: rows with a null group have a null key,
        # so on_null="skip" drops and counts them there, with the right row numbers.
        self.inner.update(batch, source=source, row0=row0)
        return self

    def _rekey(self) -> None:
        """Re-key the held pairs from packed integers to byte strings (once, when an id or
        the group count stopped fitting)."""
        from .state import RFMState

        if self.inner.n_customers == 0:
            fresh = RFMState(*self._order_args(), **self._state_args())
            self._copy_settings(fresh)
            object.__setattr__(self, "inner", fresh)
            return
        saved = self.keys.mode
        self.keys.mode = "int"
        table = self.inner.to_table()
        codes, customers = self.keys.decode(table.column("customer_id"))
        self.keys.mode = saved
        ids = customer_ids(customers, "<state>", "customer_id")
        keys = _bytes_keys(codes, ids, None)
        table = _with_meta(table.set_column(0, "customer_id", keys), id_type=str(pa.large_binary()), id_kind="bytes")
        fresh = RFMState.from_table(table, threads=self.inner.threads)
        self._copy_settings(fresh)
        fresh.rows_loaded, fresh.customers_loaded = self.inner.rows_loaded, self.inner.customers_loaded
        object.__setattr__(self, "inner", fresh)

    def _order_args(self):
        c = self.inner.columns
        return c.customer, c.time, c.amount, c.order_id

    def _state_args(self) -> dict:
        s = self.inner
        return dict(since=s.since_us, until=s.until_us, amount_scale=s.amount_scale, on_null=s.on_null,
                    threads=s.threads, timezone=s.timezone, cost=s.columns.cost)

    def _copy_settings(self, fresh) -> None:
        s = self.inner
        fresh.on_null, fresh.rounding = s.on_null, s.rounding
        for name in ("rows_read", "rows_null_skipped", "rows_outside_window", "amounts_rounded", "max_time_us",
                     "time_zone"):
            setattr(fresh, name, getattr(s, name))

    def merge(self, other: "GroupedState", *, what: str = "the other state") -> "GroupedState":
        """Fold ``other`` (grouped by the same columns) into this state; exact in every field."""
        if not isinstance(other, GroupedState) or other.group != self.group:
            theirs = other.group if isinstance(other, GroupedState) else "nothing"
            raise RfmxError(f"{what} is grouped by {theirs}, this state by {', '.join(self.group)}")
        self._fold_table(other.to_table(), what, merge=True)
        return self

    def _fold_table(self, table: pa.Table, what, *, merge: bool) -> None:
        """Fold a saved grouped state's table (group columns, customer_id, fields) into this one."""
        from .state import RFMState

        codes = self.keys.codes([table.column(g) for g in self.group], str(what))
        keys, switched = self.keys.keys(codes, table.column("customer_id"), str(what))
        if switched:
            self._rekey()
        inner_table = table.drop_columns(list(self.group)).set_column(0, "customer_id", keys)
        meta = json.loads(table.schema.metadata[b"rfmx.state"])
        meta.pop("group", None)
        meta.update(format="rfmx-state", id_type=str(keys.type) if table.num_rows else None,
                    id_kind=("int" if self.keys.mode == "int" else "bytes") if table.num_rows else None)
        inner_table = inner_table.replace_schema_metadata({"rfmx.state": json.dumps(meta)})
        part = RFMState.from_table(inner_table, what=what, threads=self.inner.threads)
        if merge:
            self.inner.merge(part, what=str(what))
        else:
            object.__setattr__(self, "inner", part)
            part.rows_loaded, part.customers_loaded = part.rows_read, part.n_customers

    def finalize(self, as_of=None, *, consume: bool = False) -> pa.Table:
        """The per-(group, customer) table: the group columns, then the columns of
        :meth:`RFMState.finalize <rfmx.state.RFMState.finalize>`."""
        return self.decoded(self.inner.finalize(as_of, consume=consume))

    def decoded(self, table: pa.Table) -> pa.Table:
        """``table`` (keyed by composite ids in ``customer_id``) with the group columns in
        front and the customer ids as given."""
        codes, customers = self.keys.decode(table.column("customer_id"))
        table = table.set_column(table.schema.get_field_index("customer_id"), "customer_id", customers)
        for j, arr in reversed(list(enumerate(self.keys.group_arrays(codes)))):
            table = table.add_column(0, self.group[j], arr)
        meta = dict(table.schema.metadata or {})
        meta[GROUP_META] = json.dumps(list(self.group)).encode()
        return table.replace_schema_metadata(meta)

    @property
    def n_groups(self) -> int:
        return self.keys.n_groups

    def to_table(self) -> pa.Table:
        """The raw state as saved: the group columns, ``customer_id`` and the exact fields."""
        table = self.inner.to_table()
        meta = json.loads(table.schema.metadata[b"rfmx.state"])
        out = self.decoded(table)
        meta.update(format=GROUPED_STATE_FORMAT, group=self.keys.meta(),
                    id_type=str(self.keys.customer_type) if self.keys.customer_type is not None else None,
                    id_kind=self.keys.customer_kind if table.num_rows else None)
        return out.replace_schema_metadata({"rfmx.state": json.dumps(meta)})

    def save(self, path) -> None:
        """Write the state as an Arrow IPC file (atomically), as :meth:`RFMState.save` does."""
        from .state import RFMState

        RFMState.save(self, path)

    @classmethod
    def load(cls, path, *, threads: int | None = None) -> "GroupedState":
        """Read a grouped state written by :meth:`save` (damaged or foreign files are refused)."""
        from pathlib import Path

        from .state import read_state_file

        path = Path(path)
        return cls.from_table(read_state_file(path), what=path, threads=threads)

    @classmethod
    def from_table(cls, table: pa.Table, *, what="<state table>", threads: int | None = None) -> "GroupedState":
        """The grouped state whose :meth:`to_table` is ``table``."""
        from .state import RFMState, read_state_meta

        raw = (table.schema.metadata or {}).get(b"rfmx.state")
        group = None
        try:
            group = json.loads(raw).get("group") if raw is not None else None
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
        if not isinstance(group, dict) or not isinstance(group.get("columns"), list) or not group["columns"] \
                or not all(isinstance(c, str) for c in group["columns"]):
            read_state_meta(what, table, GROUPED_STATE_FORMAT)  # names what is wrong, if it can
            raise RfmxError(f"{what}: damaged grouped state file: metadata 'group' is {group!r}")
        meta = read_state_meta(what, table, GROUPED_STATE_FORMAT, extra_keys={"group": (dict,)},
                               extra_columns=tuple(group["columns"]))
        c = meta["columns"]
        inner = RFMState(c["customer"], c["time"], c["amount"], c["order_id"], since=meta["since_us"],
                         until=meta["until_us"], amount_scale=meta["amount_scale"], threads=threads,
                         timezone=meta["timezone"])
        state = cls(inner, group["columns"])
        for j, t in enumerate(group.get("types") or []):
            if t is not None and j < len(state.group):
                state.keys._check_type(j, table.schema.field(state.group[j]).type, str(what))
        state._fold_table(table, what, merge=False)
        if state.inner.n_customers != table.num_rows:
            raise RfmxError(f"{what}: damaged state file: a (group, customer) pair occurs more than once")
        return state

    def __repr__(self) -> str:
        return f"GroupedState(by {', '.join(self.group)}: {self.n_groups} groups, {self.inner!r})"


def _with_meta(table: pa.Table, **changes) -> pa.Table:
    meta = json.loads(table.schema.metadata[b"rfmx.state"])
    meta.update(changes)
    return table.replace_schema_metadata({"rfmx.state": json.dumps(meta)})


def load_state(path, *, threads: int | None = None):
    """A saved one-window state, grouped (:class:`GroupedState`) or not (:class:`RFMState`),
    as its file says."""
    from pathlib import Path

    from .state import RFMState, read_state_file

    path = Path(path)
    table = read_state_file(path)
    raw = (table.schema.metadata or {}).get(b"rfmx.state")
    try:
        fmt = json.loads(raw).get("format") if raw is not None else None
    except (ValueError, UnicodeDecodeError, AttributeError):
        fmt = None
    if fmt == GROUPED_STATE_FORMAT:
        return GroupedState.from_table(table, what=path, threads=threads)
    return RFMState.from_table(table, what=path, threads=threads)


def group_columns_of(table: pa.Table) -> tuple[str, ...]:
    """The group columns a finalized or scored table records (``()`` if none)."""
    raw = (table.schema.metadata or {}).get(GROUP_META)
    if raw is None:
        return ()
    try:
        names = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ()
    return tuple(n for n in names if isinstance(n, str) and n in table.column_names)


@dataclass
class GroupIndex:
    """The groups of a per-customer table: a dense code per row and each group's rows."""

    columns: tuple[str, ...]
    codes: np.ndarray          # int64 per row, 0..n_groups-1 (first appearance order)
    n_groups: int
    order: np.ndarray          # rows, group by group (table order within a group)
    starts: np.ndarray         # group g's rows are order[starts[g]:starts[g+1]]
    keys: GroupKeys

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def values(self) -> list[pa.Array]:
        """One array per group column: the value of each group (by code)."""
        return self.keys.group_arrays(np.arange(self.n_groups, dtype=np.int64))


def group_index(table: pa.Table, columns, *, nulls: str = "refuse") -> GroupIndex:
    """Code ``table``'s rows by the values of ``columns`` (one or more).  ``nulls``:
    ``"refuse"`` (an error naming the column) or ``"group"`` (null is a group of its own, as
    customers without attributes are in a breakdown by an attribute)."""
    from .kernels.groups import group_order

    columns = check_group(columns)
    for name in columns:
        if name not in table.column_names:
            raise RfmxError(f"group column '{name}' not found; columns are: {', '.join(table.column_names)}")
        col = table.column(name)
        if col.null_count and nulls != "group":
            first = int(np.flatnonzero(~np.asarray(_plain(col).is_valid()))[0])
            raise RfmxError(f"group column '{name}' has {col.null_count:,} null value(s), first at row {first}")
    keys = GroupKeys(columns)
    codes = keys.codes([table.column(g) for g in columns], "<table>", null_group=nulls == "group")
    starts = np.empty(keys.n_groups + 1, dtype=np.int64)
    order = np.empty(len(codes), dtype=np.int64)
    group_order(codes, np.int64(keys.n_groups), starts, order)
    return GroupIndex(columns, codes, keys.n_groups, order, starts, keys)
