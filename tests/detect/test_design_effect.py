"""The Rao-Scott design effect of clustered events (significance.design_effect) and the
corrected G-test p-value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from driftmon.detect import significance as sig
from driftmon.summaries.bins import CategoricalSpec
from driftmon.summaries.clusters import ClusteredSummarizer, ClusterStats
from driftmon.summaries.fixed import FixedSummarizer


def stats(cluster: np.ndarray, bins: np.ndarray, k: int) -> tuple[ClusterStats, np.ndarray]:
    """One window's exact cluster statistics (every cluster exact) and its histogram."""
    cells, count = np.unique(np.stack([cluster, bins]), axis=1, return_counts=True)
    _, cid = np.unique(cells[0], return_inverse=True)
    return (ClusterStats(cid.reshape(-1).astype(np.int64), cells[1].astype(np.int64), count.astype(np.int64), 0.0, 0,
                         int(cluster.size)), np.bincount(bins, minlength=k))


def two_windows(rng: np.random.Generator, n: int, k: int, size: int, homogeneous: bool):
    p = rng.dirichlet(np.ones(k))
    out_s, out_c = [], []
    for _ in range(2):
        cluster = np.repeat(np.arange(n // size), size)
        if homogeneous:  # every event of a cluster in the cluster's own bin
            bins = rng.choice(k, size=n // size, p=p)[cluster]
        else:  # clusters, but events independent of them
            bins = rng.choice(k, size=cluster.size, p=p)
        s, c = stats(cluster, bins, k)
        out_s.append(s)
        out_c.append(c)
    return out_s, out_c


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 8), size=st.sampled_from([1, 5, 20]))
def test_design_effect_is_one_for_events_independent_of_their_clusters(seed, k, size):
    s, c = two_windows(np.random.default_rng(seed), 20_000, k, size, homogeneous=False)
    d = sig.design_effect(s, c, floor=0.0)
    assert d.mean == pytest.approx(1.0, abs=0.12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 8), size=st.sampled_from([5, 20, 50]))
def test_design_effect_is_the_cluster_size_for_homogeneous_clusters(seed, k, size):
    s, c = two_windows(np.random.default_rng(seed), 20_000, k, size, homogeneous=True)
    d = sig.design_effect(s, c)
    assert d.mean == pytest.approx(size, rel=0.25)
    assert d.scale * d.df == pytest.approx(d.mean * (np.count_nonzero(c[0] + c[1]) - 1))
    assert d.scale >= d.mean - 1e-9  # Satterthwaite: scale >= mean, df <= K - 1


def test_design_effect_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    k = 4
    cluster = rng.integers(0, 300, 5_000)
    bins = np.where(rng.random(5_000) < 0.5, cluster % k, rng.integers(0, k, 5_000))
    s1, c1 = stats(cluster, bins, k)
    s2, c2 = stats(rng.integers(0, 300, 4_000), rng.integers(0, k, 4_000), k)
    p = (c1 + c2) / (c1 + c2).sum()

    def v(cl, b):
        e = np.zeros((cl.max() + 1, k))
        np.add.at(e, (cl, b), 1.0)
        e -= e.sum(axis=1, keepdims=True) * p
        return e.T @ e

    # the second window via its cells
    e2 = np.zeros((int(s2.cluster.max()) + 1, k))
    np.add.at(e2, (s2.cluster, s2.bin), s2.count)
    e2 -= e2.sum(axis=1, keepdims=True) * p
    cov = v(cluster, bins) / 5_000**2 + (e2.T @ e2) / 4_000**2
    a = np.diag(1 / p) @ cov / (1 / 5_000 + 1 / 4_000)
    d = sig.design_effect([s1, s2], [c1, c2], floor=0.0)
    assert d.mean == pytest.approx(np.trace(a) / (k - 1))
    assert d.df == pytest.approx(np.trace(a) ** 2 / np.trace(a @ a))


def test_without_clusters_nothing_changes():
    a, b = np.array([30, 50, 20]), np.array([40, 40, 20])
    assert sig.g_test(a, b, design_effect=1.0) == sig.g_test(a, b)
    sparse_a, sparse_b = np.array([3, 0, 1, 2]), np.array([1, 2, 0, 4])
    assert sig.g_test(sparse_a, sparse_b, design_effect=1.0) == sig.g_test(sparse_a, sparse_b)
    assert sig.g_test(sparse_a, sparse_b, design_effect=sig.NO_EFFECT) == sig.g_test(sparse_a, sparse_b)


def test_the_corrected_p_value():
    a, b = np.array([300, 500, 200]), np.array([400, 400, 200])
    plain = sig.g_test(a, b)
    first = sig.g_test(a, b, design_effect=4.0)
    assert first.statistic == plain.statistic  # the raw G is reported
    assert first.p_value == pytest.approx(chi2.sf(plain.statistic / 4.0, 2))
    second = sig.g_test(a, b, design_effect=sig.DesignEffect(4.0, 6.0, 4 / 3))
    assert second.p_value == pytest.approx(chi2.sf(plain.statistic / 6.0, 4 / 3))
    assert second.p_value > plain.p_value
    with pytest.raises(ValueError):
        sig.g_test(a, b, design_effect=0.0)
    with pytest.raises(ValueError):
        sig.g_test(a, b, design_effect=math.inf)


def test_permutation_p_value_with_a_design_effect():
    a, b = np.array([9, 1, 0, 2, 0, 3]), np.array([1, 8, 3, 0, 2, 0])  # sparse: permutation test
    plain = sig.g_test(a, b)
    assert plain.method == "permutation"
    ps = [sig.g_test(a, b, design_effect=d).p_value for d in (1.0, 2.0, 4.0, 50.0)]
    assert ps[0] == plain.p_value
    assert ps == sorted(ps) and ps[-1] > 0.5  # a larger design effect, a larger p-value


def test_floor_means_no_correction_below_one():
    rng = np.random.default_rng(5)
    s, c = two_windows(rng, 4_000, 3, 1, homogeneous=False)
    d = sig.design_effect(s, c)
    assert d == sig.NO_EFFECT or d.mean >= 1.0


def test_cluster_stats_of_a_summarizer_feed_the_design_effect():
    """The summarizer's cluster statistics, exact or past the cap (sketch), give about the
    same design effect."""
    rng = np.random.default_rng(11)
    users = rng.integers(0, 400, 8_000)
    own = rng.integers(0, 3, 400)
    vals = np.where(rng.random(8_000) < 0.7, own[users], rng.integers(0, 3, 8_000))
    labels = ("a", "b", "c")
    spec = CategoricalSpec(labels)
    out = []
    for cap in (100_000, 200):
        s = ClusteredSummarizer(FixedSummarizer(spec), cap=cap)
        w1 = s.summarize(s.codes([f"u{u}" for u in users[:4_000]], [labels[v] for v in vals[:4_000]]))
        w2 = s.summarize(s.codes([f"u{u}" for u in users[4_000:]], [labels[v] for v in vals[4_000:]]))
        _, counts = s.bins([w1, w2])
        out.append(sig.design_effect(s.cluster_stats([w1, w2]), counts).mean)
        if cap == 200:
            assert w1.clusters.sketch is not None
    assert out[0] > 5
    assert out[1] == pytest.approx(out[0], rel=0.3)
