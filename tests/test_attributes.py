"""Customer attributes joined to the per-customer result (rfmx.attributes, --attributes/--on).

References: pandas' left merge for the join, a direct evaluation of the rules over the
joined rows for the segments, pandas' groupby for the breakdown by an attribute.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import rfmx
from rfmx import RfmxError
from rfmx.attributes import attributes_info, join_attributes
from rfmx.cli.main import main as cli
from rfmx.scores import score_info
from rfmx.segments import SegmentMap

T0 = 1_709_251_200_000_000
AS_OF = "2025-01-01"
COUNTRIES = ["DE", "AT", "FR", "CH"]


def orders(n, n_customers, seed, *, string_ids=False, n_shops=3):
    rng = np.random.default_rng(seed)
    cust = rng.integers(0, n_customers, n)
    return pa.table({
        "customer_id": pa.array([f"c{c}" for c in cust]) if string_ids else pa.array(cust),
        "shop": pa.array(rng.integers(0, n_shops, n).astype(np.int32)),
        "order_time": pa.array(T0 + rng.integers(0, 300 * 86_400_000_000, n), pa.timestamp("us")),
        "amount": pa.array(rng.integers(-2000, 20000, n) / 100),
    })


def attribute_table(n_customers, seed, *, string_ids=False, share=0.7, key_type=pa.int32()):
    """Attributes for a random share of the customers, plus keys of no customer, shuffled."""
    rng = np.random.default_rng(seed + 1000)
    ids = np.concatenate([np.flatnonzero(rng.random(n_customers) < share), n_customers + np.arange(3)])
    rng.shuffle(ids)
    k = len(ids)
    country = rng.choice(COUNTRIES, k).astype(object)
    country[rng.random(k) < 0.1] = None  # a customer with a row but no known country
    return pa.table({
        "customer_id": pa.array([f"c{c}" for c in ids]) if string_ids else pa.array(ids, key_type),
        "country": pa.array(list(country), pa.string()),
        "age": pa.array(rng.integers(18, 80, k)),
    })


# --- the join -----------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 400), n_customers=st.integers(1, 60), seed=st.integers(0, 999), string_ids=st.booleans(),
       grouped=st.booleans())
def test_join_against_pandas_merge(n, n_customers, seed, string_ids, grouped):
    pd = pytest.importorskip("pandas")
    t = orders(n, n_customers, seed, string_ids=string_ids)
    attrs = attribute_table(n_customers, seed, string_ids=string_ids)
    got = rfmx.aggregate(t, as_of=AS_OF, attributes=attrs, group="shop" if grouped else None)
    plain = rfmx.aggregate(t, as_of=AS_OF, group="shop" if grouped else None)
    # the aggregates are untouched, the attribute columns follow them
    assert got.column_names == plain.column_names + ["country", "age"]
    assert got.select(plain.column_names).replace_schema_metadata(None).equals(plain.replace_schema_metadata(None))
    a = attrs.to_pandas()
    if not string_ids:
        a["customer_id"] = a["customer_id"].astype("int64")
    ref = plain.to_pandas().merge(a, on="customer_id", how="left", validate="many_to_one")
    assert got["country"].to_pylist() == [None if v is None or v != v else v for v in ref["country"]]
    assert got["age"].to_pylist() == [None if v != v else int(v) for v in ref["age"]]
    info = attributes_info(got)
    matched = plain["customer_id"].to_pylist()
    keys = set(attrs["customer_id"].to_pylist())
    assert info["customers_without"] == sum(c not in keys for c in matched)
    assert info["unused_rows"] == len(keys - set(matched))
    assert info["columns"] == ["country", "age"] and info["rows"] == attrs.num_rows


def test_join_integer_widths_and_uint64():
    t = orders(50, 10, 1)
    for key_type in (pa.int8(), pa.uint16(), pa.int64(), pa.uint64()):
        got = rfmx.aggregate(t, as_of=AS_OF, attributes=attribute_table(10, 1, key_type=key_type))
        ref = rfmx.aggregate(t, as_of=AS_OF, attributes=attribute_table(10, 1))
        assert got["country"].equals(ref["country"])
    # uint64 ids above int64 join exactly, a negative key matches none of them
    big = pa.table({"customer_id": pa.array([2**63 + 5, 2**63 + 5, 7], pa.uint64()),
                    "order_time": pa.array([T0] * 3, pa.timestamp("us")), "amount": [1.0, 2.0, 3.0]})
    attrs = pa.table({"customer_id": pa.array([-1, 7], pa.int64()), "country": ["DE", "AT"]})
    got = rfmx.aggregate(big, attributes=attrs)
    assert dict(zip(got["customer_id"].to_pylist(), got["country"].to_pylist())) == {2**63 + 5: None, 7: "AT"}


# --- bad attribute tables -----------------------------------------------------------------

@pytest.mark.parametrize("attrs, message", [
    (pa.table({"customer_id": ["1", "2"], "country": ["DE", "AT"]}),
     "<attribute table>: key column 'customer_id' holds string ids (string) but the customer ids are integers"),
    (pa.table({"customer_id": [1, 2, 1, 3, 2, 2], "country": ["DE"] * 6}),
     "key column 'customer_id' has 2 duplicated key(s) (3 extra row(s)); the first is 1 at rows 0 and 2"),
    (pa.table({"customer_id": [1, None, None], "country": ["DE"] * 3}),
     "key column 'customer_id' has 2 null value(s), first at row 1"),
    (pa.table({"id": [1], "country": ["DE"]}), "key column 'customer_id' not found; columns are: id, country"),
    (pa.table({"customer_id": [1.0], "country": ["DE"]}), "key column 'customer_id' has type double"),
    (pa.table({"customer_id": [1], "n_orders": [5]}), "attribute column 'n_orders' is also a column"),
    (pa.table({"customer_id": [1], "segment": ["x"]}), "attribute column 'segment' is also a column"),
])
def test_bad_attribute_tables(attrs, message):
    with pytest.raises(RfmxError) as e:
        rfmx.score(orders(30, 5, 2), as_of=AS_OF, attributes=attrs)
    assert message in str(e.value)


def test_string_ids_against_integer_keys():
    with pytest.raises(RfmxError, match="holds integer ids .* but the customer ids are strings"):
        rfmx.aggregate(orders(30, 5, 2, string_ids=True), attributes=pa.table({"customer_id": [1], "x": [1]}))


def test_csv_keys_read_exactly(tmp_path):
    t = orders(40, 5, 3)
    (tmp_path / "ints.csv").write_text("customer_id,country\n0,DE\n1,AT\n2,FR\n")
    got = rfmx.aggregate(t, as_of=AS_OF, attributes=str(tmp_path / "ints.csv"))
    assert {c: k for c, k in zip(got["customer_id"].to_pylist(), got["country"].to_pylist()) if c < 3} == \
        {0: "DE", 1: "AT", 2: "FR"}
    # "007" is not 7: the keys stay strings, and strings do not join integer ids
    (tmp_path / "padded.csv").write_text("customer_id,country\n007,DE\n1,AT\n")
    with pytest.raises(RfmxError, match=r"padded.csv: key column 'customer_id' holds string ids"):
        rfmx.aggregate(t, as_of=AS_OF, attributes=str(tmp_path / "padded.csv"))
    with pytest.raises(RfmxError, match=r"nope.parquet: file not found"):
        rfmx.aggregate(t, as_of=AS_OF, attributes=str(tmp_path / "nope.parquet"))


# --- segment rules on attributes ----------------------------------------------------------

ATTRIBUTE_MAP = """
name = "by-country"
default = "Rest"

