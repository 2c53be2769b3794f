"""The report's cost against the ``rfmx score`` that made its input, measured side by side.

    python benchmarks/report_targets.py orders_1e8.parquet --repeats 3
    python benchmarks/report_targets.py orders_1e8.parquet --timeline snapshots.parquet

Each measurement is a whole command in a fresh process, as a user runs it, the two jobs
alternating so that drifts of the machine fall on both (after one warm-up of each on a
small file, so compiled kernels and the cached Vega script bundle are in place):

- ``score``: ``rfmx score FILE -o scores.parquet``;
- ``report``: ``rfmx report --scores scores.parquet [--timeline SNAPSHOTS] -o report.html``.

Reported: median wall seconds and peak RSS per job, the ratio report / score (the
project's target: <= 0.15 for 7.25 M customers) and the size of the HTML file.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the CLI and reports its own peak RSS (in MB) to the file named by RFMX_BENCH_RSS.
_CHILD = """
import os, resource, sys
from rfmx.cli.main import main
try:
    main(sys.argv[1:])
finally:
    with open(os.environ["RFMX_BENCH_RSS"], "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""


def run(args: list[str], work: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``rfmx ARGS`` in a fresh process."""
    rss_file = work / "rss.txt"
    env = dict(os.environ, RFMX_BENCH_RSS=str(rss_file))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"rfmx {' '.join(map(str, args))} failed:\n{done.stderr}")
    return seconds, float(rss_file.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("orders", help="order lines (as rfmx score reads them)")
    ap.add_argument("--timeline", default=None, help="also give these snapshots (rfmx timeline -o) to the report")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=None, help="folder for scores.parquet and report.html [default: a temp folder]")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="rfmx-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scores, page = work / "scores.parquet", work / "report.html"
    jobs = {"score": ["score", args.orders, "-o", scores],
            "report": ["report", "--scores", scores, "-o", page]
            + (["--timeline", args.timeline] if args.timeline else [])}

    # warm-up: kernels compiled into the cache, the Vega bundle cached, on a small file
    tiny = work / "warmup.parquet"
    run(["generate", tiny, "--rows", "20000"], work)
    run(["score", tiny, "-o", work / "warmup-scores.parquet"], work)
    run(["report", "--scores", work / "warmup-scores.parquet", "-o", work / "warmup.html"], work)
    run(jobs["score"], work)  # the report's input exists before the first report

    times: dict = {job: [] for job in jobs}
    peaks: dict = {job: [] for job in jobs}
    order = list(jobs)
    for i in range(args.repeats):
        for job in order if i % 2 == 0 else order[::-1]:
            seconds, rss = run(jobs[job], work)
            times[job].append(seconds)
            peaks[job].append(rss)
            print(f"{job} run {i + 1}: {seconds:.2f} s, peak RSS {rss:,.0f} MB", flush=True)
    med = {job: statistics.median(v) for job, v in times.items()}
    import pyarrow.parquet as pq

    customers = pq.read_metadata(scores).num_rows
    print(f"\n{args.orders}: {customers:,} customers" + (f"; timeline {args.timeline}" if args.timeline else ""))
    print("\n| job | wall s (median) | runs | peak RSS MB (max) |\n|---|---:|---|---:|")
    for job in order:
        print(f"| {job} | {med[job]:.2f} | {', '.join(f'{t:.2f}' for t in times[job])} | {max(peaks[job]):,.0f} |")
    print(f"\nreport / score = {med['report'] / med['score']:.3f} (target <= 0.15)")
    print(f"HTML: {page.stat().st_size / 1e6:.2f} MB ({page})")


if __name__ == "__main__":
    main()
