"""Start-up hardening, with the real daemon process (issue 9, items 5, 6 and 11).

* No broker at start (the shipped config, which has a dead-letter topic):
  ``/healthz`` answers 200 and ``/readyz`` 503 "no broker contact" at once, and
  one SIGTERM stops it with exit 0 within a second or two.
* A broker that appears ~5 s after the daemon: a real tansu is started on the
  port the daemon was given; events then flow, rejected records reach the
  dead-letter topic and results the results topic, without a restart.
* Two daemons on one state dir: the second exits 5 naming the dir and the
  first one's pid; the first carries on; once it is gone (even by kill -9) the
  dir can be used again.
* A state dir (or results file) that cannot be written: exit 4 and one line
  naming the path and the problem, no traceback; with no webhooks configured
  no ``alerts/`` or ``outbox/`` directory appears.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from driftmon.service.errors import EXIT_STATE_DIR_IN_USE, EXIT_UNWRITABLE
from driftmon.service.statedir import LOCK_NAME
from driftmon.testing import synth
from driftmon.testing.embedded import EmbeddedBroker, create_topics, free_port
from tests.conftest import current_client, produce, unique_name
from tests.e2e.test_crash import (
    REPO,
    DaemonProcess,
    assert_no_driftmon_traceback,
    checkpoint_offsets,
    sample,
    wait_until,
    write_config,
)
from tests.e2e.test_outage import counted

START = 1_600_000_000.0
BAD = [b"{not json", b"[1, 2, 3]", b"\xff\xfe"]  # invalid_json, bad_type, invalid_json


def shipped_config(bootstrap: str, tmp: Path, **kafka: object) -> dict:
    """config/driftmon.yaml as shipped (dead-letter topic, webhook, jsonl sink), with its
    broker, port and paths moved into the test's sandbox."""
    doc = yaml.safe_load((REPO / "config" / "driftmon.yaml").read_text())
    assert doc["kafka"]["dead_letter_topic"], "the shipped config has a dead-letter topic"
    doc["kafka"].update(client=current_client(), bootstrap_servers=[bootstrap], group_id=unique_name("startup"), session_timeout_ms=5000,
                        heartbeat_interval_ms=1000, poll_timeout_ms=200, **kafka)
    doc["http"] = {"listen": "127.0.0.1:0", "ready_broker_timeout": "5s"}
    doc["state"] = {"dir": str(tmp / "state"), "checkpoint_interval": "0.5s"}
    doc["sinks"] = {"jsonl": str(tmp / "state" / "results.jsonl")}
    doc["lifecycle"] = {"grace_period": "3s"}
    return doc


def small_config(topic: str, bootstrap: str, state: Path, **kafka: object) -> dict:
    return {
        "streams": [{"name": "interactions", "topic": topic,
                     "window": {"size": "60s", "slide": "60s", "allowed_lateness": "5s"},
                     "features": [{"name": "item_category", "field": "item.category", "type": "categorical",
                                   "categories": list(synth.CATEGORIES)}]}],
        "detector": {"min_count": 100},
        "kafka": {"client": current_client(), "bootstrap_servers": [bootstrap], "group_id": unique_name("startup"),
                  "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000, "poll_timeout_ms": 200, **kafka},
        "http": {"listen": "127.0.0.1:0", "ready_broker_timeout": "5s"},
        "state": {"dir": str(state), "checkpoint_interval": "0.5s"},
        "sinks": {"jsonl": str(state / "results.jsonl")},
        "lifecycle": {"grace_period": "3s"},
    }


def events(n: int, seed: int = 3) -> list[bytes]:
    """``n`` interactions at 10 per second of event time: 2000 span 3 closed 60 s windows."""
    return list(synth.encode(synth.interactions(n, start=START, rate=10.0, seed=seed)))


def stop_timed(daemon: DaemonProcess) -> tuple[int, float]:
    """One SIGTERM; (exit code, seconds until the process was gone)."""
    assert daemon.proc is not None and daemon.alive
    t0 = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        code = daemon.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        pytest.fail(f"no exit within 30 s of SIGTERM:\n{daemon.log()[-3000:]}")
    return code, time.monotonic() - t0


def read_topic(bootstrap: str, topic: str, n: int, timeout: float = 30) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=500)
    got: list = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        wait_until(lambda: got.extend(consumer) or len(got) >= n, timeout, f"{n} records on {topic}")
    finally:
        consumer.close()
    return got


