"""Divergences between a current histogram P and a reference histogram Q.

(The metrics computed from the window summaries instead, ``wasserstein`` and
``gaussian_kl``, are evaluated by :func:`compare_summaries`; see
:mod:`driftmon.detect.numeric_metrics`.)

Pure, row-wise functions over numpy arrays: inputs of shape ``(K,)`` give a
0-d result, inputs of shape ``(R, K)`` (R histograms at once, like
``kldiv.m``'s per-row mode) give shape ``(R,)``.  Per-bin contributions keep
the input shape.  "Current" P is the newly closed window, "reference" Q the
previous or pinned window; ``kl`` is D(P||Q).

Facts worth keeping in mind (the tests check each one):

* ``D(P||Q) = sum_i p_i ln(p_i / q_i) >= 0``, with equality iff P = Q.
* Bins with ``p_i = 0`` add exactly 0 (``0 ln 0 = 0``, the
  :func:`scipy.special.rel_entr` convention, never NaN).  A bin with
  ``q_i = 0 < p_i`` makes the divergence ``+inf``: with smoothing ``none`` no
  epsilon is ever added silently.  Use ``additive`` or ``floor`` smoothing
  (:func:`smooth`) for finite values; the smoothing is part of every result.
* KL is not symmetric (``kl_reverse`` is D(Q||P)), satisfies no triangle
  inequality and is not additive along chains: in general
  ``D(P||R) != D(P||Q) + D(Q||R)`` (see the example below).
* ``D(P||Q) = H(P, Q) - H(P)``: cross-entropy minus entropy.
* ``jeffreys = D(P||Q) + D(Q||P)``; ``psi = sum (p - q) ln(p / q)``, the
  population stability index, which is the same number as Jeffreys in nats.
* ``js = D(P||M)/2 + D(Q||M)/2`` with ``M = (P + Q)/2``, always finite and at
  most ln 2 nats (1 bit).
* ``hellinger = sqrt(sum (sqrt p - sqrt q)^2 / 2)`` lies in [0, 1].  It is not
  log-based, so ``unit`` does not change it (the argument is still accepted);
  its per-bin contributions are the terms of H^2, which sum to H^2, not H.
* ``renyi`` of order ``alpha`` (``order=``; > 0, != 1) is
  ``ln(sum p^alpha q^(1-alpha)) / (alpha - 1)``: non-decreasing in alpha, KL in
  the limit alpha -> 1, ``-2 ln(1 - H^2)`` at 1/2 and ``ln(1 + chi^2)`` at 2.  Its
  contributions sum to it and are 0 on unchanged bins (see the registry).
* ``unit="bits"`` divides every log-based result by ln 2.
* Plug-in estimates are biased upwards: for two samples of sizes n and m from
  the *same* distribution over K bins, ``E[D(P_hat||Q_hat)] ~ (K-1)/2 *
  (1/n + 1/m)`` nats.  A threshold must sit above that floor (or use the
  p-value from :mod:`driftmon.detect.significance`).

Examples:

>>> import numpy as np
>>> from driftmon.config import Smoothing
>>> p, q, r = np.array([0.5, 0.5]), np.array([0.75, 0.25]), np.array([0.9, 0.1])
>>> round(float(kl(p, r)), 6), round(float(kl(r, p)), 6)  # not symmetric
(0.510826, 0.368064)
>>> round(float(kl(p, q) + kl(q, r)), 6)  # not additive, and below D(P||R)
0.236173
>>> round(float(divergence("js", np.array([1.0, 0.0]), np.array([0.0, 1.0]), unit="bits")), 6)
1.0
>>> float(divergence("kl", np.array([0.5, 0.5]), np.array([1.0, 0.0])))
inf
>>> d, c = compare("kl", [30, 10, 0], [20, 20, 0], Smoothing("none"))
>>> round(float(d), 6), [round(float(x), 6) for x in c]
(0.130812, [0.304099, -0.173287, 0.0])
>>> d, c = compare("kl", [10, 0], [0, 10], Smoothing("additive", alpha=0.5))
>>> round(float(d), 4)
2.7677
>>> round(float(renyi(p, r, 2.0)), 6), round(float(renyi(p, r, 1 + 1e-9)), 6)  # order 2; ~1 is KL
(1.021651, 0.510826)
>>> smoothing_label(Smoothing("additive", alpha=0.5)), smoothing_label(Smoothing("floor", floor=1e-6))
('additive(alpha=0.5)', 'floor(1e-06)')
"""

from __future__ import annotations

import math

import numpy as np

