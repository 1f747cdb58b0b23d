"""The detector: states, the significance requirement, hysteresis and
escalation, the non-overlapping and pinned references, top bins, and
snapshot/restore."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from driftmon.config import DetectorConfig, Hysteresis, Smoothing, Thresholds, parse_config
from driftmon.config.model import Unusual
from driftmon.detect import divergence
from driftmon.detect.detector import Detector as SummaryDetector
from driftmon.pipeline import StreamPipeline
from driftmon.summaries.fixed import FixedSummarizer, FixedSummary
from driftmon.testing.synth import BASE_MIX, DRIFT_MIX

LABELS = ("a", "b", "__other__", "__missing__")
# Two categories, 10,000 events per window: the chi2 p-value applies and is tiny for real shifts.
STABLE = np.array([5000, 5000, 0, 0])
SAME = np.array([5050, 4950, 0, 0])  # KL ~ 5e-5
WARN = np.array([6800, 3200, 0, 0])  # KL ~ 0.066 nats, between warn 0.05 and critical 0.1
CRIT = np.array([7500, 2500, 0, 0])  # KL ~ 0.131 nats
LEVEL = {"ok": SAME, "warn": WARN, "critical": CRIT}


@dataclasses.dataclass(frozen=True)
class _Bins:
    """Declared bins with the given labels (what FixedSummarizer needs of a spec)."""

    labels: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.labels)


class Detector(SummaryDetector):
    """The detector over declared bins, fed count vectors: the bins are then the same in
    every comparison, so these tests state the detector's rules on plain counts."""

    def __init__(self, cfg, labels, **kw):
        super().__init__(cfg, FixedSummarizer(_Bins(tuple(labels))), **kw)

    def update(self, index, start, end, counts):
        return super().update(index, start, end, FixedSummary(np.asarray(counts, dtype=np.int64)))


# These tests state the rules on fixed levels: the thresholds these counts sit between, one
# reference, and no "unusual" gate (horizons, FDR and the gate have their own tests below).
RULES = dict(thresholds=Thresholds(0.05, 0.1), horizons=(), unusual=Unusual(min_z=None))


def detector(**overrides) -> Detector:
    cfg = dataclasses.replace(DetectorConfig(), **{**RULES, **overrides})
    return Detector(cfg, LABELS, stream="s", feature="f", segment=None)


def run(det: Detector, windows, start_index: int = 0):
    return [det.update(start_index + i, 60.0 * (start_index + i), 60.0 * (start_index + i + 1), np.asarray(c))
            for i, c in enumerate(windows)]


# ----------------------------------------------------------------------------- states


def test_states_no_reference_ok_warn_critical():
    det = detector(reference="pinned")
    r0, r1, r2, r3 = run(det, [STABLE, SAME, WARN, CRIT])
    assert (r0.state, r0.divergence, r0.p_value, r0.n_reference) == ("no_reference", None, None, 0)
    assert r1.state == "ok" and r1.divergence < 0.05 and r1.p_value > 0.001
    assert r2.state == "warn" and 0.05 <= r2.divergence < 0.1 and r2.p_value < 1e-12
    assert r3.state == "critical" and r3.divergence >= 0.1
    for r in (r1, r2, r3):
        assert r.n_current == 10000 and r.n_reference == 10000 and r.p_value_method == "chi2"
        assert r.metric == "kl" and r.unit == "nats" and r.smoothing == "additive(alpha=0.5)"
        assert (r.warn_threshold, r.critical_threshold) == (0.05, 0.1)
    assert r3.counts == tuple(CRIT.tolist()) and r3.bins == LABELS


def test_insufficient_data_for_small_current_or_reference():
    det = detector(min_count=500)
    small = np.array([300, 150, 20, 29])  # 499 events
    r = run(det, [STABLE, small, STABLE, CRIT])
    assert [x.state for x in r] == ["no_reference", "insufficient_data", "insufficient_data", "critical"]
    assert r[1].n_current == 499 and r[1].divergence is None and r[1].p_value is None
    assert r[2].n_reference == 499  # the small window was the reference
    assert r[1].transition == r[2].transition == "none"


def test_divergence_matches_the_divergence_module_and_bits_unit():
    det = detector(unit="bits", metric="js", reference="pinned")
    _, r = run(det, [STABLE, WARN])
    d, _ = divergence.compare("js", WARN, STABLE, Smoothing(), "bits")
    assert r.unit == "bits" and r.metric == "js" and r.divergence == pytest.approx(float(d), rel=1e-12)
    nats = run(detector(reference="pinned"), [STABLE, WARN])[1].divergence
    bits = run(detector(reference="pinned", unit="bits"), [STABLE, WARN])[1].divergence
    assert bits == pytest.approx(nats / math.log(2), rel=1e-12)


