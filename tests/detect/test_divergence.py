"""Properties of driftmon.detect.divergence, checked against scipy and by simulation."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import driftmon.detect.divergence as dv
from driftmon.config import Smoothing
from driftmon.detect.divergence import compare, contributions, divergence, smooth, smoothing_label
from driftmon.detect.registry import BIN_METRICS as METRICS  # the metrics computed on histograms

LN2 = math.log(2.0)
LOG_METRICS = ("kl", "kl_reverse", "jeffreys", "js", "psi")
NONE = Smoothing("none")
ORDER = 2.0  # renyi's order wherever every metric is computed (the others ignore it)


@st.composite
def count_rows(draw, k=None, max_k=25, max_count=60, zeros=True):
    """A count vector with at least one positive bin (zero bins are frequent)."""
    k = k if k is not None else draw(st.integers(1, max_k))
    vals = draw(
        st.lists(
            st.one_of(st.just(0), st.integers(0, max_count)) if zeros else st.integers(1, max_count),
            min_size=k,
            max_size=k,
        )
    )
    c = np.array(vals, dtype=np.float64)
    if c.sum() == 0:
        c[draw(st.integers(0, k - 1))] = draw(st.integers(1, max_count))
    return c


@st.composite
def count_pairs(draw, positive=False):
    k = draw(st.integers(1, 25))
    zeros = not positive
    return draw(count_rows(k=k, zeros=zeros)), draw(count_rows(k=k, zeros=zeros))


def probs(c):
    c = np.asarray(c, dtype=np.float64)
    return c / c.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- against scipy


@settings(max_examples=200, deadline=None)
@given(count_pairs())
def test_kl_matches_scipy_including_zero_bins(pair):
    p, q = probs(pair[0]), probs(pair[1])
    ours = float(divergence("kl", p, q))
    ref = scipy.special.rel_entr(p, q).sum()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, scipy.stats.entropy(p, q), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        float(divergence("kl", p, q, unit="bits")), scipy.stats.entropy(p, q, base=2), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(float(divergence("kl_reverse", p, q)), scipy.stats.entropy(q, p), rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_js_and_hellinger_match_scipy(pair):
    p, q = probs(pair[0]), probs(pair[1])
    # scipy's jensenshannon returns the square root of the JS divergence.
    np.testing.assert_allclose(float(dv.js(p, q)), scipy.spatial.distance.jensenshannon(p, q) ** 2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        float(dv.js(p, q, unit="bits")), scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2, rtol=1e-9, atol=1e-12
    )
    expected_h = np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2))
    np.testing.assert_allclose(float(dv.hellinger(p, q)), expected_h, rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_metric_relations(pair):
    p, q = probs(pair[0]), probs(pair[1])
    k_pq, k_qp = float(dv.kl(p, q)), float(dv.kl(q, p))
    np.testing.assert_allclose(float(dv.kl_reverse(p, q)), k_qp, rtol=1e-12)
    np.testing.assert_allclose(float(dv.jeffreys(p, q)), k_pq + k_qp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(dv.psi(p, q)), float(dv.jeffreys(p, q)), rtol=1e-10, atol=1e-12)
    for m in LOG_METRICS:
        np.testing.assert_allclose(
            float(divergence(m, p, q, unit="bits")), float(divergence(m, p, q)) / LN2, rtol=1e-12, atol=1e-12
        )
    assert float(dv.hellinger(p, q, unit="bits")) == float(dv.hellinger(p, q))


# ----------------------------------------------------------------------------- zero bins


def test_q_zero_gives_inf_and_p_zero_adds_exactly_zero():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([1.0, 0.0, 0.0, 0.0])
    d, c = compare("kl", [5, 5, 0, 0], [10, 0, 0, 0], NONE)
    assert math.isinf(float(d)) and float(d) > 0
    assert not np.any(np.isnan(c))
    assert float(divergence("kl", p, q)) == math.inf
    # p = 0 bins contribute exactly 0, even where q = 0 too.
    c = contributions("kl", q, p)
    assert c[1] == 0.0 and c[2] == 0.0 and c[3] == 0.0
    assert float(divergence("kl", q, p)) == pytest.approx(math.log(2))
    for m in ("kl_reverse", "jeffreys", "psi"):
        assert float(divergence(m, q, p)) == math.inf
    assert math.isfinite(float(dv.js(p, q))) and math.isfinite(float(dv.hellinger(p, q)))


def test_disjoint_supports_hit_the_bounds():
    p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert float(dv.js(p, q)) == pytest.approx(LN2, abs=1e-15)
    assert float(dv.js(p, q, unit="bits")) == pytest.approx(1.0, abs=1e-15)
    assert float(dv.hellinger(p, q)) == 1.0


# ----------------------------------------------------------------------------- basic properties


@settings(max_examples=150, deadline=None)
@given(count_pairs())
def test_non_negative_and_bounded(pair):
    p, q = probs(pair[0]), probs(pair[1])
    for m in METRICS:
        d = float(divergence(m, p, q, order=ORDER))
        assert d >= 0.0 and not math.isnan(d)
    assert float(dv.js(p, q)) <= LN2 + 1e-15
    assert float(dv.js(p, q, unit="bits")) <= 1.0 + 1e-15
    assert 0.0 <= float(dv.hellinger(p, q)) <= 1.0


@settings(max_examples=100, deadline=None)
@given(count_rows(), st.data())
def test_zero_iff_equal(c, data):
    p = probs(c)
    for m in METRICS:
        assert float(divergence(m, p, p, order=ORDER)) == 0.0
    # Move some mass between two bins: every metric becomes strictly positive.
    if p.size >= 2:
        i = int(np.argmax(p))
        j = data.draw(st.integers(0, p.size - 1).filter(lambda x: x != i))
        q = p.copy()
        shift = p[i] / 2
        q[i] -= shift
        q[j] += shift
        for m in METRICS:
            assert float(divergence(m, q, p, order=ORDER)) > 0.0


def test_asymmetry_example():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert float(dv.kl(p, q)) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0))
    assert float(dv.kl(p, q)) > float(dv.kl(q, p)) + 0.1
    # The symmetric ones are symmetric.
    for m in ("jeffreys", "js", "hellinger", "psi"):
        assert float(divergence(m, p, q)) == pytest.approx(float(divergence(m, q, p)), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(count_pairs(), st.randoms(use_true_random=False))
def test_invariant_to_bin_order(pair, rnd):
    p, q = probs(pair[0]), probs(pair[1])
    perm = np.array(rnd.sample(range(p.size), p.size))
    for m in METRICS:
        np.testing.assert_allclose(
            float(divergence(m, p[perm], q[perm], order=ORDER)), float(divergence(m, p, q, order=ORDER)), rtol=1e-12, atol=1e-14
        )


def test_row_wise_equals_per_row_loop():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 8, size=(40, 12)).astype(float)
    b = rng.integers(0, 8, size=(40, 12)).astype(float)
    a[:, 0] += 1
    b[:, 0] += 1
    for smoothing in (NONE, Smoothing("additive", alpha=0.5), Smoothing("floor", floor=1e-4)):
        for m in METRICS:
            for unit in ("nats", "bits"):
                d, c = compare(m, a, b, smoothing, unit, order=ORDER)
                assert d.shape == (40,) and c.shape == (40, 12)
                for r in range(40):
                    dr, cr = compare(m, a[r], b[r], smoothing, unit, order=ORDER)
                    assert dr.shape == () and cr.shape == (12,)
                    np.testing.assert_array_equal(d[r], dr)
                    np.testing.assert_array_equal(c[r], cr)


@settings(max_examples=100, deadline=None)
@given(count_pairs(), st.sampled_from(["none", "additive", "floor"]))
def test_contributions_sum_to_divergence(pair, method):
    smoothing = Smoothing(method, alpha=0.5, floor=1e-3)
    for m in METRICS:
        for unit in ("nats", "bits"):
            d, c = compare(m, pair[0], pair[1], smoothing, unit, order=ORDER)
            total = c.sum()
            if m == "hellinger":
                np.testing.assert_allclose(float(d) ** 2, total, rtol=1e-9, atol=1e-12)
            elif math.isinf(total):
                assert float(d) == math.inf
            else:
                np.testing.assert_allclose(float(d), max(total, 0.0), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- smoothing


@settings(max_examples=100, deadline=None)
@given(count_pairs(), st.sampled_from(["additive", "floor"]))
def test_smoothing_makes_every_metric_finite(pair, method):
    smoothing = Smoothing(method, alpha=0.5, floor=1e-6)
    p, q = smooth(pair[0], pair[1], smoothing)
    assert np.all(p > 0) and np.all(q > 0)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-12)
    for m in METRICS:
        assert math.isfinite(float(compare(m, pair[0], pair[1], smoothing, order=ORDER)[0]))


def test_smoothing_formulas_and_labels():
    a, b = np.array([3.0, 0.0, 1.0]), np.array([0.0, 0.0, 2.0])
    p, q = smooth(a, b, Smoothing("additive", alpha=0.5))
    np.testing.assert_allclose(p, (a + 0.5) / (4 + 1.5))
    np.testing.assert_allclose(q, (b + 0.5) / (2 + 1.5))
    p, q = smooth(a, b, Smoothing("floor", floor=0.01))
    np.testing.assert_allclose(p, np.array([0.75, 0.01, 0.25]) / 1.01)
    np.testing.assert_allclose(q, np.array([0.01, 0.01, 1.0]) / 1.02)
    p, q = smooth(a, b, NONE)
    np.testing.assert_array_equal(p, a / 4)
    np.testing.assert_array_equal(q, b / 2)
    assert smoothing_label(Smoothing("additive", alpha=0.5)) == "additive(alpha=0.5)"
    assert smoothing_label(NONE) == "none"
    assert smoothing_label(Smoothing("floor", floor=1e-6)) == "floor(1e-06)"


# ----------------------------------------------------------------------------- identities


@settings(max_examples=100, deadline=None)
@given(count_pairs(positive=True))
def test_kl_is_cross_entropy_minus_entropy(pair):
    p, q = probs(pair[0]), probs(pair[1])
    cross = -np.sum(p * np.log(q))
    ent = scipy.stats.entropy(p)
    np.testing.assert_allclose(float(dv.kl(p, q)), cross - ent, rtol=1e-9, atol=1e-12)


def test_not_additive_along_a_chain_and_no_triangle_inequality():
    p, q, r = np.array([0.5, 0.5]), np.array([0.75, 0.25]), np.array([0.9, 0.1])
    direct = float(dv.kl(p, r))
    via_q = float(dv.kl(p, q)) + float(dv.kl(q, r))
    assert direct == pytest.approx(0.5108256, abs=1e-6)
    assert via_q == pytest.approx(0.2361728, abs=1e-6)
    assert direct > via_q  # violates the triangle inequality, so certainly not additive


def test_plug_in_bias_matches_theory():
    rng = np.random.default_rng(20240501)
    k, n, m, reps = 20, 1000, 1500, 3000
    p = np.linspace(1.0, 3.0, k)
    p /= p.sum()
    a = rng.multinomial(n, p, size=reps)
    b = rng.multinomial(m, p, size=reps)
    d, _ = compare("kl", a, b, NONE)
    assert np.all(np.isfinite(d))
    expected = (k - 1) / 2 * (1 / n + 1 / m)
    assert float(d.mean()) == pytest.approx(expected, rel=0.08)


# ----------------------------------------------------------------------------- validation


def test_input_validation():
    with pytest.raises(ValueError, match="negative"):
        compare("kl", [1, -1, 3], [1, 1, 1], NONE)
    with pytest.raises(ValueError, match="shape mismatch"):
        compare("kl", [1, 1, 3], [1, 1], NONE)
    with pytest.raises(ValueError, match="all-zero"):
        compare("kl", [0, 0, 0], [1, 1, 1], Smoothing("additive"))
    with pytest.raises(ValueError, match="all-zero"):
        compare("kl", [[1, 2], [3, 4]], [[1, 2], [0, 0]], NONE)
    with pytest.raises(ValueError, match="unknown metric"):
        compare("tv", [1, 1], [1, 1], NONE)
    with pytest.raises(ValueError, match="unknown unit"):
        divergence("kl", [0.5, 0.5], [0.5, 0.5], unit="dits")
    with pytest.raises(ValueError, match="sum to 1"):
        divergence("kl", [5, 5], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        divergence("kl", [np.nan, 1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        divergence("kl", np.ones((2, 2, 2)) / 2, np.ones((2, 2, 2)) / 2)
    with pytest.raises(ValueError, match="smoothing"):
        smooth([1, 2], [1, 2], Smoothing("laplace"))
    with pytest.raises(ValueError, match="alpha"):
        smooth([1, 2], [1, 2], Smoothing("additive", alpha=0.0))


def test_the_registry_is_the_one_list_of_metrics():
    """Every registered metric is accepted by the config; every histogram metric is
    computed by compare(); the config rejects anything else and names the registered ones.
    (The summary metrics are checked in test_family.py.)"""
    from driftmon.config import ConfigError, parse_config
    from driftmon.detect.registry import METRICS as ALL
    from driftmon.detect.registry import REGISTRY, Divergence

    assert ALL == tuple(REGISTRY) and METRICS == tuple(n for n in ALL if isinstance(REGISTRY[n], Divergence))
    stream = {"name": "s", "features": [{"name": "x", "type": "numeric", "bins": "quantile"}]}
    for name, entry in REGISTRY.items():
        cfg = parse_config({"streams": [stream], "detector": {"metric": name}})
        assert cfg.detector.metric == name
        if name in METRICS:
            value, terms = compare(name, [5, 1], [1, 5], Smoothing("additive"), "bits", order=ORDER)
            assert float(value) > 0 and terms.shape == (2,)
            assert entry.unit_for("bits") == ("bits" if entry.log_based else "unitless")
        else:
            with pytest.raises(ValueError, match="compare_summaries"):
                compare(name, [5, 1], [1, 5], Smoothing("additive"), "bits")
    with pytest.raises(ConfigError, match="kl_reverse"):
        parse_config({"streams": [stream], "detector": {"metric": "tv"}})


def test_module_doctests():
    result = doctest.testmod(dv, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0
