"""The reducer: any order and any repetition of partials and marks gives the windows
of one process counting everything (StreamPipeline over the same events)."""

from __future__ import annotations

import json
import random
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftmon.detect.result import rfc3339
from driftmon.pipeline import StreamPipeline
from driftmon.scale.mapper import StreamMapper
from driftmon.scale.records import Mark, Partial, decode, encode, series_key
from driftmon.scale.reducer import Reducer, series_pipelines
from tests.scale.helpers import events, key, map_partitions, replay, stream_cfg

CFG = stream_cfg()
EVENTS = events(900, seed=7)
P = 3
MAPPED = map_partitions(CFG, EVENTS, P)
SUMMARIZERS = {k: p.summarizers for k, p in series_pipelines([CFG]).items()}


def _expected(cfg=CFG, evs=EVENTS, partitions=P) -> list[dict]:
    ts = [json.loads(e)["ts"] for e in evs]
    low = min(max(ts[p::partitions]) for p in range(partitions))  # the slowest partition's watermark
    return sorted((r for r in replay(cfg, evs) if r["window_end"] <= rfc3339(low)), key=key)


EXPECTED = _expected()


def _run(records, now_step: bool, reducer: Reducer | None = None) -> list[dict]:
    red = reducer or Reducer([CFG], partial_timeout=1e9)
    rows = []
    for i, rec in enumerate(records):
        red.add(decode(encode(rec), SUMMARIZERS))  # through the wire format
        if now_step:
            rows.extend(r.to_dict() for _, o in red.emit(float(i)) for r in o.results)
    rows.extend(r.to_dict() for _, o in red.emit(1e6) for r in o.results)
    return sorted(rows, key=key)


def test_one_in_order_pass_equals_one_process():
    recs = [r for p in range(P) for r in MAPPED[p]]
    assert len(EXPECTED) >= 40 and any(r["state"] in ("warn", "critical") for r in EXPECTED)
    assert _run(recs, now_step=False) == EXPECTED
    assert any(isinstance(r, Partial) for r in recs) and any(isinstance(r, Mark) for r in recs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(0, 40))
