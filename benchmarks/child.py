"""One contender, one fresh process: ``python -m benchmarks.child run SPEC.json RESULT.json``.

The child imports the contender (timed apart as ``import_s``), runs it once on the tiny
warm-up input (a small order file, or a slice of the real input for the models;
``first_call_s``: for rfmx this loads the kernels from Numba's disk cache,
or compiles them when the cache is empty), then runs it on the real input and measures
only that run: wall time, CPU time (user + sys of the whole process, all threads) and the
process's peak RSS so far.  The checksum of the result is computed afterwards, outside the
measurement — or, for a contender that streams its result (``set_checksum``), during the
run, with that time (``checksum_cost``: wall and CPU) taken out of the run's numbers; such
a contender also reports how the run's time splits (``breakdown``).
``python -m benchmarks.child prepare ...`` builds derived inputs
(:mod:`benchmarks.data`).
"""
from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback


def _rusage_cpu(ru) -> float:
    return ru.ru_utime + ru.ru_stime


def maxrss_bytes(ru) -> int:
    """``ru_maxrss`` in bytes (kilobytes on Linux, bytes on macOS)."""
    return int(ru.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def own_peak_bytes(ru) -> int:
    """This process's own peak resident memory: Linux's ``VmHWM``, which starts afresh at
    exec, where ``ru_maxrss`` keeps the parent's resident memory at the fork (a parent that
    generated the data would inflate every child's figure); ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return maxrss_bytes(ru)


def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def run(spec: dict) -> dict:
    from .contenders import WORKLOADS, Skip

    result: dict = {"status": "ok"}
    runner = None
    t0 = time.perf_counter()
    try:
        runner = WORKLOADS[spec["workload"]][spec["contender"]](spec.get("params", {}))
        result["import_s"] = time.perf_counter() - t0
        data = None
        if hasattr(runner, "warm_data"):  # models warm up on a slice of the real input
            data = runner.load(spec["inputs"])
            warm = runner.warm_data(data)
        else:
            warm = runner.load(spec["warm_inputs"]) if spec.get("warm_inputs") else None
        if warm is not None:
            t1 = time.perf_counter()
            out = runner.run(warm)
            result["first_call_s"] = time.perf_counter() - t1
            del warm, out
        if data is None:
            data = runner.load(spec["inputs"])
        if hasattr(runner, "set_checksum"):  # a streamed result is fingerprinted as it goes
            runner.set_checksum(bool(spec.get("checksum")))
        gc.collect()
        result["rss_before_bytes"] = _current_rss()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.perf_counter()
        out = runner.run(data)
        wall = time.perf_counter() - w0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = _rusage_cpu(ru1) - _rusage_cpu(ru0)
        streamed_checksum_s = 0.0
        if hasattr(runner, "checksum_cost"):  # fingerprinting done inside the run: not measured
            streamed_checksum_s, checksum_cpu = runner.checksum_cost()
            wall, cpu = wall - streamed_checksum_s, max(0.0, cpu - checksum_cpu)
        result.update(wall_s=wall, cpu_s=cpu, peak_rss_bytes=own_peak_bytes(ru1))
        if hasattr(runner, "breakdown"):
            result["breakdown"] = runner.breakdown()
        if hasattr(runner, "extra"):
            result["extra"] = runner.extra(out)
        if spec.get("checksum"):
            c0 = time.perf_counter()
            result["checksum"] = runner.canonical(out)
            result["checksum_s"] = time.perf_counter() - c0 + streamed_checksum_s
    except Skip as exc:
        result = {"status": "skipped", "message": str(exc)}
    except MemoryError:
        result = {"status": "failed", "message": "MemoryError"}
    except Exception as exc:  # noqa: BLE001 - reported to the runner, which shows it
        result = {"status": "failed", "message": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                  "traceback": traceback.format_exc()}
    finally:
        if runner is not None and hasattr(runner, "close"):
            runner.close()
    return result


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "run":
        with open(argv[1]) as f:
            spec = json.load(f)
        result = run(spec)
        tmp = argv[2] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, argv[2])
        return 0
    if argv and argv[0] == "prepare":
        from .data import prepare

        prepare(argv[1], json.loads(argv[2]))
        return 0
    print("usage: python -m benchmarks.child run SPEC.json RESULT.json | prepare KIND JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
