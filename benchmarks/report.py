"""Machine info, the Markdown and JSON result files, and the scaling plots."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("rfmx", "numpy", "pyarrow", "numba", "pandas", "polars", "duckdb", "scikit-learn", "lifetimes",
            "scipy", "psutil", "matplotlib")
WORKLOAD_TITLES = {
    "aggregate": "Per-customer aggregate (recency, orders, net money)",
    "scores": "Aggregate + quintile scores (rfmx: + segments)",
    "kmeans": "k-means (same features, same initial centres)",
    "bgnbd": "BG/NBD fit (same summary data)",
    "incremental": "Incremental update: 1 % new lines into a saved state vs full rescan",
    "timeline": "Customers over time: the aggregate at every month start",
    "dask": "Per-customer aggregate on Dask (LocalCluster of 2 worker processes) beside one process",
}
MB = 1024 * 1024


def machine_info(repo: Path) -> dict:
    """CPU, cores, RAM, OS, Python and package versions, load, and the repository commit."""
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor() or "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        import psutil

        info["physical_cpus"] = psutil.cpu_count(logical=False)
        info.setdefault("ram_gb", round(psutil.virtual_memory().total / 1024 ** 3, 1))
    except ImportError:
        pass
    info["versions"] = {}
    for name in PACKAGES:
        try:
            info["versions"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["versions"][name] = None
    info["git"] = _git(repo)
    return info


def _git(repo: Path) -> dict:
    def out(*args):
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = out("status", "--porcelain")
    return {"commit": out("rev-parse", "--short", "HEAD"), "dirty": bool(status) if status is not None else None}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# --- formatting ---------------------------------------------------------------------------

def _s(x) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _ratio(x) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}×" if x < 10 else f"{x:.0f}×"


def _mb(x) -> str:
    return "—" if x is None else f"{x / MB:,.0f}"


def _check(entry) -> str:
    check = entry.get("check")
    if entry["status"] == "ok":
        return {"agrees": "✓ same result", "rows": "✓ rows", "unchecked": "unchecked (no peer)"}.get(check, check or "")
    if entry["status"] == "disagrees":
        return "✗ DISAGREES: " + "; ".join(entry.get("differences", [])[:3])
    return f"{entry['status']}: {entry.get('message', '')}"


def _count(x) -> str:
    return "—" if x is None else f"{x:,}"


def _phases(entry) -> str:
    """``state 1.20 + snapshots 0.31``: the median seconds of each phase of a run."""
    phases = entry.get("breakdown") or {}
    return " + ".join(f"{name} {_s(sec)}" for name, sec in phases.items()) or "—"


def bench_title(bench) -> str:
    ids = {"int": "int64 ids", "string": "string ids"}[bench["ids"]]
    customers = f", {bench['customers']:,} customers" if bench.get("customers") else ""
    return f"{WORKLOAD_TITLES[bench['workload']]} — {bench['rows']:,} rows, {ids}{customers}"


def bench_table(bench) -> list[str]:
    """A benchmark as a Markdown table: medians and ratios to rfmx, or why a contender has none."""
    extra_cols = []
    if bench["workload"] == "kmeans":
        extra_cols = [("iterations", lambda e: str(e["extra"].get("n_iter", "—"))),
                      ("s / iteration", lambda e: _s(e.get("per_iter_s"))),
                      ("inertia", lambda e: f"{e['extra']['inertia']:.6g}" if "inertia" in e["extra"] else "—")]
    elif bench["workload"] == "bgnbd":
        extra_cols = [("log-likelihood", lambda e: f"{e['extra']['loglik']:.6g}" if "loglik" in e["extra"] else "—"),
                      ("r, α, a, b", lambda e: ", ".join(f"{v:.4g}" for v in e["extra"].get("params", {}).values()))]
    elif bench["workload"] == "timeline":
        extra_cols = [("snapshots", lambda e: _count(e["extra"].get("snapshots"))),
                      ("rows, all snapshots", lambda e: _count(e["extra"].get("snapshot_rows"))),
                      ("wall s by phase", _phases)]
    elif bench["workload"] == "dask":
        extra_cols = [("peak RSS per worker MB", lambda e: ", ".join(
            _mb(b) for b in e["extra"].get("worker_peak_bytes", [])) or "—")]
    head = ["contender", "wall s (median)", "× rfmx", "CPU s", "× rfmx", "peak RSS MB", "× rfmx"]
    head += [name for name, _ in extra_cols] + ["check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for e in bench["contenders"]:
        label = f"**{e['label']}**" if e["name"] == "rfmx" else e["label"]
        if e["status"] == "ok":
            m, r = e["median"], e.get("ratios", {})
            spread = f" ({_s(e['min_wall_s'])}–{_s(e['max_wall_s'])})" if len(e.get("runs", [])) > 1 else ""
            cells = [label, _s(m["wall_s"]) + spread, _ratio(r.get("wall_s")), _s(m["cpu_s"]), _ratio(r.get("cpu_s")),
                     _mb(m["peak_rss_bytes"]), _ratio(r.get("peak_rss_bytes"))]
            cells += [f(e) for _, f in extra_cols]
        else:
            cells = [label] + ["—"] * (6 + len(extra_cols))
        cells.append(_check(e))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def series_tables(results, series: str) -> list[str]:
    """Wall time and peak RSS of the aggregate workload against rows or customers."""
    benches = [b for b in results["benchmarks"] if b["workload"] == "aggregate" and b.get("series") == series]
    if not benches:
        return []
    names, labels = [], {}
    for b in benches:
        for e in b["contenders"]:
            if e["name"] not in names:
                names.append(e["name"])
                labels[e["name"]] = e["label"]
    key = "rows" if series == "rows" else "customers"
    out = []
    for metric, title, fmt in (("wall_s", "wall s", _s), ("cpu_s", "CPU s", _s), ("peak_rss_bytes", "peak RSS MB", _mb)):
        head = ["ids", "rows", "customers"] + [labels[n] for n in names]
        out += [f"*{title}*", "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for b in sorted(benches, key=lambda b: (b["ids"], b[key] or 0, b["rows"])):
            by = {e["name"]: e for e in b["contenders"]}
            cells = [b["ids"], f"{b['rows']:,}", f"{b['customers']:,}" if b.get("customers") else "—"]
            for n in names:
                e = by.get(n)
                cells.append(fmt(e["median"][metric]) if e and e["status"] == "ok" else "—")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def markdown(results) -> str:
    s, m = results["suite"], results["machine"]
    v = m["versions"]
    lines = [f"# rfmx benchmarks — {s['started']}", "",
             f"Command: `{s['command']}`", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('logical_cpus')} logical CPUs"
             + (f" ({m['physical_cpus']} physical)" if m.get("physical_cpus") else "")
             + f", {m.get('ram_gb', '?')} GB RAM; {m['platform']}; Python {m['python']}.", "",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".", "",
             f"rfmx commit {m['git'].get('commit')}{' (with uncommitted changes)' if m['git'].get('dirty') else ''}. "
             f"Load average at start {s.get('load_start')}, at end {s.get('load_end')}."]
    if s.get("note"):
        lines += ["", f"Note: {s['note']}"]
    lines += ["", f"Each contender ran in its own fresh process: {s['warmup']} warm-up run(s), then {s['repeats']} "
              "measured run(s); medians shown (min–max of wall time in brackets). Wall and CPU time cover the work "
              "only (imports and one warm-up call on a tiny input in the same process excluded, so rfmx's Numba "
              "cache load is not counted: see the overhead table); peak RSS is the whole process's. Ratios are to rfmx in the same run. "
              "A contender whose result does not match the reference checksum gets no numbers.", ""]
    for b in results["benchmarks"]:
        lines += [f"## {bench_title(b)}", ""] + bench_table(b) + [""]
    for series, title in (("rows", "Scaling with rows (aggregate)"), ("customers", "Scaling with customers (aggregate)")):
        t = series_tables(results, series)
        if t:
            lines += [f"## {title}", ""] + t
            if results.get("plots", {}).get(series):
                lines += [f"![{title}]({Path(results['plots'][series]).name})", ""]
    if results.get("cold"):
        lines += ["## rfmx fresh-process overhead", "",
                  "Not in the tables above: rfmx's set-up in a fresh process, `import rfmx` and "
                  "`rfmx.warmup()`, which imports Numba and loads every aggregation kernel from the disk cache, "
                  "or compiles them when the cache is empty (`import rfmx` alone imports neither); then the first "
                  "call on the 20,000-row warm-up file.", "",
                  "| ids | import + warmup(), Numba cache warm s | import + warmup(), cache empty (compiling) s "
                  "| first call after warmup() s |",
                  "|---|---:|---:|---:|"]
        for c in results["cold"]:
            lines.append(f"| {c['ids']} | {_s(c.get('import_s'))} | {_s(c.get('cold_import_s'))} | "
                         f"{_s(c.get('warm_first_call_s'))} |")
        lines.append("")
    if results.get("messages"):
        lines += ["## Skipped", ""] + [f"- {msg}" for msg in results["messages"]] + [""]
    return "\n".join(lines)


def write(results, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    for path, text in ((js, json.dumps(results, indent=2, default=str)), (md, markdown(results))):
        tmp = Path(f"{path}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return js, md


def plot(results, series: str, path: Path) -> str | None:
    """Wall time, CPU time and peak RSS against rows or customers (log-log), one line per contender and id type."""
    benches = [b for b in results["benchmarks"] if b["workload"] == "aggregate" and b.get("series") == series]
    key = "rows" if series == "rows" else "customers"
    points: dict[tuple[str, str], list] = {}
    labels = {}
    for b in benches:
        for e in b["contenders"]:
            if e["status"] == "ok" and b.get(key):
                points.setdefault((e["name"], b["ids"]), []).append((b[key], e["median"]))
                labels[e["name"]] = e["label"]
    if not any(len(p) > 1 for p in points.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = {}
    for (name, ids), pts in sorted(points.items()):
        pts.sort(key=lambda p: p[0])
        xs = [p[0] for p in pts]
        color = colors.setdefault(name, f"C{len(colors)}")
        style = "-" if ids == "int" else "--"
        for ax, metric, scale in ((axes[0], "wall_s", 1), (axes[1], "cpu_s", 1), (axes[2], "peak_rss_bytes", MB)):
            ax.plot(xs, [p[1][metric] / scale for p in pts], style, marker="o", color=color,
                    label=f"{labels[name]} ({ids} ids)")
    for ax, ylabel in ((axes[0], "wall time, s (median)"), (axes[1], "CPU time, s (median)"), (axes[2], "peak RSS, MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("order rows" if series == "rows" else "customers")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"rfmx aggregate vs peers: scaling with {key} ({results['suite']['started']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
