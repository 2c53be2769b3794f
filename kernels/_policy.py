"""The one place that decides how rfmx kernels are compiled.

Every kernel in ``rfmx.kernels`` is decorated with :func:`kernel` and nothing else, so
compile options (nopython, nogil, on-disk cache) change in one place.  Nothing here
compiles at import: Numba compiles a kernel on its first call and caches the machine
code on disk, so a fresh process pays only a cache load.

Tunables (thread counts, window bounds, table sizes) are always kernel *arguments*:
a module global read inside a kernel would be frozen into the cached machine code.
"""
from __future__ import annotations

import contextlib

import numba

__all__ = ["kernel", "threads"]


def kernel(fn=None, *, parallel: bool = False):
    """Compile ``fn`` as an rfmx kernel: nopython, nogil, cached; ``parallel`` enables prange.

    Serial kernels release the GIL so Arrow's decoding threads (or Dask's workers) keep
    running beside them; parallel kernels are only called from one Python thread at a
    time (Numba's thread pools abort when a ``parallel=True`` kernel is entered from two
    Python threads at once).
    """
    def wrap(f):
        return numba.njit(f, nogil=True, cache=True, parallel=parallel, error_model="numpy")
    return wrap(fn) if fn is not None else wrap


@contextlib.contextmanager
def threads(n: int | None):
    """Run the block with ``n`` Numba threads (None: leave the setting alone); restores it after."""
    if n is None:
        yield numba.get_num_threads()
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    previous = numba.get_num_threads()
    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(previous)

