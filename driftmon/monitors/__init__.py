"""Monitors beside the per-feature window detectors: each consumes the stream's prepared
batches and emits its own records when its windows close (:mod:`.base` has the contract
and the registry; :mod:`.entities` is per-entity interest drift)."""

from driftmon.monitors.base import Monitor, MonitorStep, make_monitors

__all__ = ["Monitor", "MonitorStep", "make_monitors"]
