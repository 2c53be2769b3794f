"""rfmx in a shell pipeline: orders from standard input, a result to standard output.

``-`` as a source (:class:`StdinSource`) reads CSV or an Arrow IPC stream, told apart by
their first bytes: an IPC stream begins with its continuation marker ``FF FF FF FF``; an
Arrow IPC file begins with ``ARROW1``, Parquet with ``PAR1``, gzip with ``1F 8B`` (gzipped
CSV); anything else is CSV.  An IPC stream is read batch by batch as it arrives.  The others
are first copied to a temporary file: CSV because rfmx reads CSV ids in a first pass over
the file to decide whether they are integers (see :mod:`rfmx.sources`), the file formats
because their footer comes last.  Results are then exactly those of the same file.

``-o -`` (:class:`Stdout`) writes CSV, JSON Lines or an Arrow IPC stream.  Like every output
the result is staged and written only when the whole command succeeded, so a failed run
writes nothing to standard output; diagnostics go to standard error.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from .columns import ColumnMap
from .errors import RfmxError
from .sinks import STREAM_FORMATS, Destination, write_stream
from .sources import SourceObject, iter_batches

__all__ = ["StdinSource", "Stdout"]

_IPC_STREAM = b"\xff\xff\xff\xff"
# What else can come in: read from a temporary copy, as the file it is.
_SPOOLED = ((b"ARROW1", ".arrow"), (b"PAR1", ".parquet"), (b"\x1f\x8b", ".csv.gz"))


class _Prefixed:
    """A binary stream that first gives back the bytes already read from it (to sniff)."""

    def __init__(self, head: bytes, rest):
        self._head, self._rest = head, rest
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _read_head(stream, n: int) -> bytes:
    head = b""
    while len(head) < n:
        chunk = stream.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


class StdinSource(SourceObject):
    """Orders from standard input (``stream``: any binary file object, default
    ``sys.stdin.buffer``): an Arrow IPC stream or file, CSV or gzipped CSV."""

    label = "<stdin>"

    def __init__(self, stream=None):
        self.stream = stream

    def _relabel(self, batches, alias: str) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        """``batches`` of a stand-in (a spooled file, a reader object) under this source's name."""
        try:
            for where, row0, batch in batches:
                yield (self.label if where == alias else where), row0, batch
        except RfmxError as exc:
            raise RfmxError(str(exc).replace(alias, self.label)) from None
        except (pa.ArrowException, OSError) as exc:
            msg = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise RfmxError(f"{self.label}: cannot read the Arrow IPC stream: {msg}") from None
        finally:
            batches.close()

    def batches(self, columns: ColumnMap, **options) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        stream = self.stream if self.stream is not None else sys.stdin.buffer
        head = _read_head(stream, 8)
        if head.startswith(_IPC_STREAM):
            try:
                reader = pa.ipc.open_stream(_Prefixed(head, stream))
            except (pa.ArrowException, OSError) as exc:
                msg = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise RfmxError(f"{self.label}: cannot read the Arrow IPC stream: {msg}") from None
            yield from self._relabel(iter_batches(reader, columns, **options), f"<{type(reader).__name__}>")
            return
        suffix = next((s for magic, s in _SPOOLED if head.startswith(magic)), ".csv")
        folder = tempfile.mkdtemp(prefix="rfmx-stdin-")
        try:
            path = os.path.join(folder, "stdin" + suffix)
            try:
                with open(path, "wb") as spool:
                    spool.write(head)
                    shutil.copyfileobj(stream, spool, 1 << 20)
            except OSError as exc:
                raise RfmxError(f"{self.label}: cannot copy standard input to {folder}: "
                                f"{exc.strerror or exc}") from None
            yield from self._relabel(iter_batches(path, columns, **options), path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class Stdout(Destination):
    """Standard output as where a result goes: ``csv`` (default), ``jsonl`` or ``arrow`` (an
    Arrow IPC stream), written when the command commits.  ``stream``: any binary file
    object, default ``sys.stdout.buffer`` at that moment."""

    def __init__(self, fmt: str = "csv", stream=None):
        if fmt not in STREAM_FORMATS:
            raise RfmxError(f"-: unknown format {fmt!r} for standard output; use {', '.join(STREAM_FORMATS)}")
        self.fmt, self.stream = fmt, stream
        self._staged: Path | None = None

    def __str__(self) -> str:
        return "-"

    def prepare(self, staged) -> None:
        self._staged = Path(staged)

    def commit(self) -> None:
        stream = self.stream if self.stream is not None else sys.stdout.buffer
        f = pa.ipc.open_file(pa.memory_map(str(self._staged)))
        batches = (f.get_batch(i) for i in range(f.num_record_batches))
        try:
            write_stream(batches, f.schema, stream, self.fmt, where="standard output")
        except RfmxError as exc:
            if "Broken pipe" not in str(exc):
                raise
            # The reader went away (`rfmx ... -o - | head`): not an error of this run, and
            # nothing more can be written there, not even by the interpreter's last flush.
            _silence(stream)

    def rollback(self) -> None:
        self._staged = None


def _silence(stream) -> None:
    """Point the broken stream's descriptor at /dev/null, so that the interpreter's final
    flush does not report the broken pipe either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
