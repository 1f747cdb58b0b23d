"""The HTTP endpoint: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``.

Bounded against idle, half-open and slow clients, so neither can take threads or
lock out a scrape or a liveness probe:

* one selector thread does all the socket I/O, without blocking: it accepts,
  reads request heads and writes responses.  A connection costs a thread only
  while its response is being rendered, by one of ``workers`` threads
  (``http.server``'s request parsing, one request per connection, HTTP/1.0);
* a connection must deliver its complete request head within ``head_timeout``
  seconds of being accepted, and take its whole response within
  ``write_timeout`` seconds, or it is closed;
* at most ``max_connections`` are open at once; a new one beyond that evicts
  the oldest connection that is still sending its head or already has its
  answer (a client that sends its request right away, as a scraper does, is
  never the oldest for long); when every open connection is being answered,
  the new one is closed;
* a head over ``MAX_HEAD`` bytes is answered 414 (request line) or 431.

Dropped connections are logged at DEBUG and summed up in one WARNING per minute.
"""

from __future__ import annotations

import errno
import io
import logging
import queue
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 5.0  # seconds from accept to the end of the request head
WRITE_TIMEOUT = 10.0  # seconds to take the whole response
MAX_CONNECTIONS = 128  # open at once (reading, rendering or writing)
WORKERS = 2  # threads rendering responses
MAX_HEAD = 16 * 1024  # bytes of request line + headers
LINGER = 2.0  # seconds to wait for the client's close after the response (discarding what it sends)
MAX_LINGER_BYTES = 1024 * 1024
DROP_REPORT_INTERVAL = 60.0
_CHUNK = 64 * 1024


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    addr: Any
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    state: str = "head"  # head -> render -> write -> linger, then closed
    out: memoryview | None = None
    discarded: int = 0


def _head_complete(buf: bytearray) -> bool:
    if b"\r\n\r\n" in buf or b"\n\n" in buf:
        return True
    line, nl, _ = bytes(buf).partition(b"\n")
    return bool(nl) and len(line.split()) < 3  # an HTTP/0.9 request line has no headers


