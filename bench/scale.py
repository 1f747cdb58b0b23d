"""Scale-out: events/s with 1, 2 and 3 ``driftmon run`` replicas, and the reducer's merge cost.

    python bench/scale.py [--events 300000] [--partitions 6] [--replicas 1,2,3]
                          [--clients kafka-python,confluent-kafka]

(a) Starts an embedded tansu broker, produces N synthetic interactions
(``driftmon.testing.synth``, time-ordered, round-robin over the partitions),
then for each setting runs ``python -m driftmon.cli run`` subprocesses with a
fresh consumer group, scraping ``driftmon_events_total`` of every replica
every 0.2 s: events/s = N / (time the last event was counted - time the
first was), so process start and group join are excluded.  ``single`` is
today's single-process daemon (no ``scale:``); ``k replicas`` use ``scale:``
with a 3-partition partials topic and a compacted changelog.  With several
``--clients`` (``kafka.client``) every setting runs once per client, side by
side on one broker.  The broker and every replica share this machine's cores.

(b) In process: the events mapped over P partitions (one ``StreamMapper`` per
partition, as separate replicas would), then the reducer (decode + merge +
detect) over all partials and marks, against the same over one partition: the
difference per window is the merge overhead; also bytes per partial record.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftmon.config import parse_config  # noqa: E402
from driftmon.pipeline import StreamPipeline  # noqa: E402
from driftmon.scale.mapper import StreamMapper  # noqa: E402
from driftmon.scale.records import decode, encode  # noqa: E402
from driftmon.scale.reducer import Reducer, series_pipelines  # noqa: E402
from driftmon.testing import synth  # noqa: E402
from driftmon.testing.embedded import EmbeddedBroker, create_topics  # noqa: E402

START = 1_600_000_000.0
RATE = 1000.0  # events per second of event time
SERVING = re.compile(r"serving /metrics /healthz /readyz on http://([0-9.]+):(\d+)")
EVENTS = re.compile(r'^driftmon_events_total\{stream="interactions"\} ([0-9.e+]+)$', re.M)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def stream_doc(topic: str) -> dict:
    return {"name": "interactions", "topic": topic, "timestamp": {"field": "ts", "unit": "s"},
            "window": {"size": "30s", "slide": "30s", "allowed_lateness": 0, "idle_timeout": "1h"},
            "segment_by": ["platform"], "max_segments": 5,
            "features": [
                {"name": "item_category", "field": "item.category", "type": "categorical",
                 "categories": list(synth.CATEGORIES)},
                {"name": "item_id", "field": "item.id", "type": "categorical", "top_k": 20},
                {"name": "dwell", "field": "dwell_ms", "type": "numeric", "bins": "quantile", "num_bins": 10}]}


def make_config(bootstrap: str, topic: str, work: Path, scale: bool, client: str) -> dict:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    doc = {"streams": [stream_doc(topic)], "detector": {"min_count": 200},
           "kafka": {"bootstrap_servers": [bootstrap], "group_id": group, "session_timeout_ms": 6000, "client": client,
                     "heartbeat_interval_ms": 1000, "poll_timeout_ms": 200, "max_poll_records": 5000},
           "http": {"listen": "127.0.0.1:0"}, "state": {"dir": str(work / "state"), "checkpoint_interval": "5s"},
           "logging": {"level": "INFO"}}
    if scale:
        partials = f"{group}-partials"
        create_topics(bootstrap, [partials], partitions=3)
        create_topics(bootstrap, [f"{partials}-changelog"], partitions=1)
        doc["scale"] = {"partials_topic": partials, "changelog_quiet": "0.5s"}
    return doc


def scrape(url: str) -> float:
    try:
        with _NO_PROXY.open(url + "/metrics", timeout=2) as resp:
            m = EVENTS.search(resp.read().decode())
            return float(m.group(1)) if m else 0.0
    except OSError:
        return 0.0


def run_replicas(bootstrap: str, topic: str, n: int, k: int, scale: bool, client: str = "kafka-python") -> float:
    """events/s of k replicas (first to last event counted)."""
    work = Path(tempfile.mkdtemp(prefix="driftmon-bench-scale-"))
    procs, logs, urls = [], [], []
    try:
        doc = make_config(bootstrap, topic, work, scale, client)
        for i in range(k):
            d = work / f"r{i}"
            d.mkdir()
            doc["state"]["dir"] = str(d / "state")
            (d / "driftmon.yaml").write_text(yaml.safe_dump(doc))
            log = open(d / "log", "wb")
            logs.append(d / "log")
            procs.append(subprocess.Popen([sys.executable, "-m", "driftmon.cli", "run", "-c", str(d / "driftmon.yaml")],
                                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log,
                                          stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        for path in logs:
            m = None
            while m is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica never served HTTP: {path.read_text()[-2000:]}")
                m = SERVING.search(path.read_text(errors="replace"))
                time.sleep(0.05)
            urls.append(f"http://{m.group(1)}:{m.group(2)}")
        t_first = t_last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            total = sum(scrape(u) for u in urls)
            now = time.monotonic()
            if total > 0 and t_first is None:
                t_first = now
            if total >= n:
                t_last = now
                break
            time.sleep(0.2)
        if t_first is None or t_last is None:
            raise RuntimeError("the replicas did not count every event within 10 minutes")
        return n / max(t_last - t_first, 1e-9)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def merge_overhead(events: list[bytes], partitions: int) -> dict[str, float]:
    stream = parse_config({"streams": [stream_doc("events")], "detector": {"min_count": 200}}).streams[0]
    summ = {key: p.summarizers for key, p in series_pipelines([stream]).items()}

    def mapped(parts: int) -> list[bytes]:
        out = []
        for p in range(parts):
            pipe = StreamPipeline(stream)
            m = StreamMapper(stream, pipe.summarizers)
            vals = events[p::parts]
            for i in range(0, len(vals), 5000):
                prep = pipe.preparer.prepare(vals[i:i + 5000])
                _, recs = m.count("events", parts, prep.coded, np.full(len(prep.coded), p, dtype=np.int64),
                                  {p: (i, i + len(vals[i:i + 5000]) - 1)})
                out.extend(encode(r) for r in recs)
        return out

    def reduce_time(recs: list[bytes]) -> tuple[float, int]:
        best, windows = float("inf"), 0
        for _ in range(3):
            red = Reducer([stream], partial_timeout=1e9)
            t = time.perf_counter()
            for data in recs:
                red.add(decode(data, summ))
            windows = sum(len(o.closed_ends) for _, o in red.emit(0.0))
            best = min(best, time.perf_counter() - t)
        return best, windows

    many, one = mapped(partitions), mapped(1)
    t_many, w_many = reduce_time(many)
    t_one, w_one = reduce_time(one)
    sizes = [len(d) for d in many if b'"type":"partial"' in d]
    n_partials = sum(1 for d in many if b'"type":"partial"' in d)
    return {"windows": w_many, "windows_one": w_one, "ms_per_window": t_many / max(w_many, 1) * 1e3,
            "ms_per_window_one": t_one / max(w_one, 1) * 1e3, "partials": n_partials,
            "bytes_mean": float(np.mean(sizes)), "bytes_max": float(np.max(sizes))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--clients", default="kafka-python", help="kafka.client values, comma-separated")
    ap.add_argument("--skip-broker", action="store_true", help="only the in-process merge measurement")
    args = ap.parse_args(argv)
    n = args.events
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{n:,} events, {args.partitions} partitions")
    events = list(synth.encode(synth.interactions(n, start=START, rate=RATE,
                                                  episode=synth.Episode(START + 100, START + 200))))
    m = merge_overhead(events, args.partitions)
    print(f"merge: {m['windows']} windows, {m['partials']} partial records (mean {m['bytes_mean']:,.0f} B, "
          f"max {m['bytes_max']:,.0f} B); reducer decode+merge+detect {m['ms_per_window']:.2f} ms/window "
          f"over {args.partitions} partitions vs {m['ms_per_window_one']:.2f} ms/window over 1: "
          f"merge overhead {m['ms_per_window'] - m['ms_per_window_one']:.2f} ms/window")
    if args.skip_broker:
        return 0
    with EmbeddedBroker() as broker:
        topic = f"bench-scale-{uuid.uuid4().hex[:8]}"
        create_topics(broker.bootstrap, [topic], partitions=args.partitions)
        from kafka import KafkaProducer
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1)
        for i, e in enumerate(events):
            producer.send(topic, e, partition=i % args.partitions)
        producer.flush()
        producer.close()
        for client in args.clients.split(","):
            single = run_replicas(broker.bootstrap, topic, n, 1, scale=False, client=client)
            print(f"[{client}] single process (no scale:): {single:,.0f} events/s", flush=True)
            for k in (int(x) for x in args.replicas.split(",")):
                rate = run_replicas(broker.bootstrap, topic, n, k, scale=True, client=client)
                print(f"[{client}] {k} replica(s) with scale: {rate:,.0f} events/s "
                      f"({rate / single:.2f}x single)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
