"""Early warnings: the valuable customers who started to fade between two snapshots.

An *alert* is a named set of rules, in the rule engine of segment maps, over the features
of a customer in two consecutive snapshots of a timeline (``earlier``, ``later``): the
lifecycle features of :mod:`rfmx.stages` in the later snapshot and the same with a
``previous_`` prefix from the earlier one, plus

=============================  ================================================================
``segment_rank``               the segment's position in the segment map's order (0 = best)
``rank_drop``                  ``segment_rank - previous_segment_rank``: 1 = one segment down
``value_tier_rank``            the value tier's position (0 = the top tier)
``value_score``                the value score (0-100)
``spend_vs_year_ago``          ``window_spend / year_ago_spend - 1`` (missing when there was no
                               spend a year ago): -0.5 = half of last year's spend in the window
``year_spend``                 net money of the last year
``segment``, ``lifecycle``     names, as in ``previous_segment = ["Champions", "Loyal Customers"]``
=============================  ================================================================

(each with its ``previous_`` twin).  A customer absent from the earlier snapshot has every
``previous_`` feature missing, and a missing feature satisfies no condition.  An alert
fires for a customer when any of its rules holds (rules of one name are alternatives;
conditions of one rule must all hold).

Rules are written as *changes* (overdue now and not before; down a segment since the last
snapshot), so an alert fires on the snapshot where its condition became true, and a run
per period never repeats yesterday's alerts.  The default rules (:func:`default_rules_toml`)
watch the valuable customers — the top value tier, and Champions, Loyal Customers and
Can't Lose Them where the segment map has them — in the earlier snapshot:

- ``moved down``: in a worse segment than before (``rank_drop >= 1``);
- ``overdue``: more than ``overdue`` (2) times their typical gap since the last order, and
  not before;
- ``spend down``: window spend more than ``spend_drop`` (50 %) below the same window a year
  earlier, and not before.

Each alert carries the value at stake: the customer's net money of the last year.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .errors import RfmxError
from .tables import group_codes, numeric_column

__all__ = ["alerts", "alert_rules", "alert_run", "default_rules_toml", "alert_features", "post_alerts",
           "empty_alerts", "ALERT_THRESHOLDS", "KEY_SEGMENTS", "ALERT_COLUMNS"]

#: the default rules' thresholds (keyword options of :func:`alerts`)
ALERT_THRESHOLDS = {"overdue": 2.0, "spend_drop": 0.5}
#: the segments watched by the default rules beside the top value tier (when the map has them)
KEY_SEGMENTS = ("Champions", "Loyal Customers", "Can't Lose Them")
#: the numeric features of one snapshot besides the lifecycle features
_OWN = ("segment_rank", "value_tier_rank", "value_score", "spend_vs_year_ago", "year_spend")
_NAMED = ("segment", "lifecycle")


def default_rules_toml(segments: list[str], overdue: float = ALERT_THRESHOLDS["overdue"],
                       spend_drop: float = ALERT_THRESHOLDS["spend_drop"]) -> str:
    """The default alert rules as TOML, for a segment map with the segments ``segments``."""
    for name, value in (("overdue", overdue), ("spend_drop", spend_drop)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise RfmxError(f"alert threshold {name} must be a number >= 0, got {value!r}")
    if spend_drop > 1:
        raise RfmxError(f"alert threshold spend_drop is a share of last year's spend (0 to 1), got {spend_drop!r}")
    key = [s for s in KEY_SEGMENTS if s in segments]
    valuable = ["previous_value_tier_rank = 0"] + ([f"previous_segment = {json.dumps(key)}"] if key else [])
    changes = {
        "moved down": ["rank_drop = { min = 1 }"],
        "overdue": [f"overdue_ratio = {{ gt = {overdue} }}", f"previous_overdue_ratio = {{ max = {overdue} }}"],
        "spend down": [f"spend_vs_year_ago = {{ lt = {-spend_drop} }}",
                       f"previous_spend_vs_year_ago = {{ min = {-spend_drop} }}"],
    }
    out = ['# rfmx alert rules: the valuable customers (top tier, key segments) who start to fade.',
           'name = "alerts"']
    for alert, conditions in changes.items():
        for who in valuable:
            out += ["", "[[alert]]", f"name = {json.dumps(alert)}", who, *conditions]
    return "\n".join(out) + "\n"


def alert_rules(spec=None, *, segments: list[str], stages: list[str], **thresholds):
    """The alerts as ``[(name, SegmentMap of its rules)]``: the default rules with
    ``thresholds`` (see :data:`ALERT_THRESHOLDS`), or a TOML file of ``[[alert]]`` rules.
    ``segments``/``stages``: the names the ``segment``/``lifecycle`` fields may take.  A
    rule over an unknown feature, or one that can never hold, is a one-line error."""
    from .segments import Rule, SegmentMap, read_toml

    unknown = [k for k in thresholds if k not in ALERT_THRESHOLDS]
    if unknown:
        raise RfmxError(f"unknown alert threshold '{unknown[0]}'; thresholds: {', '.join(ALERT_THRESHOLDS)}")
    if spec is None:
        text, source = default_rules_toml(segments, **thresholds), "alerts"
    elif thresholds:
        raise RfmxError("alert thresholds apply to the default rules; a rules file sets its own")
    else:
        _, text = read_toml(spec)
        source = str(spec)
    names = {f: list(segments) for f in ("segment", "previous_segment")}
    names.update({f: list(stages) for f in ("lifecycle", "previous_lifecycle")})
    smap = SegmentMap.from_toml(text, source, table="alert", label_fields=names)
    if smap.default is not None:
        raise RfmxError(f"{source}: an alert map has no default (an alert fires only when a rule holds)")
    _, _, info = smap.label({f: np.empty(0) for f in FEATURES})  # unknown features: one line, before any row
    for rule in info["rules"]:
        if rule["reason"]:
            raise RfmxError(f"{source} line {rule['line']}: alert '{rule['segment']}' can never fire: "
                            f"{rule['reason']}")
    alerts = []
    for name in smap.names():
        # Each alert on its own (a customer may fire several): its rules, numbered afresh.
        own = [Rule(r.segment, r.conditions, r.line, j) for j, r in enumerate(r for r in smap.rules if r.segment == name)]
        alerts.append((name, SegmentMap(name, own, source=source)))
    return alerts


def _tier_order(table: pa.Table) -> list[str]:
    raw = (table.schema.metadata or {}).get(b"rfmx.scores")
    tiers = json.loads(raw).get("tiers") if raw else None
    if tiers:
        return [t[0] for t in tiers]
    return ["high", "medium", "low"]


def _positions(table: pa.Table, column: str, names: list[str]) -> np.ndarray:
    """Each row's ``column`` value as its position in ``names`` (NaN: null or not listed)."""
    if column not in table.column_names:
        return np.full(table.num_rows, np.nan)
    codes, values = group_codes(table, column)
    remap = np.array([names.index(v) if v in names else np.nan for v in values] + [np.nan], dtype=np.float64)
    return remap[np.where(codes < 0, len(values), codes)]


