"""The report: every figure rfmx can draw from the tables given, in one self-contained HTML file.

>>> import rfmx
>>> rfmx.write_report("report.html", scores="scores.parquet", timeline="snapshots.parquet",
...                   clusters="clusters.parquet", clv="clv.parquet")

Inputs are the outputs of other rfmx commands — a scored per-customer table (``rfmx
score -o``), timeline snapshots, a migration and a cohort table (``rfmx timeline -o,
--migration-out, --cohorts-out``), clusters and a k table (``rfmx cluster -o, --k-table``),
a CLV and a calibration table (``rfmx clv -o, --calibration-out``) and an alerts table —
as paths or ``pyarrow.Table`` s.  A file that is not the rfmx table it is given as (missing
the columns that make it one, columns of other types, metadata of another version) is a
one-line :class:`~rfmx.errors.RfmxError`; a table that lacks only the columns of one
figure gives the report without that figure and a note saying why.

The page plots aggregates (:mod:`rfmx.figures`), never one point per customer, so its size
does not grow with customers: the Vega, Vega-Lite and Vega-Embed scripts (about 0.9 MB,
inline, from vl-convert, cached in the user's cache folder after the first report) plus a
few kB per figure.  It needs no network and no server.
"""
from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .errors import RfmxError
from .figures import MissingColumns

__all__ = ["build_report", "write_report", "read_input", "check_extra", "Report", "Figure", "INPUTS", "FIGURES",
           "javascript_bundle"]


def check_extra() -> None:
    """A one-line :class:`~rfmx.errors.RfmxError` unless the report extra (Altair and
    vl-convert) is installed; nothing is imported."""
    from importlib.util import find_spec

    missing = [name for name in ("altair", "vl_convert") if find_spec(name) is None]
    if missing:
        raise RfmxError(f"reports and figures need the report extra ({', '.join(missing)} not installed): "
                        f"pip install 'rfmx[report]'")


# --- inputs ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Input:
    """One kind of input table: what identifies it, and what the report reads of it."""

    option: str         # the rfmx report option that takes it
    what: str           # what it is, for messages
    made_by: str        # the rfmx command that writes it
    required: tuple     # columns every such rfmx table has: one missing means it is not one
    read: tuple | None  # the columns the report reads when present (None: all)
    numeric: tuple = ()  # columns that must be numbers when present
    labels: tuple = ()   # columns that must be text when present


_SCORE_NUMBERS = ("recency_days", "n_orders", "monetary_total", "monetary_minor", "r_score", "f_score", "m_score",
                  "cluster", "probability_alive", "expected_purchases", "expected_spend", "clv")
