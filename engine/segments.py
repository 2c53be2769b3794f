"""Named segments: maps of rules over scores and raw aggregates, first match wins.

A segment map is TOML (format in ``docs/scores.md``)::

    name = "my-map"
    bins = 5             # optional: the score resolution the rules are written for
    default = "Other"    # optional: segment of customers no rule matches (else null)

    [[segment]]
    name = "Champions"
    r_score = { min = 4 }
    f_score = { min = 4 }

    [[segment]]
    name = "Big spenders"
    monetary_total = { gt = 1000 }

A condition is ``field = number`` (equal), ``field = [a, b, ...]`` (one of) or
``field = { min = .., max = .., gt = .., lt = .. }`` (any combination; min/max inclusive).
A string column of the table (e.g. a joined customer attribute) takes ``field = "DE"`` or
``field = ["DE", "AT"]`` (exact string equality, one of).
Optional ``order = [...]`` (every segment once, best first) and ``lapsed = [...]`` (the
worst segments) are what migration counts up, down and lapsed by; without them the order
is the rules' order with the default last, and the last segment is the lapsed one.
``rfm_code`` takes code strings (``"545"``; ``"10-4-5"`` when bins > 9).  Null values
(e.g. the recency of a refund-only customer) satisfy no condition.  A rule with several
conditions needs all of them; several rules may name the same segment.

Two maps are built in: ``rfm-grid`` (default; the R x F grid, Champions ... Lost) and
``pymc-quartiles`` (PyMC-Marketing's quartile segments by RFM code, plus Other).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import RfmxError
from .tables import numeric_column

__all__ = ["SegmentMap", "BUILTIN_MAPS", "read_toml", "parse_toml", "merge_coverage", "RFM_GRID_TOML", "PYMC_QUARTILES_TOML", "UNPROFITABLE",
           "UNPROFITABLE_RULE"]

#: the segment of customers whose gross profit is negative (with a cost column)
UNPROFITABLE = "Unprofitable"
#: the rule built-in maps put first when the table has profit (``SegmentMap.with_unprofitable``)
UNPROFITABLE_RULE = f"""\
# With a cost column: customers who cost more than they bring, checked before any other rule.
[[segment]]
name = "{UNPROFITABLE}"
profit_minor = {{ lt = 0 }}
"""

RFM_GRID_TOML = """\
# The widely used R x F grid over quintile scores (R: recency, F: frequency; 5 = best).
# The rules are listed best to worst (the order migration counts up and down in):
# recency first, then frequency; a better R or F never gives a worse segment.
name = "rfm-grid"
description = "R x F grid over quintile scores"
bins = 5
lapsed = ["Hibernating", "Lost"]

[[segment]]
name = "Champions"
r_score = 5
f_score = { min = 4 }

[[segment]]
name = "Loyal Customers"
r_score = [3, 4]
f_score = { min = 4 }

[[segment]]
name = "Potential Loyalists"
r_score = { min = 4 }
f_score = [2, 3]

[[segment]]
name = "New Customers"
r_score = 5
f_score = 1

[[segment]]
name = "Promising"
r_score = 4
f_score = 1

[[segment]]
name = "Need Attention"
r_score = 3
f_score = 3

[[segment]]
name = "About to Sleep"
r_score = 3
f_score = { max = 2 }

[[segment]]
name = "Can't Lose Them"
r_score = { max = 2 }
f_score = 5

[[segment]]
name = "At Risk"
r_score = { max = 2 }
f_score = [3, 4]

[[segment]]
name = "Hibernating"
r_score = 2
f_score = { max = 2 }

[[segment]]
name = "Lost"
r_score = 1
f_score = { max = 2 }
"""

PYMC_QUARTILES_TOML = """\
# PyMC-Marketing's default segments (pymc_marketing.clv.rfm_segments): quartile scores,
# segments listed by RFM code; every other code is "Other".
name = "pymc-quartiles"
description = "PyMC-Marketing quartile segments by RFM code"
bins = 4
default = "Other"
# Best to worst for migration.  No order of these segments is monotone in the scores
# ("Other" holds codes from 121 to 442); this one breaks the fewest single-score steps.
order = ["Premium Customer", "Repeat Customer", "Top Spender", "At Risk Customer", "Other",
         "Inactive Customer"]
