"""The high-value customer scorecard: four dimensions scored 0–100 and a weighted total.

A published scorecard for high-value customers weighs *financial contribution* 40 %,
*growth potential* 25 %, *loyalty* 20 % and *influence* 15 %.  The built-in preset
``hvc`` (:data:`HVC_TOML`) defines each dimension from columns of a scored table:

===============  ==========================================================================
financial        gross profit (``profit_minor``, with a cost column), else net money
                 (``monetary_minor`` / ``monetary_total``)
growth           with a CLV model: ``clv_growth`` = the CLV of the horizon against the
                 customer's past yearly value (net money per year of tenure, tenure at least
                 a month); else, in timeline snapshots with money windows: ``spend_trend`` =
                 the last year's net money against the year before
loyalty          tenure (``tenure_days``), order regularity (``orders_per_year``: orders per
                 year of tenure, tenure at least a month) and, with a CLV model, P(alive)
influence        a column the user names (``influence = "referrals"``: e.g. an attribute
                 joined with ``--attributes``)
===============  ==========================================================================

A dimension's score is 100 × the weighted mean of its features' percentile positions among
the customers with an order (0 = lowest, 1 = highest, ties share; a negative feature weight
means lower is better), as the value score of :func:`rfmx.score_table` reads raw columns; in
a grouped table ranked within groups, among the group's customers.  A dimension none of
whose features the table has is *absent*: its weight is spread over the present ones in
proportion to their weights, and the result says so (metadata ``rfmx.scorecard``, and the
command's stderr).  The total ``hvc_score`` is the weighted mean of the present dimensions;
``hvc_tier`` cuts it into the value tiers (by default the top 20 % high, the next 30 %
medium, the rest low), as ``value_tier`` cuts the value score.

A TOML file replaces the preset: a ``[scorecard.NAME]`` table per dimension with ``weight``
and ``features = { column = weight, ... }`` (``docs/scores.md``).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .errors import RfmxError

__all__ = ["Scorecard", "add_scorecard", "HVC_TOML", "DERIVED_FEATURES"]

HVC_TOML = """\
# The high-value customer scorecard (rfmx score --scorecard hvc).  A feature the table lacks
# is left out of its dimension; a dimension left without features spreads its weight.
[scorecard.financial]
weight = 40
features = { profit_minor = 1 }
fallback = { monetary_minor = 1 }   # without a cost column: net money

[scorecard.growth]
weight = 25
features = { clv_growth = 1 }
fallback = { spend_trend = 1 }      # without a CLV model: the last year against the one before

[scorecard.loyalty]
weight = 20
features = { tenure_days = 1, orders_per_year = 1, probability_alive = 1 }

[scorecard.influence]
weight = 15
features = {}                       # name a column: rfmx score --influence referrals
"""

#: features computed from other columns when a scorecard names them
DERIVED_FEATURES = ("clv_growth", "spend_trend", "orders_per_year")
_MIN_TENURE_YEARS = 30 / 365.25  # a customer of a day is not worth 365 times their first order


def _read(doc: dict, where: str) -> dict:
    cards = doc.get("scorecard")
    if not isinstance(cards, dict) or not cards:
        raise RfmxError(f"{where}: no [scorecard.NAME] tables")
    dims = {}
    for name, spec in cards.items():
        if not isinstance(spec, dict):
            raise RfmxError(f"{where}: [scorecard.{name}] must be a table with weight and features")
        unknown = set(spec) - {"weight", "features", "fallback"}
        if unknown:
            raise RfmxError(f"{where}: [scorecard.{name}]: unknown key '{sorted(unknown)[0]}'; use weight, features, "
                            f"fallback")
        weight = spec.get("weight")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
            raise RfmxError(f"{where}: [scorecard.{name}]: weight must be a number above 0, got {weight!r}")
        feats = []
        for key in ("features", "fallback"):
            table = spec.get(key, {})
            if not isinstance(table, dict) or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w == 0
                                                  for w in table.values()):
                raise RfmxError(f"{where}: [scorecard.{name}]: {key} must be a table of column = non-zero number")
            feats.append(dict(table))
        dims[str(name)] = (float(weight), feats[0], feats[1])
    return dims


class Scorecard:
    """Dimensions ``{name: (weight, features, fallback)}``; features map a column (or a
    :data:`DERIVED_FEATURES` name) to its weight within the dimension, ``fallback`` is used
    when none of ``features`` is in the table."""

    def __init__(self, dimensions: dict, name: str = "scorecard"):
        self.dimensions = dimensions
        self.name = name

    @classmethod
    def resolve(cls, spec, *, influence: str | None = None) -> "Scorecard":
        """``"hvc"`` (the preset), a TOML file path, or a Scorecard; ``influence`` names the
        column of the ``influence`` dimension (replacing its features)."""
        from .segments import parse_toml, read_toml

        if isinstance(spec, Scorecard):
            card = spec
        elif spec == "hvc":
            card = cls(_read(parse_toml(HVC_TOML, "scorecard hvc"), "scorecard hvc"), "hvc")
        else:
            from pathlib import Path

            if not Path(spec).is_file():
                raise RfmxError(f"{spec}: no such scorecard file (use hvc or a TOML file)")
            card = cls(_read(read_toml(spec)[0], str(spec)), Path(spec).stem)
        if influence:
            if "influence" not in card.dimensions:
                raise RfmxError(f"--influence: the scorecard {card.name} has no influence dimension")
            weight = card.dimensions["influence"][0]
            dims = dict(card.dimensions)
            dims["influence"] = (weight, {influence: 1.0}, {})
            card = Scorecard(dims, card.name)
        return card

    def features_in(self, columns) -> dict:
        """Per dimension the features the table (``columns``) can give: the dimension's
        features it has, else its fallback's, else none."""
        have = set(columns)
        out = {}
        for name, (_, feats, fallback) in self.dimensions.items():
            got = {f: w for f, w in feats.items() if f in have or _derivable(f, have)}
            if not got:
                got = {f: w for f, w in fallback.items() if f in have or _derivable(f, have)}
            out[name] = got
        return out


