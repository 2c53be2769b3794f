"""Segment migration between two scored snapshots of the same customers.

Pure functions over two scored per-customer tables (the output of :func:`rfmx.score`,
e.g. at two consecutive as-of dates): customers are matched exactly on ``customer_id``
(an Arrow hash lookup, any id type), and counted by (segment in the earlier snapshot,
segment in the later one).  Definitions are in ``docs/scores.md`` ("Migration and
cohorts"); in short:

- ``(new)`` is the from-state of customers absent from the earlier snapshot (no order
  before it); ``(gone)`` the to-state of customers absent from the later one (possible
  only with windowed snapshots, ``since=``); ``(none)`` a null segment (a map without a
  default).
- Revenue is the later snapshot's net money of the customers in a cell.
- Up and down follow the segment map's order, best first (:attr:`SegmentMap.order`);
  *lapsed* means moving from outside the map's lapsed segments into them
  (:attr:`SegmentMap.lapsed`; rfm-grid: Hibernating, Lost).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import RfmxError
from .tables import combined, group_codes, money_column, numeric_column, summable, value_kind

__all__ = ["migration", "migration_summary", "segment_changes", "rows_in_earlier", "earlier_rows_of", "segment_order",
           "NEW", "GONE", "NONE"]

NEW = "(new)"     # from-state: not in the earlier snapshot
GONE = "(gone)"   # to-state: not in the later snapshot
NONE = "(none)"   # a null segment (no rule matched, map without a default)
_ID = "customer_id"


# --- inputs ---------------------------------------------------------------------------

def _require(table: pa.Table, columns, which: str) -> None:
    if not isinstance(table, pa.Table):
        raise RfmxError(f"the {which} snapshot must be a pyarrow.Table (a scored table of rfmx.score), "
                        f"got {type(table).__name__}")
    for c in columns:
        if c not in table.column_names:
            raise RfmxError(f"the {which} snapshot has no '{c}' column; migration needs scored tables "
                            f"(rfmx.score) with {', '.join(columns)}")


def _ids(table: pa.Table, which: str) -> pa.Array:
    arr = combined(table.column(_ID))
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.null_count:
        raise RfmxError(f"the {which} snapshot has a null customer_id at row "
                        f"{int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])}")
    return arr


def _matched_ids(earlier: pa.Table, later: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Both id columns in one comparable type; a one-line error if they cannot be compared."""
    a, b = _ids(earlier, "earlier"), _ids(later, "later")
    ka, kb = value_kind(a.type), value_kind(b.type)
    if ka != kb:
        raise RfmxError(f"customer_id has type {a.type} in the earlier snapshot but {b.type} in the later one; "
                        f"ids are matched exactly, so both must be {ka}s or both {kb}s")
    if a.type != b.type:  # widths differ (int32/int64, string/large_string): one common type
        target = pa.int64() if ka == "integer" else (pa.large_string() if ka == "string" else pa.large_binary())
        try:
            a, b = a.cast(target), b.cast(target)
        except pa.ArrowInvalid as exc:
            raise RfmxError(f"customer_id: cannot compare {a.type} with {b.type}: {exc}") from None
    return a, b


