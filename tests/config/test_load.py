"""Config: the contract YAML parses; every error names its key path and what was
expected; ``${VAR}`` interpolation; ``validate-config`` redacts secrets."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from driftmon.config import (
    Config,
    ConfigError,
    DetectorConfig,
    KafkaConfig,
    load_config,
    parse_config,
    parse_duration,
    redacted,
)

ROOT = Path(__file__).resolve().parents[2]

# The config block of the engine issue's "Contract" section, verbatim.
CONTRACT_YAML = """
streams:
  - name: interactions
    topic: recsys.interactions            # used by the daemon; replay ignores it
    timestamp: {field: ts, unit: s}       # s | ms (epoch) | iso (RFC 3339)
    window: {size: 300s, slide: 300s, allowed_lateness: 30s}   # event time; or {count: 10000}
    segment_by: [platform]                # optional
    features:
      - {name: item_category, field: item.category, type: categorical, categories: [books, music, video]}  # declared vocabulary (+ __other__, __missing__)
      - {name: item_id, field: item.id, type: categorical, top_k: 500}
      - {name: score, field: score, type: numeric, edges: [0.0, 0.1, 0.2, 0.5, 1.0]}  # or {bins: quantile, num_bins: 20}
      - {name: dwell, field: dwell_ms, type: numeric, bins: quantile, num_bins: 20, detector: {thresholds: {warn: 0.1, critical: 0.2}}}  # per-feature override
detector:                                 # defaults for every feature
  metric: kl                              # kl | kl_reverse | jeffreys | js | hellinger | psi
  reference: previous                     # previous | pinned
  smoothing: {method: additive, alpha: 0.5}   # none | additive | floor
  min_count: 500
  thresholds: {warn: 0.05, critical: 0.1}
  max_p_value: 0.001                      # null disables the significance requirement
  hysteresis: {fire_after: 1, resolve_after: 1}
