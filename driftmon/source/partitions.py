"""A Kafka poll as per-topic batches: the hand-over from source to the stream pipelines.

Pure functions, no Python loop per record: values and partition ids come from
C-level ``map``/``np.repeat`` over kafka-python's per-partition record lists.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from driftmon.source.base import RecordLike, values_of

# One topic's share of a poll: (topic, [(partition, records)], records, values, partition id per value)
Polled = tuple[str, list[tuple[int, Sequence[RecordLike]]], Sequence[RecordLike], list[bytes], np.ndarray]


def group_poll(batches: Mapping[tuple[str, int], Sequence[RecordLike]]) -> list[Polled]:
    """``{(topic, partition): records in offset order}`` -> one :data:`Polled` per topic."""
    by_topic: dict[str, list[tuple[int, Sequence[RecordLike]]]] = defaultdict(list)
    for (topic, partition), recs in batches.items():
        if recs:
            by_topic[topic].append((partition, recs))
    polled: list[Polled] = []
    for topic, parts in by_topic.items():
        if len(parts) == 1:
            recs = parts[0][1]
        else:  # a client's batch type may join without a Python object per record
            join = getattr(type(parts[0][1]), "join", None)
            recs = join([rs for _, rs in parts]) if join else [r for _, rs in parts for r in rs]
        values = values_of(recs)
        partitions = np.repeat(np.asarray([p for p, _ in parts], dtype=np.int64), [len(rs) for _, rs in parts])
        polled.append((topic, parts, recs, values, partitions))
    return polled


def partition_id(topics: Sequence[str], topic: str, partition: int) -> int:
    """A stable id per (topic, partition) of a stream reading ``topics``, for per-partition watermarks."""
    return topics.index(topic) * 1_000_000 + partition
