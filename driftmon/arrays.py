"""KL divergence of arrays of distributions, for notebooks and scripts (like MATLAB's ``kldiv.m``).

:func:`kldiv` is the same computation the monitor runs on each window
(:func:`driftmon.detect.divergence.compare` with metric ``kl``), for many
distributions at once:

>>> import numpy as np
>>> from driftmon import kldiv
>>> p = np.array([[2, 1, 1], [5, 5, 0]])  # two distributions; counts are fine, rows are normalised
>>> q = np.array([[1, 1, 2], [1, 1, 1]])
>>> kldiv(p, q).round(6)  # one value per row: D(p[i] || q[i])
array([0.173287, 0.405465])
>>> round(kldiv(p, q, mode="all"), 6)  # the whole array as one distribution over its 6 cells
0.505962
>>> round(kldiv([1, 1], [1, 3], unit="bits"), 6)
0.207519
>>> kldiv([1, 1], [1, 0])  # q = 0 < p: infinite, never a silent epsilon
inf
>>> round(kldiv([1, 1], [1, 0], smoothing=0.5), 6)  # 0.5 pseudo-counts in every cell of both
0.143841
>>> kldiv([1, 0], [1, 1])  # cells with p = 0 add exactly 0
0.6931471805599453
"""

from __future__ import annotations

import numpy as np

from driftmon.config import Smoothing
from driftmon.detect.divergence import check_values, compare

MODES = ("per_row", "all")


def _smoothing(smoothing: None | float | Smoothing) -> Smoothing:
    if smoothing is None:
        return Smoothing("none")
    if isinstance(smoothing, Smoothing):
        return smoothing
    if isinstance(smoothing, (int, float, np.floating, np.integer)) and not isinstance(smoothing, bool):
        return Smoothing("additive", alpha=float(smoothing))
    raise ValueError(f"smoothing must be None, a pseudo-count (float > 0) or a Smoothing, got {smoothing!r}")


def _checked(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one dimension with at least one bin, got shape {a.shape}")
    return check_values(a, name)


def kldiv(p, q, mode: str = "per_row", unit: str = "nats", smoothing: None | float | Smoothing = None):
    """Kullback-Leibler divergence ``D(P||Q) = sum p ln(p/q)`` of ``p`` from ``q``.

    ``p``, ``q``: array-likes of one shape: ``(K,)`` for one distribution over K
    bins, ``(R, K)`` for R distributions (rows), or any ``(..., K)``; the last
    axis holds the bins.  Entries are non-negative weights (counts,
    frequencies or probabilities): they are normalised here, so they need not
    sum to 1.

    ``mode``: ``"per_row"`` (default) gives ``D(p[i] || q[i])`` for every
    distribution, shape ``p.shape[:-1]`` (a float for 1-D input); ``"all"``
    treats the whole array as one distribution over all its cells, normalised
    by its total, and gives one float.

    ``unit``: ``"nats"`` (natural log) or ``"bits"`` (log base 2).

    ``smoothing``: ``None`` (default): no smoothing, so a cell with
    ``q = 0 < p`` makes the result ``+inf`` and cells with ``p = 0`` add 0.  A
    float ``alpha > 0``: ``alpha`` pseudo-counts added to every cell of *both*
    inputs before normalising (so pass counts, not probabilities, or scale
    ``alpha`` to them).  A :class:`driftmon.config.Smoothing`: ``none``,
    ``additive`` (``alpha``) or ``floor`` (probabilities clipped to at least
    ``floor`` and renormalised), as in the config's ``detector.smoothing``.

    Raises ``ValueError`` for negative, NaN or infinite entries, shapes that
    differ, a distribution (row, or the whole array in ``"all"`` mode) whose
    entries are all 0, an unknown ``mode`` or ``unit``, or invalid smoothing.
    """
    a, b = _checked(p, "p"), _checked(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: p has shape {a.shape}, q has shape {b.shape}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    rows_a, rows_b = (a.reshape(1, -1), b.reshape(1, -1)) if mode == "all" else (
        a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
    for rows, name in ((rows_a, "p"), (rows_b, "q")):
        empty = np.flatnonzero(rows.sum(axis=-1) <= 0)
        if empty.size:
            where = "is all zeros" if mode == "all" else f"row {int(empty[0])} (flattened) is all zeros"
            raise ValueError(f"{name} {where}: it defines no distribution")
    value, _ = compare("kl", rows_a, rows_b, _smoothing(smoothing), unit)
    if mode == "all" or a.ndim == 1:
        return float(value[0])
    return value.reshape(a.shape[:-1])
