"""Crash safety: kill -9 the real daemon at seeded random moments, compare with replay.

The daemon (``python -m driftmon.cli run``) consumes a fixed stream of 200k+
events from a real tansu broker and is SIGKILLed six times at seeded random
progress points (the first one within the first few windows), restarted each
time, then left to finish.  The features include an open-vocabulary ``top_k``
feature and a quantile-binned numeric one, whose bins are chosen at each
comparison from the windows' mergeable summaries.  Its
results sink must then hold, for every window ``driftmon replay`` closes, a
row equal to replay's (histogram bin by bin, divergence, p-value, alert
transition), repeated rows identical, nothing missing and nothing extra; the
checkpointed counters must equal replay's summary (each event counted once).

Also here: checkpoints of every kind of pipeline state round-trip in process,
and a bad checkpoint stops the daemon with exit code 3 until ``--reset-state``.

:class:`DaemonProcess` and :func:`scrape` are shared with test_outage.py and
test_security.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from driftmon.config import parse_config
from driftmon.detect.result import rfc3339
from driftmon.pipeline import StreamPipeline
from driftmon.service.checkpoint import CheckpointError, CheckpointStore, config_fingerprint, describe
from driftmon.service.daemon import Daemon
from driftmon.testing import synth
from driftmon.testing.embedded import create_topics
from tests.conftest import current_client, produce, unique_name

REPO = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"serving /metrics /healthz /readyz on http://([0-9.]+):(\d+)")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
EXIT_BAD_CHECKPOINT = 3

# ---------------------------------------------------------------------------------------------
# Shared helpers: the daemon as a subprocess, its /metrics
# ---------------------------------------------------------------------------------------------


class DaemonProcess:
    """``python -m driftmon.cli run -c CONFIG`` as a child process; each start
    logs to its own file (``<workdir>/daemon-<n>.log``)."""

    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None):
        self.config, self.workdir = config, workdir
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log_path = workdir / "daemon-0.log"
        self._url: str | None = None

    def start(self, *args: str) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self.log_path = self.workdir / f"daemon-{self.runs}.log"
        self._url = None
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driftmon.cli", "run", "-c", str(self.config), *args],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        return self

    def run(self, *args: str, timeout: float = 60) -> tuple[int, str]:
        """Start and wait for exit (for runs that must fail fast): (code, log)."""
        self.start(*args)
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"daemon did not exit within {timeout}s:\n{self.log()}")
        return code, self.log()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> str:
        """Every run's output, in order."""
        return "".join((self.workdir / f"daemon-{i}.log").read_text(errors="replace")
                       for i in range(1, self.runs + 1) if (self.workdir / f"daemon-{i}.log").exists())

    def url(self, timeout: float = 30) -> str:
        """Base URL of /metrics, /healthz, /readyz (parsed from the startup log line)."""
        deadline = time.monotonic() + timeout
        while self._url is None:
            m = SERVING.search(self.log())
            if m:
                self._url = f"http://{m.group(1)}:{m.group(2)}"
                break
            if not self.alive:
                pytest.fail(f"daemon exited with {self.proc.returncode if self.proc else None}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"daemon never served HTTP:\n{self.log()}")
            time.sleep(0.05)
        return self._url

    def get(self, path: str) -> tuple[int, str]:
        try:
            with _NO_PROXY.open(self.url() + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        return scrape(self.get("/metrics")[1])

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the clean drain; returns the exit code."""
        assert self.proc is not None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"daemon did not stop within {timeout}s of SIGTERM:\n{self.log()}")
        return self.proc.returncode


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text -> {(sample name, frozenset(labels)): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(metrics: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in metrics.items() if n == name and want <= lab)


def wait_until(cond, timeout: float, what: str, proc: DaemonProcess | None = None, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and not proc.alive:
            pytest.fail(f"daemon died while waiting for {what}:\n{proc.log()[-4000:]}")
        if time.monotonic() > deadline:
            tail = proc.log()[-4000:] if proc is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(interval)


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def read_rows(path: Path) -> list[dict]:
    """Results-sink rows; every line must be one whole JSON object (no torn writes)."""
    rows = []
    for i, line in enumerate(path.read_bytes().split(b"\n")):
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path} line {i + 1} is not one JSON row (torn write?): {line[:200]!r}")
    return rows


def assert_no_driftmon_traceback(log: str) -> None:
    """No exception escaped through driftmon code (kafka-python may log its own
    socket errors with a traceback while a broker goes away; those are fine)."""
    frame = f'File "{REPO / "driftmon"}'
    assert frame not in log, log[max(0, log.find(frame) - 2000):log.find(frame) + 2000]


def row_key(r: dict) -> tuple:
    return (r["stream"], r["feature"], r["segment"], r["window_start"], r["window_end"])


def checkpoint_offsets(state_dir: Path) -> dict[tuple[str, int], int]:
    try:
        return {(t, p): o for t, p, o in describe(str(state_dir))["offsets"]}
    except CheckpointError:
        return {}


# ---------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------

N_EVENTS = 200_000
START = 1_600_000_000.0  # historical event times: the windows close on event time only
RATE = 100.0  # events per second of event time: 200k events span ~2000 s, ~33 windows of 60 s
SEED = 20240605
FEATURES = [
    {"name": "item_category", "field": "item.category", "type": "categorical",
     "categories": list(synth.CATEGORIES)},
    {"name": "item_id", "field": "item.id", "type": "categorical", "top_k": 25},
    {"name": "dwell", "field": "dwell_ms", "type": "numeric", "bins": "quantile", "num_bins": 12},
]


def make_events(n: int = N_EVENTS, seed: int = SEED, late: float = 0.001, drift: tuple = (700, 1300)) -> list[bytes]:
    """Synthetic interactions with a drift episode, plus ~0.5% hostile records
    (rejected) and ~0.1% events older than allowed_lateness (late): both must
    be handled identically by the daemon and by replay."""
    episode = synth.Episode(START + drift[0], START + drift[1], strength=1.0)
    events = list(synth.encode(synth.interactions(n, start=START, rate=RATE, episode=episode, seed=seed)))
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    hostile = [b"not json", b'{"ts": "yesterday", "item": {"category": "books"}}', b"[1, 2, 3]",
               b'{"item": {"category": "books"}}', b'{"ts": 1e400}', b'{"ts": 1600000000, "dwell_ms": "long"}']
    for i, e in enumerate(events):
        u = rng.random()
        if u < 0.005:
            out.append(hostile[i % len(hostile)])
        elif u < 0.005 + late:
            d = json.loads(e)
            d["ts"] -= 400.0  # beyond allowed_lateness (30 s) once its window closed
            e = json.dumps(d).encode()
        out.append(e)
    return out


def stream_config(topic: str, idle_topic: str, bootstrap: str, state: Path, group: str, **kafka: object) -> dict:
    return {
        "streams": [
            {"name": "interactions", "topic": topic, "timestamp": {"field": "ts", "unit": "s"},
             "window": {"size": "60s", "slide": "60s", "allowed_lateness": "30s"},
             "segment_by": ["platform"], "max_segments": 5, "features": FEATURES},
            # Never sees an event: its checkpointed watermark stays -inf (once written as null and
            # fatal on restart) and its partition never gets a checkpointed offset.
            {"name": "predictions", "topic": idle_topic, "window": {"size": "60s"},
             "features": [{"name": "score", "type": "numeric", "edges": [0.0, 0.5, 1.0]}]},
        ],
        "detector": {"metric": "kl", "reference": "previous", "min_count": 200, "max_p_value": 0.001,
                     "thresholds": {"warn": 0.05, "critical": 0.1},
                     "hysteresis": {"fire_after": 1, "resolve_after": 2}},
        "kafka": {"client": current_client(), "bootstrap_servers": [bootstrap], "group_id": group, "client_id": "driftmon-crash",
                  "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000, "poll_timeout_ms": 200,
                  "max_poll_records": 2000, **kafka},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"dir": str(state), "checkpoint_interval": "0.25s"},
        "sinks": {"jsonl": str(state / "results.jsonl")},
        "lifecycle": {"grace_period": "5s"},
    }


def replay_rows(cfg_path: Path, events_path: Path) -> tuple[list[dict], dict]:
    """``driftmon replay --format json --no-flush`` (the daemon also leaves the last windows open)."""
    out = subprocess.run(
        [sys.executable, "-m", "driftmon.cli", "replay", "-c", str(cfg_path), str(events_path), "--format", "json",
         "--no-flush"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, check=True,
    )
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    return [x for x in lines if "summary" not in x], lines[-1]["summary"]


# ---------------------------------------------------------------------------------------------
# kill -9 against the real broker
# ---------------------------------------------------------------------------------------------


def kill_restart_finish(daemon: DaemonProcess, state: Path, topic: str, per_partition: dict[int, int],
                        targets: list[int], rng: random.Random) -> list[tuple[int, int]]:
    """SIGKILL the daemon once it has consumed past each target (records, all
    partitions), restart it, then let it checkpoint every record and stop it
    cleanly.  Returns (target, records covered by the checkpoint at the kill)."""

    def checkpointed() -> int:
        offsets = checkpoint_offsets(state)
        return sum(offsets.get((topic, p), 0) for p in per_partition)

    kills = []
    for target in targets:
        start = checkpointed()
        daemon.start()
        daemon.url()

        def consumed() -> bool:
            return start + sample(daemon.metrics(), "driftmon_events_total", stream="interactions") >= target  # noqa: B023

        wait_until(consumed, 90, f"the daemon to pass record {target}", daemon, interval=0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        daemon.kill()
        kills.append((target, checkpointed()))
    daemon.start()
    want = {(topic, p): n for p, n in per_partition.items()}
    wait_until(lambda: {k: v for k, v in checkpoint_offsets(state).items() if k[0] == topic} == want, 120,
               "the daemon to checkpoint the whole stream", daemon)
    assert daemon.stop() == 0
    log = daemon.logs()
    assert log.count("restored checkpoint") == len(targets), log[-3000:]  # every restart resumed from state
    assert_no_driftmon_traceback(log)
    return kills


def compare_with_replay(got: list[dict], expected: list[dict]) -> int:
    """Every row the daemon wrote equals replay's row for its window (counts bin
    by bin, divergence, p-value, state, transition); repeats are identical;
    every replay window is there; same alerts.  Returns the number of repeats."""
    by_key: dict[tuple, list[dict]] = {}
    for r in got:
        by_key.setdefault(row_key(r), []).append(r)
    want = {row_key(r): r for r in expected}
    assert len(want) == len(expected)
    for key, rows in by_key.items():
        assert all(r == rows[0] for r in rows), f"rows repeated after a crash differ for {key}"
        assert key in want, f"daemon closed a window replay did not: {key}"
        assert rows[0]["bins"] == want[key]["bins"], (
            f"bins differ for {key}: they are chosen from the pooled summaries of the two windows, which "
            "must not depend on how the events were consumed")
        assert rows[0]["counts"] == want[key]["counts"], f"histogram differs for {key}"
        assert rows[0] == want[key], f"result differs from replay for {key}"
    assert set(by_key) == set(want), f"windows missing from the sink: {sorted(set(want) - set(by_key))[:5]}"

    def alerts(rows):
        return {(*row_key(r), r["transition"], r["severity"]) for r in rows if r["transition"] != "none"}

    assert alerts(got) == alerts(expected)
    transitions = {a[-2] for a in alerts(expected)}
    assert transitions == {"fired", "resolved"}, transitions
    return sum(len(v) - 1 for v in by_key.values())


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.one_client  # test-time budget: kill -9 and restore run with both clients in the 3-partition test below
def test_kill9_six_times_then_every_window_equals_replay(kafka_broker, tmp_path):
    """One partition: the daemon sees the events in replay's order, so every
    result (bins, late events included) must equal replay's."""
    events = make_events()
    total = len(events)
    topic, idle = unique_name("crash"), unique_name("crash-idle")
    create_topics(kafka_broker.bootstrap, [topic, idle], partitions=1)
    produce(kafka_broker.bootstrap, topic, events, partition=0)
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"\n".join(events) + b"\n")
    state = tmp_path / "state"
    cfg_path = write_config(tmp_path / "driftmon.yaml",
                            stream_config(topic, idle, kafka_broker.bootstrap, state, unique_name("crash-group")))
    expected, summary = replay_rows(cfg_path, events_path)

    rng = random.Random(SEED)
    # Kill points in records consumed (seeded): one within the first windows, five spread over the rest.
    targets = [rng.randrange(4_000, 16_000)]
    targets += sorted(rng.sample(range(25_000, total - 10_000), 5))
    kills = kill_restart_finish(DaemonProcess(cfg_path, tmp_path), state, topic, {0: total}, targets, rng)

    # Each event counted exactly once: the checkpointed counters equal replay's.
    snap = describe(str(state))["streams"]
    assert snap["interactions"]["events"] == summary["events"] == total
    assert snap["interactions"]["rejected"] == summary["rejected"] and sum(summary["rejected"].values()) > 0
    assert snap["interactions"]["late"] == summary["late"] > 0
    assert snap["interactions"]["windows_closed"] == summary["windows"]
    assert snap["predictions"]["events"] == 0

    got = read_rows(state / "results.jsonl")
    assert len(expected) > 300
    repeated = compare_with_replay(got, expected)
    print(f"kills (target, checkpointed records): {kills}; {len(got)} rows, {repeated} repeated after crashes")


