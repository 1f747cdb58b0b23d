"""The partials topic's per-entity records (``streams[].entities`` under ``scale:``).

One :class:`EntityPartial` per (stream, entity window, source partition, entity shard):
the sparse (entity, category column, count) cells of that source partition's events in
that event-time window, for the entities of one shard (``shard = XXH3-64(key) mod shards``,
``shards`` = the partials topic's partition count; it is sent to partials partition
``shard``), plus the source partition's category totals over *every* entity of the window
(the population mix each shard's monitor shrinks toward, so each shard sums the same
totals) and the largest event time of the window (the watermark ``idle_ttl`` counts from).
A source partition that counted events in a window sends its partial to every shard, even
with no cells (for the totals).  A shard's partial of many cells is cut into ``parts``
records of at most :data:`CELLS_PER_RECORD` cells (whole entities each, in key-hash order,
so a re-sent window is cut the same way); part 0 carries the totals.  Wire form (compact JSON, arrays as base64 of little-endian
numpy bytes, :mod:`driftmon.monitors.packing`; ``hashes`` raw, the rest zlib-compressed)::

    {"v": 1, "type": "entities", "stream": "interactions", "window": 19675, "topic": "events",
     "partition": 3, "shard": 1, "shards": 3, "part": 0, "parts": 1, "offsets": [1200, 2399], "t_max": 1700000123.5,
     "totals": [<count per category column>], "n": <entities>, "cells": <cells>,
     "hashes": <uint64 per entity>, "key_len": <uint32 per entity>, "key_bytes": <UTF-8 keys>,
     "last": <uint32 per entity: last event time, s>,
     "rows": <uint32 per cell: entity>, "cols": <uint16 per cell>, "counts": <uint32 per cell>}

:class:`EntityMark` is the entity windows' progress mark of one source partition and stream
(entity windows have their own size, so their own ``through``), sent to every partials
partition after the partials it covers::

    {"v": 1, "type": "emark", "stream": "interactions", "topic": "events", "partition": 3,
     "of": 6, "through": 19675, "idle": false}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.monitors.packing import pack, unpack
from driftmon.scale.sources import FromSource

FORMAT = 1
CELLS_PER_RECORD = 50_000  # about 450 kB of record: under the 1 MiB message size brokers accept by default


@dataclass(frozen=True, eq=False)
class EntityPartial(FromSource):
    stream: str
    window: int
    topic: str
    partition: int
    shard: int
    shards: int
    offsets: tuple[int, int]
    t_max: float  # largest event time of the window in this partition (-inf: none)
    totals: np.ndarray  # int64 per category column, every entity of the window
    hashes: np.ndarray  # uint64 per entity of this shard
    keys: list[str]
    last: np.ndarray  # uint32 per entity: its last event time in the window, whole seconds (rounded up)
    rows: np.ndarray  # int64 per cell: the entity
    cols: np.ndarray  # int64 per cell: the category column
    counts: np.ndarray  # int64 per cell
    part: int = 0
    parts: int = 1


@dataclass(frozen=True)
class EntityMark(FromSource):
    """Source partition ``(topic, partition)`` has closed every entity window of ``stream`` up to ``through``."""

    stream: str
    topic: str
    partition: int
    of: int
    through: int
    idle: bool = False


def to_dict(rec: EntityPartial | EntityMark) -> dict[str, Any]:
    if isinstance(rec, EntityMark):
        return {"v": FORMAT, "type": "emark", "stream": rec.stream, "topic": rec.topic, "partition": rec.partition,
                "of": rec.of, "through": rec.through, "idle": rec.idle}
    enc = [k.encode("utf-8", "surrogatepass") for k in rec.keys]
    return {"v": FORMAT, "type": "entities", "stream": rec.stream, "window": rec.window, "topic": rec.topic,
            "partition": rec.partition, "shard": rec.shard, "shards": rec.shards,
            "part": rec.part, "parts": rec.parts, "offsets": list(rec.offsets),
            "t_max": rec.t_max if np.isfinite(rec.t_max) else None,
            "totals": np.asarray(rec.totals, dtype=np.int64).tolist(), "n": len(rec.keys), "cells": int(rec.rows.size),
            "hashes": pack(rec.hashes.astype(np.uint64), compress=False),
            "key_len": pack(np.fromiter(map(len, enc), dtype=np.uint32, count=len(enc))),
            "key_bytes": pack(np.frombuffer(b"".join(enc), dtype=np.uint8)),
            "last": pack(rec.last.astype(np.uint32)), "rows": pack(rec.rows.astype(np.uint32)),
            "cols": pack(rec.cols.astype(np.uint16)), "counts": pack(rec.counts.astype(np.uint32))}


def from_dict(d: dict[str, Any]) -> EntityPartial | EntityMark:
    """Raises ValueError (or KeyError/TypeError, which the caller reports) on malformed input."""
    if d["type"] == "emark":
        m = EntityMark(_str(d["stream"]), _str(d["topic"]), _int(d["partition"]), _int(d["of"]),
                       _int(d["through"]), bool(d["idle"]))
        if not 0 <= m.partition < m.of:
            raise ValueError(f"mark partition {m.partition} outside 0..{m.of - 1}")
        return m
    n, cells = _int(d["n"]), _int(d["cells"])
    lens = unpack(d["key_len"], np.uint32, (n,)).astype(np.int64)
    raw = unpack(d["key_bytes"], np.uint8, (int(lens.sum()),)).tobytes()
    ends = np.cumsum(lens).tolist()
    keys = [raw[a:b].decode("utf-8", "surrogatepass") for a, b in zip([0, *ends[:-1]], ends)]
    rows = unpack(d["rows"], np.uint32, (cells,)).astype(np.int64)
    cols = unpack(d["cols"], np.uint16, (cells,)).astype(np.int64)
    totals = np.asarray([_int(x) for x in d["totals"]], dtype=np.int64)
    if cells and (int(rows.max()) >= n or int(cols.max()) >= totals.size):
        raise ValueError("entity partial: a cell outside its entities or categories")
    shard, shards = _int(d["shard"]), _int(d["shards"])
    if not 0 <= shard < shards:
        raise ValueError(f"entity partial: shard {shard} outside 0..{shards - 1}")
    part, parts = _int(d["part"]), _int(d["parts"])
    if not 0 <= part < parts:
        raise ValueError(f"entity partial: part {part} outside 0..{parts - 1}")
    first, last_off = (_int(x) for x in d["offsets"])
    t_max = -np.inf if d["t_max"] is None else float(d["t_max"])
    return EntityPartial(_str(d["stream"]), _int(d["window"]), _str(d["topic"]), _int(d["partition"]), shard,
                         shards, (first, last_off), t_max, totals,
                         unpack(d["hashes"], np.uint64, (n,), compressed=False), keys,
                         unpack(d["last"], np.uint32, (n,)), rows, cols,
                         unpack(d["counts"], np.uint32, (cells,)).astype(np.int64), part, parts)


def _int(x: Any) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise ValueError(f"expected an integer, got {x!r}")
    return x


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(f"expected a string, got {x!r}")
    return x
