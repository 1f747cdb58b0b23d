"""Categorical summaries: exact counts over an open vocabulary, bounded by a cap.

Values are identified by their stable 64-bit hash (:mod:`.hashing`).  A summary
keeps exact counts for at most ``cap`` distinct values: the ``cap`` values with
the *smallest hashes* among all values seen.  Every other value is counted in
one of ``tail_size`` tail buckets chosen by its hash.  Which values are exact
is therefore a function of the set of values, never of their order, and the
sum of two summaries is exactly the summary of the union (a value left out of
either part has ``cap`` smaller-hashed values in that part, so it is left out
of the union too).  Below the cap, which is the usual case for item
categories, app or model versions and countries, every value is exact and
named.

Bins are chosen when two windows are compared, from their pooled counts: the
``top_k`` most frequent values (ties by hash), then ``__other__`` (all other
values and the tail) and ``__missing__``.  A value that first appears after
start is therefore a bin of its own as soon as it is frequent.  Choosing bins
from the pooled table keeps the G-test valid: under "no change" the pooled
table is invariant to which window an event fell in.

>>> s = CategoricalSummarizer(top_k=2)
>>> a = s.summarize(s.codes(["x", "y", "x", None]))
>>> b = s.summarize(s.codes(["z", "z", "z"]))
>>> labels, (ca, cb) = s.bins([a, b])
>>> labels, ca.tolist(), cb.tolist()
(('z', 'x', '__other__', '__missing__'), [0, 2, 1, 1], [3, 0, 0, 0])
>>> (a + b).total, (a + b) == (b + a)
(7, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.summaries.base import (
    FORMAT_VERSION,
    ID_WIDTH,
    MISSING,
    OTHER,
    RESERVED,
    add_sparse,
    add_sparse_all,
    check_version,
    group_offsets,
    intern,
    pack,
    packed,
    unpack,
)
from driftmon.summaries.hashing import hash_one, stable_hash

DEFAULT_CAP = 5000
DEFAULT_TAIL = 64
INTERN_LIMIT = 1 << 16  # distinct values whose hashes one summarizer remembers across batches
_NONE_HASH = np.uint64(0)  # placeholder hash of a missing value (masked out everywhere)


@dataclass(frozen=True)
class CategoricalCodes:
    """One batch's categorical column, self-contained (it may travel from the decode
    worker): the batch's distinct values sorted by hash (``table``, ``labels``), and
    per event its index in them (``ids``), ``len(table)`` where the value is missing."""

    ids: np.ndarray  # int64 per event, into table (len(table): missing)
    table: np.ndarray  # uint64, sorted, distinct: hashes of the distinct present values
    labels: list[str]  # the value of each table entry

    @property
    def hashes(self) -> np.ndarray:
        """uint64 hash per event (a placeholder where missing)."""
        return np.append(self.table, _NONE_HASH)[self.ids]

    @property
    def missing(self) -> np.ndarray:
        return self.ids == self.table.size

    @property
    def names(self) -> dict[int, str]:
        return dict(zip(self.table.tolist(), self.labels))


@dataclass(frozen=True, eq=False)
class CategoricalSummary:
    cap: int
    tail_size: int
    keys: np.ndarray  # uint64, sorted, distinct: the exact values' hashes
    counts: np.ndarray  # int64 per key
    names: dict[int, str]  # hash -> value, for the keys
    tail: np.ndarray  # int64 (tail_size,): counts of values beyond the cap, by hash
    missing: int
    kind: str = "categorical"

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + int(self.tail.sum()) + self.missing

    def __add__(self, other: CategoricalSummary) -> CategoricalSummary:
        if (other.cap, other.tail_size) != (self.cap, self.tail_size):
            raise ValueError("cannot add categorical summaries with different caps")
        keys, counts = add_sparse(self.keys, self.counts, other.keys, other.counts)
        if keys.size == self.keys.size:  # other's values are all in self (the usual case in an open window)
            names = self.names
        elif keys.size == other.keys.size:
            names = other.names
        else:
            names = {**self.names, **other.names}
        return _capped(self.cap, self.tail_size, keys, counts, names, self.tail + other.tail,
                       self.missing + other.missing)

    @classmethod
    def add_all(cls, items: Sequence[CategoricalSummary]) -> CategoricalSummary:
        """The sum of many summaries in one pass (see summaries.base.add_all)."""
        first = items[0]
        if any((s.cap, s.tail_size) != (first.cap, first.tail_size) for s in items):
            raise ValueError("cannot add categorical summaries with different caps")
        keys, counts = add_sparse_all([s.keys for s in items], [s.counts for s in items])
        names: dict[int, str] = {}
        for s in items:
            names.update(s.names)
        tail = first.tail + sum(s.tail for s in items[1:])
        return _capped(first.cap, first.tail_size, keys, counts, names, tail, sum(s.missing for s in items))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CategoricalSummary) and self.cap == other.cap
                and self.tail_size == other.tail_size and self.missing == other.missing
                and np.array_equal(self.keys, other.keys) and np.array_equal(self.counts, other.counts)
                and np.array_equal(self.tail, other.tail)
                and all(self.names[k] == other.names[k] for k in self.keys.tolist()))

    __hash__ = None  # type: ignore[assignment]

    def count_of(self, value: str) -> int:
        """Exact count of one value (0 if unseen or beyond the cap)."""
        h = np.uint64(hash_one(value))
        i = int(np.searchsorted(self.keys, h))
        return int(self.counts[i]) if i < self.keys.size and self.keys[i] == h else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "v": FORMAT_VERSION, "cap": self.cap, "tail_size": self.tail_size,
            "keys": pack(self.keys, "u8"), "counts": pack(self.counts, "i8"),
            "names": [self.names[k] for k in self.keys.tolist()],
            "tail": pack(self.tail, "i8"), "missing": self.missing,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalSummary:
        check_version(d, "categorical")
        keys, counts, tail = unpack(d["keys"], "u8"), unpack(d["counts"], "i8"), unpack(d["tail"], "i8")
        names = [str(n) for n in d["names"]]
        cap, tail_size = int(d["cap"]), int(d["tail_size"])
        if not (keys.size == counts.size == len(names) <= cap and tail.size == tail_size
                and np.all(keys[1:] > keys[:-1]) and np.all(counts > 0) and np.all(tail >= 0)
                and int(d["missing"]) >= 0):
            raise ValueError("inconsistent categorical summary")
        return cls(cap, tail_size, keys, counts, dict(zip(keys.tolist(), names)), tail, int(d["missing"]))


def _codes_uninterned(values: Sequence[str | None]) -> CategoricalCodes:
    """Codes without the interning table: hash every distinct value of the batch."""
    distinct = [v for v in dict.fromkeys(values) if v is not None]
    hashes = stable_hash(distinct)  # type: ignore[arg-type]
    table, inv = np.unique(hashes, return_inverse=True)  # (merges values whose hashes collide)
    labels = [""] * table.size
    for i, v in zip(inv.reshape(-1).tolist(), distinct):
        labels[i] = labels[i] or v  # type: ignore[assignment]
    pos: dict[str | None, int] = dict(zip(distinct, inv.reshape(-1).tolist()))
    pos[None] = table.size
    ids = np.fromiter(map(pos.__getitem__, values), dtype=np.int64, count=len(values))
    return CategoricalCodes(ids, table, labels)


def _capped(cap: int, tail_size: int, keys: np.ndarray, counts: np.ndarray, names: dict[int, str],
            tail: np.ndarray, missing: int) -> CategoricalSummary:
    """Keep the ``cap`` smallest hashes exactly; fold the rest into the tail."""
    if keys.size > cap:
        out_keys, out_counts = keys[cap:], counts[cap:]
        tail = tail + np.bincount((out_keys % np.uint64(tail_size)).astype(np.int64), weights=out_counts,
                                  minlength=tail_size).astype(np.int64)
        keys, counts = keys[:cap], counts[:cap]
        names = {k: names[k] for k in keys.tolist()}
    elif len(names) > keys.size:
        names = {k: names[k] for k in keys.tolist()}
    return CategoricalSummary(cap, tail_size, keys, counts, names, tail, missing)


class CategoricalSummarizer:
    """Codes, summaries and comparison bins of one open-vocabulary categorical feature."""

    kind = "categorical"

    def __init__(self, top_k: int, cap: int = DEFAULT_CAP, tail_size: int = DEFAULT_TAIL,
                 intern_limit: int = INTERN_LIMIT):
        if not 1 <= top_k <= cap:
            raise ValueError(f"need 1 <= top_k <= cap, got top_k={top_k}, cap={cap}")
        self.top_k, self.cap, self.tail_size = top_k, cap, tail_size
        self.intern_limit = intern_limit
        self._reset_interned()

    def _reset_interned(self) -> None:
        # value -> id; id 0 is None (missing).  A cache of hashes across batches: codes
        # never depend on what it holds, and it is cleared when it reaches intern_limit.
        self._ids: dict[str | None, bytes] = {None: packed(0, ID_WIDTH)}
        self._hashes = np.zeros(1, dtype=np.uint64)
        self._labels: list[str] = [""]

    def __getstate__(self) -> dict[str, Any]:  # the cache does not travel (e.g. to the decode worker)
        return {"top_k": self.top_k, "cap": self.cap, "tail_size": self.tail_size,
                "intern_limit": self.intern_limit}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._reset_interned()

    def codes(self, values: Sequence[str | None]) -> CategoricalCodes:
        """Each value is looked up once in the interning table (one C-level pass); only
        values new to this process are hashed."""
        got = intern(self._ids, values, self.intern_limit)
        if got is None:  # the table is full: start afresh
            self._reset_interned()
            got = intern(self._ids, values, self.intern_limit)
            if got is None:  # more distinct values than the table holds
                return _codes_uninterned(values)
        gid, new = got
        if new:
            self._hashes = np.concatenate([self._hashes, stable_hash(new)])  # type: ignore[arg-type]
            self._labels.extend(new)  # type: ignore[arg-type]
        seen = np.zeros(len(self._labels), dtype=bool)
        seen[gid] = True
        seen[0] = False
        present = np.flatnonzero(seen)
        hashes = self._hashes[present]
        order = np.argsort(hashes, kind="stable")
        present, hashes = present[order], hashes[order]
        if hashes.size > 1 and bool(np.any(hashes[1:] == hashes[:-1])):  # a 64-bit collision: merge them
            return _codes_uninterned(values)
        local = np.empty(len(self._labels), dtype=np.int64)
        local[present] = np.arange(present.size)
        local[0] = present.size
        labels = self._labels
        return CategoricalCodes(local[gid], hashes, [labels[i] for i in present.tolist()])

    def take(self, codes: CategoricalCodes, sel: np.ndarray) -> CategoricalCodes:
        return CategoricalCodes(codes.ids[sel], codes.table, codes.labels)

    def summarize(self, codes: CategoricalCodes) -> CategoricalSummary:
        n = codes.ids.size
        return self.summarize_groups(codes, np.arange(n), np.zeros(n, dtype=np.int64), 1)[0]

    def summarize_groups(self, codes: CategoricalCodes, sel: np.ndarray, groups: np.ndarray,
                         n_groups: int) -> list[CategoricalSummary]:
        m = codes.table.size
        table = np.bincount(group_offsets(groups, n_groups, m + 1) + codes.ids[sel], minlength=n_groups * (m + 1))
        table = table.astype(np.int64).reshape(n_groups, m + 1)
        labels = codes.labels
        out = []
        for row in table:
            nz = np.flatnonzero(row[:m])
            keys = codes.table[nz]
            if nz.size == m:
                names = dict(zip(keys.tolist(), labels))
            else:
                names = dict(zip(keys.tolist(), [labels[i] for i in nz.tolist()]))
            out.append(_capped(self.cap, self.tail_size, keys, row[nz], names,
                               np.zeros(self.tail_size, dtype=np.int64), int(row[m])))
        return out

    def empty(self) -> CategoricalSummary:
        return CategoricalSummary(self.cap, self.tail_size, np.zeros(0, np.uint64), np.zeros(0, np.int64), {},
                                  np.zeros(self.tail_size, dtype=np.int64), 0)

    def from_dict(self, d: dict[str, Any]) -> CategoricalSummary:
        return CategoricalSummary.from_dict(d)

    def bins(self, summaries: Sequence[CategoricalSummary]) -> tuple[tuple[str, ...], list[np.ndarray]]:
        """The ``top_k`` values of the pooled counts, ``__other__``, ``__missing__``."""
        pooled = summaries[0]
        for s in summaries[1:]:
            pooled = pooled + s
        reserved = [k for k in pooled.keys.tolist() if pooled.names[k] in RESERVED]
        eligible = pooled.counts.copy()
        if reserved:  # a literal "__other__"/"__missing__" value is counted in __other__
            eligible[np.isin(pooled.keys, np.asarray(reserved, dtype=np.uint64))] = 0
        order = np.lexsort((pooled.keys, -eligible))[: self.top_k]
        order = order[eligible[order] > 0]
        top = pooled.keys[order]
        labels = (*(pooled.names[k] for k in top.tolist()), OTHER, MISSING)
        out = []
        for s in summaries:
            i = np.searchsorted(s.keys, top)
            i_clip = np.minimum(i, max(s.keys.size - 1, 0))
            hit = (i < s.keys.size) & (s.keys[i_clip] == top) if s.keys.size else np.zeros(top.size, dtype=bool)
            c = np.where(hit, s.counts[i_clip] if s.keys.size else 0, 0).astype(np.int64)
            other = s.total - s.missing - int(c.sum())
            out.append(np.concatenate([c, [other, s.missing]]).astype(np.int64))
        return labels, out
