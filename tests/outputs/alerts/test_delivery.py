"""Webhook delivery over real HTTP on 127.0.0.1: retries, outbox durability, bounds,
escalation/resolve, non-blocking enqueue and secret hygiene."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from driftmon.config import AlertsConfig, WebhookConfig
from driftmon.detect.result import BinShare, DriftResult, rfc3339
from driftmon.outputs.alerts import AlertDispatcher
from driftmon.outputs.alerts.outbox import Outbox
from driftmon.testing.receiver import WebhookSink

ROOT = str(Path(__file__).resolve().parents[3])  # the repository

T0 = 1_700_000_000.0
FAST = dict(backoff_initial=0.05, backoff_max=0.2, timeout=2.0)


def result(transition="fired", *, severity="warning", state="warn", end=T0 + 300, feature="category",
           segment=None) -> DriftResult:
    return DriftResult(
        stream="clicks", feature=feature, segment=segment, window_start=end - 300, window_end=end,
        metric="kl", unit="nats", divergence=0.2, p_value=1e-6, n_current=1000, n_reference=1000,
        state=state, transition=transition, severity=severity, warn_threshold=0.05, critical_threshold=0.1,
        top_bins=(BinShare("toys", 0.1, 0.3, 0.1),),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Outcomes:
    """Thread-safe recorder for the on_outcome callback."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._cond = threading.Condition()

    def __call__(self, receiver: str, outcome: str) -> None:
        with self._cond:
            self.events.append((receiver, outcome))
            self._cond.notify_all()

    def of(self, receiver: str) -> list[str]:
        with self._cond:
            return [o for r, o in self.events if r == receiver]

    def wait(self, pred, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self), timeout)


@pytest.fixture
def make(tmp_path):
    """Build dispatchers on tmp_path/state and close them (and sinks) at teardown."""
    made = []

    def _make(*hooks: WebhookConfig, outbox_max: int = 100, outcomes=None, state=None) -> AlertDispatcher:
        d = AlertDispatcher(AlertsConfig(webhooks=hooks, outbox_max=outbox_max), str(state or tmp_path / "state"),
                            on_outcome=outcomes, external_url="http://driftmon.test:9108")
        made.append(d)
        return d

    yield _make
    for obj in made:
        obj.close(5)


@pytest.fixture
def sinks():
    made = []

    def _sink(*a, **kw) -> WebhookSink:
        s = WebhookSink(*a, **kw)
        made.append(s)
        return s

    yield _sink
    for s in made:
        s.stop()


def test_signed_delivery_verified_by_sink(make, sinks):
    good, bad = sinks(secret="hmac-key"), sinks(secret="another-key")
    out = Outcomes()
    d = make(WebhookConfig("good", good.url, secret="hmac-key", **FAST),
             WebhookConfig("bad", bad.url, secret="hmac-key", **FAST), outcomes=out)
    d.start()
    d.handle(result())
    assert d.flush(10)
    (rec,) = good.received
    assert rec.signature_valid is True
    assert bad.received[0].signature_valid is False  # the sink really checks
    assert rec.headers["x-driftmon-signature"].startswith("sha256=")
    assert rec.idempotency_key == rec.json["driftmon"]["idempotency_key"]
    assert rec.idempotency_key == f"{rec.json['alerts'][0]['fingerprint']}:firing:{rfc3339(T0 + 300)}"
    assert rec.json["receiver"] == "good" and bad.received[0].json["receiver"] == "bad"
    assert rec.json["alerts"][0]["generatorURL"] == "http://driftmon.test:9108"
    assert out.of("good") == ["delivered"]


def test_no_op_for_results_without_transition(make, sinks):
    sink = sinks()
    d = make(WebhookConfig("r", sink.url, **FAST))
    d.handle(result(transition="none"))
    assert d.pending() == {"r": 0}


def test_500_then_200_is_delivered_once(make, sinks):
    sink = sinks(status_sequence=[500, 500, 200])
    out = Outcomes()
    d = make(WebhookConfig("r", sink.url, **FAST), outcomes=out)
    d.start()
    d.handle(result())
    assert d.flush(10)
    assert [r.status for r in sink.received] == [500, 500, 200]
    assert len({r.idempotency_key for r in sink.received}) == 1
    assert len(sink.unique_alerts()) == 1 and len(sink.accepted()) == 1
    assert out.of("r") == ["retry", "retry", "delivered"]


