"""Kafka clients built off the main thread, retried with backoff until the cluster answers.

kafka-python's consumer and producer constructors block until they have
bootstrapped from the cluster (up to ``bootstrap_timeout_ms``, 30 s by
default) and then raise ``KafkaTimeoutError``.  Built in the daemon's
constructor, as the dead-letter producer once was, that left a daemon with no
broker without ``/healthz`` and deaf to SIGTERM until the traceback.  Here
each client is built on a short-lived daemon thread while the caller waits on
its stop event: a stop is honoured at once (the half-built client is
abandoned to its thread, which closes it should it still connect), a failure
is logged and retried with backoff (1 s doubling to 30 s), and
:attr:`Connector.waiting_for` tells ``/readyz`` what it is waiting for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("driftmon.service.daemon")

T = TypeVar("T")
POLL_INTERVAL = 0.05


class Connector:
    """Builds clients one at a time; see the module docstring."""

    def __init__(self, stop: threading.Event, servers: str, *, initial_delay: float = 1.0, max_delay: float = 30.0):
        self.stop = stop
        self.servers = servers
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.waiting_for: str | None = None  # e.g. "dead-letter producer": what is being connected now
        self.last_error: str | None = None  # type of the last failure (no message: /readyz shows it)
        self.since = time.monotonic()

    def build(self, what: str, factory: Callable[[], T]) -> T | None:
        """``factory()`` built off the main thread, retried until it succeeds; None when
        the stop event was set first."""
        delay = self.initial_delay
        self.waiting_for, self.since = what, time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    return self._attempt(what, factory)
                except _Stopped:
                    return None
                except Exception as exc:  # KafkaTimeoutError, NoBrokersAvailable, auth failures, ...
                    self.last_error = type(exc).__name__
                    log.warning("kafka not reachable at %s (%s: %s); retrying in %.0fs", self.servers, what,
                                exc, delay)
                    self.stop.wait(delay)
                    delay = min(delay * 2, self.max_delay)
            return None
        finally:
            self.waiting_for = None

    def _attempt(self, what: str, factory: Callable[[], T]) -> T:
        box: dict[str, Any] = {}
        done = threading.Event()
        lock = threading.Lock()

        def target() -> None:
            try:
                value = factory()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            else:
                with lock:
                    abandoned = box.get("abandoned", False)
                    box["value"] = value
                if abandoned:  # the daemon stopped meanwhile: do not leave a live client behind
                    _close_quietly(value)
            finally:
                done.set()

        threading.Thread(target=target, name=f"driftmon-connect-{what.replace(' ', '-')}", daemon=True).start()
        while not done.wait(POLL_INTERVAL):
            if self.stop.is_set():
                with lock:
                    box["abandoned"] = True
                    value = box.get("value")
                if value is not None:  # built just now: it will not be used
                    _close_quietly(value)
                log.info("stopped while the %s was connecting to %s", what, self.servers)
                raise _Stopped
        if "error" in box:
            raise box["error"]
        return box["value"]


class _Stopped(Exception):
    pass


def _close_quietly(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # shutting down anyway
        log.debug("closing an abandoned kafka client failed: %s", exc)
