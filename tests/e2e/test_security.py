"""Security properties, checked on the real daemon process where it matters.

* Webhook bodies are HMAC-SHA256 signed (checked here with :mod:`hmac`
  directly, not with driftmon's own ``verify``); a tampered body or another
  secret fails.
* Secrets (webhook secret, a token in the webhook URL, the SASL password),
  given through the environment, never appear in the daemon's output with
  DEBUG logging, as text or as JSON lines, nor in ``validate-config`` output,
  nor in a logged traceback.
* The metrics/health server binds to loopback unless told otherwise.
* Kafka TLS and SASL settings reach kafka-python's consumer and producer
  kwargs unchanged, and only as keys kafka-python knows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from kafka import KafkaConsumer, KafkaProducer

from driftmon.config import HttpConfig, load_config, parse_config
from driftmon.outputs.alerts import AlertDispatcher
from driftmon.pipeline import StreamPipeline
from driftmon.service.daemon import Daemon
from driftmon.service.logs import setup_logging
from driftmon.source.kafka import client_kwargs, consumer_kwargs
from driftmon.testing import synth
from driftmon.testing.embedded import create_topics
from driftmon.testing.receiver import WebhookSink
from driftmon.util.secrets import redact_kwargs
from tests.conftest import current_client, produce, unique_name
from tests.e2e.test_crash import REPO, DaemonProcess, sample, wait_until, write_config

HOOK_SECRET = "hmac-Secret-7f3a9c1e"
URL_TOKEN = "tok-4c9d2e7b1a"
SASL_PASSWORD = "sasl-Pa55word-e8d1"
SSL_PASSWORD = "ssl-Key-Pa55-0b6f"
ENV = {"DM_HOOK_SECRET": HOOK_SECRET, "DM_URL_TOKEN": URL_TOKEN, "DM_SASL_PASSWORD": SASL_PASSWORD,
       "DM_SSL_PASSWORD": SSL_PASSWORD}
SECRETS = (HOOK_SECRET, URL_TOKEN, SASL_PASSWORD, SSL_PASSWORD)
START = 1_600_000_000.0


def stream(topic: str) -> dict:
    return {"name": "interactions", "topic": topic,
            "window": {"size": "60s", "allowed_lateness": "5s"}, "segment_by": ["platform"],
            "features": [{"name": "item_category", "field": "item.category", "type": "categorical",
                          "categories": list(synth.CATEGORIES)}]}


def events(n: int = 60_000) -> list[bytes]:
    episode = synth.Episode(START + 200, START + 400)
    return list(synth.encode(synth.interactions(n, start=START, rate=100.0, episode=episode, seed=11)))


def assert_no_secret(text: str, where: str) -> None:
    for s in SECRETS:
        assert s not in text, f"secret {s[:4]}... leaked in {where}:\n" + "\n".join(
            line for line in text.splitlines() if s in line)[:2000]


# ---------------------------------------------------------------------------------------------
# HMAC
# ---------------------------------------------------------------------------------------------


def _expected_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_webhook_bodies_are_hmac_signed_with_the_configured_secret(tmp_path):
    doc = {"streams": [stream("t")], "detector": {"min_count": 200},
           "alerts": {"webhooks": [{"name": "oncall", "url": "http://127.0.0.1:9/hook", "secret": HOOK_SECRET}]}}
    cfg = parse_config(doc)
    pipe = StreamPipeline(cfg.streams[0])
    results = [r for r in pipe.process(events()).results if r.transition != "none"]
    assert results
    with WebhookSink(secret=HOOK_SECRET) as sink:
        alerts = replace(cfg.alerts, webhooks=(replace(cfg.alerts.webhooks[0], url=sink.url),))
        dispatcher = AlertDispatcher(alerts, str(tmp_path))
        for r in results:
            dispatcher.handle(r)
        dispatcher.start()
        assert dispatcher.flush(30)
        dispatcher.close()
        got = sink.accepted()
    assert len(got) >= len(results)
    for r in got:
        header = r.headers["x-driftmon-signature"]
        assert hmac.compare_digest(header, _expected_signature(r.body, HOOK_SECRET))
        assert header != _expected_signature(r.body, HOOK_SECRET + "x")
        assert header != _expected_signature(r.body + b" ", HOOK_SECRET)  # any change to the body
        assert r.signature_valid
        assert HOOK_SECRET.encode() not in r.body and HOOK_SECRET not in json.dumps(r.headers)


# ---------------------------------------------------------------------------------------------
# Secrets in logs and validate-config
# ---------------------------------------------------------------------------------------------


def _daemon_doc(topic: str, bootstrap: str, tmp_path, hook_port: int, *, fmt: str, kafka: dict | None = None) -> dict:
    return {
        "streams": [stream(topic)],
        "detector": {"min_count": 200},
        "kafka": {"client": current_client(), "bootstrap_servers": [bootstrap], "group_id": unique_name("sec-group"),
                  "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000, "poll_timeout_ms": 200, **(kafka or {})},
        "http": {"listen": "127.0.0.1:0"},
        "alerts": {"webhooks": [{"name": "oncall", "url": f"http://127.0.0.1:{hook_port}/hook?token=${{DM_URL_TOKEN}}",
                                 "secret": "${DM_HOOK_SECRET}", "timeout": "2s", "backoff_initial": 0.1,
                                 "backoff_max": "0.5s"}]},
        "state": {"dir": str(tmp_path / "state"), "checkpoint_interval": "0.5s"},
        "logging": {"level": "DEBUG", "format": fmt},
    }


@pytest.mark.kafka
def test_no_secret_in_daemon_output_with_debug_json_logging(kafka_broker, tmp_path):
    """Alerts fire and are delivered after two 500s (so failures, retries and
    successes are all logged), DEBUG level, JSON lines: no secret anywhere."""
    topic = unique_name("sec")
    create_topics(kafka_broker.bootstrap, [topic], partitions=1)
    evs = events()
    produce(kafka_broker.bootstrap, topic, evs, partition=0)
    with WebhookSink(secret=HOOK_SECRET, status_sequence=[500, 500]) as sink:
        doc = _daemon_doc(topic, kafka_broker.bootstrap, tmp_path, sink.port, fmt="json")
        daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path, env=ENV)
        daemon.start()
        wait_until(lambda: sample(daemon.metrics(), "driftmon_events_total") == len(evs), 60, "all events", daemon)
        wait_until(lambda: sample(daemon.metrics(), "driftmon_webhook_deliveries_total", outcome="delivered") >= 2,
                   30, "webhook deliveries", daemon)
        assert daemon.stop() == 0
        assert all(r.signature_valid for r in sink.received)
        assert all(URL_TOKEN in r.path for r in sink.received)  # the token did reach the receiver
    out = daemon.log()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    levels = {x["level"] for x in lines}
    assert "debug" in levels and "warning" in levels, levels  # DEBUG really on, failures really logged
    assert any("webhook oncall" in x["msg"] and "HTTP 500" in x["msg"] for x in lines)
    assert_no_secret(out, "the daemon's JSON log")


@pytest.mark.kafka
def test_no_secret_in_daemon_output_with_sasl_configured_and_text_logging(kafka_broker, tmp_path):
    """SASL_PLAINTEXT PLAIN against a broker that refuses the mechanism: the
    consumer fails and retries, logging errors; the password must not show."""
    kafka = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_plain_username": "driftmon",
             "sasl_plain_password": "${DM_SASL_PASSWORD}", "ssl_password": "${DM_SSL_PASSWORD}"}
    doc = _daemon_doc(unique_name("sec-sasl"), kafka_broker.bootstrap, tmp_path, 9, fmt="text", kafka=kafka)
    daemon = DaemonProcess(write_config(tmp_path / "d.yaml", doc), tmp_path, env=ENV)
    daemon.start()
    daemon.url()
    failed, redacted = {  # how each client says it, and its name of the password setting
        "kafka-python": ("SaslHandshake failed", "'sasl_plain_password': '***'"),
        "confluent-kafka": ("mechanism handshake failed", "'sasl.password': '***'"),
    }[current_client()]
    wait_until(lambda: daemon.log().count(failed) >= 3, 30, "failed SASL handshakes", daemon)
    daemon.kill()  # SIGTERM would wait for kafka-python's bootstrap timeout (see docs/reliability.md)
    out = daemon.log()
    assert redacted in out, out[-2000:]  # the redacted client settings were logged
    assert_no_secret(out, "the daemon's text log")


def test_validate_config_redacts_every_secret(tmp_path):
    doc = _daemon_doc("t", "127.0.0.1:9", tmp_path, 9, fmt="text", kafka={
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "driftmon",
        "sasl_plain_password": "${DM_SASL_PASSWORD}", "ssl_password": "${DM_SSL_PASSWORD}"})
    path = write_config(tmp_path / "d.yaml", doc)
    proc = subprocess.run([sys.executable, "-m", "driftmon.cli", "validate-config", str(path)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **ENV}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["kafka"]["sasl_plain_password"] == "***" and shown["kafka"]["ssl_password"] == "***"
    assert shown["alerts"]["webhooks"][0]["secret"] == "***"
    assert_no_secret(proc.stdout + proc.stderr, "validate-config output")


def test_a_secret_inside_a_logged_exception_is_scrubbed(tmp_path, capsys):
    """The log filter covers tracebacks too, in both formats (an exception
    message can quote a URL or a config value)."""
    doc = _daemon_doc("t", "127.0.0.1:9", tmp_path, 9, fmt="json")
    doc["alerts"]["webhooks"][0]["secret"] = HOOK_SECRET
    for fmt in ("json", "text"):
        doc["logging"]["format"] = fmt
        setup_logging(parse_config(doc, ENV))
        try:
            try:
                raise RuntimeError(f"cannot post with secret {HOOK_SECRET}")
            except RuntimeError:
                logging.getLogger("driftmon.test").exception("delivery failed for %s", HOOK_SECRET)
        finally:
            root = logging.getLogger()
            for h in list(root.handlers):
                root.removeHandler(h)
        err = capsys.readouterr().err
        assert "delivery failed" in err and "RuntimeError" in err
        assert_no_secret(err, f"a logged traceback ({fmt})")


# ---------------------------------------------------------------------------------------------
# Loopback by default
# ---------------------------------------------------------------------------------------------


def test_metrics_server_binds_loopback_by_default(tmp_path):
    assert HttpConfig().host == "127.0.0.1"
    cfg = parse_config({"streams": [stream("t")], "state": {"dir": str(tmp_path / "state")}})
    assert cfg.http.listen == "127.0.0.1:9108"
    assert load_config(str(REPO / "config" / "driftmon.yaml"), {}).http.host == "127.0.0.1"
    # The real server, on the default host (port 0: the default 9108 may be taken on a test machine).
    cfg = replace(cfg, http=replace(cfg.http, listen=f"{cfg.http.host}:0"))
    daemon = Daemon(cfg)
    server = daemon.start_http()
    try:
        host, port = server.server_address
        assert host == "127.0.0.1" and port > 0
    finally:
        server.stop()
        daemon.dispatcher.close()


# ---------------------------------------------------------------------------------------------
# Kafka TLS / SASL settings reach kafka-python
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_tls_and_sasl_settings_flow_into_kafka_python_kwargs(tmp_path, mechanism):
    yaml_text = f"""
