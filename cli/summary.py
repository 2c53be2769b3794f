"""``rfmx summary``: revenue concentration, ABC classes and the segment table; and the text
rendering ``rfmx score`` and ``rfmx demo`` share."""
from __future__ import annotations

import click

from .options import renamed_option

FORMATS = ("text", "json", "csv")
SECTIONS = ("all", "segments", "concentration", "abc")


def _num(x, digits=1) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _grid(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns padded to width; the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(header)] + [line(r) for r in rows]


def migration_lines(summary) -> list[str]:
    """A migration summary (``rfmx.migration_summary``) as text lines: per segment of the
    earlier snapshot, its customers and the shares that stayed, moved up, down, lapsed."""
    header = ["from segment", "customers", "stayed", "up", "down", "lapsed"]
    rows = [[r["from_segment"], f"{r['customers']:,}", _pct(r["stayed"]), _pct(r["up"]), _pct(r["down"]),
             _pct(r["lapsed"])] for r in summary.to_pylist()]
    return _grid(header, rows)


def segment_lines(segments) -> list[str]:
    """The segment summary table (a ``pyarrow.Table`` from ``segment_summary``) as text lines."""
    header = ["segment", "customers", "share", "revenue", "rev. share", "recency d (mean/med)",
              "orders (mean/med)", "monetary (mean/med)"]
    rows = []
    for r in segments.to_pylist():
        rows.append([r["segment"], f"{r['customers']:,}", _pct(r["customer_share"]), _num(r["revenue"], 2),
                     _pct(r["revenue_share"]),
                     f"{_num(r['recency_mean'])} / {_num(r['recency_median'])}",
                     f"{_num(r['orders_mean'])} / {_num(r['orders_median'])}",
                     f"{_num(r['monetary_mean'], 2)} / {_num(r['monetary_median'], 2)}"])
    return _grid(header, rows)


def coverage_lines(info: dict | None) -> list[str]:
    """Warnings about a segment map's coverage (``score_info(table)["segments"]``)."""
    if not info:
        return []
    out = []
    name = info["map"]
    if info["unassigned"]:
        target = f"segment '{info['default']}'" if info["default"] is not None else "no segment (null)"
        out.append(f"segment map '{name}': {info['unassigned']:,} customers match no rule -> {target}")
    for r in info["never_match"]:
        where = f" (line {r['line']})" if r["line"] else ""
        why = r["reason"] or "no customer in this data matches it first"
        out.append(f"segment map '{name}': rule {r['rule']} '{r['segment']}'{where} matched no customers: {why}")
    return out


def top_lines(top) -> list[str]:
    """The most valuable customers (``rfmx.concentration.top_customers``) as text lines."""
    names = {"customer_id": "customer", "segment": "segment", "value_tier": "tier", "monetary_total": "money",
             "n_orders": "orders", "recency_days": "recency d"}
    cols = top.column_names
    rows = []
    for r in top.to_pylist():
        rows.append([str(r["customer_id"])] + [
            "-" if r[c] is None else (_num(r[c], 2) if c == "monetary_total" else
                                      f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]))
            for c in cols[1:]])
    left = 1 + sum(c in ("segment", "value_tier") for c in cols)
    return _grid([names[c] for c in cols], rows, left=left)


def text_report(result: dict, table: str = "all", header: str | None = None) -> str:
    """The whole summary (``rfmx.concentration.summary``) as text."""
    lines = []
    conc = result["concentration"]
    if header:
        lines.append(header)
    if table in ("all", "concentration"):
        lines.append(f"Revenue concentration ({conc['customers']:,} customers, revenue {_num(conc['revenue'], 2)};"
                     f" refund-heavy customers count as 0)")
        for p, share in conc["top_shares"].items():
            lines.append(f"  top {p:>2} % of customers: {_pct(share):>8} of revenue")
        gini = "-" if conc["gini"] is None else f"{conc['gini']:.3f}"
        lines.append(f"  Gini coefficient: {gini}")
    if table in ("all", "abc"):
        lines.append("ABC classes (A: customers making the first 80 % of revenue, B: the next 15 %, C: the rest)")
        rows = [[r["class"], f"{r['customers']:,}", _pct(r["customer_share"]), _num(r["revenue"], 2),
                 _pct(r["revenue_share"])] for r in result["abc"].to_pylist()]
        lines += ["  " + s for s in _grid(["class", "customers", "share", "revenue", "rev. share"], rows)]
    if table in ("all", "segments") and result["segments"] is not None:
        lines.append("Segments")
        lines += ["  " + s for s in segment_lines(result["segments"])]
    if result.get("top") is not None:
        lines.append(f"Top {result['top'].num_rows:,} customers by net money")
        lines += ["  " + s for s in top_lines(result["top"])]
    return "\n".join(lines)


def json_report(result: dict, table: str = "all") -> str:
    import json

    conc = dict(result["concentration"])
    conc["top_shares"] = {str(k): v for k, v in conc["top_shares"].items()}
    doc = {}
    if table in ("all", "concentration"):
        doc["concentration"] = conc
    if table in ("all", "abc"):
        doc["abc"] = result["abc"].to_pylist()
    if table in ("all", "segments"):
        doc["segments"] = result["segments"].to_pylist() if result["segments"] is not None else None
    if result.get("top") is not None:
        doc["top_customers"] = result["top"].to_pylist()
    return json.dumps(doc, indent=2, default=str)