"""


def contract() -> dict:
    return yaml.safe_load(CONTRACT_YAML)


def error_of(data: object, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return info.value


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m driftmon.cli`` in a clean environment (only what the test sets)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTMON", "KAFKA", "HOOK", "T_"))}
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "driftmon.cli", *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )


# ----------------------------------------------------------------------------- the contract parses


def test_contract_yaml_parses_into_typed_objects():
    cfg = parse_config(contract())
    assert isinstance(cfg, Config)
    (s,) = cfg.streams
    assert s.name == "interactions" and s.topics == ("recsys.interactions",)
    assert (s.timestamp.field, s.timestamp.unit) == ("ts", "s")
    assert (s.window.size, s.window.slide, s.window.allowed_lateness, s.window.count) == (300.0, 300.0, 30.0, None)
    assert s.segment_by == ("platform",)
    cat, item, score, dwell = s.features
    assert (cat.field, cat.type, cat.categories, cat.top_k) == ("item.category", "categorical", ("books", "music", "video"), None)
    assert (item.field, item.top_k, item.categories, item.max_values) == ("item.id", 500, None, 5000)
    assert score.edges == (0.0, 0.1, 0.2, 0.5, 1.0) and score.num_bins is None
    assert (dwell.field, dwell.num_bins, dwell.edges, dwell.relative_accuracy) == ("dwell_ms", 20, None, 0.01)
    d = cfg.detector
    assert (d.metric, d.reference, d.smoothing.method, d.smoothing.alpha) == ("kl", "previous", "additive", 0.5)
    assert (d.min_count, d.thresholds.warn, d.thresholds.critical, d.max_p_value) == (500, 0.05, 0.1, 0.001)
    assert (d.hysteresis.fire_after, d.hysteresis.resolve_after) == (1, 1)
    # Every feature inherits the defaults; the per-feature override changes only what it names.
    assert cat.detector == item.detector == score.detector == d
    assert (dwell.detector.thresholds.warn, dwell.detector.thresholds.critical) == (0.1, 0.2)
    assert dwell.detector.min_count == 500 and dwell.detector.max_p_value == 0.001


def test_config_objects_are_immutable():
    cfg = parse_config(contract())
    with pytest.raises(AttributeError):
        cfg.detector.min_count = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.streams[0].window.size = 1.0  # type: ignore[misc]


def test_defaults_when_sections_are_omitted():
    cfg = parse_config({"streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 3}]}]})
    s = cfg.streams[0]
    assert s.topics == ("s",) and s.window.size == 300.0 and s.window.slide == 300.0
    assert s.features[0].field == "c" and cfg.detector == DetectorConfig()


def test_max_p_value_null_disables_significance_and_count_windows_parse():
    d = contract()
    d["detector"]["max_p_value"] = None
    d["streams"][0]["window"] = {"count": 10000}
    cfg = parse_config(d)
    assert cfg.detector.max_p_value is None
    assert cfg.streams[0].window.is_count and cfg.streams[0].window.count == 10000


def test_hopping_window_and_duration_units():
    d = contract()
    d["streams"][0]["window"] = {"size": "1h", "slide": "15m", "allowed_lateness": "250ms"}
    w = parse_config(d).streams[0].window
    assert (w.size, w.slide, w.allowed_lateness) == (3600.0, 900.0, 0.25)


@pytest.mark.parametrize(
    "text,seconds", [(300, 300.0), (2.5, 2.5), ("300", 300.0), ("300s", 300.0), ("5m", 300.0), ("250ms", 0.25),
                     ("1h", 3600.0), ("1d", 86400.0), (" 1.5 m ", 90.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


# ----------------------------------------------------------------------------- errors name path + expectation


def _set(path: str, value: object):
    """Mutation that sets a dotted/indexed path in the contract document."""

    def apply(d: dict) -> dict:
        node: object = d
        parts = path.replace("[", ".").replace("]", "").split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})  # type: ignore[index]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # type: ignore[index]
        return d

    return apply


BAD = [
    # (mutation, exact error path, words the message must contain)
    (_set("streams[0].features[2].edges", "abc"), "streams[0].features[2].edges",
     ["expected a list of at least 2 finite, strictly increasing numbers", "'abc'"]),
    (_set("streams[0].features[2].edges", [0.0, 0.5, 0.2]), "streams[0].features[2].edges", ["strictly increasing"]),
    (_set("streams[0].features[2].edges", [1.0]), "streams[0].features[2].edges", ["at least 2"]),
    (_set("streams[0].features[3].bins", "abc"), "streams[0].features[3].bins", ["bins: quantile", "'abc'"]),
    (_set("streams[0].features[3].num_bins", 1), "streams[0].features[3].num_bins", ["expected an integer >= 2", "1"]),
    (_set("streams[0].features[0].colour", "red"), "streams[0].features[0].colour", ["unknown key"]),
    (_set("streams[0].window.sise", "5m"), "streams[0].window.sise", ["unknown key", "size"]),
    (_set("detectr", {}), "detectr", ["unknown key", "detector"]),
    (_set("detector.thresholds.warm", 0.1), "detector.thresholds.warm", ["unknown key", "warn"]),
    (_set("streams[0].window.size", "5 minutes"), "streams[0].window.size",
     ["expected a duration like 300s, 5m or 250ms", "'5 minutes'"]),
    (_set("streams[0].window.allowed_lateness", "-30s"), "streams[0].window.allowed_lateness", ["expected a duration"]),
    (_set("streams[0].window.allowed_lateness", -30), "streams[0].window.allowed_lateness",
     ["expected a non-negative duration"]),
    (_set("streams[0].window.size", True), "streams[0].window.size", ["expected a duration"]),
    (_set("streams[0].window", {"size": "300s", "slide": "70s"}), "streams[0].window.slide",
     ["expected a slide that divides the size", "300.0s", "70.0s"]),
    (_set("streams[0].window", {"size": "60s", "slide": "120s"}), "streams[0].window.slide",
     ["expected a slide that divides the size"]),
    (_set("streams[0].window", {"size": 0}), "streams[0].window.size", ["expected a duration in [0.001s, 366d], got 0"]),
    (_set("streams[0].window", {"count": 0}), "streams[0].window.count", ["expected an integer >= 1"]),
    (_set("detector.thresholds", {"warn": 0.2, "critical": 0.1}), "detector.thresholds.critical",
     ["expected critical >= warn (0.2)", "0.1"]),
    (_set("streams[0].features[3].detector", {"thresholds": {"warn": 0.3}}), "streams[0].features[3].detector.thresholds.critical",
     ["expected critical >= warn (0.3)"]),
    (_set("detector.metric", "kld"), "detector.metric", ["expected one of kl, kl_reverse, jeffreys, js, hellinger, psi", "'kld'"]),
    (_set("detector.reference", "first"), "detector.reference", ["expected one of previous, pinned"]),
    (_set("detector.smoothing", {"method": "laplace"}), "detector.smoothing.method", ["expected one of none, additive, floor"]),
    (_set("detector.smoothing", {"method": "additive", "alpha": 0}), "detector.smoothing.alpha", ["> 0"]),
    (_set("detector.smoothing", {"method": "floor", "floor": 1.5}), "detector.smoothing.floor", ["in [0, 1]"]),
    (_set("detector.smoothing", {"method": "floor", "floor": 1}), "detector.smoothing.floor", ["(0, 1)"]),
    (_set("detector.min_count", "many"), "detector.min_count", ["expected an integer", "'many'"]),
    (_set("detector.min_count", 0), "detector.min_count", ["expected an integer >= 1"]),
    (_set("detector.min_count", 2.5), "detector.min_count", ["expected an integer"]),
    (_set("detector.min_count", True), "detector.min_count", ["expected an integer"]),
    (_set("detector.max_p_value", 2), "detector.max_p_value", ["expected a probability in (0, 1] or null"]),
    (_set("detector.max_p_value", "low"), "detector.max_p_value", ["expected a probability", "'low'"]),
    (_set("detector.hysteresis", {"fire_after": 3, "of_last": 2}), "detector.hysteresis.of_last",
     ["expected of_last >= fire_after (3)"]),
    (_set("detector.hysteresis", {"resolve_after": 0}), "detector.hysteresis.resolve_after", ["expected an integer >= 1"]),
    (_set("streams[0].features[0].type", "text"), "streams[0].features[0].type", ["expected one of categorical, numeric"]),
    (_set("streams[0].features[0].top_k", 5), "streams[0].features[0]", ["exactly one of `categories`", "`top_k`"]),
    (_set("streams[0].features[0].categories", []), "streams[0].features[0].categories", ["non-empty list of distinct strings"]),
    (_set("streams[0].features[0].categories", ["a", "a"]), "streams[0].features[0].categories", ["distinct"]),
    (_set("streams[0].features[0].categories", [1, 2]), "streams[0].features[0].categories", ["expected a list of strings"]),
    (_set("streams[0].features[1].name", "dwell"), "streams[0].features", ["unique", "'dwell'"]),
    (_set("streams[0].features[1].name", 7), "streams[0].features[1].name", ["expected a string, got 7"]),
    (_set("streams[0].features", []), "streams[0].features", ["expected a non-empty list of features"]),
    (_set("streams[0].features[0]", "item_category"), "streams[0].features[0]", ["expected a mapping"]),
    (_set("streams[0].timestamp", {"unit": "us"}), "streams[0].timestamp.unit", ["expected one of s, ms, iso", "'us'"]),
    (_set("streams[0].topics", ["a"]), "streams[0].topics", ["`topic` or `topics`, not both"]),
    (_set("streams[0].segment_by", [1]), "streams[0].segment_by", ["expected a list of strings"]),
    (_set("streams[0].max_segments", 0), "streams[0].max_segments", ["expected an integer >= 1"]),
    (_set("streams", []), "streams", ["expected a non-empty list of streams"]),
    (_set("kafka.security_protocol", "TLS"), "kafka.security_protocol", ["expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"]),
    (_set("kafka.max_poll_records", "lots"), "kafka.max_poll_records", ["expected an integer"]),
    (_set("kafka.bootstrap_servers", 9092), "kafka.bootstrap_servers", ["expected a list of strings"]),
    (_set("http.listen", "nope"), "http.listen", ["expected host:port", "'nope'"]),
    (_set("alerts.webhooks", [{"name": "h", "url": "ftp://x"}]), "alerts.webhooks[0].url", ["http:// or https://"]),
    (_set("alerts.webhooks", [{"url": "http://x"}]), "alerts.webhooks[0].name", ["required"]),
    (_set("alerts.webhooks", [{"name": "h", "url": "http://x", "timeout": "soon"}]), "alerts.webhooks[0].timeout",
     ["expected a duration"]),
    (_set("state.checkpoint_interval", "often"), "state.checkpoint_interval", ["expected a duration"]),
    (_set("logging.format", "xml"), "logging.format", ["expected one of text, json"]),
    (_set("lifecycle.close_windows_on_shutdown", "yes"), "lifecycle.close_windows_on_shutdown", ["expected true or false"]),
]


@pytest.mark.parametrize("mutate,path,words", BAD, ids=[b[1] + ":" + b[2][0][:24] for b in BAD])
def test_every_error_names_the_key_path_and_the_expectation(mutate, path, words):
    err = error_of(mutate(contract()))
    assert err.path == path
    text = str(err)
    assert text.startswith(path + ": "), text
    for w in words:
        assert w in text, (w, text)


def test_duplicate_stream_names_and_non_mapping_root():
    d = contract()
    d["streams"].append(copy.deepcopy(d["streams"][0]))
    err = error_of(d)
    assert err.path == "streams" and "'interactions' repeats" in str(err)
    assert "expected a mapping" in str(error_of([1, 2]))


def test_load_config_reports_unreadable_files_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("streams: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(str(bad))


# ----------------------------------------------------------------------------- environment interpolation


def test_missing_env_var_names_path_and_variable():
    d = contract()
    d["streams"][0]["topic"] = "${TOPIC_NAME}"
    err = error_of(d, {})
    assert err.path == "streams[0].topic"
    assert "environment variable TOPIC_NAME is not set" in str(err) and "${TOPIC_NAME:-default}" in str(err)


def test_env_var_and_default():
    d = contract()
    d["streams"][0]["topic"] = "recsys.${ENV:-dev}.interactions"
    assert parse_config(d, {}).streams[0].topics == ("recsys.dev.interactions",)
    assert parse_config(d, {"ENV": "prod"}).streams[0].topics == ("recsys.prod.interactions",)
    d["kafka"] = {"bootstrap_servers": ["${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"], "group_id": "${GROUP:-}driftmon"}
    k = parse_config(d, {"KAFKA_BOOTSTRAP": "b1:9093"}).kafka
    assert k.bootstrap_servers == ("b1:9093",) and k.group_id == "driftmon"


def test_whole_value_env_var_takes_the_type_the_key_expects():
    d = contract()
    d["detector"]["min_count"] = "${MIN_COUNT}"
    d["detector"]["thresholds"] = {"warn": "${WARN:-0.05}", "critical": "${CRIT:-0.2}"}
    d["detector"]["max_p_value"] = "${MAX_P:-0.01}"
    d["streams"][0]["window"] = {"size": "${WINDOW:-5m}", "slide": "${WINDOW:-5m}"}
    d["lifecycle"] = {"close_windows_on_shutdown": "${CLOSE_ON_EXIT:-false}"}
    cfg = parse_config(d, {"MIN_COUNT": "700", "CRIT": "0.3"})
    det = cfg.detector
    assert det.min_count == 700 and isinstance(det.min_count, int)
    assert (det.thresholds.warn, det.thresholds.critical, det.max_p_value) == (0.05, 0.3, 0.01)
    assert cfg.streams[0].window.size == 300.0
    assert cfg.lifecycle.close_windows_on_shutdown is False
    # A value that is not an integer is reported at the key that needed one.
    err = error_of(d, {"MIN_COUNT": "lots"})
    assert err.path == "detector.min_count" and "expected an integer, got 'lots'" in str(err)


# ----------------------------------------------------------------------------- redaction and the CLI


SECRET_YAML = """
streams:
  - name: s
    features: [{name: c, type: categorical, categories: [a, b]}]
