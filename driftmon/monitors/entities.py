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

Partitioning: an entity's state depends only on its own events (and on ``pi``, an
aggregate), so entity state can be split by entity key: a scale-out consumer that owns a
set of keys (Kafka partitions keyed by entity, or ``hash(key) mod N``) holds exactly
their rows, and snapshots of disjoint key sets concatenate (the population counts add).
"""

from __future__ import annotations

import base64
import math
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import is_not
from typing import Any

import numpy as np
from scipy.special import rel_entr
from scipy.stats import chi2

from driftmon.config import EntitiesConfig
from driftmon.decode.prepare import PreparedBatch
from driftmon.detect.result import BinShare, json_number, rfc3339
from driftmon.monitors.base import MonitorStep

KIND = "interest_shift"
UNIT = "nats"
OTHER = "__other__"
COUNT_MAX = np.iinfo(np.uint16).max
CHUNK = 8192  # entities compared at once (bounds the (entities x categories) float temporaries)
NAME_BYTES = 64  # keys up to this many UTF-8 bytes are stored in a fixed-width array
P_VALUE_METHOD = "g_test_williams"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EntityShift:
    """One entity whose interests moved: the ``interest_shift`` record."""

    stream: str
    entity: str
    window_start: float
    window_end: float
    divergence: float  # adjusted: shrunk KL minus its no-change expectation, nats
    shrunk_divergence: float  # D(P~ || Q~) of the shrunk distributions, nats
    shrunk_bias: float  # what was subtracted: the shrunk KL's expectation with no change, nats
    raw_divergence: float  # plug-in KL of the two windows' shares, nats (inf possible)
    p_value: float
    n_current: int
    n_reference: int
    top_bins: tuple[BinShare, ...]
    threshold: float
    max_p_value: float
    prior_strength: float
    bias: float  # (K-1)/2 (1/n + 1/m): the plug-in KL's expected value with no change, nats
    kind: str = KIND
    unit: str = UNIT

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stream": self.stream,
            "entity": self.entity,
            "window_start": rfc3339(self.window_start),
            "window_end": rfc3339(self.window_end),
            "divergence": json_number(self.divergence),
            "unit": self.unit,
            "n_current": self.n_current,
            "n_reference": self.n_reference,
            "top_bins": [b.to_dict() for b in self.top_bins],
            "metric": "kl",
            "shrunk_divergence": json_number(self.shrunk_divergence),
            "shrunk_bias": json_number(self.shrunk_bias),
            "raw_divergence": json_number(self.raw_divergence),
            "raw_bias": json_number(self.bias),
            "p_value": json_number(self.p_value),
            "p_value_method": P_VALUE_METHOD,
            "prior_strength": self.prior_strength,
            "threshold": self.threshold,
            "max_p_value": self.max_p_value,
        }

    def sink_key(self) -> bytes:
        """The Kafka key: the entity, so all of one user's records share a partition."""
        return self.entity.encode("utf-8", "surrogatepass")


@dataclass
class Comparison:
    """Vectorised result of comparing E entities' current windows with their references."""

    adjusted: np.ndarray  # (E,) nats: max(shrunk - bias, 0)
    shrunk: np.ndarray  # (E,) nats: D(P~ || Q~) of the shrunk distributions
    bias: np.ndarray  # (E,) nats: the shrunk KL's approximate expectation when nothing changed
    raw: np.ndarray  # (E,) nats, inf where q = 0 < p
    p_value: np.ndarray  # (E,)
    n: np.ndarray  # (E,) current counts
    m: np.ndarray  # (E,) reference counts
    terms: np.ndarray  # (E, K) per-category terms of the adjusted KL
    support: np.ndarray  # (E,) categories with an event in either window
    g: np.ndarray  # (E,) G statistic of the 2 x K table (before Williams' correction)
    williams: np.ndarray  # (E,) Williams' correction divisor q (>= 1)
    p_adj: np.ndarray  # (E, K) shrunk current distribution
    q_adj: np.ndarray  # (E, K) shrunk reference distribution

    @property
    def df(self) -> np.ndarray:
        return np.maximum(self.support - 1, 0)