def _derivable(name: str, have: set) -> bool:
    if name == "clv_growth":
        return {"clv", "monetary_total", "tenure_days"} <= have
    if name == "spend_trend":
        return {"year_net_minor", "year_ago_net_minor"} <= have
    if name == "orders_per_year":
        return {"n_orders", "tenure_days"} <= have
    return False


def _numeric(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).cast(pa.float64())
    return col.to_numpy(zero_copy_only=False) if col.null_count == 0 else col.fill_null(np.nan).to_numpy()


def _derived(table: pa.Table, name: str) -> pa.Array:
    """A :data:`DERIVED_FEATURES` column (float64; null where it is undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "orders_per_year" or name == "clv_growth":
            years = np.maximum(_numeric(table, "tenure_days") / 365.25, _MIN_TENURE_YEARS)
        if name == "orders_per_year":
            v = _numeric(table, "n_orders") / years
        elif name == "clv_growth":
            yearly = _numeric(table, "monetary_total") / years
            v = np.where(yearly > 0, _numeric(table, "clv") / yearly, np.nan)
        else:  # spend_trend
            before = _numeric(table, "year_ago_net_minor")
            v = np.where(before > 0, _numeric(table, "year_net_minor") / before - 1.0, np.nan)
    return pa.array(v, pa.float64(), mask=~np.isfinite(v))


def add_scorecard(table: pa.Table, scorecard="hvc", *, influence: str | None = None, tiers=None,
                  rank_within: str = "group") -> pa.Table:
    """``table`` (scored: :func:`rfmx.score_table`, with CLV columns when fitted) with the
    scorecard's dimension scores ``hvc_<dimension>`` (float64 0..100, null for an absent
    dimension), the total ``hvc_score`` and its tier ``hvc_tier``; the schema metadata
    ``rfmx.scorecard`` records the weights used and the absent dimensions."""
    from .groups import group_columns_of, group_index
    from .scores import feature_percentiles, member_mask, parse_tiers, tier_index

    card = Scorecard.resolve(scorecard, influence=influence)
    tiers = parse_tiers(tiers)
    group = group_columns_of(table)
    groups = group_index(table, group) if group and rank_within == "group" else None
    member = member_mask(table)
    chosen = card.features_in(table.column_names)
    work = table
    for feats in chosen.values():
        for f in feats:
            if f in DERIVED_FEATURES and f not in work.column_names:
                work = work.append_column(f, _derived(work, f))
    present = {d: w for d, (w, _, _) in card.dimensions.items() if chosen[d]}
    if not present:
        raise RfmxError(f"scorecard {card.name}: the table has none of its features "
                        f"({', '.join(sorted({f for _, fs, fb in card.dimensions.values() for f in {**fs, **fb}}))})")
    total_weight = sum(present.values())
    columns = {}
    total = np.zeros(table.num_rows)
    for dim, (weight, _, _) in card.dimensions.items():
        feats = chosen[dim]
        if not feats:
            columns[f"hvc_{dim}"] = pa.nulls(table.num_rows, pa.float64())
            continue
        score = np.zeros(table.num_rows)
        for f, w in feats.items():
            p = feature_percentiles(work, f, member, groups)
            score += abs(w) * (p if w > 0 else 1.0 - p)
        score *= 100.0 / sum(abs(w) for w in feats.values())
        score[~member] = 0.0
        columns[f"hvc_{dim}"] = pa.array(score)
        total += weight / total_weight * score
    tier = tier_index(total, member, tiers, groups)
    columns["hvc_score"] = pa.array(total)
    columns["hvc_tier"] = pa.DictionaryArray.from_arrays(pa.array(tier, pa.int8()),
                                                         pa.array([t for t, _ in tiers], pa.string()))
    absent = [d for d in card.dimensions if d not in present]
    info = {"scorecard": card.name,
            "weights": {d: round(100.0 * w / total_weight, 6) for d, w in present.items()},
            "stated_weights": {d: w for d, (w, _, _) in card.dimensions.items()},
            "features": {d: chosen[d] for d in present}, "absent": absent,
            "tiers": [list(t) for t in tiers]}
    out = table
    for name, col in columns.items():
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, col)
    meta = dict(table.schema.metadata or {})
    meta[b"rfmx.scorecard"] = json.dumps(info).encode()
    return out.replace_schema_metadata(meta)


def scorecard_line(table: pa.Table) -> str | None:
    """The stderr line of a scorecard run: the weights used and the absent dimensions."""
    raw = (table.schema.metadata or {}).get(b"rfmx.scorecard")
    if not raw:
        return None
    info = json.loads(raw)
    used = ", ".join(f"{d} {w:g} %" for d, w in info["weights"].items())
    line = f"scorecard {info['scorecard']}: {used}"
    if info["absent"]:
        line += f" ({', '.join(info['absent'])}: no feature in the table, weight spread over the others)"
    return line
