"""The daemon against real parts: a tansu broker, real HTTP receivers, real scrapes.

Every test produces real events (``driftmon.testing.synth``, stamped an hour in the
past so event-time windows close as fast as the daemon reads), runs the daemon
in a thread (``Daemon.run``) or as ``python -m driftmon.cli run``, scrapes
``/metrics`` over HTTP and parses it with prometheus_client's parser, and
receives webhooks on :class:`driftmon.testing.receiver.WebhookSink` (signatures
verified).  Topics and groups are unique per test; the session broker is shared.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from driftmon import __version__
from driftmon.cli import replay
from driftmon.config import parse_config
from driftmon.detect.result import rfc3339
from driftmon.outputs.alerts.payload import alert_labels, fingerprint, severity_of
from driftmon.service.daemon import Daemon
from driftmon.testing import synth
from driftmon.testing.receiver import WebhookSink
from tests.conftest import current_client, unique_name

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
SECRET = "t0p-secret-for-tests"
RATE = 50.0  # events/s of event time: 3000 per 60 s window
WINDOW = 60.0
DWELL_EDGES = [0, 1000, 2000, 3000, 4000, 6000, 10000, 20000]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def stream_cfg(topic: str, *, segmented: bool = True, name: str = "interactions") -> dict[str, Any]:
    """One interactions stream with declared vocabularies/edges (no learning phase)."""
    s: dict[str, Any] = {
        "name": name,
        "topic": topic,
        "timestamp": {"field": "ts", "unit": "s"},
        "window": {"size": f"{WINDOW:g}s", "slide": f"{WINDOW:g}s", "allowed_lateness": 0},
        "features": [
            {"name": "item_category", "field": "item.category", "type": "categorical",
             "categories": list(synth.CATEGORIES)},
            {"name": "dwell", "field": "dwell_ms", "type": "numeric", "edges": DWELL_EDGES},
        ],
    }
    if segmented:
        s.update(segment_by=["platform"], max_segments=5)
    return s


def daemon_cfg(bootstrap: str, topic: str, state_dir: Path, *, webhooks: list[dict] | None = None,
               segmented: bool = True, **extra: Any) -> dict[str, Any]:
    """A config document as a user would write it (parsed by ``parse_config``)."""
    doc: dict[str, Any] = {
        "streams": [stream_cfg(topic, segmented=segmented)],
        "detector": {
            "metric": "kl", "reference": "pinned", "min_count": 300,
            "thresholds": {"warn": 0.05, "critical": 0.1}, "max_p_value": 0.001,
            "hysteresis": {"fire_after": 1, "resolve_after": 1},
        },
        "kafka": {
            "client": current_client(),
            "bootstrap_servers": [bootstrap],
            "group_id": unique_name("driftmon"),
            "auto_offset_reset": "earliest",
            "session_timeout_ms": 5000,
            "heartbeat_interval_ms": 1000,
            "max_poll_interval_ms": 10000,
            "poll_timeout_ms": 200,
        },
        "http": {"listen": "127.0.0.1:0", "ready_broker_timeout": "15s"},
        "alerts": {"webhooks": webhooks or []},
        "state": {"dir": str(state_dir), "checkpoint_interval": "1s"},
        "sinks": {"jsonl": str(state_dir / "results.jsonl")},
        "lifecycle": {"grace_period": "5s"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def hook(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "secret": SECRET, "timeout": "2s",
            "backoff_initial": "50ms", "backoff_max": "200ms", **kw}


def drift_events(windows: int, drift: tuple[int, int], seed: int = 11) -> list[bytes]:
    """``windows`` minutes of interactions an hour ago, drifting in windows [drift)."""
    base = math.floor((time.time() - 3600) / WINDOW) * WINDOW
    episode = synth.Episode(base + drift[0] * WINDOW, base + drift[1] * WINDOW)
    # start 1 s into the first window, so it is (nearly) full and becomes the pinned reference
    return list(synth.encode(synth.interactions(int(windows * WINDOW * RATE) - 100, start=base + 1.0,
                                                rate=RATE, episode=episode, seed=seed)))


def send(bootstrap: str, topic: str, records: list, partition: int | None = 0) -> None:
    """Produce ``records`` (bytes, or (value, key, headers) tuples) in order; wait for acks."""
    kw: dict[str, Any] = {"bootstrap_servers": bootstrap, "linger_ms": 5, "acks": 1,
                          "batch_size": 256 * 1024}
    if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
        kw["enable_idempotence"] = False
    producer = KafkaProducer(**kw)
    try:
        futures = []
        for r in records:
            value, key, headers = r if isinstance(r, tuple) else (r, None, None)
            futures.append(producer.send(topic, value=value, key=key, headers=headers, partition=partition))
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=10)
    finally:
        producer.close(timeout=5)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with _NO_PROXY.open(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Scrape:
    """One parsed ``/metrics`` scrape."""

    def __init__(self, text: str):
        self.text = text
        self.samples = [(s.name, s.labels, s.value)
                        for fam in text_string_to_metric_families(text) for s in fam.samples]

    def all(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, v) for n, lab, v in self.samples
                if n == name and all(lab.get(k) == val for k, val in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        """The single sample matching exactly these labels (fails if absent)."""
        hits = [v for lab, v in self.all(name, **labels) if set(lab) == set(labels)]
        assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples\n{self.grep(name)}"
        return hits[0]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        hits = [v for lab, v in self.all(name, **labels) if set(lab) == set(labels)]
        return hits[0] if hits else default

    def grep(self, name: str) -> str:
        return "\n".join(line for line in self.text.splitlines() if line.startswith(name))


def scrape(address: str) -> Scrape:
    status, body = http_get(f"http://{address}/metrics")
    assert status == 200
    return Scrape(body.decode())


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``pred`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@contextmanager
def running(cfg_doc: dict[str, Any]) -> Iterator[Daemon]:
    """Run a Daemon in a thread; stop it (drain, checkpoint, commit, flush) on exit."""
    daemon = Daemon(parse_config(cfg_doc))
    daemon.start_http()
    status, body = http_get(f"http://{daemon.server.address}/readyz")
    assert (status, body) == (503, b"starting\n")  # not ready before the consumer exists
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["code"] = daemon.run()
        except BaseException as exc:  # surfaced below
            box["error"] = exc

    thread = threading.Thread(target=target, name="daemon-under-test", daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        daemon.stop_event.set()
        thread.join(30)
    assert not thread.is_alive(), "daemon did not stop within 30 s"
    if "error" in box:
        raise box["error"]
    assert box["code"] == 0


def processed(daemon: Daemon, n: int, stream: str = "interactions") -> Scrape | None:
    s = scrape(daemon.server.address)
    return s if s.get("driftmon_events_total", stream=stream) >= n else None


def results_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def expected_firing_keys(rows: list[dict[str, Any]]) -> set[str]:
    """Idempotency keys of the firing notifications the results imply (one per fired transition)."""
    keys = set()
    for r in rows:
        if r["transition"] == "fired":
            res = SimpleNamespace(**{k: r[k] for k in ("stream", "feature", "segment", "severity", "state")})
            fp = fingerprint(alert_labels(res, severity_of(res)))  # type: ignore[arg-type]
            keys.add(f"{fp}:firing:{r['window_end']}")
    return keys


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_end_to_end_drift_fires_and_resolves_metrics_webhooks_and_replay_agree(kafka_broker, fresh_topic, tmp_path):
    """Drift in windows 3-5 of 10: the daemon fires, then resolves; /metrics, the signed
    webhooks and the jsonl results sink all tell the same story as ``driftmon replay``."""
    topic = fresh_topic(partitions=1)
    events = drift_events(10, drift=(3, 6))
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(events) + b"\n")
    sink = WebhookSink(secret=SECRET)
    doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / "state", webhooks=[hook("oncall", sink.url)])
    try:
        with running(doc) as daemon:
            addr = daemon.server.address
            assert http_get(f"http://{addr}/healthz")[0] == 200
            wait_until(lambda: http_get(f"http://{addr}/readyz")[0] == 200, 30, "/readyz 200 after assignment")
            send(kafka_broker.bootstrap, topic, events)
            wait_until(lambda: processed(daemon, len(events)), 60, f"{len(events)} events consumed")
            # firing and resolved notifications for the overall item_category series at least
            wait_until(lambda: {a.json["status"] for a in sink.accepted()} >= {"firing", "resolved"}, 30,
                       "firing and resolved webhooks")
            s = wait_until(lambda: (lambda sc: sc if sc.get("driftmon_consumer_lag", -1, topic=topic,
                                                             partition="0") == 0 else None)(scrape(addr)),
                           15, "consumer lag 0")
            assert http_get(f"http://{addr}/readyz")[0] == 200
        rows = results_rows(tmp_path / "state" / "results.jsonl")
    finally:
        sink.stop()

    # -- the detector fired during the episode and resolved after it --------------------------
    overall = [r for r in rows if r["feature"] == "item_category" and r["segment"] is None]
    transitions = [r["transition"] for r in overall]
    assert "fired" in transitions and "resolved" in transitions
    assert transitions.index("fired") < len(transitions) - 1 - transitions[::-1].index("resolved")
    assert overall[-1]["state"] == "ok" and overall[-1]["severity"] is None

    # -- results sink == driftmon replay over the same events (the windows the daemon closed) --
    cfg = parse_config(doc)
    out = io.StringIO()
    summary = replay(cfg, str(events_file), "json", None, False, out)
    replayed = [json.loads(line) for line in out.getvalue().splitlines()][:-1]
    assert rows == replayed
    assert summary["events"] == len(events) and summary["windows"] == len({r["window_end"] for r in rows})

    # -- /metrics: names, labels and values agree with the results ----------------------------
    last = {(r["feature"], r["segment"] or ""): r for r in rows}
    key = {"stream": "interactions", "feature": "item_category", "segment": ""}
    r = last[("item_category", "")]
    assert s.value("driftmon_divergence", **key, metric="kl") == pytest.approx(r["divergence"])
    assert 0.0 <= s.value("driftmon_p_value", **key) <= 1.0
    assert s.value("driftmon_p_value", **key) == pytest.approx(r["p_value"])
    assert s.value("driftmon_alert_state", **key) == 0  # resolved by the last window
    assert s.value("driftmon_threshold", **key, level="warn") == 0.05
    assert s.value("driftmon_threshold", **key, level="critical") == 0.1
    assert s.value("driftmon_window_events", **key) == r["n_current"] > 2500
    for (feature, segment), row in last.items():  # every series, segments included
        lab = {"stream": "interactions", "feature": feature, "segment": segment}
        assert s.value("driftmon_window_events", **lab) == row["n_current"]
        assert {lab2["metric"] for lab2, _ in s.all("driftmon_divergence", **lab)} == {"kl"}
    assert {lab["segment"] for lab, _ in s.all("driftmon_divergence")} == {"", "ios", "android", "web"}
    assert s.value("driftmon_events_total", stream="interactions") == len(events)
    assert s.value("driftmon_events_decoded_total", stream="interactions") == len(events)
    assert s.value("driftmon_windows_closed_total", stream="interactions") == len({r["window_end"] for r in rows})
    last_end = max(r["window_end"] for r in rows)
    assert rfc3339(s.value("driftmon_last_window_close_timestamp_seconds", stream="interactions")) == last_end
    assert s.value("driftmon_consumer_lag", topic=topic, partition="0") == 0
    assert s.value("driftmon_consumer_rebalances_total", group=doc["kafka"]["group_id"]) >= 1  # (absent: not counted)
    assert s.value("driftmon_build_info", version=__version__) == 1
    assert s.value("driftmon_ready") == 1
    fired = sum(r["transition"] == "fired" for r in rows)
    assert s.value("driftmon_alerts_total", **key, transition="fired") == sum(
        r["transition"] == "fired" for r in overall) >= 1
    assert sum(v for lab, v in s.all("driftmon_alerts_total", transition="fired")) == fired

    # -- webhooks: Alertmanager v4 bodies, valid signatures, each alert once ---------------------
    got = sink.accepted()
    assert got and all(a.signature_valid is True for a in got)
    assert all(a.headers["x-driftmon-signature"].startswith("sha256=") for a in got)
    keys = Counter(a.idempotency_key for a in got)
    assert all(n == 1 for n in keys.values()), keys
    assert {k for k in keys if ":firing:" in k} == expected_firing_keys(rows)
    for a in got:
        body = a.json
        assert body["version"] == "4" and body["receiver"] == "oncall" and body["status"] in ("firing", "resolved")
        assert set(body) >= {"groupKey", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts"}
        (alert,) = body["alerts"]
        assert set(alert) >= {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"}
        lab = alert["labels"]
        assert lab["alertname"] == "DriftDetected" and lab["severity"] in ("warning", "critical")
        assert lab["stream"] == "interactions" and lab["feature"] in ("item_category", "dwell")
        assert alert["fingerprint"] == fingerprint(lab)
        assert a.idempotency_key == body["driftmon"]["idempotency_key"]
        ann = alert["annotations"]
        for field in ("divergence", "p_value", "warn_threshold", "critical_threshold",
                      "window_start", "window_end", "n_current", "n_reference", "top_bins"):
            assert ann[field] != "", field
        top = json.loads(ann["top_bins"])
        assert top and {"bin", "before", "after", "contribution"} <= set(top[0])
        if alert["status"] == "resolved":
            assert alert["endsAt"] >= alert["startsAt"]
    resolved = {(a.json["alerts"][0]["labels"]["feature"], a.json["alerts"][0]["labels"]["segment"])
                for a in got if a.json["status"] == "resolved"}
    assert ("item_category", "") in resolved
    assert s.value("driftmon_webhook_deliveries_total", receiver="oncall", outcome="delivered") >= 1


def test_malformed_and_late_events_are_counted_by_reason_and_dead_lettered(kafka_broker, fresh_topic, tmp_path):
    topic, dlq = fresh_topic(partitions=1), fresh_topic(partitions=1, prefix="dlq")
    good = drift_events(5, drift=(9, 9), seed=3)  # 5 clean minutes
    first_ts = orjson.loads(good[0])["ts"]
    ok_event = orjson.loads(good[-1])
    bad = [  # (value, reason): each sent with its own key and headers
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_json"),
        (b"[1, 2, 3]", "bad_type"),
        (orjson.dumps({**ok_event, "item": {"id": "i1", "category": {"nested": 1}}}), "bad_type"),
        (orjson.dumps({**ok_event, "dwell_ms": "long"}), "bad_type"),
        (orjson.dumps({k: v for k, v in ok_event.items() if k != "ts"}), "missing_field"),
        (orjson.dumps({**ok_event, "ts": "yesterday"}), "bad_timestamp"),
        (orjson.dumps({**ok_event, "ts": time.time() + 10 * 86400}), "bad_timestamp"),  # far future
        (orjson.dumps({**ok_event, "ts": first_ts + 5}), "late"),  # its window closed minutes ago
        (orjson.dumps({**ok_event, "ts": first_ts + 65}), "late"),
    ]
    records: list[tuple[bytes, bytes | None, list | None]] = [(v, None, None) for v in good[:9000]]
    where: dict[int, tuple[bytes, str, bytes]] = {}  # offset -> (value, reason, key)
    for i, (value, reason) in enumerate(bad):
        key = f"bad-{i}".encode()
        where[len(records)] = (value, reason, key)
        records.append((value, key, [("trace-id", f"t{i}".encode()), ("driftmon-reason", b"stale")]))
        records.extend((v, None, None) for v in good[9000 + 100 * i: 9100 + 100 * i])
    records.extend((v, None, None) for v in good[9000 + 100 * len(bad):])

    doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / "state", segmented=False,
                     kafka={"dead_letter_topic": dlq})
    with running(doc) as daemon:
        send(kafka_broker.bootstrap, topic, records)
        s = wait_until(lambda: processed(daemon, len(records)), 60, "all records consumed")

    want = Counter(reason for _, reason in bad)
    for reason in ("invalid_json", "bad_type", "missing_field", "bad_timestamp", "late"):
        assert s.value("driftmon_events_rejected_total", stream="interactions", reason=reason) == want[reason], reason
    assert s.value("driftmon_events_late_total", stream="interactions") == want["late"]
    assert s.value("driftmon_events_total", stream="interactions") == len(records)
    assert s.value("driftmon_events_decoded_total", stream="interactions") == len(records) - len(bad) + want["late"]
    assert s.value("driftmon_windows_closed_total", stream="interactions") >= 3  # the consumer never stopped

    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=500)
    try:
        consumer.assign([TopicPartition(dlq, 0)])
        consumer.seek_to_beginning()
        dead: list = []
        wait_until(lambda: dead.extend(consumer) or len(dead) >= len(bad), 30, "dead letters")
    finally:
        consumer.close()
    assert len(dead) == len(bad)
    for d in dead:
        h = dict(d.headers)
        offset = int(h["driftmon-source-offset"])
        value, reason, key = where[offset]
        assert d.value == value and d.key == key  # the original bytes, untouched
        assert h["driftmon-reason"] == reason.encode()
        assert h["driftmon-source-topic"] == topic.encode()
        assert h["driftmon-source-partition"] == b"0"
        assert ("trace-id", f"t{list(where).index(offset)}".encode()) in d.headers  # original headers kept
        assert [k for k, _ in d.headers].count("driftmon-reason") == 1  # the stale one was replaced
    assert sorted(int(dict(d.headers)["driftmon-source-offset"]) for d in dead) == sorted(where)


def test_receiver_answering_500_then_200_gets_each_alert_exactly_once(kafka_broker, fresh_topic, tmp_path):
    topic = fresh_topic(partitions=1)
    events = drift_events(6, drift=(2, 4), seed=5)
    sink = WebhookSink(secret=SECRET, status_sequence=[500])
    doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / "state", segmented=False,
                     webhooks=[hook("flaky", sink.url)])
    try:
        with running(doc) as daemon:
            send(kafka_broker.bootstrap, topic, events)
            wait_until(lambda: processed(daemon, len(events)), 60, "events consumed")
            wait_until(lambda: {a.json["status"] for a in sink.accepted()} >= {"firing", "resolved"}, 30,
                       "firing and resolved delivered")
            wait_until(lambda: sum(daemon.dispatcher.pending().values()) == 0, 15, "outbox drained")
            s = scrape(daemon.server.address)
        rows = results_rows(tmp_path / "state" / "results.jsonl")
    finally:
        sink.stop()

    first, accepted = sink.received[0], sink.accepted()
    assert first.status == 500 and first.signature_valid is True
    keys = Counter(a.idempotency_key for a in accepted)
    assert keys[first.idempotency_key] == 1  # retried with the same key, accepted once
    assert all(n == 1 for n in keys.values()), keys
    assert len(sink.received) == len(accepted) + 1  # exactly one failed attempt in all
    assert {k for k in keys if ":firing:" in k} == expected_firing_keys(rows)
    assert all(a.signature_valid is True for a in accepted)
    assert s.value("driftmon_webhook_deliveries_total", receiver="flaky", outcome="retry") == 1
    assert s.value("driftmon_webhook_deliveries_total", receiver="flaky", outcome="delivered") == len(accepted)
    assert s.get("driftmon_webhook_deliveries_total", receiver="flaky", outcome="failed") == 0


# -- the real command, as a subprocess ------------------------------------------------------------


class DaemonProcess:
    """``python -m driftmon.cli run -c FILE``; finds its /metrics address in the log."""

    def __init__(self, config_file: Path, wait_for_address: bool = True):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "driftmon.cli", "run", "-c", str(config_file)],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.address: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_for_address:
            wait_until(lambda: self.address or self.proc.poll() is not None, 30, "the daemon's http address")
            assert self.address, f"daemon exited early ({self.proc.returncode}):\n{self.log}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            m = re.search(r"serving /metrics /healthz /readyz on http://([0-9.]+:[0-9]+)", line)
            if m:
                self.address = m.group(1)

    @property
    def log(self) -> str:
        return "\n".join(self.lines[-40:])

    def scrape(self) -> Scrape:
        assert self.address
        return scrape(self.address)

    def terminate(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"daemon did not exit within {timeout}s of SIGTERM:\n{self.log}")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _lag_zero(proc: DaemonProcess, topic: str, partitions: int, n: int) -> Scrape | None:
    s = proc.scrape()
    lags = [s.get("driftmon_consumer_lag", -1, topic=topic, partition=str(p)) for p in range(partitions)]
    return s if all(v == 0 for v in lags) and s.get("driftmon_events_total", stream="interactions") >= n else None


def test_sigterm_commits_offsets_and_a_restarted_daemon_does_not_reread(kafka_broker, fresh_topic, tmp_path):
    topic = fresh_topic(partitions=3)
    doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / "state", segmented=False,
                     webhooks=[hook("oncall", "http://127.0.0.1:9/hook")],  # its secret must never be logged
                     logging={"level": "DEBUG", "format": "json"},
                     state={"checkpoint_interval": "60s"})  # only the SIGTERM path checkpoints and commits
    grace = 5.0
    config_file = tmp_path / "driftmon.yaml"
    config_file.write_text(yaml.safe_dump(doc))
    events = drift_events(4, drift=(9, 9), seed=9)
    first = {p: events[p * 1000:(p + 1) * 1000] for p in range(3)}
    second = {p: events[3000 + p * 200:3000 + (p + 1) * 200] for p in range(3)}

    proc = DaemonProcess(config_file)
    try:
        wait_until(lambda: http_get(f"http://{proc.address}/readyz")[0] == 200, 30, "/readyz 200")
        for p, vals in first.items():
            send(kafka_broker.bootstrap, topic, vals, partition=p)
        wait_until(lambda: _lag_zero(proc, topic, 3, 3000), 30, "first 3000 events consumed")
        assert proc.terminate(timeout=grace + 5) == 0, proc.log
    finally:
        proc.kill()

    group = doc["kafka"]["group_id"]
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)} == {0: 1000, 1: 1000, 2: 1000}
    finally:
        consumer.close(autocommit=False)

    for p, vals in second.items():
        send(kafka_broker.bootstrap, topic, vals, partition=p)
    proc = DaemonProcess(config_file)
    try:
        s = wait_until(lambda: _lag_zero(proc, topic, 3, 600), 30, "the 600 new events consumed")
        assert s.value("driftmon_events_total", stream="interactions") == 600  # nothing reread
        assert proc.terminate(timeout=grace + 5) == 0, proc.log
    finally:
        proc.kill()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)} == {0: 1200, 1: 1200, 2: 1200}
    finally:
        consumer.close(autocommit=False)
    logged = [json.loads(line) for line in proc.lines if line.startswith("{")]
    assert logged and {"debug", "info"} <= {d["level"] for d in logged}
    assert SECRET not in "\n".join(proc.lines)
