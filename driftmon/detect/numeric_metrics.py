"""Metrics of numeric features computed from the window summaries, not the comparison bins.

* **Wasserstein-1** (earth mover's distance) ``W1 = integral |F_P(x) - F_Q(x)| dx``,
  in the feature's own units (reported as ``"value units"``), on the fine
  buckets of the two windows: each bucket's count sits at its representative
  value, which is within the relative accuracy ``a`` of every value in the
  bucket, so ``|W1(buckets) - W1(raw values)| <= a (E_P|x| + E_Q|x|)``.  For
  declared ``edges`` inner bins sit at their midpoints and underflow/overflow
  at the first/last edge (:meth:`NumericSpec.points
  <driftmon.summaries.bins.NumericSpec.points>`): the W1 of the binned
  distributions, within the widest inner bin of the raw one when nothing
  falls outside the edges.  Missing and infinite values are left out.  The
  contribution of a comparison bin is the part of the integral from its
  values up to the next value, so contributions are >= 0 and sum to W1.
* **KL between fitted Gaussians** ``KL(N0||N1) = ln(s1/s0) + (s0^2 + (m0 - m1)^2)
  / (2 s1^2) - 1/2`` (nats), N0 fitted to the current window and N1 to the
  reference by their exact count, sum and sum of squares (population
  variance).  Cheap and bin-free, but it sees only the first two moments: it
  is a good divergence only for a feature close to normal (a shift in shape
  with the same mean and variance gives 0).  A window with zero variance is a
  point mass: the divergence is 0 when both windows are the same point mass,
  ``+inf`` otherwise.  No per-bin contributions.

Either returns NaN when a window has no finite value (all missing); the
detector reports ``insufficient_data`` then.

>>> import numpy as np
>>> w, per_value = wasserstein_points(np.array([0.0, 1.0, 3.0]), np.array([1, 1, 0]), np.array([0, 1, 1]))
>>> w, per_value.tolist()  # half the mass moves from 0 to 1, half from 1 to 3
(1.5, [0.5, 1.0, 0.0])
>>> round(gaussian_kl_moments(0.0, 1.0, 1.0, 4.0), 6)  # ln 2 + (1 + 1)/8 - 1/2
0.443147
>>> gaussian_kl_moments(3.0, 0.0, 3.0, 0.0), gaussian_kl_moments(3.0, 0.0, 3.0, 1.0)
(0.0, inf)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def wasserstein_points(values: np.ndarray, w_current: np.ndarray, w_reference: np.ndarray
                       ) -> tuple[float, np.ndarray]:
    """W1 between two weightings of the same ascending, distinct, finite values.

    Weights are normalised (counts are fine).  Returns W1 and each value's
    contribution: ``|F_P - F_Q|`` just after it times the gap to the next value
    (the last value's is 0).  NaN when either weighting is all zero.
    """
    x = np.asarray(values, dtype=np.float64)
    a, b = np.asarray(w_current, dtype=np.float64), np.asarray(w_reference, dtype=np.float64)
    if not (x.shape == a.shape == b.shape and x.ndim == 1):
        raise ValueError(f"values and weights must be 1-D of one shape, got {x.shape}, {a.shape}, {b.shape}")
    if np.any(np.diff(x) <= 0) or not np.all(np.isfinite(x)):
        raise ValueError("values must be finite and strictly increasing")
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("weights must be non-negative")
    na, nb = a.sum(), b.sum()
    if na <= 0 or nb <= 0:
        return math.nan, np.zeros(x.size)
    gap_cdf = np.abs(np.cumsum(a) / na - np.cumsum(b) / nb)
    contrib = np.append(gap_cdf[:-1] * np.diff(x), 0.0)
    return float(contrib.sum()), contrib


def wasserstein(summarizer: Any, current: Any, reference: Any) -> tuple[float, np.ndarray | None]:
    """W1 of two numeric windows on their fine buckets (or declared edges), in value
    units, and its contributions per comparison bin (``summarizer.bins``)."""
    support = summarizer.support([current, reference])
    value, per_value = wasserstein_points(support.values, support.counts[0], support.counts[1])
    if math.isnan(value):
        return value, None
    return value, np.bincount(support.bin_index, weights=per_value, minlength=support.n_bins)


def _r_minus_1_minus_log_r(v0: float, v1: float) -> float:
    """``r - 1 - ln r`` for ``r = v0 / v1``, without cancellation near r = 1 nor
    underflow of r near 0."""
    x = (v0 - v1) / v1
    if abs(x) < 1e-4:
        return x * x * (0.5 - x * (1 / 3 - x * (0.25 - x / 5)))
    if abs(x) < 0.5:
        return x - math.log1p(x)
    return v0 / v1 - 1 - (math.log(v0) - math.log(v1))


def gaussian_kl_moments(m0: float, v0: float, m1: float, v1: float) -> float:
    """``KL(N(m0, v0) || N(m1, v1))`` in nats, from means and *variances*.

    Zero variance is a point mass: 0 when both are the same point, else +inf.
    """
    if any(math.isnan(t) for t in (m0, v0, m1, v1)):
        return math.nan
    if v0 < 0 or v1 < 0:
        raise ValueError(f"variances must be >= 0, got {v0}, {v1}")
    if v0 == 0 or v1 == 0:
        return 0.0 if (v0 == v1 and m0 == m1) else math.inf
    if math.isinf(v0) or math.isinf(v1):
        return math.nan if v0 == v1 else math.inf
    # ln(s1/s0) + v0/(2 v1) - 1/2 = (r - 1 - ln r) / 2 with r = v0 / v1
    return 0.5 * _r_minus_1_minus_log_r(v0, v1) + (m0 - m1) ** 2 / (2 * v1)


def gaussian_kl(summarizer: Any, current: Any, reference: Any) -> tuple[float, np.ndarray | None]:
    """KL between the Gaussians fitted to two quantile-feature windows by their exact
    moments (nats); no per-bin contributions."""
    for s in (current, reference):
        if getattr(s, "kind", None) != "numeric":
            raise ValueError("gaussian_kl needs the exact moments of a quantile numeric feature (bins: quantile)")
    return gaussian_kl_moments(current.mean, current.variance, reference.mean, reference.variance), None
