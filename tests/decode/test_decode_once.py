"""Decode once per topic: several streams reading one topic parse each message once
(in-process and in the decode worker), and what each stream counts is what it counts alone."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.config import parse_config
from driftmon.decode import events as events_mod
from driftmon.decode import worker as worker_mod
from driftmon.decode.events import INVALID, Decoder, parse_values
from driftmon.pipeline import StreamPipeline
from driftmon.service.daemon import Daemon
from driftmon.source.base import Record
from driftmon.testing import synth

WINDOW = 60.0

# Two streams with different fields, types, segments and timestamp units over the same messages.
STREAMS: list[dict[str, Any]] = [
    {"name": "by_category", "topic": "events", "timestamp": {"field": "ts", "unit": "s"},
     "window": {"size": "60s", "allowed_lateness": 0}, "segment_by": ["platform"], "max_segments": 5,
     "features": [{"name": "item_category", "field": "item.category", "type": "categorical",
                   "categories": list(synth.CATEGORIES)},
                  {"name": "dwell", "field": "dwell_ms", "type": "numeric", "edges": [0, 1000, 10000, 60000]}]},
    {"name": "by_platform", "topic": "events", "timestamp": {"field": "ts", "unit": "s"},
     "window": {"size": "120s", "allowed_lateness": 0},
     "features": [{"name": "platform", "field": "platform", "type": "categorical", "top_k": 5},
                  {"name": "score", "field": "score", "type": "numeric", "edges": [0, 0.5, 1]}]},
]

JUNK = [b"not json", b"[1, 2]", b'{"ts": "x"}', b'{"ts": 1700000000, "dwell_ms": "slow"}', b"",
        b'{"ts": 1700000000, "item": 3}', b'{"ts": 1700000000, "platform": {"a": 1}}', b"\xff\xfe"]


def traffic(n: int, seed: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    base = math.floor((1_700_000_000 - 3600) / WINDOW) * WINDOW
    out = []
    for i, e in enumerate(synth.interactions(n, start=base + 1, rate=4.0, seed=seed)):
        e["score"] = float(rng.random())
        out.append(orjson.dumps(e))
        if i % 97 == 0:
            out.append(JUNK[(i // 97) % len(JUNK)])
    return out


def config(state_dir: str) -> Any:
    return parse_config({"streams": STREAMS, "detector": {"min_count": 50},
                         "state": {"dir": state_dir}, "http": {"listen": "127.0.0.1:0"}})


class CountingLoads:
    """orjson.loads, counting the values it is asked to parse."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = orjson.loads

    def __call__(self, raw: Any) -> Any:
        self.calls += 1
        return self.real(raw)


event_value = st.one_of(
    st.sampled_from(JUNK),
    st.builds(lambda ts, cat, dwell, plat, score: json.dumps(
        {"ts": ts, "item": {"category": cat}, "dwell_ms": dwell, "platform": plat, "score": score}).encode(),
        st.one_of(st.integers(1_699_990_000, 1_700_010_000), st.just(-5), st.text(max_size=3)),
        st.one_of(st.sampled_from(synth.CATEGORIES), st.none(), st.integers(), st.text(max_size=300)),
        st.one_of(st.floats(0, 1e5), st.none(), st.booleans()),
        st.one_of(st.sampled_from(["ios", "android", "web", ""]), st.none(), st.lists(st.integers(), max_size=1)),
        st.one_of(st.floats(0, 1), st.none())),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(event_value, max_size=40))
def test_decoding_shared_parses_equals_decoding_the_bytes(values):
    cfg = config("/nonexistent")
    parsed = parse_values(values)
    assert len(parsed) == len(values)
    for stream in cfg.streams:
        dec = Decoder(stream, clock=lambda: 2e9)
        alone, shared = dec.decode(values), dec.decode(values, parsed)
        assert shared.accepted == alone.accepted and shared.rejected == alone.rejected
        assert np.array_equal(shared.ts, alone.ts) and shared.segments == alone.segments
        assert shared.truncated == alone.truncated
        for a, b in zip(shared.features, alone.features):
            assert [repr(x) for x in a] == [repr(x) for x in b]  # NaN == NaN by repr
    assert parse_values(values) == [orjson.loads(v) if v not in JUNK[:1] + JUNK[4:5] + JUNK[7:] else INVALID
                                    for v in values]


def test_two_streams_on_one_topic_parse_each_message_once_and_count_as_alone(tmp_path, monkeypatch):
    values = traffic(6000)
    chunks = [values[i:i + 1000] for i in range(0, len(values), 1000)]
    cfg = config(str(tmp_path / "state"))
    alone = {s.name: StreamPipeline(s) for s in cfg.streams}
    results = {name: [r.to_dict() for c in chunks for r in p.process(c, np.zeros(len(c), dtype=np.int64), 0.0).results]
               for name, p in alone.items()}

    daemon = Daemon(cfg)
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in daemon.pipelines}
    daemon.outputs.emit = lambda name, out: got[name].extend(r.to_dict() for r in out.results)  # type: ignore[method-assign]
    try:
        loads = CountingLoads()
        monkeypatch.setattr(events_mod.orjson, "loads", loads)
        daemon._on_assign([("events", 0)])
        offset = 0
        for c in chunks:
            daemon.process_batches({("events", 0): [Record("events", 0, offset + i, 0, None, v, [])
                                                    for i, v in enumerate(c)]})
            offset += len(c)
        monkeypatch.undo()
        assert loads.calls == len(values)  # once per message, not once per stream
        for name, pipe in daemon.pipelines.items():
            assert pipe.events == len(values) and pipe.rejected == alone[name].rejected
            assert sum(pipe.rejected.values()) > 0 and pipe.windows_closed == alone[name].windows_closed >= 2
            assert pipe.snapshot() == alone[name].snapshot()
            assert got[name] == results[name] and len(results[name]) >= 2
    finally:
        daemon.closing = True
        daemon.lock.release()


def test_the_decode_worker_parses_a_topic_shared_by_two_streams_once(monkeypatch):
    values = traffic(500)
    cfg = config("/nonexistent")
    loads = CountingLoads()
    monkeypatch.setattr(events_mod.orjson, "loads", loads)
    jobs = [(s.name, values, 2e9) for s in cfg.streams] + [("other", [b'{"ts": 1}'], 2e9)]
    shared = worker_mod._shared_parses(jobs)
    assert list(shared) == [id(values)] and loads.calls == len(values)
    prepared = [worker_mod.Preparer(s, clock=lambda: 2e9).prepare(values, shared[id(values)]) for s in cfg.streams]
    monkeypatch.undo()
    assert loads.calls == len(values)  # the streams decode from the shared parse
    for s, p in zip(cfg.streams, prepared):
        ref = worker_mod.Preparer(s, clock=lambda: 2e9).prepare(values)
        assert p.rejected == ref.rejected and np.array_equal(p.accepted, ref.accepted)
        assert np.array_equal(p.coded.ts, ref.coded.ts)


@pytest.mark.parametrize("value", [b"not json", b"", b"\xff", b"[", b"1e999999", b'{"a": 1'])
def test_parse_values_marks_what_is_not_json_and_the_decoder_rejects_it_as_invalid_json(value):
    parsed = parse_values([value, b'{"ts": 1700000000}'])
    assert parsed[0] is INVALID and parsed[1] == {"ts": 1700000000}
    dec = Decoder(config("/nonexistent").streams[0], clock=lambda: 2e9)
    assert dec.decode([value], [INVALID]).rejected == dec.decode([value]).rejected == [(0, "invalid_json")]
