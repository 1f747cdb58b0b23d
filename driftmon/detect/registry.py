"""The divergence registry: one entry per metric, so a new metric is one entry.

Each :class:`Divergence` states its per-bin terms (in nats, from probability
rows ``p`` = current and ``q`` = reference), how the terms reduce to the
divergence, and whether the unit applies (log-based metrics are reported in
``nats`` or ``bits``; a metric that is not log-based is ``unitless``).  A
family indexed by an order (``renyi``) is ``ordered``: its terms take the
order as a third argument (``detector.renyi_alpha``).

A :class:`SummaryDivergence` works on the two windows' summaries themselves
(fine buckets, exact moments) instead of the comparison bins:
``compute(summarizer, current, reference)`` gives the value (in nats, or in
the feature's units when ``value_unit`` is set) and per-comparison-bin
contributions, or ``None`` where there are none.  Its p-value is still the
G-test on the comparison bins.

Each entry names the feature kinds it applies to (:data:`FEATURE_KINDS`);
the config rejects any other combination.  Everything else (smoothing,
validation, row-wise evaluation, contributions, the detector, the config's
list of metric names) reads this table.

>>> list(REGISTRY)
['kl', 'kl_reverse', 'jeffreys', 'js', 'hellinger', 'psi', 'renyi', 'wasserstein', 'gaussian_kl']
>>> [REGISTRY[m].unit_for("bits") for m in ("kl", "hellinger", "wasserstein", "gaussian_kl")]
['bits', 'unitless', 'value units', 'bits']
>>> metrics_for("categorical")[-1], REGISTRY["gaussian_kl"].features
('renyi', ('numeric_quantile',))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import rel_entr

from driftmon.detect import numeric_metrics

# What a feature's summaries hold: categorical values (declared or open vocabulary),
# numbers in declared `edges` bins, or numbers on the quantile features' fine grid.
FEATURE_KINDS = ("categorical", "numeric_edges", "numeric_quantile")
NUMERIC_KINDS = ("numeric_edges", "numeric_quantile")
VALUE_UNITS = "value units"  # the unit of a metric in the feature's own units (wasserstein)


def _sum(terms: np.ndarray) -> np.ndarray:
    """Sum of the terms, round-off below 0 clipped."""
    return np.asarray(np.maximum(terms.sum(axis=-1), 0.0))


@dataclass(frozen=True)
class Divergence:
    name: str
    terms: Callable[..., np.ndarray]  # per-bin terms in nats: terms(p, q), or terms(p, q, order) if ordered
    reduce: Callable[[np.ndarray], np.ndarray] = _sum
    log_based: bool = True  # reported in nats or bits; otherwise "unitless"
    doc: str = ""
    ordered: bool = False  # a family indexed by an order (renyi: detector.renyi_alpha)
    features: tuple[str, ...] = FEATURE_KINDS

    def unit_for(self, unit: str) -> str:
        return unit if self.log_based else "unitless"


@dataclass(frozen=True)
class SummaryDivergence:
    name: str
    # (summarizer, current, reference) -> (value in nats or value_unit, per-comparison-bin contributions or None)
    compute: Callable[[Any, Any, Any], tuple[float, np.ndarray | None]]
    features: tuple[str, ...]
    value_unit: str | None = None  # None: log-based, reported in nats or bits
    doc: str = ""

    @property
    def log_based(self) -> bool:
        return self.value_unit is None

    def unit_for(self, unit: str) -> str:
        return unit if self.value_unit is None else self.value_unit


def _psi(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    # (p - q) ln(p/q): 0 where p == q (including both 0), +inf where exactly one is 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (p - q) * (np.log(p) - np.log(q))
    return np.where(p == q, 0.0, np.where((p == 0) | (q == 0), np.inf, t))


def _js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)
    return 0.5 * rel_entr(p, m) + 0.5 * rel_entr(q, m)


def _renyi(p: np.ndarray, q: np.ndarray, alpha: float) -> np.ndarray:
    """Per-bin terms of the Renyi divergence of order ``alpha`` that sum to it.

    ``D_alpha = ln(S) / (alpha - 1)`` with ``S = sum t_i``, ``t_i = p_i^alpha q_i^(1-alpha)``.
    The terms of the inner sum, ``t_i``, would name the most populous bins,
    not the ones that moved, so the contribution of bin i is instead
    ``u_i ln(S) / ((alpha - 1)(S - 1))`` with ``u_i = t_i - p_i`` (``sum u = S - 1``):
    0 where ``p_i = q_i``, summing to ``D_alpha``, and ``p_i ln(p_i/q_i)`` (KL's
    terms) in the limit ``alpha -> 1``.  ``u_i = p_i expm1((1 - alpha) ln(q_i/p_i))``
    keeps small divergences accurate.  ``p_i = 0`` adds 0.  ``q_i = 0 < p_i`` gives
    ``+inf`` for ``alpha > 1``; for ``alpha < 1`` only disjoint supports (``S = 0``)
    do.  A term that overflows float64 (``(alpha - 1) ln(p_i/q_i) > 709``, only for
    very large orders) also gives ``+inf``.
    """
    a = float(alpha)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = (1.0 - a) * (np.log(q) - np.log(p))  # ln(t_i / p_i) where p_i > 0
        live = p > 0
        u = np.where(live, p * np.expm1(d), 0.0)
        s = np.where(live, p * np.exp(d), 0.0).sum(axis=-1, keepdims=True)
        x = u.sum(axis=-1, keepdims=True)  # S - 1, without the cancellation
        log_s = np.where(np.abs(x) > 0.5, np.log(s), np.log1p(np.maximum(x, -0.5)))
        g = np.where(x == 0, 1.0, log_s / np.where(x == 0, 1.0, x))  # ln(S) / (S - 1), 1 at S = 1
        c = u * g / (a - 1.0)
    # 0 * inf (bins with u = 0 when S = 0) adds 0; inf * nan (S = inf) is the infinite bin itself
    return np.where(np.isnan(c), np.where(np.isinf(u), np.inf, 0.0), c)


def _hellinger_reduce(terms: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt(np.minimum(_sum(terms), 1.0)))


REGISTRY: dict[str, Divergence | SummaryDivergence] = {d.name: d for d in (
    Divergence("kl", rel_entr, doc="D(P||Q) = sum p ln(p/q)"),
    Divergence("kl_reverse", lambda p, q: rel_entr(q, p), doc="D(Q||P)"),
    Divergence("jeffreys", lambda p, q: rel_entr(p, q) + rel_entr(q, p), doc="D(P||Q) + D(Q||P)"),
    Divergence("js", _js, doc="Jensen-Shannon: D(P||M)/2 + D(Q||M)/2, M = (P+Q)/2; at most ln 2 nats"),
    Divergence("hellinger", lambda p, q: 0.5 * (np.sqrt(p) - np.sqrt(q)) ** 2, _hellinger_reduce,
               log_based=False, doc="sqrt(sum (sqrt p - sqrt q)^2 / 2) in [0, 1]; terms are those of H^2"),
    Divergence("psi", _psi, doc="population stability index sum (p - q) ln(p/q)"),
    Divergence("renyi", _renyi, ordered=True,
               doc="Renyi divergence of order alpha: ln(sum p^alpha q^(1-alpha)) / (alpha - 1); alpha -> 1 is kl"),
    SummaryDivergence("wasserstein", numeric_metrics.wasserstein, NUMERIC_KINDS, value_unit=VALUE_UNITS,
                      doc="Wasserstein-1 on the fine buckets (or declared edges), in the feature's units"),
    SummaryDivergence("gaussian_kl", numeric_metrics.gaussian_kl, ("numeric_quantile",),
                      doc="KL between Gaussians fitted by exact moments; only for near-normal features"),
)}

METRICS = tuple(REGISTRY)  # every metric name the config accepts
BIN_METRICS = tuple(n for n, d in REGISTRY.items() if isinstance(d, Divergence))  # computed on comparison bins


def metrics_for(feature_kind: str) -> tuple[str, ...]:
    """The metrics that apply to a feature kind (one of :data:`FEATURE_KINDS`)."""
    return tuple(n for n, d in REGISTRY.items() if feature_kind in d.features)
UNITS = ("nats", "bits")
