"""Decoder: the segment value rules (``__missing__``, ``__empty__``, the 64-character cut)
and the value length cap (no categorical value longer than 256 characters reaches window
state, no bin label longer than that a result row or webhook), the same on the columnar
fast path and the per-event slow path."""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.config import parse_config
from driftmon.decode import events as events_mod
from driftmon.decode.events import MAX_VALUE_CHARS, TRUNCATION_MARKER, Decoder
from driftmon.decode.prepare import SegmentInterner
from driftmon.detect.result import MAX_LABEL_CHARS, BinShare, DriftResult, cap_label
from driftmon.pipeline import StreamPipeline
from driftmon.vocabulary import EMPTY_SEGMENT, segment_label


def decoder(*segment_by: str) -> Decoder:
    cfg = parse_config({"streams": [{"name": "s", "segment_by": list(segment_by), "features": [
        {"name": "c", "type": "categorical", "categories": ["a"]}]}]})
    return Decoder(cfg.streams[0], clock=lambda: 2e9)


def events(*platforms: object) -> list[bytes]:
    out = []
    for p in platforms:
        doc: dict[str, object] = {"ts": 1_700_000_000, "c": "a"}
        if p is not None:
            doc["platform"] = p
        out.append(json.dumps(doc).encode())
    return out


def test_an_empty_segment_value_is_reserved_empty_never_the_overall_label():
    d = decoder("platform")
    # all strings: the columnar fast path
    assert d.decode(events("ios", "", "web")).segments == ["ios", EMPTY_SEGMENT, "web"]
    assert d.decode(events("", "")).segments == [EMPTY_SEGMENT, EMPTY_SEGMENT]
    # mixed types, an absent field, a bad row: the slow path decides the same way
    assert d.decode(events("", 7, None)).segments == [EMPTY_SEGMENT, "7", "__missing__"]
    batch = d.decode([*events(""), b"not json", *events("x" * 100)])
    assert batch.segments == [EMPTY_SEGMENT, "x" * 64] and batch.rejected == [(1, "invalid_json")]
    # several segment fields: each empty part is reserved, so "a|" cannot pose as "a" + ""
    two = decoder("platform", "region")
    docs = [json.dumps({"ts": 1_700_000_000, "c": "a", "platform": p, "region": r}).encode()
            for p, r in (("", ""), ("ios", ""), ("", "eu"))]
    assert two.decode(docs).segments == [f"{EMPTY_SEGMENT}|{EMPTY_SEGMENT}", f"ios|{EMPTY_SEGMENT}",
                                         f"{EMPTY_SEGMENT}|eu"]
    assert "" not in (d.decode(events("", "", "a")).segments or [])


def test_segment_label_keeps_the_overall_series_apart():
    assert segment_label(None) == ""  # the overall series: no segment label in Prometheus/Alertmanager
    assert segment_label("") == EMPTY_SEGMENT  # e.g. restored from a checkpoint written before the rule
    assert segment_label("ios") == "ios"


# -- value length caps

HUGE = "v" * (2 << 20)  # 2 MiB


def stream(categories: list[str] | None = None):
    cat = {"categories": categories} if categories else {"top_k": 5}
    return parse_config({"streams": [{
        "name": "s", "window": {"count": 4},
        "features": [{"name": "c", "type": "categorical", **cat},
                     {"name": "x", "type": "numeric", "edges": [0, 1]}],
    }]}).streams[0]


def value_events(values: list[str]) -> list[bytes]:
    return [orjson.dumps({"ts": 1_700_000_000 + i, "c": v, "x": 0.5}) for i, v in enumerate(values)]


def test_long_category_values_are_cut_with_a_marker_and_counted_on_both_decode_paths():
    values = ["a", HUGE, "b" * 300, None, "c" * MAX_VALUE_CHARS]
    fast = Decoder(stream(), clock=lambda: 2e9).decode(value_events(values))  # type: ignore[arg-type]
    slow = Decoder(stream(), clock=lambda: 2e9).decode([*value_events(values), b"not json"])  # type: ignore[arg-type]
    for batch in (fast, slow):
        col = batch.features[0]
        assert col[0] == "a" and col[3] is None and col[4] == "c" * MAX_VALUE_CHARS
        assert col[1] == "v" * (MAX_VALUE_CHARS - 1) + TRUNCATION_MARKER
        assert col[2] == "b" * (MAX_VALUE_CHARS - 1) + TRUNCATION_MARKER
        assert max(len(v) for v in col if v) == MAX_VALUE_CHARS
        assert batch.truncated == [2, 0] and len(batch) == 5  # every event is still counted
    assert slow.rejected == [(5, "invalid_json")]


