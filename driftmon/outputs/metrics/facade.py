"""``Metrics``: the one object the rest of driftmon uses, combining every area's updaters on
one private registry, plus the process series and rendering."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from driftmon import __version__
from driftmon.outputs.metrics.delivery import DeliveryMetrics
from driftmon.outputs.metrics.ingest import IngestMetrics
from driftmon.outputs.metrics.monitors import MonitorMetrics
from driftmon.outputs.metrics.results import ResultMetrics
from driftmon.outputs.metrics.scale import ScaleMetrics


class Metrics(ResultMetrics, MonitorMetrics, IngestMetrics, DeliveryMetrics, ScaleMetrics):
    """All driftmon metrics on one private registry.

    Stages call its small methods, which come from one module per area (results, monitors,
    ingest, delivery, scale; the process ones are below); nothing else creates metrics, and
    every family is defined in :mod:`driftmon.outputs.metrics.families`.
    Thread-safe (prometheus_client metrics lock internally).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        version: str = __version__,
        process_metrics: bool = True,
    ) -> None:
        # the signature callers are type-checked against; the areas' __init__s pass it through
        super().__init__(registry, version=version, process_metrics=process_metrics)

    # -- process ------------------------------------------------------------

    def checkpoint_done(self, ts: float | None = None) -> None:
        self._checkpoint.set(time.time() if ts is None else ts)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def render(self) -> bytes:
        """The registry in Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)
