"""Prediction calibration drift: do the model's predicted probabilities still match
what users do?

A predictions stream carries a request id and a predicted probability; an outcomes
stream carries the request id and the observed label (0/1, false/true), up to
``max_delay`` of event time later.  :class:`CalibrationMonitor` joins them by
request id in a bounded buffer and scores each window of *prediction* event time.

**Join** (all times are event times; ``W`` is the monitor's watermark, below):

* a prediction waits in the buffer until ``W >= t_prediction + max_delay``; it is then
  final: ``joined`` with the label of its outcome, or ``unmatched`` (no outcome in
  time), which counts as a negative (``unmatched: negative``) or is left out
  (``drop``), counted either way;
* an outcome joins the prediction with its id when ``t_outcome - t_prediction <= max_delay``;
  up to ``2 max_delay`` it is counted ``late_outcome`` (whether its prediction is
  still buffered or already final: a final prediction's id is remembered for another
  ``max_delay``) and the prediction stays unmatched; further apart they are not
  linked (the outcome is an orphan, below).  An outcome read when
  ``W > t_outcome + max_delay`` without a buffered or remembered prediction is
  ``late_outcome`` too (its prediction, if it came before it, is final already);
* an outcome that arrives before its prediction waits (in a buffer of its own) until
  ``W >= t_outcome``, then, still alone, is counted ``orphan_outcome``;
* duplicates, deterministically: a prediction id already buffered (or just final) is
  counted ``duplicate_prediction`` and the earliest prediction time is kept (ties: the
  first to arrive); of several outcomes for one prediction the earliest outcome time
  decides (ties: the first to arrive), the others are ``duplicate_outcome``;
* a prediction whose window has already closed is ``late_prediction``; a prediction or
  outcome that finds its buffer full (``max_pending`` entries each) is counted
  ``overflow_prediction``/``overflow_outcome`` and left out: memory stays bounded
  (about 350 bytes per buffered prediction with 36-character ids), nothing crashes;
* records the monitor cannot use are ``invalid_prediction``/``invalid_outcome``:
  undecodable or without a timestamp (the stream's own counters have the reason),
  no id, a probability that is not a number in [0, 1], a label other than
  0/1/false/true.

**Windows** are tumbling windows of ``window`` seconds of prediction event time
(``[k w, (k+1) w)``).  Window ``k`` closes once ``W >= (k+1) w + max_delay``, so every
prediction in it is final and outcomes up to ``max_delay`` late still count.
The watermark ``W``: in the daemon, the minimum over the monitor's streams of the
minimum over each stream's partitions of their largest event time (a partition silent
for the stream's ``window.idle_timeout`` of processing time has no say, and a stream
that has not delivered yet holds ``W`` back until it is idle that long), minus the
predictions stream's ``allowed_lateness``.  In ``replay`` the input files are merged by
event time, so ``W`` is the largest event time read, minus that lateness.

**Score**, per closed window with bins ``b`` of predicted probability (``bins``):
``n_b`` final predictions, mean prediction ``p_b`` and observed frequency ``a_b``::

    divergence = sum_b (n_b / n) KL(a_b || p_b),
    KL(a || p) = a ln(a / p) + (1 - a) ln((1 - a) / (1 - p))     (Bernoulli KL, nats; bits: / ln 2)
    ece        = sum_b (n_b / n) |a_b - p_b|                     (expected calibration error, a probability)

``KL(a_b || p_b)`` is ``scipy.special.rel_entr`` summed over ``[a, 1-a]`` vs ``[p, 1-p]``;
it is ``+inf`` when a bin's mean prediction is exactly 0 or 1 and the opposite label
occurred (no smoothing: the model said impossible and it happened).  The guard against
small bins is a likelihood-ratio test: under "calibrated" each bin's positives are
(at most as dispersed as) Binomial(n_b, p_b), so ``G = 2 sum_b n_b KL(a_b || p_b)``
(nats) is asymptotically chi-square with one degree of freedom per non-empty bin,
and a window is ``warn``/``critical`` only when the divergence is over the threshold
*and* ``p <= max_p_value`` (and ``n >= min_count``).  Alert hysteresis is the
drift detector's (:class:`driftmon.detect.detector.Detector`).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import special, stats

from driftmon.config import CalibrationConfig, Config, DetectorConfig, FeatureConfig, StreamConfig
from driftmon.decode.events import Decoder
from driftmon.detect.detector import Detector
from driftmon.detect.result import BinShare, DriftResult
from driftmon.summaries.base import lookup, packed
from driftmon.vocabulary import CALIBRATION_COUNTS

METRIC = "calibration_kl"
UNITS = 10**9  # predicted probabilities are summed as integers in units of 1e-9
_LN2 = math.log(2.0)
_POSITIVE = frozenset({"1", "true", "1.0", "True"})
_NEGATIVE = frozenset({"0", "false", "0.0", "False"})
# The label of each outcome value in one C-level pass (summaries.base.lookup): code 0 is a
# negative, 1 a positive, 2 anything else (NaN, left out).
_LABEL_CODES = {**{x: packed(0, 1) for x in _NEGATIVE}, **{x: packed(1, 1) for x in _POSITIVE}}
_UNLABELLED = packed(2, 1)
_LABEL_VALUES = np.array([0.0, 1.0, math.nan])
_ID_ABSENT, _ID_PRESENT = {None: packed(0, 1)}, packed(1, 1)  # a missing request id: None


# -- the mathematics ---------------------------------------------------------------------

def bernoulli_kl(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``KL(Bernoulli(a) || Bernoulli(p))`` elementwise, in nats (``rel_entr`` on [a, 1-a] vs [p, 1-p])."""
    a, p = np.asarray(a, dtype=np.float64), np.asarray(p, dtype=np.float64)
    # the two terms can cancel to a rounding error below 0 (e.g. a, p ~ 1e-200): KL >= 0
    return np.maximum(special.rel_entr(a, p) + special.rel_entr(1.0 - a, 1.0 - p), 0.0)


