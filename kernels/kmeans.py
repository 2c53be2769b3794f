"""k-means kernels: Lloyd steps, greedy k-means++ seeding, silhouettes (NumPy in, NumPy out).

Layout.  Points are *feature-major*: ``xt`` is a C-contiguous float64 array of shape
``(d, n)`` (``X.T`` of a Fortran-ordered ``(n, d)`` matrix, which is what a column store
hands over without a copy).  For one centre the squared distances of a run of points are
then ``d`` passes of unit-stride, branch-free arithmetic that the compiler vectorizes.
Centres are C-contiguous ``(k, d)``; labels are int32.

Determinism.  Every pass cuts the points into fixed-size chunks (``chunk_size`` points,
an argument that does not depend on the thread count).  A chunk is handled by exactly
one thread, writes only its own row of the partial outputs (sums, counts, inertia,
potentials), and sums its points in index order; the partials are then merged in chunk
order by a serial kernel.  So the results are bit-identical with 1 or 32 threads and no
two threads ever write the same memory.

Squared distances are always ``sum_f (x_f - c_f)**2`` accumulated in feature order, never
the expanded ``|x|^2 - 2 x.c + |c|^2`` form (which cancels badly for points near a
centre), so a plain NumPy reference reproduces every label bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._policy import kernel

__all__ = [
    "n_chunks",
    "lloyd_assign",
    "lloyd_merge",
    "assigned_sq_dist",
    "kpp_closest",
    "kpp_candidate_potentials",
    "kpp_pick",
    "uniform_choice_index",
    "kpp_sum_potentials",
    "ordered_sum",
    "silhouette_samples",
]


def n_chunks(n: int, chunk_size: int) -> int:
    """Chunks of ``chunk_size`` points covering ``n`` points (the first axis of every partial)."""
    return (int(n) + int(chunk_size) - 1) // int(chunk_size)


#: Points of a chunk are summed in LANES interleaved accumulators (point ``start + i`` goes
#: to lane ``i % LANES``), merged in lane order: consecutive points with the same label then
#: do not wait on each other's read-modify-write.  Part of the documented summation order.
LANES = 4
#: Chunks per parallel task: scratch buffers are allocated once per task, and the
#: driver hands tasks out dynamically (``numba.parallel_chunksize(1)``) so a thread
#: slowed by another process does not hold the others up.
BLOCK = 16


@kernel
def _nearest_d3(xt, centres, start, stop, best, lab):
    """:func:`_assign_chunk`'s search for three features (the R, F, M default): four centres
    per pass over the points, coordinates in registers.  Same arithmetic, same order: each
    distance is ``((t0*t0 + t1*t1) + t2*t2)`` and centres are compared in index order."""
    k = centres.shape[0]
    m = stop - start
    r0 = xt[0, start:stop]
    r1 = xt[1, start:stop]
    r2 = xt[2, start:stop]
    j = 0
    while j + 4 <= k:
        a0, a1, a2 = centres[j, 0], centres[j, 1], centres[j, 2]
        b0, b1, b2 = centres[j + 1, 0], centres[j + 1, 1], centres[j + 1, 2]
        e0, e1, e2 = centres[j + 2, 0], centres[j + 2, 1], centres[j + 2, 2]
        g0, g1, g2 = centres[j + 3, 0], centres[j + 3, 1], centres[j + 3, 2]
        for i in range(m):
            x0 = r0[i]
            x1 = r1[i]
            x2 = r2[i]
            t0 = x0 - a0
            t1 = x1 - a1
            t2 = x2 - a2
            da = t0 * t0 + t1 * t1 + t2 * t2
            t0 = x0 - b0
            t1 = x1 - b1
            t2 = x2 - b2
            db = t0 * t0 + t1 * t1 + t2 * t2
            t0 = x0 - e0
            t1 = x1 - e1
            t2 = x2 - e2
            de = t0 * t0 + t1 * t1 + t2 * t2
            t0 = x0 - g0
            t1 = x1 - g1
            t2 = x2 - g2
            dg = t0 * t0 + t1 * t1 + t2 * t2
            if j > 0:
                bd = best[i]
                bl = lab[i]
            else:
                bd = np.inf
                bl = 0
            if da < bd:
                bd = da
                bl = j
            if db < bd:
                bd = db
                bl = j + 1
            if de < bd:
                bd = de
                bl = j + 2
            if dg < bd:
                bd = dg
                bl = j + 3
            best[i] = bd
            lab[i] = bl
        j += 4
    while j < k:
        a0, a1, a2 = centres[j, 0], centres[j, 1], centres[j, 2]
        for i in range(m):
            t0 = r0[i] - a0
            t1 = r1[i] - a1
            t2 = r2[i] - a2
            da = t0 * t0 + t1 * t1 + t2 * t2
            if j == 0:
                best[i] = da
                lab[i] = 0
            elif da < best[i]:
                best[i] = da
                lab[i] = j
        j += 1


@kernel
def _assign_chunk(xt, centres, start, stop, labels, with_inertia, dbuf, best, lab):
    """Nearest centre of the points ``start:stop`` into ``lab``/``best`` (squared distance);
    writes changed labels back to ``labels``; returns (inertia or 0.0, labels changed).

    Distances accumulate feature by feature over the whole run of points (unit stride,
    vectorized); the last feature's pass is fused with the comparison.  A real call, not
    inlined into the prange body, where these loops vectorize less reliably.
    """
    d = xt.shape[0]
    k = centres.shape[0]
    m = stop - start
    if d == 3:
        _nearest_d3(xt, centres, start, stop, best, lab)
    for j in range(k if d != 3 else 0):
        c = centres[j]
        if d > 1:
            row = xt[0, start:stop]
            c0 = c[0]
            for i in range(m):
                t = row[i] - c0
                dbuf[i] = t * t
            for f in range(1, d - 1):
                row = xt[f, start:stop]
                cf = c[f]
                for i in range(m):
                    t = row[i] - cf
                    dbuf[i] += t * t
        row = xt[d - 1, start:stop]
        cl = c[d - 1]
        if j == 0:
            if d > 1:
                for i in range(m):
                    t = row[i] - cl
                    best[i] = dbuf[i] + t * t
                    lab[i] = 0
            else:
                for i in range(m):
                    t = row[i] - cl
                    best[i] = t * t
                    lab[i] = 0
        else:
            for i in range(m):
                t = row[i] - cl
                dd = (dbuf[i] + t * t) if d > 1 else t * t
                if dd < best[i]:
                    best[i] = dd
                    lab[i] = j
    moved = 0
    out = labels[start:stop]
    for i in range(m):
        moved += out[i] != lab[i]
        out[i] = lab[i]
    acc = 0.0
    if with_inertia:
        acc = _lane_sum(best, m)
    return acc, moved


@kernel(inline=True)
def _lane_sum(values, m):
    """Sum of ``values[:m]`` in LANES interleaved partial sums, merged in lane order."""
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    m4 = m - m % 4
    for i in range(0, m4, 4):
        a0 += values[i]
        a1 += values[i + 1]
        a2 += values[i + 2]
        a3 += values[i + 3]
    r = m - m4
    if r > 0:
        a0 += values[m4]
    if r > 1:
        a1 += values[m4 + 1]
    if r > 2:
        a2 += values[m4 + 2]
    return ((a0 + a1) + a2) + a3


@kernel
def _sum_chunk_d3(xt, start, stop, lab, sums, counts, acc, cnt):
    """:func:`_sum_chunk` for three features: one label lookup per point for all three
    sums (same lanes, same order)."""
    k = sums.shape[0]
    m = stop - start
    r0 = xt[0, start:stop]
    r1 = xt[1, start:stop]
    r2 = xt[2, start:stop]
    acc[:] = 0.0  # (lane, label, feature padded to 4)
    cnt[:] = 0
    m4 = m - m % LANES
    for i in range(0, m4, LANES):
        for u in range(LANES):
            b = u * k + lab[i + u]
            cnt[b] += 1
            acc[4 * b] += r0[i + u]
            acc[4 * b + 1] += r1[i + u]
            acc[4 * b + 2] += r2[i + u]
    for i in range(m4, m):
        b = (i - m4) * k + lab[i]
        cnt[b] += 1
        acc[4 * b] += r0[i]
        acc[4 * b + 1] += r1[i]
        acc[4 * b + 2] += r2[i]
    for j in range(k):
        counts[j] = cnt[j] + cnt[k + j] + cnt[2 * k + j] + cnt[3 * k + j]
        for f in range(3):
            sums[j, f] = ((acc[4 * j + f] + acc[4 * (k + j) + f]) + acc[4 * (2 * k + j) + f]) + acc[4 * (3 * k + j) + f]


@kernel
def _sum_chunk(xt, start, stop, lab, sums, counts, acc, cnt):
    """Per-label sums (k, d) and counts (k,) of the points ``start:stop`` (labels ``lab``),
    each in LANES interleaved partial sums merged in lane order.  ``acc`` (LANES * k * 4,)
    float64 and ``cnt`` (LANES * k,) int64 are scratch."""
    d = xt.shape[0]
    k = sums.shape[0]
    m = stop - start
    if d == 3:
        _sum_chunk_d3(xt, start, stop, lab, sums, counts, acc, cnt)
        return
    lane_sums = acc[: LANES * k].reshape((LANES, k))
    lane_counts = cnt.reshape((LANES, k))
    lane_counts[:] = 0
    for i in range(m):
        lane_counts[i % LANES, lab[i]] += 1
    for j in range(k):
        counts[j] = lane_counts[0, j] + lane_counts[1, j] + lane_counts[2, j] + lane_counts[3, j]
    for f in range(d):
        row = xt[f, start:stop]
        lane_sums[:] = 0.0
        m4 = m - m % LANES
        for i in range(0, m4, LANES):
            lane_sums[0, lab[i]] += row[i]
            lane_sums[1, lab[i + 1]] += row[i + 1]
            lane_sums[2, lab[i + 2]] += row[i + 2]
            lane_sums[3, lab[i + 3]] += row[i + 3]
        for i in range(m4, m):
            lane_sums[i - m4, lab[i]] += row[i]
        for j in range(k):
            sums[j, f] = ((lane_sums[0, j] + lane_sums[1, j]) + lane_sums[2, j]) + lane_sums[3, j]


@kernel(parallel=True)
def lloyd_assign(xt, centres, chunk_size, labels, sums, counts, inertia, changed):
    """One Lloyd E-step (and the M-step's partial sums) over fixed-size chunks.

    ``xt`` (d, n) float64; ``centres`` (k, d) float64; ``labels`` (n,) int32, read (the
    previous labels) and overwritten with each point's nearest centre (lowest index on a
    tie).  Per chunk ``ch`` (``n_chunks(n, chunk_size)`` of them): ``changed[ch]`` how many
    labels changed; ``inertia[ch]`` the sum of squared distances to the nearest centre
    (pass an empty ``inertia`` to skip it); ``sums[ch]`` (k, d) the sum of the chunk's
    points by label and ``counts[ch]`` (k,) int64 their number (pass ``sums`` with a zero
    first axis to skip them).  Merge the partials with :func:`lloyd_merge`.  Parallel tasks
    are runs of BLOCK chunks; which thread runs a task never changes what it writes.

    ``sums[ch]``/``counts[ch]`` are rewritten only for chunks where a label changed: keep
    them (and ``labels``) between the iterations of one run and they always hold the sums
    of each chunk by its current labels -- bit for bit what a full recomputation gives,
    since an unchanged chunk sums the same points in the same order.  Start a run with
    ``labels`` all -1 so that every chunk is summed once.
    """
    n = xt.shape[1]
    k = centres.shape[0]
    nch = (n + chunk_size - 1) // chunk_size
    with_sums = sums.shape[0] > 0
    with_inertia = inertia.shape[0] > 0
    n_blocks = (nch + BLOCK - 1) // BLOCK
    for blk in prange(n_blocks):
        dbuf = np.empty(chunk_size, dtype=np.float64)
        best = np.empty(chunk_size, dtype=np.float64)
        lab = np.empty(chunk_size, dtype=np.int32)
        acc = np.empty(LANES * k * 4, dtype=np.float64)
        cnt = np.empty(LANES * k, dtype=np.int64)
        for ch in range(blk * BLOCK, min(nch, (blk + 1) * BLOCK)):
            start = ch * chunk_size
            stop = min(n, start + chunk_size)
            inert, moved = _assign_chunk(xt, centres, start, stop, labels, with_inertia, dbuf, best, lab)
            changed[ch] = moved
            if with_inertia:
                inertia[ch] = inert
            if with_sums and moved > 0:
                _sum_chunk(xt, start, stop, lab, sums[ch], counts[ch], acc, cnt)


@kernel
def lloyd_merge(sums, counts, inertia, changed, total_sums, total_counts):
    """Merge :func:`lloyd_assign`'s partials in chunk order (so the result never depends on
    threads): ``total_sums`` (k, d) and ``total_counts`` (k,) are overwritten; returns
    ``(inertia, changed)`` totals.  Empty ``sums`` / ``inertia`` are skipped (0.0)."""
    total_inertia = 0.0
    total_changed = 0
    for ch in range(inertia.shape[0]):
        total_inertia += inertia[ch]
    for ch in range(changed.shape[0]):
        total_changed += changed[ch]
    if sums.shape[0] > 0:
        k, d = total_sums.shape
        for j in range(k):
            total_counts[j] = 0
            for f in range(d):
                total_sums[j, f] = 0.0
        for ch in range(sums.shape[0]):
            for j in range(k):
                total_counts[j] += counts[ch, j]
                for f in range(d):
                    total_sums[j, f] += sums[ch, j, f]
    return total_inertia, total_changed


@kernel(parallel=True)
def assigned_sq_dist(xt, centres, labels, out):
    """``out[i]`` = squared distance of point ``i`` to ``centres[labels[i]]`` (float64 (n,))."""
    d, n = xt.shape
    for i in prange(n):
        c = centres[labels[i]]
        acc = 0.0
        for f in range(d):
            t = xt[f, i] - c[f]
            acc += t * t
        out[i] = acc


@kernel
def _sq_dist_run(xt, start, stop, centre, dbuf):
    """``dbuf[i] = sum_f (xt[f, start + i] - centre[f])**2`` for ``0 <= i < stop - start``."""
    m = stop - start
    row = xt[0, start:stop]
    c0 = centre[0]
    for i in range(m):
        t = row[i] - c0
        dbuf[i] = t * t
    for f in range(1, xt.shape[0]):
        c = centre[f]
        row = xt[f, start:stop]
        for i in range(m):
            t = row[i] - c
            dbuf[i] += t * t


# --- k-means++ seeding -----------------------------------------------------------------
#
# The driver holds ``closest`` (n,), each point's squared distance to the nearest chosen
# centre, and ``chunk_sums`` (n_chunks,), its per-chunk sums (LANES order, as every sum
# here).  D^2 sampling walks the chunk sums in order to the chunk where the running total
# reaches the draw, then the points of that chunk in order (see :func:`kpp_pick`): no
# O(n) serial pass, and the same index for any thread count.


@kernel
def uniform_choice_index(n, u):
    """The index ``numpy.random.RandomState.choice(n, p=[1/n] * n)`` returns when its one
    uniform draw is ``u``: ``searchsorted(cumsum(p) / cumsum(p)[-1], u, 'right')``, without
    the two n-long arrays (so seeds mean what they mean in scikit-learn)."""
    p = 1.0 / n
    total = 0.0
    for i in range(n):
        total += p
    run = 0.0
    for i in range(n):
        run += p
        if run / total > u:
            return i
    return n - 1


@kernel(parallel=True)
def kpp_closest(xt, centre, chunk_size, first, closest, chunk_sums):
    """Fold a new ``centre`` (d,) into ``closest`` (n,) (``first``: overwrite it) and write
    each chunk's sum of ``closest`` into ``chunk_sums`` (n_chunks,)."""
    n = xt.shape[1]
    nch = (n + chunk_size - 1) // chunk_size
    for blk in prange((nch + BLOCK - 1) // BLOCK):
        dbuf = np.empty(chunk_size, dtype=np.float64)
        for ch in range(blk * BLOCK, min(nch, (blk + 1) * BLOCK)):
            start = ch * chunk_size
            stop = min(n, start + chunk_size)
            m = stop - start
            _sq_dist_run(xt, start, stop, centre, dbuf)
            run = closest[start:stop]
            if first:
                for i in range(m):
                    run[i] = dbuf[i]
            else:
                for i in range(m):
                    run[i] = min(run[i], dbuf[i])
            chunk_sums[ch] = _lane_sum(run, m)


@kernel
def _min_sq_dist_run(xt, start, stop, centre, run, out, scratch):
    """``out[i] = min(run[i], |x_{start+i} - centre|^2)`` (distance summed in feature order);
    ``out`` may be ``run``; ``scratch`` (m,) is overwritten."""
    m = stop - start
    if xt.shape[0] == 3:
        r0 = xt[0, start:stop]
        r1 = xt[1, start:stop]
        r2 = xt[2, start:stop]
        c0, c1, c2 = centre[0], centre[1], centre[2]
        for i in range(m):
            t0 = r0[i] - c0
            t1 = r1[i] - c1
            t2 = r2[i] - c2
            out[i] = min(run[i], t0 * t0 + t1 * t1 + t2 * t2)
    else:
        _sq_dist_run(xt, start, stop, centre, scratch)
        for i in range(m):
            out[i] = min(run[i], scratch[i])


@kernel(parallel=True)
def kpp_candidate_potentials(xt, pending, candidates, closest, chunk_size, partial):
    """Per chunk and candidate centre (``candidates`` (t, d)), the chunk's potential if the
    candidate were added: ``partial[ch, c] = sum_i min(closest[i], |x_i - cand_c|^2)``
    (``partial`` (n_chunks, t)); sum the rows in chunk order for the totals.

    ``pending`` (0 or 1, d): the centre chosen last, folded into ``closest`` first in the
    same pass (its chunk sums are the previous call's ``partial`` column of the winner).
    """
    n = xt.shape[1]
    t = candidates.shape[0]
    nch = (n + chunk_size - 1) // chunk_size
    for blk in prange((nch + BLOCK - 1) // BLOCK):
        dbuf = np.empty(chunk_size, dtype=np.float64)
        scratch = np.empty(chunk_size, dtype=np.float64)
        for ch in range(blk * BLOCK, min(nch, (blk + 1) * BLOCK)):
            start = ch * chunk_size
            stop = min(n, start + chunk_size)
            m = stop - start
            run = closest[start:stop]
            if pending.shape[0] > 0:
                _min_sq_dist_run(xt, start, stop, pending[0], run, run, scratch)
            for c in range(t):
                _min_sq_dist_run(xt, start, stop, candidates[c], run, dbuf, scratch)
                partial[ch, c] = _lane_sum(dbuf, m)


@kernel
def kpp_pick(xt, pending, closest, chunk_sums, chunk_size, r):
    """D^2 sampling for a draw ``r`` in [0, total): the first chunk whose running total of
    ``chunk_sums`` (in chunk order) reaches ``r``, then in it the first point where that
    chunk's prefix plus the in-order running sum of ``closest`` reaches ``r`` (the chunk's
    last point if rounding keeps it short); the last point if no chunk reaches ``r``.
    ``closest`` is taken with the ``pending`` centre (0 or 1, d) folded in."""
    n = closest.shape[0]
    d = xt.shape[0]
    prefix = 0.0
    for ch in range(chunk_sums.shape[0]):
        after = prefix + chunk_sums[ch]
        if after >= r:
            start = ch * chunk_size
            stop = min(n, start + chunk_size)
            run = 0.0
            for i in range(start, stop):
                v = closest[i]
                if pending.shape[0] > 0:
                    acc = 0.0
                    for f in range(d):
                        t = xt[f, i] - pending[0, f]
                        acc += t * t
                    v = min(v, acc)
                run += v
                if prefix + run >= r:
                    return i
            return stop - 1
        prefix = after
    return n - 1


@kernel
def kpp_sum_potentials(partial, out):
    """Column sums of ``partial`` (n_chunks, t) in chunk order into ``out`` (t,)."""
    for c in range(out.shape[0]):
        out[c] = 0.0
    for ch in range(partial.shape[0]):
        for c in range(out.shape[0]):
            out[c] += partial[ch, c]


@kernel
def ordered_sum(values):
    """Sum of a float64 array in index order (a reproducible total of per-chunk partials)."""
    acc = 0.0
    for i in range(values.shape[0]):
        acc += values[i]
    return acc


# --- silhouettes -----------------------------------------------------------------------


@kernel(parallel=True)
def silhouette_samples(xt, labels, k, out):
    """Silhouette of every point (``out`` float64 (n,)): ``(b - a) / max(a, b)`` with ``a``
    the mean Euclidean distance to the other points of its cluster and ``b`` the smallest
    mean distance to another (non-empty) cluster; 0 for a point alone in its cluster.
    O(n^2 d): call it on a sample.  Each point's row is written by one thread only."""
    d, n = xt.shape
    counts = np.zeros(k, dtype=np.int64)
    for i in range(n):
        counts[labels[i]] += 1
    for i in prange(n):
        sums = np.zeros(k, dtype=np.float64)
        for j in range(n):
            acc = 0.0
            for f in range(d):
                t = xt[f, i] - xt[f, j]
                acc += t * t
            sums[labels[j]] += np.sqrt(acc)
        own = labels[i]
        if counts[own] <= 1:
            out[i] = 0.0
            continue
        a = sums[own] / (counts[own] - 1)
        b = np.inf
        for c in range(k):
            if c != own and counts[c] > 0:
                v = sums[c] / counts[c]
                if v < b:
                    b = v
        top = a if a > b else b
        out[i] = 0.0 if top == 0.0 or b == np.inf else (b - a) / top
