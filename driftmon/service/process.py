"""``driftmon run`` as a process: signals, logging and GC settings around a :class:`Daemon`.

Stop signals are caught first.  ``driftmon run`` calls :func:`catch_stop_signals`
before it loads the config, imports numpy or builds the daemon (which can take a
second or more), so a SIGTERM or SIGINT at any moment after the interpreter has
started ends in a clean exit 0 rather than the default action (exit 143).  A
request that arrives before the daemon exists is remembered and handed to it
as soon as it is built (:meth:`StopRequest.forward_to`); one that arrives before
the config is even loaded ends the process without building a daemon.

This module is light to import on purpose: the daemon and everything it pulls
in are imported inside :func:`run_daemon`, after the handlers are installed.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from driftmon.util.gc_tuning import GC_GEN0_PER_POLL_RECORD, GC_GEN0_THRESHOLD, tune_gc

if TYPE_CHECKING:
    from driftmon.config import Config

__all__ = ["GC_GEN0_PER_POLL_RECORD", "GC_GEN0_THRESHOLD", "StopRequest", "catch_stop_signals", "run_daemon",
           "tune_gc"]

log = logging.getLogger("driftmon.service.daemon")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """A stop flag set by SIGTERM/SIGINT and forwarded to events attached later.

    The handler runs in the main thread between two bytecodes, so it only sets
    events; whoever owns an attached event (the daemon's ``stop_event``) checks
    it when it is built and in its loop.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        self._targets: list[threading.Event] = []

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        self.signal = signum
        self.event.set()
        for target in self._targets:
            target.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def forward_to(self, target: threading.Event) -> None:
        """Set ``target`` on every later stop request, and now if one already arrived."""
        self._targets.append(target)  # first attach, then look: a signal in between sets it either way
        if self.event.is_set():
            target.set()


def catch_stop_signals() -> StopRequest:
    """Install SIGTERM and SIGINT handlers that set (and return) a :class:`StopRequest`.

    Call it from the main thread before anything slow.
    """
    stop = StopRequest()
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    return stop


def run_daemon(cfg: Config, reset_state: bool = False, stop: StopRequest | None = None) -> int:
    """``driftmon run``: run until SIGTERM/SIGINT, exit 0 after a clean drain.

    ``stop`` is the request from :func:`catch_stop_signals` when the caller
    installed the handlers earlier (the CLI does, before loading the config).
    """
    if stop is None:
        stop = catch_stop_signals()
    from driftmon.service.logs import setup_logging

    setup_logging(cfg)
    for notice in cfg.notices:
        log.warning("config: %s", notice)
    if stop.is_set():
        log.info("stop requested (signal %s) before the daemon was built; exiting", stop.signal)
        return 0
    from driftmon.service.daemon import Daemon
    from driftmon.service.errors import StartupError

    make: type[Daemon] = Daemon
    if cfg.scale is not None:  # scale-out: mapper and reducer stages (driftmon/scale, docs/scaling.md)
        from driftmon.scale.service import ScaledDaemon

        make = ScaledDaemon
    try:
        daemon = make(cfg, reset_state=reset_state)
    except StartupError as exc:  # bad checkpoint (3), unwritable path (4), state dir in use (5)
        log.error("%s", exc)
        return exc.exit_code
    stop.forward_to(daemon.stop_event)  # a request during construction stops it before it consumes
    tune_gc(max(GC_GEN0_THRESHOLD, GC_GEN0_PER_POLL_RECORD * cfg.kafka.max_poll_records))
    return daemon.run()
