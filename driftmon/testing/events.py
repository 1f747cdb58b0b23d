"""Columnar event tables: what the drift generators and the real-data loaders return.

An :class:`Events` holds the event times and one numpy column per field, in
time order, so statistics over millions of events (window shares, standard
deviations, total variation) stay vectorised, while the pipeline still sees
what a producer would send: one dict, or one JSON document, per event.

* numeric fields: a float or int array; ``NaN`` is a missing value (``null``);
* categorical fields: a :class:`Categorical` (integer codes into ``labels``,
  ``-1`` for missing), emitted as the label itself (a string, bool or number).

>>> ev = Events(np.array([1.0, 2.0]), {"c": Categorical(np.array([0, -1]), ("a", "b")),
...                                      "x": np.array([0.5, np.nan])})
>>> list(ev)
[{'ts': 1.0, 'c': 'a', 'x': 0.5}, {'ts': 2.0, 'c': None, 'x': None}]
>>> next(ev.json_batches(10))
[b'{"ts":1.0,"c":"a","x":0.5}', b'{"ts":2.0,"c":null,"x":null}']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson


@dataclass(frozen=True)
class Categorical:
    """A categorical column: ``codes[i]`` indexes ``labels``; ``-1`` is missing."""

    codes: np.ndarray
    labels: tuple[Any, ...]

    def __len__(self) -> int:
        return int(self.codes.size)

    def take(self, index: slice | np.ndarray) -> Categorical:
        return Categorical(self.codes[index], self.labels)

    def values(self) -> list[Any]:
        """The labels as Python objects (``None`` where missing)."""
        table = np.empty(len(self.labels) + 1, dtype=object)
        table[:-1] = self.labels
        table[-1] = None
        return table[self.codes].tolist()  # code -1 picks the trailing None

    def counts(self) -> np.ndarray:
        """Events per label (missing values not counted)."""
        return np.bincount(self.codes[self.codes >= 0], minlength=len(self.labels))

    def shares(self) -> dict[Any, float]:
        c = self.counts()
        total = max(int(c.sum()), 1)
        return {label: float(n) / total for label, n in zip(self.labels, c.tolist())}


Column = Categorical | np.ndarray


def _numeric_values(a: np.ndarray) -> list[Any]:
    vals = a.tolist()
    if a.dtype.kind == "f":
        for i in np.flatnonzero(np.isnan(a)).tolist():
            vals[i] = None
    return vals


@dataclass
class Events:
    """Events in time order: ``ts`` (float epoch seconds) plus one column per field."""

    ts: np.ndarray
    columns: dict[str, Column]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ts = np.asarray(self.ts, dtype=np.float64)
        for name, col in self.columns.items():
            if len(col) != self.ts.size:
                raise ValueError(f"column {name!r} has {len(col)} values for {self.ts.size} events")

    def __len__(self) -> int:
        return int(self.ts.size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for lo in range(0, len(self), 50_000):
            yield from self.dicts(lo, lo + 50_000)

    @property
    def fields(self) -> tuple[str, ...]:
        return ("ts", *self.columns)

    def is_categorical(self, name: str) -> bool:
        return isinstance(self.columns[name], Categorical)

    def column(self, name: str) -> Column:
        return self.columns[name]

    def take(self, index: slice | np.ndarray) -> Events:
        """A sub-table (a slice or a boolean/integer index), same metadata."""
        cols: dict[str, Column] = {
            k: v.take(index) if isinstance(v, Categorical) else v[index] for k, v in self.columns.items()
        }
        return Events(self.ts[index], cols, dict(self.meta))

    def dicts(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Events ``start:stop`` as dicts ``{"ts": ..., field: value, ...}``."""
        sl = slice(start, stop)
        names = self.fields
        lists: list[Sequence[Any]] = [self.ts[sl].tolist()]
        for col in self.columns.values():
            lists.append(col.take(sl).values() if isinstance(col, Categorical) else _numeric_values(col[sl]))
        return [dict(zip(names, row)) for row in zip(*lists)]

    def json_batches(self, size: int = 10_000) -> Iterator[list[bytes]]:
        """Events as JSON documents (what a producer sends), ``size`` per list."""
        dumps = orjson.dumps
        for lo in range(0, len(self), size):
            yield [dumps(d) for d in self.dicts(lo, lo + size)]

    def jsonl(self) -> Iterator[bytes]:
        """One JSON line per event (newline included), for ``driftmon replay``."""
        for batch in self.json_batches():
            for line in batch:
                yield line + b"\n"


def window_bounds(events: Events, window: int | None = None, seconds: float | None = None) -> np.ndarray:
    """Start index of each window and the end of the last: count windows of ``window``
    events, or event-time windows of ``seconds`` aligned to multiples of ``seconds``
    (as driftmon's tumbling windows are).  Empty time windows are skipped."""
    n = len(events)
    if (window is None) == (seconds is None):
        raise ValueError("give exactly one of window (events) or seconds")
    if window is not None:
        return np.append(np.arange(0, n, window), n)
    assert seconds is not None
    idx = np.floor(events.ts / seconds).astype(np.int64)
    starts = np.flatnonzero(np.diff(idx, prepend=idx[0] - 1) != 0) if n else np.zeros(0, dtype=np.int64)
    return np.append(starts, n)