def test_permanent_4xx_is_dropped_but_429_retried(make, sinks, caplog):
    sink = sinks(status_sequence=[429, 400, 200])
    out = Outcomes()
    d = make(WebhookConfig("r", sink.url, **FAST), outcomes=out)
    d.handle(result(feature="a"))
    d.handle(result(feature="b"))
    d.start()
    assert d.flush(10)
    assert out.of("r") == ["retry", "failed", "delivered"]
    assert [r.json["alerts"][0]["labels"]["feature"] for r in sink.received] == ["a", "a", "b"]
    assert "permanent failure" in caplog.text and "HTTP 400" in caplog.text


def test_max_attempts_gives_up(make, sinks):
    sink = sinks(status_sequence=[503, 503, 200])
    out = Outcomes()
    d = make(WebhookConfig("r", sink.url, max_attempts=2, **FAST), outcomes=out)
    d.handle(result(feature="a"))
    d.handle(result(feature="b"))
    d.start()
    assert d.flush(10)
    assert out.of("r") == ["retry", "failed", "delivered"]
    assert [r.json["alerts"][0]["labels"]["feature"] for r in sink.accepted()] == ["b"]


def test_receiver_down_then_up(make, sinks):
    port = free_port()
    out = Outcomes()
    d = make(WebhookConfig("r", f"http://127.0.0.1:{port}/hook", **FAST), outcomes=out)
    d.start()
    d.handle(result())
    assert out.wait(lambda o: o.of("r").count("retry") >= 2)
    sink = sinks(port=port)
    assert d.flush(10)
    assert len(sink.unique_alerts()) == 1
    assert out.of("r")[-1] == "delivered" and out.of("r").count("delivered") == 1


def test_restart_delivers_leftovers_and_keeps_starts_at(make, sinks, tmp_path):
    port = free_port()
    hook = WebhookConfig("r", f"http://127.0.0.1:{port}/hook", **FAST)
    out = Outcomes()
    first = make(hook, outcomes=out)
    first.start()
    first.handle(result(end=T0 + 300))
    assert out.wait(lambda o: "retry" in o.of("r"))
    assert first.close(5)
    assert len(os.listdir(tmp_path / "state" / "outbox" / "r")) == 1  # survived on disk

    sink = sinks(port=port)
    second = make(hook, outcomes=out)  # simulated restart on the same state dir
    assert second.pending() == {"r": 1}
    second.handle(result("resolved", severity=None, state="ok", end=T0 + 900))
    second.start()
    assert second.flush(10)
    fired, resolved = (r.json["alerts"][0] for r in sink.unique_alerts())
    assert fired["status"] == "firing" and resolved["status"] == "resolved"
    assert fired["fingerprint"] == resolved["fingerprint"]
    assert fired["startsAt"] == resolved["startsAt"] == rfc3339(T0 + 300)
    assert resolved["endsAt"] == rfc3339(T0 + 900)


def test_outbox_bound_drops_oldest(make, sinks, caplog):
    port = free_port()
    out = Outcomes()
    d = make(WebhookConfig("r", f"http://127.0.0.1:{port}/hook", **FAST), outbox_max=3, outcomes=out)
    for i in range(5):
        d.handle(result(feature=f"f{i}"))
    assert out.of("r") == ["dropped", "dropped"]
    assert caplog.text.count("dropped the oldest") == 2
    assert d.pending() == {"r": 3}
    sink = sinks(port=port)
    d.start()
    assert d.flush(10)
    assert [r.json["alerts"][0]["labels"]["feature"] for r in sink.unique_alerts()] == ["f2", "f3", "f4"]


def test_enqueue_does_not_block_while_receiver_hangs(make, sinks):
    sink = sinks(delay=60.0)  # holds every request far longer than the client timeout
    out = Outcomes()
    d = make(WebhookConfig("r", sink.url, timeout=0.3, backoff_initial=0.05, backoff_max=0.2), outcomes=out)
    d.start()
    d.handle(result(feature="f0"))
    with sink._cond:
        assert sink._cond.wait_for(lambda: sink.in_flight >= 1, 10)
    t = threading.Thread(target=lambda: [d.handle(result(feature=f"f{i}")) for i in range(1, 4)])
    t.start()
    t.join(10)
    assert not t.is_alive(), "handle() blocked on a hanging receiver"
    assert sink.received == []  # nothing answered yet, so handle() cannot have waited for the receiver
    assert out.wait(lambda o: "retry" in o.of("r"))  # the client timed out and retried
    sink.release()
    assert d.flush(15)
    assert [r.json["alerts"][0]["labels"]["feature"] for r in sink.unique_alerts()] == ["f0", "f1", "f2", "f3"]


