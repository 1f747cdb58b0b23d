"""Per-entity interest drift under scale-out: shuffle size and stage costs (docs/scaling.md).

    python bench/scale_entities.py                          # 50k users, 20 categories, 3 days
    python bench/scale_entities.py --users 200000 --partitions 12 --shards 6

Counts the synthetic population of :mod:`driftmon.testing.interests` (time-ordered, round-robin
over ``--partitions`` source partitions) with one :class:`EntityMapper` per partition, sends
nothing (the records are encoded to measure them), and merges each shard's records with an
:class:`EntityShard`, as the replicas do; side by side with one process's
:class:`EntityMonitor` over the same prepared batches.  Prints: entity partial bytes per
(entity, category) cell and per event of the closed windows, the largest record, the map and
reduce CPU per million events against one process's, the changelog state bytes per entity of
a shard, and whether the records equal one process's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from driftmon.config import parse_config  # noqa: E402
from driftmon.decode.prepare import EntityColumns  # noqa: E402
from driftmon.monitors.entities import EntityMonitor  # noqa: E402
from driftmon.scale.entity_mapper import EntityMapper  # noqa: E402
from driftmon.scale.entity_records import EntityPartial  # noqa: E402
from driftmon.scale.entity_reducer import EntityShard  # noqa: E402
from driftmon.scale.records import encode  # noqa: E402
from driftmon.testing.interests import population, prepared_batches  # noqa: E402

DAY = 86400.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--categories", type=int, default=20)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5000)
    a = ap.parse_args()
    pop = population(users=a.users, categories=a.categories, windows=a.days, switch_share=0.01, min_rate=5,
                     max_rate=300, seed=1)
    cats = [f"c{j:02d}" for j in range(a.categories)]
    cfg = parse_config({"streams": [{
        "name": "s", "topic": "events", "timestamp": {"field": "ts", "unit": "s"}, "window": {"size": DAY},
        "features": [{"name": "c", "field": "category", "type": "categorical", "categories": cats}],
        "entities": {"key": "user_id", "feature": "category", "window": {"size": DAY}, "categories": cats}}],
    }).streams[0]
    assert cfg.entities is not None
    whole = next(prepared_batches(pop.events, "user_id", "category", 10**9))
    ent = whole.entities
    assert ent is not None
    n = len(whole.coded)

    t0 = time.process_time()
    mon = EntityMonitor("s", cfg.entities)
    expected = []
    for b in prepared_batches(pop.events, "user_id", "category", a.batch):
        expected += [r.to_dict() for r in mon.feed(b).records]
    one = time.process_time() - t0

    batches: dict[int, list] = {}  # each partition's batches, cut before the clock starts
    for p in range(a.partitions):
        idx = np.arange(p, n, a.partitions)
        batches[p] = [(whole.coded.ts[sel], EntityColumns([ent.keys[i] for i in sel.tolist()], ent.hashes[sel],
                                                           [ent.values[i] for i in sel.tolist()]))
                      for sel in (idx[lo:lo + a.batch] for lo in range(0, idx.size, a.batch))]
    mapped: dict[int, list] = {}
    t0 = time.process_time()
    for p in range(a.partitions):
        m = EntityMapper(cfg)
        recs: list = []
        for ts, cols in batches[p]:
            recs += m.count("events", a.partitions, a.shards, ts, cols, np.full(ts.size, p), {})
        mapped[p] = recs
    map_cpu = time.process_time() - t0
    partials = [r for recs in mapped.values() for r in recs if isinstance(r, EntityPartial)]
    sizes = [len(encode(r)) for r in partials]
    cells = sum(r.rows.size for r in partials)
    closed = int(sum(r.totals.sum() for r in partials if r.shard == 0 and r.part == 0))  # (every shard gets them)

    got = []
    t0 = time.process_time()
    states = []
    for s in range(a.shards):
        red = EntityShard([cfg], partial_timeout=1e9)
        for p in range(a.partitions):
            for r in mapped[p]:
                if not isinstance(r, EntityPartial) or r.shard == s:
                    red.add(r)
        got += [r.to_dict() for _, o in red.emit(0.0) for r in o.records]
        states.append((len(json.dumps(red.snapshot())), red.monitors["s"].tracked))
    reduce_cpu = time.process_time() - t0
    key = lambda r: (r["window_end"], r["entity"])  # noqa: E731
    print(f"events {n:,} ({a.users:,} users, {a.categories} categories, {a.days} days), "
          f"{a.partitions} partitions x {a.shards} shards")
    print(f"entity partials: {len(partials)} records, {sum(sizes):,} bytes, largest {max(sizes):,}; "
          f"{sum(sizes) / cells:.1f} bytes/cell, {sum(sizes) / closed:.2f} bytes/event of the closed windows")
    print(f"CPU per 1M events: one process {one / n * 1e6:.2f} s; map {map_cpu / n * 1e6:.2f} s; "
          f"reduce {reduce_cpu / n * 1e6:.2f} s")
    print("changelog state per shard: " + ", ".join(f"{b / max(t, 1):.0f} bytes/entity ({t:,} entities)"
                                                    for b, t in states))
    print(f"records equal one process's: {sorted(got, key=key) == sorted(expected, key=key)} ({len(expected)})")


if __name__ == "__main__":
    main()
