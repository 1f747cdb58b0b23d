"""Preparer with streams[].cluster_by: each event's cluster is coded to a stable hash."""

from __future__ import annotations

import numpy as np

from driftmon.config import parse_config
from driftmon.decode.prepare import Preparer
from driftmon.summaries.clusters import ClusteredCodes, ClusteredSummarizer
from driftmon.summaries.hashing import hash_one


def preparer(cluster_by: str | None = "user") -> Preparer:
    s = {"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 5},
                                   {"name": "x", "type": "numeric", "bins": "quantile"}]}
    if cluster_by:
        s["cluster_by"] = cluster_by
    return Preparer(parse_config({"streams": [s]}).streams[0], clock=lambda: 2e9)


def test_cluster_values_are_hashed_per_event_and_missing_ones_marked():
    p = preparer()
    out = p.prepare([b'{"ts": 1, "user": "a", "c": "x", "x": 1}', b'{"ts": 2, "user": 7, "c": "y"}',
                     b'{"ts": 3, "c": "x", "x": 2}', b'{"ts": 4, "user": "a", "c": "z", "x": 3}'])
    assert all(isinstance(s, ClusteredSummarizer) for s in p.summarizers)
    codes = out.coded.codes
    assert len(codes) == 2 and all(isinstance(c, ClusteredCodes) for c in codes)
    h = codes[0].cluster
    assert h[0] == h[3] == hash_one("a") and h[1] == hash_one("7")
    assert codes[0].present.tolist() == [True, True, False, True]
    assert out.truncated == (0, 0)  # one count per feature, the cluster column not among them


def test_a_non_scalar_cluster_value_rejects_the_event():
    out = preparer().prepare([b'{"ts": 1, "user": {"id": 1}, "c": "x"}', b'{"ts": 2, "user": "b", "c": "x"}'])
    assert out.rejected == [(0, "bad_type")]
    assert out.accepted.tolist() == [1]


def test_without_cluster_by_the_codes_are_the_features_own():
    plain = preparer(None).prepare([b'{"ts": 1, "user": "a", "c": "x", "x": 1.5}'])
    clustered = preparer().prepare([b'{"ts": 1, "user": "a", "c": "x", "x": 1.5}'])
    assert np.array_equal(plain.coded.codes[0].hashes, clustered.coded.codes[0].inner.hashes)
    assert not isinstance(plain.coded.codes[0], ClusteredCodes)


def test_worker_path_equals_in_process_path_with_cluster_by():
    """The decode worker's clustered codes (pickled across the process boundary) give the
    in-process results and state, with hostile and late events, segments over their cap and
    clusters past the exact cap (the sketch)."""
    from driftmon.decode.worker import DecodeWorker
    from driftmon.pipeline import StreamPipeline
    from tests.decode.test_worker import NOW, as_data, batches, snapshot, stream_doc

    doc = {**stream_doc(max_segments=6), "cluster_by": "user_id", "cluster_max_pairs": 50}
    cfg = parse_config({"streams": [doc], "detector": {"min_count": 50, "permutations": 99}})
    ref = StreamPipeline(cfg.streams[0], clock=lambda: NOW)
    got = StreamPipeline(cfg.streams[0], clock=lambda: NOW)
    worker = DecodeWorker(cfg.streams)
    try:
        for k, (values, parts) in enumerate(batches(4, n_batches=8)):
            expected = as_data(ref.process(values, parts, 1000.0 + k))
            worker.submit([("interactions", values, got.clock())])
            (prepared,) = worker.result()
            assert as_data(got.count(prepared, parts, 1000.0 + k)) == expected, f"batch {k}"
        assert as_data(got.flush()) == as_data(ref.flush())
        assert snapshot(got) == snapshot(ref)
    finally:
        worker.close()
    assert ref.windows_closed > 3
    assert '"sketch": "' in snapshot(ref)  # some window had clusters past the exact cap
