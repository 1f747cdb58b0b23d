"""The mapper stage of per-entity interest drift (``streams[].entities`` under ``scale:``).

Per source partition, :class:`PartitionEntityCounts` counts each entity's categories in the
partition's open event-time entity window (``entities.window.size``), the window index taken
from the partition's running-max watermark exactly as
:class:`~driftmon.monitors.entities.EntityMonitor` takes it from the stream's.  When the
partition's watermark passes the window's end, the window becomes one
:class:`~driftmon.scale.entity_records.EntityPartial` per entity shard (``XXH3-64(key) mod
shards``, the hash the monitor indexes entities by) and then the partition's
:class:`~driftmon.scale.entity_records.EntityMark`.  Pure: the service sends what
:meth:`EntityMapper.count` returns, in order.

Counts are kept as sorted (hash, column) cells, the batches' cells appended and folded in
once they outnumber the folded ones (amortised O(cells) per event), so a partition holds
about 24 bytes per (entity, category) of its open window plus each entity's key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import is_not
from typing import Any

import numpy as np

from driftmon.config import StreamConfig
from driftmon.decode.prepare import CodedBatch, EntityColumns
from driftmon.monitors.entities import declared_columns, declared_labels
from driftmon.monitors.packing import pack, unpack
from driftmon.scale.entity_records import CELLS_PER_RECORD, EntityMark, EntityPartial
from driftmon.scale.mapper import PartitionWindows, StreamMapper
from driftmon.scale.progress import NEVER, SourceProgress
from driftmon.scale.records import Partial, Record
from driftmon.scale.sources import Source
from driftmon.summaries.base import Summarizer

U32_MAX = np.iinfo(np.uint32).max


@dataclass
class PartitionEntityCounts:
    """One source partition's open entity window: (hash, column) -> count, hash -> last time and key."""

    k: int
    window: int | None = None
    watermark: float = -math.inf
    t_max: float = -math.inf  # largest event time counted into the open window
    totals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cell_h: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # sorted by (h, col)
    cell_c: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cell_n: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ent_h: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # sorted, unique
    ent_last: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    ent_key: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # the key of each ent_h
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # (h, col, ts)
    pending_keys: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (unique h, its key)
    pending_n: int = 0

    def __post_init__(self) -> None:
        if self.totals.size != self.k:
            self.totals = np.zeros(self.k, dtype=np.int64)

    def add(self, h: np.ndarray, cols: np.ndarray, ts: np.ndarray, keys: Sequence[str]) -> None:
        self.totals += np.bincount(cols, minlength=self.k)
        self.t_max = max(self.t_max, float(ts.max()))
        uh, first = np.unique(h, return_index=True)
        self.pending_keys.append((uh, _objects(list(keys))[first]))
        self.pending.append((h, cols, ts))
        self.pending_n += h.size
        if self.pending_n > max(4096, self.cell_h.size):
            self.fold()

    def fold(self) -> None:
        if not self.pending:
            return
        h = np.concatenate([self.cell_h, *(p[0] for p in self.pending)])
        c = np.concatenate([self.cell_c, *(p[1] for p in self.pending)])
        n = np.concatenate([self.cell_n, np.ones(self.pending_n, dtype=np.int64)])
        order = np.lexsort((c, h))
        h, c, n = h[order], c[order], n[order]
        starts = _firsts(h, c)
        self.cell_h, self.cell_c, self.cell_n = h[starts], c[starts], np.add.reduceat(n, starts)
        eh = np.concatenate([self.ent_h, *(p[0] for p in self.pending)])
        et = np.concatenate([self.ent_last, *(p[2] for p in self.pending)])
        kh = np.concatenate([self.ent_h, *(p[0] for p in self.pending_keys)])
        ko = np.concatenate([self.ent_key, *(p[1] for p in self.pending_keys)])
        order = np.argsort(eh, kind="stable")
        eh, et = eh[order], et[order]
        starts = _firsts(eh)
        self.ent_h, self.ent_last = eh[starts], np.maximum.reduceat(et, starts)
        order = np.argsort(kh, kind="stable")  # the first key seen of each hash
        kh, ko = kh[order], ko[order]
        self.ent_key = ko[_firsts(kh)]
        self.pending, self.pending_keys, self.pending_n = [], [], 0

    def take(self, stream: str, src: Source, shards: int, offsets: tuple[int, int]) -> list[EntityPartial]:
        """The open window as one partial per shard (every shard: each needs the totals); resets it."""
        out = self.partials(stream, src, shards, offsets)
        self.totals = np.zeros(self.k, dtype=np.int64)
        self.t_max = -math.inf
        self.cell_h, self.cell_c, self.cell_n = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64),
                                                 np.zeros(0, dtype=np.int64))
        self.ent_h, self.ent_last = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float64)
        self.ent_key = np.zeros(0, dtype=object)
        return out

    def partials(self, stream: str, src: Source, shards: int, offsets: tuple[int, int]) -> list[EntityPartial]:
        """The open window as one partial per shard, which stays open."""
        self.fold()
        assert self.window is not None
        shard = (self.ent_h % np.uint64(shards)).astype(np.int64)
        cell_ent = np.searchsorted(self.ent_h, self.cell_h)
        cell_shard = shard[cell_ent]
        last = np.minimum(np.ceil(self.ent_last), U32_MAX).astype(np.uint32)
        out = []
        for s in range(shards):
            ents = np.flatnonzero(shard == s)
            remap = np.full(self.ent_h.size, -1, dtype=np.int64)
            remap[ents] = np.arange(ents.size)
            cells = np.flatnonzero(cell_shard == s)
            local = remap[cell_ent[cells]]  # nondecreasing: cells are in (hash, column) order
            per_ent = np.bincount(local, minlength=ents.size)
            part_of = (np.cumsum(per_ent) - per_ent) // CELLS_PER_RECORD  # by each entity's first cell
            parts = int(part_of[-1]) + 1 if ents.size else 1
            cell_part = part_of[local]
            for j in range(parts):
                pe = np.flatnonzero(part_of == j)
                pc = np.flatnonzero(cell_part == j)
                hs = self.ent_h[ents[pe]]
                out.append(EntityPartial(stream, self.window, src[0], src[1], s, shards, offsets, self.t_max,
                                         self.totals.copy() if j == 0 else np.zeros(self.k, dtype=np.int64), hs,
                                         self.ent_key[ents[pe]].tolist(), last[ents[pe]],
                                         local[pc] - (int(pe[0]) if pe.size else 0), self.cell_c[cells[pc]],
                                         self.cell_n[cells[pc]], j, parts))
        return out

    def snapshot(self) -> dict[str, Any]:
        self.fold()
        return {"window": self.window, "watermark": self.watermark if math.isfinite(self.watermark) else None,
                "t_max": self.t_max if math.isfinite(self.t_max) else None, "totals": self.totals.tolist(),
                "cells": int(self.cell_h.size), "cell_h": pack(self.cell_h, compress=False),
                "cell_c": pack(self.cell_c.astype(np.uint16)), "cell_n": pack(self.cell_n.astype(np.uint32)),
                "ents": int(self.ent_h.size), "ent_h": pack(self.ent_h, compress=False),
                "ent_last": pack(self.ent_last), "names": self.ent_key.tolist()}

    @classmethod
    def from_snapshot(cls, k: int, d: dict[str, Any]) -> PartitionEntityCounts:
        cells, ents = int(d["cells"]), int(d["ents"])
        ent_h = unpack(d["ent_h"], np.uint64, (ents,), compressed=False)
        return cls(k, None if d["window"] is None else int(d["window"]),
                   -math.inf if d["watermark"] is None else float(d["watermark"]),
                   -math.inf if d["t_max"] is None else float(d["t_max"]),
                   np.asarray(d["totals"], dtype=np.int64),
                   unpack(d["cell_h"], np.uint64, (cells,), compressed=False),
                   unpack(d["cell_c"], np.uint16, (cells,)).astype(np.int64),
                   unpack(d["cell_n"], np.uint32, (cells,)).astype(np.int64),
                   ent_h, unpack(d["ent_last"], np.float64, (ents,)), _objects([str(x) for x in d["names"]]))


