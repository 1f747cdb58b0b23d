"""Declared bins: a fixed vocabulary or fixed numeric edges.

A :class:`BinSpec` maps a batch of raw values to bin indices with one numpy
operation (``searchsorted`` for numbers, a dict lookup per distinct value for
categories), never a Python loop per event per bin.  Features with declared
``categories`` or ``edges`` count into these bins (:mod:`.fixed`); open
vocabularies and quantile features choose their bins at comparison time.

>>> spec = NumericSpec((0.0, 0.5, 1.0))
>>> spec.labels
('<0', '[0, 0.5)', '[0.5, 1]', '>1', '__missing__')
>>> spec.index([0.1, 0.7, 1.0, float("nan"), 3.0]).tolist()
[1, 2, 2, 4, 3]
>>> spec.points.tolist()  # where each bin but __missing__ puts its mass (Wasserstein-1)
[0.0, 0.25, 0.75, 1.0]
>>> CategoricalSpec(("a", "b")).index(["b", "z", None]).tolist()
[1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.summaries.base import MISSING, OTHER, code_width, lookup, packed


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class CategoricalSpec:
    """A declared vocabulary, plus ``__other__`` and ``__missing__`` bins."""

    categories: tuple[str, ...]
    kind: str = "categorical"

    def __post_init__(self) -> None:
        # category -> bin, plus None -> __missing__, packed for summaries.base.lookup: one C-level pass
        bin_of: dict[str | None, int] = {c: i for i, c in enumerate(self.categories)}
        bin_of.setdefault(None, len(self.categories) + 1)
        width = code_width(len(self.categories) + 2)
        object.__setattr__(self, "_bin_of", {k: packed(i, width) for k, i in bin_of.items()})
        object.__setattr__(self, "_other", packed(len(self.categories), width))

    @property
    def labels(self) -> tuple[str, ...]:
        return (*self.categories, OTHER, MISSING)

    @property
    def size(self) -> int:
        return len(self.categories) + 2

    def index(self, values: Sequence[str | None]) -> np.ndarray:
        """Bin index per value; ``None`` is missing, unknown values are other."""
        return lookup(self._bin_of, values, self._other)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "categories": list(self.categories)}


@dataclass(frozen=True)
class NumericSpec:
    """Bins ``<e0``, ``[e0, e1)`` ... ``[e_k-1, e_k]``, ``>e_k`` and ``__missing__`` (NaN/None)."""

    edges: tuple[float, ...]
    kind: str = "numeric"

    def __post_init__(self) -> None:
        e = np.asarray(self.edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or not np.all(e[1:] > e[:-1]) or not np.all(np.isfinite(e)):
            raise ValueError(f"edges must be >= 2 finite, strictly increasing numbers, got {self.edges!r}")
        object.__setattr__(self, "_edges", e)

    @property
    def labels(self) -> tuple[str, ...]:
        e = [_fmt(x) for x in self.edges]
        inner = [f"[{a}, {b})" for a, b in zip(e[:-2], e[1:-1])] + [f"[{e[-2]}, {e[-1]}]"]
        return (f"<{e[0]}", *inner, f">{e[-1]}", MISSING)

    @property
    def size(self) -> int:
        return len(self.edges) + 2

    @property
    def points(self) -> np.ndarray:
        """A value for each bin but ``__missing__``: the first edge for the underflow
        bin, inner bins' midpoints, the last edge for the overflow bin (ascending)."""
        e: np.ndarray = self._edges  # type: ignore[attr-defined]
        return np.concatenate([e[:1], (e[:-1] + e[1:]) / 2, e[-1:]])

    def index(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        edges: np.ndarray = self._edges  # type: ignore[attr-defined]
        k = edges.size
        idx = np.searchsorted(edges, x, side="right")  # 0 underflow .. k overflow
        idx[x == edges[-1]] = k - 1  # the last inner bin is closed on the right
        idx[np.isnan(x)] = k + 1
        return idx.astype(np.int64, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "edges": [float(x) for x in self.edges]}


BinSpec = CategoricalSpec | NumericSpec


def spec_from_dict(d: dict[str, Any]) -> BinSpec:
    if d["kind"] == "categorical":
        return CategoricalSpec(tuple(str(c) for c in d["categories"]))
    if d["kind"] == "numeric":
        return NumericSpec(tuple(float(x) for x in d["edges"]))
    raise ValueError(f"unknown bin spec kind {d.get('kind')!r}")
