"""Preparer: decoded columns -> summary codes and segment keys."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.config import parse_config
from driftmon.decode.prepare import Preparer

SEG_VALUES = st.one_of(st.sampled_from(["ios", "android", "web", "tv"]), st.text(max_size=3),
                       st.just("x" * 65), st.none(), st.integers(-2, 2), st.booleans())


def _stream(kind: dict, segmented: bool = True) -> Preparer:
    cfg = parse_config({"streams": [{
        "name": "s", "segment_by": ["platform"] if segmented else [], "max_segments": 3,
        "features": [{"name": "p", "field": "platform", "type": "categorical", **kind},
                     {"name": "c", "field": "c", "type": "categorical", "top_k": 3}]}]}).streams[0]
    return Preparer(cfg, clock=lambda: 2e9)


def _events(values: list) -> list[bytes]:
    out = []
    for i, v in enumerate(values):
        doc = {"ts": 1_700_000_000 + i, "c": f"c{i % 4}"}
        if v is not None or i % 2:
            doc["platform"] = v
        out.append(json.dumps(doc).encode())
    return out


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(SEG_VALUES, max_size=30), min_size=1, max_size=4),
       kind=st.sampled_from([{"categories": ["ios", "android", "web"]}, {"top_k": 2}]))
def test_a_feature_on_the_segment_field_counts_like_its_own_column(batches, kind):
    """A categorical feature that reads the segment field shares the decoded column with
    the segments when their values are equal (plain strings), and is then coded once per
    segment key; its summary per segment is the one its own column gives, across batches
    (the segment interner carries keys over), with nulls, numbers, "" and long values.
    The reference decodes the same events without segments: nothing to share."""
    shared, alone = _stream(kind), _stream(kind, segmented=False)
    for values in batches:
        events = _events(values)
        got = shared.prepare(events)
        decoded = alone.decoder.decode(events)
        s = alone.summarizers[0]
        own = s.codes(list(decoded.features[0]))
        inverse = got.coded.segments.inverse if got.coded.segments is not None else None
        assert got.accepted.tolist() == decoded.accepted
        for g, key in enumerate(got.coded.segments.keys if inverse is not None else []):
            sel = (inverse == g).nonzero()[0]
            mine = shared.summarizers[0]
            assert mine.summarize(mine.take(got.coded.codes[0], sel)) == s.summarize(s.take(own, sel)), key


def test_the_segment_column_is_shared_only_when_its_values_are_plain_strings():
    p = _stream({"categories": ["ios", "android"]})
    plain = p.decoder.decode(_events(["ios", "web", "ios"]))
    assert plain.features[0] is plain.segments
    for odd in (None, "", 7, "x" * 65):
        batch = p.decoder.decode(_events(["ios", odd, "web"]))
        assert batch.features[0] is not batch.segments
        if odd in (None, ""):  # a missing value vs "__missing__", "" vs "__empty__"
            assert batch.features[0][1] != batch.segments[1]