kafka:
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_plain_username: driftmon
  sasl_plain_password: ${T_SASL_PASSWORD}
  ssl_password: literal-ssl-pass-0xBEEF
alerts:
  webhooks:
    - {name: oncall, url: "http://127.0.0.1:9000/hook", secret: "${T_HOOK_SECRET}"}
    - {name: open, url: "http://127.0.0.1:9001/hook"}
"""


def test_redacted_replaces_every_secret():
    cfg = parse_config(yaml.safe_load(SECRET_YAML), {"T_SASL_PASSWORD": "sasl-pw-xyzzy", "T_HOOK_SECRET": "hook-s3cr3t"})
    assert cfg.alerts.webhooks[0].secret == "hook-s3cr3t"  # the value itself is kept for signing
    text = json.dumps(redacted(cfg))
    for secret in ("sasl-pw-xyzzy", "hook-s3cr3t", "literal-ssl-pass-0xBEEF"):
        assert secret not in text
    assert "hook-s3cr3t" not in repr(cfg.alerts)
    data = redacted(cfg)
    assert data["kafka"]["sasl_plain_password"] == "***" and data["kafka"]["ssl_password"] == "***"
    assert data["alerts"]["webhooks"][0]["secret"] == "***"
    assert data["alerts"]["webhooks"][1]["secret"] is None  # nothing to hide is not shown as ***
    assert data["kafka"]["sasl_plain_username"] == "driftmon"


def test_validate_config_cli_prints_secrets_redacted(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(SECRET_YAML)
    proc = cli("validate-config", str(path), env={"T_SASL_PASSWORD": "sasl-pw-xyzzy", "T_HOOK_SECRET": "hook-s3cr3t"})
    assert proc.returncode == 0, proc.stderr
    for secret in ("sasl-pw-xyzzy", "hook-s3cr3t", "literal-ssl-pass-0xBEEF"):
        assert secret not in proc.stdout and secret not in proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["kafka"]["sasl_plain_password"] == "***"
    assert printed["kafka"]["ssl_password"] == "***"
    assert printed["alerts"]["webhooks"][0]["secret"] == "***"
    assert "ok: 1 stream(s), 1 feature(s)" in proc.stderr


def test_validate_config_cli_reports_the_path_and_exits_2(tmp_path):
    d = contract()
    d["streams"][0]["features"][2]["edges"] = "abc"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    proc = cli("validate-config", str(path))
    assert proc.returncode == 2
    assert "streams[0].features[2].edges: expected a list" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    proc = cli("validate-config", str(path.with_name("nope.yaml")))
    assert proc.returncode == 2 and "cannot read config" in proc.stderr


def test_validate_config_cli_missing_env_var(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(SECRET_YAML)
    proc = cli("validate-config", str(path), env={"T_HOOK_SECRET": "hook-s3cr3t"})
    assert proc.returncode == 2
    assert "kafka.sasl_plain_password: environment variable T_SASL_PASSWORD is not set" in proc.stderr
    assert "hook-s3cr3t" not in proc.stderr


def test_shipped_example_config_validates():
    proc = cli("validate-config", "config/driftmon.yaml")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert [s["name"] for s in printed["streams"]] == ["interactions", "predictions", "outcomes"]
    assert [c["name"] for c in printed["calibration"]] == ["ctr_model"]
    cfg = load_config(str(ROOT / "config" / "driftmon.yaml"), {})
    inter, pred = cfg.stream("interactions"), cfg.stream("predictions")
    names = {f.name: f for f in inter.features}
    assert {"item_category", "platform", "dwell"} <= set(names)
    assert names["dwell"].type == "numeric" and names["item_category"].type == "categorical"
    assert {f.name for f in pred.features} == {"score", "top_category"}
    assert cfg.kafka.bootstrap_servers == ("127.0.0.1:9092",)
    assert cfg.alerts.webhooks[0].secret is None  # ${DRIFTMON_WEBHOOK_SECRET:-} unset -> no secret
    with_env = load_config(str(ROOT / "config" / "driftmon.yaml"), {"KAFKA_BOOTSTRAP": "k:1", "DRIFTMON_WEBHOOK_SECRET": "s"})
    assert with_env.kafka.bootstrap_servers == ("k:1",) and with_env.alerts.webhooks[0].secret == "s"


# -- Regressions: config bugs found while writing these tests (fixed; formerly test_config_regressions.py)


DOC = """
streams: [{name: s, features: [{name: c, type: categorical, categories: [a]}]}]
kafka: {group_id: "${T_GROUP:-driftmon}", sasl_plain_password: "${T_PW:-x}"}
alerts: {webhooks: [{name: h, url: "http://127.0.0.1:9/x", secret: "${T_SECRET:-s}"}]}
"""


@pytest.mark.parametrize("var", ["T_SECRET", "T_PW"])
def test_numeric_looking_secret_from_env_is_accepted_and_never_echoed(var):
    try:
        cfg = parse_config(yaml.safe_load(DOC), {var: "123456"})
    except ConfigError as exc:  # today: "alerts.webhooks[0].secret: expected a string, got 123456"
        assert "123456" not in str(exc), f"secret echoed in the error: {exc}"
        raise
    assert "123456" in (cfg.alerts.webhooks[0].secret, cfg.kafka.sasl_plain_password)


def test_string_keys_keep_env_values_verbatim():
    cfg = parse_config(yaml.safe_load(DOC), {"T_GROUP": "007"})
    assert cfg.kafka.group_id == "007"  # today: "kafka.group_id: expected a string, got 7"


def test_kafka_passwords_never_appear_in_reprs():
    k = KafkaConfig(ssl_password="ssl-pw-1", sasl_plain_password="sasl-pw-2")
    for text in (repr(k), str(k), repr(Config(streams=(), kafka=k))):
        assert "ssl-pw-1" not in text and "sasl-pw-2" not in text


def test_validate_config_output_hides_url_credentials_and_query():
    from driftmon.config import redacted

    cfg = parse_config({
        "streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 3}]}],
        "alerts": {"webhooks": [{"name": "w", "url": "https://bob:hunter2@hooks.example/x?token=abc123"}]},
    })
    shown = str(redacted(cfg))
    assert "hunter2" not in shown and "abc123" not in shown and "bob" not in shown
    assert "https://hooks.example/..." in shown
    slack = parse_config({
        "streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 3}]}],
        "alerts": {"webhooks": [{"name": "w", "url": "https://hooks.slack.com/services/T0/B0/SECRETTOKEN"},
                                {"name": "q", "url": "https://example.com?token=abc"}]},
    })
    shown = str(redacted(slack))
    assert "SECRETTOKEN" not in shown and "token=abc" not in shown  # tokens live in paths and queries too


@pytest.mark.parametrize("kafka,where", [
    ({"security_protocol": "SASL_SSL"}, "kafka.sasl_mechanism"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "BOGUS"}, "kafka.sasl_mechanism"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "u"},
     "kafka.sasl_plain_username"),
])
def test_sasl_settings_are_checked_at_start(kafka, where):
    doc = {"streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 3}]}], "kafka": kafka}
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert str(err.value).startswith(where)


def test_open_vocabulary_and_quantile_summary_settings():
    base = {"name": "s", "features": [
        {"name": "c", "type": "categorical", "top_k": 10, "max_values": 50},
        {"name": "x", "type": "numeric", "bins": "quantile", "relative_accuracy": 0.005}]}
    c, x = parse_config({"streams": [base]}).streams[0].features
    assert (c.top_k, c.max_values, x.relative_accuracy) == (10, 50, 0.005)
    bad_cap = {**base, "features": [{"name": "c", "type": "categorical", "top_k": 10, "max_values": 5}]}
    with pytest.raises(ConfigError, match=r"streams\[0\]\.features\[0\]\.max_values: expected at least top_k"):
        parse_config({"streams": [bad_cap]})
    for accuracy in (0, 0.9, float("nan")):
        bad = {**base, "features": [{"name": "x", "type": "numeric", "bins": "quantile",
                                     "relative_accuracy": accuracy}]}
        with pytest.raises(ConfigError, match="relative_accuracy"):
            parse_config({"streams": [bad]})


def test_learn_events_is_accepted_with_a_notice():
    cfg = parse_config({"streams": [{"name": "s", "learn_events": 2000, "features": [
        {"name": "c", "type": "categorical", "top_k": 3}]}]})
    (notice,) = cfg.notices
    assert notice.startswith("streams[0].learn_events is no longer used")