INPUTS = {
    "scores": Input("--scores", "scored per-customer table", "rfmx score -o",
                    ("recency_days", "n_orders", "monetary_total"),
                    ("recency_days", "n_orders", "monetary_total", "monetary_minor", "r_score", "f_score", "segment",
                     "abc_class", "cluster", "probability_alive", "expected_purchases", "clv"),
                    _SCORE_NUMBERS, ("segment", "abc_class")),
    "timeline": Input("--timeline", "timeline of scored snapshots", "rfmx timeline -o",
                      ("as_of", "customer_id", "segment"), None, ("monetary_total", "monetary_minor"),
                      ("segment", "lifecycle")),
    "migration": Input("--migration", "segment migration table", "rfmx timeline --migration-out",
                       ("from_segment", "to_segment", "customers", "revenue"), None, ("customers", "revenue"),
                       ("from_segment", "to_segment")),
    "cohorts": Input("--cohorts", "cohort table", "rfmx timeline --cohorts-out",
                     ("cohort", "period_start", "period_index", "customers_in_cohort", "active_customers",
                      "retention"), None,
                     ("period_index", "customers_in_cohort", "active_customers", "retention", "revenue",
                      "cumulative_revenue_per_customer")),
    "clusters": Input("--clusters", "clustered per-customer table", "rfmx cluster -o",
                      ("cluster", "recency_days", "n_orders"),
                      ("cluster", "recency_days", "n_orders", "monetary_total", "monetary_minor", "subsegment"),
                      ("cluster", "recency_days", "n_orders", "monetary_total", "monetary_minor"), ("subsegment",)),
    "k_table": Input("--k-table", "k comparison table", "rfmx cluster --k-range ... --k-table",
                     ("k", "inertia", "silhouette"), None, ("k", "inertia", "variance_explained", "silhouette")),
    "clv": Input("--clv", "CLV table", "rfmx clv -o", ("probability_alive", "expected_purchases"),
                 ("frequency", "recency", "frequency_cal", "recency_cal", "probability_alive", "expected_purchases",
                  "expected_spend", "clv"),
                 ("frequency", "recency", "frequency_cal", "recency_cal", "probability_alive", "expected_purchases",
                  "expected_spend", "clv")),
    "calibration": Input("--calibration", "calibration vs holdout table", "rfmx clv --calibration-out",
                         ("bucket", "n_customers", "actual", "predicted"), None,
                         ("n_customers", "actual", "predicted")),
    "alerts": Input("--alerts", "alerts table", "rfmx alerts -o",
                    ("customer_id", "value_at_stake"), None, ("value_at_stake",)),
}


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _check(kind: str, schema: pa.Schema, where: str) -> None:
    """Refuse a table that is not the rfmx table ``kind``: one line naming what is wrong."""
    spec = INPUTS[kind]
    names = set(schema.names)
    missing = [c for c in spec.required if c not in names]
    if missing:
        looks = [k for k, other in INPUTS.items() if k != kind and all(c in names for c in other.required)]
        hint = (f"; it looks like a {INPUTS[looks[0]].what} ({INPUTS[looks[0]].made_by}): give it with "
                f"{INPUTS[looks[0]].option}") if looks else ""
        raise RfmxError(f"{where}: not a {spec.what} made by rfmx ({spec.made_by}): no column"
                        f"{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)}{hint}")
    for name in spec.numeric:
        if name in names and not _is_number(schema.field(name).type):
            raise RfmxError(f"{where}: column '{name}' has type {schema.field(name).type}, but rfmx writes numbers "
                            f"there: a table of another rfmx version, or not made by rfmx")
    for name in spec.labels:
        if name in names and not _is_text(schema.field(name).type):
            raise RfmxError(f"{where}: column '{name}' has type {schema.field(name).type}, but rfmx writes text "
                            f"there: a table of another rfmx version, or not made by rfmx")
    raw = (schema.metadata or {}).get(b"rfmx.scores")
    if raw is not None:
        try:
            info = json.loads(raw)
            int(info["bins"])
        except (ValueError, KeyError, TypeError):
            raise RfmxError(f"{where}: its rfmx.scores metadata is not what this rfmx version writes; "
                            f"score it again (rfmx score)") from None


def _format(path: Path, where=None) -> str:
    from .sinks import FORMATS

    fmt = FORMATS.get(path.suffix.lower())
    if fmt not in ("parquet", "ipc", "csv"):
        raise RfmxError(f"{where or path}: unknown table format '{path.suffix}'; use .parquet, .arrow/.feather "
                        f"or .csv")
    return fmt


def _read_error(where, exc) -> RfmxError:
    if isinstance(exc, FileNotFoundError):
        return RfmxError(f"{where}: file not found")
    return RfmxError(f"{where}: cannot read: {(str(exc).splitlines() or [type(exc).__name__])[0]}")


def _schema(path: Path, where: str) -> pa.Schema:
    """A table file's schema, without reading its rows (CSV: its header and first block)."""
    fmt = _format(path, where)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(path)
        if fmt == "ipc":
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).schema
        import pyarrow.csv as pcsv

        with pcsv.open_csv(path) as reader:
            return reader.schema
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise _read_error(where, exc) from None


def _read_columns(path: Path, columns, where: str) -> pa.Table:
    fmt = _format(path, where)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            # One contiguous chunk per column (the figures read columns as NumPy without a
            # copy), and no pyarrow.dataset layer (which imports pandas).
            return pq.ParquetFile(path).read(columns=columns)
        if fmt == "ipc":
            import pyarrow.feather as feather

            return feather.read_table(path, columns=columns)
        import pyarrow.csv as pcsv

        opts = pcsv.ConvertOptions(include_columns=columns) if columns is not None else None
        return pcsv.read_csv(path, convert_options=opts)
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise _read_error(where, exc) from None


