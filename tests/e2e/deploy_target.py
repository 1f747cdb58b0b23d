"""A real ``driftmon run`` fed with synthetic recommender traffic through Kafka.

Used by ``tests/e2e/test_deploy.py`` as the live scrape target of a real
Prometheus, so every dashboard and rule query is checked against the series a
real daemon exports, not a hand-fed registry.

The traffic (``driftmon.testing.synth``) is produced into a real broker:

* a back-dated history (``HISTORY`` seconds ending now) so the event-time
  windows close as soon as the daemon reads it: a clean reference window,
  then a drift episode that never ends (the category mix and the dwell time
  and score distributions move), so alerts fire, are POSTed to a webhook
  receiver that answers 500 once (outcomes ``retry`` then ``delivered``),
  and stay active while Prometheus scrapes;
* then live traffic, every ``TICK`` seconds, stamped with the wall clock, so
  windows keep closing (rates, ``increase()`` and the window-interval
  recording rule need a counter that moves), each tick with one malformed
  record (in turn ``invalid_json``, ``bad_timestamp``, ``missing_field``,
  ``bad_type``) and one late event (stamped in the first, long-closed window).

Three streams: ``interactions`` (segmented by platform, so the dashboard's
segment variable has values; ``item_id`` is an open-vocabulary top-K feature that does
not drift), ``predictions`` (unsegmented) and ``outcomes`` (the clicks on the
predictions, joined with them by the ``ctr`` calibration monitor; the model turns
over-confident with the drift episode).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import yaml
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from driftmon.testing import synth
from driftmon.testing.embedded import create_topics, free_port
from driftmon.testing.receiver import WebhookSink

ROOT = Path(__file__).resolve().parents[2]

WINDOW = 5.0  # seconds, tumbling
LATENESS = 2.0  # live ticks spread over partitions: covers fetch skew between them
RATE = 400.0  # events per second per stream (enough for a stable verdict in the smallest segment)
HISTORY = 40.0  # seconds of back-dated traffic ending now
DRIFT_AFTER = 15.0  # the drift episode starts this far into the history and never ends
TICK = 0.5  # live producer period
CAL_DELAY = 4.0  # calibration max_delay: clicks follow their prediction by up to half of it
SECRET = "deploy-test-secret"
RECEIVER = "oncall"

CATEGORIES = list(synth.CATEGORIES)
MALFORMED = (
    b"{not json",  # invalid_json
    b'{"ts": "yesterday", "item": {"id": "i1", "category": "books"}, "platform": "ios", "dwell_ms": 1.0}',  # bad_timestamp
    b'{"user_id": "u1"}',  # missing_field
    b"[1, 2]",  # bad_type
)


def config(bootstrap: str, topics: dict[str, str], group: str, listen: str, webhook: str, state: str) -> dict:
    """The daemon's config (YAML-able); the webhook secret comes from the environment."""
    return {
        "streams": [
            {
                "name": "interactions",
                "topic": topics["interactions"],
                "timestamp": {"field": "ts", "unit": "s"},
                "window": {"size": f"{WINDOW:g}s", "slide": f"{WINDOW:g}s", "allowed_lateness": f"{LATENESS:g}s"},
                "segment_by": ["platform"],
                "max_segments": 5,
                "features": [
                    {"name": "item_category", "field": "item.category", "type": "categorical",
                     "categories": CATEGORIES},
                    {"name": "dwell", "field": "dwell_ms", "type": "numeric",
                     "edges": [0, 1000, 2000, 3000, 4000, 6000, 9000, 15000, 1e9]},
                    # the no-drift control: a stricter p-value keeps its false-alarm chance over the
                    # test's ~40 windows x 4 series well below 1% (at 0.001 it was about 1 run in 5)
                    {"name": "item_id", "field": "item.id", "type": "categorical", "top_k": 10,
                     "detector": {"max_p_value": 1e-6}},
                ],
                # per-user interest drift: its aggregate series are on the dashboard
                "entities": {"key": "user_id", "feature": "item.category", "window": {"size": f"{WINDOW:g}s"},
                             "min_events": 2},
            },
            {
                "name": "predictions",
                "topic": topics["predictions"],
                "timestamp": {"field": "ts", "unit": "s"},
                "window": {"size": f"{WINDOW:g}s", "slide": f"{WINDOW:g}s", "allowed_lateness": f"{LATENESS:g}s"},
                "features": [
                    {"name": "score", "field": "score", "type": "numeric", "edges": [i / 10 for i in range(11)]},
                    {"name": "top_category", "field": "top_category", "type": "categorical",
                     "categories": CATEGORIES},
                ],
            },
            {
                "name": "outcomes",
                "topic": topics["outcomes"],
                "timestamp": {"field": "ts", "unit": "s"},
                "window": {"size": f"{WINDOW:g}s", "slide": f"{WINDOW:g}s", "allowed_lateness": f"{LATENESS:g}s"},
                "features": [{"name": "clicked", "field": "clicked", "type": "categorical",
                              "categories": ["true", "false"]}],
            },
        ],
        "calibration": [{
            "name": "ctr", "max_delay": f"{CAL_DELAY:g}s", "bins": 10,
            "predictions": {"stream": "predictions", "id": "request_id", "probability": "score"},
            "outcomes": {"stream": "outcomes", "id": "request_id", "label": "clicked"},
            "detector": {"min_count": 100},
        }],
        "detector": {
            "metric": "kl",
            "reference": "pinned",  # the first full window: the alerts stay up during the episode
            "min_count": 100,
            "thresholds": {"warn": 0.05, "critical": 0.1},
            "max_p_value": 0.001,
            "permutations": 199,
            "hysteresis": {"fire_after": 1, "resolve_after": 2},
        },
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "group_id": group,
            "client_id": "driftmon-deploy-test",
            "auto_offset_reset": "earliest",
            "session_timeout_ms": 5000,
            "heartbeat_interval_ms": 1000,
            "poll_timeout_ms": 200,
        },
        "http": {"listen": listen, "ready_broker_timeout": "15s"},
        "alerts": {"webhooks": [{
            "name": RECEIVER, "url": webhook, "secret": "${DRIFTMON_WEBHOOK_SECRET}",
            "timeout": "2s", "backoff_initial": 0.1, "backoff_max": "1s",
        }]},
        "state": {"dir": state, "checkpoint_interval": "2s"},
        "logging": {"level": "INFO"},
        "lifecycle": {"grace_period": "5s"},
    }