lapsed = ["Inactive Customer"]

[[segment]]
name = "Premium Customer"
rfm_code = ["334", "443", "444", "344", "434", "433", "343", "333"]

[[segment]]
name = "Repeat Customer"
rfm_code = ["244", "234", "232", "332", "143", "233", "243"]

[[segment]]
name = "Top Spender"
rfm_code = ["424", "414", "144", "314", "324", "124", "224", "423", "413", "133", "323", "313", "134"]

[[segment]]
name = "At Risk Customer"
rfm_code = ["422", "223", "212", "122", "222", "132", "322", "312", "412", "123", "214"]

[[segment]]
name = "Inactive Customer"
rfm_code = ["411", "111", "113", "114", "112", "211", "311"]
"""

BUILTIN_MAPS = {"rfm-grid": RFM_GRID_TOML, "pymc-quartiles": PYMC_QUARTILES_TOML}
_ALIASES = {"default": "rfm-grid", "grid": "rfm-grid", "pymc": "pymc-quartiles", "quartiles": "pymc-quartiles"}
# Fields that are functions of the three scores: maps over these only are evaluated once
# per RFM code instead of once per customer.
SCORE_ONLY_FIELDS = ("r_score", "f_score", "m_score", "rfm_score", "rfm_code")
RULE_FIELDS = SCORE_ONLY_FIELDS + ("value_score",)
_TOP_KEYS = ("name", "description", "bins", "default", "order", "lapsed", "segment", "weights", "tiers")
_BOUND_KEYS = ("min", "max", "gt", "lt")


def read_toml(path) -> tuple[dict, str]:
    """Parse a TOML file; malformed TOML is a one-line error with the line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RfmxError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RfmxError(f"{path}: cannot read: {exc}") from None
    return parse_toml(text, str(path)), text


