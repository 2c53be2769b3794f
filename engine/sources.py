"""Every input becomes one stream of Arrow record batches, tagged with where it came from.

Files (Parquet, Arrow IPC/Feather, CSV; single files, directories, globs, hive-partitioned
datasets) are planned before anything is read: each file keeps its own column types (read
from Parquet/IPC footers; for CSV decided by rfmx, see :func:`_csv_types`), and customer
ids that are integers in one file and strings in another are refused up front.  Only the
mapped columns are read, a date window is pushed down so whole Parquet row groups outside
it are skipped, Arrow decodes on its own threads, and read-ahead is bounded because it
drives peak memory.  In Python a source can also be a Table, RecordBatch,
RecordBatchReader, ``pyarrow.dataset.Dataset``, polars LazyFrame (streamed), DuckDB
relation or connection with a pending result (read through DuckDB's batch reader), an
iterable of batches or tables, or any object exporting the Arrow C stream interface
(pandas, polars DataFrames).  Database queries and standard input are :class:`SourceObject`
s (:mod:`rfmx.databases`, :mod:`rfmx.pipes`) that bring their own readers.
"""
from __future__ import annotations

import glob
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.dataset as ds

from .columns import ColumnMap, US_PER_DAY, canonical_integers, check_columns
from .errors import RfmxError

__all__ = ["iter_batches", "file_format", "CUSTOMER_TYPES", "SourceObject", "PlannedFile", "plan_files", "read_files",
           "REMOTE_SCHEMES"]

#: URI schemes read through pyarrow's filesystems (Parquet and Arrow IPC files; ``file://`` is
#: a local path and reads every format)
REMOTE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs")

#: How CSV customer ids are read: decided per file (``auto``), or as the user says.
CUSTOMER_TYPES = ("auto", "int", "string")

_SUFFIX_FORMAT = {".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
                  ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".arrows": "ipc",
                  ".csv": "csv", ".tsv": "csv", ".gz": "csv"}
_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_FORMAT_NAME = {"parquet": "Parquet", "ipc": "Arrow IPC", "csv": "CSV"}


class SourceObject:
    """A source that reads itself: a database query (:class:`rfmx.databases.DatabaseSource`),
    standard input (:class:`rfmx.pipes.StdinSource`).

    :meth:`batches` yields what :func:`iter_batches` yields for it, ``(where, first_row,
    batch)`` with the mapped columns, one empty batch if there are no rows; bad input is a
    one-line :class:`RfmxError` naming :attr:`label`.
    """

    label = "<source>"

    def batches(self, columns: ColumnMap, *, since_us=None, until_us=None, batch_size: int = 1 << 20,
                delimiter: str | None = None, customer_type: str = "auto"
                ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.label


def _named_source(item):
    """A string that names a database or standard input as its :class:`SourceObject`; anything else as is."""
    if not isinstance(item, (str, os.PathLike)):
        return item
    if item == "-":
        from .pipes import StdinSource

        return StdinSource()
    from .locations import database_kind

    if database_kind(item) is not None:
        from .databases import DatabaseSource

        return DatabaseSource(item)  # refuses: without a query or a table there is nothing to read
    return item


def file_format(path: str) -> str:
    """The dataset format of a file, from its suffix (``.csv.gz`` is CSV)."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    for s in reversed(suffixes):
        if s in _SUFFIX_FORMAT and not (s == ".gz" and ".csv" not in suffixes and ".tsv" not in suffixes):
            return _SUFFIX_FORMAT[s]
    raise RfmxError(f"{path}: unknown input format; use .parquet, .arrow/.feather or .csv files")


def _dir_files(path: str) -> list[str]:
    """The data files under a directory, in order; hidden and ``_``-prefixed entries skipped
    (as ``pyarrow.dataset`` skips them)."""
    return sorted(
        str(p) for p in Path(path).rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )


def _local_path(source) -> str:
    """A path as given, or the local path of a ``file://`` URI."""
    s = os.fspath(source)
    if s.lower().startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(s).path)
    return s


