"""What every per-window summary is: a commutative monoid of counts.

A *summary* condenses the values one feature took in one window (and one
segment).  Every summary type obeys the same contract, which the tests check
with hypothesis for each type:

* ``a + b`` is the summary of the union of the two event sets; ``+`` is
  commutative and associative and ``summarizer.empty()`` is its identity;
* the summary of a set of events does not depend on their order, batching or
  partitioning (so N replicas' partial windows add up to one process's);
* ``total`` counts every event, missing values included;
* ``to_dict()``/``from_dict()`` round-trip losslessly through JSON, with a
  format version.

:func:`add_all` sums many summaries at once; a type may give a class method
``add_all(items)`` that does it in one pass (one sort of all keys instead of one
merge per pair), which is how an open window adds its batches
(:class:`driftmon.windows.base.WindowState`).

A *summarizer* is the per-feature object that turns a batch of decoded values
into *codes* (a pure, picklable step that a decode worker can run), builds a
summary from the codes of a subset of events, and, at comparison time,
chooses bins from the pooled summaries of the windows being compared.

Summarizers of numeric features also give the :class:`Support` of the pooled
summaries (``support(summaries)``): the finite values they put mass on, each
summary's counts there, and the comparison bin of each value, for metrics that
need the values themselves rather than the bins (Wasserstein-1).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any, Protocol, TypeVar

import numpy as np

FORMAT_VERSION = 1
OTHER = "__other__"
MISSING = "__missing__"
RESERVED = frozenset({OTHER, MISSING})

S = TypeVar("S", bound="Summary")


class Summary(Protocol):
    kind: str

    def __add__(self: S, other: S) -> S: ...

    @property
    def total(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


class Summarizer(Protocol):
    """Per-feature: values -> codes -> summary, and summaries -> comparison bins."""

    kind: str

    def codes(self, values: Sequence[Any]) -> Any:
        """Codes of one batch's column (pure; runs in the decode worker too)."""

    def take(self, codes: Any, sel: np.ndarray) -> Any:
        """The codes of the events at positions ``sel``."""

    def summarize(self, codes: Any) -> Any:
        """The summary of the events whose codes are given."""

    def summarize_groups(self, codes: Any, sel: np.ndarray, groups: np.ndarray, n_groups: int) -> list[Any]:
        """The summaries of the events at positions ``sel``, one per group: event
        ``sel[i]`` is in group ``groups[i]`` (``0 <= groups < n_groups``).  One
        vectorized pass for all segments of a window; equal to ``summarize(take(
        codes, sel[groups == g]))`` for each ``g``."""

    def empty(self) -> Any: ...

    def bins(self, summaries: Sequence[Any]) -> tuple[tuple[str, ...], list[np.ndarray]]:
        """Bin labels chosen from the pooled summaries, and each summary's counts in them."""

    def from_dict(self, d: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Support:
    """The finite values that pooled numeric summaries put mass on.

    ``values``: ascending, distinct, finite (missing and infinite values are
    left out); ``counts``: per summary, its count at each value; ``bin_index``:
    the comparison bin (of ``summarizer.bins(summaries)``, which has ``n_bins``
    labels) each value falls in.
    """

    values: np.ndarray
    counts: list[np.ndarray]
    bin_index: np.ndarray
    n_bins: int


def pack(a: np.ndarray, dtype: str) -> str:
    """A numpy array as base64 of its little-endian bytes (compact in JSON)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def unpack(text: str, dtype: str) -> np.ndarray:
    data = base64.b64decode(text.encode(), validate=True)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def add_sparse(keys_a: np.ndarray, counts_a: np.ndarray, keys_b: np.ndarray,
               counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sum of two sparse count vectors (sorted distinct keys, counts per key).

    When one key set contains the other (an open window adding a batch whose
    values it has seen: the usual case) this is one ``searchsorted``; otherwise
    one stable sort of both key sets.  Counts stay exact ``int64``."""
    if keys_b.size == 0:
        return keys_a, counts_a
    if keys_a.size == 0:
        return keys_b, counts_b
    if keys_b.size > keys_a.size:
        keys_a, counts_a, keys_b, counts_b = keys_b, counts_b, keys_a, counts_a
    at = np.searchsorted(keys_a, keys_b)
    if at[-1] < keys_a.size and np.array_equal(keys_a[np.minimum(at, keys_a.size - 1)], keys_b):
        counts = counts_a.astype(np.int64, copy=True)
        counts[at] += counts_b  # keys_b are distinct, so ``at`` is too
        return keys_a, counts
    keys = np.concatenate([keys_a, keys_b])
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    start = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    counts = np.add.reduceat(np.concatenate([counts_a, counts_b]).astype(np.int64)[order], start)
    return keys[start], counts


def add_sparse_all(keys: Sequence[np.ndarray], counts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The sum of many sparse count vectors: one stable sort of all their keys."""
    if len(keys) == 1:
        return keys[0], counts[0]
    k = np.concatenate(keys)
    order = np.argsort(k, kind="stable")
    k = k[order]
    if k.size == 0:
        return k, np.zeros(0, dtype=np.int64)
    start = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    return k[start], np.add.reduceat(np.concatenate(counts).astype(np.int64)[order], start)


def add_all(items: Sequence[S]) -> S:
    """``items[0] + items[1] + ...`` (at least one item), in one pass where the type
    has a class method ``add_all``."""
    many = getattr(type(items[0]), "add_all", None)
    if many is not None and len(items) > 1:
        return many(items)  # type: ignore[no-any-return]
    total = items[0]
    for s in items[1:]:
        total = total + s
    return total


def group_offsets(groups: np.ndarray, n_groups: int, width: int) -> np.ndarray:
    """``groups * width`` as int64, the row offset of each event in a (group, code) table."""
    return groups.astype(np.int64) * width if n_groups > 1 else np.zeros(groups.size, dtype=np.int64)


def check_version(d: dict[str, Any], kind: str) -> None:
    if d.get("kind") != kind or d.get("v") != FORMAT_VERSION:
        raise ValueError(f"not a version-{FORMAT_VERSION} {kind} summary: kind={d.get('kind')!r} v={d.get('v')!r}")


def code_width(n: int) -> int:
    """Bytes per code of :func:`packed` for codes ``0 .. n - 1``."""
    for width in (1, 2, 4):
        if n <= 1 << (8 * width):
            return width
    raise ValueError(f"{n} codes do not fit in 32 bits")


def packed(code: int, width: int) -> bytes:
    """A code as ``width`` little-endian bytes: the value type of lookup tables that
    :func:`lookup` reads (a batch's codes come from one ``bytes.join``, a memcpy per value,
    where ``np.fromiter`` converted each looked-up Python int on its own: about a third of
    the code stage's instructions under callgrind)."""
    return code.to_bytes(width, "little")


def lookup(table: dict[Any, bytes], values: Sequence[Any], default: bytes) -> np.ndarray:
    """``table.get(v, default)`` of each value as int64 codes (one C-level pass); every
    packed value of ``table`` and ``default`` have the same width."""
    n = len(values)
    buf = b"".join(map(table.get, values, repeat(default, n)))
    return np.frombuffer(buf, dtype=f"<u{len(default)}").astype(np.int64)


ID_WIDTH = 4  # bytes per interned id
_UNSEEN = b"\xff" * ID_WIDTH  # lookup default: not in the table
_UNSEEN_ID = (1 << (8 * ID_WIDTH)) - 1


def intern(ids: dict[Any, bytes], values: Sequence[Any], limit: int) -> tuple[np.ndarray, list[Any]] | None:
    """The id of each value in the interning table ``ids`` (value -> id, :func:`packed` in
    :data:`ID_WIDTH` bytes; one C-level pass), new values added with the next ids and
    returned in first-appearance order (only they are looked up again: an open vocabulary
    meets new values in most batches); None, the table untouched, when they would take it
    past ``limit`` entries."""
    if limit >= _UNSEEN_ID:
        raise ValueError(f"an interning table holds fewer than {_UNSEEN_ID} values, not {limit}")
    got = lookup(ids, values, _UNSEEN)
    if not got.size or got.max() != _UNSEEN_ID:
        return got, []
    absent = got == _UNSEEN_ID
    unseen = list(compress(values, absent.tolist()))
    new = list(dict.fromkeys(unseen))
    if len(ids) + len(new) > limit:
        return None
    base = len(ids)
    ids.update(zip(new, (packed(i, ID_WIDTH) for i in range(base, base + len(new)))))
    got[absent] = lookup(ids, unseen, _UNSEEN)
    return got, new
