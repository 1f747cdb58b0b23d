"""The mapper stage: count each source partition into its own windows, send partials.

Each source partition (event topic, partition) has its own event-time windows
(:class:`~driftmon.windows.event_time.EventTimeWindows` over that partition
alone), so a window closes when *that partition's* watermark passes its end.
A closed window becomes one :class:`~driftmon.scale.records.Partial` per
feature, then the partition's progress :class:`~driftmon.scale.records.Mark`
(``through`` = the last window it closed).  Pure: the service sends what
:meth:`StreamMapper.count` returns, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from driftmon.config import StreamConfig
from driftmon.decode.prepare import CodedBatch, SegmentKeys
from driftmon.scale.progress import SourceProgress
from driftmon.scale.records import Mark, Partial
from driftmon.scale.sources import Source
from driftmon.summaries.base import Summarizer
from driftmon.windows.base import ClosedWindow, WindowState
from driftmon.windows.event_time import EventTimeWindows


class PartitionWindows(EventTimeWindows):
    """Event-time windows of one source partition that hand over the closed
    windows' raw states (to be merged elsewhere) instead of emitting them."""

    def __init__(self, cfg: StreamConfig, summarizers: Sequence[Summarizer]):
        super().__init__(cfg.window, summarizers, cfg.max_segments, bool(cfg.segment_by), cfg.include_overall)
        self.done: list[tuple[int, WindowState]] = []

    def _close(self, due: Callable[[int], bool]) -> list[ClosedWindow]:
        for idx in sorted(i for i in self.open if due(i)):
            self.done.append((idx, self.open.pop(idx)))
        return []

    def take_done(self) -> list[tuple[int, WindowState]]:
        done, self.done = self.done, []
        return done


def subset(batch: CodedBatch, summarizers: Sequence[Summarizer], sel: np.ndarray) -> CodedBatch:
    """The events at positions ``sel`` of ``batch``."""
    segs = None if batch.segments is None else SegmentKeys(batch.segments.keys, batch.segments.inverse[sel])
    return CodedBatch(batch.ts[sel], segs, [s.take(c, sel) for s, c in zip(summarizers, batch.codes)])


def split_features(st: WindowState, n: int) -> list[WindowState]:
    """One single-feature WindowState per feature (the partials of one series each)."""
    out = []
    for j in range(n):
        s = WindowState()
        s.segments = {k: [parts[j]] for k, parts in st.segments.items()}
        s.t_min, s.t_max = st.t_min, st.t_max
        out.append(s)
    return out


class StreamMapper:
    """One stream's mapper over the source partitions this replica owns."""

    def __init__(self, cfg: StreamConfig, summarizers: Sequence[Summarizer]):
        if cfg.window.count is not None:
            raise ValueError(f"stream {cfg.name!r}: scale-out needs event-time windows (count windows close "
                             "in arrival order, which partitions do not share)")
        self.cfg = cfg
        self.summarizers = list(summarizers)
        self.parts: dict[Source, PartitionWindows] = {}
        self.progress = SourceProgress(cfg.window.idle_timeout)

    def windows(self, src: Source) -> PartitionWindows:
        pw = self.parts.get(src)
        if pw is None:
            pw = self.parts[src] = PartitionWindows(self.cfg, self.summarizers)
        return pw

    def through(self, src: Source) -> int:
        return self.windows(src).closed_below - 1

    def count(self, topic: str, of: int, batch: CodedBatch, partitions: np.ndarray,
              ranges: Mapping[int, tuple[int, int]], now: float | None = None) -> tuple[np.ndarray, list[Partial | Mark]]:
        """Count accepted events of ``topic`` (``partitions``: per event; ``ranges``: per partition,
        the first and last offset of the records polled); returns the late mask and the records
        to send, in order (partials, then their partition's mark)."""
        late = np.zeros(len(batch), dtype=bool)
        out: list[Partial | Mark] = []
        progress = self.progress
        progress.polled(topic, ranges)
        for p in np.unique(partitions).tolist():
            sel = np.flatnonzero(partitions == p)
            src = (topic, int(p))
            pw = self.windows(src)
            _, late[sel] = pw.add(subset(batch, self.summarizers, sel))
            progress.delivered(src, now)
            out.extend(self._emit(src, of))
            if progress.back(src, self.through(src)):  # back from idleness: say so at once
                out.append(Mark(topic, int(p), of, self.through(src), False))
        return late, out

    def _emit(self, src: Source, of: int) -> list[Partial | Mark]:
        pw = self.windows(src)
        done = pw.take_done()
        out: list[Partial | Mark] = []
        rng = self.progress.take_range(src)
        for idx, st in done:
            for f, fst in zip(self.cfg.features, split_features(st, len(self.summarizers))):
                out.append(Partial(self.cfg.name, f.name, idx, src[0], src[1], rng, fst))
        through = self.through(src)
        if self.progress.advance(src, through):
            out.append(Mark(src[0], src[1], of, through, False))
        return out

    def tick(self, now: float, of: dict[str, int]) -> list[Partial | Mark]:
        """Marks for partitions that delivered nothing for ``idle_timeout`` (processing
        time): they stop holding the reducers back until they deliver again.

        Before its idle mark, such a partition sends what its open windows hold (they stay
        open): the reducer emits those windows once the other partitions close them, with
        these events, as one process does.  If the partition delivers again, a window it
        then closes is sent whole and overwrites this partial if not emitted yet."""
        out: list[Partial | Mark] = []
        for src in self.progress.quiet(list(self.parts), now):
            rng = self.progress.peek_range(src)
            for idx, st in sorted(self.windows(src).open.items()):
                for j, (f, fst) in enumerate(zip(self.cfg.features, split_features(st, len(self.summarizers)))):
                    # a copy: the window stays open and keeps counting
                    copy = WindowState.from_dict(fst.to_dict(), self.summarizers[j:j + 1])
                    out.append(Partial(self.cfg.name, f.name, idx, src[0], src[1], rng, copy))
            out.append(Mark(src[0], src[1], of[src[0]], self.through(src), True))
        return out

    def marks(self, of: dict[str, int]) -> list[Mark]:
        """The current mark of every owned partition (sent again after an assignment)."""
        return [Mark(t, p, of[t], self.through((t, p)), self.progress.is_idle((t, p))) for t, p in self.parts]

    def forget(self, src: Source) -> None:
        self.parts.pop(src, None)
        self.progress.forget(src)

    def snapshot(self, src: Source) -> dict[str, Any]:
        return {"windows": self.windows(src).snapshot(), **self.progress.snapshot(src)}

    def restore(self, src: Source, d: dict[str, Any]) -> None:
        pw = self.windows(src)
        pw.restore(d["windows"])
        pw.done = []
        self.progress.restore(src, d)