def _join(a_ids: pa.Array, b_ids: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact join on customer_id: for each later customer its row in the earlier
    snapshot (-1: new), whether it has one, and the earlier rows absent later; a one-line
    error if either snapshot lists a customer twice.

    One hash pass (Arrow's dictionary encoding of both id columns together) gives every id
    a code; the uniqueness checks and the join are then array lookups on those codes.  (A
    distinct count per table and a lookup of one table in the other were three hash passes
    and most of the migration's time.)
    """
    codes = pc.dictionary_encode(pa.concat_arrays([a_ids, b_ids]))
    n_codes = len(codes.dictionary)
    codes = np.asarray(codes.indices).astype(np.int64, copy=False)
    ca, cb = codes[: len(a_ids)], codes[len(a_ids):]
    for c, ids, which in ((ca, a_ids, "earlier"), (cb, b_ids, "later")):
        counts = np.bincount(c, minlength=n_codes)
        if len(c) and counts.max() > 1:
            dup = ids[int(np.flatnonzero(counts[c] > 1)[0])].as_py()
            raise RfmxError(f"the {which} snapshot lists customer_id {dup!r} more than once; "
                            f"a scored table has one row per customer")
    row_of_code = np.full(n_codes, -1, dtype=np.int64)
    row_of_code[ca] = np.arange(len(ca), dtype=np.int64)
    row_in_a = row_of_code[cb]
    matched = row_in_a >= 0
    seen = np.zeros(len(a_ids), dtype=np.bool_)
    seen[row_in_a[matched]] = True
    return row_in_a, matched, np.flatnonzero(~seen)


def rows_in_earlier(earlier_state_rows, later_state_rows) -> np.ndarray:
    """For two snapshots of one timeline state: each later row's row in the earlier
    snapshot (-1: not in it), from the ``state_rows`` that
    :meth:`rfmx.TimelineState.snapshots` yields with ``with_state_rows=True``.  A lookup by
    position (both lists ascending, one state's customers), not a join on the ids; pass
    it to :func:`migration` / :func:`segment_changes` as ``earlier_rows``."""
    from .kernels.scores import rows_of_ascending

    out = np.empty(len(later_state_rows), dtype=np.int64)
    if not rows_of_ascending(np.asarray(earlier_state_rows, dtype=np.int64),
                             np.asarray(later_state_rows, dtype=np.int64), out):
        raise RfmxError("state rows must be ascending, as TimelineState.snapshots(with_state_rows=True) gives them")
    return out


def _known_join(a_ids: pa.Array, b_ids: pa.Array, earlier_rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_join` from a given match (``earlier_rows``: each later row's earlier row,
    -1 for none), checked instead of computed: in range, no earlier row matched twice, and
    the same id on both sides of every match.  The caller answers for each table listing
    a customer once (true of the snapshots of one state)."""
    from .kernels.scores import check_match

    row_in_a = np.asarray(earlier_rows)
    if row_in_a.shape != (len(b_ids),) or row_in_a.dtype.kind not in "iu":
        raise RfmxError(f"earlier_rows must be an integer array with one entry per row of the later snapshot "
                        f"({len(b_ids)}), got {row_in_a.dtype} of shape {row_in_a.shape}")
    row_in_a = row_in_a.astype(np.int64, copy=False)
    ints = pa.types.is_int64(a_ids.type) and not a_ids.null_count and not b_ids.null_count
    keys = (a_ids.to_numpy(), b_ids.to_numpy()) if ints else (np.empty(0, np.int64),) * 2
    seen = np.zeros(len(a_ids), dtype=np.bool_)
    bad = check_match(row_in_a, len(a_ids), keys[0], keys[1], seen)
    if bad >= 0:
        raise RfmxError(f"earlier_rows[{bad}] = {row_in_a[bad]} is not a row of the earlier snapshot's "
                        f"{len(a_ids)} or matches one row twice; it does not belong to these two snapshots")
    matched = row_in_a >= 0
    if bad == -1 and not ints:
        later = b_ids.filter(pa.array(matched)) if not matched.all() else b_ids
        same = pc.equal(a_ids.take(pa.array(row_in_a[matched])), later).to_numpy(zero_copy_only=False)
        if not same.all():
            bad = -2 - int(np.flatnonzero(matched)[np.flatnonzero(~same)[0]])
    if bad <= -2:
        at = -2 - bad
        raise RfmxError(f"earlier_rows matches later row {at} (customer_id {b_ids[at].as_py()!r}) to a row of "
                        f"another customer; it does not belong to these two snapshots")
    return row_in_a, matched, np.flatnonzero(~seen)


def earlier_rows_of(earlier: pa.Table, later: pa.Table, earlier_rows=None) -> np.ndarray:
    """Each row of ``later``'s row in ``earlier`` (-1: not in it), matched exactly on
    ``customer_id`` (one hash pass), or ``earlier_rows`` (:func:`rows_in_earlier`) checked."""
    _require(earlier, (_ID,), "earlier")
    _require(later, (_ID,), "later")
    return _match(*_matched_ids(earlier, later), earlier_rows)[0]


def _match(a_ids: pa.Array, b_ids: pa.Array, earlier_rows):
    return _join(a_ids, b_ids) if earlier_rows is None else _known_join(a_ids, b_ids, earlier_rows)


def _as_of(table: pa.Table) -> str | None:
    raw = (table.schema.metadata or {}).get(b"rfmx.as_of")
    return raw.decode() if raw else None


def _check_as_of(a: str | None, b: str | None) -> None:
    try:
        ta, tb = datetime.fromisoformat(a), datetime.fromisoformat(b)
        after = ta > tb
    except (TypeError, ValueError):  # a missing, unparsable or naive-vs-zoned date: no check
        return
    if after:
        raise RfmxError(f"the earlier snapshot (as of {a}) is after the later one (as of {b}); "
                        f"pass the snapshots in time order")


def segment_order(segments, earlier: pa.Table, later: pa.Table):
    """(segment names best first, lapsed names, what they came from) from ``segments`` (a
    map, a map name or path, or a list of names best first) or, when None, the segment map
    recorded in the tables' score metadata (``rfm-grid`` when none is)."""
    from .segments import SegmentMap

    if isinstance(segments, (list, tuple)):
        names = [str(s) for s in segments]
        if not names:
            raise RfmxError("segments: the order list is empty")
        twice = [v for i, v in enumerate(names) if v in names[:i]]
        if twice:
            raise RfmxError(f"segments: '{twice[0]}' is listed twice in the order")
        return names, names[-1:], "the order list"
    if segments is None:
        source = None
        for t in (later, earlier):
            raw = (t.schema.metadata or {}).get(b"rfmx.scores")
            info = json.loads(raw).get("segments") if raw else None
            if info:
                source = info.get("source")
                break
        try:
            smap = SegmentMap.resolve(source or "rfm-grid")
        except RfmxError as exc:
            raise RfmxError(f"the tables were scored with segment map {source!r}, which cannot be read "
                            f"({exc}); pass segments=") from None
    else:
        smap = SegmentMap.resolve(segments)
    return smap.order, smap.lapsed, f"segment map '{smap.name}'"


def _segment_index(table: pa.Table, by: str, position: dict, which: str, what: str):
    """Each row's segment as ``(codes, remap)``: dictionary codes (-1: null) and each
    code's position in the order, then ``position[NONE]`` for null."""
    codes, names = group_codes(table, by)
    unknown = [n for n in names if n not in position]
    if unknown:
        raise RfmxError(f"the {which} snapshot has segment '{unknown[0]}' in column '{by}', which {what} does "
                        f"not list; pass segments= the map the tables were scored with (or an order list)")
    return codes, np.array([position[n] for n in names] + [position[NONE]], dtype=np.int64)


@dataclass
class _Cells:
    """The (from state, to state) matrix of two snapshots: customers and later money."""

    counts: np.ndarray         # (k, k) int64 customers
    revenue: np.ndarray        # (k, k) int64 minor units or float64: the later snapshot's money
    unit: float
    states: list               # state names; 0..k-3 the segment order, then NONE, NEW, GONE
    lapsed: list
    as_of: tuple


def _cells(earlier: pa.Table, later: pa.Table, segments, by: str, earlier_rows) -> _Cells:
    from .kernels.scores import migration_cells

    _require(earlier, (_ID, by), "earlier")
    _require(later, (_ID, by), "later")
    a_ids, b_ids = _matched_ids(earlier, later)
    money_name, unit = money_column(later)
    as_of = (_as_of(earlier), _as_of(later))
    _check_as_of(*as_of)
    order, lapsed, what = segment_order(segments, earlier, later)
    states = list(order) + [NONE, NEW, GONE]
    position = {s: i for i, s in enumerate(states)}
    codes_a, remap_a = _segment_index(earlier, by, position, "earlier", what)
    codes_b, remap_b = _segment_index(later, by, position, "later", what)

    row_in_a, _, _ = _match(a_ids, b_ids, earlier_rows)

    col = numeric_column(later, money_name)
    money = summable(np.where(col.valid, col.values, 0) if col.valid is not None else col.values)
    k = len(states)
    counts = np.zeros(k * k, dtype=np.int64)
    revenue = np.zeros(k * k, dtype=money.dtype)
    migration_cells(row_in_a, codes_a, remap_a, codes_b, remap_b, money, position[NEW], position[GONE], counts,
                    revenue, np.zeros(len(codes_a), dtype=np.bool_))
    return _Cells(counts.reshape(k, k), revenue.reshape(k, k), unit, states, list(lapsed), as_of)


def _with_as_of(data: dict, as_of: tuple, n: int) -> dict:
    if as_of[0] is not None or as_of[1] is not None:
        data["as_of_from"] = pa.array([as_of[0]] * n, pa.string())
        data["as_of_to"] = pa.array([as_of[1]] * n, pa.string())
    return data


# --- the tables -----------------------------------------------------------------------

def migration(earlier: pa.Table, later: pa.Table, *, segments=None, by: str = "segment",
              earlier_rows=None) -> pa.Table:
    """From-segment x to-segment counts of customers and of revenue between two snapshots.

    ``earlier``, ``later``: scored per-customer tables (:func:`rfmx.score`) with
    ``customer_id`` and ``by`` (default ``segment``); ``later`` also needs its money
    (``monetary_minor`` with the ``rfmx.amount_scale`` metadata, else ``monetary_total``).
    ``segments``: the segment map the tables were scored with (a built-in name, a TOML
    path or a :class:`~rfmx.segments.SegmentMap`; default: the map recorded in the tables'
    ``rfmx.scores`` metadata, else ``rfm-grid``), or a list of segment names best first.

    Returns one row per (from, to) pair, every pair of the map's segments included (zero
    counts too, so a pivot is the full matrix), rows in the map's order with ``(new)``
    after the segments: ``from_segment`` (a segment, ``(none)`` for a null segment, or
    ``(new)``: absent from ``earlier``), ``to_segment`` (a segment, ``(none)``, or
    ``(gone)``: absent from ``later``), ``customers`` (int64), ``revenue`` (float64: the
    customers' net money in ``later``), and ``as_of_from``/``as_of_to`` (the tables'
    ``rfmx.as_of`` metadata, ISO 8601 strings) when either table carries it.  The
    ``(none)`` states and ``(gone)`` appear only when some customer is in them.
    """
    p = _cells(earlier, later, segments, by, earlier_rows)
    k = len(p.states)
    exact = p.revenue.dtype.kind == "i"
    n_seg = k - 3
    used = p.counts.sum(axis=0) + p.counts.sum(axis=1)
    optional = lambda s: [s] if used[s] else []  # noqa: E731
    froms = list(range(n_seg)) + optional(n_seg) + [n_seg + 1]
    tos = list(range(n_seg)) + optional(n_seg) + optional(n_seg + 2)
    data = {
        "from_segment": pa.array([p.states[f] for f in froms for _ in tos], pa.string()),
        "to_segment": pa.array([p.states[t] for _ in froms for t in tos], pa.string()),
        "customers": pa.array([int(p.counts[f, t]) for f in froms for t in tos], pa.int64()),
        "revenue": pa.array([(int(p.revenue[f, t]) if exact else float(p.revenue[f, t])) / p.unit
                             for f in froms for t in tos], pa.float64()),
    }
    return pa.table(_with_as_of(data, p.as_of, len(froms) * len(tos)))


def migration_summary(earlier: pa.Table, later: pa.Table, *, segments=None, by: str = "segment",
                      earlier_rows=None) -> pa.Table:
    """Per from-segment: how many customers, and the shares that stayed, moved up, moved
    down or lapsed.

    Arguments as :func:`migration`.  A customer of the earlier snapshot *stayed* when its
    segment is the same in ``later``; *lapsed* when it moved from a segment outside the
    map's lapsed segments into one of them (rfm-grid: Hibernating, Lost), or is absent
    from ``later``; otherwise it moved *up* or *down* by the map's order (best first; a
    null segment ``(none)`` ranks below every named segment).  Moves among the lapsed
    segments (Hibernating -> Lost) are up or down.  New customers have no from-segment
    and are not in this table (they are the ``(new)`` rows of :func:`migration`).

    Columns: ``from_segment``, ``customers`` (int64), ``stayed``, ``up``, ``down``,
    ``lapsed`` (float64 shares of ``customers`` that sum to 1; null when it is 0), plus
    ``as_of_from``/``as_of_to`` as in :func:`migration`.  One row per segment of the map
    in its order (``(none)`` last when present).  ``earlier_rows`` as in :func:`migration`.
    """
    p = _cells(earlier, later, segments, by, earlier_rows)
    n_seg = len(p.states) - 3
    none, gone = n_seg, n_seg + 2
    is_lapsed = np.zeros(len(p.states), dtype=np.bool_)
    is_lapsed[[p.states.index(s) for s in p.lapsed if s in p.states[:n_seg]]] = True
    # state index == rank (0 best) for segments and NONE; GONE is handled as lapsed.
    f, t = np.meshgrid(np.arange(n_seg + 1), np.arange(len(p.states)), indexing="ij")
    outcome = np.where(t == f, 0, np.where((t == gone) | (is_lapsed[t] & ~is_lapsed[f]), 3, np.where(t < f, 1, 2)))
    counts = np.zeros((n_seg + 1, 4), dtype=np.int64)
    np.add.at(counts, (f, outcome), p.counts[: n_seg + 1])
    rows = list(range(n_seg)) + ([none] if counts[none].sum() else [])
    total = counts[rows].sum(axis=1)
    data = {"from_segment": pa.array([p.states[r] for r in rows], pa.string()),
            "customers": pa.array(total, pa.int64())}
    for j, name in enumerate(("stayed", "up", "down", "lapsed")):
        data[name] = pa.array([counts[r, j] / n if n else None for r, n in zip(rows, total.tolist())],
                              pa.float64())
    return pa.table(_with_as_of(data, p.as_of, len(rows)))


def segment_changes(earlier: pa.Table, later: pa.Table, *, by: str = "segment",
                    tier: str = "value_tier", earlier_rows=None) -> pa.Table:
    """The customers whose segment or value tier changed between two snapshots.

    Columns: ``customer_id`` (the later snapshot's id type; dictionary ids decoded, and
    int64 / large_string when the two tables' id widths differ), ``from_segment``,
    ``to_segment``, ``from_tier``, ``to_tier`` (dictionary strings).  Customers new in
    ``later`` have ``from_segment`` ``(new)`` and a null ``from_tier``; customers absent
    from ``later`` have ``to_segment`` ``(gone)`` and a null ``to_tier``; a null segment
    stays null.  Rows: the later snapshot's order, then the gone customers in the earlier
    snapshot's order.  ``earlier_rows`` as in :func:`migration`.
    """
    _require(earlier, (_ID, by, tier), "earlier")
    _require(later, (_ID, by, tier), "later")
    a_ids, b_ids = _matched_ids(earlier, later)
    row_in_a, matched, gone = _match(a_ids, b_ids, earlier_rows)

    def labels(column: str, extra: list[str]):
        """Both tables' labels as codes into one name list (-1: null)."""
        ca, na = group_codes(earlier, column)
        cb, nb = group_codes(later, column)
        names = list(dict.fromkeys(na + nb + extra))
        pos = {s: i for i, s in enumerate(names)}
        ra = np.array([pos[s] for s in na] + [-1], dtype=np.int64)
        rb = np.array([pos[s] for s in nb] + [-1], dtype=np.int64)
        return ra[np.where(ca < 0, len(na), ca)], rb[np.where(cb < 0, len(nb), cb)], names, pos

    sa, sb, seg_names, seg_pos = labels(by, [NEW, GONE])
    ta, tb, tier_names, _ = labels(tier, [])
    from_seg = np.full(len(sb), seg_pos[NEW], dtype=np.int64)
    from_seg[matched] = sa[row_in_a[matched]]
    from_tier = np.full(len(tb), -1, dtype=np.int64)
    from_tier[matched] = ta[row_in_a[matched]]
    changed = ~matched | (from_seg != sb) | (from_tier != tb)
    keep = np.flatnonzero(changed)
    ids = pa.concat_arrays([b_ids.take(pa.array(keep)), a_ids.take(pa.array(gone))])

    def dictionary(codes: np.ndarray, names: list[str]) -> pa.DictionaryArray:
        idx = pa.array(codes.astype(np.int32), mask=codes < 0)
        return pa.DictionaryArray.from_arrays(idx, pa.array(names, pa.string()))

    return pa.table({
        _ID: ids,
        "from_segment": dictionary(np.concatenate([from_seg[keep], sa[gone]]), seg_names),
        "to_segment": dictionary(np.concatenate([sb[keep], np.full(len(gone), seg_pos[GONE])]), seg_names),
        "from_tier": dictionary(np.concatenate([from_tier[keep], ta[gone]]), tier_names),
        "to_tier": dictionary(np.concatenate([tb[keep], np.full(len(gone), -1)]), tier_names),
    })
