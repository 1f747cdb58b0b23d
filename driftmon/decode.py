"""Decode raw JSON events into columns: event time, segment key, feature values.

This is the only per-event Python loop in the pipeline (JSON has to be parsed
one document at a time); everything after it works on numpy arrays.  A bad
event never raises: it is returned in ``rejected`` with one of the reasons
``invalid_json``, ``bad_type``, ``missing_field`` or ``bad_timestamp``.

Missing or null *feature* values are not errors: they are counted in the
feature's ``__missing__`` bin.  Missing segment fields give the segment value
``__missing__``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from driftmon.config import StreamConfig

REASONS = ("invalid_json", "bad_type", "missing_field", "bad_timestamp")
MAX_EPOCH = 7258118400.0  # 2200-01-01: anything later is not a real event time
_ABSENT = object()


class _Reject(Exception):
    def __init__(self, reason: str):
        self.reason = reason


@dataclass
class DecodedBatch:
    """Accepted events as columns, plus the input positions that were rejected."""

    ts: np.ndarray  # float64 epoch seconds, one per accepted event
    segments: list[str] | None  # segment key per accepted event (None when not segmented)
    features: list[list[Any]]  # per feature: str|None (categorical) or float (numeric, NaN missing)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (input index, reason)
    accepted: list[int] = field(default_factory=list)  # input index of each accepted event

    def __len__(self) -> int:
        return int(self.ts.size)

    @staticmethod
    def concat(batches: Sequence[DecodedBatch]) -> DecodedBatch:
        nf = len(batches[0].features)
        segs = None if batches[0].segments is None else [s for b in batches for s in b.segments or ()]
        return DecodedBatch(
            ts=np.concatenate([b.ts for b in batches]) if batches else np.empty(0),
            segments=segs,
            features=[[v for b in batches for v in b.features[j]] for j in range(nf)],
        )


def _path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return _ABSENT
        obj = obj.get(key, _ABSENT)
        if obj is _ABSENT:
            return _ABSENT
    return obj


def _categorical(v: Any) -> str | None:
    if v is _ABSENT or v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    raise _Reject("bad_type")


def _numeric(v: Any) -> float:
    if v is _ABSENT or v is None:
        return math.nan
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise _Reject("bad_type")


class Decoder:
    """Turns raw event bytes of one stream into a :class:`DecodedBatch`.

    >>> from driftmon.configload import parse_config
    >>> cfg = parse_config({"streams": [{"name": "s", "features": [
    ...     {"name": "cat", "type": "categorical", "categories": ["a", "b"]}]}]})
    >>> batch = Decoder(cfg.streams[0], clock=lambda: 2e9).decode(
    ...     [b'{"ts": 1700000000, "cat": "a"}', b'not json', b'{"cat": "b"}'])
    >>> batch.features[0], batch.rejected
    (['a'], [(1, 'invalid_json'), (2, 'missing_field')])
    """

    def __init__(self, stream: StreamConfig, clock: Callable[[], float] = time.time):
        self.ts_path = _path(stream.timestamp.field)
        self.ts_unit = stream.timestamp.unit
        self.max_skew = stream.timestamp.max_future_skew
        self.seg_paths = [_path(s) for s in stream.segment_by]
        self.feature_paths = [_path(f.field) for f in stream.features]
        self.converters = [_categorical if f.type == "categorical" else _numeric for f in stream.features]
        self.clock = clock

    def _timestamp(self, v: Any) -> float:
        if v is _ABSENT or v is None:
            raise _Reject("missing_field")
        if self.ts_unit == "iso":
            if not isinstance(v, str):
                raise _Reject("bad_timestamp")
            try:
                dt = datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v)
            except ValueError:
                raise _Reject("bad_timestamp") from None
            if dt.tzinfo is None:
                raise _Reject("bad_timestamp")  # RFC 3339 requires an offset
            ts = dt.timestamp()
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _Reject("bad_timestamp")
            ts = float(v) / 1000.0 if self.ts_unit == "ms" else float(v)
        if not (0.0 < ts < MAX_EPOCH):  # also false for NaN
            raise _Reject("bad_timestamp")
        return ts

    def decode(self, values: Sequence[bytes | str]) -> DecodedBatch:
        loads, get = orjson.loads, _get
        ts_out: list[float] = []
        seg_out: list[str] = []
        cols: list[list[Any]] = [[] for _ in self.feature_paths]
        rejected: list[tuple[int, str]] = []
        accepted: list[int] = []
        pairs = list(zip(self.feature_paths, self.converters))
        segmented = bool(self.seg_paths)
        horizon = self.clock() + self.max_skew if self.max_skew is not None else MAX_EPOCH
        for i, raw in enumerate(values):
            try:
                obj = loads(raw)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                rejected.append((i, "invalid_json"))
                continue
            try:
                if not isinstance(obj, dict):
                    raise _Reject("bad_type")
                ts = self._timestamp(get(obj, self.ts_path))
                if ts > horizon:
                    raise _Reject("bad_timestamp")
                row = [conv(get(obj, p)) for p, conv in pairs]
                if segmented:
                    seg = "|".join(_segment_value(get(obj, p)) for p in self.seg_paths)
            except _Reject as r:
                rejected.append((i, r.reason))
                continue
            except RecursionError:  # pragma: no cover - orjson caps depth first
                rejected.append((i, "invalid_json"))
                continue
            ts_out.append(ts)
            accepted.append(i)
            for col, v in zip(cols, row):
                col.append(v)
            if segmented:
                seg_out.append(seg)
        return DecodedBatch(
            ts=np.asarray(ts_out, dtype=np.float64),
            segments=seg_out if segmented else None,
            features=cols,
            rejected=rejected,
            accepted=accepted,
        )


def _segment_value(v: Any) -> str:
    if v is _ABSENT or v is None:
        return "__missing__"
    if isinstance(v, (dict, list)):
        raise _Reject("bad_type")
    s = v if isinstance(v, str) else str(v)
    return s[:64]
