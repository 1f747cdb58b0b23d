"""Horizons, the FDR family, the effect and the "unusual for this series" gate."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import rel_entr
from scipy.stats import chi2

from driftmon.config import ConfigError, DetectorConfig, Thresholds, parse_config
from driftmon.config.model import Horizon, Unusual
from driftmon.detect import significance
from driftmon.detect.detector import Detector, effect, robust_z
from driftmon.pipeline import StreamPipeline
from driftmon.summaries.fixed import FixedSummarizer, FixedSummary


@dataclasses.dataclass(frozen=True)
class _Bins:
    labels: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.labels)


def det(**overrides) -> Detector:
    cfg = dataclasses.replace(DetectorConfig(), **overrides)
    return Detector(cfg, FixedSummarizer(_Bins(("a", "b", "c", "d"))), stream="s", feature="f")


def feed(d: Detector, windows, start: int = 0):
    return [d.update(start + i, float(start + i), float(start + i + 1), FixedSummary(np.asarray(c, dtype=np.int64)))
            for i, c in enumerate(windows)]


def draws(n_windows: int, per: int, probs, seed: int):
    rng = np.random.default_rng(seed)
    return [rng.multinomial(per, probs) for _ in range(n_windows)]


# ----------------------------------------------------------------------------- Benjamini-Hochberg


def _bh_rejections(p: list[float], q: float) -> set[int]:
    """The step-up procedure as written: the largest k with p_(k) <= k q / m; reject p_(1..k)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    m, k = len(p), 0
    for rank, i in enumerate(order, 1):
        if p[i] <= rank * q / m:
            k = rank
    return set(order[:k])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), st.sampled_from([0.001, 0.01, 0.05, 0.2]))
def test_bh_adjusted_p_values_reject_exactly_what_the_step_up_procedure_rejects(p, q):
    adj = significance.benjamini_hochberg(p)
    assert {i for i, a in enumerate(adj) if a <= q} == _bh_rejections(p, q)
    assert np.all(adj >= np.asarray(p) * (1 - 1e-12)) and np.all(adj <= 1.0)


def test_bh_leaves_untested_entries_out_of_the_family():
    adj = significance.benjamini_hochberg([0.01, math.nan, 0.02])
    assert math.isnan(adj[1]) and adj[0] == pytest.approx(0.02) and adj[2] == pytest.approx(0.02)


# ----------------------------------------------------------------------------- effect and robust z


def test_effect_is_the_bias_corrected_kl_on_large_unsmoothed_samples():
    rng = np.random.default_rng(3)
    p, q = np.array([0.3, 0.3, 0.2, 0.2]), np.array([0.32, 0.28, 0.21, 0.19])
    n = m = 200_000
    a, b = rng.multinomial(n, p), rng.multinomial(m, q)
    kl = float(rel_entr(a / n, b / m).sum())
    t = significance.g_test(a, b)
    assert t.method == "chi2" and t.expected == 3
    assert effect(kl, t.statistic, t.expected) == pytest.approx(kl - 3 / 2 * (1 / n + 1 / m), rel=0.02)


def test_effect_of_noise_is_near_zero_and_of_a_shift_near_the_divergence():
    rng = np.random.default_rng(4)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    noise = []
    for _ in range(200):
        a, b = rng.multinomial(2000, p), rng.multinomial(2000, p)
        t = significance.g_test(a, b)
        noise.append(effect(float(rel_entr(a / 2000, b / 2000).sum()), t.statistic, t.expected))
    assert abs(np.mean(noise)) < 2e-4  # the plug-in bias alone is 1.5e-3
    a, b = rng.multinomial(2000, [0.1, 0.2, 0.3, 0.4]), rng.multinomial(2000, p)
    t = significance.g_test(a, b)
    kl = float(rel_entr(a / 2000, b / 2000).sum())
    assert 0.95 * kl < effect(kl, t.statistic, t.expected) < kl


def test_permutation_null_mean_of_sparse_tables_is_measured_not_df():
    rng = np.random.default_rng(1)
    z = 1 / np.arange(1, 1001)
    a, b = rng.multinomial(1000, z / z.sum()), rng.multinomial(1000, z / z.sum())
    t = significance.g_test(a, b)
    assert t.method == "permutation" and t.expected > 1.2 * t.df  # G of sparse tables runs above df
    assert abs(t.statistic - t.expected) < 0.1 * t.expected


