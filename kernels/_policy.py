"""The one place that decides how rfmx kernels are compiled.

Every kernel in ``rfmx.kernels`` is decorated with :func:`kernel` and nothing else, so
compile options (nopython, nogil, on-disk cache) change in one place.  Nothing here
compiles at import: Numba compiles a kernel on its first call and caches the machine
code on disk in a user cache folder (:func:`cache_dir`, never inside the package), so a
fresh process pays only a cache load.

Tunables (thread counts, window bounds, table sizes) are always kernel *arguments*:
a module global read inside a kernel would be frozen into the cached machine code.
"""
from __future__ import annotations

import contextlib
import os

# Between batches the kernels' OpenMP threads would spin-wait for the next parallel
# region, burning the core that Arrow's decoder needs (measured: ~15 % more CPU for the
# same result); passive waiting hands it over.  Set before Numba starts OpenMP, and only
# as a default: a user's own OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402  (after the OpenMP setting above)
from llvmlite import ir  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

__all__ = ["kernel", "threads", "cache_dir", "prefetch", "load_u64"]


def kernel(fn=None, *, parallel: bool = False, inline: bool = False):
    """Compile ``fn`` as an rfmx kernel: nopython, nogil, cached; ``parallel`` enables prange.

    ``inline`` marks small helpers (one probe, one row update) that are inlined into the
    loops calling them: passing arrays through a real call costs reference-count
    traffic on every row.

    Serial kernels release the GIL so Arrow's decoding threads (or Dask's workers) keep
    running beside them; parallel kernels are only called from one Python thread at a
    time (Numba's thread pools abort when a ``parallel=True`` kernel is entered from two
    Python threads at once).
    """
    def wrap(f):
        dispatcher = numba.njit(f, nogil=True, cache=False, parallel=parallel, error_model="numpy",
                                inline="always" if inline else "never")
        _enable_cache(dispatcher)
        return dispatcher
    return wrap(fn) if fn is not None else wrap


# --- the on-disk cache -------------------------------------------------------------
#
# Where: Numba's default puts cache files beside the source, i.e. into the installed
# package's kernels/__pycache__; `pip uninstall` does not know those files, leaves them
# behind, and the leftover folder turns `rfmx` into an empty namespace package.  rfmx's
# kernels are therefore cached in a user cache directory (cache_dir()) and never in the
# package; if that directory cannot be written, kernels compile in memory in each process.
#
# What: Numba keys a cached kernel on the contents of the kernel's own file only.  The
# kernels inline helpers from other files (a probe from customers.py into rfm.py's update
# kernels), so after a change to a helper - an upgrade that leaves old cache files behind,
# or an edit - the old machine code would be loaded and run.  rfmx's kernels are
# therefore keyed on every file of ``rfmx.kernels`` as well (the fingerprint), and each
# source tree and fingerprint gets its own folder, so two installs or versions of rfmx
# never overwrite each other's entries.  (Numba internals; if they move, kernels compile
# in memory - correct, only slower to start.)

CACHE_DIR_ENV = "RFMX_CACHE_DIR"

_fingerprint: str | None = None


def cache_dir() -> str | None:
    """The folder rfmx's compiled kernels are cached in, or None when there is none.

    ``$RFMX_CACHE_DIR`` if set; else a user's ``NUMBA_CACHE_DIR`` (Numba's own setting);
    else ``$XDG_CACHE_HOME/rfmx/numba`` (``~/.cache/rfmx/numba``; ``%LOCALAPPDATA%`` on
    Windows).  An empty ``RFMX_CACHE_DIR`` turns the disk cache off.
    """
    from pathlib import Path

    if CACHE_DIR_ENV in os.environ:
        return os.environ[CACHE_DIR_ENV] or None
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    base = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
    if not base or not os.path.isabs(base):  # the XDG spec ignores relative paths
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # no home directory (some service accounts)
            return None
    return os.path.join(base, "rfmx", "numba")


def _kernels_fingerprint() -> str:
    global _fingerprint
    if _fingerprint is None:
        import hashlib
        from pathlib import Path

        digest = hashlib.sha256()
        for path in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        _fingerprint = digest.hexdigest()
    return _fingerprint


def _kernel_cache_class():
    from numba.core import caching

    class KernelCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
        """Cache files of one kernel file in ``cache_dir()/<source folder hash>_<fingerprint>``."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            tree = self.get_suitable_cache_subpath(py_file)  # "kernels_<sha1 of the folder>"
            self._cache_path = os.path.join(cache_dir(), f"{tree}_{_kernels_fingerprint()[:16]}")

        def get_cache_path(self):
            return self._cache_path

        def get_source_stamp(self):
            return (super().get_source_stamp(), _kernels_fingerprint())

        @classmethod
        def from_function(cls, py_func, py_file):
            if cache_dir() is None:
                return None
            # None when the folder cannot be created or written: no other locator is
            # tried, so nothing is ever written into the package
            return super().from_function(py_func, py_file)

    class KernelCacheImpl(caching.CompileResultCacheImpl):
        _locator_classes = [KernelCacheLocator]

    class KernelCache(caching.FunctionCache):
        _impl_class = KernelCacheImpl

    return KernelCache


_KernelCache = None


def _enable_cache(dispatcher) -> None:
    global _KernelCache
    try:
        if _KernelCache is None:
            _KernelCache = _kernel_cache_class()
        dispatcher._cache = _KernelCache(dispatcher.py_func)
    except (ImportError, AttributeError, TypeError, RuntimeError):
        # Numba's caching internals moved (never fall back to its in-package default), or
        # no writable cache folder: compile in every process
        pass


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



@intrinsic
def prefetch(typingctx, array, i, j):
    """Ask the CPU to start loading ``array[i, j]`` (2-D) or ``array[i, j, 0]`` (3-D) into cache.

    The aggregation kernels are bound by memory latency (one random table slot and one
    random aggregate row per order line); issuing the loads for a group of lines before
    using any of them lets the misses overlap instead of queueing one after another.
    """
    sig = types.void(array, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary, ii, jj = args
        a = context.make_array(aryty)(context, builder, ary)
        zero = context.get_constant(types.intp, 0)
        idx = [context.cast(builder, ii, signature.args[1], types.intp),
               context.cast(builder, jj, signature.args[2], types.intp)] + [zero] * (aryty.ndim - 2)
        ptr = cgutils.get_item_pointer(context, builder, aryty, a, idx, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_u64(typingctx, data, i):
    """The uint64 in the eight bytes ``data[i:i+8]`` of a 1-D uint8 array (native byte order), one load.

    Written out as eight byte loads, shifts and ors, Numba keeps every load (each index
    gets its own negative-index check), so hashing and comparing byte-string ids went byte
    by byte.  The caller guarantees ``i + 8 <= len(data)``.
    """
    sig = types.uint64(data, i)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary, ii = args
        a = context.make_array(aryty)(context, builder, ary)
        idx = [context.cast(builder, ii, signature.args[1], types.intp)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, a, idx, wraparound=False)
        i64p = ir.IntType(64).as_pointer()
        value = builder.load(builder.bitcast(ptr, i64p), align=1)
        return value

    return sig, codegen
