


def test_learned_vocabulary_never_repeats_the_reserved_bin_labels():
    from driftmon.summaries.bins import learn_top_k

    spec = learn_top_k(["__other__", "__other__", "a", "__missing__", "b"], 5)
    assert spec.categories == ("a", "b")
    assert len(set(spec.labels)) == len(spec.labels)
