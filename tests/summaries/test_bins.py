"""Declared bin specs: binning rules for declared edges and vocabularies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.summaries.base import MISSING, OTHER
from driftmon.summaries.bins import CategoricalSpec, NumericSpec

SETTINGS = settings(max_examples=80, deadline=None)

# ----------------------------------------------------------------------------- numeric binning


def test_numeric_bins_underflow_inner_overflow_missing():
    spec = NumericSpec((0.0, 1.0, 2.0, 5.0))
    assert spec.labels == ("<0", "[0, 1)", "[1, 2)", "[2, 5]", ">5", MISSING)
    assert spec.size == 6
    values = [-1e300, -0.0001, 0.0, 0.5, 1.0, 1.9999, 2.0, 4.99, 5.0, 5.0000001, 1e300, math.nan, -math.inf, math.inf]
    assert spec.index(values).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 0, 4]


def test_numeric_edge_values_go_right_except_the_closed_last_edge():
    edges = (-3.0, 0.25, 7.5)
    spec = NumericSpec(edges)
    # Every inner edge opens the bin to its right; the last edge closes the last inner bin.
    assert spec.index(list(edges)).tolist() == [1, 2, 2]
    assert spec.index([np.nextafter(7.5, np.inf)]).tolist() == [3]
    assert spec.index([np.nextafter(-3.0, -np.inf)]).tolist() == [0]


def test_numeric_histogram_counts_none_and_nan_as_missing():
    spec = NumericSpec((0.0, 0.5, 1.0))
    counts = np.bincount(spec.index([0.1, None, 0.7, 1.0, float("nan"), 3.0, -2.0]), minlength=spec.size)
    assert dict(zip(spec.labels, counts.tolist())) == {"<0": 1, "[0, 0.5)": 1, "[0.5, 1]": 2, ">1": 1, MISSING: 2}


@pytest.mark.parametrize(
    "edges", [(), (1.0,), (1.0, 1.0), (2.0, 1.0), (0.0, math.nan), (0.0, math.inf), ((0.0, 1.0), (2.0, 3.0))]
)
def test_numeric_spec_rejects_bad_edges(edges):
    with pytest.raises(ValueError, match="edges must be"):
        NumericSpec(edges)


@SETTINGS
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=12, unique=True),
    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0])), max_size=200),
)
def test_numeric_index_matches_a_plain_reference(edges, values):
    edges = tuple(sorted(edges))
    spec = NumericSpec(edges)
    got = spec.index(values).tolist()
    k = len(edges)

    def ref(x: float) -> int:
        if math.isnan(x):
            return k + 1
        if x < edges[0]:
            return 0
        if x > edges[-1]:
            return k
        if x == edges[-1]:
            return k - 1
        return max(i for i, e in enumerate(edges) if e <= x) + 1

    assert got == [ref(x) for x in values]


# ----------------------------------------------------------------------------- categorical binning


def test_categorical_other_and_missing():
    spec = CategoricalSpec(("books", "music", "video"))
    assert spec.labels == ("books", "music", "video", OTHER, MISSING)
    counts = np.bincount(spec.index(["video", "books", "poetry", None, "video", "", "Books"]), minlength=spec.size)
    assert dict(zip(spec.labels, counts.tolist())) == {"books": 1, "music": 0, "video": 2, OTHER: 3, MISSING: 1}


def test_categorical_index_is_vectorized_over_many_values():
    spec = CategoricalSpec(tuple(f"c{i}" for i in range(1000)))
    rng = np.random.default_rng(0)
    values = [f"c{i}" if i < 1000 else None if i == 1000 else f"x{i}" for i in rng.integers(0, 1200, 50_000).tolist()]
    idx = spec.index(values)
    assert idx.dtype == np.int64 and idx.shape == (50_000,)
    expected = [int(v[1:]) if v and v[0] == "c" else 1001 if v is None else 1000 for v in values]
    assert idx.tolist() == expected


# ----------------------------------------------------------------------------- learned specs
