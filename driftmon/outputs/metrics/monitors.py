"""Updaters of the monitors' series: calibration monitors (ECE, join counts and buffers) and
per-entity interest drift (per-stream aggregates only, never an entity label)."""

from __future__ import annotations

from typing import Any

from driftmon.monitors.base import MonitorStep
from driftmon.outputs.metrics.families import Families
from driftmon.outputs.metrics.families import num as _num
from driftmon.vocabulary import CALIBRATION_COUNTS, ENTITY_EVICT_REASONS


class MonitorMetrics(Families):
    """``driftmon_calibration_*`` and ``driftmon_entit*``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # each calibration's cumulative counts already exported, so observe_calibration adds the increase
        self._cal_seen: dict[str, dict[str, int]] = {}

    # -- calibration --------------------------------------------------------

    def init_calibration(self, name: str, counts: dict[str, int] | None = None) -> None:
        """Create a calibration monitor's counters at 0; ``counts``: its totals restored from a
        checkpoint, which this process has not counted and will not (counters restart at 0)."""
        self._cal_seen[name] = {k: int((counts or {}).get(k, 0)) for k in CALIBRATION_COUNTS}
        for k in CALIBRATION_COUNTS:
            self._cal_events.labels(name, k).inc(0)

    def observe_calibration(self, name: str, counts: dict[str, int], pending: tuple[int, int],
                            ece: float | None = None, scored: bool = False) -> None:
        """A calibration monitor's cumulative ``counts`` (exported as increases), buffer sizes,
        and, when a window was scored (``scored``), its ECE (None: not computable, NaN)."""
        seen = self._cal_seen.setdefault(name, {})
        for k, v in counts.items():
            delta = int(v) - seen.get(k, 0)
            if delta > 0:
                self._cal_events.labels(name, k).inc(delta)
            seen[k] = int(v)
        self._cal_pending.labels(name, "predictions").set(pending[0])
        self._cal_pending.labels(name, "outcomes").set(pending[1])
        if scored:
            self._cal_ece.labels(name).set(_num(ece))

    # -- entities -----------------------------------------------------------

    def init_entities(self, stream: str) -> None:
        """Create a stream's entity series at 0 (streams that configure ``entities``)."""
        self._entities_tracked.labels(stream).set(0)
        for reason in ENTITY_EVICT_REASONS:
            self._entities_evicted.labels(stream, reason).inc(0)
        self._entity_compared.labels(stream).inc(0)
        self._entity_shifts.labels(stream).inc(0)
        self._entity_window_shifts.labels(stream).set(0)
        self._entity_divergence.init(stream)

    def observe_monitor(self, stream: str, step: MonitorStep) -> None:
        """One monitor step's aggregates (the only per-entity output here: no entity label)."""
        if step.monitor != "entities":
            return
        self._entities_tracked.labels(stream).set(step.tracked)
        for reason, n in step.evicted.items():
            self._entities_evicted.labels(stream, reason).inc(n)
        if step.compared:
            self._entity_compared.labels(stream).inc(step.compared)
        if step.shifts:
            self._entity_shifts.labels(stream).inc(step.shifts)
        if step.windows_closed:
            self._entity_window_shifts.labels(stream).set(step.shifts)
        if step.divergences.size:
            self._entity_divergence.observe(stream, step.divergences)
