"""The reducer stage: merge partial window summaries, detect once per window.

Pure (no Kafka): :meth:`Reducer.add` takes decoded partials-topic records in
any order, any number of times; :meth:`Reducer.emit` returns the results of
every window that is complete.

* ``partials[(stream, feature, window)][source partition]`` keeps one partial
  per source partition; a repeat (a partial re-sent after a crash or a
  rebalance) overwrites, so it is counted once.
* ``through[source partition]`` is the largest progress mark seen.  A window
  ``w`` of a stream is complete when every source partition of the stream's
  topics has ``through >= w``: every partial of ``w`` has then arrived (a
  mapper sends a window's partials before its mark, on the same partials
  partition, in order).
* An idle source partition (its mark says ``idle``) does not hold windows
  back; each window emitted past one is counted in ``idle_advances`` (the
  only path that depends on the wall clock).  Progress is kept once reached:
  ``high[stream]``, the highest window every then-active source partition had
  closed, seen after each mark, so windows do not wait again when the last
  active partitions go idle too (the stream fell quiet).  With no active
  source partition nothing holds a window back nor times it out: it waits for
  events, as an open window of one process does.
* A window held back longer than ``partial_timeout`` (seconds of processing
  time, counted from the first :meth:`emit` that saw it held back, behind
  an earlier window or not) is emitted
  with what has arrived, its results marked ``partial`` with the missing
  source partitions listed; partials arriving for a window already emitted
  are dropped and counted in ``dropped_after_emit``.

Windows are merged with :meth:`WindowState.merge` in source order and turned
into closed windows by the series' own emitter; detection is
:func:`driftmon.pipeline.detect_jointly` over the one-feature pipelines of the
stream's series (one family of tests per window, as in one process: the
Benjamini-Hochberg adjustment spans the stream's features), so results equal
those of one process counting every event.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from driftmon.config import StreamConfig
from driftmon.pipeline import StepOutput, StreamPipeline, detect_jointly
from driftmon.scale.progress import NEVER, due_windows, emit_each, ready_through, stream_sources
from driftmon.scale.records import Mark, Partial
from driftmon.scale.sources import Source
from driftmon.windows.base import WindowState
from driftmon.windows.event_time import EventTimeWindows
from driftmon.windows.segments import SegmentCap


def series_pipelines(streams: Iterable[StreamConfig], clock: Callable[[], float] | None = None
                     ) -> dict[tuple[str, str], StreamPipeline]:
    """One one-feature pipeline per (stream, feature): the reducer's detectors."""
    out = {}
    for s in streams:
        for f in s.features:
            sub = dataclasses.replace(s, features=(f,))
            out[(s.name, f.name)] = StreamPipeline(sub) if clock is None else StreamPipeline(sub, clock)
    return out


