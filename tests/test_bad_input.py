"""The bad-input matrix: every kind of bad input rfmx promises to refuse cleanly, one row each.

A row is an id, the small files it writes to an empty folder, the command line after the
command and the message expected.  A failing row runs through the CLI for each command it
applies to (``aggregate``, ``score``, ``cluster``, ``clv``) and asserts, with
:func:`badinput.fails_cleanly`, what README "Bad input" promises: exit code 1 (2 for a
usage error: an option out of range or options that exclude each other), exactly one
line on stderr, ``Error: ...`` naming the file (or source), the column and the first
offending row (0-based data rows) where they apply, no traceback, and not one file in the
folder created, changed or removed — so the inputs are intact, and no output, temporary or
lock file is left.  A positive row (``error=None``) is input that only looks bad: it must
succeed and give the exact totals listed (customer id -> ``monetary_minor``).

The folder is the working directory, so the rows spell paths as a user types them.  A row
that fails because the product misbehaves is kept, marked ``xfail(strict=True)`` with the
reason, until the product is fixed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import rfmx
from badinput import fails_cleanly, run_cli
from rfmx.outputs import StateLock

ALL = ("aggregate", "score", "cluster", "clv")
RFM = ("aggregate", "score", "cluster")  # the commands whose state is an RFM state (clv: a BTYD state)
DAY0 = dt.datetime(2024, 1, 1)


# --- what the rows are made of --------------------------------------------------------------------

def orders(ids, amounts, times=None, *, id_type=pa.int64(), amount_type=None, time_type=pa.timestamp("s")):
    """A small order file's table: one line per id, a day apart from 2024-01-01 unless ``times``."""
    if times is None:
        times = [DAY0 + dt.timedelta(days=i) for i in range(len(ids))]
    return pa.table({"customer_id": pa.array(ids, id_type), "order_time": pa.array(times, time_type),
                     "amount": pa.array(amounts, amount_type)})


def csv(*lines: str) -> str:
    """A CSV order file's text: the header, then ``lines`` (data row 0, 1, ...)."""
    return "\n".join(("customer_id,order_time,amount",) + lines) + "\n"


def dec(*values: str) -> list:
    return [decimal.Decimal(v) for v in values]


@dataclasses.dataclass
class Context:
    """What a file builder may need: the command under test and the module's saved artifacts."""

    command: str
    saved: dict


def write(path: str, content, ctx: Context) -> None:
    """Create one input file: a table (Parquet or Arrow IPC, from the suffix), text, bytes or a builder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if callable(content):
        content(path, ctx)
    elif isinstance(content, pa.Table):
        if path.endswith(".parquet"):
            pq.write_table(content, path)
        else:
            feather.write_feather(content, path, compression="uncompressed")
    elif isinstance(content, bytes):
        with open(path, "wb") as f:
            f.write(content)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)


def symlink(target: str):
    return lambda path, ctx: os.symlink(target, path)


def hardlink(target: str):
    return lambda path, ctx: os.link(target, path)


def history():
    """A copy of the module's generated history (40 customers, enough to fit the CLV models)."""
    return lambda path, ctx: shutil.copy(ctx.saved["history"], path)


def state():
    """A real saved state (``rfmx aggregate --state-out``; ``rfmx clv --state-out`` for clv)."""
    return lambda path, ctx: shutil.copy(ctx.saved["btyd" if ctx.command == "clv" else "rfm"], path)


def state_of(table: pa.Table):
    """A saved state of ``table``'s orders, of the kind the command reads."""
    def build(path, ctx):
        kind = rfmx.BTYDState() if ctx.command == "clv" else None
        rfmx.build_state(table, state=kind).save(path)
    return build


