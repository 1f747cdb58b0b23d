"""Throughput: driftmon's daemon loop against a bare kafka-python loop, same broker and topic.

    python bench/throughput.py --events 300000

Starts an embedded tansu broker, produces N synthetic interaction events
(``driftmon.testing.synth``, a drift episode in the middle) to a topic with 3
partitions, then measures, alternately and each with a fresh consumer group:

(a) ``bare``:   a ``KafkaConsumer`` with the daemon's consumer settings that only counts messages;
(b) ``daemon``: ``Daemon.run()`` itself (``KafkaSource.poll_batches`` + ``Daemon.handle_poll``: decode,
    windows, detectors, metrics, periodic checkpoints; no webhooks, no sinks);
(c) ``pipeline``: decode + ``StreamPipeline.process`` over the same bytes, no Kafka (upper bound);
(d) ``worker``: (b) with ``kafka.decode_workers: 1``: decoding in a second process
    (``driftmon.decode.worker``) while the next poll is parsed.

Timing starts at the first record a loop receives (group join excluded from
all) and stops when the N-th is received (a) or counted (b, d).  Prints
events/s per round, the medians and the ratios daemon/bare and worker/bare
(goal >= 0.8).  The stream config is the ``interactions``
stream of ``config/driftmon.yaml`` as shipped (5-minute windows, 4 features,
segments by platform); events are 1000/s of event time, so 300k events close
about one window per run, as in steady state.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kafka  # noqa: E402
import yaml  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402

from driftmon.config import parse_config  # noqa: E402
from driftmon.pipeline import StreamPipeline  # noqa: E402
from driftmon.service.daemon import Daemon  # noqa: E402
from driftmon.service.process import tune_gc  # noqa: E402
from driftmon.source.kafka import consumer_kwargs  # noqa: E402
from driftmon.testing import synth  # noqa: E402
from driftmon.testing.embedded import EmbeddedBroker, create_topics  # noqa: E402

TOPIC = "bench.interactions"


def make_config(bootstrap: str, state: str, max_poll_records: int, decode_workers: int = 0):
    """The example config's interactions stream, pointed at the bench topic; no webhooks or sinks."""
    doc = yaml.safe_load((ROOT / "config" / "driftmon.yaml").read_text())
    stream = next(s for s in doc["streams"] if s["name"] == "interactions")
    stream["topic"] = TOPIC  # window, segments, features and detector exactly as shipped
    doc["streams"] = [stream]
    doc["kafka"] = {
        "bootstrap_servers": [bootstrap], "group_id": f"bench-{uuid.uuid4().hex[:8]}",
        "auto_offset_reset": "earliest", "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000,
        "max_poll_records": max_poll_records, "poll_timeout_ms": 500, "decode_workers": decode_workers,
    }
    doc["http"] = {"listen": "127.0.0.1:0"}
    doc["alerts"] = {"webhooks": []}
    doc["sinks"] = {}
    doc["state"] = {"dir": state, "checkpoint_interval": "5s"}
    doc["logging"] = {"level": "WARNING"}
    return parse_config(doc, {})


def produce(bootstrap: str, n: int, partitions: int) -> list[bytes]:
    """n events, 1000/s of event time ending now, round-robin over the partitions."""
    rate = 1000.0
    start = time.time() - n / rate
    episode = synth.Episode(start + 0.4 * n / rate, start + 0.7 * n / rate)
    values = list(synth.encode(synth.interactions(n, start=start, rate=rate, episode=episode, seed=42)))
    kw = {"bootstrap_servers": bootstrap, "linger_ms": 20, "batch_size": 512 * 1024, "acks": 1}
    if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
        kw["enable_idempotence"] = False
    producer = KafkaProducer(**kw)
    for i, v in enumerate(values):
        producer.send(TOPIC, v, partition=i % partitions)
    producer.flush(timeout=300)
    producer.close()
    return values


def run_bare(cfg, n: int) -> float:
    """(a) events/s of a KafkaConsumer loop that only counts messages."""
    consumer = KafkaConsumer(**consumer_kwargs(cfg.kafka))
    consumer.subscribe([TOPIC])
    count, t0 = 0, None
    try:
        while count < n:
            batches = consumer.poll(cfg.kafka.poll_timeout_ms)
            if not batches:
                continue
            if t0 is None:
                t0 = time.perf_counter()
            for recs in batches.values():
                count += len(recs)
        return n / (time.perf_counter() - t0)
    finally:
        consumer.close(autocommit=False)


