"""Databases as sources and sinks: PostgreSQL and SQLite through ADBC, DuckDB database files
through DuckDB.

A source (:class:`DatabaseSource`) is a query, or the mapped columns of a table, whose result
streams as Arrow record batches — ADBC's ``fetch_record_batch`` (PostgreSQL's binary COPY,
SQLite's stepping cursor) or DuckDB's own record-batch reader — never fetched whole, never
through pandas.  Its columns are mapped like a file's, and rows are numbered from 0 in the
result.  A sink (:class:`DatabaseTable`) is a table written through ADBC bulk ingest
(``adbc_ingest``) inside one transaction, committed only when the whole command succeeded
(:class:`rfmx.outputs.CommandFiles`): a failure leaves the table as it was.

Where a database is named:

====================================  =====================================================
``postgresql://user@host:port/db``    PostgreSQL (``postgres://`` too): any libpq URI
``sqlite:///relative/shop.db``        a SQLite file (``sqlite:////abs/shop.db``: absolute)
``duckdb:///relative/shop.duckdb``    a DuckDB file (``duckdb:////abs/shop.duckdb``)
``shop.duckdb``, ``shop.sqlite``      a database file by its suffix (``.sqlite3`` too);
                                      an existing ``.db`` file by its header
====================================  =====================================================

Credentials need never be on a command line: libpq reads ``PGPASSWORD``, ``PGPASSFILE`` /
``~/.pgpass``, ``PGUSER``, ``PGHOST``, ... for whatever the URI leaves out, and
``password_file`` (``--password-file``) takes the password from the first line of a file.
Messages show a URI with its password hidden.

The drivers are imported only when a database is used: ``import rfmx`` and ``rfmx --help``
never load them.
"""
from __future__ import annotations

import importlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pyarrow as pa

from .columns import ColumnMap, check_columns
from .errors import RfmxError
from .locations import database_kind, url_scheme
from .readahead import read_ahead
from .sinks import Destination
from .sources import SourceObject

__all__ = ["DatabaseSource", "DatabaseTable", "database_kind", "IF_EXISTS"]

#: What writing a table does when it already exists: refuse, replace it, or add the rows.
IF_EXISTS = ("fail", "replace", "append")

_NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite", "duckdb": "DuckDB"}
_DRIVERS = {"postgresql": ("adbc_driver_postgresql", "adbc-driver-postgresql"),
            "sqlite": ("adbc_driver_sqlite", "adbc-driver-sqlite"),
            "duckdb": ("adbc_driver_duckdb", "duckdb")}
# ADBC's ingest modes: "create" fails on an existing table, "create_append" makes it if missing.
_INGEST_MODE = {"fail": "create", "replace": "replace", "append": "create_append"}
# Rows per batch asked of a driver (see DatabaseSource._reader): measured on 1e6 lines from
# PostgreSQL, 32k-row batches read and aggregate in 0.57 s, 1M-row batches in 1.06 s.
_DRIVER_BATCH = 1 << 15
# Where an unqualified table name lives (PostgreSQL: the search path's first schema, asked).
_DEFAULT_SCHEMA = {"duckdb": "main", "sqlite": None}


# --- where, and with which password -------------------------------------------------------------


@dataclass(frozen=True)
class _Location:
    kind: str      # postgresql, sqlite, duckdb
    target: str    # what the driver opens: a libpq URI (password included) or a file path
    label: str     # what messages show: the URI with its password hidden, or the path
    secret: str | None = None


def _redact(uri: str) -> str:
    uri = re.sub(r"(://[^/@?#]*?:)[^/@?#]*@", r"\1***@", uri)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", uri)


