"""Per-source-partition progress, both stages: what a mapper tracks besides its counts, and
when a reducer may emit a window.

Both mappers (:mod:`driftmon.scale.mapper` for the series, :mod:`driftmon.scale.entity_mapper`
for per-entity counts) send a partition's partials with the offset range they cover, then a
progress mark (``through``: the last window the partition closed), and mark a partition idle
once it delivered nothing for ``window.idle_timeout`` of processing time.  This is that
bookkeeping, once; a mapper's checkpoint of a partition carries :meth:`SourceProgress.snapshot`.
Both reducers (series and entities) decide which windows are due with :func:`ready_through`
and :func:`due_windows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar

from driftmon.scale.sources import Source

T = TypeVar("T")
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


def stream_sources(topics: Sequence[str], of: Mapping[str, int]) -> list[Source] | None:
    """Every source partition of a stream's ``topics``, once each topic's size (``of``) is known."""
    if any(t not in of for t in topics):
        return None
    return [(t, p) for t in topics for p in range(of[t])]


def emit_each(names: Iterable[str], emit_stream: Callable[[str, float], T | None], now: float) -> list[tuple[str, T]]:
    """``[(stream, its output)]`` of the streams whose ``emit_stream(stream, now)`` produced one."""
    out = []
    for name in names:
        step = emit_stream(name, now)
        if step is not None:
            out.append((name, step))
    return out


def ready_through(through: Sequence[int], idle: Sequence[bool], high: int) -> int:
    """Every window up to this one may be emitted: the active source partitions have closed it
    (all of them have, if none is active), or they had when last seen (``high``: progress is
    kept once reached).  ``through``/``idle``: per source partition of the stream."""
    active = [t for t, i in zip(through, idle) if not i]
    return max(min(active, default=NEVER), min(through, default=NEVER), high)


def due_windows(pending: Sequence[int], sources: Sequence[Source], through: Mapping[Source, int],
                idle: Callable[[Source], bool], ready: int, waiting: MutableMapping[int, float],
                now: float, timeout: float) -> Iterator[tuple[int, list[Source], int]]:
    """The windows of ``pending`` (sorted) to emit now, in order, as ``(window, missing, idle)``:
    the active source partitions that have not closed it (empty: complete; otherwise it waited
    ``timeout`` since first held back, per window in ``waiting``) and how many idle partitions
    it passes.  Stops at the first window that must wait longer, or that only idle partitions
    hold back (nobody to wait for or time out)."""
    active = [s for s in sources if not idle(s)]
    for w in pending:  # each window's wait counts from when it was first held back
        if w > ready and active:
            waiting.setdefault(w, now)
    for w in pending:
        missing: list[Source] = []
        if w > ready:
            missing = [s for s in active if through[s] < w]
            if not missing or now - waiting[w] < timeout:
                return
        yield w, missing, sum(1 for s in sources if idle(s) and through[s] < w)
        waiting.pop(w, None)
