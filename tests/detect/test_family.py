"""The rest of the divergence family, each against a scipy reference: Renyi
divergence of order alpha (a direct computation, special orders, the KL
limit), Wasserstein-1 on the fine buckets (scipy.stats.wasserstein_distance on
the same representatives, and on raw samples within the relative accuracy),
and the closed-form KL between fitted Gaussians (numeric integration)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import driftmon.detect.divergence as dv
from driftmon.config import ConfigError, DetectorConfig, Smoothing, parse_config
from driftmon.detect import numeric_metrics, significance
from driftmon.detect.detector import Detector
from driftmon.detect.registry import REGISTRY, VALUE_UNITS
from driftmon.summaries.bins import CategoricalSpec, NumericSpec
from driftmon.summaries.fixed import FixedSummarizer, FixedSummary
from driftmon.summaries.numeric import NumericSummarizer

LN2 = math.log(2.0)
NONE = Smoothing("none")
ORDERS = st.one_of(st.floats(0.05, 0.95), st.floats(1.05, 12.0))


@st.composite
def count_pairs(draw, zeros=True, max_k=20):
    """Two count vectors over the same K bins, each with a positive total."""
    k = draw(st.integers(1, max_k))
    low = 0 if zeros else 1
    rows = []
    for _ in range(2):
        c = np.array(draw(st.lists(st.integers(low, 60), min_size=k, max_size=k)), dtype=np.float64)
        if c.sum() == 0:
            c[draw(st.integers(0, k - 1))] = 1
        rows.append(c)
    return rows[0], rows[1]


def probs(c):
    c = np.asarray(c, dtype=np.float64)
    return c / c.sum()


def renyi_direct(p, q, alpha):
    """ln(sum p^a q^(1-a)) / (a - 1) with the 0-conventions, via scipy's logsumexp."""
    live = p > 0
    if alpha > 1 and np.any(live & (q == 0)):
        return math.inf
    keep = live & (q > 0)
    if not keep.any():
        return math.inf  # disjoint supports (alpha < 1)
    log_t = alpha * np.log(p[keep]) + (1 - alpha) * np.log(q[keep])
    return float(scipy.special.logsumexp(log_t) / (alpha - 1))


# ----------------------------------------------------------------------------- Renyi


