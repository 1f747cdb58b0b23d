"""Event-time windows with per-partition watermarks.

Tumbling (``slide == size``) and hopping (``size`` a multiple of ``slide``)
windows: window ``w`` covers ``[w * slide, w * slide + size)``.  With several
source partitions (the daemon passes a partition id per event) the
watermark is the *minimum* over partitions of each partition's largest event
time, so a partition read ahead during a backlog catch-up cannot make the
others' events late.  A partition that has delivered nothing for
``idle_timeout`` seconds of processing time stops holding the watermark back
(like Flink's idleness).  Partitions the consumer was assigned but has not
heard from yet hold the watermark back too (:meth:`EventTimeWindows.register`),
so a broker that serves one whole partition before the next cannot make the
others late.  Offline replay is a single partition.

The watermark is computed per event from running maxima, so an event is
added to exactly the windows that were still open when it arrived, wherever
the batch boundaries fall; an event whose every window is closed is reported
in the ``late`` mask and never added anywhere.  A window closes, once and for
good, when the watermark passes its end.

What a window holds is a :class:`~driftmon.windows.base.WindowState` of
mergeable summaries, so its content does not depend on the order in which
its events arrived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from driftmon.config import WindowConfig
from driftmon.decode.prepare import CodedBatch
from driftmon.summaries.base import Summarizer
from driftmon.windows.base import ClosedWindow, Emitter, WindowState
from driftmon.windows.segments import SegmentCap


class EventTimeWindows:
    """Tumbling or hopping event-time windows with a watermark and allowed lateness."""

    def __init__(self, window: WindowConfig, summarizers: Sequence[Summarizer], max_segments: int,
                 segmented: bool, include_overall: bool = True):
        assert window.size is not None and window.slide is not None
        self.size, self.slide, self.lateness = window.size, window.slide, window.allowed_lateness
        self.idle_timeout = window.idle_timeout
        self.r = int(round(self.size / self.slide))  # windows each event belongs to
        self.summarizers = list(summarizers)
        self.cap = SegmentCap(max_segments) if segmented else None
        self.emitter = Emitter(self.summarizers, segmented, include_overall)
        self.part_max: dict[int, float] = {}  # partition -> largest event time seen
        self.part_seen: dict[int, float] = {}  # partition -> processing time of its last event
        self.open: dict[int, WindowState] = {}
        self.closed_below = -(2**62)  # every window with a smaller index has closed, never to reopen

    @property
    def max_ts(self) -> float:
        return max(self.part_max.values(), default=-math.inf)

    def _first_open(self, watermark: np.ndarray) -> np.ndarray:
        """Smallest window index whose end is after the watermark."""
        with np.errstate(invalid="ignore"):
            w = np.floor((watermark - self.size) / self.slide) + 1
        return np.where(np.isfinite(w), w, -(2**62)).astype(np.int64)

    def _active(self, now: float | None, exclude: set[int]) -> list[float]:
        """Largest event times of the partitions that hold the watermark back."""
        # (a partition restored from a checkpoint starts its idleness clock when first looked at)
        return [m for p, m in self.part_max.items() if p not in exclude and
                (now is None or now - self.part_seen.setdefault(p, now) <= self.idle_timeout)]

    def register(self, partitions: list[int], now: float | None) -> None:
        """Partitions assigned to this consumer: each holds the watermark back from
        now on, until it delivers events or has been silent for ``idle_timeout``."""
        for p in partitions:
            self.part_max.setdefault(p, -math.inf)
            if now is not None:
                self.part_seen.setdefault(p, now)

    def forget(self, partitions: list[int]) -> None:
        """Partitions revoked from this consumer stop holding the watermark back."""
        for p in partitions:
            self.part_max.pop(p, None)
            self.part_seen.pop(p, None)

    def _watermarks(self, ts: np.ndarray, part: np.ndarray, now: float | None) -> np.ndarray:
        """Event time up to which the stream is complete, as seen just before each event."""
        keys = _distinct(part)
        base = min(self._active(now, set(keys)), default=math.inf)
        low = np.full(ts.size, base)
        for p in keys:
            x = np.where(part == p, ts, -math.inf)
            before = np.maximum.accumulate(np.concatenate(([self.part_max.get(p, -math.inf)], x)))[:-1]
            if p not in self.part_max:  # neither registered nor seen: no say until its first event
                before = np.where(before == -math.inf, math.inf, before)
            low = np.minimum(low, before)
        return np.where(low == math.inf, -math.inf, low) - self.lateness

    def add(self, batch: CodedBatch, part: np.ndarray | None = None,
            now: float | None = None) -> tuple[list[ClosedWindow], np.ndarray]:
        """Count a batch; return the windows it closed (in order) and a late mask.

        ``part``: source partition id per event (None: one partition); ``now``:
        processing time for partition idleness (None: never idle, as in replay).
        """
        ts = batch.ts
        if ts.size == 0:
            return [], np.zeros(0, dtype=bool)
        part = np.zeros(ts.size, dtype=np.int64) if part is None else part
        # A partition with no say yet, or one back from idleness, must not reopen a closed window.
        first_open = np.maximum(self._first_open(self._watermarks(ts, part, now)), self.closed_below)
        k = np.floor(ts / self.slide).astype(np.int64)
        late = k < first_open
        for j in range(self.r):
            w = k - j
            keep = np.flatnonzero(w >= first_open)
            if not keep.size:
                continue
            wk = w[keep]
            for idx, sel in _groups(wk, keep):
                st = self.open.get(idx)
                if st is None:
                    st = self.open[idx] = WindowState()
                st.add(self.summarizers, self.cap, batch, sel)
        for p, sel in _groups(part, None):
            self.part_max[p] = max(self.part_max.get(p, -math.inf), float(ts[sel].max()))
            if now is not None:
                self.part_seen[p] = now
        low = min(self._active(now, set()), default=-math.inf)
        limit = int(self._first_open(np.asarray([low - self.lateness]))[0])
        self.closed_below = max(self.closed_below, limit)
        return self._close(lambda i: i < self.closed_below), late

    def _close(self, due: Any) -> list[ClosedWindow]:
        out: list[ClosedWindow] = []
        for idx in sorted(i for i in self.open if due(i)):
            st = self.open.pop(idx)
            start = idx * self.slide
            out.extend(self.emitter.emit(st, idx, start, start + self.size))
        return out

    def flush(self) -> list[ClosedWindow]:
        """Close every open window (end of a finite input, or shutdown if configured)."""
        if self.open:
            self.closed_below = max(self.closed_below, max(self.open) + 1)
        return self._close(lambda i: True)

    def snapshot(self) -> dict[str, Any]:
        return {
            "part_max": [[p, m] for p, m in sorted(self.part_max.items())],
            "closed_below": self.closed_below,
            "open": {str(i): st.to_dict() for i, st in self.open.items()},
            "last_nonzero": sorted(self.emitter.last_nonzero, key=lambda k: "" if k is None else k),
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.part_max = {int(p): float(m) for p, m in d["part_max"]}
        self.part_seen = {}
        self.closed_below = int(d["closed_below"])
        self.open = {int(i): WindowState.from_dict(st, self.summarizers) for i, st in d["open"].items()}
        self.emitter.last_nonzero = set(d["last_nonzero"])


def _distinct(a: np.ndarray) -> list[int]:
    """The distinct values of an int array, ascending (no sort when they are all equal)."""
    lo, hi = int(a.min()), int(a.max())
    return [lo] if lo == hi else np.unique(a).tolist()


def _groups(a: np.ndarray, positions: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
    """``(value, positions where a == value)`` per distinct value of ``a``, ascending
    (``positions`` None: ``arange(a.size)``).  Usually a batch is in one window and one
    partition: then no sort and no mask."""
    lo, hi = int(a.min()), int(a.max())
    if lo == hi:
        return [(lo, np.arange(a.size) if positions is None else positions)]
    pos = np.arange(a.size) if positions is None else positions
    return [(v, pos[a == v]) for v in np.unique(a).tolist()]