def _own_features(table: pa.Table, segments: list[str], stages: list[str], fields) -> dict:
    """The features ``fields`` of one snapshot (lifecycle features, :data:`_OWN`,
    :data:`_NAMED`); only those asked are computed: each is an array per customer."""
    from .stages import FEATURES as STAGE_FEATURES
    from .stages import lifecycle_features

    fields = set(fields)
    unit = float(10 ** int((table.schema.metadata or {}).get(b"rfmx.amount_scale", b"2")))
    staged = {x for x in fields if x in STAGE_FEATURES and x != "previous_stage"}
    if "spend_vs_year_ago" in fields:
        staged.add("window_spend")
    f = lifecycle_features(table, None, fields=sorted(staged)) if staged else {}
    if fields & {"segment", "segment_rank"}:
        f["segment"] = f["segment_rank"] = _positions(table, "segment", segments)
    if "lifecycle" in fields:
        f["lifecycle"] = _positions(table, "lifecycle", stages)
    if "value_tier_rank" in fields:
        f["value_tier_rank"] = _positions(table, "value_tier", _tier_order(table))
    if "value_score" in fields:
        if "value_score" in table.column_names:
            col = numeric_column(table, "value_score")
            f["value_score"] = np.where(col.valid, col.values, np.nan) if col.valid is not None else \
                col.values.astype(np.float64)
        else:
            f["value_score"] = np.full(table.num_rows, np.nan)
    if "spend_vs_year_ago" in fields:
        year_ago = numeric_column(table, "year_ago_net_minor").values / unit
        with np.errstate(divide="ignore", invalid="ignore"):
            f["spend_vs_year_ago"] = np.where(year_ago > 0, f["window_spend"] / year_ago - 1.0, np.nan)
    if "year_spend" in fields:
        f["year_spend"] = numeric_column(table, "year_net_minor").values / unit
    return {k: v for k, v in f.items() if k in fields}