@settings(max_examples=200, deadline=None)
@given(count_pairs(), ORDERS)
def test_renyi_matches_the_direct_scipy_computation(pair, alpha):
    p, q = probs(pair[0]), probs(pair[1])
    expected = renyi_direct(p, q, alpha)
    ours = float(dv.renyi(p, q, alpha))
    if math.isinf(expected):
        assert ours == math.inf
    else:
        np.testing.assert_allclose(ours, max(expected, 0.0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(float(dv.renyi(p, q, alpha, unit="bits")), ours / LN2, rtol=1e-12, atol=1e-15)
    c = dv.contributions("renyi", p, q, order=alpha)
    assert not np.any(np.isnan(c))


@settings(max_examples=150, deadline=None)
@given(count_pairs(zeros=False))
def test_renyi_tends_to_kl_as_the_order_tends_to_one(pair):
    p, q = probs(pair[0]), probs(pair[1])
    kl = scipy.stats.entropy(p, q)
    for alpha in (1 - 1e-7, 1 + 1e-7):
        np.testing.assert_allclose(float(dv.renyi(p, q, alpha)), kl, rtol=1e-5, atol=1e-9)
        # and its per-bin contributions tend to KL's
        np.testing.assert_allclose(dv.contributions("renyi", p, q, order=alpha), scipy.special.rel_entr(p, q),
                                   rtol=1e-4, atol=1e-8)


@settings(max_examples=150, deadline=None)
@given(count_pairs(zeros=False))
def test_renyi_special_orders(pair):
    p, q = probs(pair[0]), probs(pair[1])
    h2 = float(dv.hellinger(p, q)) ** 2
    np.testing.assert_allclose(float(dv.renyi(p, q, 0.5)), -2 * math.log1p(-h2), rtol=1e-9, atol=1e-12)
    chi2 = float(np.sum((p - q) ** 2 / q))
    np.testing.assert_allclose(float(dv.renyi(p, q, 2.0)), math.log1p(chi2), rtol=1e-9, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(count_pairs(), ORDERS, ORDERS)
def test_renyi_is_non_decreasing_in_the_order(pair, a, b):
    p, q = probs(pair[0]), probs(pair[1])
    lo, hi = sorted((a, b))
    d_lo, d_hi = float(dv.renyi(p, q, lo)), float(dv.renyi(p, q, hi))
    assert d_lo <= d_hi * (1 + 1e-9) + 1e-12


@settings(max_examples=150, deadline=None)
@given(count_pairs(), ORDERS, st.sampled_from(["none", "additive", "floor"]))
def test_renyi_contributions_sum_to_it_and_vanish_on_unchanged_bins(pair, alpha, method):
    smoothing = Smoothing(method, alpha=0.5, floor=1e-3)
    d, c = dv.compare("renyi", pair[0], pair[1], smoothing, order=alpha)
    p, q = dv.smooth(pair[0], pair[1], smoothing)
    if math.isinf(float(d)):
        assert np.isinf(c).any() and not np.isnan(c).any()
    else:
        np.testing.assert_allclose(float(d), max(float(c.sum()), 0.0), rtol=1e-12, atol=1e-15)
    assert np.all(c[p == q] == 0.0)
    if method != "none":  # smoothing makes it finite
        assert math.isfinite(float(d))


def test_renyi_zero_bins():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([1.0, 0.0, 0.0])
    assert float(dv.renyi(p, q, 2.0)) == math.inf  # q = 0 < p, order > 1
    d_half = float(dv.renyi(p, q, 0.5))  # order < 1: finite, -2 ln(sum sqrt(pq))
    assert d_half == pytest.approx(-2 * math.log(math.sqrt(0.5)))
    assert float(dv.renyi(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5)) == math.inf  # disjoint
    assert float(dv.renyi(q, p, 3.0)) == pytest.approx(math.log(2.0))  # p = 0 bins add nothing
    c = dv.contributions("renyi", p, q, order=2.0)
    assert c.tolist() == [0.0, math.inf, 0.0]


def test_renyi_needs_a_valid_order():
    with pytest.raises(ValueError, match="needs its order"):
        dv.compare("renyi", [1, 2], [2, 1], NONE)
    for bad in (1.0, 0.0, -0.5, math.inf, math.nan):
        with pytest.raises(ValueError, match="order > 0 other than 1"):
            dv.renyi([0.5, 0.5], [0.25, 0.75], bad)
    # other metrics ignore the order
    assert float(dv.compare("kl", [1, 2], [2, 1], NONE, order=3.0)[0]) == float(dv.compare("kl", [1, 2], [2, 1], NONE)[0])


STREAM = {"name": "s", "features": [{"name": "c", "type": "categorical", "categories": ["a", "b"]}]}


def test_config_renyi_alpha_default_override_and_errors():
    cfg = parse_config({"streams": [STREAM], "detector": {"metric": "renyi"}})
    assert (cfg.detector.metric, cfg.detector.renyi_alpha) == ("renyi", 2.0)
    per_feature = dict(STREAM, features=[dict(STREAM["features"][0], detector={"renyi_alpha": 0.5})])
    cfg = parse_config({"streams": [per_feature], "detector": {"metric": "renyi"}})
    assert cfg.streams[0].features[0].detector.renyi_alpha == 0.5
    for bad in (1, 0, -2, math.inf, None, "two"):
        with pytest.raises(ConfigError) as err:
            parse_config({"streams": [STREAM], "detector": {"metric": "renyi", "renyi_alpha": bad}})
        assert err.value.path == "detector.renyi_alpha"


def test_detector_uses_the_configured_order():
    labels = ("a", "b", "c")

    @dataclasses.dataclass(frozen=True)
    class Bins:
        labels: tuple[str, ...]
        size: int = 3

    cur, ref = np.array([700, 200, 100]), np.array([400, 400, 200])
    for alpha in (0.5, 2.0, 5.0):
        cfg = dataclasses.replace(DetectorConfig(min_count=10), metric="renyi", renyi_alpha=alpha, unit="bits")
        det = Detector(cfg, FixedSummarizer(Bins(labels)), stream="s", feature="f")
        det.update(0, 0.0, 1.0, FixedSummary(ref))
        r = det.update(1, 1.0, 2.0, FixedSummary(cur))
        value, terms = dv.compare("renyi", cur, ref, cfg.smoothing, "bits", order=alpha)
        assert (r.metric, r.unit, r.divergence) == ("renyi", "bits", float(value))
        assert r.top_bins[0].contribution == float(terms[np.argmax(np.abs(terms))])


# ----------------------------------------------------------------------------- Wasserstein-1

SAMPLES = st.lists(st.one_of(st.floats(-1e3, 1e3), st.just(0.0), st.floats(0.5, 2.0)), min_size=1, max_size=60)


def summaries_of(s, *samples):
    return [s.summarize(s.codes(np.asarray(x, dtype=np.float64))) for x in samples]


def representatives(s, x):
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return s.representative(s.codes(x).codes)


@settings(max_examples=200, deadline=None)
@given(SAMPLES, SAMPLES, st.integers(2, 12), st.sampled_from([0.001, 0.01, 0.05]))
def test_wasserstein_matches_scipy_on_the_bucket_representatives(xc, xr, num_bins, accuracy):
    s = NumericSummarizer(num_bins, accuracy)
    cur, ref = summaries_of(s, xc, xr)
    value, contrib = dv.compare_summaries("wasserstein", s, cur, ref, unit="bits")  # not log-based: unchanged
    expected = scipy.stats.wasserstein_distance(representatives(s, xc), representatives(s, xr))
    np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-9)
    labels, _ = s.bins([cur, ref])
    assert contrib is not None and contrib.shape == (len(labels),) and np.all(contrib >= 0)
    np.testing.assert_allclose(contrib.sum(), value, rtol=1e-12, atol=1e-12)
    assert contrib[-1] == 0.0  # __missing__
    # within the relative accuracy of the raw samples' W1
    raw = scipy.stats.wasserstein_distance(xc, xr)
    bound = accuracy * (np.mean(np.abs(xc)) + np.mean(np.abs(xr)))
    assert abs(value - raw) <= bound * (1 + 1e-9) + 1e-9


def test_wasserstein_unit_and_what_it_leaves_out():
    s = NumericSummarizer(4)
    cur, ref = summaries_of(s, [1.0, 2.0, np.nan, np.inf, 3.0], [2.0, 3.0, 4.0, -np.inf])
    value, _ = dv.compare_summaries("wasserstein", s, cur, ref)
    expected = scipy.stats.wasserstein_distance(representatives(s, [1, 2, 3]), representatives(s, [2, 3, 4]))
    assert value == pytest.approx(expected, rel=1e-12)  # missing and infinite values are left out
    assert REGISTRY["wasserstein"].unit_for("bits") == REGISTRY["wasserstein"].unit_for("nats") == VALUE_UNITS
    empty, _ = summaries_of(s, [np.nan, np.nan], [])
    value, contrib = dv.compare_summaries("wasserstein", s, empty, ref)
    assert math.isnan(value) and contrib is None  # no finite value: nothing to compare


def test_wasserstein_contributions_name_the_bins_that_moved():
    rng = np.random.default_rng(3)
    s = NumericSummarizer(10)
    base = rng.normal(100.0, 10.0, 20000)
    moved = base.copy()
    moved[base > 115] += 20.0  # only the top tail moves, by 20 units
    cur, ref = summaries_of(s, moved, base)
    value, contrib = dv.compare_summaries("wasserstein", s, cur, ref)
    share = float(np.mean(base > 115))
    assert value == pytest.approx(20.0 * share, rel=0.02)  # the mass that moved times how far
    labels, _ = s.bins([cur, ref])
    top = labels[int(np.argmax(contrib))]
    assert float(top.strip("([").split(",")[0]) >= 110.0, top


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=6, max_size=6), st.lists(st.integers(0, 50), min_size=6, max_size=6))
def test_wasserstein_on_declared_edges_uses_midpoints_and_the_edges(a, b):
    spec = NumericSpec((0.0, 1.0, 3.0, 7.0))  # bins <0, [0,1), [1,3), [3,7], >7, __missing__
    s = FixedSummarizer(spec)
    ca, cb = np.array(a), np.array(b)
    cur, ref = FixedSummary(ca), FixedSummary(cb)
    value, contrib = dv.compare_summaries("wasserstein", s, cur, ref)
    if ca[:5].sum() == 0 or cb[:5].sum() == 0:
        assert math.isnan(value)
        return
    points = np.array([0.0, 0.5, 2.0, 5.0, 7.0])
    expected = scipy.stats.wasserstein_distance(points, points, ca[:5], cb[:5])
    np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12)
    assert contrib is not None and contrib.shape == (6,)
    np.testing.assert_allclose(contrib.sum(), value, rtol=1e-12, atol=1e-12)


