"""Windows: count binned events per (window, segment, feature); close each once.

Event-time windows (:class:`EventTimeWindows`) are tumbling (``slide ==
size``) or hopping (``size`` a multiple of ``slide``).  Window ``w`` covers
``[w*slide, w*slide + size)``.  The watermark is the largest event time seen
so far minus ``allowed_lateness``; a window closes, exactly once, when the
watermark passes its end.  An event is added to every window that contains it
and is still open *at the moment the event arrives*; if none is open it is
``late`` and dropped, never mixed into a closed window.  Because the watermark
is computed per event (a running maximum, vectorized), the result does not
depend on how the stream was cut into batches.

With several source partitions (the daemon passes one id per event) the
watermark is the *minimum* over partitions of each partition's largest event
time, so a partition read ahead during a backlog catch-up cannot make the
others' events late.  A partition that has delivered nothing for
``idle_timeout`` seconds of processing time stops holding the watermark back
(like Flink's idleness).  Partitions the consumer was assigned but has not
heard from yet hold the watermark back too (:meth:`EventTimeWindows.register`),
so a broker that serves one whole partition before the next cannot make the
others late.  Offline replay is a single partition.

Count windows (:class:`CountWindows`) close after ``count`` events of a lane
(the overall stream, or one segment).

Counts for all segments of a window live in one ``(segments, bins)`` array
per feature, filled with a single ``np.bincount`` per window and feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.config import WindowConfig

OTHER_SEGMENT = "__other__"


@dataclass
class ClosedWindow:
    index: int
    start: float
    end: float
    segment: str | None  # None: the whole stream
    counts: list[np.ndarray]  # one count vector per feature
    n: int


class Segmenter:
    """Maps segment keys to small integer ids, at most ``max_segments`` of them;
    keys beyond the cap share the ``__other__`` segment (bounded label cardinality)."""

    def __init__(self, max_segments: int, segmented: bool = True):
        self.max_segments = max_segments
        self.segmented = segmented
        self.names: list[str | None] = [] if segmented else [None]
        self._ids: dict[str | None, int] = {n: i for i, n in enumerate(self.names)}

    def ids(self, keys: list[str] | None, n: int) -> np.ndarray:
        if not self.segmented or keys is None:
            return np.zeros(n, dtype=np.int64)
        try:  # common case, every key already has an id: one C-level pass
            return np.fromiter(map(self._ids.__getitem__, keys), dtype=np.int64, count=n)
        except KeyError:
            pass
        uniq, first, inverse = np.unique(np.asarray(keys, dtype=object), return_index=True, return_inverse=True)
        mapped = np.empty(len(uniq), dtype=np.int64)
        for u in np.argsort(first, kind="stable").tolist():  # new keys get ids in arrival order
            mapped[u] = self._id(uniq[u])
        return mapped[inverse.reshape(-1)]

    def _id(self, key: str) -> int:
        found = self._ids.get(key)
        if found is not None:
            return found
        if len(self.names) >= self.max_segments:
            key = OTHER_SEGMENT
            found = self._ids.get(key)
            if found is not None:
                return found
        self._ids[key] = len(self.names)
        self.names.append(key)
        return self._ids[key]

    def snapshot(self) -> list[str | None]:
        return list(self.names)

    def restore(self, names: list[str | None]) -> None:
        self.names = list(names)
        self._ids = {n: i for i, n in enumerate(self.names)}


def _grow(a: np.ndarray, rows: int) -> np.ndarray:
    return a if a.shape[0] >= rows else np.pad(a, ((0, rows - a.shape[0]), (0, 0)))


class _Acc:
    """Counts of one open window: per feature a (segments, bins) array."""

    def __init__(self, sizes: list[int], segments: int):
        self.counts = [np.zeros((segments, k), dtype=np.int64) for k in sizes]
        self.t_min, self.t_max = math.inf, -math.inf

    def add(self, seg: np.ndarray, bins: list[np.ndarray], segments: int, ts: np.ndarray) -> None:
        for f, b in enumerate(bins):
            k = self.counts[f].shape[1]
            add = np.bincount(seg * k + b, minlength=segments * k).reshape(segments, k)
            self.counts[f] = _grow(self.counts[f], segments) + add
        if ts.size:
            self.t_min, self.t_max = min(self.t_min, float(ts.min())), max(self.t_max, float(ts.max()))

    def to_dict(self) -> dict[str, Any]:
        return {"counts": [c.tolist() for c in self.counts], "t_min": self.t_min, "t_max": self.t_max}

    @classmethod
    def from_dict(cls, d: dict[str, Any], sizes: list[int]) -> _Acc:
        acc = cls(sizes, 0)
        acc.counts = [np.asarray(c, dtype=np.int64).reshape(-1, k) for c, k in zip(d["counts"], sizes)]
        acc.t_min, acc.t_max = d["t_min"], d["t_max"]
        return acc


class _Emitter:
    """Turns an accumulator into ClosedWindows: every segment with events now or
    in the previously closed window (so a vanished segment reports once), then
    the whole stream."""

    def __init__(self, segmenter: Segmenter, include_overall: bool):
        self.segmenter = segmenter
        self.include_overall = include_overall and segmenter.segmented
        self.last_nonzero: set[int] = set()

    def emit(self, acc: _Acc, index: int, start: float, end: float) -> list[ClosedWindow]:
        rows = len(self.segmenter.names)
        counts = [_grow(c, rows) for c in acc.counts]
        per_seg = counts[0].sum(axis=1)
        nonzero = set(np.flatnonzero(per_seg).tolist())
        out = [
            ClosedWindow(index, start, end, self.segmenter.names[s], [c[s].copy() for c in counts], int(per_seg[s]))
            for s in sorted(nonzero | self.last_nonzero)
        ]
        self.last_nonzero = nonzero
        if self.include_overall:
            out.append(ClosedWindow(index, start, end, None, [c.sum(axis=0) for c in counts], int(per_seg.sum())))
        return out


class EventTimeWindows:
    """Tumbling or hopping event-time windows with a watermark and allowed lateness."""

    def __init__(self, window: WindowConfig, sizes: list[int], segmenter: Segmenter, include_overall: bool = True):
        assert window.size is not None and window.slide is not None
        self.size, self.slide, self.lateness = window.size, window.slide, window.allowed_lateness
        self.idle_timeout = window.idle_timeout
        self.r = int(round(self.size / self.slide))  # windows each event belongs to
        self.sizes = sizes
        self.segmenter = segmenter
        self.emitter = _Emitter(segmenter, include_overall)
        self.part_max: dict[int, float] = {}  # partition -> largest event time seen
        self.part_seen: dict[int, float] = {}  # partition -> processing time of its last event
        self.open: dict[int, _Acc] = {}
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
        keys = np.unique(part).tolist()
        base = min(self._active(now, set(keys)), default=math.inf)
        low = np.full(ts.size, base)
        for p in keys:
            x = np.where(part == p, ts, -math.inf)
            before = np.maximum.accumulate(np.concatenate(([self.part_max.get(p, -math.inf)], x)))[:-1]
            if p not in self.part_max:  # neither registered nor seen: no say until its first event
                before = np.where(before == -math.inf, math.inf, before)
            low = np.minimum(low, before)
        return np.where(low == math.inf, -math.inf, low) - self.lateness

    def add(self, ts: np.ndarray, seg: np.ndarray, bins: list[np.ndarray], part: np.ndarray | None = None,
            now: float | None = None) -> tuple[list[ClosedWindow], np.ndarray]:
        """Count a batch; return the windows it closed (in order) and a late mask.

        ``part``: source partition id per event (None: one partition); ``now``:
        processing time for partition idleness (None: never idle, as in replay).
        """
        if ts.size == 0:
            return [], np.zeros(0, dtype=bool)
        part = np.zeros(ts.size, dtype=np.int64) if part is None else part
        # A partition with no say yet, or one back from idleness, must not reopen a closed window.
        first_open = np.maximum(self._first_open(self._watermarks(ts, part, now)), self.closed_below)
        k = np.floor(ts / self.slide).astype(np.int64)
        late = k < first_open
        segments = len(self.segmenter.names)
        for j in range(self.r):
            w = k - j
            keep = w >= first_open
            if not keep.any():
                continue
            wk = w[keep]
            for idx in np.unique(wk).tolist():
                sel = np.flatnonzero(keep)[wk == idx]
                acc = self.open.get(idx)
                if acc is None:
                    acc = self.open[idx] = _Acc(self.sizes, segments)
                acc.add(seg[sel], [b[sel] for b in bins], segments, ts[sel])
        for p in np.unique(part).tolist():
            self.part_max[p] = max(self.part_max.get(p, -math.inf), float(ts[part == p].max()))
            if now is not None:
                self.part_seen[p] = now
        low = min(self._active(now, set()), default=-math.inf)
        limit = int(self._first_open(np.asarray([low - self.lateness]))[0])
        self.closed_below = max(self.closed_below, limit)
        return self._close(lambda i: i < self.closed_below), late

    def _close(self, due: Any) -> list[ClosedWindow]:
        out: list[ClosedWindow] = []
        for idx in sorted(i for i in self.open if due(i)):
            acc = self.open.pop(idx)
            start = idx * self.slide
            out.extend(self.emitter.emit(acc, idx, start, start + self.size))
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
            "open": {str(i): a.to_dict() for i, a in self.open.items()},
            "last_nonzero": sorted(self.emitter.last_nonzero),
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.part_max = {int(p): float(m) for p, m in d["part_max"]}
        self.part_seen = {}
        self.closed_below = int(d["closed_below"])
        self.open = {int(i): _Acc.from_dict(a, self.sizes) for i, a in d["open"].items()}
        self.emitter.last_nonzero = set(d["last_nonzero"])


class CountWindows:
    """Windows of ``count`` events, per lane: the whole stream and each segment."""

    def __init__(self, window: WindowConfig, sizes: list[int], segmenter: Segmenter, include_overall: bool = True):
        assert window.count is not None
        self.count = window.count
        self.sizes = sizes
        self.segmenter = segmenter
        self.overall = include_overall or not segmenter.segmented
        self.seen: dict[int, int] = {}  # lane -> events counted so far (lane -1 = whole stream)
        self.open: dict[int, _Acc] = {}

    def add(self, ts: np.ndarray, seg: np.ndarray, bins: list[np.ndarray], part: np.ndarray | None = None,
            now: float | None = None) -> tuple[list[ClosedWindow], np.ndarray]:
        out: list[ClosedWindow] = []
        lanes: list[tuple[int, np.ndarray]] = []
        if self.overall:
            lanes.append((-1, np.arange(ts.size)))
        if self.segmenter.segmented:
            order = np.argsort(seg, kind="stable")
            uniq, starts = np.unique(seg[order], return_index=True)
            lanes.extend(zip(uniq.tolist(), np.split(order, starts[1:])))
        for lane, sel in lanes:
            before = self.seen.get(lane, 0)
            number = (before + np.arange(sel.size)) // self.count
            for w in np.unique(number).tolist():
                part = sel[number == w]
                acc = self.open.get(lane)
                if acc is None:
                    acc = self.open[lane] = _Acc(self.sizes, 1)
                acc.add(np.zeros(part.size, dtype=np.int64), [b[part] for b in bins], 1, ts[part])
                if acc.counts[0].sum() >= self.count:
                    out.append(self._emit(lane, w, self.open.pop(lane)))
            self.seen[lane] = before + sel.size
        return out, np.zeros(ts.size, dtype=bool)

    def _emit(self, lane: int, index: int, acc: _Acc) -> ClosedWindow:
        name = None if lane < 0 else self.segmenter.names[lane]
        counts = [c[0].copy() for c in acc.counts]
        return ClosedWindow(index, acc.t_min, acc.t_max, name, counts, int(counts[0].sum()))

    def flush(self) -> list[ClosedWindow]:
        out = [self._emit(lane, self.seen[lane] // self.count, acc) for lane, acc in sorted(self.open.items())]
        self.open.clear()
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "seen": {str(k): v for k, v in self.seen.items()},
            "open": {str(k): a.to_dict() for k, a in self.open.items()},
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.seen = {int(k): v for k, v in d["seen"].items()}
        self.open = {int(k): _Acc.from_dict(a, self.sizes) for k, a in d["open"].items()}


def make_windows(window: WindowConfig, sizes: list[int], segmenter: Segmenter, include_overall: bool):
    cls = CountWindows if window.is_count else EventTimeWindows
    return cls(window, sizes, segmenter, include_overall)
