from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.histogram import CategoricalSpec, Histogram


def test_npz_round_trip_keeps_trailing_nul_characters():
    h = Histogram.from_values(CategoricalSpec(("a\x00", "a")), ["a\x00", "a", "a", None])
    assert Histogram.from_npz(h.to_npz()) == h  # today: spec comes back as ('a', 'a')


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), unique=True, max_size=10))
def test_npz_round_trip_is_lossless_for_any_category_text(cats):
    h = Histogram.empty(CategoricalSpec(tuple(cats)))
    assert Histogram.from_npz(h.to_npz()) == h


def test_learned_vocabulary_never_repeats_the_reserved_bin_labels():
    from driftmon.histogram import learn_top_k

    spec = learn_top_k(["__other__", "__other__", "a", "__missing__", "b"], 5)
    assert spec.categories == ("a", "b")
    assert len(set(spec.labels)) == len(spec.labels)
