"""Updaters of the detector's series: one window's result per (stream, feature, segment)
(and per horizon), its alert transitions, and forgetting an evicted key."""

from __future__ import annotations

from typing import Any

from driftmon.detect.result import DriftResult
from driftmon.outputs.metrics.families import SEVERITY_VALUES, STATE_VALUES, Families
from driftmon.outputs.metrics.families import num as _num
from driftmon.outputs.metrics.families import remove as _remove
from driftmon.vocabulary import segment_label


def alert_state_value(r: DriftResult) -> int:
    """0 ok, 1 warn, 2 critical.

    If an alert is active (``r.severity`` set, not resolving now) its severity wins, so a fired
    alert stays visible while hysteresis holds it open; otherwise the window's
    own state maps critical -> 2, warn -> 1 and everything else (ok,
    insufficient_data, no_reference) -> 0.
    """
    if r.severity in SEVERITY_VALUES and r.transition != "resolved":
        return SEVERITY_VALUES[r.severity]
    return STATE_VALUES.get(r.state, 0)


class ResultMetrics(Families):
    """``driftmon_divergence``, ``_p_value``, ``_alert_state``, ``_threshold``, window sizes,
    the per-horizon series and ``driftmon_alerts_total``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # divergence metric names seen per key, so forget() can remove them
        self._div_metrics: dict[tuple[str, str, str], set[str]] = {}

    def observe_result(self, r: DriftResult) -> None:
        """Export one window's DriftResult; count its alert transition."""
        key = (r.stream, r.feature, segment_label(r.segment))
        if key not in self._div_metrics:
            self._div_metrics[key] = set()
            for t in ("fired", "resolved"):  # start at 0 so increase() sees the first one
                self._alerts.labels(*key, t).inc(0)
        self._div_metrics[key].add(r.metric)
        for h in r.horizons:
            self._div_metrics[key].add("horizon:" + h.reference)
            self._effect.labels(*key, h.reference).set(_num(h.effect))
            self._p_adjusted.labels(*key, h.reference).set(_num(h.p_adjusted))
            self._unusual_z.labels(*key, h.reference).set(_num(h.unusual_z))
        self._divergence.labels(*key, r.metric).set(_num(r.divergence))
        self._p_value.labels(*key).set(_num(r.p_value))
        self._alert_state.labels(*key).set(alert_state_value(r))
        self._threshold.labels(*key, "warn").set(r.warn_threshold)
        self._threshold.labels(*key, "critical").set(r.critical_threshold)
        self._window_events.labels(*key).set(r.n_current)
        self._reference_events.labels(*key).set(r.n_reference)
        if r.transition in ("fired", "resolved"):
            self._alerts.labels(*key, r.transition).inc()

    def forget(self, stream: str, feature: str, segment: str | None) -> None:
        """Drop a key's gauges (e.g. a segment evicted by the max_segments cap)."""
        key = (stream, feature, segment_label(segment))
        for g in (self._p_value, self._alert_state, self._window_events, self._reference_events):
            _remove(g, key)
        for level in ("warn", "critical"):
            _remove(self._threshold, (*key, level))
        for metric in self._div_metrics.pop(key, ()):
            if metric.startswith("horizon:"):
                for g in (self._effect, self._p_adjusted, self._unusual_z):
                    _remove(g, (*key, metric[len("horizon:"):]))
            else:
                _remove(self._divergence, (*key, metric))