class _TimedDaemon(Daemon):
    """The real daemon; ``handle_poll`` is wrapped only to time first record..N-th counted."""

    def __init__(self, cfg, n: int):
        super().__init__(cfg)
        self.n, self.t0, self.t1 = n, None, None

    def handle_poll(self, batches):
        if self.t0 is None and batches:
            self.t0 = time.perf_counter()
        super().handle_poll(batches)
        if self.t1 is None and self.pipelines["interactions"].events >= self.n:  # counted, not just sent
            self.t1 = time.perf_counter()
            self.stop_event.set()


def run_daemon(cfg, n: int) -> tuple[float, Daemon]:
    """(b)/(d) events/s of Daemon.run() (poll, decode, windows, detectors, metrics, checkpoints)."""
    daemon = _TimedDaemon(cfg, n)
    daemon.run()
    return n / (daemon.t1 - daemon.t0), daemon


def run_pipeline(cfg, values: list[bytes], batch: int) -> float:
    """(c) events/s of decode + windows + detectors alone, no Kafka, no metrics."""
    pipe = StreamPipeline(cfg.streams[0])
    t0 = time.perf_counter()
    for i in range(0, len(values), batch):
        pipe.process(values[i:i + batch])
    return len(values) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-poll-records", type=int, default=5000)
    ap.add_argument("--default-gc", action="store_true",
                    help="keep Python's default GC settings (driftmon run applies service.process.tune_gc; so do (a)-(c) here)")
    args = ap.parse_args(argv)
    logging.getLogger("driftmon").setLevel(logging.ERROR)  # no "drift fired" lines in the figures
    if not args.default_gc:
        tune_gc()

    state_root = tempfile.mkdtemp(prefix="driftmon-bench-")
    print(f"machine: {os.cpu_count()} cpus, {platform.platform()}, python {platform.python_version()}, "
          f"kafka-python {kafka.__version__}, gc threshold {gc.get_threshold()}")
    try:
        with EmbeddedBroker() as broker:
            create_topics(broker.bootstrap, [TOPIC], partitions=args.partitions)
            t = time.perf_counter()
            values = produce(broker.bootstrap, args.events, args.partitions)
            mb = sum(map(len, values)) / 1e6
            print(f"produced {args.events} events ({mb:.1f} MB, {args.partitions} partitions) "
                  f"in {time.perf_counter() - t:.1f}s to {broker.bootstrap}")
            runs: dict[str, list[float]] = {"bare": [], "daemon": [], "worker": []}
            ratios: dict[str, list[float]] = {"daemon": [], "worker": []}
            for r in range(args.repeats):
                order = ("bare", "daemon", "worker") if r % 2 == 0 else ("worker", "daemon", "bare")
                got, detail = {}, {}
                for which in order:
                    cfg = make_config(broker.bootstrap, os.path.join(state_root, f"{which}-{r}"),
                                      args.max_poll_records, decode_workers=int(which == "worker"))
                    if which == "bare":
                        got[which] = run_bare(cfg, args.events)
                    else:
                        got[which], d = run_daemon(cfg, args.events)
                        pipe = d.pipelines["interactions"]
                        detail[which] = (f"{pipe.events} events, {pipe.windows_closed} windows, "
                                         f"{pipe.late} late, {sum(pipe.rejected.values())} rejected")
                for which, v in got.items():
                    runs[which].append(v)
                for which in ratios:
                    ratios[which].append(got[which] / got["bare"])
                print(f"round {r + 1}: (a) bare {got['bare']:>9,.0f} ev/s   (b) daemon {got['daemon']:>9,.0f} ev/s   "
                      f"(d) worker {got['worker']:>9,.0f} ev/s   b/a {ratios['daemon'][-1]:.2f}   "
                      f"d/a {ratios['worker'][-1]:.2f}   [b: {detail['daemon']}; d: {detail['worker']}]", flush=True)
            cfg = make_config(broker.bootstrap, os.path.join(state_root, "pipeline"), args.max_poll_records)
            pipeline = statistics.median(run_pipeline(cfg, values, args.max_poll_records) for _ in range(3))
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
    mb, md, mw = (statistics.median(runs[k]) for k in ("bare", "daemon", "worker"))
    print(f"\nmedian of {args.repeats}: (a) bare kafka-python {mb:,.0f} ev/s   (b) driftmon daemon {md:,.0f} ev/s   "
          f"(c) pipeline alone {pipeline:,.0f} ev/s   (d) daemon, decode_workers: 1 {mw:,.0f} ev/s")
    print(f"ratio daemon/bare (b/a): {md / mb:.2f} (median of per-round ratios {statistics.median(ratios['daemon']):.2f}; "
          f"goal >= 0.8)")
    print(f"ratio worker/bare (d/a): {mw / mb:.2f} (median of per-round ratios {statistics.median(ratios['worker']):.2f}; "
          f"goal >= 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
