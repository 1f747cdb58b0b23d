"""The status server (``/metrics``, ``/healthz``, ``/readyz``) against idle, half-open,
trickling and non-reading clients, over real sockets.

Before the fix it was ``ThreadingHTTPServer``: one thread per connection and no
server-side timeout, so 200 half-open connections made 207 threads and an idle
connection stayed open for as long as the client liked (75 s measured).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from driftmon.service.http import HEAD_TIMEOUT, MAX_HEAD, StatusServer
from tests.service.test_daemon import DaemonProcess, daemon_cfg, http_get, wait_until

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def server():
    made: list[StatusServer] = []

    def make(render=lambda: b"driftmon_up 1\n", ready=lambda: (True, "ready"), **kw) -> StatusServer:
        s = StatusServer("127.0.0.1", 0, render, ready, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def get(srv: StatusServer, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with _NO_PROXY.open(f"http://{srv.address}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw(srv: StatusServer, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(srv.server_address, timeout=timeout) as c:
        c.sendall(data)
        out = b""
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


def closed_at(socks: list[socket.socket], timeout: float) -> dict[socket.socket, float]:
    """Wait until the server closes each socket (EOF or reset); monotonic time of each close."""
    open_ = set(socks)
    when: dict[socket.socket, float] = {}
    deadline = time.monotonic() + timeout
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_), [], [], 0.1)
        for s in readable:
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                when[s] = time.monotonic()
                open_.discard(s)
    return when


def test_endpoints_and_protocol_errors(server):
    srv = server(ready=lambda: (False, "starting"))
    assert get(srv, "/metrics") == (200, b"driftmon_up 1\n")
    assert get(srv, "/healthz") == (200, b"ok\n")
    assert get(srv, "/readyz") == (503, b"starting\n")
    assert get(srv, "/metrics?x=1")[0] == 200
    assert get(srv, "/nope")[0] == 404
    assert raw(srv, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").startswith(b"HTTP/1.0 501 ")
    assert raw(srv, b"GARBAGE\r\n\r\n").startswith(b"<!DOCTYPE HTML>")  # HTTP/0.9-style error
    assert raw(srv, b"GET /healthz\r\n") == b"ok\n"  # HTTP/0.9 request: body only
    assert raw(srv, b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 414 ")
    assert raw(srv, b"GET / HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 2000 + b"\r\n").startswith(b"HTTP/1.0 431 ")
    # a request sent in pieces is fine as long as the whole head arrives in time
    with socket.create_connection(srv.server_address, timeout=5) as c:
        for part in (b"GET /hea", b"lthz HTTP/1.1\r\nHost: x\r\n", b"\r\n"):
            c.sendall(part)
            time.sleep(0.05)
        assert c.recv(4096).endswith(b"\r\n\r\nok\n")
    assert srv.open_connections() == 0 or wait_until(lambda: srv.open_connections() == 0, 5, "all closed")


def test_idle_and_half_open_connections_are_bounded_closed_in_time_and_do_not_lock_out_scrapes(server):
    timeout, cap = 1.5, 64
    before = threading.active_count()
    srv = server(head_timeout=timeout, max_connections=cap)
    assert threading.active_count() <= before + 3  # the selector thread and two renderers, for good
    flood: list[socket.socket] = []
    opened: dict[socket.socket, float] = {}
    try:
        for i in range(300):
            s = socket.create_connection(srv.server_address, timeout=5)
            if i % 2:  # half-open: a request head that never ends
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            flood.append(s)
            opened[s] = time.monotonic()
        assert threading.active_count() <= before + 3
        # scrapes and probes still answer, promptly, with 300 hostile connections made
        for _ in range(5):
            t0 = time.monotonic()
            assert get(srv, "/metrics", timeout=2) == (200, b"driftmon_up 1\n")
            assert get(srv, "/healthz", timeout=2) == (200, b"ok\n")
            assert time.monotonic() - t0 < 1.0
        assert srv.open_connections() <= cap
        # every idle/half-open connection is closed by the server within its head timeout
        when = closed_at(flood, timeout + 3)
        assert len(when) == len(flood), f"{len(flood) - len(when)} connections still open"
        late = [when[s] - opened[s] for s in flood if when[s] - opened[s] > timeout + 1.0]
        assert not late, f"closed after {max(late):.2f}s"
    finally:
        for s in flood:
            s.close()
    assert srv.dropped["evicted"] + srv.dropped["head_timeout"] == 300
    assert threading.active_count() <= before + 3
    assert get(srv, "/metrics") == (200, b"driftmon_up 1\n")


def test_a_trickled_request_head_is_cut_at_the_total_timeout(server):
    srv = server(head_timeout=1.0)
    with socket.create_connection(srv.server_address, timeout=5) as c:
        t0 = time.monotonic()
        sent = 0
        try:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
                c.send(bytes([byte]))  # one byte every 0.2 s: each read is quick, the whole is not
                sent += 1
                time.sleep(0.2)
                r, _, _ = select.select([c], [], [], 0)
                if r and not c.recv(10):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - t0
    assert elapsed < 1.0 + 0.8, f"trickling client held the connection {elapsed:.1f}s ({sent} bytes)"
    assert srv.dropped["head_timeout"] == 1


def test_a_client_that_does_not_read_its_response_costs_no_thread_and_is_dropped(server):
    big = b"# " + b"x" * (16 * 1024 * 1024) + b"\n"
    before = threading.active_count()
    srv = server(render=lambda: big, write_timeout=1.0)
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(srv.server_address)
        c.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # and never read
        time.sleep(0.3)
        t0 = time.monotonic()
        assert get(srv, "/healthz") == (200, b"ok\n")  # not stuck behind the slow reader
        assert time.monotonic() - t0 < 0.5
        wait_until(lambda: srv.dropped["write_timeout"] == 1, 5, "the non-reading client dropped")
    assert threading.active_count() <= before + 3


def test_stop_returns_promptly_with_connections_open(server):
    srv = StatusServer("127.0.0.1", 0, lambda: b"", lambda: (True, "ready")).start()
    socks = [socket.create_connection(srv.server_address) for _ in range(20)]
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.0
    assert len(closed_at(socks, 2.0)) == 20
    for s in socks:
        s.close()


# -- the real daemon ------------------------------------------------------------------------------


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.kafka
@pytest.mark.one_client  # test-time budget: what this test checks does not depend on the Kafka client
def test_daemon_under_300_idle_connections_keeps_its_threads_and_answers(kafka_broker, fresh_topic, tmp_path):
    doc = daemon_cfg(kafka_broker.bootstrap, fresh_topic(), tmp_path / "state", segmented=False)
    config_file = Path(tmp_path / "driftmon.yaml")
    config_file.write_text(yaml.safe_dump(doc))
    proc = DaemonProcess(config_file)
    flood: list[socket.socket] = []
    try:
        wait_until(lambda: http_get(f"http://{proc.address}/readyz")[0] == 200, 30, "/readyz 200")
        baseline = _threads(proc.proc.pid)
        host, port = proc.address.rsplit(":", 1)
        opened: dict[socket.socket, float] = {}
        for i in range(300):
            s = socket.create_connection((host, int(port)), timeout=5)
            if i % 3 == 0:
                s.sendall(b"GET /metrics HTTP/1.1\r\n")  # half-open
            flood.append(s)
            opened[s] = time.monotonic()
        assert _threads(proc.proc.pid) <= baseline + 1
        assert http_get(f"http://{proc.address}/metrics")[0] == 200
        assert http_get(f"http://{proc.address}/healthz") == (200, b"ok\n")
        when = closed_at(flood, HEAD_TIMEOUT + 5)
        assert len(when) == 300, f"{300 - len(when)} idle connections still open after {HEAD_TIMEOUT + 5}s"
        held = sorted(when[s] - opened[s] for s in flood)
        assert held[-1] < HEAD_TIMEOUT + 2, f"held open {held[-1]:.1f}s (median {held[150]:.1f}s)"
        assert _threads(proc.proc.pid) <= baseline + 1
        assert proc.terminate(timeout=15) == 0, proc.log
    finally:
        for s in flood:
            s.close()
        proc.kill()