def test_robust_z_reads_the_spread_off_the_upper_tail():
    calm = [1.0] * 5 + [1.1] * 5 + [1.2] * 5
    stormy = calm[:12] + [5.0, 8.0, 9.0]  # the same centre, a heavy upper tail
    assert robust_z(3.0, calm) > 10 * robust_z(3.0, stormy)
    assert robust_z(1.1, calm) == 0.0


def test_design_effect_divides_g_before_the_p_value():
    a, b = np.array([600, 400]), np.array([500, 500])
    plain, clustered = significance.g_test(a, b), significance.g_test(a, b, design_effect=4.0)
    # G is reported as is; its p-value is that of G / d, and its null mean (the effect's E0) is d x df
    assert clustered.statistic == pytest.approx(plain.statistic)
    assert clustered.p_value == pytest.approx(float(chi2.sf(plain.statistic / 4, plain.df)))
    assert clustered.p_value > plain.p_value
    assert clustered.expected == pytest.approx(4 * plain.expected)
    with pytest.raises(ValueError):
        significance.g_test(a, b, design_effect=0.0)


# ----------------------------------------------------------------------------- horizons


def test_lag_horizon_compares_with_the_window_lag_windows_back_and_names_its_reference():
    d = det(horizons=(Horizon(3),), unusual=Unusual(min_z=None))
    windows = [[1000 + i, 1000, 1000, 1000] for i in range(6)]
    rs = feed(d, windows)
    assert [len(r.horizons) for r in rs] == [2] * 6
    assert [r.horizons[1].reference for r in rs] == ["lag3"] * 6
    assert [r.horizons[1].n_reference for r in rs] == [0, 0, 0, 4000, 4001, 4002]  # window i - 3
    assert [r.horizons[0].n_reference for r in rs] == [0, 4000, 4001, 4002, 4003, 4004]
    assert [r.tests for r in rs] == [0, 1, 1, 2, 2, 2]


def test_lag_horizon_catches_a_ramp_that_the_previous_window_does_not():
    rng = np.random.default_rng(7)
    base, end = np.array([0.25, 0.25, 0.25, 0.25]), np.array([0.37, 0.25, 0.2, 0.18])
    steps = [rng.multinomial(20_000, base) for _ in range(20)]
    steps += [rng.multinomial(20_000, base + (end - base) * k / 12) for k in range(1, 13)]
    head_only = feed(det(horizons=(), unusual=Unusual(min_z=None)), steps)
    with_lag = feed(det(), steps)
    assert all(r.state == "ok" for r in head_only[1:])  # each step is below the floor
    fired = [i for i, r in enumerate(with_lag) if r.state in ("warn", "critical")]
    assert fired and 20 <= fired[0] < 32  # during the ramp
    r = with_lag[fired[0]]
    assert r.horizon == "lag6" and r.horizons[0].reference == "previous" and r.horizons[0].state == "ok"
    assert r.divergence == r.horizons[0].divergence  # the headline stays D(current || previous)
    assert r.top_bins[0].bin == "a"  # the bins of the comparison that decided


def test_hopping_windows_lag_counts_non_overlapping_window_lengths():
    d = Detector(dataclasses.replace(DetectorConfig(), horizons=(Horizon(2),)),
                 FixedSummarizer(_Bins(("a", "b"))), stream="s", feature="f", overlap=3)
    rs = [d.update(i, None, None, FixedSummary(np.array([1000 + i, 1000]))) for i in range(8)]
    assert [r.horizons[1].n_reference for r in rs] == [0] * 6 + [2000, 2001]  # window i - 2 x 3
    assert [r.horizons[0].n_reference for r in rs] == [0] * 3 + [2000, 2001, 2002, 2003, 2004]


# ----------------------------------------------------------------------------- the unusual gate


