"""``python -m benchmarks``: rfmx side by side with pandas, Polars, DuckDB, scikit-learn and lifetimes.

Run from the repository top (``benchmarks/`` is a plain folder, not installed).  Peers are
optional (``pip install -e '.[bench]'``); a missing one is skipped with a message.  See
docs/benchmarks.md for what is measured and how.

    python -m benchmarks                              # 1e6 and 1e7 rows, int and string ids
    python -m benchmarks --rows 1e6,1e7,1e8 --skip pandas
    python -m benchmarks --rows 1e6 --workloads aggregate --repeats 5 --customers none
    python -m benchmarks --rows 1e6 --ids int --workloads timeline --customers none
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import report
from .child import maxrss_bytes
from .contenders import PEER_MODULES, REFERENCE, ROWS_ONLY, WORKLOADS, differences
from .data import Dataset, child_env, ensure_derived, ensure_orders, given_dataset, rows_label, warmup_dataset

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ALL_WORKLOADS = list(WORKLOADS)
EXACT_WORKLOADS = ("aggregate", "scores", "incremental", "timeline", "dask")
METRICS = ("wall_s", "cpu_s", "peak_rss_bytes")


def parse_count(text: str) -> int:
    """'1e6', '2E7', '1_000_000', '20000' -> int."""
    t = text.strip().replace("_", "").replace(",", "")
    try:
        value = float(t) if any(c in t for c in "eE.") else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole count: {text!r}")
    return int(value)


def parse_counts(text: str) -> list[int]:
    if text.strip().lower() in ("", "none", "0"):
        return []
    return sorted({parse_count(t) for t in text.split(",") if t.strip()})


def parse_names(allowed):
    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip() and t.strip().lower() != "none"]
        bad = [n for n in names if n not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
        return names
    return parse


CONTENDER_NAMES = sorted({n for w in WORKLOADS.values() for n in w} | {"sklearn", "lifetimes"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="rfmx side by side with pandas, Polars, DuckDB, scikit-learn and lifetimes: each contender in "
                    "its own process, same data, same definitions, results checked against each other.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", "--scale", dest="rows", type=parse_counts, default=parse_counts("1e6,1e7"),
                   metavar="N,N", help="order rows of the generated histories (e.g. 1e6,1e7,1e8)")
    p.add_argument("--orders", type=Path, action="append", default=[], metavar="PATH",
                   help="also benchmark this existing order history (a Parquet file, or a directory of them, with "
                        "customer_id, order_time, amount), e.g. the 1e9-row recipe of docs/benchmarks.md; repeatable")
    p.add_argument("--ids", type=parse_names(["int", "string"]), default=["int", "string"],
                   help="customer id types (int64 and/or string ids)")
    p.add_argument("--workloads", type=parse_names(ALL_WORKLOADS), default=ALL_WORKLOADS,
                   help="workloads to run: " + ", ".join(ALL_WORKLOADS))
    p.add_argument("--skip", type=parse_names(CONTENDER_NAMES + ALL_WORKLOADS), action="extend", default=[],
                   metavar="NAME,NAME", help="contenders or workloads to leave out (e.g. pandas at 1e8 rows): "
                   + ", ".join(CONTENDER_NAMES))
    p.add_argument("--repeats", type=int, default=3, help="measured runs per contender (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (warm the page and Numba caches)")
    p.add_argument("--customers", type=parse_counts, default=parse_counts("1e5,1e6,1e7"), metavar="N,N",
                   help="customer counts of the scaling series against customers (aggregate, int64 ids; 'none' to skip)")
    p.add_argument("--customers-rows", type=parse_count, default=parse_count("2e7"), metavar="N",
                   help="order rows of the histories in the customers series")
    p.add_argument("--kmeans-iter", type=int, default=20, help="Lloyd iterations (tol=0: both stop here or converge)")
    p.add_argument("--seed", type=int, default=0, help="rfmx generate --seed")
    p.add_argument("--data-dir", type=Path, default=HERE / "data", help="where generated inputs are cached")
    p.add_argument("--out", type=Path, default=HERE / "results", help="where the Markdown, JSON and PNG go")
    p.add_argument("--name", default=None, help="result file name stem (default: bench-YYYYmmdd-HHMMSS)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before one run is killed")
    p.add_argument("--no-cold", dest="cold", action="store_false",
                   help="do not measure rfmx's compile time from an empty Numba cache")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="no PNG plots")
    p.add_argument("--note", default="", help="a note recorded with the results (e.g. 'machine shared')")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--render", type=Path, metavar="RESULTS.json",
                   help="run nothing: write the Markdown and plots of saved results again (beside the JSON)")
    return p


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Suite:
    def __init__(self, args):
        self.args = args
        self.data_dir = args.data_dir.resolve()
        self.out_dir = args.out.resolve()
        self.tmp = Path(tempfile.mkdtemp(prefix="rfmx-bench-"))
        self.n_children = 0
        self.name = args.name or time.strftime("bench-%Y%m%d-%H%M%S")
        self.results = {
            "suite": {"command": "python -m benchmarks " + shlex.join(sys.argv[1:]), "started": time.strftime("%Y-%m-%d %H:%M"),
                      "repeats": args.repeats, "warmup": args.warmup, "note": args.note,
                      "load_start": report.load_average(), "kmeans_iter": args.kmeans_iter},
            "machine": report.machine_info(REPO),
            "datasets": {},
            "benchmarks": [],
            "cold": [],
            "messages": [],
        }

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def note_skip(self, msg: str) -> None:
        if msg not in self.results["messages"]:
            self.results["messages"].append(msg)
            self.log("skip: " + msg)

    # --- processes ------------------------------------------------------------------

    def run_child(self, spec: dict, env_extra: dict | None = None) -> dict:
        """Run one contender once in a fresh interpreter; its own measurements plus the OS's view of it."""
        self.n_children += 1
        spec_path = self.tmp / f"spec-{self.n_children}.json"
        result_path = self.tmp / f"result-{self.n_children}.json"
        err_path = self.tmp / f"stderr-{self.n_children}.txt"
        spec_path.write_text(json.dumps(spec))
        timed_out = threading.Event()
        with open(err_path, "wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.child", "run", str(spec_path), str(result_path)],
                                    cwd=self.tmp, env=child_env(REPO, env_extra), stdout=subprocess.DEVNULL, stderr=err)

            def kill():
                timed_out.set()
                proc.kill()

            timer = threading.Timer(self.args.timeout, kill)
            timer.start()
            try:
                # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix all children).
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
        if result_path.exists():
            res = json.loads(result_path.read_text())
        else:
            tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
            if timed_out.is_set():
                res = {"status": "timeout", "message": f"killed after {self.args.timeout:g} s (--timeout)"}
            elif proc.returncode == -9:
                res = {"status": "failed", "message": "killed (SIGKILL: out of memory?)"}
            else:
                res = {"status": "failed", "message": f"exit code {proc.returncode}: {' | '.join(tail)}"}
        res["process"] = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                          "peak_rss_bytes": maxrss_bytes(usage), "returncode": proc.returncode}
        return res

    # --- one contender, one benchmark --------------------------------------------------

    def skipped_reason(self, workload: str, name: str) -> str | None:
        if name in self.args.skip:
            return "left out with --skip"
        peer = PEER_MODULES.get(name)
        if peer and importlib.util.find_spec(peer) is None:
            return f"{peer} is not installed; pip install -e '.[bench]'"
        return None

    def bench_contender(self, workload: str, name: str, inputs: dict, warm_inputs: dict, context: str,
                        customers: int | None = None) -> dict:
        cls = WORKLOADS[workload][name]
        entry = {"name": name, "label": cls.label}
        reason = self.skipped_reason(workload, name)
        if reason:
            entry.update(status="skipped", message=reason)
            if reason != "left out with --skip":
                self.note_skip(f"{workload} / {cls.label}: {reason}")
            return entry
        params = {"kmeans_iter": self.args.kmeans_iter, "customers": customers}
        runs, first_calls, imports = [], [], []
        total = self.args.warmup + self.args.repeats
        for i in range(total):
            spec = {"workload": workload, "contender": name, "inputs": inputs, "warm_inputs": warm_inputs,
                    "params": params, "checksum": i == 0}
            res = self.run_child(spec)
            if res["status"] != "ok":
                entry.update(status=res["status"], message=res.get("message", ""))
                if res.get("traceback"):
                    entry["traceback"] = res["traceback"]
                if res["status"] == "skipped":
                    self.note_skip(f"{workload} / {cls.label}: {res['message']}")
                else:
                    self.log(f"{context} {cls.label}: {res['status']}: {res.get('message')}")
                return entry
            if i == 0:
                entry["checksum"] = res.get("checksum")
                entry["checksum_s"] = res.get("checksum_s")
                entry["extra"] = res.get("extra", {})
            first_calls.append(res.get("first_call_s"))
            imports.append(res.get("import_s"))
            if i >= self.args.warmup:
                runs.append({k: res.get(k) for k in METRICS + ("first_call_s", "import_s", "rss_before_bytes", "breakdown")}
                            | {"process": res["process"]})
            self.log(f"{context} {cls.label}: run {i + 1}/{total}: {res['wall_s']:.3f} s wall, {res['cpu_s']:.3f} s CPU, "
                     f"{res['peak_rss_bytes'] / report.MB:,.0f} MB{'' if i >= self.args.warmup else ' (warm-up)'}")
        entry["status"] = "ok"
        entry["runs"] = runs
        entry["median"] = {k: _median([r[k] for r in runs]) for k in METRICS}
        walls = [r["wall_s"] for r in runs]
        entry["min_wall_s"], entry["max_wall_s"] = min(walls), max(walls)
        entry["first_call_s"] = _median(first_calls)
        entry["import_s"] = _median(imports)
        phases = [r["breakdown"] for r in runs if r.get("breakdown")]
        if phases:  # median seconds of each phase of the run (e.g. rfmx: state, snapshots)
            entry["breakdown"] = {k: _median([p.get(k) for p in phases]) for k in phases[0]}
        if workload == "kmeans" and entry["extra"].get("n_iter"):
            entry["per_iter_s"] = entry["median"]["wall_s"] / entry["extra"]["n_iter"]
        return entry

    def check(self, bench: dict) -> None:
        """Compare checksums; a contender that disagrees with the reference loses its numbers."""
        workload = bench["workload"]
        ok = [e for e in bench["contenders"] if e["status"] == "ok"]
        for e in ok:
            if e["name"] in ROWS_ONLY:
                rows = (e.get("checksum") or {}).get("rows_read")
                if rows == bench["rows"]:
                    e["check"] = "rows"
                else:
                    e.update(status="disagrees", differences=[f"read {rows} rows, the file has {bench['rows']}"])
        ok = [e for e in ok if e["name"] not in ROWS_ONLY and e["status"] == "ok"]
        if len(ok) < 2:
            for e in ok:
                e["check"] = "unchecked"
            return
        order = REFERENCE[workload]
        rank = {n: i for i, n in enumerate(order)}
        if workload in EXACT_WORKLOADS:
            groups: dict[str, list] = {}
            for e in ok:
                groups.setdefault(json.dumps(e["checksum"], sort_keys=True), []).append(e)
            best = max(groups.values(), key=lambda g: (len(g), -min(rank.get(e["name"], 99) for e in g)))
            ref = min(best, key=lambda e: rank.get(e["name"], 99))
        else:
            ref = min(ok, key=lambda e: rank.get(e["name"], 99))
        bench["reference"] = ref["name"]
        for e in ok:
            diffs = differences(workload, ref["checksum"], e["checksum"])
            if diffs:
                e.update(status="disagrees", differences=diffs)
                self.log(f"{bench_label(bench)}: {e['label']} DISAGREES with {ref['label']}: {'; '.join(diffs[:4])}")
            else:
                e["check"] = "agrees"

    @staticmethod
    def ratios(bench: dict) -> None:
        base = next((e for e in bench["contenders"] if e["name"] == "rfmx" and e["status"] == "ok"), None)
        if base is None:
            return
        for e in bench["contenders"]:
            if e["status"] == "ok":
                e["ratios"] = {k: (e["median"][k] / base["median"][k] if base["median"][k] else None) for k in METRICS}

    def run_bench(self, workload: str, ds: Dataset, inputs: dict, warm_inputs: dict, series: str | None = None) -> dict:
        info = self.results["datasets"][ds.name]
        bench = {"workload": workload, "dataset": ds.name, "rows": ds.rows, "ids": ds.ids,
                 "customers": info.get("customers"), "series": series, "contenders": []}
        context = f"{workload} {rows_label(ds.rows)} {ds.ids}:"
        for name in WORKLOADS[workload]:
            entry = self.bench_contender(workload, name, inputs, warm_inputs, context, customers=info.get("customers"))
            bench["contenders"].append(entry)
            # Counted by the first contender with a result; the bound sizes its rows by it.
            counted = (entry.get("checksum") or {}).get("customers") if entry["status"] == "ok" else None
            if counted is not None and not info.get("customers"):
                info["customers"] = bench["customers"] = counted
        self.check(bench)
        self.ratios(bench)
        self.results["benchmarks"].append(bench)
        self.save()
        if not self.args.quiet:
            print("\n".join(["", f"### {report.bench_title(bench)}", ""] + report.bench_table(bench) + [""]),
                  file=sys.stderr, flush=True)
        return bench

    # --- the plan ----------------------------------------------------------------------

    def dataset(self, ds: Dataset) -> dict:
        info = ensure_orders(ds, self.data_dir, self.log)
        self.results["datasets"].setdefault(ds.name, dict(info))
        return self.results["datasets"][ds.name]

    def wants(self, workload: str) -> bool:
        return workload in self.args.workloads and workload not in self.args.skip

    def run(self) -> int:
        a = self.args
        self.log(f"results -> {self.out_dir}/{self.name}.md; data cache {self.data_dir}")
        warm = {ids: warmup_dataset(ids, a.seed) for ids in a.ids}
        for ids in a.ids:
            self.dataset(warm[ids])
        model_ids = a.ids[0]
        plan = [(Dataset(rows, ids, None, a.seed), ids == model_ids) for rows in a.rows for ids in a.ids]
        plan += [(given_dataset(path), True) for path in a.orders]
        for ds, models in plan:
            if ds.ids not in warm:
                warm[ds.ids] = warmup_dataset(ds.ids, a.seed)
                self.dataset(warm[ds.ids])
            self.run_dataset(ds, warm[ds.ids], models)
        if a.customers and self.wants("aggregate"):
            ids = "int"  # the customers series always uses int64 ids
            if ids not in warm:
                warm[ids] = warmup_dataset(ids, a.seed)
                self.dataset(warm[ids])
            for customers in a.customers:
                ds = Dataset(a.customers_rows, ids, customers, a.seed)
                if customers > a.customers_rows / 1.33:
                    self.note_skip(f"customers series: {customers:,} customers need more than {a.customers_rows:,} rows "
                                   f"(about 1.33 lines per order; raise --customers-rows)")
                    continue
                self.dataset(ds)
                self.run_bench("aggregate", ds, ds.derived(self.data_dir), warm[ids].derived(self.data_dir),
                               series="customers")
        if a.cold and self.wants("aggregate") and "rfmx" not in a.skip:
            self.cold_start(warm)
        self.results["suite"]["load_end"] = report.load_average()
        self.results["suite"]["finished"] = time.strftime("%Y-%m-%d %H:%M")
        if a.plot:
            self.plots()
        js, md = self.save()
        print(report.markdown(self.results))
        self.log(f"wrote {md} and {js}")
        bad = [e for b in self.results["benchmarks"] for e in b["contenders"] if e["status"] in ("disagrees", "failed")]
        return 1 if bad else 0

    def run_dataset(self, ds: Dataset, warm: Dataset, models: bool) -> None:
        """Every wanted workload on one order history (k-means and BG/NBD only when ``models``)."""
        self.dataset(ds)
        paths, warm_paths = ds.derived(self.data_dir), warm.derived(self.data_dir)
        for workload in ("aggregate", "scores", "timeline", "dask"):
            if self.wants(workload):
                self.run_bench(workload, ds, paths, warm_paths, series="rows" if workload == "aggregate" else None)
        if self.wants("incremental"):
            if os.path.isdir(paths["orders"]):
                self.note_skip(f"incremental / {ds.name}: a directory input; the split into 99 % + 1 % needs one file")
            else:
                ensure_derived("split", warm, self.data_dir, REPO, self.log)
                ensure_derived("split", ds, self.data_dir, REPO, self.log)
                self.run_bench("incremental", ds, paths, warm_paths)
        if models:
            for workload in ("kmeans", "bgnbd"):
                if self.wants(workload):
                    ensure_derived("features", ds, self.data_dir, REPO, self.log)
                    self.run_bench(workload, ds, paths, warm_paths)

    def cold_start(self, warm: dict) -> None:
        """rfmx's first call in a fresh process: Numba cache warm (from the runs) and empty (compiling)."""
        for ids, ds in warm.items():
            runs = [e for b in self.results["benchmarks"] if b["workload"] == "aggregate" and b["ids"] == ids
                    for e in b["contenders"] if e["name"] == "rfmx" and e["status"] == "ok"]
            if not runs:
                continue
            cache = self.tmp / f"numba-cache-{ids}"
            cache.mkdir()
            self.log(f"rfmx {ids} ids: first call with an empty Numba cache (compiling)")
            paths = ds.derived(self.data_dir)
            res = self.run_child({"workload": "aggregate", "contender": "rfmx", "inputs": paths, "warm_inputs": paths,
                                  "checksum": False}, env_extra={"NUMBA_CACHE_DIR": str(cache)})
            shutil.rmtree(cache, ignore_errors=True)
            self.results["cold"].append({
                "ids": ids, "import_s": runs[0].get("import_s"), "warm_first_call_s": runs[0].get("first_call_s"),
                "cold_first_call_s": res.get("first_call_s") if res["status"] == "ok" else None,
                "cold_import_s": res.get("import_s") if res["status"] == "ok" else None,
                "cold_status": res["status"], "cold_message": res.get("message")})

    def plots(self) -> None:
        self.results["plots"] = {}
        for series in ("rows", "customers"):
            try:
                path = report.plot(self.results, series, self.out_dir / f"{self.name}-{series}.png")
            except ImportError as exc:
                self.note_skip(f"plots: matplotlib is not installed ({exc}); pip install -e '.[bench]'")
                return
            if path:
                self.results["plots"][series] = path

    def save(self):
        return report.write(self.results, self.out_dir, self.name)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def bench_label(bench: dict) -> str:
    return f"{bench['workload']} {rows_label(bench['rows'])} {bench['ids']}"


def render(path: Path, plot: bool) -> int:
    """Markdown and plots of a saved results JSON, written beside it (after a change of format)."""
    results = json.loads(path.read_text())
    name = path.stem
    if plot:
        results["plots"] = {}
        for series in ("rows", "customers"):
            try:
                made = report.plot(results, series, path.parent / f"{name}-{series}.png")
            except ImportError as exc:
                print(f"no plots: matplotlib is not installed ({exc})", file=sys.stderr)
                break
            if made:
                results["plots"][series] = made
    js, md = report.write(results, path.parent, name)
    print(report.markdown(results))
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        return render(args.render, args.plot)
    if args.repeats < 1 or args.warmup < 0:
        build_parser().error("--repeats must be >= 1 and --warmup >= 0")
    if not args.rows and not args.customers and not args.orders:
        build_parser().error("nothing to run: give --rows, --orders and/or --customers")
    suite = Suite(args)
    try:
        return suite.run()
    except KeyboardInterrupt:
        print("interrupted; partial results in " + str(suite.out_dir / f"{suite.name}.md"), file=sys.stderr)
        return 130
    finally:
        suite.close()


if __name__ == "__main__":
    sys.exit(main())
