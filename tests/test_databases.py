"""Databases as sources and sinks, against a real PostgreSQL server, SQLite and DuckDB files.

One generated order history lives in a Parquet file and in each database.  Every streaming
command reads it from the database and writes its per-customer result back into a table;
that table, read back, must hold exactly the values of the same command over the Parquet
file (only the column types the database has change: ``smallint`` for ``int8``, text for
dictionaries, and in SQLite ISO text for times).  Then the guarantees: streaming, one
transaction (a failed write leaves the table as it was), ``--if-exists``, credentials, and
the bad input rows (one line, non-zero exit, nothing written — in the folder or the database).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import rfmx
from badinput import fails_cleanly, run_cli

ROWS = 20_000
COMMANDS = {  # command -> options for both runs (small and deterministic)
    "aggregate": [],
    "score": [],
    "timeline": ["--every", "quarter"],
    "cluster": ["-k", "3", "--seed", "1", "--n-init", "2"],
    "clv": ["--no-spend"],
    "alerts": [],
}


def orders_table(decimal_amounts: bool = True) -> pa.Table:
    return pa.Table.from_batches(list(rfmx.generate_orders(ROWS, seed=5, decimal_amounts=decimal_amounts)))


@pytest.fixture(scope="module")
def shop(tmp_path_factory, postgres):
    """The history as ``orders.parquet`` and as table ``orders`` in PostgreSQL (amounts
    ``numeric``; ``orders_float``: ``double precision``), in ``shop.sqlite`` and in
    ``shop.duckdb``."""
    folder = tmp_path_factory.mktemp("shop")
    orders = orders_table()
    pq.write_table(orders, folder / "orders.parquet")
    postgres.load("orders", orders)
    postgres.load("orders_float", orders_table(decimal_amounts=False))
    for name in ("shop.sqlite", "shop.duckdb"):
        rfmx.write_table(orders, rfmx.DatabaseTable(str(folder / name), "orders"))
    return folder


def read_back(location: str, table: str) -> pa.Table:
    """A whole table, read with the driver itself (not through rfmx)."""
    kind = rfmx.databases.database_kind(location)
    if kind == "duckdb":
        import duckdb

        path = location.split("duckdb:///", 1)[-1]
        with duckdb.connect(path, read_only=True) as con:
            return con.sql(f'SELECT * FROM "{table}"').to_arrow_table()
    if kind == "sqlite":
        import adbc_driver_sqlite.dbapi as driver

        location = location.split("sqlite:///", 1)[-1]
    else:
        import adbc_driver_postgresql.dbapi as driver
    with driver.connect(location) as con, con.cursor() as cur:
        cur.execute(f'SELECT * FROM "{table}"')
        return cur.fetch_arrow_table()


def tables_in(location: str) -> dict[str, int]:
    """{table: rows} of a database: what 'nothing written' compares."""
    kind = rfmx.databases.database_kind(location)
    if kind == "postgresql":
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    elif kind == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name FROM information_schema.tables"
    names = read_query(location, sql).column(0).to_pylist()
    return {n: read_query(location, f'SELECT count(*) FROM "{n}"').column(0)[0].as_py() for n in names}


def read_query(location: str, sql: str) -> pa.Table:
    kind = rfmx.databases.database_kind(location)
    if kind == "duckdb":
        import duckdb

        with duckdb.connect(location.split("duckdb:///", 1)[-1], read_only=True) as con:
            return con.sql(sql).to_arrow_table()
    if kind == "sqlite":
        import adbc_driver_sqlite.dbapi as driver

        location = location.split("sqlite:///", 1)[-1]
    else:
        import adbc_driver_postgresql.dbapi as driver
    with driver.connect(location) as con, con.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def assert_same_values(expected: pa.Table, got: pa.Table) -> None:
    """``got`` (read back from a database) holds exactly ``expected``'s values: same columns,
    rows matched by customer (and as_of), every value equal — floats bit for bit."""
    assert got.column_names == expected.column_names
    columns = []
    for name in expected.column_names:
        want, have = expected.schema.field(name).type, got.column(name)
        if pa.types.is_dictionary(want):
            want = want.value_type
        if have.type != want:
            have = have.cast(want)  # smallint -> int8, ISO text -> timestamp (SQLite)
        columns.append(have)
    plain = pa.table({n: (expected.column(n).cast(expected.schema.field(n).type.value_type)
                          if pa.types.is_dictionary(expected.schema.field(n).type) else expected.column(n))
                      for n in expected.column_names})
    keys = [(k, "ascending") for k in ("as_of", "customer_id") if k in expected.column_names]
    got = pa.table(columns, names=expected.column_names).sort_by(keys)
    plain = plain.sort_by(keys)
    for name in plain.column_names:
        assert got.column(name).equals(plain.column(name)), name


def run_ok(*args):
    result = run_cli(*args)
    assert result.exit_code == 0, (args, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


# --- reading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["orders", "orders_float"])
def test_python_api_reads_postgres_like_the_file(shop, postgres, table):
    expected = rfmx.aggregate(str(shop / "orders.parquet"), order_id="order_id")
    by_table = rfmx.aggregate(rfmx.DatabaseSource(postgres.uri(), table=table), order_id="order_id")
    by_query = rfmx.aggregate(rfmx.DatabaseSource(postgres.uri(), query=f"SELECT * FROM {table} ORDER BY order_id"),
                              order_id="order_id")
    key = [("customer_id", "ascending")]
    assert by_table.sort_by(key).equals(expected.sort_by(key))
    assert by_query.sort_by(key).equals(expected.sort_by(key))


@pytest.mark.parametrize("kind", ["postgresql", "sqlite", "duckdb"])
def test_results_stream_in_batches(shop, postgres, kind):
    """The result arrives batch by batch (never fetched whole), rows numbered across it."""
    location = {"postgresql": postgres.uri(), "sqlite": f"sqlite:///{shop}/shop.sqlite",
                "duckdb": f"duckdb:///{shop}/shop.duckdb"}[kind]
    from rfmx.columns import ColumnMap
    from rfmx.sources import iter_batches

    batches = list(iter_batches(rfmx.DatabaseSource(location, table="orders"), ColumnMap(), batch_size=2_000))
    assert len(batches) >= 5
    assert [row0 for _, row0, _ in batches] == [sum(b.num_rows for _, _, b in batches[:i]) for i in range(len(batches))]
    assert sum(b.num_rows for _, _, b in batches) == ROWS
    assert all(b.schema.names == ["customer_id", "order_time", "amount"] for _, _, b in batches)


# --- every command, database in and database out ---------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_postgres_in_and_out_equals_the_file_path(shop, postgres, command, tmp_path):
    expected_path = tmp_path / "expected.parquet"
    run_ok(command, shop / "orders.parquet", "--order-id", "order_id", *COMMANDS[command], "-o", expected_path)
    out = f"out_{command}"
    run_ok(command, postgres.uri(), "--query", "SELECT * FROM orders", "--order-id", "order_id", *COMMANDS[command],
           "-o", postgres.uri(), "--table", out, "--if-exists", "replace")
    assert_same_values(pq.read_table(expected_path), read_back(postgres.uri(), out))


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
@pytest.mark.parametrize("command", ["aggregate", "score", "timeline"])
def test_database_files_in_and_out_equal_the_file_path(shop, kind, command, tmp_path):
    expected_path = tmp_path / "expected.parquet"
    run_ok(command, shop / "orders.parquet", "--order-id", "order_id", *COMMANDS[command], "-o", expected_path)
    source = f"{kind}:///{shop}/shop.{kind}"
    # A different file for the result, named by its suffix alone
    out = tmp_path / f"results.{kind}"
    run_ok(command, source, "--query", "SELECT * FROM orders", "--order-id", "order_id", *COMMANDS[command],
           "-o", out, "--table", f"out_{command}")
    assert_same_values(pq.read_table(expected_path), read_back(f"{kind}:///{out}", f"out_{command}"))


def test_database_source_to_a_file_and_a_file_to_a_database(shop, postgres, tmp_path):
    """--table names the one database side there is."""
    run_ok("score", postgres.uri(), "--table", "orders", "--order-id", "order_id", "-o", tmp_path / "s.parquet")
    run_ok("score", shop / "orders.parquet", "--order-id", "order_id", "-o", postgres.uri(), "--table", "from_file",
           "--if-exists", "replace")
    assert_same_values(pq.read_table(tmp_path / "s.parquet"), read_back(postgres.uri(), "from_file"))


def test_same_duckdb_file_in_and_out(shop, tmp_path):
    """Orders read from a DuckDB file and the scores written into another table of it."""
    import shutil

    db = tmp_path / "both.duckdb"
    shutil.copy(shop / "shop.duckdb", db)
    run_ok("score", shop / "orders.parquet", "--order-id", "order_id", "-o", tmp_path / "s.parquet")
    run_ok("score", db, "--query", "SELECT * FROM orders", "--order-id", "order_id", "-o", db, "--table", "scores")
    assert_same_values(pq.read_table(tmp_path / "s.parquet"), read_back(str(db), "scores"))


# --- writing: --if-exists and one transaction ------------------------------------------------------


def test_if_exists_replace_and_append(shop, postgres):
    small = rfmx.aggregate(str(shop / "orders.parquet")).slice(0, 10)
    target = postgres.uri()
    rfmx.write_table(small, rfmx.DatabaseTable(target, "modes", if_exists="replace"))
    rfmx.write_table(small, rfmx.DatabaseTable(target, "modes", if_exists="append"))
    assert read_back(target, "modes").num_rows == 20
    rfmx.write_table(small.slice(0, 3), rfmx.DatabaseTable(target, "modes", if_exists="replace"))
    assert read_back(target, "modes").num_rows == 3
    with pytest.raises(rfmx.RfmxError, match=r"\[table modes\]: the table already exists"):
        rfmx.write_table(small, rfmx.DatabaseTable(target, "modes"))
    # a schema-qualified name, and an empty result still makes the table with every column
    postgres.sql("CREATE SCHEMA IF NOT EXISTS crm")
    rfmx.write_table(small.slice(0, 0), rfmx.DatabaseTable(target, "crm.empty_result"))
    assert read_query(target, "SELECT * FROM crm.empty_result").column_names == small.column_names


@pytest.mark.parametrize("kind", ["postgresql", "sqlite", "duckdb"])
def test_a_failed_write_leaves_the_table_as_it_was(shop, postgres, kind, monkeypatch, tmp_path):
    """--if-exists replace drops the old table inside the transaction: when the new rows fail
    half-way, the rollback brings the old table back, rows and all."""
    location = {"postgresql": postgres.uri(), "sqlite": f"sqlite:///{tmp_path}/t.sqlite",
                "duckdb": f"duckdb:///{tmp_path}/t.duckdb"}[kind]
    table = rfmx.aggregate(str(shop / "orders.parquet"))
    rfmx.write_table(table.slice(0, 7), rfmx.DatabaseTable(location, "kept", if_exists="replace"))
    before = tables_in(location)

    from rfmx import databases

    staged_reader = databases._staged_reader

    def failing(staged, kind):
        reader = staged_reader(staged, kind)

        def batches():
            yield reader.read_next_batch()
            raise pa.ArrowInvalid("the disk went away")

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    monkeypatch.setattr(databases, "_staged_reader", failing)
    with pytest.raises(rfmx.RfmxError, match=r"\[table kept\]: cannot write the table: .*(the disk went away|wrote 100 of)"):
        rfmx.write_table(pa.Table.from_batches(table.to_batches(max_chunksize=100)),
                         rfmx.DatabaseTable(location, "kept", if_exists="replace"))
    assert tables_in(location) == before
    assert read_back(location, "kept").num_rows == 7


def test_a_failed_command_writes_no_table(shop, postgres, tmp_path):
    """The table is written only at the end, after everything else succeeded: a command that
    fails after its output was declared (here: the scan) leaves no table."""
    before = tables_in(postgres.uri())
    fails_cleanly(["score", postgres.uri(), "--query", "SELECT customer_id, order_time, amount::text || 'x' AS amount "
                   "FROM orders", "-o", postgres.uri(), "--table", "never"],
                  r"\[query\]: column 'amount' .*row 0", tmp_path)
    assert tables_in(postgres.uri()) == before


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
def test_a_new_database_file_is_not_left_behind(shop, kind, tmp_path, monkeypatch):
    fails_cleanly(["aggregate", shop / "orders.parquet", "--amount", "order_id", "--amount-scale", "18",
                   "-o", tmp_path / f"new.{kind}", "--table", "t"], r"overflows int64", tmp_path)
    from rfmx import databases

    def failing(staged, kind):
        raise pa.ArrowInvalid("the disk went away")

    monkeypatch.setattr(databases, "_staged_reader", failing)
    with pytest.raises(rfmx.RfmxError, match="the disk went away"):
        rfmx.write_table(pa.table({"a": [1]}), rfmx.DatabaseTable(f"{kind}:///{tmp_path}/new.{kind}", "t"))
    assert os.listdir(tmp_path) == []


# --- credentials ---------------------------------------------------------------------------------


def test_password_from_a_file_or_the_environment(shop, postgres, tmp_path, monkeypatch):
    uri = postgres.uri(user="reader")
    expected = rfmx.aggregate(str(shop / "orders.parquet"))
    secret = tmp_path / "pw"
    secret.write_text(postgres.PASSWORD + "\n")
    got = rfmx.aggregate(rfmx.DatabaseSource(uri, table="orders", password_file=secret))
    key = [("customer_id", "ascending")]
    assert got.sort_by(key).equals(expected.sort_by(key))
    run_ok("aggregate", uri, "--table", "orders", "--password-file", secret, "-o", tmp_path / "a.parquet")
    monkeypatch.setenv("PGPASSWORD", postgres.PASSWORD)
    run_ok("aggregate", uri, "--table", "orders", "-o", tmp_path / "b.parquet")
    assert pq.read_table(tmp_path / "b.parquet").sort_by(key).equals(expected.sort_by(key))


def test_a_wrong_password_is_one_line_without_the_password(postgres, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    uri = postgres.uri(user="reader").replace("reader@", "reader:wrong-pw@")
    line = fails_cleanly(["aggregate", uri, "--table", "orders", "-o", tmp_path / "r.parquet"],
                         r"postgresql://reader:\*\*\*@127\.0\.0\.1:\d+/shop \[table orders\]: cannot connect: "
                         r".*password authentication failed", tmp_path)
    assert "wrong-pw" not in line


# --- bad input: one line, non-zero exit, nothing written ------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD = [  # id, args after the command ({pg} is the server's URI, {dead} one nobody listens on), message
    ("unreachable server as the source", ["{dead}", "--table", "orders", "-o", "r.parquet"],
     r"^Error: postgresql://rfmx@127\.0\.0\.1:\d+/shop \[table orders\]: cannot connect: .*refused"),
    ("unreachable server as -o", ["{file}", "-o", "{dead}", "--table", "scores"],
     r"^Error: postgresql://rfmx@127\.0\.0\.1:\d+/shop \[table scores\]: cannot connect: .*refused"),
    ("a query that fails", ["{pg}", "--query", "SELECT * FROM no_such_table", "-o", "r.parquet"],
     r"\[query\]: the query failed: .*relation \"no_such_table\" does not exist"),
    ("a query that fails while it runs", ["{pg}", "--query",
                                          "SELECT customer_id, order_time, 1 / (order_id - order_id) AS amount "
                                          "FROM orders", "-o", "r.parquet"],
     r"\[query\]: (the query failed|cannot read the result at or after row \d+): .*division by zero"),
    ("a table without a mapped column", ["{pg}", "--table", "orders", "--amount", "total", "-o", "r.parquet"],
     r"\[table orders\]: column 'total' not found; columns are: customer_id, order_id, order_time, amount"),
    ("a boolean amount", ["{pg}", "--query", "SELECT customer_id, order_time, amount > 0 AS amount FROM orders",
                          "-o", "r.parquet"],
     r"\[query\]: column 'amount'.*bool"),
    ("a text amount that is no number", ["{pg}", "--query", "SELECT customer_id, order_time, CASE WHEN n = 3 "
                                         "THEN 'n/a' ELSE amount::text END AS amount FROM (SELECT *, row_number() "
                                         "OVER (ORDER BY order_id, order_time, amount) AS n FROM orders) AS o "
                                         "ORDER BY n", "-o", "r.parquet"],
     r"\[query\]: column 'amount'.*'n/a'.* at row 2"),
    ("a float customer id", ["{pg}", "--query", "SELECT customer_id::float8 AS customer_id, order_time, amount "
                             "FROM orders", "-o", "r.parquet"],
     r"\[query\]: column 'customer_id'.*double"),
    ("--if-exists fail on an existing table", ["{file}", "-o", "{pg}", "--table", "orders"],
     r"\[table orders\]: the table already exists; pass --if-exists replace or append"),
    ("a missing SQLite file", ["sqlite:///missing.sqlite", "--table", "orders", "-o", "r.parquet"],
     r"sqlite:///missing\.sqlite \[table orders\]: no such database file"),
    ("an -o folder that does not exist", ["{file}", "-o", "nowhere/x.duckdb", "--table", "t"],
     r"nowhere/x\.duckdb \[table t\]: directory nowhere does not exist"),
    ("--table for both database sides", ["{pg}", "--table", "orders", "--order-id", "order_id", "-o", "{pg}",
                                    "--table", "orders", "--if-exists", "replace"],
     r"SOURCES and -o are both databases", 2),
    ("a database source without a query", ["{pg}", "-o", "r.parquet"],
     r"a database SOURCE needs --query SQL or --table NAME", 2),
    ("--query with no database source", ["{file}", "--query", "SELECT 1", "-o", "r.parquet"],
     r"--query reads a database SOURCE; SOURCES has none", 2),
    ("a database -o without --table", ["{file}", "-o", "{pg}"], r"-o to a database needs --table NAME", 2),
    ("--if-exists with a file -o", ["{file}", "-o", "r.parquet", "--if-exists", "replace"],
     r"--if-exists is for -o to a database table", 2),
    ("--format with a file -o", ["{file}", "-o", "r.parquet", "--format", "jsonl"],
     r"--format is what -o - writes", 2),
    ("a report into a database", ["{file}", "-o", "{pg}", "--table", "page"],
     r"-o: rfmx report writes a file, not a database table or standard output", 2, ("report",)),
    ("a password file for SQLite", ["sqlite:///x.sqlite", "--table", "t", "--password-file", "pw", "-o", "r.parquet"],
     r"--password-file is for a PostgreSQL SOURCE or -o", 2),
    ("a URI password and a password file", ["postgresql://rfmx:pw@127.0.0.1:1/shop", "--table", "t",
                                            "--password-file", "pw", "-o", "r.parquet"],
     r"postgresql://rfmx:\*\*\*@127\.0\.0\.1:1/shop: the URI has a password and a password file was given"),
]


def _bad_cases():
    for case in BAD:
        name, args, pattern, *more = case
        code = more[0] if more else 1
        for command in (more[1] if len(more) > 1 else ("aggregate", "score", "clv")):
            yield pytest.param((name, args, pattern, code), command, id=f"{command}: {name}")


@pytest.mark.parametrize("case, command", list(_bad_cases()))
def test_bad_database_input(shop, postgres, case, command, tmp_path, monkeypatch):
    name, args, pattern, code = case
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pw").write_text("secret\n")
    values = {"pg": postgres.uri(), "dead": f"postgresql://rfmx@127.0.0.1:{closed_port()}/shop",
              "file": str(shop / "orders.parquet")}
    args = [a.format(**values) for a in args]
    before = tables_in(postgres.uri())
    line = fails_cleanly([command, *args], pattern, tmp_path, exit_code=code)
    assert "secret" not in line and "pw@" not in line
    assert tables_in(postgres.uri()) == before
    assert sorted(os.listdir(tmp_path)) == ["pw"]


def test_the_drivers_are_imported_only_for_a_database():
    """``import rfmx``, ``rfmx --help`` and a file-only run never load ADBC or DuckDB."""
    code = """