@pytest.mark.kafka
@pytest.mark.slow
def test_kill9_with_three_partitions_equals_replay_in_timestamp_order(kafka_broker, tmp_path):
    """Three partitions, events spread round-robin in timestamp order, declared,
    open-vocabulary and quantile features.  tansu hands the consumer one whole partition before the next, so the
    cross-partition skew is the whole stream: only per-partition watermarks in
    which an assigned partition holds the watermark back until it delivers (or
    is idle) make the result independent of the interleaving.  Then it equals
    replay of the timestamp-ordered file, except for the windows the slowest
    partition still holds open at the end; and no window closes twice."""
    lateness = 30.0
    events = make_events(60_000, seed=SEED + 1, late=0.0, drift=(200, 400))
    topic, idle = unique_name("crash3"), unique_name("crash3-idle")
    create_topics(kafka_broker.bootstrap, [topic, idle], partitions=3)
    per_partition = {}
    for p in range(3):
        per_partition[p] = produce(kafka_broker.bootstrap, topic, events[p::3], partition=p)
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"\n".join(events) + b"\n")
    state = tmp_path / "state"
    doc = stream_config(topic, idle, kafka_broker.bootstrap, state, unique_name("crash3-group"))
    doc["streams"][0]["window"]["allowed_lateness"] = lateness
    doc["streams"][0]["features"] = FEATURES + [
        {"name": "dwell_edges", "field": "dwell_ms", "type": "numeric", "edges": [0, 500, 1000, 2000, 4000, 8000, 16000]}]
    cfg_path = write_config(tmp_path / "driftmon.yaml", doc)
    expected, summary = replay_rows(cfg_path, events_path)
    assert summary["late"] == 0

    # The daemon's watermark is the minimum over partitions of their largest event time.
    def max_ts(vals):
        return max(d["ts"] for d in map(_loads_or_none, vals)
                   if isinstance(d, dict) and isinstance(d.get("ts"), float) and d["ts"] < 2e9)

    watermark = min(max_ts(events[p::3]) for p in range(3)) - lateness
    expected = [r for r in expected if r["window_end"] <= rfc3339(watermark)]
    assert len(expected) >= 128  # 8+ windows x 4 series x 4 features
    rng = random.Random(SEED + 1)
    targets = sorted(rng.sample(range(3_000, len(events) - 5_000), 3))
    kills = kill_restart_finish(DaemonProcess(cfg_path, tmp_path), state, topic, per_partition, targets, rng)
    snap = describe(str(state))["streams"]["interactions"]
    assert snap["events"] == summary["events"] == len(events)
    assert snap["rejected"] == summary["rejected"]
    got = read_rows(state / "results.jsonl")
    assert snap["late"] == summary["late"], (
        f"{snap['late']} events late in the daemon, {summary['late']} in replay: a partition that had not "
        "delivered yet did not hold the watermark back")
    repeated = compare_with_replay(got, expected)
    print(f"kills (target, checkpointed records): {kills}; {len(got)} rows, {repeated} repeated after crashes")