def _feature_names() -> tuple:
    from .stages import FEATURES as STAGE_FEATURES

    own = [x for x in STAGE_FEATURES if x != "previous_stage"] + list(_OWN) + list(_NAMED)
    return tuple(own + ["previous_" + x for x in own] + ["rank_drop"])


#: every feature an alert rule may name
FEATURES = _feature_names()


def alert_features(earlier: pa.Table, later: pa.Table, rows: np.ndarray, segments: list[str],
                   stages: list[str], fields=None) -> dict:
    """The features ``fields`` (default: all of :data:`FEATURES`) for each row of ``later``
    (float64, NaN: missing); ``rows``: each later row's row in ``earlier`` (-1: not in it)."""
    fields = set(FEATURES if fields is None else fields)
    if "rank_drop" in fields:
        fields |= {"segment_rank", "previous_segment_rank"}
    now = _own_features(later, segments, stages, {x for x in fields if not x.startswith("previous_")})
    before = _own_features(earlier, segments, stages,
                           {x[len("previous_"):] for x in fields if x.startswith("previous_")})
    has = rows >= 0
    at = np.maximum(rows, 0)
    out = dict(now)
    for name, values in before.items():
        out["previous_" + name] = np.where(has, values[at], np.nan) if len(values) else np.full(len(rows), np.nan)
    if "rank_drop" in fields:
        out["rank_drop"] = out["segment_rank"] - out["previous_segment_rank"]
    return out


#: features an alerts table shows, whatever the rules read
_SHOWN = ("year_spend", "previous_value_score", "value_score", "previous_overdue_ratio", "overdue_ratio",
          "previous_window_spend", "window_spend", "spend_vs_year_ago")


#: the columns of an alerts table
ALERT_COLUMNS = ("customer_id", "alert", "as_of_from", "as_of_to", "value_at_stake", "segment_before",
                 "segment_after", "tier_before", "tier_after", "lifecycle_before", "lifecycle_after",
                 "value_score_before", "value_score_after", "overdue_ratio_before", "overdue_ratio_after",
                 "window_spend_before", "window_spend_after", "spend_vs_year_ago_after")


def empty_alerts(id_type: pa.DataType | None = None) -> pa.Table:
    """An alerts table with no rows (``id_type``: the customer ids' type, int64 by default)."""
    types = {"customer_id": id_type or pa.int64(), "alert": pa.dictionary(pa.int32(), pa.string()),
             "as_of_from": pa.string(), "as_of_to": pa.string()}
    return pa.schema([(c, types.get(c, pa.string() if c.startswith(("segment_", "tier_", "lifecycle_"))
                                     else pa.float64())) for c in ALERT_COLUMNS]).empty_table()


