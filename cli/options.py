"""Options shared by several commands, declared once."""
from __future__ import annotations

import contextlib
import functools
import sys

import click


#: commands that fold a --cost column into their state (the others refuse it)
COST_COMMANDS = frozenset({"aggregate", "score", "cluster", "report"})


def column_options(f):
    """--customer/--time/--amount/--order-id/--cost: which input columns hold what."""
    @click.option("--customer", default="customer_id", show_default=True, help="Customer id column.")
    @click.option("--time", "time_col", default="order_time", show_default=True, help="Order time column.")
    @click.option("--amount", default="amount", show_default=True, help="Amount column (refunds negative).")
    @click.option("--order-id", default=None, help="Order id column: lines of one order count once.")
    @click.option("--cost", default=None,
                  help="Each line's cost column (money, exact like the amount; refund lines may carry negative "
                       "cost): adds gross profit, margin and refund rates.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        # Only the reading front (build_state_from_options) uses it: kept on the click
        # context, so the commands' signatures need not list it.
        ctx = click.get_current_context()
        cost = kwargs.pop("cost")
        if cost and ctx.command.name not in COST_COMMANDS:
            if ctx.get_parameter_source("cost") == click.core.ParameterSource.DEFAULT_MAP:
                cost = None  # a project config's shared `cost` is for the commands that use it
            else:
                raise click.UsageError(f"--cost: rfmx {ctx.command.name} does not use line costs; "
                                       f"{', '.join(sorted(COST_COMMANDS))} do")
        ctx.meta["rfmx.cost"] = cost
        return f(*args, **kwargs)
    return wrapper


def group_option(f):
    """--group: key the state by (group, customer) and carry the group columns into the output."""
    return click.option("--group", default=None, metavar="COL[,COL]",
                        help="Group columns (e.g. shop_id or market,channel): one row per (group, customer), "
                             "group columns first; scores are ranked within each group (see --rank-within).")(f)


def rank_within_option(f):
    """--rank-within: rank scores within each group or over everyone."""
    return click.option("--rank-within", type=click.Choice(["group", "all"]), default="group", show_default=True,
                        help="With --group (or a grouped input): rank scores, tiers and ABC classes among each "
                             "group's customers, or among all customers.")(f)


def cost_column() -> str | None:
    """``--cost`` as given to the running command (None outside one, or without it)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("rfmx.cost") if ctx is not None else None


def attributes_options(f):
    """--attributes/--on: a table of customer attributes joined to the per-customer result."""
    @click.option("--attributes", default=None, type=click.Path(dir_okay=False), metavar="FILE",
                  help="Customer attributes (Parquet, Arrow or CSV: country, signup channel, ...) joined exactly "
                       "on the customer id; customers without a row get nulls (counted on stderr).  Segment-map "
                       "rules and rfmx summary --by can use them.")
    @click.option("--on", "on", default="customer_id", show_default=True, metavar="KEY",
                  help="The key column of --attributes: customer ids of the same type as the orders'.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


def fit_within_options(f):
    """--fit-within/--min-group-size/--small-groups: one cluster model per group, or one for all."""
    @click.option("--fit-within", type=click.Choice(["all", "group"]), default="all", show_default=True,
                  help="With --group: fit the clusters once over all customers, or one model per group (each "
                       "group's own scaling, centres and cluster numbers).")
    @click.option("--min-group-size", type=click.IntRange(min=1), default=None, metavar="N",
                  help="With --fit-within group: the fewest customers a group needs for its own model "
                       "[default and floor: k].")
    @click.option("--small-groups", type=click.Choice(["skip", "pooled"]), default="skip", show_default=True,
                  help="With --fit-within group: a smaller group is left out (null cluster, reported) or placed "
                       "by the model fitted on all groups' customers.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


def group_cluster_lines(info: dict | None) -> list[str]:
    """The stderr lines of a clustering within groups (``rfmx.group_clusters.group_clusters_info``)."""
    if info is None:
        return []
    left = info["left_out"]
    what = "placed by the all-groups model" if info["pooled"] else "left out (null cluster)"
    lines = [f"clusters fitted within {', '.join(info['group'])}: {info['fitted']:,} of {info['groups']:,} groups "
             f"(k = {info['k']}, at least {info['min_group_size']:,} customers)"
             + (f"; {left:,} smaller groups ({info['left_out_customers']:,} customers) {what}" if left else "")]
    for g in info.get("left_out_groups", [])[:5]:
        lines.append(f"  group {', '.join(g['values'])}: {g['reason']}")
    if left > 5:
        lines.append(f"  ... and {left - 5:,} more (the model file lists them all)")
    return lines


def join_attributes_reported(table, attributes):
    """``table`` with the checked attribute table ``attributes`` (``rfmx.attributes.Attributes``)
    joined, the join's counts on stderr; ``table`` itself when there are none."""
    if attributes is None:
        return table
    from rfmx.attributes import join_attributes

    table, info = join_attributes(table, attributes)
    click.echo(f"rfmx: {info.line()}", err=True)
    return table


#: commands whose result is about segments over time: --segments none leaves them nothing to do
SEGMENTS_REQUIRED = frozenset({"timeline", "alerts"})


def _check_segments(ctx, param, value):
    if value == "none" and ctx.command.name in SEGMENTS_REQUIRED:
        raise click.BadParameter(f"none: rfmx {ctx.command.name} follows customers' segments; give rfm-grid, "
                                 f"pymc-quartiles or a FILE.toml")
    return value


def segments_option(f):
    """--segments, the same values for every command: a built-in map, a TOML file, or none."""
    return click.option("--segments", default="rfm-grid", show_default=True, callback=_check_segments,
                        help="Segment map: rfm-grid, pymc-quartiles, a FILE.toml of rules, or none (no segment "
                             "column; not for timeline and alerts).")(f)


def score_options(f):
    """--bins/--ties/--monetary/--cuts/--segments/--weights/--tiers: how customers are scored
    (``rfmx score`` and ``rfmx timeline``)."""
    @click.option("--bins", type=int, default=None,
                  help="Scores run 1..BINS, higher is better [default: the segment map's bins, 5 for rfm-grid].")
    @click.option("--ties", type=click.Choice(["keep", "first"]), default="keep", show_default=True,
                  help="keep: equal values share a score (bins may be unequal); first: equal-size bins, "
                       "ties broken by row order (= pd.qcut(x.rank(method='first'), q)).")
    @click.option("--monetary", type=click.Choice(["total", "aov", "profit"]), default="total", show_default=True,
                  help="Score M on net money spent (total), the average order value (aov) or gross profit "
                       "(profit: needs --cost).")
    @click.option("--cuts", multiple=True, metavar="DIM=V1,V2,...",
                  help="Fixed cut points instead of quantiles for recency, frequency or monetary, BINS-1 "
                       "ascending values, e.g. recency=30,90,180,365 (repeat for several dimensions).")
    @segments_option
    @click.option("--weights", default=None,
                  help="Value-score weights, e.g. monetary=40,frequency=25,recency=20,tenure_days=15, or a "
                       "FILE.toml with a [weights] table [default: equal weights on R, F, M scores].")
    @click.option("--tiers", default=None,
                  help="Value tiers, best first, percent of customers [default: high=20,medium=30,low=50].")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


#: Commands whose -o is a per-customer (or per-snapshot) table, so it can also be a database
#: table or standard output; any other command's -o is a file of its own kind (rfmx report's page).
TABLE_OUTPUT_COMMANDS = frozenset({"aggregate", "score", "timeline", "cluster", "clv", "alerts"})


def location_options(f):
    """--query/--table/--if-exists/--password-file/--format: SOURCES and -o as databases or pipes.

    A database or ``-`` as -o reaches the command as a destination object
    (:class:`rfmx.databases.DatabaseTable`, :class:`rfmx.pipes.Stdout`) that its
    ``CommandFiles`` writes like a file; SOURCES stay as given and become source objects
    where the orders are read (:func:`order_sources`).  The commands never see the
    difference.  Option combinations that cannot work are usage errors before anything runs.
    """
    @click.option("--query", default=None, metavar="SQL",
                  help="Read the orders of a database SOURCE with this query (its columns are mapped like a file's).")
    @click.option("--table", default=None, metavar="[SCHEMA.]NAME",
                  help="A database SOURCE's table of orders, or the table -o writes when -o is a database "
                       "(when both are, --table is -o's and the source needs --query).")
    @click.option("--if-exists", type=click.Choice(["fail", "replace", "append"]), default="fail", show_default=True,
                  help="When -o's database table exists: refuse before any work, replace it, or add the rows "
                       "(one transaction either way).")
    @click.option("--password-file", type=click.Path(dir_okay=False), default=None,
                  help="PostgreSQL password from this file's first line (else the URI, PGPASSWORD or ~/.pgpass).")
    @click.option("--format", "stream_format", type=click.Choice(["csv", "jsonl", "arrow"]), default=None,
                  help="What -o - writes to standard output: CSV, JSON Lines or an Arrow IPC stream [default: csv].")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from rfmx.errors import RfmxError

        options = {name: kwargs.pop(name) for name in ("query", "table", "if_exists", "password_file",
                                                        "stream_format")}
        try:
            output = _output(kwargs.get("sources", ()), kwargs.get("output"), **options)
        except RfmxError as exc:  # a bad URI: one line, as inside the command
            raise click.ClickException(str(exc)) from None
        if output is None or isinstance(output, str):
            return f(*args, **kwargs)
        kwargs["output"] = output
        if str(output) != "-":
            return f(*args, **kwargs)
        # Standard output carries the result: whatever the command prints for people (the
        # segment summary, model parameters) goes to standard error with the diagnostics.
        with contextlib.redirect_stdout(sys.stderr):
            return f(*args, **kwargs)
    return wrapper


def _output(sources, output, *, query, table, if_exists, password_file, stream_format):
    """-o as a destination object when it is a database or ``-`` (else as given); usage
    errors for options that do not fit SOURCES and -o.  Notes for :func:`order_sources`
    what a database SOURCE is read with."""
    from rfmx.locations import database_kind  # the drivers and pyarrow.dataset only when a database is named

    ctx = click.get_current_context()
    databases = [s for s in sources if database_kind(s) is not None]
    special = output == "-" or (output is not None and database_kind(output) is not None)
    output_is_database = special and output != "-"
    # A project config sets these for every command (e.g. `table = "orders"` beside a
    # database `sources`); where one does not apply to this run it is left out, not refused:
    # only an option typed on the command line that cannot work is a usage error.
    applies = {"query": bool(databases), "table": bool(databases) or output_is_database,
               "password_file": any(database_kind(x) == "postgresql" for x in [*databases, output]),
               "stream_format": output == "-"}
    if not applies["query"] and not given_on_command_line(ctx, "query"):
        query = None
    if not applies["table"] and not given_on_command_line(ctx, "table"):
        table = None
    if not applies["password_file"] and not given_on_command_line(ctx, "password_file"):
        password_file = None
    if not applies["stream_format"] and not given_on_command_line(ctx, "stream_format"):
        stream_format = None
    if special and ctx.command.name not in TABLE_OUTPUT_COMMANDS:
        raise click.UsageError(f"-o: rfmx {ctx.command.name} writes a file, not a database table or standard "
                               f"output; give its path")
    if list(sources).count("-") > 1:
        raise click.UsageError("standard input (-) can be read once")
    if stream_format is not None and output != "-":
        raise click.UsageError("--format is what -o - writes to standard output; a file's format follows its suffix")
    if given_on_command_line(ctx, "if_exists") and not output_is_database:
        raise click.UsageError("--if-exists is for -o to a database table")
    source_table = table
    if output_is_database:
        if table is None:
            raise click.UsageError("-o to a database needs --table NAME")
        source_table = None
        if databases and query is None:
            raise click.UsageError("SOURCES and -o are both databases: --table names -o's table, so give the "
                                   "orders as --query 'SELECT ... FROM ...'")
    if databases:
        if query is not None and source_table is not None:
            raise click.UsageError("--query and --table exclude each other for a database SOURCE")
        if query is None and source_table is None:
            raise click.UsageError("a database SOURCE needs --query SQL or --table NAME")
    elif query is not None:
        raise click.UsageError("--query reads a database SOURCE; SOURCES has none")
    elif table is not None and not output_is_database:
        raise click.UsageError("--table is for a database SOURCE or -o to a database")
    if password_file is not None and not any(database_kind(x) == "postgresql" for x in [*databases, output]):
        raise click.UsageError("--password-file is for a PostgreSQL SOURCE or -o")
    ctx.meta["rfmx.locations"] = {"query": query, "table": source_table, "password_file": password_file}
    if output == "-":
        from rfmx.pipes import Stdout

        # The data goes to the real standard output, kept before the command's own prints are redirected.
        return Stdout(stream_format or "csv", stream=sys.stdout.buffer)
    if output_is_database:
        from rfmx.databases import DatabaseTable

        pg = database_kind(output) == "postgresql"
        return DatabaseTable(output, table, if_exists=if_exists, password_file=password_file if pg else None)
    return output


def given_on_command_line(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was typed for this run (not a default, nor a project config's value)."""
    return ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                              click.core.ParameterSource.ENVIRONMENT,
                                              click.core.ParameterSource.PROMPT)


def order_sources(sources) -> list:
    """The command's SOURCES as :func:`rfmx.api.build_state` reads them: database URIs (and
    database files) as :class:`rfmx.databases.DatabaseSource` with --query/--table, ``-`` as
    standard input, paths as they are."""
    from rfmx.locations import database_kind

    ctx = click.get_current_context(silent=True)
    found = (ctx.meta.get("rfmx.locations") if ctx is not None else None) or {}
    resolved = []
    for s in sources:
        kind = database_kind(s)
        if s == "-":
            from rfmx.pipes import StdinSource

            resolved.append(StdinSource())
        elif kind is not None:
            from rfmx.databases import DatabaseSource

            resolved.append(DatabaseSource(s, query=found.get("query"), table=found.get("table"),
                                           password_file=found.get("password_file") if kind == "postgresql" else None))
        else:
            resolved.append(s)
    return resolved


def stream_options(f):
    """Options of every command that streams order rows into a state."""
    @click.option("--as-of", default=None, help="Compute as of this date/time (default: day after the latest order); later lines are excluded.")
    @click.option("--since", default=None, help="Ignore lines before this date/time.")
    @click.option("--threads", type=click.IntRange(min=1), default=None, help="Kernel threads (default: all cores).")
    @click.option("--batch-size", type=click.IntRange(min=1), default=1 << 20, show_default=True, help="Rows per record batch.")
    @click.option("--amount-scale", type=click.IntRange(0, 18), default=2, show_default=True, help="Decimals kept for money (2 = cents); totals are exact in these units.")
    @click.option("--round", "round_mode", type=click.Choice(["half-even", "half-up"]), default=None,
                  help="Round decimal amounts with more decimals than --amount-scale (half-up: ties away from zero) "
                       "and report how many; default: refuse them.")
    @click.option("--customer-type", type=click.Choice(["auto", "int", "string"]), default="auto", show_default=True,
                  help="CSV customer ids: integers when every id in the file is one (auto), or always int / string.")
    @click.option("--timezone", default=None, metavar="ZONE",
                  help="IANA time zone of your calendar, e.g. Asia/Tokyo: which day an order falls on (recency "
                       "counts calendar days) and what times without a zone and bare dates mean [default: UTC, "
                       "or the --state-in state's zone].")
    @click.option("--on-null", type=click.Choice(["error", "skip"]), default="error", show_default=True, help="Null customer/time/amount: fail, or drop the rows and report how many.")
    @click.option("--delimiter", default=None, help="CSV field delimiter (default ',').")
    @click.option("--state-in", type=click.Path(dir_okay=False), default=None, help="Start from this saved state (Arrow file) instead of an empty one.")
    @click.option("--state-out", type=click.Path(dir_okay=False), default=None, help="Save the state (Arrow file) for later increments.")
    @click.option("--progress/--no-progress", default=None, help="Progress on stderr (default: when stderr is a terminal).")
    @location_options
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        # Only the reading front (build_state_from_options) uses these: kept on the click
        # context, so the commands' signatures need not list them.
        meta = click.get_current_context().meta
        meta["rfmx.read"] = {"customer_type": kwargs.pop("customer_type"), "round": kwargs.pop("round_mode"),
                             "timezone": kwargs.pop("timezone")}
        return f(*args, **kwargs)
    return wrapper


def read_options() -> dict:
    """``customer_type``, ``round`` and ``timezone`` as given to the running command (defaults outside one)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.meta.get("rfmx.read") if ctx is not None else None
    return dict(found) if found else {"customer_type": "auto", "round": None, "timezone": None}


def files_only_output(command: click.Command) -> click.Command:
    """For a command whose -o is a file of its own kind (not in :data:`TABLE_OUTPUT_COMMANDS`):
    hide --if-exists and --format, which only -o to a database or ``-`` uses, and say that
    --table names a database SOURCE's table.  Hidden options are not config keys either."""
    for param in command.params:
        if param.name in ("if_exists", "stream_format"):
            param.hidden = True
        elif param.name == "table":
            param.help = "A database SOURCE's table of orders (instead of --query)."
    return command


def show_progress(flag):
    return sys.stderr.isatty() if flag is None else flag


def build_timeline_from_options(sources, customer, time_col, amount, order_id, since, threads, batch_size,
                                amount_scale, on_null, delimiter, state_in, progress, *, every, week_start):
    """The front of the commands over a timeline state (timeline, alerts): ``--state-in``
    loaded (its period must be ``every``) or a new state with ``every`` buckets, and
    ``sources`` folded into it."""
    from rfmx.history import TimelineState
    from rfmx.pipeline import check_period

    fresh = None
    if not state_in:
        fresh = TimelineState(customer, time_col, amount, order_id, period=every, week_start=week_start,
                              since=since, amount_scale=amount_scale, on_null=on_null, threads=threads,
                              timezone=read_options()["timezone"])
    state = build_state_from_options(sources, customer, time_col, amount, order_id, None, since, threads, batch_size,
                                     amount_scale, on_null, delimiter, state_in, progress,
                                     state_class=TimelineState, new_state=fresh)
    check_period(state, every, week_start)
    return state


def build_state_from_options(sources, customer, time_col, amount, order_id, as_of, since, threads, batch_size,
                             amount_scale, on_null, delimiter, state_in, progress, *, state_class=None,
                             new_state=None, group=None):
    """Load ``--state-in`` (if any) and fold ``sources`` into it; the shared front of every command.

    ``state_class`` (default :class:`rfmx.RFMState`) loads ``--state-in``; without it the
    lines go into ``new_state`` if given (e.g. a :class:`rfmx.TimelineState`), else into a
    new RFMState made from the options.  ``group``: group columns (``--group``); a saved
    grouped state is loaded as one, and must be grouped by ``group`` when it is given."""
    from rfmx.api import build_state
    from rfmx.groups import load_state

    from rfmx.columns import ColumnMap
    from rfmx.errors import RfmxError

    state = None
    if state_in:
        state = state_class.load(state_in, threads=threads) if state_class else load_state(state_in, threads=threads)
    if state is None and new_state is not None:
        return build_state(order_sources(sources) or None, customer, time_col, amount, order_id, state=new_state,
                           on_null=on_null, threads=threads, batch_size=batch_size,
                           progress=show_progress(progress), delimiter=delimiter, **read_options())
    if state is not None:
        if since is not None:
            raise click.UsageError("--since cannot change the window of a saved state (--state-in)")
        wanted = ColumnMap(customer, time_col, amount, order_id, cost_column())
        if wanted != state.columns:
            costs = bool(state.columns.cost or wanted.cost)
            raise RfmxError(f"{state_in}: the state was made with columns {_describe(state.columns, costs)}; "
                            f"this run maps {_describe(wanted, costs)}")
        ctx = click.get_current_context(silent=True)
        explicit = ctx is not None and ctx.get_parameter_source("amount_scale") not in (
            None, click.core.ParameterSource.DEFAULT)
        if explicit and amount_scale != state.amount_scale:
            raise RfmxError(f"{state_in}: the state keeps amounts with {state.amount_scale} decimals, "
                            f"not --amount-scale {amount_scale}")
        check_state_timezone(state, state_in)
    return build_state(order_sources(sources) or None, customer, time_col, amount, order_id,
                       as_of=as_of if state is None else None,
                       since=since, amount_scale=amount_scale, on_null=on_null, threads=threads,
                       batch_size=batch_size, state=state, progress=show_progress(progress), delimiter=delimiter,
                       group=group, cost=cost_column(), **read_options())


def check_state_timezone(state, state_in) -> None:
    """Refuse a ``--timezone`` other than the one the ``--state-in`` state counts days in."""
    from rfmx.calendar import check_timezone
    from rfmx.errors import RfmxError

    zone = read_options()["timezone"]
    if zone is not None and check_timezone(zone) != state.timezone:
        raise RfmxError(f"{state_in}: the state counts days in {state.timezone}, not in {zone}; "
                        f"leave out --timezone or pass --timezone {state.timezone}")


def _describe(columns, with_cost: bool = False) -> str:
    text = (f"--customer {columns.customer} --time {columns.time} --amount {columns.amount} "
            f"--order-id {columns.order_id or '(none)'}")
    return text + (f" --cost {columns.cost or '(none)'}" if with_cost else "")


def report_state(state) -> None:
    """One line on stderr: what was read, skipped and kept."""
    parts = [f"{state.rows_read - state.rows_loaded:,} rows read", f"{state.n_customers:,} customers"]
    if state.rows_loaded or state.customers_loaded:
        parts[0] += (f" into a saved state of {state.customers_loaded:,} customers "
                     f"(from {state.rows_loaded:,} earlier rows)")
    if state.rows_null_skipped:
        parts.append(f"{state.rows_null_skipped:,} rows with nulls skipped")
    if state.rows_outside_window:
        parts.append(f"{state.rows_outside_window:,} rows outside the window skipped")
    if state.amounts_rounded:
        parts.append(f"{state.amounts_rounded:,} amounts rounded to {state.amount_scale} decimals")
    click.echo("rfmx: " + ", ".join(parts), err=True)


def renamed_option(old: str, new: str, dest: str, **attrs):
    """Keep ``old``, an option's former name, working as ``new`` (whose parameter is ``dest``):
    hidden from --help and from configs, and a one-line note on stderr when used, so
    existing scripts keep running while they are updated.  ``attrs``: the click option's
    type and the like, as ``new`` has them."""
    alias = f"{dest}__as_{old.lstrip('-').replace('-', '_')}"

    def decorate(f):
        @click.option(old, alias, hidden=True, default=None, **attrs)
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            value = kwargs.pop(alias)
            if value is not None:
                if given_on_command_line(click.get_current_context(), dest):
                    raise click.UsageError(f"{old} is the former name of {new}: give {new} only")
                click.echo(f"rfmx: {old} is deprecated; use {new}", err=True)
                kwargs[dest] = value
            return f(*args, **kwargs)
        return wrapper
    return decorate


def dask_options(f):
    """--dask/--buckets/--single-file: run the command on a Dask cluster (``rfmx.dask``).

    Kept on the click context like the reading options, so the commands' signatures need
    not list them: :func:`dask_settings` gives them to the command body."""
    @click.option("--dask", "dask_address", default=None, metavar="local:N|ADDRESS",
                  help="Run on a Dask cluster: local:N (a LocalCluster of N worker processes) or a scheduler "
                       "address (tcp://scheduler:8786); -o is then a folder that gets a Parquet dataset, one part "
                       "per customer bucket, written by the workers (needs the dask extra).")
    @click.option("--buckets", type=click.IntRange(min=1), default=None,
                  help="With --dask: customer hash buckets, one output part each [default: 4 per worker].")
    @click.option("--single-file", is_flag=True, default=False,
                  help="With --dask: write -o as one file (.parquet, .csv, .arrow) through this machine instead "
                       "of a dataset.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        meta = click.get_current_context().meta
        meta["rfmx.dask"] = {"address": kwargs.pop("dask_address"), "buckets": kwargs.pop("buckets"),
                             "single_file": kwargs.pop("single_file")}
        return f(*args, **kwargs)
    return wrapper


def dask_settings() -> dict | None:
    """The running command's --dask settings, or None without --dask.

    Usage errors for --buckets or --single-file without --dask; without --dask an existing
    folder as -o stays the usage error it always was (with --dask, -o is a folder)."""
    ctx = click.get_current_context()
    found = ctx.meta.get("rfmx.dask") or {}
    if found.get("address"):
        return found
    for name in ("buckets", "single_file"):
        if given_on_command_line(ctx, name):
            raise click.UsageError(f"--{name.replace('_', '-')} is for --dask runs")
    import os

    output = ctx.params.get("output")
    if isinstance(output, str) and output != "-" and os.path.isdir(output):
        raise click.BadParameter(f"File {output!r} is a directory.", ctx=ctx, param_hint="'-o' / '--output'")
    return None


def check_dask_run(sources, output, *, state_in=None, state_out=None, threads=None) -> None:
    """Usage errors for what a --dask run cannot do: read standard input or a database (the
    workers read files), write a database or standard output, fold saved states."""
    from rfmx.locations import database_kind

    if state_in or state_out:
        raise click.UsageError("--state-in/--state-out fold a state on this machine; leave them out with --dask")
    if threads is not None:
        raise click.UsageError("--threads: each Dask worker runs one kernel thread; size the cluster instead "
                               "(--dask local:N)")
    if any(s == "-" or database_kind(s) is not None for s in sources):
        raise click.UsageError("--dask reads files (paths, folders, globs, URIs) on the workers, not standard "
                               "input or a database")
    if output is not None and not isinstance(output, str):
        raise click.UsageError("-o with --dask is a folder (a Parquet dataset) or, with --single-file, a file; "
                               "not a database table or standard output")
