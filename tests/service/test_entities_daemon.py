"""The daemon with per-user interest drift against the real broker: interest_shift records reach
``entities.topic`` keyed by entity (and the results file), the metrics carry aggregates only,
and ``driftmon replay`` over the same events reports the same shifts."""

from __future__ import annotations

import io
import json
import math
import time

import orjson
import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from driftmon.cli import replay
from driftmon.config import parse_config
from tests.service.test_daemon import daemon_cfg, processed, results_rows, running, scrape, send, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.one_client]  # the monitor, not the client, is under test

N = 30  # events per per-user window


def user_events(t0: float) -> list[bytes]:
    """alice: books then games (a shift); bob: books throughout; carol: music then mostly books."""
    plan = {"alice": ["books"] * N + ["games"] * N, "bob": ["books"] * (2 * N),
            "carol": ["music"] * N + ["books"] * (N - 5) + ["music"] * 5}
    out = []
    for i in range(2 * N):
        for user, cats in plan.items():
            out.append(orjson.dumps({"ts": t0 + i + 0.1 * len(out) / 1000, "user_id": user,
                                     "item": {"id": f"i{i}", "category": cats[i]}, "platform": "web",
                                     "dwell_ms": 1000.0}))
    return out


def test_interest_shifts_reach_the_entities_topic_keyed_by_entity(kafka_broker, fresh_topic, tmp_path):
    topic, shifts_topic = fresh_topic(partitions=1), fresh_topic(partitions=1, prefix="shifts")
    t0 = math.floor((time.time() - 3600) / 60) * 60 + 1
    events = user_events(t0)
    doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / "state", segmented=False)
    doc["streams"][0]["entities"] = {"key": "user_id", "feature": "item.category", "window": {"last_events": N},
                                     "min_events": N, "topic": shifts_topic}
    with running(doc) as daemon:
        send(kafka_broker.bootstrap, topic, events)
        wait_until(lambda: processed(daemon, len(events)), 60, f"{len(events)} events consumed")
        s = wait_until(lambda: (lambda sc: sc if sc.get("driftmon_entity_shifts_total", stream="interactions") >= 2
                                else None)(scrape(daemon.server.address)), 30, "two shifts counted")
    # -- the topic: one record per shifted user, keyed by the user --------------------------------
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=500)
    try:
        consumer.assign([TopicPartition(shifts_topic, 0)])
        consumer.seek_to_beginning()
        got: list = []
        wait_until(lambda: got.extend(consumer) or len(got) >= 2, 30, "interest_shift records on the topic")
        time.sleep(0.5)
        got.extend(consumer)
    finally:
        consumer.close()
    assert sorted(r.key for r in got) == [b"alice", b"carol"]
    values = [json.loads(r.value) for r in got]
    for r, v in zip(got, values):
        assert v["kind"] == "interest_shift" and v["entity"].encode() == r.key and v["stream"] == "interactions"
        assert v["unit"] == "nats" and v["n_current"] == v["n_reference"] == N
        assert v["divergence"] >= 0.3 and v["p_value"] <= 0.001
    alice = next(v for v in values if v["entity"] == "alice")
    assert alice["top_bins"][0]["bin"] in ("games", "books")
    # -- the results file has them too, beside the aggregate rows (which keep their shape) --------
    rows = results_rows(tmp_path / "state" / "results.jsonl")
    in_file = [r for r in rows if r.get("kind") == "interest_shift"]
    assert sorted(in_file, key=lambda r: r["entity"]) == sorted(values, key=lambda r: r["entity"])
    assert all("kind" not in r and "feature" in r for r in rows if r not in in_file)
    # -- metrics: aggregates, never a user label -------------------------------------------------
    assert s.value("driftmon_entities_tracked", stream="interactions") == 3
    assert s.value("driftmon_entity_windows_compared_total", stream="interactions") == 3
    assert s.value("driftmon_entity_divergence_count", stream="interactions") == 3
    assert not [lab for name, lab, _ in s.samples if any(v in ("alice", "bob", "carol") for v in lab.values())]
    # -- replay of the same events reports the same shifts ----------------------------------------
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(events) + b"\n")
    out = io.StringIO()
    replay(parse_config(doc), str(path), "json", None, False, out)
    replayed = [json.loads(x) for x in out.getvalue().splitlines()]
    assert sorted((r for r in replayed if r.get("kind") == "interest_shift"), key=lambda r: r["entity"]) == \
        sorted(values, key=lambda r: r["entity"])


def test_entity_state_survives_a_restart_through_the_checkpoint(kafka_broker, fresh_topic, tmp_path):
    """Users' previous windows are in the checkpoint: a daemon stopped after the first window of
    each user and started again on the same state dir reports the shift of the second."""
    topic, shifts_topic = fresh_topic(partitions=1), fresh_topic(partitions=1, prefix="shifts")
    t0 = math.floor((time.time() - 3600) / 60) * 60 + 1
    events = user_events(t0)
    half = 3 * N  # every user's first window (the events interleave the three users)
    doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / "state", segmented=False)
    doc["streams"][0]["entities"] = {"key": "user_id", "feature": "item.category", "window": {"last_events": N},
                                     "min_events": N, "topic": shifts_topic}
    with running(doc) as daemon:
        send(kafka_broker.bootstrap, topic, events[:half])
        wait_until(lambda: processed(daemon, half), 60, f"{half} events consumed")
    with running(doc) as daemon:  # same group and state dir: resumes from the checkpoint
        assert daemon.pipelines["interactions"].monitors[0].tracked == 3
        send(kafka_broker.bootstrap, topic, events[half:])
        wait_until(lambda: (lambda sc: sc.get("driftmon_entity_shifts_total", stream="interactions") >= 2)(
            scrape(daemon.server.address)), 60, "two shifts after the restart")
    rows = results_rows(tmp_path / "state" / "results.jsonl")
    assert sorted(r["entity"] for r in rows if r.get("kind") == "interest_shift") == ["alice", "carol"]
