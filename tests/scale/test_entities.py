"""Per-entity interest drift under scale-out: per-partition entity counts (mapper) merged per
entity shard (reducer) in any order, with repeats and restarts, give the ``interest_shift``
records of one process's monitor over the same events."""

from __future__ import annotations

import json
import random
from datetime import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftmon.config import parse_config
from driftmon.decode.prepare import CodedBatch, EntityColumns, PreparedBatch
from driftmon.detect.result import rfc3339
from driftmon.monitors.entities import EntityMonitor
from driftmon.scale.entity_mapper import EntityMapper
from driftmon.scale.entity_records import EntityMark, EntityPartial
from driftmon.scale.entity_reducer import EntityShard, ShardReducer
from driftmon.scale.records import decode, encode
from driftmon.testing.interests import population, prepared_batches
from tests.scale.helpers import config_doc

DAY = 86400.0
CATS = [f"c{j:02d}" for j in range(8)]
POP = population(users=800, categories=8, windows=5, switch_window=2, switch_share=0.4, min_rate=3, max_rate=80,
                 seed=3)
ALL = next(prepared_batches(POP.events, "user_id", "category", 10**9))


def stream_cfg(**entities):
    doc = config_doc()
    doc["streams"][0]["entities"] = {"key": "user_id", "feature": "category", "window": {"size": DAY},
                                     "min_events": 12, "max_p_value": 0.01, "categories": CATS, **entities}
    return parse_config(doc).streams[0]


CFG = stream_cfg()


def sub(b: PreparedBatch, sel: np.ndarray) -> tuple[np.ndarray, EntityColumns]:
    e = b.entities
    assert e is not None
    idx = sel.tolist()
    return b.coded.ts[sel], EntityColumns([e.keys[i] for i in idx], e.hashes[sel], [e.values[i] for i in idx])


def one_process(cfg=CFG, batch: int = 500, whole: PreparedBatch = ALL) -> list[dict]:
    """The monitor over the whole time-ordered stream, without the final flush (the replicas
    too leave the last window open)."""
    assert cfg.entities is not None
    mon = EntityMonitor(cfg.name, cfg.entities)
    out = []
    n = len(whole.coded)
    for lo in range(0, n, batch):
        sel = np.arange(lo, min(lo + batch, n))
        ts, cols = sub(whole, sel)
        b = PreparedBatch(sel.size, np.arange(sel.size), [], CodedBatch(ts, None, []), (), cols)
        out += [r.to_dict() for r in mon.feed(b).records]
    return out


def map_partitions(cfg, partitions: int, shards: int, batch: int = 97, restart_at: int | None = None,
                   whole: PreparedBatch = ALL) -> dict[int, list[EntityPartial | EntityMark]]:
    """Events round-robin over ``partitions``; one mapper per partition (as replicas would), fed
    batches of ``batch`` events; with ``restart_at``, each mapper is rebuilt from a JSON round
    trip of its snapshot after that many batches (a partition moving to another replica)."""
    out: dict[int, list[EntityPartial | EntityMark]] = {}
    n = len(whole.coded)
    for p in range(partitions):
        mapper = EntityMapper(cfg)
        idx = np.arange(p, n, partitions)
        recs: list[EntityPartial | EntityMark] = []
        for j, lo in enumerate(range(0, idx.size, batch)):
            if j == restart_at:
                snap = json.loads(json.dumps(mapper.snapshot(("events", p))))
                mapper = EntityMapper(cfg)
                mapper.restore(("events", p), snap)
            sel = idx[lo:lo + batch]
            ts, cols = sub(whole, sel)
            recs += mapper.count("events", partitions, shards, ts, cols, np.full(sel.size, p),
                                 {p: (lo, lo + sel.size - 1)})
        out[p] = recs
    return out


def reduce(mapped: dict[int, list], shards: int, rnd: random.Random | None = None, repeats: int = 0,
           restart: bool = False) -> list[dict]:
    """Each shard's reducer fed its records (its partials, every mark) through the wire format,
    sources interleaved at random (each source's own records in order), ``repeats`` records
    re-sent later; with ``restart``, the reducer is rebuilt from its snapshot half way."""
    rows: list[dict] = []
    for s in range(shards):
        queues = [[r for r in mapped[p] if isinstance(r, EntityMark) or r.shard == s] for p in sorted(mapped)]
        merged: list = []
        while any(queues):
            q = rnd.choice([q for q in queues if q]) if rnd else next(q for q in queues if q)
            merged.append(q.pop(0))
        for _ in range(repeats):
            assert rnd is not None
            i = rnd.randrange(len(merged))
            merged.insert(rnd.randrange(i, len(merged)) + 1, merged[i])
        red = EntityShard([CFG], partial_timeout=1e9)
        for i, rec in enumerate(merged):
            if restart and i == len(merged) // 2:
                snap = json.loads(json.dumps(red.snapshot()))
                red = EntityShard([CFG], partial_timeout=1e9)
                red.restore(snap)
            red.add(decode(encode(rec), {}))  # type: ignore[arg-type]
            rows += [r.to_dict() for _, o in red.emit(float(i)) for r in o.records]
        rows += [r.to_dict() for _, o in red.emit(1e6) for r in o.records]
    return sorted(rows, key=lambda r: (r["window_end"], r["entity"]))


