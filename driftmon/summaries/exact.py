"""Exact sums of float64 values, so that adding partial sums never depends on order.

Floating-point addition is not associative: summing the same numbers in two
orders (two partitions, two batchings) can differ in the last bits, and a
merged summary would no longer equal the summary of the union.  These sums
are kept as Python integers in units of 2**-1074 (the smallest subnormal), so
every finite float64 is an exact integer multiple and addition is exact.

>>> import numpy as np
>>> x = np.array([0.1, 0.2, 0.3, 1e300, -1e300])
>>> to_float(exact_sum(x)) == to_float(exact_sum(x[::-1]))
True
>>> to_float(exact_sum(np.array([0.1, 0.2]))) == 0.30000000000000004  # the exact sum, rounded once
True
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

SCALE_BITS = 1074  # 2**-1074 is the smallest positive float64
_LOW = 26
_MASK = (1 << _LOW) - 1


def exact_sum(x: np.ndarray) -> int:
    """The exact sum of finite float64 values, as an integer multiple of 2**-1074.

    Vectorised: each value is split into a 53-bit integer mantissa and an
    exponent (``frexp``); mantissas are summed per exponent in two 26/27-bit
    halves (exact in float64 for up to 2**26 values per call), and only the
    distinct exponents (a few dozen) are combined in Python integers.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0
    m, e = np.frexp(x)
    mant = (m * 2.0**53).astype(np.int64)  # exact: |m| < 1 has 53 significant bits
    hi, lo = mant >> _LOW, mant & _MASK
    exps, inv = np.unique(e, return_inverse=True)
    inv = inv.reshape(-1)
    shi = np.bincount(inv, weights=hi, minlength=exps.size)
    slo = np.bincount(inv, weights=lo, minlength=exps.size)
    total = 0
    for ex, h, lw in zip(exps.tolist(), shi.tolist(), slo.tolist()):
        part = (int(h) << _LOW) + int(lw)
        shift = ex - 53 + SCALE_BITS
        total += part << shift if shift >= 0 else part >> -shift  # exact: subnormal mantissas end in zeros
    return total


_BLOCK_BITS = 3
_BLOCK = 1 << _BLOCK_BITS  # exponents per bincount bin: a mantissa shifted by up to 7 bits still fits in int64
_HALF = 30  # ... and is summed in two 30/31-bit halves, exact in float64 for up to 2**22 values
_CHUNK = 1 << 22


def exact_sums(x: np.ndarray, groups: np.ndarray, n_groups: int) -> list[int]:
    """``[exact_sum(x[groups == g]) for g in range(n_groups)]`` in one vectorised pass.

    Each value is an integer mantissa times a power of two; values whose exponents fall in
    one block of ``_BLOCK`` have their mantissas shifted onto the block's lowest exponent,
    and the two halves are summed per (group, block) with one ``bincount`` each, over the
    batch's own exponent range.  Only those few sums become Python integers."""
    x = np.asarray(x, dtype=np.float64)
    out = [0] * n_groups
    if x.size == 0:
        return out
    if x.size > _CHUNK:
        for lo_ in range(0, x.size, _CHUNK):
            chunk = exact_sums(x[lo_:lo_ + _CHUNK], groups[lo_:lo_ + _CHUNK], n_groups)
            out = [a + b for a, b in zip(out, chunk)]
        return out
    m, e = np.frexp(x)
    mant = (m * 2.0**53).astype(np.int64)  # x = mant * 2**(e - 53), |mant| < 2**53
    e = e.astype(np.int64)
    emin = int(e.min())
    rel = e - emin
    block, off = rel >> _BLOCK_BITS, rel & (_BLOCK - 1)  # divmod by _BLOCK, a power of two
    shifted = mant << off  # |shifted| < 2**60
    nblk = int(block.max()) + 1
    key = groups.astype(np.int64) * nblk + block
    size = n_groups * nblk
    shi = np.bincount(key, weights=shifted >> _HALF, minlength=size)
    slo = np.bincount(key, weights=shifted & ((1 << _HALF) - 1), minlength=size)
    for k in np.flatnonzero((shi != 0) | (slo != 0)).tolist():
        g, b = divmod(k, nblk)
        part = (int(shi[k]) << _HALF) + int(slo[k])
        shift = emin + b * _BLOCK - 53 + SCALE_BITS
        out[g] += part << shift if shift >= 0 else part >> -shift  # exact: the sum is a whole number of units
    return out


def to_float(total: int) -> float:
    """The exact sum rounded once to the nearest float64 (inf if it overflows)."""
    try:
        return float(Fraction(total, 1 << SCALE_BITS))
    except OverflowError:
        return float("inf") if total > 0 else float("-inf")


def encode(total: int) -> str:
    """Compact text form (hex) for JSON."""
    return hex(total)


def decode(text: str) -> int:
    return int(text, 16)
