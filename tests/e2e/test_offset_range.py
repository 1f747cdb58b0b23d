"""A checkpointed offset beyond a partition's log end (issue 9, item 7), with the real daemon.

The daemon counts 3000 events and checkpoints offset 3000; then the broker
loses the log (the topic is deleted and recreated, as a memory-storage broker
restart or a lost volume would do) and 111 new events are written, so the log
ends at 111.  tansu answers a fetch at 3000 with no records, and the daemon
used to wait there forever with lag 0 and ready 1, logging nothing.  Now it
must, within seconds: log a WARNING naming the topic, partition and both
offsets, count ``driftmon_consumer_offset_out_of_range_total{direction="beyond_end"}``,
and apply ``kafka.auto_offset_reset``: ``earliest`` counts the 111 new events,
``latest`` skips them and counts what comes after.  A restart afterwards finds
nothing out of range and counts nothing twice.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient

from driftmon.testing import synth
from driftmon.testing.embedded import create_topics
from tests.conftest import produce, unique_name
from tests.e2e.test_crash import (
    DaemonProcess,
    assert_no_driftmon_traceback,
    checkpoint_offsets,
    sample,
    wait_until,
    write_config,
)
from tests.e2e.test_outage import counted
from tests.e2e.test_startup import START, small_config

pytestmark = pytest.mark.kafka


def events(n: int, start: float, seed: int) -> list[bytes]:
    return list(synth.encode(synth.interactions(n, start=start, rate=10.0, seed=seed)))


def recreate(bootstrap: str, topic: str) -> None:
    """Delete the topic (its log is gone) and create it again, empty."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="driftmon-test")
    try:
        admin.delete_topics([topic])
        wait_until(lambda: topic not in admin.list_topics(), 10, f"{topic} deleted")
    finally:
        admin.close()
    create_topics(bootstrap, [topic], partitions=1)


def out_of_range(daemon: DaemonProcess, topic: str, direction: str) -> float:
    return sample(daemon.metrics(), "driftmon_consumer_offset_out_of_range_total", topic=topic, partition="0",
                  direction=direction)


@pytest.mark.parametrize("policy", ["earliest", "latest"])
def test_checkpoint_beyond_a_lost_log_is_detected_logged_counted_and_reset_by_policy(kafka_broker, tmp_path, policy):
    bootstrap = kafka_broker.bootstrap
    topic = unique_name(f"lost-log-{policy}")
    create_topics(bootstrap, [topic], partitions=1)
    old = events(3000, START, seed=1)
    produce(bootstrap, topic, old, partition=0)
    state = tmp_path / "state"
    doc = small_config(topic, bootstrap, state, auto_offset_reset="earliest")
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path)
    daemon.start()
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == 3000, 60, "offset 3000 checkpointed", daemon)
    assert daemon.stop() == 0 and counted(state) == 3000

    recreate(bootstrap, topic)  # the broker lost the log: it now ends at 111
    new = events(111, START + 400, seed=2)
    produce(bootstrap, topic, new, partition=0)
    doc["kafka"]["auto_offset_reset"] = policy  # (tuning: the checkpoint still fits)
    write_config(tmp_path / "d.yaml", doc)

    t0 = time.monotonic()
    daemon.start()
    line = f"{topic}[0] next offset 3000 is beyond the log end 111"
    wait_until(lambda: line in daemon.log(), 30, "the out-of-range warning", daemon)
    detected_after = time.monotonic() - t0
    if policy == "earliest":
        wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == 111, 30, "the new log counted", daemon)
        assert counted(state) == 3000 + 111  # the old events stay counted, the new ones once
        assert "resuming at offset 0" in daemon.log()
    else:
        wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == 111, 30, "resumed at the log end", daemon)
        assert counted(state) == 3000 and "resuming at offset 111" in daemon.log()
        produce(bootstrap, topic, events(50, START + 500, seed=3), partition=0)  # what comes after is counted
        wait_until(lambda: counted(state) == 3050, 30, "events after the log end counted", daemon)
        assert checkpoint_offsets(state)[(topic, 0)] == 161
    warning = next(ln for ln in daemon.log().splitlines() if line in ln)
    assert " WARNING " in warning and f"auto_offset_reset='{policy}'" in warning, warning
    assert out_of_range(daemon, topic, "beyond_end") == 1
    assert out_of_range(daemon, topic, "before_start") == 0
    assert daemon.stop() == 0
    assert_no_driftmon_traceback(daemon.log())
    assert detected_after < 20, f"detected only after {detected_after:.1f}s"
    print(f"{policy}: out-of-range offset detected {detected_after:.1f}s after the daemon started")

    total = counted(state)
    daemon.start()  # a restart resumes at the new offsets: nothing out of range, nothing counted twice
    wait_until(lambda: "partitions assigned" in daemon.log(), 30, "the assignment", daemon)
    time.sleep(3.0)  # past a check of the offsets (every 2 s)
    assert out_of_range(daemon, topic, "beyond_end") == 0
    assert daemon.stop() == 0
    assert counted(state) == total
    assert "offset out of range" not in daemon.log()