def damaged_state(*, meta: Callable[[dict], object] | None = None, raw_meta: bytes | None = None,
                  drop: str | None = None, column: tuple[str, int] | None = None, truncate: bool = False):
    """A real saved state (see :func:`state`) damaged one way: its metadata edited by ``meta``
    (a function changing the decoded dict) or replaced by ``raw_meta``, a column dropped,
    ``column = (name, value)`` set in the first row, or the file cut in half."""
    def build(path, ctx):
        source = ctx.saved["btyd" if ctx.command == "clv" else "rfm"]
        if truncate:
            data = Path(source).read_bytes()
            write(path, data[: len(data) // 2], ctx)
            return
        with pa.memory_map(source) as f:
            table = pa.ipc.open_file(f).read_all()
        text = table.schema.metadata[b"rfmx.state"]
        if meta is not None:
            doc = json.loads(text)
            meta(doc)
            text = json.dumps(doc).encode()
        table = table.replace_schema_metadata({b"rfmx.state": raw_meta if raw_meta is not None else text})
        if drop is not None:
            table = table.drop_columns([drop])
        if column is not None:
            name, value = column
            values = table.column(name).to_pylist()
            values[0] = value
            i = table.schema.get_field_index(name)
            table = table.set_column(i, table.field(i), pa.array(values, table.field(i).type))
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return build


def ipc_file(table: pa.Table, damage: str):
    """An Arrow IPC file of ``table``, ``cut`` in half or with its record batch's metadata
    (the flatbuffer after the schema message) overwritten: ``corrupt``."""
    def build(path, ctx):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        data = bytearray(sink.getvalue().to_pybytes())
        if damage == "cut":
            data = data[: len(data) // 2]
        else:  # magic (8 bytes), then messages of 0xFFFFFFFF, int32 length, metadata, body
            (schema_len,) = struct.unpack_from("<i", data, 12)
            start = 16 + schema_len
            (batch_len,) = struct.unpack_from("<i", data, start + 4)
            data[start + 8: start + 8 + batch_len] = b"\xff" * batch_len
        write(path, bytes(data), ctx)
    return build


def model(kind: str, edit: Callable[[dict], object]):
    """A real saved model (``cluster --model-out`` or ``clv --model-out``) edited by ``edit``;
    NaN written as Python's json writes it (a ``NaN`` literal)."""
    def build(path, ctx):
        doc = json.loads(Path(ctx.saved[kind]).read_text(encoding="utf-8"))
        edit(doc)
        write(path, json.dumps(doc), ctx)
    return build


def setitem(key_path: str, value):
    def edit(doc):
        *parents, last = [int(k) if k.isdigit() else k for k in key_path.split(".")]
        for k in parents:
            doc = doc[k]
        if value is DROP:
            del doc[last]
        else:
            doc[last] = value
    return edit


DROP = object()


@dataclasses.dataclass
class Row:
    id: str
    files: dict                     # name -> pa.Table | str | bytes | builder(path, ctx)
    args: list                      # after the command
    error: str | None = None        # the one line's regex; None: the command must succeed
    commands: tuple = ALL
    totals: dict | None = None      # positive rows: {customer_id: monetary_minor} in r.parquet
    stderr: str | None = None       # positive rows: a regex stderr must match
    lock: str | None = None         # a state file whose lock the test holds while the command runs
    process: bool = False           # run a real process, not click's runner
    exit_code: int = 1              # 2 for usage errors (options out of range or excluding each other)
    xfail: dict = dataclasses.field(default_factory=dict)  # command -> reason the product fails the row


def usage_error(option: str, message: str) -> str:
    return rf"Invalid value for '{option}'.*{message}"






def only(commands, reason):
    return {c: reason for c in commands}


ROWS = [
    # --- 1. money beyond int64: the customer, the file and the row -----------------------------------
    Row("money: --amount-scale 9, two orders of 5,000,000,000",
        {"a.parquet": orders([1, 1], [5_000_000_000, 5_000_000_000], amount_type=pa.int64())},
        ["a.parquet", "--amount-scale", "9", "-o", "r.parquet"],
        r"a\.parquet: column 'amount' \(amount\): the money total of customer 1 leaves the exact range at row 1 "
        r".*amount_scale 9"),
    Row("money: three lines of 4e16 at the default scale",
        {"a.parquet": orders([7, 8, 7, 7], [4e16, 1.0, 4e16, 4e16])},
        ["a.parquet", "-o", "r.parquet"],
        r"a\.parquet: column 'amount' \(amount\): the money total of customer 7 leaves the exact range at row 3 "
        r"\(exact money totals reach ±92,233,720,368,547,758\.07 at amount_scale 2\)"),
    Row("money: three refunds of -4e16",
        {"a.parquet": orders([7, 8, 7, 7], [-4e16, 1.0, -4e16, -4e16])},
        ["a.parquet", "-o", "r.parquet"],
        r"a\.parquet: column 'amount' \(amount\): the money total of customer 7 leaves the exact range at row 3"),
    Row("money: string customer in a CSV file",
        {"a.csv": csv("C-7,2024-01-01,40000000000000000", "C-8,2024-01-02,1",
                      "C-7,2024-01-03,40000000000000000", "C-7,2024-01-04,40000000000000000")},
        ["a.csv", "-o", "r.parquet"],
        r"a\.csv: column 'amount' \(amount\): the money total of customer 'C-7' leaves the exact range at row 3"),
    Row("money: new orders beyond the total of a saved state",
        {"s.arrow": state_of(orders([7, 7], [4e16, 4e16])), "new.parquet": orders([8, 7], [1.0, 4e16])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "r.parquet"],
        r"new\.parquet: column 'amount' \(amount\): the money total of customer 7 leaves the exact range at row 1"),
    Row("money: in a real process",
        {"a.parquet": orders([1, 1], [5_000_000_000, 5_000_000_000], amount_type=pa.int64())},
        ["a.parquet", "--amount-scale", "9", "-o", "r.parquet"],
        r"a\.parquet: column 'amount' \(amount\): the money total of customer 1 leaves the exact range at row 1",
        commands=("aggregate",), process=True),

    # --- 2. outputs onto inputs ------------------------------------------------------------------------
    Row("output: -o is the source",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "-o", "a.parquet"],
        r"-o a\.parquet would overwrite the input SOURCES a\.parquet"),
    Row("output: -o is the source spelled ./",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "-o", "./a.parquet"],
        r"-o (\./)?a\.parquet would overwrite the input SOURCES a\.parquet"),
    Row("output: -o is a symlink to the source",
        {"a.parquet": orders([1], [5]), "link.parquet": symlink("a.parquet")}, ["a.parquet", "-o", "link.parquet"],
        r"-o link\.parquet would overwrite the input SOURCES a\.parquet"),
    Row("output: -o is the source read through a symlink",
        {"a.parquet": orders([1], [5]), "link.parquet": symlink("a.parquet")}, ["link.parquet", "-o", "a.parquet"],
        r"-o a\.parquet would overwrite the input SOURCES link\.parquet"),
    Row("output: -o is a hard link to the source",
        {"a.parquet": orders([1], [5]), "hard.parquet": hardlink("a.parquet")}, ["a.parquet", "-o", "hard.parquet"],
        r"-o hard\.parquet would overwrite the input SOURCES a\.parquet"),
    Row("output: -o inside a source directory",
        {"data/a.parquet": orders([1], [5])}, ["data", "-o", "data/r.parquet"],
        r"-o data/r\.parquet would overwrite the input SOURCES data"),
    Row("output: -o matched by a source glob",
        {"a.parquet": orders([1], [5])}, ["*.parquet", "-o", "r.parquet"],
        r"-o r\.parquet would overwrite the input SOURCES \*\.parquet"),
    Row("output: --state-out is a source",
        {"a.arrow": orders([1], [5])}, ["a.arrow", "--state-out", "a.arrow"],
        r"--state-out a\.arrow would overwrite the input SOURCES a\.arrow"),
    Row("output: -o is the --state-in state",
        {"s.arrow": state(), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "s.arrow"],
        r"-o s\.arrow would overwrite the input --state-in s\.arrow"),
    Row("output: --model-out is the --model-in model",
        {"a.parquet": orders([1], [5]), "m.json": model("clusters", lambda doc: None)},
        ["a.parquet", "--model-in", "m.json", "--model-out", "m.json"],
        r"--model-out m\.json would overwrite the input --model-in m\.json", commands=("cluster",)),
    Row("output: clv --model-out is the --model-in model",
        {"a.parquet": orders([1], [5]), "m.json": model("bgnbd", lambda doc: None)},
        ["a.parquet", "--model-in", "m.json", "--model-out", "m.json"],
        r"--model-out m\.json would overwrite the input --model-in m\.json", commands=("clv",)),
    Row("options: a former option name beside its new name",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--save-model", "a.json", "--model-out", "b.json"],
        r"--save-model is the former name of --model-out: give --model-out only", commands=("clv",), exit_code=2),
    Row("output: -o and --state-out the same file",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "-o", "same.arrow", "--state-out", "./same.arrow"],
        r"(-o|--state-out) (\./)?same\.arrow and (-o|--state-out) (\./)?same\.arrow are the same file"),
    Row("output: --state-in X --state-out X replaces the state (works)",
        {"s.arrow": state_of(orders([1, 2], [5, 7])), "new.parquet": orders([2, 3], [10, 1])},
        ["new.parquet", "--state-in", "s.arrow", "--state-out", "s.arrow", "-o", "r.parquet"],
        totals={1: 500, 2: 1700, 3: 100}, commands=("aggregate", "score")),

    # --- 3. a second writer on a locked state ----------------------------------------------------------
    Row("lock: the state is being updated by another writer",
        {"s.arrow": state(), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "--state-out", "s.arrow", "-o", "r.parquet"],
        r"another rfmx process is updating s\.arrow; try again when it has finished", lock="s.arrow"),
    Row("lock: --state-out alone, in a real process",
        {"s.arrow": state(), "new.parquet": orders([1], [5])}, ["new.parquet", "--state-out", "s.arrow"],
        r"another rfmx process is updating s\.arrow", lock="s.arrow", commands=("aggregate",), process=True),

    # --- 4. customer ids ---------------------------------------------------------------------------------
    Row("ids: int64 -1, then uint64 2**64-1 in another file",
        {"a.parquet": orders([5, -1], [1, 2]), "b.parquet": orders([5, 6, 2**64 - 1], [1, 2, 3], id_type=pa.uint64())},
        ["a.parquet", "b.parquet", "-o", "r.parquet"],
        r"b\.parquet: column 'customer_id' \(customer id\) value 18446744073709551615 at row 2 is above int64's "
        r"range, but earlier input has negative ids"),
    Row("ids: uint64 2**64-1, then int64 -1 in another file",
        {"a.parquet": orders([2**64 - 1], [1], id_type=pa.uint64()), "b.parquet": orders([5, -1], [1, 2])},
        ["a.parquet", "b.parquet", "-o", "r.parquet"],
        r"b\.parquet: column 'customer_id' \(customer id\) value -1 at row 1 is negative, but earlier input has "
        r"uint64 ids"),
    Row("ids: int32 ids, then int64 ids beyond 2**31 (works)",
        {"a.parquet": orders([1, 2], [5, 6], id_type=pa.int32()),
         "b.parquet": orders([2**31 + 5, 2**40, 1], [7, 8, 9])},
        ["a.parquet", "b.parquet", "-o", "r.parquet"],
        totals={1: 1400, 2: 600, 2**31 + 5: 700, 2**40: 800}, commands=("aggregate", "score")),
    Row("ids: strings in one file, integers in another, refused before reading",
        # a.parquet's times are not times: reading it would fail on them first
        {"a.parquet": orders(["C-1"], [5], ["not a time"], id_type=pa.string(), time_type=pa.string()),
         "b.parquet": orders([1], [5])},
        ["a.parquet", "b.parquet", "-o", "r.parquet"],
        r"b\.parquet: column 'customer_id' \(customer id\) has type int64 but a\.parquet has string; one input's "
        r"ids must be all integers or all strings"),
    Row("ids: integers in one CSV file, strings in another",
        {"a.csv": csv("1,not a time,5"), "b.csv": csv("C-1,2024-01-01,5")},
        ["a.csv", "b.csv", "-o", "r.parquet"],
        r"b\.csv: column 'customer_id' \(customer id\) has type string but a\.csv has int64; .*--customer-type string"),

    # --- 5. times ---------------------------------------------------------------------------------------
    Row("times: after the year 9999 (seconds, Arrow IPC)",
        {"a.arrow": orders([1, 2], [5, 6], [1_700_000_000, 300_000_000_000], time_type=pa.timestamp("s"))},
        ["a.arrow", "-o", "r.parquet"],
        r"a\.arrow: column 'order_time' \(order time\) value 300000000000 s since 1970 at row 1 is outside the "
        r"years 0001 to 9999"),
    Row("times: before the year 0001 (milliseconds, Parquet)",
        {"a.parquet": orders([1, 2, 3], [5, 6, 7], [0, 1, -63_000_000_000_000], time_type=pa.timestamp("ms"))},
        ["a.parquet", "-o", "r.parquet"],
        r"a\.parquet: column 'order_time' \(order time\) value -63000000000000 ms since 1970 at row 2 is outside"),
    Row("times: an unparseable time string",
        {"a.csv": csv("1,2024-01-01,5", "2,2024-01-02 10:00:00,6", "3,yesterday,7", "4,2024-01-04,8")},
        ["a.csv", "-o", "r.parquet"],
        r"a\.csv: column 'order_time' \(order time\) has an unparseable time 'yesterday' at row 2"),
    Row("times: an unknown --timezone",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--timezone", "Mars/Olympus", "-o", "r.parquet"],
        r"unknown time zone 'Mars/Olympus'"),
    Row("times: --timezone other than the --state-in state's, with new orders",
        {"s.arrow": state(), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "--timezone", "Asia/Tokyo", "-o", "r.parquet"],
        r"s\.arrow: .*counts days in UTC, not in Asia/Tokyo"),
    Row("times: --timezone other than the --state-in state's, no new orders",
        {"s.arrow": state()}, ["--state-in", "s.arrow", "--timezone", "Asia/Tokyo", "-o", "r.parquet"],
        r"s\.arrow: .*counts days in UTC, not in Asia/Tokyo"),

    # --- 6. CSV -----------------------------------------------------------------------------------------
    Row("csv: a row with a wrong number of fields",
        {"a.csv": csv("1,2024-01-01,5", "2,2024-01-02,6", "3,2024-01-03,7,8", "4,2024-01-04,9")},
        ["a.csv", "-o", "r.parquet"],
        r"a\.csv: cannot read as CSV at row 2: CSV parse error: Expected 3 columns, got 4"),
    Row("csv: an unparseable amount 12,50x",
        {"a.csv": csv("1,2024-01-01,5", '2,2024-01-02,"12,50x"', "3,2024-01-03,7")},
        ["a.csv", "-o", "r.parquet"],
        r"a\.csv: column 'amount' \(amount\) has an unparseable amount '12,50x' at row 1"),
    Row("csv: an empty customer id with --on-null error",
        {"a.csv": csv("1,2024-01-01,5", "2,2024-01-02,6", ",2024-01-03,7")},
        ["a.csv", "--on-null", "error", "-o", "r.parquet"],
        r"a\.csv: column 'customer_id' has 1 null value\(s\), first at row 2; .*--on-null skip"),
    Row("csv: 12.50 after whole amounts (works)",
        {"a.csv": csv("1,2024-01-01,5", "2,2024-01-02,6", "1,2024-01-03,7", "2,2024-01-04,12.50")},
        ["a.csv", "-o", "r.parquet"], totals={1: 1200, 2: 1850}, commands=("aggregate", "score")),
    Row("csv: C-0042 after numeric ids (works)",
        {"a.csv": csv("1,2024-01-01,5", "42,2024-01-02,6", "C-0042,2024-01-03,7", "0042,2024-01-04,8")},
        ["a.csv", "-o", "r.parquet"], totals={"1": 500, "42": 600, "C-0042": 700, "0042": 800},
        commands=("aggregate", "score")),
    Row("csv: a +02:00 offset and fractional seconds after plain times (works)",
        {"a.csv": csv("1,2024-01-01 10:00:00,5", "2,2024-01-02 10:00:00,6", "1,2024-01-03T23:30:00+02:00,7",
                      "2,2024-01-04 10:00:00.123456,8")},
        ["a.csv", "-o", "r.parquet"], totals={1: 1200, 2: 1400}, commands=("aggregate", "score")),

    # --- 7. decimals ------------------------------------------------------------------------------------
    Row("decimals: decimal(38,10) with zero extra digits (works)",
        {"a.parquet": orders([1, 1, 2], dec("12.5000000000", "0.0100000000", "-3.2500000000"),
                             amount_type=pa.decimal128(38, 10))},
        ["a.parquet", "-o", "r.parquet"], totals={1: 1251, 2: -325}, commands=("aggregate", "score")),
    Row("decimals: decimal(38,10) with non-zero extra digits",
        {"a.parquet": orders([1, 1, 2], dec("12.5000000000", "0.0100000000", "0.0123456789"),
                             amount_type=pa.decimal128(38, 10))},
        ["a.parquet", "-o", "r.parquet"],
        r"a\.parquet: column 'amount' \(amount\) value 0\.0123456789 at row 2 has 10 decimals but amounts are kept "
        r"with 2; .*--round half-even\|half-up"),
    Row("decimals: decimal(38,10) with --round half-even (works, counted)",
        {"a.parquet": orders([1, 1, 2], dec("12.5000000000", "0.0150000000", "0.0250000000"),
                             amount_type=pa.decimal128(38, 10))},
        ["a.parquet", "--round", "half-even", "-o", "r.parquet"], totals={1: 1252, 2: 2},
        stderr=r"2 amounts rounded to 2 decimals", commands=("aggregate", "score")),

    # --- 8. damaged files ------------------------------------------------------------------------------
    Row("damaged: state metadata is not JSON",
        {"s.arrow": damaged_state(raw_meta=b'{"format": "rfmx-state", '), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "r.parquet"],
        r"s\.arrow: damaged state file: its metadata is not JSON"),
    Row("damaged: state metadata lacks a key",
        {"s.arrow": damaged_state(meta=setitem("rows_read", DROP)), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "r.parquet"],
        r"s\.arrow: damaged state file: its metadata lacks 'rows_read'"),
    Row("damaged: state metadata of a wrong type",
        {"s.arrow": damaged_state(meta=setitem("amount_scale", "2")), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "r.parquet"],
        r"s\.arrow: damaged state file: metadata 'amount_scale' is '2'"),
    Row("damaged: state lacks a column",
        {"s.arrow": damaged_state(drop="last_order_us"), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "r.parquet"],
        r"s\.arrow: damaged state file: column 'last_order_us' is missing"),
    Row("damaged: state with a negative gross_minor",
        {"s.arrow": damaged_state(column=("gross_minor", -1)), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "r.parquet"],
        r"s\.arrow: damaged state file: column 'gross_minor' holds values from -1 to \d+, outside what a state"),
    Row("damaged: state file cut in half",
        {"s.arrow": damaged_state(truncate=True), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "-o", "r.parquet"],
        r"s\.arrow: not an rfmx state file \(Arrow IPC\)"),
    Row("damaged: state metadata is not JSON, in a real process",
        {"s.arrow": damaged_state(raw_meta=b"\xff not json"), "new.parquet": orders([1], [5])},
        ["new.parquet", "--state-in", "s.arrow", "--state-out", "s.arrow", "-o", "r.parquet"],
        r"s\.arrow: damaged state file: its metadata is not JSON", commands=("aggregate",), process=True),
    Row("damaged: Arrow source file cut in half",
        {"a.arrow": ipc_file(orders(list(range(50)), list(range(50))), "cut")}, ["a.arrow", "-o", "r.parquet"],
        r"a\.arrow: cannot read as Arrow IPC: .*Not an Arrow file"),
    Row("damaged: Arrow source file with a corrupt record batch",
        {"a.arrow": ipc_file(orders(list(range(50)), list(range(50))), "corrupt")}, ["a.arrow", "-o", "r.parquet"],
        r"a\.arrow: cannot read as Arrow IPC: Invalid flatbuffers message"),
    Row("damaged: k-means model with a NaN centre",
        {"a.parquet": orders([1, 2, 3], [5, 6, 7]),
         "m.json": model("clusters", setitem("kmeans.fitted.cluster_centers.1.0", float("nan")))},
        ["a.parquet", "--model-in", "m.json", "-o", "r.parquet"],
        r"m\.json: cluster_centers\[1\]\[0\] is nan", commands=("cluster",)),
    Row("damaged: k-means model with a wrong n_clusters",
        {"a.parquet": orders([1, 2, 3], [5, 6, 7]),
         "m.json": model("clusters", setitem("kmeans.params.n_clusters", 5))},
        ["a.parquet", "--model-in", "m.json", "-o", "r.parquet"],
        r"m\.json: n_clusters is 5 but the model has 2 cluster centres", commands=("cluster",)),
    Row("damaged: BG/NBD model without a parameter",
        {"a.parquet": orders([1, 2, 3], [5, 6, 7]), "m.json": model("bgnbd", setitem("params.b", DROP))},
        ["a.parquet", "--model-in", "m.json", "-o", "r.parquet"],
        r"m\.json: missing BG/NBD parameter 'b'", commands=("clv",)),

    # --- 9. options out of range -----------------------------------------------------------------------
    Row("options: --amount-scale 19",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--amount-scale", "19", "-o", "r.parquet"],
        usage_error("--amount-scale", r"19 is not in the range 0<=x<=18"), exit_code=2),
    Row("options: --bins 0",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--bins", "0", "-o", "r.parquet"],
        r"bins must be an integer between 2 and 100, got 0", commands=("score",)),
    Row("options: --bins 101",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--bins", "101", "-o", "r.parquet"],
        r"bins must be an integer between 2 and 100, got 101", commands=("score",)),
    Row("options: -k 0",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "-k", "0", "-o", "r.parquet"],
        usage_error("-k' / '--clusters", r"0 is not in the range x>=1"), commands=("cluster",), exit_code=2),
    Row("options: --horizon 0",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--horizon", "0", "-o", "r.parquet"],
        usage_error("--horizon", r"0 is not in the range x>=1"), commands=("clv",), exit_code=2),
    Row("options: --threads 0",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--threads", "0", "-o", "r.parquet"],
        usage_error("--threads", r"0 is not in the range x>=1"), commands=("aggregate",), exit_code=2),
    Row("options: --discount -2",
        {"h.parquet": history()}, ["h.parquet", "--discount", "-2", "-o", "r.parquet"],
        usage_error("--discount", r"-2.0 is not in the range x>-1"), commands=("clv",), exit_code=2),
    Row("options: --clv-discount -2",
        {"h.parquet": history()}, ["h.parquet", "--clv", "bgnbd", "--clv-discount", "-2", "-o", "r.parquet"],
        usage_error("--clv-discount", r"-2.0 is not in the range x>-1"), commands=("score",), exit_code=2),
    Row("options: --segments none where segments are the point",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--segments", "none", "-o", "r.parquet"],
        usage_error("--segments", r"none: rfmx timeline follows customers' segments"), commands=("timeline",),
        exit_code=2),
    Row("options: --horizon-unit year",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--horizon-unit", "year", "-o", "r.parquet"],
        usage_error("--horizon-unit", r"'year' is not one of 'day', 'week', 'month'"), commands=("clv",),
        exit_code=2),

    # --- 10. the project config (rfmx.toml in the working directory) ------------------------------------
    Row("config: an unknown key",
        {"a.parquet": orders([1], [5]), "rfmx.toml": 'customer = "customer_id"\ncustomr = "user_id"\n'},
        ["a.parquet", "-o", "r.parquet"],
        r"^Error: rfmx\.toml:2: unknown key 'customr' at the top level: no rfmx command has an option --customr$",
        exit_code=2),
    Row("config: a key of another command",
        {"a.parquet": orders([1], [5]), "rfmx.toml": "[aggregate]\nbins = 4\n"},
        ["a.parquet", "-o", "r.parquet"],
        r"rfmx\.toml:2: unknown key 'bins' in \[aggregate\]: rfmx aggregate has no option --bins",
        commands=("aggregate",), exit_code=2),
    Row("config: a wrong type",
        {"a.parquet": orders([1], [5]), "rfmx.toml": 'amount-scale = "2"\n'},
        ["a.parquet", "-o", "r.parquet"], r"rfmx\.toml:1: amount-scale = \"2\": expected an integer", exit_code=2),
    Row("config: a value out of range",
        {"a.parquet": orders([1], [5]), "rfmx.toml": "[clv]\nhorizon = 0\n"},
        ["a.parquet", "-o", "r.parquet"], r"rfmx\.toml:2: horizon = 0: 0 is not in the range x>=1",
        commands=("clv",), exit_code=2),
    Row("config: a table that is no rfmx command",
        {"a.parquet": orders([1], [5]), "rfmx.toml": "[scores]\nbins = 4\n"},
        ["a.parquet", "-o", "r.parquet"], r"rfmx\.toml:1: unknown section \[scores\]: not an rfmx command",
        exit_code=2),
    Row("config: not TOML",
        {"a.parquet": orders([1], [5]), "rfmx.toml": "customer = \n"},
        ["a.parquet", "-o", "r.parquet"], r"rfmx\.toml: malformed TOML", exit_code=2),
    Row("config: --config FILE that does not exist",
        {"a.parquet": orders([1], [5])}, ["a.parquet", "--config", "team.toml", "-o", "r.parquet"],
        r"team\.toml: config file not found", exit_code=2),
    Row("config: the column mapping from rfmx.toml (works)",
        {"a.parquet": orders([1, 1, 2], [5, 6, 7]).rename_columns(["user", "created", "total"]),
         "rfmx.toml": 'customer = "user"\ntime = "created"\namount = "total"\n'},
        ["a.parquet", "-o", "r.parquet"], None, commands=("aggregate", "score"), totals={1: 1100, 2: 700}),
    Row("options: --since with a --state-in state",
        {"s.arrow": state()}, ["--state-in", "s.arrow", "--since", "2024-01-01", "-o", "r.parquet"],
        r"--since cannot change the window of a saved state", exit_code=2),
]