def csv_report(result: dict, table: str) -> str:
    import io

    import pyarrow as pa
    import pyarrow.csv as pcsv

    if result.get("top") is not None:
        t = result["top"]
    elif table == "concentration":
        conc = result["concentration"]
        names = ["customers", "revenue"] + [f"top_{p}_percent_share" for p in conc["top_shares"]] + ["gini"]
        values = [conc["customers"], conc["revenue"]] + list(conc["top_shares"].values()) + [conc["gini"]]
        t = pa.table({"metric": names, "value": pa.array([None if v is None else float(v) for v in values])})
    elif table == "abc":
        t = result["abc"]
    else:
        if result["segments"] is None:
            raise click.UsageError("the table has no segments")
        t = result["segments"]
    sink = io.BytesIO()
    pcsv.write_csv(t, sink)
    return sink.getvalue().decode()


def grouped_report(table, by, top_groups, fmt: str, which: str, top) -> str:
    """``rfmx summary --by``: the summary of each group (``rfmx.concentration.grouped_summary``)
    as text (one block per group), JSON (a list) or CSV (the section's table with the group
    columns in front)."""
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    from rfmx.concentration import grouped_summary, top_customers

    results = grouped_summary(table, by, top_groups=top_groups)
    for r in results:
        r["top"] = None
        if top is not None:
            members = table
            for c, v in r["group"].items():
                members = members.filter(pc.is_null(members[c]) if v is None else
                                         pc.equal(members[c], pa.scalar(v, members.schema.field(c).type)))
            r["top"] = top_customers(members, top)

    def label(r) -> str:
        return ", ".join(f"{c} = {'(null)' if v is None else v}" for c, v in r["group"].items())

    if fmt == "json":
        return json.dumps([{"group": r["group"], "customers": r["customers"], "revenue": r["revenue"],
                            **json.loads(json_report(r, which))} for r in results], indent=2, default=str)
    if fmt == "csv":
        import io

        import pyarrow.csv as pcsv

        parts = []
        for r in results:
            sink = io.BytesIO(csv_report(r, which).encode())
            part = pcsv.read_csv(sink)
            for j, (c, v) in enumerate(r["group"].items()):
                part = part.add_column(j, c, pa.array([v] * part.num_rows))
            parts.append(part)
        if not parts:
            return ""
        sink = io.BytesIO()
        pcsv.write_csv(pa.concat_tables(parts, promote_options="permissive"), sink)
        return sink.getvalue().decode()
    blocks = [text_report(r, which, header=f"== {label(r)}: {r['customers']:,} customers, revenue "
                                               f"{_num(r['revenue'], 2)}") for r in results]
    return "\n\n".join(blocks)


@click.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of printing (format from --format, else from the suffix .txt/.json/.csv).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="text (default), json or csv.")
@click.option("--section", "which", type=click.Choice(SECTIONS), default=None,
              help="Which part: all (default; csv needs one: segments by default), segments, concentration, abc.")
@renamed_option("--table", "--section", "which", type=click.Choice(SECTIONS))
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="N",
              help="Also list the N most valuable customers by net money: customer, segment, tier, money, orders, "
                   "recency (with --format csv, the CSV is this list).")
@click.option("--by", "by", default=None, metavar="COL[,COL]",
              help="One summary per group of these columns (e.g. shop_id, or the group columns of a grouped "
                   "score), groups sorted by net revenue, highest first.")
@click.option("--top-groups", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --by: only the N groups with the most revenue.")
def summary(source, output, fmt, which, top, by, top_groups):
    """Revenue concentration, ABC classes and the segment summary of a scored table.

    \b
    Examples:
      rfmx summary scores.parquet
      rfmx summary scores.parquet --top 20
      rfmx summary scores.parquet --format csv --section abc -o abc.csv
      rfmx summary scores_by_shop.parquet --by shop_id --top-groups 20

    SOURCE is the output of `rfmx score` (Parquet, Arrow or CSV).  A table from
    `rfmx aggregate` is scored first with the default options.  -o is a file (.txt, .json,
    .csv); without it the summary goes to standard output.
    """
    from .main import run_guarded

    if fmt is None:
        suffix = (output or "").rsplit(".", 1)[-1].lower() if output and "." in output else ""
        fmt = {"json": "json", "csv": "csv"}.get(suffix, "text")
    if which is None:
        which = "segments" if fmt == "csv" else "all"
    if top_groups is not None and not by:
        raise click.UsageError("--top-groups needs --by")
    if fmt == "csv" and which == "all" and top is None:
        raise click.UsageError("CSV holds one table: use --section segments, concentration or abc")

    def run():
        from rfmx.outputs import CommandFiles

        with CommandFiles().read("SOURCE", source).write("-o", output) as files:
            report(files)

    def report(files):
        from rfmx.concentration import summary as summarize, top_customers
        from rfmx.scores import read_table, score_table

        table = read_table(source)
        if "segment" not in table.column_names:
            click.echo(f"rfmx: {source} has no scores; scoring it with the default options", err=True)
            table = score_table(table)
        if by:
            text = grouped_report(table, by, top_groups, fmt, which, top)
        else:
            result = summarize(table)
            result["top"] = top_customers(table, top) if top is not None else None
            text = None
        if text is not None:
            pass
        elif fmt == "json":
            text = json_report(result, which)
        elif fmt == "csv":
            text = csv_report(result, which)
        else:
            text = text_report(result, which)
        if output:
            files.write_text("-o", text if text.endswith("\n") else text + "\n")
        else:
            click.echo(text.rstrip("\n"))

    run_guarded(run)