def _where(kind: str, source) -> str:
    return f"{INPUTS[kind].option} {source}" if not isinstance(source, pa.Table) else f"the {INPUTS[kind].what}"


def read_input(kind: str, source, *, columns=None) -> pa.Table:
    """The ``kind`` table (a key of :data:`INPUTS`) from ``source``, a path or a
    ``pyarrow.Table``, checked to be that rfmx table; only the columns the report reads
    (or ``columns``) are read from a file."""
    if kind not in INPUTS:
        raise RfmxError(f"unknown input {kind!r}; one of {', '.join(INPUTS)}")
    where = _where(kind, source)
    if isinstance(source, pa.Table):
        _check(kind, source.schema, where)
        return source
    path = Path(os.fspath(source))
    schema = _schema(path, where)
    _check(kind, schema, where)
    wanted = columns if columns is not None else INPUTS[kind].read
    if wanted is not None:
        wanted = [c for c in dict.fromkeys(wanted) if c in schema.names]
        exact = "monetary_minor" in wanted and b"rfmx.amount_scale" in (schema.metadata or {})
        if kind == "scores" and exact and "cluster" not in wanted:
            wanted.remove("monetary_total")  # money is read exact from monetary_minor (the snake plot needs it)
    return _read_columns(path, wanted, where)


# --- the timeline, streamed ---------------------------------------------------------------------

class _Timeline:
    """Timeline snapshots from a file (read row group by row group, never whole) or a table."""

    def __init__(self, source):
        self.source = source
        self.where = _where("timeline", source)
        if isinstance(source, pa.Table):
            self.schema = source.schema
        else:
            self.path = Path(os.fspath(source))
            self.schema = _schema(self.path, self.where)
        _check("timeline", self.schema, self.where)
        self.parquet = not isinstance(source, pa.Table) and _format(self.path) == "parquet"

    def pieces(self, columns):
        """The snapshots' ``columns`` as a sequence of tables."""
        if isinstance(self.source, pa.Table):
            yield self.source.select(columns)
            return
        if not self.parquet:
            yield _read_columns(self.path, list(columns), self.where)
            return
        import pyarrow.parquet as pq

        labels = [c for c in columns if c in ("segment", "lifecycle")]
        try:
            reader = pq.ParquetFile(self.path, read_dictionary=labels)
            for batch in reader.iter_batches(batch_size=1 << 20, columns=list(columns)):
                yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as exc:
            raise _read_error(self.where, exc) from None

    def last_two(self, stamps: list) -> list[pa.Table]:
        """The last two snapshots (customer id, segment, money), each with its ``rfmx.as_of``."""
        wanted = [c for c in ("as_of", "customer_id", "segment", "monetary_minor", "monetary_total")
                  if c in self.schema.names]
        import pyarrow.compute as pc

        if self.parquet:
            import pyarrow.parquet as pq

            try:  # the row groups of other snapshots are skipped by their as_of statistics
                table = pq.read_table(self.path, columns=wanted, filters=[("as_of", "in", stamps)])
            except (pa.ArrowInvalid, OSError) as exc:
                raise _read_error(self.where, exc) from None
        else:
            table = pa.concat_tables(self.pieces(wanted))
            table = table.filter(pc.is_in(table.column("as_of"), value_set=pa.array(stamps,
                                                                                       table.schema.field("as_of").type)))
        out = []
        for stamp in stamps:
            snap = table.filter(pc.equal(table.column("as_of"), pa.scalar(stamp, table.schema.field("as_of").type)))
            snap = snap.drop_columns(["as_of"])
            out.append(snap.replace_schema_metadata({"rfmx.as_of": stamp.isoformat()}))
        return out

    def stamps(self) -> list:
        """Every snapshot's as_of, in time order."""
        import pyarrow.compute as pc

        found = set()
        for piece in self.pieces(["as_of"]):
            found.update(pc.unique(piece.column("as_of")).to_pylist())
        return sorted(v for v in found if v is not None)


# --- figures --------------------------------------------------------------------------------------

