"""Scoring of per-entity interest drift: compare an entity's two windows, build its record.

The statistics (shrunk KL toward the population's mix, its no-change bias, the G-test with
Williams' correction) are described in :mod:`driftmon.monitors.entities`; this module is
pure numpy over count matrices, with no state: the counting (slot table, windows) is in
:mod:`driftmon.monitors.entities`, so one process and the scale-out reducer
(:mod:`driftmon.scale.entity_reducer`) score the same counts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import rel_entr
from scipy.stats import chi2

from driftmon.config import EntitiesConfig
from driftmon.detect.result import BinShare, json_number, rfc3339

KIND = "interest_shift"
UNIT = "nats"
P_VALUE_METHOD = "g_test_williams"


@dataclass(frozen=True)
class EntityShift:
    """One entity whose interests moved: the ``interest_shift`` record."""

    stream: str
    entity: str
    window_start: float
    window_end: float
    divergence: float  # adjusted: shrunk KL minus its no-change expectation, nats
    shrunk_divergence: float  # D(P~ || Q~) of the shrunk distributions, nats
    shrunk_bias: float  # what was subtracted: the shrunk KL's expectation with no change, nats
    raw_divergence: float  # plug-in KL of the two windows' shares, nats (inf possible)
    p_value: float
    n_current: int
    n_reference: int
    top_bins: tuple[BinShare, ...]
    threshold: float
    max_p_value: float
    prior_strength: float
    bias: float  # (K-1)/2 (1/n + 1/m): the plug-in KL's expected value with no change, nats
    kind: str = KIND
    unit: str = UNIT
    partial: tuple[str, ...] | None = None  # scale-out: the source partitions missing from the window

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "stream": self.stream,
            "entity": self.entity,
            "window_start": rfc3339(self.window_start),
            "window_end": rfc3339(self.window_end),
            "divergence": json_number(self.divergence),
            "unit": self.unit,
            "n_current": self.n_current,
            "n_reference": self.n_reference,
            "top_bins": [b.to_dict() for b in self.top_bins],
            "metric": "kl",
            "shrunk_divergence": json_number(self.shrunk_divergence),
            "shrunk_bias": json_number(self.shrunk_bias),
            "raw_divergence": json_number(self.raw_divergence),
            "raw_bias": json_number(self.bias),
            "p_value": json_number(self.p_value),
            "p_value_method": P_VALUE_METHOD,
            "prior_strength": self.prior_strength,
            "threshold": self.threshold,
            "max_p_value": self.max_p_value,
        }
        if self.partial is not None:  # only records of scale-out windows closed incomplete
            d["partial"] = True
            d["missing_partitions"] = list(self.partial)
        return d

    def sink_key(self) -> bytes:
        """The Kafka key: the entity, so all of one user's records share a partition."""
        return self.entity.encode("utf-8", "surrogatepass")


@dataclass
class Comparison:
    """Vectorised result of comparing E entities' current windows with their references."""

    adjusted: np.ndarray  # (E,) nats: max(shrunk - bias, 0)
    shrunk: np.ndarray  # (E,) nats: D(P~ || Q~) of the shrunk distributions
    bias: np.ndarray  # (E,) nats: the shrunk KL's approximate expectation when nothing changed
    raw: np.ndarray  # (E,) nats, inf where q = 0 < p
    p_value: np.ndarray  # (E,)
    n: np.ndarray  # (E,) current counts
    m: np.ndarray  # (E,) reference counts
    terms: np.ndarray  # (E, K) per-category terms of the adjusted KL
    support: np.ndarray  # (E,) categories with an event in either window
    g: np.ndarray  # (E,) G statistic of the 2 x K table (before Williams' correction)
    williams: np.ndarray  # (E,) Williams' correction divisor q (>= 1)
    p_adj: np.ndarray  # (E, K) shrunk current distribution
    q_adj: np.ndarray  # (E, K) shrunk reference distribution

    @property
    def df(self) -> np.ndarray:
        return np.maximum(self.support - 1, 0)


