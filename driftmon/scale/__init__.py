"""Scale-out: several ``driftmon run`` replicas in one consumer group.

Two stages in one binary, the two-stage aggregation of Kafka Streams:

* the **mapper** (:mod:`driftmon.scale.mapper`) counts its share of the event
  partitions into per-partition window summaries and, when a partition's own
  watermark passes a window's end, produces one partial record per
  (stream, feature, window, source partition) to the partials topic, keyed by
  series, then a progress mark to every partials partition;
* the **reducer** (:mod:`driftmon.scale.reducer`) consumes its share of the
  partials partitions, keeps ``partials[(series, window)][source partition]``
  (a repeat overwrites), and emits a window once every source partition has
  marked it done, through ``StreamPipeline.detect``.

Records: :mod:`driftmon.scale.records`; a mapper's per-partition offsets, marks and
idleness: :mod:`driftmon.scale.progress`.  Per-partition stage state lives in a
compacted changelog topic (:mod:`driftmon.scale.changelog`).  The service
wiring is :mod:`driftmon.scale.service`.  See docs/scaling.md.
"""
