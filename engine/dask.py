"""rfmx on a Dask cluster: the same kernels and the same merge, spread over workers.

>>> import rfmx.dask
>>> from distributed import Client
>>> client = Client("tcp://scheduler:8786")                    # or rfmx.dask.connect("local:4")
>>> rfm = rfmx.dask.aggregate("s3://shop/orders/", client=client)          # a Dask DataFrame
>>> rfmx.dask.aggregate("orders/*.parquet", client=client, output="rfm/")  # a Parquet dataset
>>> rfmx.dask.score("orders/*.parquet", client=client, output="scores/")   # scores, segments, tiers, ABC
>>> rfmx.dask.clv("orders/*.parquet", client=client, unit="week", output="clv/")
>>> rfmx.dask.cluster_customers("orders/*.parquet", k=6, client=client, output="clusters/")
>>> rfmx.dask.snapshots("orders/*.parquet", every="month", client=client, output="snapshots/")

The population-wide steps after the aggregate live in :mod:`rfmx.dask_scores` (exact
quantile edges, code counts and ABC thresholds from per-bucket histograms),
:mod:`rfmx.dask_clv` (BTYD pattern counts, one fit, predictions per bucket) and
:mod:`rfmx.dask_kmeans` (Lloyd sums reduced in bucket order).

How an aggregate goes (see docs/dask.md):

1. The client plans the input (file footers only, as one machine does: missing columns and
   integer ids beside string ids fail before any row is read) and cuts it into *shares*:
   runs of Parquet row groups, whole CSV / Arrow IPC files, or Dask DataFrame partitions.
2. One task per share folds it with the update kernels (one single-threaded kernel per
   worker process) into a partial state, splits it by customer hash bucket
   (:mod:`rfmx.buckets`) and returns each bucket as Arrow IPC bytes, plus a summary of a
   few bytes (counters, latest line, id type).
3. The partials of one bucket are merged with :meth:`RFMState.merge` in input order (an
   ordered tree, ``fan_in`` at a time) on a worker; the client merges the summaries (the
   default ``as_of``, the output's id type), then each bucket is finalized where it lives
   and written as one Parquet part, or kept on its worker as a partition of a Dask DataFrame.

No task sees more than one bucket of customers and the client never receives per-customer
data (unless one output file is asked for: ``single_file=True``).  Results are the
single-machine results exactly, customer by customer; rows come bucket after bucket.
Nothing here imports Dask until a function runs; Dask is the ``dask`` extra.
"""
from __future__ import annotations

import contextlib
import operator
import os
import re
import uuid
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from .buckets import from_ipc, merge_states, split_by_bucket, state_summary, to_ipc, write_part, zero_counters
from .columns import ColumnMap
from .errors import RfmxError
from .sources import SourceObject, plan_files, read_files

__all__ = ["aggregate", "score", "clv", "cluster_customers", "snapshots", "connect", "cluster", "plan_shares",
           "DatasetOutput", "DEFAULT_FAN_IN", "MARKER"]

#: partials merged by one task of the ordered merge tree
DEFAULT_FAN_IN = 8
#: the file that marks a folder as a dataset rfmx wrote (a complete one: it is written last)
MARKER = "_rfmx_dataset.json"
_MIN_SHARE_ROWS = 1 << 16
_MAX_SHARE_ROWS = 1 << 24


def _require_dask():
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise RfmxError("rfmx.dask needs Dask: pip install 'rfmx[dask]' (dask and distributed)") from None


# --- the cluster ------------------------------------------------------------------------------

def connect(client=None):
    """A ``distributed.Client`` for ``client``: a Client (as it is), ``"local:N"`` (a new
    ``LocalCluster`` of N single-threaded worker processes), a scheduler address
    (``tcp://host:8786``), or None (the current client, e.g. made by ``Client(...)`` earlier).
    Close a client made here with :func:`cluster` or ``client.close()``."""
    _require_dask()
    import distributed

    if isinstance(client, distributed.Client):
        return client
    if client is None:
        try:
            return distributed.get_client()
        except ValueError:
            raise RfmxError("no Dask client: pass client= (a distributed.Client, 'local:N' or a scheduler "
                            "address such as tcp://scheduler:8786)") from None
    spec = str(client)
    if spec.startswith("local:") or spec == "local":
        n = spec.partition(":")[2] or str(os.cpu_count() or 1)
        if not n.isdigit() or int(n) < 1:
            raise RfmxError(f"--dask {spec}: give local:N with N >= 1 worker processes")
        # One single-threaded kernel per worker process: the processes are the parallelism.
        # Numba's own threads stay at one (see _fold_share), and the workers' numeric
        # libraries are kept from starting a thread per core each.
        cluster = distributed.LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=40)
        return distributed.Client(cluster)
    try:
        return distributed.Client(spec, timeout=30)
    except OSError as exc:
        raise RfmxError(f"--dask {spec}: cannot reach the Dask scheduler: {exc}") from None


@contextlib.contextmanager
def cluster(spec):
    """``connect(spec)`` for a block; a client (and LocalCluster) made here is closed after it."""
    import distributed

    given = isinstance(spec, distributed.Client) if spec is not None else True
    client = connect(spec)
    try:
        yield client
    finally:
        if not given:
            local = client.cluster
            client.close()
            if local is not None:
                local.close()


def _n_workers(client) -> int:
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


# --- shares of the input --------------------------------------------------------------------

class _Share(SourceObject):
    """One task's share of the planned files: whole files, or runs of Parquet row groups.

    Rows keep their numbers in their file.  When a batch holds a null and nulls are errors,
    the share goes on to the end of that file: the error then counts that file's nulls from
    there on, as one machine reading the whole file does.
    """

    def __init__(self, files, nulls_are_errors: bool):
        self.files = files
        self.nulls_are_errors = nulls_are_errors
        self.label = files[0].path

    def batches(self, columns: ColumnMap, *, since_us=None, until_us=None, batch_size: int = 1 << 20,
                delimiter: str | None = None, customer_type: str = "auto"):
        def tail(f):
            if f is None or f.row_groups is None:
                return
            rest = tuple(range(max(f.row_groups) + 1, f.fragment.num_row_groups))
            if rest:
                yield from read_files([replace(f, row_groups=rest)], columns, since_us=since_us, until_us=until_us,
                                      batch_size=batch_size, delimiter=delimiter)

        by_path = {f.path: f for f in self.files}
        flagged = None
        names = columns.names()
        for where, row0, batch in read_files(self.files, columns, since_us=since_us, until_us=until_us,
                                             batch_size=batch_size, delimiter=delimiter):
            if flagged is not None and where != flagged.path:
                break
            yield where, row0, batch
            if (self.nulls_are_errors and flagged is None and batch.num_rows
                    and any(batch.column(n).null_count for n in names)):
                flagged = by_path.get(where)
        yield from tail(flagged)


