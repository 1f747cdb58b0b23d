"""Per-entity interest drift: which users' interests just moved.

For every entity (``entities.key``, e.g. ``user_id``) the monitor counts the categories of
``entities.feature`` (e.g. ``item.category``) in the entity's **current window** and keeps
its **previous window** as the reference.  When a window closes it compares the two and
reports an ``interest_shift`` record for each entity whose interests moved.

Why not the textbook rule "KL > 0.3 nats": between two finite windows the plug-in KL is
biased upwards by about ``(K-1)/2 (1/n + 1/m)`` nats, which alone exceeds 0.3 for a user
with 60 events over 20 categories, so light users would fire constantly.  Here a shift
needs all of:

* ``n >= min_events`` in the current window and ``m >= min_events`` in the reference;
* the **adjusted divergence** ``>= threshold`` (nats).  Each window's distribution is first
  shrunk toward the population's distribution ``pi`` by a Dirichlet prior of
  ``a = prior_strength`` pseudo-events (default: one per category, ``K``), ``P~ = (c + a pi) / (n + a)`` (likewise ``Q~``
  from the reference's ``m`` counts ``r``), which makes the divergence finite and pulls a
  light user's two windows together; then the shrunk KL's expected value when nothing
  changed, ``b = (K_u - 1)/2 (n/(n+a)^2 + m/(m+a)^2)`` (``K_u``: categories with an event
  in either window; with ``a = 0`` the plug-in bias), is subtracted:
  ``divergence = max(D(P~ || Q~) - b, 0)``.  So ``threshold`` is divergence *beyond
  noise* at every activity level (with 50 events over 19 genres the shrunk KL of an
  unchanged user is about 0.24 nats, the adjusted one about 0);
* the per-entity **G-test** of the entity's two count vectors (a 2 x K contingency table,
  ``G = 2 sum O ln(O/E)``, Williams' correction, chi-square with (non-empty columns - 1)
  degrees of freedom): ``p <= max_p_value``.  This is the guard that makes the
  false-shift rate per compared window about ``max_p_value`` or less at any activity
  level (with a million users, 0.001 still means ~1,000 false shifts per window if the
  threshold did not also hold; see docs/quality.md for measured rates).

Each record carries the adjusted ``divergence``, the ``shrunk_divergence`` and the
``shrunk_bias`` subtracted from it, the ``raw_divergence`` (plug-in KL of the two windows'
shares, ``inf`` where the reference has no event in a category the current window has)
with its bias ``raw_bias``, the p-value and the categories that moved most (``top_bins``:
shrunk shares before and after, and each category's term of the shrunk KL).  The reference
then becomes the window just closed, shifted or not: a shift resets the entity's
baseline to its new distribution.

Windows: ``window: {size: 1d}`` closes every entity's window at each multiple of ``size``
of event time (the monitor's watermark is the largest event time seen); an entity with
fewer than ``min_events`` events keeps counting into the next window, so light users are
compared over longer spans instead of not at all.  ``window: {last_events: N}`` closes an
entity's window at each N-th event of that entity.

State and scale (docs/benchmarks.md): per entity a row of two dense ``uint16`` count
matrices (current, reference; ``(slots, K)``, K grows as categories appear, at most
``max_categories`` + ``__other__``), the first-event time of the current window and the
last time seen (``uint32`` whole seconds), the key (a fixed-width byte string up to 64 bytes,
longer keys in a dict), and a sorted index of the keys' XXH3-64 hashes (``uint64`` +
``int32`` slot): about ``4K + 20 + len(key)`` bytes per entity.  A count that would
pass 65,535 in one window stays at 65,535 (counted in ``saturated``).  Everything is
numpy over batches: no Python loop per event or per bin (only per shifted entity, to
build its record).  Entities unseen for ``idle_ttl`` are evicted (reason ``idle``), and
past ``max_entities`` the least recently seen ones are (reason ``capacity``).

The population ``pi``: with time windows, the categories of every event (with a key and a
value) of the windows closed so far; with ``last_events``, the counts of the entity windows
closed so far.

Partitioning (scale-out, docs/scaling.md): with time windows an entity's state depends only
on its own events' counts per window and on the population's per-window category totals,
both sums, so per-partition counts add up exactly: the mappers count each source partition
(:mod:`driftmon.scale.entity_mapper`), and the reducer of an entity shard (``hash(key) mod
shards``) feeds the merged counts of each window to :meth:`EntityMonitor.add_window`, which
closes it exactly as :meth:`EntityMonitor.feed` would have.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from operator import is_not
from typing import Any

import numpy as np

from driftmon.config import EntitiesConfig
from driftmon.decode.prepare import PreparedBatch
from driftmon.monitors.base import MonitorStep
from driftmon.monitors.entity_scoring import KIND, UNIT, Comparison, EntityShift, compare, order, shift_record
from driftmon.monitors.entity_slots import SlotTable
from driftmon.monitors.packing import pack, pack_counts, unpack, unpack_counts

__all__ = ["KIND", "OTHER", "UNIT", "Comparison", "EntityMonitor", "EntityShift", "compare"]

OTHER = "__other__"
COUNT_MAX = np.iinfo(np.uint16).max
CHUNK = 8192  # entities compared at once (bounds the (entities x categories) float temporaries)
FORMAT_VERSION = 1


def declared_labels(cfg: EntitiesConfig) -> list[str]:
    """The columns of a declared vocabulary (its categories, then ``__other__``); [] when learned."""
    return [*cfg.categories, OTHER] if cfg.categories else []


def declared_columns(vocab: dict[str, int], values: Sequence[str]) -> np.ndarray:
    """The column of each value in a declared vocabulary (undeclared values: ``__other__``)."""
    return np.fromiter(map(vocab.get, values, repeat(vocab[OTHER])), dtype=np.int64, count=len(values))


class EntityMonitor(SlotTable):
    """Per-entity interest drift for one stream (see the module docstring)."""

    name = "entities"

    def __init__(self, stream: str, cfg: EntitiesConfig, capacity: int | None = None):
        self.stream = stream
        self.cfg = cfg
        # a declared vocabulary has its __other__ column from the start; a learned one adds it when
        # the (max_categories + 1)-th distinct value arrives
        self.labels: list[str] = declared_labels(cfg)
        self.vocab: dict[str, int] = {v: i for i, v in enumerate(self.labels)}
        k = max(len(self.labels), 1)
        # Rows for max_entities up front: np.zeros maps untouched zero pages, so memory is only
        # taken as entities arrive, and nothing is ever copied to grow (a copy would touch it all).
        cap = max(1, min(capacity or cfg.max_entities, cfg.max_entities))
        self.cur = np.zeros((cap, k), dtype=np.uint16)
        self.ref = np.zeros((cap, k), dtype=np.uint16)
        self.start = np.zeros(cap, dtype=np.uint32)  # first event time of the current window, s (0: empty)
        self.last = np.zeros(cap, dtype=np.uint32)  # last event time seen, whole seconds (0: free slot)
        self.names = np.zeros(cap, dtype="S8")
        self.long_names: dict[int, str] = {}
        self.index_hashes = np.zeros(0, dtype=np.uint64)  # sorted
        self.index_slots = np.zeros(0, dtype=np.int32)
        self.free: list[np.ndarray] = []  # freed slot numbers (reused before new ones)
        self.high = 0  # slots ever used: [0, high)
        self.population = np.zeros(k, dtype=np.float64)  # decayed counts of closed windows
        self.totals = np.zeros(k, dtype=np.int64)  # time windows: category counts of the open window
        self.watermark = -math.inf
        self.window = None if cfg.window_size is None else -1  # index of the open event-time window
        self._swept = -math.inf  # watermark at the last idle sweep
        self.counters: Counter[str] = Counter()  # events, missing_key, missing_value, saturated, ...

    # -- public ----------------------------------------------------------------------------

    @property
    def prior_strength(self) -> float:
        """``prior_strength``, or by default one pseudo-event per category (columns in use)."""
        p = self.cfg.prior_strength
        return float(max(len(self.labels), 1)) if p is None else float(p)

    def feed(self, batch: PreparedBatch) -> MonitorStep:
        step = MonitorStep(self.name)
        cols = batch.entities
        if cols is None or len(batch.coded) == 0:
            step.tracked = self.tracked
            return step
        ts = batch.coded.ts
        key_ok = np.fromiter(map(is_not, cols.keys, repeat(None)), dtype=bool, count=len(cols.keys))
        val_ok = np.fromiter(map(is_not, cols.values, repeat(None)), dtype=bool, count=len(cols.values))
        self.counters["missing_key"] += int((~key_ok).sum())
        self.counters["missing_value"] += int((key_ok & ~val_ok).sum())
        ok = key_ok & val_ok
        sel = np.flatnonzero(ok)
        if sel.size:
            values: Sequence[str] = cols.values if sel.size == len(cols.values) else (  # type: ignore[assignment]
                [cols.values[i] for i in sel.tolist()])
            keys: Sequence[str] = cols.keys if sel.size == len(cols.keys) else (  # type: ignore[assignment]
                [cols.keys[i] for i in sel.tolist()])
            self._count(ts[sel], cols.hashes[sel], keys, self._columns(values), step)
        step.tracked = self.tracked
        step.records.sort(key=order)  # (window end, entity): not slot numbers, which depend on batching
        return step

    def flush(self) -> MonitorStep:
        """End of input: close the open event-time window for the entities with ``min_events``
        (per-entity count windows stay open: they close at their N-th event)."""
        step = MonitorStep(self.name)
        if self.window is not None and self.window >= 0:
            self._close_time_window(step)
        step.tracked = self.tracked
        step.records.sort(key=order)
        return step

    # -- categories ------------------------------------------------------------------------

    def _columns(self, values: Sequence[str]) -> np.ndarray:
        """The column of each value; a learned vocabulary grows up to ``max_categories``,
        later values count as ``__other__`` (as does any undeclared value)."""
        if self.cfg.categories is not None:
            return declared_columns(self.vocab, values)
        col = np.fromiter(map(self.vocab.get, values, repeat(-1)), dtype=np.int64, count=len(values))
        unknown = np.flatnonzero(col < 0)
        if unknown.size:
            for v in dict.fromkeys(values[i] for i in unknown.tolist()):  # first appearance order
                if len(self.labels) < self.cfg.max_categories:
                    self._add_label(v)
                else:
                    if OTHER not in self.vocab:
                        self._add_label(OTHER)
                    self.vocab[v] = self.vocab[OTHER]
            col = np.fromiter(map(self.vocab.get, values, repeat(-1)), dtype=np.int64, count=len(values))
            if len(self.vocab) > len(self.labels) + 100_000:  # forget the values known to be __other__
                self.vocab = {v: i for i, v in enumerate(self.labels)}
        return col

    def _add_label(self, label: str) -> None:
        self.vocab[label] = len(self.labels)
        self.labels.append(label)
        grow = len(self.labels) - self.k
        if grow > 0:
            self.cur = self._widen(self.cur, grow)
            self.ref = self._widen(self.ref, grow)
            self.population = np.pad(self.population, (0, grow))
            self.totals = np.pad(self.totals, (0, grow))

    def _widen(self, m: np.ndarray, grow: int) -> np.ndarray:
        """``m`` with ``grow`` more (zero) columns; only the rows in use are copied (and touched)."""
        out = np.zeros((m.shape[0], m.shape[1] + grow), dtype=m.dtype)
        out[: self.high, : m.shape[1]] = m[: self.high]
        return out

    # -- counting and windows --------------------------------------------------------------

    def _add(self, slots: np.ndarray, cols: np.ndarray, ts: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Count events (``weights``: that many events each) into the current windows
        (saturating at 65,535 per cell)."""
        k = self.k
        flat = slots * k + cols
        if weights is None:
            u, c = np.unique(flat, return_counts=True)
        else:
            u, inv = np.unique(flat, return_inverse=True)
            c = np.bincount(inv, weights=weights, minlength=u.size).astype(np.int64)
        view = self.cur.reshape(-1)
        total = view[u].astype(np.int64) + c
        over = total > COUNT_MAX
        if over.any():
            self.counters["saturated"] += int((total[over] - COUNT_MAX).sum())
            total = np.minimum(total, COUNT_MAX)
        view[u] = total
        us, first = np.unique(slots, return_index=True)
        empty = self.start[us] == 0
        self.start[us[empty]] = np.clip(np.floor(ts[first[empty]]), 1, np.iinfo(np.uint32).max)

    def _count(self, ts: np.ndarray, hashes: np.ndarray, keys: Sequence[str], cols: np.ndarray,
               step: MonitorStep) -> None:
        self.counters["events"] += int(ts.size)
        slots = self._slots(hashes, keys, ts, step)
        if self.cfg.window_size is not None:  # (refused entities' events still count in the population)
            self._count_time(ts, slots, cols, step)
        else:
            if (slots < 0).any():
                keep = slots >= 0
                ts, slots, cols = ts[keep], slots[keep], cols[keep]
            self._count_events(ts, slots, cols, step)
        self.watermark = max(self.watermark, float(ts.max())) if ts.size else self.watermark
        self._evict_idle(step)

    def _count_time(self, ts: np.ndarray, slots: np.ndarray, cols: np.ndarray, step: MonitorStep) -> None:
        size = float(self.cfg.window_size or 0.0)
        run = np.maximum.accumulate(np.maximum(ts, self.watermark))
        widx = np.floor(run / size).astype(np.int64)
        if self.window is None or self.window < 0:
            self.window = int(widx[0])
        cuts = np.flatnonzero(np.diff(widx)) + 1
        bounds = [0, *cuts.tolist(), ts.size]
        for lo, hi in zip(bounds, bounds[1:]):
            w = int(widx[lo])
            if w > self.window:
                self._close_time_window(step)
                self.window = w
            self.totals += np.bincount(cols[lo:hi], minlength=self.k)
            ok = slots[lo:hi] >= 0
            self._add(slots[lo:hi][ok], cols[lo:hi][ok], ts[lo:hi][ok])

    def _close_time_window(self, step: MonitorStep) -> None:
        """Close the open event-time window of every entity with at least ``min_events``
        (the others keep counting into the next window)."""
        size = float(self.cfg.window_size or 0.0)
        end = (self.window + 1) * size  # type: ignore[operator]
        n = self.cur[: self.high].sum(axis=1, dtype=np.int64)  # (a view: no copy of the counts)
        closing = np.flatnonzero((self.start[: self.high] > 0) & (n >= self.cfg.min_events))
        if closing.size:
            starts = np.floor(self.start[closing] / size) * size  # the window the entity's began in
            self._close(closing, starts, np.full(closing.size, end), step, self.prior(), population=False)
        self._add_population(self.totals.astype(np.float64))
        self.totals = np.zeros(self.k, dtype=np.int64)
        step.windows_closed += 1

    def _count_events(self, ts: np.ndarray, slots: np.ndarray, cols: np.ndarray, step: MonitorStep) -> None:
        n_win = int(self.cfg.last_events or 0)
        order = np.argsort(slots, kind="stable")
        s_sorted = slots[order]
        us, first, counts = np.unique(s_sorted, return_index=True, return_counts=True)
        group = np.repeat(np.arange(us.size), counts)
        rank = np.arange(s_sorted.size) - first[group]
        before = self.cur[us].sum(axis=1, dtype=np.int64)
        pos = before[group] + rank  # position of the event in its entity's run of windows
        rnd = pos // n_win
        pi = self.prior()  # as of the start of the batch: the rounds below are not in time order
        for r in range(int(rnd.max()) + 1 if rnd.size else 0):
            mine = rnd == r
            idx = order[mine]
            self._add(slots[idx], cols[idx], ts[idx])
            done = mine & (pos % n_win == n_win - 1)
            if done.any():
                closing = s_sorted[done]
                ends = ts[order[done]]
                self._close(closing, self.start[closing].astype(np.float64), ends, step, pi)
                step.windows_closed += 1

    def add_window(self, window: int, hashes: np.ndarray, keys: Sequence[str], last: np.ndarray,
                   rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, totals: np.ndarray,
                   watermark: float) -> MonitorStep:
        """Time windows, merged elsewhere (the scale-out reducer of an entity shard): count
        event-time window ``window``'s per-entity category counts and close it, as :meth:`feed`
        does when its watermark passes the window's end.  ``hashes``/``keys``/``last`` per
        entity (unique hashes; ``last``: its last event time in the window, seconds);
        ``rows``/``cols``/``counts``: the sparse (entity, category column, count) cells;
        ``totals``: the window's category counts over every entity (the population's, of all
        shards); ``watermark``: the largest event time of the window (for ``idle_ttl``).
        Windows come in increasing order, each once."""
        step = MonitorStep(self.name)
        size = float(self.cfg.window_size or 0.0)
        if self.window is not None and self.window >= 0 and window <= self.window:
            raise ValueError(f"window {window} after window {self.window}: windows come in order, once")
        self.window = window
        self.counters["events"] += int(np.asarray(totals).sum())
        if hashes.size:
            slots = self._slots(hashes, keys, np.asarray(last, dtype=np.float64), step)[rows]
            ok = slots >= 0
            self._add(slots[ok], cols[ok], np.full(int(ok.sum()), window * size), counts[ok])
        self.totals += np.asarray(totals, dtype=np.int64)
        self._close_time_window(step)
        if math.isfinite(watermark):
            self.watermark = max(self.watermark, watermark)
        self._evict_idle(step)
        step.tracked = self.tracked
        step.records.sort(key=order)
        return step

    def prior(self) -> np.ndarray:
        """The population's distribution over the categories: the counts of all events of the
        windows closed so far (per-entity count windows: of the entity windows closed so far)
        plus 1/2 per category (so a category no closed window had yet, e.g. one
        that just appeared, has some mass and the adjusted divergence stays finite)."""
        return (self.population + 0.5) / (self.population.sum() + 0.5 * self.k)

    def _close(self, slots: np.ndarray, starts: np.ndarray, ends: np.ndarray, step: MonitorStep,
               pi: np.ndarray | None = None, population: bool = True) -> None:
        """Compare these entities' current windows with their references, report shifts,
        and make the current windows the references.  ``pi``: the prior's mean (default: the
        population of the windows closed before these); ``population``: add these windows'
        counts to the population (per-entity count windows; time windows add every event of
        the window instead, :meth:`_close_time_window`).  In chunks of :data:`CHUNK` entities,
        so the float temporaries stay small with a million entities closing at once."""
        if slots.size == 0:
            return
        if pi is None:
            pi = self.prior()
        added = np.zeros(self.k)
        for lo in range(0, slots.size, CHUNK):
            sl = slice(lo, lo + CHUNK)
            added += self._close_chunk(slots[sl], starts[sl], ends[sl], step, pi)
        if population:
            self._add_population(added)
        self.counters["windows"] += int(slots.size)

    def _add_population(self, added: np.ndarray) -> None:
        self.population += added
        total = self.population.sum()
        if total > 1e12:  # keep the population counts far from float precision limits
            self.population *= 1e6 / total

    def _close_chunk(self, slots: np.ndarray, starts: np.ndarray, ends: np.ndarray, step: MonitorStep,
                     pi: np.ndarray) -> np.ndarray:
        cur = self.cur[slots]
        ref = self.ref[slots]
        has_ref = ref.sum(axis=1, dtype=np.int64) >= self.cfg.min_events
        if has_ref.any():
            rows = np.flatnonzero(has_ref)
            cmp = compare(cur[rows], ref[rows], pi, self.prior_strength)
            shifted = (cmp.n >= self.cfg.min_events) & (cmp.adjusted >= self.cfg.threshold) & \
                (cmp.p_value <= self.cfg.max_p_value)
            step.compared += int(rows.size)
            self.counters["compared"] += int(rows.size)
            step.divergences = np.concatenate([step.divergences, cmp.adjusted])
            hits = np.flatnonzero(shifted)
            step.shifts += int(hits.size)
            for i in hits.tolist():
                step.records.append(self._record(int(slots[rows[i]]), float(starts[rows[i]]),
                                                 float(ends[rows[i]]), cmp, i))
        self.ref[slots] = cur
        self.cur[slots] = 0
        self.start[slots] = 0
        return cur.sum(axis=0, dtype=np.float64)

    def _record(self, slot: int, start: float, end: float, cmp: Comparison, i: int) -> EntityShift:
        self.counters["shifts"] += 1
        return shift_record(self.stream, self.name_of(slot), start, end, cmp, i, self.labels, self.cfg,
                            self.prior_strength)

    # -- checkpoint ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        live = self.index_slots.astype(np.int64)  # in hash order
        names = self.names[live]
        return {
            "v": FORMAT_VERSION, "labels": list(self.labels), "k": self.k,
            "population": self.population.tolist(), "totals": self.totals.tolist(), "watermark": self.watermark, "window": self.window,
            "counters": dict(self.counters), "n": int(live.size), "name_width": int(self.names.dtype.itemsize),
            "hashes": pack(self.index_hashes, compress=False),
            "cur": pack_counts(self.cur[live]), "ref": pack_counts(self.ref[live]),
            "start": pack(self.start[live]), "last": pack(self.last[live]), "names": pack(names),
            "long_names": [[i, self.long_names[int(s)]] for i, s in enumerate(live.tolist())
                           if int(s) in self.long_names],
        }

    def restore(self, d: dict[str, Any]) -> None:
        if d.get("v") != FORMAT_VERSION:
            raise ValueError(f"entities snapshot version {d.get('v')!r}, expected {FORMAT_VERSION}")
        n, k, width = int(d["n"]), int(d["k"]), int(d["name_width"])
        labels = [str(x) for x in d["labels"]]
        if len(labels) > k or (self.cfg.categories is not None and labels[: len(self.cfg.categories)]
                               != list(self.cfg.categories)):
            raise ValueError("entities snapshot: categories do not match the configured ones")
        self.labels = labels
        self.vocab = {v: i for i, v in enumerate(labels)}
        cap = max(n, self.cfg.max_entities, 1)
        self.cur = np.zeros((cap, k), dtype=np.uint16)
        self.ref = np.zeros((cap, k), dtype=np.uint16)
        self.cur[:n] = unpack_counts(d["cur"], (n, k))
        self.ref[:n] = unpack_counts(d["ref"], (n, k))
        self.start = np.zeros(cap, dtype=np.uint32)
        self.start[:n] = unpack(d["start"], np.uint32, (n,))
        self.last = np.zeros(cap, dtype=np.uint32)
        self.last[:n] = unpack(d["last"], np.uint32, (n,))
        self.names = np.zeros(cap, dtype=f"S{max(width, 1)}")
        self.names[:n] = unpack(d["names"], f"S{max(width, 1)}", (n,))
        hashes = unpack(d["hashes"], np.uint64, (n,), compressed=False)
        if n > 1 and not bool(np.all(hashes[1:] > hashes[:-1])):
            raise ValueError("entities snapshot: key hashes are not strictly increasing")
        self.index_hashes = hashes
        self.index_slots = np.arange(n, dtype=np.int32)
        self.long_names = {int(i): str(v) for i, v in d["long_names"]}
        self.population = np.asarray(d["population"], dtype=np.float64)
        if self.population.size != k:
            raise ValueError("entities snapshot: population size does not match the categories")
        self.totals = np.asarray(d.get("totals", [0] * k), dtype=np.int64)
        if self.totals.size != k:
            raise ValueError("entities snapshot: window totals do not match the categories")
        self.watermark = float(d["watermark"])
        self.window = None if d["window"] is None else int(d["window"])
        self.counters = Counter({str(a): int(b) for a, b in d["counters"].items()})
        self.free = []
        self.high = n
        self._swept = -math.inf

    # -- introspection (tests, benchmarks) ---------------------------------------------------

    def state_bytes(self) -> int:
        """Bytes of state in use: the rows of the slots used so far (the rest of the preallocated rows
        are untouched zero pages), the index, and ~60 bytes + the key per key in the long-key dict."""
        row = 2 * self.k * self.cur.itemsize + self.start.itemsize + self.last.itemsize + self.names.itemsize
        index = self.index_hashes.nbytes + self.index_slots.nbytes
        return int(row * self.high + index) + sum(len(v) + 60 for v in self.long_names.values())
