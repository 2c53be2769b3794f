"""Recommending a number of clusters from a k comparison (silhouette and elbow).

Two readings of a ``--k-range`` comparison (:func:`rfmx.cluster.choose_k`):

- **silhouette**: the mean silhouette coefficient (-1..1, higher = better separated
  clusters), comparable across k;
- **elbow**: where the inertia curve (sum of squared distances, falling with k) bends
  most.  Rule (the "maximum distance to the chord", as in kneedle): put k and inertia on
  0..1 scales (k from the first to the last k compared; inertia from the last k's, 0, to
  the first k's, 1); the elbow is the k whose point lies farthest below the straight line
  (the chord) from the first point to the last (the smallest k of distances within
  1e-12 of each other).  No elbow with fewer than three k, when inertia does not fall from
  the first k to the last, or when no point lies below the chord by more than 1e-12 (a
  straight line).

The recommendation: the k with the highest silhouette; where several k are within
``SILHOUETTE_TOLERANCE`` (0.01) of the highest -- about the sampling noise of a
silhouette on 10,000 customers -- the one nearest the elbow (the smaller of two equally
near; the highest silhouette when there is no elbow).  Without any silhouette (only
k = 1 compared) the elbow is recommended, and without an elbow either, nothing.

Plain Python and NumPy; nothing here compiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["KChoice", "elbow", "recommend_k", "SILHOUETTE_TOLERANCE"]

#: Silhouettes closer than this to the highest count as tied with it.
SILHOUETTE_TOLERANCE = 0.01
#: Distances to the chord (0..1 scales) closer than this are equal (rounding, not shape).
ROUNDING = 1e-12


@dataclass(frozen=True)
class KChoice:
    """A recommended ``k`` (None when nothing can be recommended) and why: ``reason`` is
    one sentence; ``best_silhouette_k`` and ``elbow_k`` are the two readings (None where
    there is none); ``elbow_distance`` maps each k to its distance below the chord."""

    k: int | None
    reason: str
    best_silhouette_k: int | None
    elbow_k: int | None
    elbow_distance: dict


def elbow(ks, inertia) -> tuple[int | None, dict]:
    """``(elbow k or None, {k: distance below the chord on the 0..1 scales})`` (see the
    module docstring; distances are None where the curve cannot be scaled)."""
    ks = [int(k) for k in ks]
    y = np.asarray(inertia, dtype=np.float64)
    order = np.argsort(ks, kind="stable")
    ks = [ks[i] for i in order]
    y = y[order]
    if len(ks) < 3 or not y[0] > y[-1] or ks[-1] == ks[0]:
        return None, {k: None for k in ks}
    x = (np.array(ks, dtype=np.float64) - ks[0]) / (ks[-1] - ks[0])
    with np.errstate(over="ignore", invalid="ignore"):
        yn = (y - y[-1]) / (y[0] - y[-1])
    if not np.isfinite(yn).all():  # a fall too small to scale the curve by (below 1e-308)
        return None, {k: None for k in ks}
    below = (1.0 - x - yn) / math.sqrt(2.0)  # the chord runs from (0, 1) to (1, 0)
    dist = {k: float(v) for k, v in zip(ks, below)}
    top = float(below.max())
    if top <= ROUNDING:  # a straight or concave curve: no point really below the chord
        return None, dist
    best = int(np.flatnonzero(below >= top - ROUNDING)[0])  # the smallest k of (numerically) equal distances
    return ks[best], dist


def recommend_k(ks, inertia, silhouette, tolerance: float = SILHOUETTE_TOLERANCE) -> KChoice:
    """The recommended k of a comparison: ``ks``, their ``inertia`` and ``silhouette``
    (None or NaN where there is none, as for k = 1).  See the module docstring."""
    ks = [int(k) for k in ks]
    sil = {k: (None if s is None or (isinstance(s, float) and math.isnan(s)) else float(s))
           for k, s in zip(ks, silhouette)}
    elbow_k, dist = elbow(ks, inertia)
    scored = [k for k in sorted(ks) if sil[k] is not None]
    span = f"{min(ks)}..{max(ks)}" if ks else "the range"
    if not scored:
        if elbow_k is None:
            return KChoice(None, f"no k to recommend: no silhouette (only k = 1) and no elbow in {span}",
                           None, None, dist)
        return KChoice(elbow_k, f"k = {elbow_k} is the elbow of the inertia curve (no silhouette to compare)",
                       None, elbow_k, dist)
    top = max(sil[k] for k in scored)
    best_k = next(k for k in scored if sil[k] == top)
    near = [k for k in scored if sil[k] >= top - tolerance]
    if elbow_k is None:
        why = ("fewer than three k compared" if len(ks) < 3 else "no bend")
        return KChoice(best_k, f"k = {best_k} has the highest silhouette ({top:.3f}); the inertia curve has no "
                               f"elbow in {span} ({why})", best_k, None, dist)
    k = min(near, key=lambda c: (abs(c - elbow_k), c))
    if k == best_k == elbow_k:
        reason = f"k = {k} has the highest silhouette ({top:.3f}) and is the elbow of the inertia curve"
    elif k == elbow_k:
        reason = (f"k = {k} is the elbow of the inertia curve and its silhouette ({sil[k]:.3f}) is within "
                  f"{tolerance:g} of the highest ({top:.3f} at k = {best_k})")
    elif k == best_k:
        elbow_sil = "" if sil.get(elbow_k) is None else f", whose silhouette is lower ({sil[elbow_k]:.3f})"
        reason = (f"k = {k} has the highest silhouette ({top:.3f}); the elbow of the inertia curve is at "
                  f"k = {elbow_k}{elbow_sil}")
    else:
        elbow_sil = "" if sil.get(elbow_k) is None else f", silhouette {sil[elbow_k]:.3f}"
        reason = (f"k = {k}: its silhouette ({sil[k]:.3f}) is within {tolerance:g} of the highest ({top:.3f} at "
                  f"k = {best_k}) and it is the nearest such k to the elbow of the inertia curve "
                  f"(k = {elbow_k}{elbow_sil})")
    return KChoice(k, reason, best_k, elbow_k, dist)
