"""Numeric summaries: a fixed log-linear bucket grid with a stated relative accuracy.

Every finite non-zero value ``x`` falls in bucket ``i = ceil(log_gamma |x|)``
with ``gamma = (1 + a) / (1 - a)`` for the relative accuracy ``a`` (default
1%): the bucket ``(gamma**(i-1), gamma**i]`` (mirrored for negatives), whose
representative value ``2 gamma**i / (gamma + 1)`` is within ``a`` of every value
in it (the DDSketch grid).  Zero, ``-inf`` and ``+inf`` have buckets of their
own; NaN and absent values are counted as missing.  The grid is fixed, so a
summary is a sparse vector of counts over it and summaries add bucket-wise.
A summary also keeps ``count`` and the exact sums of the finite values and of
their squares (:mod:`.exact`), so moments merge exactly too.

Bucket codes are ordered like the values: negative codes for negative values,
``0`` for zero, positive codes for positive values, ``±2**62`` for infinities.

Bins are chosen when two windows are compared: ``num_bins`` quantile bins of
the pooled buckets (cut between buckets, so each bin is a contiguous range of
buckets and the counts in it are exact), plus ``__missing__``.

>>> s = NumericSummarizer(num_bins=2)
>>> a = s.summarize(s.codes([1.0, 2.0, 3.0, float("nan")]))
>>> b = s.summarize(s.codes([10.0, 20.0, 30.0]))
>>> labels, (ca, cb) = s.bins([a, b])
>>> len(labels), ca.tolist(), cb.tolist()
(3, [3, 0, 1], [0, 3, 0])
>>> round(a.mean, 12), (a + b).count
(2.0, 6)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.summaries import exact
from driftmon.summaries.base import (
    FORMAT_VERSION,
    MISSING,
    Support,
    add_sparse,
    add_sparse_all,
    check_version,
    group_offsets,
    pack,
    unpack,
)

DEFAULT_ACCURACY = 0.01
OFFSET = 1 << 40  # positive codes are OFFSET + i, negative ones -(OFFSET + i)
INF = 1 << 62  # +inf has code INF, -inf code -INF
MISSING_CODE = np.iinfo(np.int64).min  # NaN / absent


@dataclass(frozen=True)
class NumericCodes:
    codes: np.ndarray  # int64 bucket code per event (MISSING_CODE for NaN)
    values: np.ndarray  # float64 per event, for the exact moments
    ids: np.ndarray | None = None  # int64 per event: index into ``table`` (len(table): missing)
    table: np.ndarray | None = None  # int64: the batch's distinct present codes, ascending


@dataclass(frozen=True, eq=False)
class NumericSummary:
    accuracy: float
    keys: np.ndarray  # int64 bucket codes, sorted, distinct
    counts: np.ndarray  # int64 per code
    missing: int
    sum: int  # exact sum of the finite values, in units of 2**-1074
    sumsq: int  # exact sum of their float64 squares (same unit)
    sumsq_overflow: bool = False  # some square was inf (|x| > ~1.3e154)
    kind: str = "numeric"

    @property
    def count(self) -> int:
        """Values counted in buckets (finite and infinite; not missing)."""
        return int(self.counts.sum())

    @property
    def total(self) -> int:
        return self.count + self.missing

    @property
    def finite(self) -> int:
        inf = np.abs(self.keys) == INF
        return int(self.counts[~inf].sum())

    @property
    def mean(self) -> float:
        n = self.finite
        return exact.to_float(self.sum) / n if n else math.nan

    @property
    def variance(self) -> float:
        """Population variance of the finite values (from the exact sums)."""
        n = self.finite
        if n == 0:
            return math.nan
        if self.sumsq_overflow:
            return math.inf
        from fractions import Fraction

        unit = 1 << exact.SCALE_BITS
        mean = Fraction(self.sum, unit) / n
        return float(max(Fraction(self.sumsq, unit) / n - mean * mean, Fraction(0)))

    def __add__(self, other: NumericSummary) -> NumericSummary:
        if other.accuracy != self.accuracy:
            raise ValueError("cannot add numeric summaries of different accuracy")
        keys, counts = add_sparse(self.keys, self.counts, other.keys, other.counts)
        return NumericSummary(self.accuracy, keys, counts, self.missing + other.missing, self.sum + other.sum,
                              self.sumsq + other.sumsq, self.sumsq_overflow or other.sumsq_overflow)

    @classmethod
    def add_all(cls, items: Sequence[NumericSummary]) -> NumericSummary:
        """The sum of many summaries in one pass (see summaries.base.add_all)."""
        first = items[0]
        if any(s.accuracy != first.accuracy for s in items):
            raise ValueError("cannot add numeric summaries of different accuracy")
        keys, counts = add_sparse_all([s.keys for s in items], [s.counts for s in items])
        return NumericSummary(first.accuracy, keys, counts, sum(s.missing for s in items), sum(s.sum for s in items),
                              sum(s.sumsq for s in items), any(s.sumsq_overflow for s in items))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NumericSummary) and self.accuracy == other.accuracy
                and np.array_equal(self.keys, other.keys) and np.array_equal(self.counts, other.counts)
                and (self.missing, self.sum, self.sumsq, self.sumsq_overflow)
                == (other.missing, other.sum, other.sumsq, other.sumsq_overflow))

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "v": FORMAT_VERSION, "accuracy": self.accuracy,
            "keys": pack(self.keys, "i8"), "counts": pack(self.counts, "i8"), "missing": self.missing,
            "sum": exact.encode(self.sum), "sumsq": exact.encode(self.sumsq), "sumsq_overflow": self.sumsq_overflow,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericSummary:
        check_version(d, "numeric")
        keys, counts = unpack(d["keys"], "i8"), unpack(d["counts"], "i8")
        if not (keys.size == counts.size and np.all(keys[1:] > keys[:-1]) and np.all(counts > 0)
                and int(d["missing"]) >= 0):
            raise ValueError("inconsistent numeric summary")
        return cls(float(d["accuracy"]), keys, counts, int(d["missing"]), exact.decode(d["sum"]),
                   exact.decode(d["sumsq"]), bool(d["sumsq_overflow"]))


class NumericSummarizer:
    """Codes, summaries and comparison bins of one numeric feature on the log-linear grid."""

    kind = "numeric"

    def __init__(self, num_bins: int, accuracy: float = DEFAULT_ACCURACY):
        if not 0 < accuracy < 1:
            raise ValueError(f"relative accuracy must be in (0, 1), got {accuracy}")
        self.num_bins, self.accuracy = num_bins, accuracy
        self.gamma = (1 + accuracy) / (1 - accuracy)
        self.log_gamma = math.log(self.gamma)

    def codes(self, values: Sequence[float] | np.ndarray) -> NumericCodes:
        x = np.asarray(values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if x.size and x.min() > 0 and x.max() < np.inf:  # the usual batch: finite and positive
                return self._positive(x)
            mag = np.abs(x)
            finite = np.isfinite(x) & (mag > 0)
            i = np.ceil(np.log(mag[finite]) / self.log_gamma).astype(np.int64) + OFFSET
        codes = np.zeros(x.size, dtype=np.int64)
        codes[finite] = np.where(x[finite] > 0, i, -i)
        codes[x == np.inf] = INF
        codes[x == -np.inf] = -INF
        codes[np.isnan(x)] = MISSING_CODE
        ids, table = _dense(codes)
        return NumericCodes(codes, x, ids, table)

    def _positive(self, x: np.ndarray) -> NumericCodes:
        """:meth:`codes` of finite, positive values: fewer passes, the same codes."""
        codes = np.ceil(np.log(x) / self.log_gamma).astype(np.int64) + OFFSET
        ids, table = _dense(codes)
        return NumericCodes(codes, x, ids, table)

    def take(self, codes: NumericCodes, sel: np.ndarray) -> NumericCodes:
        ids = None if codes.ids is None else codes.ids[sel]
        return NumericCodes(codes.codes[sel], codes.values[sel], ids, codes.table)

    def summarize(self, codes: NumericCodes) -> NumericSummary:
        n = codes.codes.size
        return self.summarize_groups(codes, np.arange(n), np.zeros(n, dtype=np.int64), 1)[0]

    def summarize_groups(self, codes: NumericCodes, sel: np.ndarray, groups: np.ndarray,
                         n_groups: int) -> list[NumericSummary]:
        if codes.ids is None or codes.table is None:
            ids, table = _dense(codes.codes[sel])
        else:
            ids, table = codes.ids[sel], codes.table
        m = table.size
        counts = np.bincount(group_offsets(groups, n_groups, m + 1) + ids, minlength=n_groups * (m + 1))
        counts = counts.astype(np.int64).reshape(n_groups, m + 1)
        x = codes.values[sel]
        fin = np.isfinite(x)
        xg, gg = (x, groups) if fin.all() else (x[fin], groups[fin])
        with np.errstate(over="ignore"):
            sq = xg * xg
        sq_ok = np.isfinite(sq)
        overflow = set() if sq_ok.all() else set(gg[~sq_ok].tolist())
        sums = exact.exact_sums(xg, gg, n_groups)
        sumsqs = exact.exact_sums(sq[sq_ok], gg[sq_ok], n_groups) if overflow else exact.exact_sums(sq, gg, n_groups)
        out = []
        for g, row in enumerate(counts):
            nz = np.flatnonzero(row[:m])
            out.append(NumericSummary(self.accuracy, table[nz], row[nz], int(row[m]), sums[g], sumsqs[g],
                                      g in overflow))
        return out

    def empty(self) -> NumericSummary:
        return NumericSummary(self.accuracy, np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0, 0)

    def from_dict(self, d: dict[str, Any]) -> NumericSummary:
        return NumericSummary.from_dict(d)

    # -- the grid

    def bounds(self, code: int) -> tuple[float, float]:
        """The value range ``(low, high)`` of one bucket (closed where the value is attained)."""
        if code == 0:
            return 0.0, 0.0
        if abs(code) == INF:
            return (math.inf, math.inf) if code > 0 else (-math.inf, -math.inf)
        i = abs(code) - OFFSET
        lo, hi = _pow(self.gamma, i - 1), _pow(self.gamma, i)
        return (lo, hi) if code > 0 else (-hi, -lo)

    def representative(self, codes: np.ndarray) -> np.ndarray:
        """A value within the relative accuracy of every value in each bucket."""
        c = np.asarray(codes, dtype=np.int64)
        out = np.zeros(c.size, dtype=np.float64)
        inf = np.abs(c) == INF
        fin = (c != 0) & ~inf
        with np.errstate(over="ignore"):
            v = 2.0 * np.power(self.gamma, (np.abs(c[fin]) - OFFSET).astype(np.float64)) / (self.gamma + 1.0)
        out[fin] = np.where(c[fin] > 0, v, -v)
        out[inf] = np.where(c[inf] > 0, np.inf, -np.inf)
        return out

    def _bin_ends(self, pooled: NumericSummary) -> np.ndarray:
        """Positions in ``pooled.keys`` of the last bucket of each quantile bin."""
        cum = np.cumsum(pooled.counts)
        targets = cum[-1] * np.arange(1, self.num_bins) / self.num_bins
        return np.unique(np.append(np.searchsorted(cum, targets, side="left"), pooled.keys.size - 1))

    def bins(self, summaries: Sequence[NumericSummary]) -> tuple[tuple[str, ...], list[np.ndarray]]:
        """``num_bins`` quantile bins of the pooled buckets, then ``__missing__``."""
        pooled = _pool(summaries)
        keys = pooled.keys
        if keys.size == 0:
            return (MISSING,), [np.asarray([s.missing], dtype=np.int64) for s in summaries]
        last = self._bin_ends(pooled)
        first = np.concatenate([[0], last[:-1] + 1])
        labels = tuple(_label(self.bounds(int(keys[a]))[0], self.bounds(int(keys[b]))[1], int(keys[a]))
                       for a, b in zip(first.tolist(), last.tolist()))
        hi_codes = keys[last]  # a bucket belongs to the first bin whose last code is >= it
        out = []
        for s in summaries:
            b = np.searchsorted(hi_codes, s.keys, side="left")
            c = np.bincount(b, weights=s.counts, minlength=hi_codes.size).astype(np.int64)
            out.append(np.append(c, s.missing).astype(np.int64))
        return (*labels, MISSING), out

    def support(self, summaries: Sequence[NumericSummary]) -> Support:
        """The finite buckets of the pooled summaries at their representative values
        (each within the relative accuracy of every value in it), each summary's
        counts in them, and the comparison bin of :meth:`bins` each falls in."""
        pooled = _pool(summaries)
        keys = pooled.keys
        if keys.size == 0:
            return Support(np.zeros(0), [np.zeros(0, np.int64) for _ in summaries], np.zeros(0, np.int64), 1)
        hi_codes = keys[self._bin_ends(pooled)]
        values = self.representative(keys)
        keep = np.isfinite(values)
        keys, values = keys[keep], values[keep]
        counts = []
        for s in summaries:
            c = np.zeros(keys.size, dtype=np.int64)
            at = np.searchsorted(keys, s.keys)
            hit = at < keys.size
            hit[hit] = keys[at[hit]] == s.keys[hit]
            c[at[hit]] = s.counts[hit]
            counts.append(c)
        return Support(values, counts, np.searchsorted(hi_codes, keys, side="left"), hi_codes.size + 1)


def _dense(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, table)``: the distinct present codes ascending, and each event's index
    in them (``len(table)`` for missing).  A ``bincount`` over the codes' range when it
    is small (the usual case: one sign, a few hundred buckets), else a sort."""
    present = codes != MISSING_CODE
    all_present = bool(present.all())
    p = codes if all_present else codes[present]
    if p.size == 0:
        return np.zeros(codes.size, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo, hi = int(p.min()), int(p.max())
    if hi - lo <= max(4 * p.size, 4096):
        seen = np.bincount(p - lo, minlength=hi - lo + 1) > 0
        table = np.flatnonzero(seen) + lo
        rank = np.cumsum(seen) - 1
        ids_p = rank[p - lo]
    else:
        table, inv = np.unique(p, return_inverse=True)
        ids_p = inv.reshape(-1)
    if all_present:
        return ids_p.astype(np.int64, copy=False), table.astype(np.int64)
    ids = np.full(codes.size, table.size, dtype=np.int64)
    ids[present] = ids_p
    return ids, table.astype(np.int64)


def _pool(summaries: Sequence[NumericSummary]) -> NumericSummary:
    pooled = summaries[0]
    for s in summaries[1:]:
        pooled = pooled + s
    return pooled


def _pow(g: float, i: int) -> float:
    try:
        return g**i
    except OverflowError:
        return math.inf


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _label(lo: float, hi: float, first_code: int) -> str:
    if lo == hi:
        return _fmt(lo)
    # positive buckets are (lo, hi]; a bin starting at zero or a negative bucket includes its low end
    left = "(" if first_code > 0 and abs(first_code) != INF else "["
    return f"{left}{_fmt(lo)}, {_fmt(hi)}]"
