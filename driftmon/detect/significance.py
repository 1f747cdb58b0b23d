"""P-value of "no change" between two count histograms (the G-test).

The current and reference histograms form a 2 x K contingency table (rows
current, reference; columns bins).  The likelihood-ratio statistic is

    G = 2 * sum_cells O ln(O / E),   E = row total * column total / N,

over cells with O > 0.  Bins empty in both histograms carry no information
and are dropped, so ``df = K_nonempty - 1``; with ``df == 0`` there is
nothing to test and p = 1.

G is a divergence in disguise: with P_hat, Q_hat the two normalised rows and
M_hat the pooled histogram, ``G = 2 * (n D(P_hat||M_hat) + m D(Q_hat||M_hat))``
nats, so ``G / 2`` is the sample-size-weighted KL of each sample from the
pooled one (for n = m that is ``G = 4 n JS(P_hat, Q_hat)``).

Two ways to turn G into a p-value:

* ``chi2``: G ~ chi^2(df) asymptotically.  Used when the table is large by
  Cochran's rule: at most ``max_small_fraction`` of the expected cells are
  below ``min_expected``.
* ``permutation``: otherwise (sparse tables, where the chi^2 approximation is
  anti-conservative) an exact-conditional Monte Carlo test.  Permuting the
  event labels with both margins fixed is drawing the current row from a
  multivariate hypergeometric over the column totals; all permutations are
  drawn in one vectorised call.  ``p = (1 + #{G_b >= G_obs}) / (B + 1)``.

Clustered events (``streams[].cluster_by``): with a design effect ``d``
(:func:`design_effect`, first-order Rao-Scott), the p-value is that of
``G / d``: ``chi2.sf(G / d, df)``, or the share of permuted tables whose G
reaches ``G_obs / d``.  ``statistic`` stays the raw G.  ``d = 1`` (the
default) is the independent-events test, bit for bit.

Determinism: with ``seed=None`` the generator is seeded from a hash of the
two count vectors, so the daemon and an offline replay get bit-identical
p-values for the same counts (given the same numpy version).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.special import xlogy
from scipy.stats import chi2

from driftmon.detect.divergence import _check_nonzero_rows, _pair

_CHUNK_CELLS = 2_000_000  # permutation draws are generated in blocks of at most this many cells


@dataclass(frozen=True)
class TestResult:
    """Outcome of :func:`g_test`; ``method`` is ``chi2``, ``permutation`` or ``degenerate``."""

    __test__ = False  # not a pytest test class

    statistic: float
    df: int
    p_value: float
    method: str
    null_mean: float | None = None  # mean of G under "no change": df (chi2), the draws' mean (permutation)

    @property
    def expected(self) -> float:
        """The statistic's mean under "no change" (``df`` unless the permutations measured it)."""
        return float(self.df) if self.null_mean is None else self.null_mean


def g_statistic(counts_current, counts_reference) -> np.ndarray:
    """G statistic of the 2 x K table, row-wise: shape ``()`` or ``(R,)``."""
    a, b = _pair(counts_current, counts_reference, "counts_current", "counts_reference")
    n = _check_nonzero_rows(a, "counts_current")[..., None]
    m = _check_nonzero_rows(b, "counts_reference")[..., None]
    t = a + b
    total = n + m
    ea, eb = n * t / total, m * t / total
    ra = np.divide(a, ea, out=np.ones_like(a), where=ea > 0)
    rb = np.divide(b, eb, out=np.ones_like(b), where=eb > 0)
    g = 2.0 * (xlogy(a, ra) + xlogy(b, rb)).sum(axis=-1)
    return np.asarray(np.maximum(g, 0.0))


def _as_int_counts(x, name: str) -> np.ndarray:
    f = np.asarray(x, dtype=np.float64)
    if f.ndim != 1:
        raise ValueError(f"g_test takes one histogram pair: {name} must have shape (K,), got {f.shape}")
    if np.any(f != np.round(f)) or np.any(np.abs(f) > 2**53):
        raise ValueError(f"{name} must hold integer counts")
    return f.astype(np.int64)


def _derived_seed(a: np.ndarray, b: np.ndarray) -> int:
    """Stable 64-bit seed from the counts themselves (never global randomness)."""
    h = hashlib.blake2b(digest_size=8, person=b"driftmon-gtest")
    h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(b, dtype="<i8").tobytes())
    return int.from_bytes(h.digest(), "little")