#: Every figure of the report, in page order: (key, section, title).
FIGURES = (
    ("lorenz", "value", "Revenue concentration (Lorenz curve)"),
    ("rf_heatmap", "segments", "Recency x frequency heatmap"),
    ("segments", "segments", "Segments: customers and revenue"),
    ("migration", "time", "Segment migration"),
    ("segment_sizes", "time", "Segment sizes over time"),
    ("lifecycle_sizes", "time", "Lifecycle sizes over time"),
    ("cohort_retention", "time", "Cohort retention"),
    ("alerts", "time", "Alerts"),
    ("cluster_snake", "clusters", "Cluster profiles (snake plot)"),
    ("cluster_sizes", "clusters", "Cluster sizes"),
    ("k_curve", "clusters", "Choosing k: elbow and silhouette"),
    ("dendrogram", "clusters", "Ward tree (dendrogram)"),
    ("clv_probability_alive", "clv", "Frequency x recency: P(alive)"),
    ("clv_expected_purchases", "clv", "Frequency x recency: expected purchases"),
    ("calibration", "clv", "Calibration vs holdout"),
    ("value_distribution", "clv", "Distribution of predicted value"),
)
_TITLES = {key: title for key, _, title in FIGURES}
_SECTION = {key: section for key, section, _ in FIGURES}
SECTIONS = {"value": "Value at a glance", "segments": "Scores and segments", "time": "Over time",
            "clusters": "Clusters", "clv": "Lifetime value"}


@dataclass
class Figure:
    """One drawn figure: ``key`` (its file name in ``--figures``), ``section`` and the Altair ``chart``."""

    key: str
    section: str
    chart: object
    _spec: dict | None = field(default=None, repr=False)

    @property
    def spec(self) -> dict:
        """The Vega-Lite specification (computed once)."""
        if self._spec is None:
            self._spec = self.chart.to_dict(validate=False)
        return self._spec

    def svg(self) -> str:
        import vl_convert as vlc

        from .plot import vegalite_version

        return vlc.vegalite_to_svg(self.spec, vl_version=vegalite_version())

    def png(self, scale: float = 2) -> bytes:
        import vl_convert as vlc

        from .plot import vegalite_version

        return vlc.vegalite_to_png(self.spec, vl_version=vegalite_version(), scale=scale)


@dataclass
class Report:
    """A built report: the ``figures`` drawn, ``notes`` on those left out, the headline
    numbers and segment table (when there are scores) and the ``inputs`` it was made from."""

    title: str
    figures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    headline: dict | None = None
    segments: pa.Table | None = None
    inputs: list = field(default_factory=list)

    def html(self) -> str:
        """The page: one self-contained HTML document (scripts inline, no network)."""
        return _page(self)

    def write(self, path) -> int:
        """Write the page to ``path`` atomically; returns its size in bytes."""
        from .sinks import atomic_path

        text = self.html()
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        return len(text.encode("utf-8"))

    def write_figures(self, folder) -> list[Path]:
        """Write every figure as ``KEY.svg`` and ``KEY.png`` into ``folder`` (made if missing)."""
        from .sinks import atomic_path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for fig in self.figures:
            for suffix, data in ((".svg", fig.svg().encode("utf-8")), (".png", fig.png())):
                path = folder / f"{fig.key}{suffix}"
                with atomic_path(path) as tmp:
                    Path(tmp).write_bytes(data)
                written.append(path)
        return written


def _segment_order(scores: pa.Table | None):
    """The segment map's order (best first) from a scored table's segment dictionary."""
    if scores is None or "segment" not in scores.column_names:
        return None
    col = scores.column("segment")
    if pa.types.is_dictionary(col.type) and col.num_chunks:
        return [str(s) for s in col.chunk(0).dictionary.to_pylist()]
    return None


