"""``validate-config`` checks every value ``run`` will use: ranges, finiteness and
names, each error naming its key path (issue 9, item 10).  Every bad value below
passed validation before and then failed, stalled or misbehaved in ``run``."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from driftmon import cli as driftmon_cli
from driftmon.config import Config, ConfigError, parse_config
from driftmon.config.node import MAX_DURATION, MAX_INT
from driftmon.config.streams import MAX_ALPHA

ROOT = Path(__file__).resolve().parents[2]

# A config that sets every key (valid), mutated one key at a time below.
FULL: dict[str, Any] = {
    "streams": [{
        "name": "s", "topic": "events.in",
        "timestamp": {"field": "ts", "unit": "s", "max_future_skew": "1h"},
        "window": {"size": "60s", "slide": "30s", "allowed_lateness": "5s", "idle_timeout": "60s"},
        "segment_by": ["platform"], "max_segments": 10, "include_overall": True,
        "features": [
            {"name": "c", "field": "item.cat", "type": "categorical", "top_k": 5, "max_values": 100},
            {"name": "x", "type": "numeric", "bins": "quantile", "num_bins": 10, "relative_accuracy": 0.01},
            {"name": "e", "type": "numeric", "edges": [0, 1, 2]},
        ],
    }],
    "detector": {
        "metric": "kl", "unit": "nats", "reference": "previous", "min_count": 100, "max_p_value": 0.01,
        "permutations": 99, "top_bins": 3, "smoothing": {"method": "additive", "alpha": 0.5, "floor": 1e-6},
        "thresholds": {"warn": 0.05, "critical": 0.1},
        "hysteresis": {"fire_after": 1, "of_last": 2, "resolve_after": 1},
        "fdr": 0.01, "unusual": {"history": 30, "min_history": 5, "quantile": 0.9, "min_z": 3},
    },
    "kafka": {
        "bootstrap_servers": ["127.0.0.1:9092"], "group_id": "g", "client_id": "c", "auto_offset_reset": "earliest",
        "max_poll_interval_ms": 300000, "max_poll_records": 500, "poll_timeout_ms": 500,
        "session_timeout_ms": 10000, "heartbeat_interval_ms": 3000, "dead_letter_topic": "events.dlq",
        "decode_workers": 0,
    },
    "http": {"listen": "127.0.0.1:9108", "ready_broker_timeout": "30s"},
    "alerts": {"outbox_max": 100, "webhooks": [{
        "name": "h", "url": "https://hooks.example/x", "timeout": "5s", "max_attempts": 3,
        "backoff_initial": "500ms", "backoff_max": "60s"}]},
    "state": {"dir": "./state", "checkpoint_interval": "5s"},
    "sinks": {"jsonl": "results.jsonl", "kafka_topic": "drift.results"},
    "logging": {"level": "INFO", "format": "text"},
    "lifecycle": {"grace_period": "10s", "close_windows_on_shutdown": False},
}

NAN, INF = float("nan"), float("inf")


def with_value(path: str, value: Any) -> dict[str, Any]:
    """FULL with the value at ``path`` (``a.b[0].c``) replaced."""
    doc = copy.deepcopy(FULL)
    node: Any = doc
    parts = path.replace("[", ".").replace("]", "").split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    return doc


# (key path set, value, key path in the error, words the message must contain)
BAD: list[tuple[str, Any, str, list[str]]] = [
    # the probe's findings
    ("logging.level", "LOUD", "logging.level", ["expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL", "'LOUD'"]),
    ("http.listen", "127.0.0.1:99999", "http.listen", ["port in 0..65535", "'99999'"]),
    ("kafka.max_poll_records", 0, "kafka.max_poll_records", ["expected an integer >= 1, got 0"]),
    ("state.checkpoint_interval", NAN, "state.checkpoint_interval", ["finite", "nan"]),
    ("state.checkpoint_interval", INF, "state.checkpoint_interval", ["finite", "inf"]),
    ("state.checkpoint_interval", 0, "state.checkpoint_interval", ["expected a duration in (0s, 366d], got 0"]),
    ("alerts.webhooks[0].timeout", 0, "alerts.webhooks[0].timeout", ["expected a duration in (0s, 366d], got 0"]),
    ("alerts.webhooks[0].backoff_initial", 0, "alerts.webhooks[0].backoff_initial", ["(0s, 366d]"]),
    ("alerts.webhooks[0].backoff_max", "0s", "alerts.webhooks[0].backoff_max", ["(0s, 366d]", "'0s'"]),
    ("alerts.webhooks[0].backoff_max", "100ms", "alerts.webhooks[0].backoff_max",
     ["expected at least backoff_initial (0.5s)"]),
    ("streams[0].topic", "events in", "streams[0].topic", ["not a legal Kafka topic name", "'events in'"]),
    ("streams[0].topic", "..", "streams[0].topic", ["not a legal Kafka topic name"]),
    ("streams[0].topic", "t" * 250, "streams[0].topic", ["1 to 249 characters"]),
    ("kafka.dead_letter_topic", "dead/letters", "kafka.dead_letter_topic", ["not a legal Kafka topic name"]),
    ("sinks.kafka_topic", ".", "sinks.kafka_topic", ["not a legal Kafka topic name"]),
    ("sinks.kafka_topic", "r\u00e9sultats", "sinks.kafka_topic", ["not a legal Kafka topic name"]),
    ("streams[0].window.size", NAN, "streams[0].window.size", ["finite", "nan"]),
    ("streams[0].window.size", INF, "streams[0].window.size", ["finite", "inf"]),  # was a traceback
    ("streams[0].window.slide", NAN, "streams[0].window.slide", ["finite"]),
    ("sinks.extra", 1, "sinks.extra", ["unknown key (expected one of: jsonl, kafka_topic)"]),  # was "one of: "
    ("state.extra", 1, "state.extra", ["expected one of: checkpoint_interval, dir"]),
    ("lifecycle.extra", 1, "lifecycle.extra", ["expected one of: close_windows_on_shutdown, grace_period"]),
    ("streams[0].window", {"count": 10, "size": "5m"}, "streams[0].window.size",
     ["unknown key for count windows (expected one of: count)"]),
    ("streams[0].features[2].top_k", 5, "streams[0].features[2].top_k", ["unknown key for a numeric feature"]),
    # other numbers that are NaN, infinite, zero, negative or absurd where run needs otherwise
    ("kafka.max_poll_interval_ms", 0, "kafka.max_poll_interval_ms", [">= 1"]),
    ("kafka.session_timeout_ms", 2**31, "kafka.session_timeout_ms", [f"<= {MAX_INT}"]),
    ("kafka.heartbeat_interval_ms", 10000, "kafka.heartbeat_interval_ms", ["less than session_timeout_ms (10000)"]),
    ("kafka.poll_timeout_ms", 0, "kafka.poll_timeout_ms", [">= 1"]),
    ("kafka.poll_timeout_ms", 600000, "kafka.poll_timeout_ms", ["<= 60000"]),
    ("kafka.auto_offset_reset", "none", "kafka.auto_offset_reset", ["expected one of earliest, latest"]),
    ("kafka.decode_workers", 2, "kafka.decode_workers", ["<= 1"]),
    ("kafka.record_reader", "fast", "kafka.record_reader", ["expected one of batch, kafka-python"]),
    ("kafka.isolation_level", "read_all", "kafka.isolation_level", ["expected one of read_committed, read_uncommitted"]),
    ("kafka.group_id", " ", "kafka.group_id", ["non-empty"]),
    ("kafka.bootstrap_servers", [], "kafka.bootstrap_servers", ["non-empty list"]),
    ("kafka.bootstrap_servers", ["b1:9092,b2:99999"], "kafka.bootstrap_servers[0]", ["port in 1..65535"]),
    ("kafka.bootstrap_servers", ["bad host:9092"], "kafka.bootstrap_servers[0]", ["host name"]),
    ("kafka.dead_letter_topic", "events.in", "kafka.dead_letter_topic", ["input topic of stream 's'"]),
    ("sinks.kafka_topic", "events.in", "sinks.kafka_topic", ["read its own output"]),
    ("sinks.kafka_topic", "events.dlq", "sinks.kafka_topic", ["other than kafka.dead_letter_topic"]),
    ("http.listen", "[::1]:9108", "http.listen", ["IPv6"]),
    ("http.listen", "300.1.2.3:9108", "http.listen", ["IP address or a host name", "'300.1.2.3'"]),
    ("http.listen", "127.0.0.1", "http.listen", ["expected host:port"]),
    ("http.ready_broker_timeout", NAN, "http.ready_broker_timeout", ["finite"]),
    ("http.ready_broker_timeout", 0, "http.ready_broker_timeout", ["(0s, 366d]"]),
    ("alerts.webhooks[0].timeout", NAN, "alerts.webhooks[0].timeout", ["finite"]),
    ("alerts.webhooks[0].timeout", INF, "alerts.webhooks[0].timeout", ["finite"]),
    ("alerts.webhooks[0].timeout", 1e10, "alerts.webhooks[0].timeout", ["(0s, 366d]"]),  # OverflowError in run
    ("alerts.webhooks[0].max_attempts", -1, "alerts.webhooks[0].max_attempts", [">= 0"]),
    ("alerts.webhooks[0].url", "https://hooks.example:99999/x", "alerts.webhooks[0].url", ["Port out of range"]),
    ("alerts.webhooks[0].url", "https:///x", "alerts.webhooks[0].url", ["with a host"]),
    ("alerts.webhooks[0].url", "https://hooks.example/a b", "alerts.webhooks[0].url", ["without spaces"]),
    ("alerts.webhooks[0].name", "", "alerts.webhooks[0].name", ["non-empty"]),
    ("alerts.webhooks", [{"name": "h", "url": "http://a/"}, {"name": "h", "url": "http://b/"}],
     "alerts.webhooks[1].name", ["unique", "'h' repeats"]),
    ("alerts.outbox_max", 0, "alerts.outbox_max", [">= 1"]),
    ("state.dir", "", "state.dir", ["non-empty"]),
    ("lifecycle.grace_period", NAN, "lifecycle.grace_period", ["finite"]),
    ("lifecycle.grace_period", -1, "lifecycle.grace_period", ["non-negative"]),
    ("lifecycle.grace_period", 1e12, "lifecycle.grace_period", ["366d"]),
    ("streams[0].window.size", 0, "streams[0].window.size", ["[0.001s, 366d]"]),
    ("streams[0].window.size", "400d", "streams[0].window.size", ["366d", "'400d'"]),
    ("streams[0].window.slide", "1ms", "streams[0].window.slide", ["at least size / 1000"]),
    ("streams[0].window.allowed_lateness", INF, "streams[0].window.allowed_lateness", ["finite"]),
    ("streams[0].window.idle_timeout", NAN, "streams[0].window.idle_timeout", ["finite"]),
    ("streams[0].timestamp.max_future_skew", -INF, "streams[0].timestamp.max_future_skew", ["finite"]),
    ("streams[0].timestamp.field", "a..b", "streams[0].timestamp.field", ["dotted path"]),
    ("streams[0].name", "", "streams[0].name", ["non-empty"]),
    ("streams[0].max_segments", 10**6, "streams[0].max_segments", ["<= 10000"]),
    ("streams[0].segment_by", ["p", "p"], "streams[0].segment_by", ["unique"]),
    ("streams[0].features[0].field", "item.", "streams[0].features[0].field", ["dotted path"]),
    ("streams[0].features[0].top_k", 0, "streams[0].features[0].top_k", [">= 1"]),
    ("streams[0].features[0].max_values", 10**7, "streams[0].features[0].max_values", ["<= 1000000"]),
    ("streams[0].features[1].num_bins", 10**6, "streams[0].features[1].num_bins", ["<= 10000"]),
    ("streams[0].features[1].relative_accuracy", NAN, "streams[0].features[1].relative_accuracy", ["finite"]),
    ("streams[0].features[2].edges", [0, NAN, 2], "streams[0].features[2].edges", ["finite"]),
    ("streams[0].features[2].edges", [0, 1, INF], "streams[0].features[2].edges", ["finite"]),
    ("detector.permutations", -1, "detector.permutations", [">= 0"]),
    ("detector.permutations", 10**9, "detector.permutations", ["<= 100000"]),
    ("detector.min_count", 0, "detector.min_count", [">= 1"]),
    ("detector.top_bins", -1, "detector.top_bins", [">= 0"]),
    ("detector.max_p_value", 0, "detector.max_p_value", ["(0, 1] or null"]),
    ("detector.max_p_value", NAN, "detector.max_p_value", ["(0, 1] or null"]),
    ("detector.max_p_value", 1.5, "detector.max_p_value", ["(0, 1] or null"]),
    ("detector.thresholds.warn", NAN, "detector.thresholds.warn", ["finite"]),
    ("detector.thresholds.critical", INF, "detector.thresholds.critical", ["finite"]),
    ("detector.thresholds.warn", 0.5, "detector.thresholds.critical", ["expected critical >= warn (0.5)"]),
    ("detector.smoothing.alpha", NAN, "detector.smoothing.alpha", ["finite"]),
    ("detector.smoothing.alpha", INF, "detector.smoothing.alpha", ["finite"]),
    ("detector.smoothing.alpha", 1e307, "detector.smoothing.alpha", ["in [0, 1e+06]"]),  # overflows to inf in run
    ("detector.smoothing.floor", NAN, "detector.smoothing.floor", ["finite"]),
    ("detector.hysteresis.of_last", 10**20, "detector.hysteresis.of_last", [f"<= {MAX_INT}"]),
]


@pytest.mark.parametrize("key,value,path,words", BAD, ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD])
def test_validate_config_rejects_values_run_cannot_use(tmp_path, capsys, key, value, path, words):
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(with_value(key, value)))
    with pytest.raises(SystemExit) as exited:  # any other exception would be a traceback
        driftmon_cli.main(["validate-config", str(file)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"driftmon: invalid config: {path}: "), err
    for w in words:
        assert w in err, (w, err)


def test_the_full_config_and_edge_values_are_accepted():
    cfg = parse_config(FULL)
    assert cfg.kafka.dead_letter_topic == "events.dlq" and cfg.alerts.webhooks[0].backoff_initial == 0.5
    for key, value in [("http.listen", "0.0.0.0:0"), ("http.listen", "metrics-host.local:65535"),
                       ("streams[0].topic", "a" * 249), ("streams[0].topic", "My_Topic-1.x"),
                       ("streams[0].window", {"size": "366d"}), ("streams[0].window.slide", "60ms"),
                       ("detector.max_p_value", 1), ("detector.max_p_value", None), ("detector.permutations", 0),
                       ("kafka.bootstrap_servers", ["[::1]:9092", "kafka-0.kafka:9093", "broker"]),
                       ("lifecycle.grace_period", 0), ("alerts.webhooks[0].max_attempts", 0)]:
        parse_config(with_value(key, value))


def test_values_are_normalised_where_run_needs_one_form():
    cfg = parse_config(with_value("logging.level", "debug"))
    assert cfg.logging.level == "DEBUG"
    assert parse_config(with_value("logging.level", "warn")).logging.level == "WARNING"
    # one variable holding a comma-separated broker list, as deployments pass it
    doc = with_value("kafka.bootstrap_servers", ["${KAFKA_BOOTSTRAP}"])
    assert parse_config(doc, {"KAFKA_BOOTSTRAP": "b1:9092, b2:9092"}).kafka.bootstrap_servers == ("b1:9092", "b2:9092")
    # an optional topic or path set to "" (e.g. ${DLQ:-}) is off, not an illegal name
    doc = with_value("kafka.dead_letter_topic", "${DLQ:-}")
    doc["sinks"] = {"kafka_topic": "", "jsonl": ""}
    cfg = parse_config(doc)
    assert (cfg.kafka.dead_letter_topic, cfg.sinks.kafka_topic, cfg.sinks.jsonl) == (None, None, None)


def test_env_interpolation_and_durations_still_work():
    doc = with_value("alerts.webhooks[0].timeout", "${HOOK_TIMEOUT:-2s}")
    doc["state"]["checkpoint_interval"] = "${CKPT}"
    doc["streams"][0]["window"] = {"size": "${WINDOW:-1h}", "slide": "15m"}
    doc["streams"][0]["topic"] = "recsys.${ENV:-dev}.events"
    cfg = parse_config(doc, {"CKPT": "250ms"})
    assert cfg.alerts.webhooks[0].timeout == 2.0 and cfg.state.checkpoint_interval == 0.25
    assert (cfg.streams[0].window.size, cfg.streams[0].window.slide) == (3600.0, 900.0)
    assert cfg.streams[0].topics == ("recsys.dev.events",)
    # a value from the environment is checked like a literal one
    for env, path in [({"CKPT": ".nan"}, "state.checkpoint_interval"), ({"CKPT": "0"}, "state.checkpoint_interval"),
                      ({"CKPT": "1s", "ENV": "a b"}, "streams[0].topic")]:
        with pytest.raises(ConfigError) as err:
            parse_config(doc, env)
        assert err.value.path == path


def test_default_topic_from_an_illegal_stream_name_says_where_it_came_from():
    doc = copy.deepcopy(FULL)
    doc["streams"][0].pop("topic")
    doc["streams"][0]["name"] = "my stream"
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert err.value.path == "streams[0].topic" and "the default: the stream's name" in str(err.value)


KEEP = {"streams[0]": ("name", "features"), "streams[0].features[0]": ("name", "type", "top_k"),
        "alerts.webhooks[0]": ("name", "url")}  # required keys, kept so the unknown one is reached


@pytest.mark.parametrize("section", ["kafka", "http", "state", "sinks", "logging", "lifecycle", "alerts", "detector",
                                     "detector.thresholds", "detector.smoothing", "detector.hysteresis",
                                     "streams[0].window", "streams[0].timestamp", "streams[0]",
                                     "streams[0].features[0]", "alerts.webhooks[0]"])
def test_an_unknown_key_lists_every_key_its_section_accepts(section):
    # a section holding only the unknown key used to say "expected one of: " with nothing after it
    doc = copy.deepcopy(FULL)
    node: Any = doc
    for p in section.replace("[", ".").replace("]", "").split("."):
        node = node[int(p)] if isinstance(node, list) else node[p]
    accepted = sorted(node)
    for k in [k for k in node if k not in KEEP.get(section, ())]:
        del node[k]
    node["zzz_unknown"] = 1
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    text = str(err.value)
    assert err.value.path == f"{section}.zzz_unknown", text
    listed = text.split("expected one of: ", 1)[1].rstrip(")").split(", ")
    assert "zzz_unknown" not in listed and set(accepted) <= set(listed), text


# ----------------------------------------------------------------------------- any value, anywhere


def _leaves(obj: Any, path: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, f"{path}.{k}" if path else k)] + ([path] if path else [])
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return [p for i, v in enumerate(obj) for p in _leaves(v, f"{path}[{i}]")] + [path]
    return [path]


LEAVES = _leaves(FULL)
HOSTILE = st.one_of(
    st.sampled_from([NAN, INF, -INF, 0, -1, 0.0, -0.0, 1e-300, 1e300, 2**31, 2**63, 10**400, True, None, "", " ",
                     ".", "..", "nan", "inf", "-1s", "1e400", "9" * 400 + "s", "0s", "${UNSET}", "${E:-.nan}",
                     "\x00", "a" * 300, [], {}, [NAN], ["a", "a"], {"a": 1}]),
    st.floats(), st.integers(), st.text(max_size=20),
)


def _numbers(obj: Any) -> list[Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [n for f in dataclasses.fields(obj) for n in _numbers(getattr(obj, f.name))]
    if isinstance(obj, (list, tuple)):
        return [n for v in obj for n in _numbers(v)]
    return [obj] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(LEAVES), value=HOSTILE)
@example(key="logging.level", value=None)  # once crashed check_log_level (None.upper())
@example(key="http.listen", value=None)  # once crashed check_listen (None.strip())
@example(key="kafka.group_id", value=None)  # once gave a consumer with no group
def test_any_value_at_any_key_is_either_valid_or_a_config_error_naming_a_path(key, value):
    try:
        cfg = parse_config(with_value(key, value), {"E": "x"})
    except ConfigError as exc:
        assert str(exc).startswith(exc.path + ": ") and exc.path, str(exc)
        return
    assert isinstance(cfg, Config)
    for n in _numbers(cfg):  # whatever was accepted is a number run can use
        assert math.isfinite(n), (key, value, n)
        assert not isinstance(n, int) or abs(n) <= MAX_INT, (key, value, n)  # C ints, Kafka's int32
    for w in cfg.alerts.webhooks:  # waits: threading and socket timeouts overflow past ~9.2e9 s
        assert max(w.timeout, w.backoff_max, cfg.lifecycle.grace_period, cfg.state.checkpoint_interval) <= MAX_DURATION
    assert cfg.detector.smoothing.alpha <= MAX_ALPHA  # K * alpha must not overflow when normalising


# ----------------------------------------------------------------------------- as processes


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "driftmon.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("key,value,command", [
    ("streams[0].window.size", INF, "validate-config"),  # crashed validate-config itself
    ("logging.level", "LOUD", "run"),  # passed validation, then a traceback at start
    ("http.listen", "127.0.0.1:99999", "run"),
    ("state.checkpoint_interval", NAN, "run"),  # never checkpointed
    ("kafka.max_poll_records", 0, "run"),  # never consumed
])
def test_bad_values_stop_both_commands_with_exit_2_and_no_traceback(tmp_path, key, value, command):
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(with_value(key, value)))
    proc = _run(*((command, str(file)) if command == "validate-config" else (command, "-c", str(file))))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"driftmon: invalid config: {key}: ") and "Traceback" not in proc.stderr
