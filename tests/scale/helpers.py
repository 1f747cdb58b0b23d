"""Shared by the scale-out tests: a small stream, its events, per-partition mapping."""

from __future__ import annotations

import numpy as np

from driftmon.config import parse_config
from driftmon.pipeline import StreamPipeline
from driftmon.scale.mapper import StreamMapper
from driftmon.scale.records import Mark, Partial
from driftmon.testing import synth

START = 1_600_000_000.0
FEATURES = [
    {"name": "item_category", "field": "item.category", "type": "categorical", "categories": list(synth.CATEGORIES)},
    {"name": "item_id", "field": "item.id", "type": "categorical", "top_k": 5, "max_values": 40},
    {"name": "dwell", "field": "dwell_ms", "type": "numeric", "bins": "quantile", "num_bins": 6},
]


def config_doc(topic: str = "events", max_segments: int = 2, slide: float = 10.0, size: float = 10.0) -> dict:
    return {
        "streams": [{"name": "interactions", "topic": topic, "timestamp": {"field": "ts", "unit": "s"},
                     "window": {"size": size, "slide": slide, "allowed_lateness": 0},
                     "segment_by": ["platform"], "max_segments": max_segments, "features": FEATURES}],
        "detector": {"metric": "kl", "min_count": 10, "max_p_value": 0.05, "permutations": 99,
                     "thresholds": {"warn": 0.05, "critical": 0.2}},
    }


def stream_cfg(**kw):
    return parse_config(config_doc(**kw)).streams[0]


def events(n: int, seed: int, rate: float = 20.0) -> list[bytes]:
    ep = synth.Episode(START + n / rate / 3, START + n / rate * 2 / 3, strength=1.0)
    return list(synth.encode(synth.interactions(n, start=START, rate=rate, episode=ep, seed=seed)))


def map_partitions(cfg, evs: list[bytes], partitions: int, topic: str = "events",
                   batch: int = 37) -> dict[int, list[Partial | Mark]]:
    """Round-robin the time-ordered events over ``partitions`` partitions and run one
    mapper per partition (as separate replicas would); each partition's records in order."""
    out: dict[int, list[Partial | Mark]] = {}
    for p in range(partitions):
        pipe = StreamPipeline(cfg)
        mapper = StreamMapper(cfg, pipe.summarizers)
        vals = evs[p::partitions]
        recs: list[Partial | Mark] = []
        for i in range(0, len(vals), batch):
            prep = pipe.preparer.prepare(vals[i:i + batch])
            late, sent = mapper.count(topic, partitions, prep.coded, np.full(len(prep.coded), p, dtype=np.int64),
                                      {p: (i, i + len(vals[i:i + batch]) - 1)})
            assert not late.any()
            recs.extend(sent)
        out[p] = recs
    return out


def replay(cfg, evs: list[bytes]) -> list[dict]:
    pipe = StreamPipeline(cfg)
    rows = []
    for i in range(0, len(evs), 500):
        rows.extend(r.to_dict() for r in pipe.process(evs[i:i + 500]).results)
    return rows


def key(r: dict) -> tuple:
    return (r["stream"], r["feature"], r["segment"] or "", r["window_start"], r["window_end"])
