"""The fixed vocabularies driftmon writes into results, metric labels, logs and
webhooks: defined once here, imported by the modules that use them.

They are part of the wire formats (``replay --format json``, the results
sinks, webhook bodies, Prometheus labels and the rules under ``deploy/``), so
a value is never renamed.  Metric names are in
:data:`driftmon.outputs.metrics.METRIC_NAMES`.
"""

from __future__ import annotations

# A result's ``state`` (DriftResult.state): the window's level against the thresholds
# (``warn``/``critical`` also need ``p <= max_p_value``), or why it was not compared.
STATES = ("ok", "warn", "critical", "insufficient_data", "no_reference")

# A result's ``transition``: an alert fired (or escalated to critical), resolved, or neither.
TRANSITIONS = ("fired", "resolved", "none")

# How a result's ``p_value`` was computed (``p_value_method``; null when there is no p-value).
P_VALUE_METHODS = ("chi2", "permutation", "degenerate")

# Alert severities (the active alert's ``severity`` and the webhook ``severity`` label),
# mildest first, and the severity an alert fires with at each over-threshold state.
SEVERITIES = ("warning", "critical")
SEVERITY_OF_STATE = {"warn": "warning", "critical": "critical"}

# Why the decoder rejects an event (``reason`` label, dead-letter ``driftmon-reason`` header).
DECODE_REASONS = ("invalid_json", "bad_type", "missing_field", "bad_timestamp")
# An event whose every window had already closed; counted and dead-lettered like a rejection.
LATE = "late"
REJECT_REASONS = (*DECODE_REASONS, LATE)

# Segment keys.  The overall (unsegmented) series has segment ``None``, exported as the
# label value "" (which Prometheus and Alertmanager treat as "no segment label").  So a
# segment can never be "": the decoder gives an empty segment value the reserved value
# EMPTY_SEGMENT (like ``__missing__`` for an absent one and ``__other__`` past
# ``max_segments``), and segment_label() applies the same rule wherever a segment
# becomes a metric label, a webhook label, a fingerprint or an Idempotency-Key.
EMPTY_SEGMENT = "__empty__"
OVERALL_SEGMENT_LABEL = ""


def segment_label(segment: str | None) -> str:
    """The label value of a series' segment: "" only for the overall series (``None``)."""
    if segment is None:
        return OVERALL_SEGMENT_LABEL
    return segment or EMPTY_SEGMENT


# Outcome label of ``driftmon_webhook_deliveries_total`` that the rules in
# deploy/prometheus understand: delivered = 2xx; retry = this attempt failed
# (408/429/5xx, a connection error, or no answer within the webhook's timeout)
# and will be retried; failed = given up (attempts exhausted or a permanent
# 4xx); dropped = evicted from a full outbox, never sent.
WEBHOOK_OUTCOMES = ("delivered", "retry", "failed", "dropped")

# Direction label of ``driftmon_consumer_offset_out_of_range_total``: a partition's next
# offset (checkpointed or committed) was past the end of its log (the broker lost records),
# or before its start (retention deleted records before they were read).
OFFSET_BEYOND_END = "beyond_end"
OFFSET_BEFORE_START = "before_start"
OFFSET_DIRECTIONS = (OFFSET_BEYOND_END, OFFSET_BEFORE_START)

# The outputs whose failures driftmon counts (``output`` label of
# ``driftmon_output_errors_total`` and ``driftmon_output_dropped_total``): the results
# sinks, named by their ``sinks`` keys, the dead-letter topic, the webhook outbox, the
# firing-alert tracker (``alerts/firing.json``) and the checkpoint itself; ``entities_topic`` is
# the per-stream ``streams[].entities.topic`` of interest_shift records.
OUTPUTS = ("jsonl", "kafka_topic", "dead_letter", "outbox", "firing_alerts", "checkpoint", "entities_topic")

