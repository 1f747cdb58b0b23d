"""The reducer stage of per-entity interest drift: one entity shard per partials partition.

The reducer of partials partition ``q`` owns entity shard ``q`` (the entities whose
``XXH3-64(key) mod shards == q``) of every stream that configures ``entities``, with an
:class:`~driftmon.monitors.entities.EntityMonitor` per stream holding exactly those
entities' rows.  Like the series reducer (:mod:`driftmon.scale.reducer`):

* ``partials[(stream, window)][source partition]`` keeps one
  :class:`~driftmon.scale.entity_records.EntityPartial` per source partition; a repeat
  overwrites it (counted once);
* ``through[(stream, source partition)]`` is the largest
  :class:`~driftmon.scale.entity_records.EntityMark` seen; entity window ``w`` of a stream
  is complete when every source partition of its topics has ``through >= w`` (idle ones
  do not hold it back; past ``partial_timeout`` it is closed with what arrived);
* complete windows are merged in window order -- the cells summed over source partitions,
  the entities sorted by key hash, so the result does not depend on arrival order -- and
  fed to :meth:`EntityMonitor.add_window`, which scores and closes them exactly as one
  process's monitor does when its watermark passes the window's end.

``max_entities`` is split evenly between the shards (``ceil(max_entities / shards)`` per
shard), so the replicas together hold at most what one process would; ``idle_ttl`` counts
from the largest event time of the windows merged so far, swept at each window close.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from driftmon.config import StreamConfig
from driftmon.monitors.base import MonitorStep
from driftmon.monitors.entities import EntityMonitor
from driftmon.pipeline import StepOutput
from driftmon.scale.entity_records import EntityMark, EntityPartial, from_dict, to_dict
from driftmon.scale.progress import NEVER, due_windows, emit_each, ready_through, stream_sources
from driftmon.scale.records import Record
from driftmon.scale.reducer import Reducer
from driftmon.scale.sources import Source

log = logging.getLogger("driftmon.scale.entity_reducer")


class EntityShard:
    """The entity state of one shard (one partials partition), for every stream with ``entities``."""

    def __init__(self, streams: Iterable[StreamConfig], partial_timeout: float):
        self.streams = {s.name: s for s in streams if s.entities is not None}
        self.partial_timeout = partial_timeout
        self.shards: int | None = None
        self.monitors: dict[str, EntityMonitor] = {}
        self.through: dict[tuple[str, Source], int] = {}
        self.idle: dict[tuple[str, Source], bool] = {}
        self.of: dict[str, int] = {}
        self.partials: dict[tuple[str, int], dict[tuple[Source, int], EntityPartial]] = {}  # [..][(source, part)]
        self.done_below: dict[str, int] = {}
        self.high: dict[str, int] = {}  # highest ``ready`` seen after a mark (see Reducer)
        self.waiting: dict[str, dict[int, float]] = {}  # stream -> window -> first seen held back
        self.idle_advances: Counter[str] = Counter()
        self.partial_windows: Counter[str] = Counter()
        self.complete_windows: Counter[str] = Counter()
        self.dropped_after_emit = 0
        self.reshard_logged = False
        self.invalid = 0  # partials whose categories do not match the config

    def monitor(self, stream: str) -> EntityMonitor:
        m = self.monitors.get(stream)
        if m is None:
            cfg = self.streams[stream].entities
            assert cfg is not None
            per_shard = math.ceil(cfg.max_entities / max(self.shards or 1, 1))
            m = self.monitors[stream] = EntityMonitor(stream, dataclasses.replace(cfg, max_entities=per_shard))
        return m

    def add(self, rec: EntityPartial | EntityMark) -> None:
        if rec.stream not in self.streams:
            return
        if isinstance(rec, EntityMark):
            self.of[rec.topic] = max(self.of.get(rec.topic, 0), rec.of)
            key = (rec.stream, rec.source)
            self.through[key] = max(self.through.get(key, NEVER), rec.through)
            self.idle[key] = rec.idle
            self.high[rec.stream] = max(self.high.get(rec.stream, NEVER), self._ready(rec.stream))
            return
        cfg = self.streams[rec.stream].entities
        assert cfg is not None and cfg.categories is not None
        if rec.totals.size != len(cfg.categories) + 1:  # (the declared categories and __other__)
            self.invalid += 1
            log.error("entity partial of stream %r with %d category columns, the config has %d: skipped",
                      rec.stream, rec.totals.size, len(cfg.categories) + 1)
            return
        if self.shards is None:
            self.shards = rec.shards
        elif rec.shards != self.shards and not self.reshard_logged:
            self.reshard_logged = True
            log.error("entity partials of stream %r for %d shards, this shard's state was built for %d: the "
                      "partials topic's partition count changed, which re-shards the entities (start with a new "
                      "changelog topic, docs/scaling.md)", rec.stream, rec.shards, self.shards)
        if rec.window < self.done_below.get(rec.stream, NEVER):
            self.dropped_after_emit += 1
            return
        self.partials.setdefault((rec.stream, rec.window), {})[(rec.source, rec.part)] = rec

    def emit(self, now: float) -> list[tuple[str, StepOutput]]:
        return emit_each(self.streams, self._emit_stream, now)

    def _ready(self, name: str) -> int:
        """As :meth:`Reducer._ready`: the active partitions' progress, kept once reached."""
        srcs = stream_sources(self.streams[name].topics, self.of)
        if srcs is None:
            return NEVER
        return ready_through([self.through.get((name, src), NEVER) for src in srcs],
                             [bool(self.idle.get((name, src))) for src in srcs], self.high.get(name, NEVER))

    def _emit_stream(self, name: str, now: float) -> StepOutput | None:
        srcs = stream_sources(self.streams[name].topics, self.of)
        if srcs is None:
            return None
        thr = {src: self.through.get((name, src), NEVER) for src in srcs}
        ready = self._ready(name)
        pending = sorted(w for (st, w) in self.partials if st == name)
        out: StepOutput | None = None
        for w, missing, idle in due_windows(pending, srcs, thr, lambda x: bool(self.idle.get((name, x))), ready,
                                            self.waiting.setdefault(name, {}), now, self.partial_timeout):
            if missing:
                self.partial_windows[name] += 1
            else:
                self.complete_windows[name] += 1
            self.idle_advances[name] += idle
            out = out or StepOutput()
            step = self._close(name, w, self.partials.pop((name, w)))
            if missing:  # marked as the series' rows are
                label = tuple(f"{t}:{p}" for t, p in missing)
                step.records = [dataclasses.replace(r, partial=label) for r in step.records]
            out.records.extend(step.records)
            out.monitors.append(step)
            self.done_below[name] = w + 1
        if ready >= self.done_below.get(name, NEVER):
            self.done_below[name] = ready + 1
        return out

    def _close(self, name: str, w: int, parts: dict[tuple[Source, int], EntityPartial]) -> MonitorStep:
        """Merge the window's partials (cells summed, entities in hash order) and close it."""
        mon = self.monitor(name)
        k = mon.k
        recs = [parts[src] for src in sorted(parts)]
        totals = np.zeros(k, dtype=np.int64)
        for r in recs:
            if r.part == 0:  # (the other parts of a source carry zeros: the totals once)
                totals += r.totals[:k]
        h = np.concatenate([r.hashes for r in recs]) if recs else np.zeros(0, dtype=np.uint64)
        uh, first, inv = np.unique(h, return_index=True, return_inverse=True)
        keys_all = [key for r in recs for key in r.keys]
        keys = [keys_all[i] for i in first.tolist()]
        last = np.zeros(uh.size, dtype=np.float64)
        np.maximum.at(last, inv, np.concatenate([r.last for r in recs]).astype(np.float64) if recs else last[:0])
        base = np.cumsum([0, *(len(r.keys) for r in recs)])[:-1]
        rows = np.concatenate([inv[b + r.rows] for b, r in zip(base.tolist(), recs)]) if recs else np.zeros(0, int)
        cols = np.concatenate([r.cols for r in recs]) if recs else np.zeros(0, dtype=np.int64)
        counts = np.concatenate([r.counts for r in recs]) if recs else np.zeros(0, dtype=np.int64)
        wm = max((r.t_max for r in recs), default=-math.inf)
        return mon.add_window(w, uh, keys, last, rows, cols, counts, totals, wm)

    def snapshot(self) -> dict[str, Any]:
        return {
            "shards": self.shards,
            "through": [[s, t, p, w] for (s, (t, p)), w in sorted(self.through.items())],
            "idle": [[s, t, p] for (s, (t, p)), v in sorted(self.idle.items()) if v],
            "of": dict(self.of),
            "partials": [[to_dict(r) for _, r in sorted(parts.items())] for _, parts in sorted(self.partials.items())],
            "done_below": dict(self.done_below),
            "high": dict(self.high),
            "monitors": {s: m.snapshot() for s, m in sorted(self.monitors.items())},
            "counters": {"idle_advances": dict(self.idle_advances), "partial_windows": dict(self.partial_windows),
                         "complete_windows": dict(self.complete_windows),
                         "dropped_after_emit": self.dropped_after_emit},
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.shards = d["shards"]
        self.through = {(s, (t, int(p))): int(w) for s, t, p, w in d["through"]}
        self.idle = {(s, (t, int(p))): True for s, t, p in d["idle"]}
        self.of = {t: int(n) for t, n in d["of"].items()}
        self.partials = {}
        for parts in d["partials"]:
            for doc in parts:
                rec = from_dict(doc)
                assert isinstance(rec, EntityPartial)
                if rec.stream in self.streams:
                    self.partials.setdefault((rec.stream, rec.window), {})[(rec.source, rec.part)] = rec
        self.done_below = {s: int(w) for s, w in d["done_below"].items()}
        self.high = {s: int(w) for s, w in d.get("high", {}).items()}  # (absent before 2026-12)
        self.monitors = {}
        for s, snap in d["monitors"].items():
            if s in self.streams:
                self.monitor(s).restore(snap)
        c = d["counters"]
        self.idle_advances = Counter(c["idle_advances"])
        self.partial_windows = Counter(c["partial_windows"])
        self.complete_windows = Counter(c["complete_windows"])
        self.dropped_after_emit = int(c["dropped_after_emit"])
        self.waiting = {}


class ShardReducer(Reducer):
    """The reducer of one partials partition: the series it holds (:class:`Reducer`) and, when a
    stream configures ``entities``, the entity shard of the same number (:class:`EntityShard`).
    Its window counters and ``dropped_after_emit`` count both.  ``peers()``: the reducers of this
    replica (itself included), so a step's ``tracked`` is the entities all of them hold
    (``driftmon_entities_tracked`` is per replica, not per shard)."""

    def __init__(self, streams: Iterable[StreamConfig], partial_timeout: float,
                 peers: Callable[[], Iterable[ShardReducer]] | None = None):
        streams = list(streams)
        super().__init__(streams, partial_timeout)
        self.entities = EntityShard(streams, partial_timeout)
        self.peers = peers

    def add(self, rec: Record) -> None:  # type: ignore[override]
        if isinstance(rec, (EntityPartial, EntityMark)):
            dropped = self.entities.dropped_after_emit
            self.entities.add(rec)
            self.dropped_after_emit += self.entities.dropped_after_emit - dropped
            return
        super().add(rec)

    def emit(self, now: float) -> list[tuple[str, StepOutput]]:
        out = super().emit(now)
        e = self.entities
        before = (Counter(e.complete_windows), Counter(e.partial_windows), Counter(e.idle_advances))
        steps = e.emit(now)
        if self.peers is not None:
            for name, step in steps:
                tracked = sum(p.entities.monitors[name].tracked for p in self.peers() if name in p.entities.monitors)
                for m in step.monitors:
                    m.tracked = tracked
        for mine, theirs, old in ((self.complete_windows, e.complete_windows, before[0]),
                                  (self.partial_windows, e.partial_windows, before[1]),
                                  (self.idle_advances, e.idle_advances, before[2])):
            mine.update(theirs - old)
        return out + steps

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        if self.entities.streams:
            snap["entities"] = self.entities.snapshot()
        return snap

    def restore(self, d: dict[str, Any]) -> None:
        super().restore(d)
        self.entities = EntityShard(self.streams.values(), self.partial_timeout)
        if "entities" in d:
            self.entities.restore(d["entities"])
