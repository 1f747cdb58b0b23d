"""The source stage: Kafka records as raw bytes (:mod:`.kafka`), grouped per topic
with per-partition ids for the watermarks (:mod:`.partitions`)."""