def _loads_or_none(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Checkpoints in process: every kind of state round-trips exactly
# ---------------------------------------------------------------------------------------------


def _cfg(state: Path):
    return parse_config(stream_config("t", "idle", "127.0.0.1:9", state, "g"))


def _run(pipes: dict, batches: list[list[bytes]]) -> list[dict]:
    return [r.to_dict() for b in batches for r in pipes["interactions"].process(b).results]


def test_checkpoint_restore_at_any_batch_boundary_continues_exactly(tmp_path):
    """Cut a run at seeded batch boundaries (one within the first window), save,
    load into fresh pipelines, continue: identical to the uninterrupted run."""
    cfg = _cfg(tmp_path)
    events = make_events(60_000, seed=3)
    rng = random.Random(7)
    bounds = sorted(rng.sample(range(1, len(events)), 80))
    batches = [events[a:b] for a, b in zip([0, *bounds], [*bounds, len(events)])]
    whole = {s.name: StreamPipeline(s) for s in cfg.streams}
    expected = _run(whole, batches)

    early = max(i for i, b in enumerate(bounds) if b < 2500)  # a batch that ends inside the first window
    cuts = sorted({early, *rng.sample(range(early + 1, len(batches)), 5)})
    store = CheckpointStore(str(tmp_path / "ck"), config_fingerprint(cfg))
    pipes = {s.name: StreamPipeline(s) for s in cfg.streams}
    got: list[dict] = []
    for i, batch in enumerate(batches):
        got += [r.to_dict() for r in pipes["interactions"].process(batch).results]
        if i in cuts:
            store.save({n: p.snapshot() for n, p in pipes.items()}, {("t", 0): i})
            streams, offsets = store.load()
            assert offsets == {("t", 0): i}
            pipes = {s.name: StreamPipeline(s) for s in cfg.streams}
            for n, snap in streams.items():
                pipes[n].restore(snap)
    assert got == expected
    assert pipes["interactions"].snapshot() == whole["interactions"].snapshot()
    assert pipes["predictions"].windows.max_ts == float("-inf")  # the idle stream survived the round trips


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bitflip", "old_version", "other_config", "bad_body"])
def test_bad_checkpoint_refuses_to_start_with_exit_3(tmp_path, damage):
    state = tmp_path / "state"
    cfg_doc = stream_config("t", "idle", "127.0.0.1:9", state, "g")
    cfg_path = write_config(tmp_path / "driftmon.yaml", cfg_doc)
    cfg = parse_config(cfg_doc)
    pipes = {s.name: StreamPipeline(s) for s in cfg.streams}
    pipes["interactions"].process(make_events(5000, seed=1))
    store = CheckpointStore(str(state), config_fingerprint(cfg))
    store.save({n: p.snapshot() for n, p in pipes.items()}, {("t", 0): 5000})
    path = Path(store.path)
    raw = path.read_bytes()
    head, body = raw.split(b"\n", 1)
    header = json.loads(head)
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 not a checkpoint")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "bitflip":
        i = body.index(b'"events":') + 9
        path.write_bytes(head + b"\n" + body[:i] + bytes([body[i] ^ 1]) + body[i + 1:])
    elif damage == "old_version":
        path.write_bytes(json.dumps({**header, "version": 2}).encode() + b"\n" + body)
    elif damage == "other_config":
        path.write_bytes(json.dumps({**header, "config": "0123456789abcdef"}).encode() + b"\n" + body)
    else:  # a well-formed, correctly summed body that does not fit the streams
        bad = json.dumps({"offsets": [["t", 0, 1]], "streams": {"interactions": {"counters": {}}}}).encode()
        header.update(sha256=hashlib.sha256(bad).hexdigest(), bytes=len(bad))
        path.write_bytes(json.dumps(header).encode() + b"\n" + bad + b"\n")

    code, log = DaemonProcess(cfg_path, tmp_path).run()
    assert code == EXIT_BAD_CHECKPOINT, log
    assert str(path) in log and "--reset-state" in log, log
    assert_no_driftmon_traceback(log)
    assert path.exists()  # never silently discarded
    with pytest.raises(CheckpointError):
        Daemon(cfg)


@pytest.mark.kafka
@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_reset_state_moves_the_bad_checkpoint_aside_and_starts_afresh(kafka_broker, tmp_path):
    topic, idle = unique_name("reset"), unique_name("reset-idle")
    create_topics(kafka_broker.bootstrap, [topic, idle], partitions=1)
    events = make_events(6000, seed=5)
    produce(kafka_broker.bootstrap, topic, events, partition=0)
    state = tmp_path / "state"
    state.mkdir()
    (state / "checkpoint.json").write_bytes(b"{ torn")
    cfg_path = write_config(tmp_path / "driftmon.yaml",
                            stream_config(topic, idle, kafka_broker.bootstrap, state, unique_name("reset-group")))
    daemon = DaemonProcess(cfg_path, tmp_path)
    code, log = daemon.run()
    assert code == EXIT_BAD_CHECKPOINT and "--reset-state" in log

    daemon.start("--reset-state")
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == len(events), 60, "a fresh checkpoint", daemon)
    assert daemon.stop() == 0
    assert [p.name for p in state.glob("checkpoint.json.discarded-*")], "the bad checkpoint was not kept aside"
    assert describe(str(state))["streams"]["interactions"]["events"] == len(events)
    assert "moved checkpoint aside" in daemon.log()

    daemon.start()  # and a normal restart now resumes from the new checkpoint
    daemon.url()
    wait_until(lambda: "restored checkpoint" in daemon.log(), 30, "the restore", daemon)
    assert daemon.stop() == 0
    assert describe(str(state))["streams"]["interactions"]["events"] == len(events)

