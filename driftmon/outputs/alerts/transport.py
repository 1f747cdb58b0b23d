"""One webhook POST, with a total deadline and a bounded read of the answer.

It is urllib (proxies from the environment, the default TLS checks, no
redirects followed) with two limits urllib does not have:

* **Every attempt ends within ``timeout`` seconds**, from connect to the last
  byte read, however slowly the receiver trickles its answer.  A socket timeout
  only bounds each read, so a receiver sending one byte per second would hold an
  attempt forever; here a watchdog thread (one per :class:`Poster`) shuts down
  the attempt's sockets when its deadline passes, which ends any blocked
  connect, TLS handshake, send or read at once.  (Name resolution cannot be
  interrupted this way; it is bounded by the system resolver's own timeouts.)
* **At most** :data:`MAX_RESPONSE_BYTES` **of an answer's body are read**; the
  rest is never read, so a receiver answering with a gigabyte costs 64 KiB.
  Only the status decides the outcome; the start of the body goes into the log
  of a failed attempt.

Once the status line and headers are in, the outcome is decided by the status:
a body cut short by the deadline does not turn a 2xx into a retry.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

MAX_RESPONSE_BYTES = 64 * 1024
SNIPPET_CHARS = 200  # of a failed attempt's response body, in its log line
_RECHECK = 0.05  # after the deadline, sockets opened late (a TLS wrap) are shut down within this


class DeadlineExceeded(TimeoutError):
    """The attempt did not get a complete status line and headers within its timeout."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes  # at most MAX_RESPONSE_BYTES
    complete: bool  # False when the body was cut (size limit, deadline or a broken connection)

    def snippet(self) -> str:
        """The start of the body as one printable line (for a log line)."""
        text = self.body[: SNIPPET_CHARS * 4].decode("utf-8", "replace")
        text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
        return text[:SNIPPET_CHARS] + ("..." if len(text) > SNIPPET_CHARS or not self.complete else "")


class _Attempt:
    """The deadline of one attempt and the sockets opened for it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise DeadlineExceeded(f"no response within {self.timeout:g}s")
        return left

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)

    def expire(self) -> None:
        """Shut down every socket of the attempt: blocked calls on them return at once."""
        self.expired = True
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:  # the base method: SSLSocket.shutdown would also drop its SSL object under the reader
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # already closed or never connected
                pass


class _Watchdog:
    """A thread that expires the current attempt when its deadline passes."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._attempt: _Attempt | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, attempt: _Attempt | None) -> None:
        with self._cond:
            self._attempt = attempt
            if attempt is not None and self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=f"{self._name}-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                attempt = self._attempt
                if attempt is None:
                    self._cond.wait()
                    continue
                left = attempt.deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                attempt.expire()
                self._cond.wait(_RECHECK)  # until the attempt ends: also catches sockets opened since


class _HTTPConnection(http.client.HTTPConnection):
    """Connects within the attempt's remaining time and registers its socket with it."""

    def __init__(self, host: str, *, attempt: _Attempt, **kw: Any) -> None:
        kw["timeout"] = attempt.remaining()  # per socket operation; the watchdog bounds the total
        super().__init__(host, **kw)
        self._attempt = attempt

        def create(address: tuple[str, int], timeout: Any = None, source_address: Any = None) -> socket.socket:
            sock = socket.create_connection(address, attempt.remaining(), source_address)
            attempt.track(sock)
            return sock

        self._create_connection = create


class _HTTPSConnection(_HTTPConnection, http.client.HTTPSConnection):
    """As :class:`http.client.HTTPSConnection`, with the TLS socket registered before its handshake."""

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP (and a proxy tunnel), registered
        server_hostname = getattr(self, "_tunnel_host", None) or self.host
        sock = self._context.wrap_socket(self.sock, server_hostname=server_hostname,  # type: ignore[attr-defined]
                                         do_handshake_on_connect=False)
        self._attempt.track(sock)
        sock.do_handshake()
        self.sock = sock


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, poster: Poster) -> None:
        super().__init__()
        self._poster = poster

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, attempt=self._poster.current())  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, poster: Poster) -> None:
        super().__init__()
        self._poster = poster

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, attempt=self._poster.current())  # type: ignore[arg-type]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: urllib would turn the signed POST into a bodyless GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


def _read_prefix(resp: Any, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body; True if that was all of it."""
    chunks: list[bytes] = []
    n = 0
    try:
        while n < limit:
            chunk = resp.read(min(64 * 1024, limit - n))
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            n += len(chunk)
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        pass  # cut by the deadline, or a broken connection: the status is what counts
    return b"".join(chunks), False


class Poster:
    """POSTs for one receiver, one attempt at a time (from one thread)."""

    def __init__(self, name: str) -> None:
        self._attempt: _Attempt | None = None
        self._watchdog = _Watchdog(name)
        self._opener = urllib.request.build_opener(_NoRedirect, _HTTPHandler(self), _HTTPSHandler(self))

    def current(self) -> _Attempt:
        if self._attempt is None:
            raise RuntimeError("Poster: connection opened outside post()")
        return self._attempt

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        """One attempt, at most ``timeout`` seconds in all.

        Returns the status (any, 2xx or not) and the start of the body; raises
        :class:`DeadlineExceeded` when no status arrived in time, ``ValueError``
        for a malformed URL, ``OSError``/``URLError``/``HTTPException`` otherwise.
        """
        attempt = _Attempt(timeout)
        self._attempt = attempt
        self._watchdog.watch(attempt)
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                resp: Any = self._opener.open(req, timeout=timeout)
            except urllib.error.HTTPError as e:  # a non-2xx answer: read it like any other
                resp = e
            except (OSError, http.client.HTTPException) as e:
                if attempt.expired or time.monotonic() >= attempt.deadline:
                    raise DeadlineExceeded(f"no response within {timeout:g}s") from e
                raise
            try:
                status = int(resp.getcode())
                data, complete = _read_prefix(resp, MAX_RESPONSE_BYTES)
            finally:
                resp.close()  # the rest of a long body is never read
        finally:
            self._watchdog.watch(None)
            self._attempt = None
        return Response(status, data, complete)

    def close(self) -> None:
        """Stop the watchdog thread (after the last attempt)."""
        self._watchdog.close()
