"""What windows hold and what they emit.

Windows count :class:`~driftmon.decode.prepare.CodedBatch` es (event times,
segment keys, and per feature the summarizer's codes).  They turn codes into per-window, per-segment
summaries (:mod:`driftmon.summaries`) and emit a :class:`ClosedWindow` per
segment (and one for the whole stream) when a window closes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.decode.prepare import CodedBatch
from driftmon.summaries.base import Summarizer
from driftmon.windows.segments import OTHER_SEGMENT, SegmentCap


@dataclass
class ClosedWindow:
    index: int
    start: float
    end: float
    segment: str | None  # None: the whole stream
    summaries: list[Any]  # one summary per feature
    n: int


class WindowState:
    """One open window: per segment key, one summary per feature."""

    def __init__(self) -> None:
        self.segments: dict[str | None, list[Any]] = {}
        self.t_min, self.t_max = math.inf, -math.inf

    def add(self, summarizers: Sequence[Summarizer], cap: SegmentCap | None, batch: CodedBatch,
            sel: np.ndarray) -> None:
        """Count the events at positions ``sel`` of ``batch``."""
        if sel.size == 0:
            return
        if batch.segments is None or cap is None:
            names: list[str | None] = [None]
            groups = np.zeros(sel.size, dtype=np.int64)
        else:
            inv = batch.segments.inverse[sel]
            present = np.flatnonzero(np.bincount(inv, minlength=len(batch.segments.keys)))
            seg_names = [batch.segments.keys[i] for i in present.tolist()]
            kept, evicted = cap.admit(self.segments, seg_names)
            for gone in sorted(evicted):  # fold evicted segments into __other__ (addition is exact)
                self._merge(OTHER_SEGMENT, self.segments.pop(gone))
            target: list[str | None] = [k if k in kept else OTHER_SEGMENT for k in seg_names]
            names = list(dict.fromkeys(target))
            tpos = {k: i for i, k in enumerate(names)}
            lookup = np.zeros(len(batch.segments.keys), dtype=np.int64)
            lookup[present] = [tpos[k] for k in target]
            groups = lookup[inv]
        # one pass per feature for all segments of this batch
        parts = [s.summarize_groups(c, sel, groups, len(names)) for s, c in zip(summarizers, batch.codes)]
        for g, key in enumerate(names):
            self._merge(key, [p[g] for p in parts])
        ts = batch.ts[sel]
        self.t_min, self.t_max = min(self.t_min, float(ts.min())), max(self.t_max, float(ts.max()))

    def merge(self, other: WindowState, cap: SegmentCap | None) -> None:
        """Add another partial state of the same window (e.g. another partition's)."""
        if cap is not None:
            kept, evicted = cap.admit(self.segments, other.segments)
            for gone in sorted(evicted):
                self._merge(OTHER_SEGMENT, self.segments.pop(gone))
        else:
            kept = {k for k in other.segments if k is not None}
        for key, parts in sorted(other.segments.items(), key=lambda kv: str(kv[0])):
            self._merge(key if key in kept or key is None else OTHER_SEGMENT, parts)
        self.t_min, self.t_max = min(self.t_min, other.t_min), max(self.t_max, other.t_max)

    def _merge(self, key: str | None, parts: list[Any]) -> None:
        cur = self.segments.get(key)
        self.segments[key] = parts if cur is None else [a + b for a, b in zip(cur, parts)]

    def to_dict(self) -> dict[str, Any]:
        return {"segments": [[k, [s.to_dict() for s in parts]] for k, parts in self.segments.items()],
                "t_min": self.t_min, "t_max": self.t_max}

    @classmethod
    def from_dict(cls, d: dict[str, Any], summarizers: Sequence[Summarizer]) -> WindowState:
        st = cls()
        for key, parts in d["segments"]:
            if len(parts) != len(summarizers):
                raise ValueError(f"window state has {len(parts)} features, the stream has {len(summarizers)}")
            st.segments[key] = [s.from_dict(p) for s, p in zip(summarizers, parts)]
        st.t_min, st.t_max = float(d["t_min"]), float(d["t_max"])
        return st


class Emitter:
    """Turns a closing window's state into ClosedWindows: every segment with events
    now or in the previously closed window (so a vanished segment reports once,
    with empty summaries), then the whole stream."""

    def __init__(self, summarizers: Sequence[Summarizer], segmented: bool, include_overall: bool):
        self.summarizers = summarizers
        self.segmented = segmented
        self.include_overall = include_overall and segmented
        self.last_nonzero: set[str | None] = set()

    def emit(self, st: WindowState, index: int, start: float, end: float) -> list[ClosedWindow]:
        nonzero = {k for k, parts in st.segments.items() if parts[0].total > 0}
        out = []
        for key in sorted(nonzero | self.last_nonzero, key=lambda k: "" if k is None else k):
            parts = st.segments.get(key) or [s.empty() for s in self.summarizers]
            out.append(ClosedWindow(index, start, end, key, parts, parts[0].total))
        if not self.segmented and not out:  # an unsegmented stream reports every window it closes
            parts = [s.empty() for s in self.summarizers]
            out.append(ClosedWindow(index, start, end, None, parts, 0))
        self.last_nonzero = nonzero
        if self.include_overall:
            total = [s.empty() for s in self.summarizers]
            for key in sorted(st.segments, key=lambda k: "" if k is None else k):
                total = [a + b for a, b in zip(total, st.segments[key])]
            out.append(ClosedWindow(index, start, end, None, total, total[0].total if total else 0))
        return out
