"""A stable 64-bit hash of category values, the same in every process and run.

Python's ``hash()`` of a string is salted per process, so it cannot decide
anything that two replicas, a restart or a replay must agree on.  driftmon
uses XXH3-64 of the value's UTF-8 bytes: which values a capped summary keeps
exactly, and which tail bucket the rest fall into, are decided by this hash
alone, never by arrival order.

>>> int(stable_hash(["a"])[0]) == int(stable_hash(["a", "b"])[0])
True
>>> stable_hash([]).dtype
dtype('uint64')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xxhash

_h = xxhash.xxh3_64_intdigest


def stable_hash(values: Sequence[str]) -> np.ndarray:
    """XXH3-64 of each value's UTF-8 encoding, as ``uint64`` (one C-level pass)."""
    return np.fromiter(map(_h, map(str.encode, values)), dtype=np.uint64, count=len(values))


def hash_one(value: str) -> int:
    return int(_h(value.encode()))