import sys
import rfmx
from rfmx.cli.main import main
for args in (["--help"], ["score", "--help"], ["aggregate", "--help"]):
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("adbc_driver_manager", "adbc_driver_postgresql",
                                                                "adbc_driver_sqlite", "adbc_driver_duckdb", "duckdb"))
print(",".join(loaded) or "none")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "none"


# --- naming a database ---------------------------------------------------------------------------


def test_database_kinds_and_paths(tmp_path):
    from rfmx.databases import _locate, database_kind

    assert database_kind("postgresql://u@h/db") == database_kind("postgres://h") == "postgresql"
    assert database_kind("sqlite:///a.db") == "sqlite" and database_kind("duckdb:///a.duckdb") == "duckdb"
    assert database_kind("x.duckdb") == "duckdb" and database_kind("x.sqlite3") == "sqlite"
    assert database_kind("orders.parquet") is None and database_kind("s3://bucket/x.parquet") is None
    assert database_kind(tmp_path / "missing.db") is None
    rfmx.write_table(pa.table({"a": [1]}), rfmx.DatabaseTable(str(tmp_path / "s.sqlite"), "t"))
    (tmp_path / "s.db").write_bytes((tmp_path / "s.sqlite").read_bytes())
    assert database_kind(tmp_path / "s.db") == "sqlite"
    assert _locate("sqlite:///rel/a.db").target == "rel/a.db"
    assert _locate("sqlite:////abs/a.db").target == "/abs/a.db"
    assert _locate("postgresql://u:p%40ss@h:1/db?password=x&sslmode=require").label == \
        "postgresql://u:***@h:1/db?password=***&sslmode=require"
    with pytest.raises(rfmx.RfmxError, match=r"sqlite://a\.db: write sqlite:///PATH"):
        _locate("sqlite://a.db")
    with pytest.raises(rfmx.RfmxError, match=r"give the query or the table to read the orders from"):
        rfmx.aggregate("sqlite:///a.db")


def test_a_table_never_replaces_the_table_it_reads(shop):
    from rfmx.outputs import CommandFiles

    location = f"duckdb:///{shop}/shop.duckdb"
    files = CommandFiles().read("source", rfmx.DatabaseSource(f"{shop}/shop.duckdb", table="main.orders"))
    files.write("-o", rfmx.DatabaseTable(location, "orders", if_exists="replace"), table=True)
    with pytest.raises(rfmx.RfmxError, match=r"-o duckdb:///.*shop\.duckdb \[table orders\] would overwrite the input "
                                             r"source .*shop\.duckdb \[table main\.orders\]"):
        files.check()


def test_report_reads_orders_from_a_database(shop, postgres, tmp_path):
    """rfmx report scores orders from a database like any SOURCE (its -o stays a file)."""
    pytest.importorskip("altair", reason="rfmx report needs the [report] extra")
    run_ok("report", postgres.uri(), "--table", "orders", "-o", tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text().lstrip().lower().startswith("<!doctype html")