def _plain(code: int, text: str) -> bytes:
    """A complete HTTP/1.0 response (for the answers the selector gives itself)."""
    body = (text + "\n").encode()
    status = HTTPStatus(code)
    return (f"HTTP/1.0 {code} {status.phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class _Exchange(BaseHTTPRequestHandler):
    """One request, parsed by ``http.server`` from a buffered head; the response goes to a buffer."""

    def __init__(self, server: StatusServer, head: bytes, client_address: Any) -> None:  # noqa: D107
        self.status_server = server  # (no socket here: the selector thread does the I/O)
        self.client_address = client_address
        self.rfile = io.BytesIO(head)
        self.wfile = io.BytesIO()
        self.handle()

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.status_server.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            ok, reason = self.status_server.ready()
            self._send(200 if ok else 503, (reason + "\n").encode())
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def response(self) -> bytes:
        assert isinstance(self.wfile, io.BytesIO)
        return self.wfile.getvalue()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class StatusServer:
    """Serves metrics and health on ``host:port`` (bound on construction, served after :meth:`start`).

    ``ready()`` returns ``(ready, reason)``; ``/readyz`` answers 200 or 503 with the reason.
    ``dropped`` counts the connections closed early, by reason (``head_timeout``,
    ``write_timeout``, ``evicted``, ``busy``, ``too_large``, ``error``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], bytes],
        ready: Callable[[], tuple[bool, str]],
        *,
        head_timeout: float = HEAD_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self.render, self.ready = render, ready
        self.head_timeout, self.write_timeout = head_timeout, write_timeout
        self.max_connections = max(1, max_connections)
        self.dropped: Counter[str] = Counter()
        self._reported: Counter[str] = Counter()
        self._next_report = time.monotonic() + DROP_REPORT_INTERVAL
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[_Conn, None] = {}  # open connections, oldest first (only the selector thread)
        self._jobs: queue.Queue[_Conn | None] = queue.Queue()
        self._rendered: list[tuple[_Conn, bytes]] = []
        self._lock = threading.Lock()
        self._closing = False
        self.thread = threading.Thread(target=self._serve, name="driftmon-http", daemon=True)
        self._workers = [threading.Thread(target=self._work, name=f"driftmon-http-{i}", daemon=True)
                         for i in range(max(1, workers))]

    # -- public ------------------------------------------------------------------------------

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def address(self) -> str:
        host, port = self.server_address
        return f"{host!s}:{port}"

    def open_connections(self) -> int:
        return len(self._conns)

    def start(self) -> StatusServer:
        for w in self._workers:
            w.start()
        self.thread.start()
        return self

    def stop(self) -> None:
        self._closing = True
        self._wake()
        if self.thread.is_alive():
            self.thread.join(5.0)
        for _ in self._workers:
            self._jobs.put(None)
        for w in self._workers:
            if w.is_alive():
                w.join(2.0)
        for conn in list(self._conns):
            self._close(conn)
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()

    # -- rendering (worker threads) ----------------------------------------------------------

    def _work(self) -> None:
        while True:
            conn = self._jobs.get()
            if conn is None:
                return
            try:
                out = _Exchange(self, bytes(conn.buf), conn.addr).response()
            except Exception:
                log.exception("http: answering %s failed", conn.addr)
                out = _plain(500, "internal error")
            with self._lock:
                self._rendered.append((conn, out))
            self._wake()

    # -- socket I/O (the selector thread) ----------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # buffer full (a wake-up is pending anyway) or closed
            pass

    def _serve(self) -> None:
        while not self._closing:
            try:
                self._step()
            except Exception:  # a bug here must not silence /healthz for good
                log.exception("http: serving loop failed; continuing")
                time.sleep(0.1)

    def _step(self) -> None:
        """One round: wait for I/O (or the next deadline), handle it, hand out rendered answers."""
        now = time.monotonic()
        pending = [c.deadline for c in self._conns if c.state != "render"]
        timeout = min(1.0, max(0.0, min(pending) - now)) if pending else 1.0
        for key, _ in self._sel.select(timeout):
            if key.data == "accept":
                self._accept()
            elif key.data == "wake":
                self._drain_wake()
            elif key.data.state == "head":
                self._read(key.data)
            elif key.data.state == "write":
                self._write(key.data)
            elif key.data.state == "linger":
                self._linger(key.data)
        self._take_rendered()
        self._expire(time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if not self._evict_oldest_head():
                        time.sleep(0.05)  # nothing to free: let writes finish before trying again
                    return
                log.debug("http: accept failed: %s", exc)
                return
            sock.setblocking(False)
            if len(self._conns) >= self.max_connections and not self._evict_oldest_head():
                self._drop_sock(sock, addr, "busy")
                continue
            conn = _Conn(sock, addr, time.monotonic() + self.head_timeout)
            self._conns[conn] = None
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _evict_oldest_head(self) -> bool:
        """Make room: close the oldest connection still sending its head or already answered."""
        for conn in self._conns:
            if conn.state == "linger":
                self._close(conn)
                return True
            if conn.state == "head":
                self._drop(conn, "evicted")
                return True
        return False

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn, "error")
            return
        if not data:  # the client gave up (or half-closed before finishing its head)
            self._close(conn)
            return
        conn.buf += data
        if len(conn.buf) > MAX_HEAD:
            self.dropped["too_large"] += 1
            line_end = conn.buf.find(b"\n")
            if line_end < 0 or line_end > MAX_HEAD:
                self._respond(conn, _plain(414, "request line too long"))
            else:
                self._respond(conn, _plain(431, "request header fields too large"))
        elif _head_complete(conn.buf):
            conn.state = "render"
            self._sel.unregister(conn.sock)
            self._jobs.put(conn)

    def _take_rendered(self) -> None:
        with self._lock:
            done, self._rendered = self._rendered, []
        for conn, out in done:
            if conn in self._conns:
                self._respond(conn, out)

    def _respond(self, conn: _Conn, out: bytes) -> None:
        if conn.state == "head":
            self._sel.unregister(conn.sock)
        conn.state, conn.out, conn.buf = "write", memoryview(out), bytearray()
        conn.deadline = time.monotonic() + self.write_timeout
        self._sel.register(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)  # most responses fit in the socket buffer at once

    def _write(self, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out[:_CHUNK])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn, "error")
            return
        conn.out = conn.out[sent:]
        if not len(conn.out):  # done: half-close, then read until the client closes too, so a
            try:               # request body we did not read cannot turn our close into a reset
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close(conn)
                return
            conn.state, conn.out, conn.deadline = "linger", None, time.monotonic() + LINGER
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _linger(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.discarded += len(data)
        if not data or conn.discarded > MAX_LINGER_BYTES:
            self._close(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns if c.state != "render" and c.deadline <= now]:
            if conn.state == "linger":  # the response was sent: not a drop
                self._close(conn)
            else:
                self._drop(conn, "head_timeout" if conn.state == "head" else "write_timeout")
        if now >= self._next_report:
            self._next_report = now + DROP_REPORT_INTERVAL
            new = self.dropped - self._reported
            if new:
                self._reported = self.dropped.copy()
                log.warning("http: closed %d connection(s) early in the last %.0fs (%s); at most %d open, "
                            "%.0fs to send a request", sum(new.values()), DROP_REPORT_INTERVAL,
                            ", ".join(f"{k} {v}" for k, v in sorted(new.items())), self.max_connections,
                            self.head_timeout)

    def _drop(self, conn: _Conn, reason: str) -> None:
        self.dropped[reason] += 1
        log.debug("http: closing %s (%s)", conn.addr, reason)
        self._close(conn)

    def _drop_sock(self, sock: socket.socket, addr: Any, reason: str) -> None:
        self.dropped[reason] += 1
        log.debug("http: closing %s (%s)", addr, reason)
        sock.close()

    def _close(self, conn: _Conn) -> None:
        if conn in self._conns:
            del self._conns[conn]
            if conn.state != "render":  # a rendering connection is not registered
                try:
                    self._sel.unregister(conn.sock)
                except (KeyError, ValueError):
                    pass
        conn.state = "closed"  # events already selected for it in this round are ignored
        conn.sock.close()