def _params():
    for row in ROWS:
        for command in row.commands:
            marks = []
            if command in row.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=row.xfail[command]))
            yield pytest.param(row, command, id=f"{command}: {row.id}", marks=marks)


# --- the module's real artifacts --------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small generated history and what the CLI saves from it: an RFM state, a BTYD state,
    a k-means model (k=2) and a BG/NBD model."""
    root = tmp_path_factory.mktemp("saved")
    files = {"history": str(root / "history.parquet"), "rfm": str(root / "rfm.arrow"), "btyd": str(root / "btyd.arrow"),
             "clusters": str(root / "clusters.json"), "bgnbd": str(root / "bgnbd.json")}
    history = files["history"]
    for args in (["generate", history, "--rows", "600", "--customers", "40", "--seed", "3", "--no-progress"],
                 ["aggregate", history, "--state-out", files["rfm"]],
                 ["clv", history, "--state-out", files["btyd"], "--model-out", files["bgnbd"], "--no-spend"],
                 ["cluster", history, "-k", "2", "--model-out", files["clusters"], "--segments", "none"]):
        result = run_cli(*args)
        assert result.exit_code == 0, (args, result.stderr, result.exception)
    return files


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def totals(table: pa.Table) -> dict:
    return dict(zip(table.column("customer_id").to_pylist(), table.column("monetary_minor").to_pylist()))


# --- the matrix -------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, command", list(_params()))
def test_bad_input(row, command, folder, saved):
    ctx = Context(command, saved)
    for name, content in row.files.items():
        write(name, content, ctx)
    inputs = {name: Path(name).read_bytes() for name in row.files}
    args = [command, *row.args]
    if row.error is None:
        result = run_cli(*args)
        assert result.exit_code == 0, (result.stderr, result.exception)
        assert "Traceback" not in result.stderr + result.stdout
        if row.stderr:
            assert re.search(row.stderr, result.stderr), result.stderr
        assert totals(pq.read_table("r.parquet")) == row.totals
        if "--state-out" in row.args:  # the state replaced holds the same customers
            assert totals(rfmx.RFMState.load(row.args[row.args.index("--state-out") + 1]).finalize()) == row.totals
        assert sorted(os.listdir(folder)) == sorted({"r.parquet", *row.files})  # no temporary or lock file
        return
    lock = StateLock(row.lock) if row.lock else contextlib.nullcontext()
    with lock:
        fails_cleanly(args, row.error, folder, process=row.process, exit_code=row.exit_code)
    for name, data in inputs.items():  # the snapshot covers this; said once more in plain words
        assert Path(name).read_bytes() == data, name
    assert sorted(os.listdir(folder)) == sorted({name.split("/")[0] for name in row.files})