def test_smoothing_none_gives_infinite_divergence_and_inf_on_the_wire():
    det = detector(smoothing=Smoothing("none"))
    _, r = run(det, [np.array([600, 400, 0, 0]), np.array([500, 400, 100, 0])])
    assert r.divergence == math.inf and r.state == "critical"
    assert r.top_bins[0].bin == "__other__" and r.top_bins[0].contribution == math.inf
    assert r.top_bins[0].p_reference == 0.0 and r.top_bins[0].p_current == 0.1
    wire = json.loads(json.dumps(r.to_dict()))
    assert wire["divergence"] == "inf" and wire["top_bins"][0]["contribution"] == "inf"
    assert isinstance(wire["p_value"], float) and wire["smoothing"] == "none"


# ----------------------------------------------------------------------------- significance requirement


def test_p_value_requirement_blocks_large_but_insignificant_divergence():
    # 60 equally likely categories, 100 events per window: the plug-in KL is far above 0.1 by
    # sampling noise alone ((K-1)/2 * (1/n + 1/m) ~ 0.6 nats) but the p-value knows it is noise.
    labels = tuple(f"c{i}" for i in range(60)) + ("__other__", "__missing__")
    rng = np.random.default_rng(11)
    p = np.r_[np.full(60, 1 / 60), 0, 0]
    ref, cur = rng.multinomial(100, p), rng.multinomial(100, p)
    # The effect (divergence minus that bias) is what the floor sees; "loose" has no p-value
    # gate and floors below any effect, so only the p-value stops "strict".
    strict = Detector(dataclasses.replace(DetectorConfig(min_count=50), **RULES), labels, stream="s", feature="f")
    loose = Detector(dataclasses.replace(DetectorConfig(min_count=50), **{**RULES, "fdr": None,
                                         "thresholds": Thresholds(-1.0, -1.0)}), labels, stream="s", feature="f")
    _, rs = run(strict, [ref, cur])
    _, rl = run(loose, [ref, cur])
    assert rs.divergence == rl.divergence and rs.divergence > 0.1
    assert rs.effect is not None and rs.effect < rs.divergence / 2  # noise explains most of it
    assert rs.p_value == rl.p_value and rs.p_value > 0.01 and rs.p_value_method == "permutation"
    assert rs.p_adjusted == rs.p_value and rs.tests == 1
    assert rs.state == "ok" and rs.transition == "none"
    assert rl.state == "critical" and rl.transition == "fired"


def test_effect_size_requirement_blocks_significant_but_tiny_change():
    det = detector(reference="pinned")
    _, r = run(det, [np.array([50000, 50000, 0, 0]), np.array([51000, 49000, 0, 0])])
    assert r.p_value < 1e-4 and r.divergence < 0.05 and r.state == "ok"


# ----------------------------------------------------------------------------- hysteresis


def levels(det: Detector, names, start_index: int = 1):
    return run(det, [LEVEL[n] for n in names], start_index=start_index)


def test_default_hysteresis_fires_and_resolves_on_one_window():
    det = detector(reference="pinned")
    run(det, [STABLE])
    r = levels(det, ["ok", "warn", "warn", "ok", "critical", "ok"])
    assert [x.transition for x in r] == ["none", "fired", "none", "resolved", "fired", "resolved"]
    # a resolving window names the severity it resolves
    assert [x.severity for x in r] == [None, "warning", "warning", "warning", "critical", "critical"]


def test_fire_after_k_of_last_m_and_resolve_after_r():
    det = detector(reference="pinned", hysteresis=Hysteresis(fire_after=2, of_last=3, resolve_after=2))
    run(det, [STABLE])
    names = ["ok", "warn", "ok", "warn", "critical", "ok", "warn", "ok", "ok", "warn", "ok", "warn"]
    r = levels(det, names)
    assert [x.state for x in r] == names
    assert [x.transition for x in r] == [
        "none", "none", "none",  # one over in the last three: not yet
        "fired",  # warn, ok, warn: two of the last three
        "fired",  # escalation warning -> critical
        "none", "none", "none",  # an over-threshold window breaks the ok streak
        "resolved",  # two consecutive ok
        "none", "none",  # history was cleared on resolve: one over is not enough
        "fired",  # warn, ok, warn again
    ]
    assert [x.severity for x in r][3:10] == ["warning", "critical", "critical", "critical", "critical", "critical", None]


