"""One stream's pipeline: decode -> bin -> window -> detect, and its state.

:class:`StreamPipeline` is what both ``driftmon replay`` and the daemon run,
so an offline replay of the same events gives the same windows and results.
It owns the learned bin specs (quantile edges / top-K vocabularies, learned
once from the first ``learn_events`` accepted events, which are held back
until then), the windows, one :class:`~driftmon.detect.detector.Detector` per
(feature, segment), and counters.  ``snapshot()``/``restore()`` give all of
it as plain JSON-able data for checkpoints.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftmon.config import FeatureConfig, StreamConfig
from driftmon.decode.events import DecodedBatch, Decoder
from driftmon.decode.worker import WorkerBatch
from driftmon.detect.detector import Detector
from driftmon.detect.result import DriftResult
from driftmon.summaries.bins import (
    BinSpec,
    CategoricalSpec,
    NumericSpec,
    learn_quantiles,
    learn_top_k,
    spec_from_dict,
)
from driftmon.windows import ClosedWindow, Segmenter, make_windows


@dataclass
class StepOutput:
    """What one batch produced: results of the windows it closed, and the
    input positions that were rejected (reason) or late."""

    results: list[DriftResult] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # positions in this batch (held-back events have none)
    late_total: int = 0  # late events, including held-back ones counted now
    closed_ends: list[float] = field(default_factory=list)  # end of each window closed, in order

    @property
    def windows_closed(self) -> int:
        return len(self.closed_ends)


def _initial_spec(f: FeatureConfig) -> BinSpec | None:
    if f.categories is not None:
        return CategoricalSpec(f.categories)
    if f.edges is not None:
        return NumericSpec(f.edges)
    return None


def _learn(f: FeatureConfig, values: list[Any]) -> BinSpec:
    if f.top_k is not None:
        return learn_top_k(values, f.top_k)
    return learn_quantiles(np.asarray(values, dtype=np.float64), f.num_bins or 10)


class StreamPipeline:
    """Runs one configured stream end to end over batches of raw events."""

    def __init__(self, cfg: StreamConfig, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.decoder = Decoder(cfg, clock)
        self.specs: list[BinSpec | None] = [_initial_spec(f) for f in cfg.features]
        self.pending: list[DecodedBatch] = []  # held back until the bin specs are learned
        self.pending_parts: list[np.ndarray] = []  # their source partitions
        self.segmenter = Segmenter(cfg.max_segments, segmented=bool(cfg.segment_by))
        self.windows: Any = None
        self.registered: dict[int, float | None] = {}  # assigned partitions, for windows made later
        self.detectors: dict[tuple[str, str | None], Detector] = {}
        self.events = 0
        self.rejected: Counter[str] = Counter()
        self.late = 0
        self.windows_closed = 0
        if all(s is not None for s in self.specs):
            self._make_windows()

    @property
    def ready(self) -> bool:
        return self.windows is not None

    def _make_windows(self) -> None:
        sizes = [s.size for s in self.specs if s is not None]
        self.windows = make_windows(self.cfg.window, sizes, self.segmenter, self.cfg.include_overall)
        for p, now in self.registered.items():
            self.register_partitions([p], now)

    def register_partitions(self, partitions: list[int], now: float | None) -> None:
        """Source partitions assigned to this consumer (see EventTimeWindows.register)."""
        if self.windows is None:
            self.registered.update((p, now) for p in partitions)
        elif hasattr(self.windows, "register"):
            self.windows.register(partitions, now)

    def forget_partitions(self, partitions: list[int]) -> None:
        """Source partitions revoked from this consumer."""
        for p in partitions:
            self.registered.pop(p, None)
        if self.windows is not None and hasattr(self.windows, "forget"):
            self.windows.forget(partitions)

    def process(self, values: Sequence[bytes | str], partitions: Sequence[int] | np.ndarray | None = None,
                now: float | None = None) -> StepOutput:
        """Decode and count one batch of raw events.

        ``partitions``: the source partition id of each value (for per-partition
        watermarks); ``now``: processing time, for partition idleness.
        """
        out = StepOutput()
        self.events += len(values)
        batch = self.decoder.decode(values)
        part = np.zeros(len(batch), dtype=np.int64) if partitions is None else \
            np.asarray(partitions, dtype=np.int64)[np.asarray(batch.accepted, dtype=np.int64)]
        out.rejected = batch.rejected
        self.rejected.update(reason for _, reason in batch.rejected)
        self._step(batch, part, out, now)
        return out

    def process_decoded(self, batch: WorkerBatch, partitions: Sequence[int] | np.ndarray | None = None,
                        now: float | None = None) -> StepOutput:
        """Count one batch the decode worker (:mod:`driftmon.decode.worker`) already
        decoded, and binned if it had this pipeline's specs.  Same state changes and
        output as :meth:`process` on the batch's raw values, through the same code."""
        out = StepOutput()
        self.events += batch.n
        n = int(batch.ts.size)
        part = np.zeros(n, dtype=np.int64) if partitions is None else \
            np.asarray(partitions, dtype=np.int64)[batch.accepted]
        out.rejected = batch.rejected
        self.rejected.update(reason for _, reason in batch.rejected)
        if batch.bins is None:
            self._step(batch.decoded(), part, out, now)
            return out
        if not self.ready:
            raise ValueError(f"stream {self.cfg.name!r}: a binned batch arrived before the bin specs were learned")
        if n == 0:
            return out
        if batch.seg_keys is None or batch.seg_inverse is None:
            seg = self.segmenter.ids(None, n)
        else:  # keys in first-appearance order: new segments get the same ids as from the full key list
            seg = self.segmenter.ids(batch.seg_keys, len(batch.seg_keys))[batch.seg_inverse]
        self._add(batch.ts, seg, batch.bins, part, batch.accepted, out, now)
        return out

    def _step(self, batch: DecodedBatch, part: np.ndarray, out: StepOutput, now: float | None) -> None:
        """Hold a decoded batch back until the specs are learned, or count it."""
        if not self.ready:
            self.pending.append(batch)
            self.pending_parts.append(part)
            if sum(len(b) for b in self.pending) < self.cfg.learn_events:
                return
            self._learn_and_drain(out, now)
            return
        self._count(batch, part, batch.accepted, out, now)

    def _learn_and_drain(self, out: StepOutput, now: float | None = None) -> None:
        pending, self.pending = self.pending, []
        parts, self.pending_parts = self.pending_parts, []
        if not pending:
            pending = [DecodedBatch(np.empty(0), None, [[] for _ in self.specs])]
        merged = DecodedBatch.concat(pending)
        part = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        n = self.cfg.learn_events  # the first n events, however the stream was batched
        for j, f in enumerate(self.cfg.features):
            if self.specs[j] is None:
                self.specs[j] = _learn(f, merged.features[j][:n])
        self._make_windows()
        self._count(merged, part, None, out, now)

    def _count(self, batch: DecodedBatch, part: np.ndarray, positions: list[int] | None, out: StepOutput,
               now: float | None) -> None:
        if len(batch) == 0:
            return
        seg = self.segmenter.ids(batch.segments, len(batch))
        bins = [spec.index(col) for spec, col in zip(self.specs, batch.features)]  # type: ignore[union-attr]
        self._add(batch.ts, seg, bins, part, positions, out, now)

    def _add(self, ts: np.ndarray, seg: np.ndarray, bins: list[np.ndarray], part: np.ndarray,
             positions: list[int] | np.ndarray | None, out: StepOutput, now: float | None) -> None:
        """Count binned events into the windows; detect on what closed."""
        closed, late = self.windows.add(ts, seg, bins, part, now)
        n_late = int(late.sum())
        if n_late:
            self.late += n_late
            out.late_total += n_late
            if positions is not None:
                out.late.extend(np.asarray(positions, dtype=np.int64)[np.flatnonzero(late)].tolist())
        self._detect(closed, out)

    def _detect(self, closed: list[ClosedWindow], out: StepOutput) -> None:
        ends = sorted({(w.index, w.end) for w in closed})
        self.windows_closed += len(ends)
        out.closed_ends.extend(end for _, end in ends)
        overlap = getattr(self.windows, "r", 1)
        for w in closed:
            for j, f in enumerate(self.cfg.features):
                det = self.detectors.get((f.name, w.segment))
                if det is None:
                    labels = self.specs[j].labels  # type: ignore[union-attr]
                    det = Detector(f.detector, labels, stream=self.cfg.name, feature=f.name,
                                   segment=w.segment, overlap=overlap)
                    self.detectors[(f.name, w.segment)] = det
                out.results.append(det.update(w.index, w.start, w.end, w.counts[j]))

    def flush(self) -> StepOutput:
        """Close everything still open (end of input)."""
        out = StepOutput()
        if not self.ready:
            self._learn_and_drain(out)
        self._detect(self.windows.flush(), out)
        return out

    def snapshot(self) -> dict[str, Any]:
        """All state as JSON-able data.  Before the bin specs are learned the
        held-back events themselves are saved, so nothing counted is lost."""
        counters = {"events": self.events, "rejected": dict(self.rejected), "late": self.late,
                    "windows_closed": self.windows_closed}
        if not self.ready:
            merged = DecodedBatch.concat(self.pending) if self.pending else None
            pending = None if merged is None else {
                "ts": merged.ts.tolist(), "segments": merged.segments,
                "partitions": np.concatenate(self.pending_parts).tolist(),
                "features": [[None if isinstance(v, float) and v != v else v for v in col] for col in merged.features],
            }
            return {"pending": pending, "counters": counters}
        return {
            "specs": [s.to_dict() for s in self.specs if s is not None],
            "segments": self.segmenter.snapshot(),
            "windows": self.windows.snapshot(),
            "detectors": [[f, s, d.snapshot()] for (f, s), d in self.detectors.items()],
            "counters": counters,
        }

    def restore(self, d: dict[str, Any]) -> None:
        c = d["counters"]
        self.events, self.late, self.windows_closed = c["events"], c["late"], c["windows_closed"]
        self.rejected = Counter(c["rejected"])
        self.pending, self.pending_parts = [], []
        if "pending" in d:
            p = d["pending"]
            if p is not None:
                cols = [col if f.type == "categorical" else [float("nan") if v is None else v for v in col]
                        for f, col in zip(self.cfg.features, p["features"])]
                self.pending = [DecodedBatch(np.asarray(p["ts"], dtype=np.float64), p["segments"], cols)]
                self.pending_parts = [np.asarray(p["partitions"], dtype=np.int64)]
            return
        self.specs = [spec_from_dict(s) for s in d["specs"]]
        self.segmenter.restore(d["segments"])
        self._make_windows()
        self.windows.restore(d["windows"])
        overlap = getattr(self.windows, "r", 1)
        by_name = {f.name: (j, f) for j, f in enumerate(self.cfg.features)}
        self.detectors = {}
        for fname, seg, snap in d["detectors"]:
            j, f = by_name[fname]
            det = Detector(f.detector, self.specs[j].labels, stream=self.cfg.name, feature=fname,  # type: ignore[union-attr]
                           segment=seg, overlap=overlap)
            det.restore(snap)
            self.detectors[(fname, seg)] = det