def compare(cur: np.ndarray, ref: np.ndarray, population: np.ndarray, prior_strength: float) -> Comparison:
    """Compare each row of ``cur`` (current window counts, E x K) with the same row of ``ref``.

    ``population``: the population's category distribution (K, sums to 1), the mean of the
    Dirichlet prior; ``prior_strength``: its weight in pseudo-events.  Rows with no events in
    either window give NaN.
    """
    c = np.asarray(cur, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    n, m = c.sum(axis=1), r.sum(axis=1)
    a = float(prior_strength)
    prior = a * np.asarray(population, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_adj = (c + prior) / (n + a)[:, None]
        q_adj = (r + prior) / (m + a)[:, None]
        terms = rel_entr(p_adj, q_adj)
        shrunk = terms.sum(axis=1)
        raw = rel_entr(c / n[:, None], r / m[:, None]).sum(axis=1)
        # G-test of independence on the 2 x K table [c; r]
        t = c + r
        total = n + m
        e_c = t * (n / total)[:, None]
        e_r = t * (m / total)[:, None]
        g = 2.0 * (rel_entr(c, e_c).sum(axis=1) + rel_entr(r, e_r).sum(axis=1))
        cols = (t > 0).sum(axis=1)
        # E[D(P~||Q~)] with no change, to first order: each of the (support - 1) free shares of
        # P~ and Q~ varies by (n / (n + a))^2 theta (1 - theta) / n; with a = 0 this is the plug-in
        # bias (K-1)/2 (1/n + 1/m)
        bias = np.maximum(cols - 1, 0) / 2.0 * (n / (n + a) ** 2 + m / (m + a) ** 2)
        adjusted = np.maximum(shrunk - bias, 0.0)
        df = np.maximum(cols - 1, 0)
        inv_t = np.where(t > 0, 1.0 / np.where(t > 0, t, 1.0), 0.0).sum(axis=1)
        williams = 1.0 + (total * (1.0 / n + 1.0 / m) - 1.0) * (total * inv_t - 1.0) / (6.0 * total * np.maximum(df, 1))
        stat = np.where(williams > 0, g / williams, g)
        p = np.where(df > 0, chi2.sf(np.maximum(stat, 0.0), np.maximum(df, 1)), 1.0)
    bad = (n <= 0) | (m <= 0)
    if bad.any():
        adjusted, shrunk, raw, p = adjusted.copy(), shrunk.copy(), raw.copy(), p.copy()
        adjusted[bad] = shrunk[bad] = raw[bad] = p[bad] = np.nan
    return Comparison(adjusted, shrunk, bias, raw, p, n, m, terms, cols, g, williams, p_adj, q_adj)


def _order(r: EntityShift) -> tuple[float, str]:
    return (r.window_end, r.entity)


def _pack(a: np.ndarray, compress: bool = True) -> str:
    """Base64 of the array's bytes (zlib-compressed unless ``compress`` is False: random hashes)."""
    raw = np.ascontiguousarray(a).tobytes()
    return base64.b64encode(zlib.compress(raw, 1) if compress else raw).decode()


def _unpack(s: str, dtype: Any, shape: tuple[int, ...], compressed: bool = True) -> np.ndarray:
    raw = base64.b64decode(s)
    a = np.frombuffer(zlib.decompress(raw) if compressed else raw, dtype=dtype)
    if a.size != math.prod(shape):
        raise ValueError(f"entities snapshot: expected {math.prod(shape)} values of {np.dtype(dtype)}, got {a.size}")
    return a.reshape(shape).copy()


def _pack_counts(m: np.ndarray) -> dict[str, str]:
    """A count matrix as its non-zero cells (flat index, value): users touch few categories."""
    flat = m.reshape(-1)
    idx = np.flatnonzero(flat)
    wide = flat.size > np.iinfo(np.uint32).max
    return {"idx": _pack(idx.astype(np.uint64 if wide else np.uint32), compress=False),
            "val": _pack(flat[idx], compress=False), "nnz": str(idx.size)}


def _unpack_counts(d: dict[str, str], shape: tuple[int, int]) -> np.ndarray:
    nnz, size = int(d["nnz"]), math.prod(shape)
    wide = size > np.iinfo(np.uint32).max
    idx = _unpack(d["idx"], np.uint64 if wide else np.uint32, (nnz,), compressed=False).astype(np.int64)
    val = _unpack(d["val"], np.uint16, (nnz,), compressed=False)
    if nnz and (idx.min() < 0 or idx.max() >= size or not bool(np.all(np.diff(idx) > 0))):
        raise ValueError("entities snapshot: count cells out of range or out of order")
    out = np.zeros(size, dtype=np.uint16)
    out[idx] = val
    return out.reshape(shape)


class EntityMonitor:
    """Per-entity interest drift for one stream (see the module docstring)."""

    name = "entities"

    def __init__(self, stream: str, cfg: EntitiesConfig, capacity: int | None = None):
        self.stream = stream
        self.cfg = cfg
        # a declared vocabulary has its __other__ column from the start; a learned one adds it when
        # the (max_categories + 1)-th distinct value arrives
        self.labels: list[str] = [*cfg.categories, OTHER] if cfg.categories else []
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
        self.watermark = -math.inf
        self.window = None if cfg.window_size is None else -1  # index of the open event-time window
        self._swept = -math.inf  # watermark at the last idle sweep
        self.counters: Counter[str] = Counter()  # events, missing_key, missing_value, saturated, ...

    # -- public ----------------------------------------------------------------------------

    @property
    def tracked(self) -> int:
        return int(self.index_hashes.size)

    @property
    def prior_strength(self) -> float:
        """``prior_strength``, or by default one pseudo-event per category (columns in use)."""
        p = self.cfg.prior_strength
        return float(max(len(self.labels), 1)) if p is None else float(p)

    @property
    def k(self) -> int:
        return int(self.cur.shape[1])

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
        step.records.sort(key=_order)  # (window end, entity): not slot numbers, which depend on batching
        return step

    def flush(self) -> MonitorStep:
        """End of input: close the open event-time window for the entities with ``min_events``
        (per-entity count windows stay open: they close at their N-th event)."""
        step = MonitorStep(self.name)
        if self.window is not None and self.window >= 0:
            self._close_time_window(step)
        step.tracked = self.tracked
        step.records.sort(key=_order)
        return step

    # -- categories ------------------------------------------------------------------------

    def _columns(self, values: Sequence[str]) -> np.ndarray:
        """The column of each value; a learned vocabulary grows up to ``max_categories``,
        later values count as ``__other__`` (as does any undeclared value)."""
        if self.cfg.categories is not None:
            return np.fromiter(map(self.vocab.get, values, repeat(self.vocab[OTHER])), dtype=np.int64,
                               count=len(values))
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

    def _widen(self, m: np.ndarray, grow: int) -> np.ndarray:
        """``m`` with ``grow`` more (zero) columns; only the rows in use are copied (and touched)."""
        out = np.zeros((m.shape[0], m.shape[1] + grow), dtype=m.dtype)
        out[: self.high, : m.shape[1]] = m[: self.high]
        return out

    # -- slots -----------------------------------------------------------------------------

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
        self._evict(live[order], "capacity", step)

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
        self._evict(idle, "idle", step)

    # -- counting and windows --------------------------------------------------------------

    def _add(self, slots: np.ndarray, cols: np.ndarray, ts: np.ndarray) -> None:
        """Count events into the current windows (saturating at 65,535 per cell)."""
        k = self.k
        flat = slots * k + cols
        u, c = np.unique(flat, return_counts=True)
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
        if (slots < 0).any():
            keep = slots >= 0
            ts, slots, cols = ts[keep], slots[keep], cols[keep]
        if self.cfg.window_size is not None:
            self._count_time(ts, slots, cols, step)
        else:
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
            self._add(slots[lo:hi], cols[lo:hi], ts[lo:hi])

    def _close_time_window(self, step: MonitorStep) -> None:
        """Close the open event-time window of every entity with at least ``min_events``
        (the others keep counting into the next window)."""
        size = float(self.cfg.window_size or 0.0)
        end = (self.window + 1) * size  # type: ignore[operator]
        n = self.cur[: self.high].sum(axis=1, dtype=np.int64)  # (a view: no copy of the counts)
        closing = np.flatnonzero((self.start[: self.high] > 0) & (n >= self.cfg.min_events))
        if closing.size:
            starts = np.floor(self.start[closing] / size) * size  # the window the entity's began in
            self._close(closing, starts, np.full(closing.size, end), step)
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

    def prior(self) -> np.ndarray:
        """The population's distribution over the categories: the counts of all entity windows
        closed so far plus 1/2 per category (so a category no closed window had yet, e.g. one
        that just appeared, has some mass and the adjusted divergence stays finite)."""
        return (self.population + 0.5) / (self.population.sum() + 0.5 * self.k)

    def _close(self, slots: np.ndarray, starts: np.ndarray, ends: np.ndarray, step: MonitorStep,
               pi: np.ndarray | None = None) -> None:
        """Compare these entities' current windows with their references, report shifts,
        and make the current windows the references.  ``pi``: the prior's mean (default: the
        population of the windows closed before these).  In chunks of :data:`CHUNK` entities,
        so the float temporaries stay small with a million entities closing at once."""
        if slots.size == 0:
            return
        if pi is None:
            pi = self.prior()
        added = np.zeros(self.k)
        for lo in range(0, slots.size, CHUNK):
            sl = slice(lo, lo + CHUNK)
            added += self._close_chunk(slots[sl], starts[sl], ends[sl], step, pi)
        self.population += added
        total = self.population.sum()
        if total > 1e12:  # keep the population counts far from float precision limits
            self.population *= 1e6 / total
        self.counters["windows"] += int(slots.size)

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
        terms = cmp.terms[i]
        k = min(self.cfg.top_bins, len(self.labels))
        top = np.argsort(-np.abs(terms), kind="stable")[:k] if k else np.zeros(0, dtype=np.int64)
        n, m = float(cmp.n[i]), float(cmp.m[i])
        return EntityShift(
            stream=self.stream, entity=self.name_of(slot), window_start=start, window_end=end,
            divergence=float(cmp.adjusted[i]), shrunk_divergence=float(cmp.shrunk[i]),
            shrunk_bias=float(cmp.bias[i]), raw_divergence=float(cmp.raw[i]), p_value=float(cmp.p_value[i]),
            n_current=int(n), n_reference=int(m),
            top_bins=tuple(BinShare(self.labels[j], float(cmp.q_adj[i, j]), float(cmp.p_adj[i, j]),
                                    float(terms[j])) for j in top.tolist()),
            threshold=self.cfg.threshold, max_p_value=self.cfg.max_p_value,
            prior_strength=self.prior_strength, bias=(float(cmp.support[i]) - 1) / 2.0 * (1.0 / n + 1.0 / m),
        )

    # -- checkpoint ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        live = self.index_slots.astype(np.int64)  # in hash order
        names = self.names[live]
        return {
            "v": FORMAT_VERSION, "labels": list(self.labels), "k": self.k,
            "population": self.population.tolist(), "watermark": self.watermark, "window": self.window,
            "counters": dict(self.counters), "n": int(live.size), "name_width": int(self.names.dtype.itemsize),
            "hashes": _pack(self.index_hashes, compress=False),
            "cur": _pack_counts(self.cur[live]), "ref": _pack_counts(self.ref[live]),
            "start": _pack(self.start[live]), "last": _pack(self.last[live]), "names": _pack(names),
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
        self.cur[:n] = _unpack_counts(d["cur"], (n, k))
        self.ref[:n] = _unpack_counts(d["ref"], (n, k))
        self.start = np.zeros(cap, dtype=np.uint32)
        self.start[:n] = _unpack(d["start"], np.uint32, (n,))
        self.last = np.zeros(cap, dtype=np.uint32)
        self.last[:n] = _unpack(d["last"], np.uint32, (n,))
        self.names = np.zeros(cap, dtype=f"S{max(width, 1)}")
        self.names[:n] = _unpack(d["names"], f"S{max(width, 1)}", (n,))
        hashes = _unpack(d["hashes"], np.uint64, (n,), compressed=False)
        if n > 1 and not bool(np.all(hashes[1:] > hashes[:-1])):
            raise ValueError("entities snapshot: key hashes are not strictly increasing")
        self.index_hashes = hashes
        self.index_slots = np.arange(n, dtype=np.int32)
        self.long_names = {int(i): str(v) for i, v in d["long_names"]}
        self.population = np.asarray(d["population"], dtype=np.float64)
        if self.population.size != k:
            raise ValueError("entities snapshot: population size does not match the categories")
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