def _permutation_p(a: np.ndarray, b: np.ndarray, g_obs: float, permutations: int, seed: int,
                   design_effect: float = 1.0) -> tuple[float, float]:
    """Monte Carlo exact-conditional p-value for integer rows ``a``, ``b`` (no empty columns),
    and the mean of G over the draws (G's mean under "no change" for independent events:
    ``g_obs - 2 (S_obs - mean S)``).

    G depends on a permuted table only through ``S = sum_k xlogx(x_k) + xlogx(t_k - x_k)``
    (``x`` the drawn row, ``t`` the column totals), evaluated by table lookup.  With a
    design effect ``d != 1`` the threshold is the S of ``G_obs / d``:
    ``G = 2 (S - xlogx(n) - xlogx(m) - sum_k xlogx(t_k) + xlogx(n + m))``.
    """
    t = a + b
    n, m = int(a.sum()), int(b.sum())
    total, k = n + m, t.size
    # G is symmetric in the rows: draw whichever row is smaller.
    x_obs, nsample = (a, n) if n <= m else (b, m)
    v = np.arange(int(t.max()) + 1, dtype=np.float64)
    xlx = xlogy(v, v)
    s_obs = float(np.sum(xlx[x_obs] + xlx[t - x_obs]))
    if design_effect != 1.0:
        g_obs = g_obs / design_effect
        s_obs = g_obs / 2.0 + float(xlogy(n, n) + xlogy(m, m) + xlx[t].sum() - xlogy(total, total))
    # Tolerance: relative part per the usual convention, plus round-off of S itself
    # (tables equal up to bin order give equal G but may differ in the last bits).
    tol = 0.5e-9 * abs(g_obs) + 1e-12 * abs(s_obs)
    rng = np.random.Generator(np.random.PCG64(seed))
    # "count" is O(N) per draw, "marginals" O(K): pick the cheaper (deterministically).
    method: Literal["count", "marginals"] = "count" if total <= 16 * k else "marginals"
    chunk = max(1, _CHUNK_CELLS // k)
    hits, done, s_sum = 0, 0, 0.0
    while done < permutations:
        size = min(chunk, permutations - done)
        x = rng.multivariate_hypergeometric(t, nsample, size=size, method=method)
        s = (xlx[x] + xlx[t - x]).sum(axis=1)
        hits += int(np.count_nonzero(s >= s_obs - tol))
        s_sum += float(s.sum())
        done += size
    return (1 + hits) / (permutations + 1), max(g_obs - 2.0 * (s_obs - s_sum / permutations), 0.0)


def g_test(
    counts_current,
    counts_reference,
    *,
    permutations: int = 999,
    min_expected: float = 5.0,
    max_small_fraction: float = 0.2,
    seed: int | None = None,
    design_effect: float | DesignEffect = 1.0,
) -> TestResult:
    """Test "same distribution" for one pair of count histograms of shape (K,).

    chi^2 asymptotics when the table is large (Cochran's rule) or
    ``permutations == 0``; otherwise a Monte Carlo permutation test with
    ``permutations`` draws, seeded from the counts unless ``seed`` is given.
    ``design_effect`` (clustered events): a number ``d``, the p-value of ``G / d``
    (first-order Rao-Scott), or a :class:`DesignEffect`, that of ``G / scale`` on
    ``chi^2(df)`` (second order); see :func:`design_effect`.  The result's
    ``expected`` (G's mean under "no change") is scaled accordingly.
    """
    deff = design_effect if isinstance(design_effect, DesignEffect) else DesignEffect(
        float(design_effect), float(design_effect), math.nan)
    if not (math.isfinite(deff.scale) and deff.scale > 0 and (math.isnan(deff.df) or deff.df > 0)):
        raise ValueError(f"design_effect must be a finite number > 0, got {design_effect!r}")
    if int(permutations) != permutations or permutations < 0:
        raise ValueError(f"permutations must be a non-negative integer, got {permutations!r}")
    permutations = int(permutations)
    a_full = _as_int_counts(counts_current, "counts_current")
    b_full = _as_int_counts(counts_reference, "counts_reference")
    a, b = _pair(a_full, b_full, "counts_current", "counts_reference")  # shape/sign checks
    _check_nonzero_rows(a, "counts_current")
    _check_nonzero_rows(b, "counts_reference")
    keep = (a + b) > 0
    ai, bi = a_full[keep], b_full[keep]
    df = int(keep.sum()) - 1
    if df == 0:
        return TestResult(statistic=0.0, df=0, p_value=1.0, method="degenerate")
    g = float(g_statistic(ai, bi))
    n, m = float(ai.sum()), float(bi.sum())
    t = (ai + bi).astype(np.float64)
    expected = np.concatenate([n * t, m * t]) / (n + m)
    small = np.count_nonzero(expected < min_expected) / expected.size
    if permutations == 0 or small <= max_small_fraction:
        null = None if _independent(deff) else deff.scale * (df if math.isnan(deff.df) else deff.df)
        return TestResult(statistic=g, df=df, p_value=_corrected_p(g, df, deff), method="chi2", null_mean=null)
    if seed is None:
        seed = _derived_seed(a_full, b_full)
    if _independent(deff):
        p, null_mean = _permutation_p(ai, bi, g, permutations, seed)
    else:  # the permuted tables are independent events: compare them with the G that independent
        # events would need for the same (corrected) asymptotic p-value; G's null mean grows by the mean effect
        g_ind = float(chi2.isf(_corrected_p(g, df, deff), df))
        p, null_mean = _permutation_p(ai, bi, g, permutations, seed, g / g_ind if g_ind > 0 else math.inf)
        null_mean *= deff.mean
    return TestResult(statistic=g, df=df, p_value=p, method="permutation", null_mean=null_mean)


def _independent(deff: DesignEffect) -> bool:
    return deff.scale == 1.0 and math.isnan(deff.df)


def _corrected_p(g: float, df: int, deff: DesignEffect) -> float:
    if _independent(deff):
        return float(chi2.sf(g, df))  # independent events, bit for bit as before
    return float(chi2.sf(g / deff.scale, df if math.isnan(deff.df) else deff.df))


def chi2_p_value(statistic: float, df: int) -> float:
    """Asymptotic p-value of a G statistic (exposed for comparison and tests)."""
    return 1.0 if df <= 0 else float(chi2.sf(statistic, df))


@dataclass(frozen=True)
class DesignEffect:
    """A second-order Rao-Scott correction: ``G ~ scale * chi^2(df)`` instead of ``chi^2(K - 1)``.

    ``mean``: the mean generalized design effect (the eigenvalues' mean, what results
    report as ``design_effect``); ``scale = sum delta^2 / sum delta`` and
    ``df = (sum delta)^2 / sum delta^2`` (Satterthwaite), so ``scale * df = mean * (K - 1)``.
    """

    mean: float
    scale: float
    df: float


NO_EFFECT = DesignEffect(1.0, 1.0, math.nan)  # df NaN: the table's own K - 1


def window_covariance(stats: Any, p: np.ndarray) -> np.ndarray:
    """``sum_i e_i e_i^T`` with ``e_ik = m_ik - m_i p_k`` over one window's clusters (K x K):
    the exact clusters, scaled up by the sketched ones' share of ``sum m_i^2``, plus the
    events without a cluster as clusters of one (expected ``diag(p) - p p^T`` each)."""
    k = p.size
    multinomial = np.diag(p) - np.outer(p, p)
    cov = float(stats.singles) * multinomial
    cluster = np.asarray(stats.cluster, dtype=np.int64)
    if cluster.size:
        count = np.asarray(stats.count, dtype=np.float64)
        bins = np.asarray(stats.bin, dtype=np.int64)
        m = np.bincount(cluster, weights=count)
        order = np.argsort(cluster, kind="stable")  # (cluster_stats gives them in cluster order already)
        cluster, bins, count = cluster[order], bins[order], count[order]
        indptr = np.searchsorted(cluster, np.arange(m.size + 1))
        mat = sparse.csr_matrix((count, bins, indptr), shape=(m.size, k))  # repeated cells add up in products
        mtm = (mat.T @ mat).toarray()  # sum_i m_ik m_il
        mtm_m = np.bincount(bins, weights=count * m[cluster], minlength=k)  # sum_i m_ik m_i
        sq = float(np.dot(m, m))
        exact = mtm - np.outer(mtm_m, p) - np.outer(p, mtm_m) + sq * np.outer(p, p)
        cov = cov + exact * (1.0 + float(stats.tail_sq) / sq)  # sketched clusters: as heterogeneous as exact
    elif stats.tail_sq:
        cov = cov + float(stats.tail_sq) * multinomial  # nothing exact to learn from: homogeneous clusters
    return cov


def design_effect(windows: Sequence[Any], counts: Sequence[Any], *, floor: float = 1.0) -> DesignEffect:
    """Rao-Scott design effect of comparing histograms of clustered events.

    ``counts``: each window's histogram over the comparison bins; ``windows``: each
    window's cluster statistics in the same bins (``cluster``, ``bin``, ``count``
    arrays of the exact (cluster, bin) cells, ``tail_sq`` the estimated sum of
    squared sizes of the clusters past the exact cap, ``singles`` events without a
    cluster, ``n`` all events; :class:`driftmon.summaries.clusters.ClusterStats`).

    With ``p`` the pooled shares (bins with ``p_k > 0``), ``e_ik = m_ik - m_i p_k`` the
    residual of cluster ``i``, ``V_w = sum_i e_i e_i^T`` and ``n_w`` the events of
    window ``w``, the difference of the two windows' shares has covariance
    ``C = sum_w V_w / n_w^2`` (clusters are independent draws; one seen in both
    windows is counted as two, conservative when it keeps its preferences), where
    independent events would give ``C_0 = (diag p - p p^T) sum_w 1 / n_w``.  G is
    then ~ ``sum_j delta_j chi^2_1`` with ``delta`` the eigenvalues of
    ``A = diag(1/p) C / sum_w (1 / n_w)``: ``mean = tr(A) / (K - 1)`` is the
    first-order Rao-Scott design effect (1 for independent events, ``sum m_i^2 / n``
    for clusters whose events share a bin), and the Satterthwaite match
    ``scale = tr(A^2) / tr(A)``, ``df = tr(A)^2 / tr(A^2)`` also covers unequal
    eigenvalues (e.g. users differing mostly in one direction, a score's level).
    When ``mean < floor`` (1 by default: clustering never makes the test more
    confident) there is no correction.
    """
    if len(windows) != len(counts) or not windows:
        raise ValueError("need one set of cluster statistics per histogram")
    cs = [np.asarray(c, dtype=np.float64) for c in counts]
    pooled = np.sum(cs, axis=0)
    live = pooled > 0
    if int(live.sum()) < 2:
        return NO_EFFECT if floor >= 1.0 else DesignEffect(1.0, 1.0, math.nan)
    p = pooled / pooled.sum()
    cov = np.zeros((p.size, p.size))
    inv_n = 0.0
    for st in windows:
        n = int(st.n)
        if n > 0:
            cov += window_covariance(st, p) / (float(n) * n)
            inv_n += 1.0 / n
    a = (cov[np.ix_(live, live)] / p[live][:, None]) / inv_n
    df = int(live.sum()) - 1
    tr, tr2 = float(np.trace(a)), float(np.sum(a * a.T))
    mean = tr / df
    if not (mean >= floor and tr > 0 and tr2 > 0):
        return NO_EFFECT if floor >= 1.0 else DesignEffect(mean, 1.0, math.nan)
    return DesignEffect(mean, tr2 / tr, tr * tr / tr2)


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (the step-up "q-values") of a family of tests.

    ``p_adj[(i)] = min_{j >= i} min(1, m p_(j) / j)`` over the ascending order
    ``p_(1) <= ... <= p_(m)``; rejecting every test with ``p_adj <= q`` controls
    the false discovery rate at ``q`` for independent or positively dependent
    tests.  NaN entries (no test) are left NaN and do not count in ``m``.

    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.5]).round(3).tolist()
    [0.04, 0.053, 0.053, 0.5]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    live = np.flatnonzero(~np.isnan(p))
    m = live.size
    if m == 0:
        return out
    order = live[np.argsort(p[live], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out[order] = adjusted
    return out


__all__ = ["TestResult", "DesignEffect", "benjamini_hochberg", "chi2_p_value", "design_effect", "g_statistic",
           "g_test", "window_covariance"]
