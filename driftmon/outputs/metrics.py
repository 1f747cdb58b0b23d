"""Prometheus metrics: the single source of truth for driftmon's metric names.

Every series driftmon exports is declared here, and ``METRIC_NAMES`` lists
the exposed sample names.  The dashboard and the alerting rules under
``deploy/`` may only use these names (``tests/e2e/test_deploy.py`` checks it),
so renaming a metric here breaks the tests before it breaks an operator.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never the global
one), so tests and embedded uses can create as many as they like.  The
daemon's HTTP module serves ``Metrics.registry`` / ``Metrics.render()``.

Labels are bounded: stream, feature and segment come from the config (the
segment count is capped upstream by ``max_segments``); reject reasons and
webhook outcomes are small fixed vocabularies chosen by the code, never by
event contents.  The overall (unsegmented) series has ``segment=""``, which
Prometheus stores as "no segment label"; a segmented series never has that
value (an empty segment value is ``__empty__``, see
:func:`driftmon.vocabulary.segment_label`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from driftmon import __version__
from driftmon.detect.result import DriftResult
from driftmon.monitors.base import MonitorStep
from driftmon.vocabulary import CALIBRATION_COUNTS, OFFSET_DIRECTIONS, segment_label

__all__ = [
    "CONTENT_TYPE_LATEST",
    "METRIC_NAMES",
    "Metrics",
    "alert_state_value",
]

METRIC_NAMES: tuple[str, ...] = (
    # per (stream, feature, segment): the detector's latest window
    "driftmon_divergence",
    "driftmon_p_value",
    "driftmon_alert_state",
    "driftmon_threshold",
    "driftmon_window_events",
    "driftmon_reference_events",
    "driftmon_alerts_total",
    # per calibration monitor (driftmon/monitors/calibration.py); its divergence, p-value,
    # alert state and thresholds are the series above with feature = the calibration's name
    "driftmon_calibration_ece",
    "driftmon_calibration_events_total",
    "driftmon_calibration_pending",
    # per (stream, feature, segment, horizon): each comparison of the latest window (issue 10)
    "driftmon_effect",
    "driftmon_p_adjusted",
    "driftmon_unusual_z",
    # ingest, per stream
    "driftmon_events_total",
    "driftmon_events_decoded_total",
    "driftmon_events_rejected_total",
    "driftmon_events_late_total",
    "driftmon_windows_closed_total",
    "driftmon_last_window_close_timestamp_seconds",
    "driftmon_values_truncated_total",
    # Kafka consumer
    "driftmon_consumer_lag",
    "driftmon_consumer_offset_out_of_range_total",
    # webhooks
    "driftmon_webhook_deliveries_total",
    "driftmon_webhook_outbox_size",
    # outputs: results sinks, dead letters, outbox, firing alerts, checkpoint
    "driftmon_output_errors_total",
    "driftmon_output_dropped_total",
    "driftmon_dead_letters_total",
    # per-entity interest drift (monitors/entities.py), per stream: aggregates only, never an entity label
    "driftmon_entities_tracked",
    "driftmon_entities_evicted_total",
    "driftmon_entity_windows_compared_total",
    "driftmon_entity_shifts_total",
    "driftmon_entity_window_shifts",
    "driftmon_entity_divergence_bucket",
    "driftmon_entity_divergence_count",
    "driftmon_entity_divergence_sum",
    # process
    "driftmon_checkpoint_timestamp_seconds",
    "driftmon_ready",
    "driftmon_build_info",
)

# Values of ``driftmon_alert_state``.
STATE_VALUES = {"ok": 0, "warn": 1, "critical": 2}
SEVERITY_VALUES = {"warning": 1, "warn": 1, "critical": 2}

_KEY = ("stream", "feature", "segment")

# Upper bounds (nats) of the per-entity divergence histogram's buckets.
ENTITY_DIVERGENCE_BUCKETS = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
ENTITY_EVICT_REASONS = ("idle", "capacity")


class _EntityDivergence(Collector):
    """``driftmon_entity_divergence``: a histogram per stream of the adjusted divergences of
    every entity window compared, filled a whole step at a time (``np.histogram``), since a
    million ``observe()`` calls per window would cost seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, np.ndarray] = {}  # per stream: counts per bucket (+Inf last)
        self._sums: dict[str, float] = {}

    def init(self, stream: str) -> None:
        with self._lock:
            self._buckets.setdefault(stream, np.zeros(len(ENTITY_DIVERGENCE_BUCKETS) + 1, dtype=np.int64))
            self._sums.setdefault(stream, 0.0)

    def observe(self, stream: str, values: np.ndarray) -> None:
        v = values[np.isfinite(values)]
        if v.size == 0:
            return
        idx = np.searchsorted(np.asarray(ENTITY_DIVERGENCE_BUCKETS), v, side="left")  # le: value <= bound
        add = np.bincount(idx, minlength=len(ENTITY_DIVERGENCE_BUCKETS) + 1)
        self.init(stream)
        with self._lock:
            self._buckets[stream] += add
            self._sums[stream] += float(v.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(
            "driftmon_entity_divergence",
            "Adjusted divergence (nats) of each entity window compared with the entity's previous window.",
            labels=("stream",))
        with self._lock:
            for stream, counts in sorted(self._buckets.items()):
                cum = np.cumsum(counts).tolist()
                bounds = [*(f"{b:g}" for b in ENTITY_DIVERGENCE_BUCKETS), "+Inf"]
                fam.add_metric([stream], list(zip(bounds, cum)), self._sums[stream])
        yield fam


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


def _num(x: float | None) -> float:
    """None (not computable this window) is exported as NaN, not a stale value."""
    return math.nan if x is None else float(x)


class Metrics:
    """All driftmon metrics on one private registry.

    Stages call the small methods below; nothing else creates metrics.
    Thread-safe (prometheus_client metrics lock internally).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        version: str = __version__,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        if process_metrics and registry is None:
            # Standard process_* and python_info series, on our own registry only
            # (a caller-supplied registry may already carry them).
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

        self._divergence = Gauge(
            "driftmon_divergence",
            "Divergence of the latest closed window from its reference, in the "
            "detector's unit (+Inf possible without smoothing; NaN when not computable).",
            (*_KEY, "metric"),
            registry=reg,
        )
        self._effect = Gauge(
            "driftmon_effect",
            "Effect of the latest closed window against each horizon (reference): the divergence "
            "less the share sampling noise explains, in the detector's unit; NaN when not compared.",
            (*_KEY, "horizon"),
            registry=reg,
        )
        self._p_adjusted = Gauge(
            "driftmon_p_adjusted",
            "Benjamini-Hochberg adjusted p-value of the latest closed window against each horizon, "
            "over all tests of that window (features x segments x horizons).",
            (*_KEY, "horizon"),
            registry=reg,
        )
        self._unusual_z = Gauge(
            "driftmon_unusual_z",
            "How unusual the latest effect is for the series and horizon: robust z against its own "
            "history (NaN until enough history is kept).",
            (*_KEY, "horizon"),
            registry=reg,
        )
        self._p_value = Gauge(
            "driftmon_p_value",
            "p-value of the latest window's divergence under 'no drift' (NaN when not computed).",
            _KEY,
            registry=reg,
        )
        self._alert_state = Gauge(
            "driftmon_alert_state",
            "0 ok, 1 warn, 2 critical (an active alert's severity wins over the window state).",
            _KEY,
            registry=reg,
        )
        self._threshold = Gauge(
            "driftmon_threshold",
            "Configured divergence threshold, level=warn|critical.",
            (*_KEY, "level"),
            registry=reg,
        )
        self._window_events = Gauge(
            "driftmon_window_events",
            "Events in the latest closed window (the current histogram's total).",
            _KEY,
            registry=reg,
        )
        self._reference_events = Gauge(
            "driftmon_reference_events",
            "Events in the reference histogram the latest window was compared with.",
            _KEY,
            registry=reg,
        )
        self._alerts = Counter(
            "driftmon_alerts_total",
            "Alert transitions, transition=fired|resolved.",
            (*_KEY, "transition"),
            registry=reg,
        )
        self._events = Counter(
            "driftmon_events_total",
            "Records consumed from the source (before decoding).",
            ("stream",),
            registry=reg,
        )
        self._decoded = Counter(
            "driftmon_events_decoded_total",
            "Records decoded into events and handed to the windows.",
            ("stream",),
            registry=reg,
        )
        self._rejected = Counter(
            "driftmon_events_rejected_total",
            "Records rejected by the decoder, by reason.",
            ("stream", "reason"),
            registry=reg,
        )
        self._late = Counter(
            "driftmon_events_late_total",
            "Events dropped because their window had already closed (beyond allowed_lateness).",
            ("stream",),
            registry=reg,
        )
        self._windows_closed = Counter(
            "driftmon_windows_closed_total",
            "Windows closed and evaluated.",
            ("stream",),
            registry=reg,
        )
        self._last_close = Gauge(
            "driftmon_last_window_close_timestamp_seconds",
            "End (event time, epoch seconds) of the most recently closed window.",
            ("stream",),
            registry=reg,
        )
        self._truncated = Counter(
            "driftmon_values_truncated_total",
            "Categorical values longer than the cap (256 characters), cut to it and counted in their window.",
            ("stream", "feature"),
            registry=reg,
        )
        self._lag = Gauge(
            "driftmon_consumer_lag",
            "Kafka consumer lag in records (log end offset - position).",
            ("topic", "partition"),
            registry=reg,
        )
        self._out_of_range = Counter(
            "driftmon_consumer_offset_out_of_range_total",
            "A partition's next offset was outside its log: beyond_end (the broker lost records) or "
            "before_start (deleted before they were read); kafka.auto_offset_reset was applied.",
            ("topic", "partition", "direction"),
            registry=reg,
        )
        self._deliveries = Counter(
            "driftmon_webhook_deliveries_total",
            "Webhook delivery attempts by outcome (delivered|retry|failed|dropped).",
            ("receiver", "outcome"),
            registry=reg,
        )
        self._outbox = Gauge(
            "driftmon_webhook_outbox_size",
            "Alerts waiting in a receiver's outbox.",
            ("receiver",),
            registry=reg,
        )
        self._output_errors = Counter(
            "driftmon_output_errors_total",
            "Failed writes, syncs or sends of an output (disk full, I/O error, broker not acknowledging); "
            "what failed is kept and retried, and the checkpoint waits for it.",
            ("output",),
            registry=reg,
        )
        self._output_dropped = Counter(
            "driftmon_output_dropped_total",
            "Records an output gave up for good, by reason (too_large|rejected|buffer_full).",
            ("output", "reason"),
            registry=reg,
        )
        self._dead_letters = Counter(
            "driftmon_dead_letters_total",
            "Dead letters acknowledged by the broker, whole (delivered) or as a truncated copy (truncated).",
            ("outcome",),
            registry=reg,
        )
        self._entities_tracked = Gauge(
            "driftmon_entities_tracked",
            "Entities (e.g. users) whose interest windows are held now (streams[].entities).",
            ("stream",),
            registry=reg,
        )
        self._entities_evicted = Counter(
            "driftmon_entities_evicted_total",
            "Entities dropped from state, reason=idle (unseen for idle_ttl) or capacity (past max_entities, "
            "least recently seen first).",
            ("stream", "reason"),
            registry=reg,
        )
        self._entity_compared = Counter(
            "driftmon_entity_windows_compared_total",
            "Entity windows compared with the entity's previous window (both with at least min_events).",
            ("stream",),
            registry=reg,
        )
        self._entity_shifts = Counter(
            "driftmon_entity_shifts_total",
            "Entity windows reported as an interest shift (interest_shift records).",
            ("stream",),
            registry=reg,
        )
        self._entity_window_shifts = Gauge(
            "driftmon_entity_window_shifts",
            "Interest shifts in the latest step that closed entity windows (event-time windows: the latest "
            "window).",
            ("stream",),
            registry=reg,
        )
        self._entity_divergence = _EntityDivergence()
        reg.register(self._entity_divergence)
        self._checkpoint = Gauge(
            "driftmon_checkpoint_timestamp_seconds",
            "Wall-clock time of the last successful state checkpoint.",
            registry=reg,
        )
        self._ready = Gauge(
            "driftmon_ready",
            "1 when /readyz would answer ready, else 0.",
            registry=reg,
        )
        self._build_info = Gauge(
            "driftmon_build_info",
            "Always 1; the version label says which driftmon is running.",
            ("version",),
            registry=reg,
        )
        self._cal_ece = Gauge(
            "driftmon_calibration_ece",
            "Expected calibration error of a calibration monitor's latest scored window: "
            "sum over bins of (n_b/n) |observed frequency - mean prediction| (a probability).",
            ("calibration",),
            registry=reg,
        )
        self._cal_events = Counter(
            "driftmon_calibration_events_total",
            "Predictions and outcomes read by a calibration monitor and what became of them, by kind "
            "(joined, unmatched_negative, unmatched_dropped, late_outcome, orphan_outcome, duplicate_*, "
            "late_prediction, overflow_*, invalid_*).",
            ("calibration", "kind"),
            registry=reg,
        )
        self._cal_pending = Gauge(
            "driftmon_calibration_pending",
            "Entries in a calibration monitor's join buffers, buffer=predictions|outcomes "
            "(each bounded by max_pending).",
            ("calibration", "buffer"),
            registry=reg,
        )
        self._cal_seen: dict[str, dict[str, int]] = {}
        self._build_info.labels(version).set(1)
        self._ready.set(0)
        # divergence metric names seen per key, so forget() can remove them
        self._div_metrics: dict[tuple[str, str, str], set[str]] = {}

    # -- detector -----------------------------------------------------------

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

    # -- ingest -------------------------------------------------------------

    def init_stream(self, stream: str, reasons: tuple[str, ...] = ()) -> None:
        """Create a stream's counters at 0 so rate() works from the first scrape."""
        for c in (self._events, self._decoded, self._late, self._windows_closed):
            c.labels(stream).inc(0)
        for reason in reasons:
            self._rejected.labels(stream, reason).inc(0)

    def count_events(self, stream: str, n: int = 1) -> None:
        self._events.labels(stream).inc(n)

    def count_decoded(self, stream: str, n: int = 1) -> None:
        self._decoded.labels(stream).inc(n)

    def count_rejected(self, stream: str, reason: str, n: int = 1) -> None:
        self._rejected.labels(stream, reason).inc(n)

    def count_late(self, stream: str, n: int = 1) -> None:
        self._late.labels(stream).inc(n)

    def count_truncated(self, stream: str, feature: str, n: int = 1) -> None:
        self._truncated.labels(stream, feature).inc(n)

    def window_closed(self, stream: str, end_ts: float | None = None) -> None:
        """Count a closed window; ``end_ts`` is its end in event time (None: now)."""
        self._windows_closed.labels(stream).inc()
        self._last_close.labels(stream).set(time.time() if end_ts is None else end_ts)

    # -- monitors -----------------------------------------------------------

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

    # -- source -------------------------------------------------------------

    def set_lag(self, topic: str, partition: int, lag: float) -> None:
        self._lag.labels(topic, str(partition)).set(lag)

    def init_partition(self, topic: str, partition: int) -> None:
        """Create an assigned partition's counters at 0 so increase() sees the first one."""
        for direction in OFFSET_DIRECTIONS:
            self._out_of_range.labels(topic, str(partition), direction).inc(0)

    def offset_out_of_range(self, topic: str, partition: int, direction: str) -> None:
        """Count a next offset outside the log; ``direction`` is one of
        :data:`driftmon.vocabulary.OFFSET_DIRECTIONS`."""
        self._out_of_range.labels(topic, str(partition), direction).inc()

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a partition's lag after it was revoked, so it does not go stale."""
        _remove(self._lag, (topic, str(partition)))

    # -- webhooks -----------------------------------------------------------

    def webhook_outcome(self, receiver: str, outcome: str, n: int = 1) -> None:
        """Count a delivery attempt; ``outcome`` should be one of
        :data:`driftmon.vocabulary.WEBHOOK_OUTCOMES`."""
        self._deliveries.labels(receiver, outcome).inc(n)

    def set_outbox_size(self, receiver: str, n: int) -> None:
        self._outbox.labels(receiver).set(n)

    # -- outputs ------------------------------------------------------------

    def init_outputs(self, outputs: tuple[str, ...] | list[str], reasons: tuple[str, ...] = (),
                     dead_letter_outcomes: tuple[str, ...] = ()) -> None:
        """Create the output counters at 0 so increase() sees the first failure."""
        for output in outputs:
            self._output_errors.labels(output).inc(0)
            for reason in reasons:
                self._output_dropped.labels(output, reason).inc(0)
        for outcome in dead_letter_outcomes:
            self._dead_letters.labels(outcome).inc(0)

    def output_error(self, output: str, n: int = 1) -> None:
        """A failed write/sync/send of ``output`` (one of :data:`driftmon.vocabulary.OUTPUTS`)."""
        self._output_errors.labels(output).inc(n)

    def output_dropped(self, output: str, reason: str, n: int = 1) -> None:
        """Records ``output`` gave up for good; ``reason`` in :data:`driftmon.vocabulary.DROP_REASONS`."""
        self._output_dropped.labels(output, reason).inc(n)

    def dead_letter(self, outcome: str, n: int = 1) -> None:
        """Dead letters acknowledged; ``outcome`` in :data:`driftmon.vocabulary.DEAD_LETTER_OUTCOMES`."""
        self._dead_letters.labels(outcome).inc(n)

    # -- scale-out (driftmon/scale) -----------------------------------------

    def init_scale(self, streams: list[str] | tuple[str, ...]) -> None:
        """The scale-out counters (created only in scale-out mode), at 0."""
        from driftmon.vocabulary import SCALE_PARTIAL_OUTCOMES, SCALE_STAGES, SCALE_WINDOW_KINDS

        self._scale_partials = Counter(
            "driftmon_scale_partials_total",
            "Partial window records of the partials topic, by outcome (sent by this mapper; merged, "
            "dropped_after_emit or invalid at this reducer).", ["outcome"], registry=self.registry)
        self._scale_windows = Counter(
            "driftmon_scale_windows_total",
            "Windows emitted by this reducer: complete, partial (a source partition missing at "
            "scale.partial_timeout), idle_advance (past an idle source partition).",
            ["stream", "kind"], registry=self.registry)
        self._scale_changelog = Counter(
            "driftmon_scale_changelog_writes_total",
            "Per-partition stage states written to the changelog topic.", ["stage"], registry=self.registry)
        for o in SCALE_PARTIAL_OUTCOMES:
            self._scale_partials.labels(o).inc(0)
        for s in streams:
            for k in SCALE_WINDOW_KINDS:
                self._scale_windows.labels(s, k).inc(0)
        for st in SCALE_STAGES:
            self._scale_changelog.labels(st).inc(0)

    def scale_partials(self, outcome: str, n: int = 1) -> None:
        self._scale_partials.labels(outcome).inc(n)

    def scale_windows(self, stream: str, kind: str, n: int = 1) -> None:
        self._scale_windows.labels(stream, kind).inc(n)

    def scale_changelog_write(self, stage: str, n: int = 1) -> None:
        self._scale_changelog.labels(stage).inc(n)

    # -- process ------------------------------------------------------------

    def checkpoint_done(self, ts: float | None = None) -> None:
        self._checkpoint.set(time.time() if ts is None else ts)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def render(self) -> bytes:
        """The registry in Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


def _remove(metric: Gauge | Counter, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