def compare(cur: np.ndarray, ref: np.ndarray, population: np.ndarray, prior_strength: float) -> Comparison:
    """Compare each row of ``cur`` (current window counts, E x K) with the same row of ``ref``.

    ``population``: the population's category distribution (K, sums to 1), the mean of the
    Dirichlet prior; ``prior_strength``: its weight in pseudo-events.  Rows with no events in
    either window give NaN.
    """
    c = np.asarray(cur, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    n, m = c.sum(axis=1), r.sum(axis=1)
    a = float(prior_strength)
    prior = a * np.asarray(population, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_adj = (c + prior) / (n + a)[:, None]
        q_adj = (r + prior) / (m + a)[:, None]
        terms = rel_entr(p_adj, q_adj)
        shrunk = terms.sum(axis=1)
        raw = rel_entr(c / n[:, None], r / m[:, None]).sum(axis=1)
        # G-test of independence on the 2 x K table [c; r]
        t = c + r
        total = n + m
        e_c = t * (n / total)[:, None]
        e_r = t * (m / total)[:, None]
        g = 2.0 * (rel_entr(c, e_c).sum(axis=1) + rel_entr(r, e_r).sum(axis=1))
        cols = (t > 0).sum(axis=1)
        # E[D(P~||Q~)] with no change, to first order: each of the (support - 1) free shares of
        # P~ and Q~ varies by (n / (n + a))^2 theta (1 - theta) / n; with a = 0 this is the plug-in
        # bias (K-1)/2 (1/n + 1/m)
        bias = np.maximum(cols - 1, 0) / 2.0 * (n / (n + a) ** 2 + m / (m + a) ** 2)
        adjusted = np.maximum(shrunk - bias, 0.0)
        df = np.maximum(cols - 1, 0)
        inv_t = np.where(t > 0, 1.0 / np.where(t > 0, t, 1.0), 0.0).sum(axis=1)
        williams = 1.0 + (total * (1.0 / n + 1.0 / m) - 1.0) * (total * inv_t - 1.0) / (6.0 * total * np.maximum(df, 1))
        stat = np.where(williams > 0, g / williams, g)
        p = np.where(df > 0, chi2.sf(np.maximum(stat, 0.0), np.maximum(df, 1)), 1.0)
    bad = (n <= 0) | (m <= 0)
    if bad.any():
        adjusted, shrunk, raw, p = adjusted.copy(), shrunk.copy(), raw.copy(), p.copy()
        adjusted[bad] = shrunk[bad] = raw[bad] = p[bad] = np.nan
    return Comparison(adjusted, shrunk, bias, raw, p, n, m, terms, cols, g, williams, p_adj, q_adj)


def order(r: EntityShift) -> tuple[float, str]:
    return (r.window_end, r.entity)


def shift_record(stream: str, entity: str, start: float, end: float, cmp: Comparison, i: int,
                 labels: list[str], cfg: EntitiesConfig, prior_strength: float) -> EntityShift:
    """The ``interest_shift`` record of row ``i`` of ``cmp``."""
    terms = cmp.terms[i]
    k = min(cfg.top_bins, len(labels))
    top = np.argsort(-np.abs(terms), kind="stable")[:k] if k else np.zeros(0, dtype=np.int64)
    n, m = float(cmp.n[i]), float(cmp.m[i])
    return EntityShift(
        stream=stream, entity=entity, window_start=start, window_end=end,
        divergence=float(cmp.adjusted[i]), shrunk_divergence=float(cmp.shrunk[i]),
        shrunk_bias=float(cmp.bias[i]), raw_divergence=float(cmp.raw[i]), p_value=float(cmp.p_value[i]),
        n_current=int(n), n_reference=int(m),
        top_bins=tuple(BinShare(labels[j], float(cmp.q_adj[i, j]), float(cmp.p_adj[i, j]),
                                float(terms[j])) for j in top.tolist()),
        threshold=cfg.threshold, max_p_value=cfg.max_p_value,
        prior_strength=prior_strength, bias=(float(cmp.support[i]) - 1) / 2.0 * (1.0 / n + 1.0 / m),
    )
