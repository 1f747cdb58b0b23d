"""Per-window cluster statistics (``streams[].cluster_by``): a mergeable summary.

Events of one user (or session) are not independent: a heavy user with his
own taste moves a window's histogram by far more than the G-test's
independent-events model allows.  To correct the p-value for that
(:func:`driftmon.detect.significance.design_effect`, a first-order Rao-Scott
correction), each window keeps, beside each feature's summary, a
:class:`ClusterTable`: per cluster and per *fine key* (the feature's summary
code: value hash, bucket code or declared bin id) how many events the window
holds.  Fine keys are mapped to the comparison bins only when two windows are
compared (:meth:`ClusteredSummarizer.cluster_stats`), exactly like the
feature summaries themselves.

Bounded memory, still a commutative monoid:

* **exact part**: the (cluster, key) pairs of the clusters with the smallest
  XXH3-64 cluster hashes, in hash order, as long as their distinct pairs number
  at most ``cap``.  ``limit`` is the hash of the first cluster left out (2^64
  when none is).  A cluster left out of a part is left out of any union (its
  smaller-hashed clusters have at least as many pairs there), so the exact part
  of ``a + b`` is exactly the exact part of the union, whatever the order.
* **tail sketch**: every cluster at or past ``limit`` is added to an AMS /
  count-sketch of its size ``m_i`` (``depth`` rows of ``width`` signed
  counters, bucket and sign from a per-row mix of the cluster hash).  The
  sketch is linear, so partial sketches add; ``sum_w C[r, w]^2`` is an unbiased
  estimate of ``sum_i m_i^2`` over the sketched clusters (relative standard
  error ``sqrt(2 / width)`` per row, the median of the rows is reported).
* events without the cluster field count as clusters of one (``singles``);
  ``n`` counts every event (missing feature values included).

The exact clusters are a hash-chosen, hence content-independent, sample of
all clusters: how heterogeneous clusters are (relative to their size) is
estimated from them, and how large they are from the exact part plus the
sketch (docs/quality.md, "Clustered traffic").

:class:`ClusteredSummary` pairs a feature's summary with its table and
:class:`ClusteredSummarizer` wraps the feature's summarizer, so windows,
checkpoints and detectors carry the table without knowing about it.

>>> from driftmon.summaries.fixed import FixedSummarizer
>>> from driftmon.summaries.bins import CategoricalSpec
>>> s = ClusteredSummarizer(FixedSummarizer(CategoricalSpec(("a", "b"))), cap=100)
>>> codes = s.codes(["u1", "u1", "u2", None], ["a", "a", "b", "b"])
>>> t = s.summarize(codes)
>>> t.total, t.clusters.n, t.clusters.singles, t.clusters.pairs
(4, 4, 1, 2)
>>> t + s.empty() == t
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.summaries.base import FORMAT_VERSION, add_all, check_version, pack, unpack
from driftmon.summaries.categorical import CategoricalCodes, CategoricalSummarizer
from driftmon.summaries.fixed import FixedSummarizer
from driftmon.summaries.hashing import stable_hash
from driftmon.summaries.numeric import MISSING_CODE, NumericCodes, NumericSummarizer

DEFAULT_CAP = 20_000  # distinct (cluster, fine key) pairs kept exactly per window and feature
SKETCH_DEPTH = 5
SKETCH_WIDTH = 512
NO_LIMIT = 1 << 64  # limit when no cluster was left out
MISSING_KEY = int(np.iinfo(np.int64).min)  # the fine key of a missing feature value
_SEEDS = np.array([0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93,
                   0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3, 0x589965CC75374CC3],
                  dtype=np.uint64)


def _mix(h: np.ndarray, seed: np.uint64) -> np.ndarray:
    """splitmix64 finalizer of ``h ^ seed`` (uint64, wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = h ^ seed
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sketch_add(sketch: np.ndarray, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``sketch`` plus ``sizes[j]`` events of cluster ``clusters[j]`` (uint64 hashes; a cluster
    may repeat: the sketch is linear), row by row."""
    out = sketch.copy()
    depth, width = out.shape
    for r in range(depth):
        z = _mix(clusters, _SEEDS[r])
        bucket = (z % np.uint64(width)).astype(np.int64)
        sign = np.where((z >> np.uint64(63)) == 1, -1, 1).astype(np.int64)
        out[r] += np.bincount(bucket, weights=sign * sizes, minlength=width).astype(np.int64)
    return out


def sketch_square(sketch: np.ndarray | None) -> float:
    """Estimate of ``sum_i m_i^2`` over the sketched clusters (median over rows)."""
    if sketch is None:
        return 0.0
    return float(np.median((sketch.astype(np.float64) ** 2).sum(axis=1)))


@dataclass(frozen=True, eq=False)
class ClusterTable:
    """Per-cluster counts of one feature in one window (see the module doc)."""

    cap: int
    cluster: np.ndarray  # uint64 cluster hash per pair; pairs sorted by (cluster, key), distinct
    key: np.ndarray  # int64 fine key per pair
    count: np.ndarray  # int64 (> 0) per pair
    limit: int  # hash of the first cluster left out of the exact part (NO_LIMIT: none)
    sketch: np.ndarray | None  # int64 (depth, width) count-sketch of the left-out clusters' sizes
    singles: int  # events without a cluster value
    n: int  # every event
    kind: str = "clusters"
    raw: bool = False  # True: one count per event, not yet sorted, added up or capped (see ClusteredSummary)

    @property
    def pairs(self) -> int:
        return int(self.key.size)

    @property
    def total(self) -> int:
        return self.n

    def __add__(self, other: ClusterTable) -> ClusterTable:
        return add_tables([self, other])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClusterTable) and (self.raw or other.raw):
            return add_tables([self]) == add_tables([other])
        return (isinstance(other, ClusterTable) and (self.cap, self.limit, self.singles, self.n)
                == (other.cap, other.limit, other.singles, other.n)
                and np.array_equal(self.cluster, other.cluster) and np.array_equal(self.key, other.key)
                and np.array_equal(self.count, other.count)
                and _same_sketch(self.sketch, other.sketch))

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        if self.raw:
            return add_tables([self]).to_dict()
        return {"kind": self.kind, "v": FORMAT_VERSION, "cap": self.cap, "cluster": pack(self.cluster, "u8"),
                "key": pack(self.key, "i8"), "count": pack(self.count, "i8"), "limit": str(self.limit),
                "sketch": None if self.sketch is None else pack(self.sketch.reshape(-1), "i8"),
                "depth": SKETCH_DEPTH, "width": SKETCH_WIDTH, "singles": self.singles, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterTable:
        check_version(d, "clusters")
        cluster, key, count = unpack(d["cluster"], "u8"), unpack(d["key"], "i8"), unpack(d["count"], "i8")
        cap, limit, singles, n = int(d["cap"]), int(d["limit"]), int(d["singles"]), int(d["n"])
        sketch = None
        if d["sketch"] is not None:
            depth, width = int(d["depth"]), int(d["width"])
            sketch = unpack(d["sketch"], "i8")
            if (depth, width) != (SKETCH_DEPTH, SKETCH_WIDTH) or sketch.size != depth * width:
                raise ValueError("inconsistent cluster table: sketch shape")
            sketch = sketch.reshape(depth, width)
        order_ok = cluster.size < 2 or bool(np.all((cluster[1:] > cluster[:-1])
                                                    | ((cluster[1:] == cluster[:-1]) & (key[1:] > key[:-1]))))
        if not (cluster.size == key.size == count.size <= cap and order_ok and np.all(count > 0)
                and 0 <= limit <= NO_LIMIT and (sketch is None) == (limit == NO_LIMIT)
                and (cluster.size == 0 or int(cluster[-1]) < limit)
                and 0 <= singles <= n and int(count.sum()) + singles <= n):
            raise ValueError("inconsistent cluster table")
        return cls(cap, cluster, key, count, limit, sketch, singles, n)


def add_tables(tables: Sequence[ClusterTable]) -> ClusterTable:
    """The sum of several tables with one normalization (the n-ary ``+``)."""
    if len(tables) == 1 and not tables[0].raw:
        return tables[0]
    cap = tables[0].cap
    if any(t.cap != cap for t in tables):
        raise ValueError("cannot add cluster tables with different caps")
    sketches = [t.sketch for t in tables if t.sketch is not None]
    sketch = None if not sketches else sketches[0] if len(sketches) == 1 else np.sum(sketches, axis=0)
    return _normalized(cap, np.concatenate([t.cluster for t in tables]), np.concatenate([t.key for t in tables]),
                       np.concatenate([t.count for t in tables]), min(t.limit for t in tables), sketch,
                       sum(t.singles for t in tables), sum(t.n for t in tables))


def _same_sketch(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is None and b is None or a is not None and b is not None and np.array_equal(a, b)


def _normalized(cap: int, cluster: np.ndarray, key: np.ndarray, count: np.ndarray, limit: int,
                sketch: np.ndarray | None, singles: int, n: int) -> ClusterTable:
    """Aggregate equal pairs, then move every cluster at or past the limit (the given
    one, or the first whose pairs overflow ``cap``) from the exact part to the sketch."""
    out_c: list[np.ndarray] = []
    out_n: list[np.ndarray] = []
    if limit < NO_LIMIT and cluster.size:  # past the limit already: straight to the sketch, unsorted
        below = cluster < np.uint64(limit)
        if not below.all():
            out_c.append(cluster[~below])
            out_n.append(count[~below])
            cluster, key, count = cluster[below], key[below], count[below]
    if cluster.size:
        # sort by (cluster, key) and add up equal pairs: ranks of each, one int64 per pair
        # (three quicksorts; np.lexsort on two 64-bit keys is several times slower)
        uc, ci = np.unique(cluster, return_inverse=True)
        uk, ki = np.unique(key, return_inverse=True)
        pair, inv = np.unique(ci.reshape(-1) * np.int64(uk.size) + ki.reshape(-1), return_inverse=True)
        if pair.size != cluster.size:
            count = np.bincount(inv.reshape(-1), weights=count, minlength=pair.size).astype(np.int64)
        else:
            placed = np.empty_like(count)
            placed[inv.reshape(-1)] = count
            count = placed
        cluster, key = uc[pair // uk.size], uk[pair % uk.size]
    kept = cluster.size
    if kept > cap:
        limit = int(cluster[cap])
        kept = int(np.searchsorted(cluster, cluster[cap], side="left"))
        out_c.append(cluster[kept:])
        out_n.append(count[kept:])
        cluster, key, count = cluster[:kept], key[:kept], count[:kept]
    if out_c:
        base = np.zeros((SKETCH_DEPTH, SKETCH_WIDTH), dtype=np.int64) if sketch is None else sketch
        sketch = sketch_add(base, np.concatenate(out_c), np.concatenate(out_n))
    if limit < NO_LIMIT and sketch is None:
        sketch = np.zeros((SKETCH_DEPTH, SKETCH_WIDTH), dtype=np.int64)
    return ClusterTable(cap, cluster, key, count.astype(np.int64), limit, sketch, singles, n)


def cluster_codes(values: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(hash, present)`` per event: the XXH3-64 of each cluster value (0 where absent)
    and whether it is present.  One hash per distinct value, C-level passes."""
    distinct = list(dict.fromkeys(values))
    pos = {v: i for i, v in enumerate(distinct)}
    present = np.ones(len(distinct), dtype=bool)
    table = np.zeros(len(distinct), dtype=np.uint64)
    named = [i for i, v in enumerate(distinct) if v is not None]
    if len(named) != len(distinct):
        present[pos[None]] = False
    table[named] = stable_hash([distinct[i] for i in named])  # type: ignore[misc]
    inverse = np.fromiter(map(pos.__getitem__, values), dtype=np.int64, count=len(values))
    return table[inverse], present[inverse]


def fine_keys(summarizer: Any, codes: Any) -> np.ndarray:
    """The per-event fine key (int64) of a feature's codes: what the cluster table counts."""
    if isinstance(codes, CategoricalCodes):
        return np.where(codes.missing, MISSING_KEY, codes.hashes.view(np.int64))
    if isinstance(codes, NumericCodes):
        return codes.codes  # MISSING_CODE == MISSING_KEY for NaN
    return np.asarray(codes, dtype=np.int64)  # declared bins: the bin index


def bin_index(summarizer: Any, summaries: Sequence[Any], labels: tuple[str, ...], keys: np.ndarray) -> np.ndarray:
    """The comparison bin (of ``summarizer.bins(summaries)``, with ``labels``) of each fine key."""
    k = len(labels)
    if isinstance(summarizer, FixedSummarizer):
        return keys.astype(np.int64)
    if isinstance(summarizer, CategoricalSummarizer):
        top = stable_hash(list(labels[:-2])).view(np.int64)  # the top values' hashes, in bin order
        order = np.argsort(top, kind="stable")
        sorted_top = top[order]
        at = np.minimum(np.searchsorted(sorted_top, keys), max(sorted_top.size - 1, 0))
        hit = (sorted_top[at] == keys) if sorted_top.size else np.zeros(keys.size, dtype=bool)
        out = np.where(hit, order[at] if sorted_top.size else 0, k - 2)
        return np.where(keys == MISSING_KEY, k - 1, out).astype(np.int64)
    if isinstance(summarizer, NumericSummarizer):
        pooled = summaries[0]
        for s in summaries[1:]:
            pooled = pooled + s
        if pooled.keys.size == 0:
            return np.zeros(keys.size, dtype=np.int64)
        hi_codes = pooled.keys[summarizer._bin_ends(pooled)]
        out = np.minimum(np.searchsorted(hi_codes, keys, side="left"), hi_codes.size - 1)
        return np.where(keys == MISSING_CODE, k - 1, out).astype(np.int64)
    raise TypeError(f"no cluster statistics for {type(summarizer).__name__}")


@dataclass(frozen=True)
class ClusterStats:
    """One window's cluster table in the comparison bins (what the design effect needs).

    ``cluster``/``bin``/``count``: the exact part, one row per (cluster, bin) with
    clusters numbered 0..C-1; ``tail_sq``: the sketch's estimate of ``sum m_i^2``
    over the clusters left out; ``singles``: events without a cluster; ``n``: all events.
    """

    cluster: np.ndarray
    bin: np.ndarray
    count: np.ndarray
    tail_sq: float
    singles: int
    n: int


class ClusteredSummary:
    """A feature's summary and its :class:`ClusterTable`; adds both, delegates the rest.

    Added tables (and a batch's raw per-event table) are kept as parts and summed (one
    sort) when read, or as soon as the parts hold more than ``2 cap`` pairs, so a window that gains a batch at a time does
    not re-sort its table for every batch; the sum does not depend on when that happens."""

    def __init__(self, inner: Any, clusters: ClusterTable | Sequence[ClusterTable]):
        self.inner = inner
        self._parts: tuple[ClusterTable, ...] = (clusters,) if isinstance(clusters, ClusterTable) else tuple(clusters)

    @property
    def clusters(self) -> ClusterTable:
        if len(self._parts) > 1 or self._parts[0].raw:
            self._parts = (add_tables(self._parts),)
        return self._parts[0]

    def __getattr__(self, name: str) -> Any:  # mean, variance, count, ... of the feature's summary
        if name in ("inner", "_parts") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def kind(self) -> str:  # the feature's (metrics such as gaussian_kl check it); to_dict says "clustered"
        return str(self.inner.kind)

    @property
    def total(self) -> int:
        return int(self.inner.total)

    def __add__(self, other: ClusteredSummary) -> ClusteredSummary:
        return _clustered(self.inner + other.inner, (*self._parts, *other._parts))

    @classmethod
    def add_all(cls, items: Sequence[ClusteredSummary]) -> ClusteredSummary:
        """The sum of many (see summaries.base.add_all)."""
        return _clustered(add_all([s.inner for s in items]), tuple(t for s in items for t in s._parts))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClusteredSummary) and self.inner == other.inner and self.clusters == other.clusters

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "clustered", "v": FORMAT_VERSION, "summary": self.inner.to_dict(),
                "clusters": self.clusters.to_dict()}


