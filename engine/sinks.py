"""Writing results: the format follows the file suffix, and a file appears whole or not at all."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow as pa

from .errors import RfmxError

__all__ = ["atomic_path", "output_format", "write_format", "write_table", "FORMATS"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv",
           ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".json": "json"}


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block
    succeeds (a one-output :class:`rfmx.outputs.CommandFiles`)."""
    from .outputs import CommandFiles

    files = CommandFiles().write("output", path)
    with files:
        yield files.staged("output")


def output_format(path) -> str:
    """The output format of ``path`` from its suffix: ``parquet``, ``csv`` or ``ipc``."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS or FORMATS[suffix] == "json":
        raise RfmxError(f"{path}: unknown output format '{suffix}'; use .parquet, .csv, .arrow or .feather")
    return FORMATS[suffix]


def _csv_ready(table: pa.Table) -> pa.Table:
    """Arrow's CSV writer has no view types: write them as their large equivalents."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string_view(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.large_string()))
        elif pa.types.is_binary_view(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.large_binary()))
    return table


def write_format(table: pa.Table, path, fmt: str, *, where=None) -> None:
    """Write ``table`` to ``path`` in ``fmt`` (``parquet``/``csv``/``ipc``) — not atomic:
    use :func:`write_table`, or give ``path`` from :func:`atomic_path`.  ``where`` names
    the destination in errors (default: ``path``)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, str(path))
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(_csv_ready(table), str(path))
        elif fmt == "ipc":
            import pyarrow.feather as feather

            feather.write_feather(table, str(path), compression="uncompressed")
        else:
            raise RfmxError(f"{where or path}: unknown output format {fmt!r}")
    except (pa.ArrowException, OSError) as exc:
        msg = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RfmxError(f"{where or path}: cannot write {fmt}: {msg}") from None


def write_table(table: pa.Table, path) -> None:
    """Write ``table`` to ``path`` as Parquet, CSV or Arrow IPC (from the suffix), atomically."""
    fmt = output_format(path)
    with atomic_path(path) as tmp:
        write_format(table, tmp, fmt, where=path)