streams: [{{name: s, topic: t, features: [{{name: c, type: categorical, categories: [a]}}]}}]
kafka:
  bootstrap_servers: ["broker-1:9093", "broker-2:9093"]
  security_protocol: SASL_SSL
  ssl_cafile: /etc/driftmon/ca.pem
  ssl_certfile: /etc/driftmon/client.pem
  ssl_keyfile: /etc/driftmon/client.key
  ssl_password: ${{DM_SSL_PASSWORD}}
  ssl_check_hostname: false
  sasl_mechanism: {mechanism}
  sasl_plain_username: driftmon
  sasl_plain_password: ${{DM_SASL_PASSWORD}}
"""
    path = tmp_path / "k.yaml"
    path.write_text(yaml_text)
    kafka = load_config(str(path), ENV).kafka
    kw = consumer_kwargs(kafka)
    assert kw["bootstrap_servers"] == ["broker-1:9093", "broker-2:9093"]
    assert kw["security_protocol"] == "SASL_SSL"
    assert (kw["ssl_cafile"], kw["ssl_certfile"], kw["ssl_keyfile"]) == (
        "/etc/driftmon/ca.pem", "/etc/driftmon/client.pem", "/etc/driftmon/client.key")
    assert kw["ssl_password"] == SSL_PASSWORD and kw["ssl_check_hostname"] is False
    assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
        mechanism, "driftmon", SASL_PASSWORD)
    assert kw["enable_auto_commit"] is False
    # Only keys kafka-python accepts, for the consumer and for the producers (DLQ, results topic).
    assert set(kw) <= set(KafkaConsumer.DEFAULT_CONFIG), set(kw) - set(KafkaConsumer.DEFAULT_CONFIG)
    assert set(client_kwargs(kafka)) <= set(KafkaProducer.DEFAULT_CONFIG)
    # What gets logged of them hides both passwords.
    shown = redact_kwargs(kw)
    assert shown["sasl_plain_password"] == "***" and shown["ssl_password"] == "***"
    assert_no_secret(repr(shown), "redacted kwargs")
    assert_no_secret(repr(kafka), "repr(KafkaConfig)")


def test_plaintext_and_ssl_only_send_no_sasl_keys():
    plain = parse_config({"streams": [stream("t")]}).kafka
    assert not any(k.startswith(("ssl_", "sasl_")) for k in consumer_kwargs(plain))
    ssl_only = replace(plain, security_protocol="SSL", ssl_cafile="/ca.pem", sasl_plain_password=SASL_PASSWORD)
    kw = consumer_kwargs(ssl_only)
    assert kw["ssl_cafile"] == "/ca.pem" and not any(k.startswith("sasl_") for k in kw)

