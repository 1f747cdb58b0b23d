"""driftmon.kldiv, the array API: against scipy, row-wise and whole-array, units,
zero cells, smoothing and input errors."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import driftmon
from driftmon import kldiv
from driftmon.config import Smoothing
from driftmon.detect.divergence import compare

arrays_module = importlib.import_module("driftmon.arrays")


@st.composite
def count_arrays(draw, positive=False, max_rows=8, max_k=12):
    """Two count arrays of one shape (R, K), every row with a positive total."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_k)))
    cells = hnp.arrays(np.float64, shape, elements=st.integers(1 if positive else 0, 40).map(float))
    p, q = draw(cells), draw(cells)
    for a in (p, q):
        a[a.sum(axis=1) == 0, 0] = 1.0
    return p, q


@settings(max_examples=150, deadline=None)
@given(count_arrays())
def test_per_row_matches_scipy(pair):
    p, q = pair
    ours = kldiv(p, q)
    assert isinstance(ours, np.ndarray) and ours.shape == (p.shape[0],)
    np.testing.assert_allclose(ours, scipy.stats.entropy(p, q, axis=1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(kldiv(p, q, unit="bits"), scipy.stats.entropy(p, q, base=2, axis=1),
                               rtol=1e-12, atol=1e-14)
    for r in range(p.shape[0]):  # each row on its own gives the same float
        one = kldiv(p[r], q[r])
        assert isinstance(one, float) and (one == ours[r] or (math.isinf(one) and math.isinf(ours[r])))


@settings(max_examples=150, deadline=None)
@given(count_arrays())
def test_all_is_one_distribution_over_every_cell(pair):
    p, q = pair
    ours = kldiv(p, q, mode="all")
    assert isinstance(ours, float)
    np.testing.assert_allclose(ours, scipy.stats.entropy(p.ravel(), q.ravel()), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(kldiv(p, q, mode="all", unit="bits"), ours / math.log(2), rtol=1e-12, atol=1e-14)


@settings(max_examples=100, deadline=None)
@given(count_arrays(), st.floats(1e-3, 1e3))
def test_inputs_are_normalised(pair, scale):
    p, q = pair
    np.testing.assert_allclose(kldiv(p * scale, q), kldiv(p, q), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(kldiv(p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)),
                               kldiv(p, q), rtol=1e-12, atol=1e-14)


@settings(max_examples=100, deadline=None)
@given(count_arrays(), st.sampled_from([0.5, 1.0, Smoothing("floor", floor=1e-3), Smoothing("additive", alpha=2.0)]))
def test_smoothing_is_the_monitors(pair, smoothing):
    p, q = pair
    expected = Smoothing("additive", alpha=float(smoothing)) if isinstance(smoothing, float) else smoothing
    value, _ = compare("kl", p, q, expected)  # what the monitor computes with that setting
    ours = kldiv(p, q, smoothing=smoothing)
    np.testing.assert_array_equal(ours, value)
    assert np.all(np.isfinite(ours))


def test_zero_cells():
    assert kldiv([1, 1], [1, 0]) == math.inf  # q = 0 < p
    assert kldiv([[1, 1], [1, 0]], [[1, 0], [1, 1]]).tolist() == [math.inf, math.log(2)]
    assert kldiv([1, 0, 0], [1, 1, 0]) == math.log(2)  # p = 0 adds exactly 0, even where q = 0 too
    assert kldiv([1, 0], [0, 1], smoothing=Smoothing("none")) == math.inf
    assert math.isfinite(kldiv([1, 0], [0, 1], smoothing=0.5))
    assert kldiv([[1, 1], [1, 0]], [[1, 0], [1, 1]], mode="all") == math.inf


def test_shapes():
    rng = np.random.default_rng(5)
    p, q = rng.integers(1, 9, size=(3, 4, 6)), rng.integers(1, 9, size=(3, 4, 6))
    out = kldiv(p, q)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, scipy.stats.entropy(p, q, axis=-1), rtol=1e-12)
    assert isinstance(kldiv(p, q, mode="all"), float)
    assert kldiv(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)
    assert kldiv([[0.2, 0.8]], [[0.5, 0.5]]).shape == (1,)


@pytest.mark.parametrize("p,q,kw,match", [
    ([1, -1], [1, 1], {}, "p contains negative values"),
    ([1, 1], [1, -0.5], {}, "q contains negative values"),
    ([1, np.nan], [1, 1], {}, "p contains NaN"),
    ([1, 1], [np.inf, 1], {}, "q contains NaN or infinite"),
    ([1, 1, 1], [1, 1], {}, "shape mismatch"),
    ([[1, 1]], [1, 1], {}, "shape mismatch"),
    ([[1, 1], [0, 0]], [[1, 1], [1, 1]], {}, "p row 1 .* is all zeros"),
    ([[1, 1], [1, 1]], [[0, 0], [1, 1]], {}, "q row 0 .* is all zeros"),
    ([0, 0], [1, 1], {"mode": "all"}, "p is all zeros"),
    (1.0, 1.0, {}, "at least one dimension"),
    ([], [], {}, "at least one bin"),
    ([1, 1], [1, 1], {"mode": "rows"}, "unknown mode"),
    ([1, 1], [1, 1], {"unit": "dits"}, "unknown unit"),
    ([1, 1], [1, 1], {"smoothing": 0.0}, "alpha > 0"),
    ([1, 1], [1, 1], {"smoothing": -1}, "alpha > 0"),
    ([1, 1], [1, 1], {"smoothing": True}, "smoothing must be"),
    ([1, 1], [1, 1], {"smoothing": "laplace"}, "smoothing must be"),
    ([1, 1], [1, 1], {"smoothing": Smoothing("floor", floor=2.0)}, "floor"),
])
def test_errors(p, q, kw, match):
    with pytest.raises(ValueError, match=match):
        kldiv(p, q, **kw)


def test_public_and_documented():
    assert "kldiv" in driftmon.__all__ and driftmon.kldiv is kldiv
    assert "per_row" in kldiv.__doc__ and "smoothing" in kldiv.__doc__
    result = doctest.testmod(arrays_module)
    assert result.attempted >= 8 and result.failed == 0
