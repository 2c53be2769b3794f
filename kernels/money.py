"""Money to exact int64 minor units (NumPy in, NumPy out).

Totals are sums of integers, so they are exact and the same in any order; the only
rounding is here, once per line, from a float amount to the nearest minor unit.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel

__all__ = ["float_to_minor", "int_to_minor"]

_CHUNK = 1 << 16
_LIMIT = 9.2e18  # below 2**63: every rounded value fits int64


@kernel(parallel=True)
def float_to_minor(values, unit, out):
    """``out[i] = rint(values[i] * unit)`` as int64 (ties to even, like ``numpy.rint``).

    Returns the index of the first value that is NaN, infinite or too large for int64
    minor units, or -1 when every value converted.
    """
    m = values.shape[0]
    n_chunks = (m + _CHUNK - 1) // _CHUNK
    first_bad = np.full(n_chunks, -1, dtype=np.int64)
    for k in prange(n_chunks):
        for i in range(k * _CHUNK, min(m, (k + 1) * _CHUNK)):
            v = np.rint(values[i] * unit)
            if not (-_LIMIT < v < _LIMIT):  # also false for NaN
                if first_bad[k] < 0:
                    first_bad[k] = i
                out[i] = 0
            else:
                out[i] = np.int64(v)
    for k in range(n_chunks):
        if first_bad[k] >= 0:
            return first_bad[k]
    return -1


@kernel(parallel=True)
def int_to_minor(values, unit, out):
    """``out[i] = values[i] * unit``; returns the first index that would overflow int64, or -1."""
    m = values.shape[0]
    limit = np.iinfo(np.int64).max // unit
    n_chunks = (m + _CHUNK - 1) // _CHUNK
    first_bad = np.full(n_chunks, -1, dtype=np.int64)
    for k in prange(n_chunks):
        for i in range(k * _CHUNK, min(m, (k + 1) * _CHUNK)):
            v = values[i]
            if v > limit or v < -limit:
                if first_bad[k] < 0:
                    first_bad[k] = i
                out[i] = 0
            else:
                out[i] = v * unit
    for k in range(n_chunks):
        if first_bad[k] >= 0:
            return first_bad[k]
    return -1
