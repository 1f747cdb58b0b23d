"""Per-user interest drift at scale: bytes per entity and events/s (issue 11: 1M users x 40 categories).

    python bench/entities.py                               # 1M users, 40 categories, 12M events over 2 days
    python bench/entities.py --users 100000 --events 1200000

Feeds :class:`driftmon.monitors.entities.EntityMonitor` the prepared batches the decoder would
give it (entity key strings, their XXH3-64 hashes, category strings; ``--batch`` events each),
so the figures are the monitor's own: the JSON decode in front of it is measured by
``bench/pipeline.py`` (``--decode`` here prints the decoder's extra cost of the two entity
columns on a JSON sample, side by side with the same stream without ``entities``).

Traffic: every event's user is uniform over ``--users`` (so all of them are active), its
category is the user's favourite plus a Zipf(2) step (mod ``--categories``), 1% of the users
move their favourite at the start of the second day; event time runs over two days, so the
day-0 windows of all users close in one go in the middle of the run (that close, the O(users x
categories) step, is timed on its own).  Prints: events/s over the whole feed, the close, the
state size (``state_bytes``: the count matrices, times, keys and hash index) per entity, the
process RSS growth, and the checkpoint (snapshot) time and size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from driftmon.config import EntitiesConfig, parse_config  # noqa: E402
from driftmon.decode.prepare import CodedBatch, EntityColumns, PreparedBatch, Preparer  # noqa: E402
from driftmon.monitors.entities import EntityMonitor  # noqa: E402
from driftmon.summaries.hashing import stable_hash  # noqa: E402

DAY = 86400.0
START = 1_700_006_400.0  # a multiple of a day


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def traffic(users: int, categories: int, events: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, size=events, dtype=np.int64)
    ts = START + np.sort(rng.random(events)) * 2 * DAY
    fav = rng.integers(0, categories, size=users)
    movers = rng.random(users) < 0.01
    day1 = ts >= START + DAY
    shift = np.where(day1 & movers[user], categories // 2, 0)
    cat = (fav[user] + shift + np.minimum(rng.zipf(2.0, size=events) - 1, categories - 1)) % categories
    return ts, user, cat.astype(np.int64)


def batches(ts, user, cat, keys, hashes, labels, size):
    for lo in range(0, ts.size, size):
        sl = slice(lo, lo + size)
        u, c = user[sl], cat[sl]
        yield PreparedBatch(u.size, np.arange(u.size), [], CodedBatch(ts[sl], None, []), (),
                            EntityColumns(keys[u].tolist(), hashes[u], labels[c].tolist()))


def decode_cost(n: int = 200_000, repeats: int = 3) -> dict[str, float]:
    """ns/event of Preparer.prepare on the same JSON with and without ``entities`` (best of ``repeats``)."""
    import orjson

    rng = np.random.default_rng(2)
    values = [orjson.dumps({"ts": START + i, "user_id": f"user-{int(u)}", "item": {"category": f"c{int(c)}"}})
              for i, (u, c) in enumerate(zip(rng.integers(0, 10**6, n), rng.integers(0, 40, n)))]
    base = {"name": "s", "timestamp": {"max_future_skew": None},
            "features": [{"name": "c", "field": "item.category", "type": "categorical", "top_k": 40}]}
    out = {}
    for label, extra in (("without", {}), ("with", {"entities": {"key": "user_id", "feature": "item.category",
                                                                 "window": {"size": "1d"}}})):
        prep = Preparer(parse_config({"streams": [{**base, **extra}]}).streams[0])
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for lo in range(0, n, 10_000):
                prep.prepare(values[lo:lo + 10_000])
            best = min(best, time.perf_counter() - t)
        out[label] = best / n * 1e9
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--categories", type=int, default=40)
    ap.add_argument("--events", type=int, default=12_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--min-events", type=int, default=5)
    ap.add_argument("--decode", action="store_true", help="also time the decoder with and without entities")
    args = ap.parse_args()

    ts, user, cat = traffic(args.users, args.categories, args.events)
    keys = np.array([f"user-{i}" for i in range(args.users)], dtype=object)
    hashes = stable_hash(keys.tolist())
    labels = np.array([f"category-{j:02d}" for j in range(args.categories)], dtype=object)
    cfg = EntitiesConfig(key="user_id", feature="category", window_size=DAY, min_events=args.min_events,
                         max_entities=max(args.users, 1))
    mon = EntityMonitor("bench", cfg)
    rss0 = rss_mib()
    feed = close = cpu = 0.0
    shifts = compared = 0
    n_batches = 0
    for b in batches(ts, user, cat, keys, hashes, labels, args.batch):
        t, c = time.perf_counter(), time.process_time()
        step = mon.feed(b)
        dt = time.perf_counter() - t
        cpu += time.process_time() - c
        feed += dt
        if step.windows_closed:
            close += dt
        shifts += step.shifts
        compared += step.compared
        n_batches += 1
    t = time.perf_counter()
    step = mon.flush()
    close += time.perf_counter() - t
    shifts += step.shifts
    compared += step.compared
    rss1 = rss_mib()
    t = time.perf_counter()
    snap = mon.snapshot()
    body = json.dumps(snap)
    snap_s = time.perf_counter() - t
    t = time.perf_counter()
    EntityMonitor("bench", cfg).restore(json.loads(body))
    restore_s = time.perf_counter() - t
    tracked = mon.tracked
    state = mon.state_bytes()
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpu(s), Python {platform.python_version()}, "
                   f"numpy {np.__version__}",
        "users": args.users, "categories": args.categories, "events": args.events, "batch": args.batch,
        "tracked": tracked, "columns": mon.k,
        "events_per_s": round(args.events / feed), "feed_s": round(feed, 2),
        "events_per_cpu_s": round(args.events / cpu), "feed_cpu_s": round(cpu, 2),
        "window_close_s": round(close, 2), "compared": compared, "shifts": shifts,
        "state_bytes": state, "bytes_per_entity": round(state / max(tracked, 1), 1),
        "state_mb": round(state / 1e6, 1), "rss_growth_mib": round(rss1 - rss0, 1),
        "checkpoint_bytes": len(body), "snapshot_s": round(snap_s, 2), "restore_s": round(restore_s, 2),
    }
    if args.decode:
        report["decode_ns_per_event"] = {k: round(v) for k, v in decode_cost().items()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
