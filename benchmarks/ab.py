"""Old code against new code on one workload, interleaved in one run.

    python benchmarks/ab.py --a /path/to/old/venv/bin/python --b python orders.parquet --repeats 7

Each measurement is a fresh process of the given interpreter (each with its own rfmx
installed, e.g. a virtualenv per git worktree) timing ``rfmx.aggregate(FILE)`` after the
kernels are loaded: a first unmeasured run per interpreter compiles or loads them.  Runs
alternate A, B, A, B, ... so that drifts of the machine (other load, page cache, turbo)
fall on both sides; the report gives every time, the medians and B / A.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess

_CHILD = """
import sys, time
import rfmx
rfmx.aggregate(rfmx.generate_orders(1000, seed=1))  # kernels compiled or loaded from the cache
start = time.perf_counter()
table = rfmx.aggregate(sys.argv[1]{threads})
print(time.perf_counter() - start, table.num_rows)
"""


def run_once(python: str, path: str, threads: int | None) -> tuple[float, int]:
    code = _CHILD.format(threads=f", threads={threads}" if threads else "")
    out = subprocess.run([python, "-c", code, path], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("orders", help="a Parquet order history")
    ap.add_argument("--a", required=True, help="interpreter with the old rfmx")
    ap.add_argument("--b", required=True, help="interpreter with the new rfmx")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    times = {"A": [], "B": []}
    customers = {}
    for label, python in (("A", args.a), ("B", args.b)):  # compile / fill caches, unmeasured
        customers[label] = run_once(python, args.orders, args.threads)[1]
    if customers["A"] != customers["B"]:
        raise SystemExit(f"A and B disagree on the customer count: {customers}")
    for i in range(args.repeats):
        for label, python in (("A", args.a), ("B", args.b)) if i % 2 == 0 else (("B", args.b), ("A", args.a)):
            seconds, _ = run_once(python, args.orders, args.threads)
            times[label].append(seconds)
            print(f"{label} run {i + 1}: {seconds:.3f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"A (old): median {med['A']:.3f} s of {', '.join(f'{t:.2f}' for t in times['A'])}")
    print(f"B (new): median {med['B']:.3f} s of {', '.join(f'{t:.2f}' for t in times['B'])}")
    print(f"B / A = {med['B'] / med['A']:.3f} ({customers['A']:,} customers)")


if __name__ == "__main__":
    main()
