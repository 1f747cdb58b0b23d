"""Webhook delivery: turns fired/resolved DriftResults into outbox messages and a
background thread per receiver POSTs them with retries.

Ingestion only ever calls :meth:`AlertDispatcher.handle`, which writes to the
local outbox and returns; it never touches the network, so a receiver that is
down or hanging cannot stall the pipeline.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable

from driftmon import __version__
from driftmon.config import AlertsConfig, WebhookConfig
from driftmon.detect.result import DriftResult, rfc3339
from driftmon.outputs.alerts.outbox import AlertTracker, FiringAlert, Outbox, safe_dirname
from driftmon.outputs.alerts.payload import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    alert_labels,
    build_payload,
    encode,
    fingerprint,
    severity_of,
    sign,
)
from driftmon.outputs.alerts.transport import DeadlineExceeded, Poster
from driftmon.util.secrets import redact_url, scrub
from driftmon.vocabulary import SEVERITIES

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[str, str], None]


class ReceiverWorker:
    """Delivers one receiver's outbox in FIFO order from a daemon thread.

    2xx = delivered; 408, 429, 5xx, timeouts and connection errors are retried
    with exponential backoff and full jitter (``random.uniform(0, min(max,
    initial * 2**(attempt-1)))``); any other status is a permanent failure.
    Head-of-line blocking is deliberate: it keeps per-fingerprint order.
    Each attempt takes at most ``config.timeout`` seconds in all and reads at
    most 64 KiB of the answer (:mod:`driftmon.outputs.alerts.transport`).
    """

    def __init__(self, config: WebhookConfig, outbox: Outbox, on_outcome: OutcomeCallback) -> None:
        self.config = config
        self.name = config.name
        self.outbox = outbox
        self._on_outcome = on_outcome
        self._safe_url = redact_url(config.url)
        parts = urllib.parse.urlsplit(config.url)
        self._auth: str | None = None
        netloc = parts.netloc
        if "@" in netloc:  # userinfo -> Basic auth header; urllib cannot take it in the URL
            userinfo, netloc = netloc.rsplit("@", 1)
            user, _, password = userinfo.partition(":")
            raw = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
            self._auth = "Basic " + base64.b64encode(raw.encode("utf-8")).decode("ascii")
        self._url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self._sensitive = [s for s in (config.secret, config.url, parts.query, parts.password, parts.path) if s and s != "/"]
        self._poster = Poster(f"driftmon-webhook-{config.name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"ReceiverWorker(name={self.name!r}, url={self._safe_url!r}, pending={len(self.outbox)})"

    def _scrub(self, text: str) -> str:
        return scrub(text, self._sensitive)

    def _emit(self, outcome: str) -> None:
        self._on_outcome(self.name, outcome)

    def enqueue(self, body: bytes) -> None:
        """Persist one message; never blocks on the receiver."""
        dropped = self.outbox.put(body)
        for _ in range(dropped):
            log.warning(
                "webhook %s (%s): outbox full (%d messages), dropped the oldest undelivered alert",
                self.name, self._safe_url, self.outbox.max_items,
            )
            self._emit("dropped")

    # -- delivery thread -------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"driftmon-webhook-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.outbox.wake()

    def join(self, timeout: float | None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
            self._thread = None
        return True

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.config.backoff_max, self.config.backoff_initial * 2.0 ** min(attempt - 1, 60))
        return random.uniform(0.0, max(cap, 0.0))

    def _run(self) -> None:
        try:
            self._deliver()
        finally:
            self._poster.close()

    def _deliver(self) -> None:
        current, attempt = None, 0
        while not self._stop.is_set():
            item = self.outbox.head()
            if item is None:
                self.outbox.wait_nonempty(1.0)
                continue
            seq, body = item
            if seq != current:
                current, attempt = seq, 0
            attempt += 1
            outcome, detail, key = self.post(body)
            if outcome == "delivered":
                self.outbox.ack(seq)
                log.debug("webhook %s: delivered %s (attempt %d)", self.name, key, attempt)
                self._emit("delivered")
            elif outcome == "failed":
                self.outbox.ack(seq)
                log.error("webhook %s (%s): permanent failure for %s: %s; dropped",
                          self.name, self._safe_url, key, detail)
                self._emit("failed")
            elif self.config.max_attempts and attempt >= self.config.max_attempts:
                self.outbox.ack(seq)
                log.error("webhook %s (%s): giving up on %s after %d attempts: %s",
                          self.name, self._safe_url, key, attempt, detail)
                self._emit("failed")
            else:
                delay = self.backoff(attempt)
                log.warning("webhook %s (%s): attempt %d for %s failed: %s; retrying in %.2fs",
                            self.name, self._safe_url, attempt, key, detail, delay)
                self._emit("retry")
                self._stop.wait(delay)

    def post(self, body: bytes) -> tuple[str, str, str | None]:
        """One attempt: returns (delivered|retry|failed, scrubbed detail, idempotency key)."""
        try:
            key = json.loads(body)["driftmon"]["idempotency_key"]
        except (ValueError, KeyError, TypeError):
            key = None
        headers = {"Content-Type": "application/json", "User-Agent": f"driftmon/{__version__}"}
        if key:
            headers[IDEMPOTENCY_HEADER] = key
        if self.config.secret:
            headers[SIGNATURE_HEADER] = sign(body, self.config.secret)
        if self._auth:
            headers["Authorization"] = self._auth
        try:
            resp = self._poster.post(self._url, body, headers, self.config.timeout)
        except DeadlineExceeded as e:  # counted as a retry like any timeout, after exactly `timeout`
            return "retry", f"timeout: {e}", key
        except ValueError as e:  # malformed URL: retrying cannot help
            return "failed", self._scrub(f"{type(e).__name__}: {e}"), key
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            return "retry", self._scrub(f"{type(e).__name__}: {reason}"), key
        code = resp.status
        if 200 <= code < 300:
            return "delivered", f"HTTP {code}", key
        detail = f"HTTP {code}"
        if resp.body:
            detail += f": {self._scrub(resp.snippet())}"
        if code in (408, 429) or code >= 500:
            return "retry", detail, key
        return "failed", detail, key


class AlertDispatcher:
    """Fans fired/resolved results out to every configured webhook receiver.

    ``handle`` turns a result into one Alertmanager-style message per alert and
    appends it to each receiver's on-disk outbox under ``<state_dir>/outbox/``;
    firing alerts (for startsAt and escalation) are tracked in
    ``<state_dir>/alerts/firing.json``.  Call :meth:`start` to begin delivery,
    :meth:`flush` to wait for the outboxes to drain and :meth:`close` to stop.
    """

    def __init__(
        self,
        alerts: AlertsConfig,
        state_dir: str,
        on_outcome: OutcomeCallback | None = None,
        external_url: str = "",
    ) -> None:
        names = [w.name for w in alerts.webhooks]
        if len(set(names)) != len(names):
            raise ValueError(f"webhook receiver names must be unique: {names}")
        self.external_url = external_url
        self._user_on_outcome = on_outcome
        self._lock = threading.Lock()
        self._tracker = AlertTracker(os.path.join(state_dir, "alerts", "firing.json"))
        self._workers = [
            ReceiverWorker(w, Outbox(os.path.join(state_dir, "outbox", safe_dirname(w.name)), alerts.outbox_max),
                           self._emit)
            for w in alerts.webhooks
        ]

    def _emit(self, receiver: str, outcome: str) -> None:
        if self._user_on_outcome is None:
            return
        try:
            self._user_on_outcome(receiver, outcome)
        except Exception:  # a broken metrics callback must not kill delivery
            log.exception("on_outcome callback failed for %s/%s", receiver, outcome)

    def pending(self) -> dict[str, int]:
        """Undelivered messages per receiver (e.g. for an outbox-size gauge)."""
        return {w.name: len(w.outbox) for w in self._workers}

    def handle(self, result: DriftResult) -> None:
        """Queue notifications for a fired or resolved result; a no-op otherwise."""
        if result.transition not in ("fired", "resolved"):
            return
        with self._lock:
            if result.transition == "fired":
                notes, fire, resolve = self._plan_fired(result)
            else:
                notes, fire, resolve = self._plan_resolved(result)
            for status, severity, starts_at, ends_at in notes:
                for w in self._workers:
                    payload = build_payload(result, status=status, severity=severity, receiver=w.name,
                                            starts_at=starts_at, ends_at=ends_at, external_url=self.external_url)
                    try:
                        w.enqueue(encode(payload))
                    except OSError as e:
                        log.error("webhook %s: cannot write outbox (%s); alert dropped", w.name, e)
                        self._emit(w.name, "dropped")
            try:  # after the outbox: a crash in between re-sends (deduped by key), never loses
                self._tracker.update(fire=fire, resolve=resolve)
            except OSError as e:
                log.error("cannot persist firing alerts (%s)", e)

    def _plan_fired(self, result: DriftResult):
        severity = severity_of(result)
        fp = fingerprint(alert_labels(result, severity))
        known = self._tracker.get(fp)
        starts_at = known.starts_at if known else (rfc3339(result.window_end) or rfc3339(time.time()) or "")
        alert = FiringAlert(result.stream, result.feature, result.segment, severity, starts_at)
        return [("firing", severity, starts_at, None)], {fp: alert}, []

    def _plan_resolved(self, result: DriftResult):
        ends_at = rfc3339(result.window_end) or rfc3339(time.time())
        firing = self._tracker.firing(result.key)
        if firing:
            order = sorted(firing.values(), key=lambda a: (a.starts_at, SEVERITIES.index(a.severity)))
            return [("resolved", a.severity, a.starts_at, ends_at) for a in order], {}, list(firing)
        # Nothing tracked (state lost or alert raised by an older run): resolve what may be open.
        severities = [result.severity] if result.severity in SEVERITIES else list(SEVERITIES)
        starts_at = rfc3339(result.window_start) or ends_at
        log.info("resolved %s/%s/%s with no tracked firing alert; resolving %s",
                 result.stream, result.feature, result.segment, ",".join(severities))
        return [("resolved", s, starts_at, ends_at) for s in severities], {}, []

    def sync(self) -> None:
        """Write what a failing disk kept in memory (outbox messages, firing alerts); raises
        OSError while it cannot, and the daemon then postpones its checkpoint."""
        for w in self._workers:
            w.outbox.sync()
        self._tracker.sync()

    def start(self) -> None:
        for w in self._workers:
            w.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every outbox is empty (delivered or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        return all(w.outbox.wait_empty(max(0.0, deadline - time.monotonic())) for w in self._workers)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the delivery threads; undelivered messages stay on disk for the next run."""
        for w in self._workers:
            w.stop()
        deadline = time.monotonic() + timeout
        return all([w.join(max(0.0, deadline - time.monotonic())) for w in self._workers])


class NoAlerts:
    """The dispatcher when no webhook is configured: nothing to deliver, nothing written
    to the state dir (no ``alerts/`` or ``outbox/`` directories)."""

    def handle(self, result: object) -> None:
        return None

    def start(self) -> None:
        return None

    def pending(self) -> dict[str, int]:
        return {}

    def flush(self, timeout: float) -> bool:
        return True

    def sync(self) -> None:
        return None

    def close(self, timeout: float = 5.0) -> bool:
        return True