def _clustered(inner: Any, parts: tuple[ClusterTable, ...]) -> ClusteredSummary:
    out = ClusteredSummary(inner, parts)
    if sum(t.pairs for t in parts) > 2 * parts[0].cap:  # memory: at most ~2 cap pairs
        out._parts = (add_tables(parts),)
    return out


@dataclass(frozen=True)
class ClusteredCodes:
    cluster: np.ndarray  # uint64 per event
    present: np.ndarray  # bool per event: has a cluster value
    inner: Any  # the feature's codes


class ClusteredSummarizer:
    """Wraps a feature's summarizer: summaries carry a :class:`ClusterTable` too."""

    kind = "clustered"

    def __init__(self, inner: Any, cap: int = DEFAULT_CAP):
        if cap < 1:
            raise ValueError(f"cluster cap must be >= 1, got {cap}")
        self.inner, self.cap = inner, cap

    def __getattr__(self, name: str) -> Any:  # top_k, spec, num_bins, ... of the feature's summarizer
        if name in ("inner", "cap") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def codes(self, clusters: Sequence[str | None], values: Sequence[Any]) -> ClusteredCodes:
        h, present = cluster_codes(clusters)
        return self.wrap(h, present, self.inner.codes(values))

    def wrap(self, cluster: np.ndarray, present: np.ndarray, inner_codes: Any) -> ClusteredCodes:
        return ClusteredCodes(cluster, present, inner_codes)

    def take(self, codes: ClusteredCodes, sel: np.ndarray) -> ClusteredCodes:
        return ClusteredCodes(codes.cluster[sel], codes.present[sel], self.inner.take(codes.inner, sel))

    def summarize(self, codes: ClusteredCodes) -> ClusteredSummary:
        keys = fine_keys(self.inner, codes.inner)
        p = codes.present
        n = int(p.size)
        k = int(p.sum())
        raw = ClusterTable(self.cap, codes.cluster[p], keys[p], np.ones(k, dtype=np.int64), NO_LIMIT, None, n - k, n,
                           raw=True)  # sorted and capped when read or when the parts grow past the cap
        return ClusteredSummary(self.inner.summarize(codes.inner), raw if k <= self.cap else add_tables([raw]))

    def summarize_groups(self, codes: ClusteredCodes, sel: np.ndarray, groups: np.ndarray,
                         n_groups: int) -> list[ClusteredSummary]:
        """One summary per group (segment): the feature's summaries in one vectorized pass, the
        cluster tables per group (a loop over segments, not events)."""
        inner = self.inner.summarize_groups(codes.inner, sel, groups, n_groups)
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
        out = []
        for g in range(n_groups):
            part = self.summarize(self.take(codes, sel[order[bounds[g]:bounds[g + 1]]]))
            out.append(ClusteredSummary(inner[g], part._parts))
        return out

    def empty(self) -> ClusteredSummary:
        z = np.zeros(0, dtype=np.int64)
        return ClusteredSummary(self.inner.empty(),
                                ClusterTable(self.cap, np.zeros(0, np.uint64), z, z, NO_LIMIT, None, 0, 0))

    def from_dict(self, d: dict[str, Any]) -> ClusteredSummary:
        check_version(d, "clustered")
        inner, table = self.inner.from_dict(d["summary"]), ClusterTable.from_dict(d["clusters"])
        if table.cap != self.cap or table.n != inner.total:
            raise ValueError("cluster table does not match the stream's cluster cap or the feature's summary")
        return ClusteredSummary(inner, table)

    def bins(self, summaries: Sequence[ClusteredSummary]) -> tuple[tuple[str, ...], list[np.ndarray]]:
        return self.inner.bins([s.inner for s in summaries])

    def support(self, summaries: Sequence[ClusteredSummary]) -> Any:
        return self.inner.support([s.inner for s in summaries])

    def cluster_stats(self, summaries: Sequence[ClusteredSummary]) -> list[ClusterStats]:
        """Each summary's cluster table in the comparison bins of ``bins(summaries)``."""
        inner = [s.inner for s in summaries]
        labels, _ = self.inner.bins(inner)
        out = []
        for s in summaries:
            t = s.clusters
            b = bin_index(self.inner, inner, labels, t.key)
            starts = np.flatnonzero(np.concatenate([[True], t.cluster[1:] != t.cluster[:-1]])) if t.pairs else \
                np.zeros(0, dtype=np.int64)
            cid = np.cumsum(np.isin(np.arange(t.pairs), starts)) - 1
            out.append(ClusterStats(cid.astype(np.int64), b, t.count, sketch_square(t.sketch), t.singles, t.n))
        return out