def test_interleavings_with_repeats_equal_one_process(rnd: random.Random, repeats: int):
    """Each source's records keep their order (one producer, one partials partition);
    sources interleave arbitrarily; re-sends of earlier records (crash, rebalance)
    appear anywhere later.  Windows are emitted as soon as they are complete."""
    queues = [list(MAPPED[p]) for p in range(P)]
    merged: list = []
    while any(queues):
        q = rnd.choice([q for q in queues if q])
        merged.append(q.pop(0))
    for _ in range(repeats):
        i = rnd.randrange(len(merged))
        merged.insert(rnd.randrange(i, len(merged)) + 1, merged[i])
    assert _run(merged, now_step=True) == EXPECTED


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_any_permutation_with_duplicates_emitted_at_the_end_equals_one_process(rnd: random.Random):
    recs = [r for p in range(P) for r in MAPPED[p]]
    recs += rnd.sample(recs, len(recs) // 3)
    rnd.shuffle(recs)
    assert _run(recs, now_step=False) == EXPECTED


def test_hopping_windows_and_more_partitions_equal_one_process():
    cfg = stream_cfg(size=20.0, slide=10.0, max_segments=5)
    evs = events(700, seed=11)
    mapped = map_partitions(cfg, evs, 5)
    summ = {k: p.summarizers for k, p in series_pipelines([cfg]).items()}
    red = Reducer([cfg], partial_timeout=1e9)
    rows = []
    for rec in [r for p in sorted(mapped, reverse=True) for r in mapped[p]]:
        red.add(decode(encode(rec), summ))
        rows.extend(r.to_dict() for _, o in red.emit(0.0) for r in o.results)
    assert sorted(rows, key=key) == _expected(cfg, evs, 5)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_series_spread_over_partials_partitions_each_reducer_emits_only_its_own(n):
    """As on the partials topic: a partial goes to its series' partition, a mark to every one."""
    reducers = [Reducer([CFG], partial_timeout=1e9) for _ in range(n)]
    rows = []
    for rec in [r for p in range(P) for r in MAPPED[p]]:
        targets = reducers if isinstance(rec, Mark) else [reducers[zlib.crc32(series_key(*rec.series)) % n]]
        for red in targets:
            red.add(rec)
            rows.extend(r.to_dict() for _, o in red.emit(0.0) for r in o.results)
    assert sorted(rows, key=key) == EXPECTED


def test_snapshot_restore_midway_continues_exactly():
    recs = [r for p in range(P) for r in MAPPED[p]]
    rnd = random.Random(3)
    rnd.shuffle(recs)
    half = len(recs) // 2
    red = Reducer([CFG], partial_timeout=1e9)
    rows = []
    for rec in recs[:half]:
        red.add(rec)
    rows.extend(r.to_dict() for _, o in red.emit(0.0) for r in o.results)
    snap = json.loads(json.dumps(red.snapshot()))
    red2 = Reducer([CFG], partial_timeout=1e9)
    red2.restore(snap)
    for rec in recs[half:]:
        red2.add(rec)
    rows.extend(r.to_dict() for _, o in red2.emit(0.0) for r in o.results)
    assert sorted(rows, key=key) == EXPECTED


def test_a_missing_partition_holds_windows_back_until_the_timeout_then_marks_them_partial():
    red = Reducer([CFG], partial_timeout=30.0)
    for p in (0, 1):
        for rec in MAPPED[p]:
            red.add(rec)
    red.add(Mark("events", 2, P, -(2**62), False))  # partition 2 known, never progressed
    assert red.emit(0.0) == []
    assert red.emit(29.0) == []
    (_, out), = red.emit(30.0)  # at the timeout: every window held back since 0, not one per timeout
    rows = [r.to_dict() for r in out.results]
    assert rows and all(r["partial"] is True and r["missing_partitions"] == ["events:2"] for r in rows)
    held = {r.window for p in (0, 1) for r in MAPPED[p] if isinstance(r, Partial)}
    assert len(held) > 1 and len({r["window_end"] for r in rows}) == len(held)
    assert red.partial_windows == {"interactions": len(held)}
    # the late partition's partial for that window is dropped, counted
    late = next(r for r in MAPPED[2] if isinstance(r, Partial))
    red.add(late)
    assert red.dropped_after_emit == 1


def test_an_idle_partition_does_not_hold_windows_back_and_is_counted():
    red = Reducer([CFG], partial_timeout=1e9)
    for p in (0, 1):
        for rec in MAPPED[p]:
            red.add(rec)
    red.add(Mark("events", 2, P, -(2**62), True))  # idle: no events at all
    rows = [r for _, o in red.emit(0.0) for r in o.results]
    assert rows and all(r.partial is None for r in rows)
    assert red.idle_advances["interactions"] > 0


@pytest.mark.parametrize("bad", [b"not json", b'{"v": 2, "type": "mark"}', b'{"v": 1, "type": "x"}',
                                 b'{"v": 1, "type": "mark", "topic": "t", "partition": 7, "of": 3, "through": 1, "idle": false}',
                                 b'{"v": 1, "type": "partial", "stream": "nope", "feature": "f"}',
                                 b'{"v": 1, "type": "mark", "topic": 1}'])
def test_malformed_records_are_value_errors(bad):
    with pytest.raises(ValueError):
        decode(bad, SUMMARIZERS)


def _map_then_idle(vals: list[bytes], p: int, of: int = P) -> list[Partial | Mark]:
    """One replica's mapper counting partition ``p``'s events, then quiet past ``idle_timeout``:
    its records in order (partials and marks, then the idle tick's open-window partials and mark)."""
    pipe = StreamPipeline(CFG)
    mapper = StreamMapper(CFG, pipe.summarizers)
    mapper.windows(("events", p))  # assigned
    recs: list[Partial | Mark] = []
    for i in range(0, len(vals), 37):
        prep = pipe.preparer.prepare(vals[i:i + 37])
        _, sent = mapper.count("events", of, prep.coded, np.full(len(prep.coded), p, dtype=np.int64),
                               {p: (i, i + len(prep.coded) - 1)}, now=0.0)
        recs.extend(sent)
    assert mapper.tick(0.0, {"events": of}) == []
    recs.extend(mapper.tick(CFG.window.idle_timeout + 1, {"events": of}))
    assert isinstance(recs[-1], Mark) and recs[-1].idle
    return recs


def test_a_partition_quiet_half_way_still_counts_in_its_last_window():
    # partition 2 delivers only the first half of its events, then goes idle: its last open
    # window is closed by the others' watermark with its events in it, as in one process
    parts = {p: EVENTS[p::P] for p in range(P)}
    parts[2] = parts[2][:len(parts[2]) // 2]
    evs = sorted((e for v in parts.values() for e in v), key=lambda e: json.loads(e)["ts"])
    low = min(max(json.loads(e)["ts"] for e in parts[p]) for p in (0, 1))
    expected = sorted((r for r in replay(CFG, evs) if r["window_end"] <= rfc3339(low)), key=key)
    quiet = _map_then_idle(parts[2], 2)
    assert any(isinstance(r, Partial) for r in quiet[-4:])  # the open window's summaries went out
    records = quiet + MAPPED[0] + MAPPED[1]
    red = Reducer([CFG], partial_timeout=1e9)
    rows = _run(records, now_step=True, reducer=red)
    assert rows == expected
    assert red.idle_advances["interactions"] > 0


def test_progress_is_kept_when_the_last_active_partitions_go_idle_in_the_same_batch():
    # partition 2 never gets an event; 0 and 1 report, then all three are idle before the
    # reducer emits anything: the windows 0 and 1 closed while active are emitted; their
    # open windows' partials (sent on going idle) wait for events, no timeout emits them
    red = Reducer([CFG], partial_timeout=5.0)
    records = [*_map_then_idle([], 2)]
    for p in (0, 1):
        records += _map_then_idle(EVENTS[p::2], p)
    rows = _run(records, now_step=False, reducer=red)
    assert rows == _expected(partitions=2)
    assert red.emit(1e9) == [] and red.emit(2e9) == []
    assert not red.partial_windows


def test_each_held_back_window_times_out_after_its_own_wait():
    red = Reducer([CFG], partial_timeout=30.0)
    red.add(Mark("events", 2, P, -(2**62), False))  # partition 2 known, never progressed
    recs = [r for p in (0, 1) for r in MAPPED[p]]
    windows = sorted({r.window for r in recs if isinstance(r, Partial)})
    early = [r for r in recs if not isinstance(r, Partial) or r.window <= windows[1]]
    for r in early:
        red.add(r)
    assert red.emit(0.0) == []
    for r in recs:
        red.add(r)
    assert red.emit(20.0) == []
    ends = {r.window_end for _, o in red.emit(30.0) for r in o.results}
    assert len(ends) == 2  # the two held back since 0
    assert red.emit(49.0) == []
    ends = {r.window_end for _, o in red.emit(50.0) for r in o.results}
    assert len(ends) == len(windows) - 2  # held back since 20
