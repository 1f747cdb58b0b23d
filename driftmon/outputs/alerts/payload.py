"""Alertmanager-compatible (webhook version "4") alert bodies and their HMAC signature.

One message carries exactly one alert, so ``groupLabels``/``commonLabels`` are
the alert's own labels.  Field names and the fingerprint algorithm follow
Prometheus Alertmanager (checked against a real Alertmanager 0.25), so any
receiver written for Alertmanager webhooks can consume driftmon alerts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from driftmon.detect.result import DriftResult, json_number, rfc3339
from driftmon.vocabulary import SEVERITIES, segment_label

ALERTNAME = "DriftDetected"
SIGNATURE_HEADER = "X-Driftmon-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: Alertmanager's endsAt of a firing alert

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted labels, 16 hex chars.

    Each name and value is followed by the separator byte 0xff.  Empty-valued
    labels are skipped because Alertmanager treats them as absent (so an alert
    with ``segment=""`` gets the same fingerprint Alertmanager would give it).
    """
    h = _FNV_OFFSET
    for name in sorted(labels):
        value = labels[name]
        if value == "":
            continue
        for part in (name, value):
            for byte in part.encode("utf-8") + b"\xff":
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def severity_of(result: DriftResult) -> str:
    """The alert severity of a result: its ``severity`` or, if unset, from its state."""
    if result.severity in SEVERITIES:
        return result.severity
    return "critical" if result.state == "critical" else "warning"


def alert_labels(result: DriftResult, severity: str) -> dict[str, str]:
    """Identity of an alert: a different severity is a different alert.

    The overall series has ``segment=""`` (no segment label for Alertmanager);
    a segment is never ``""`` (see :func:`driftmon.vocabulary.segment_label`), so
    the overall series and every segment differ in labels, fingerprint and
    Idempotency-Key.
    """
    return {
        "alertname": ALERTNAME,
        "severity": severity,
        "stream": result.stream,
        "feature": result.feature,
        "segment": segment_label(result.segment),
    }


def idempotency_key(fp: str, status: str, window_end: str) -> str:
    """``<fingerprint>:<status>:<window_end>``: identical for every retry of one notification."""
    return f"{fp}:{status}:{window_end}"


def _num(x: float | int | None) -> str:
    """Annotation values are strings in Alertmanager; ``repr`` keeps full precision."""
    if x is None:
        return ""
    if isinstance(x, int):
        return str(x)
    return repr(float(x))  # "inf", "nan" and "1e-300" are all parseable by float()