def alerts(earlier: pa.Table, later: pa.Table, *, earlier_rows=None, rules=None, segments=None, stages=None,
           **thresholds) -> pa.Table:
    """The alerts between two consecutive snapshots (scored, with lifecycle stages and the
    money windows of ``TimelineState.snapshots(window=...)``, as :func:`rfmx.timeline`
    and ``rfmx alerts`` make them): one row per (customer, alert) that fires, most value at
    stake first.

    ``rules``: a TOML file of ``[[alert]]`` rules, or None for the default rules with
    ``thresholds`` (:data:`ALERT_THRESHOLDS`); ``segments``: the segment map (default: the
    one in the tables' score metadata); ``stages``: the lifecycle map (default: the
    built-in one); ``earlier_rows``: the match of :func:`rfmx.migrations.rows_in_earlier`
    for snapshots of one state (else customers are matched on ``customer_id``).
    Columns: :data:`ALERT_COLUMNS` (value at stake: the customer's net money of the last
    year, in currency units).
    """
    from .migrations import earlier_rows_of, segment_order
    from .stages import lifecycle_map

    order, _, _ = segment_order(segments, earlier, later)
    stage_order = lifecycle_map(stages).order
    checks = alert_rules(rules, segments=order, stages=stage_order, **thresholds)
    return _fire(earlier, later, earlier_rows_of(earlier, later, earlier_rows), checks, order, stage_order)


def _fire(earlier, later, rows, checks, order, stage_order) -> pa.Table:
    for c in ("window_net_minor", "year_ago_net_minor", "year_net_minor"):
        for t, which in ((earlier, "earlier"), (later, "later")):
            if c not in t.column_names:
                raise RfmxError(f"the {which} snapshot has no '{c}' column: alerts need the snapshots of a "
                                f"timeline state with money windows (rfmx alerts, scored_snapshots(windows=True))")
    needed = set(_SHOWN).union(*(smap.fields() for _, smap in checks))
    f = alert_features(earlier, later, rows, order, stage_order, fields=needed)
    picks, names = [], []
    for name, smap in checks:
        seg, _, _ = smap.label(f)
        hit = np.flatnonzero(seg >= 0)
        picks.append(hit)
        names.append(np.full(len(hit), len(names), dtype=np.int32))
    who = np.concatenate(picks) if picks else np.empty(0, np.int64)
    which = np.concatenate(names) if names else np.empty(0, np.int32)
    stake = f["year_spend"][who]
    order_rows = np.lexsort((which, who, -stake))  # most at stake first; then customer row, alert
    who, which, stake = who[order_rows], which[order_rows], stake[order_rows]
    prev = rows[who]
    meta = (later.schema.metadata or {})
    as_of_to = (meta.get(b"rfmx.as_of") or b"").decode() or None
    as_of_from = ((earlier.schema.metadata or {}).get(b"rfmx.as_of") or b"").decode() or None

    def labels(table, column, index):
        """``column`` (names) at rows ``index`` of ``table``; null where ``index`` is -1."""
        if column not in table.column_names:
            return pa.nulls(len(index), pa.string())
        col = table.column(column).combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return col.take(pa.array(index, mask=index < 0))

    def num(values):
        v = values[who]
        return pa.array(v, pa.float64(), mask=np.isnan(v))

    table = pa.table({
        "customer_id": later.column("customer_id").combine_chunks().take(pa.array(who)),
        "alert": pa.DictionaryArray.from_arrays(pa.array(which), pa.array([n for n, _ in checks], pa.string())),
        "as_of_from": pa.array([as_of_from] * len(who), pa.string()),
        "as_of_to": pa.array([as_of_to] * len(who), pa.string()),
        "value_at_stake": pa.array(stake, pa.float64()),
        "segment_before": pa.array(labels(earlier, "segment", prev), pa.string()),
        "segment_after": pa.array(labels(later, "segment", who), pa.string()),
        "tier_before": pa.array(labels(earlier, "value_tier", prev), pa.string()),
        "tier_after": pa.array(labels(later, "value_tier", who), pa.string()),
        "lifecycle_before": pa.array(labels(earlier, "lifecycle", prev), pa.string()),
        "lifecycle_after": pa.array(labels(later, "lifecycle", who), pa.string()),
        "value_score_before": num(f["previous_value_score"]),
        "value_score_after": num(f["value_score"]),
        "overdue_ratio_before": num(f["previous_overdue_ratio"]),
        "overdue_ratio_after": num(f["overdue_ratio"]),
        "window_spend_before": num(f["previous_window_spend"]),
        "window_spend_after": num(f["window_spend"]),
        "spend_vs_year_ago_after": num(f["spend_vs_year_ago"]),
    })
    return table.replace_schema_metadata({"rfmx.alerts": json.dumps({"alerts": [n for n, _ in checks]})})