def _remote_scheme(source) -> str | None:
    from .locations import url_scheme

    scheme = url_scheme(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else None
    return scheme if scheme in REMOTE_SCHEMES else None


def _remote_files(uri: str) -> list[tuple[str, str]]:
    """A remote file, folder or glob (``s3://bucket/orders/*.parquet``) → [(URI, format)], sorted."""
    import fnmatch

    from pyarrow import fs as pafs

    magic = any(ch in uri for ch in "*?[")
    base = uri
    if magic:
        head = re.split(r"[*?\[]", uri, maxsplit=1)[0]
        base = head.rsplit("/", 1)[0]
    try:
        filesystem, root = pafs.FileSystem.from_uri(base)
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File and not magic:
            return [(uri, file_format(uri))]
        if info.type != pafs.FileType.Directory:
            raise RfmxError(f"{uri}: no such file or directory")
        listed = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as exc:
        raise RfmxError(f"{uri}: cannot list: {_arrow_error(exc)}") from None
    prefix = base.rstrip("/")
    files = []
    for entry in listed:
        if entry.type != pafs.FileType.File:
            continue
        rel = entry.path[len(root.rstrip("/")):].lstrip("/")
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        full = f"{prefix}/{rel}"
        if magic and not fnmatch.fnmatchcase(full, uri):
            continue
        files.append(full)
    if not files:
        raise RfmxError(f"{uri}: no files match" if magic else f"{uri}: directory has no data files")
    return [(f, file_format(f)) for f in sorted(files)]


def _expand(source) -> list[tuple[str, str]]:
    """A path, directory or glob → [(path, format)], in a deterministic order (a remote URI's
    files as URIs, each file listed: see :func:`_remote_files`)."""
    if _remote_scheme(source):
        return _remote_files(os.fspath(source))
    s = _local_path(source)
    if any(ch in s for ch in "*?["):
        paths = sorted(glob.glob(s, recursive=True))
        if not paths:
            raise RfmxError(f"{s}: no files match")
        files = [(p, file_format(p)) for p in paths if os.path.isfile(p)]
        if not files:
            raise RfmxError(f"{s}: no files match (only directories)")
        return files
    if os.path.isdir(s):
        files = _dir_files(s)
        if not files:
            raise RfmxError(f"{s}: directory has no data files")
        return [(s, file_format(files[0]))]
    if not os.path.exists(s):
        raise RfmxError(f"{s}: no such file or directory")
    return [(s, file_format(s))]


def _window_filter(schema: pa.Schema, time_column: str, since_us, until_us):
    """A pushed-down filter that keeps a superset of ``[since, until)``; the kernels apply the exact one."""
    if since_us is None and until_us is None or schema.get_field_index(time_column) < 0:
        return None
    t = schema.field(time_column).type
    field = ds.field(time_column)
    if pa.types.is_timestamp(t):
        if t.unit == "ns":
            to_unit = lambda us, up: us * 1000  # noqa: E731
        else:
            f = _UNIT_US[t.unit]
            to_unit = lambda us, up: -((-us) // f) if up else us // f  # noqa: E731
        mk = lambda v: pa.scalar(v, type=pa.int64()).cast(t)  # noqa: E731
    elif pa.types.is_date32(t):
        to_unit = lambda us, up: -((-us) // US_PER_DAY) if up else us // US_PER_DAY  # noqa: E731
        mk = lambda v: pa.scalar(v, type=pa.int32()).cast(t)  # noqa: E731
    else:
        return None
    expr = None
    if since_us is not None:
        expr = field >= mk(to_unit(since_us, False))
    if until_us is not None:
        e = field <= mk(to_unit(until_us, True))
        expr = e if expr is None else expr & e
    return expr


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def _arrow_error(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__


def _parquet_batches(files: list["_File"], columns: ColumnMap, since_us, until_us, batch_size: int,
                     label: str) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Parquet row groups in file order, decoded one step ahead on a reader thread.

    Row groups outside the window are dropped by their statistics only; rows are never
    filtered here (the kernels apply the exact window), so every batch keeps its first row
    number in its file.  Each file is read with its own schema (an int32 id column in one
    file and int64 in the next stay what they are).  A bounded queue between the reader
    thread and the caller keeps at most a few batches decoded at any time: peak memory
    does not grow with the file.
    """
    from .readahead import read_ahead

    tasks = []
    for f in files:
        frag = f.fragment
        expr = _window_filter(f.schema, columns.time, since_us, until_us)
        try:
            starts = [0]
            for rg in frag.row_groups:
                starts.append(starts[-1] + rg.num_rows)
            pieces = frag.split_by_row_group(expr) if expr is not None else frag.split_by_row_group()
        except (pa.ArrowException, OSError) as exc:
            raise RfmxError(f"{f.path}: cannot read as Parquet: {_arrow_error(exc)}") from None
        for piece in pieces:
            if f.row_groups is None or piece.row_groups[0].id in f.row_groups:
                tasks.append((f.path, starts[piece.row_groups[0].id], piece))
    names = columns.names()

    def batches():
        path = label
        try:
            for path, row0, piece in tasks:
                for batch in piece.to_batches(columns=names, batch_size=batch_size, use_threads=True,
                                              batch_readahead=1, fragment_readahead=1):
                    yield path, row0, batch
                    row0 += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise RfmxError(f"{path}: cannot read as Parquet: {_arrow_error(exc)}") from None

    seen = False
    for item in read_ahead(batches(), depth=2, name="rfmx-parquet-reader"):
        seen = True
        yield item
    if not seen:
        # No rows at all: one empty batch still tells the state the id type, so an
        # empty input gives an empty result with the full schema.
        yield label, 0, _empty_batch(_mapped_schema(files[0].schema, columns))


def _mapped_schema(schema: pa.Schema, columns: ColumnMap) -> pa.Schema:
    return pa.schema([schema.field(n) for n in columns.names()])


@dataclass
class _File:
    """One input file as planned: its format, and the types its mapped columns are read with."""

    path: str
    fmt: str
    schema: pa.Schema                   # Parquet/IPC: the file's own; CSV: what rfmx reads it as
    fragment: ds.Fragment | None = None  # Parquet/IPC
    customer_undecided: bool = False     # CSV without a customer id value: takes the others' kind
    row_groups: tuple | None = None      # Parquet: read only these row groups (ids); None: all


#: one input file as :func:`plan_files` planned it (path, format, the types it is read with)
PlannedFile = _File


@dataclass
class _Part:
    """Files of one source read as one stream (Parquet files share one reader thread)."""

    fmt: str
    label: str
    files: list[_File] = field(default_factory=list)


# --- CSV --------------------------------------------------------------------------------

_CSV_BLOCK = 1 << 22  # bytes Arrow parses at a time; a batch holds one block's rows
_ARROW_ROW = re.compile(r"Row #(-?\d+): ")
_ARROW_CSV_COLUMN = re.compile(r"In CSV column #(\d+): ")


def _csv_header(path: str, delimiter: str | None) -> list[str]:
    """The column names in a CSV file's first record (for messages only)."""
    import csv
    import io

    try:
        with pa.input_stream(path, compression="detect") as f:
            head = f.read(1 << 16).decode("utf-8", "replace").lstrip("\ufeff")
        return next(csv.reader(io.StringIO(head), delimiter=delimiter or ","), [])
    except (OSError, pa.ArrowException, csv.Error, StopIteration):
        return []


def _csv_error(path: str, exc: BaseException, reopen, delimiter: str | None) -> RfmxError:
    """Arrow's CSV error as one line with the 0-based data row, where Arrow can tell it.

    Arrow numbers rows from 1 counting the header, and only when it reads on one thread;
    on the error path the file is read again that way up to the error, to learn the row.
    """
    msg = _arrow_error(exc)
    if isinstance(exc, pa.ArrowKeyError) and "include_columns" in msg:
        have = ", ".join(_csv_header(path, delimiter)) or "none"
        missing = re.search(r"Column '(.*)' in include_columns", msg)
        name = missing.group(1) if missing else "?"
        return RfmxError(f"{path}: column '{name}' not found; columns are: {have}")
    if not _ARROW_ROW.search(msg) and isinstance(exc, pa.ArrowInvalid):
        try:
            for _ in reopen(use_threads=False):
                pass
        except pa.ArrowInvalid as again:
            msg = _arrow_error(again)
        except (pa.ArrowException, OSError):
            pass
    where = ""
    row = _ARROW_ROW.search(msg)
    if row and int(row.group(1)) >= 2:
        where = f" at row {int(row.group(1)) - 2}"
    msg = _ARROW_ROW.sub("", msg)
    col = _ARROW_CSV_COLUMN.search(msg)
    if col:
        names = _csv_header(path, delimiter)
        k = int(col.group(1))
        msg = _ARROW_CSV_COLUMN.sub(f"column '{names[k]}': " if k < len(names) else "", msg)
    return RfmxError(f"{path}: cannot read as CSV{where}: {msg}")


def _csv_reader(path: str, types: dict, delimiter: str | None, use_threads: bool = True):
    """A streaming reader of the columns ``types`` names, read with those types.

    Only the empty field is a null (an id ``NA`` is the string ``NA``).
    """
    import pyarrow.csv as pcsv

    return pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(use_threads=use_threads, block_size=_CSV_BLOCK),
        parse_options=pcsv.ParseOptions(delimiter=delimiter or ","),
        convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(types), null_values=[""],
                                            strings_can_be_null=True, quoted_strings_can_be_null=True),
    )


def _csv_file(path: str, columns: ColumnMap, delimiter: str | None, customer_type: str) -> _File:
    """Plan a CSV file: every mapped column gets an explicit type, so no guess from the
    first block can fail half-way through the file.

    Times, amounts and costs are strings (rfmx parses them: :func:`rfmx.columns.time_us`,
    :func:`rfmx.columns.amount_minor`).  Customer and order ids are int64 when every value
    in the file is a canonical integer (:func:`rfmx.columns.canonical_integers`), found by a
    pre-pass over those columns alone, else strings; ``customer_type`` ``int`` or
    ``string`` decides the customer column without the pre-pass.
    """
    types = {columns.customer: pa.string(), columns.time: pa.string(), columns.amount: pa.string()}
    if columns.cost:
        types[columns.cost] = pa.string()  # parsed exactly as money
    check = []
    if customer_type == "auto":
        check.append(columns.customer)
    elif customer_type == "int":
        types[columns.customer] = pa.int64()
    if columns.order_id:
        types[columns.order_id] = pa.string()
        check.append(columns.order_id)
    undecided = False
    if check:
        probe = {name: pa.string() for name in check}  # only the id columns: converting others costs
        integers = set(check)
        seen = set()

        def reopen(use_threads=True):
            return _csv_reader(path, probe, delimiter, use_threads)

        try:
            for batch in reopen():
                for name in list(integers):
                    arr = batch.column(name)
                    if arr.null_count < len(arr):
                        seen.add(name)
                    if not canonical_integers(arr):
                        integers.discard(name)
                if not integers:
                    break
        except (pa.ArrowException, OSError) as exc:
            raise _csv_error(path, exc, reopen, delimiter) from None
        for name in integers:
            types[name] = pa.int64()
        undecided = customer_type == "auto" and columns.customer not in seen
    return _File(path, "csv", pa.schema(list(types.items())), customer_undecided=undecided)


def _csv_batches(f: _File, columns: ColumnMap, batch_size: int, delimiter: str | None
                 ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    types = {name: f.schema.field(name).type for name in f.schema.names}

    def reopen(use_threads=True):
        return _csv_reader(f.path, types, delimiter, use_threads)

    row0 = 0
    try:
        reader = reopen()
        for block in reader:
            for start in range(0, block.num_rows, batch_size):
                batch = block.slice(start, batch_size)
                yield f.path, row0, batch
                row0 += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise _csv_error(f.path, exc, reopen, delimiter) from None
    if row0 == 0:
        yield f.path, 0, _empty_batch(_mapped_schema(f.schema, columns))


# --- planning ---------------------------------------------------------------------------

def _wrapped(exc: BaseException, paths: list[str], label: str, fmt: str) -> RfmxError:
    """Arrow's error as one line naming the file it is about (Arrow's message may name it)."""
    msg = str(exc)
    where = label
    for f in sorted(paths, key=len, reverse=True):
        if f in msg:
            where = f
            break
    return RfmxError(f"{where}: cannot read as {_FORMAT_NAME.get(fmt, fmt)}: {_arrow_error(exc)}")


def _typed_files(dataset: ds.FileSystemDataset, fmt: str, columns: ColumnMap, label: str) -> list[_File]:
    """Parquet/IPC files of a dataset with each file's own schema (read from its footer only)."""
    files = []
    for frag in dataset.get_fragments():
        try:
            schema = frag.physical_schema
        except (pa.ArrowException, OSError) as exc:
            raise RfmxError(f"{frag.path}: cannot read as {_FORMAT_NAME.get(fmt, fmt)}: {_arrow_error(exc)}") from None
        check_columns(schema, columns, frag.path)
        files.append(_File(frag.path, fmt, schema, fragment=frag))
    if not files:
        raise RfmxError(f"{label}: no data files")
    return files


def _plan_path(source, columns: ColumnMap, delimiter: str | None, customer_type: str) -> list[_Part]:
    """A path, directory or glob → the parts to read, every file's schema known.

    The files of one format in a glob form one part, so Parquet reads ahead across them.
    """
    groups: dict[str, list[str]] = {}
    entries: list[tuple[str | None, str]] = []  # (directory, format), or (None, format) for a group of files
    for path, fmt in _expand(source):
        if not _remote_scheme(path) and os.path.isdir(path):
            entries.append((path, fmt))
            continue
        if fmt not in groups:
            groups[fmt] = []
            entries.append((None, fmt))
        groups[fmt].append(path)
    return [_plan_files(path if path else groups[fmt], fmt, columns, delimiter, customer_type)
            for path, fmt in entries]


def _plan_files(target: str | list[str], fmt: str, columns: ColumnMap, delimiter: str | None,
                customer_type: str) -> _Part:
    """One directory, or files of one format, planned as one part."""
    is_dir = isinstance(target, str)
    paths = [target] if is_dir else target
    label = paths[0]
    try:
        if fmt == "csv":
            listed = _dir_files(target) if is_dir else paths
            return _Part(fmt, label, [_csv_file(p, columns, delimiter, customer_type) for p in listed])
        if _remote_scheme(paths[0]):
            from pyarrow import fs as pafs

            if fmt == "csv":
                raise RfmxError(f"{label}: CSV files are read from local paths (or file:// URIs); read remote "
                                f"Parquet or Arrow IPC files, or copy the CSV files to a local disk")

            filesystem, _ = pafs.FileSystem.from_uri(paths[0])
            dataset = ds.dataset([pafs.FileSystem.from_uri(p)[1] for p in paths], format=fmt, filesystem=filesystem)
            return _Part(fmt, label, _typed_files(dataset, fmt, columns, label))
        dataset = ds.dataset(target if is_dir else (paths if len(paths) > 1 else paths[0]), format=fmt,
                             partitioning="hive" if is_dir else None)
        return _Part(fmt, label, _typed_files(dataset, fmt, columns, label))
    except (pa.ArrowException, OSError) as exc:
        raise _wrapped(exc, paths, label, fmt) from None


def _id_kind(t: pa.DataType) -> str | None:
    """``int`` or ``bytes``: the customer id kinds a state keeps apart (None: no values)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int"
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)):
        return "bytes"
    return None


def _check_id_kinds(files: list[_File], columns: ColumnMap, customer_type: str | None) -> None:
    """Refuse, before any scan, integer customer ids in one file and strings in another;
    then give CSV files without an id value the kind of the others.  ``customer_type``
    ``auto`` adds the way out for CSV ids (None: the types are not rfmx's to choose)."""
    first: dict[str, _File] = {}
    for f in files:
        if f.customer_undecided:
            continue
        kind = _id_kind(f.schema.field(columns.customer).type)
        if kind is None or kind in first:
            continue
        first[kind] = f
        if len(first) == 2:
            a, b = first["int"], first["bytes"]
            hint = ""
            if a.fmt == "csv" and customer_type == "auto":
                hint = "; pass customer_type='string' (--customer-type string) to read the CSV ids as strings"
            earlier, later = (a, b) if files.index(a) < files.index(b) else (b, a)
            raise RfmxError(
                f"{later.path}: column '{columns.customer}' (customer id) has type "
                f"{later.schema.field(columns.customer).type} but {earlier.path} has "
                f"{earlier.schema.field(columns.customer).type}; one input's ids must be all integers "
                f"or all strings{hint}")
    kind = next(iter(first), "int")
    for f in files:
        if f.customer_undecided:
            i = f.schema.get_field_index(columns.customer)
            f.schema = f.schema.set(i, pa.field(columns.customer, pa.int64() if kind == "int" else pa.string()))


def _read_part(part: _Part, columns: ColumnMap, since_us, until_us, batch_size: int,
               delimiter: str | None) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    if part.fmt == "parquet":
        yield from _parquet_batches(part.files, columns, since_us, until_us, batch_size, part.label)
    elif part.fmt == "csv":
        for f in part.files:
            yield from _csv_batches(f, columns, batch_size, delimiter)
    else:
        yield from _fragment_batches(part.files, columns, batch_size, part.label)


def _fragment_batches(files: list[_File], columns: ColumnMap, batch_size: int, label: str
                      ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Batches of Arrow IPC (or other dataset) files, each file with its own schema."""
    names = columns.names()
    seen = False
    for f in files:
        row0 = 0
        try:
            for batch in f.fragment.to_batches(columns=names, batch_size=batch_size, batch_readahead=2,
                                               use_threads=True):
                seen = True
                yield f.path, row0, batch
                row0 += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise RfmxError(f"{f.path}: cannot read as {_FORMAT_NAME.get(f.fmt, f.fmt)}: {_arrow_error(exc)}") from None
    if not seen:
        yield label, 0, _empty_batch(_mapped_schema(files[0].schema, columns))


# --- Python objects ---------------------------------------------------------------------

def _type_of(obj) -> tuple[str, str]:
    """(top-level module, class name) of ``obj``'s type: optional libraries are recognised
    without being imported."""
    t = type(obj)
    return t.__module__.split(".")[0].lstrip("_"), t.__name__


def _dataset_batches(dataset: ds.Dataset, name: str, columns: ColumnMap, since_us, until_us,
                     batch_size: int) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """A ``pyarrow.dataset.Dataset``: a file dataset file by file with each file's own schema
    (Parquet through the reader thread), any other dataset through one projected scan;
    rows numbered per file."""
    fmt = {ds.ParquetFileFormat: "parquet", ds.IpcFileFormat: "ipc", ds.CsvFileFormat: "csv"}
    if isinstance(dataset, ds.FileSystemDataset):
        kind = next((v for k, v in fmt.items() if isinstance(dataset.format, k)), "data")
        files = _typed_files(dataset, kind, columns, name)
        _check_id_kinds(files, columns, None)  # the dataset's own types: no rfmx option changes them
        if kind == "parquet":
            yield from _parquet_batches(files, columns, since_us, until_us, batch_size, name)
        else:
            yield from _fragment_batches(files, columns, batch_size, name)
        return
    check_columns(dataset.schema, columns, name)
    scanner = dataset.scanner(columns=columns.names(), batch_size=batch_size, batch_readahead=2,
                              fragment_readahead=2, use_threads=True)
    rows_seen: dict = {}
    where = name
    try:
        for tagged in scanner.scan_batches():
            where = getattr(tagged.fragment, "path", None) or name
            row0 = rows_seen.get(where, 0)
            rows_seen[where] = row0 + tagged.record_batch.num_rows
            yield where, row0, tagged.record_batch
    except (pa.ArrowException, OSError) as exc:
        raise RfmxError(f"{where}: cannot read the dataset: {_arrow_error(exc)}") from None
    if not rows_seen:
        yield name, 0, _empty_batch(scanner.projected_schema)


def _lazyframe_reader(lf, name: str, columns: ColumnMap, batch_size: int) -> pa.RecordBatchReader:
    """A polars LazyFrame run by polars' streaming engine, projected first, batch by batch
    (never collected whole)."""
    check_columns(pa.schema([(n, pa.null()) for n in lf.collect_schema().names()]), columns, name)
    projected = lf.select(columns.names())
    frames = projected.collect_batches(chunk_size=batch_size)
    first = None
    for first in frames:
        break
    if first is None:
        schema = projected.limit(0).collect().to_arrow().schema
        return pa.RecordBatchReader.from_batches(schema, [])
    head = first.to_arrow()

    def rest():
        yield from head.to_batches()
        for df in frames:
            yield from df.to_arrow().cast(head.schema).to_batches()

    return pa.RecordBatchReader.from_batches(head.schema, rest())


def _duckdb_reader(obj, kind: str, name: str, columns: ColumnMap, batch_size: int) -> pa.RecordBatchReader:
    """DuckDB's record-batch reader over a relation (projected first) or a connection's
    pending result: rows arrive batch by batch, never as one fetched table."""
    if kind == "DuckDBPyRelation":
        check_columns(pa.schema([(n, pa.null()) for n in obj.columns]), columns, name)
        obj = obj.project(", ".join('"' + n.replace('"', '""') + '"' for n in columns.names()))
    try:
        with warnings.catch_warnings():
            # DuckDB warns that a DB-API result is copied into Arrow batch by batch; that
            # is the user's chosen source, not something they can act on here.
            warnings.simplefilter("ignore")
            if hasattr(obj, "to_arrow_reader"):
                return obj.to_arrow_reader(batch_size)
            return obj.fetch_record_batch(batch_size)
    except Exception as exc:  # duckdb's own exception types; imported only with duckdb itself
        if _type_of(exc)[0] != "duckdb":
            raise
        raise RfmxError(f"{name}: cannot read the DuckDB result: {_arrow_error(exc)}") from None


def _object_reader(obj, name: str, columns: ColumnMap, batch_size: int):
    """A streaming reader for sources of optional libraries (None for anything else)."""
    module, kind = _type_of(obj)
    if module == "polars" and kind == "LazyFrame":
        return _lazyframe_reader(obj, name, columns, batch_size)
    if module == "duckdb" and kind in ("DuckDBPyRelation", "DuckDBPyConnection"):
        return _duckdb_reader(obj, kind, name, columns, batch_size)
    return None


def _in_memory(obj) -> bool:
    return isinstance(obj, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)) or hasattr(obj, "__arrow_c_stream__")


def _memory_batches(obj, name: str, columns: ColumnMap, batch_size: int) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Batches of one in-memory Arrow object (row numbers from 0); one empty batch if it has no rows."""
    if isinstance(obj, pa.RecordBatch):
        obj = pa.Table.from_batches([obj])
    if isinstance(obj, pa.Table):
        check_columns(obj.schema, columns, name)
        obj = obj.select(columns.names())
        schema, batches = obj.schema, obj.to_batches(max_chunksize=batch_size)
    elif isinstance(obj, pa.RecordBatchReader):
        check_columns(obj.schema, columns, name)
        schema, batches = obj.schema, obj
    elif hasattr(obj, "__arrow_c_stream__"):
        try:
            reader = pa.RecordBatchReader.from_stream(obj)
        except (pa.ArrowException, TypeError) as exc:
            raise RfmxError(f"{name}: cannot read its Arrow C stream: {_arrow_error(exc)}") from None
        check_columns(reader.schema, columns, name)
        schema, batches = reader.schema, reader
    else:
        raise RfmxError(f"{name}: cannot read a {type(obj).__name__}; pass a path, an Arrow table/batch/reader "
                        f"or an object with the Arrow C stream interface")
    row0 = 0
    for b in batches:
        yield name, row0, b
        row0 += b.num_rows
    if row0 == 0:
        yield name, 0, _empty_batch(schema)


def _object_batches(source, columns: ColumnMap, since_us, until_us, batch_size: int, delimiter: str | None,
                    customer_type: str) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Batches of one Python object source (not a path)."""
    if isinstance(source, SourceObject):
        yield from source.batches(columns, since_us=since_us, until_us=until_us, batch_size=batch_size,
                                  delimiter=delimiter, customer_type=customer_type)
        return
    name = f"<{type(source).__name__}>"
    if isinstance(source, ds.Dataset):
        yield from _dataset_batches(source, name, columns, since_us, until_us, batch_size)
        return
    reader = _object_reader(source, name, columns, batch_size)
    if reader is not None:
        yield from _memory_batches(reader, name, columns, batch_size)
        return
    if _in_memory(source):
        yield from _memory_batches(source, name, columns, batch_size)
        return
    try:
        items = iter(source)
    except TypeError:
        raise RfmxError(f"{name}: cannot read a {type(source).__name__}; pass a path, an Arrow table/batch/reader "
                        f"or an object with the Arrow C stream interface") from None
    # An iterable of batches (or tables) is one stream: rows are numbered across it.
    row0 = 0
    for item in items:
        if not isinstance(item, (pa.RecordBatch, pa.Table)):
            raise RfmxError(f"{name}: holds a {type(item).__name__}; an iterable source must yield "
                            f"pyarrow RecordBatches or Tables")
        for _, r, b in _memory_batches(item, name, columns, batch_size):
            yield name, row0 + r, b
        row0 += item.num_rows


def known_rows(source) -> int | None:
    """The rows ``source`` holds when its files say so without being read (Parquet footers),
    for progress; None when any part is not a Parquet file or path (CSV, Arrow IPC,
    databases, in-memory objects) or cannot be opened (reading it reports why)."""
    import pyarrow.parquet as pq

    total = 0
    try:
        for item in _items(source):
            if not isinstance(item, (str, os.PathLike)) or os.fspath(item) == "-":
                return None
            for path, fmt in _expand(item):
                if fmt != "parquet":
                    return None
                for f in (_dir_files(path) if os.path.isdir(path) else [path]):
                    total += pq.ParquetFile(f).metadata.num_rows
    except (RfmxError, OSError, pa.ArrowException):
        return None
    return total


def _items(source) -> list:
    """A list or tuple of sources (not of batches: those are one stream), flattened."""
    if isinstance(source, (list, tuple)) and not all(isinstance(x, (pa.RecordBatch, pa.Table)) for x in source):
        return [leaf for item in source for leaf in _items(item)]
    return [source]


def iter_batches(source, columns: ColumnMap, *, since_us=None, until_us=None, batch_size: int = 1 << 20,
                 delimiter: str | None = None, customer_type: str = "auto"
                 ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Yield ``(where, first_row, batch)`` for every record batch of ``source``.

    ``source`` is a path / directory / glob, an in-memory Arrow object, a
    ``pyarrow.dataset.Dataset``, a polars LazyFrame, a DuckDB relation or connection, a
    :class:`SourceObject` (a database query; ``"-"`` is standard input), an
    iterable of record batches or tables (one stream, rows numbered across it), or a list
    or tuple of paths and objects, read in the order given.  ``where`` names the file (or
    ``<Table>`` ...) for errors; ``first_row`` counts from the start of that source.
    A source without rows yields one empty batch, so the id type is still known.

    Every file of every path is planned first (footers, the CSV pre-pass): a missing
    column or integer ids in one file and strings in another fail before any row is
    read.  ``customer_type`` (``auto``, ``int``, ``string``) says how CSV customer ids are
    read (see :func:`_csv_file`).
    """
    if customer_type not in CUSTOMER_TYPES:
        raise RfmxError(f"customer_type must be 'auto', 'int' or 'string', got {customer_type!r}")
    items = [_named_source(item) for item in _items(source)]
    plans = [_plan_path(item, columns, delimiter, customer_type) if isinstance(item, (str, os.PathLike)) else None
             for item in items]
    _check_id_kinds([f for plan in plans if plan for part in plan for f in part.files], columns, customer_type)
    for item, plan in zip(items, plans):
        if plan is None:
            yield from _object_batches(item, columns, since_us, until_us, batch_size, delimiter, customer_type)
            continue
        for part in plan:
            yield from _read_part(part, columns, since_us, until_us, batch_size, delimiter)


def plan_files(source, columns: ColumnMap, *, delimiter: str | None = None, customer_type: str = "auto"
               ) -> list[PlannedFile]:
    """Every file of ``source`` (a path, directory, glob or URI, or a list of them), in the
    order :func:`iter_batches` reads them, each with the types it is read with.

    Refuses, before any row is read, what :func:`iter_batches` refuses: a missing column,
    integer customer ids in one file and strings in another.  The files (or shares of them:
    set a Parquet file's ``row_groups``) are read by :func:`read_files`, on this machine or
    another one: a planned file carries its ``pyarrow.dataset`` fragment and its filesystem.
    """
    if customer_type not in CUSTOMER_TYPES:
        raise RfmxError(f"customer_type must be 'auto', 'int' or 'string', got {customer_type!r}")
    items = _items(source)
    for item in items:
        from .locations import database_kind

        if not isinstance(item, (str, os.PathLike)) or os.fspath(item) == "-" or database_kind(item) is not None:
            raise RfmxError(f"{item}: only files (paths, directories, globs, URIs) can be planned and read in "
                            f"shares; read other sources in one stream")
    files = [f for item in items for part in _plan_path(item, columns, delimiter, customer_type) for f in part.files]
    _check_id_kinds(files, columns, customer_type)
    return files


def read_files(files: list[PlannedFile], columns: ColumnMap, *, since_us=None, until_us=None,
               batch_size: int = 1 << 20, delimiter: str | None = None) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """``(where, first_row, batch)`` of files planned by :func:`plan_files`, in order, as
    :func:`iter_batches` yields them; a Parquet file with ``row_groups`` yields only those
    row groups, with rows still numbered from the start of the file."""
    start = 0
    while start < len(files):
        end = start + 1
        while end < len(files) and files[end].fmt == files[start].fmt:
            end += 1
        group = files[start:end]
        yield from _read_part(_Part(group[0].fmt, group[0].path, group), columns, since_us, until_us, batch_size,
                              delimiter)
        start = end