# Why an output gave a record up for good (``reason`` of ``driftmon_output_dropped_total``):
# too_large = over the producer's ``max_request_size`` (a dead letter is first cut to fit, see
# dead_letter outcomes); rejected = refused by the broker with a non-retriable error (e.g. not
# authorized); buffer_full = held in memory while the output was failing and evicted, oldest
# first, by the memory bound.  Anything retriable is kept and retried instead, and the
# checkpoint waits for it.
DROP_REASONS = ("too_large", "rejected", "buffer_full")

# ``outcome`` of ``driftmon_dead_letters_total``: acknowledged by the broker whole, or as a
# truncated copy (headers ``driftmon-truncated``, ``driftmon-original-size``,
# ``driftmon-original-sha256``) because the original was over the producer's size limit.
DEAD_LETTER_OUTCOMES = ("delivered", "truncated")

# ``reason`` of ``driftmon_entities_evicted_total`` (driftmon/monitors/entities.py): unseen for
# ``idle_ttl``, or past ``max_entities`` (least recently seen first).
ENTITY_EVICT_IDLE, ENTITY_EVICT_CAPACITY = "idle", "capacity"
ENTITY_EVICT_REASONS = (ENTITY_EVICT_IDLE, ENTITY_EVICT_CAPACITY)

# Scale-out (driftmon/scale, docs/scaling.md).  ``outcome`` of
# ``driftmon_scale_partials_total``: sent by a mapper; merged by a reducer (a repeat
# overwrites the same source partition's partial); dropped_after_emit = arrived for a
# window already emitted (a re-send after a crash, or a source partition that missed
# the timeout); invalid = not a partials record of this config (counted, logged, skipped).
SCALE_PARTIAL_OUTCOMES = ("sent", "merged", "dropped_after_emit", "invalid")
# ``kind`` of ``driftmon_scale_windows_total``: emitted with every source partition;
# partial = emitted at ``scale.partial_timeout`` without some source partitions (rows
# carry ``partial: true`` and ``missing_partitions``); idle_advance = a window emitted
# past an idle source partition (the one wall-clock-dependent path).
SCALE_WINDOW_KINDS = ("complete", "partial", "idle_advance")
# ``stage`` of ``driftmon_scale_changelog_writes_total`` and the changelog topic's keys.
SCALE_STAGES = ("map", "reduce")
# ``kind`` of ``driftmon_calibration_events_total`` and the keys of a calibration result's
# ``join`` counts (driftmon/monitors/calibration.py): predictions and outcomes read; how each
# final prediction was scored (joined with its outcome, unmatched counted as a negative or
# dropped); outcomes after max_delay or after their prediction was final (late_outcome) or
# without a prediction (orphan_outcome); duplicates; predictions of an already closed window;
# entries refused by a full buffer (max_pending); records without a usable id, probability,
# label or timestamp.
CALIBRATION_COUNTS = (
    "prediction", "outcome", "joined", "unmatched_negative", "unmatched_dropped", "late_outcome",
    "orphan_outcome", "duplicate_prediction", "duplicate_outcome", "late_prediction",
    "overflow_prediction", "overflow_outcome", "invalid_prediction", "invalid_outcome",
)
# ``kafka.client``: the Kafka client library behind the source and the producers (one module
# each, registered in driftmon.source.clients).  kafka-python is the default; confluent-kafka
# (librdkafka) is the ``fast`` extra.
KAFKA_PYTHON = "kafka-python"
CONFLUENT_KAFKA = "confluent-kafka"
KAFKA_CLIENTS = (KAFKA_PYTHON, CONFLUENT_KAFKA)
# ``kafka.record_reader`` (kafka-python only): who reads the records of a fetched batch.
# ``batch`` (default): driftmon.source.kafka_records, a batch at a time, the same records;
# ``kafka-python``: kafka-python's own reader, a record at a time.
RECORD_READER_BATCH = "batch"
RECORD_READERS = (RECORD_READER_BATCH, KAFKA_PYTHON)
# ``kafka.isolation_level``: which records of transactional producers the consumer reads.
# ``read_committed`` (default, librdkafka's own default): only committed ones, never an aborted
# transaction's; ``read_uncommitted``: everything written (kafka-python's own default).
READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
ISOLATION_LEVELS = (READ_COMMITTED, READ_UNCOMMITTED)
