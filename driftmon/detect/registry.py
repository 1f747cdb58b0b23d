"""The divergence registry: one entry per metric, so a new metric is one entry.

Each :class:`Divergence` states its per-bin terms (in nats, from probability
rows ``p`` = current and ``q`` = reference), how the terms reduce to the
divergence, and whether the unit applies (log-based metrics are reported in
``nats`` or ``bits``; a metric that is not log-based is ``unitless``).
Everything else (smoothing, validation, row-wise evaluation, contributions,
the detector, the config's list of metric names) reads this table.

>>> sorted(REGISTRY)
['hellinger', 'jeffreys', 'js', 'kl', 'kl_reverse', 'psi']
>>> REGISTRY["hellinger"].unit_for("bits"), REGISTRY["kl"].unit_for("bits")
('unitless', 'bits')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import rel_entr


def _sum(terms: np.ndarray) -> np.ndarray:
    """Sum of the terms, round-off below 0 clipped."""
    return np.asarray(np.maximum(terms.sum(axis=-1), 0.0))


@dataclass(frozen=True)
class Divergence:
    name: str
    terms: Callable[[np.ndarray, np.ndarray], np.ndarray]  # per-bin terms in nats
    reduce: Callable[[np.ndarray], np.ndarray] = _sum
    log_based: bool = True  # reported in nats or bits; otherwise "unitless"
    doc: str = ""

    def unit_for(self, unit: str) -> str:
        return unit if self.log_based else "unitless"


def _psi(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    # (p - q) ln(p/q): 0 where p == q (including both 0), +inf where exactly one is 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (p - q) * (np.log(p) - np.log(q))
    return np.where(p == q, 0.0, np.where((p == 0) | (q == 0), np.inf, t))


def _js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)
    return 0.5 * rel_entr(p, m) + 0.5 * rel_entr(q, m)


def _hellinger_reduce(terms: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt(np.minimum(_sum(terms), 1.0)))


REGISTRY: dict[str, Divergence] = {d.name: d for d in (
    Divergence("kl", rel_entr, doc="D(P||Q) = sum p ln(p/q)"),
    Divergence("kl_reverse", lambda p, q: rel_entr(q, p), doc="D(Q||P)"),
    Divergence("jeffreys", lambda p, q: rel_entr(p, q) + rel_entr(q, p), doc="D(P||Q) + D(Q||P)"),
    Divergence("js", _js, doc="Jensen-Shannon: D(P||M)/2 + D(Q||M)/2, M = (P+Q)/2; at most ln 2 nats"),
    Divergence("hellinger", lambda p, q: 0.5 * (np.sqrt(p) - np.sqrt(q)) ** 2, _hellinger_reduce,
               log_based=False, doc="sqrt(sum (sqrt p - sqrt q)^2 / 2) in [0, 1]; terms are those of H^2"),
    Divergence("psi", _psi, doc="population stability index sum (p - q) ln(p/q)"),
)}

METRICS = tuple(REGISTRY)
UNITS = ("nats", "bits")
