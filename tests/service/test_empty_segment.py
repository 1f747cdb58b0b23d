"""A segment value ``""`` and the overall series stay two series everywhere (issue 9, item 9).

Before the fix, events whose segment field was ``""`` formed a segment whose key
was exported as ``segment=""``, exactly the label of the overall series: one
metric series for two detectors, and the same webhook labels, fingerprint and
Idempotency-Key, so a receiver deduplicating on the key dropped one alert.

A real daemon reads real events from tansu (every event has ``"platform": ""``, so
the segment and the overall series see the same drift and fire together) and
delivers to a real receiver.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from driftmon.outputs.alerts.payload import fingerprint
from driftmon.testing.receiver import WebhookSink
from driftmon.vocabulary import EMPTY_SEGMENT
from tests.service.test_daemon import (
    SECRET,
    daemon_cfg,
    drift_events,
    expected_firing_keys,
    hook,
    processed,
    results_rows,
    running,
    scrape,
    send,
    wait_until,
)

pytestmark = pytest.mark.kafka


def test_empty_segment_value_and_overall_series_differ_in_metrics_labels_fingerprints_and_keys(
        kafka_broker, fresh_topic, tmp_path):
    topic = fresh_topic(partitions=1)
    events = []
    for raw in drift_events(4, drift=(2, 4), seed=5):
        doc = orjson.loads(raw)
        doc["platform"] = ""
        events.append(orjson.dumps(doc))
    sink = WebhookSink(secret=SECRET)
    doc = daemon_cfg(kafka_broker.bootstrap, topic, tmp_path / "state", webhooks=[hook("oncall", sink.url)])
    doc["streams"][0]["features"] = doc["streams"][0]["features"][:1]  # item_category only
    try:
        with running(doc) as daemon:
            send(kafka_broker.bootstrap, topic, events)
            wait_until(lambda: processed(daemon, len(events)), 60, f"{len(events)} events consumed")

            wait_until(lambda: sum(a.json["status"] == "firing" for a in sink.accepted()) >= 2, 30,
                       "firing webhooks for the overall series and the empty segment")
            s = scrape(daemon.server.address)
        rows = results_rows(tmp_path / "state" / "results.jsonl")
    finally:
        sink.stop()

    # the pipeline: two series, the overall one (segment null) and the "__empty__" segment
    assert {r["segment"] for r in rows} == {None, EMPTY_SEGMENT}
    fired = [r for r in rows if r["transition"] == "fired"]
    assert {r["segment"] for r in fired} == {None, EMPTY_SEGMENT}

    # /metrics: one series per detector; the overall one has no segment label
    key = {"stream": "interactions", "feature": "item_category"}
    assert {lab["segment"] for lab, _ in s.all("driftmon_window_events")} == {"", EMPTY_SEGMENT}
    for seg in (None, EMPTY_SEGMENT):
        mine = [r for r in rows if r["segment"] == seg]
        lab = {**key, "segment": seg or ""}
        assert s.value("driftmon_window_events", **lab) == mine[-1]["n_current"] > 2500
        assert s.value("driftmon_alerts_total", **lab, transition="fired") == sum(
            r["transition"] == "fired" for r in mine) >= 1

    # webhooks: distinct labels, fingerprints and Idempotency-Keys; nothing deduplicated away
    firing = [a for a in sink.accepted() if a.json["status"] == "firing"]
    keys = Counter(a.idempotency_key for a in firing)
    assert all(n == 1 for n in keys.values()), keys
    assert set(keys) == expected_firing_keys(rows)
    assert len(keys) == len(fired)  # one notification per fired transition, both series
    prints = {a.json["alerts"][0]["labels"]["segment"]: a.json["alerts"][0]["fingerprint"] for a in firing}
    assert prints[""] != prints[EMPTY_SEGMENT]
    for a in firing:
        assert a.json["alerts"][0]["fingerprint"] == fingerprint(a.json["alerts"][0]["labels"])
        assert a.signature_valid is True
