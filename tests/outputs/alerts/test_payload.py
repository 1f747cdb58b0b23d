"""Webhook body: Alertmanager v4 fields, fingerprints, idempotency keys and HMAC signatures."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from driftmon.detect.result import BinShare, DriftResult, rfc3339
from driftmon.outputs.alerts.payload import (
    ZERO_TIME,
    alert_labels,
    build_payload,
    encode,
    fingerprint,
    severity_of,
    sign,
    verify,
)

T0 = 1_700_000_000.0


def result(**kw) -> DriftResult:
    base = dict(
        stream="clicks", feature="category", segment="mobile", window_start=T0, window_end=T0 + 300,
        metric="kl", unit="nats", divergence=0.231, p_value=1.5e-7, n_current=1200, n_reference=1100,
        state="critical", transition="fired", severity="critical", warn_threshold=0.05, critical_threshold=0.1,
        top_bins=(BinShare("toys", 0.1, 0.35, 0.12), BinShare("books", 0.3, 0.1, 0.05)),
        smoothing="additive(alpha=0.5)", counts=(1, 2), bins=("toys", "books"),
    )
    base.update(kw)
    return DriftResult(**base)


def _strict_loads(body: bytes):
    def bad(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(body, parse_constant=bad)


def test_firing_payload_has_alertmanager_v4_fields():
    r = result()
    p = build_payload(r, status="firing", severity="critical", receiver="ops",
                      starts_at=rfc3339(r.window_end), external_url="http://driftmon:9108")
    body = _strict_loads(encode(p))
    assert body["version"] == "4" and body["truncatedAlerts"] == 0
    assert body["status"] == "firing" and body["receiver"] == "ops"
    assert body["externalURL"] == "http://driftmon:9108"
    assert body["groupKey"] == (
        '{}:{alertname="DriftDetected", feature="category", segment="mobile", severity="critical", stream="clicks"}'
    )
    (alert,) = body["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert alert["labels"] == {"alertname": "DriftDetected", "severity": "critical", "stream": "clicks",
                               "feature": "category", "segment": "mobile"}
    assert body["groupLabels"] == body["commonLabels"] == alert["labels"]
    assert body["commonAnnotations"] == alert["annotations"]
    assert alert["startsAt"] == "2023-11-14T22:18:20.000Z"
    assert alert["endsAt"] == ZERO_TIME
    ann = alert["annotations"]
    required = {"summary", "description", "divergence", "metric", "unit", "p_value", "warn_threshold",
                "critical_threshold", "window_start", "window_end", "n_current", "n_reference", "top_bins",
                "smoothing"}
    assert required <= set(ann)
    assert all(isinstance(v, str) for v in ann.values())
    assert float(ann["divergence"]) == 0.231 and float(ann["p_value"]) == 1.5e-7
    assert ann["n_current"] == "1200" and ann["window_start"] == "2023-11-14T22:13:20.000Z"
    assert "clicks/category" in ann["summary"] and "critical" in ann["summary"]
    top = json.loads(ann["top_bins"])
    assert top[0] == {"bin": "toys", "before": 0.1, "after": 0.35, "contribution": 0.12}
    assert body["driftmon"]["idempotency_key"] == f"{alert['fingerprint']}:firing:2023-11-14T22:18:20.000Z"
    assert body["driftmon"]["result"]["divergence"] == 0.231 and "counts" not in body["driftmon"]["result"]


def test_fingerprint_matches_real_alertmanager():
    # Vectors read back from Alertmanager 0.25's /api/v2/alerts after posting these label sets.
    assert fingerprint({"alertname": "DriftDetected", "severity": "warning", "stream": "clicks",
                        "feature": "category", "segment": ""}) == "5da0cc03b47dd5d1"
    assert fingerprint(alert_labels(result(), "critical")) == "6b0566828a96f2db"


def test_fingerprint_stable_and_identity_sensitive():
    labels = alert_labels(result(), "warning")
    fp = fingerprint(labels)
    assert fp == fingerprint(dict(reversed(list(labels.items()))))
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fingerprint(alert_labels(result(), "critical")) != fp
    assert fingerprint(alert_labels(result(segment="web"), "warning")) != fp
    # A segment "" (e.g. restored from an old checkpoint) is not the overall series (issue 9):
    # labels, fingerprint, group key and Idempotency-Key all differ.
    overall = build_payload(result(segment=None), status="firing", severity="warning", receiver="x", starts_at="s")
    empty = build_payload(result(segment=""), status="firing", severity="warning", receiver="x", starts_at="s")
    assert overall["alerts"][0]["labels"]["segment"] == "" and empty["alerts"][0]["labels"]["segment"] == "__empty__"
    assert overall["alerts"][0]["fingerprint"] != empty["alerts"][0]["fingerprint"]
    assert overall["groupKey"] != empty["groupKey"]
    assert overall["driftmon"]["idempotency_key"] != empty["driftmon"]["idempotency_key"]
    # Different windows of the same alert share the fingerprint but not the idempotency key.
    a = build_payload(result(), status="firing", severity="warning", receiver="x", starts_at="s")
    b = build_payload(result(window_end=T0 + 600), status="firing", severity="warning", receiver="x", starts_at="s")
    assert a["alerts"][0]["fingerprint"] == b["alerts"][0]["fingerprint"] == fp
    assert a["driftmon"]["idempotency_key"] != b["driftmon"]["idempotency_key"]


def test_severity_from_result_or_state():
    assert severity_of(result(severity=None, state="critical")) == "critical"
    assert severity_of(result(severity=None, state="warn")) == "warning"
    assert severity_of(result(severity="warning", state="critical")) == "warning"


def test_resolved_payload_and_unsegmented_label():
    r = result(segment=None, transition="resolved", state="ok", divergence=0.01, severity=None)
    p = build_payload(r, status="resolved", severity="warning", receiver="ops",
                      starts_at="2023-11-14T22:00:00.000Z", ends_at=rfc3339(r.window_end))
    (alert,) = p["alerts"]
    assert p["status"] == alert["status"] == "resolved"
    assert alert["labels"]["segment"] == ""
    assert alert["startsAt"] == "2023-11-14T22:00:00.000Z" and alert["endsAt"] == "2023-11-14T22:18:20.000Z"
    assert alert["annotations"]["summary"].startswith("Drift resolved on clicks/category")
    assert 'segment=' not in p["groupKey"]  # empty labels are absent, as in Alertmanager
    assert p["driftmon"]["idempotency_key"].endswith(":resolved:2023-11-14T22:18:20.000Z")


def test_infinite_divergence_is_valid_json():
    r = result(divergence=math.inf, p_value=0.0, top_bins=(BinShare("new", 0.0, 0.2, math.inf),))
    body = _strict_loads(encode(build_payload(r, status="firing", severity="critical", receiver="x", starts_at="s")))
    ann = body["alerts"][0]["annotations"]
    assert ann["divergence"] == "inf" and math.isinf(float(ann["divergence"]))
    assert json.loads(ann["top_bins"])[0]["contribution"] == "inf"
    assert body["driftmon"]["result"]["divergence"] == "inf"


def test_signature_known_vector_and_rejections():
    body = b'{"version":"4"}'
    # openssl: echo -n '{"version":"4"}' | openssl dgst -sha256 -hmac topsecret
    expected = "sha256=742edc4362e6cf056c3f6020b06dbc4eba80239fdaa9f0a75ca911663e6c75ae"
    assert sign(body, "topsecret") == expected
    assert verify(body, "topsecret", expected)
    assert not verify(body, "other", expected)
    assert not verify(body + b" ", "topsecret", expected)
    assert not verify(body, "topsecret", expected[len("sha256="):])
    assert not verify(body, "topsecret", None) and not verify(body, "topsecret", "")
    assert not verify(body, "topsecret", "sha256=ünïcode")


@given(st.binary(max_size=512), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_sign_verify_roundtrip(body, secret, other):
    header = sign(body, secret)
    assert verify(body, secret, header)
    assert verify(body, other, header) == (sign(body, other) == header)


def test_annotations_name_the_horizon_that_decided_with_its_numbers():
    from driftmon.detect.result import HorizonResult

    r = result(horizon="lag6", tests=12, effect=0.001, p_adjusted=0.4, horizons=(
        HorizonResult("previous", 1100, 0.004, 0.001, 0.2, 0.4, 0.3, "ok"),
        HorizonResult("lag6", 1050, 0.231, 0.22, 1e-9, 6e-9, 9.5, "critical")))
    p = build_payload(r, status="firing", severity="critical", receiver="ops",
                      starts_at=rfc3339(r.window_end), external_url="http://driftmon:9108")
    ann = _strict_loads(encode(p))["alerts"][0]["annotations"]
    assert ann["horizon"] == "lag6" and ann["tests"] == "12"
    assert float(ann["effect"]) == 0.22 and float(ann["p_adjusted"]) == 6e-9 and float(ann["unusual_z"]) == 9.5
    assert [h["reference"] for h in json.loads(ann["horizons"])] == ["previous", "lag6"]
    assert "against the lag6 window" in ann["description"] and "over 12 tests" in ann["description"]
    # the alert's identity does not depend on the horizon: one alert per series
    assert _strict_loads(encode(p))["alerts"][0]["labels"] == {
        "alertname": "DriftDetected", "severity": "critical", "stream": "clicks", "feature": "category",
        "segment": "mobile"}
