"""What a mapper tracks per source partition besides its counts.

Both mappers (:mod:`driftmon.scale.mapper` for the series, :mod:`driftmon.scale.entity_mapper`
for per-entity counts) send a partition's partials with the offset range they cover, then a
progress mark (``through``: the last window the partition closed), and mark a partition idle
once it delivered nothing for ``window.idle_timeout`` of processing time.  This is that
bookkeeping, once; a mapper's checkpoint of a partition carries :meth:`SourceProgress.snapshot`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from driftmon.scale.records import Source

NEVER = -(2**62)  # ``through`` of a partition that has closed no window


class SourceProgress:
    """Per source partition: the offsets counted since its last partials, the last ``through``
    it marked, whether it is idle, and when it last delivered (processing time)."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.first_offset: dict[Source, int] = {}  # first offset counted since the partition's last partials
        self.last_offset: dict[Source, int] = {}
        self.marked: dict[Source, int] = {}  # last ``through`` marked
        self.idle: dict[Source, bool] = {}
        self.seen: dict[Source, float] = {}  # processing time of the last event (or of the assignment)

    def polled(self, topic: str, ranges: Mapping[int, tuple[int, int]]) -> None:
        """A poll's ``{partition: (first, last offset)}`` of ``topic``."""
        for p, (first, last) in ranges.items():
            self.first_offset.setdefault((topic, p), first)
            self.last_offset[(topic, p)] = last

    def delivered(self, src: Source, now: float | None) -> None:
        if now is not None:
            self.seen[src] = now

    def take_range(self, src: Source) -> tuple[int, int]:
        """The offset range of the partials sent now (the next ones start after it)."""
        return (self.first_offset.pop(src, -1), self.last_offset.get(src, -1))

    def peek_range(self, src: Source) -> tuple[int, int]:
        """The offset range of partials of windows that stay open (sent before an idle mark)."""
        return (self.first_offset.get(src, -1), self.last_offset.get(src, -1))

    def advance(self, src: Source, through: int) -> bool:
        """True (and noted) when ``through`` is past the last mark: send a mark."""
        if through > self.marked.get(src, NEVER):
            self.marked[src] = through
            return True
        return False

    def back(self, src: Source, through: int) -> bool:
        """True (and noted) when an idle partition delivered again: send a non-idle mark at once."""
        if self.idle.get(src):
            self.idle[src] = False
            self.marked[src] = through
            return True
        return False

    def quiet(self, sources: Iterable[Source], now: float) -> list[Source]:
        """The partitions of ``sources`` that have just become idle (now marked so)."""
        out = []
        for src in sources:
            seen = self.seen.setdefault(src, now)
            if not self.idle.get(src) and now - seen > self.idle_timeout:
                self.idle[src] = True
                out.append(src)
        return out

    def is_idle(self, src: Source) -> bool:
        return bool(self.idle.get(src))

    def forget(self, src: Source) -> None:
        for d in (self.first_offset, self.last_offset, self.marked, self.idle, self.seen):
            d.pop(src, None)  # type: ignore[attr-defined]

    def snapshot(self, src: Source) -> dict[str, Any]:
        return {"first_offset": self.first_offset.get(src), "marked": self.marked.get(src)}

    def restore(self, src: Source, d: Mapping[str, Any]) -> None:
        """A partition resumed from its checkpoint: not idle, its idle clock restarted."""
        self.seen.pop(src, None)
        self.idle.pop(src, None)
        if d.get("first_offset") is not None:
            self.first_offset[src] = int(d["first_offset"])
        if d.get("marked") is not None:
            self.marked[src] = int(d["marked"])