EXPECTED = one_process()


def test_the_expected_records_are_a_real_test():
    assert len(EXPECTED) >= 40
    assert len({r["window_end"] for r in EXPECTED}) >= 2  # more than one window closed with shifts
    # light users carried over into the next window before they had min_events, too
    assert any(_t(r["window_end"]) - _t(r["window_start"]) > DAY for r in EXPECTED)


def _t(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("partitions,shards", [(1, 1), (3, 1), (4, 3), (6, 5)])
def test_mapped_and_reduced_in_order_equals_one_process(partitions, shards):
    mapped = map_partitions(CFG, partitions, shards)
    partials = [r for recs in mapped.values() for r in recs if isinstance(r, EntityPartial)]
    assert {r.shard for r in partials} == set(range(shards))  # every shard hears of every window (totals)
    assert reduce(mapped, shards) == EXPECTED


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(0, 30), st.sampled_from([(2, 2), (3, 3), (5, 2)]))
def test_any_interleaving_with_repeats_equals_one_process(rnd: random.Random, repeats: int, layout):
    partitions, shards = layout
    assert reduce(MAPPED[layout], shards, rnd, repeats) == EXPECTED


MAPPED = {layout: map_partitions(CFG, *layout) for layout in [(2, 2), (3, 3), (5, 2)]}


def test_mapper_and_reducer_restored_from_their_snapshots_mid_stream_equal_one_process():
    mapped = map_partitions(CFG, 3, 2, restart_at=7)
    assert reduce(mapped, 2, random.Random(5), repeats=10, restart=True) == EXPECTED


def test_batching_does_not_matter():
    assert reduce(map_partitions(CFG, 3, 2, batch=1000), 2) == reduce(map_partitions(CFG, 3, 2, batch=13), 2)


def test_a_partial_after_its_window_was_closed_is_dropped_and_counted():
    mapped = map_partitions(CFG, 2, 1)
    red = ShardReducer([CFG], partial_timeout=1e9)
    for p in (0, 1):
        for rec in mapped[p]:
            red.add(rec)
    red.emit(0.0)
    assert red.complete_windows["interactions"] >= 3
    first = next(r for r in mapped[0] if isinstance(r, EntityPartial))
    red.add(first)
    assert red.dropped_after_emit == 1


def test_a_window_missing_a_partition_waits_then_times_out():
    mapped = map_partitions(CFG, 2, 1)
    red = EntityShard([CFG], partial_timeout=30.0)
    for rec in mapped[0]:
        red.add(rec)
    red.add(next(r for r in mapped[1] if isinstance(r, EntityMark)))  # partition 1: its first mark only
    assert red.emit(0.0) == [] and red.emit(29.0) == []
    reported = next(r for r in mapped[1] if isinstance(r, EntityMark)).through
    held = {r.window for r in mapped[0] if isinstance(r, EntityPartial) and r.window > reported}
    assert len(held) > 1
    # at the timeout every window held back since 0 goes out, not one per timeout
    out = red.emit(31.0)
    assert out and red.partial_windows["interactions"] == len(held)
    rows = [r.to_dict() for _, o in out for r in o.records]
    starts = {rfc3339(w * CFG.entities.window_size) for w in held}
    late = [r for r in rows if r["window_start"] in starts]
    assert late and all(r["partial"] and r["missing_partitions"] == ["events:1"] for r in late)
    assert all("partial" not in r for r in rows if r not in late)  # the windows both partitions closed


def test_entity_partials_are_compact():
    mapped = map_partitions(CFG, 3, 2)
    sizes = [len(encode(r)) for recs in mapped.values() for r in recs if isinstance(r, EntityPartial)]
    cells = sum(r.rows.size for recs in mapped.values() for r in recs if isinstance(r, EntityPartial))
    assert sum(sizes) / cells < 16  # bytes per (entity, category) cell, keys and totals included


def test_tracked_is_the_entities_of_every_shard_this_replica_reduces():
    mapped = map_partitions(CFG, 2, 2)
    reducers: dict[int, ShardReducer] = {}
    for s in (0, 1):
        reducers[s] = ShardReducer([CFG], partial_timeout=1e9, peers=reducers.values)
    steps = {}
    for s, red in reducers.items():
        for p in (0, 1):
            for rec in mapped[p]:
                if isinstance(rec, EntityMark) or rec.shard == s:
                    red.add(rec)
        steps[s] = [m for _, o in red.emit(0.0) for m in o.monitors]
    own = [red.entities.monitors["interactions"].tracked for red in reducers.values()]
    assert min(own) > 0
    assert steps[1][-1].tracked == sum(own)


