"""Where compiled kernels are cached: a user cache folder, never the installed package."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rfmx.kernels
from rfmx.kernels import _policy

KERNELS = Path(rfmx.kernels.__file__).parent

# compiles one small serial kernel and checks its result, in a fresh process
RUN_KERNEL = """
import numpy as np
from rfmx.kernels.scores import float_order_keys
out = np.empty(3, dtype=np.int64)
float_order_keys(np.array([2.0, -1.0, 0.5]), 1.0, out)
assert np.argsort(out).tolist() == [1, 2, 0], out
print("ok")
"""


def _files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _run(env_changes: dict, cwd) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RFMX_CACHE_DIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(env_changes, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-c", RUN_KERNEL], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def _cache_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_kernels_are_cached_in_the_configured_folder_not_in_the_package(tmp_path):
    before = _files(KERNELS)
    _run({"RFMX_CACHE_DIR": str(tmp_path / "cache")}, tmp_path)
    assert _files(KERNELS) == before  # nothing written into (or beside) the package's kernels
    names = _cache_files(tmp_path / "cache")
    assert any(n.startswith("scores.float_order_keys") and n.endswith(".nbi") for n in names), names
    assert any(n.startswith("scores.float_order_keys") and n.endswith(".nbc") for n in names), names
    # one folder per source tree and kernel fingerprint: other installs or versions never collide
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name.startswith("kernels_") and folder.name.endswith(_policy._kernels_fingerprint()[:16])


def test_default_folder_is_the_user_cache_and_numba_cache_dir_is_respected(tmp_path):
    _run({"XDG_CACHE_HOME": str(tmp_path / "xdg")}, tmp_path)
    assert _cache_files(tmp_path / "xdg" / "rfmx" / "numba")
    _run({"XDG_CACHE_HOME": str(tmp_path / "xdg2"), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}, tmp_path)
    assert _cache_files(tmp_path / "numba") and not (tmp_path / "xdg2").exists()


def test_kernels_still_run_without_a_writable_cache_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = _files(KERNELS)
    _run({"RFMX_CACHE_DIR": str(blocker / "cache")}, tmp_path)  # cannot be created
    _run({"RFMX_CACHE_DIR": ""}, tmp_path)  # disk cache turned off
    assert _files(KERNELS) == before
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


@pytest.mark.parametrize("env, want", [
    ({"RFMX_CACHE_DIR": "/c/rfmx", "NUMBA_CACHE_DIR": "/c/numba", "XDG_CACHE_HOME": "/c/xdg"}, "/c/rfmx"),
    ({"XDG_CACHE_HOME": "/c/xdg"}, "/c/xdg/rfmx/numba"),
    ({"XDG_CACHE_HOME": "relative/ignored", "HOME": "/home/u"}, "/home/u/.cache/rfmx/numba"),
    ({"RFMX_CACHE_DIR": ""}, None),
])
def test_cache_dir_precedence(monkeypatch, env, want):
    for k in ("RFMX_CACHE_DIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # Numba reads NUMBA_CACHE_DIR into its config when it is imported
    monkeypatch.setattr(_policy.numba.config, "CACHE_DIR", env.get("NUMBA_CACHE_DIR", ""))
    assert _policy.cache_dir() == want


def test_kernels_use_no_blas():
    # The console script answers Numba's BLAS probe "no" without importing SciPy
    # (cli/main.py, _skip_numba_blas_probe): a kernel calling np.dot, np.linalg or the @
    # operator would compile in tests but fail in the `rfmx` command.
    import re

    kernels = Path(__file__).resolve().parents[1] / "kernels"
    blas = re.compile(r"np\.(dot|vdot|inner|outer|matmul|linalg|einsum)\b|[\w\)\]] @ [\w\(]")
    used = [f"{p.name}:{i}: {line.strip()}" for p in sorted(kernels.glob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if blas.search(line.split("#")[0]) and not line.lstrip().startswith("@")]
    assert not used, "kernels must not use BLAS:\n" + "\n".join(used)


CONSOLE = """
import sys
from rfmx.cli.main import console_main
sys.argv = ["rfmx"] + sys.argv[1:]
console_main()
"""


def test_console_script_exits_promptly_with_its_output_whole(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    orders = tmp_path / "orders.parquet"
    n = 50_000
    pq.write_table(pa.table({"customer_id": pa.array([i % 997 for i in range(n)], pa.int64()),
                             "order_time": pa.array([1_700_000_000_000_000 + i * 1_000_000 for i in range(n)],
                                                    pa.timestamp("us")),
                             "amount": pa.array([1.25] * n)}), orders)

    def console(*args):
        return subprocess.run([sys.executable, "-c", CONSOLE, *args], capture_output=True, timeout=600)

    # stdout written in full before the process ends (no data lost in buffers)
    r = console("aggregate", str(orders), "-o", "-", "--format", "csv")
    assert r.returncode == 0, r.stderr
    table = pcsv.read_csv(pa.py_buffer(r.stdout))
    assert table.num_rows == 997 and pa.compute.sum(table["n_orders"]).as_py() == n
    # a file output is committed, and an error still exits non-zero with one line
    out = tmp_path / "rfm.parquet"
    assert console("aggregate", str(orders), "-o", str(out)).returncode == 0
    assert pq.read_table(out).num_rows == 997
    r = console("aggregate", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "x.parquet"))
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and "missing.parquet" in r.stderr.decode()
    assert console("aggregate", "--no-such-option").returncode == 2
    # SciPy, when installed, is not imported by the command (Numba's BLAS probe is skipped)
    probe = "import sys, runpy; sys.argv = ['rfmx', 'aggregate', %r, '-o', %r]\n" % (str(orders), str(tmp_path / "y.parquet"))
    probe += ("from rfmx.cli.main import main, _skip_numba_blas_probe\n_skip_numba_blas_probe()\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\nprint('scipy.linalg' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
