"""Updaters of the ingest series: per-stream event counters and window closes, and the Kafka
source's per-partition lag and offsets out of range."""

from __future__ import annotations

import time

from driftmon.outputs.metrics.families import Families
from driftmon.outputs.metrics.families import remove as _remove
from driftmon.vocabulary import OFFSET_DIRECTIONS


class IngestMetrics(Families):
    """Per stream: events, decoded, rejected, late, truncated, windows closed; per partition:
    consumer lag and offsets out of range; per consumer group: rebalances."""

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

    # -- source -------------------------------------------------------------

    def rebalanced(self, group: str) -> None:
        """Count an assignment callback of the consumer in ``group`` (a completed rebalance)."""
        self._rebalances.labels(group).inc()

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
