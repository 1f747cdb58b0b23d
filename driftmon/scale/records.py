"""The partials topic's records: partial window summaries and progress marks.

Both are one compact JSON object (orjson) with a format version ``"v"`` and a
``"type"``; summaries are carried in their own serialization
(``summary.to_dict()``: sparse counts as base64 arrays), inside a
:class:`~driftmon.windows.base.WindowState` dict restricted to one feature::

    {"v": 1, "type": "partial", "stream": "interactions", "feature": "item_id",
     "window": 26666668, "topic": "events", "partition": 3, "offsets": [1200, 2399],
     "state": {"segments": [["ios", [<summary dict>]], ...], "t_min": ..., "t_max": ...}}
    {"v": 1, "type": "mark", "topic": "events", "partition": 3, "of": 6,
     "through": 26666668, "idle": false}

A partial is keyed by its series (``stream`` and ``feature``) so that every
partial of a series lands on one partials partition; a mark goes to every
partials partition (``of`` is the source topic's partition count, so a
reducer knows which source partitions to wait for).  ``through`` is the last
window index the source partition has closed: every partial it will ever send
for windows up to ``through`` was sent before the mark.

Per-entity interest drift adds two types, ``"entities"`` and ``"emark"``
(:mod:`driftmon.scale.entity_records`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from driftmon.scale.entity_records import EntityMark, EntityPartial, from_dict, to_dict
from driftmon.scale.sources import FromSource
from driftmon.summaries.base import Summarizer
from driftmon.windows.base import WindowState

FORMAT = 1


@dataclass(frozen=True)
class Partial(FromSource):
    """One source partition's summaries of one (stream, feature) window."""

    stream: str
    feature: str
    window: int
    topic: str
    partition: int
    offsets: tuple[int, int]  # first and last event offset counted (informational; -1 if unknown)
    state: WindowState  # segments -> [the feature's summary]

    @property
    def series(self) -> tuple[str, str]:
        return (self.stream, self.feature)


@dataclass(frozen=True)
class Mark(FromSource):
    """Source partition ``(topic, partition)`` (of ``of``) has closed every window up to ``through``."""

    topic: str
    partition: int
    of: int
    through: int
    idle: bool = False


def series_key(stream: str, feature: str) -> bytes:
    """The partials-topic key of a series: its stream's name, so every series of a stream lands
    on one partials partition (by Kafka's default murmur2 partitioner) and one reducer tests a
    window's features x segments x horizons as one family (Benjamini-Hochberg), exactly as one
    process does; the record names its series itself.  Reducer parallelism is therefore at most
    the number of streams."""
    return stream.encode()


Record = Partial | Mark | EntityPartial | EntityMark


def encode(rec: Record) -> bytes:
    if isinstance(rec, (EntityPartial, EntityMark)):
        return orjson.dumps(to_dict(rec))
    if isinstance(rec, Partial):
        return orjson.dumps({"v": FORMAT, "type": "partial", "stream": rec.stream, "feature": rec.feature,
                             "window": rec.window, "topic": rec.topic, "partition": rec.partition,
                             "offsets": list(rec.offsets), "state": rec.state.to_dict()})
    return orjson.dumps({"v": FORMAT, "type": "mark", "topic": rec.topic, "partition": rec.partition,
                         "of": rec.of, "through": rec.through, "idle": rec.idle})


def decode(data: bytes, summarizers: Mapping[tuple[str, str], Sequence[Summarizer]]) -> Record:
    """Parse one record; ``summarizers[(stream, feature)]`` is the one-feature summarizer list.
    Raises ValueError on anything malformed or of an unknown version or series."""
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"partials record is not JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("v") != FORMAT:
        raise ValueError(f"unknown partials record format {d.get('v') if isinstance(d, dict) else d!r}")
    try:
        if d["type"] == "mark":
            m = Mark(_str(d["topic"]), _int(d["partition"]), _int(d["of"]), _int(d["through"]), bool(d["idle"]))
            if not 0 <= m.partition < m.of:
                raise ValueError(f"mark partition {m.partition} outside 0..{m.of - 1}")
            return m
        if d["type"] == "partial":
            series = (_str(d["stream"]), _str(d["feature"]))
            if series not in summarizers:
                raise ValueError(f"partial for unknown series {series}")
            first, last = (_int(x) for x in d["offsets"])
            return Partial(series[0], series[1], _int(d["window"]), _str(d["topic"]), _int(d["partition"]),
                           (first, last), WindowState.from_dict(d["state"], summarizers[series]))
        if d["type"] in ("entities", "emark"):
            return from_dict(d)
    except (KeyError, TypeError, zlib.error) as exc:
        raise ValueError(f"malformed partials record ({type(exc).__name__}: {exc})") from None
    raise ValueError(f"unknown partials record type {d['type']!r}")


def _int(x: Any) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise ValueError(f"expected an integer, got {x!r}")
    return x


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(f"expected a string, got {x!r}")
    return x
