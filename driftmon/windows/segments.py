"""Segments of a stream, and the cap on how many one window keeps.

A segmented stream counts each feature per segment key (the ``segment_by``
values joined with ``|``).  At most ``max_segments`` keys get a series of their
own in a window: the keys with the smallest stable hashes among those the
window has seen, so which ones is decided by the set of keys, not their
arrival order, and two replicas' partial windows agree.  The others share the
``__other__`` segment, which bounds memory and metric label cardinality.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from driftmon.decode.prepare import SegmentKeys
from driftmon.summaries.hashing import hash_one

OTHER_SEGMENT = "__other__"


class SegmentCap:
    """Which segment keys a window keeps: the ``max_segments`` smallest hashes."""

    def __init__(self, max_segments: int):
        self.max_segments = max_segments
        self._hash: dict[str, int] = {}

    def hash(self, key: str) -> int:
        h = self._hash.get(key)
        if h is None:
            if len(self._hash) > 100_000:  # a cache, bounded under hostile cardinality
                self._hash.clear()
            h = self._hash[key] = hash_one(key)
        return h

    def admit(self, held: Iterable[str | None], new: Iterable[str | None]) -> tuple[set[str], set[str]]:
        """``(kept, evicted)``: the keys kept among ``held`` (a window's current
        keys) and ``new``, and the held keys that must fold into ``__other__``."""
        held = list(held)
        union = {k for k in (*held, *new) if k is not None and k != OTHER_SEGMENT}
        if len(union) <= self.max_segments:
            return union, set()
        kept = set(sorted(union, key=self.hash)[: self.max_segments])
        return kept, {k for k in held if k is not None and k != OTHER_SEGMENT and k not in kept}


class Segmenter:
    """Arrival-order segment ids for count windows (which are arrival-order by nature):
    after ``max_segments`` keys every new key shares ``__other__``."""

    def __init__(self, max_segments: int, segmented: bool = True):
        self.max_segments = max_segments
        self.segmented = segmented
        self.names: list[str | None] = [] if segmented else [None]
        self._ids: dict[str | None, int] = {n: i for i, n in enumerate(self.names)}

    def ids(self, seg: SegmentKeys | None, n: int) -> np.ndarray:
        if not self.segmented or seg is None:
            return np.zeros(n, dtype=np.int64)
        # only the keys of this batch (an interned keys list may hold earlier ones), in list order
        present = np.flatnonzero(np.bincount(seg.inverse, minlength=len(seg.keys))).tolist()
        lookup = np.zeros(len(seg.keys), dtype=np.int64)
        lookup[present] = [self._id(seg.keys[i]) for i in present]
        return lookup[seg.inverse]

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