def parse_toml(text: str, source: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RfmxError(f"{source}: malformed TOML: {exc}") from None


def _locate(text: str, key: str, segment: int | None = None, table: str = "segment") -> int | None:
    """1-based line of ``key = ...`` at the top level (``segment`` None) or in the
    ``segment``-th ``[[table]]`` table (the header's line if the key is not found)."""
    current = None   # None: top level; -1: another table; i: i-th [[segment]]
    seen = -1
    header = None
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("[["):
            if re.match(rf"^\[\[\s*{table}\s*\]\]", s):
                seen += 1
                current = seen
                if seen == segment:
                    header = no
            else:
                current = -1
            continue
        if s.startswith("["):
            current = -1
            continue
        if current == segment and pattern.match(line):
            return no
    return header


@dataclass
class Condition:
    """``lo <= field <= hi`` or ``field in values``; ``code_strings`` for rfm_code sets,
    ``labels`` for a field that holds names (e.g. a lifecycle map's ``previous_stage``)."""

    field: str
    lo: float = -math.inf
    hi: float = math.inf
    values: tuple | None = None
    code_strings: tuple | None = None
    text: str = ""
    labels: tuple | None = None
    strings: tuple | None = None    # ``field = "DE"`` / ``["DE", "AT"]`` on a string column


@dataclass
class Rule:
    segment: str
    conditions: list
    line: int | None
    index: int


def _parse_code(code: str, q: int) -> int | None:
    """A code string's index ``(r-1)*q*q + (f-1)*q + (m-1)``, None if a digit is outside 1..q."""
    parts = list(code) if q <= 9 and "-" not in code else code.split("-")
    try:
        r, f, m = (int(p) for p in parts)
    except ValueError:
        return -1
    if len(parts) != 3:
        return -1
    if not all(1 <= v <= q for v in (r, f, m)):
        return None
    return (r - 1) * q * q + (f - 1) * q + (m - 1)


class SegmentMap:
    """Rules (first match wins) from scores and aggregates to named segments.

    Build with :meth:`from_toml`, :meth:`load` (a path) or :meth:`builtin`; apply with
    :meth:`assign` (normally through :func:`rfmx.score`).
    """

    #: the name of the rule tables in the TOML (``[[segment]]``; ``[[stage]]`` for lifecycle)
    table = "segment"

    def __init__(self, name: str, rules: list, *, bins: int | None = None, default: str | None = None,
                 description: str = "", source: str = "<map>", text: str = "", weights=None, tiers=None,
                 order=None, lapsed=None):
        self.name = name
        self.rules = rules
        self.bins = bins
        self.default = default
        #: Segment names best to worst (migration's up and down): the ``order`` key, else
        #: the order of the rules with the default last (:meth:`names`).
        self.order = list(order) if order is not None else self.names()
        #: The worst segments: moving into them from outside is "lapsed" (``lapsed`` key,
        #: else the last segment of :attr:`order`).
        self.lapsed = list(lapsed) if lapsed is not None else self.order[-1:]
        self.description = description
        self.source = source
        self.text = text
        self.weights = weights
        self.tiers = tiers

    # --- construction ---------------------------------------------------------------

    def with_unprofitable(self) -> "SegmentMap":
        """This map with :data:`UNPROFITABLE_RULE` first, for tables that know each
        customer's gross profit (a cost column): customers whose profit is negative are
        "Unprofitable" whatever their scores, so they are seen, not hidden among the best.

        Only built-in maps gain the rule; a map of your own (a TOML file) states what it
        wants, e.g. the same rule.  In migration order the segment comes last; the map's
        lapsed segments stay the lapsed ones.
        """
        if self.source not in BUILTIN_MAPS or UNPROFITABLE in self.names():
            return self
        at = self.text.index(f"[[{self.table}]]")
        text = self.text[:at] + UNPROFITABLE_RULE + "\n" + self.text[at:]
        # A map's ``order`` must list every segment; the order is set below.
        text = re.sub(r"(?m)^order = \[", f'order = ["{UNPROFITABLE}", ', text, count=1)
        out = type(self).from_toml(text, source=self.source)
        out.order = self.order + [UNPROFITABLE]
        out.lapsed = list(self.lapsed)
        return out

    @classmethod
    def builtin(cls, name: str) -> "SegmentMap":
        key = _ALIASES.get(name, name)
        if key not in BUILTIN_MAPS:
            raise RfmxError(f"unknown segment map '{name}'; built-in maps: {', '.join(BUILTIN_MAPS)} "
                            f"(or give a .toml file)")
        return cls.from_toml(BUILTIN_MAPS[key], source=key)

    @classmethod
    def load(cls, path) -> "SegmentMap":
        _, text = read_toml(path)
        return cls.from_toml(text, source=str(path))

    @classmethod
    def resolve(cls, spec) -> "SegmentMap":
        """A map from a :class:`SegmentMap`, a built-in name or a TOML file path."""
        if isinstance(spec, SegmentMap):
            return spec
        s = str(spec)
        if s.lower().endswith(".toml") or Path(s).is_file():
            return cls.load(s)
        return cls.builtin(s)

    @classmethod
    def from_toml(cls, text: str, source: str = "<map>", *, table: str = "segment",
                  label_fields: tuple | dict = ()) -> "SegmentMap":
        """Parse a map.  ``table``: the name of its rule tables (``[[segment]]``; a
        lifecycle map has ``[[stage]]``); ``label_fields``: fields whose conditions take
        names, resolved to positions — a tuple of fields that name the map's own segments
        (``previous_stage = "lost"``: positions in :meth:`names`), or a dict from field to
        its list of names (None: the map's own)."""
        doc = parse_toml(text, source)
        if not isinstance(label_fields, dict):
            label_fields = dict.fromkeys(label_fields)
        top_keys = tuple(table if k == "segment" else k for k in _TOP_KEYS)

        def where(key, seg=None):
            line = _locate(text, key, seg, table)
            return f"{source} line {line}" if line else source

        for key in doc:
            if key not in top_keys:
                raise RfmxError(f"{where(key)}: unknown key '{key}'; a map has {', '.join(top_keys)}")
        name = doc.get("name", Path(source).stem if source.endswith(".toml") else source)
        if not isinstance(name, str):
            raise RfmxError(f"{where('name')}: 'name' must be a string")
        bins = doc.get("bins")
        if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 2):
            raise RfmxError(f"{where('bins')}: 'bins' must be an integer >= 2, got {bins!r}")
        default = doc.get("default")
        if default is not None and (not isinstance(default, str) or not default):
            raise RfmxError(f"{where('default')}: 'default' must be a segment name (a string)")
        segs = doc.get(table, [])
        if not isinstance(segs, list) or not all(isinstance(s, dict) for s in segs):
            raise RfmxError(f"{where(table)}: '{table}' must be an array of tables ([[{table}]])")
        if not segs and default is None:
            raise RfmxError(f"{source}: the map has no [[{table}]] rules and no default")
        rules = []
        for i, seg in enumerate(segs):
            sname = seg.get("name")
            if not isinstance(sname, str) or not sname:
                raise RfmxError(f"{where('name', i)}: [[{table}]] number {i + 1} needs a name (a string)")
            conds = []
            for key, value in seg.items():
                if key in ("name", "description"):
                    continue
                conds.append(_condition(key, value, f"{where(key, i)}: {table} '{sname}'", key in label_fields))
            rules.append(Rule(sname, conds, _locate(text, "name", i, table), i))
        weights = doc.get("weights")
        if weights is not None and not isinstance(weights, dict):
            raise RfmxError(f"{where('weights')}: 'weights' must be a table ([weights])")
        tiers = doc.get("tiers")
        if tiers is not None and not isinstance(tiers, dict):
            raise RfmxError(f"{where('tiers')}: 'tiers' must be a table ([tiers])")
        smap = cls(name, rules, bins=bins, default=default, description=doc.get("description", ""),
                   source=source, text=text, weights=weights, tiers=tiers)
        smap.table = table
        names = smap.names()
        for key in ("order", "lapsed"):
            if key not in doc:
                continue
            value = doc[key]
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise RfmxError(f"{where(key)}: '{key}' must be a list of segment names")
            unknown = [v for v in value if v not in names]
            if unknown:
                raise RfmxError(f"{where(key)}: {key}: unknown segment '{unknown[0]}'; the map's segments: "
                                f"{', '.join(names)}")
            twice = [v for i, v in enumerate(value) if v in value[:i]]
            if twice:
                raise RfmxError(f"{where(key)}: {key}: segment '{twice[0]}' is listed twice")
            if key == "order":
                missing = [v for v in names if v not in value]
                if missing:
                    raise RfmxError(f"{where(key)}: order must list every segment of the map, best first; "
                                    f"missing: {', '.join(missing)}")
                smap.order = list(value)
            else:
                smap.lapsed = list(value)
        if "lapsed" not in doc:
            smap.lapsed = smap.order[-1:]
        for rule in rules:
            for c in rule.conditions:
                if c.labels is None:
                    continue
                known = label_fields[c.field] if label_fields[c.field] is not None else names
                what = f"{table}; the map's {table}s" if label_fields[c.field] is None else "name; names"
                unknown = [v for v in c.labels if v not in known]
                if unknown:
                    raise RfmxError(f"{where(c.field, rule.index)}: {table} '{rule.segment}': {c.field}: unknown "
                                    f"{what.split(';')[0]} '{unknown[0]}';{what.split(';')[1]}: {', '.join(known)}")
                c.values = tuple(float(known.index(v)) for v in c.labels)
        return smap

    # --- checks -----------------------------------------------------------------------

    def fields(self) -> set:
        return {c.field for r in self.rules for c in r.conditions}

    def _where(self, rule: Rule, field: str | None = None) -> str:
        line = _locate(self.text, field, rule.index, self.table) if field and self.text else rule.line
        return f"{self.source} line {line}" if line else self.source

    def check_bins(self, q: int) -> None:
        """The map's rules are written for ``bins`` scores: refuse another resolution."""
        if self.bins and self.bins != q:
            raise RfmxError(f"segment map '{self.name}' is written for {self.bins} bins, not {q}; "
                            f"drop --bins (it then defaults to {self.bins}) or use another map")
        for rule in self.rules:
            for c in rule.conditions:
                if c.code_strings is None:
                    continue
                idx = []
                for code in c.code_strings:
                    k = _parse_code(code, q)
                    if k == -1:
                        raise RfmxError(f"{self._where(rule, 'rfm_code')}: segment '{rule.segment}': rfm_code "
                                        f"{code!r} is not a code for {q} bins (e.g. "
                                        f"{'545' if q <= 9 else '10-4-5'})")
                    if k is not None:
                        idx.append(float(k))
                c.values = tuple(idx)

    def check_fields(self, numeric, strings=()) -> None:
        """Every rule field must be a score field or a numeric column of the table, or, for
        conditions with strings, a string column (``strings``)."""
        known = set(RULE_FIELDS) | set(numeric)
        for rule in self.rules:
            for c in rule.conditions:
                if c.strings is not None:
                    if c.field not in strings:
                        kind = "a number column" if c.field in known else "unknown"
                        raise RfmxError(f"{self._where(rule, c.field)}: segment '{rule.segment}': {c.field} "
                                        f"{c.text}: strings need a string column, and '{c.field}' is {kind}"
                                        + (f"; string columns: {', '.join(strings)}" if strings else ""))
                elif c.field not in known:
                    kind = (f"; '{c.field}' is a string column: compare it with strings, e.g. {c.field} = "
                            f"\"DE\"" if c.field in strings else "")
                    raise RfmxError(f"{self._where(rule, c.field)}: segment '{rule.segment}': unknown field "
                                    f"'{c.field}'{kind}; fields: {', '.join(RULE_FIELDS)}, {', '.join(numeric)}"
                                    + (f", {', '.join(strings)}" if strings else ""))

    def names(self) -> list[str]:
        out = []
        for r in self.rules:
            if r.segment not in out:
                out.append(r.segment)
        if self.default is not None and self.default not in out:
            out.append(self.default)
        return out

    # --- assignment -------------------------------------------------------------------

    def _program(self, field_index: dict):
        cf, ck, clo, chi, cs, ce, sv, rs, re_ = [], [], [], [], [], [], [], [], []
        for rule in self.rules:
            rs.append(len(cf))
            for c in rule.conditions:
                cf.append(field_index[c.field])
                if c.values is not None:
                    ck.append(1)
                    cs.append(len(sv))
                    sv.extend(c.values)
                    ce.append(len(sv))
                    clo.append(0.0)
                    chi.append(0.0)
                else:
                    ck.append(0)
                    cs.append(0)
                    ce.append(0)
                    clo.append(c.lo)
                    chi.append(c.hi)
            re_.append(len(cf))
        i64 = lambda a: np.array(a, dtype=np.int64)  # noqa: E731
        return (i64(cf), i64(ck), np.array(clo, dtype=np.float64), np.array(chi, dtype=np.float64), i64(cs),
                i64(ce), np.array(sv, dtype=np.float64), i64(rs), i64(re_))

    def _match(self, fields: np.ndarray, field_index: dict) -> np.ndarray:
        from .kernels.scores import match_rules

        out = np.empty(fields.shape[1], dtype=np.int32)
        match_rules(np.ascontiguousarray(fields, dtype=np.float64), *self._program(field_index), out)
        return out

    def _static_never(self, rule: Rule, q: int) -> str | None:
        """Why ``rule`` can never match whatever the data, or None."""
        bounds = {"r_score": (1, q), "f_score": (1, q), "m_score": (1, q), "rfm_score": (3, 3 * q),
                  "value_score": (0, 100), "rfm_code": (0, q ** 3 - 1)}
        for c in rule.conditions:
            lo, hi = bounds.get(c.field, (-math.inf, math.inf))
            if c.strings is not None:
                continue  # a string absent from the data is "no customers", not a broken rule
            if c.values is not None:
                if not any(lo <= v <= hi for v in c.values):
                    return f"{c.field} {c.text} is never true with {q} bins" if c.field in bounds else \
                        f"{c.field} {c.text} is an empty set"
            elif c.lo > c.hi:
                return f"{c.field} {c.text} is an empty range"
            elif c.lo > hi or c.hi < lo:
                return f"{c.field} {c.text} is never true with {q} bins"
        return None

    def _segment_codes(self) -> tuple[list[str], np.ndarray, int, type]:
        names = self.names()
        seg_of_rule = np.array([names.index(r.segment) for r in self.rules] + [0], dtype=np.int16)
        default_idx = names.index(self.default) if self.default is not None else -1
        return names, seg_of_rule, default_idx, (np.int8 if len(names) < 128 else np.int16)

    def score_only(self) -> bool:
        """True when every rule reads the scores only: the map is then a table over RFM codes."""
        return set(self.fields()) <= set(SCORE_ONLY_FIELDS)

    def _per_code(self, q: int):
        """Rule (-1: none) and segment (-1: none) of every RFM code, for score-only maps."""
        fields = sorted(self.fields())
        field_index = {f: i for i, f in enumerate(fields)}
        idx = np.arange(q ** 3)
        r, rem = np.divmod(idx, q * q)
        f, m = np.divmod(rem, q)
        per_code = {"r_score": r + 1, "f_score": f + 1, "m_score": m + 1, "rfm_score": r + f + m + 3, "rfm_code": idx}
        mat = np.array([per_code[k] for k in fields], dtype=np.float64).reshape(len(fields), q ** 3)
        rule_of_code = self._match(mat, field_index)
        _, seg_of_rule, default_idx, seg_type = self._segment_codes()
        seg_of_code = np.where(rule_of_code >= 0, seg_of_rule[rule_of_code], default_idx).astype(seg_type)
        return rule_of_code, seg_of_code, mat, field_index

    def code_segments(self, q: int) -> np.ndarray | None:
        """Segment index (-1: none) of every RFM code index, or None if the map reads more
        than the scores.  Lets the code kernel write each customer's segment in its pass."""
        if not self.score_only():
            return None
        self.check_bins(q)
        return self._per_code(q)[1]

    def assign(self, table: pa.Table, *, q: int, code: np.ndarray, counts: np.ndarray, scores, value: np.ndarray,
               numeric, segment: np.ndarray | None = None, strings=()) -> tuple[np.ndarray, list[str], dict]:
        """Segment index per customer (-1: none), the segment names, and the coverage report.

        ``code``/``counts``: the RFM code index per customer and customers per code;
        ``scores``: the (r, f, m) int8 arrays; ``value``: the value score.  ``segment``:
        the segments already looked up from :meth:`code_segments`, if any.  ``strings``:
        the table's string columns that rules may compare with strings.
        """
        self.check_bins(q)
        self.check_fields(numeric, strings)
        names, seg_of_rule, default_idx, seg_type = self._segment_codes()
        n = len(code)
        n_rules = len(self.rules)
        never = {r.index: self._static_never(r, q) for r in self.rules}
        if self.score_only():
            # The rules were evaluated once per code; customers take their code's segment.
            rule_of_code, seg_of_code, mat, field_index = self._per_code(q)
            seg = segment if segment is not None else np.take(seg_of_code, code)
            first = np.bincount(rule_of_code + 1, weights=counts, minlength=n_rules + 1).astype(np.int64)
            for rule in self.rules:
                if never[rule.index] is None:
                    alone = SegmentMap(self.name, [Rule(rule.segment, rule.conditions, rule.line, 0)])
                    if (alone._match(mat, field_index) < 0).all():
                        never[rule.index] = "no combination of scores satisfies it"
                    elif not (rule_of_code == rule.index).any():
                        never[rule.index] = "earlier rules take every score combination it matches"
        else:
            fields = sorted(self.fields())
            field_index = {f: i for i, f in enumerate(fields)}
            cols = []
            for k in fields:
                if k in ("r_score", "f_score", "m_score"):
                    cols.append(scores[("r_score", "f_score", "m_score").index(k)].astype(np.float64))
                elif k == "rfm_score":
                    cols.append(scores[0].astype(np.float64) + scores[1] + scores[2])
                elif k == "rfm_code":
                    cols.append(code.astype(np.float64))
                elif k == "value_score":
                    cols.append(value)
                elif k in strings:
                    cols.append(self._string_field(table, k))
                else:
                    col = numeric_column(table, k)
                    v = col.values.astype(np.float64)
                    if col.valid is not None:
                        v[~col.valid] = np.nan
                    cols.append(v)
            mat = np.vstack(cols) if cols else np.empty((0, n))
            rule_of = self._match(mat, field_index)
            seg = np.where(rule_of >= 0, seg_of_rule[rule_of], default_idx).astype(seg_type)
            first = np.bincount(rule_of + 1, minlength=n_rules + 1).astype(np.int64)
        return seg, names, self._coverage(first, never, n)

    def _string_field(self, table: pa.Table, name: str) -> np.ndarray:
        """String column ``name`` as float codes (NaN: null) for the rule kernel, and each
        string condition on it given the codes of its strings (a string absent from the
        column gets none: it matches nobody)."""
        import pyarrow.compute as pc

        from .tables import combined

        arr = combined(table.column(name))
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary.take(arr.indices)
        enc = pc.dictionary_encode(arr)
        code_of = {v: float(i) for i, v in enumerate(enc.dictionary.to_pylist())}
        values = np.asarray(enc.indices.fill_null(-1)).astype(np.float64)
        values[values < 0] = np.nan
        for rule in self.rules:
            for c in rule.conditions:
                if c.field == name and c.strings is not None:
                    c.values = tuple(code_of[v] for v in c.strings if v in code_of)
        return values

    def label(self, columns: dict) -> tuple[np.ndarray, list[str], dict]:
        """Apply a map whose rules read plain numeric columns (``columns``: name -> array,
        NaN for a missing value, which satisfies no condition), such as a lifecycle map.

        Returns what :meth:`assign` returns: the index into the names per row (-1: none),
        the names, and the coverage report (customers per rule, rules that never match).
        """
        for rule in self.rules:
            for c in rule.conditions:
                if c.field not in columns:
                    raise RfmxError(f"{self._where(rule, c.field)}: {self.table} '{rule.segment}': unknown field "
                                    f"'{c.field}'; fields: {', '.join(columns)}")
                if c.strings is not None:
                    raise RfmxError(f"{self._where(rule, c.field)}: {self.table} '{rule.segment}': {c.field} "
                                    f"{c.text}: expected a number, a list of numbers or a table with min/max/gt/lt")
        fields = sorted(self.fields())
        field_index = {f: i for i, f in enumerate(fields)}
        n = len(next(iter(columns.values()))) if columns else 0
        mat = np.vstack([np.asarray(columns[f], dtype=np.float64) for f in fields]) if fields else np.empty((0, n))
        rule_of = self._match(mat, field_index)
        names, seg_of_rule, default_idx, seg_type = self._segment_codes()
        seg = np.where(rule_of >= 0, seg_of_rule[rule_of], default_idx).astype(seg_type)
        first = np.bincount(rule_of + 1, minlength=len(self.rules) + 1).astype(np.int64)
        never = {r.index: self._static_never(r, 0) for r in self.rules}
        return seg, names, self._coverage(first, never, n)

    def _coverage(self, first: np.ndarray, never: dict, n: int) -> dict:
        """The report of a map applied to ``n`` customers: ``first[0]`` matched no rule,
        ``first[i + 1]`` took rule ``i``; ``never``: why a rule can never match, or None."""
        rules = []
        for rule in self.rules:
            count = int(first[rule.index + 1])
            reason = never[rule.index]
            status = "ok" if count else ("never matches" if reason else "no customers")
            rules.append({"segment": rule.segment, "rule": rule.index + 1, "line": rule.line, "customers": count,
                          "status": status, "reason": reason})
        return {"map": self.name, "source": self.source, "default": self.default, "customers": n,
                "unassigned": int(first[0]), "rules": rules,
                "never_match": [r for r in rules if r["status"] != "ok"]}


