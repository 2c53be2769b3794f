"""Segment maps: the built-in grids, user TOML maps against a naive first-match, coverage, errors."""
from __future__ import annotations

import tomllib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive_scores as naive
from rfmx import RfmxError
from rfmx.scores import score_info, score_table
from rfmx.segments import PYMC_QUARTILES_TOML, SegmentMap

# The default map as the README shows it: rows R = 5..1, columns F = 1..5.
GRID = {
    5: ["New Customers", "Potential Loyalists", "Potential Loyalists", "Champions", "Champions"],
    4: ["Promising", "Potential Loyalists", "Potential Loyalists", "Loyal Customers", "Loyal Customers"],
    3: ["About to Sleep", "About to Sleep", "Need Attention", "Loyal Customers", "Loyal Customers"],
    2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"],
    1: ["Lost", "Lost", "At Risk", "At Risk", "Can't Lose Them"],
}

# pymc_marketing.clv.utils._default_rfm_segment_config, copied from PyMC-Marketing.
PYMC = {
    "Premium Customer": ["334", "443", "444", "344", "434", "433", "343", "333"],
    "Repeat Customer": ["244", "234", "232", "332", "143", "233", "243"],
    "Top Spender": ["424", "414", "144", "314", "324", "124", "224", "423", "413", "133", "323", "313", "134"],
    "At Risk Customer": ["422", "223", "212", "122", "222", "132", "322", "312", "412", "123", "214"],
    "Inactive Customer": ["411", "111", "113", "114", "112", "211", "311"],
}


def _assign_all_codes(smap: SegmentMap, q: int):
    """Segment of every RFM code (one customer per code)."""
    idx = np.arange(q ** 3)
    r, rem = np.divmod(idx, q * q)
    f, m = np.divmod(rem, q)
    scores = tuple((a + 1).astype(np.int8) for a in (r, f, m))
    seg, names, info = smap.assign(pa.table({"x": idx}), q=q, code=idx, counts=np.ones(q ** 3, np.int64),
                                   scores=scores, value=np.zeros(q ** 3), numeric=[])
    return {f"{a + 1}{b + 1}{c + 1}": (names[s] if s >= 0 else None) for a, b, c, s in zip(r, f, m, seg)}, info


def test_default_grid_is_the_documented_table():
    by_code, info = _assign_all_codes(SegmentMap.builtin("rfm-grid"), 5)
    for code, seg in by_code.items():
        assert seg == GRID[int(code[0])][int(code[1]) - 1], code
    assert info["unassigned"] == 0 and info["never_match"] == []
    assert SegmentMap.builtin("default").names() == SegmentMap.builtin("rfm-grid").names()


def test_pymc_map_is_pymc_marketings_default():
    by_code, info = _assign_all_codes(SegmentMap.builtin("pymc"), 4)
    want = {code: seg for seg, codes in PYMC.items() for code in codes}
    for code, seg in by_code.items():
        assert seg == want.get(code, "Other"), code
    assert info["unassigned"] == 64 - len(want) == 18
    assert tomllib.loads(PYMC_QUARTILES_TOML)["bins"] == 4


# --- user maps against the naive first match -----------------------------------------------

FIELDS = {"r_score": st.integers(0, 6), "f_score": st.integers(0, 6), "m_score": st.integers(0, 6),
          "rfm_score": st.integers(2, 16), "n_orders": st.integers(0, 8), "recency_days": st.integers(0, 400),
          "monetary_total": st.floats(-10, 3000).map(lambda v: round(v, 2)), "value_score": st.floats(0, 100)}


@st.composite
def conditions(draw):
    field = draw(st.sampled_from(sorted(FIELDS)))
    val = FIELDS[field]
    kind = draw(st.sampled_from(["eq", "in", "bounds"]))
    if kind == "eq":
        return field, draw(val)
    if kind == "in":
        return field, draw(st.lists(val, min_size=1, max_size=3))
    keys = draw(st.lists(st.sampled_from(["min", "max", "gt", "lt"]), min_size=1, max_size=3, unique=True))
    return field, {k: draw(val) for k in keys}