def _read_password(path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RfmxError(f"{path}: cannot read the password file: {getattr(exc, 'strerror', None) or exc}") from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise RfmxError(f"{path}: the password file's first line is empty")
    return password


def _locate(location, password_file=None) -> _Location:
    text = os.fspath(location)
    kind = database_kind(text)
    if kind is None:
        raise RfmxError(f"{_redact(text)}: not a database; name one as postgresql://USER@HOST:PORT/DB, "
                        f"sqlite:///PATH or duckdb:///PATH (or a .duckdb / .sqlite file)")
    if kind == "postgresql":
        if password_file is None:
            return _Location(kind, text, _redact(text))
        if _redact(text) != text:
            raise RfmxError(f"{_redact(text)}: the URI has a password and a password file was given; give one")
        password = _read_password(password_file)
        target = text + ("&" if "?" in text else "?") + "password=" + quote(password, safe="")
        return _Location(kind, target, text, secret=password)
    if password_file is not None:
        raise RfmxError(f"{text}: a password file is for PostgreSQL; {_NAMES[kind]} files have no password")
    path = text
    if url_scheme(text) is not None:
        rest = text.split("://", 1)[1]
        if not rest.startswith("/") or len(rest) < 2:
            raise RfmxError(f"{text}: write {kind}:///PATH (three slashes; four for an absolute path)")
        path = rest[1:]
    return _Location(kind, path, text)


# --- drivers --------------------------------------------------------------------------------------


def _dbapi(loc: _Location):
    """The ADBC DB-API module of ``loc``'s driver, imported now (never at rfmx's import)."""
    module, package = _DRIVERS[loc.kind]
    try:
        return importlib.import_module(f"{module}.dbapi")
    except ImportError:
        raise RfmxError(f"{loc.label}: {_NAMES[loc.kind]} needs the {package} package "
                        f"(pip install 'rfmx[db]')") from None


def _errors(loc: _Location, native: bool = False) -> tuple:
    """The exceptions a driver raises for the database's own errors."""
    if native:
        import duckdb

        return (duckdb.Error, pa.ArrowException, OSError)
    import adbc_driver_manager

    return (adbc_driver_manager.Error, pa.ArrowException, OSError)


_STATUS = re.compile(r"^(?:[A-Z_]+: )?(?:\[[A-Za-z]+\] )?")


def _message(exc: BaseException, loc: _Location) -> str:
    """A driver's error as one line, without its status prefix or any password."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    msg = _STATUS.sub("", lines[0]) if lines else type(exc).__name__
    msg = re.sub(r"\s+", " ", msg.replace(loc.target, loc.label))
    return msg.replace(loc.secret, "***") if loc.secret else msg


def _connect(loc: _Location, name: str, *, read_only: bool):
    """A connection: DuckDB's own for reading a DuckDB file, ADBC's DB-API otherwise.  A file
    read is opened read-only and must exist (a driver would create an empty one).  ``name``:
    the source or table for messages."""
    if loc.kind != "postgresql" and read_only and not os.path.isfile(loc.target):
        raise RfmxError(f"{name}: no such database file")
    if loc.kind == "duckdb" and read_only:
        import duckdb

        try:
            return duckdb.connect(loc.target, read_only=True)
        except duckdb.Error as exc:
            raise RfmxError(f"{name}: cannot open the DuckDB database: {_message(exc, loc)}") from None
    dbapi = _dbapi(loc)
    target = loc.target
    if loc.kind == "sqlite" and read_only:
        target = "file:" + quote(os.path.abspath(loc.target)) + "?mode=ro"
    try:
        return dbapi.connect(target)
    except _errors(loc) as exc:
        msg = re.sub(r"^Failed to connect: ", "", _message(exc, loc))
        raise RfmxError(f"{name}: cannot connect: {msg}") from None


def _quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _split_table(table: str) -> tuple[str | None, str]:
    """``SCHEMA.TABLE`` or ``TABLE`` → (schema or None, table)."""
    schema, _, name = table.rpartition(".")
    return (schema or None), name


def _quoted_table(table: str) -> str:
    schema, name = _split_table(table)
    return f"{_quote_name(schema)}.{_quote_name(name)}" if schema else _quote_name(name)


# --- sources --------------------------------------------------------------------------------------


def _plain_type(t: pa.DataType) -> pa.DataType:
    # A driver's extension type (PostgreSQL's numeric is an opaque type over its decimal text)
    # is read as its storage, which rfmx parses like a CSV field.
    return t.storage_type if isinstance(t, pa.BaseExtensionType) else t


def _mapped(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    columns = []
    for name in names:
        col = batch.column(name)
        columns.append(col.storage if isinstance(col.type, pa.BaseExtensionType) else col)
    return pa.RecordBatch.from_arrays(columns, names=names)


class DatabaseSource(SourceObject):
    """Orders in a database: the result of ``query``, or the mapped columns of ``table``
    (``SCHEMA.TABLE`` or ``TABLE``), streamed as record batches.

    >>> orders = rfmx.DatabaseSource("postgresql://shop@db:5432/sales", query="SELECT * FROM orders")
    >>> rfmx.aggregate(orders, customer="user_id", time="created_at", amount="total")

    ``location``: see :mod:`rfmx.databases`; ``password_file``: a file whose first line is
    the PostgreSQL password (else the URI, ``PGPASSWORD`` or ``~/.pgpass``).  Nothing is
    opened until it is read; every read runs the query again.
    """

    def __init__(self, location, *, query: str | None = None, table: str | None = None, password_file=None):
        self._location = _locate(location, password_file)
        if query is None and table is None:
            raise RfmxError(f"{self._location.label}: give the query or the table to read the orders from "
                            f"(query= or table=; --query or --table)")
        if query is not None and table is not None:
            raise RfmxError(f"{self._location.label}: give a query or a table, not both")
        self.query, self.table = query, table
        self.label = f"{self._location.label} [table {table}]" if table is not None else \
            f"{self._location.label} [query]"

    def __repr__(self) -> str:
        return f"DatabaseSource({self.label!r})"

    def _reader(self, conn, sql: str, batch_size: int, native: bool):
        """Run ``sql``; its result as a record-batch reader and the cursor to close after."""
        loc = self._location
        try:
            if native:  # DuckDB's own reader: batches are made as they are read
                relation = conn.sql(sql)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if hasattr(relation, "to_arrow_reader"):
                        return relation.to_arrow_reader(batch_size), None
                    return relation.fetch_arrow_reader(batch_size), None
            cursor = conn.cursor()
            # Batches of at most _DRIVER_BATCH rows: the reader thread (read_ahead) and the
            # kernels then overlap (one big batch would leave nothing to overlap).
            rows = min(batch_size, _DRIVER_BATCH)
            if loc.kind == "sqlite":
                # SQLite has no column types: the driver infers them from a result's first
                # batch, so that batch should not be small either.
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(rows)})
            elif loc.kind == "postgresql":
                # The driver cuts batches by bytes: ~32 bytes of binary COPY data per order line
                # of four columns.
                cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(rows * 32)})
            cursor.execute(sql)
            return cursor.fetch_record_batch(), cursor
        except _errors(loc, native) as exc:
            raise RfmxError(f"{self.label}: the query failed: {_message(exc, loc)}") from None

    def batches(self, columns: ColumnMap, *, batch_size: int = 1 << 20, **_options
                ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        loc = self._location
        native = loc.kind == "duckdb"
        conn = _connect(loc, self.label, read_only=True)
        cursors = []
        try:
            sql = self.query
            if self.table is not None:
                probe, cursor = self._reader(conn, f"SELECT * FROM {_quoted_table(self.table)} WHERE 1 = 0",
                                             batch_size, native)
                cursors.append(cursor)
                check_columns(probe.schema, columns, self.label)
                sql = f"SELECT {', '.join(map(_quote_name, columns.names()))} FROM {_quoted_table(self.table)}"
            reader, cursor = self._reader(conn, sql, batch_size, native)
            cursors.append(cursor)
            check_columns(reader.schema, columns, self.label)
            names = columns.names()
            row0 = 0
            try:
                for batch in read_ahead(reader, name="rfmx-database-reader"):
                    if batch.num_rows:
                        yield self.label, row0, _mapped(batch, names)
                        row0 += batch.num_rows
            except _errors(loc, native) as exc:
                msg = _message(exc, loc)
                # SQLite names a column by its position in the result
                msg = re.sub(r"column (\d+)", lambda m: f"column '{reader.schema.names[int(m.group(1))]}'"
                             if int(m.group(1)) < len(reader.schema) else m.group(0), msg)
                raise RfmxError(f"{self.label}: cannot read the result at or after row {row0}: {msg}") from None
            if row0 == 0:
                yield self.label, 0, pa.RecordBatch.from_arrays(
                    [pa.nulls(0, _plain_type(reader.schema.field(n).type)) for n in names], names=names)
        finally:
            for cursor in cursors:
                if cursor is not None:
                    cursor.close()
            conn.close()


# --- sinks ----------------------------------------------------------------------------------------


def _staged_reader(staged, kind: str) -> pa.RecordBatchReader:
    """The staged Arrow IPC file as a stream of its batches (memory-mapped, never read whole).

    SQLite has no decimal or time types: its driver refuses Arrow decimals, so they are written
    as their exact text, and writes times as ISO text without their zone, so zoned times are
    written as ISO text with the zone's offset."""
    f = pa.ipc.open_file(pa.memory_map(str(staged)))
    schema = f.schema.remove_metadata()
    batches = (f.get_batch(i) for i in range(f.num_record_batches))
    as_text = [i for i, t in enumerate(schema.types)
               if pa.types.is_decimal(t) or (pa.types.is_timestamp(t) and t.tz is not None)]
    if kind == "sqlite" and as_text:
        import pyarrow.compute as pc

        def text(column: pa.Array) -> pa.Array:
            if pa.types.is_timestamp(column.type):
                return pc.strftime(column, format="%Y-%m-%dT%H:%M:%S%z")
            return column.cast(pa.string())

        def converted(batch: pa.RecordBatch) -> pa.RecordBatch:
            columns = [text(c) if i in as_text else c for i, c in enumerate(batch.columns)]
            return pa.RecordBatch.from_arrays(columns, names=schema.names)

        schema = pa.schema([pa.field(fd.name, pa.string()) if i in as_text else fd for i, fd in enumerate(schema)])
        batches = (converted(b) for b in batches)
    return pa.RecordBatchReader.from_batches(schema, batches)


class DatabaseTable(Destination):
    """A table in a database as where a result goes: written through ADBC bulk ingest in one
    transaction, committed only when the whole command succeeded.

    >>> rfmx.write_table(scores, rfmx.DatabaseTable("postgresql://crm@db/crm", "rfm_scores",
    ...                                             if_exists="replace"))

    ``table``: ``SCHEMA.TABLE`` or ``TABLE``.  ``if_exists``: ``fail`` (default: an existing
    table is refused before any work), ``replace`` (dropped and made again, in the same
    transaction) or ``append`` (rows added; the table is made if missing).  A database file
    that did not exist is removed again when the write fails.
    """

    def __init__(self, location, table: str, *, if_exists: str = "fail", password_file=None):
        if if_exists not in IF_EXISTS:
            raise RfmxError(f"if_exists must be one of {', '.join(IF_EXISTS)}, got {if_exists!r}")
        self._location = _locate(location, password_file)
        if not table or not _split_table(table)[1]:
            raise RfmxError(f"{self._location.label}: give the table to write (table=; --table)")
        self.table, self.if_exists = table, if_exists
        self._conn = None
        self._created = False

    def __str__(self) -> str:
        return f"{self._location.label} [table {self.table}]"

    def __repr__(self) -> str:
        return f"DatabaseTable({str(self)!r}, if_exists={self.if_exists!r})"

    def _exists(self, conn) -> bool:
        schema, name = _split_table(self.table)
        if schema is None and self._location.kind == "postgresql":
            with conn.cursor() as cursor:
                cursor.execute("SELECT current_schema()")
                schema = cursor.fetchone()[0]
        elif schema is None:
            schema = _DEFAULT_SCHEMA[self._location.kind]
        # The filters are LIKE patterns ('_' matches any character): names are compared after.
        found = conn.adbc_get_objects(depth="tables", db_schema_filter=schema, table_name_filter=name).read_all()
        for catalog in found.to_pylist():
            for db_schema in catalog["catalog_db_schemas"] or []:
                if schema is not None and db_schema["db_schema_name"] not in (schema, ""):
                    continue
                if any(t["table_name"] == name for t in db_schema["db_schema_tables"] or []):
                    return True
        return False

    def check(self) -> None:
        """Before any work: the driver is there, the database can be reached, and with
        ``if_exists='fail'`` the table does not exist yet."""
        loc = self._location
        _dbapi(loc)
        if loc.kind != "postgresql":
            parent = Path(loc.target).parent
            if not parent.is_dir():
                raise RfmxError(f"{self}: directory {parent} does not exist")
            if not os.path.exists(loc.target):
                return  # a new database file: it has no table yet
        conn = _connect(loc, str(self), read_only=False)
        try:
            if self.if_exists == "fail" and self._exists(conn):
                raise RfmxError(f"{self}: the table already exists; pass --if-exists replace or append "
                                f"(if_exists=)")
        except _errors(loc) as exc:
            raise RfmxError(f"{self}: cannot look the table up: {_message(exc, loc)}") from None
        finally:
            conn.close()

    def prepare(self, staged) -> None:
        """Write the staged table inside a transaction that :meth:`commit` ends."""
        loc = self._location
        self._created = loc.kind != "postgresql" and not os.path.exists(loc.target)
        self._conn = _connect(loc, str(self), read_only=False)
        schema, name = _split_table(self.table)
        f = pa.ipc.open_file(pa.memory_map(str(staged)))  # memory-mapped: counting reads no data
        staged_rows = sum(f.get_batch(i).num_rows for i in range(f.num_record_batches))
        try:
            with self._conn.cursor() as cursor:
                written = cursor.adbc_ingest(name, _staged_reader(staged, loc.kind), mode=_INGEST_MODE[self.if_exists],
                                             db_schema_name=schema)
        except _errors(loc) as exc:
            raise RfmxError(f"{self}: cannot write the table: {_message(exc, loc)}") from None
        # A driver that stops at a failing batch without saying so (DuckDB's does) is caught
        # here, before anything is committed.
        if written is not None and written >= 0 and written != staged_rows:
            raise RfmxError(f"{self}: cannot write the table: the driver wrote {written:,} of {staged_rows:,} rows")

    def commit(self) -> None:
        loc = self._location
        try:
            self._conn.commit()
        except _errors(loc) as exc:
            raise RfmxError(f"{self}: cannot commit: {_message(exc, loc)}") from None
        finally:
            self._close()

    def rollback(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            except Exception:  # noqa: BLE001 - closing a connection mid-write rolls it back as well
                pass
            self._close()
        if self._created:
            # The file this write created: nothing of it may remain.
            for suffix in ("", ".wal", "-journal", "-wal", "-shm"):
                try:
                    os.unlink(self._location.target + suffix)
                except FileNotFoundError:
                    pass
            self._created = False

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def overwrites(self, source) -> bool:
        """Whether ``source`` reads the very table this writes."""
        if not isinstance(source, DatabaseSource) or source.table is None:
            return False
        mine, theirs = self._location, source._location
        if mine.kind != theirs.kind:
            return False
        if mine.kind == "postgresql":
            same = mine.label == theirs.label
        else:
            same = os.path.realpath(mine.target) == os.path.realpath(theirs.target)
        default = _DEFAULT_SCHEMA.get(mine.kind)
        mine_table, their_table = _split_table(self.table), _split_table(source.table)
        return same and (mine_table[0] or default, mine_table[1]) == (their_table[0] or default, their_table[1])
