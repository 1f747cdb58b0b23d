"""The rest of the divergence family: Renyi divergence of order alpha, checked
against a direct scipy computation, its special orders and the KL limit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import driftmon.detect.divergence as dv
from driftmon.config import ConfigError, DetectorConfig, Smoothing, parse_config
from driftmon.detect.detector import Detector
from driftmon.summaries.fixed import FixedSummarizer, FixedSummary

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
