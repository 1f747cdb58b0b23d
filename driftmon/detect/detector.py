"""The drift detector for one (stream, feature, segment) series of closed windows.

Each closed window is compared with a reference: by default the latest
earlier window that does not overlap it (for hopping windows, shared events
would otherwise hide drift), or a *pinned* reference (the first window with at
least ``min_count`` events), which also catches slow, gradual drift that a
window-to-window comparison cannot see.

A window's level is ``critical``/``warn`` when the divergence reaches that
threshold *and*, unless ``max_p_value`` is null, the G-test p-value of "no
change" is at most ``max_p_value``.  The p-value accounts for both window
sizes and the number of non-empty bins, so a threshold means the same
false-alarm rate on small and large windows (the plug-in KL alone has a
positive bias of about (K-1)/2 * (1/n + 1/m) nats).

Hysteresis: an alert fires when ``fire_after`` of the last ``of_last``
windows were over the warn level (the current one included), escalates
(fires again, as ``critical``) when a ``warn`` alert meets a critical window,
and resolves after ``resolve_after`` consecutive windows below warn.

Bins are chosen per comparison from the pooled summaries of the current
window and its reference (see :mod:`driftmon.summaries`), so a value that
appears after start is a bin of its own.  A metric computed from the
summaries themselves (``wasserstein``, ``gaussian_kl``) gets them, not the
bins; the p-value is the G-test on the bins for every metric.  Such a metric
applies no smoothing (``smoothing`` is ``none``), and when it has no per-bin
contributions ``top_bins`` lists the bins whose share moved most, with a
null contribution.

>>> from driftmon.config import DetectorConfig
>>> from driftmon.summaries.categorical import CategoricalSummarizer
>>> s = CategoricalSummarizer(top_k=3)
>>> window = lambda a, b, c: s.summarize(s.codes(["a"] * a + ["b"] * b + ["c"] * c))
>>> det = Detector(DetectorConfig(min_count=100), s, stream="s", feature="f")
>>> det.update(0, 0.0, 60.0, window(300, 300, 400)).state
'no_reference'
>>> det.update(1, 60.0, 120.0, window(310, 290, 400)).state
'ok'
>>> r = det.update(2, 120.0, 180.0, window(700, 200, 100))
>>> r.state, r.transition, r.top_bins[0].bin
('critical', 'fired', 'a')
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from driftmon.config import DetectorConfig
from driftmon.detect import divergence, significance
from driftmon.detect.registry import REGISTRY, SummaryDivergence
from driftmon.detect.result import BinShare, DriftResult
from driftmon.summaries.base import Summarizer
from driftmon.vocabulary import SEVERITY_OF_STATE


class Detector:
    """Compares each closed window with its reference and tracks alert state."""

    def __init__(
        self,
        cfg: DetectorConfig,
        summarizer: Summarizer,
        *,
        stream: str,
        feature: str,
        segment: str | None = None,
        overlap: int = 1,
    ):
        self.cfg = cfg
        self.summarizer = summarizer
        self.stream, self.feature, self.segment = stream, feature, segment
        self.overlap = overlap  # windows w and w - overlap + 1 .. w share events
        self.history: deque[tuple[int, Any]] = deque(maxlen=overlap)
        self.pinned: Any = None
        self.recent: deque[bool] = deque(maxlen=cfg.hysteresis.of_last)
        self.severity: str | None = None  # active alert severity (warning | critical)
        self.ok_streak = 0
        self.entry = REGISTRY[cfg.metric]
        self.on_summaries = isinstance(self.entry, SummaryDivergence)
        self.smoothing = "none" if self.on_summaries else divergence.smoothing_label(cfg.smoothing)

    def _reference(self, index: int) -> Any:
        if self.cfg.reference == "pinned":
            return self.pinned
        for idx, summary in reversed(self.history):
            if idx <= index - self.overlap:
                return summary
        return None

    def update(self, index: int, start: float | None, end: float | None, summary: Any) -> DriftResult:
        """Feed one closed window's summary; return its result."""
        cfg = self.cfg
        n = int(summary.total)
        ref_summary = self._reference(index)
        self.history.append((index, summary))
        if self.pinned is None and cfg.reference == "pinned" and n >= cfg.min_count:
            self.pinned = summary
        if ref_summary is None:
            labels, (counts,) = self.summarizer.bins([summary])
            ref = None
        else:
            labels, (counts, ref) = self.summarizer.bins([summary, ref_summary])
        base: dict[str, Any] = dict(
            stream=self.stream, feature=self.feature, segment=self.segment, window_start=start, window_end=end,
            metric=cfg.metric, unit=self.entry.unit_for(cfg.unit),
            n_current=n, n_reference=int(ref_summary.total) if ref_summary is not None else 0,
            warn_threshold=cfg.thresholds.warn, critical_threshold=cfg.thresholds.critical,
            counts=tuple(counts.tolist()), bins=labels, smoothing=self.smoothing,
        )
        if ref is None:
            return DriftResult(**base, divergence=None, p_value=None, state="no_reference",
                               transition="none", severity=self.severity)
        if n < cfg.min_count or base["n_reference"] < cfg.min_count:
            return DriftResult(**base, divergence=None, p_value=None, state="insufficient_data",
                               transition="none", severity=self.severity)
        terms: np.ndarray | None
        if self.on_summaries:
            value, terms = divergence.compare_summaries(cfg.metric, self.summarizer, summary, ref_summary, cfg.unit)
        else:
            value, terms = divergence.compare(cfg.metric, counts, ref, cfg.smoothing, cfg.unit,
                                              order=cfg.renyi_alpha)
        div = float(value)
        if math.isnan(div):  # a summary metric over a window with no finite value
            return DriftResult(**base, divergence=None, p_value=None, state="insufficient_data",
                               transition="none", severity=self.severity)
        deff = significance.design_effect(self.summarizer.cluster_stats([summary, ref_summary]), [counts, ref]) \
            if hasattr(self.summarizer, "cluster_stats") else None  # streams[].cluster_by
        test = significance.g_test(counts, ref, permutations=cfg.permutations, design_effect=deff or 1.0)
        significant = cfg.max_p_value is None or test.p_value <= cfg.max_p_value
        level = "ok"
        if significant and div >= cfg.thresholds.critical:
            level = "critical"
        elif significant and div >= cfg.thresholds.warn:
            level = "warn"
        active = self.severity
        transition = self._hysteresis(level)
        return DriftResult(  # a resolving result names the severity it resolves
            **base, divergence=div, p_value=float(test.p_value), p_value_method=test.method, state=level,
            transition=transition, severity=active if transition == "resolved" else self.severity,
            top_bins=self._top_bins(labels, counts, ref, terms),
            design_effect=None if deff is None else deff.mean,
        )

    def _hysteresis(self, level: str) -> str:
        h = self.cfg.hysteresis
        over = level != "ok"
        self.recent.append(over)
        if self.severity is None:
            if over and sum(self.recent) >= h.fire_after:
                self.severity, self.ok_streak = SEVERITY_OF_STATE[level], 0
                return "fired"
            return "none"
        if not over:
            self.ok_streak += 1
            if self.ok_streak >= h.resolve_after:
                self.severity, self.ok_streak = None, 0
                self.recent.clear()
                return "resolved"
            return "none"
        self.ok_streak = 0
        if level == "critical" and self.severity == "warning":
            self.severity = "critical"
            return "fired"
        return "none"

    def _top_bins(self, labels: tuple[str, ...], cur: np.ndarray, ref: np.ndarray,
                  terms: np.ndarray | None) -> tuple[BinShare, ...]:
        """The bins of this comparison with the largest absolute contributions (without
        contributions: the largest moves in share, with a NaN contribution)."""
        k = self.cfg.top_bins
        if k <= 0:
            return ()
        pc, pr = cur / max(cur.sum(), 1), ref / max(ref.sum(), 1)
        if terms is None:
            terms = np.full(pc.shape, np.nan)
            magnitude = np.abs(pc - pr)
        else:
            terms = np.asarray(terms, dtype=np.float64)
            magnitude = np.where(np.isnan(terms), 0.0, np.abs(terms))
        order = np.argsort(-magnitude, kind="stable")[:k]
        return tuple(
            BinShare(labels[i], float(pr[i]), float(pc[i]), float(terms[i]))
            for i in order.tolist() if magnitude[i] > 0 or cur[i] or ref[i]
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "history": [[i, s.to_dict()] for i, s in self.history],
            "pinned": None if self.pinned is None else self.pinned.to_dict(),
            "recent": list(self.recent),
            "severity": self.severity,
            "ok_streak": self.ok_streak,
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.history.clear()
        for i, s in d["history"]:
            self.history.append((int(i), self.summarizer.from_dict(s)))
        self.pinned = None if d["pinned"] is None else self.summarizer.from_dict(d["pinned"])
        self.recent.clear()
        self.recent.extend(bool(x) for x in d["recent"])
        self.severity = d["severity"]
        self.ok_streak = int(d["ok_streak"])
