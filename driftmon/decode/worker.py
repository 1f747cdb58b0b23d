"""Preparing batches in a second process, so JSON parsing overlaps kafka-python's record parsing.

kafka-python parses every record in Python on the consumer's thread, and the
GIL runs that and driftmon's decoding in series (docs/benchmarks.md).  With
``kafka.decode_workers: 1`` the daemon sends each poll's raw values to one
:class:`DecodeWorker` process and polls the next batch while it works; the
worker runs each stream's pure :meth:`Preparer.prepare
<driftmon.decode.prepare.Preparer.prepare>` (decode, then summary codes per
feature) and answers with the :class:`~driftmon.decode.prepare.PreparedBatch`.  The
main process then only counts it (:meth:`StreamPipeline.count
<driftmon.pipeline.StreamPipeline.count>`), with the same code and the same
results as the in-process path.  ``prepare`` depends only on the config, so
nothing but raw values ever travels to the worker.

Protocol over two pipes, strictly alternating (the main process sends only
when no answer is outstanding, so neither side can block the other on a full
pipe).  The pipes are grown to 1 MiB where Linux allows it, so sending a poll
of up to ~1 MB returns at once instead of waiting for the worker to be
scheduled and read it (the worker shares its core with the broker):

* main -> worker: ``(seq, jobs)``, ``jobs`` is ``[(stream, values, now)]`` with
  ``now`` the pipeline clock's reading for the ``max_future_skew`` horizon;
* worker -> main: ``(seq, [PreparedBatch per job])`` or ``(seq, "error: ...")``;
* ``None`` (or the main process going away: EOF) stops the worker.

The worker uses the ``spawn`` start method: the daemon runs kafka-python
threads and must never be forked.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import traceback
from collections import Counter
from collections.abc import Sequence
from typing import Any

from driftmon.config import StreamConfig
from driftmon.decode.events import parse_values
from driftmon.decode.prepare import PreparedBatch, Preparer
from driftmon.util.gc_tuning import tune_gc

log = logging.getLogger("driftmon.decode.worker")

PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size for unprivileged processes
Job = tuple[str, list[bytes], float]  # stream name, raw values, clock reading for the skew horizon


def _grow_pipe(conn: Any) -> None:
    """Enlarge a pipe's kernel buffer (Linux); elsewhere keep the default."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        pass


def _serve(inbox: Any, outbox: Any, streams: list[StreamConfig]) -> None:
    """The worker process: decode jobs until told to stop or the parent goes away."""
    # The daemon handles SIGINT/SIGTERM and drains through this process: do not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_gc()  # as driftmon run: a poll's objects set off no collection
    clock_now = {s.name: 0.0 for s in streams}
    preparers = {s.name: Preparer(s, clock=lambda name=s.name: clock_now[name]) for s in streams}  # type: ignore[misc]
    while True:
        try:
            msg = inbox.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, jobs = msg
        try:
            out = []
            shared = _shared_parses(jobs)  # a topic's values arrive once (pickle memo) and are parsed once
            for name, values, now in jobs:
                clock_now[name] = now
                out.append(preparers[name].prepare(values, shared.get(id(values))))
            reply: Any = (seq, out)
        except Exception:
            reply = (seq, "error: " + traceback.format_exc(limit=5))
        try:
            outbox.send(reply)
        except (EOFError, OSError):
            return


def _shared_parses(jobs: list[Job]) -> dict[int, list[Any]]:
    """The values lists that several jobs (streams of one topic) share, parsed once each."""
    seen = Counter(id(values) for _, values, _ in jobs)
    out: dict[int, list[Any]] = {}
    for _, values, _ in jobs:
        if seen[id(values)] > 1 and id(values) not in out:
            out[id(values)] = parse_values(values)
    return out


class DecodeWorkerError(RuntimeError):
    """The worker process died or failed a batch; the caller decodes in-process instead."""


class DecodeWorker:
    """The main process's handle on one decode worker process.

    :meth:`submit` one poll's jobs, then :meth:`result` for them before the
    next :meth:`submit` (at most one batch in flight).  Raises
    :class:`DecodeWorkerError` when the worker is gone or failed.
    """

    def __init__(self, streams: Sequence[StreamConfig]):
        ctx = multiprocessing.get_context("spawn")
        inbox, self._send = ctx.Pipe(duplex=False)
        self._recv, outbox = ctx.Pipe(duplex=False)
        _grow_pipe(self._send)
        _grow_pipe(outbox)
        self.process = ctx.Process(target=_serve, args=(inbox, outbox, list(streams)), name="driftmon-decode",
                                   daemon=True)
        try:
            self.process.start()
        finally:
            inbox.close()  # the worker's ends: it sees EOF as soon as this process is gone,
            outbox.close()  # and this process sees EOF when the worker is
        self.sent = 0  # messages sent (batches submitted)
        self._waiting: int | None = None

    @property
    def in_flight(self) -> bool:
        return self._waiting is not None

    def submit(self, jobs: list[Job]) -> None:
        """Send one poll's jobs."""
        if self._waiting is not None:
            raise RuntimeError("DecodeWorker.submit: the previous batch was not collected")
        self.sent += 1
        try:
            self._send.send((self.sent, jobs))
        except (OSError, EOFError, ValueError) as exc:
            raise DecodeWorkerError(f"decode worker unreachable: {exc!r}") from None
        self._waiting = self.sent

    def result(self) -> list[PreparedBatch]:
        """The decoded batches of the last :meth:`submit`, in job order (waits for them)."""
        expected, self._waiting = self._waiting, None
        if expected is None:
            raise RuntimeError("DecodeWorker.result: nothing in flight")
        try:
            seq, out = self._recv.recv()
        except (OSError, EOFError, ValueError) as exc:
            raise DecodeWorkerError(f"decode worker died (exit code {self.process.exitcode}): {exc!r}") from None
        if seq != expected or isinstance(out, str):
            raise DecodeWorkerError(f"decode worker failed batch {expected}: {out if isinstance(out, str) else seq}")
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker and wait for it (terminate it if it does not exit)."""
        try:
            if self._waiting is not None and self._recv.poll(timeout):  # unblock a worker stuck sending
                self._recv.recv()
            self._waiting = None
            self._send.send(None)
        except (OSError, EOFError, ValueError):
            pass  # already gone
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
        self._send.close()
        self._recv.close()