def traffic(start: float, end: float, episode: synth.Episode, seed: int) -> dict[str, list[bytes]]:
    """Encoded events of every stream stamped in ``[start, end)``, per stream (outcomes may
    be stamped up to CAL_DELAY after ``end``: a click follows its prediction)."""
    n = max(1, round((end - start) * RATE))
    rate = n / (end - start)  # exponential gaps: the last stamp lands near ``end``
    inter = synth.interactions(n, start=start, rate=rate, episode=episode, seed=seed, num_items=200)
    pred = synth.predictions(n, start=start, rate=rate, episode=episode, seed=10**6 + seed)
    pred = [{**p, "request_id": f"s{seed}-{i}"} for i, p in enumerate(pred)]  # unique over spans
    # clicks: with the predicted probability, then (drift episode) half as often: over-confident
    rng = np.random.default_rng(2 * 10**6 + seed)
    ts = np.array([p["ts"] for p in pred])
    score = np.array([p["score"] for p in pred])
    clicked = rng.random(ts.size) < np.where(ts >= episode.start, 0.5 * score, score)
    t_click = ts + rng.uniform(0.0, CAL_DELAY / 2, ts.size)
    outs = [{"ts": round(float(t_click[i]), 3), "request_id": pred[i]["request_id"], "clicked": True}
            for i in np.argsort(t_click, kind="stable").tolist() if clicked[i]]
    return {"interactions": list(synth.encode(inter)), "predictions": list(synth.encode(pred)),
            "outcomes": list(synth.encode(outs))}