class _FrameShare(SourceObject):
    """A Dask DataFrame partition (a pandas DataFrame) as a source named by its partition."""

    def __init__(self, frame, index: int):
        self.frame = frame
        self.label = f"<dask DataFrame partition {index}>"

    def batches(self, columns: ColumnMap, *, since_us=None, until_us=None, batch_size: int = 1 << 20,
                delimiter: str | None = None, customer_type: str = "auto"):
        from .sources import iter_batches

        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        for _, row0, batch in iter_batches(table, columns, batch_size=batch_size):
            yield self.label, row0, batch


def _parquet_row_groups(f) -> list[int]:
    try:
        return [rg.num_rows for rg in f.fragment.row_groups]
    except (pa.ArrowException, OSError) as exc:
        raise RfmxError(f"{f.path}: cannot read as Parquet: {str(exc).splitlines()[0]}") from None


def plan_shares(files, share_rows: int) -> list[list]:
    """The planned ``files`` cut into shares of about ``share_rows`` lines, in input order:
    runs of Parquet row groups (a share may end in one file and go on in the next), whole
    CSV and Arrow IPC files (their line counts are not known before they are read)."""
    shares, current, rows = [], [], 0

    def close():
        nonlocal current, rows
        if current:
            shares.append(current)
        current, rows = [], 0

    for f in files:
        if f.fmt != "parquet":
            close()
            shares.append([f])
            continue
        groups: list[int] = []
        for rg, n in enumerate(_parquet_row_groups(f)):
            groups.append(rg)
            rows += n
            if rows >= share_rows:
                current.append(replace(f, row_groups=tuple(groups)))
                groups = []
                close()
        if groups:
            current.append(replace(f, row_groups=tuple(groups)))
    close()
    if not shares and files:
        shares = [[files[0]]]  # no rows at all: one share still tells the id type
    return shares