def build_report(*, scores=None, timeline=None, migration=None, cohorts=None, clusters=None, k_table=None,
                 dendrogram=None, clv=None, calibration=None, alerts=None, title: str | None = None,
                 threads: int | None = None) -> Report:
    """Every figure the inputs allow (paths or ``pyarrow.Table`` s; see the module docstring).

    A scored table that also has a ``cluster`` column or CLV columns (``rfmx score
    --clusters/--clv``) gives the cluster or CLV figures when ``clusters``/``clv`` are not
    given.  Timeline snapshots give the segment sizes over time (and lifecycle sizes when
    they have a ``lifecycle`` column) and, without ``migration``, the migration between
    their last two snapshots.  ``dendrogram``: a Ward tree (``rfmx cluster
    --dendrogram-out``, a JSON path or its dict).  Raises :class:`~rfmx.errors.RfmxError` for an input that is
    not the rfmx table it is given as; a figure whose columns are missing is left out with
    a note in :attr:`Report.notes`.  ``threads``: figures computed at once (default 2; the
    kernels they call are serial and release the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    check_extra()
    given = dict(scores=scores, timeline=timeline, migration=migration, cohorts=cohorts, clusters=clusters,
                 k_table=k_table, dendrogram=dendrogram, clv=clv, calibration=calibration, alerts=alerts)
    if all(v is None for v in given.values()):
        raise RfmxError("nothing to report: give scores and/or the tables of timeline, cluster or clv")
    if threads is not None and threads < 1:
        raise RfmxError(f"threads must be >= 1, got {threads}")
    with ThreadPoolExecutor(max_workers=threads or 2) as pool:
        # Importing Altair and loading the kernels takes most of a second: done while the
        # inputs are read (Arrow's readers release the GIL).
        warm = pool.submit(_warm_up, scores)
        # Every input is checked before any figure is drawn, so a wrong file fails at once.
        tables = {k: read_input(k, v) for k, v in given.items()
                  if v is not None and k not in ("timeline", "dendrogram")}
        if dendrogram is not None:
            from .hierarchy import read_dendrogram

            read_dendrogram(dendrogram)  # checked with the tables, before any figure is drawn
            tables["dendrogram"] = dendrogram
        tl = _Timeline(timeline) if timeline is not None else None
        warm.result()
        report = Report(title=title or "Customer value report")
        report.inputs = [(INPUTS[k].what if k in INPUTS else "Ward tree (dendrogram)",
                          v if not isinstance(v, (pa.Table, dict)) else "(table)")
                         for k, v in given.items() if v is not None]
        jobs = [(key, pool.submit(make)) for key, make in _figure_jobs(tables, tl, report)]
        for key, job in jobs:
            try:
                chart = job.result()
            except MissingColumns as exc:
                report.notes.append(f"{_TITLES[key]} left out: {exc.reason}")
                continue
            if chart is not None:
                report.figures.append(Figure(key, _SECTION[key], chart))
    rank = {key: i for i, (key, _, _) in enumerate(FIGURES)}
    report.figures.sort(key=lambda f: rank[f.key])
    return report


def _warm_up(scores) -> None:
    """Import Altair, and load the kernels the score figures call by drawing the figures of
    the first rows of a scores file (the same column types: the same compiled kernels)."""
    import importlib

    from . import figures as fig_data

    importlib.import_module(".plot", __package__)  # imports Altair
    if scores is None or isinstance(scores, pa.Table):
        return
    try:
        path = Path(os.fspath(scores))
        if _format(path) != "parquet":
            return
        import pyarrow.parquet as pq

        reader = pq.ParquetFile(path)
        wanted = [c for c in INPUTS["scores"].read if c in reader.schema_arrow.names]
        first = next(reader.iter_batches(batch_size=256, columns=wanted), None)
        if first is None:
            return
        head = pa.Table.from_batches([first]).replace_schema_metadata(reader.schema_arrow.metadata)
        _check("scores", head.schema, "")
        from .concentration import SUMMARY_KEY

        makes = [fig_data.headline, fig_data.rf_grid]
        if SUMMARY_KEY not in (head.schema.metadata or {}):
            makes.append(fig_data.segments)  # else the summary is read back: its kernels are not needed
        for make in makes:
            make(head)
    except (RfmxError, pa.ArrowException, OSError):
        pass  # the real run reports what is wrong


def _figure_jobs(tables: dict, tl, report: Report):
    """``(key, make)`` for every figure the inputs allow; ``make()`` returns the chart, or
    None when it added a note instead, and may raise :class:`MissingColumns`."""
    from . import figures as fig_data
    from . import plot

    scored = tables.get("scores")
    if scored is not None and "clusters" not in tables and "cluster" in scored.column_names:
        tables["clusters"] = scored
    if scored is not None and "clv" not in tables and "probability_alive" in scored.column_names:
        tables["clv"] = scored
    order = _segment_order(scored)

    if scored is not None:
        def headline_and_lorenz():
            report.headline = fig_data.headline(scored)
            if report.headline["revenue"] > 0:
                return plot.lorenz(scored)
            report.notes.append(f"{_TITLES['lorenz']} left out: no customer has positive revenue")
            return None

        def segments():  # made once: the bars and the table show it
            report.segments = fig_data.segments(scored)
            return plot.segment_bars(summary=report.segments)

        yield "lorenz", headline_and_lorenz
        yield "rf_heatmap", lambda: plot.rf_heatmap(scored)
        yield "segments", segments
    if "migration" in tables:
        yield "migration", lambda: plot.migration_matrix(tables["migration"], order=order)
    if tl is not None:
        yield "segment_sizes", lambda: plot.segment_sizes(tl.pieces(["as_of", "segment"]), order=order)
        if "lifecycle" in tl.schema.names:
            from .stages import STAGES

            yield "lifecycle_sizes", lambda: plot.segment_sizes(tl.pieces(["as_of", "lifecycle"]), by="lifecycle",
                                                                order=STAGES)
        if "migration" not in tables:
            yield "migration", lambda: _timeline_migration(tl, report, order)
    if "cohorts" in tables:
        yield "cohort_retention", lambda: plot.cohort_retention(tables["cohorts"])
    if "alerts" in tables:
        def alerts():
            if tables["alerts"].num_rows == 0:
                report.notes.append(f"{_TITLES['alerts']} left out: the alerts table is empty (no alerts)")
                return None
            return plot.alerts(tables["alerts"])

        yield "alerts", alerts
    if "clusters" in tables:
        yield "cluster_snake", lambda: plot.cluster_snake(tables["clusters"])
        yield "cluster_sizes", lambda: plot.cluster_sizes(tables["clusters"])
    if "k_table" in tables:
        yield "k_curve", lambda: plot.k_curve(tables["k_table"])
    if "dendrogram" in tables:
        yield "dendrogram", lambda: plot.dendrogram(tables["dendrogram"])
    if "clv" in tables:
        yield "clv_probability_alive", lambda: plot.clv_matrix(tables["clv"], "probability_alive")
        yield "clv_expected_purchases", lambda: plot.clv_matrix(tables["clv"], "expected_purchases")
        yield "value_distribution", lambda: plot.value_distribution(tables["clv"])
    if "calibration" in tables:
        yield "calibration", lambda: plot.calibration(tables["calibration"])


def _timeline_migration(tl: _Timeline, report: Report, order):
    """The migration between the timeline's last two snapshots (None and a note if it has one)."""
    from . import plot
    from .migrations import migration

    stamps = tl.stamps()
    if len(stamps) < 2:
        report.notes.append(f"{_TITLES['migration']} left out: the timeline has {len(stamps)} snapshot(s); "
                            f"migration needs two")
        return None
    earlier, later = tl.last_two(stamps[-2:])
    return plot.migration_matrix(migration(earlier, later), order=order)


