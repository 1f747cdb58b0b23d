"""Webhook attempts against hostile receivers, over real sockets (issue 9, item 2).

Before the fix an attempt read the whole answer (a receiver answering 200 with a
1 GiB body took the daemon from 190 MB to 2.2 GB) and its timeout was per socket
read, so a receiver trickling one byte a second held one attempt for a minute
with no counter moving.  Now every attempt ends within the webhook's ``timeout``
(connect, send, headers and body together) and reads at most 64 KiB of the answer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from driftmon.config import AlertsConfig, WebhookConfig
from driftmon.outputs.alerts import AlertDispatcher
from driftmon.outputs.metrics import Metrics
from tests.outputs.alerts.test_delivery import result

ROOT = str(Path(__file__).resolve().parents[3])
GIB = 1024 ** 3


class RawServer:
    """A TCP server on 127.0.0.1 that hands each connection (and its index) to ``serve``,
    after reading the request head and its Content-Length body."""

    def __init__(self, serve: Callable[[int, socket.socket], None], read_request: bool = True):
        self.serve, self.read_request = serve, read_request
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self.sent: list[int] = []
        self._stop = False
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            t = threading.Thread(target=self._one, args=(len(self.accepted) - 1, conn), daemon=True)
            t.start()
            self._threads.append(t)

    def _one(self, i: int, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            head = b"" if self.read_request else b"\r\n\r\n"
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                rest += conn.recv(65536)
            try:
                self.serve(i, conn)
            except OSError:  # the client went away: what these receivers are waiting for
                pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def trickle(conn: socket.socket, data: bytes, every: float) -> None:
    for b in data:
        conn.sendall(bytes([b]))
        time.sleep(every)


def stream_zeros(conn: socket.socket, limit: int, sent: list[int]) -> None:
    """Send zeros until ``limit`` bytes or the client closes; records how much was sent."""
    block, n = bytes(1024 * 1024), 0
    try:
        while n < limit:
            conn.sendall(block)
            n += len(block)
    finally:
        sent.append(n)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Timeline:
    """on_outcome recorder with the time of each outcome, feeding a real Metrics too."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.events: list[tuple[str, float]] = []
        self._cond = threading.Condition()

    def __call__(self, receiver: str, outcome: str) -> None:
        self.metrics.webhook_outcome(receiver, outcome)
        with self._cond:
            self.events.append((outcome, time.monotonic()))
            self._cond.notify_all()

    def wait_for(self, outcome: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(o == outcome for o, _ in self.events), timeout)

    def counter(self, receiver: str, outcome: str) -> float:
        for line in self.metrics.render().decode().splitlines():
            if line.startswith("driftmon_webhook_deliveries_total{") and f'receiver="{receiver}"' in line \
                    and f'outcome="{outcome}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def dispatcher(tmp_path, url: str, timeline: Timeline, timeout: float = 1.0) -> AlertDispatcher:
    hook = WebhookConfig("slow", url, timeout=timeout, backoff_initial=0.05, backoff_max=0.1)
    d = AlertDispatcher(AlertsConfig(webhooks=(hook,)), str(tmp_path / "state"), on_outcome=timeline)
    d.start()
    return d


def test_a_trickled_status_line_ends_the_attempt_at_the_timeout_counts_a_retry_and_retries(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="driftmon")
    long_head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 60 + b"\r\nContent-Length: 2\r\n\r\nok"

    def serve(i: int, conn: socket.socket) -> None:
        if i < 2:
            trickle(conn, long_head, 0.25)  # ~20 s if the client waited for it all
        else:
            conn.sendall(OK)

    server, timeline = RawServer(serve), Timeline()
    d = dispatcher(tmp_path, server.url, timeline, timeout=1.0)
    try:
        d.handle(result())
        assert timeline.wait_for("delivered", 15), timeline.events
    finally:
        d.close(5)
        server.close()
    outcomes = [o for o, _ in timeline.events]
    assert outcomes == ["retry", "retry", "delivered"]
    for k in range(2):  # each trickled attempt ended within timeout + slack of its connection
        took = timeline.events[k][1] - server.accepted[k]
        assert took < 1.0 + 0.5, f"attempt {k} took {took:.2f}s"
    assert timeline.counter("slow", "retry") == 2 and timeline.counter("slow", "delivered") == 1
    assert caplog.text.count("timeout: no response within 1s") == 2