def _share_rows(files, n_workers: int, share_rows: int | None) -> int:
    if share_rows is not None:
        if share_rows < 1:
            raise RfmxError(f"share_rows must be >= 1, got {share_rows}")
        return int(share_rows)
    total = sum(sum(_parquet_row_groups(f)) for f in files if f.fmt == "parquet")
    # As many shares as workers, or a multiple of it when shares would pass the largest
    # size: every worker gets the same number of lines, and there are few partials to merge.
    n_shares = -(-max(1, -(-total // _MAX_SHARE_ROWS)) // n_workers) * n_workers
    return int(max(_MIN_SHARE_ROWS, -(-total // n_shares)))


# --- the tasks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Settings:
    """What every fold task needs to make the same state one machine makes."""

    customer: str
    time: str
    amount: str
    order_id: str | None
    since_us: int | None
    until_us: int | None
    amount_scale: int
    on_null: str
    timezone: str
    round: str | None
    batch_size: int
    delimiter: str | None
    n_buckets: int
    period: str | None = None     # a BTYD state (purchase periods kept) collapsing purchases per period
    timeline: bool = False        # with period: a timeline state (a row per customer and period) instead
    week_start: str = "monday"

    def new_state(self):
        from .state import RFMState

        if self.timeline:
            from .history import TimelineState

            return TimelineState(self.customer, self.time, self.amount, self.order_id, period=self.period,
                                 week_start=self.week_start, since=self.since_us, until=self.until_us,
                                 amount_scale=self.amount_scale, on_null=self.on_null, threads=1,
                                 timezone=self.timezone)
        if self.period is not None:
            from .clv.summary import BTYDState

            return BTYDState(self.customer, self.time, self.amount, self.order_id, period=self.period,
                             since=self.since_us, until=self.until_us, amount_scale=self.amount_scale,
                             on_null=self.on_null, threads=1, timezone=self.timezone)
        return RFMState(self.customer, self.time, self.amount, self.order_id, since=self.since_us,
                        until=self.until_us, amount_scale=self.amount_scale, on_null=self.on_null, threads=1,
                        timezone=self.timezone)


def _fold(source: SourceObject, settings: _Settings) -> tuple:
    """Fold one share into a state; ``(summary, bucket 0, ..., bucket B-1)`` as Arrow IPC bytes."""
    from .api import build_state

    s = settings
    state = build_state(source, s.customer, s.time, s.amount, s.order_id, state=s.new_state(), on_null=s.on_null,
                        threads=1, batch_size=s.batch_size, delimiter=s.delimiter, timezone=s.timezone,
                        round=s.round)
    table = state.to_table()
    del state
    parts = split_by_bucket(zero_counters(table), s.n_buckets)
    return (to_ipc(state_summary(table)),) + tuple(to_ipc(p) for p in parts)


def _fold_share(files, settings: _Settings) -> tuple:
    return _fold(_Share(files, settings.on_null == "error"), settings)


def _fold_frame(frame, index: int, settings: _Settings) -> tuple:
    return _fold(_FrameShare(frame, index), settings)


def _merge_parts(*parts: bytes) -> bytes:
    """Partial states of one bucket (in input order) merged into one, as Arrow IPC bytes."""
    return to_ipc(merge_states([from_ipc(p) for p in parts], what="a bucket's partial state").to_table())


def _finalize_bucket(part: bytes, as_of_us, id_type: pa.DataType | None, time_zone: str | None, output) -> object:
    """Finalize one bucket as of ``as_of_us`` with the run's id type and time zone; write it
    as a Parquet part (``output``: ``(filesystem, path)``; returns the rows) or return it."""
    state = merge_states([from_ipc(part)], what="a bucket")
    if id_type is not None:
        state.id_type = id_type
    state.time_zone = time_zone
    table = state.finalize(as_of_us, consume=True)
    if output is None:
        return table
    return write_part(table, output)


def _to_pandas(table: pa.Table):
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)


# --- the run --------------------------------------------------------------------------------

@dataclass
class _Run:
    """A fold-and-merge run: one merged state per bucket on the workers, the summary here."""

    client: object
    buckets: list          # futures of Arrow IPC bytes, one per bucket
    summary: object        # RFMState without customers: counters, id type, time zone, latest line
    shares: int


def _ordered_tree(client, parts: list, fan_in: int, key: str) -> object:
    """One future of ``parts`` merged in their order, ``fan_in`` at a time."""
    level = 0
    while len(parts) > 1:
        parts = [client.submit(_merge_parts, *parts[i:i + fan_in], key=f"{key}-l{level}-{i // fan_in}")
                 for i in range(0, len(parts), fan_in)]
        level += 1
    return parts[0]


def _raise_first_error(futures) -> None:
    """Wait for ``futures`` (in input order) and raise the first one's error: the error one
    machine reading the input in that order would have raised."""
    import distributed

    if not futures:
        return
    with futures[0].client.as_current():
        distributed.wait(futures)
    for f in futures:
        if f.status == "error":
            raise f.exception()
        if f.status == "cancelled":
            raise RfmxError("the Dask run was cancelled (its client or scheduler went away)")


def _fold_and_merge(inputs, settings: _Settings, client, *, share_rows: int | None, fan_in: int) -> _Run:
    """Fold every share and merge each bucket's partials; ``inputs``: planned files or a Dask DataFrame."""
    token = uuid.uuid4().hex[:12]
    if _is_dask_frame(inputs):
        folds = [client.compute(_delayed_fold(part, i, settings)) for i, part in enumerate(inputs.to_delayed())]
    else:
        shares = plan_shares(inputs, _share_rows(inputs, _n_workers(client), share_rows))
        folds = [client.submit(_fold_share, share, settings, key=f"rfmx-fold-{token}-{i}")
                 for i, share in enumerate(shares)]
    B = settings.n_buckets
    pieces = [[client.submit(operator.getitem, f, 1 + b, key=f"rfmx-part-{token}-{i}-{b}") for b in range(B)]
              for i, f in enumerate(folds)]
    buckets = [_ordered_tree(client, [p[b] for p in pieces], fan_in, f"rfmx-merge-{token}-{b}") for b in range(B)]
    summaries = [client.submit(operator.getitem, f, 0, key=f"rfmx-summary-{token}-{i}") for i, f in enumerate(folds)]
    _raise_first_error(folds)
    summary = merge_states([from_ipc(b) for b in client.gather(summaries)], what="the input", threads=None)
    return _Run(client, buckets, summary, len(folds))


def _delayed_fold(part, index: int, settings: _Settings):
    import dask

    return dask.delayed(_fold_frame, pure=True)(part, index, settings)


def _is_dask_frame(obj) -> bool:
    t = type(obj)
    return t.__module__.split(".")[0] in ("dask", "dask_expr") and hasattr(obj, "to_delayed")


# --- outputs --------------------------------------------------------------------------------

class DatasetOutput:
    """A folder (local path or URI) that receives one Parquet part per bucket, whole or not at all.

    Parts are written by the workers into a hidden folder beside the target; when every
    part is there the client writes :data:`MARKER` (parts, rows, as-of) and moves the folder
    into place (a rename on local disks; on object stores, where a folder cannot be renamed,
    part by part, with the marker written last: a dataset without its marker is incomplete).
    An existing folder is replaced only if it is a dataset rfmx wrote (it has the marker).
    """

    def __init__(self, location):
        from pyarrow import fs as pafs

        text = os.fspath(location)
        self.location = text
        try:
            if "://" in text:
                self.filesystem, self.path = pafs.FileSystem.from_uri(text)
            else:
                self.filesystem, self.path = pafs.LocalFileSystem(), os.path.abspath(text)
        except (pa.ArrowException, OSError) as exc:
            raise RfmxError(f"{text}: cannot write there: {str(exc).splitlines()[0]}") from None
        self.path = self.path.rstrip("/")
        self.local = isinstance(self.filesystem, pafs.LocalFileSystem)
        parent, _, name = self.path.rpartition("/")
        self.staging = f"{parent}/.{name}.rfmx-{uuid.uuid4().hex[:12]}"

    def _check_source(self, item) -> None:
        if not isinstance(item, (str, os.PathLike)):
            return
        text = os.fspath(item)
        if "://" in text and not text.lower().startswith("file://"):
            return
        if text.lower().startswith("file://"):
            from urllib.parse import unquote, urlparse

            text = unquote(urlparse(text).path)
        magic = any(ch in text for ch in "*?[")
        if magic:  # the folder a glob lists
            text = re.split(r"[*?\[]", text, maxsplit=1)[0].rpartition("/")[0] or "."
        path = os.path.abspath(text)
        inside = os.path.commonpath([path, self.path]) == self.path         # an input in the output folder
        holds = (magic or os.path.isdir(path)) and os.path.commonpath([path, self.path]) == path
        if inside or holds:
            raise RfmxError(f"-o {self.location} would overwrite the input {item}; write it somewhere else")

    def check(self, sources=()) -> None:
        """Refuse, before any work, a target that is not an rfmx dataset, or that is (inside)
        one of the local ``sources`` or holds one."""
        from pyarrow import fs as pafs

        info = self.filesystem.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            raise RfmxError(f"{self.location}: is a file; a Dask run writes a Parquet dataset (a folder) there, or "
                            f"one file with single_file=True (--single-file)")
        if info.type == pafs.FileType.Directory:
            listed = self.filesystem.get_file_info(pafs.FileSelector(self.path))
            if listed and not any(e.base_name == MARKER for e in listed):
                raise RfmxError(f"{self.location}: folder exists and is not a dataset rfmx wrote (no {MARKER}); "
                                f"give a new or empty folder")
        if self.local:
            for item in sources:
                self._check_source(item)
        try:
            self.filesystem.create_dir(self.staging, recursive=True)
        except (pa.ArrowException, OSError) as exc:
            raise RfmxError(f"{self.location}: cannot write there: {str(exc).splitlines()[0]}") from None

    def part(self, b: int) -> tuple:
        """``(filesystem, path)`` of part ``b`` in the staging folder (for a worker)."""
        return self.filesystem, f"{self.staging}/part-{b:05d}.parquet"

    def commit(self, info: dict) -> None:
        import json

        from pyarrow import fs as pafs

        with self.filesystem.open_output_stream(f"{self.staging}/{MARKER}") as out:
            out.write(json.dumps(info, indent=1).encode())
        old = None
        if self.filesystem.get_file_info(self.path).type == pafs.FileType.Directory:
            old = self.staging + "-old"
            self.filesystem.move(self.path, old)
        if self.local:
            self.filesystem.move(self.staging, self.path)
        else:
            self.filesystem.create_dir(self.path, recursive=True)
            entries = self.filesystem.get_file_info(pafs.FileSelector(self.staging))
            for e in sorted(entries, key=lambda e: e.base_name == MARKER):  # the marker last
                self.filesystem.move(e.path, f"{self.path}/{e.base_name}")
            self.filesystem.delete_dir(self.staging)
        if old is not None:
            self.filesystem.delete_dir(old)

    def discard(self) -> None:
        with contextlib.suppress(pa.ArrowException, OSError):
            self.filesystem.delete_dir(self.staging)


def _finalize(run: _Run, as_of_us, output: DatasetOutput | None, key: str) -> list:
    s = run.summary
    return [run.client.submit(_finalize_bucket, part, as_of_us, s.id_type, s.time_zone,
                              output.part(b) if output is not None else None, key=f"{key}-{b}")
            for b, part in enumerate(run.buckets)]


def _result(run: _Run, tables: list, output, single_file: bool, info: dict) -> tuple:
    """Hand the finalized buckets over: written (dataset or one file) or as a Dask DataFrame;
    ``(result, customers)``."""
    client = run.client
    if single_file:
        from .outputs import CommandFiles
        from .sinks import TableStream, output_format

        _raise_first_error(tables)
        files = CommandFiles().write("output", output, table=True)
        customers = 0
        with files:
            stream = TableStream(files.staged("output"), output_format(output), where=output)
            schema = None
            for f in tables:  # one bucket at a time: the client holds one bucket, never all
                table = f.result()
                schema = table.schema
                stream.metadata = table.schema.metadata
                stream.write(table)
                customers += table.num_rows
                f.release()
            stream.close(schema)
        return None, customers
    if isinstance(output, DatasetOutput):
        _raise_first_error(tables)
        customers = int(sum(client.gather(tables)))
        output.commit(dict(info, parts=len(tables), rows=customers))
        return None, customers
    import dask.dataframe as dd

    frames = [client.submit(_to_pandas, t, key=f"{t.key}-pandas") for t in tables]
    _raise_first_error(frames)
    customers = int(sum(client.gather(client.map(_rows, tables))))
    meta = client.submit(_empty_like, frames[0]).result()
    return dd.from_delayed(frames, meta=meta, verify_meta=False), customers


def _empty_like(frame):
    return frame.iloc[:0]


def _rows(value) -> int:
    return int(value) if isinstance(value, (int, np.integer)) else value.num_rows


# --- the API --------------------------------------------------------------------------------

def _settings(customer, time, amount, order_id, *, as_of, since, amount_scale, on_null, timezone, round,
              batch_size, delimiter, n_buckets) -> tuple[_Settings, object]:
    from .columns import check_rounding
    from .state import RFMState

    if batch_size < 1:
        raise RfmxError(f"batch_size must be >= 1, got {batch_size}")
    if n_buckets < 1:
        raise RfmxError(f"buckets must be >= 1, got {n_buckets}")
    check_rounding(round)
    # The options are checked here, once, with one machine's messages; tasks get them resolved.
    proto = RFMState(customer, time, amount, order_id, since=since, until=as_of, amount_scale=amount_scale,
                     on_null=on_null, timezone=timezone)
    return _Settings(customer, time, amount, order_id, proto.since_us, proto.until_us, proto.amount_scale, on_null,
                     proto.timezone, round, batch_size, delimiter, int(n_buckets)), proto


def _check_run(fan_in: int, single_file: bool, output) -> None:
    if fan_in < 2:
        raise RfmxError(f"fan_in must be >= 2, got {fan_in}")
    if single_file and output is None:
        raise RfmxError("single_file=True needs output= (the file to write)")


@contextlib.contextmanager
def _folded(source, columns: ColumnMap, settings: _Settings, client, *, output, single_file: bool, share_rows,
            fan_in: int, delimiter, customer_type):
    """The front every distributed step shares: ``source`` planned, folded on ``client``'s
    workers and merged per bucket.  Yields ``(run, dataset)``: ``dataset`` is the Parquet
    dataset being written at ``output`` (a folder; None for a single file or no output),
    checked before anything is read and discarded on the way out unless committed."""
    dataset = None
    if output is not None and not single_file:
        dataset = DatasetOutput(output)
        dataset.check([] if _is_dask_frame(source) else source if isinstance(source, (list, tuple)) else [source])
    try:
        inputs = source if _is_dask_frame(source) else plan_files(source, columns, delimiter=delimiter,
                                                                   customer_type=customer_type)
        yield _fold_and_merge(inputs, settings, client, share_rows=share_rows, fan_in=fan_in), dataset
    finally:
        if dataset is not None:
            dataset.discard()


def _default_buckets(client) -> int:
    # A few buckets per worker keep each finalize small and even out the load; the result
    # does not depend on the number.
    return 4 * _n_workers(client)


def aggregate(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
              order_id: str | None = None, *, as_of=None, since=None, amount_scale: int = 2, on_null: str = "error",
              timezone: str | None = None, customer_type: str = "auto", round: str | None = None,
              batch_size: int = 1 << 20, delimiter: str | None = None, client=None, buckets: int | None = None,
              output=None, single_file: bool = False, share_rows: int | None = None, fan_in: int = DEFAULT_FAN_IN,
              report=None):
    """Per-customer RFM aggregates of ``source`` computed on a Dask cluster: the table of
    :func:`rfmx.aggregate`, customer for customer, bit for bit.

    ``source``: Parquet / Arrow IPC / CSV paths, directories, globs or URIs (``s3://``,
    ``gs://``, ``abfs://``, ``file://``; remote ones Parquet or Arrow IPC), a list of them,
    or a Dask DataFrame (each partition a share; errors name the partition and its row).
    The workers read the files themselves, so paths must be where the workers can read them.
    ``client``: see :func:`connect`.  ``buckets``: customer hash buckets (default 4 per
    worker).  ``output``: None returns a Dask DataFrame (one partition per bucket, kept on
    the workers); a folder path or URI gets a Parquet dataset (one part per bucket, written
    by the workers, whole or not at all: :class:`DatasetOutput`); with ``single_file=True``
    ``output`` is one file (.parquet, .csv, .arrow) written by the client bucket by bucket.
    ``share_rows``: lines per task (default: one share per worker, or a multiple of that
    number of shares when they would pass 16 M lines; Parquet row groups are not split);
    ``fan_in``: partials merged per merge task.  ``report``: a dict that receives the
    run's counters (rows read, skipped, customers).  Other options as :func:`rfmx.aggregate`.
    """
    _require_dask()
    _check_run(fan_in, single_file, output)
    client = connect(client)
    settings, _ = _settings(customer, time, amount, order_id, as_of=as_of, since=since, amount_scale=amount_scale,
                            on_null=on_null, timezone=timezone, round=round, batch_size=batch_size,
                            delimiter=delimiter, n_buckets=buckets or _default_buckets(client))
    with _folded(source, ColumnMap(customer, time, amount, order_id), settings, client, output=output,
                 single_file=single_file, share_rows=share_rows, fan_in=fan_in, delimiter=delimiter,
                 customer_type=customer_type) as (run, dataset):
        as_of_us = run.summary.resolve_as_of(None)
        tables = _finalize(run, as_of_us, dataset, f"rfmx-finalize-{uuid.uuid4().hex[:12]}")
        result, customers = _result(run, tables, dataset if dataset is not None else output, single_file,
                                    {"command": "aggregate", "as_of_us": as_of_us})
        if report is not None:
            report.update(_counters(run, customers))
        return result


def _counters(run: _Run, customers: int) -> dict:
    s = run.summary
    return {"rows_read": s.rows_read, "rows_null_skipped": s.rows_null_skipped,
            "rows_outside_window": s.rows_outside_window, "amounts_rounded": s.amounts_rounded,
            "customers": int(customers), "shares": run.shares, "buckets": len(run.buckets)}


def _write_scored(scored: pa.Table, metadata: bytes, output) -> object:
    """A scored bucket with the run's ``rfmx.scores`` metadata: written as a Parquet part
    (``output``: ``(filesystem, path)``; returns the rows) or returned."""
    meta = dict(scored.schema.metadata or {})
    meta[b"rfmx.scores"] = metadata
    table = scored.replace_schema_metadata(meta)
    if output is None:
        return table
    return write_part(table, output)


def score(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
          order_id: str | None = None, *, bins: int | None = None, ties: str = "keep", monetary: str = "total",
          cuts=None, segments="rfm-grid", weights=None, tiers=None, as_of=None, since=None, amount_scale: int = 2,
          on_null: str = "error", timezone: str | None = None, customer_type: str = "auto", round: str | None = None,
          batch_size: int = 1 << 20, delimiter: str | None = None, client=None, buckets: int | None = None,
          output=None, single_file: bool = False, share_rows: int | None = None, fan_in: int = DEFAULT_FAN_IN,
          report=None):
    """Per-customer aggregates, scores, RFM codes, value scores and tiers, segments and ABC
    classes of ``source`` computed on a Dask cluster: the table of :func:`rfmx.score`,
    customer for customer, bit for bit (schema metadata included).

    The customers are aggregated as by :func:`aggregate`; each bucket stays on its worker
    and the population-wide numbers a score depends on — every dimension's quantile edges,
    the customers per RFM code, the ABC revenue thresholds — are reduced exactly from
    per-bucket histograms (:mod:`rfmx.dask_scores`), then each bucket is scored where it
    lives.  ``ties="first"`` (ties broken by one machine's row order) and weights on raw
    columns (each customer's rank among all customers) are refused.  Scoring options as
    :func:`rfmx.score`; the others as :func:`aggregate`; ``report`` also receives the
    ``rfmx.scores`` metadata as ``scores``.
    """
    import json

    from .dask_scores import ScoreSpec, bucket_score, population
    from .segments import merge_coverage

    _require_dask()
    _check_run(fan_in, single_file, output)
    spec = ScoreSpec.resolve(bins=bins, ties=ties, monetary=monetary, cuts=cuts, segments=segments, weights=weights,
                             tiers=tiers)
    client = connect(client)
    settings, _ = _settings(customer, time, amount, order_id, as_of=as_of, since=since, amount_scale=amount_scale,
                            on_null=on_null, timezone=timezone, round=round, batch_size=batch_size,
                            delimiter=delimiter, n_buckets=buckets or _default_buckets(client))
    with _folded(source, ColumnMap(customer, time, amount, order_id), settings, client, output=output,
                 single_file=single_file, share_rows=share_rows, fan_in=fan_in, delimiter=delimiter,
                 customer_type=customer_type) as (run, dataset):
        as_of_us = run.summary.resolve_as_of(None)
        token = uuid.uuid4().hex[:12]
        tables = _finalize(run, as_of_us, None, f"rfmx-finalize-{token}")
        _raise_first_error(tables)
        pop = population(client, tables, spec, f"rfmx-population-{token}")
        scored = [client.submit(bucket_score, t, spec, pop, key=f"rfmx-score-{token}-{b}")
                  for b, t in enumerate(tables)]
        infos = client.gather([client.submit(operator.getitem, f, 1, key=f"rfmx-score-info-{token}-{b}")
                               for b, f in enumerate(scored)])
        # Every bucket carries the population's edges and counts; the coverage counted its own customers.
        info = dict(infos[0], segments=merge_coverage([i["segments"] for i in infos]))
        metadata = json.dumps(info).encode()
        final = [client.submit(_write_scored, client.submit(operator.getitem, f, 0, key=f"rfmx-scored-{token}-{b}"),
                               metadata, dataset.part(b) if dataset is not None else None,
                               key=f"rfmx-write-{token}-{b}") for b, f in enumerate(scored)]
        result, customers = _result(run, final, dataset if dataset is not None else output, single_file,
                                    {"command": "score", "as_of_us": as_of_us})
        if report is not None:
            report.update(_counters(run, customers), scores=info)
        return result


def clv(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
        order_id: str | None = None, *, model: str = "bgnbd", spend: bool = True, period: str = "day",
        unit: str | None = None, penalizer: float = 0.0, horizon: int = 12, horizon_unit: str = "month",
        discount: float = 0.01, as_of=None, since=None, amount_scale: int = 2, on_null: str = "error",
        timezone: str | None = None, customer_type: str = "auto", round: str | None = None,
        batch_size: int = 1 << 20, delimiter: str | None = None, client=None, buckets: int | None = None,
        output=None, single_file: bool = False, share_rows: int | None = None, fan_in: int = DEFAULT_FAN_IN,
        report=None):
    """BTYD summary and CLV per customer of ``source`` on a Dask cluster: the table of
    :func:`rfmx.clv.add_clv_columns` over :func:`rfmx.clv.summary`, with the models fitted on
    all customers, customer for customer and bit for bit (see :mod:`rfmx.dask_clv`).

    Each share folds into a BTYD state (purchase periods per customer), split and merged by
    customer bucket as :func:`aggregate` does; each bucket's summary stays on its worker.
    ``model``: ``"bgnbd"`` or ``"pareto"``, fitted once on the client from the buckets'
    ``(frequency, recency, T)`` pattern counts; with ``spend`` Gamma-Gamma is fitted on one
    worker from the repeat buyers' ``(frequency, monetary_value)``.  Predictions are made per
    bucket.  ``period``/``unit``/``penalizer``/``horizon``/``horizon_unit``/``discount`` as
    ``rfmx clv``; the others as :func:`aggregate`.  ``report`` also receives the fitted
    models (``model``, ``spend_model``) and the distinct ``patterns``.
    """
    from .clv.models import BGNBD, ParetoNBD
    from .clv.summary import BTYDState
    from .dask_clv import (bucket_clv, bucket_patterns, bucket_repeat_spend, bucket_summary, fit_spend,
                           fit_transactions, merge_patterns, summary_meta)

    _require_dask()
    _check_run(fan_in, single_file, output)
    models = {"bgnbd": BGNBD, "pareto": ParetoNBD}
    if model not in models:
        raise RfmxError(f"model must be one of {', '.join(models)}, got {model!r}")
    if not penalizer >= 0:
        raise RfmxError(f"penalizer must be >= 0, got {penalizer}")
    period = BTYDState(customer, time, amount, order_id, period=period).period  # checked and named once, here
    client = connect(client)
    settings, _ = _settings(customer, time, amount, order_id, as_of=as_of, since=since, amount_scale=amount_scale,
                            on_null=on_null, timezone=timezone, round=round, batch_size=batch_size,
                            delimiter=delimiter, n_buckets=buckets or _default_buckets(client))
    settings = replace(settings, period=period)
    with _folded(source, ColumnMap(customer, time, amount, order_id), settings, client, output=output,
                 single_file=single_file, share_rows=share_rows, fan_in=fan_in, delimiter=delimiter,
                 customer_type=customer_type) as (run, dataset):
        as_of_us = run.summary.resolve_as_of(None)
        if as_of_us is None:
            raise RfmxError("the BTYD summary needs orders (the input is empty) or an as_of date")
        token = uuid.uuid4().hex[:12]
        s = run.summary
        summaries = [client.submit(bucket_summary, part, as_of_us, s.id_type, s.time_zone, unit,
                                   key=f"rfmx-btyd-summary-{token}-{b}") for b, part in enumerate(run.buckets)]
        _raise_first_error(summaries)
        meta = client.gather(client.submit(summary_meta, summaries[0], key=f"rfmx-btyd-meta-{token}"))
        parts = [client.submit(bucket_patterns, f, key=f"rfmx-btyd-patterns-{token}-{b}")
                 for b, f in enumerate(summaries)]
        patterns = client.gather(client.submit(merge_patterns, *parts, key=f"rfmx-btyd-patterns-{token}"))
        fitted = fit_transactions(models[model], penalizer, patterns, meta)
        spend_model = None
        if spend:
            spends = [client.submit(bucket_repeat_spend, f, key=f"rfmx-btyd-spend-{token}-{b}")
                      for b, f in enumerate(summaries)]
            spend_model = client.gather(client.submit(fit_spend, penalizer, meta, *spends,
                                                      key=f"rfmx-btyd-gamma-gamma-{token}"))
        final = [client.submit(bucket_clv, f, fitted, spend_model, horizon, discount, horizon_unit,
                               dataset.part(b) if dataset is not None else None, key=f"rfmx-clv-{token}-{b}")
                 for b, f in enumerate(summaries)]
        result, customers = _result(run, final, dataset if dataset is not None else output, single_file,
                                    {"command": "clv", "as_of_us": as_of_us})
        if report is not None:
            report.update(_counters(run, customers), model=fitted, spend_model=spend_model,
                          patterns=len(patterns[0]))
        return result


def cluster_customers(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
                      order_id: str | None = None, *, k: int = 8, features=None, log=True, scaling: str = "zscore",
                      init="k-means++", max_iter: int = 300, tol: float = 1e-4, random_state=0,
                      name: str = "cluster", as_of=None, since=None, amount_scale: int = 2, on_null: str = "error",
                      timezone: str | None = None, customer_type: str = "auto", round: str | None = None,
                      batch_size: int = 1 << 20, delimiter: str | None = None, client=None,
                      buckets: int | None = None, output=None, single_file: bool = False,
                      share_rows: int | None = None, fan_in: int = DEFAULT_FAN_IN, report=None):
    """k-means clusters of the customers of ``source`` on a Dask cluster: the per-customer
    table of :func:`aggregate` with a ``cluster`` column, and the fitted
    :class:`~rfmx.cluster.CustomerClusters` in ``report["model"]`` (see :mod:`rfmx.dask_kmeans`).

    Lloyd iterations reduce per-bucket partial sums in bucket order (results do not depend
    on the number of workers); ``init``: ``"k-means++"`` (scikit-learn's draws from
    ``random_state``, over the customers bucket by bucket: not one machine's seeds) or an
    array (k, d) of initial centres in standardized feature space, e.g. those of a
    one-machine fit — given the same centres the labels equal one machine's and centres and
    inertia agree to rounding.  ``scaling``: ``"zscore"`` or ``"none"``.  Other options as
    :func:`rfmx.cluster.fit_clusters` and :func:`aggregate`.
    """
    from .cluster import DEFAULT_FEATURES, CustomerClusters, FeatureTransform, KMeans
    from .dask_kmeans import KMeansSpec, bucket_labels, bucket_moments, fit_transform, lloyd, seed_kmeans_plusplus

    _require_dask()
    _check_run(fan_in, single_file, output)
    spec = KMeansSpec(features or DEFAULT_FEATURES, log, scaling)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise RfmxError(f"k must be an int >= 1, got {k!r}")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1 or not tol >= 0:
        raise RfmxError(f"max_iter must be an int >= 1 and tol >= 0, got {max_iter!r} and {tol!r}")
    init_array = None
    if isinstance(init, str):
        if init != "k-means++":
            raise RfmxError(f"init must be 'k-means++' or an array of centres on Dask, got {init!r}")
    else:
        init_array = np.array(init, dtype=np.float64, order="C")
        if init_array.shape != (k, len(spec.transform.features)) or not np.isfinite(init_array).all():
            raise RfmxError(f"init centres must be finite, of shape ({k}, {len(spec.transform.features)}); "
                            f"got shape {init_array.shape}")
    client = connect(client)
    settings, _ = _settings(customer, time, amount, order_id, as_of=as_of, since=since, amount_scale=amount_scale,
                            on_null=on_null, timezone=timezone, round=round, batch_size=batch_size,
                            delimiter=delimiter, n_buckets=buckets or _default_buckets(client))
    with _folded(source, ColumnMap(customer, time, amount, order_id), settings, client, output=output,
                 single_file=single_file, share_rows=share_rows, fan_in=fan_in, delimiter=delimiter,
                 customer_type=customer_type) as (run, dataset):
        as_of_us = run.summary.resolve_as_of(None)
        token = uuid.uuid4().hex[:12]
        tables = _finalize(run, as_of_us, None, f"rfmx-finalize-{token}")
        _raise_first_error(tables)
        n = fit_transform(client, tables, spec, f"rfmx-kmeans-transform-{token}")
        if k > n:
            raise RfmxError(f"k={k} clusters but only {n:,} customers to cluster")
        sums = client.gather([client.submit(bucket_moments, t, spec, None, key=f"rfmx-kmeans-tol-{token}-{b}")
                              for b, t in enumerate(tables)])
        mean = np.sum([s[1] for s in sums], axis=0) / n
        squares = client.gather([client.submit(bucket_moments, t, spec, mean, key=f"rfmx-kmeans-var-{token}-{b}")
                                 for b, t in enumerate(tables)])
        tol_abs = float(np.mean(np.sum([s[1] for s in squares], axis=0) / n) * tol) if tol else 0.0
        if init_array is None:
            init_array = seed_kmeans_plusplus(client, tables, spec, int(k), random_state, [s[0] for s in sums],
                                              f"rfmx-kmeans-seed-{token}")
        centres, n_iter = lloyd(client, tables, spec, np.array(init_array, dtype=np.float64), int(max_iter), tol_abs,
                                f"rfmx-kmeans-lloyd-{token}")
        labelled = [client.submit(bucket_labels, t, spec, centres, name,
                                  dataset.part(b) if dataset is not None else None,
                                  key=f"rfmx-kmeans-labels-{token}-{b}") for b, t in enumerate(tables)]
        inertia = sum(client.gather([client.submit(operator.getitem, f, 1, key=f"rfmx-kmeans-inertia-{token}-{b}")
                                     for b, f in enumerate(labelled)]))
        final = [client.submit(operator.getitem, f, 0, key=f"rfmx-kmeans-out-{token}-{b}")
                 for b, f in enumerate(labelled)]
        result, customers = _result(run, final, dataset if dataset is not None else output, single_file,
                                    {"command": "cluster", "as_of_us": as_of_us})
        est = KMeans(int(k), init=init if isinstance(init, str) else np.asarray(init_array), max_iter=max_iter,
                     tol=tol, random_state=random_state if not isinstance(random_state, np.random.RandomState)
                     else None)
        est.cluster_centers_, est.inertia_, est.n_iter_ = centres, float(inertia), int(n_iter)
        est.n_features_in_ = len(spec.transform.features)
        model = CustomerClusters(FeatureTransform.from_dict(spec.fitted), est)
        if report is not None:
            report.update(_counters(run, customers), model=model, initial_centres=np.asarray(init_array))
        return result


def _bucket_timeline(part: bytes, id_type, time_zone):
    state = merge_states([from_ipc(part)], what="a bucket")
    if id_type is not None:
        state.id_type = id_type
    state.time_zone = time_zone
    return state


def _bucket_boundaries(part: bytes, id_type, time_zone) -> list:
    """The default snapshot boundaries of one bucket (microseconds): its first period with
    lines + 1 to the one after its latest line."""
    from .state import to_us

    return [to_us(b) for b in _bucket_timeline(part, id_type, time_zone).boundaries()]


def _bucket_snapshots(part: bytes, id_type, time_zone, as_of_us: list, output) -> object:
    """One bucket's snapshots as of each of ``as_of_us``, as one long table with an ``as_of``
    column (a Parquet row group per snapshot, written to ``output``; returns the rows) or returned."""
    from .pipeline import with_as_of

    state = _bucket_timeline(part, id_type, time_zone)
    tables = [with_as_of(t, a, state.timezone) for a, t in state.snapshots(as_of_us)]
    if output is None:
        return pa.concat_tables(tables)
    import pyarrow.parquet as pq

    filesystem, path = output
    try:
        with pq.ParquetWriter(path, tables[0].schema, filesystem=filesystem) as writer:
            for t in tables:
                writer.write_table(t)
    except (pa.ArrowException, OSError) as exc:
        raise RfmxError(f"{path}: cannot write parquet: {str(exc).splitlines()[0]}") from None
    return sum(t.num_rows for t in tables)


def _bucket_snapshot(part: bytes, id_type, time_zone, as_of_us: int) -> pa.Table:
    """One bucket's snapshot as of ``as_of_us`` (a period boundary)."""
    state = _bucket_timeline(part, id_type, time_zone)
    return next(iter(state.snapshots([as_of_us])))[1]


def _write_scored_snapshot(scored: pa.Table, metadata: bytes, as_of_us: int, timezone: str, output) -> object:
    from .pipeline import with_as_of

    return _write_scored(with_as_of(scored, as_of_us, timezone), metadata, output)


def snapshots(source, customer: str = "customer_id", time: str = "order_time", amount: str = "amount",
              order_id: str | None = None, *, every: str = "month", week_start: str = "monday", as_of_dates=None,
              start=None, end=None, scores: bool = False, bins: int | None = None, ties: str = "keep",
              monetary: str = "total", cuts=None, segments="rfm-grid", weights=None, tiers=None, as_of=None,
              since=None, amount_scale: int = 2, on_null: str = "error",
              timezone: str | None = None, customer_type: str = "auto", round: str | None = None,
              batch_size: int = 1 << 20, delimiter: str | None = None, client=None, buckets: int | None = None,
              output=None, single_file: bool = False, share_rows: int | None = None, fan_in: int = DEFAULT_FAN_IN,
              report=None):
    """The per-customer RFM table as of each period boundary, computed on a Dask cluster: one
    long table (``as_of`` first), each snapshot equal to ``rfmx.aggregate(source, as_of=boundary)``
    customer for customer (:meth:`rfmx.history.TimelineState.snapshots` on one machine).

    Each share folds into a timeline state (a row per customer and ``every`` period), split
    and merged by customer bucket as :func:`aggregate` does; the boundaries — ``as_of_dates``,
    or every period boundary from ``start`` to ``end`` (default: from the second period with
    lines to the one after the latest line, over all buckets) — are fixed on the client, and
    each bucket writes its snapshots, in ``as_of`` order, as one part (a row group per
    snapshot).  With ``scores=True`` each snapshot is scored as :func:`score` scores (its own
    quantile edges, code counts and ABC thresholds, reduced over its buckets): what
    ``rfmx timeline`` writes per snapshot; each (snapshot, bucket) is then one part, snapshot
    after snapshot.  Scoring options as :func:`score`; the others as :func:`aggregate`;
    ``report`` also receives the ``boundaries``.
    """
    from .history import TimelineState
    from .state import to_us

    _require_dask()
    _check_run(fan_in, single_file, output)
    client = connect(client)
    settings, _ = _settings(customer, time, amount, order_id, as_of=as_of, since=since, amount_scale=amount_scale,
                            on_null=on_null, timezone=timezone, round=round, batch_size=batch_size,
                            delimiter=delimiter, n_buckets=buckets or _default_buckets(client))
    probe = TimelineState(customer, time, amount, order_id, period=every, week_start=week_start)  # checks both
    spec = None
    if scores:
        from .dask_scores import ScoreSpec

        spec = ScoreSpec.resolve(bins=bins, ties=ties, monetary=monetary, cuts=cuts, segments=segments,
                                 weights=weights, tiers=tiers)
    settings = replace(settings, period=probe.period, timeline=True, week_start=probe.week_start)
    with _folded(source, ColumnMap(customer, time, amount, order_id), settings, client, output=output,
                 single_file=single_file, share_rows=share_rows, fan_in=fan_in, delimiter=delimiter,
                 customer_type=customer_type) as (run, dataset):
        s = run.summary
        token = uuid.uuid4().hex[:12]
        if as_of_dates is None:
            found = [b for b in client.gather([client.submit(_bucket_boundaries, part, s.id_type, s.time_zone,
                                                             key=f"rfmx-boundaries-{token}-{b}")
                                               for b, part in enumerate(run.buckets)]) if b]
            first = to_us(start, s.timezone) if start is not None else min((b[0] for b in found), default=None)
            last = to_us(end, s.timezone) if end is not None else max((b[-1] for b in found), default=None)
            wanted = [] if first is None or last is None else [to_us(b) for b in s.boundaries(first, last)]
        else:
            wanted = sorted({to_us(d, s.timezone) for d in
                             ([as_of_dates] if isinstance(as_of_dates, (str, int)) else as_of_dates)})
        if not wanted:
            raise RfmxError("no snapshot to make: no period boundary between the first line and the last "
                            "(give as_of_dates, start or end)")
        if spec is None:
            final = [client.submit(_bucket_snapshots, part, s.id_type, s.time_zone, wanted,
                                   dataset.part(b) if dataset is not None else None, key=f"rfmx-snapshots-{token}-{b}")
                     for b, part in enumerate(run.buckets)]
        else:
            final = _scored_snapshots(run, spec, wanted, dataset, token)
        result, customers = _result(run, final, dataset if dataset is not None else output, single_file,
                                    {"command": "snapshots", "as_of_us": wanted})
        if report is not None:
            report.update(_counters(run, customers), boundaries=wanted)
            report["rows"] = report.pop("customers")
        return result


def _scored_snapshots(run: _Run, spec, wanted: list, dataset, token: str) -> list:
    """Every snapshot scored over its buckets (one snapshot's buckets on the workers at a
    time); futures of the parts, snapshot after snapshot, bucket after bucket."""
    import json

    from .dask_scores import bucket_score, population
    from .segments import merge_coverage

    client, s, B = run.client, run.summary, len(run.buckets)
    final = []
    for j, as_of_us in enumerate(wanted):
        key = f"rfmx-snapshot-{token}-{j}"
        tables = [client.submit(_bucket_snapshot, part, s.id_type, s.time_zone, as_of_us, key=f"{key}-{b}")
                  for b, part in enumerate(run.buckets)]
        _raise_first_error(tables)
        pop = population(client, tables, spec, f"{key}-population")
        scored = [client.submit(bucket_score, t, spec, pop, key=f"{key}-score-{b}") for b, t in enumerate(tables)]
        infos = client.gather([client.submit(operator.getitem, f, 1, key=f"{key}-info-{b}")
                               for b, f in enumerate(scored)])
        metadata = json.dumps(dict(infos[0], segments=merge_coverage([i["segments"] for i in infos]))).encode()
        final += [client.submit(_write_scored_snapshot, client.submit(operator.getitem, f, 0, key=f"{key}-scored-{b}"),
                                metadata, as_of_us, s.timezone,
                                dataset.part(j * B + b) if dataset is not None else None, key=f"{key}-write-{b}")
                  for b, f in enumerate(scored)]
        _raise_first_error(final[-B:])  # written (or held) before the next snapshot's buckets are made
    return final
