"""Summaries over declared bins: a dense count vector per window.

A feature with declared ``categories`` or ``edges`` keeps exactly those bins
(plus ``__other__``/``__missing__``, or underflow/overflow/``__missing__``):
its summary is the count vector, and summaries add element-wise.

>>> from driftmon.summaries.bins import CategoricalSpec
>>> s = FixedSummarizer(CategoricalSpec(("a", "b")))
>>> x = s.summarize(s.codes(["a", "c", None, "a"]))
>>> x.counts.tolist(), (x + x).total
([2, 0, 1, 1], 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.summaries.base import FORMAT_VERSION, Support, check_version, group_offsets
from driftmon.summaries.bins import BinSpec, NumericSpec


@dataclass(frozen=True, eq=False)
class FixedSummary:
    counts: np.ndarray  # int64, one per declared bin
    kind: str = "fixed"

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def __add__(self, other: FixedSummary) -> FixedSummary:
        if other.counts.shape != self.counts.shape:
            raise ValueError("cannot add fixed summaries with different bins")
        return FixedSummary(self.counts + other.counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FixedSummary) and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "v": FORMAT_VERSION, "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FixedSummary:
        check_version(d, "fixed")
        counts = np.asarray(d["counts"], dtype=np.int64)
        if counts.ndim != 1 or np.any(counts < 0):
            raise ValueError("inconsistent fixed summary")
        return cls(counts)


class FixedSummarizer:
    """Declared bins: codes are bin indices, summaries count vectors."""

    kind = "fixed"

    def __init__(self, spec: BinSpec):
        self.spec = spec

    def codes(self, values: Sequence[Any]) -> np.ndarray:
        return self.spec.index(values)

    def take(self, codes: np.ndarray, sel: np.ndarray) -> np.ndarray:
        return codes[sel]

    def summarize(self, codes: np.ndarray) -> FixedSummary:
        return FixedSummary(np.bincount(codes, minlength=self.spec.size).astype(np.int64))

    def summarize_groups(self, codes: np.ndarray, sel: np.ndarray, groups: np.ndarray,
                         n_groups: int) -> list[FixedSummary]:
        k = self.spec.size
        table = np.bincount(group_offsets(groups, n_groups, k) + codes[sel], minlength=n_groups * k)
        return [FixedSummary(row) for row in table.astype(np.int64).reshape(n_groups, k)]

    def empty(self) -> FixedSummary:
        return FixedSummary(np.zeros(self.spec.size, dtype=np.int64))

    def from_dict(self, d: dict[str, Any]) -> FixedSummary:
        s = FixedSummary.from_dict(d)
        if s.counts.size != self.spec.size:
            raise ValueError(f"fixed summary has {s.counts.size} bins, the feature declares {self.spec.size}")
        return s

    def bins(self, summaries: Sequence[FixedSummary]) -> tuple[tuple[str, ...], list[np.ndarray]]:
        return self.spec.labels, [s.counts for s in summaries]

    def support(self, summaries: Sequence[FixedSummary]) -> Support:
        """Declared numeric edges: each bin's mass at its ``spec.points`` value (inner
        bins at their midpoints, underflow and overflow at the first and last edge);
        ``__missing__`` is left out.  Declared categories have no numeric support."""
        if not isinstance(self.spec, NumericSpec):
            raise ValueError("declared categories have no numeric values (Wasserstein-1 needs a numeric feature)")
        k = self.spec.size - 1
        return Support(self.spec.points, [s.counts[:k] for s in summaries], np.arange(k), self.spec.size)
