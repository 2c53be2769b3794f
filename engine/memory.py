"""Per-partition state arrays that grow without copying and can be handed back early.

A state's arrays are laid out ``(P, capacity, ...)``: partition ``p`` owns one contiguous
block.  Growing ``capacity`` changes every block's position, so a grown array is a new
array with the used rows copied over.  For small states that is cheap; for big ones it
is not: on the reference 1e8-row run the last copy moved 277 MB into freshly faulted pages
and took 0.7 s on the one thread that feeds the kernels.

So once an array would pass :data:`RESERVE_FROM` bytes, it is placed in a large
*reservation*: an anonymous ``MAP_NORESERVE`` mapping sized for :data:`RESERVED_ROWS`
rows per partition.  Untouched pages of a mapping cost address space only (no memory,
no commit charge), so the array never has to grow again for any realistic number of
customers (2**23 per partition: 134 M customers).  Where the system refuses such a
mapping (strict overcommit, an address-space limit), arrays fall back to plain
``np.empty`` growth.

A reserved array can also give its memory back block by block (:func:`release`), which
lets finalizing a one-shot aggregation turn the state into the result table without
holding both in memory at once.
"""
from __future__ import annotations

import mmap
import sys

import numpy as np

__all__ = ["RESERVE_FROM", "RESERVED_ROWS", "TABLE_RESERVE_FROM", "allocate", "grow", "is_reserved", "new_table",
           "regrow_table", "release"]

#: arrays bigger than this (bytes) go into a reservation
RESERVE_FROM = 64 << 20
#: rows per partition a reservation is sized for
RESERVED_ROWS = 1 << 23

# Python < 3.13 lacks the name; 0x4000 is Linux's value (other systems: no flag, plain mapping).
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)
_PAGE = mmap.PAGESIZE


class _Reservation:
    """Keeps the mapping alive as long as any array view of it lives (via ``ndarray.base``)."""

    def __init__(self, nbytes: int):
        self.map = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                # The kernels touch rows at random: 2 MB pages spare most TLB misses.
                self.map.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass


def _reserved(shape: tuple, dtype) -> np.ndarray | None:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes == 0 or not hasattr(mmap, "MAP_ANONYMOUS"):
        return None
    try:
        res = _Reservation(nbytes)
    except (OSError, ValueError, OverflowError):
        return None
    return np.frombuffer(res.map, dtype=dtype).reshape(shape)


def _aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """``np.empty`` whose rows start on a 64-byte cache-line boundary.

    Large NumPy allocations start 16 bytes into a page, so a 64-byte aggregate row would
    straddle two cache lines and cost two memory misses instead of one.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 64
    return raw[offset: offset + nbytes].view(dtype).reshape(shape)


def allocate(shape: tuple, dtype=np.int64, reserve_rows: int | None = None) -> np.ndarray:
    """Uninitialized per-partition array ``shape = (P, capacity, ...)``, 64-byte aligned.

    Big arrays come from a reservation with at least ``reserve_rows`` (default
    :data:`RESERVED_ROWS`) rows per partition; ``result.shape[1]`` is the capacity granted.
    """
    if reserve_rows is None:
        reserve_rows = RESERVED_ROWS
    shape = tuple(int(s) for s in shape)
    row_bytes = int(np.prod(shape[2:], dtype=np.int64)) * np.dtype(dtype).itemsize
    if shape[0] * shape[1] * row_bytes > RESERVE_FROM:
        big = (shape[0], max(shape[1], reserve_rows)) + shape[2:]
        arr = _reserved(big, dtype)
        if arr is not None:
            return arr
    return _aligned_empty(shape, dtype)


def grow(old: np.ndarray, used: np.ndarray, capacity: int, extra: int = 0,
         reserve_rows: int | None = None) -> np.ndarray:
    """A bigger per-partition array holding ``old[p, :used[p] + extra]`` for every partition.

    ``capacity`` is the minimum new capacity (rows per partition); the result may have more.
    """
    new = allocate((old.shape[0], capacity) + old.shape[2:], old.dtype, reserve_rows)
    for p in range(old.shape[0]):
        k = int(used[p]) + extra
        new[p, :k] = old[p, :k]
    return new


#: hash tables bigger than this (bytes) go into a reservation (see :func:`regrow_table`)
TABLE_RESERVE_FROM = 16 << 20


def regrow_table(old: np.ndarray | None, shape: tuple) -> np.ndarray | None:
    """An all-zero int64 hash table of ``shape = (P, slots, ...)`` in the memory of ``old``,
    or None where ``old``'s memory cannot hold it.

    A growing table is rebuilt from the stored keys and never read again, so the new one
    may take the old one's memory.  Tables from :func:`new_table` live at the start of a
    reservation: growing zeroes the old table's bytes in place (pages the process already
    has) and only the bytes added beyond them are fresh memory.  Otherwise every doubling
    faults in a whole new table, twice the final size in all, and on this VM a fresh page
    costs ~20x a recycled one (docs/benchmarks.md).
    """
    base = _mapping(old) if old is not None else None
    if base is None or not old.flags.c_contiguous:
        return None
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape))
    flat = np.frombuffer(base, dtype=np.int64)
    if size > flat.size or old.ctypes.data != flat.ctypes.data:
        return None
    flat[: old.size] = 0  # the bytes beyond old's were never touched: zero already
    return flat[:size].reshape(shape)


def new_table(shape: tuple, reserve_slots: int) -> np.ndarray:
    """An all-zero, C-contiguous int64 hash table of ``shape = (P, slots, ...)``; past
    :data:`TABLE_RESERVE_FROM` bytes at the start of a reservation of ``reserve_slots``
    slots per partition, so that :func:`regrow_table` can grow it in place."""
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape))
    if size * 8 > TABLE_RESERVE_FROM:
        flat = _reserved((size // shape[1] * max(shape[1], int(reserve_slots)),), np.int64)
        if flat is not None:
            return flat[:size].reshape(shape)
    return np.zeros(shape, dtype=np.int64)


def _mapping(arr: np.ndarray) -> mmap.mmap | None:
    """The reservation behind ``arr``, or None for ordinary NumPy memory."""
    base = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def is_reserved(arr: np.ndarray) -> bool:
    return _mapping(arr) is not None


def release(arr: np.ndarray, partition: int) -> None:
    """Give the memory of ``arr[partition]`` back to the system; its contents become zeros.

    Only for arrays from a reservation (others are left alone: their memory goes back
    when the array is freed).  The caller must not read the block again.
    """
    base = _mapping(arr)
    if base is None:
        return
    block = arr[partition]
    start = block.ctypes.data - np.frombuffer(base, dtype=np.uint8).ctypes.data
    stop = start + block.nbytes
    start = -(-start // _PAGE) * _PAGE  # whole pages inside the block only
    stop = stop // _PAGE * _PAGE
    if stop > start:
        try:
            base.madvise(mmap.MADV_DONTNEED, start, stop - start)
        except (OSError, AttributeError):
            pass
