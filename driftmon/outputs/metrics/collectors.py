"""Custom collectors (like prometheus_client's process_collector): series that the client's
metric types cannot fill cheaply enough.  Their names, help and buckets are defined in
:mod:`.families` with every other family."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector


class EntityDivergence(Collector):
    """``driftmon_entity_divergence``: a histogram per stream of the adjusted divergences of
    every entity window compared, filled a whole step at a time (``np.histogram``), since a
    million ``observe()`` calls per window would cost seconds."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = buckets  # upper bounds, +Inf implied
        self._lock = threading.Lock()
        self._buckets: dict[str, np.ndarray] = {}  # per stream: counts per bucket (+Inf last)
        self._sums: dict[str, float] = {}

    def init(self, stream: str) -> None:
        with self._lock:
            self._buckets.setdefault(stream, np.zeros(len(self._bounds) + 1, dtype=np.int64))
            self._sums.setdefault(stream, 0.0)

    def observe(self, stream: str, values: np.ndarray) -> None:
        v = values[np.isfinite(values)]
        if v.size == 0:
            return
        idx = np.searchsorted(np.asarray(self._bounds), v, side="left")  # le: value <= bound
        add = np.bincount(idx, minlength=len(self._bounds) + 1)
        self.init(stream)
        with self._lock:
            self._buckets[stream] += add
            self._sums[stream] += float(v.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self._name, self._documentation, labels=("stream",))
        with self._lock:
            for stream, counts in sorted(self._buckets.items()):
                cum = np.cumsum(counts).tolist()
                bounds = [*(f"{b:g}" for b in self._bounds), "+Inf"]
                fam.add_metric([stream], list(zip(bounds, cum)), self._sums[stream])
        yield fam
