"""Results sinks: every closed-window result, in replay's ``--format json`` shape.

``JsonlSink`` appends one line per result; ``KafkaResultsSink`` sends the same
records to a topic.  Both follow :mod:`driftmon.outputs.failures`:

* ``write()`` never raises for a full disk, an I/O error or a broker problem:
  rows it cannot write yet are kept in memory (bounded) and retried;
* ``sync()``, which the daemon calls before each checkpoint, writes what is
  held, fsyncs (``jsonl``) or waits for acknowledgements (``kafka_topic``),
  and raises :class:`SinkError` if anything is still not durable.  The daemon
  then postpones the checkpoint, so a result is durable before the state that
  produced it is checkpointed: after a crash a row can repeat (identically)
  but never go missing;
* a row the broker can never take (over ``max_request_size``, a
  non-retriable error) is dropped and counted in
  ``driftmon_output_dropped_total{output, reason}``; every failed attempt is
  counted in ``driftmon_output_errors_total{output}``.

The results file is written with ``os.write`` on an append-only descriptor and
cut back to its last complete line after a failed write, so a full disk never
leaves a torn line behind (a crash can; :func:`_drop_torn_tail` cuts it when
the file is reopened).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import orjson

from driftmon.config import Config, KafkaConfig, SinksConfig
from driftmon.detect.result import DriftResult, json_line
from driftmon.outputs.failures import RETRY, FailureLog, HeldBack, classify
from driftmon.outputs.metrics import Metrics
from driftmon.util.files import open_append

log = logging.getLogger(__name__)


@runtime_checkable
class ResultSink(Protocol):
    """Where closed-window results go, and its part in the checkpoint.

    ``write`` takes the results of one step and must not raise for a transient
    failure (hold the rows, bounded, and count it); ``sync`` makes everything
    written so far durable or raises, which vetoes the checkpoint that would
    cover those results (:mod:`driftmon.service.checkpointer`); ``close`` ends it.
    A new sink is one class with these three methods plus an entry in
    :func:`make_sinks`.
    """

    def write(self, results: Sequence[DriftResult]) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


FLUSH_BYTES = 1 << 20  # the results file is written once this much is buffered, and at every sync
SYNC_TIMEOUT = 10.0  # seconds the checkpoint waits for the results topic's acknowledgements
MAX_BLOCK_MS = 5000  # a send never blocks ingestion longer than this (metadata unavailable)


class SinkError(RuntimeError):
    """A sink could not make its rows durable; the checkpoint waits for it."""


def _drop_torn_tail(path: str) -> None:
    """A crash mid-write can leave a partial last line: cut the file back to its
    last newline (that row is written again, whole, when its window re-closes)."""
    try:
        with open(path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            pos = size
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep = pos - step + nl + 1
                    break
                pos -= step
            else:
                keep = 0
            if keep != size:
                log.warning("results file %s ended in a torn line (%d bytes): cut", path, size - keep)
                fh.truncate(keep)
    except FileNotFoundError:
        return


class JsonlSink:
    """Appends result rows to a JSON-lines file; see the module docstring for failures."""

    output = "jsonl"

    def __init__(self, path: str, metrics: Metrics | None = None):
        self.path = path
        self.metrics = metrics
        _drop_torn_tail(path)
        self.fd = open_append(path)  # created 0600 (util/files.py); an existing file keeps its mode
        self.size = os.fstat(self.fd).st_size  # end of the last complete line
        self._held: HeldBack[tuple[bytes, int]] = HeldBack(lambda item: len(item[0]))  # (lines, rows)
        self._failures = FailureLog(log, f"results file {path}")

    def write(self, results: Sequence[DriftResult]) -> None:
        if not results:
            return
        self._hold(b"".join(json_line(r.to_dict()) for r in results), len(results))
        if not self._failures.failing and self._held.nbytes >= FLUSH_BYTES:
            try:  # while the file is failing, retries wait for the next checkpoint
                self._flush()
            except OSError:
                pass  # counted, logged and kept by _flush

    def _hold(self, data: bytes, rows: int) -> None:
        for _, lost in self._held.add((data, rows)):
            self._dropped("buffer_full", lost)

    def _dropped(self, reason: str, rows: int) -> None:
        log.error("results file %s: %d row(s) dropped (%s)", self.path, rows, reason)
        if self.metrics is not None:
            self.metrics.output_dropped(self.output, reason, rows)

    def _error(self, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.output_error(self.output)
        self._failures.failed(f"{exc} ({len(self._held)} batch(es) of rows held)")

    def _flush(self) -> None:
        """Append everything held, or nothing: a failed write is cut back to the last whole line."""
        items = self._held.take()
        if not items:
            return
        data = b"".join(d for d, _ in items)
        try:
            actual = os.fstat(self.fd).st_size
            if actual > self.size:  # a failed write left part of a line
                os.ftruncate(self.fd, self.size)
            elif actual < self.size:  # truncated behind our back (e.g. logrotate's copytruncate)
                self.size = actual
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass  # cut again before the next write
            for _, lost in self._held.put_back(items):
                self._dropped("buffer_full", lost)
            self._error(exc)
            raise
        self.size += len(data)

    def sync(self) -> None:
        try:
            self._flush()
            os.fsync(self.fd)
        except OSError as exc:
            if not self._held:  # the write went through, the fsync did not
                self._error(exc)
            raise SinkError(f"results file {self.path} not written: {exc}") from exc
        self._failures.recovered(f"results file {self.path} written")

    def close(self) -> None:
        try:
            self.sync()
        except SinkError as exc:  # the last checkpoint did not cover these rows: they are computed again
            log.error("%s; the rows are computed again after a restart", exc)
        finally:
            os.close(self.fd)


class KafkaResultsSink:
    """Sends result rows to ``topic`` (key ``stream/feature/segment``); see the module docstring."""

    output = "kafka_topic"

    def __init__(self, kafka: KafkaConfig, topic: str, metrics: Metrics | None = None):
        from driftmon.source.clients import make_producer

        self.topic = topic
        self.metrics = metrics
        # not idempotent: duplicates are identical rows; survive broker restarts
        self.producer = make_producer(kafka, client_id=kafka.client_id, linger_ms=50, acks="all",
                                      max_block_ms=MAX_BLOCK_MS)
        self._held: HeldBack[tuple[bytes, bytes]] = HeldBack(lambda kv: len(kv[0]) + len(kv[1]))
        self._failures = FailureLog(log, f"results topic {topic!r}")
        self._inflight = 0
        self._cond = threading.Condition()

    def write(self, results: Sequence[DriftResult]) -> None:
        for r in results:
            # monitors' records (interest_shift) name their own key: the entity
            key = r.sink_key() if hasattr(r, "sink_key") else f"{r.stream}/{r.feature}/{r.segment or ''}".encode()
            value = orjson.dumps(r.to_dict())
            if self._failures.failing:  # do not block ingestion on a failing producer: retried at sync
                self._hold(key, value)
            else:
                self._send(key, value)

    def _send(self, key: bytes, value: bytes) -> None:
        with self._cond:  # before the send: the acknowledgement may come before it returns
            self._inflight += 1
        try:
            self.producer.send(self.topic, key=key, value=value,
                               on_done=lambda exc: self._on_acked(None) if exc is None else self._on_failed(key, value, exc))
        except Exception as exc:  # too large, metadata unavailable within max_block_ms, queue full, closed
            self._done()
            self._failed(key, value, exc)

    def _on_acked(self, _meta: Any) -> None:
        self._done()
        if self._failures.failing:
            self._failures.recovered()

    def _on_failed(self, key: bytes, value: bytes, exc: BaseException) -> None:
        self._failed(key, value, exc)
        self._done()

    def _done(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def _failed(self, key: bytes, value: bytes, exc: BaseException) -> None:
        what = classify(exc)
        label = key.decode("utf-8", "replace")
        if what == RETRY:
            if self.metrics is not None:
                self.metrics.output_error(self.output)
            self._failures.failed(f"{type(exc).__name__}: {exc}")
            self._hold(key, value)
            return
        log.error("results topic %r: row %s (%d bytes) dropped (%s): %s: %s",
                  self.topic, label, len(value), what, type(exc).__name__, exc)
        if self.metrics is not None:
            self.metrics.output_dropped(self.output, what)

    def _hold(self, key: bytes, value: bytes) -> None:
        for k, _ in self._held.add((key, value)):
            log.error("results topic %r: row %s dropped (buffer_full)", self.topic, k.decode("utf-8", "replace"))
            if self.metrics is not None:
                self.metrics.output_dropped(self.output, "buffer_full")

    def sync(self) -> None:
        for key, value in self._held.take():  # oldest first, ahead of nothing newer: write() held those too
            self._send(key, value)
        try:
            self.producer.flush(timeout=SYNC_TIMEOUT)
        except Exception as exc:  # KafkaTimeoutError: still in flight; they complete or fail later
            if self.metrics is not None:
                self.metrics.output_error(self.output)
            self._failures.failed(f"{type(exc).__name__}: {exc}")
            raise SinkError(f"results topic {self.topic!r} did not acknowledge within {SYNC_TIMEOUT:.0f}s") from exc
        with self._cond:  # callbacks of the last batch may still be running on the producer's thread
            self._cond.wait_for(lambda: self._inflight == 0, 1.0)
        held = len(self._held)
        if held:
            raise SinkError(f"{held} row(s) not acknowledged by results topic {self.topic!r}")

    def close(self) -> None:
        try:
            self.sync()
        except SinkError as exc:
            log.error("%s; the rows are computed again after a restart", exc)
        try:
            self.producer.close(timeout=5)
        except Exception as exc:
            log.warning("error closing the results producer: %s", exc)


class EntityTopicSink(KafkaResultsSink):
    """``streams[].entities.topic``: one stream's ``interest_shift`` records, keyed by entity
    (so a recommender consuming the topic sees each user's records in order, on one
    partition); aggregate rows do not go here.  Failures as :class:`KafkaResultsSink`."""

    output = "entities_topic"

    def __init__(self, kafka: KafkaConfig, topic: str, stream: str, metrics: Metrics | None = None):
        super().__init__(kafka, topic, metrics)
        self.stream = stream

    def write(self, results: Sequence[Any]) -> None:
        mine = [r for r in results if getattr(r, "kind", None) == "interest_shift" and r.stream == self.stream]
        if mine:
            super().write(mine)


def make_entity_sinks(cfg: Config, metrics: Metrics | None = None) -> list[ResultSink]:
    """One :class:`EntityTopicSink` per stream that sets ``entities.topic``."""
    return [EntityTopicSink(cfg.kafka, s.entities.topic, s.name, metrics)
            for s in cfg.streams if s.entities is not None and s.entities.topic]


def make_sinks(cfg: SinksConfig, kafka: KafkaConfig, metrics: Metrics | None = None) -> list[ResultSink]:
    """The configured sinks (the registry of sink kinds: one line per ``sinks`` key)."""
    sinks: list[ResultSink] = []
    if cfg.jsonl:
        sinks.append(JsonlSink(cfg.jsonl, metrics))
    if cfg.kafka_topic:
        sinks.append(KafkaResultsSink(kafka, cfg.kafka_topic, metrics))
    return sinks