# ---------------------------------------------------------------------------------------------
# Item 5: no broker at start
# ---------------------------------------------------------------------------------------------


def test_no_broker_at_start_serves_health_at_once_and_sigterm_exits_0_promptly(tmp_path):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", shipped_config(dead, tmp_path)), tmp_path)
    t0 = time.monotonic()
    daemon.start()
    try:
        assert daemon.get("/healthz")[0] == 200
        healthy_after = time.monotonic() - t0
        status, reason = daemon.get("/readyz")
        assert status == 503 and "no broker contact" in reason and dead in reason, reason
        assert sample(daemon.metrics(), "driftmon_ready") == 0
        time.sleep(2.0)  # well into kafka-python's 30 s bootstrap: still answering, still waiting
        assert daemon.alive and daemon.get("/healthz")[0] == 200
        assert "dead-letter producer" in daemon.get("/readyz")[1]
        code, took = stop_timed(daemon)
    finally:
        daemon.kill()
    log = daemon.log()
    assert code == 0, log
    assert took < 5.0, f"SIGTERM took {took:.1f}s"
    assert healthy_after < 10.0, f"/healthz only after {healthy_after:.1f}s"
    assert "KafkaTimeoutError" not in log and "Traceback" not in log, log
    assert "stopped while the dead-letter producer was connecting" in log
    print(f"/healthz 200 {healthy_after:.1f}s after the start, exit 0 {took:.2f}s after SIGTERM")


@pytest.mark.kafka
def test_broker_started_5s_after_the_daemon_then_events_results_and_dead_letters_flow(tmp_path):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topic, dlq, results = unique_name("late"), unique_name("late-dlq"), unique_name("late-results")
    state = tmp_path / "state"
    doc = small_config(topic, bootstrap, state, dead_letter_topic=dlq)
    doc["sinks"]["kafka_topic"] = results
    doc["detector"]["min_count"] = 10
    good = events(2000)
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path)
    daemon.start()
    try:
        assert daemon.get("/healthz")[0] == 200
        time.sleep(5.0)
        status, reason = daemon.get("/readyz")
        assert status == 503 and "no broker contact" in reason, reason
        with EmbeddedBroker(port=port) as broker:
            create_topics(broker.bootstrap, [topic, dlq, results], partitions=1)
            appeared = time.monotonic()
            produce(broker.bootstrap, topic, good[:1000] + BAD + good[1000:], partition=0)
            total = len(good) + len(BAD)
            wait_until(lambda: counted(state) == total, 60, "every record counted once", daemon)
            flowed_after = time.monotonic() - appeared
            wait_until(lambda: daemon.get("/readyz")[0] == 200, 20, "/readyz 200", daemon)
            dead = read_topic(broker.bootstrap, dlq, len(BAD))
            assert sorted(d.value for d in dead) == sorted(BAD)
            assert {dict(d.headers)["driftmon-reason"] for d in dead} == {b"invalid_json", b"bad_type"}
            rows = read_topic(broker.bootstrap, results, 1)  # 2000 events close 3 windows
            assert rows
            m = daemon.metrics()
            assert sample(m, "driftmon_events_total") == total
            assert sample(m, "driftmon_events_rejected_total") == len(BAD)
            assert checkpoint_offsets(state)[(topic, 0)] == total
            code, _ = stop_timed(daemon)
    finally:
        daemon.kill()
    assert code == 0, daemon.log()
    assert_no_driftmon_traceback(daemon.log())
    assert daemon.runs == 1
    print(f"events flowed {flowed_after:.1f}s after the broker appeared")