def test_wasserstein_needs_numbers():
    s = FixedSummarizer(CategoricalSpec(("a", "b")))
    with pytest.raises(ValueError, match="numeric"):
        dv.compare_summaries("wasserstein", s, FixedSummary(np.array([1, 2, 0, 0])), FixedSummary(np.array([2, 1, 0, 0])))
    with pytest.raises(ValueError, match="not computed from summaries"):
        dv.compare_summaries("kl", s, None, None)
    with pytest.raises(ValueError, match="strictly increasing"):
        numeric_metrics.wasserstein_points(np.array([1.0, 1.0]), np.array([1, 1]), np.array([1, 1]))


# ----------------------------------------------------------------------------- KL between fitted Gaussians


def kl_by_integration(m0, s0, m1, s1):
    p, q = scipy.stats.norm(m0, s0), scipy.stats.norm(m1, s1)
    value, _ = scipy.integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), m0 - 40 * s0, m0 + 40 * s0,
                                    points=[m0], epsabs=1e-13, epsrel=1e-11, limit=200)
    return value


@settings(max_examples=100, deadline=None)
@given(st.floats(-50, 50), st.floats(0.05, 20), st.floats(-50, 50), st.floats(0.05, 20))
def test_gaussian_kl_matches_numeric_integration(m0, s0, m1, s1):
    ours = numeric_metrics.gaussian_kl_moments(m0, s0**2, m1, s1**2)
    np.testing.assert_allclose(ours, kl_by_integration(m0, s0, m1, s1), rtol=1e-6, atol=1e-9)
    textbook = math.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5
    np.testing.assert_allclose(ours, textbook, rtol=1e-9, atol=1e-12)


