"""The timeline's cost against the one-moment commands, measured side by side in one run.

    python benchmarks/timeline_targets.py orders_1e8.parquet --repeats 3

Each measurement is a fresh process (kernels loaded from the cache by a warm-up on a tiny
input first), alternating the four jobs so that drifts of the machine fall on all:

- ``aggregate``: ``rfmx.aggregate(FILE)``;
- ``timeline build``: ``rfmx.build_state(FILE, state=TimelineState(period="month"))``;
- ``score``: ``rfmx.score(FILE)`` (aggregate + scores + segments);
- ``timeline 24``: the build, then every monthly snapshot scored (``score_table``) and the
  migration between consecutive snapshots (``rfmx.migration``) — what
  ``rfmx timeline FILE --every month --migration-out ...`` computes, without the writes.

Reported: median wall seconds and peak RSS per job, and the ratios the project's targets
name (timeline build / aggregate, timeline 24 / score).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

_JOBS = {
    "aggregate": "rfmx.aggregate(path)",
    "timeline build": "rfmx.build_state(path, state=rfmx.TimelineState(period='month'))",
    "score": "rfmx.score(path)",
    "timeline 24": """
state = rfmx.build_state(path, state=rfmx.TimelineState(period='month'))
state.drop_index()
earlier = None
for as_of, table, state_rows in state.snapshots(with_state_rows=True):
    scored = score_table(table)
    if earlier is not None:
        rfmx.migration(earlier, scored, earlier_rows=rows_in_earlier(earlier_rows, state_rows))
    earlier, earlier_rows = scored, state_rows
""",
}

_CHILD = """
import resource, sys, time
import rfmx
from rfmx.migrations import rows_in_earlier
from rfmx.scores import score_table
path = sys.argv[1]
warm = rfmx.build_state(rfmx.generate_orders(2000, seed=1), state=rfmx.TimelineState(period='month'))
for _, t in warm.snapshots():
    score_table(t)
rfmx.score(rfmx.generate_orders(2000, seed=1))
start = time.perf_counter()
{job}
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run(job: str, path: str) -> tuple[float, float]:
    code = _CHILD.format(job=_JOBS[job].strip())
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    seconds, rss = out.stdout.split()
    return float(seconds), float(rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("orders")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    times: dict = {job: [] for job in _JOBS}
    peaks: dict = {job: [] for job in _JOBS}
    jobs = list(_JOBS)
    for i in range(args.repeats):
        for job in jobs if i % 2 == 0 else jobs[::-1]:
            seconds, rss = run(job, args.orders)
            times[job].append(seconds)
            peaks[job].append(rss)
            print(f"{job} run {i + 1}: {seconds:.2f} s, peak RSS {rss:,.0f} MB", flush=True)
    med = {job: statistics.median(v) for job, v in times.items()}
    print("\n| job | wall s (median) | runs | peak RSS MB (max) |\n|---|---:|---|---:|")
    for job in jobs:
        print(f"| {job} | {med[job]:.2f} | {', '.join(f'{t:.2f}' for t in times[job])} | {max(peaks[job]):,.0f} |")
    print(f"\ntimeline build / aggregate = {med['timeline build'] / med['aggregate']:.2f}")
    print(f"timeline 24 (build + 24 scored snapshots + migration) / score = "
          f"{med['timeline 24'] / med['score']:.2f}")


if __name__ == "__main__":
    main()
