"""Writing results: the format follows the file suffix, and a file appears whole or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pyarrow as pa

from .errors import RfmxError

__all__ = ["atomic_path", "write_table", "FORMATS"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv",
           ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".json": "json"}


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise RfmxError(f"{path}: directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def output_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS or FORMATS[suffix] == "json":
        raise RfmxError(f"{path}: unknown output format '{suffix}'; use .parquet, .csv, .arrow or .feather")
    return FORMATS[suffix]


def write_table(table: pa.Table, path) -> None:
    """Write ``table`` to ``path`` as Parquet, CSV or Arrow IPC (from the suffix), atomically."""
    fmt = output_format(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        else:
            import pyarrow.feather as feather

            feather.write_feather(table, tmp, compression="uncompressed")