class Reducer:
    """Merges the partials of the series on one partials partition (see the module docstring)."""

    def __init__(self, streams: Iterable[StreamConfig], partial_timeout: float):
        self.streams = {s.name: s for s in streams}
        self.partial_timeout = partial_timeout
        self.pipes: dict[tuple[str, str], StreamPipeline] = {}
        self.through: dict[Source, int] = {}
        self.idle: dict[Source, bool] = {}
        self.of: dict[str, int] = {}
        self.partials: dict[tuple[str, str, int], dict[Source, WindowState]] = {}
        self.done_below: dict[str, int] = {}  # per stream: every window below was emitted
        self.high: dict[str, int] = {}  # per stream: highest ``ready`` seen (see the module docstring)
        self.waiting: dict[str, dict[int, float]] = {}  # stream -> window -> first seen held back
        self.idle_advances: Counter[str] = Counter()  # per stream
        self.partial_windows: Counter[str] = Counter()
        self.complete_windows: Counter[str] = Counter()
        self.dropped_after_emit = 0

    def pipe(self, stream: str, feature: str) -> StreamPipeline:
        p = self.pipes.get((stream, feature))
        if p is None:
            s = self.streams[stream]
            f = next(f for f in s.features if f.name == feature)
            p = self.pipes[(stream, feature)] = StreamPipeline(dataclasses.replace(s, features=(f,)))
        return p

    # -- input ---------------------------------------------------------------------------------

    def add(self, rec: Partial | Mark) -> None:
        if isinstance(rec, Mark):
            self.of[rec.topic] = max(self.of.get(rec.topic, 0), rec.of)
            src = rec.source
            self.through[src] = max(self.through.get(src, NEVER), rec.through)
            self.idle[src] = rec.idle
            for name, s in self.streams.items():
                if rec.topic in s.topics:
                    self.high[name] = max(self.high.get(name, NEVER), self._ready(name))
            return
        if rec.stream not in self.streams:
            return
        if rec.window < self.done_below.get(rec.stream, NEVER):
            self.dropped_after_emit += 1
            return
        self.partials.setdefault((rec.stream, rec.feature, rec.window), {})[rec.source] = rec.state

    # -- output --------------------------------------------------------------------------------

    def sources(self, stream: str) -> list[Source] | None:
        """Every source partition of the stream's topics, once each topic's size is known."""
        return stream_sources(self.streams[stream].topics, self.of)

    def _ready(self, name: str) -> int:
        """Every window up to this one may be emitted: the active source partitions have closed
        it (all of them have, if none is active), or they had when last seen (``high``)."""
        srcs = self.sources(name)
        if srcs is None:
            return NEVER
        return ready_through([self.through.get(src, NEVER) for src in srcs],
                             [bool(self.idle.get(src)) for src in srcs], self.high.get(name, NEVER))

    def emit(self, now: float) -> list[tuple[str, StepOutput]]:
        """Results of every window that is complete (or timed out), per stream, in window order."""
        return emit_each(self.streams, self._emit_stream, now)

    def _emit_stream(self, name: str, now: float) -> StepOutput | None:
        srcs = self.sources(name)
        if srcs is None:
            return None
        thr = {src: self.through.get(src, NEVER) for src in srcs}
        ready = self._ready(name)
        pending = sorted({w for (s, _, w) in self.partials if s == name})
        step: StepOutput | None = None
        for w, missing, idle in due_windows(pending, srcs, thr, lambda s: bool(self.idle.get(s)), ready,
                                            self.waiting.setdefault(name, {}), now, self.partial_timeout):
            if missing:
                self.partial_windows[name] += 1
            else:
                self.complete_windows[name] += 1
            self.idle_advances[name] += idle
            step = step or StepOutput()
            self._emit_window(name, w, missing, step)
            self.done_below[name] = w + 1
        if ready >= self.done_below.get(name, NEVER):
            self.done_below[name] = ready + 1
        return step

    def _emit_window(self, name: str, w: int, missing: list[Source], step: StepOutput) -> None:
        cfg = self.streams[name]
        size = cfg.window.size or 0.0
        slide = cfg.window.slide or size
        start = w * slide
        step.closed_ends.append(start + size)
        cap = SegmentCap(cfg.max_segments) if cfg.segment_by else None
        members = []
        for f in cfg.features:
            if (name, f.name, w) not in self.partials:  # a series another partials partition holds
                continue
            parts = self.partials.pop((name, f.name, w))
            merged = WindowState()
            for src in sorted(parts):
                merged.merge(parts[src], cap)
            pipe = self.pipe(name, f.name)
            assert isinstance(pipe.windows, EventTimeWindows)
            members.append((pipe, pipe.windows.emitter.emit(merged, w, start, start + size)))
        # one family of tests for the window, as in one process (Benjamini-Hochberg across the
        # stream's features x segments x horizons): the stream's series share a partials partition
        for o in detect_jointly(members):
            results = o.results
            if missing:
                label = tuple(f"{t}:{p}" for t, p in missing)
                results = [dataclasses.replace(r, partial=label) for r in results]
            step.results.extend(results)
            step.retired.extend(o.retired)

    # -- state ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "through": [[t, p, w] for (t, p), w in sorted(self.through.items())],
            "idle": [[t, p] for (t, p), v in sorted(self.idle.items()) if v],
            "of": dict(self.of),
            "partials": [[s, f, w, [[t, p, st.to_dict()] for (t, p), st in sorted(parts.items())]]
                         for (s, f, w), parts in sorted(self.partials.items())],
            "done_below": dict(self.done_below),
            "high": dict(self.high),
            "pipes": [[s, f, p.snapshot()] for (s, f), p in sorted(self.pipes.items())],
            "counters": {"idle_advances": dict(self.idle_advances), "partial_windows": dict(self.partial_windows),
                         "complete_windows": dict(self.complete_windows), "dropped_after_emit": self.dropped_after_emit},
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.through = {(t, int(p)): int(w) for t, p, w in d["through"]}
        self.idle = {(t, int(p)): True for t, p in d["idle"]}
        self.of = {t: int(n) for t, n in d["of"].items()}
        self.partials = {}
        for s, f, w, parts in d["partials"]:
            if s not in self.streams:
                continue
            summ = self.pipe(s, f).summarizers
            self.partials[(s, f, int(w))] = {(t, int(p)): WindowState.from_dict(st, summ) for t, p, st in parts}
        self.done_below = {s: int(w) for s, w in d["done_below"].items()}
        self.high = {s: int(w) for s, w in d.get("high", {}).items()}  # (absent before 2026-12)
        for s, f, snap in d["pipes"]:
            if s in self.streams:
                self.pipe(s, f).restore(snap)
        c = d["counters"]
        self.idle_advances = Counter(c["idle_advances"])
        self.partial_windows = Counter(c["partial_windows"])
        self.complete_windows = Counter(c["complete_windows"])
        self.dropped_after_emit = int(c["dropped_after_emit"])
        self.waiting = {}

