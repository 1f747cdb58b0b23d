"""Start-up hardening, with the real daemon process (issue 9, items 6 and 11).

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
from driftmon.testing.embedded import create_topics, free_port
from tests.conftest import produce, unique_name
from tests.e2e.test_crash import (
    REPO,
    DaemonProcess,
    assert_no_driftmon_traceback,
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
    doc["kafka"].update(bootstrap_servers=[bootstrap], group_id=unique_name("startup"), session_timeout_ms=5000,
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
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": unique_name("startup"),
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
# Item 6: one daemon per state dir
# ---------------------------------------------------------------------------------------------


@pytest.mark.kafka
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
