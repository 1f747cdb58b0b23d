"""A partition's next offset outside its log: detected, logged, counted, and resolved.

The daemon resumes each partition at the next offset its state has counted up
to (from the checkpoint), or the group's committed offset.  After a broker lost
its log (memory storage restarted, the topic deleted and recreated, an unclean
leader election) or retention deleted records nobody had read yet, that offset
can lie outside the partition's log:

* **beyond the log end** (``beyond_end``): Apache Kafka answers the fetch with
  OFFSET_OUT_OF_RANGE and kafka-python moves the position by
  ``auto_offset_reset`` without telling anyone; tansu answers with no records,
  so the consumer waited at that offset forever while the lag showed 0;
* **below the log start** (``before_start``): Kafka answers OFFSET_OUT_OF_RANGE
  and kafka-python resets; the records in between are gone.

:class:`OffsetGuard` sees both, logs a WARNING naming the topic, partition and
offsets, counts ``driftmon_consumer_offset_out_of_range_total{direction}``, and
applies ``kafka.auto_offset_reset``: ``earliest`` resumes at the log start,
``latest`` at the log end (any other value leaves the partition where it is).
It works from two signals:

* :meth:`OffsetGuard.admit`, before a poll is counted: a partition's first
  record is not the state's next offset.  Backwards with the log end below
  the state's offset: the log was replaced and kafka-python already reset the
  position, so these records are new: counted, and the state's offset follows
  them.  Backwards otherwise: records the state already counted, delivered
  again: only those from the state's offset on are counted (never twice).
  Forwards: a gap, which compaction and transaction markers also make, so the
  log start is checked on the next :meth:`OffsetGuard.tick`.
* :meth:`OffsetGuard.tick`, every couple of seconds: a position past the log
  end of the last fetch (the tansu stall) is moved by the policy, and gaps are
  compared with the log start (one ListOffsets request).

The state keeps everything it counted; only records that are no longer in the
log, or that the policy skips, are not counted.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from driftmon.source.base import RecordLike
from driftmon.vocabulary import OFFSET_BEFORE_START, OFFSET_BEYOND_END

log = logging.getLogger("driftmon.source.offsets")

Partition = tuple[str, int]
Batches = Mapping[Partition, Sequence[RecordLike]]
OutOfRangeCallback = Callable[[str, int, str], None]  # (topic, partition, direction)


class LogView(Protocol):
    """What the guard needs from :class:`driftmon.source.kafka.KafkaSource`."""

    def highwater(self, partition: Partition) -> int | None: ...
    def beyond_log_end(self) -> dict[Partition, tuple[int, int]]: ...
    def log_starts(self, partitions: Iterable[Partition]) -> dict[Partition, int]: ...
    def seek(self, offsets: Mapping[Partition, int]) -> None: ...


class _Offset:
    """Offsets of a kafka-python record list, for bisect (no copy)."""

    def __init__(self, recs: Sequence[RecordLike]) -> None:
        self.recs = recs

    def __len__(self) -> int:
        return len(self.recs)

    def __getitem__(self, i: int) -> int:
        return self.recs[i].offset


class OffsetGuard:
    """Keeps ``offsets`` (the daemon's next offset per partition, counted in state) inside
    the partitions' logs; see the module docstring."""

    def __init__(self, offsets: dict[Partition, int], policy: str, on_out_of_range: OutOfRangeCallback) -> None:
        self.offsets = offsets
        self.policy = policy
        self.on_out_of_range = on_out_of_range
        self.source: LogView | None = None
        self._gaps: dict[Partition, tuple[int, int]] = {}  # partition -> (state's offset, first record after it)
        self._stuck_reported: set[tuple[Partition, int]] = set()  # policy "none": report each stall once

    # -- before counting --------------------------------------------------------------------

    def admit(self, batches: Batches) -> Batches:
        """``batches`` with records the state already counted left out (usually ``batches``
        itself: one comparison per partition)."""
        trimmed: dict[Partition, Sequence[RecordLike]] | None = None
        for key, recs in batches.items():
            expected = self.offsets.get(key)
            if expected is None or not recs:
                continue
            first = recs[0].offset
            if first == expected:
                continue
            if first > expected:
                self._gaps.setdefault(key, (expected, first))
                continue
            end = self.source.highwater(key) if self.source is not None else None
            if end is not None and end < expected:  # the log was replaced; the consumer already reset
                self._report(key, OFFSET_BEYOND_END, expected, end, first)
                continue
            keep = recs[bisect.bisect_left(_Offset(recs), expected):]
            log.warning("%s[%d]: %d record(s) at offsets %d..%d were delivered again after the state counted "
                        "them (next offset %d); not counted twice", key[0], key[1], len(recs) - len(keep),
                        first, min(expected, recs[-1].offset + 1) - 1, expected)
            if trimmed is None:
                trimmed = dict(batches)
            trimmed[key] = keep
        return batches if trimmed is None else trimmed

    # -- periodically -----------------------------------------------------------------------

    def tick(self) -> None:
        """Move stalled partitions by the policy; check gaps against the log start."""
        source = self.source
        if source is None:
            return
        for key, (position, end) in source.beyond_log_end().items():
            self._resolve_stall(source, key, position, end)
        if self._gaps:
            gaps, self._gaps = self._gaps, {}
            try:
                starts = source.log_starts(gaps)
            except Exception as exc:  # broker trouble: ask again next time
                log.debug("log start offsets unavailable (%s); checking %d gap(s) later", exc, len(gaps))
                self._gaps.update(gaps)
                return
            for key, (expected, first) in gaps.items():
                start = starts.get(key)
                if start is not None and start > expected:
                    self._report(key, OFFSET_BEFORE_START, expected, start, first)
                else:
                    log.debug("%s[%d]: offsets %d..%d hold no records (compaction or transaction markers)",
                              key[0], key[1], expected, first - 1)

    def _resolve_stall(self, source: LogView, key: Partition, position: int, end: int) -> None:
        expected = self.offsets.get(key, position)
        if self.policy == "latest":
            target = end
        elif self.policy == "earliest":
            try:
                target = source.log_starts([key])[key]
            except Exception as exc:
                log.debug("log start of %s[%d] unavailable (%s); retrying", key[0], key[1], exc)
                return
        else:
            if (key, position) not in self._stuck_reported:
                self._stuck_reported.add((key, position))
                self._report(key, OFFSET_BEYOND_END, expected, end, None)
            return
        self._report(key, OFFSET_BEYOND_END, expected, end, target)
        self.offsets[key] = target  # before the seek: the next records are compared with it
        source.seek({key: target})

    # -- reporting --------------------------------------------------------------------------

    def _report(self, key: Partition, direction: str, expected: int, bound: int, resumed: int | None) -> None:
        topic, partition = key
        self.on_out_of_range(topic, partition, direction)
        if resumed is None:
            how = (f"auto_offset_reset={self.policy!r} is neither earliest nor latest: the partition stays "
                   "there until its offsets are reset")
        else:
            how = f"auto_offset_reset={self.policy!r}: resuming at offset {resumed}"
        if direction == OFFSET_BEYOND_END:
            log.warning("offset out of range: %s[%d] next offset %d is beyond the log end %d (the broker lost the "
                        "records: topic recreated, storage lost or log truncated); %s; what the state counted "
                        "stays counted, records from there on are counted as new", topic, partition, expected,
                        bound, how)
        else:
            log.warning("offset out of range: %s[%d] next offset %d is below the log start %d: %d record(s) were "
                        "deleted (retention) before driftmon read them; %s", topic, partition, expected, bound,
                        bound - expected, how)
