"""A small local webhook receiver for the demo and the tests.

Records every POST (headers, raw body, parsed JSON, signature check), can answer
a scripted sequence of status codes (e.g. ``[500, 500, 200]``) or hold each
request for a while to simulate a hanging receiver, and can print one line per
alert.  Run standalone with ``python -m driftmon.testing.receiver --port 9000 --secret X``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from driftmon.outputs.alerts.payload import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


@dataclass(frozen=True)
class Received:
    """One request as the sink saw it, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # None if the body was not JSON
    signature_valid: bool | None  # None when the sink has no secret
    status: int
    at: float = 0.0  # time.monotonic() when it was answered (bench/throughput.py --latency)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get(IDEMPOTENCY_HEADER.lower())

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def summarize(payload: Any, signature_valid: bool | None = None) -> list[str]:
    """One human line per alert of an Alertmanager-style body."""
    sig = {True: "sig ok", False: "SIG BAD", None: "unsigned"}[signature_valid]
    lines = []
    for a in (payload or {}).get("alerts", []) if isinstance(payload, dict) else []:
        lab, ann = a.get("labels", {}), a.get("annotations", {})
        seg = f"[{lab['segment']}]" if lab.get("segment") else ""
        lines.append(
            f"{a.get('status', '?').upper():8} {lab.get('severity', '?'):8} "
            f"{lab.get('stream', '?')}/{lab.get('feature', '?')}{seg} "
            f"{ann.get('metric', '?')}={ann.get('divergence', '?')} {ann.get('unit', '')} "
            f"p={ann.get('p_value', '?')} window_end={ann.get('window_end', '?')} "
            f"fp={a.get('fingerprint', '?')} {sig}"
        )
    return lines


class WebhookSink:
    """Threaded HTTP receiver on ``host:port`` (port 0 = any free port).

    ``status_sequence`` is consumed one status per request; once exhausted every
    request gets 200.  ``delay`` seconds are slept before answering (cut short
    by :meth:`release`).  ``echo`` is a text stream for one line per alert.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: str | None = None,
        status_sequence: Iterable[int] | None = None,
        *,
        delay: float = 0.0,
        echo: TextIO | None = None,
    ) -> None:
        self.secret = secret
        self.delay = delay
        self.echo = echo
        self._statuses = list(status_sequence or [])
        self._received: list[Received] = []
        self._cond = threading.Condition()
        self._released = threading.Event()
        self.in_flight = 0  # requests currently being held/handled
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="webhook-sink", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"WebhookSink(url={self.url!r}, received={len(self._received)}, secret={'***' if self.secret else None})"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._server.server_address[0]!s}:{self.port}/hook"

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def accepted(self) -> list[Received]:
        """Requests answered with 2xx."""
        return [r for r in self.received if r.accepted]

    def unique_alerts(self) -> list[Received]:
        """Accepted requests deduplicated by Idempotency-Key, first occurrence, in arrival order."""
        seen, out = set(), []
        for r in self.accepted():
            key = r.idempotency_key
            if key is None or key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def wait_for(self, n: int, timeout: float, *, unique: bool = False) -> bool:
        """Wait until ``n`` requests were accepted (or ``n`` unique keys); False on timeout."""
        count = (lambda: len(self.unique_alerts())) if unique else (lambda: len(self.accepted()))
        with self._cond:
            return self._cond.wait_for(lambda: count() >= n, timeout)

    def release(self) -> None:
        """Answer held requests now and stop delaying new ones."""
        self.delay = 0.0
        self._released.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> WebhookSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_status(self) -> int:
        with self._cond:
            return self._statuses.pop(0) if self._statuses else 200

    def _record(self, rec: Received) -> None:
        with self._cond:
            self._received.append(rec)
            self._cond.notify_all()
        if self.echo is not None and rec.accepted:
            for line in summarize(rec.json, rec.signature_valid):
                print(line, file=self.echo, flush=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                with sink._cond:
                    sink.in_flight += 1
                try:
                    self._handle()
                finally:
                    with sink._cond:
                        sink.in_flight -= 1

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if sink.delay > 0:
                    sink._released.wait(sink.delay)
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                valid = None
                if sink.secret is not None:
                    valid = verify(body, sink.secret, self.headers.get(SIGNATURE_HEADER))
                status = sink._next_status() if parsed is not None else 400
                headers = {k.lower(): v for k, v in self.headers.items()}
                sink._record(Received(self.path, headers, body, parsed, valid, status, time.monotonic()))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up (timeout) while we were holding it
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m driftmon.testing.receiver", description="Print driftmon webhook alerts.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--secret", default=None, help="verify X-Driftmon-Signature with this HMAC secret")
    args = ap.parse_args(argv)
    sink = WebhookSink(args.host, args.port, secret=args.secret, echo=sys.stdout)
    print(f"listening on {sink.url} (any path)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