def write_report(path=None, *, figures=None, **inputs) -> Report:
    """Build the report (:func:`build_report`; ``inputs`` as its keywords), write the HTML
    page to ``path`` and, with ``figures`` (a folder), every figure as SVG and PNG."""
    report = build_report(**inputs)
    if path is not None:
        report.write(path)
    if figures is not None:
        report.write_figures(figures)
    return report


# --- the page -------------------------------------------------------------------------------------

def _cache_folder() -> Path | None:
    """Where the script bundle is kept: ``$RFMX_CACHE_DIR/vega`` (empty: nowhere), else
    ``$XDG_CACHE_HOME/rfmx/vega`` (``~/.cache/rfmx/vega``)."""
    if "RFMX_CACHE_DIR" in os.environ:
        root = os.environ["RFMX_CACHE_DIR"]
        return Path(root) / "vega" if root else None
    base = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
    if not base or not os.path.isabs(base):
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):
            return None
    return Path(base) / "rfmx" / "vega"


def javascript_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script (from vl-convert, for the Vega-Lite
    version Altair writes).  Bundling takes about a second, so the result is cached on disk
    per vl-convert and Vega-Lite version; an unwritable cache folder only costs the time."""
    import vl_convert as vlc

    from .plot import vegalite_version

    version = vegalite_version()
    folder = _cache_folder()
    path = folder / f"vega-{getattr(vlc, '__version__', 'unknown')}-vl{version or 'latest'}.js" if folder else None
    if path is not None and path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            pass
    bundle = vlc.javascript_bundle(vl_version=version)
    if path is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(bundle, encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass
    return bundle


def _inline_script(code: str) -> str:
    """Script text that cannot end its <script> element early."""
    return code.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT").replace("<!--", "<\\!--")


def _inline_json(value) -> str:
    """JSON for a <script type="application/json"> element: no '<' can close it."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(x, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _headline_html(h: dict) -> str:
    cards = [("customers", f"{h['customers']:,}"), ("revenue (net, money units)", _num(h["revenue"], 2))]
    cards += [(f"revenue from the top {p} %", _pct(s)) for p, s in h["top_shares"].items()]
    cards.append(("Gini coefficient (0 = equal, 1 = one customer)", "–" if h["gini"] is None else f"{h['gini']:.3f}"))
    body = "".join(f'<div class="card"><div class="value">{_e(v)}</div><div class="label">{_e(k)}</div></div>'
                   for k, v in cards)
    rows = "".join(f"<tr><th>{_e(r['class'])}</th><td>{r['customers']:,}</td><td>{_pct(r['customer_share'])}</td>"
                   f"<td>{_num(r['revenue'], 2)}</td><td>{_pct(r['revenue_share'])}</td></tr>" for r in h["abc"])
    abc = ('<table class="numbers" id="abc"><caption>ABC classes: A are the customers making the first 80 % of '
           'revenue, B the next 15 %, C the rest</caption><thead><tr><th>class</th><th>customers</th>'
           '<th>share</th><th>revenue</th><th>share of revenue</th></tr></thead>'
           f"<tbody>{rows}</tbody></table>")
    as_of = f" as of {_e(h['as_of'][:10])}" if h.get("as_of") else ""
    return (f'<div class="cards" id="headline">{body}</div>'
            f'<p class="hint">Customers and revenue{as_of}. Revenue shares and Gini count a customer whose refunds '
            f'exceed their orders as 0.</p>{abc}')