def _objects(items: list[str]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _firsts(*cols: np.ndarray) -> np.ndarray:
    """Positions where a run of equal rows of the (sorted) columns starts."""
    new = np.ones(cols[0].size, dtype=bool)
    if cols[0].size:
        new[1:] = np.logical_or.reduce([x[1:] != x[:-1] for x in cols])
    return np.flatnonzero(new)


class EntityMapper:
    """One stream's entity counts over the source partitions this replica owns."""

    def __init__(self, cfg: StreamConfig):
        ent = cfg.entities
        if ent is None or ent.window_size is None or ent.categories is None:
            raise ValueError(f"stream {cfg.name!r}: scale-out entities need time windows and declared categories")
        self.stream = cfg.name
        self.size = float(ent.window_size)
        self.labels = declared_labels(ent)
        self.vocab = {v: i for i, v in enumerate(self.labels)}
        self.parts: dict[Source, PartitionEntityCounts] = {}
        self.progress = SourceProgress(cfg.window.idle_timeout)

    def counts(self, src: Source) -> PartitionEntityCounts:
        pc = self.parts.get(src)
        if pc is None:
            pc = self.parts[src] = PartitionEntityCounts(len(self.labels))
        return pc

    def through(self, src: Source) -> int:
        w = self.counts(src).window
        return NEVER if w is None else w - 1

    def count(self, topic: str, of: int, shards: int, ts: np.ndarray, cols: EntityColumns | None,
              partitions: np.ndarray, ranges: Mapping[int, tuple[int, int]],
              now: float | None = None) -> list[EntityPartial | EntityMark]:
        """Count one batch's accepted events (``ts``, ``cols`` and ``partitions`` per event);
        returns the records to send, in order (a partition's partials, then its mark)."""
        out: list[EntityPartial | EntityMark] = []
        self.progress.polled(topic, ranges)
        if cols is None or ts.size == 0:
            return out
        key_ok = np.fromiter(map(is_not, cols.keys, repeat(None)), dtype=bool, count=len(cols.keys))
        val_ok = np.fromiter(map(is_not, cols.values, repeat(None)), dtype=bool, count=len(cols.values))
        ok = key_ok & val_ok
        for p in np.unique(partitions).tolist():
            src = (topic, int(p))
            mine = np.flatnonzero(partitions == p)
            self.progress.delivered(src, now)
            if mine.size == ts.size and ok.all():  # (one partition, every event valid: no copies)
                out.extend(self._count(src, of, shards, ts, ok, cols.hashes, cols.keys,  # type: ignore[arg-type]
                                       declared_columns(self.vocab, cols.values)))  # type: ignore[arg-type]
            else:
                sel = mine[ok[mine]]
                col = declared_columns(self.vocab, [cols.values[i] for i in sel.tolist()])  # type: ignore[misc]
                out.extend(self._count(src, of, shards, ts[mine], ok[mine], cols.hashes[sel],
                                       [cols.keys[i] for i in sel.tolist()], col))  # type: ignore[misc]
            if self.progress.back(src, self.through(src)):  # back from idleness: say so at once
                out.append(EntityMark(self.stream, topic, int(p), of, self.through(src), False))
        return out

    def _count(self, src: Source, of: int, shards: int, ts: np.ndarray, ok: np.ndarray, h: np.ndarray,
               keys: Sequence[str], col: np.ndarray) -> list[EntityPartial | EntityMark]:
        """One partition's events (``ts``: all of them; ``ok``: those with a key and a value, whose
        ``h``/``keys``/``col`` are given).  Windows follow the partition's watermark over all its
        events, so a partition whose events lack keys still closes windows (marks move on)."""
        pc = self.counts(src)
        run = np.maximum.accumulate(np.maximum(ts, pc.watermark))
        widx = np.floor(run / self.size).astype(np.int64)
        if pc.window is None:
            pc.window = int(widx[0])
        vpos = np.concatenate([[0], np.cumsum(ok)])  # events' positions among the valid ones
        out: list[EntityPartial | EntityMark] = []
        cuts = np.flatnonzero(np.diff(widx)) + 1
        bounds = [0, *cuts.tolist(), ts.size]
        for lo, hi in zip(bounds, bounds[1:]):
            w = int(widx[lo])
            if w > pc.window:
                if pc.t_max > -math.inf:  # (a window without a valid event sends nothing)
                    rng = self.progress.take_range(src)
                    out.extend(pc.take(self.stream, src, shards, rng))
                pc.window = w
            a, b = int(vpos[lo]), int(vpos[hi])
            if b > a:
                seg = ok[lo:hi]
                pc.add(h[a:b], col[a:b], ts[lo:hi][seg], keys[a:b])
        pc.watermark = max(pc.watermark, float(run[-1]))
        through = self.through(src)
        if self.progress.advance(src, through):
            out.append(EntityMark(self.stream, src[0], src[1], of, through, False))
        return out

    def tick(self, now: float, of: dict[str, int], shards: int) -> list[EntityPartial | EntityMark]:
        """Marks for partitions quiet for ``window.idle_timeout`` (see StreamMapper.tick), each
        after what the partition's open entity window holds (it stays open; if the partition
        delivers again and closes it, the whole window overwrites these partials)."""
        out: list[EntityPartial | EntityMark] = []
        for src in self.progress.quiet(list(self.parts), now):
            pc = self.counts(src)
            if pc.window is not None and pc.t_max > -math.inf:
                out.extend(pc.partials(self.stream, src, shards, self.progress.peek_range(src)))
            out.append(EntityMark(self.stream, src[0], src[1], of[src[0]], self.through(src), True))
        return out

    def forget(self, src: Source) -> None:
        self.parts.pop(src, None)
        self.progress.forget(src)

    def snapshot(self, src: Source) -> dict[str, Any]:
        return {"counts": self.counts(src).snapshot(), **self.progress.snapshot(src)}

    def restore(self, src: Source, d: dict[str, Any]) -> None:
        self.parts[src] = PartitionEntityCounts.from_snapshot(len(self.labels), d["counts"])
        self.progress.restore(src, d)


class EntityStreamMapper(StreamMapper):
    """A stream's mapper when it configures ``entities``: the series' partials and marks, then
    the entity partials and marks (``shards()``: the partials topic's partition count)."""

    def __init__(self, cfg: StreamConfig, summarizers: Sequence[Summarizer], shards: Callable[[], int]):
        super().__init__(cfg, summarizers)
        self.entities = EntityMapper(cfg)
        self.shards = shards

    def count(self, topic: str, of: int, batch: CodedBatch, partitions: np.ndarray,  # type: ignore[override]
              ranges: Mapping[int, tuple[int, int]], now: float | None = None,
              entities: EntityColumns | None = None) -> tuple[np.ndarray, list[Record]]:
        late, out = super().count(topic, of, batch, partitions, ranges, now)
        sent: list[Record] = [*out]
        sent.extend(self.entities.count(topic, of, self.shards(), batch.ts, entities, partitions, ranges, now))
        return late, sent

    def tick(self, now: float, of: dict[str, int]) -> list[Record]:  # type: ignore[override]
        return [*super().tick(now, of), *self.entities.tick(now, of, self.shards())]

    def windows(self, src: Source) -> PartitionWindows:
        self.entities.counts(src)  # (an assigned partition's entity marks go out too, idle ones included)
        return super().windows(src)

    def forget(self, src: Source) -> None:
        super().forget(src)
        self.entities.forget(src)

    def snapshot(self, src: Source) -> dict[str, Any]:
        return {**super().snapshot(src), "entities": self.entities.snapshot(src)}

    def restore(self, src: Source, d: dict[str, Any]) -> None:
        super().restore(src, d)
        if "entities" in d:
            self.entities.restore(src, d["entities"])
        else:
            self.entities.forget(src)


def make_mapper(cfg: StreamConfig, summarizers: Sequence[Summarizer], shards: Callable[[], int]) -> StreamMapper:
    """The stream's mapper: with ``entities``, one that also maps the entity counts."""
    if cfg.entities is None:
        return StreamMapper(cfg, summarizers)
    return EntityStreamMapper(cfg, summarizers, shards)


__all__ = ["EntityMapper", "EntityStreamMapper", "PartitionEntityCounts", "Partial", "make_mapper"]
