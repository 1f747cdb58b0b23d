"""Count windows: a window closes after ``count`` events of a lane.

Lanes are the whole stream and each segment (segment ids in arrival order,
capped at ``max_segments``).  Which events make up "the first ``count``" is
arrival order by definition, so unlike event-time windows these depend on
how partitions interleave; use them for a single partition or replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from driftmon.config import WindowConfig
from driftmon.decode.prepare import CodedBatch
from driftmon.summaries.base import Summarizer
from driftmon.windows.base import ClosedWindow, WindowState
from driftmon.windows.segments import Segmenter


class CountWindows:
    """Windows of ``count`` events, per lane: the whole stream and each segment."""

    def __init__(self, window: WindowConfig, summarizers: Sequence[Summarizer], max_segments: int,
                 segmented: bool, include_overall: bool = True):
        assert window.count is not None
        self.count = window.count
        self.summarizers = list(summarizers)
        self.segmenter = Segmenter(max_segments, segmented)
        self.overall = include_overall or not segmented
        self.seen: dict[int, int] = {}  # lane -> events counted so far (lane -1 = whole stream)
        self.open: dict[int, WindowState] = {}

    def add(self, batch: CodedBatch, part: np.ndarray | None = None,
            now: float | None = None) -> tuple[list[ClosedWindow], np.ndarray]:
        n = len(batch)
        out: list[ClosedWindow] = []
        lanes: list[tuple[int, np.ndarray]] = []
        if self.overall:
            lanes.append((-1, np.arange(n)))
        if self.segmenter.segmented:
            seg = self.segmenter.ids(batch.segments, n)
            order = np.argsort(seg, kind="stable")
            uniq, starts = np.unique(seg[order], return_index=True)
            lanes.extend(zip(uniq.tolist(), np.split(order, starts[1:])))
        for lane, sel in lanes:
            before = self.seen.get(lane, 0)
            number = (before + np.arange(sel.size)) // self.count
            for w in np.unique(number).tolist():
                part_sel = sel[number == w]
                st = self.open.get(lane)
                if st is None:
                    st = self.open[lane] = WindowState()
                st.add(self.summarizers, None, batch, part_sel)
                if st.segments[None][0].total >= self.count:
                    out.append(self._emit(lane, w, self.open.pop(lane)))
            self.seen[lane] = before + sel.size
        return out, np.zeros(n, dtype=bool)

    def _emit(self, lane: int, index: int, st: WindowState) -> ClosedWindow:
        name = None if lane < 0 else self.segmenter.names[lane]
        parts = st.segments.get(None) or [s.empty() for s in self.summarizers]
        return ClosedWindow(index, st.t_min, st.t_max, name, parts, parts[0].total)

    def flush(self) -> list[ClosedWindow]:
        out = [self._emit(lane, self.seen[lane] // self.count, st) for lane, st in sorted(self.open.items())]
        self.open.clear()
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "segments": self.segmenter.snapshot(),
            "seen": {str(k): v for k, v in self.seen.items()},
            "open": {str(k): st.to_dict() for k, st in self.open.items()},
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.segmenter.restore(d["segments"])
        self.seen = {int(k): v for k, v in d["seen"].items()}
        self.open = {int(k): WindowState.from_dict(st, self.summarizers) for k, st in d["open"].items()}
