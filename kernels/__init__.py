"""rfmx kernels: Numba-compiled, NumPy arrays in, NumPy arrays out.

Nothing here knows about Arrow, pandas or files, so other tools can embed these kernels.
Importing this package imports Numba but compiles nothing; each kernel compiles on its
first call and is cached on disk.

- :mod:`rfmx.kernels.customers` — id hashing and exact partitioned id → code tables;
- :mod:`rfmx.kernels.rfm` — per-customer aggregates: ``rfm_update`` / ``rfm_merge`` over
  dense customer codes, and the partitioned, parallel variants the engine uses.

Example (dense codes you already have)::

    import numpy as np
    from rfmx.kernels.rfm import new_aggregates, rfm_update, N_ORDERS, GROSS
    agg = new_aggregates(3)
    codes = np.array([0, 2, 0]); t = np.array([10, 20, 30]); money = np.array([500, 250, -100])
    rfm_update(codes, t, money, np.empty(0, np.int64), agg)
    agg[:, N_ORDERS]  # -> [1, 0, 1]; the -100 line is a refund of customer 0
"""
from ._policy import kernel, threads

__all__ = ["kernel", "threads"]
