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
    MISSING,
    OTHER,
    RESERVED,
    add_sparse,
    check_version,
    pack,
    unpack,
)
from driftmon.summaries.hashing import hash_one, stable_hash

DEFAULT_CAP = 5000
DEFAULT_TAIL = 64
_NONE_HASH = np.uint64(0)  # placeholder hash of a missing value (masked out everywhere)


@dataclass(frozen=True)
class CategoricalCodes:
    """One batch's categorical column: a hash per event, a missing mask, and the
    names of the distinct hashes."""

    hashes: np.ndarray  # uint64 per event (placeholder where missing)
    missing: np.ndarray  # bool per event
    names: dict[int, str]


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
        names = {**self.names, **other.names}
        return _capped(self.cap, self.tail_size, keys, counts, names, self.tail + other.tail,
                       self.missing + other.missing)

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

    def __init__(self, top_k: int, cap: int = DEFAULT_CAP, tail_size: int = DEFAULT_TAIL):
        if not 1 <= top_k <= cap:
            raise ValueError(f"need 1 <= top_k <= cap, got top_k={top_k}, cap={cap}")
        self.top_k, self.cap, self.tail_size = top_k, cap, tail_size

    def codes(self, values: Sequence[str | None]) -> CategoricalCodes:
        distinct = list(dict.fromkeys(values))  # C-level; first-appearance order (irrelevant to results)
        pos = {v: i for i, v in enumerate(distinct)}
        absent = np.zeros(len(distinct), dtype=bool)
        none_at = pos.get(None)
        if none_at is not None:
            del distinct[none_at]
        present: list[str] = distinct  # type: ignore[assignment]  # None was removed
        hashed = stable_hash(present)
        table = hashed
        if none_at is not None:
            table = np.insert(hashed, none_at, _NONE_HASH)
            absent[none_at] = True
        inverse = np.fromiter(map(pos.__getitem__, values), dtype=np.int64, count=len(values))
        return CategoricalCodes(table[inverse], absent[inverse], dict(zip(hashed.tolist(), present)))

    def take(self, codes: CategoricalCodes, sel: np.ndarray) -> CategoricalCodes:
        return CategoricalCodes(codes.hashes[sel], codes.missing[sel], codes.names)

    def summarize(self, codes: CategoricalCodes) -> CategoricalSummary:
        present = codes.hashes[~codes.missing]
        keys, counts = np.unique(present, return_counts=True)
        names = codes.names
        if len(names) != keys.size:
            names = {k: names[k] for k in keys.tolist()}
        missing = int(codes.missing.size - present.size)
        return _capped(self.cap, self.tail_size, keys, counts.astype(np.int64), names,
                       np.zeros(self.tail_size, dtype=np.int64), missing)

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