def test_resolve_after_escalation_resolves_both(make, sinks, tmp_path):
    sink = sinks()
    d = make(WebhookConfig("r", sink.url, **FAST))
    d.start()
    d.handle(result(severity="warning", state="warn", end=T0 + 300, segment="web"))
    d.handle(result(severity="critical", state="critical", end=T0 + 600, segment="web"))
    d.handle(result("resolved", severity=None, state="ok", end=T0 + 900, segment="web"))
    assert d.flush(10)
    alerts = [r.json["alerts"][0] for r in sink.unique_alerts()]
    assert [(a["status"], a["labels"]["severity"]) for a in alerts] == [
        ("firing", "warning"), ("firing", "critical"), ("resolved", "warning"), ("resolved", "critical")]
    warn_fp, crit_fp = alerts[0]["fingerprint"], alerts[1]["fingerprint"]
    assert warn_fp != crit_fp
    assert [a["fingerprint"] for a in alerts[2:]] == [warn_fp, crit_fp]
    assert [a["startsAt"] for a in alerts[2:]] == [rfc3339(T0 + 300), rfc3339(T0 + 600)]
    assert all(a["endsAt"] == rfc3339(T0 + 900) for a in alerts[2:])
    assert all(a["labels"]["segment"] == "web" for a in alerts)
    assert (tmp_path / "state" / "alerts" / "firing.json").read_text().strip() == "{}"


def test_secrets_never_logged(make, sinks, caplog):
    caplog.set_level(logging.DEBUG, logger="driftmon")
    sink = sinks(secret="HMAC-SECRET-3", status_sequence=[500, 400])
    host = sink.url.split("//")[1].split("/")[0]
    url = f"http://alice:PASS-SECRET-1@{host}/hook/PATH-TOKEN-4?token=QUERY-SECRET-2"
    down = f"http://bob:PASS-SECRET-5@127.0.0.1:{free_port()}/x?token=QUERY-SECRET-6"
    out = Outcomes()
    d = make(WebhookConfig("up", url, secret="HMAC-SECRET-3", **FAST),
             WebhookConfig("down", down, secret="HMAC-SECRET-7", **FAST), outcomes=out)
    d.start()
    d.handle(result())
    assert out.wait(lambda o: o.of("up") == ["retry", "failed"] and o.of("down").count("retry") >= 2)
    rec = sink.received[0]
    assert rec.signature_valid and rec.path == "/hook/PATH-TOKEN-4?token=QUERY-SECRET-2"
    assert rec.headers["authorization"].startswith("Basic ")  # userinfo became Basic auth
    assert "retrying" in caplog.text and "permanent failure" in caplog.text
    logged = caplog.text + repr(d._workers)
    for secret in ("SECRET-1", "SECRET-2", "SECRET-3", "TOKEN-4", "SECRET-5", "SECRET-6", "SECRET-7"):
        assert secret not in logged


def test_outbox_ignores_torn_writes_and_keeps_order(tmp_path):
    box = Outbox(str(tmp_path / "o"), 10)
    box.put(b"one")
    box.put(b"two")
    (tmp_path / "o" / "00000000000000000003.json.123.tmp").write_bytes(b"half")
    again = Outbox(str(tmp_path / "o"), 10)
    assert len(again) == 2 and sorted(os.listdir(tmp_path / "o"))[-1].endswith("2.json")
    seq, body = again.head()
    assert body == b"one"
    again.ack(seq)
    again.put(b"three")
    assert again.head()[1] == b"two" and len(again) == 2


def test_sink_cli_prints_alerts(make, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "driftmon.testing.receiver", "--port", str(port), "--secret", "k"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert "listening on" in proc.stdout.readline()
        d = make(WebhookConfig("cli", f"http://127.0.0.1:{port}/", secret="k", **FAST))
        d.start()
        d.handle(result(severity="critical", state="critical", segment="web"))
        assert d.flush(10)
        line = proc.stdout.readline()
        assert line.startswith("FIRING") and "critical" in line and "clicks/category[web]" in line
        assert "sig ok" in line
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
