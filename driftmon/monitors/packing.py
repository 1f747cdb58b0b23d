"""Compact JSON-able arrays: base64 of numpy bytes (zlib-compressed or not), and sparse
count matrices as their non-zero cells.  Used by the entities monitor's snapshot and by the
scale-out entity records and state (:mod:`driftmon.scale.entity_records`)."""

from __future__ import annotations

import base64
import math
import zlib
from typing import Any

import numpy as np


def pack(a: np.ndarray, compress: bool = True) -> str:
    """Base64 of the array's bytes (zlib-compressed unless ``compress`` is False: random hashes)."""
    raw = np.ascontiguousarray(a).tobytes()
    return base64.b64encode(zlib.compress(raw, 1) if compress else raw).decode()


def unpack(s: str, dtype: Any, shape: tuple[int, ...], compressed: bool = True) -> np.ndarray:
    raw = base64.b64decode(s)
    a = np.frombuffer(zlib.decompress(raw) if compressed else raw, dtype=dtype)
    if a.size != math.prod(shape):
        raise ValueError(f"entities snapshot: expected {math.prod(shape)} values of {np.dtype(dtype)}, got {a.size}")
    return a.reshape(shape).copy()


def pack_counts(m: np.ndarray) -> dict[str, str]:
    """A count matrix as its non-zero cells: the gaps between their flat indices and their values,
    zlib-compressed (``"z": "1"``; users touch few categories, so gaps are small and repeat)."""
    flat = m.reshape(-1)
    idx = np.flatnonzero(flat)
    wide = flat.size > np.iinfo(np.uint32).max
    gaps = np.diff(idx, prepend=0).astype(np.uint64 if wide else np.uint32)
    return {"idx": pack(gaps), "val": pack(flat[idx]), "nnz": str(idx.size), "z": "1"}


def unpack_counts(d: dict[str, str], shape: tuple[int, int]) -> np.ndarray:
    """(Also reads the older form without ``"z"``: absolute indices, uncompressed.)"""
    nnz, size = int(d["nnz"]), math.prod(shape)
    wide = size > np.iinfo(np.uint32).max
    z = d.get("z") == "1"
    idx = unpack(d["idx"], np.uint64 if wide else np.uint32, (nnz,), compressed=z).astype(np.int64)
    if z:
        idx = np.cumsum(idx)
    val = unpack(d["val"], np.uint16, (nnz,), compressed=z)
    if nnz and (idx.min() < 0 or idx.max() >= size or not bool(np.all(np.diff(idx) > 0))):
        raise ValueError("entities snapshot: count cells out of range or out of order")
    out = np.zeros(size, dtype=np.uint16)
    out[idx] = val
    return out.reshape(shape)