def post_alerts(url: str, table: pa.Table, *, as_of: str | None, tries: int = 3, timeout: float = 10.0,
                backoff: float = 0.5) -> None:
    """POST ``table``'s rows as JSON (``{"as_of": ..., "alerts": [{column: value}, ...]}``)
    to ``url``; retried on connection errors and 5xx answers (``tries`` in all, waiting
    ``backoff`` seconds, then twice as long); a one-line error when it cannot be delivered."""
    import time
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise RfmxError(f"--webhook {url}: not an http:// or https:// URL")
    body = json.dumps({"as_of": as_of, "alerts": table.to_pylist()}, default=str).encode()
    last = ""
    for attempt in range(tries):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "rfmx"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                answer.read()
                return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500:
                break  # the endpoint refuses the request itself: trying again cannot help
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if attempt + 1 < tries:
            time.sleep(backoff * 2 ** attempt)
    raise RfmxError(f"--webhook {url}: cannot deliver {table.num_rows} alert(s): {last} "
                    f"(after {attempt + 1} tr{'y' if attempt == 0 else 'ies'})")


def alert_run(state, score, *, stages, checks, segments: list[str], as_of=None, start=None):
    """The alerts of a timeline state since its last alert run: ``(table, pairs, reason)``.

    Each pair of consecutive period boundaries from ``start`` (default: the state's
    ``alerted_until_us``, else one period before the last boundary) to ``as_of`` (default:
    the boundary after the latest order) is compared, its snapshots scored with ``score``
    and staged with ``stages``; ``checks`` from :func:`alert_rules`.  The state then
    remembers ``as_of`` (``alerted_until_us``, saved with it), so the next run starts
    there.  ``reason``: why nothing was compared (no new pair of boundaries), else None.
    """
    from .pipeline import scored_snapshots
    from .state import to_us

    ends = state.boundaries(None, as_of)
    if not ends:
        return None, [], "no period boundary with orders before it up to --as-of"
    current = ends[-1]
    if start is not None:
        first = to_us(start, state.timezone)
    elif state.alerted_until_us is not None:
        first = state.alerted_until_us
    else:
        first = to_us(ends[-2]) if len(ends) > 1 else to_us(current)
    wanted = [b for b in ends if to_us(b) >= first]
    if len(wanted) < 2:
        if state.alerted_until_us is not None and state.alerted_until_us >= to_us(current) and start is None:
            return None, [], (f"the previous run reported the alerts up to {current.isoformat()}; the next come "
                              f"with the orders of the next {state.period}")
        state.alerted_until_us = to_us(current)
        return None, [], (f"one snapshot (as of {current.isoformat()}): alerts compare two consecutive "
                          f"{state.period} boundaries; the first come with the orders of the next {state.period}")
    tables, pairs, earlier = [], [], None
    for snap in scored_snapshots(state, wanted, score, lifecycle=stages, windows=True):
        if earlier is not None:
            tables.append(_fire(earlier, snap.table, snap.earlier_rows, checks, segments, stages.order))
            pairs.append(snap.as_of)
        earlier = snap.table
    state.alerted_until_us = to_us(current)
    return pa.concat_tables(tables).sort_by([("value_at_stake", "descending")]), pairs, None
