"""One stream's pipeline: prepare (decode + code) -> count into windows -> detect.

:class:`StreamPipeline` is what both ``driftmon replay`` and the daemon run,
so an offline replay of the same events gives the same windows and results.
It is split in two steps:

* :meth:`Preparer.prepare <driftmon.decode.prepare.Preparer.prepare>` (pure,
  depends only on the config): raw values -> a ``PreparedBatch`` of event
  times, segment keys and per-feature summary codes, plus the rejected input
  positions.  The decode worker process runs exactly this.
* :meth:`StreamPipeline.count`: a prepared batch -> window summaries, and
  detection on every window that closed.

There is no learning phase: every feature's summary is exact and mergeable
(:mod:`driftmon.summaries`) and bins are chosen when two windows are
compared, so the results depend only on which events fell in which window,
not on their arrival order or on how the stream was partitioned.
``snapshot()``/``restore()`` give all state as JSON-able data for checkpoints.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftmon.config import StreamConfig
from driftmon.decode.prepare import PreparedBatch, Preparer
from driftmon.detect.detector import Detector
from driftmon.detect.result import DriftResult
from driftmon.windows import ClosedWindow, EventTimeWindows, Windows, make_windows


@dataclass
class StepOutput:
    """What one batch produced: results of the windows it closed, and the
    input positions that were rejected (reason) or late."""

    results: list[DriftResult] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # input positions of late events
    late_total: int = 0
    closed_ends: list[float] = field(default_factory=list)  # end of each window closed, in order
    retired: list[tuple[str, str, str | None]] = field(default_factory=list)  # series whose detector was dropped
    truncated: tuple[int, ...] = ()  # per feature: categorical values cut to the length cap (decode/events.py)

    @property
    def windows_closed(self) -> int:
        return len(self.closed_ends)


class StreamPipeline:
    """Runs one configured stream end to end over batches of raw events."""

    def __init__(self, cfg: StreamConfig, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.preparer = Preparer(cfg, clock)
        self.summarizers = self.preparer.summarizers
        self.windows: Windows = make_windows(cfg, self.summarizers)
        self.detectors: dict[tuple[str, str | None], Detector] = {}
        self.events = 0
        self.rejected: Counter[str] = Counter()
        self.late = 0
        self.windows_closed = 0

    @property
    def clock(self) -> Callable[[], float]:
        """The wall clock that bounds event times (``max_future_skew``)."""
        return self.preparer.decoder.clock

    def register_partitions(self, partitions: list[int], now: float | None) -> None:
        """Source partitions assigned to this consumer (see EventTimeWindows.register)."""
        register = getattr(self.windows, "register", None)
        if register is not None:
            register(partitions, now)

    def forget_partitions(self, partitions: list[int]) -> None:
        """Source partitions revoked from this consumer."""
        forget = getattr(self.windows, "forget", None)
        if forget is not None:
            forget(partitions)

    def process(self, values: Sequence[bytes | str], partitions: Sequence[int] | np.ndarray | None = None,
                now: float | None = None, parsed: Sequence[Any] | None = None) -> StepOutput:
        """Prepare and count one batch of raw events.

        ``partitions``: the source partition id of each value (for per-partition
        watermarks); ``now``: processing time, for partition idleness; ``parsed``: the
        values already parsed for every stream of their topic (decode once per topic).
        """
        return self.count(self.preparer.prepare(values, parsed), partitions, now)

    def count(self, batch: PreparedBatch, partitions: Sequence[int] | np.ndarray | None = None,
              now: float | None = None) -> StepOutput:
        """Count one prepared batch (from :meth:`process` or the decode worker)."""
        out = StepOutput(rejected=batch.rejected, truncated=batch.truncated)
        self.events += batch.n
        self.rejected.update(reason for _, reason in batch.rejected)
        if len(batch.coded) == 0:
            return out
        part = None if partitions is None else np.asarray(partitions, dtype=np.int64)[batch.accepted]
        closed, late = self.windows.add(batch.coded, part, now)
        n_late = int(late.sum())
        if n_late:
            self.late += n_late
            out.late_total = n_late
            out.late = batch.accepted[np.flatnonzero(late)].tolist()
        self._detect(closed, out)
        return out

    def _detect(self, closed: list[ClosedWindow], out: StepOutput) -> None:
        ends = sorted({(w.index, w.end) for w in closed})
        self.windows_closed += len(ends)
        out.closed_ends.extend(end for _, end in ends)
        overlap = getattr(self.windows, "r", 1)
        for w in closed:
            for j, f in enumerate(self.cfg.features):
                det = self.detectors.get((f.name, w.segment))
                if det is None:
                    det = Detector(f.detector, self.summarizers[j], stream=self.cfg.name, feature=f.name,
                                   segment=w.segment, overlap=overlap)
                    self.detectors[(f.name, w.segment)] = det
                out.results.append(det.update(w.index, w.start, w.end, w.summaries[j]))
        if closed and isinstance(self.windows, EventTimeWindows):  # (count windows number each lane apart)
            self._retire(max(w.index for w in closed) - overlap, out)

    def _retire(self, before: int, out: StepOutput) -> None:
        """Drop the detectors of segments that have not reported since window ``before``
        (they reported their disappearance once already) and have no active alert, so
        detectors and metric series stay bounded when segments come and go."""
        for key, det in list(self.detectors.items()):
            if key[1] is not None and det.severity is None and det.history and det.history[-1][0] < before:
                del self.detectors[key]
                out.retired.append((self.cfg.name, *key))

    def detect(self, closed: list[ClosedWindow]) -> StepOutput:
        """Run the detectors on windows closed elsewhere (e.g. merged from partial
        window states counted by several consumers)."""
        out = StepOutput()
        self._detect(closed, out)
        return out

    def flush(self) -> StepOutput:
        """Close everything still open (end of input)."""
        return self.detect(self.windows.flush())

    def snapshot(self) -> dict[str, Any]:
        """All state as JSON-able data."""
        return {
            "windows": self.windows.snapshot(),
            "detectors": [[f, s, d.snapshot()] for (f, s), d in self.detectors.items()],
            "counters": {"events": self.events, "rejected": dict(self.rejected), "late": self.late,
                         "windows_closed": self.windows_closed},
        }

    def restore(self, d: dict[str, Any]) -> None:
        c = d["counters"]
        self.events, self.late, self.windows_closed = c["events"], c["late"], c["windows_closed"]
        self.rejected = Counter(c["rejected"])
        self.windows.restore(d["windows"])
        overlap = getattr(self.windows, "r", 1)
        by_name = {f.name: (j, f) for j, f in enumerate(self.cfg.features)}
        self.detectors = {}
        for fname, seg, snap in d["detectors"]:
            j, f = by_name[fname]
            det = Detector(f.detector, self.summarizers[j], stream=self.cfg.name, feature=fname,
                           segment=seg, overlap=overlap)
            det.restore(snap)
            self.detectors[(fname, seg)] = det