class TrafficProducer:
    """Back-dated history at once, then live ticks from a thread until :meth:`stop`."""

    def __init__(self, bootstrap: str, topics: dict[str, str], t0: float):
        self.topics = topics
        self.t0 = t0
        self.episode = synth.Episode(t0 + DRIFT_AFTER, float("inf"))
        kw: dict[str, object] = {"bootstrap_servers": [bootstrap], "linger_ms": 10, "acks": 1}
        if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:  # as conftest.produce: tansu-safe
            kw["enable_idempotence"] = False
        self.producer = KafkaProducer(**kw)
        self.sent: dict[str, int] = defaultdict(int)
        self.malformed = 0
        self.late = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._seed = 0
        self._until = t0

    def _span(self, end: float, partition: int | None = None) -> None:
        self._seed += 1
        for stream, values in traffic(self._until, end, self.episode, self._seed).items():
            for v in values:
                self.producer.send(self.topics[stream], v, partition=partition)
            self.sent[stream] += len(values)
        self._until = end

    def backfill(self, until: float) -> None:
        """Produce the history ``[t0, until)`` (event time) and wait for the acks.

        It is spread over the partitions, which the consumer may read one after
        the other: every assigned partition holds the watermark back until it
        delivers, so none of it turns late.
        """
        self._span(until)
        self.producer.flush(timeout=60)

    def _tick(self) -> None:
        self._span(max(self._until + 0.05, time.time()))
        bad = MALFORMED[self._seed % len(MALFORMED)]
        self.producer.send(self.topics["interactions"], bad)
        self.malformed += 1
        ev = dict(next(synth.interactions(1, start=self.t0, seed=self._seed)))
        ev["ts"] = self.t0 + 0.5  # in the first window, closed long ago
        self.producer.send(self.topics["interactions"], orjson.dumps(ev))
        self.late += 1
        self.producer.flush(timeout=10)

    def start_live(self) -> TrafficProducer:
        def loop() -> None:
            try:
                while not self._stop.wait(TICK):
                    self._tick()
            except BaseException as exc:  # surfaced by the fixture
                self.error = exc

        self._thread = threading.Thread(target=loop, name="deploy-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.producer.close(timeout=5)


def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` of ``address`` as {sample name: [(labels, value)]}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name].append((dict(s.labels), s.value))
    return out


def _die_with_parent() -> list[str]:
    """SIGTERM the daemon if the test process dies (Linux util-linux ``setpriv``)."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class DriftmonTarget:
    """``python -m driftmon.cli run`` on a free loopback port, its broker topics,
    traffic and webhook receiver.  :meth:`start` returns once the daemon has
    closed windows, fired and delivered alerts, and exports lag and readiness."""

    def __init__(self, bootstrap: str, workdir: Path, name: str):
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.topics = {"interactions": f"{name}.interactions", "predictions": f"{name}.predictions",
                       "outcomes": f"{name}.outcomes"}
        self.group = f"{name}.driftmon"
        self.address = f"127.0.0.1:{free_port()}"
        self.sink = WebhookSink(secret=SECRET, status_sequence=[500])
        self.log_path = workdir / "driftmon.log"
        self.proc: subprocess.Popen | None = None
        self.traffic: TrafficProducer | None = None
        self.t0 = 0.0
        self.backfill_end = 0.0

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self, timeout: float = 45.0) -> DriftmonTarget:
        create_topics(self.bootstrap, [self.topics["interactions"]], partitions=2)
        create_topics(self.bootstrap, [self.topics["predictions"], self.topics["outcomes"]], partitions=1)
        cfg_path = self.workdir / "driftmon.yaml"
        cfg_path.write_text(yaml.safe_dump(config(
            self.bootstrap, self.topics, self.group, self.address, self.sink.url, str(self.workdir / "state"))))
        now = time.time()
        self.t0 = (now - HISTORY) // WINDOW * WINDOW  # history starts on a window boundary
        self.traffic = TrafficProducer(self.bootstrap, self.topics, self.t0)
        self.traffic.backfill(now)
        self.backfill_end = now
        env = {**os.environ, "DRIFTMON_WEBHOOK_SECRET": SECRET,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*_die_with_parent(), sys.executable, "-m", "driftmon.cli", "run", "-c", str(cfg_path)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        # Live traffic only once the history is counted: the watermark is per
        # stream, so live records read before the history would make it late.
        self._wait(timeout, self.history_missing)
        self.traffic.start_live()
        self._wait(timeout, self.missing)
        return self

    def _scrape(self) -> dict[str, list[tuple[dict[str, str], float]]] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"driftmon exited with {self.proc.returncode}:\n{self.log_tail()}")
        if self.traffic is not None and self.traffic.error is not None:
            raise AssertionError(f"traffic producer failed: {self.traffic.error!r}")
        try:
            return scrape(self.address)
        except OSError:
            return None

    def history_missing(self) -> list[str]:
        """Empty once every window of the back-dated history has closed."""
        m = self._scrape()
        if m is None:
            return ["/metrics"]
        due = int(HISTORY // WINDOW) - 1 - int(LATENESS // WINDOW + 1)
        return [f"history windows ({stream})" for stream in self.topics
                if sum(v for lab, v in m.get("driftmon_windows_closed_total", []) if lab["stream"] == stream) < due]

    def missing(self) -> list[str]:
        """What the daemon does not export yet (empty once it is warmed up)."""
        m = self._scrape()
        if m is None:
            return ["/metrics"]

        def values(name: str, **labels: str) -> list[float]:
            return [v for lab, v in m.get(name, []) if labels.items() <= lab.items()]

        out = []
        if values("driftmon_ready") != [1.0]:
            out.append("ready")
        for stream in self.topics:  # a window of the live traffic closed
            if not any(v >= self.backfill_end for v in values("driftmon_last_window_close_timestamp_seconds",
                                                               stream=stream)):
                out.append(f"live window closed ({stream})")
        for topic in self.topics.values():
            if not values("driftmon_consumer_lag", topic=topic):
                out.append(f"lag ({topic})")
        if not sum(values("driftmon_alerts_total", transition="fired")):
            out.append("an alert fired")
        for outcome in ("retry", "delivered"):
            if not sum(values("driftmon_webhook_deliveries_total", receiver=RECEIVER, outcome=outcome)):
                out.append(f"webhook outcome {outcome}")
        if not values("driftmon_webhook_outbox_size", receiver=RECEIVER):
            out.append("outbox size")
        if not values("driftmon_checkpoint_timestamp_seconds"):
            out.append("checkpoint")
        if not sum(values("driftmon_events_late_total")):
            out.append("late events")
        if not values("driftmon_divergence", segment="web"):
            out.append("segment series")
        if not values("driftmon_calibration_ece", calibration="ctr"):
            out.append("a calibration window scored")
        return out

    def _wait(self, timeout: float, missing_fn: Callable[[], list[str]]) -> None:
        deadline = time.monotonic() + timeout
        while missing := missing_fn():
            if time.monotonic() > deadline:
                raise AssertionError(f"driftmon not warmed up after {timeout:.0f}s, missing {missing}:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> int | None:
        """SIGTERM the daemon (it drains and exits 0), then stop traffic and the sink."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.traffic is not None:
            self.traffic.stop()
        self.sink.stop()
        return code