[[segment]]
name = "DACH regulars"
country = ["DE", "AT", "CH"]
f_score = { min = 3 }

[[segment]]
name = "French"
country = "FR"

[[segment]]
name = "Seniors"
age = { min = 60 }

[[segment]]
name = "Nowhere"
country = "XX"
"""


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 400), n_customers=st.integers(1, 60), seed=st.integers(0, 999), grouped=st.booleans())
def test_rules_on_attributes(n, n_customers, seed, grouped):
    t = orders(n, n_customers, seed)
    attrs = attribute_table(n_customers, seed)
    got = rfmx.score(t, as_of=AS_OF, attributes=attrs, segments=SegmentMap.from_toml(ATTRIBUTE_MAP),
                     group="shop" if grouped else None)
    expected = []
    for row in got.select(["country", "f_score", "age"]).to_pylist():
        c, f, age = row["country"], row["f_score"], row["age"]
        if c in ("DE", "AT", "CH") and f >= 3:
            expected.append("DACH regulars")
        elif c == "FR":
            expected.append("French")
        elif age is not None and age >= 60:
            expected.append("Seniors")
        else:
            expected.append("Rest")  # a null country or age satisfies no condition
    assert got["segment"].to_pylist() == expected
    rules = {r["segment"]: r for r in score_info(got)["segments"]["rules"]}
    assert rules["Nowhere"]["customers"] == 0 and rules["Nowhere"]["status"] == "no customers"
    # the scores themselves do not depend on the attributes
    plain = rfmx.score(t, as_of=AS_OF, group="shop" if grouped else None)
    assert got["rfm_code"].equals(plain["rfm_code"]) and got["value_score"].equals(plain["value_score"])


@pytest.mark.parametrize("rule, message", [
    ('age = "old"', "age = 'old': strings need a string column, and 'age' is a number column"),
    ("country = 3", "unknown field 'country'; 'country' is a string column: compare it with strings"),
    ('region = "north"', "region = 'north': strings need a string column, and 'region' is unknown"),
    ('r_score = "5"', "r_score = '5': expected a number"),
])
def test_bad_attribute_rules(rule, message):
    text = f'[[segment]]\nname = "A"\n{rule}\n'
    with pytest.raises(RfmxError) as e:
        smap = SegmentMap.from_toml(text)
        rfmx.score(orders(30, 5, 2), as_of=AS_OF, attributes=attribute_table(5, 2), segments=smap)
    assert message in str(e.value)


# --- the command line, and the breakdown by an attribute -----------------------------------

def test_cli_attributes_and_summary_by_attribute(tmp_path):
    pd = pytest.importorskip("pandas")
    t = orders(600, 80, 7)
    pq.write_table(t, tmp_path / "orders.parquet")
    attrs = attribute_table(80, 7)
    pq.write_table(attrs, tmp_path / "customers.parquet")
    (tmp_path / "map.toml").write_text(ATTRIBUTE_MAP)
    run = CliRunner(mix_stderr=False).invoke if "mix_stderr" in CliRunner.__init__.__code__.co_varnames \
        else CliRunner().invoke
    r = run(cli, ["score", str(tmp_path / "orders.parquet"), "--as-of", AS_OF, "--attributes",
                  str(tmp_path / "customers.parquet"), "--segments", str(tmp_path / "map.toml"),
                  "-o", str(tmp_path / "s.parquet")])
    assert r.exit_code == 0, r.output
    scored = pq.read_table(tmp_path / "s.parquet")
    without = attributes_info(scored)["customers_without"]
    assert f"{without:,} of {scored.num_rows:,} rows without attributes (null)" in r.stderr
    ref = rfmx.score(t, as_of=AS_OF, attributes=attrs, segments=SegmentMap.from_toml(ATTRIBUTE_MAP))
    assert scored["segment"].to_pylist() == ref["segment"].to_pylist()

    r = run(cli, ["summary", str(tmp_path / "s.parquet"), "--by", "country", "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    df = scored.to_pandas()
    df["segment"] = df["segment"].astype(str)
    df["country"] = df["country"].astype(object).where(df["country"].notna(), None)
    groups = df.groupby("country", dropna=False, sort=False)
    assert {g["group"]["country"] for g in doc} == {None if k != k else k for k in groups.groups}
    revenue = groups["monetary_minor"].sum()
    assert [g["revenue"] for g in doc] == sorted([pytest.approx(v / 100) for v in revenue.values],
                                                 key=lambda a: -a.expected)
    for g in doc:
        c = g["group"]["country"]
        part = df[df["country"].isna()] if c is None else df[df["country"] == c]
        assert g["customers"] == len(part)
        assert g["revenue"] == pytest.approx(part["monetary_minor"].sum() / 100)
        segs = {s["segment"]: s["customers"] for s in g["segments"] if s["customers"]}
        assert segs == {k: int(v) for k, v in part.groupby("segment").size().items()}

    r = run(cli, ["summary", str(tmp_path / "s.parquet"), "--by", "country", "--top", "2"])
    assert r.exit_code == 0 and "country = (null)" in r.stdout


def test_cli_attribute_errors(tmp_path):
    pq.write_table(orders(60, 10, 8), tmp_path / "orders.parquet")
    pq.write_table(pa.table({"customer_id": ["a", "b"], "x": [1, 2]}), tmp_path / "strs.parquet")
    r = CliRunner().invoke(cli, ["aggregate", str(tmp_path / "orders.parquet"), "--attributes",
                                 str(tmp_path / "strs.parquet"), "-o", str(tmp_path / "rfm.parquet")])
    assert r.exit_code == 1 and "strs.parquet: key column 'customer_id' holds string ids" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "rfm.parquet").exists()
    pq.write_table(pa.table({"cid": [1, 2], "x": [1, 2]}), tmp_path / "c.parquet")
    r = CliRunner().invoke(cli, ["aggregate", str(tmp_path / "orders.parquet"), "--attributes",
                                 str(tmp_path / "c.parquet"), "--on", "cid", "-o", str(tmp_path / "rfm.parquet")])
    assert r.exit_code == 0, r.output
    got = pq.read_table(tmp_path / "rfm.parquet")
    assert "x" in got.column_names and attributes_info(got)["on"] == "cid"
    r = CliRunner().invoke(cli, ["aggregate", str(tmp_path / "orders.parquet"), "--attributes",
                                 str(tmp_path / "c.parquet"), "--state-out", str(tmp_path / "s.arrow")])
    assert r.exit_code == 2 and "give -o/--output" in r.output
    # a rule on a column the attribute table does not have fails before the scan
    (tmp_path / "m.toml").write_text('[[segment]]\nname = "A"\nregion = "north"\n')
    r = CliRunner().invoke(cli, ["score", str(tmp_path / "orders.parquet"), "--attributes",
                                 str(tmp_path / "c.parquet"), "--on", "cid", "--segments", str(tmp_path / "m.toml")])
    assert r.exit_code == 1 and "'region' is unknown" in r.output


def test_join_attributes_directly():
    table = rfmx.aggregate(orders(30, 5, 9), as_of=AS_OF)
    joined, info = join_attributes(table, pa.table({"customer_id": [0, 1], "tier": ["gold", "silver"]}))
    assert info.customers_without == table.num_rows - sum(c in (0, 1) for c in table["customer_id"].to_pylist())
    assert "rows without attributes" in info.line()