@dataclass(frozen=True)
class Score:
    divergence: float  # sum_b (n_b/n) KL(a_b || p_b), in ``unit``
    terms: np.ndarray  # per bin: (n_b/n) KL(a_b || p_b), in ``unit`` (0 for empty bins)
    ece: float  # sum_b (n_b/n) |a_b - p_b|
    g: float  # 2 sum_b n_b KL(a_b || p_b), nats
    dof: int  # non-empty bins
    p_value: float  # chi2(dof).sf(g)
    observed: np.ndarray  # a_b (NaN for empty bins)
    predicted: np.ndarray  # p_b (NaN for empty bins)


def score(n: np.ndarray, sum_p: np.ndarray, sum_y: np.ndarray, unit: str = "nats") -> Score:
    """Calibration divergence, ECE and the likelihood-ratio p-value of one window from
    per-bin counts ``n``, sums of predictions ``sum_p`` and sums of labels ``sum_y``."""
    n = np.asarray(n, dtype=np.float64)
    total = float(n.sum())
    if total <= 0:
        raise ValueError("no predictions to score")
    full = n > 0
    safe = np.where(full, n, 1.0)
    a = np.where(full, np.asarray(sum_y, dtype=np.float64) / safe, np.nan)
    p = np.where(full, np.clip(np.asarray(sum_p, dtype=np.float64) / safe, 0.0, 1.0), np.nan)
    kl = np.where(full, bernoulli_kl(np.where(full, a, 0.0), np.where(full, p, 0.0)), 0.0)
    w = n / total
    with np.errstate(invalid="ignore"):
        terms = np.where(full, w * kl, 0.0)
        g = float(2.0 * np.sum(np.where(full, n * kl, 0.0)))
    div = float(terms.sum())
    dof = int(full.sum())
    pv = 0.0 if math.isinf(g) else float(stats.chi2.sf(g, dof))
    if unit == "bits":
        div, terms = div / _LN2, terms / _LN2
    return Score(div, terms, float(np.sum(np.where(full, w * np.abs(a - p), 0.0))), g, dof, pv, a, p)


