"""The summary contract for every kind (driftmon.summaries.base): a commutative
monoid whose value depends only on the multiset of events."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.summaries import exact
from driftmon.summaries.bins import CategoricalSpec, NumericSpec
from driftmon.summaries.categorical import CategoricalSummarizer
from driftmon.summaries.fixed import FixedSummarizer
from driftmon.summaries.numeric import INF, MISSING_CODE, NumericSummarizer

CAT = CategoricalSummarizer(top_k=3, cap=5, tail_size=4)  # a tiny cap, so the tail is exercised
NUM = NumericSummarizer(num_bins=4)
FIX_CAT = FixedSummarizer(CategoricalSpec(("a", "b")))
FIX_NUM = FixedSummarizer(NumericSpec((0.0, 1.0, 10.0)))

cat_values = st.lists(st.one_of(st.none(), st.sampled_from([f"v{i}" for i in range(12)]), st.text(max_size=4)),
                      max_size=60)
num_values = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324])), max_size=60)


def summary(s, values):
    return s.summarize(s.codes(values))


def parts_sum(s, values, cuts):
    total = s.empty()
    bounds = sorted({0, len(values), *[c % (len(values) + 1) for c in cuts]})
    for a, b in zip(bounds, bounds[1:]):
        total = total + summary(s, values[a:b])
    return total


def roundtrip(s, x):
    return s.from_dict(json.loads(json.dumps(x.to_dict())))


@settings(max_examples=150, deadline=None)
@given(values=cat_values, cuts=st.lists(st.integers(0, 60), max_size=5), seed=st.integers(0, 2**32 - 1))
def test_categorical_is_a_function_of_the_multiset(values, cuts, seed):
    whole = summary(CAT, values)
    shuffled = list(values)
    np.random.default_rng(seed).shuffle(shuffled)
    assert summary(CAT, shuffled) == whole
    assert parts_sum(CAT, shuffled, cuts) == whole
    assert whole + CAT.empty() == whole
    assert roundtrip(CAT, whole) == whole
    assert whole.total == len(values)
    assert whole.keys.size <= CAT.cap


@settings(max_examples=150, deadline=None)
@given(a=cat_values, b=cat_values, c=cat_values)
def test_categorical_addition_is_commutative_and_associative(a, b, c):
    x, y, z = summary(CAT, a), summary(CAT, b), summary(CAT, c)
    assert x + y == y + x
    assert (x + y) + z == x + (y + z) == summary(CAT, a + b + c)


@settings(max_examples=150, deadline=None)
@given(values=num_values, cuts=st.lists(st.integers(0, 60), max_size=5), seed=st.integers(0, 2**32 - 1))
def test_numeric_is_a_function_of_the_multiset(values, cuts, seed):
    whole = summary(NUM, values)
    shuffled = list(values)
    np.random.default_rng(seed).shuffle(shuffled)
    assert summary(NUM, shuffled) == whole
    assert parts_sum(NUM, shuffled, cuts) == whole
    assert roundtrip(NUM, whole) == whole
    assert whole.total == len(values)
    finite = [v for v in values if math.isfinite(v)]
    assert Fraction(whole.sum, 1 << exact.SCALE_BITS) == sum(map(Fraction, finite), Fraction(0))


@settings(max_examples=100, deadline=None)
@given(a=num_values, b=num_values, c=num_values)
def test_numeric_addition_is_commutative_and_associative(a, b, c):
    x, y, z = summary(NUM, a), summary(NUM, b), summary(NUM, c)
    assert x + y == y + x
    assert (x + y) + z == x + (y + z) == summary(NUM, a + b + c)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c"])), max_size=40),
       nums=num_values, seed=st.integers(0, 2**32 - 1))
def test_fixed_is_a_function_of_the_multiset(values, nums, seed):
    rng = np.random.default_rng(seed)
    for s, vals in ((FIX_CAT, values), (FIX_NUM, nums)):
        whole = summary(s, vals)
        shuffled = list(vals)
        rng.shuffle(shuffled)
        assert summary(s, shuffled) == whole == roundtrip(s, whole)
        assert summary(s, shuffled[:7]) + summary(s, shuffled[7:]) == whole


@settings(max_examples=100, deadline=None)
@given(x=st.floats(min_value=-1e300, max_value=1e300, allow_nan=False).filter(lambda v: v != 0))
def test_numeric_buckets_hold_their_values_within_the_stated_accuracy(x):
    code = int(NUM.codes([x]).codes[0])
    rep = float(NUM.representative(np.asarray([code]))[0])
    assert abs(rep - x) <= NUM.accuracy * abs(x) * (1 + 1e-9)
    lo, hi = NUM.bounds(code)
    assert lo * (1 - 1e-12) <= x <= hi * (1 + 1e-12) if x > 0 else lo * (1 + 1e-12) <= x <= hi * (1 - 1e-12)


def test_numeric_codes_are_ordered_like_values():
    x = np.array([-math.inf, -1e10, -2.0, -1.0, -1e-300, 0.0, 1e-300, 1.0, 2.0, 1e10, math.inf])
    codes = NUM.codes(x).codes
    assert np.all(np.diff(codes) > 0)
    assert codes[0] == -INF and codes[-1] == INF and codes[5] == 0


def test_categorical_cap_keeps_the_smallest_hashes_and_a_hashed_tail():
    s = CategoricalSummarizer(top_k=2, cap=3, tail_size=2)
    values = [f"v{i}" for i in range(10)] * 3
    x = summary(s, values)
    assert x.keys.size == 3 and x.total == 30 and int(x.tail.sum()) == 21
    all_hashes = sorted(int(h) for h in s.codes([f"v{i}" for i in range(10)]).hashes)
    assert x.keys.tolist() == all_hashes[:3]
    for name in x.names.values():
        assert x.count_of(name) == 3


def test_categorical_bins_name_new_values_and_pool_the_tail_into_other():
    s = CategoricalSummarizer(top_k=2, cap=100)
    ref = summary(s, ["a"] * 50 + ["b"] * 50)
    cur = summary(s, ["a"] * 40 + ["new"] * 60)
    labels, (c, r) = s.bins([cur, ref])
    assert labels == ("a", "new", "__other__", "__missing__")  # pooled: a 90, new 60, b 50
    assert c.tolist() == [40, 60, 0, 0] and r.tolist() == [50, 0, 50, 0]
    # a literal reserved value is never a named bin
    lit = summary(s, ["__other__"] * 10 + ["x"])
    labels, (c,) = s.bins([lit])
    assert labels == ("x", "__other__", "__missing__") and c.tolist() == [1, 10, 0]


def test_numeric_bins_are_pooled_quantiles_and_count_exactly():
    s = NumericSummarizer(num_bins=4)
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 1, 4000), rng.normal(11, 1, 4000)
    sa, sb = summary(s, a), summary(s, b)
    labels, (ca, cb) = s.bins([sa, sb])
    assert len(labels) == 5 and labels[-1] == "__missing__"
    assert ca.sum() == 4000 and cb.sum() == 4000
    pooled = ca + cb
    biggest_bucket = int((sa + sb).counts.max())  # cuts fall between buckets, so a bin is off by < one bucket
    assert np.all(np.abs(pooled[:4] - 2000) <= biggest_bucket)
    assert ca[0] > cb[0] and ca[3] < cb[3]


def test_numeric_moments_are_exact_and_merge():
    s = NumericSummarizer(num_bins=4)
    x = np.random.default_rng(4).normal(5, 2, 10001)
    whole = summary(s, x)
    assert whole.mean == float(sum(map(Fraction, x.tolist())) / x.size)
    assert abs(whole.variance - x.var()) < 1e-9
    assert summary(s, x[:10]) + summary(s, x[10:]) == whole


def test_from_dict_rejects_damaged_summaries():
    x = summary(CAT, ["a", "b", "a"])
    d = x.to_dict()
    for bad in ({**d, "v": 99}, {**d, "kind": "numeric"}, {**d, "names": ["a"]}):
        try:
            CAT.from_dict(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


@settings(max_examples=100, deadline=None)
@given(cats=cat_values, nums=num_values, data=st.data())
def test_summarize_groups_equals_one_summary_per_group(cats, nums, data):
    """The one-pass, all-segments summaries the windows use equal per-group summarize()."""
    for s, values in ((CAT, cats), (NUM, nums), (FIX_CAT, [v if v in (None, "a", "b") else "c" for v in cats]),
                      (FIX_NUM, nums)):
        n = len(values)
        n_groups = data.draw(st.integers(1, 4))
        sel = np.asarray(data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n if n else 0, unique=True)),
                         dtype=np.int64)
        groups = np.asarray(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=sel.size,
                                               max_size=sel.size)), dtype=np.int64)
        codes = s.codes(values)
        got = s.summarize_groups(codes, sel, groups, n_groups)
        assert len(got) == n_groups
        for g in range(n_groups):
            expected = summary(s, [values[i] for i in sel[groups == g].tolist()])
            assert got[g] == expected
            assert s.summarize(s.take(codes, sel[groups == g])) == expected


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(cat_values, min_size=1, max_size=6), limit=st.integers(2, 8))
def test_categorical_codes_do_not_depend_on_the_interning_table(batches, limit):
    """Values are interned across batches (a bounded cache, cleared when full); a fresh
    summarizer and a long-lived small-table one give the same summary of every batch."""
    warm = CategoricalSummarizer(top_k=3, cap=5, tail_size=4, intern_limit=limit)
    for values in batches:
        fresh = CategoricalSummarizer(top_k=3, cap=5, tail_size=4)
        got = warm.summarize(warm.codes(values))
        assert got == fresh.summarize(fresh.codes(values))
        assert got.names == fresh.summarize(fresh.codes(values)).names
        assert len(warm._ids) <= max(limit, 1)


@settings(max_examples=100, deadline=None)
@given(n_codes=st.integers(1, 70_000), data=st.data())
def test_packed_lookup_is_dict_get_in_the_narrowest_width(n_codes, data):
    """summaries.base.lookup: one bytes.join of packed codes, read back as int64, is
    ``[table.get(v, default) for v in values]`` in every width, the widest code included."""
    from driftmon.summaries.base import code_width, lookup, packed

    width = code_width(n_codes)
    assert n_codes <= 1 << (8 * width) and (width == 1 or n_codes > 1 << (4 * width))
    codes = data.draw(st.dictionaries(st.text(max_size=3), st.integers(0, n_codes - 1), max_size=8))
    codes["top"] = n_codes - 1
    default = data.draw(st.integers(0, n_codes - 1))
    values = data.draw(st.lists(st.one_of(st.sampled_from(sorted(codes)), st.text(max_size=3)), max_size=40))
    got = lookup({k: packed(c, width) for k, c in codes.items()}, values, packed(default, width))
    assert got.dtype == np.int64 and got.flags.writeable
    assert got.tolist() == [codes.get(v, default) for v in values]


@settings(max_examples=150, deadline=None)
@given(x=st.lists(st.floats(min_value=5e-324, max_value=1.7e308), min_size=1, max_size=60))
def test_numeric_codes_of_a_finite_positive_batch_take_the_short_way_to_the_same_codes(x):
    """A batch of finite positive values skips the masks (NumericSummarizer._positive);
    its codes are those of the general path (forced here by one NaN, then left out)."""
    fast = NUM.codes(x)
    general = NUM.codes([*x, math.nan])
    assert general.codes[-1] == MISSING_CODE  # the NaN is missing, not a bucket
    assert fast.codes.tolist() == general.codes[:-1].tolist()
    assert fast.ids.tolist() == general.ids[:-1].tolist() and fast.table.tolist() == general.table.tolist()
    assert summary(NUM, x) + summary(NUM, [math.nan]) == summary(NUM, [*x, math.nan])


def test_add_sparse_subset_and_general_cases():
    from driftmon.summaries.base import add_sparse

    a_keys, a_counts = np.array([1, 3, 5, 7], dtype=np.uint64), np.array([1, 2, 3, 4], dtype=np.int64)
    for b_keys, b_counts, keys, counts in (
        ([3, 7], [10, 20], [1, 3, 5, 7], [1, 12, 3, 24]),  # subset
        ([0, 3, 8], [5, 5, 5], [0, 1, 3, 5, 7, 8], [5, 1, 7, 3, 4, 5]),  # general
        ([1, 3, 5, 7, 9], [1, 1, 1, 1, 1], [1, 3, 5, 7, 9], [2, 3, 4, 5, 1]),  # superset
    ):
        b = (np.array(b_keys, np.uint64), np.array(b_counts, np.int64))
        for x, y in (((a_keys, a_counts), b), (b, (a_keys, a_counts))):
            k, c = add_sparse(*x, *y)
            assert k.tolist() == keys and c.tolist() == counts
    assert a_counts.tolist() == [1, 2, 3, 4]  # inputs untouched


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n_groups=st.integers(1, 4))
def test_exact_sums_per_group_equal_the_exact_sum_of_each_group(data, n_groups):
    """The grouped pass (one bincount over the batch's exponent range) against the
    one-group reference, subnormals and the extremes included."""
    x = np.array(data.draw(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                              st.sampled_from([5e-324, -5e-324, 1.7976931348623157e308, 0.0])),
                                    max_size=50)), dtype=np.float64)
    groups = np.array(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=x.size, max_size=x.size)),
                      dtype=np.int64)
    got = exact.exact_sums(x, groups, n_groups)
    assert got == [exact.exact_sum(x[groups == g]) for g in range(n_groups)]
    assert got == [sum(Fraction(v) for v in x[groups == g].tolist()) * 2**exact.SCALE_BITS for g in range(n_groups)]


def test_exact_sums_of_more_values_than_one_pass_takes_are_summed_in_chunks(monkeypatch):
    x = np.random.default_rng(1).normal(size=1000) * 1e6
    groups = np.arange(1000) % 3
    whole = exact.exact_sums(x, groups, 3)
    monkeypatch.setattr(exact, "_CHUNK", 7)
    assert exact.exact_sums(x, groups, 3) == whole == [exact.exact_sum(x[groups == g]) for g in range(3)]
