"""Monitors beside the per-feature window detectors (:mod:`.base` has the contracts and
the registry): :mod:`.entities` is per-entity interest drift (one stream), :mod:`.calibration`
prediction calibration drift (predictions joined with outcomes, two streams)."""

from driftmon.monitors.base import CrossStreamMonitor, Monitor, MonitorStep, make_monitors

__all__ = ["CrossStreamMonitor", "Monitor", "MonitorStep", "make_monitors"]
