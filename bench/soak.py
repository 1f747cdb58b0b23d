"""Soak: millions of hostile events through the pipeline; memory must stay flat.

    python bench/soak.py --events 10000000

Feeds N events through :class:`driftmon.pipeline.StreamPipeline` exactly as
the daemon does (batches of ``--batch`` raw JSON values with partition ids and
processing time; every result serialized as the results sink would), in
process, no Kafka.  Event time advances 1000 events/s, so 5-minute windows
open and close all along.  The stream is hostile on purpose:

* a ``top_k: 200`` feature whose value is distinct for *every* event (N
  distinct category values), a declared categorical feature with junk values
  (numbers, booleans, 10 kB strings, unicode, objects), a numeric feature with
  1e308, strings, nulls;
* a segment field with a new value every 1000th event (``max_segments: 10``);
* ~2% rejected records: invalid JSON, random bytes, 5000-deep nesting,
  non-object JSON, missing/string/far-future/huge timestamps;
* ~0.2% events 2 hours old (late) and ~0.1% from 1970 (late).

RSS is read from ``/proc/self/status`` (VmRSS; no psutil) at start, after the
warm-up (the first ``--warmup`` events: first windows, caches, allocator
pools), every ``--every`` events and at the end.  Verdict: the largest RSS
after the warm-up is within ``--tolerance`` (10%) of the RSS at the end of the
warm-up; exit status 1 otherwise.  Also checks that the open vocabulary's
summaries never hold more than ``max_values`` exact values (the rest go to
hashed tail buckets) and no window more than ``max_segments`` segments, and that every event was counted,
rejected with a reason, or late.
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

from driftmon.config import parse_config  # noqa: E402
from driftmon.detect.result import json_line  # noqa: E402
from driftmon.pipeline import StreamPipeline  # noqa: E402

START = 1_600_000_000.0
RATE = 1000.0  # events per second of event time
TOP_K = 200
MAX_VALUES = 5000  # the default cap of an open vocabulary's exact values per summary
MAX_SEGMENTS = 10
CATEGORIES = ("books", "music", "video", "news", "sports", "gaming", "food", "travel")
PLATFORMS = ("ios", "android", "web")

CONFIG = {
    "streams": [{
        "name": "soak", "topic": "soak",
        "timestamp": {"field": "ts", "unit": "s", "max_future_skew": "1h"},
        "window": {"size": "5m", "slide": "5m", "allowed_lateness": "30s"},
        "segment_by": ["platform"], "max_segments": MAX_SEGMENTS,
        "features": [
            {"name": "item_category", "field": "item.category", "type": "categorical", "categories": list(CATEGORIES)},
            {"name": "item_id", "field": "item.id", "type": "categorical", "top_k": TOP_K,
             "max_values": MAX_VALUES},
            {"name": "dwell", "field": "dwell_ms", "type": "numeric", "bins": "quantile", "num_bins": 20},
        ],
    }],
    "detector": {"min_count": 500, "permutations": 199},
}


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith((b"VmRSS:", b"VmHWM:")):
                key, value = line.split(b":", 1)
                out[key] = int(value.split()[0])
    return out[b"VmRSS"], out[b"VmHWM"]


def _hostile_values(i: int) -> list[bytes]:
    """Rejected records; ``i`` makes each one distinct."""
    return [
        b"not json %d" % i,
        os.urandom(48),
        b"[" * 5000 + b"]" * 5000,
        b"[%d, 2, 3]" % i,
        b'"just a string %d"' % i,
        b'{"item": {"id": "x%d", "category": "books"}}' % i,  # missing ts
        b'{"ts": "yesterday %d", "item": {"category": "books"}}' % i,
        b'{"ts": 1e300, "item": {"category": "books"}, "n": %d}' % i,  # beyond year 2200
        b'{"ts": %d, "item": {"category": "books"}}' % (int(time.time()) + 10_000_000 + i),  # far future
        b'{"ts": 1600000000, "item": {"category": {"nested": %d}}}' % i,  # object as a category
        b'{"ts": 1600000000, "dwell_ms": "long %d"}' % i,
        b"\xff\xfe\x00%d" % i,
        b'{"ts": NaN, "n": %d}' % i,
    ]


def make_batch(i0: int, n: int, rng: np.random.Generator) -> list[bytes]:
    """Events ``i0 .. i0+n-1``: mostly plausible, every item id distinct, with junk mixed in."""
    idx = np.arange(i0, i0 + n)
    ts = START + idx / RATE + rng.uniform(0.0, 0.5, n)
    cat = rng.integers(0, len(CATEGORIES), n)
    plat = rng.integers(0, len(PLATFORMS), n)
    dwell = np.round(rng.lognormal(8.0, 0.7, n), 1)
    u = rng.random(n)
    fmt = b'{"ts":%.3f,"user_id":"u%d","item":{"id":"id%d","category":"%s"},"platform":"%s","dwell_ms":%.1f}'
    out = [fmt % (t, i % 100_000, i, CATEGORIES[c].encode(), PLATFORMS[p].encode(), d)
           for t, i, c, p, d in zip(ts.tolist(), idx.tolist(), cat.tolist(), plat.tolist(), dwell.tolist())]
    huge = b"x" * 10_000
    for j in np.flatnonzero(u < 0.035).tolist():
        i, t, v = int(idx[j]), float(ts[j]), float(u[j])
        if v < 0.02:  # rejected
            bad = _hostile_values(i)
            out[j] = bad[i % len(bad)]
        elif v < 0.022:  # two hours old: late
            out[j] = b'{"ts":%.3f,"item":{"id":"old%d","category":"books"},"platform":"web"}' % (t - 7200, i)
        elif v < 0.023:  # 1970: late
            out[j] = b'{"ts":1.5,"item":{"id":"epoch%d","category":"music"},"platform":"ios"}' % i
        elif v < 0.026:  # junk feature values, still valid events
            junk = (b"12345", b"true", b'"' + huge + b'"', b'"\\u00e9\\u2028\\ud83d\\ude00 %d"' % i, b"null", b"-0.5")
            out[j] = (b'{"ts":%.3f,"item":{"id":%s,"category":%s},"platform":"web","dwell_ms":%s}'
                      % (t, junk[i % 6], junk[(i + 1) % 6], (b"1e308", b"null", b"-1e308", b"0")[i % 4]))
        elif v < 0.035 and i % 1000 < 9:  # a new segment value every ~1000 events: capped
            out[j] = b'{"ts":%.3f,"item":{"id":"id%d","category":"food"},"platform":"device-%d"}' % (t, i, i)
    return out


def run(n: int, batch: int, every: int, warmup: int, seed: int) -> dict:
    cfg = parse_config(CONFIG)
    pipe = StreamPipeline(cfg.streams[0])
    rng = np.random.default_rng(seed)
    parts = np.zeros(batch, dtype=np.int64)
    rows = bytes_out = windows = in_windows = 0
    rss0, _ = rss_kib()
    samples: list[tuple[int, float, int]] = [(0, 0.0, rss0)]
    print(f"{'events':>12} {'seconds':>8} {'RSS MiB':>8} {'events/s':>10}", flush=True)
    print(f"{0:>12,} {0.0:>8.1f} {rss0 / 1024:>8.1f}", flush=True)
    t0 = time.perf_counter()
    done = 0
    next_report = every
    warm_rss = None
    while done < n:
        m = min(batch, n - done)
        values = make_batch(done, m, rng)
        out = pipe.process(values, parts[:m], time.monotonic())
        for r in out.results:  # what the results sink does with each one
            bytes_out += len(json_line(r.to_dict()))
        rows += len(out.results)
        in_windows += sum(r.n_current for r in out.results if r.segment is None and r.feature == "item_category")
        windows += out.windows_closed
        done += m
        if warm_rss is None and done >= warmup:
            warm_rss = rss_kib()[0]
            samples.append((done, time.perf_counter() - t0, warm_rss))
            print(f"{done:>12,} {samples[-1][1]:>8.1f} {warm_rss / 1024:>8.1f} {done / samples[-1][1]:>10,.0f}"
                  "  <- end of warm-up", flush=True)
        if done >= next_report or done == n:
            next_report += every
            now = time.perf_counter() - t0
            rss = rss_kib()[0]
            samples.append((done, now, rss))
            print(f"{done:>12,} {now:>8.1f} {rss / 1024:>8.1f} {done / now:>10,.0f}", flush=True)
            # Caps hold all along, not only at the end.
            caps = caps_now(pipe)
            assert caps["values"] <= MAX_VALUES and caps["segments"] <= MAX_SEGMENTS + 1, caps
    elapsed = time.perf_counter() - t0
    end_rss, hwm = rss_kib()
    after = [r for d, _, r in samples if d >= warmup] or [end_rss]
    warm_rss = warm_rss or after[0]
    growth = (max(after) - warm_rss) / warm_rss
    accepted = pipe.events - sum(pipe.rejected.values())
    still_open = sum(int(parts[0].total) for st in pipe.windows.open.values() for parts in st.segments.values())
    caps = caps_now(pipe)
    summary = {
        "events": n, "seconds": round(elapsed, 1), "events_per_s": round(n / elapsed),
        "rss_start_mib": round(rss0 / 1024, 1), "rss_after_warmup_mib": round(warm_rss / 1024, 1),
        "rss_end_mib": round(end_rss / 1024, 1), "rss_max_after_warmup_mib": round(max(after) / 1024, 1),
        "rss_peak_hwm_mib": round(hwm / 1024, 1), "growth_after_warmup": round(growth, 4),
        "accepted": accepted, "rejected": dict(sorted(pipe.rejected.items())), "late": pipe.late,
        "windows_closed": windows, "in_closed_windows": in_windows, "in_open_windows": still_open,
        "results": rows, "result_bytes": bytes_out,
        "max_exact_values": caps["values"], "max_values": MAX_VALUES, "top_k": TOP_K,
        "segments": caps["segments"], "max_segments": MAX_SEGMENTS,
        "python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
    }
    # Every event is in exactly one place: a closed window, an open window, late, or rejected with a reason.
    assert pipe.events == n
    assert in_windows + still_open + pipe.late == accepted, (in_windows, still_open, pipe.late, accepted)
    return summary


def caps_now(pipe: StreamPipeline) -> dict[str, int]:
    """The largest open window's segment count and item_id summary size, and the detectors' references."""
    states = list(pipe.windows.open.values())
    summaries = [parts[1] for st in states for parts in st.segments.values()]
    summaries += [s for (f, _), d in pipe.detectors.items() if f == "item_id" for _, s in d.history]
    return {"segments": max((len(st.segments) for st in states), default=0),
            "values": max((int(s.keys.size) for s in summaries), default=0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=5000, help="events per pipeline call (the daemon's max_poll_records)")
    ap.add_argument("--every", type=int, default=None, help="report RSS every N events (default: events/20)")
    ap.add_argument("--warmup", type=int, default=None, help="events before the baseline RSS (default: events/10)")
    ap.add_argument("--tolerance", type=float, default=0.10, help="allowed RSS growth after warm-up")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    every = args.every or max(args.batch, args.events // 20)
    warmup = args.warmup or max(args.batch, args.events // 10)
    s = run(args.events, args.batch, every, warmup, args.seed)
    ok = s["growth_after_warmup"] <= args.tolerance
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"\n{s['events']:,} events in {s['seconds']} s ({s['events_per_s']:,}/s); "
              f"accepted {s['accepted']:,} (late {s['late']:,}), rejected {s['rejected']}")
        print(f"RSS MiB: start {s['rss_start_mib']}, after warm-up {s['rss_after_warmup_mib']}, "
              f"max after warm-up {s['rss_max_after_warmup_mib']}, end {s['rss_end_mib']} (peak {s['rss_peak_hwm_mib']})")
        print(f"exact values per item_id summary at most {s['max_exact_values']} (cap {s['max_values']}) "
              f"from {s['events']:,} distinct ids; "
              f"segments {s['segments']} (cap {s['max_segments']} + __other__); {s['windows_closed']} windows, "
              f"{s['results']:,} results")
    print(f"{'OK' if ok else 'FAIL'}: RSS growth after warm-up {s['growth_after_warmup']:+.1%} "
          f"(tolerance {args.tolerance:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
