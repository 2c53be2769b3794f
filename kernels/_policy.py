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

__all__ = ["kernel", "threads", "prefetch", "load_u64"]


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
# Numba keys a cached kernel on the contents of the kernel's own file only.  The kernels
# inline helpers from other files (a probe from customers.py into rfm.py's update
# kernels), so after a change to a helper - an upgrade that leaves old cache files behind,
# or an edit - the old machine code would be loaded and run.  rfmx's kernels are
# therefore keyed on every file of ``rfmx.kernels`` as well: any change there recompiles
# them all once.  (Numba internals; if they move, plain ``cache=True`` is used.)

_fingerprint: str | None = None


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

    def keyed(locator):
        class Locator(locator):
            def get_source_stamp(self):
                return (super().get_source_stamp(), _kernels_fingerprint())
        Locator.__name__ = f"Rfmx{locator.__name__}"
        return Locator

    class KernelCacheImpl(caching.CompileResultCacheImpl):
        _locator_classes = [keyed(c) for c in caching.CompileResultCacheImpl._locator_classes]

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
    except (ImportError, AttributeError, TypeError):
        dispatcher.enable_caching()
    except RuntimeError:  # no writable cache location at all: compile in every process
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