def _jumpy(n: int, seed: int):
    """A series that moves a lot every window: the mix of `a` jumps between 0.2 and 0.4."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.uniform(0.2, 0.4)
        yield rng.multinomial(10_000, [x, 0.3, 0.7 - x, 0.0])


def test_unusual_gate_quiets_a_series_that_always_moves_and_still_sees_a_big_move():
    windows = list(_jumpy(60, 8)) + [np.array([9000, 500, 500, 0])]
    gated = feed(det(horizons=()), windows)
    open_ = feed(det(horizons=(), unusual=Unusual(min_z=None)), windows)
    flagged_open = sum(r.state in ("warn", "critical") for r in open_[11:60])
    flagged_gated = sum(r.state in ("warn", "critical") for r in gated[11:60])
    assert flagged_open > 30 and flagged_gated <= 3
    assert gated[-1].state == "critical" and gated[-1].unusual_z > 4
    assert all(r.unusual_z is None for r in gated[:11])  # history 10 is needed first
    assert all(r.unusual_z is not None for r in open_[11:])  # reported with the gate off too


def test_unusual_history_is_bounded():
    d = det(horizons=(), unusual=Unusual(history=15, min_history=5))
    feed(d, list(_jumpy(40, 9)))
    assert len(d.effects["previous"]) == 15


def test_snapshot_restore_keeps_lags_and_effect_histories():
    windows = list(_jumpy(30, 10))
    a = det()
    feed(a, windows[:20])
    b = det()
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert [r.to_dict() for r in feed(a, windows[20:], 20)] == [r.to_dict() for r in feed(b, windows[20:], 20)]


def test_restore_of_a_checkpoint_without_effects_starts_an_empty_history():
    a = det()
    feed(a, list(_jumpy(12, 11)))
    snap = a.snapshot()
    del snap["effects"]
    b = det()
    b.restore(snap)
    assert all(len(v) == 0 for v in b.effects.values()) and len(b.history) == len(a.history)


# ----------------------------------------------------------------------------- the family of a closed window


def test_pipeline_adjusts_all_tests_of_a_closed_window_together():
    cfg = parse_config({"streams": [{"name": "s", "window": {"size": 10}, "segment_by": ["g"], "features": [
        {"name": "x", "type": "categorical", "categories": ["a", "b"]},
        {"name": "y", "type": "categorical", "categories": ["a", "b"]}]}],
        "detector": {"min_count": 10, "horizons": [{"lag": 2}]}})
    pipe = StreamPipeline(cfg.streams[0], clock=lambda: 4e9)
    rng = np.random.default_rng(0)
    events = []
    for w in range(5):
        for i in range(400):
            shift = 0.3 if w == 4 else 0.0
            events.append(json.dumps({"ts": 1.7e9 + w * 10 + i / 40, "g": "p" if i % 2 else "q",
                                      "x": "a" if rng.random() < 0.5 + shift else "b",
                                      "y": "a" if rng.random() < 0.5 else "b"}))
    rows = pipe.process(events).results + pipe.flush().results
    last = [r for r in rows if r.window_start == 1.7e9 + 40]
    assert len(last) == 6  # 2 features x (overall, p, q)
    p = [h.p_value for r in last for h in r.horizons]
    assert len(p) == 12 and all(r.tests == 12 for r in last)
    adj = significance.benjamini_hochberg(p)
    assert [h.p_adjusted for r in last for h in r.horizons] == pytest.approx(adj.tolist())
    assert {(r.feature, r.state != "ok") for r in last} == {("x", True), ("y", False)}


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("detector, path", [
    ({"fdr": 0}, "detector.fdr"),
    ({"fdr": 1}, "detector.fdr"),
    ({"horizons": [{"lag": 1}]}, "detector.horizons[0].lag"),
    ({"horizons": [{"lag": 4}, {"lag": 4}]}, "detector.horizons[1].lag"),
    ({"horizons": [{"lags": 4}]}, "detector.horizons[0]"),
    ({"horizons": 6}, "detector.horizons"),
    ({"unusual": {"quantile": 0.4}}, "detector.unusual.quantile"),
    ({"unusual": {"min_history": 100}}, "detector.unusual.min_history"),
])
def test_bad_detector_settings_name_their_key(detector, path):
    with pytest.raises(ConfigError) as e:
        parse_config({"streams": [{"name": "s", "features": [{"name": "x", "type": "categorical", "top_k": 5}]}],
                      "detector": detector})
    assert str(e.value).startswith(path)


def test_defaults_and_off_switches_parse():
    d = parse_config({"streams": [{"name": "s", "features": [{"name": "x", "type": "categorical", "top_k": 5}]}],
                      "detector": {"fdr": None, "horizons": None, "unusual": {"min_z": None}}}).detector
    assert d.fdr is None and d.horizons == () and d.unusual.min_z is None
    base = DetectorConfig()
    assert (base.fdr, base.horizons, base.thresholds, base.max_p_value) == (0.01, (Horizon(6),),
                                                                             Thresholds(0.005, 0.05), None)
    assert (base.unusual.history, base.unusual.min_history, base.unusual.quantile, base.unusual.min_z) == \
        (60, 10, 0.95, 4.0)
