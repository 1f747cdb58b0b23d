"""The slot table of :class:`~driftmon.monitors.entities.EntityMonitor`: which row holds which entity.

Rows are slots of preallocated arrays (the monitor's ``cur``/``ref`` count matrices, ``start``,
``last``, ``names``), found through a sorted index of the keys' XXH3-64 hashes; freed slots are
reused; entities unseen for ``idle_ttl`` or past ``max_entities`` are evicted (counted by reason).
A mixin: the arrays and the config are the monitor's (see its ``__init__``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import repeat

import numpy as np

from driftmon.config import EntitiesConfig
from driftmon.monitors.base import MonitorStep
from driftmon.vocabulary import ENTITY_EVICT_CAPACITY, ENTITY_EVICT_IDLE

NAME_BYTES = 64  # keys up to this many UTF-8 bytes are stored in a fixed-width array


class SlotTable:
    """Slots, key index, names and eviction (mixed into the entity monitor)."""

    cfg: EntitiesConfig
    cur: np.ndarray
    ref: np.ndarray
    start: np.ndarray
    last: np.ndarray
    names: np.ndarray
    long_names: dict[int, str]
    index_hashes: np.ndarray
    index_slots: np.ndarray
    free: list[np.ndarray]
    high: int
    watermark: float
    _swept: float
    counters: Counter[str]

    @property
    def tracked(self) -> int:
        return int(self.index_hashes.size)

    @property
    def k(self) -> int:
        return int(self.cur.shape[1])

    def _slots(self, hashes: np.ndarray, keys: Sequence[str], ts: np.ndarray, step: MonitorStep) -> np.ndarray:
        """The slot of each event's entity (new entities get one); -1 where capacity refused it."""
        uh, first, inv = np.unique(hashes, return_index=True, return_inverse=True)
        pos = np.searchsorted(self.index_hashes, uh)
        pos_c = np.minimum(pos, max(self.index_hashes.size - 1, 0))
        found = (pos < self.index_hashes.size) & (self.index_hashes[pos_c] == uh) if self.index_hashes.size \
            else np.zeros(uh.size, dtype=bool)
        slot_u = np.full(uh.size, -1, dtype=np.int64)
        slot_u[found] = self.index_slots[pos_c[found]]
        # last seen: found entities now, so the capacity eviction below never takes them
        tmax = np.full(uh.size, 0.0)
        np.maximum.at(tmax, inv, ts)
        seen = np.minimum(np.ceil(tmax), np.iinfo(np.uint32).max).astype(np.uint32)
        if found.any():
            s = slot_u[found]
            self.last[s] = np.maximum(self.last[s], seen[found])
        new = np.flatnonzero(~found)
        if new.size:
            room = self.cfg.max_entities - self.tracked
            if new.size > room:
                self._evict_lru(new.size - room, step)
                room = self.cfg.max_entities - self.tracked
            if new.size > room:  # more new entities in one batch than the cap: the rest are not tracked
                self.counters["refused"] += int(new.size - room)
                new = new[:room]
            slots = self._allocate(new.size)
            slot_u[new] = slots
            self.last[slots] = np.maximum(seen[new], 1)
            self._set_names(slots, [keys[i] for i in first[new].tolist()])
            self._index_insert(uh[new], slots)
        return slot_u[inv]

    def _allocate(self, n: int) -> np.ndarray:
        out: list[np.ndarray] = []
        need = n
        while need and self.free:
            f = self.free.pop()
            take, rest = f[:need], f[need:]
            if rest.size:
                self.free.append(rest)
            out.append(take)
            need -= take.size
        if need:
            if self.high + need > self.cur.shape[0]:
                self._grow(self.high + need)
            out.append(np.arange(self.high, self.high + need, dtype=np.int64))
            self.high += need
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _grow(self, rows: int) -> None:
        cap = min(max(rows, int(self.cur.shape[0] * 1.5) + 1), max(rows, self.cfg.max_entities))
        extra = cap - self.cur.shape[0]
        self.cur = np.concatenate([self.cur, np.zeros((extra, self.k), dtype=np.uint16)])
        self.ref = np.concatenate([self.ref, np.zeros((extra, self.k), dtype=np.uint16)])
        self.start = np.concatenate([self.start, np.zeros(extra, dtype=np.uint32)])
        self.last = np.concatenate([self.last, np.zeros(extra, dtype=np.uint32)])
        self.names = np.concatenate([self.names, np.zeros(extra, dtype=self.names.dtype)])

    def _set_names(self, slots: np.ndarray, keys: list[str]) -> None:
        try:
            enc = list(map(str.encode, keys))  # C-level
        except UnicodeEncodeError:  # a lone surrogate
            enc = [k.encode("utf-8", "surrogatepass") for k in keys]
        lens = np.fromiter(map(len, enc), dtype=np.int64, count=len(enc))
        nul = np.fromiter(map(bytes.endswith, enc, repeat(b"\0")), dtype=bool, count=len(enc))
        short = (lens <= NAME_BYTES) & ~nul  # the rest in a dict: fixed-width bytes drop trailing NULs
        if not short.all():
            for i in np.flatnonzero(~short).tolist():
                self.long_names[int(slots[i])] = keys[i]
            enc = [enc[i] for i in np.flatnonzero(short).tolist()]
        if not enc:
            return
        width = int(lens[short].max())
        if width > self.names.dtype.itemsize:
            wider = np.zeros(self.names.shape[0], dtype=f"S{width}")
            wider[: self.high] = self.names[: self.high]
            self.names = wider
        self.names[slots[short]] = np.array(enc, dtype=self.names.dtype)

    def name_of(self, slot: int) -> str:
        long = self.long_names.get(slot)
        return long if long is not None else bytes(self.names[slot]).decode("utf-8", "surrogatepass")

    def _index_insert(self, hashes: np.ndarray, slots: np.ndarray) -> None:
        pos = np.searchsorted(self.index_hashes, hashes)  # hashes are sorted (np.unique)
        self.index_hashes = np.insert(self.index_hashes, pos, hashes)
        self.index_slots = np.insert(self.index_slots, pos, slots.astype(np.int32))

    def _evict(self, slots: np.ndarray, reason: str, step: MonitorStep) -> None:
        if slots.size == 0:
            return
        gone = np.zeros(self.cur.shape[0], dtype=bool)
        gone[slots] = True
        keep = ~gone[self.index_slots]
        self.index_hashes, self.index_slots = self.index_hashes[keep], self.index_slots[keep]
        self.cur[slots] = 0
        self.ref[slots] = 0
        self.start[slots] = 0
        self.last[slots] = 0
        self.names[slots] = b""
        for s in slots.tolist():
            self.long_names.pop(s, None)
        self.free.append(np.sort(slots)[::-1].astype(np.int64))
        self.counters[f"evicted_{reason}"] += int(slots.size)
        step.evicted[reason] += int(slots.size)

    def _evict_lru(self, n: int, step: MonitorStep) -> None:
        live = self.index_slots.astype(np.int64)
        n = max(n, min(live.size, max(1, self.cfg.max_entities // 100)))  # amortise: at least 1% at a time
        n = min(n, live.size)
        if n <= 0:
            return
        order = np.argpartition(self.last[live], n - 1)[:n] if n < live.size else np.arange(live.size)
        self._evict(live[order], ENTITY_EVICT_CAPACITY, step)

    def _evict_idle(self, step: MonitorStep) -> None:
        """Evict the entities unseen for ``idle_ttl``; the O(entities) sweep runs each time the
        watermark has moved on by an eighth of ``idle_ttl`` (so an entity goes at most 1/8 late)."""
        if not math.isfinite(self.watermark) or self.watermark - self._swept < self.cfg.idle_ttl / 8:
            return
        self._swept = self.watermark
        cutoff = self.watermark - self.cfg.idle_ttl
        if cutoff <= 0:
            return
        live = self.index_slots.astype(np.int64)
        idle = live[self.last[live] < cutoff]
        self._evict(idle, ENTITY_EVICT_IDLE, step)