# ---------------------------------------------------------------------------------------------
# Item 6: one daemon per state dir
# ---------------------------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_second_daemon_on_the_same_state_dir_exits_5_naming_the_holder(kafka_broker, tmp_path):
    topic = unique_name("lock")
    create_topics(kafka_broker.bootstrap, [topic], partitions=2)
    state = tmp_path / "state"
    first = DaemonProcess(write_config(tmp_path / "a.yaml", small_config(topic, kafka_broker.bootstrap, state)),
                          tmp_path / "a")
    second = DaemonProcess(write_config(tmp_path / "b.yaml", small_config(topic, kafka_broker.bootstrap, state)),
                           tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first.start()
    try:
        first.url()
        produce(kafka_broker.bootstrap, topic, events(500), partition=0)
        wait_until(lambda: counted(state) == 500, 60, "the first daemon counting", first)

        t0 = time.monotonic()
        code, log = second.run(timeout=30)
        assert code == EXIT_STATE_DIR_IN_USE, log
        assert time.monotonic() - t0 < 15
        assert f"state dir {state} is in use by another driftmon process (pid {first.proc.pid}" in log, log
        assert_no_driftmon_traceback(log)
        assert "Traceback" not in log and "serving /metrics" not in log  # refused before anything else

        produce(kafka_broker.bootstrap, topic, events(300, seed=4), partition=1)  # the first carries on
        wait_until(lambda: counted(state) == 800, 60, "the first daemon still counting", first)
        assert first.alive
        first.kill()  # no clean shutdown: the kernel drops the lock
        second.start()
        second.url()
        wait_until(lambda: "restored checkpoint" in second.log(), 30, "the second daemon restoring", second)
        code, _ = stop_timed(second)
        assert code == 0, second.log()
    finally:
        first.kill()
        second.kill()
    assert (state / LOCK_NAME).exists()  # never deleted
    assert not (state / "alerts").exists() and not (state / "outbox").exists()  # no webhooks configured


# ---------------------------------------------------------------------------------------------
# Item 11: a state dir that cannot be written
# ---------------------------------------------------------------------------------------------


def _drop_dac_override() -> list[str]:
    """As root, chmod does not stop writes: run the daemon without CAP_DAC_OVERRIDE
    (it then obeys file modes like any user).  As another user chmod is enough."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "util-linux setpriv is needed to run the daemon as root without CAP_DAC_OVERRIDE"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("case", ["read_only_dir", "under_a_file", "is_a_file", "results_under_a_file"])
def test_unwritable_state_dir_exits_4_with_one_line_naming_path_and_problem(tmp_path, case):
    state = tmp_path / "state"
    doc = small_config("t", f"127.0.0.1:{free_port()}", state)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory\n")
    want: tuple[str, str]
    if case == "read_only_dir":
        state.mkdir()
        state.chmod(0o555)
        want = (str(state), "Permission denied")
    elif case == "under_a_file":
        state = blocker / "state"
        want = (str(state), "Not a directory")
    elif case == "is_a_file":
        state = blocker
        want = (str(state), "is not a directory")
    else:
        doc["sinks"]["jsonl"] = str(blocker / "results.jsonl")
        want = (str(blocker), "Not a directory")
    doc["state"]["dir"] = str(state)
    cfg = write_config(tmp_path / "d.yaml", doc)
    proc = subprocess.run([*_drop_dac_override(), sys.executable, "-m", "driftmon.cli", "run", "-c", str(cfg)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=60)
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == EXIT_UNWRITABLE, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert all(w in errors[0] for w in want), errors[0]
    assert "Traceback" not in log and "PermissionError" not in log, log
    if case == "read_only_dir":
        assert os.listdir(state) == []  # nothing created: no alerts/ even before the failure