def test_a_shard_partial_of_many_cells_is_cut_into_parts_that_merge_the_same(monkeypatch):
    monkeypatch.setattr("driftmon.scale.entity_mapper.CELLS_PER_RECORD", 50)
    mapped = map_partitions(CFG, 3, 2)
    partials = [r for recs in mapped.values() for r in recs if isinstance(r, EntityPartial)]
    assert max(r.parts for r in partials) > 3 and all(r.rows.size <= 50 + 8 for r in partials)
    assert reduce(mapped, 2, random.Random(3), repeats=20) == EXPECTED


def test_a_partition_whose_events_have_no_entity_key_does_not_hold_windows_back():
    """Its entity windows follow its watermark over all its events: marks move on, nothing is
    sent for windows without a valid event, and the records are one process's."""
    e = ALL.entities
    assert e is not None
    keys = [None if i % 3 == 1 else k for i, k in enumerate(e.keys)]  # partition 1 of 3: no key at all
    hashes = np.where(np.array([k is None for k in keys]), np.uint64(0), e.hashes)
    whole = PreparedBatch(ALL.n, ALL.accepted, [], ALL.coded, (), EntityColumns(keys, hashes, e.values))
    expected = one_process(whole=whole)
    mapped = map_partitions(CFG, 3, 2, whole=whole)
    assert not any(isinstance(r, EntityPartial) for r in mapped[1])
    assert max(r.through for r in mapped[1] if isinstance(r, EntityMark)) >= 3
    assert len(expected) >= 10 and reduce(mapped, 2) == expected


def test_an_assigned_partition_without_events_sends_idle_marks():
    mapper = EntityMapper(CFG)
    mapper.counts(("events", 4))  # (what an assignment does, through EntityStreamMapper.windows)
    assert mapper.tick(0.0, {"events": 6}, 2) == []
    marks = mapper.tick(CFG.window.idle_timeout + 1.0, {"events": 6}, 2)
    assert [(m.partition, m.idle) for m in marks] == [(4, True)]


def test_a_partial_with_other_categories_is_skipped_not_fatal():
    mapped = map_partitions(stream_cfg(categories=CATS[:5]), 2, 1)
    red = EntityShard([CFG], partial_timeout=1e9)
    for p in (0, 1):
        for rec in mapped[p]:
            red.add(rec)
    assert red.invalid > 0 and red.emit(0.0) == []


def test_progress_is_kept_when_the_last_active_partitions_go_idle_in_the_same_batch():
    # partition 2 of 3 never gets an event; 0 and 1 report, then all three are idle before the
    # reducer emits anything: the windows 0 and 1 closed are emitted, nothing times out
    mapped = map_partitions(CFG, 2, 1)
    red = EntityShard([CFG], partial_timeout=5.0)
    red.add(EntityMark(CFG.name, "events", 2, 3, -(2**62), True))
    for p in (0, 1):
        for rec in mapped[p]:
            red.add(decode(encode(rec), {}))  # type: ignore[arg-type]
    for p in (0, 1):
        through = max(r.through for r in mapped[p] if isinstance(r, EntityMark))
        red.add(EntityMark(CFG.name, "events", p, 3, through, True))
    rows = sorted((r.to_dict() for _, o in red.emit(0.0) for r in o.records),
                  key=lambda r: (r["window_end"], r["entity"]))
    assert rows and rows == sorted(EXPECTED, key=lambda r: (r["window_end"], r["entity"]))
    assert red.emit(1e9) == [] and not red.partial_windows


def test_a_partition_that_goes_quiet_sends_its_open_entity_window_before_its_idle_mark():
    """Partition 2 of 3 delivers nothing after mid-stream: its idle mark follows partials of the
    window it had open, so that window holds its events (as in one process), not only the others'."""
    n = len(ALL.coded)
    ts_all, part = ALL.coded.ts, np.arange(n) % 3
    keep = np.flatnonzero(~((part == 2) & (ts_all > float(np.quantile(ts_all, 0.5)))))
    e = ALL.entities
    assert e is not None
    whole = PreparedBatch(keep.size, np.arange(keep.size), [], CodedBatch(ts_all[keep], None, []), (),
                          EntityColumns([e.keys[i] for i in keep.tolist()], e.hashes[keep],
                                        [e.values[i] for i in keep.tolist()]))
    expected = one_process(whole=whole)
    mapped: dict[int, list[EntityPartial | EntityMark]] = {}
    for p in range(3):
        mapper = EntityMapper(CFG)
        idx = keep[part[keep] == p]
        recs: list[EntityPartial | EntityMark] = []
        for lo in range(0, idx.size, 97):
            sel = idx[lo:lo + 97]
            ts, cols = sub(ALL, sel)
            recs += mapper.count("events", 3, 2, ts, cols, np.full(sel.size, p), {p: (lo, lo + sel.size - 1)})
        recs += mapper.tick(0.0, {"events": 3}, 2)
        if p == 2:
            quiet = mapper.tick(CFG.window.idle_timeout + 1.0, {"events": 3}, 2)
            assert [type(r) for r in quiet] == [EntityPartial, EntityPartial, EntityMark] and quiet[-1].idle
            recs += quiet
        mapped[p] = recs
    assert len(expected) >= 20 and reduce(mapped, 2) == expected
