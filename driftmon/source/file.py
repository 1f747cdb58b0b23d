"""JSON lines from a file or stdin, as a :class:`~driftmon.source.base.Source`.

What ``driftmon replay`` reads.  The file is one partition, ``(name, 0)``;
a record's offset is its line number among the non-blank lines (from 0), and
its value the line without its line break.  Blank lines are skipped, as
Kafka has no empty messages to mirror them.

>>> import io
>>> src = FileSource(io.BytesIO(b'{"a": 1}\\n\\n{"a": 2}\\r\\n'), batch=10)
>>> [(r.offset, r.value) for recs in src.poll_batches().values() for r in recs]
[(0, b'{"a": 1}'), (1, b'{"a": 2}')]
>>> src.poll_batches()
{}
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from typing import IO, Any, NamedTuple

from driftmon.source.base import Partition

BATCH = 10_000


class LineRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class Lines(Sequence[LineRecord]):
    """One batch of lines; ``values`` is the raw list (records are built only when read)."""

    def __init__(self, name: str, first: int, values: list[bytes]):
        self.name, self.first, self.values = name, first, values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self.values)
        return LineRecord(self.name, 0, self.first + i, None, self.values[i], [])


class FileSource:
    """Reads ``path`` (``-`` for stdin, or an open binary file) in batches of ``batch`` lines."""

    def __init__(self, path: str | IO[bytes], batch: int = BATCH, name: str | None = None):
        if isinstance(path, str):
            self._fh: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")
            self._owned = path != "-"
            self.name = name or path
        else:
            self._fh, self._owned, self.name = path, False, name or "file"
        self.batch = batch
        self._lines = self._read()
        self._next = 0
        self._committed: dict[Partition, int] = {}

    def _read(self) -> Iterator[bytes]:
        for line in self._fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line

    def poll_batches(self, timeout_ms: int | None = None) -> Mapping[Partition, Sequence[Any]]:
        values = list(islice(self._lines, self.batch))
        if not values:
            return {}
        first, self._next = self._next, self._next + len(values)
        return {(self.name, 0): Lines(self.name, first, values)}

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        self._committed.update(offsets)

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        target = offsets.get((self.name, 0))
        if target is None or target == self._next:
            return
        if target < self._next:
            raise ValueError(f"{self.name}: cannot seek back to line {target} (at {self._next})")
        for _ in islice(self._lines, target - self._next):
            pass
        self._next = target

    def assignment(self) -> set[Partition]:
        return {(self.name, 0)}

    def lag(self) -> dict[Partition, int]:
        return {}

    @property
    def committed(self) -> dict[Partition, int]:
        return dict(self._committed)

    def close(self) -> None:
        if self._owned:
            self._fh.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