from driftmon.config import Smoothing
from driftmon.detect.registry import BIN_METRICS, METRICS, REGISTRY, UNITS, Divergence, SummaryDivergence

_LN2 = math.log(2.0)
_SUM_TOL = 1e-6  # how far a probability row may stray from summing to 1


# --------------------------------------------------------------------------- validation


def check_values(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` if every entry is finite and non-negative (counts or probabilities), else ValueError."""
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(a < 0):
        raise ValueError(f"{name} contains negative values")
    return a


def _as_rows(x, name: str) -> np.ndarray:
    """Float64 array of shape (K,) or (R, K), finite and non-negative."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (K,) or (R, K) with K >= 1, got shape {a.shape}")
    return check_values(a, name)


def _pair(p, q, pname: str, qname: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_rows(p, pname), _as_rows(q, qname)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {pname} has shape {a.shape}, {qname} has shape {b.shape}")
    return a, b


def _check_nonzero_rows(a: np.ndarray, name: str) -> np.ndarray:
    """Row totals; an all-zero row has no distribution (callers guard with min_count)."""
    n = a.sum(axis=-1)
    if np.any(n <= 0):
        raise ValueError(f"{name} has an all-zero row; it defines no distribution")
    return n


def _check_probabilities(p, q) -> tuple[np.ndarray, np.ndarray]:
    a, b = _pair(p, q, "p", "q")
    for arr, name in ((a, "p"), (b, "q")):
        s = arr.sum(axis=-1)
        if np.any(np.abs(s - 1.0) > _SUM_TOL):
            raise ValueError(
                f"{name} rows must sum to 1 (got sums {np.atleast_1d(s)[:5]}); "
                "pass counts to compare() or normalise with smooth()"
            )
    return a, b


def _check_metric_unit(metric: str, unit: str) -> None:
    if metric not in BIN_METRICS:
        if metric in METRICS:
            raise ValueError(f"{metric} is computed from the window summaries, not from histograms: "
                             "use compare_summaries()")
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; expected one of {UNITS}")


def _bin_entry(metric: str) -> Divergence:
    entry = REGISTRY[metric]
    if not isinstance(entry, Divergence):
        raise ValueError(f"{metric} is computed from the window summaries: use compare_summaries()")
    return entry


def _check_order(metric: str, order: float | None) -> None:
    """An ordered family needs its order: finite, > 0 and != 1 (order 1 is ``kl``)."""
    if not _bin_entry(metric).ordered:
        return
    if order is None:
        raise ValueError(f"{metric} needs its order (order=..., detector.renyi_alpha)")
    if not 0 < order < math.inf or order == 1:
        raise ValueError(f"{metric} needs a finite order > 0 other than 1 (order 1 is kl), got {order}")


# --------------------------------------------------------------------------- smoothing


def smooth(counts_p, counts_q, smoothing: Smoothing) -> tuple[np.ndarray, np.ndarray]:
    """Counts -> probability rows, treating zero bins as ``smoothing`` says.

    ``none``: plain normalisation (zero bins stay zero).  ``additive``:
    ``(c + alpha) / (n + K*alpha)``, applied to BOTH histograms.  ``floor``:
    normalise, ``p = max(p, floor)``, renormalise (both histograms).
    """
    a, b = _pair(counts_p, counts_q, "counts_current", "counts_reference")
    na = _check_nonzero_rows(a, "counts_current")[..., None]
    nb = _check_nonzero_rows(b, "counts_reference")[..., None]
    method = smoothing.method
    if method == "none":
        return a / na, b / nb
    if method == "additive":
        alpha = float(smoothing.alpha)
        if not alpha > 0 or not math.isfinite(alpha):
            raise ValueError(f"additive smoothing needs alpha > 0, got {alpha}")
        k = a.shape[-1]
        return (a + alpha) / (na + k * alpha), (b + alpha) / (nb + k * alpha)
    if method == "floor":
        floor = float(smoothing.floor)
        if not 0 < floor < 1:
            raise ValueError(f"floor smoothing needs 0 < floor < 1, got {floor}")
        pa = np.maximum(a / na, floor)
        pb = np.maximum(b / nb, floor)
        return pa / pa.sum(axis=-1, keepdims=True), pb / pb.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown smoothing method {method!r}; expected none, additive or floor")


def smoothing_label(smoothing: Smoothing) -> str:
    """Short human label recorded with every result, e.g. ``additive(alpha=0.5)``."""
    if smoothing.method == "none":
        return "none"
    if smoothing.method == "additive":
        return f"additive(alpha={float(smoothing.alpha)!r})"
    if smoothing.method == "floor":
        return f"floor({float(smoothing.floor)!r})"
    raise ValueError(f"unknown smoothing method {smoothing.method!r}")


# --------------------------------------------------------------------------- per-bin terms


def _terms(metric: str, p: np.ndarray, q: np.ndarray, order: float | None = None) -> np.ndarray:
    """Per-bin terms in nats (for hellinger: terms of H^2)."""
    entry = _bin_entry(metric)
    return entry.terms(p, q, order) if entry.ordered else entry.terms(p, q)


def _scale(metric: str, unit: str) -> float:
    return 1.0 / _LN2 if (unit == "bits" and _bin_entry(metric).log_based) else 1.0


def _reduce(metric: str, terms: np.ndarray) -> np.ndarray:
    """Sum the per-bin terms; clip round-off below 0 (and H above 1)."""
    return _bin_entry(metric).reduce(terms)


def contributions(metric: str, p, q, unit: str = "nats", *, order: float | None = None) -> np.ndarray:
    """Per-bin terms that sum to the divergence (same shape as ``p``).

    For ``kl`` a term may be negative (bins where p < q); the sum is not.  For
    ``hellinger`` the terms are those of H^2 (they sum to H^2, not H) and
    ``unit`` is ignored.  ``order`` is the order of an ordered family
    (``renyi``); other metrics ignore it.
    """
    _check_metric_unit(metric, unit)
    _check_order(metric, order)
    a, b = _check_probabilities(p, q)
    return _terms(metric, a, b, order) * _scale(metric, unit)


def divergence(metric: str, p, q, unit: str = "nats", *, order: float | None = None) -> np.ndarray:
    """Divergence of probability rows ``p`` (current) from ``q`` (reference)."""
    return _reduce(metric, contributions(metric, p, q, unit, order=order))


def compare(metric: str, counts_current, counts_reference, smoothing: Smoothing, unit: str = "nats",
            *, order: float | None = None):
    """``(divergence, contributions)`` from raw counts, after :func:`smooth`."""
    _check_metric_unit(metric, unit)
    _check_order(metric, order)
    p, q = smooth(counts_current, counts_reference, smoothing)
    c = _terms(metric, p, q, order) * _scale(metric, unit)
    return _reduce(metric, c), c


def compare_summaries(metric: str, summarizer, current, reference, unit: str = "nats"
                      ) -> tuple[float, np.ndarray | None]:
    """``(divergence, contributions or None)`` of a metric computed from the two
    windows' summaries (a registry ``SummaryDivergence``: ``wasserstein``,
    ``gaussian_kl``), in ``unit`` when log-based, else in its own unit.  The
    contributions, where the metric has them, are per comparison bin
    (``summarizer.bins([current, reference])``).  NaN when a window has no
    finite value."""
    entry = REGISTRY.get(metric)
    if not isinstance(entry, SummaryDivergence):
        raise ValueError(f"{metric!r} is not computed from summaries; expected one of "
                         f"{tuple(n for n in METRICS if n not in BIN_METRICS)}")
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; expected one of {UNITS}")
    value, c = entry.compute(summarizer, current, reference)
    scale = 1.0 / _LN2 if (unit == "bits" and entry.log_based) else 1.0
    return value * scale, None if c is None else c * scale


# --------------------------------------------------------------------------- named helpers


def kl(p, q, unit: str = "nats") -> np.ndarray:
    """D(P||Q) = sum p ln(p/q)."""
    return divergence("kl", p, q, unit)


def kl_reverse(p, q, unit: str = "nats") -> np.ndarray:
    """D(Q||P)."""
    return divergence("kl_reverse", p, q, unit)


def jeffreys(p, q, unit: str = "nats") -> np.ndarray:
    """D(P||Q) + D(Q||P)."""
    return divergence("jeffreys", p, q, unit)


def js(p, q, unit: str = "nats") -> np.ndarray:
    """Jensen-Shannon divergence, at most ln 2 nats (1 bit)."""
    return divergence("js", p, q, unit)


def hellinger(p, q, unit: str = "nats") -> np.ndarray:
    """Hellinger distance in [0, 1]; ``unit`` is accepted and ignored."""
    return divergence("hellinger", p, q, unit)


def psi(p, q, unit: str = "nats") -> np.ndarray:
    """Population stability index sum (p - q) ln(p/q)."""
    return divergence("psi", p, q, unit)


def renyi(p, q, alpha: float, unit: str = "nats") -> np.ndarray:
    """Renyi divergence of order ``alpha`` (> 0, != 1): ln(sum p^alpha q^(1-alpha)) / (alpha - 1)."""
    return divergence("renyi", p, q, unit, order=alpha)