def test_gaussian_kl_is_accurate_for_tiny_changes():
    for x in (1e-3, 1e-5, 1e-8, -1e-8):  # v0 = v1 (1 + x): KL = (x - ln(1 + x)) / 2 ~ x^2/4 - x^3/6
        expected = x * x / 4 - x**3 / 6 + x**4 / 8
        assert numeric_metrics.gaussian_kl_moments(0.0, 1.0 + x, 0.0, 1.0) == pytest.approx(expected, rel=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=80), st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=80))
def test_gaussian_kl_of_windows_uses_their_exact_moments(xc, xr):
    s = NumericSummarizer(5)
    cur, ref = summaries_of(s, xc, xr)
    value, contrib = dv.compare_summaries("gaussian_kl", s, cur, ref)
    bits, _ = dv.compare_summaries("gaussian_kl", s, cur, ref, unit="bits")
    assert contrib is None
    m0, v0, m1, v1 = np.mean(xc), np.var(xc), np.mean(xr), np.var(xr)
    if min(v0, v1) < 1e-9 * max(1.0, max(np.abs(xc).max(), np.abs(xr).max())) ** 2:
        return  # (near-)constant windows: the next test pins those down exactly
    expected = math.log(math.sqrt(v1 / v0)) + (v0 + (m0 - m1) ** 2) / (2 * v1) - 0.5
    np.testing.assert_allclose(value, expected, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(bits, value / LN2, rtol=1e-12)


def test_gaussian_kl_zero_variance_and_empty_windows():
    s = NumericSummarizer(5)
    same, other, spread, empty = summaries_of(s, [3.0] * 10, [4.0] * 10, [1.0, 2.0, 3.0], [np.nan])
    kl = lambda a, b: dv.compare_summaries("gaussian_kl", s, a, b)[0]  # noqa: E731
    assert kl(same, same) == 0.0  # the same point mass
    assert kl(same, other) == math.inf and kl(same, spread) == math.inf and kl(spread, same) == math.inf
    assert math.isnan(kl(empty, spread))  # no finite value in the current window
    with pytest.raises(ValueError, match="bins: quantile"):
        dv.compare_summaries("gaussian_kl", FixedSummarizer(NumericSpec((0.0, 1.0))),
                             FixedSummary(np.array([1, 2, 3, 0])), FixedSummary(np.array([1, 2, 3, 0])))


# ----------------------------------------------------------------------------- config and detector


NUMERIC = {"name": "x", "type": "numeric", "bins": "quantile"}
EDGES = {"name": "e", "type": "numeric", "edges": [0, 1, 2]}
CATEGORICAL = {"name": "c", "type": "categorical", "top_k": 5}


def config_error(features, detector):
    with pytest.raises(ConfigError) as err:
        parse_config({"streams": [{"name": "s", "features": features}], "detector": detector})
    return err.value


def test_config_rejects_a_numeric_metric_on_a_feature_it_does_not_apply_to():
    err = config_error([NUMERIC, CATEGORICAL], {"metric": "wasserstein"})
    assert err.path == "detector.metric"
    assert "streams[0].features[1] ('c', categorical)" in str(err) and "expected one of kl," in str(err)
    assert "wasserstein" not in str(err).split("expected one of")[1]
    err = config_error([NUMERIC, dict(EDGES, detector={"metric": "gaussian_kl"})], {})
    assert err.path == "streams[0].features[1].detector.metric"
    assert "wasserstein" in str(err).split("expected one of")[1]  # it applies to declared edges
    # per-feature overrides make a mixed stream valid
    cfg = parse_config({"streams": [{"name": "s", "features": [
        NUMERIC, EDGES, dict(CATEGORICAL, detector={"metric": "kl"})]}], "detector": {"metric": "wasserstein"}})
    assert [f.detector.metric for f in cfg.streams[0].features] == ["wasserstein", "wasserstein", "kl"]
    for name in ("gaussian_kl", "renyi", "kl"):
        assert parse_config({"streams": [{"name": "s", "features": [NUMERIC]}],
                             "detector": {"metric": name}}).detector.metric == name


@pytest.mark.parametrize("metric", ["wasserstein", "gaussian_kl"])
def test_detector_with_a_summary_metric(metric):
    rng = np.random.default_rng(11)
    s = NumericSummarizer(10)
    cfg = dataclasses.replace(DetectorConfig(min_count=100), metric=metric, unit="bits")
    det = Detector(cfg, s, stream="s", feature="x")
    ref, cur = summaries_of(s, rng.normal(10, 2, 3000), rng.normal(12, 2, 3000))
    assert det.update(0, 0.0, 1.0, ref).state == "no_reference"
    r = det.update(1, 1.0, 2.0, cur)
    value, contrib = dv.compare_summaries(metric, s, cur, ref, "bits")
    labels, (c, q) = s.bins([cur, ref])
    assert (r.metric, r.divergence, r.smoothing) == (metric, value, "none")
    assert r.unit == ("value units" if metric == "wasserstein" else "bits")
    assert r.p_value == significance.g_test(c, q, permutations=cfg.permutations).p_value  # the G-test on the bins
    assert r.state == "critical" and r.transition == "fired"
    top = r.top_bins[0]
    if contrib is None:  # no per-bin contributions: the largest move in share, contribution null
        assert math.isnan(top.contribution) and top.to_dict()["contribution"] is None
        moves = np.abs(c / c.sum() - q / q.sum())
        assert top.bin == labels[int(np.argmax(moves))]
    else:
        assert top.contribution == float(contrib.max())
    empty = s.summarize(s.codes([np.nan] * 200))
    assert det.update(2, 2.0, 3.0, empty).state == "insufficient_data"  # no finite value to compare


# ----------------------------------------------------------------------------- replay end to end

REPLAY_CONFIG = """
streams:
  - name: s
    window: {size: 60s}
    features:
      - {name: w, field: x, type: numeric, bins: quantile, detector: {metric: wasserstein}}
      - {name: g, field: x, type: numeric, bins: quantile, detector: {metric: gaussian_kl}}
      - {name: r, field: x, type: numeric, bins: quantile, detector: {metric: renyi, renyi_alpha: 2}}
detector: {reference: pinned, min_count: 100}
"""
SHIFTS = (0.0, 0.0, 0.5, 1.5, 3.0, 6.0)  # the mean of window i is 50 + SHIFTS[i]


def test_replay_with_the_new_metrics_grows_with_a_mean_shift_and_equals_the_direct_computation(tmp_path):
    import io
    import json

    from driftmon.cli import replay
    from driftmon.config import load_config

    rng = np.random.default_rng(2024)
    t0, windows, lines = 1_699_999_980.0, [], []  # a multiple of the 60 s window
    for i, shift in enumerate(SHIFTS):
        x = rng.normal(50.0 + shift, 5.0, 3000)
        ts = np.sort(rng.uniform(t0 + 60 * i, t0 + 60 * (i + 1), x.size))
        windows.append(x)
        lines += [json.dumps({"ts": float(t), "x": float(v)}) for t, v in zip(ts, x)]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "config.yaml").write_text(REPLAY_CONFIG)
    out = io.StringIO()
    replay(load_config(str(tmp_path / "config.yaml")), str(tmp_path / "events.jsonl"), "json", None, True, out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[-1]["summary"]["events"] == 6 * 3000
    by_feature = {f: [r for r in rows[:-1] if r["feature"] == f] for f in ("w", "g", "r")}

    s = NumericSummarizer(10)
    ref_raw = windows[0]  # pinned: the first window with min_count events
    ref = s.summarize(s.codes(ref_raw))
    for feature, metric, unit in (("w", "wasserstein", "value units"), ("g", "gaussian_kl", "nats"),
                                  ("r", "renyi", "nats")):
        got = by_feature[feature]
        assert [r["state"] for r in got][0] == "no_reference" and len(got) == len(SHIFTS)
        assert all((r["metric"], r["unit"]) == (metric, unit) for r in got)
        values = [r["divergence"] for r in got[1:]]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), values
        assert values == sorted(values) and values[-1] > 20 * values[0], (metric, values)  # grows with the shift
        assert got[-1]["state"] == "critical" and got[-1]["p_value"] < 1e-6
        for i, row in enumerate(got[1:], start=1):
            cur_raw = windows[i]
            cur = s.summarize(s.codes(cur_raw))
            if metric == "wasserstein":
                expected = scipy.stats.wasserstein_distance(representatives(s, cur_raw), representatives(s, ref_raw))
                raw = scipy.stats.wasserstein_distance(cur_raw, ref_raw)
                assert abs(row["divergence"] - raw) <= 0.01 * (np.abs(cur_raw).mean() + np.abs(ref_raw).mean())
                assert sum(b["contribution"] for b in row["top_bins"]) <= row["divergence"] * (1 + 1e-12)
            elif metric == "gaussian_kl":
                m0, v0, m1, v1 = cur_raw.mean(), cur_raw.var(), ref_raw.mean(), ref_raw.var()
                expected = math.log(math.sqrt(v1 / v0)) + (v0 + (m0 - m1) ** 2) / (2 * v1) - 0.5
                assert all(b["contribution"] is None for b in row["top_bins"])
            else:
                _, (c, q) = s.bins([cur, ref])
                p_s, q_s = (c + 0.5) / (c.sum() + 0.5 * c.size), (q + 0.5) / (q.sum() + 0.5 * q.size)
                expected = math.log(np.sum(p_s**2 / q_s))
            np.testing.assert_allclose(row["divergence"], expected, rtol=1e-7, err_msg=f"{metric} window {i}")
