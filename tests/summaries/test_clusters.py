"""Cluster tables (streams[].cluster_by): a commutative monoid, bounded, order independent."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.summaries.bins import CategoricalSpec, NumericSpec
from driftmon.summaries.categorical import CategoricalSummarizer
from driftmon.summaries.clusters import (
    NO_LIMIT,
    SKETCH_DEPTH,
    SKETCH_WIDTH,
    ClusteredSummarizer,
    ClusterTable,
    cluster_codes,
    sketch_add,
    sketch_square,
)
from driftmon.summaries.fixed import FixedSummarizer
from driftmon.summaries.hashing import hash_one
from driftmon.summaries.numeric import NumericSummarizer

INNER = {
    "categorical": lambda: CategoricalSummarizer(top_k=3, cap=6),
    "numeric": lambda: NumericSummarizer(num_bins=3),
    "fixed": lambda: FixedSummarizer(CategoricalSpec(("a", "b"))),
    "edges": lambda: FixedSummarizer(NumericSpec((0.0, 1.0, 2.0))),
}


def _values(kind: str, raw: list[int]) -> list:
    if kind in ("numeric", "edges"):
        return [float("nan") if r == 0 else r / 3.0 for r in raw]
    return [None if r == 0 else f"v{r}" for r in raw]


events = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 9)), min_size=0, max_size=80)


def _summary(s: ClusteredSummarizer, kind: str, evs: list[tuple[int, int]]):
    clusters = [None if c == 0 else f"u{c}" for c, _ in evs]
    return s.summarize(s.codes(clusters, _values(kind, [v for _, v in evs])))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(INNER)), evs=events, cap=st.integers(1, 12), data=st.data())
def test_order_and_batching_independent_and_merge_by_addition(kind, evs, cap, data):
    s = ClusteredSummarizer(INNER[kind](), cap=cap)
    whole = _summary(s, kind, evs)
    perm = data.draw(st.permutations(evs))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(evs)), max_size=4)))
    parts = [perm[a:b] for a, b in zip([0, *cuts], [*cuts, len(evs)])]
    total = s.empty()
    for p in parts:
        total = total + _summary(s, kind, p)
    assert total == whole
    assert whole.clusters.pairs <= cap
    assert whole.total == whole.clusters.n == len(evs)
    # commutative, associative, identity
    a, b, c = (_summary(s, kind, p) for p in (perm[: len(perm) // 3], perm[len(perm) // 3: len(perm) // 2],
                                                  perm[len(perm) // 2:]))
    assert a + b == b + a
    assert (a + b) + c == a + (b + c) == whole
    assert whole + s.empty() == whole
    # lossless, versioned JSON
    back = s.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert back == whole


def test_clusters_past_the_cap_go_to_the_sketch_by_hash():
    s = ClusteredSummarizer(FixedSummarizer(CategoricalSpec(("a", "b"))), cap=10)
    users = [f"u{i}" for i in range(40)]
    t = s.summarize(s.codes(users * 3, ["a", "b", "a"] * 40)).clusters
    assert t.pairs <= 10 and t.limit < NO_LIMIT and t.sketch is not None
    hashes = sorted(hash_one(u) for u in users)
    kept = np.unique(t.cluster).tolist()
    assert kept == hashes[: len(kept)]  # the smallest hashes are the exact ones
    assert t.limit == hashes[len(kept)]
    # every left-out cluster is in the sketch: 3 events each (sum of m^2 = 9 per cluster)
    assert sketch_square(t.sketch) == pytest.approx(9 * (40 - len(kept)), rel=0.3)


def test_the_sketch_estimates_the_sum_of_squared_sizes():
    rng = np.random.default_rng(0)
    sizes = rng.zipf(1.8, 20_000).clip(max=5_000).astype(np.int64)
    clusters = np.unique(rng.integers(0, 2**63, size=sizes.size, dtype=np.int64).astype(np.uint64))
    sizes = sizes[: clusters.size]
    sk = sketch_add(np.zeros((SKETCH_DEPTH, SKETCH_WIDTH), dtype=np.int64), clusters, sizes)
    exact = float((sizes.astype(np.float64) ** 2).sum())
    assert sketch_square(sk) == pytest.approx(exact, rel=0.15)
    # linear: two halves add up to the whole
    half = clusters.size // 2
    z = np.zeros((SKETCH_DEPTH, SKETCH_WIDTH), dtype=np.int64)
    assert np.array_equal(sketch_add(z, clusters[:half], sizes[:half]) + sketch_add(z, clusters[half:], sizes[half:]),
                          sk)


def test_cluster_codes_hash_each_value_and_mark_missing():
    h, present = cluster_codes(["u1", None, "u2", "u1"])
    assert present.tolist() == [True, False, True, True]
    assert h[0] == h[3] == hash_one("u1") and h[2] == hash_one("u2")


def test_from_dict_rejects_inconsistent_tables():
    s = ClusteredSummarizer(FixedSummarizer(CategoricalSpec(("a",))), cap=5)
    d = _summary(s, "fixed", [(1, 1), (2, 2), (0, 1)]).to_dict()
    bad = json.loads(json.dumps(d))
    bad["clusters"]["n"] = 1  # fewer events than counted
    with pytest.raises(ValueError):
        s.from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["clusters"]["v"] = 99
    with pytest.raises(ValueError):
        s.from_dict(bad)
    with pytest.raises(ValueError):  # a table written with another cap
        ClusteredSummarizer(FixedSummarizer(CategoricalSpec(("a",))), cap=6).from_dict(d)
    with pytest.raises(ValueError):
        ClusterTable.from_dict({**d["clusters"], "limit": "5"})  # exact clusters at or past the limit


def test_summaries_delegate_to_the_feature_summary():
    s = ClusteredSummarizer(NumericSummarizer(num_bins=2), cap=100)
    x = s.summarize(s.codes(["u1", "u1", "u2"], [1.0, 2.0, 3.0]))
    assert x.mean == pytest.approx(2.0) and x.count == 3
    labels, (counts,) = s.bins([x])
    assert labels == s.inner.bins([x.inner])[0] and counts.sum() == 3


def test_module_doctests():
    import doctest

    from driftmon.summaries import clusters

    result = doctest.testmod(clusters)
    assert result.attempted > 0 and result.failed == 0


def test_a_raw_batch_table_reads_like_its_sorted_sum():
    s = ClusteredSummarizer(FixedSummarizer(CategoricalSpec(("a", "b"))), cap=10)
    x = s.summarize(s.codes(["u2", "u1", "u2", "u3"], ["a", "b", "a", "a"]))
    raw = x._parts[0]
    assert raw.raw and raw.pairs == 4
    settled = x.clusters
    assert not settled.raw and settled.pairs == 3 and sorted(settled.count.tolist()) == [1, 1, 2]
    assert raw == settled and raw.to_dict() == settled.to_dict()
    assert ClusterTable.from_dict(raw.to_dict()) == settled