def test_a_declared_vocabulary_is_never_cut_and_long_undeclared_values_count_as_other():
    long_cat = "L" * 400
    batch = Decoder(stream(["a", long_cat]), clock=lambda: 2e9).decode(value_events([long_cat, "L" * 500, HUGE]))
    assert batch.features[0][:2] == [long_cat, "L" * 500] and batch.truncated == [0, 0]
    pipe = StreamPipeline(stream(["a", long_cat]))
    out = pipe.process(value_events([long_cat, "L" * 500, HUGE, "a"]))
    (row,) = [r for r in out.results if r.feature == "c"]
    assert row.counts == (1, 1, 2, 0) and row.bins[0] == "a" and row.bins[2:] == ("__other__", "__missing__")
    assert len(row.bins[1]) <= MAX_LABEL_CHARS  # the declared name, as a bounded label


def test_rows_from_2_mib_values_stay_small():
    """The original failure: 2 MiB category values became bins, rows grew past 1 MB."""
    pipe = StreamPipeline(stream())
    out = pipe.process(value_events([HUGE + str(i % 3) for i in range(12)] + ["a"] * 8))
    assert out.truncated == (12, 0)
    assert out.results
    for r in out.results:
        line = orjson.dumps(r.to_dict())
        assert len(line) < 4096, len(line)
        assert all(len(b) <= MAX_LABEL_CHARS for b in r.bins)


def test_result_labels_are_capped_and_stay_distinct():
    a, b = "x" * 1000 + "a", "x" * 1000 + "b"
    r = DriftResult(stream="s", feature="f", segment="s" * 300, window_start=0.0, window_end=60.0, metric="kl",
                    unit="nats", divergence=0.0, p_value=1.0, n_current=1, n_reference=1, state="ok",
                    transition="none", bins=(a, b, "__other__"), counts=(1, 0, 0),
                    top_bins=(BinShare(a, 0.5, 0.5, 0.0),))
    assert r.bins[0] != r.bins[1] and all(len(x) == MAX_LABEL_CHARS for x in r.bins[:2])
    assert r.bins[0] == cap_label(a) and r.top_bins[0].bin == cap_label(a)
    assert r.bins[2] == "__other__" and len(r.segment or "") == MAX_LABEL_CHARS
    assert len(orjson.dumps(r.to_dict())) < 2000


def _entities_stream(entities: bool):
    s = {"name": "s", "timestamp": {"max_future_skew": None},
         "features": [{"name": "c", "field": "item.category", "type": "categorical", "top_k": 5}]}
    if entities:
        s["entities"] = {"key": "user.id", "feature": "item.category", "window": {"size": "1d"}}
    return parse_config({"streams": [s]}).streams[0]


def test_entity_columns_ride_along_only_when_configured():
    """streams[].entities: the key and feature are two more columns of the same decode (extras),
    hashed by the Preparer; the features, rejects and a stream without entities are unchanged."""
    import pickle

    import numpy as np

    from driftmon.decode.prepare import Preparer
    from driftmon.summaries.hashing import stable_hash

    values = [b'{"ts": 1700000000, "user": {"id": "alice"}, "item": {"category": "books"}}',
              b'{"ts": 1700000001, "user": {"id": 7}, "item": {}}',  # a number key is its text; no value
              b'{"ts": 1700000002, "item": {"category": "music"}}',  # no key
              b'{"ts": 1700000003, "user": {"id": {"x": 1}}, "item": {"category": "music"}}',  # bad key type
              b'{"ts": 1700000004, "user": {"id": "' + b"k" * 300 + b'"}, "item": {"category": "books"}}']
    plain = Preparer(_entities_stream(False)).prepare(values)
    ent = Preparer(_entities_stream(True)).prepare(values)
    assert plain.entities is None
    assert ent.rejected == [(3, "bad_type")] and plain.rejected == []  # a key must be a scalar
    assert ent.entities is not None
    long_key = "k" * (MAX_VALUE_CHARS - 1) + TRUNCATION_MARKER  # capped like any open-vocabulary value
    assert ent.entities.keys == ["alice", "7", None, long_key]
    assert ent.entities.values == ["books", None, "music", "books"]
    assert ent.entities.hashes.tolist() == [*stable_hash(["alice", "7"]).tolist(), 0, *stable_hash([long_key]).tolist()]
    assert len(ent.truncated) == 1  # per feature only: the extras are not features
    assert ent.accepted.tolist() == [0, 1, 2, 4] and plain.accepted.tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(ent.coded.ts, plain.coded.ts[[0, 1, 2, 4]])
    again = pickle.loads(pickle.dumps(ent))  # what the decode worker sends back
    assert again.entities.keys == ent.entities.keys and again.entities.hashes.dtype == np.uint64
