"""Several JSON-lines files, one per stream, merged by event time (``driftmon replay
--input STREAM=PATH ...``).

Each file is read lazily and assumed to be (roughly) in event-time order, as a
topic partition is; the files are k-way merged on each line's event time (the
stream's ``timestamp`` field and unit), ties in the order the inputs were given,
then line order.  A line whose time cannot be read (it will be rejected by the
pipeline with its reason) keeps the time of the line before it, so it stays
where it was in its file.  The result is a sequence of chunks, each a list of
``(stream, values)`` runs with the chunk's lines of each stream in file order.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson

from driftmon.config import StreamConfig
from driftmon.source.base import values_of
from driftmon.source.file import BATCH, FileSource


def event_time(line: bytes, path: tuple[str, ...], unit: str) -> float | None:
    """The event time of one JSON line in epoch seconds, or None when it cannot be read."""
    try:
        obj: Any = orjson.loads(line)
        for key in path:
            obj = obj[key]
        if unit == "iso":
            if not isinstance(obj, str):
                return None
            text = obj[:-1] + "+00:00" if obj.endswith(("Z", "z")) else obj
            return datetime.fromisoformat(text).timestamp()
        if isinstance(obj, bool) or not isinstance(obj, (int, float)):
            return None
        t = float(obj) / 1000.0 if unit == "ms" else float(obj)
        return t if math.isfinite(t) else None
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, ValueError, OverflowError):
        return None


def _keyed(stream: StreamConfig, order: int, path: str, batch: int) -> Iterator[tuple[float, int, int, bytes]]:
    ts_path = tuple(stream.timestamp.field.split("."))
    unit = stream.timestamp.unit
    last = -math.inf
    seq = 0
    with FileSource(path, batch) as src:
        while batches := src.poll_batches():
            for lines in batches.values():
                for line in values_of(lines):
                    t = event_time(line, ts_path, unit)
                    if t is not None:
                        last = t
                    yield last, order, seq, line
                    seq += 1


def merged_chunks(inputs: Sequence[tuple[StreamConfig, str]],
                  batch: int = BATCH) -> Iterator[list[tuple[str, list[bytes]]]]:
    """Chunks of at most ``batch`` lines of the merged inputs, each as ``[(stream, values)]``
    (one entry per stream present in the chunk, in input order)."""
    names = [s.name for s, _ in inputs]
    merged = heapq.merge(*(_keyed(s, i, p, batch) for i, (s, p) in enumerate(inputs)))
    while True:
        runs: list[list[bytes]] = [[] for _ in inputs]
        n = 0
        for _, order, _, line in merged:
            runs[order].append(line)
            n += 1
            if n >= batch:
                break
        if not n:
            return
        yield [(names[i], values) for i, values in enumerate(runs) if values]
