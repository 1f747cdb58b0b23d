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
from driftmon.summaries.base import Summarizer, add_all
from driftmon.windows.segments import OTHER_SEGMENT, SegmentCap


@dataclass
class ClosedWindow:
    index: int
    start: float
    end: float
    segment: str | None  # None: the whole stream
    summaries: list[Any]  # one summary per feature
    n: int


PENDING_PARTS = 32  # batch summaries a segment holds back before it adds them up
PENDING_KEYS = 2048  # ... or once they hold this many keys, and as many as the sum so far


class WindowState:
    """One open window: per segment key, one summary per feature.

    A batch's summaries are not added to the window's at once: each segment keeps
    them aside and adds them all in one pass (:func:`~driftmon.summaries.base.add_all`)
    once they hold as many keys as the sum so far (or ``PENDING_PARTS`` of them), so
    a batch costs time in proportion to its own values, not to the window's.  The
    sum is the same whenever it is taken (summaries are a commutative monoid);
    :attr:`segments` takes it.
    """

    def __init__(self) -> None:
        self._sums: dict[str | None, list[Any]] = {}
        self._pending: dict[str | None, list[list[Any]]] = {}
        self._pending_keys: dict[str | None, int] = {}
        self.t_min, self.t_max = math.inf, -math.inf

    @property
    def segments(self) -> dict[str | None, list[Any]]:
        """Per segment key, one summary per feature (everything added so far)."""
        for key in list(self._pending):
            self._settle(key)
        return self._sums

    @segments.setter
    def segments(self, value: dict[str | None, list[Any]]) -> None:
        self._sums, self._pending, self._pending_keys = value, {}, {}

    def _keys(self) -> list[str | None]:
        return [*self._sums, *(k for k in self._pending if k not in self._sums)]

    def _pop(self, key: str | None) -> list[Any]:
        self._settle(key)
        return self._sums.pop(key)

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
            kept, evicted = cap.admit(self._keys(), seg_names)
            for gone in sorted(evicted):  # fold evicted segments into __other__ (addition is exact)
                self._merge(OTHER_SEGMENT, self._pop(gone))
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
        theirs = other.segments
        if cap is not None:
            kept, evicted = cap.admit(self._keys(), theirs)
            for gone in sorted(evicted):
                self._merge(OTHER_SEGMENT, self._pop(gone))
        else:
            kept = {k for k in theirs if k is not None}
        for key, parts in sorted(theirs.items(), key=lambda kv: str(kv[0])):
            self._merge(key if key in kept or key is None else OTHER_SEGMENT, parts)
        self.t_min, self.t_max = min(self.t_min, other.t_min), max(self.t_max, other.t_max)

    def _merge(self, key: str | None, parts: list[Any]) -> None:
        pending = self._pending.setdefault(key, [])
        pending.append(parts)
        held = self._pending_keys.get(key, 0) + sum(_keys_of(p) for p in parts)
        self._pending_keys[key] = held
        cur = self._sums.get(key)
        if len(pending) >= PENDING_PARTS or held >= max(PENDING_KEYS, sum(map(_keys_of, cur or ()))):
            self._settle(key)

    def _settle(self, key: str | None) -> None:
        """Add a segment's held-back batch summaries to its sum (one pass per feature)."""
        pending = self._pending.pop(key, None)
        self._pending_keys.pop(key, None)
        if not pending:
            return
        cur = self._sums.get(key)
        rows = pending if cur is None else [cur, *pending]
        self._sums[key] = rows[0] if len(rows) == 1 else [add_all(col) for col in zip(*rows)]

    def to_dict(self) -> dict[str, Any]:
        return {"segments": [[k, [s.to_dict() for s in parts]] for k, parts in self.segments.items()],
                "t_min": self.t_min, "t_max": self.t_max}

    @classmethod
    def from_dict(cls, d: dict[str, Any], summarizers: Sequence[Summarizer]) -> WindowState:
        st = cls()
        for key, parts in d["segments"]:
            if len(parts) != len(summarizers):
                raise ValueError(f"window state has {len(parts)} features, the stream has {len(summarizers)}")
            st._sums[key] = [s.from_dict(p) for s, p in zip(summarizers, parts)]
        st.t_min, st.t_max = float(d["t_min"]), float(d["t_max"])
        return st


def _keys_of(summary: Any) -> int:
    """How many keys a summary holds (what adding it costs); 0 for dense ones."""
    keys = getattr(summary, "keys", None)
    return 0 if keys is None else int(keys.size)


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
