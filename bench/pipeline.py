"""The in-process pipeline alone: decode only, and decode + count + detect.

    python bench/pipeline.py [--events 300000] [--batch 5000] [--cluster-by user_id]

Synthetic interactions (``driftmon.testing.synth``, a drift episode) through the
``interactions`` stream of ``config/driftmon.yaml`` as shipped, with the GC settings
``driftmon run`` applies; best of 3 runs of each loop, side by side in one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftmon.config import load_config  # noqa: E402
from driftmon.decode.events import Decoder  # noqa: E402
from driftmon.pipeline import StreamPipeline  # noqa: E402
from driftmon.service.process import tune_gc  # noqa: E402
from driftmon.testing import synth  # noqa: E402


def best(fn, repeats: int = 3) -> float:
    out = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--cluster-by", default=None, help="also time the stream with streams[].cluster_by: FIELD")
    args = ap.parse_args(argv)
    stream = load_config(str(ROOT / "config" / "driftmon.yaml"), {}).streams[0]
    n, b = args.events, args.batch
    start = 1.7e9
    events = list(synth.encode(synth.interactions(n, start=start, rate=1000.0,
                                                  episode=synth.Episode(start + 100, start + 200))))
    tune_gc()
    decoder = Decoder(stream, clock=lambda: 2e9)

    def decode() -> None:
        for i in range(0, n, b):
            decoder.decode(events[i:i + b])

    def pipeline(cfg=stream) -> None:
        pipe = StreamPipeline(cfg, clock=lambda: 2e9)
        for i in range(0, n, b):
            pipe.process(events[i:i + b])
        pipe.flush()

    d, p = best(decode), best(pipeline)
    print(f"{n:,} events, batches of {b:,}: decode only {n / d:,.0f} ev/s ({d / n * 1e9:,.0f} ns/event); "
          f"decode + count + detect {n / p:,.0f} ev/s ({p / n * 1e9:,.0f} ns/event)")
    if args.cluster_by:
        clustered = dataclasses.replace(stream, cluster_by=args.cluster_by)
        c = best(lambda: pipeline(clustered))
        print(f"with cluster_by: {args.cluster_by}: {n / c:,.0f} ev/s ({c / n * 1e9:,.0f} ns/event), "
              f"{p / c:.2f}x the rate without")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