def test_escalation_fires_once_and_never_deescalates():
    det = detector(reference="pinned")
    run(det, [STABLE])
    r = levels(det, ["warn", "critical", "critical", "warn", "critical", "ok"])
    assert [x.transition for x in r] == ["fired", "fired", "none", "none", "none", "resolved"]
    assert [x.severity for x in r] == ["warning", "critical", "critical", "critical", "critical", "critical"]


def test_insufficient_windows_do_not_move_hysteresis():
    det = detector(reference="pinned", hysteresis=Hysteresis(fire_after=2, of_last=2, resolve_after=1))
    run(det, [STABLE])
    r = run(det, [WARN, np.array([10, 10, 0, 0]), WARN], start_index=1)
    assert [x.state for x in r] == ["warn", "insufficient_data", "warn"]
    assert [x.transition for x in r] == ["none", "none", "fired"]


# ----------------------------------------------------------------------------- references


def test_previous_reference_is_the_latest_non_overlapping_window():
    det = Detector(DetectorConfig(min_count=1), LABELS, stream="s", feature="f", overlap=3)
    windows = [np.array([100 + i, 100, 0, 0]) for i in range(7)]
    r = run(det, windows)
    assert [x.state for x in r[:3]] == ["no_reference"] * 3
    # window w (hopping, size = 3 slides) is compared with w - 3, the latest one sharing no events
    assert [x.n_reference for x in r[3:]] == [200, 201, 202, 203]


def test_tumbling_previous_reference_skips_missing_window_indices():
    det = detector(min_count=1)
    r = [det.update(i, None, None, np.array([100 + i, 100, 0, 0])) for i in (0, 1, 5)]
    assert [x.n_reference for x in r] == [0, 200, 201]


def test_hopping_windows_in_the_pipeline_compare_non_overlapping_windows():
    cfg = parse_config({
        "streams": [{"name": "s", "window": {"size": "30s", "slide": "10s"},
                     "features": [{"name": "c", "type": "categorical", "categories": ["a", "b"]}]}],
        "detector": {"min_count": 1},
    }).streams[0]
    pipe = StreamPipeline(cfg, clock=lambda: 2e9)
    rng = np.random.default_rng(0)
    times = np.sort(1_700_000_000 + rng.uniform(0, 300, 3000))
    events = [json.dumps({"ts": float(t), "c": "a" if rng.random() < 0.5 else "b"}).encode() for t in times]
    results = pipe.process(events).results + pipe.flush().results
    n_by_start = {r.window_start: r.n_current for r in results}
    checked = 0
    for r in results:
        if r.state == "no_reference":
            continue
        assert r.n_reference == n_by_start[r.window_start - 30.0]  # three slides back: no shared events
        checked += 1
    assert checked >= 25


def _gradual(n_windows: int, per_window: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n_windows):
        w = i / (n_windows - 1)  # the mix moves linearly from BASE to DRIFT
        yield np.r_[rng.multinomial(per_window, (1 - w) * BASE_MIX + w * DRIFT_MIX), 0, 0]


def test_pinned_reference_catches_gradual_drift_that_previous_window_misses():
    labels = tuple(f"c{i}" for i in range(8)) + ("__other__", "__missing__")
    windows = list(_gradual(60, 5000, seed=21))
    prev = Detector(dataclasses.replace(DetectorConfig(), **RULES), labels, stream="s", feature="f")
    pinned = Detector(dataclasses.replace(DetectorConfig(), **RULES, reference="pinned"), labels,
                      stream="s", feature="f")
    rp = [prev.update(i, None, None, c) for i, c in enumerate(windows)]
    rq = [pinned.update(i, None, None, c) for i, c in enumerate(windows)]
    assert all(r.state in ("ok", "no_reference") for r in rp)
    assert max(r.divergence for r in rp[1:]) < 0.01
    assert all(r.n_reference == 5000 for r in rq[1:])
    fired = [i for i, r in enumerate(rq) if r.transition == "fired"]
    assert fired and 20 < fired[0] < 55
    assert rq[-1].state == "critical" and rq[-1].severity == "critical"
    # the pinned reference stays the first window: its divergence grows with the drift
    assert rq[-1].divergence > rq[30].divergence > rq[5].divergence


def test_pinned_reference_is_the_first_window_with_enough_events():
    det = detector(reference="pinned", min_count=500)
    r = run(det, [np.array([100, 100, 0, 0]), STABLE, CRIT])
    assert [x.state for x in r] == ["no_reference", "no_reference", "critical"]
    assert r[2].n_reference == 10000


# ----------------------------------------------------------------------------- top bins