def _short(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _where(result: DriftResult) -> str:
    seg = f" (segment {segment_label(result.segment)})" if result.segment is not None else ""
    return f"{result.stream}/{result.feature}{seg}"


def alert_annotations(result: DriftResult, status: str, severity: str) -> dict[str, str]:
    """Human text plus every number a receiver needs, all as strings (Alertmanager requires it)."""
    top = [
        {
            "bin": b.bin,
            "before": round(b.p_reference, 6),
            "after": round(b.p_current, 6),
            "contribution": json_number(b.contribution),
        }
        for b in result.top_bins
    ]
    moves = ", ".join(f"{b.bin} {b.p_reference:.1%} -> {b.p_current:.1%}" for b in result.top_bins[:3])
    value = f"{result.metric} {_short(result.divergence)} {result.unit}"
    if status == "firing":
        limit = result.critical_threshold if severity == "critical" else result.warn_threshold
        summary = f"Drift on {_where(result)}: {value} >= {severity} threshold {limit:g}"
    else:
        summary = f"Drift resolved on {_where(result)}: {value}"
    description = (
        f"{result.metric} divergence of {_where(result)} was {_short(result.divergence)} {result.unit} "
        f"(warn {result.warn_threshold:g}, critical {result.critical_threshold:g}, "
        f"p={_short(result.p_value)}{_clustered(result)}) over {rfc3339(result.window_start)} .. "
        f"{rfc3339(result.window_end)}, "
        f"{result.n_current} events vs {result.n_reference} reference; smoothing {result.smoothing}."
    )
    decider = next((h for h in result.horizons if h.reference == result.horizon), None)
    if decider is not None:
        description += (
            f" Decided against the {result.horizon} window: {result.metric} {_short(decider.divergence)}, "
            f"effect {_short(decider.effect)} {result.unit}, p={_short(decider.p_value)}, "
            f"adjusted p={_short(decider.p_adjusted)} over {result.tests} tests, "
            f"unusual z={_short(decider.unusual_z)}."
        )
    if moves:
        description += f" Largest moves: {moves}."
    return {
        "summary": summary,
        "description": description,
        "divergence": _num(result.divergence),
        "metric": result.metric,
        "unit": result.unit,
        "p_value": _num(result.p_value),
        "warn_threshold": _num(result.warn_threshold),
        "critical_threshold": _num(result.critical_threshold),
        "window_start": rfc3339(result.window_start) or "",
        "window_end": rfc3339(result.window_end) or "",
        "n_current": _num(result.n_current),
        "n_reference": _num(result.n_reference),
        "top_bins": json.dumps(top, separators=(",", ":"), ensure_ascii=False),
        "smoothing": result.smoothing,
        # issue 10: the reference that set the state, and that comparison's numbers
        "horizon": result.horizon,
        "effect": _num(decider.effect if decider is not None else result.effect),
        "p_adjusted": _num(decider.p_adjusted if decider is not None else result.p_adjusted),
        "unusual_z": _num(decider.unusual_z if decider is not None else result.unusual_z),
        "tests": _num(result.tests),
        "horizons": json.dumps([h.to_dict() for h in result.horizons], separators=(",", ":")),
    }


def _clustered(result: DriftResult) -> str:
    """With ``cluster_by``: the design effect the p-value was corrected by."""
    return "" if result.design_effect is None else f" corrected for clustering, design effect {result.design_effect:.3g}"


def _group_key(labels: Mapping[str, str]) -> str:
    """Alertmanager-style group key: ``{}:{name="value", ...}`` over the non-empty labels."""
    inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items()) if v)
    return "{}:{" + inner + "}"


def build_payload(
    result: DriftResult,
    *,
    status: str,
    severity: str,
    receiver: str,
    starts_at: str,
    ends_at: str | None = None,
    external_url: str = "",
) -> dict[str, Any]:
    """One webhook body (Alertmanager version "4") for one alert.

    ``status`` is "firing" or "resolved"; ``starts_at``/``ends_at`` are RFC 3339
    strings (``ends_at`` is ignored while firing).  The top-level ``driftmon``
    object carries the idempotency key and the numeric result for receivers
    that want numbers rather than annotation strings.
    """
    if status not in ("firing", "resolved"):
        raise ValueError(f"status must be 'firing' or 'resolved', not {status!r}")
    labels = alert_labels(result, severity)
    fp = fingerprint(labels)
    window_end = rfc3339(result.window_end) or ""
    key = idempotency_key(fp, status, window_end)
    annotations = alert_annotations(result, status, severity)
    summary = {k: v for k, v in result.to_dict().items() if k not in ("bins", "counts")}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts_at,
        "endsAt": (ends_at or window_end) if status == "resolved" else ZERO_TIME,
        "generatorURL": external_url,
        "fingerprint": fp,
    }
    return {
        "version": "4",
        "groupKey": _group_key(labels),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": dict(labels),
        "commonLabels": dict(labels),
        "commonAnnotations": dict(annotations),
        "externalURL": external_url,
        "alerts": [alert],
        "driftmon": {"idempotency_key": key, "transition": result.transition, "result": summary},
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; these exact bytes are signed, stored and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    """Header value ``sha256=<hex>``: HMAC-SHA256 of the raw body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` under ``secret`` (constant-time)."""
    if not header:
        return False
    return hmac.compare_digest(sign(body, secret).encode("ascii"), header.strip().encode("utf-8", "replace"))
