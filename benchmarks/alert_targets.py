"""A daily alert run against a full rescan, measured side by side in one run.

    python benchmarks/alert_targets.py orders_1e8.parquet --repeats 3 [--every day]

Setup (not timed): the order file is split into its history and its last day
(``history.parquet``, ``day.parquet`` in a work folder), and ``rfmx alerts history.parquet
--every EVERY --state-out state.arrow`` saves the state a daily job would have.

Timed, each a fresh ``rfmx`` process, alternated so that drifts of the machine fall on both:

- ``full rescan``: ``rfmx alerts FILE --every EVERY -o full.parquet`` — the whole history
  read again, the state built, the last day's alerts computed;
- ``daily run``: ``rfmx alerts day.parquet --state-in copy.arrow --state-out copy.arrow -o
  daily.parquet`` — the saved state loaded, the day folded in, the alerts computed, the
  state saved (``copy.arrow`` is a fresh copy of ``state.arrow`` before each run, not timed).

Both must report the same alerts (checked).  Reported: median wall seconds, peak RSS, the
ratio daily / full (the target: 0.25 or less), and the state file's size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

_CHILD = """
import resource, sys
from rfmx.cli.main import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's resident memory at the fork
    print("PEAK_RSS_MB", [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0], file=sys.stderr)
"""


def rfmx(*args) -> tuple[float, float, str]:
    """Run ``rfmx ARGS`` in a fresh process: (wall seconds, peak RSS MB, stderr)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"rfmx {' '.join(map(str, args))} failed:\n{out.stderr}")
    peak = float([line for line in out.stderr.splitlines() if line.startswith("PEAK_RSS_MB")][-1].split()[1])
    return seconds, peak, out.stderr


def split(path: str, work: str) -> tuple[str, str, int]:
    """``history.parquet`` (every line before the last day) and ``day.parquet`` (the last day)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    data = ds.dataset(path)
    last = pc.max(data.to_table(columns=["order_time"]).column("order_time")).as_py()
    day = last.replace(hour=0, minute=0, second=0, microsecond=0)
    history, today = os.path.join(work, "history.parquet"), os.path.join(work, "day.parquet")
    t = ds.field("order_time")
    pq.write_table(data.to_table(filter=t >= day), today)
    with pq.ParquetWriter(history, data.schema) as w:
        for batch in data.to_batches(filter=t < day, batch_size=1 << 20):
            w.write_batch(batch)
    return history, today, pq.ParquetFile(today).metadata.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("orders")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--every", default="day", choices=["day", "week", "month"])
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="rfmx-alerts-")
    os.makedirs(work, exist_ok=True)
    history, today, day_rows = split(args.orders, work)
    state = os.path.join(work, "state.arrow")
    seconds, peak, _ = rfmx("alerts", history, "--every", args.every, "--state-out", state)
    print(f"setup: history state saved in {seconds:.1f} s (peak RSS {peak:,.0f} MB), "
          f"{os.path.getsize(state) / 2**20:,.0f} MB; the last day has {day_rows:,} lines", flush=True)
    copy = os.path.join(work, "copy.arrow")
    jobs = {
        "full rescan": ["alerts", args.orders, "--every", args.every, "-o", os.path.join(work, "full.parquet")],
        "daily run": ["alerts", today, "--state-in", copy, "--state-out", copy, "--every", args.every,
                      "-o", os.path.join(work, "daily.parquet")],
    }
    times: dict = {j: [] for j in jobs}
    peaks: dict = {j: [] for j in jobs}
    order = list(jobs)
    for i in range(args.repeats):
        for job in order if i % 2 == 0 else order[::-1]:
            if job == "daily run":
                shutil.copyfile(state, copy)
            seconds, peak, _ = rfmx(*jobs[job])
            times[job].append(seconds)
            peaks[job].append(peak)
            print(f"{job} run {i + 1}: {seconds:.2f} s, peak RSS {peak:,.0f} MB", flush=True)
    import pyarrow.parquet as pq

    full, daily = pq.read_table(os.path.join(work, "full.parquet")), pq.read_table(os.path.join(work, "daily.parquet"))
    same = full.equals(daily)
    med = {j: statistics.median(v) for j, v in times.items()}
    print("\n| job | wall s (median) | runs | peak RSS MB (max) |\n|---|---:|---|---:|")
    for job in order:
        print(f"| {job} | {med[job]:.2f} | {', '.join(f'{t:.2f}' for t in times[job])} | {max(peaks[job]):,.0f} |")
    print(f"\ndaily run / full rescan = {med['daily run'] / med['full rescan']:.2f} (target <= 0.25); "
          f"{full.num_rows:,} alerts, the same in both: {same}")
    if not args.work:
        shutil.rmtree(work)
    if not same:
        raise SystemExit("the daily run and the full rescan report different alerts")


if __name__ == "__main__":
    main()
