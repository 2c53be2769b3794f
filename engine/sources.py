"""Every input becomes one stream of Arrow record batches, tagged with where it came from.

Files (Parquet, Arrow IPC/Feather, CSV; single files, directories, globs, hive-partitioned
datasets) are scanned with ``pyarrow.dataset``: only the mapped columns are read, a date
window is pushed down so whole row groups outside it are skipped, Arrow decodes on its own
threads, and read-ahead is bounded because it drives peak memory.  In Python a source can
also be a Table, RecordBatch, RecordBatchReader, an iterable of batches or tables, or any
object exporting the Arrow C stream interface (pandas, polars and DuckDB results).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.dataset as ds

from .columns import ColumnMap, US_PER_DAY, check_columns
from .errors import RfmxError

__all__ = ["iter_batches", "file_format"]

_SUFFIX_FORMAT = {".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
                  ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".arrows": "ipc",
                  ".csv": "csv", ".tsv": "csv", ".gz": "csv"}
_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


def file_format(path: str) -> str:
    """The dataset format of a file, from its suffix (``.csv.gz`` is CSV)."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    for s in reversed(suffixes):
        if s in _SUFFIX_FORMAT and not (s == ".gz" and ".csv" not in suffixes and ".tsv" not in suffixes):
            return _SUFFIX_FORMAT[s]
    raise RfmxError(f"{path}: unknown input format; use .parquet, .arrow/.feather or .csv files")


def _expand(source) -> list[tuple[str, str]]:
    """A path, directory or glob → [(path, format)], in a deterministic order."""
    s = os.fspath(source)
    if any(ch in s for ch in "*?["):
        paths = sorted(glob.glob(s, recursive=True))
        if not paths:
            raise RfmxError(f"{s}: no files match")
        return [(p, file_format(p)) for p in paths if os.path.isfile(p)]
    if os.path.isdir(s):
        files = sorted(
            str(p) for p in Path(s).rglob("*")
            if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(s).parts)
        )
        if not files:
            raise RfmxError(f"{s}: directory has no data files")
        return [(s, file_format(files[0]))]
    if not os.path.exists(s):
        raise RfmxError(f"{s}: no such file or directory")
    return [(s, file_format(s))]


def _format(fmt: str, delimiter: str | None):
    if fmt == "csv":
        import pyarrow.csv as pcsv

        parse = pcsv.ParseOptions(delimiter=delimiter) if delimiter else None
        return ds.CsvFileFormat(parse_options=parse)
    return fmt


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


def _scan_files(path: str, fmt: str, columns: ColumnMap, since_us, until_us, batch_size: int,
                delimiter: str | None) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    label = path if isinstance(path, str) else path[0]
    try:
        partitioning = "hive" if isinstance(path, str) and os.path.isdir(path) else None
        dataset = ds.dataset(path, format=_format(fmt, delimiter), partitioning=partitioning)
    except (pa.ArrowInvalid, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RfmxError(f"{label}: cannot read as {fmt}: {msg}") from None
    check_columns(dataset.schema, columns, label)
    scanner = dataset.scanner(
        columns=columns.names(),
        filter=_window_filter(dataset.schema, columns.time, since_us, until_us),
        batch_size=batch_size,
        batch_readahead=2,
        fragment_readahead=2,
        use_threads=True,
    )
    rows_seen: dict[str, int] = {}
    where = label
    try:
        for tagged in scanner.scan_batches():
            where = getattr(tagged.fragment, "path", label)
            row0 = rows_seen.get(where, 0)
            batch = tagged.record_batch
            rows_seen[where] = row0 + batch.num_rows
            yield where, row0, batch
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RfmxError(f"{where}: cannot read: {msg}") from None


def _memory_batches(obj, name: str, columns: ColumnMap, batch_size: int) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    if isinstance(obj, pa.RecordBatch):
        obj = pa.Table.from_batches([obj])
    if isinstance(obj, pa.Table):
        check_columns(obj.schema, columns, name)
        obj = obj.select(columns.names())
        batches = obj.to_batches(max_chunksize=batch_size)
    elif isinstance(obj, pa.RecordBatchReader):
        check_columns(obj.schema, columns, name)
        batches = obj
    elif hasattr(obj, "__arrow_c_stream__"):
        reader = pa.RecordBatchReader.from_stream(obj)
        check_columns(reader.schema, columns, name)
        batches = reader
    else:
        raise RfmxError(f"{name}: cannot read a {type(obj).__name__}; pass a path, an Arrow table/batch/reader "
                        f"or an object with the Arrow C stream interface")
    row0 = 0
    for b in batches:
        if isinstance(b, pa.Table):
            yield from _memory_batches(b, name, columns, batch_size)
            continue
        yield name, row0, b
        row0 += b.num_rows


def iter_batches(source, columns: ColumnMap, *, since_us=None, until_us=None, batch_size: int = 1 << 20,
                 delimiter: str | None = None) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Yield ``(where, first_row, batch)`` for every record batch of ``source``.

    ``source`` is a path / directory / glob, an in-memory Arrow object, or a list or tuple
    of these, read in the order given.  ``where`` names the file (or ``<table>``) for errors.
    """
    if isinstance(source, (list, tuple)):
        for item in source:
            yield from iter_batches(item, columns, since_us=since_us, until_us=until_us,
                                    batch_size=batch_size, delimiter=delimiter)
        return
    if isinstance(source, (str, os.PathLike)):
        expanded = _expand(source)
        by_format: dict[str, list[str]] = {}
        order: list[str] = []
        for path, fmt in expanded:
            if os.path.isdir(path):
                yield from _scan_files(path, fmt, columns, since_us, until_us, batch_size, delimiter)
                continue
            if fmt not in by_format:
                order.append(fmt)
            by_format.setdefault(fmt, []).append(path)
        for fmt in order:
            files = by_format[fmt]
            # One dataset over all files of a glob lets Arrow read ahead across files.
            target = files if len(files) > 1 else files[0]
            yield from _scan_files(target, fmt, columns, since_us, until_us, batch_size, delimiter)
        return
    name = f"<{type(source).__name__}>"
    if isinstance(source, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)) or hasattr(source, "__arrow_c_stream__"):
        yield from _memory_batches(source, name, columns, batch_size)
        return
    try:
        items = iter(source)
    except TypeError:
        raise RfmxError(f"{name}: cannot read a {type(source).__name__}") from None
    row0 = 0
    for item in items:
        for where, r, b in _memory_batches(item, name, columns, batch_size):
            yield where, row0 + r, b
        row0 += item.num_rows if hasattr(item, "num_rows") else 0