def test_top_bins_shares_contributions_and_ordering():
    labels = ("a", "b", "c", "d", "e", "f", "g", "__other__", "__missing__")
    ref = np.array([3000, 2000, 1500, 1500, 1000, 500, 400, 100, 0])
    cur = np.array([1000, 2100, 1400, 3500, 1000, 500, 300, 200, 0])
    det = Detector(DetectorConfig(min_count=10), labels, stream="s", feature="f")
    _, r = run(det, [ref, cur])
    _, terms = divergence.compare("kl", cur, ref, Smoothing())
    assert len(r.top_bins) == 5
    mags = [abs(b.contribution) for b in r.top_bins]
    assert mags == sorted(mags, reverse=True)
    assert [b.bin for b in r.top_bins][:2] == ["d", "a"]  # the two bins that moved most
    for b in r.top_bins:
        i = labels.index(b.bin)
        assert b.p_reference == pytest.approx(ref[i] / ref.sum())
        assert b.p_current == pytest.approx(cur[i] / cur.sum())
        assert b.contribution == pytest.approx(float(terms[i]))
    a = next(b for b in r.top_bins if b.bin == "a")
    assert a.contribution < 0  # KL terms are negative where the bin shrank
    # with room for every bin, the contributions add up to the divergence
    everything = Detector(DetectorConfig(min_count=10, top_bins=20), labels, stream="s", feature="f")
    _, r_all = run(everything, [ref, cur])
    assert [b.bin for b in r_all.top_bins if b.bin == "__missing__"] == []  # empty in both: omitted
    assert len(r_all.top_bins) == len(labels) - 1
    assert sum(b.contribution for b in r_all.top_bins) == pytest.approx(r_all.divergence, rel=1e-9)
    wire = r.to_dict()["top_bins"]
    assert list(wire[0]) == ["bin", "p_reference", "p_current", "contribution"]


def test_top_bins_zero_and_bins_empty_in_both_windows():
    det = detector(top_bins=0, reference="pinned")
    assert run(det, [STABLE, CRIT])[1].top_bins == ()
    det = detector(smoothing=Smoothing("none"), reference="pinned", top_bins=10)
    r = run(det, [STABLE, CRIT])[1]
    assert [b.bin for b in r.top_bins] == ["a", "b"]  # empty-in-both bins say nothing


# ----------------------------------------------------------------------------- snapshot / restore


def test_snapshot_restore_gives_identical_results():
    cfg = DetectorConfig(hysteresis=Hysteresis(2, 3, 2), thresholds=Thresholds(0.05, 0.1))
    rng = np.random.default_rng(4)
    names = ["ok", "warn", "ok", "warn", "critical", "ok", "ok", "warn", "ok", "ok", "critical", "ok"]
    windows = [STABLE] + [LEVEL[n] + rng.integers(0, 50, 4) * [1, 1, 0, 0] for n in names]
    seen: set[str] = set()
    for reference, overlap in (("previous", 1), ("previous", 2), ("pinned", 1)):
        c = dataclasses.replace(cfg, reference=reference)
        straight = Detector(c, LABELS, stream="s", feature="f", overlap=overlap)
        ref = [straight.update(i, None, None, w) for i, w in enumerate(windows)]
        for cut in (1, 4, 6, 9):
            first = Detector(c, LABELS, stream="s", feature="f", overlap=overlap)
            got = [first.update(i, None, None, w) for i, w in enumerate(windows[:cut])]
            state = json.loads(json.dumps(first.snapshot()))
            second = Detector(c, LABELS, stream="s", feature="f", overlap=overlap)
            second.restore(state)
            got += [second.update(i, None, None, w) for i, w in enumerate(windows[cut:], start=cut)]
            assert got == ref, (reference, overlap, cut)
        seen |= {r.transition for r in ref}
    assert seen == {"fired", "resolved", "none"}


def test_a_resolving_result_names_the_severity_it_resolves():
    """So a resolve re-emitted after a crash (with the webhook tracker already
    cleared) resolves exactly that alert, under the same idempotency key."""
    det = Detector(DetectorConfig(min_count=100), ("a", "b", "c"), stream="s", feature="f")
    det.update(0, 0.0, 60.0, np.array([300, 300, 400]))
    fired = det.update(1, 60.0, 120.0, np.array([700, 200, 100]))
    back = det.update(2, 120.0, 180.0, np.array([700, 200, 100]))
    assert (fired.transition, fired.severity) == ("fired", "critical")
    assert (back.transition, back.severity, back.state) == ("resolved", "critical", "ok")
