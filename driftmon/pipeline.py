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

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftmon.config import StreamConfig
from driftmon.decode.prepare import PreparedBatch, Preparer
from driftmon.detect import significance
from driftmon.detect.detector import Detector, Pending
from driftmon.detect.result import DriftResult
from driftmon.monitors.base import Monitor, MonitorStep, make_monitors
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
    records: list[Any] = field(default_factory=list)  # monitors' records (e.g. interest_shift), not aggregate rows
    monitors: list[MonitorStep] = field(default_factory=list)  # each monitor's aggregate statistics of this step

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
        self.monitors: list[Monitor] = make_monitors(cfg)  # e.g. per-entity interest drift (monitors/)
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
        for m in self.monitors:
            self._monitor_step(m.feed(batch), out)
        return out

    @staticmethod
    def _monitor_step(step: MonitorStep, out: StepOutput) -> None:
        out.records.extend(step.records)
        out.monitors.append(step)

    def _detect(self, closed: list[ClosedWindow], out: StepOutput) -> None:
        self._count_closed(closed, out)
        # One family of tests per closed window: an event-time window closes for every segment
        # at once (features x segments x horizons); a count window is one lane's (features x horizons).
        timed = isinstance(self.windows, EventTimeWindows)
        families: dict[tuple[int, str | None], list[ClosedWindow]] = {}
        for w in closed:
            families.setdefault((w.index, None if timed else w.segment), []).append(w)
        for family in families.values():
            decide_family([(self, family, out)])
        if closed and timed:  # (count windows number each lane apart)
            self._retire(max(w.index for w in closed) - getattr(self.windows, "r", 1), out)

    def _count_closed(self, closed: list[ClosedWindow], out: StepOutput) -> None:
        ends = sorted({(w.index, w.end) for w in closed})
        self.windows_closed += len(ends)
        out.closed_ends.extend(end for _, end in ends)

    def _pending(self, family: list[ClosedWindow]) -> list[Pending]:
        """Every test of ``family`` (closed windows of one index) computed, nothing decided."""
        overlap = getattr(self.windows, "r", 1)
        pending = []
        for w in family:
            for j, f in enumerate(self.cfg.features):
                det = self.detectors.get((f.name, w.segment))
                if det is None:
                    det = Detector(f.detector, self.summarizers[j], stream=self.cfg.name, feature=f.name,
                                   segment=w.segment, overlap=overlap)
                    self.detectors[(f.name, w.segment)] = det
                pending.append(det.compute(w.index, w.start, w.end, w.summaries[j]))
        return pending

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
        out = self.detect(self.windows.flush())
        for m in self.monitors:
            self._monitor_step(m.flush(), out)
        return out

    def snapshot(self) -> dict[str, Any]:
        """All state as JSON-able data."""
        snap = {
            "windows": self.windows.snapshot(),
            "detectors": [[f, s, d.snapshot()] for (f, s), d in self.detectors.items()],
            "counters": {"events": self.events, "rejected": dict(self.rejected), "late": self.late,
                         "windows_closed": self.windows_closed},
        }
        if self.monitors:  # (absent otherwise: the snapshot of a stream without monitors is unchanged)
            snap["monitors"] = {m.name: m.snapshot() for m in self.monitors}
        return snap

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
        monitors = d.get("monitors", {})
        for m in self.monitors:
            if m.name in monitors:
                m.restore(monitors[m.name])


def decide_family(members: Sequence[tuple[StreamPipeline, list[ClosedWindow], StepOutput]]) -> None:
    """One family of tests (one closed window of a stream, all its series): compute every test,
    adjust the p-values together (Benjamini-Hochberg), then decide each series into its ``out``."""
    pendings = [pipe._pending(closed) for pipe, closed, _ in members]
    p = [x for group in pendings for pend in group for x in pend.p_values()]
    adjusted = significance.benjamini_hochberg(p).tolist()
    tests = sum(not math.isnan(x) for x in p)
    at = 0
    for group, (_, _, out) in zip(pendings, members):
        for pend in group:
            k = len(pend.tests)
            out.results.append(pend.detector.decide(pend, adjusted[at:at + k], tests))
            at += k


def detect_jointly(members: Sequence[tuple[StreamPipeline, list[ClosedWindow]]]) -> list[StepOutput]:
    """Detection on one event-time window of one stream whose features are counted by separate
    pipelines (the scale-out reducer keeps one per feature): the same family of tests, and so the
    same adjusted p-values, as :meth:`StreamPipeline.detect` of one pipeline with every feature."""
    outs = [StepOutput() for _ in members]
    for (pipe, closed), out in zip(members, outs):
        pipe._count_closed(closed, out)
    decide_family([(pipe, closed, out) for (pipe, closed), out in zip(members, outs)])
    for (pipe, closed), out in zip(members, outs):
        if closed and isinstance(pipe.windows, EventTimeWindows):
            pipe._retire(max(w.index for w in closed) - getattr(pipe.windows, "r", 1), out)
    return outs
