"""Bin specifications and histograms: plain count vectors that merge by addition.

A :class:`BinSpec` maps a batch of raw values to bin indices with one numpy
operation (``searchsorted`` for numbers, a dict lookup per distinct value for
categories), never a Python loop per event per bin.  A :class:`Histogram` is a
spec plus an ``int64`` count vector; histograms with the same spec merge by
addition and round-trip losslessly through JSON.

>>> spec = NumericSpec((0.0, 0.5, 1.0))
>>> spec.labels
('<0', '[0, 0.5)', '[0.5, 1]', '>1', '__missing__')
>>> h = Histogram.from_values(spec, [0.1, 0.7, 1.0, float("nan"), 3.0])
>>> h.counts.tolist()
[0, 1, 2, 1, 1]
>>> (h + h).total
10
>>> Histogram.from_dict(h.to_dict()) == h
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

OTHER = "__other__"
MISSING = "__missing__"


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class CategoricalSpec:
    """Declared or learned vocabulary, plus ``__other__`` and ``__missing__`` bins."""

    categories: tuple[str, ...]
    kind: str = "categorical"

    def __post_init__(self) -> None:
        lookup = {c: i for i, c in enumerate(self.categories)}
        object.__setattr__(self, "_lookup", lookup)
        # the same map plus None -> __missing__, so index() is one C-level pass
        object.__setattr__(self, "_bin_of", {**lookup, None: len(self.categories) + 1} if None not in lookup else lookup)

    @property
    def labels(self) -> tuple[str, ...]:
        return (*self.categories, OTHER, MISSING)

    @property
    def size(self) -> int:
        return len(self.categories) + 2

    def index(self, values: Sequence[str | None]) -> np.ndarray:
        """Bin index per value; ``None`` is missing, unknown values are other."""
        bin_of: dict[Any, int] = self._bin_of  # type: ignore[attr-defined]
        n = len(values)
        return np.fromiter(map(bin_of.get, values, repeat(len(self.categories), n)), dtype=np.int64, count=n)

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


def learn_top_k(values: Sequence[str | None], k: int) -> CategoricalSpec:
    """The ``k`` most frequent values (ties broken by value, so it is deterministic).
    The literal values ``__other__``/``__missing__`` are left to those bins."""
    counts = Counter(v for v in values if v is not None and v not in (OTHER, MISSING))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return CategoricalSpec(tuple(v for v, _ in ranked[:k]))


def learn_quantiles(values: Sequence[float] | np.ndarray, num_bins: int) -> NumericSpec:
    """Edges at the 0, 1/num_bins, ..., 1 quantiles of the finite values.

    Repeated quantiles (heavy ties) are merged, so fewer bins may result; a
    constant or empty sample gets the edges ``[v, v + 1]`` (``[0, 1]`` if empty).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return NumericSpec((0.0, 1.0))
    qs = np.linspace(0.0, 1.0, num_bins + 1)
    with np.errstate(over="ignore", invalid="ignore"):
        edges = np.quantile(x, qs)
    if not np.all(np.isfinite(edges)):  # the sample spans more than float64: no interpolation
        edges = np.quantile(x, qs, method="lower")
    edges = np.unique(edges)
    if edges.size < 2:
        v = float(edges[0])
        with np.errstate(over="ignore"):
            hi = v + 1.0 if v + 1.0 != v else float(np.nextafter(v, np.inf))  # |v| >= 2**53
        if not np.isfinite(hi):
            return NumericSpec((float(np.nextafter(v, -np.inf)), v))
        return NumericSpec((v, hi))
    return NumericSpec(tuple(float(e) for e in edges))


@dataclass(frozen=True, eq=False)
class Histogram:
    """A bin spec and its counts. Histograms with one spec merge by ``+``."""

    spec: BinSpec
    counts: np.ndarray

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.int64)
        if counts.shape != (self.spec.size,):
            raise ValueError(f"expected {self.spec.size} counts for this spec, got shape {counts.shape}")
        if np.any(counts < 0):
            raise ValueError("counts must be non-negative")
        object.__setattr__(self, "counts", counts)

    @classmethod
    def empty(cls, spec: BinSpec) -> Histogram:
        return cls(spec, np.zeros(spec.size, dtype=np.int64))

    @classmethod
    def from_values(cls, spec: BinSpec, values: Any) -> Histogram:
        return cls(spec, np.bincount(spec.index(values), minlength=spec.size))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def __add__(self, other: Histogram) -> Histogram:
        if other.spec != self.spec:
            raise ValueError("cannot merge histograms with different bin specs")
        return Histogram(self.spec, self.counts + other.counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and other.spec == self.spec and np.array_equal(other.counts, self.counts)

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        return cls(spec_from_dict(d["spec"]), np.asarray(d["counts"], dtype=np.int64))

