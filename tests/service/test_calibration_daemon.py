"""The daemon joins a predictions topic with an outcomes topic (delayed outcomes, some
later than max_delay) on the real broker and produces calibration results: in the
results sink, in /metrics, as a webhook, and the same scores as ``driftmon replay``
over the same events, one file per stream.  Then a restart resumes from the checkpoint."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftmon.cli import replay
from driftmon.config import parse_config
from driftmon.testing import synth
from driftmon.testing.receiver import WebhookSink
from tests.conftest import unique_name
from tests.service.test_daemon import SECRET, hook, results_rows, running, scrape, send, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.one_client]  # the monitor, not the client, is under test

WINDOW = 30.0
DELAY = 20.0


def config(bootstrap: str, topics: dict[str, str], state: Path, webhooks: list[dict]) -> dict[str, Any]:
    window = {"size": f"{WINDOW:g}s", "allowed_lateness": 0}
    return {
        "streams": [
            {"name": "predictions", "topic": topics["predictions"], "window": window,
             "features": [{"name": "score", "field": "score", "type": "numeric", "edges": [0, 0.25, 0.5, 0.75, 1]}]},
            {"name": "outcomes", "topic": topics["outcomes"], "window": window,
             "features": [{"name": "clicked", "field": "clicked", "type": "categorical",
                           "categories": ["true", "false"]}]},
        ],
        "calibration": [{
            "name": "ctr", "max_delay": f"{DELAY:g}s", "bins": 10, "unmatched": "negative",
            "predictions": {"stream": "predictions", "id": "request_id", "probability": "score"},
            "outcomes": {"stream": "outcomes", "id": "request_id", "label": "clicked"},
            "detector": {"min_count": 300, "thresholds": {"warn": 0.02, "critical": 0.05}},
        }],
        "detector": {"min_count": 300, "max_p_value": 1e-9},  # the per-stream features: quiet
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": unique_name("driftmon"),
                  "auto_offset_reset": "earliest", "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000,
                  "max_poll_interval_ms": 10000, "poll_timeout_ms": 200, "max_poll_records": 2000},
        "http": {"listen": "127.0.0.1:0", "ready_broker_timeout": "15s"},
        "alerts": {"webhooks": webhooks},
        "state": {"dir": str(state), "checkpoint_interval": "1s"},
        "sinks": {"jsonl": str(state / "results.jsonl")},
        "lifecycle": {"grace_period": "5s"},
    }


def cal_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "join"} for r in rows if r.get("kind") == "calibration"]


def test_daemon_joins_two_topics_and_reports_calibration_drift(kafka_broker, fresh_topic, tmp_path):
    topics = {"predictions": fresh_topic(partitions=1), "outcomes": fresh_topic(partitions=1)}
    base = math.floor((time.time() - 3600) / WINDOW) * WINDOW
    onset = base + 6 * WINDOW + 5.0
    preds, outs = synth.calibration_traffic(12 * int(WINDOW) * 30, base + 0.5, rate=30.0, seed=21,
                                            overconfident_from=onset, max_delay=DELAY, late_share=0.03)
    p_bytes = [orjson.dumps(e) for e in preds]
    o_bytes = [orjson.dumps(e) for e in outs]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(p_bytes) + b"\n")
    (tmp_path / "o.jsonl").write_bytes(b"\n".join(o_bytes) + b"\n")
    state = tmp_path / "state"
    sink = WebhookSink(secret=SECRET)
    doc = config(kafka_broker.bootstrap, topics, state, [hook("oncall", sink.url)])
    try:
        # outcomes first: the daemon reads the outcomes topic ahead of the predictions, and
        # still joins them (the watermark is the minimum over both streams)
        send(kafka_broker.bootstrap, topics["outcomes"], o_bytes[: len(o_bytes) // 2])
        with running(doc) as daemon:
            addr = daemon.server.address
            send(kafka_broker.bootstrap, topics["predictions"], p_bytes)
            send(kafka_broker.bootstrap, topics["outcomes"], o_bytes[len(o_bytes) // 2:])
            s = wait_until(lambda: (lambda sc: sc if sc.get("driftmon_calibration_events_total", calibration="ctr",
                                                            kind="outcome") >= len(outs) and
                                    sc.get("driftmon_calibration_events_total", calibration="ctr",
                                           kind="prediction") >= len(preds) else None)(scrape(addr)),
                           60, "every prediction and outcome read")
            wait_until(lambda: any(a.json["status"] == "firing" and a.json["alerts"][0]["labels"].get("feature") == "ctr"
                                   for a in sink.accepted()), 30, "a calibration alert webhook")
            s = scrape(addr)
        rows = results_rows(state / "results.jsonl")
    finally:
        sink.stop()

    cal = [r for r in rows if r.get("kind") == "calibration"]
    assert len(cal) >= 8
    before = [r for r in cal if r["window_end"] <= _iso(onset)]
    assert before and all(r["transition"] == "none" for r in before), [(r["window_start"], r["divergence"]) for r in cal]
    first = next(r for r in cal if r["transition"] == "fired")
    assert _iso(onset) < first["window_end"] <= _iso(onset + 2 * WINDOW)
    assert first["name"] == "ctr" and first["stream"] == "predictions" and first["ece"] > 0.05
    last = cal[-1]["join"]
    assert last["joined"] > 0 and last["late_outcome"] > 0  # 1.5 to 3 max_delay late: late, then orphan past 2
    assert last["invalid_prediction"] == last["invalid_outcome"] == last["overflow_prediction"] == 0
    # /metrics: the calibration series beside the features'
    key = {"stream": "predictions", "feature": "ctr", "segment": ""}
    assert s.value("driftmon_divergence", **key, metric="calibration_kl") == pytest.approx(cal[-1]["divergence"])
    assert s.value("driftmon_alert_state", **key) == 2
    assert s.value("driftmon_calibration_ece", calibration="ctr") == pytest.approx(cal[-1]["ece"])
    assert s.value("driftmon_calibration_events_total", calibration="ctr", kind="late_outcome") > 0
    assert s.value("driftmon_calibration_pending", calibration="ctr", buffer="predictions") > 0

    # the same scores as replay over one file per stream (the windows the daemon closed)
    out = io.StringIO()
    replay(parse_config(doc), None, "json", None, False, out,
           inputs=[("predictions", str(tmp_path / "p.jsonl")), ("outcomes", str(tmp_path / "o.jsonl"))])
    replayed = cal_rows([json.loads(x) for x in out.getvalue().splitlines()[:-1]])
    assert cal_rows(cal) == replayed[: len(cal)]

    # a restart resumes from the checkpoint: the open windows and buffers were kept
    more_p, more_o = synth.calibration_traffic(int(3 * WINDOW * 30), preds[-1]["ts"] + 0.1, rate=30.0, seed=22,
                                               overconfident_from=onset, max_delay=DELAY, id_prefix="z")
    send(kafka_broker.bootstrap, topics["predictions"], [orjson.dumps(e) for e in more_p])
    send(kafka_broker.bootstrap, topics["outcomes"], [orjson.dumps(e) for e in more_o])
    with running(doc) as daemon:
        wait_until(lambda: scrape(daemon.server.address).get(
            "driftmon_calibration_events_total", calibration="ctr", kind="prediction") >= len(more_p), 60,
            "the new predictions read")
        wait_until(lambda: len([r for r in results_rows(state / "results.jsonl")
                                if r.get("kind") == "calibration"]) > len(cal) + 1, 30, "more calibration windows")
    after = [r for r in results_rows(state / "results.jsonl") if r.get("kind") == "calibration"]
    ends = [r["window_end"] for r in after]
    assert ends == sorted(set(ends))  # no window twice, none skipped by the restart
    assert after[-1]["join"]["prediction"] > len(preds)  # totals carried over


def _iso(ts: float) -> str:
    from driftmon.detect.result import rfc3339

    return rfc3339(ts) or ""


def test_checkpointed_calibration_state_is_restored_refused_or_dropped_with_the_config(tmp_path):
    """No broker needed: the constructor restores the checkpoint (tuning changes keep it, other
    bins refuse it with the way out, a calibration no longer configured is dropped)."""
    from driftmon.service.checkpoint import CheckpointError, describe
    from driftmon.service.daemon import Daemon

    topics = {"predictions": "cal-p", "outcomes": "cal-o"}
    doc = config("127.0.0.1:9", topics, tmp_path / "state", [])
    preds, outs = synth.calibration_traffic(900, 1.7e9, rate=30.0, seed=5, max_delay=DELAY)
    daemon = Daemon(parse_config(doc))
    (m,) = daemon.monitors
    m.feed("predictions", m.prepare("predictions", [orjson.dumps(e) for e in preds]))
    m.feed("outcomes", m.prepare("outcomes", [orjson.dumps(e) for e in outs]))
    assert daemon.checkpoint()
    daemon.lock.release()
    state = describe(str(tmp_path / "state"))
    assert state["monitors"]["calibration:ctr"]["prediction"] == len(preds)
    assert set(state["streams"]) == {"predictions", "outcomes"}

    doc["calibration"][0]["detector"]["thresholds"] = {"warn": 0.03, "critical": 0.04}  # tuning: kept
    again = Daemon(parse_config(doc))
    assert again.monitors[0].snapshot()["pending"] == m.snapshot()["pending"]
    assert again.metrics.render().count(b'driftmon_calibration_events_total{calibration="ctr",kind="joined"} 0.0')
    again.lock.release()

    doc["calibration"][0]["bins"] = 5  # another shape: refused, with the way out
    with pytest.raises(CheckpointError, match="reset-state"):
        Daemon(parse_config(doc))

    del doc["calibration"]  # no longer configured: its state is dropped, the streams restored
    plain = Daemon(parse_config(doc))
    assert plain.monitors == []
    plain.lock.release()