def _mixed_config():
    return parse_config({"streams": [{"name": "s", "timestamp": {"field": "t.s", "unit": "s"},
                                      "segment_by": ["p", "q.r"], "features": [
        {"name": "c", "field": "a.b", "type": "categorical", "top_k": 3},
        {"name": "k", "field": "a.k", "type": "categorical", "categories": ["x", "y"]},
        {"name": "n", "field": "n", "type": "numeric", "bins": "quantile"},
        {"name": "p", "field": "p", "type": "categorical", "top_k": 2}]}]}).streams[0]


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-1e6, 1e6), st.sampled_from(
    ["x", "y", "", "z" * 70, "w" * 300]), st.lists(st.integers(-9, 9), max_size=1), st.just({}))


@st.composite
def _event(draw) -> bytes:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([b"not json", b"[1]", b'"s"', b"{", b"null"]))
    full = draw(st.integers(0, 3)) > 0  # most batches: every key present (the column fast path)
    doc: dict = {"t": {"s": draw(st.one_of(st.floats(1.6e9, 1.7e9), st.integers(1_600_000_000, 1_700_000_000),
                                           _scalar))}}
    doc["a"] = {"b": draw(_scalar), "k": draw(_scalar)} if full or draw(st.booleans()) else draw(_scalar)
    for key, val in (("n", _scalar), ("p", _scalar)):
        if full or draw(st.booleans()):
            doc[key] = draw(val)
    doc["q"] = {"r": draw(_scalar)}
    return orjson.dumps(doc)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(_event(), max_size=12), min_size=1, max_size=4))
def test_fast_paths_decode_exactly_like_the_per_event_reference(batches):
    """The column (itemgetter) and row (extractor) fast paths, with the back-off between
    them, give the per-event reference decoder's values, rejections and cuts."""
    dec = Decoder(_mixed_config(), clock=lambda: 2e9)
    for values in batches:
        got = dec.decode(values)
        ref = Decoder(_mixed_config(), clock=lambda: 2e9)
        want = ref._decode_slow(values, 2e9)
        want.truncated = [0 if cap is None else events_mod._cap_column(c, cap) for c, cap in zip(want.features,
                                                                                              ref.caps)]
        assert got.accepted == want.accepted and got.rejected == want.rejected
        assert got.ts.tolist() == want.ts.tolist() and got.segments == want.segments
        assert got.truncated == want.truncated
        for a, b in zip(got.features, want.features):
            assert [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in a] == \
                   [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in b]
            assert [type(v) for v in a] == [type(v) for v in b]


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(st.lists(st.sampled_from(["ios", "web", "android", "tv", "car"]), max_size=20),
                        min_size=1, max_size=6), limit=st.integers(1, 6))
def test_interned_segment_keys_name_the_same_segment_per_event(batches, limit):
    """Segment keys interned across batches (bounded, restarted when full) give every event
    the key it had, and a batch's key list never changes after it was handed out."""
    interner = SegmentInterner(limit=limit)
    handed = []
    for segs in batches:
        keys = interner.of(segs)
        assert [keys.keys[i] for i in keys.inverse.tolist()] == segs
        handed.append((keys, list(keys.keys)))
    for keys, snapshot in handed:
        assert keys.keys == snapshot
