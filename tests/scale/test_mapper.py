"""The mapper: per-partition windows, partials before marks, idleness, state round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from driftmon.config import parse_config
from driftmon.pipeline import StreamPipeline
from driftmon.scale.mapper import StreamMapper
from driftmon.scale.records import Mark, Partial
from tests.scale.helpers import config_doc, events, stream_cfg

CFG = stream_cfg()


def _count(mapper, pipe, vals, p, first_offset=0, now=None):
    prep = pipe.preparer.prepare(vals)
    return mapper.count("events", 2, prep.coded, np.full(len(prep.coded), p, dtype=np.int64),
                        {p: (first_offset, first_offset + len(vals) - 1)}, now)


def test_each_partial_precedes_its_partitions_mark_and_marks_only_advance():
    pipe = StreamPipeline(CFG)
    mapper = StreamMapper(CFG, pipe.summarizers)
    evs = events(400, seed=1)
    recs = []
    for i in range(0, 400, 50):
        recs += _count(mapper, pipe, evs[i:i + 50], 0, i)[1]
    marks = [r for r in recs if isinstance(r, Mark)]
    assert [m.through for m in marks] == sorted({m.through for m in marks})
    for i, r in enumerate(recs):
        if isinstance(r, Partial):
            later = [m.through for m in recs[i:] if isinstance(m, Mark)]
            assert later and later[0] >= r.window
            assert r.offsets[0] <= r.offsets[1]
    # every closed window has one partial per feature, with all its events
    per_window = {}
    for r in recs:
        if isinstance(r, Partial):
            per_window.setdefault(r.window, set()).add(r.feature)
    assert all(v == {f.name for f in CFG.features} for v in per_window.values())


def test_idle_partition_marks_idle_once_then_not_idle_when_it_delivers_again():
    pipe = StreamPipeline(CFG)
    mapper = StreamMapper(CFG, pipe.summarizers)
    evs = events(100, seed=2)
    _count(mapper, pipe, evs[:50], 1, now=0.0)
    assert mapper.tick(10.0, {"events": 2}) == []
    *opened, m = mapper.tick(CFG.window.idle_timeout + 1, {"events": 2})
    assert isinstance(m, Mark) and m.idle and m.partition == 1
    # what its open windows hold goes out first (they stay open and keep counting)
    assert opened and all(isinstance(r, Partial) and r.window > m.through for r in opened)
    assert {(r.window, r.feature) for r in opened} == {(w, f.name) for w in mapper.windows(("events", 1)).open
                                                      for f in CFG.features}
    assert mapper.tick(CFG.window.idle_timeout + 2, {"events": 2}) == []
    _, recs = _count(mapper, pipe, evs[50:], 1, 50, now=CFG.window.idle_timeout + 3)
    assert isinstance(recs[-1], Mark) and not recs[-1].idle


def test_state_round_trip_at_any_batch_boundary_sends_the_same_records():
    evs = events(300, seed=3)
    pipe = StreamPipeline(CFG)

    def run(cut):
        m = StreamMapper(CFG, pipe.summarizers)
        out = []
        for i in range(0, 300, 30):
            if i == cut:
                snap = json.loads(json.dumps(m.snapshot(("events", 0))))
                m = StreamMapper(CFG, pipe.summarizers)
                m.restore(("events", 0), snap)
            out += _count(m, pipe, evs[i:i + 30], 0, i)[1]
        return [(type(r).__name__, getattr(r, "window", None), getattr(r, "through", None),
                 r.state.to_dict() if isinstance(r, Partial) else None) for r in out]

    want = run(-1)
    for cut in (30, 120, 270):
        assert run(cut) == want


def test_count_windows_are_refused():
    doc = config_doc()
    doc["streams"][0]["window"] = {"count": 100}
    cfg = parse_config(doc).streams[0]
    with pytest.raises(ValueError, match="event-time"):
        StreamMapper(cfg, StreamPipeline(cfg).summarizers)
