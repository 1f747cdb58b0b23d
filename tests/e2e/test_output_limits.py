"""Oversized values and full disks against the real daemon process and a real broker.

Each test reproduces one failure of issue 9 that used to crash the daemon or
lose data, and checks what happens now:

* 2 MiB category values on an open-vocabulary ``top_k`` feature, with the
  ``jsonl`` and ``kafka_topic`` sinks: rows used to grow past 1 MB until
  ``KafkaResultsSink.write`` raised ``MessageSizeTooLargeError`` (exit 1, on
  every restart).  Now the values are cut to 256 characters and counted, the
  rows stay small, every row reaches the topic and restarts are clean.
* A 10 MiB reject with ``kafka.dead_letter_topic``: it used to be counted as
  ``invalid_json`` but never reached the dead-letter topic.  Now a truncated
  copy arrives, marked with the original's size and SHA-256, and is counted.
* A full state disk, made real with ``RLIMIT_FSIZE`` on the daemon process
  (writes past 1 KiB fail with EFBIG, as they fail with ENOSPC on a full
  disk): alerts used to be dropped while checkpoints moved on, and the
  ``jsonl`` sink crashed the daemon.  Now the daemon stays up, counts the
  failures, holds its checkpoint back, and once space returns (the limit is
  lifted on the running process) every alert is delivered and every result
  written, exactly as an uninterrupted run does.  Files are 0600, directories
  0700, and no temp file is left behind.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from driftmon.config import parse_config
from driftmon.decode.events import MAX_VALUE_CHARS, TRUNCATION_MARKER
from driftmon.outputs.deadletter import ORIGINAL_SHA256, ORIGINAL_SIZE, TRUNCATED
from driftmon.pipeline import StreamPipeline
from driftmon.testing.embedded import create_topics, free_port
from driftmon.testing.receiver import WebhookSink
from tests.conftest import current_client, produce, unique_name
from tests.e2e.test_crash import (
    DaemonProcess,
    assert_no_driftmon_traceback,
    checkpoint_offsets,
    read_rows,
    sample,
    wait_until,
    write_config,
)
from tests.e2e.test_outage import (
    SECRET,
    config,
    events,
    outbox_files,
    per_fingerprint,
    reference_notifications,
)
from tests.fslimits import lift_file_size_limit, limited_argv, pipe_to_file, temp_files, tree_modes

pytestmark = pytest.mark.kafka

MIB = 1 << 20
START = 1_600_000_000.0


class LimitedDaemon(DaemonProcess):
    """The daemon under ``RLIMIT_FSIZE`` (its output through a pipe, which the limit does not touch)."""

    def __init__(self, config_path: Path, workdir: Path, file_size_limit: int):
        super().__init__(config_path, workdir)
        self.limit = file_size_limit

    def start(self, *args: str) -> LimitedDaemon:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self.log_path = self.workdir / f"daemon-{self.runs}.log"
        self._url = None
        self.proc = subprocess.Popen(
            limited_argv(self.limit, ["driftmon.cli", "run", "-c", str(self.config), *args]),
            cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        pipe_to_file(self.proc, self.log_path)
        return self

    def lift_limit(self) -> None:
        assert self.proc is not None
        lift_file_size_limit(self.proc.pid)


def produce_big(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * MIB, linger_ms=5, acks=1,
                             enable_idempotence=False)
    try:
        futures = [producer.send(topic, value=v, partition=0) for v in values]
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=10)
    finally:
        producer.close(timeout=5)


def read_topic(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=2000, fetch_max_bytes=64 * MIB, max_partition_fetch_bytes=64 * MIB)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()


def top_k_config(topic: str, bootstrap: str, state: Path, **extra: object) -> dict:
    doc: dict = {
        "streams": [{
            "name": "recs", "topic": topic,
            "window": {"size": "10s", "slide": "10s"},
            "features": [{"name": "category", "field": "item.category", "type": "categorical", "top_k": 20}],
        }],
        "detector": {"min_count": 50, "reference": "previous", "permutations": 0},
        "kafka": {"client": current_client(), "bootstrap_servers": [bootstrap], "group_id": unique_name("limits"), "auto_offset_reset": "earliest",
                  "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000, "poll_timeout_ms": 200},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"dir": str(state), "checkpoint_interval": "0.5s"},
        "sinks": {"jsonl": str(state / "results.jsonl")},
        "lifecycle": {"grace_period": "3s"},
    }
    for key, value in extra.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return doc


def assert_private_modes(state: Path) -> None:
    """The file mode policy (util/files.py): 0600 files, 0700 directories, nothing else."""
    modes = tree_modes(state)
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o700 if (state / p).is_dir() else 0o600)}
    assert not wrong, wrong
    assert temp_files(state) == []


@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_2_mib_category_values_are_cut_rows_stay_small_and_restarts_are_clean(kafka_broker, tmp_path):
    topic, results_topic = unique_name("huge-values"), unique_name("results")
    create_topics(kafka_broker.bootstrap, [topic, results_topic], partitions=1)
    good = [orjson.loads(e) for e in events(3000, start=START, drift=False)]  # 100/s: 30 s, 3 windows of 10 s
    huge = "h" * (2 * MIB)
    values = []
    for i, e in enumerate(good):
        values.append(orjson.dumps(e))
        if 1200 <= i < 1215:  # 15 events with a 2 MiB category, all in the second window
            values.append(orjson.dumps({**e, "item": {**e["item"], "category": huge + str(i)}}))
    produce_big(kafka_broker.bootstrap, topic, values)
    state = tmp_path / "state"
    doc = top_k_config(topic, kafka_broker.bootstrap, state, sinks={"kafka_topic": results_topic})
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path)
    daemon.start()
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == len(values), 60, "every event checkpointed",
               daemon)
    m = daemon.metrics()
    assert sample(m, "driftmon_values_truncated_total", stream="recs", feature="category") == 15
    assert sample(m, "driftmon_events_decoded_total", stream="recs") == len(values)  # cut, not rejected
    assert sample(m, "driftmon_output_dropped_total") == 0 and sample(m, "driftmon_output_errors_total") == 0
    assert daemon.stop() == 0

    lines = (state / "results.jsonl").read_bytes().splitlines()
    assert len(lines) >= 2 and max(map(len, lines)) < 8192  # was up to 4.2 MB
    labels = {b for r in read_rows(state / "results.jsonl") for b in r["bins"]}
    cut = "h" * (MAX_VALUE_CHARS - 1) + TRUNCATION_MARKER  # the 15 values share their first 255 characters
    assert cut in labels and max(map(len, labels)) == MAX_VALUE_CHARS
    sent = read_topic(kafka_broker.bootstrap, results_topic)
    assert sorted(r.value for r in sent) == sorted(lines)  # every row reached the topic, none dropped

    daemon.start()  # used to crash again on every restart
    wait_until(lambda: daemon.get("/readyz")[0] == 200, 30, "/readyz 200 after the restart", daemon)
    assert daemon.stop() == 0
    assert_no_driftmon_traceback(daemon.logs())
    assert_private_modes(state)


def test_a_10_mib_reject_reaches_the_dead_letter_topic_as_a_marked_truncated_copy(kafka_broker, tmp_path):
    topic, dlq = unique_name("huge-reject"), unique_name("dlq")
    create_topics(kafka_broker.bootstrap, [topic, dlq], partitions=1)
    good = events(1000, start=START, drift=False)
    reject = b'{"ts": 1600000001, "item": {"category": "' + b"z" * (10 * MIB)  # not JSON: never closed
    values = [*good[:500], reject, *good[500:]]
    produce_big(kafka_broker.bootstrap, topic, values)
    state = tmp_path / "state"
    doc = top_k_config(topic, kafka_broker.bootstrap, state, kafka={"dead_letter_topic": dlq})
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path)
    daemon.start()
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == len(values), 60,
               "the checkpoint to move past the reject", daemon)
    m = daemon.metrics()
    assert sample(m, "driftmon_events_rejected_total", stream="recs", reason="invalid_json") == 1
    assert sample(m, "driftmon_dead_letters_total", outcome="truncated") == 1
    assert sample(m, "driftmon_output_dropped_total") == 0
    assert daemon.stop() == 0
    (letter,) = read_topic(kafka_broker.bootstrap, dlq)
    headers = dict(letter.headers)
    assert headers["driftmon-reason"] == b"invalid_json" and headers["driftmon-source-offset"] == b"500"
    assert headers[TRUNCATED] == b"value"
    assert headers[ORIGINAL_SIZE] == str(len(reject)).encode()
    assert headers[ORIGINAL_SHA256] == hashlib.sha256(reject).hexdigest().encode()
    assert 0.9 * MIB < len(letter.value) < MIB and reject.startswith(letter.value)
    assert_no_driftmon_traceback(daemon.logs())


@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_full_disk_holds_alerts_results_and_checkpoint_back_and_loses_nothing(kafka_broker, tmp_path):
    topic = unique_name("full-disk")
    create_topics(kafka_broker.bootstrap, [topic], partitions=1)
    evs = events(60_000)
    port = free_port()  # the receiver is down while the disk is full: alerts must stay queued
    state = tmp_path / "state"
    doc = config(topic, kafka_broker.bootstrap, state, hook_port=port)
    reference = reference_notifications(doc, evs, tmp_path / "reference")
    want_keys = [r.idempotency_key for r in reference]
    assert len(want_keys) >= 6
    pipe = StreamPipeline(parse_config(doc).streams[0])
    want_rows = [r.to_dict() for i in range(0, len(evs), 5000) for r in pipe.process(evs[i:i + 5000]).results]
    produce(kafka_broker.bootstrap, topic, evs, partition=0)

    daemon = LimitedDaemon(write_config(tmp_path / "d.yaml", doc), tmp_path, file_size_limit=1024)
    daemon.start()
    wait_until(lambda: sample(daemon.metrics(), "driftmon_events_total") == len(evs), 60, "all events consumed",
               daemon)
    wait_until(lambda: all(sample(daemon.metrics(), "driftmon_output_errors_total", output=o) >= 2
                           for o in ("jsonl", "outbox")), 15, "write failures counted (two checkpoints)", daemon)
    m = daemon.metrics()
    assert sample(m, "driftmon_webhook_deliveries_total", outcome="retry") > 0  # receiver down: queued in memory
    wait_until(lambda: sample(daemon.metrics(), "driftmon_webhook_outbox_size", receiver="oncall") == len(want_keys),
               10, "every alert queued (in memory)", daemon)
    assert sample(m, "driftmon_webhook_deliveries_total", outcome="dropped") == 0  # used to be 19 drops
    assert checkpoint_offsets(state) == {}  # held back: nothing it would cover is durable
    assert outbox_files(state) == 0 and (state / "results.jsonl").stat().st_size == 0  # no torn line either
    assert temp_files(state) == []
    assert "checkpoint postponed" in daemon.log()

    daemon.lift_limit()  # space returns
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == len(evs), 30,
               "the checkpoint once space returned", daemon)
    assert outbox_files(state) == len(want_keys)  # written before the checkpoint moved past them
    assert read_rows(state / "results.jsonl") == want_rows  # every result, once, in order

    with WebhookSink(port=port, secret=SECRET) as sink:
        assert sink.wait_for(len(want_keys), 30, unique=True), daemon.log()[-3000:]
        wait_until(lambda: outbox_files(state) == 0, 10, "the outbox to drain", daemon)
        unique = sink.unique_alerts()
    assert [r.idempotency_key for r in unique] == want_keys
    assert per_fingerprint(unique) == per_fingerprint(reference)
    m = daemon.metrics()
    assert sample(m, "driftmon_output_dropped_total") == 0
    assert daemon.stop() == 0
    assert_no_driftmon_traceback(daemon.logs())
    assert_private_modes(state)


@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_a_checkpoint_that_cannot_be_written_is_postponed_not_fatal(kafka_broker, tmp_path):
    """No sinks, no webhooks: only the checkpoint file is over the limit.  It used to stop the
    daemon; now the failure is counted, the daemon keeps consuming, and it checkpoints when it can."""
    topic = unique_name("ckpt-full")
    create_topics(kafka_broker.bootstrap, [topic], partitions=1)
    evs = events(3000, start=START, drift=False)
    produce(kafka_broker.bootstrap, topic, evs, partition=0)
    state = tmp_path / "state"
    doc = top_k_config(topic, kafka_broker.bootstrap, state, sinks=None)
    del doc["sinks"]
    daemon = LimitedDaemon(write_config(tmp_path / "d.yaml", doc), tmp_path, file_size_limit=1024)
    daemon.start()
    wait_until(lambda: sample(daemon.metrics(), "driftmon_output_errors_total", output="checkpoint") >= 3, 60,
               "failed checkpoint writes counted", daemon)
    assert sample(daemon.metrics(), "driftmon_events_total") == len(evs)
    assert checkpoint_offsets(state) == {} and temp_files(state) == []
    daemon.lift_limit()
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == len(evs), 30, "the checkpoint", daemon)
    assert daemon.stop() == 0
    assert "checkpoint not written" in daemon.log()
    assert_no_driftmon_traceback(daemon.logs())
    assert_private_modes(state)
