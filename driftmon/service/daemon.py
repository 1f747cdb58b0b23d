"""The long-running service: wires source -> pipelines -> metrics, webhooks, sinks.

Order of durability (see docs/reliability.md): a polled batch is counted into
window state; results go to the sinks and alerts to the on-disk outbox; every
``state.checkpoint_interval`` the sinks are synced, the state and the offsets
it covers are written atomically, and only then are those offsets committed
to Kafka.  On start the state dir is locked (one daemon per state dir), the
checkpoint is restored and each partition is sought to its checkpointed offset.

Start-up never waits for the broker: the constructor touches only local files,
``run`` serves ``/healthz`` first, then builds the Kafka clients (dead-letter
and results producers, then the consumer) off the main thread, retried until
the cluster answers (:mod:`driftmon.service.connect`); ``/readyz`` says "no broker
contact" meanwhile and a stop is honoured at once.  Offsets outside a
partition's log are handled by :class:`driftmon.source.offsets.OffsetGuard`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from driftmon.config import Config
from driftmon.decode.events import parse_values
from driftmon.decode.prepare import PreparedBatch
from driftmon.decode.worker import DecodeWorker, DecodeWorkerError
from driftmon.monitors.calibration import CalibrationMonitor, monitors_for
from driftmon.outputs.alerts import AlertDispatcher
from driftmon.outputs.alerts.sender import NoAlerts
from driftmon.outputs.deadletter import DeadLetterProducer
from driftmon.outputs.fanout import Outputs
from driftmon.outputs.metrics import Metrics
from driftmon.outputs.sinks import make_entity_sinks, make_sinks
from driftmon.pipeline import StepOutput, StreamPipeline
from driftmon.service.checkpoint import CheckpointError, CheckpointStore, config_fingerprint
from driftmon.service.checkpointer import Checkpointer
from driftmon.service.connect import Connector
from driftmon.service.errors import UnwritablePathError
from driftmon.service.http import StatusServer
from driftmon.service.statedir import acquire_state_dir, describe_os_error
from driftmon.source.base import RecordLike
from driftmon.source.clients import make_source, probe_cluster
from driftmon.source.offsets import OffsetGuard
from driftmon.source.partitions import Polled, group_poll, partition_id
from driftmon.vocabulary import REJECT_REASONS

log = logging.getLogger("driftmon.service.daemon")
LAG_INTERVAL = 2.0


class Daemon:
    """One consumer-group member running every configured stream."""

    def __init__(self, cfg: Config, *, reset_state: bool = False, metrics: Metrics | None = None):
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.metrics = metrics or Metrics()
        self.pipelines = {s.name: StreamPipeline(s) for s in cfg.streams}
        self.by_topic: dict[str, list[StreamPipeline]] = defaultdict(list)
        for s in cfg.streams:
            self.metrics.init_stream(s.name, REJECT_REASONS)
            for t in s.topics:
                self.by_topic[t].append(self.pipelines[s.name])
        # monitors across streams (calibration): fed the raw values of their streams after the pipelines
        self.monitors: list[CalibrationMonitor] = monitors_for(cfg)
        self.monitors_of: dict[str, list[CalibrationMonitor]] = defaultdict(list)
        for m in self.monitors:
            for name in m.streams:
                self.monitors_of[name].append(m)
        self.offsets: dict[tuple[str, int], int] = {}  # next offset per partition, counted in state
        self.consistent = True  # False while a batch is half counted: never checkpoint that
        # One daemon per state dir: exit 5 if another holds it, 4 if it cannot be written.
        self.lock = acquire_state_dir(cfg.state.dir)
        try:
            self._open_files(reset_state)
        except BaseException:
            self.lock.release()
            raise
        self.outputs = Outputs(cfg, self.metrics, self.dispatcher, self.sinks)
        for m in self.monitors:
            self.metrics.init_calibration(m.cfg.name, dict(m.counts))
        self.checkpointer = Checkpointer(self.store, self.metrics)
        # Kafka clients are built by run() (never here: a constructor must not wait for the broker)
        self._results_topic_pending = bool(cfg.sinks.kafka_topic)  # its producer is not built yet
        self._entity_topics_pending = any(s.entities is not None and s.entities.topic for s in cfg.streams)
        self.connector: Connector | None = None
        self.guard = OffsetGuard(self.offsets, cfg.kafka.auto_offset_reset, self.metrics.offset_out_of_range)
        self.source: Any = None  # the kafka.client's Source (driftmon.source.clients)
        self.server: StatusServer | None = None
        self.last_checkpoint = time.monotonic()
        self.last_lag = 0.0
        self.closing = False
        self.worker: DecodeWorker | None = None  # kafka.decode_workers: 1, started by run()
        self._inflight: list[Polled] | None = None  # the poll the worker is decoding, not counted yet
        self._worker_lock = threading.RLock()  # on_revoke drains from kafka-python's thread

    # -- state ------------------------------------------------------------------------------

    def _open_files(self, reset_state: bool) -> None:
        """The checkpoint, the results file and (only with webhooks) the alert outboxes;
        an OSError becomes :class:`UnwritablePathError` (exit 4) naming what failed."""
        cfg = self.cfg
        with _unwritable("state dir", cfg.state.dir, "state.dir"):
            self.store = CheckpointStore(cfg.state.dir, config_fingerprint(cfg))
            if reset_state:
                aside = self.store.reset()
                if aside:
                    log.warning("--reset-state: moved checkpoint aside to %s; windows and references start afresh "
                                "from the group's committed offsets", aside)
        self._restore()
        with _unwritable("results file", cfg.sinks.jsonl or "", "sinks.jsonl"):
            self.sinks = make_sinks(replace(cfg.sinks, kafka_topic=None), cfg.kafka, self.metrics)
        with _unwritable("alert outbox in state dir", cfg.state.dir, "state.dir"):
            self.dispatcher: AlertDispatcher | NoAlerts = (
                AlertDispatcher(cfg.alerts, cfg.state.dir, on_outcome=self.metrics.webhook_outcome)
                if cfg.alerts.webhooks else NoAlerts())

    def _restore(self) -> None:
        loaded = self.store.load()  # raises CheckpointError on a bad checkpoint
        if loaded is None:
            log.info("no checkpoint in %s: starting from the committed offsets", self.store.directory)
            return
        streams, offsets = loaded
        monitors = {m.key: m for m in self.monitors}
        try:
            for name, snap in streams.items():
                if name in monitors:  # a monitor's state rides along under its key
                    monitors[name].restore(snap)
                    continue
                if name.startswith("calibration:") and name not in self.pipelines:
                    log.warning("checkpoint has state of %s, which is no longer configured: dropped", name)
                    continue
                self.pipelines[name].restore(snap)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {self.store.path} does not fit the configured streams "
                                  f"({type(exc).__name__}: {exc}); run `driftmon run --reset-state` to move it "
                                  "aside and start from the group's committed offsets") from None
        self.offsets.update(offsets)
        log.info("restored checkpoint: %d stream(s), %d partition offset(s)", len(streams), len(offsets))

    def checkpoint(self) -> bool:
        """Make every output durable, write state + offsets atomically, then commit the offsets
        (:class:`~driftmon.service.checkpointer.Checkpointer`).

        Any output that cannot be made durable (results sink not written or not
        acknowledged, dead letters not acknowledged, outbox or firing alerts not
        on disk) vetoes the checkpoint, and so does a checkpoint file that cannot
        be written: the state stays in memory, the previous checkpoint stays
        valid, and the next attempt is one ``checkpoint_interval`` later.  The
        failure is counted (``driftmon_output_errors_total``) and logged; the
        daemon keeps running.  Returns True when a checkpoint was written."""
        self.drain_worker()  # count the batch in flight first: a checkpoint then covers all polled offsets
        if not self.consistent:
            log.error("not checkpointing: a batch was only partly counted; the last checkpoint stays")
            return False
        self.last_checkpoint = time.monotonic()  # whatever happens, the next attempt is an interval away
        written = self.checkpointer.checkpoint(
            self.outputs.participants(), self._snapshot,
            self.offsets, self.source)
        if written:
            self.last_checkpoint = time.monotonic()
        return written

    def _snapshot(self) -> dict[str, object]:
        """Every pipeline's state by stream name, and every monitor's by its key."""
        state: dict[str, object] = {n: p.snapshot() for n, p in self.pipelines.items()}
        state.update((m.key, m.snapshot()) for m in self.monitors)
        return state

    # -- processing -------------------------------------------------------------------------

    def process_batches(self, batches: Mapping[tuple[str, int], Sequence[RecordLike]]) -> None:
        """Count one poll, ``{(topic, partition): records in offset order}``, into window
        state and emit what it closed.  Hot path: no Python loop per record here."""
        polled = group_poll(self.guard.admit(batches))
        if polled:
            self._count_polled(polled, None)

    def handle_poll(self, batches: Mapping[tuple[str, int], Sequence[RecordLike]]) -> None:
        """One poll from the run loop.  In-process: counted now.  With the decode worker:
        the previous poll (decoded by the worker while this one was polled) is counted
        first, in order, then this one is sent to the worker."""
        if self.worker is None:
            if batches:
                self.process_batches(batches)
            return
        with self._worker_lock:
            self._collect()  # first: the guard compares with the offsets it moves
            polled = group_poll(self.guard.admit(batches))
            if polled:
                self._submit(polled)

    def drain_worker(self) -> None:
        """Count the batch the decode worker has in flight, if any (before checkpoints and shutdown)."""
        with self._worker_lock:
            self._collect()

    def _count_polled(self, polled: list[Polled], decoded: dict[tuple[str, str], PreparedBatch] | None) -> None:
        """Count a grouped poll (decoded here, or by the worker) and advance its offsets."""
        self.consistent = False  # until every pipeline counted the batch and offsets moved past it
        for topic, parts, recs, values, partitions in polled:
            pipes = self.by_topic.get(topic, ())
            # several streams on one topic: each message is parsed once for all of them
            parsed = parse_values(values) if decoded is None and len(pipes) > 1 else None
            for pipe in pipes:
                self._run(pipe, recs, values, partitions,
                          None if decoded is None else decoded[(topic, pipe.cfg.name)], parsed)
            for partition, rs in parts:  # OffsetGuard.admit let through only what follows the state
                self.offsets[(topic, partition)] = rs[-1].offset + 1
        self._advance_monitors(time.monotonic())
        self.consistent = True

    def _advance_monitors(self, now: float | None) -> None:
        """Close the monitors' windows the poll completed; results go out like any feature's."""
        for m in self.monitors:
            results = m.advance(now) if now is not None else m.flush()
            self.outputs.emit(m.streams[0], StepOutput(results=list(results)))
            last = results[-1] if results else None
            self.metrics.observe_calibration(m.cfg.name, dict(m.counts), m.pending_sizes(),
                                             getattr(last, "ece", None), scored=last is not None)

    def _submit(self, polled: list[Polled]) -> None:
        """Send a grouped poll to the decode worker."""
        assert self.worker is not None
        jobs = [(pipe.cfg.name, values, pipe.clock()) for topic, _, _, values, _ in polled
                for pipe in self.by_topic.get(topic, ())]
        try:
            self.worker.submit(jobs)
        except DecodeWorkerError as exc:
            self._worker_failed(exc)
            self._count_polled(polled, None)
            return
        self._inflight = polled

    def _collect(self) -> None:
        """Receive the worker's result for the batch in flight and count it."""
        polled, self._inflight = self._inflight, None
        if polled is None or self.worker is None:
            return
        try:
            results = iter(self.worker.result())
        except DecodeWorkerError as exc:
            self._worker_failed(exc)
            self._count_polled(polled, None)  # the values are still here: decode them in-process
            return
        decoded = {(topic, pipe.cfg.name): next(results) for topic, *_ in polled for pipe in self.by_topic.get(topic, ())}
        self._count_polled(polled, decoded)

    def _worker_failed(self, exc: Exception) -> None:
        log.error("%s; decoding in-process from now on", exc)
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.close(timeout=1.0)

    def _run(self, pipe: StreamPipeline, recs: Sequence[RecordLike], values: list[bytes],
             partitions: np.ndarray, decoded: PreparedBatch | None = None, parsed: list[Any] | None = None) -> None:
        parts = partitions + (partition_id(pipe.cfg.topics, recs[0].topic, 0) if recs else 0)
        if decoded is None:
            out = pipe.process(values, parts, time.monotonic(), parsed)
        else:
            out = pipe.count(decoded, parts, time.monotonic())
        self.outputs.step(pipe.cfg, recs, len(values), out)
        for m in self.monitors_of.get(pipe.cfg.name, ()):  # decoded here, also with the decode worker
            m.feed(pipe.cfg.name, m.prepare(pipe.cfg.name, values), parts, time.monotonic())

    # -- lifecycle --------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if self.source is None:
            conn = self.connector
            waiting = conn.waiting_for if conn is not None else None
            if conn is None or waiting is None:
                return False, "starting"
            err = f", last attempt: {conn.last_error}" if conn.last_error else ""
            return False, (f"no broker contact: connecting the {waiting} to {conn.servers} for "
                           f"{time.monotonic() - conn.since:.0f}s{err}")
        age = time.monotonic() - self.source.last_broker_contact
        if age > self.cfg.http.ready_broker_timeout:
            return False, f"no broker contact for {age:.0f}s"
        if not self.source.assignment():  # librdkafka also gives partitions up when the group coordinator
            # stays unreachable for session_timeout_ms: the contact age tells that case apart
            return False, f"no partitions assigned (last broker contact {age:.0f}s ago)"
        return True, "ready"

    def counted(self, group: str, on_assign: Callable[[list[tuple[str, int]]], None]
                ) -> Callable[[list[tuple[str, int]]], None]:
        """``on_assign`` that first counts the rebalance (``driftmon_consumer_rebalances_total``)."""
        def assigned(partitions: list[tuple[str, int]]) -> None:
            self.metrics.rebalanced(group)
            on_assign(partitions)
        return assigned

    def _on_assign(self, partitions: list[tuple[str, int]]) -> None:
        """Resume every partition this state has counted from at its own next
        offset, on every assignment: Kafka's committed offset can be behind it
        (the commit after a checkpoint is asynchronous during a rebalance)."""
        known = {tp: self.offsets[tp] for tp in partitions if tp in self.offsets}
        if known and self.source is not None:
            self.source.seek(known)
        now = time.monotonic()  # (kafka-python's thread, while the main thread waits in poll)
        for topic, partition in partitions:  # they hold the watermark back until they deliver or idle
            self.metrics.init_partition(topic, partition)
            for pipe in self.by_topic.get(topic, ()):
                pipe.register_partitions([partition_id(pipe.cfg.topics, topic, partition)], now)
        log.info("partitions assigned: %s (%d resumed from this state's offsets)", partitions, len(known))

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        if self.closing:  # the final checkpoint was already written and committed
            return
        log.info("partitions revoked: %s; checkpointing", partitions)
        self.checkpoint()
        for t, p in partitions:
            self.metrics.forget_partition(t, p)
            for pipe in self.by_topic.get(t, ()):
                pipe.forget_partitions([partition_id(pipe.cfg.topics, t, p)])
                for m in self.monitors_of.get(pipe.cfg.name, ()):
                    m.forget_partitions(pipe.cfg.name, [partition_id(pipe.cfg.topics, t, p)])

    def start_http(self) -> StatusServer:
        http = self.cfg.http
        self.server = StatusServer(http.host, http.port, self.metrics.render, self.ready).start()
        log.info("serving /metrics /healthz /readyz on http://%s", self.server.address)
        return self.server

    def run(self) -> int:
        """Consume until ``stop_event`` is set; then drain, checkpoint, commit, flush."""
        cfg = self.cfg
        if self.server is None:
            self.start_http()
        self.outputs.start()
        if cfg.kafka.decode_workers and self.worker is None:
            try:
                self.worker = DecodeWorker(cfg.streams)
                log.info("decoding in worker process %s", self.worker.process.pid)
            except Exception as exc:  # e.g. no /dev/shm or process limit: the in-process path still works
                log.error("decode worker did not start (%s); decoding in-process", exc)
        topics = sorted(self.by_topic)
        self.source = self._connect(topics)
        if self.source is None:  # stopped before the cluster ever answered
            self._shutdown()
            return 0
        self.guard.source = self.source
        if self.offsets:
            self.source.seek(self.offsets)
        log.info("consuming %s as group %r", topics, cfg.kafka.group_id)
        try:
            while not self.stop_event.is_set():
                try:  # a batch in the worker is not held back by a long wait for more records
                    batches = self.source.poll_batches(0 if self._inflight is not None else None)
                except Exception as exc:  # broker trouble: stay up, report not-ready, retry
                    log.warning("poll failed: %s", exc)
                    self.stop_event.wait(1.0)
                    batches = {}
                self.handle_poll(batches)
                now = time.monotonic()
                if now - self.last_checkpoint >= cfg.state.checkpoint_interval:
                    self.checkpoint()
                if now - self.last_lag >= LAG_INTERVAL:
                    self._check_offsets()
                    self._update_lag()
                    self.metrics.set_ready(self.ready()[0])
                    for receiver, n in self.outputs.pending_alerts().items():
                        self.metrics.set_outbox_size(receiver, n)
                    self.last_lag = now
        finally:
            self._shutdown()
        return 0

    def _connect(self, topics: list[str]) -> Any:
        """Build the producers, then the consumer (so every record it delivers can be
        dead-lettered and every result sent), each off the main thread and retried while
        the cluster is unreachable; None when stopped first."""
        kafka, sinks = self.cfg.kafka, self.cfg.sinks
        conn = self.connector = Connector(self.stop_event, ",".join(kafka.bootstrap_servers))
        dlq_topic = kafka.dead_letter_topic
        if dlq_topic and self.outputs.dlq is None:
            self.outputs.dlq = conn.build("dead-letter producer",
                                          lambda: DeadLetterProducer(kafka, dlq_topic, metrics=self.metrics))
            if self.outputs.dlq is None:
                return None
        if self._results_topic_pending:
            made = conn.build("results producer", lambda: make_sinks(replace(sinks, jsonl=None), kafka, self.metrics))
            if made is None:
                return None
            self.outputs.sinks.extend(made)
            self._results_topic_pending = False
        if self._entity_topics_pending:  # streams[].entities.topic: interest_shift records keyed by entity
            made = conn.build("entities producer", lambda: make_entity_sinks(self.cfg, self.metrics))
            if made is None:
                return None
            self.outputs.sinks.extend(made)
            self._entity_topics_pending = False
        if not dlq_topic and not sinks.kafka_topic:  # a failed consumer constructor leaks a thread: probe first
            if conn.build("cluster probe", lambda: probe_cluster(kafka)) is None:
                return None
        on_assign = self.counted(kafka.group_id, self._on_assign)
        return conn.build("consumer", lambda: make_source(kafka, topics, on_assign=on_assign,
                                                          on_revoke=self._on_revoke))

    def _check_offsets(self) -> None:
        try:
            self.guard.tick()
        except Exception as exc:  # broker trouble: the next tick tries again
            log.warning("checking offsets against the partitions' logs failed: %s", exc)

    def _update_lag(self) -> None:
        try:
            for (topic, partition), lag in self.source.lag().items():  # type: ignore[union-attr]
                self.metrics.set_lag(topic, partition, lag)
        except Exception as exc:
            log.debug("lag unavailable: %s", exc)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.cfg.lifecycle.grace_period
        log.info("shutting down: checkpoint, commit, flush alerts (grace %.0fs)", self.cfg.lifecycle.grace_period)
        try:
            self.drain_worker()
        except Exception:
            log.exception("counting the decode worker's last batch failed")
        if self.cfg.lifecycle.close_windows_on_shutdown:
            if self._results_topic_pending or self._entity_topics_pending:  # results could not reach a topic
                log.warning("windows stay open in the checkpoint: the results topic %r was never reached",
                            self.cfg.sinks.kafka_topic)
            else:
                for name, pipe in self.pipelines.items():
                    self.outputs.emit(name, pipe.flush())
                self._advance_monitors(None)
        try:
            self.checkpoint()
        except Exception:
            log.exception("final checkpoint failed")
        self.closing = True
        if self.source is not None:
            self.source.close()
        self.outputs.close(deadline)
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if self.server is not None:
            self.server.stop()
        self.lock.release()
        log.info("stopped")


@contextmanager
def _unwritable(what: str, path: str, key: str) -> Iterator[None]:
    """OSError -> one-line :class:`UnwritablePathError` naming ``path`` (and the file that failed)."""
    try:
        yield
    except OSError as exc:
        raise UnwritablePathError(f"{what} {path} cannot be written ({describe_os_error(exc, path)}); "
                                  f"check {key} and the permissions of its directory") from None