def test_a_trickled_tls_handshake_is_cut_at_the_timeout(tmp_path):
    """A guard for the TLS path (the handshake runs on a socket registered with the
    deadline); CPython already bounds one handshake call by the socket timeout."""
    record = b"\x16\x03\x03\x40\x00" + b"\x00" * 100  # a TLS record header promising 16 KiB, then a trickle

    def serve(i: int, conn: socket.socket) -> None:
        trickle(conn, record, 0.25)

    server, timeline = RawServer(serve, read_request=False), Timeline()  # answers the ClientHello at once
    d = dispatcher(tmp_path, f"https://127.0.0.1:{server.port}/hook", timeline, timeout=1.0)
    try:
        d.handle(result())
        assert timeline.wait_for("retry", 10), timeline.events
    finally:
        d.close(5)
        server.close()
    took = timeline.events[0][1] - server.accepted[0]
    assert took < 1.0 + 0.5, f"TLS handshake attempt took {took:.2f}s"


def test_a_200_with_a_trickled_body_is_delivered_within_the_timeout(tmp_path):
    def serve(i: int, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        trickle(conn, b"z" * 1000, 0.25)

    server, timeline = RawServer(serve), Timeline()
    d = dispatcher(tmp_path, server.url, timeline, timeout=1.0)
    try:
        d.handle(result())
        assert timeline.wait_for("delivered", 10), timeline.events
    finally:
        d.close(5)
        server.close()
    assert [o for o, _ in timeline.events] == ["delivered"]  # the 200 decides, not the body
    assert timeline.events[0][1] - server.accepted[0] < 1.0 + 0.5


SENDER = r"""
import json, sys, time
from driftmon.config import WebhookConfig
from driftmon.outputs.alerts.outbox import Outbox
from driftmon.outputs.alerts.sender import ReceiverWorker

def hwm_kib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

url, state = sys.argv[1], sys.argv[2]
worker = ReceiverWorker(WebhookConfig("big", url, timeout=30.0), Outbox(state, 10), lambda r, o: None)
body = json.dumps({"driftmon": {"idempotency_key": "k"}}).encode()
out = []
for _ in range(2):
    before, t0 = hwm_kib(), time.monotonic()
    outcome, detail, key = worker.post(body)
    out.append({"outcome": outcome, "detail": detail, "grew_kib": hwm_kib() - before,
                "seconds": time.monotonic() - t0})
print(json.dumps(out))
"""


def test_a_1_gib_answer_costs_the_sender_at_most_64_kib(tmp_path):
    """The sender runs in its own process, so its peak RSS (VmHWM) is its own."""

    def serve(i: int, conn: socket.socket) -> None:
        if i == 0:  # 200 claiming (and streaming) 1 GiB
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % GIB)
        else:  # 500 with a 1 GiB close-delimited body starting with an error text
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n"
                         b"upstream exploded\r\n\x1b[31m" + b"!" * 300)
        stream_zeros(conn, GIB, server.sent)

    server = RawServer(serve)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-c", SENDER, server.url, str(tmp_path / "outbox")],
                              env=env, capture_output=True, timeout=120)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    delivered, failed = json.loads(proc.stdout)
    for attempt in (delivered, failed):
        assert attempt["grew_kib"] < 32 * 1024, attempt  # the old sender: +1 GiB for the 200
        assert attempt["seconds"] < 10, attempt
    assert delivered["outcome"] == "delivered" and delivered["detail"] == "HTTP 200"
    assert failed["outcome"] == "retry"
    # the start of the error text, on one printable line, for the log
    assert failed["detail"].startswith("HTTP 500: upstream exploded ") and "\x1b" not in failed["detail"]
    assert len(failed["detail"]) < 300
    time.sleep(0.2)
    assert all(n < GIB for n in server.sent), server.sent  # the sender hung up early