def _segments_html(table: pa.Table) -> str:
    rows = []
    for r in table.to_pylist():
        rows.append(f"<tr><th>{_e(r['segment'])}</th><td>{r['customers']:,}</td><td>{_pct(r['customer_share'])}</td>"
                    f"<td>{_num(r['revenue'], 2)}</td><td>{_pct(r['revenue_share'])}</td>"
                    f"<td>{_num(r['recency_mean'], 1)} / {_num(r['recency_median'], 1)}</td>"
                    f"<td>{_num(r['orders_mean'], 2)} / {_num(r['orders_median'], 1)}</td>"
                    f"<td>{_num(r['monetary_mean'], 2)} / {_num(r['monetary_median'], 2)}</td></tr>")
    return ('<table class="numbers" id="segment-table"><caption>Segments: mean / median recency (days since the '
            'last order), orders and net money per customer</caption><thead><tr><th>segment</th><th>customers</th>'
            '<th>share</th><th>revenue</th><th>share of revenue</th><th>recency, days</th><th>orders</th>'
            f'<th>money</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#08306b;color:#fff;padding:18px 32px}header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;opacity:.85;font-size:14px}
main{max-width:1040px;margin:0 auto;padding:8px 32px 48px}
section{margin-top:28px}h2{font-size:19px;border-bottom:2px solid #c6dbef;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:130px}
.card .value{font-size:22px;font-weight:600;color:#08519c}.card .label{font-size:12px;color:#555}
.hint{color:#555;font-size:13px}
figure.rfmx-figure{background:#fff;border:1px solid #ddd;border-radius:6px;margin:16px 0;padding:12px;overflow-x:auto}
table.numbers{border-collapse:collapse;margin:12px 0;font-size:13px;background:#fff}
table.numbers caption{text-align:left;color:#555;padding-bottom:4px}
table.numbers th,table.numbers td{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.numbers th:first-child{text-align:left}
.notes{background:#fff8e1;border:1px solid #f0d68a;border-radius:6px;padding:8px 16px;font-size:14px}
#rfmx-errors{display:none;background:#fdecea;border:1px solid #f5c2c0;border-radius:6px;padding:8px 16px}
footer{color:#777;font-size:12px;margin-top:32px}
"""

# Draws every figure; marks each <figure> rendered or failed and the <body> done, so a page
# that could not draw a figure says so (and a headless browser can check it).
_DRAW = """
(function () {
  var errors = [];
  function fail(message) {
    errors.push(message);
    var box = document.getElementById('rfmx-errors');
    box.style.display = 'block';
    box.appendChild(document.createTextNode(message + ' '));
  }
  window.addEventListener('error', function (e) { fail('script error: ' + e.message); });
  var figures = Array.prototype.slice.call(document.querySelectorAll('figure[data-figure]'));
  var drawn = figures.map(function (fig) {
    var spec = JSON.parse(fig.querySelector('script.spec').textContent);
    var opts = {renderer: 'svg', actions: {export: true, source: false, compiled: false, editor: false}};
    return vegaEmbed(fig.querySelector('.chart'), spec, opts).then(function () {
      fig.setAttribute('data-state', 'rendered');
    }).catch(function (err) {
      fig.setAttribute('data-state', 'error');
      fig.querySelector('.chart').textContent = 'This figure could not be drawn: ' + err;
      fail(fig.getAttribute('data-figure') + ': ' + err);
    });
  });
  Promise.all(drawn).then(function () {
    var body = document.body;
    body.setAttribute('data-rendered', String(figures.filter(function (f) {
      return f.getAttribute('data-state') === 'rendered'; }).length));
    body.setAttribute('data-errors', String(errors.length));
    body.setAttribute('data-height', String(document.documentElement.scrollHeight));
    body.setAttribute('data-done', '1');
  });
})();
"""


def _page(report: Report) -> str:
    from . import __version__

    blocks: dict[str, list[str]] = {s: [] for s in SECTIONS}
    if report.headline is not None:
        blocks["value"].append(_headline_html(report.headline))
    for fig in report.figures:
        blocks[fig.section].append(
            f'<figure class="rfmx-figure" id="figure-{_e(fig.key)}" data-figure="{_e(fig.key)}">'
            f'<div class="chart" role="img" aria-label="{_e(_TITLES[fig.key])}">'
            f'{_e(_TITLES[fig.key])}: drawing… (needs JavaScript)</div>'
            f'<script type="application/json" class="spec">{_inline_json(fig.spec)}</script></figure>')
        if fig.key == "segments" and report.segments is not None:
            blocks["segments"].append(_segments_html(report.segments))
    sections = "".join(f'<section id="section-{key}"><h2>{_e(SECTIONS[key])}</h2>{"".join(parts)}</section>'
                       for key, parts in blocks.items() if parts)
    notes = ""
    if report.notes:
        notes = ('<section id="section-notes"><h2>Not shown</h2><div class="notes"><ul>'
                 + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul></div></section>")
    made_from = "; ".join(f"{_e(what)}: {_e(source)}" for what, source in report.inputs)
    as_of = report.headline.get("as_of") if report.headline else None
    subtitle = (f"{report.headline['customers']:,} customers" + (f", as of {_e(as_of[:10])}" if as_of else "")
                if report.headline else "")
    import vl_convert as vlc

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(report.title)}</title><style>{_STYLE}</style>"
        f"<script>{_inline_script(javascript_bundle())}</script></head>\n"
        f'<body><header><h1>{_e(report.title)}</h1><p>{subtitle}</p></header><main>'
        '<div id="rfmx-errors" role="alert"></div>'
        f"{sections}{notes}"
        f"<footer>Made by rfmx {_e(__version__)} from {made_from}. Every figure plots aggregates (cells, curves, "
        f"bins), never single customers; hover a mark for its exact numbers. Drawn offline with Vega "
        f"{_e(vlc.get_vega_version())} and Vega-Embed {_e(vlc.get_vega_embed_version())}, embedded in this "
        f"file.</footer></main>\n<script>{_DRAW}</script></body></html>\n")
