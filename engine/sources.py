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
_FORMAT_NAME = {"parquet": "Parquet", "ipc": "Arrow IPC", "csv": "CSV"}


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
        files = [(p, file_format(p)) for p in paths if os.path.isfile(p)]
        if not files:
            raise RfmxError(f"{s}: no files match (only directories)")
        return files
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


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def _arrow_error(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__


def _parquet_batches(dataset: ds.FileSystemDataset, columns: ColumnMap, expr, batch_size: int,
                     label: str) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Parquet row groups in file order, decoded one step ahead on a reader thread.

    Row groups outside the window are dropped by their statistics only; rows are never
    filtered here (the kernels apply the exact window), so every batch keeps its first row
    number in its file.  A bounded queue between the reader thread and the caller keeps at
    most a few batches decoded at any time: peak memory does not grow with the file.
    """
    import queue
    import threading

    tasks = []
    for frag in dataset.get_fragments():
        starts = [0]
        for rg in frag.row_groups:
            starts.append(starts[-1] + rg.num_rows)
        for piece in frag.split_by_row_group(expr) if expr is not None else frag.split_by_row_group():
            tasks.append((frag.path, starts[piece.row_groups[0].id], piece))
    names = columns.names()
    done = object()
    out: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        path = label
        try:
            for path, row0, piece in tasks:
                for batch in piece.to_batches(columns=names, batch_size=batch_size, use_threads=True,
                                              batch_readahead=1, fragment_readahead=1):
                    if not put((path, row0, batch)):
                        return
                    row0 += batch.num_rows
            put(done)
        except (pa.ArrowException, OSError) as exc:
            put(RfmxError(f"{path}: cannot read as Parquet: {_arrow_error(exc)}"))
        except BaseException as exc:  # anything else must reach the caller too, or it waits forever
            put(exc)

    reader = threading.Thread(target=read, name="rfmx-parquet-reader", daemon=True)
    reader.start()
    seen = False
    try:
        while True:
            item = out.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            seen = True
            yield item
    finally:
        stop.set()
        reader.join()
    if not seen:
        # No rows at all: one empty batch still tells the state the id type, so an
        # empty input gives an empty result with the full schema.
        yield label, 0, _empty_batch(pa.schema([dataset.schema.field(n) for n in names]))


def _files_of(path) -> list[str]:
    if isinstance(path, (list, tuple)):
        return list(path)
    if os.path.isdir(path):
        return [str(p) for p in Path(path).rglob("*") if p.is_file()]
    return [path]


def _scan_files(path, fmt: str, columns: ColumnMap, since_us, until_us, batch_size: int,
                delimiter: str | None) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    label = path if isinstance(path, str) else path[0]
    where = label
    try:
        partitioning = "hive" if isinstance(path, str) and os.path.isdir(path) else None
        dataset = ds.dataset(path, format=_format(fmt, delimiter), partitioning=partitioning)
        check_columns(dataset.schema, columns, label)
        expr = _window_filter(dataset.schema, columns.time, since_us, until_us)
        if fmt == "parquet":
            yield from _parquet_batches(dataset, columns, expr, batch_size, label)
            return
        scanner = dataset.scanner(
            columns=columns.names(),
            batch_size=batch_size,
            batch_readahead=2,
            fragment_readahead=2,
            use_threads=True,
        )
        rows_seen: dict = {}
        for tagged in scanner.scan_batches():
            where = getattr(tagged.fragment, "path", label)
            row0 = rows_seen.get(where, 0)
            batch = tagged.record_batch
            rows_seen[where] = row0 + batch.num_rows
            yield where, row0, batch
        if not rows_seen:
            # No rows at all: one empty batch still tells the state the id type, so an
            # empty input gives an empty result with the full schema.
            yield label, 0, _empty_batch(scanner.projected_schema)
    except (pa.ArrowException, OSError) as exc:
        # Arrow's message names the file that failed when it is not the current one.
        msg = str(exc)
        for f in sorted(_files_of(path), key=len, reverse=True):
            if f in msg:
                where = f
                break
        raise RfmxError(f"{where}: cannot read as {_FORMAT_NAME.get(fmt, fmt)}: {_arrow_error(exc)}") from None


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


def iter_batches(source, columns: ColumnMap, *, since_us=None, until_us=None, batch_size: int = 1 << 20,
                 delimiter: str | None = None) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """Yield ``(where, first_row, batch)`` for every record batch of ``source``.

    ``source`` is a path / directory / glob, an in-memory Arrow object, an iterable of
    record batches or tables (one stream, rows numbered across it), or a list or tuple of
    paths and objects, read in the order given.  ``where`` names the file (or
    ``<Table>`` ...) for errors; ``first_row`` counts from the start of that source.
    A source without rows yields one empty batch, so the id type is still known.
    """
    if isinstance(source, (list, tuple)) and not all(isinstance(x, (pa.RecordBatch, pa.Table)) for x in source):
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
