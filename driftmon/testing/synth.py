"""Synthetic recommender traffic with an optional drift episode.

Used by ``driftmon demo``, the tests and the benchmarks.  Deterministic for a
given seed.  Two event shapes, matching ``config/driftmon.yaml``:

* interactions: ``{"ts", "user_id", "item": {"id", "category"}, "platform", "dwell_ms"}``
* predictions: ``{"ts", "request_id", "score", "top_category", "model_version"}``

During the drift episode ``[drift_start, drift_end)`` the category mix moves
towards ``video`` and ``gaming``, and model scores shift upwards.

>>> events = list(interactions(5, start=1.7e9, rate=10.0, seed=1))
>>> len(events), sorted(events[0])
(5, ['dwell_ms', 'item', 'platform', 'ts', 'user_id'])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

CATEGORIES = ("books", "music", "video", "news", "sports", "gaming", "food", "travel")
BASE_MIX = np.array([0.22, 0.2, 0.15, 0.13, 0.1, 0.08, 0.07, 0.05])
DRIFT_MIX = np.array([0.12, 0.12, 0.32, 0.1, 0.08, 0.16, 0.06, 0.04])
PLATFORMS = ("ios", "android", "web")
PLATFORM_MIX = np.array([0.45, 0.4, 0.15])


@dataclass(frozen=True)
class Episode:
    """Drift between ``start`` and ``end`` (epoch seconds); ``strength`` in [0, 1]."""

    start: float
    end: float
    strength: float = 1.0

    def weight(self, ts: np.ndarray) -> np.ndarray:
        return np.where((ts >= self.start) & (ts < self.end), self.strength, 0.0)


def _times(n: int, start: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    gaps = rng.exponential(1.0 / rate, size=n)
    return start + np.cumsum(gaps)


def _mixed_choice(rng: np.random.Generator, w: np.ndarray, base: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """Per event, draw from (1-w)*base + w*drift, vectorized via inverse CDF."""
    probs = (1.0 - w)[:, None] * base[None, :] + w[:, None] * drift[None, :]
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(w.size)[:, None] * cdf[:, -1:]
    return (u > cdf).sum(axis=1)


def interactions(
    n: int, start: float, rate: float = 100.0, episode: Episode | None = None, seed: int = 0,
    num_items: int = 5000,
) -> Iterator[dict]:
    rng = np.random.default_rng(seed)
    ts = _times(n, start, rate, rng)
    w = episode.weight(ts) if episode else np.zeros(n)
    cat = _mixed_choice(rng, w, BASE_MIX, DRIFT_MIX)
    plat = rng.choice(len(PLATFORMS), size=n, p=PLATFORM_MIX)
    items = np.minimum(rng.zipf(1.3, size=n), num_items)
    users = rng.integers(0, 100000, size=n)
    dwell = np.round(rng.lognormal(8.0 + 0.6 * w, 0.7), 1)
    for i in range(n):
        yield {
            "ts": round(float(ts[i]), 3),
            "user_id": f"u{users[i]}",
            "item": {"id": f"i{items[i]}", "category": CATEGORIES[cat[i]]},
            "platform": PLATFORMS[plat[i]],
            "dwell_ms": float(dwell[i]),
        }


def predictions(n: int, start: float, rate: float = 100.0, episode: Episode | None = None, seed: int = 1) -> Iterator[dict]:
    rng = np.random.default_rng(seed)
    ts = _times(n, start, rate, rng)
    w = episode.weight(ts) if episode else np.zeros(n)
    score = rng.beta(2.0 + 3.0 * w, 5.0 - 2.0 * w)
    top = _mixed_choice(rng, w, BASE_MIX, DRIFT_MIX)
    for i in range(n):
        yield {
            "ts": round(float(ts[i]), 3),
            "request_id": f"r{i}",
            "score": round(float(score[i]), 4),
            "top_category": CATEGORIES[top[i]],
            "model_version": "v7",
        }


def calibration_traffic(
    n: int, start: float, rate: float = 100.0, *, seed: int = 2, overconfident_from: float | None = None,
    sharpen: float = 3.0, max_delay: float = 60.0, late_share: float = 0.0, positives_only: bool = False,
    id_prefix: str = "q",
) -> tuple[list[dict], list[dict]]:
    """Predictions ``{"ts", "request_id", "score"}`` and their outcomes ``{"ts", "request_id",
    "clicked"}`` (sorted by time), for the calibration monitor.

    Each request's true click probability ``q`` is drawn from Beta(2, 5); the model predicts
    ``q`` (calibrated) until ``overconfident_from`` (event time), and from then on
    ``sigmoid(sharpen * logit(q))``: pushed towards 0 and 1, over-confident.  An outcome
    follows its prediction by Uniform(0, ``max_delay``), except a ``late_share`` of them,
    which come between 1.5 and 3 times ``max_delay`` later.  ``positives_only``: only clicks
    are sent (with ``unmatched: negative`` the others are negatives by absence).
    """
    rng = np.random.default_rng(seed)
    ts = _times(n, start, rate, rng)
    q = rng.beta(2.0, 5.0, size=n)
    logit = np.log(q) - np.log1p(-q)
    sharp = 1.0 / (1.0 + np.exp(-sharpen * logit))
    score = np.where(ts >= overconfident_from, sharp, q) if overconfident_from is not None else q
    y = rng.random(n) < q
    late = rng.random(n) < late_share
    delay = np.where(late, rng.uniform(1.5, 3.0, n), rng.uniform(0.0, 1.0, n)) * max_delay
    preds = [{"ts": round(float(ts[i]), 3), "request_id": f"{id_prefix}{i}", "score": round(float(score[i]), 6)}
             for i in range(n)]
    t_out = ts + delay
    order = np.argsort(t_out, kind="stable").tolist()
    outs = [{"ts": round(float(t_out[i]), 3), "request_id": f"{id_prefix}{i}", "clicked": bool(y[i])}
            for i in order if y[i] or not positives_only]
    return preds, outs


def encode(events) -> Iterator[bytes]:
    """Events as JSON bytes, one per event (what a producer sends)."""
    dumps = orjson.dumps
    for e in events:
        yield dumps(e)
