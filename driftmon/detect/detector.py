"""The drift detector for one (stream, feature, segment) series of closed windows.

Each closed window is compared with its *headline* reference, by default the
latest earlier window that does not overlap it (for hopping windows, shared
events would otherwise hide drift), or a *pinned* reference (the first window
with at least ``min_count`` events); and, beside it, with each of
``detector.horizons``: the window ``lag`` windows back (in non-overlapping
window lengths), which sees slow, gradual drift that a window-to-window
comparison cannot (``lag: 24`` with hourly windows is the same hour
yesterday).  Each comparison is a *test*.

Per test: the divergence; its *effect*, the divergence less the share that
sampling noise explains (:func:`effect`: for KL, the divergence minus its
plug-in bias (K-1)/2 (1/n + 1/m) nats); the G-test p-value of "no change"
(one call to :func:`driftmon.detect.significance.g_test`); and how
unusual the effect is for this series and horizon (a robust z against its
own last ``unusual.history`` effects, scaled by their upper tail: :func:`robust_z`).

A test's level is ``warn`` (``critical``) when all of these hold:

* *significant*: the Benjamini-Hochberg adjusted p-value over all tests of
  the closed window (every feature, segment and horizon of the stream) is at
  most ``fdr`` (unless ``fdr`` is null), and the raw p-value at most
  ``max_p_value`` (unless null);
* *large enough*: the effect reaches ``thresholds.warn`` (``critical``);
* *unusual*: its robust z reaches ``unusual.min_z`` (unless null, or fewer
  than ``unusual.min_history`` effects are kept yet).

The window's state is the highest level over its tests, and ``horizon`` names
the test that set it.  Since the adjusted p-value needs every p-value of the
window, the pipeline runs :meth:`Detector.compute` for every series first,
adjusts, then :meth:`Detector.decide`; :meth:`Detector.update` does both for
one series alone (its own tests are the family).

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
>>> r.state, r.transition, r.top_bins[0].bin, r.horizon, r.tests
('critical', 'fired', 'a', 'previous', 1)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from driftmon.config import DetectorConfig
from driftmon.detect import divergence, significance
from driftmon.detect.registry import REGISTRY, SummaryDivergence
from driftmon.detect.result import BinShare, DriftResult, HorizonResult
from driftmon.summaries.base import Summarizer
from driftmon.vocabulary import SEVERITY_OF_STATE

LEVELS = ("ok", "warn", "critical")
MIN_SCALE = 1e-12  # the robust z's scale when the history has no spread


def effect(value: float, g: float, expected: float) -> float:
    """The divergence less the part that sampling noise explains: ``value * (G - E0) / G``.

    Under "no change" the G statistic has mean ``E0``: ``df`` where it is about chi^2(df),
    the mean over the permutation draws for sparse tables (where G runs well above df); the
    divergence is scaled by the share of G beyond that.  For the plug-in KL of a small change,
    ``KL ~ G / (2 nm/(n+m))``, so this is ``KL - (K-1)/2 (1/n + 1/m)``: the plug-in bias
    removed.  It needs no bias formula per metric and holds with smoothing (whose shrinkage
    the plug-in formula would over-correct) and for the summary metrics.  It is negative when
    G < E0 (less change than noise alone gives); 0 when G = 0.

    >>> round(effect(0.051, 102.0, 2), 4)
    0.05
    """
    if g <= 0:
        return 0.0
    return value * (g - expected) / g


def robust_z(value: float, history: Sequence[float], quantile: float = 0.95) -> float:
    """How unusual ``value`` is against ``history``: ``(value - median) / scale`` with the
    robust high-quantile scale ``(Q_quantile - median) / Phi^-1(quantile)`` (a normal
    history's sd; at least 1e-12).  The spread is read off the history's upper tail, where
    divergences of real series are heavy (weather, weekdays), not off its centre as the
    MAD would be, so a series that often moves a lot needs a larger move to be unusual.

    >>> round(robust_z(20.0, [float(x) for x in range(11)]), 2)  # median 5, Q95 9.5
    5.48
    """
    h = np.asarray(history, dtype=np.float64)
    med = float(np.median(h))
    spread = (float(np.quantile(h, quantile)) - med) / float(norm.ppf(quantile))
    return (value - med) / max(spread, MIN_SCALE)


@dataclass
class Test:
    """One comparison of a closed window with one reference (before the decision)."""

    __test__ = False  # not a pytest test class

    reference: str  # previous | pinned | lagN
    n_reference: int
    labels: tuple[str, ...] = ()
    counts: np.ndarray | None = None
    ref: np.ndarray | None = None
    terms: np.ndarray | None = None
    divergence: float | None = None
    effect: float | None = None
    p_value: float | None = None
    method: str | None = None
    unusual_z: float | None = None
    design_effect: float | None = None  # streams[].cluster_by: the Rao-Scott mean design effect used
    state: str = "no_reference"  # no_reference | insufficient_data | compared


@dataclass
class Pending:
    """A closed window's tests, computed and waiting for the family's adjusted p-values."""

    detector: Detector
    index: int
    start: float | None
    end: float | None
    summary: Any
    tests: list[Test]

    def p_values(self) -> list[float]:
        """One entry per test; NaN where nothing was tested."""
        return [t.p_value if t.p_value is not None else math.nan for t in self.tests]

class Detector:
    """Compares each closed window with its references and tracks alert state."""

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
        self.lags = tuple(h.lag for h in cfg.horizons)
        self.history: deque[tuple[int, Any]] = deque(maxlen=overlap * max((1, *self.lags)))
        self.pinned: Any = None
        self.recent: deque[bool] = deque(maxlen=cfg.hysteresis.of_last)
        self.severity: str | None = None  # active alert severity (warning | critical)
        self.ok_streak = 0
        self.headline = "pinned" if cfg.reference == "pinned" else "previous"
        self.references = (self.headline, *(h.name for h in cfg.horizons))
        # per reference: the last effects, for the "unusual for this series" gate
        self.effects: dict[str, deque[float]] = {r: deque(maxlen=cfg.unusual.history) for r in self.references}
        self.entry = REGISTRY[cfg.metric]
        self.on_summaries = isinstance(self.entry, SummaryDivergence)
        self.smoothing = "none" if self.on_summaries else divergence.smoothing_label(cfg.smoothing)

    def _lagged(self, index: int, lag: int) -> Any:
        """The latest kept window at least ``lag`` non-overlapping window lengths before ``index``."""
        for idx, summary in reversed(self.history):
            if idx <= index - lag * self.overlap:
                return summary
        return None

    def _reference(self, name: str, index: int) -> Any:
        if name == "pinned":
            return self.pinned
        if name == "previous":
            return self._lagged(index, 1)
        return self._lagged(index, int(name[3:]))

    # -- compute: divergences and p-values --------------------------------------------

    def compute(self, index: int, start: float | None, end: float | None, summary: Any,
                design_effect: float = 1.0) -> Pending:
        """Compare one closed window with every reference; no state changes until :meth:`decide`."""
        tests = [self._test(name, summary, self._reference(name, index), design_effect)
                 for name in self.references]
        return Pending(self, index, start, end, summary, tests)

    def _test(self, name: str, summary: Any, ref_summary: Any, design_effect: float) -> Test:
        cfg = self.cfg
        n = int(summary.total)
        if ref_summary is None:
            labels, (counts,) = self.summarizer.bins([summary])
            return Test(name, 0, labels, counts)
        t = Test(name, int(ref_summary.total))
        t.labels, (t.counts, t.ref) = self.summarizer.bins([summary, ref_summary])
        if n < cfg.min_count or t.n_reference < cfg.min_count:
            t.state = "insufficient_data"
            return t
        if self.on_summaries:
            value, t.terms = divergence.compare_summaries(cfg.metric, self.summarizer, summary, ref_summary,
                                                          cfg.unit)
        else:
            value, t.terms = divergence.compare(cfg.metric, t.counts, t.ref, cfg.smoothing, cfg.unit,
                                                order=cfg.renyi_alpha)
        div = float(value)
        if math.isnan(div):  # a summary metric over a window with no finite value
            t.state = "insufficient_data"
            return t
        # the p-value, in one place (design_effect: clustered events, streams[].cluster_by: each
        # reference its own, from the two windows' cluster tables in this comparison's bins)
        deff: float | significance.DesignEffect = design_effect
        if hasattr(self.summarizer, "cluster_stats"):
            deff = significance.design_effect(self.summarizer.cluster_stats([summary, ref_summary]),
                                              [t.counts, t.ref])
            t.design_effect = deff.mean
        test = significance.g_test(t.counts, t.ref, permutations=cfg.permutations, design_effect=deff)
        t.divergence, t.effect = div, effect(div, test.statistic, test.expected)
        t.p_value, t.method = float(test.p_value), test.method
        kept = self.effects[name]
        if len(kept) >= cfg.unusual.min_history and math.isfinite(t.effect):
            t.unusual_z = robust_z(t.effect, kept, cfg.unusual.quantile)
        t.state = "compared"
        return t

    # -- decide: thresholds, gates, hysteresis ------------------------------------------

    def _level(self, t: Test, p_adjusted: float | None) -> str:
        cfg = self.cfg
        if t.state != "compared" or t.effect is None or t.p_value is None:
            return t.state
        significant = (cfg.fdr is None or (p_adjusted is not None and p_adjusted <= cfg.fdr)) and \
            (cfg.max_p_value is None or t.p_value <= cfg.max_p_value)
        unusual = cfg.unusual.min_z is None or t.unusual_z is None or t.unusual_z >= cfg.unusual.min_z
        if not (significant and unusual):
            return "ok"
        if t.effect >= cfg.thresholds.critical:
            return "critical"
        return "warn" if t.effect >= cfg.thresholds.warn else "ok"

    def decide(self, pending: Pending, p_adjusted: Sequence[float], tests: int) -> DriftResult:
        """Decide the window's state from its tests and their adjusted p-values (NaN: no test),
        given ``tests`` in the family; then update the references, histories and hysteresis."""
        cfg = self.cfg
        summary, n = pending.summary, int(pending.summary.total)
        if len(p_adjusted) != len(pending.tests):
            raise ValueError(f"expected {len(pending.tests)} adjusted p-values, got {len(p_adjusted)}")
        adjusted = [None if math.isnan(q) else float(q) for q in p_adjusted]
        levels = [self._level(t, q) for t, q in zip(pending.tests, adjusted)]
        # state the window and its references for the next ones
        self.history.append((pending.index, summary))
        if self.pinned is None and cfg.reference == "pinned" and n >= cfg.min_count:
            self.pinned = summary
        for t in pending.tests:
            if t.state == "compared" and t.effect is not None and math.isfinite(t.effect):
                self.effects[t.reference].append(t.effect)
        head, q_head = pending.tests[0], adjusted[0]
        base: dict[str, Any] = dict(
            stream=self.stream, feature=self.feature, segment=self.segment, window_start=pending.start,
            window_end=pending.end, metric=cfg.metric, unit=self.entry.unit_for(cfg.unit),
            n_current=n, n_reference=head.n_reference,
            warn_threshold=cfg.thresholds.warn, critical_threshold=cfg.thresholds.critical,
            counts=tuple(head.counts.tolist()) if head.counts is not None else (), bins=head.labels,
            smoothing=self.smoothing, tests=tests,
            horizons=tuple(
                HorizonResult(t.reference, t.n_reference, t.divergence, t.effect, t.p_value, q,
                              t.unusual_z, lvl)
                for t, q, lvl in zip(pending.tests, adjusted, levels)
            ),
        )
        compared = [i for i, lvl in enumerate(levels) if lvl in LEVELS]
        if not compared:  # nothing tested: the headline says why (no_reference / insufficient_data)
            return DriftResult(**base, divergence=None, p_value=None, state=head.state,
                               transition="none", severity=self.severity, horizon=head.reference)
        top = max(compared, key=lambda i: (LEVELS.index(levels[i]), -i))
        level, decider = levels[top], pending.tests[top]
        active = self.severity
        transition = self._hysteresis(level)
        shown = decider if level != "ok" else (head if head.state == "compared" else decider)
        assert shown.counts is not None and shown.ref is not None
        return DriftResult(  # a resolving result names the severity it resolves
            **base, divergence=head.divergence, p_value=head.p_value, p_value_method=head.method,
            effect=head.effect, p_adjusted=q_head, unusual_z=head.unusual_z, design_effect=head.design_effect,
            state=level, transition=transition, horizon=decider.reference,
            severity=active if transition == "resolved" else self.severity,
            top_bins=self._top_bins(shown.labels, shown.counts, shown.ref, shown.terms),
        )

    def update(self, index: int, start: float | None, end: float | None, summary: Any) -> DriftResult:
        """Feed one closed window's summary; return its result (this series' tests are the whole family)."""
        pending = self.compute(index, start, end, summary)
        p = pending.p_values()
        return self.decide(pending, significance.benjamini_hochberg(p).tolist(),
                           sum(not math.isnan(x) for x in p))

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
            "effects": {r: list(v) for r, v in self.effects.items()},
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
        for r, kept in self.effects.items():  # (absent from checkpoints written before horizons)
            kept.clear()
            kept.extend(float(x) for x in d.get("effects", {}).get(r, ()))
