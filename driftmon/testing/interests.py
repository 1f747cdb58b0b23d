"""A synthetic user population whose interest shifts are known exactly, for
:mod:`driftmon.monitors.entities` (tests, ``bench/entities.py``, docs/quality.md).

Each user has an activity level (events per window) drawn from a Zipf (Pareto, exponent
``zipf``) law between ``min_rate`` and ``max_rate``, and an interest distribution over
``categories`` categories drawn from a Dirichlet(``concentration``) prior.  ``windows``
event-time windows of ``window`` seconds follow each other from ``start``; a known
``switch_share`` of the users draw a new interest distribution at the start of window
``switch_window`` (the known time) and keep it.  Per user and window the number of
events is Poisson(activity).  Everything is generated with numpy, seeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from driftmon.decode.prepare import CodedBatch, EntityColumns, PreparedBatch
from driftmon.summaries.hashing import stable_hash
from driftmon.testing.events import Categorical, Events


@dataclass(frozen=True)
class Population:
    events: Events  # ts, user_id (Categorical of "u<number>"), category (Categorical of "c<number>")
    switchers: np.ndarray  # bool per user: switched at switch_time
    counts: np.ndarray  # (users, windows) events per user and window
    switch_time: float
    window: float
    start: float

    def user_ids(self) -> list[str]:
        return list(self.events.columns["user_id"].labels)  # type: ignore[union-attr]


def population(users: int = 30_000, categories: int = 40, windows: int = 2, switch_window: int = 1,
               switch_share: float = 0.01, zipf: float = 1.0, min_rate: float = 10.0, max_rate: float = 1000.0,
               concentration: float = 0.5, window: float = 86400.0, start: float = 1.7e9,
               seed: int = 7) -> Population:
    rng = np.random.default_rng(seed)
    start = np.floor(start / window) * window
    u = rng.random(users)
    # Pareto with exponent zipf, truncated to [min_rate, max_rate] (inverse CDF)
    lo, hi = min_rate ** -zipf, max_rate ** -zipf
    rate = (lo - u * (lo - hi)) ** (-1.0 / zipf)
    prefs = rng.dirichlet(np.full(categories, concentration), size=users)
    n_switch = int(round(switch_share * users))
    switchers = np.zeros(users, dtype=bool)
    switchers[rng.choice(users, n_switch, replace=False)] = True
    new_prefs = prefs.copy()
    new_prefs[switchers] = rng.dirichlet(np.full(categories, concentration), size=n_switch)
    counts = rng.poisson(rate[:, None], size=(users, windows))
    ts_parts, user_parts, cat_parts = [], [], []
    for w in range(windows):
        p = new_prefs if w >= switch_window else prefs
        who = np.repeat(np.arange(users), counts[:, w])
        cum = np.cumsum(p, axis=1)
        cum[:, -1] = 1.0
        draw = rng.random(who.size)
        cat = np.empty(who.size, dtype=np.int32)
        for lo_i in range(0, who.size, 1 << 20):  # (events x categories) comparisons, in chunks
            sl = slice(lo_i, lo_i + (1 << 20))
            cat[sl] = (cum[who[sl]] < draw[sl, None]).sum(axis=1)
        ts_parts.append(start + w * window + rng.random(who.size) * window)
        user_parts.append(who.astype(np.int32))
        cat_parts.append(cat)
    ts = np.concatenate(ts_parts)
    order = np.argsort(ts, kind="stable")
    events = Events(ts[order], {
        "user_id": Categorical(np.concatenate(user_parts)[order], tuple(f"u{i}" for i in range(users))),
        "category": Categorical(np.concatenate(cat_parts)[order], tuple(f"c{j:02d}" for j in range(categories))),
    }, {"dataset": "interests", "seed": seed})
    return Population(events, switchers, counts, start + switch_window * window, window, start)


def prepared_batches(events: Events, key: str, feature: str, size: int = 100_000) -> Iterator[PreparedBatch]:
    """``events`` as the :class:`~driftmon.decode.prepare.PreparedBatch` es the decoder would
    give an entity monitor (no JSON round trip: for tests and benchmarks of the monitor alone)."""
    keys_col, vals_col = events.columns[key], events.columns[feature]
    assert isinstance(keys_col, Categorical) and isinstance(vals_col, Categorical)
    key_labels = np.array([str(v) for v in keys_col.labels] + [None], dtype=object)
    val_labels = np.array([str(v) for v in vals_col.labels] + [None], dtype=object)
    key_hashes = np.append(stable_hash(key_labels[:-1].tolist()), np.uint64(0))
    for lo in range(0, len(events), size):
        sl = slice(lo, lo + size)
        kc, vc = keys_col.codes[sl], vals_col.codes[sl]  # -1 (missing) picks the trailing None
        ts = events.ts[sl]
        yield PreparedBatch(ts.size, np.arange(ts.size, dtype=np.int64), [], CodedBatch(ts, None, []), (),
                            EntityColumns(key_labels[kc].tolist(), key_hashes[kc], val_labels[vc].tolist()))
