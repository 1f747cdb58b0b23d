"""The metric vocabulary: every family driftmon exports, defined once (name, help, labels,
buckets), ``METRIC_NAMES`` (the exposed sample names: the contract of the dashboard and the
rules under ``deploy/``) and the values some series take.

:class:`Families` creates the families on a registry; the per-area updaters
(:mod:`.results`, :mod:`.ingest`, :mod:`.monitors`, :mod:`.delivery`, :mod:`.scale`) subclass
it and :class:`~driftmon.outputs.metrics.Metrics` combines them.  A new metric is defined here,
listed in ``METRIC_NAMES`` (or ``SCALE_METRIC_NAMES``), documented in docs/operations.md's
metric reference, and updated by its area's module.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, PlatformCollector, ProcessCollector

from driftmon import __version__
from driftmon.outputs.metrics.collectors import EntityDivergence

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
    "driftmon_consumer_rebalances_total",
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

# Exported only in scale-out mode (``Metrics.init_scale``, driftmon/scale): not part of the
# dashboard's contract, documented in docs/operations.md and docs/scaling.md.
SCALE_METRIC_NAMES: tuple[str, ...] = (
    "driftmon_scale_partials_total",
    "driftmon_scale_windows_total",
    "driftmon_scale_changelog_writes_total",
)

# Values of ``driftmon_alert_state``.
STATE_VALUES = {"ok": 0, "warn": 1, "critical": 2}
SEVERITY_VALUES = {"warning": 1, "warn": 1, "critical": 2}

_KEY = ("stream", "feature", "segment")

# Upper bounds (nats) of the per-entity divergence histogram's buckets.
ENTITY_DIVERGENCE_BUCKETS = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class Families:
    """Every driftmon metric family, on one private registry (the updaters' base class)."""

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
        self._rebalances = Counter(
            "driftmon_consumer_rebalances_total",
            "Partition assignments this replica's consumer received (one per group rebalance it "
            "went through), per consumer group: a steady rise is a group that keeps rebalancing.",
            ("group",),
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
        self._entity_divergence = EntityDivergence(
            "driftmon_entity_divergence",
            "Adjusted divergence (nats) of each entity window compared with the entity's previous window.",
            ENTITY_DIVERGENCE_BUCKETS,
        )
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
        self._build_info.labels(version).set(1)
        self._ready.set(0)

    def _define_scale(self) -> None:
        """The scale-out families (defined only in scale-out mode, by ``init_scale``)."""
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


def num(x: float | None) -> float:
    """None (not computable this window) is exported as NaN, not a stale value."""
    return math.nan if x is None else float(x)


def remove(metric: Gauge | Counter, labels: tuple[str, ...]) -> None:
    """Drop one labelled series (a forgotten key, a revoked partition); absent is fine."""
    try:
        metric.remove(*labels)
    except KeyError:
        pass