def merge_coverage(reports: list) -> dict | None:
    """One coverage report (:meth:`SegmentMap.assign`) of the parts of a table: customers
    per rule, unassigned and in all added up; a rule is "no customers" only if no part
    has any (a rule that can never match says so in every part)."""
    reports = [r for r in reports if r is not None]
    if not reports:
        return None
    import copy

    out = copy.deepcopy(reports[0])
    for other in reports[1:]:
        out["customers"] += other["customers"]
        out["unassigned"] += other["unassigned"]
        for rule, more in zip(out["rules"], other["rules"]):
            rule["customers"] += more["customers"]
    for rule in out["rules"]:
        rule["status"] = "ok" if rule["customers"] else ("never matches" if rule["reason"] else "no customers")
    out["never_match"] = [r for r in out["rules"] if r["status"] != "ok"]
    return out


def _condition(key: str, value, where: str, names: bool = False) -> Condition:
    if names:
        vals = value if isinstance(value, list) else [value]
        if not vals or not all(isinstance(v, str) and v for v in vals):
            raise RfmxError(f"{where}: {key} takes a name or a list of names, e.g. \"lost\" or [\"lost\", "
                            f"\"declining\"]")
        return Condition(key, values=(), labels=tuple(vals), text=f"in {vals}")
    if key == "rfm_code":
        vals = value if isinstance(value, list) else [value]
        if not vals or not all(isinstance(v, str) for v in vals):
            raise RfmxError(f"{where}: rfm_code takes a code string or a list of them, e.g. [\"545\", \"555\"]")
        return Condition(key, code_strings=tuple(vals), values=(), text=f"in {vals}")
    if (isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))) \
            and key not in RULE_FIELDS:
        vals = value if isinstance(value, list) else [value]
        return Condition(key, values=(), strings=tuple(vals),
                         text=f"= {value!r}" if isinstance(value, str) else f"in {value}")
    if isinstance(value, bool) or isinstance(value, str):
        raise RfmxError(f"{where}: {key} = {value!r}: expected a number, a list of numbers or a table "
                        f"with min/max/gt/lt")
    if isinstance(value, (int, float)):
        return Condition(key, values=(float(value),), text=f"= {value}")
    if isinstance(value, list):
        if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise RfmxError(f"{where}: {key} = {value!r}: a list must hold numbers (one of)")
        return Condition(key, values=tuple(float(v) for v in value), text=f"in {value}")
    if isinstance(value, dict):
        if not value:
            raise RfmxError(f"{where}: {key} = {{}}: give min, max, gt or lt")
        lo, hi = -math.inf, math.inf
        for b, v in value.items():
            if b not in _BOUND_KEYS:
                raise RfmxError(f"{where}: {key}: unknown bound '{b}'; use {', '.join(_BOUND_KEYS)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RfmxError(f"{where}: {key}.{b} = {v!r} is not a number")
            v = float(v)
            if b == "min":
                lo = max(lo, v)
            elif b == "max":
                hi = min(hi, v)
            elif b == "gt":
                lo = max(lo, math.nextafter(v, math.inf))
            else:
                hi = min(hi, math.nextafter(v, -math.inf))
        text = ", ".join(f"{b} {v}" for b, v in value.items())
        return Condition(key, lo=lo, hi=hi, text=f"{{{text}}}")
    raise RfmxError(f"{where}: {key} = {value!r}: expected a number, a list of numbers or a table with min/max/gt/lt")
