"""Throughput: driftmon's daemon against a bare loop of the same Kafka client, same broker and topic.

    python bench/throughput.py --events 300000                      # both clients, ratios side by side
    python bench/throughput.py --events 300000 --latency            # and the end-to-end alert latency
    python bench/throughput.py --clients kafka-python --worker      # kafka-python only, plus (d)

Starts an embedded tansu broker, produces N synthetic interaction events
(``driftmon.testing.synth``, a drift episode in the middle) to a topic with 3
partitions, then measures, alternately and each with a fresh consumer group,
for each ``kafka.client`` in ``--clients`` (kafka-python, confluent-kafka):

(a) ``bare``:   a consumer of that client with the daemon's consumer settings that only counts
    messages (kafka-python: ``KafkaConsumer.poll``; confluent-kafka: ``Consumer.consume`` of
    ``max_poll_records``, the values taken as the daemon takes them);
(b) ``daemon``: ``Daemon.run()`` itself with that client (``poll_batches`` + ``Daemon.handle_poll``:
    decode, windows, detectors, metrics, periodic checkpoints; no webhooks, no sinks);
(c) ``pipeline``: decode + ``StreamPipeline.process`` over the same bytes, no Kafka (upper bound);
(d) ``worker`` (``--worker``): (b) with ``kafka.decode_workers: 1``, for each client.

Timing starts at the first record a loop receives (group join excluded from
all) and stops when the N-th is received (a) or counted (b, d).  Prints
events/s per round, the medians, the ratios daemon/bare per client (goals:
>= 0.8 kafka-python, >= 0.6 confluent-kafka) and confluent daemon / kafka-python
daemon in absolute events/s (goal >= 2).  The stream config is the ``interactions``
stream of ``config/driftmon.yaml`` as shipped (5-minute windows, 4 features,
segments by platform); events are 1000/s of event time, so 300k events close
about one window per run, as in steady state.

``--latency``: the end-to-end alert latency under full ingest load, per client.  The same
stream with 10 s windows over events whose category mix drifts in every other window, so
every window that closes changes state and notifies a real webhook receiver
(``driftmon.testing.receiver``); the daemon reads the whole topic as fast as it can.  For
each accepted notification: the time from the window's close (the watermark passing its
end: the moment the pipeline reports it closed) to the receiver's acceptance; p50/p99.
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
from driftmon.outputs.alerts.payload import rfc3339  # noqa: E402
from driftmon.pipeline import StreamPipeline  # noqa: E402
from driftmon.service.daemon import Daemon  # noqa: E402
from driftmon.service.process import tune_gc  # noqa: E402
from driftmon.source.kafka import consumer_kwargs, read_batches  # noqa: E402
from driftmon.testing import synth  # noqa: E402
from driftmon.testing.embedded import EmbeddedBroker, create_topics  # noqa: E402
from driftmon.testing.receiver import WebhookSink  # noqa: E402
from driftmon.vocabulary import CONFLUENT_KAFKA, KAFKA_CLIENTS, KAFKA_PYTHON  # noqa: E402

TOPIC = "bench.interactions"
LATENCY_TOPIC = "bench.latency"
LATENCY_WINDOW = 10.0  # seconds of event time: 10,000 events per window


def make_config(bootstrap: str, state: str, max_poll_records: int, decode_workers: int = 0,
                client: str = KAFKA_PYTHON, topic: str = TOPIC, window: str | None = None,
                webhook: str | None = None):
    """The example config's interactions stream, pointed at the bench topic; no webhooks
    (unless ``webhook``) or sinks."""
    doc = yaml.safe_load((ROOT / "config" / "driftmon.yaml").read_text())
    stream = next(s for s in doc["streams"] if s["name"] == "interactions")
    stream["topic"] = topic  # window, segments, features and detector exactly as shipped
    if window is not None:  # the latency run: every window changes state against the pinned reference
        stream["window"] = {"size": window, "slide": window, "allowed_lateness": 0}
        doc["detector"]["reference"] = "pinned"
    doc["streams"] = [stream]
    doc.pop("calibration", None)  # (it joins the predictions and outcomes streams, not benchmarked here)
    doc["kafka"] = {
        "client": client,
        "bootstrap_servers": [bootstrap], "group_id": f"bench-{uuid.uuid4().hex[:8]}",
        "auto_offset_reset": "earliest", "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
        "max_poll_records": max_poll_records, "poll_timeout_ms": 500, "decode_workers": decode_workers,
    }
    doc["http"] = {"listen": "127.0.0.1:0"}
    doc["alerts"] = {"webhooks": [{"name": "bench", "url": webhook, "timeout": "5s"}] if webhook else []}
    doc["sinks"] = {}
    doc["state"] = {"dir": state, "checkpoint_interval": "5s"}
    doc["logging"] = {"level": "WARNING"}
    return parse_config(doc, {})


def produce(bootstrap: str, n: int, partitions: int, topic: str = TOPIC, flip_every: float | None = None) -> list[bytes]:
    """n events, 1000/s of event time ending now, round-robin over the partitions.  A drift
    episode in the middle, or (``flip_every`` seconds) one in every other such span."""
    rate = 1000.0
    start = time.time() - n / rate
    if flip_every is None:
        episode = synth.Episode(start + 0.4 * n / rate, start + 0.7 * n / rate)
        values = list(synth.encode(synth.interactions(n, start=start, rate=rate, episode=episode, seed=42)))
    else:
        start = (start // flip_every) * flip_every
        per, values = int(flip_every * rate), []
        for k in range(-(-n // per)):
            t0 = start + k * flip_every
            episode = synth.Episode(t0, t0 + flip_every) if k % 2 else None
            values += synth.encode(synth.interactions(min(per, n - k * per), start=t0, rate=rate,
                                                      episode=episode, seed=k))
    kw = {"bootstrap_servers": bootstrap, "linger_ms": 20, "batch_size": 512 * 1024, "acks": 1}
    if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
        kw["enable_idempotence"] = False
    producer = KafkaProducer(**kw)
    for i, v in enumerate(values):
        producer.send(topic, v, partition=i % partitions)
    producer.flush(timeout=300)
    producer.close()
    return values


def run_bare(cfg, n: int) -> float:
    """(a) events/s of a consumer loop of ``cfg.kafka.client`` that only counts messages."""
    if cfg.kafka.client == CONFLUENT_KAFKA:
        return run_bare_confluent(cfg, n)
    return run_bare_kafka_python(cfg, n)


def run_bare_confluent(cfg, n: int) -> float:
    """(a) for confluent-kafka: ``consume()`` with the daemon's librdkafka settings, taking each
    message's value (as the daemon's source does) and counting."""
    from confluent_kafka import Consumer, Message

    from driftmon.source.confluent import librdkafka_config

    conf = librdkafka_config(cfg.kafka)
    conf.pop("statistics.interval.ms")
    consumer = Consumer(conf)
    consumer.subscribe([TOPIC])
    value, consume, batch = Message.value, consumer.consume, cfg.kafka.max_poll_records
    count, t0 = 0, None
    try:
        while count < n:
            msgs = consume(batch, 0)  # what is fetched already, else wait for one (as the source does)
            if not msgs:
                msgs = consume(1, cfg.kafka.poll_timeout_ms / 1000)
                if not msgs:
                    continue
            if t0 is None:
                t0 = time.perf_counter()
            count += len(list(map(value, msgs)))
        return n / (time.perf_counter() - t0)
    finally:
        consumer.close()


def run_bare_kafka_python(cfg, n: int, batch_reader: bool = False) -> float:
    """(a) events/s of a KafkaConsumer loop that only counts messages; ``batch_reader``: (a')
    the same loop with driftmon's record reader installed (``kafka.record_reader: batch``)."""
    consumer = KafkaConsumer(**consumer_kwargs(cfg.kafka))
    if batch_reader and not read_batches(consumer, cfg.kafka):
        raise SystemExit("kafka.record_reader: batch is not supported by this kafka-python")
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


class _LatencyDaemon(Daemon):
    """The real daemon; its pipeline's ``count`` is wrapped to note when each window closed."""

    def __init__(self, cfg, n: int):
        super().__init__(cfg)
        self.n, self.closed_at, self.done_at = n, {}, None
        pipe = self.pipelines["interactions"]
        count = pipe.count

        def timed_count(*args, **kw):
            out = count(*args, **kw)
            now = time.monotonic()
            for end in out.closed_ends:
                self.closed_at.setdefault(rfc3339(end), now)
            return out

        pipe.count = timed_count  # type: ignore[method-assign]

    def handle_poll(self, batches):
        super().handle_poll(batches)
        if self.done_at is None and self.pipelines["interactions"].events >= self.n:
            self.done_at = time.monotonic()


def run_latency(broker, client: str, state: str, n: int, max_poll_records: int) -> dict:
    """Alert latency from a window's close to the webhook receiver's acceptance, under full ingest."""
    with WebhookSink() as sink:
        cfg = make_config(broker.bootstrap, state, max_poll_records, client=client, topic=LATENCY_TOPIC,
                          window=f"{LATENCY_WINDOW:g}s", webhook=sink.url)
        daemon = _LatencyDaemon(cfg, n)
        import threading

        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 300
        while daemon.done_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ingest_end = time.monotonic()
        time.sleep(2.0)  # the last notifications of the run
        daemon.stop_event.set()
        thread.join(60)
        lat = []
        for r in sink.accepted():
            for a in (r.json or {}).get("alerts", []):
                closed = daemon.closed_at.get(a.get("annotations", {}).get("window_end"))
                if closed is not None and closed <= ingest_end:  # under load: closed while ingesting
                    lat.append(r.at - closed)
    lat.sort()
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
    return {"n": len(lat), "p50": pick(0.5), "p99": pick(0.99), "max": lat[-1] if lat else float("nan"),
            "windows": len(daemon.closed_at)}


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
    ap.add_argument("--clients", default=",".join(KAFKA_CLIENTS),
                    help=f"comma-separated kafka.client values to measure (default: {','.join(KAFKA_CLIENTS)})")
    ap.add_argument("--worker", action="store_true", help="also (d): kafka-python daemon with decode_workers: 1")
    ap.add_argument("--latency", action="store_true", help="also the end-to-end alert latency under load, per client")
    ap.add_argument("--latency-events", type=int, default=300_000)
    ap.add_argument("--default-gc", action="store_true",
                    help="keep Python's default GC settings (driftmon run applies service.process.tune_gc; so do (a)-(c) here)")
    args = ap.parse_args(argv)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = set(clients) - set(KAFKA_CLIENTS)
    if unknown:
        ap.error(f"--clients: unknown {sorted(unknown)}; expected some of {list(KAFKA_CLIENTS)}")
    logging.getLogger("driftmon").setLevel(logging.ERROR)  # no "drift fired" lines in the figures
    if not args.default_gc:
        tune_gc()

    # the loops of one round, in order: (a) and (b) per client, (a') for kafka-python, (d) with --worker
    loops = [(c, w) for c in clients for w in ("bare", "daemon")]
    if KAFKA_PYTHON in clients:
        loops.insert(1, (KAFKA_PYTHON, "bare-batch"))
    if args.worker:
        loops += [(c, "worker") for c in clients]
    state_root = tempfile.mkdtemp(prefix="driftmon-bench-")
    versions = f"kafka-python {kafka.__version__}"
    if CONFLUENT_KAFKA in clients:
        import confluent_kafka

        versions += f", confluent-kafka {confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]})"
    print(f"machine: {os.cpu_count()} cpus, {platform.platform()}, python {platform.python_version()}, "
          f"{versions}, gc threshold {gc.get_threshold()}")
    runs: dict[tuple[str, str], list[float]] = {k: [] for k in loops}
    ratios: dict[tuple[str, str], list[float]] = {k: [] for k in loops if k[1] != "bare"}
    if (KAFKA_PYTHON, "bare-batch") in runs:  # the daemon against the bare loop with the same record reader
        ratios[(KAFKA_PYTHON, "daemon/bare-batch")] = []
    latency: dict[str, dict] = {}
    try:
        with EmbeddedBroker() as broker:
            create_topics(broker.bootstrap, [TOPIC], partitions=args.partitions)
            t = time.perf_counter()
            values = produce(broker.bootstrap, args.events, args.partitions)
            mb = sum(map(len, values)) / 1e6
            print(f"produced {args.events} events ({mb:.1f} MB, {args.partitions} partitions) "
                  f"in {time.perf_counter() - t:.1f}s to {broker.bootstrap}")
            for r in range(args.repeats):
                got, detail = {}, {}
                for key in (loops if r % 2 == 0 else loops[::-1]):
                    client, which = key
                    cfg = make_config(broker.bootstrap, os.path.join(state_root, f"{client}-{which}-{r}"),
                                      args.max_poll_records, decode_workers=int(which == "worker"), client=client)
                    if which == "bare":
                        got[key] = run_bare(cfg, args.events)
                    elif which == "bare-batch":
                        got[key] = run_bare_kafka_python(cfg, args.events, batch_reader=True)
                    else:
                        got[key], d = run_daemon(cfg, args.events)
                        pipe = d.pipelines["interactions"]
                        detail[key] = f"{pipe.events} ev, {pipe.windows_closed} win, {sum(pipe.rejected.values())} rej"
                    runs[key].append(got[key])
                for key in ratios:
                    if key[1] == "daemon/bare-batch":
                        ratios[key].append(got[(key[0], "daemon")] / got[(key[0], "bare-batch")])
                    else:
                        ratios[key].append(got[key] / got[(key[0], "bare")])
                print(f"round {r + 1}: " + "   ".join(
                    f"{c} {w} {got[(c, w)]:,.0f} ev/s" + (f" ({ratios[(c, w)][-1]:.2f} of bare" + (f"; {detail[(c, w)]})" if (c, w) in detail else ")")
                                                          if (c, w) in ratios else "")
                    for c, w in loops), flush=True)
            cfg = make_config(broker.bootstrap, os.path.join(state_root, "pipeline"), args.max_poll_records)
            pipeline = statistics.median(run_pipeline(cfg, values, args.max_poll_records) for _ in range(3))
            if args.latency:
                create_topics(broker.bootstrap, [LATENCY_TOPIC], partitions=args.partitions)
                produce(broker.bootstrap, args.latency_events, args.partitions, topic=LATENCY_TOPIC,
                        flip_every=LATENCY_WINDOW)
                for client in clients:
                    latency[client] = run_latency(broker, client, os.path.join(state_root, f"latency-{client}"),
                                                  args.latency_events, args.max_poll_records)
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\nmedians of {args.repeats} alternating rounds ({args.events:,} events; pipeline alone, no Kafka: "
          f"{pipeline:,.0f} ev/s)")
    goals = {KAFKA_PYTHON: 0.8, CONFLUENT_KAFKA: 0.6}
    for client in clients:
        bare, daemon = med[(client, "bare")], med[(client, "daemon")]
        rr = ratios[(client, "daemon")]
        print(f"  {client:16} bare {bare:>10,.0f} ev/s   daemon {daemon:>10,.0f} ev/s   daemon/bare {daemon / bare:.2f} "
              f"(rounds {min(rr):.2f}-{max(rr):.2f}; goal >= {goals[client]})")
        if (client, "bare-batch") in med:
            bb, rr = med[(client, "bare-batch")], ratios[(client, "daemon/bare-batch")]
            print(f"  {'':16} bare with driftmon's record reader {bb:>10,.0f} ev/s ({bb / bare:.2f}x kafka-python's reader); "
                  f"daemon / that loop {daemon / bb:.2f} (rounds {min(rr):.2f}-{max(rr):.2f}): the engine's own share")
    for client in clients:
        if (client, "worker") in med:
            w, rr = med[(client, "worker")], ratios[(client, "worker")]
            print(f"  {client:16} decode_workers: 1: daemon {w:>10,.0f} ev/s   worker/bare {w / med[(client, 'bare')]:.2f} "
                  f"(rounds {min(rr):.2f}-{max(rr):.2f})")
    if KAFKA_PYTHON in clients and CONFLUENT_KAFKA in clients:
        x = med[(CONFLUENT_KAFKA, "daemon")] / med[(KAFKA_PYTHON, "daemon")]
        print(f"  confluent-kafka daemon / kafka-python daemon (absolute events/s): {x:.2f}x (goal >= 2)")
        if (CONFLUENT_KAFKA, "worker") in med:
            x = med[(CONFLUENT_KAFKA, "worker")] / med[(KAFKA_PYTHON, "daemon")]
            print(f"  confluent-kafka daemon with decode_workers: 1 / kafka-python daemon: {x:.2f}x")
    for client, lat in latency.items():
        print(f"  alert latency, {client}: window close -> webhook accepted, under full ingest "
              f"({args.latency_events:,} events, {lat['windows']} windows of {LATENCY_WINDOW:g}s closed): "
              f"p50 {lat['p50'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, max {lat['max'] * 1000:.0f} ms "
              f"over {lat['n']} notifications")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
