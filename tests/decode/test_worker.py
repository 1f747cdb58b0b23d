"""``kafka.decode_workers: 1``: decoding in a worker process gives exactly the in-process results.

The worker path (``DecodeWorker`` running ``Preparer.prepare``, then
``StreamPipeline.count``) is compared with ``StreamPipeline.process`` on the
same batches, normal and hostile, with more segments than the cap; then
a real daemon with a decode worker reads a tansu topic and its results sink
must equal ``driftmon replay`` of the same events, and the worker must be gone
after shutdown.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from driftmon.cli import replay
from driftmon.config import parse_config
from driftmon.decode.prepare import Preparer
from driftmon.decode.worker import DecodeWorker, DecodeWorkerError
from driftmon.pipeline import StepOutput, StreamPipeline
from driftmon.service.checkpoint import CheckpointStore, config_fingerprint
from driftmon.service.daemon import Daemon
from driftmon.testing import synth
from tests.conftest import current_client, unique_name

NOW = 1.9e9  # the pipelines' wall clock: events after NOW + max_future_skew are bad_timestamp


def stream_doc(topic: str = "t", max_segments: int = 6) -> dict[str, Any]:
    """Declared and open-vocabulary/quantile features, two segment fields, a small segment cap."""
    return {
        "name": "interactions", "topic": topic,
        "timestamp": {"field": "ts", "unit": "s", "max_future_skew": "1h"},
        "window": {"size": "60s", "slide": "60s", "allowed_lateness": "2s"},
        "segment_by": ["platform", "region"], "max_segments": max_segments,
        "features": [
            {"name": "item_category", "field": "item.category", "type": "categorical",
             "categories": list(synth.CATEGORIES)},
            {"name": "item_id", "field": "item.id", "type": "categorical", "top_k": 30},
            {"name": "dwell", "field": "dwell_ms", "type": "numeric", "bins": "quantile", "num_bins": 8},
            {"name": "score", "field": "score", "type": "numeric", "edges": [0, 0.5, 1]},
        ],
    }


def config(topic: str = "t", max_segments: int = 6, **extra: Any):
    doc: dict[str, Any] = {"streams": [stream_doc(topic, max_segments=max_segments)],
                           "detector": {"min_count": 50, "reference": "previous", "permutations": 99}}
    doc.update(extra)
    return parse_config(doc)


HOSTILE = [
    b"not json", b"", b"[1, 2]", b'"a string"', b"{}", b'{"ts": null}', b'{"ts": "soon"}', b'{"ts": true}',
    b'{"ts": 1e400}', b'{"ts": -5}', b'{"ts": 9e99}', b'{"ts": %d}' % (NOW + 7200),
    b'{"ts": 1700000000, "item": 5}', b'{"ts": 1700000000, "item": {"category": [1]}}',
    b'{"ts": 1700000000, "dwell_ms": "long"}', b'{"ts": 1700000000, "dwell_ms": true}',
    b'{"ts": 1700000000, "platform": {"x": 1}}', b'{"ts": 1700000000, "score": NaN}',
    b'{"ts": 1700000000, "item": {"id": 3.5, "category": false}, "platform": 7}',
    b'{"ts": 1700000000, "platform": "' + b"p" * 80 + b'"}',
    b'{"ts": 1700000000, "region": null, "item": {"id": null}, "dwell_ms": null}',
]


def batches(seed: int, n_batches: int = 14) -> list[tuple[list[bytes], np.ndarray]]:
    """Batches of (values, partition ids): synthetic events, reordered and spiced with
    hostile ones, late ones and new segments, over three partitions."""
    rng = random.Random(seed)
    start = 1_700_000_000.0
    t = start
    out = []
    for b in range(n_batches):
        n = rng.choice([1, 40, 300, 900])
        evs = list(synth.interactions(n, start=t, rate=8.0, seed=seed * 100 + b, num_items=200))
        t = max(e["ts"] for e in evs)
        values = []
        for e in evs:
            e["region"] = rng.choice(["eu", "us", "ap", f"r{rng.randrange(5)}", f"b{b}-{rng.randrange(3)}"])
            e["score"] = rng.random() * 1.2
            if rng.random() < 0.03:
                e["ts"] = e["ts"] - rng.uniform(10, 400)  # late
            values.append(orjson.dumps(e))
        values += rng.sample(HOSTILE, k=rng.randrange(0, len(HOSTILE)))
        rng.shuffle(values)
        parts = np.asarray([rng.randrange(3) for _ in values], dtype=np.int64)
        out.append((values, parts))
    return out


def as_data(out: StepOutput) -> dict[str, Any]:
    return {"results": [r.to_dict() for r in out.results], "rejected": out.rejected, "late": out.late,
            "late_total": out.late_total, "closed_ends": out.closed_ends}


def snapshot(pipe: StreamPipeline) -> str:
    return json.dumps(pipe.snapshot(), sort_keys=True, default=lambda o: o.tolist())


@pytest.mark.parametrize(("seed", "max_segments"), [(1, 6), (2, 40), (3, 70)])
def test_worker_path_equals_in_process_path(seed, max_segments):
    """Batch by batch, the worker's prepared batches counted by StreamPipeline.count
    give the StepOutputs and state of StreamPipeline.process."""
    cfg = config(max_segments=max_segments)
    ref = StreamPipeline(cfg.streams[0], clock=lambda: NOW)
    got = StreamPipeline(cfg.streams[0], clock=lambda: NOW)
    worker = DecodeWorker(cfg.streams)
    segments: set[str | None] = set()
    try:
        for k, (values, parts) in enumerate(batches(seed)):
            now = 1000.0 + k
            expected = as_data(ref.process(values, parts, now))
            segments.update(r["segment"] for r in expected["results"])
            worker.submit([("interactions", values, got.clock())])
            (prepared,) = worker.result()
            assert as_data(got.count(prepared, parts, now)) == expected, f"batch {k}"
            assert snapshot(got) == snapshot(ref), f"state after batch {k}"
        final = as_data(ref.flush())
        segments.update(r["segment"] for r in final["results"])
        assert as_data(got.flush()) == final
        assert snapshot(got) == snapshot(ref)
    finally:
        worker.close()
    assert ref.windows_closed > 3 and ref.late > 0 and sum(ref.rejected.values()) > 0
    if max_segments == 6:
        assert "__other__" in segments  # the segment cap was hit
    assert len(segments) > 2  # windows had per-segment results
    assert worker.process.exitcode is not None


def test_prepared_batches_without_partition_ids_match():
    """Batches prepared by a separate Preparer, counted without partition ids, also match."""
    cfg = config()
    ref = StreamPipeline(cfg.streams[0], clock=lambda: NOW)
    got = StreamPipeline(cfg.streams[0], clock=lambda: NOW)
    prep = Preparer(cfg.streams[0], clock=lambda: NOW)
    for k, (values, _) in enumerate(batches(7, n_batches=8)):
        expected = as_data(ref.process(values))
        assert as_data(got.count(prep.prepare(values))) == expected, f"batch {k}"
    assert snapshot(got) == snapshot(ref)


def test_worker_gone_raises():
    cfg = config()
    worker = DecodeWorker(cfg.streams)
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.join(10)
    with pytest.raises(DecodeWorkerError):
        worker.submit([("interactions", [b'{"ts": 1700000000}'] * 50_000, NOW)])
        worker.result()
    worker.close()


@pytest.mark.kafka
def test_daemon_with_decode_worker_equals_replay(kafka_broker, fresh_topic, tmp_path):
    """A daemon with kafka.decode_workers: 1 reads a topic (learning phase, segments,
    junk); its results sink equals ``driftmon replay`` of the same events, every
    record is counted, and the worker process is gone after shutdown."""
    from kafka import KafkaProducer

    topic = fresh_topic(partitions=1)
    base = math.floor((time.time() - 3600) / 60) * 60
    episode = synth.Episode(base + 240, base + 420)
    rng = random.Random(5)
    events = []
    for e in synth.interactions(24_000, start=base + 1, rate=40.0, episode=episode, seed=3, num_items=200):
        e["region"] = rng.choice(["eu", "us", "ap"])
        e["score"] = rng.random()
        events.append(orjson.dumps(e))
        if rng.random() < 0.002:
            events.append(rng.choice([b"not json", b"[1]", b'{"ts": "x"}', b'{"ts": 1, "dwell_ms": "x"}']))
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(events) + b"\n")
    state = tmp_path / "state"
    doc: dict[str, Any] = {
        "streams": [stream_doc(topic)],
        "detector": {"min_count": 50, "reference": "previous", "permutations": 99},
        "kafka": {"client": current_client(), "bootstrap_servers": [kafka_broker.bootstrap], "group_id": unique_name("dw"),
                  "auto_offset_reset": "earliest", "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000,
                  "poll_timeout_ms": 200, "max_poll_records": 1500, "decode_workers": 1},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"dir": str(state), "checkpoint_interval": "200ms"},
        "sinks": {"jsonl": str(state / "results.jsonl")},
        "lifecycle": {"grace_period": "5s"},
    }
    cfg = parse_config(doc)
    assert cfg.kafka.decode_workers == 1
    kw: dict[str, Any] = {"bootstrap_servers": kafka_broker.bootstrap, "linger_ms": 5, "acks": 1,
                          "batch_size": 256 * 1024}
    if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
        kw["enable_idempotence"] = False
    producer = KafkaProducer(**kw)
    for v in events:
        producer.send(topic, v, partition=0)
    producer.flush(timeout=60)
    producer.close(timeout=5)

    daemon = Daemon(cfg)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("code", daemon.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 45
    pipe = daemon.pipelines["interactions"]
    while pipe.events < len(events) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = daemon.worker
    assert worker is not None and worker.process.is_alive(), "the decode worker must be running (and not have failed)"
    daemon.stop_event.set()
    thread.join(30)
    assert not thread.is_alive() and box.get("code") == 0
    assert pipe.events == len(events)
    assert worker.sent > 3  # the batches went through the worker
    assert worker.process.exitcode is not None and daemon.worker is None  # gone after shutdown
    assert daemon.offsets == {(topic, 0): len(events)}  # the checkpoint covers every record, all counted

    rows = [orjson.loads(line) for line in (state / "results.jsonl").read_bytes().splitlines() if line.strip()]
    out = io.StringIO()
    summary = replay(cfg, str(events_file), "json", None, False, out)
    replayed = [json.loads(line) for line in out.getvalue().splitlines()][:-1]
    assert len(rows) > 20 and rows == replayed
    assert any(r["transition"] == "fired" for r in rows)
    assert summary["rejected"] == dict(sorted(pipe.rejected.items())) and sum(pipe.rejected.values()) > 0
    streams, offsets = CheckpointStore(str(state), config_fingerprint(cfg)).load()  # type: ignore[misc]
    assert offsets == {(topic, 0): len(events)} and streams["interactions"]["counters"]["events"] == len(events)


def test_decode_workers_config_key():
    base = {"streams": [stream_doc()]}
    assert parse_config(base).kafka.decode_workers == 0
    assert parse_config({**base, "kafka": {"decode_workers": 1}}).kafka.decode_workers == 1
    with pytest.raises(ValueError, match="decode_workers"):
        parse_config({**base, "kafka": {"decode_workers": 2}})



def test_worker_exits_when_its_parent_is_killed(tmp_path):
    """kill -9 of the daemon's process: the worker sees EOF on its pipe and exits."""
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from driftmon.config import parse_config\n"
        "from driftmon.decode.worker import DecodeWorker\n"
        "if __name__ == '__main__':\n"
        "    cfg = parse_config({'streams': [{'name': 's', 'features': [\n"
        "        {'name': 'c', 'type': 'categorical', 'categories': ['a']}]}]})\n"
        "    w = DecodeWorker(cfg.streams)\n"
        "    w.submit([('s', [b'{\"ts\": 1700000000, \"c\": \"a\"}'], 2e9)])\n"
        "    assert w.result()[0].n == 1\n"
        "    print(w.process.pid, flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        os.kill(worker_pid, 0)  # alive
    finally:
        parent.kill()
        parent.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"decode worker {worker_pid} outlived its parent")