def _toml_value(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


@st.composite
def maps(draw):
    rules = []
    for i in range(draw(st.integers(1, 6))):
        conds = dict(draw(st.lists(conditions(), min_size=0, max_size=3, unique_by=lambda c: c[0])))
        if draw(st.booleans()):
            conds["rfm_code"] = draw(st.lists(st.sampled_from(["111", "555", "345", "512", "999"]), min_size=1,
                                              max_size=3))
        rules.append({"name": draw(st.sampled_from(["A", "B", "C", "D"])), **conds})
    default = draw(st.sampled_from([None, "Other", "A"]))
    lines = ['name = "random"'] + ([f'default = "{default}"'] if default else [])
    for rule in rules:
        lines.append("[[segment]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n", rules, default


def _customers(seed, n=120):
    rng = np.random.default_rng(seed)
    n_orders = rng.integers(0, 8, n)
    mask = n_orders == 0
    minor = rng.integers(-1000, 300000, n)
    return pa.table({
        "customer_id": np.arange(n),
        "recency_days": pa.array(rng.integers(0, 400, n), mask=mask),
        "n_orders": n_orders,
        "monetary_total": minor / 100,
        "monetary_minor": minor,
        "avg_order_value": pa.array(minor / 100 / np.maximum(n_orders, 1), mask=mask),
    })


@settings(max_examples=60, deadline=None)
@given(maps(), st.integers(0, 3))
def test_user_maps_match_naive_first_match(spec, seed):
    text, rules, default = spec
    out = score_table(_customers(seed), segments=SegmentMap.from_toml(text, "random.toml"))
    rows = out.select(["r_score", "f_score", "m_score", "rfm_score", "n_orders", "recency_days",
                       "monetary_total", "value_score"]).to_pylist()
    want = [naive.first_match(rules, row, 5, default) for row in rows]
    assert out.column("segment").to_pylist() == want
    info = score_info(out)["segments"]
    assert info["unassigned"] == sum(
        naive.first_match(rules, row, 5) is None for row in rows)
    per_rule = [0] * len(rules)
    for row in rows:
        for i, rule in enumerate(rules):
            if naive.rule_matches(rule, row, 5):
                per_rule[i] += 1
                break
    assert [r["customers"] for r in info["rules"]] == per_rule


def test_rules_over_raw_aggregates_and_nulls():
    text = """
name = "raw"
default = "Everyone else"

[[segment]]
name = "Recent"
recency_days = { max = 30 }

[[segment]]
name = "Big"
monetary_total = { gt = 1000 }
n_orders = { min = 2 }
"""
    t = _customers(1)
    out = score_table(t, segments=SegmentMap.from_toml(text))
    for row in out.to_pylist():
        if row["recency_days"] is not None and row["recency_days"] <= 30:
            assert row["segment"] == "Recent"
        elif row["monetary_total"] > 1000 and row["n_orders"] >= 2:
            assert row["segment"] == "Big"
        else:
            assert row["segment"] == "Everyone else"
    # refund-only customers (null recency) never match a recency rule
    assert all(r["segment"] != "Recent" for r in out.to_pylist() if r["n_orders"] == 0)


def test_coverage_report_names_gaps_and_dead_rules():
    text = """
name = "gappy"

[[segment]]
name = "Top"
r_score = 5

[[segment]]
name = "Impossible"
f_score = { min = 6 }

[[segment]]
name = "Shadowed"
r_score = { min = 5 }

[[segment]]
name = "Empty range"
m_score = { min = 4, max = 2 }

[[segment]]
name = "Nobody"
monetary_total = { gt = 1e12 }
"""
    t = _customers(2, n=300)
    out = score_table(t, segments=SegmentMap.from_toml(text, "gappy.toml"))
    info = score_info(out)["segments"]
    top = sum(1 for r in out.to_pylist() if r["r_score"] == 5)
    assert info["unassigned"] == 300 - top
    assert out.column("segment").null_count == 300 - top
    status = {r["segment"]: (r["status"], r["reason"], r["line"]) for r in info["rules"]}
    assert status["Top"][0] == "ok"
    assert status["Impossible"][:2] == ("never matches", "f_score {min 6} is never true with 5 bins")
    assert status["Empty range"][0] == "never matches" and "empty range" in status["Empty range"][1]
    assert status["Nobody"][0] == "no customers"
    assert status["Impossible"][2] == 9  # the line of its name
    # score-only maps are checked over every score combination: shadowing is detected too
    only_scores = text.split("[[segment]]\nname = \"Nobody\"")[0] + (
        '[[segment]]\nname = "Contradiction"\nr_score = 5\nrfm_score = 4\n')
    info = score_info(score_table(t, segments=SegmentMap.from_toml(only_scores)))["segments"]
    status = {r["segment"]: (r["status"], r["reason"]) for r in info["rules"]}
    assert status["Shadowed"] == ("never matches", "earlier rules take every score combination it matches")
    assert status["Contradiction"] == ("never matches", "no combination of scores satisfies it")


def test_weights_and_tiers_from_the_map_file():
    text = """
name = "with weights"
default = "All"

[weights]
monetary = 3
recency = 1

[tiers]
gold = 10
rest = 90
"""
    out = score_table(_customers(3), segments=SegmentMap.from_toml(text))
    info = score_info(out)
    assert info["weights"] == {"m_score": 3.0, "r_score": 1.0}
    assert set(out.column("value_tier").to_pylist()) <= {"gold", "rest"}


# --- bad maps ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ('name = "x"\n[[segment]]\nname = "A"\nr_score = \n', "x.toml: malformed TOML: Invalid value (at line 4, column 11)"),
    ('name = "x"\n\n[[segment]]\nname = "A"\nr_scor = 5\n', "x.toml line 5: segment 'A': unknown field 'r_scor'"),
    ('[[segment]]\nname = "A"\nr_score = { above = 3 }\n', "x.toml line 3: segment 'A': r_score: unknown bound 'above'"),
    ('[[segment]]\nname = "A"\nr_score = "high"\n', "r_score = 'high': expected a number"),
    ('[[segment]]\nr_score = 5\n', "x.toml line 1: [[segment]] number 1 needs a name"),
    ('colour = "red"\n[[segment]]\nname = "A"\n', "x.toml line 1: unknown key 'colour'"),
    ('[[segment]]\nname = "A"\nrfm_code = ["12"]\n', "x.toml line 3: segment 'A': rfm_code '12' is not a code for 5 bins"),
    ('bins = 1\n', "'bins' must be an integer >= 2"),
    ('name = "empty"\n', "the map has no [[segment]] rules and no default"),
    ('bins = 4\n[[segment]]\nname = "A"\nr_score = 1\n', "segment map 'x' is written for 4 bins, not 5"),
    ('[[segment]]\nname = "A"\nmonetary_total = [true]\n', "a list must hold numbers"),
])
def test_bad_maps_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(RfmxError) as exc:
        score_table(_customers(0), segments=str(path), bins=5)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
