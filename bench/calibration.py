"""The calibration monitor beside the per-stream pipelines of the same records.

    python bench/calibration.py [--predictions 200000] [--batch 10000]

``synth.calibration_traffic`` (1000 predictions/s of event time, every outcome sent,
UUID request ids, max_delay 60 s) replayed as ``replay --input`` does: batches of
predictions and the outcomes up to the same time.  Side by side in one process, best of
3: (a) the predictions and outcomes streams' own pipelines (decode, count, detect a
score and a label feature), (b) the calibration monitor (decode id + probability/label,
join, score).  Also the memory of buffered predictions, per entry.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftmon.config import parse_config  # noqa: E402
from driftmon.monitors.calibration import CalibrationMonitor  # noqa: E402
from driftmon.pipeline import StreamPipeline  # noqa: E402
from driftmon.service.process import tune_gc  # noqa: E402
from driftmon.testing import synth  # noqa: E402

DOC = {
    "streams": [
        {"name": "p", "window": {"size": 60},
         "features": [{"name": "s", "field": "score", "type": "numeric", "edges": [i / 10 for i in range(11)]}]},
        {"name": "o", "window": {"size": 60},
         "features": [{"name": "c", "field": "clicked", "type": "categorical", "categories": ["true", "false"]}]},
    ],
    "calibration": [{"name": "m", "predictions": {"stream": "p", "id": "request_id", "probability": "score"},
                     "outcomes": {"stream": "o", "id": "request_id", "label": "clicked"}, "max_delay": "60s"}],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--predictions", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()
    tune_gc()
    cfg = parse_config(DOC)
    n, batch = args.predictions, args.batch
    preds, outs = synth.calibration_traffic(n, 1.7e9, rate=1000.0, seed=1, max_delay=60.0)
    ids = {e["request_id"]: str(uuid.UUID(int=i + 1)) for i, e in enumerate(preds)}
    for e in preds + outs:
        e["request_id"] = ids[e["request_id"]]
    p_raw, o_raw = [orjson.dumps(e) for e in preds], [orjson.dumps(e) for e in outs]
    chunks = []
    oi = 0
    for i in range(0, n, batch):
        tmax = preds[min(i + batch, n) - 1]["ts"]
        j = oi
        while j < len(outs) and outs[j]["ts"] <= tmax:
            j += 1
        chunks.append((p_raw[i:i + batch], o_raw[oi:j]))
        oi = j
    chunks.append(([], o_raw[oi:]))
    records = n + len(outs)

    def pipelines() -> None:
        a, b = StreamPipeline(cfg.stream("p")), StreamPipeline(cfg.stream("o"))
        for p, o in chunks:
            if p:
                a.process(p)
            if o:
                b.process(o)
        a.flush()
        b.flush()

    def monitor() -> None:
        m = CalibrationMonitor(cfg.calibration[0], cfg, merged_input=True)
        for p, o in chunks:
            if p:
                m.feed("p", m.prepare("p", p))
            if o:
                m.feed("o", m.prepare("o", o))
            m.advance()
        m.flush()

    best = {"pipelines": float("inf"), "monitor": float("inf")}
    for _ in range(3):
        for name, fn in (("pipelines", pipelines), ("monitor", monitor)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    for name, dt in best.items():
        print(f"{name:10} {records / dt:12,.0f} records/s")
    print(f"ratio monitor / pipelines: {best['pipelines'] / best['monitor']:.2f}")

    m = CalibrationMonitor(cfg.calibration[0], cfg, merged_input=True)
    tracemalloc.start()
    m.feed("p", m.prepare("p", p_raw[:100_000]))
    m.prepare("p", [])  # (nothing else held)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"buffered predictions: {len(m.pending)}, {size / len(m.pending):.0f} bytes each (36-character ids)")


if __name__ == "__main__":
    main()
