"""Outages survived by the real daemon process, with real brokers and receivers.

* Broker outage: tansu on moto S3 (records and offsets survive a restart) is
  stopped for 30 s under a running daemon (``http.ready_broker_timeout: 5s``):
  the process stays up, ``/readyz`` turns 503 then 200 again, and events
  produced after the restart (plain, non-idempotent producer) are counted,
  each exactly once, without restarting the daemon.
* Webhook outage: the receiver is down for ~25 s (the issue says "several
  minutes"; retries are capped at ``backoff_max: 1s`` here, so the length of
  the outage only changes how many retries pile up, not the outcome) and the
  daemon is killed -9 and restarted meanwhile.  Once the receiver is up it
  gets every alert, deduplicated by Idempotency-Key, in order per alert
  fingerprint, exactly the notifications an uninterrupted run sends.
* A bounded outbox drops the oldest alerts only, each counted in
  ``driftmon_webhook_deliveries_total{outcome="dropped"}`` and logged.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from driftmon.config import parse_config
from driftmon.outputs.alerts import AlertDispatcher
from driftmon.pipeline import StreamPipeline
from driftmon.service.checkpoint import describe
from driftmon.testing import synth
from driftmon.testing.embedded import EmbeddedBroker, create_topics, free_port
from driftmon.testing.receiver import WebhookSink
from driftmon.testing.s3 import MotoS3
from tests.conftest import current_client, produce, unique_name
from tests.e2e.test_crash import (
    DaemonProcess,
    assert_no_driftmon_traceback,
    checkpoint_offsets,
    sample,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.kafka

START = 1_600_000_000.0
SECRET = "outage-test-hmac-secret"


def config(topic: str, bootstrap: str, state: Path, *, hook_port: int | None = None, outbox_max: int = 10_000) -> dict:
    doc: dict = {
        "streams": [{
            "name": "interactions", "topic": topic,
            "window": {"size": "60s", "slide": "60s", "allowed_lateness": "5s"},
            "segment_by": ["platform"], "max_segments": 5,
            "features": [{"name": "item_category", "field": "item.category", "type": "categorical",
                          "categories": list(synth.CATEGORIES)}],
        }],
        "detector": {"min_count": 200, "reference": "previous", "hysteresis": {"fire_after": 1, "resolve_after": 1}},
        "kafka": {"client": current_client(), "bootstrap_servers": [bootstrap], "group_id": unique_name("outage-group"),
                  "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000, "poll_timeout_ms": 200},
        "http": {"listen": "127.0.0.1:0", "ready_broker_timeout": "5s"},
        "state": {"dir": str(state), "checkpoint_interval": "0.5s"},
        "sinks": {"jsonl": str(state / "results.jsonl")},
        "lifecycle": {"grace_period": "3s"},
    }
    if hook_port is not None:
        doc["alerts"] = {"outbox_max": outbox_max, "webhooks": [{
            "name": "oncall", "url": f"http://127.0.0.1:{hook_port}/hook", "secret": SECRET,
            "timeout": "2s", "backoff_initial": 0.1, "backoff_max": "1s"}]}
    return doc


def events(n: int, start: float = START, seed: int = 11, drift: bool = True) -> list[bytes]:
    episode = synth.Episode(start + 200, start + 400) if drift else None
    return list(synth.encode(synth.interactions(n, start=start, rate=100.0, episode=episode, seed=seed)))


def counted(state: Path) -> int:
    try:
        return describe(str(state))["streams"]["interactions"]["events"]
    except Exception:
        return -1


# ---------------------------------------------------------------------------------------------
# Broker outage
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_broker_down_30s_daemon_stays_up_readyz_flips_and_ingestion_resumes(tmp_path):
    with MotoS3() as s3, EmbeddedBroker(storage=s3.storage, env=s3.env) as broker:
        topic = unique_name("outage")
        create_topics(broker.bootstrap, [topic], partitions=1)
        before, after = events(5000, seed=1), events(5000, start=START + 50.0, seed=2)
        produce(broker.bootstrap, topic, before, partition=0)
        state = tmp_path / "state"
        daemon = DaemonProcess(write_config(tmp_path / "d.yaml", config(topic, broker.bootstrap, state)), tmp_path)
        daemon.start()
        wait_until(lambda: counted(state) == len(before), 60, "the first events counted", daemon)
        wait_until(lambda: daemon.get("/readyz")[0] == 200, 20, "/readyz 200", daemon)
        pid = daemon.proc.pid

        broker.stop()
        down_at = time.monotonic()
        status, reason = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(daemon.get("/readyz")),
                                    30, "/readyz 503 while the broker is down", daemon)
        assert "broker" in reason
        while time.monotonic() - down_at < 30:  # the rest of the 30 s outage: the daemon must stay up
            assert daemon.alive, daemon.log()[-3000:]
            assert daemon.get("/healthz")[0] == 200
            time.sleep(0.5)
        assert daemon.get("/readyz")[0] == 503

        broker.start()
        produce(broker.bootstrap, topic, after, partition=0)  # plain producer: tansu forgot producer ids
        wait_until(lambda: counted(state) == len(before) + len(after), 90,
                   "events produced after the restart to be counted", daemon)
        wait_until(lambda: daemon.get("/readyz")[0] == 200, 30, "/readyz 200 again", daemon)
        assert daemon.proc.pid == pid and daemon.runs == 1  # no restart
        assert checkpoint_offsets(state)[(topic, 0)] == len(before) + len(after)
        m = daemon.metrics()
        assert sample(m, "driftmon_events_total", stream="interactions") == len(before) + len(after)  # once each
        wait_until(lambda: sample(daemon.metrics(), "driftmon_ready") == 1, 10, "driftmon_ready 1", daemon)
        assert daemon.stop() == 0
        assert_no_driftmon_traceback(daemon.log())


# ---------------------------------------------------------------------------------------------
# Webhook outage
# ---------------------------------------------------------------------------------------------


def reference_notifications(doc: dict, evs: list[bytes], tmp: Path) -> list:
    """What an uninterrupted run delivers: the replay pipeline's results through
    a real dispatcher to a receiver that is always up (keys and bodies, in order)."""
    cfg = parse_config(doc)
    pipe = StreamPipeline(cfg.streams[0])
    results = [r for i in range(0, len(evs), 5000) for r in pipe.process(evs[i:i + 5000]).results]
    with WebhookSink(secret=SECRET) as sink:
        alerts = replace(cfg.alerts, webhooks=(replace(cfg.alerts.webhooks[0], url=sink.url),), outbox_max=10_000)
        dispatcher = AlertDispatcher(alerts, str(tmp))
        for r in results:
            dispatcher.handle(r)
        dispatcher.start()
        assert dispatcher.flush(30)
        dispatcher.close()
        return sink.accepted()


def per_fingerprint(received) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in received:
        alert = r.json["alerts"][0]
        out.setdefault(alert["fingerprint"], []).append(r.idempotency_key)
    return out


def outbox_files(state: Path) -> int:
    return len(list((state / "outbox" / "oncall").glob("*.json")))


@pytest.mark.slow
@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_webhook_down_and_daemon_killed_meanwhile_every_alert_arrives_once_in_order(kafka_broker, tmp_path):
    topic = unique_name("hook-outage")
    create_topics(kafka_broker.bootstrap, [topic], partitions=1)
    evs = events(60_000)
    port = free_port()  # reserved for the receiver, which is down for now
    state = tmp_path / "state"
    doc = config(topic, kafka_broker.bootstrap, state, hook_port=port)
    reference = reference_notifications(doc, evs, tmp_path / "reference")
    want_keys = [r.idempotency_key for r in reference]
    assert len(want_keys) >= 6 and len(set(want_keys)) == len(want_keys)
    assert {r.json["status"] for r in reference} == {"firing", "resolved"}

    produce(kafka_broker.bootstrap, topic, evs, partition=0)
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path)
    daemon.start()
    down_at = time.monotonic()
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == len(evs), 60, "all events checkpointed", daemon)
    wait_until(lambda: outbox_files(state) == len(want_keys), 10, "every alert queued in the outbox", daemon)
    wait_until(lambda: sample(daemon.metrics(), "driftmon_webhook_deliveries_total", outcome="retry") > 0, 10,
               "failed delivery attempts", daemon)
    daemon.kill()  # crash while the receiver is down: the outbox is on disk
    assert outbox_files(state) == len(want_keys)
    daemon.start()
    daemon.url()
    while time.monotonic() - down_at < 25:
        assert daemon.alive
        time.sleep(0.5)

    with WebhookSink(port=port, secret=SECRET) as sink:
        assert sink.wait_for(len(want_keys), 30, unique=True), (len(sink.unique_alerts()), daemon.log()[-3000:])
        wait_until(lambda: outbox_files(state) == 0, 10, "the outbox to drain", daemon)
        time.sleep(1.0)  # nothing more may come
        got = sink.accepted()
        assert daemon.stop() == 0
    unique = sink.unique_alerts()
    assert [r.idempotency_key for r in unique] == want_keys
    assert per_fingerprint(unique) == per_fingerprint(reference)
    assert all(r.signature_valid for r in got)
    for r in got:  # a redelivery carries the same notification
        ref = next(x for x in reference if x.idempotency_key == r.idempotency_key)
        assert r.json["alerts"] == ref.json["alerts"]
    assert len(got) == len(want_keys)  # none was in flight at the kill, so not even a redelivery


@pytest.mark.slow
@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_full_outbox_drops_oldest_only_counted_and_logged(kafka_broker, tmp_path):
    topic = unique_name("hook-full")
    create_topics(kafka_broker.bootstrap, [topic], partitions=1)
    evs = events(60_000)
    port = free_port()
    state = tmp_path / "state"
    keep = 3
    doc = config(topic, kafka_broker.bootstrap, state, hook_port=port, outbox_max=keep)
    want_keys = [r.idempotency_key for r in reference_notifications(doc, evs, tmp_path / "reference")]
    assert len(want_keys) > keep
    produce(kafka_broker.bootstrap, topic, evs, partition=0)
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path)
    daemon.start()
    wait_until(lambda: checkpoint_offsets(state).get((topic, 0)) == len(evs), 60, "all events checkpointed", daemon)
    dropped = len(want_keys) - keep
    wait_until(lambda: sample(daemon.metrics(), "driftmon_webhook_deliveries_total", receiver="oncall",
                              outcome="dropped") == dropped, 10, f"{dropped} drops counted", daemon)
    assert outbox_files(state) == keep
    assert daemon.log().count("outbox full") == dropped

    with WebhookSink(port=port, secret=SECRET) as sink:
        assert sink.wait_for(keep, 30, unique=True)
        wait_until(lambda: outbox_files(state) == 0, 10, "the outbox to drain", daemon)
        assert [r.idempotency_key for r in sink.unique_alerts()] == want_keys[-keep:]  # the newest survive
        # the sender acks (removes the file) before it counts: the counter may lag the empty outbox
        wait_until(lambda: sample(daemon.metrics(), "driftmon_webhook_deliveries_total",
                                  outcome="delivered") == keep, 10, f"{keep} deliveries counted", daemon)
    assert daemon.stop() == 0
