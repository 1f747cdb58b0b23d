"""``driftmon run`` as a process: a SIGTERM at any moment gives a clean exit 0.

Before the fix the handlers were installed after the config was loaded, numpy
imported and the daemon built, so a SIGTERM in the first second or so killed the
process with the default action (exit 143).  Now the CLI installs them first
(``process.catch_stop_signals``), within milliseconds of the interpreter starting.

Each case spawns the real command against the session tansu broker and sends
SIGTERM at a different moment: the instant the handler appears in
``/proc/<pid>/status`` (checked to be before numpy is even mapped, i.e. before
anything slow), fixed delays that fall into the imports, the config load and the
daemon's construction, and after the daemon serves /metrics and is consuming.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service.test_daemon import DaemonProcess, daemon_cfg, http_get

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _catches_sigterm(pid: int) -> bool:
    mask = _status_field(pid, "SigCgt")
    return mask is not None and bool(int(mask, 16) & SIGTERM_BIT)


def _numpy_loaded(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as fh:
        return "/numpy/" in fh.read()


class Run(DaemonProcess):
    """One ``driftmon run`` process and its stderr, from the instant it is spawned."""

    def __init__(self, config_file: Path):
        super().__init__(config_file, wait_for_address=False)

    def wait_handler(self, timeout: float = 30.0) -> tuple[float, bool]:
        """Spin until the SIGTERM handler is installed: (seconds since spawn, numpy already mapped then)."""
        deadline = time.monotonic() + timeout
        pid = self.proc.pid
        while not _catches_sigterm(pid):
            assert self.proc.poll() is None, f"exited early ({self.proc.returncode}):\n{self.log}"
            assert time.monotonic() < deadline, "no SIGTERM handler installed"
            time.sleep(0.0005)
        # read the maps after the handler was seen: numpy absent now means absent then too
        return time.monotonic() - self.started, _numpy_loaded(pid)


def _case(config_file: Path, when: Any, out: dict[str, Any]) -> None:
    run = Run(config_file)
    try:
        installed_at, numpy_then = run.wait_handler()
        out["installed_at"], out["numpy_then"] = installed_at, numpy_then
        if when == "serving":  # the daemon is up and has a consumer
            deadline = time.monotonic() + 60
            while not (run.address and http_get(f"http://{run.address}/readyz")[0] == 200):
                assert time.monotonic() < deadline and run.proc.poll() is None, run.log
                time.sleep(0.05)
        elif isinstance(when, float):
            time.sleep(max(0.0, run.started + when - time.monotonic()))
        out["sent_at"] = time.monotonic() - run.started
        run.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            out["code"] = run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            out["code"] = "no exit within 30 s"
        out["exit_after"] = time.monotonic() - sent
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        run._reader.join(5)
        out["log"] = run.log


def test_sigterm_at_any_moment_of_start_up_exits_0(kafka_broker, fresh_topic, tmp_path):
    topic = fresh_topic(partitions=1)
    cases: list[Any] = ["handler", 0.3, 0.8, 1.5, 2.5, "serving"]
    results: dict[Any, dict[str, Any]] = {}
    threads = []
    for i, when in enumerate(cases):
        doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / f"state{i}", segmented=False,
                         lifecycle={"grace_period": "2s"})
        config_file = tmp_path / f"driftmon{i}.yaml"
        config_file.write_text(yaml.safe_dump(doc))
        results[when] = out = {}
        t = threading.Thread(target=_case, args=(config_file, when, out), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(120)
    report = {when: {k: v for k, v in r.items() if k != "log"} for when, r in results.items()}
    for when, r in results.items():
        assert "code" in r, (when, report, r.get("log"))
        assert r["code"] == 0, (when, report, r["log"])
        assert "Traceback" not in r["log"], (when, r["log"])
        # the handlers come before anything slow: numpy was not even mapped yet
        assert r["numpy_then"] is False, (when, report)
    assert results["serving"]["exit_after"] < 10, report


def test_tune_gc_lets_a_poll_of_max_poll_records_pass_without_a_collection():
    """What one poll keeps alive (5,000 records read by the batch reader, their values
    decoded and counted) stays under the gen-0 threshold run_daemon sets, so no cyclic
    collection walks the poll's objects; with the old threshold of 10,000 one did."""
    import gc

    from kafka.consumer.fetcher import Fetcher, IsolationLevel
    from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
    from kafka.structs import TopicPartition

    from driftmon.config import parse_config
    from driftmon.pipeline import StreamPipeline
    from driftmon.service.process import GC_GEN0_PER_POLL_RECORD, GC_GEN0_THRESHOLD, tune_gc
    from driftmon.source.kafka_records import partition_records_class
    from driftmon.testing import synth

    n = 5000
    values = list(synth.encode(synth.interactions(n, start=time.time() - 10, rate=1000.0, seed=5)))
    b = MemoryRecordsBuilder(2, 0, 1 << 30)
    for v in values:
        b.append(1, None, v, [])
    b.close()
    data = bytes(b.buffer())
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "driftmon.yaml").read_text())
    doc["streams"] = [next(s for s in doc["streams"] if s["name"] == "interactions")]
    doc.pop("calibration", None)  # (it joins two other streams)
    pipe = StreamPipeline(parse_config(doc, {}).streams[0])

    def one_poll() -> int:
        collections = []

        def seen(phase: str, info: dict) -> None:
            if phase == "start" and info["generation"] == 0:
                collections.append(1)

        part = partition_records_class(Fetcher.PartitionRecords)(
            0, TopicPartition("t", 0), MemoryRecords(data), key_deserializer=None, value_deserializer=None,
            check_crcs=True, isolation_level=IsolationLevel.READ_UNCOMMITTED, aborted_transactions=[],
            metric_aggregator=None, on_drain=lambda x: None)
        gc.callbacks.append(seen)
        try:
            records = part.take(n)
            pipe.process([r.value for r in records])
        finally:
            gc.callbacks.remove(seen)
        return len(collections)

    saved = gc.get_threshold()
    try:
        gc.collect()
        tune_gc(max(GC_GEN0_THRESHOLD, GC_GEN0_PER_POLL_RECORD * n))
        assert one_poll() == 0
        gc.set_threshold(10_000, *saved[1:])
        gc.collect()
        assert one_poll() >= 1  # (the threshold before: a collection in every poll)
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