def ece(n: np.ndarray, sum_p: np.ndarray, sum_y: np.ndarray) -> float:
    """Expected calibration error ``sum_b (n_b/n) |a_b - p_b|``."""
    return score(n, sum_p, sum_y).ece


def bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    k = len(edges) - 1
    return tuple(f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == k - 1 else ')'}" for i in range(k))


# -- the result row ----------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationResult(DriftResult):
    """A closed calibration window: the usual result fields (``stream`` is the predictions
    stream, ``feature`` the calibration's name, ``top_bins`` the bins with the largest
    contributions, each with ``p_reference`` = mean prediction and ``p_current`` =
    observed frequency) plus ``kind: calibration``, ``name``, ``ece``, ``positives`` and
    the monitor's cumulative ``join`` counts."""

    name: str = ""
    ece: float | None = None
    positives: int = 0
    join: tuple[tuple[str, int], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": "calibration", "name": self.name, **super().to_dict()}
        d["ece"] = None if self.ece is None else round(self.ece, 9)
        d["positives"] = self.positives
        d["join"] = dict(self.join)
        return d


# -- the monitor -------------------------------------------------------------------------

@dataclass
class _Prepared:
    """One batch of a stream, decoded for the monitor."""

    ts: np.ndarray
    ids: list[str]
    values: np.ndarray  # probability (predictions) or label 0/1 (outcomes)
    invalid: int
    index: np.ndarray  # the input position of each kept record (for the partition ids)


def _decoder(stream: StreamConfig, id_field: str, value_field: str, value_type: str,
             clock: Callable[[], float]) -> Decoder:
    det = DetectorConfig()
    feats = (FeatureConfig(name="id", field=id_field, type="categorical", detector=det, top_k=1),
             FeatureConfig(name="value", field=value_field, type=value_type, detector=det,
                           **({"top_k": 1} if value_type == "categorical" else {"edges": (0.0, 1.0)})))
    return Decoder(replace(stream, features=feats, segment_by=()), clock)


class CalibrationMonitor:
    """One configured calibration (see the module docstring for the semantics)."""

    def __init__(self, cfg: CalibrationConfig, config: Config, *, merged_input: bool = False,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.key = f"calibration:{cfg.name}"
        pred, outc = config.stream(cfg.predictions.stream), config.stream(cfg.outcomes.stream)
        self.streams = (pred.name, outc.name)
        self.merged_input = merged_input
        self.lateness = pred.window.allowed_lateness
        self.idle = {pred.name: pred.window.idle_timeout, outc.name: outc.window.idle_timeout}
        self._dec = {pred.name: _decoder(pred, cfg.predictions.id, cfg.predictions.probability, "numeric", clock),
                     outc.name: _decoder(outc, cfg.outcomes.id, cfg.outcomes.label, "categorical", clock)}
        self.edges = np.asarray(cfg.edges, dtype=np.float64)
        self.labels = bin_labels(cfg.edges)
        self.nbins = len(cfg.edges) - 1
        self.det: DetectorConfig = cfg.detector
        # alert state: the drift detector's hysteresis (no summaries, no reference window)
        self.alarm = Detector(self.det, None, stream=pred.name, feature=cfg.name)  # type: ignore[arg-type]
        # buffers: id -> [t_pred, probability, label (-1: none yet), t_outcome]; id -> [t_outcome, label]
        self.pending: dict[str, list[float]] = {}
        self.outcomes: dict[str, list[float]] = {}
        # predictions by when they become final: bucket floor(due / grain) -> [(due, id)]
        self._grain = cfg.max_delay / 256
        self._due: dict[int, list[tuple[float, str]]] = {}
        self._oheap: list[tuple[float, int, str]] = []
        self._seq = 0
        self.final: dict[str, float] = {}  # id -> its deadline (predictions already final)
        self._final_order: deque[tuple[float, str]] = deque()
        self.windows: dict[int, np.ndarray] = {}  # index -> int64 [3, bins]: n, sum_p (1e-9 units), sum_y
        self.closed_below = -(2**62)
        self.watermark = -math.inf
        self.part_max: dict[str, dict[int, float]] = {s: {} for s in self.streams}
        self.part_seen: dict[str, dict[int, float]] = {s: {} for s in self.streams}
        self.started: float | None = None
        self.counts: Counter[str] = Counter({k: 0 for k in CALIBRATION_COUNTS})
        self.windows_closed = 0

    # -- input ------------------------------------------------------------------------

    def prepare(self, stream: str, values: Sequence[bytes | str]) -> _Prepared:
        """Decode what the monitor needs from a batch of ``stream`` (pure)."""
        batch = self._dec[stream].decode(values)
        ids = batch.features[0]
        if stream == self.streams[0]:
            v = np.asarray(batch.features[1], dtype=np.float64)
            ok = (v >= 0.0) & (v <= 1.0)  # NaN (missing) fails both
        else:
            v = _LABEL_VALUES[lookup(_LABEL_CODES, batch.features[1], _UNLABELLED)]
            ok = ~np.isnan(v)
        has_id = lookup(_ID_ABSENT, ids, _ID_PRESENT).astype(bool)
        ok &= has_id
        keep = np.flatnonzero(ok)
        kept_ids = [ids[i] for i in keep.tolist()] if keep.size != len(ids) else list(ids)
        index = np.asarray(batch.accepted, dtype=np.int64)[keep]
        return _Prepared(batch.ts[keep], kept_ids, v[keep], len(values) - int(keep.size), index)

    def feed(self, stream: str, prepared: _Prepared, partitions: np.ndarray | None = None,
             now: float | None = None) -> None:
        """Buffer and join one prepared batch of ``stream``; windows close in :meth:`advance`.
        ``partitions``: the source partition of each *input* value given to :meth:`prepare`."""
        is_pred = stream == self.streams[0]
        self.counts["invalid_prediction" if is_pred else "invalid_outcome"] += prepared.invalid
        ts = prepared.ts
        if self.started is None and now is not None:
            self.started = now
        if ts.size:
            part = (np.zeros(ts.size, dtype=np.int64) if partitions is None
                    else np.asarray(partitions, dtype=np.int64)[prepared.index])
            pm, seen = self.part_max[stream], self.part_seen[stream]
            for p in np.unique(part).tolist():
                pm[p] = max(pm.get(p, -math.inf), float(ts[part == p].max()))
                if now is not None:
                    seen[p] = now
        if is_pred:
            self._add_predictions(prepared)
        else:
            self._add_outcomes(prepared)

    def _add_predictions(self, b: _Prepared) -> None:
        c, md, cap = self.counts, self.cfg.max_delay, self.cfg.max_pending
        widx = np.floor(b.ts / self.cfg.window).astype(np.int64)
        late = widx < self.closed_below
        pending, outcomes, final = self.pending, self.outcomes, self.final
        buckets, grain, floor = self._due, self._grain, math.floor
        for rid, t, p, is_late in zip(b.ids, b.ts.tolist(), b.values.tolist(), late.tolist()):
            c["prediction"] += 1
            if is_late:
                c["late_prediction"] += 1
                continue
            cur = pending.get(rid)
            if cur is not None or rid in final:
                c["duplicate_prediction"] += 1
                if cur is not None and t < cur[0]:  # keep the earliest prediction
                    cur[0], cur[1] = t, p
                    if cur[2] >= 0 and cur[3] - t > md:  # its outcome is now too late for it
                        cur[2] = -1.0
                        c["late_outcome"] += 1
                    self._schedule(t + md, rid)
                continue
            if len(pending) >= cap:
                c["overflow_prediction"] += 1
                continue
            entry = [t, p, -1.0, math.inf]
            out = outcomes.get(rid)
            if out is not None and out[0] - t <= 2 * md:
                del outcomes[rid]
                if out[0] - t <= md:
                    entry[2], entry[3] = out[1], out[0]
                else:
                    c["late_outcome"] += 1
            pending[rid] = entry
            due = t + md
            key = floor(due / grain)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = [(due, rid)]
            else:
                bucket.append((due, rid))

    def _add_outcomes(self, b: _Prepared) -> None:
        c, md, cap = self.counts, self.cfg.max_delay, self.cfg.max_pending
        pending, outcomes, final = self.pending, self.outcomes, self.final
        for rid, t, y in zip(b.ids, b.ts.tolist(), b.values.tolist()):
            c["outcome"] += 1
            cur = pending.get(rid)
            if cur is not None and t - cur[0] <= 2 * md:
                if t - cur[0] > md:
                    c["late_outcome"] += 1
                elif cur[2] < 0:
                    cur[2], cur[3] = y, t
                else:
                    c["duplicate_outcome"] += 1
                    if t < cur[3]:  # the earliest outcome decides
                        cur[2], cur[3] = y, t
                continue
            deadline = final.get(rid)
            if (deadline is not None and t <= deadline + md) or (
                    cur is None and deadline is None and t + md < self.watermark):
                c["late_outcome"] += 1  # its prediction is final already (if it came before it)
                continue
            waiting = outcomes.get(rid)
            if waiting is not None:
                c["duplicate_outcome"] += 1
                if t < waiting[0]:
                    waiting[0], waiting[1] = t, y
                    self._push(self._oheap, t, rid)
                continue
            if len(outcomes) >= cap:
                c["overflow_outcome"] += 1
                continue
            outcomes[rid] = [t, y]
            self._push(self._oheap, t, rid)

    def _schedule(self, due: float, rid: str) -> None:
        key = math.floor(due / self._grain)
        bucket = self._due.get(key)
        if bucket is None:
            self._due[key] = [(due, rid)]
        else:
            bucket.append((due, rid))

    def _push(self, heap: list[tuple[float, int, str]], due: float, rid: str) -> None:
        self._seq += 1
        heapq.heappush(heap, (due, self._seq, rid))

    # -- time -------------------------------------------------------------------------

    def _current_watermark(self, now: float | None) -> float:
        if self.merged_input:
            return max((m for pm in self.part_max.values() for m in pm.values()), default=-math.inf) - self.lateness
        lows: list[float] = []
        for s in self.streams:
            pm, seen, idle = self.part_max[s], self.part_seen[s], self.idle[s]
            if not pm:  # not heard from yet: holds the watermark back until idle
                if now is None or self.started is None or now - self.started <= idle:
                    return -math.inf
                continue
            active = [m for p, m in pm.items() if now is None or now - seen.setdefault(p, now) <= idle]
            if active:
                lows.append(min(active))
        return min(lows, default=-math.inf) - self.lateness

    def advance(self, now: float | None = None) -> list[DriftResult]:
        """Move the watermark; finalize due predictions; return the results of closed windows."""
        self.watermark = max(self.watermark, self._current_watermark(now))
        return self._settle(self.watermark)

    def flush(self) -> list[DriftResult]:
        """End of input: every prediction is final and every window closes."""
        return self._settle(math.inf)

    def _settle(self, wm: float) -> list[DriftResult]:
        if wm == -math.inf:  # no watermark yet (a stream has not been heard from): nothing is due
            return []
        self._finalize(wm)
        self._expire_outcomes(wm)
        md = self.cfg.max_delay
        while self._final_order and (self._final_order[0][0] + md < wm or len(self.final) > self.cfg.max_pending):
            _, rid = self._final_order.popleft()
            self.final.pop(rid, None)
        size = self.cfg.window
        if wm == math.inf:
            due = sorted(self.windows)
        else:
            limit = math.floor((wm - md) / size)  # window k closes when (k + 1) size + max_delay <= wm
            due = sorted(k for k in self.windows if k < limit)
            self.closed_below = max(self.closed_below, limit)
        if due:
            self.closed_below = max(self.closed_below, due[-1] + 1)
        return [self._result(k, self.windows.pop(k)) for k in due]

    def _finalize(self, wm: float) -> None:
        pending, md = self.pending, self.cfg.max_delay
        ts: list[float] = []
        ps: list[float] = []
        ys: list[float] = []
        get, final, order = pending.get, self.final, self._final_order
        negative = self.cfg.unmatched == "negative"
        joined = unmatched = 0
        # whole buckets before the watermark's, then the due part of the watermark's own bucket
        top = math.inf if wm == math.inf else math.floor(wm / self._grain)
        for key in sorted(k for k in self._due if k <= top):
            bucket = self._due.pop(key)
            if key == top:
                keep = [e for e in bucket if e[0] > wm]
                if keep:
                    self._due[key] = keep
                    bucket = [e for e in bucket if e[0] <= wm]
            for due, rid in bucket:
                cur = get(rid)
                if cur is None or cur[0] + md != due:  # stale: replaced by an earlier duplicate
                    continue
                del pending[rid]
                final[rid] = due
                order.append((due, rid))
                if cur[2] >= 0:
                    joined += 1
                elif negative:
                    unmatched += 1
                    cur[2] = 0.0
                else:
                    unmatched += 1
                    continue
                ts.append(cur[0])
                ps.append(cur[1])
                ys.append(cur[2])
        self.counts["joined"] += joined
        self.counts["unmatched_negative" if negative else "unmatched_dropped"] += unmatched
        if not ts:
            return
        t, p, y = np.asarray(ts), np.asarray(ps), np.asarray(ys)
        widx = np.floor(t / self.cfg.window).astype(np.int64)
        b = np.clip(np.searchsorted(self.edges, p, side="right") - 1, 0, self.nbins - 1)
        # integer sums (probabilities in units of 1e-9): a window's numbers do not depend on
        # the order in which its predictions became final
        pn = np.rint(p * UNITS).astype(np.int64)
        yi = y.astype(np.int64)
        for k in np.unique(widx).tolist():
            sel = widx == k
            acc = self.windows.get(k)
            if acc is None:
                acc = self.windows[k] = np.zeros((3, self.nbins), dtype=np.int64)
            bk = b[sel]
            np.add.at(acc[0], bk, 1)
            np.add.at(acc[1], bk, pn[sel])
            np.add.at(acc[2], bk, yi[sel])

    def _expire_outcomes(self, wm: float) -> None:
        heap, outcomes = self._oheap, self.outcomes
        while heap and heap[0][0] <= wm:
            due, _, rid = heapq.heappop(heap)
            cur = outcomes.get(rid)
            if cur is None or cur[0] != due:
                continue
            del outcomes[rid]
            self.counts["orphan_outcome"] += 1

    # -- output -----------------------------------------------------------------------

    def _result(self, k: int, acc: np.ndarray) -> CalibrationResult:
        self.windows_closed += 1
        det, size = self.det, self.cfg.window
        n_b = acc[0].astype(np.int64)
        n = int(n_b.sum())
        base: dict[str, Any] = dict(
            stream=self.streams[0], feature=self.cfg.name, segment=None, window_start=k * size,
            window_end=(k + 1) * size, metric=METRIC, unit=det.unit, n_current=n, n_reference=0,
            warn_threshold=det.thresholds.warn, critical_threshold=det.thresholds.critical,
            counts=tuple(n_b.tolist()), bins=self.labels, smoothing="none", name=self.cfg.name,
            positives=int(acc[2].sum()), join=tuple(sorted(self.counts.items())),
        )
        if n == 0 or n < det.min_count:
            return CalibrationResult(**base, divergence=None, p_value=None, state="insufficient_data",
                                     transition="none", severity=self.alarm.severity)
        s = score(acc[0], acc[1] / UNITS, acc[2], det.unit)
        significant = det.max_p_value is None or s.p_value <= det.max_p_value
        level = "ok"
        if significant and s.divergence >= det.thresholds.critical:
            level = "critical"
        elif significant and s.divergence >= det.thresholds.warn:
            level = "warn"
        active = self.alarm.severity
        transition = self.alarm._hysteresis(level)
        return CalibrationResult(
            **base, divergence=s.divergence, p_value=s.p_value, p_value_method="chi2", state=level,
            transition=transition, severity=active if transition == "resolved" else self.alarm.severity,
            top_bins=self._top_bins(s), ece=s.ece,
        )

    def _top_bins(self, s: Score) -> tuple[BinShare, ...]:
        k = self.det.top_bins
        mag = np.where(np.isnan(s.observed), -1.0, s.terms)
        order = np.argsort(-mag, kind="stable")[:k]
        return tuple(BinShare(self.labels[i], float(s.predicted[i]), float(s.observed[i]), float(s.terms[i]))
                     for i in order.tolist() if mag[i] >= 0)

    # -- state ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "shape": self._shape(),
            "pending": [[rid, *v] for rid, v in self.pending.items()],
            "outcomes": [[rid, *v] for rid, v in self.outcomes.items()],
            "final": [[due, rid] for due, rid in self._final_order if self.final.get(rid) == due],
            "windows": {str(k): acc.tolist() for k, acc in self.windows.items()},
            "closed_below": self.closed_below,
            "watermark": self.watermark,
            "part_max": {s: [[p, m] for p, m in sorted(pm.items())] for s, pm in self.part_max.items()},
            "counts": dict(self.counts),
            "windows_closed": self.windows_closed,
            "alarm": self.alarm.snapshot(),
        }

    def _shape(self) -> dict[str, Any]:
        """What the state's meaning depends on (a checkpoint for other bins or windows is refused)."""
        return {"edges": list(self.cfg.edges), "window": self.cfg.window, "streams": list(self.streams)}

    def restore(self, d: dict[str, Any]) -> None:
        if d.get("shape") != self._shape():
            raise ValueError(f"calibration {self.cfg.name!r} was checkpointed with {d.get('shape')}, "
                             f"configured now as {self._shape()}")
        md = self.cfg.max_delay
        self.pending = {str(r[0]): [float(r[1]), float(r[2]), float(r[3]), float(r[4])] for r in d["pending"]}
        self.outcomes = {str(r[0]): [float(r[1]), float(r[2])] for r in d["outcomes"]}
        self._due, self._oheap, self._seq = {}, [], 0
        for rid, v in self.pending.items():
            self._schedule(v[0] + md, rid)
        for rid, v in self.outcomes.items():
            self._push(self._oheap, v[0], rid)
        self._final_order = deque((float(due), str(rid)) for due, rid in d["final"])
        self.final = {rid: due for due, rid in self._final_order}
        self.windows = {int(k): np.asarray(v, dtype=np.int64).reshape(3, self.nbins) for k, v in d["windows"].items()}
        self.closed_below = int(d["closed_below"])
        self.watermark = float(d["watermark"])
        self.part_max = {s: {int(p): float(m) for p, m in d["part_max"].get(s, [])} for s in self.streams}
        self.part_seen = {s: {} for s in self.streams}
        self.counts = Counter({k: 0 for k in CALIBRATION_COUNTS})
        self.counts.update({str(k): int(v) for k, v in d["counts"].items()})
        self.windows_closed = int(d["windows_closed"])
        self.alarm.restore(d["alarm"])

    def forget_partitions(self, stream: str, partitions: list[int]) -> None:
        """Partitions of ``stream`` revoked from this consumer stop holding the watermark back."""
        for p in partitions:
            self.part_max[stream].pop(p, None)
            self.part_seen[stream].pop(p, None)

    def pending_sizes(self) -> tuple[int, int]:
        """Buffered predictions and outcomes (the memory bound is ``max_pending`` each)."""
        return len(self.pending), len(self.outcomes)


def monitors_for(cfg: Config, *, merged_input: bool = False,
                 streams: Sequence[str] | None = None) -> list[CalibrationMonitor]:
    """The configured calibration monitors (those whose two streams are in ``streams``, when given)."""
    return [CalibrationMonitor(c, cfg, merged_input=merged_input) for c in cfg.calibration
            if streams is None or (c.predictions.stream in streams and c.outcomes.stream in streams)]
