"""``driftmon run`` with ``scale:``: the mapper and reducer stages in one process.

:class:`ScaledDaemon` is a :class:`~driftmon.service.daemon.Daemon` (same HTTP
server, outputs, decode worker, offset guard, run loop and shutdown) whose
counting goes to per-partition mappers and whose results come from reducers:

* mapper: the group ``kafka.group_id`` on the event topics, as today; each
  polled batch is decoded as today, counted by :class:`StreamMapper` per
  source partition, and the partials and marks it returns are produced to
  ``scale.partials_topic`` (a partial to its series' partition, a mark to
  every partition), in order, by one producer with one request in flight;
* reducer: the group ``scale.reduce_group_id`` on the partials topic; one
  :class:`~driftmon.scale.entity_reducer.ShardReducer` per assigned partials partition
  (its series, and the entity shard of the same number); what it emits goes to
  the outputs (metrics, alerts, sinks) exactly as the single-process
  daemon's results do.

Checkpoint, per stage (:class:`~driftmon.service.checkpointer.Checkpointer`):
outputs durable (dead letters, results, alerts) and the partials flushed ->
each owned partition's state written to the changelog topic and flushed ->
only then that stage's offsets committed.  On assignment a stage reads the
changelog until it goes quiet, restores each partition's state and seeks it
to the offset that state covers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from driftmon.config import Config
from driftmon.decode.prepare import PreparedBatch
from driftmon.outputs.fanout import Participant
from driftmon.outputs.metrics import Metrics
from driftmon.pipeline import StepOutput, StreamPipeline
from driftmon.scale.changelog import Acks, Changelog, scale_producer
from driftmon.scale.entity_mapper import make_mapper
from driftmon.scale.entity_records import EntityPartial
from driftmon.scale.entity_reducer import ShardReducer
from driftmon.scale.records import Partial, Record, decode, encode, series_key
from driftmon.scale.reducer import series_pipelines
from driftmon.service.checkpoint import config_fingerprint
from driftmon.service.checkpointer import Checkpointer, Offsets
from driftmon.service.daemon import Daemon
from driftmon.source.base import RecordLike
from driftmon.source.clients import key_partition, make_source

log = logging.getLogger("driftmon.scale.service")
TICK_INTERVAL = 1.0
REDUCE_POLL_MS = 100


class PartialsProducer:
    """Sends partials and marks in order (one request in flight); ``flush`` raises unless all were acknowledged."""

    def __init__(self, cfg: Config):
        assert cfg.scale is not None
        self.topic = cfg.scale.partials_topic
        # not idempotent: a repeat is harmless (the reducer overwrites by source)
        self.producer = scale_producer(cfg.kafka, f"{cfg.kafka.client_id}-partials", linger_ms=20)
        deadline = time.monotonic() + 30
        n = self.producer.partitions_for(self.topic)
        while not n and time.monotonic() < deadline:
            time.sleep(0.2)
            n = self.producer.partitions_for(self.topic)
        if not n:
            raise RuntimeError(f"partials topic {self.topic!r} not found: create it (see docs/scaling.md)")
        self.n = n
        self._acks = Acks()

    def partition(self, key: bytes) -> int:
        """Computed here, not by the client's partitioner (librdkafka's default is not murmur2):
        replicas with either ``kafka.client`` send a series to the same partition."""
        return key_partition(key, self.n)

    def partitions_for(self, topic: str) -> int:
        return self.producer.partitions_for(topic)

    def send(self, rec: Record) -> None:
        value = encode(rec)
        if isinstance(rec, EntityPartial):  # to the partition of its entity shard
            self._acks.send(self.producer, self.topic, value, key=f"{rec.stream}/entities/{rec.shard}".encode(),
                            partition=rec.shard)
            return
        if isinstance(rec, Partial):
            key = series_key(rec.stream, rec.feature)
            self._acks.send(self.producer, self.topic, value, key=key, partition=self.partition(key))
            return
        for q in range(self.n):
            self._acks.send(self.producer, self.topic, value, partition=q)

    def flush(self) -> None:
        try:  # a failure stays: checked again at the next checkpoint, which stays postponed
            self._acks.check(self.producer)
        except Exception as exc:
            raise RuntimeError(f"partials not acknowledged: {exc}") from exc

    def close(self) -> None:
        try:
            self.producer.close(timeout=5)
        except Exception as exc:
            log.debug("closing the partials producer: %s", exc)


class _StageStore:
    """The Checkpointer's store for one stage: the changelog, written and flushed."""

    def __init__(self, daemon: ScaledDaemon, stage: str):
        self.daemon, self.stage = daemon, stage

    def save(self, streams: dict[Any, Any], offsets: Offsets) -> None:
        log_ = self.daemon.changelog
        assert log_ is not None
        n = 0
        for key, state in streams.items():
            topic, partition = key
            offset = offsets.get((topic, partition))
            if offset is None:  # nothing consumed from it yet: nothing to resume
                continue
            n += log_.write(self.stage, topic, partition, offset, state)
        log_.flush()
        self.daemon.metrics.scale_changelog_write(self.stage, n)


class ScaledDaemon(Daemon):
    """A replica of a scaled-out group: mapper and reducer (see the module docstring)."""

    def __init__(self, cfg: Config, *, reset_state: bool = False, metrics: Metrics | None = None):
        assert cfg.scale is not None
        self.scale = cfg.scale
        super().__init__(cfg, reset_state=reset_state, metrics=metrics)
        self.metrics.init_scale([s.name for s in cfg.streams])
        self.mappers = {s.name: make_mapper(s, self.pipelines[s.name].summarizers, self._shards) for s in cfg.streams}
        self.summarizers = {k: p.summarizers for k, p in series_pipelines(cfg.streams).items()}
        self.reducers: dict[tuple[str, int], ShardReducer] = {}
        self.reduce_offsets: dict[tuple[str, int], int] = {}
        self.of: dict[str, int] = {}  # partitions per event topic
        self.scale_lock = threading.RLock()  # rebalance callbacks may run on the client's threads
        self.producer: PartialsProducer | None = None
        self.changelog: Changelog | None = None
        self.reduce_source: Any = None  # a source of kafka.client (driftmon.source.clients)
        self.map_checkpointer = Checkpointer(_StageStore(self, "map"), self.metrics)
        self.reduce_checkpointer = Checkpointer(_StageStore(self, "reduce"), self.metrics)
        self.restoring = False
        self.last_tick = 0.0
        self._reduce_stop = threading.Event()
        self._reduce_thread: threading.Thread | None = None
        self.mapped: set[tuple[str, int]] = set()  # event partitions whose state was restored

    def _restore(self) -> None:
        log.info("scale-out: state comes from the changelog topic %r, not from %s",
                 self.scale.changelog_topic, self.cfg.state.dir)

    # -- Kafka clients --------------------------------------------------------------------------

    def _connect(self, topics: list[str]) -> Any:
        conn = self.connector
        base = super()._connect(topics)
        if base is None:
            return None
        conn = self.connector
        assert conn is not None
        sc = self.scale
        self.producer = conn.build("partials producer", lambda: PartialsProducer(self.cfg))
        self.changelog = conn.build("changelog", lambda: Changelog(
            self.cfg.kafka, sc.changelog_topic or "", config_fingerprint(self.cfg), sc.changelog_quiet))
        self.reduce_source = conn.build("partials consumer", lambda: make_source(
            replace(self.cfg.kafka, group_id=sc.reduce_group_id or ""), [sc.partials_topic],
            on_assign=self.counted(sc.reduce_group_id or "", self._on_assign_reduce), on_revoke=self._on_revoke_reduce))
        if self.producer is None or self.changelog is None or self.reduce_source is None:
            base.close()
            return None
        log.info("scale-out: mapper in group %r -> %s (%d partitions); reducer in group %r",
                 self.cfg.kafka.group_id, sc.partials_topic, self.producer.n, sc.reduce_group_id)
        self._reduce_thread = threading.Thread(target=self._reduce_loop, name="driftmon-reducer", daemon=True)
        self._reduce_thread.start()
        return base

    def _shards(self) -> int:
        """Entity shards: one per partials partition (docs/scaling.md)."""
        assert self.producer is not None
        return self.producer.n

    def _partitions_of(self, topic: str) -> int:
        n = self.of.get(topic)
        if n is None:
            assert self.producer is not None
            n = self.producer.partitions_for(topic)  # cluster metadata: the partials producer's client
            deadline = time.monotonic() + 30
            while not n and time.monotonic() < deadline:
                time.sleep(0.2)
                n = self.producer.partitions_for(topic)
            if not n:
                raise RuntimeError(f"no partition count for {topic!r} in the cluster's metadata")
            self.of[topic] = n
        return n

    # -- mapper ---------------------------------------------------------------------------------

    def _run(self, pipe: StreamPipeline, recs: Sequence[RecordLike], values: list[bytes],
             partitions: np.ndarray, decoded: PreparedBatch | None = None, parsed: list[Any] | None = None) -> None:
        with self.scale_lock:
            prep = decoded if decoded is not None else pipe.preparer.prepare(values, parsed)
            topic = recs[0].topic
            ranges: dict[int, tuple[int, int]] = {}
            start = 0
            bounds = np.flatnonzero(np.diff(partitions)) + 1
            for end in [*bounds.tolist(), len(recs)]:
                ranges[int(partitions[start])] = (recs[start].offset, recs[end - 1].offset)
                start = end
            acc = prep.accepted
            late, sent = self.mappers[pipe.cfg.name].count(
                topic, self._partitions_of(topic), prep.coded, partitions[acc], ranges, time.monotonic(),
                **({"entities": prep.entities} if prep.entities is not None else {}))
            out = StepOutput(rejected=prep.rejected, truncated=prep.truncated)
            pipe.events += prep.n
            if late.any():
                out.late = acc[np.flatnonzero(late)].tolist()
                out.late_total = len(out.late)
                pipe.late += out.late_total
            self.outputs.step(pipe.cfg, recs, len(values), out)
            self._send(sent)

    def _send(self, recs: Sequence[Record]) -> None:
        assert self.producer is not None
        for r in recs:
            self.producer.send(r)
        n = sum(1 for r in recs if isinstance(r, (Partial, EntityPartial)))
        if n:
            self.metrics.scale_partials("sent", n)

    def _on_assign(self, partitions: list[tuple[str, int]]) -> None:
        with self.scale_lock:
            self.restoring = True
            try:
                assert self.changelog is not None and self.source is not None
                partitions = [tp for tp in partitions if tp not in self.mapped]
                if not partitions:
                    return
                self.changelog.catch_up()
                seeks = {}
                for topic, partition in partitions:
                    self.mapped.add((topic, partition))
                    self.metrics.init_partition(topic, partition)
                    got = self.changelog.get("map", topic, partition)
                    for s in self.cfg.streams:
                        if topic in s.topics:
                            m = self.mappers[s.name]
                            m.forget((topic, partition))
                            if got is not None and s.name in got[1]:
                                m.restore((topic, partition), got[1][s.name])
                            m.windows((topic, partition))
                    if got is not None:
                        seeks[(topic, partition)] = self.offsets[(topic, partition)] = got[0]
                    else:
                        self.offsets.pop((topic, partition), None)
                    self._partitions_of(topic)
                if seeks:
                    self.source.seek(seeks)
                log.info("mapper: partitions assigned %s (%d resumed from the changelog)", partitions, len(seeks))
            finally:
                self.restoring = False

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        if self.closing:
            return
        with self.scale_lock:
            log.info("mapper: partitions revoked %s; checkpointing", partitions)
            self._checkpoint_map()
            for topic, partition in partitions:
                self.mapped.discard((topic, partition))
                self.metrics.forget_partition(topic, partition)
                self.offsets.pop((topic, partition), None)
                for m in self.mappers.values():
                    m.forget((topic, partition))

    def _map_state(self) -> dict[Any, Any]:
        # the partitions whose state this replica restored and holds (during a revocation
        # kafka-python may already have cleared its assignment)
        return {src: {name: m.snapshot(src) for name, m in self.mappers.items() if src in m.parts}
                for src in sorted(self.mapped)}

    # -- reducer --------------------------------------------------------------------------------

    def _on_assign_reduce(self, partitions: list[tuple[str, int]]) -> None:
        with self.scale_lock:
            self.restoring = True
            try:
                assert self.changelog is not None and self.reduce_source is not None
                partitions = [tq for tq in partitions if tq not in self.reducers]
                if not partitions:
                    return
                self.changelog.catch_up()
                seeks = {}
                for tq in partitions:
                    red = ShardReducer(self.cfg.streams, self.scale.partial_timeout, self.reducers.values)
                    got = self.changelog.get("reduce", *tq)
                    if got is not None:
                        red.restore(got[1])
                        seeks[tq] = self.reduce_offsets[tq] = got[0]
                    else:
                        self.reduce_offsets.pop(tq, None)
                    self.reducers[tq] = red
                if seeks:
                    self.reduce_source.seek(seeks)
                log.info("reducer: partitions assigned %s (%d resumed from the changelog)", partitions, len(seeks))
            finally:
                self.restoring = False

    def _on_revoke_reduce(self, partitions: list[tuple[str, int]]) -> None:
        if self.closing:
            return
        with self.scale_lock:
            log.info("reducer: partitions revoked %s; checkpointing", partitions)
            self._checkpoint_reduce()
            for tq in partitions:
                self.reducers.pop(tq, None)
                self.reduce_offsets.pop(tq, None)

    def _reduce(self, batches: Mapping[tuple[str, int], Sequence[Any]]) -> None:
        merged = invalid = 0
        fresh = [tq for tq, recs in batches.items() if recs and tq not in self.reducers]
        if fresh:  # records before their assignment callback ran: restore their state first
            self._on_assign_reduce(fresh)
        for tq, recs in batches.items():
            red = self.reducers.get(tq)
            if red is None or not recs:
                continue
            expected = self.reduce_offsets.get(tq)
            for r in recs:  # one record per (series, window, source partition): few, not per event
                if expected is not None and r.offset < expected:
                    continue
                try:
                    rec = decode(r.value, self.summarizers)
                except ValueError as exc:
                    invalid += 1
                    log.error("partials %s[%d]@%d skipped: %s", tq[0], tq[1], r.offset, exc)
                    continue
                if isinstance(rec, (Partial, EntityPartial)):
                    dropped = red.dropped_after_emit
                    red.add(rec)
                    merged += red.dropped_after_emit == dropped
                    if red.dropped_after_emit != dropped:
                        self.metrics.scale_partials("dropped_after_emit")
                else:
                    red.add(rec)
            self.reduce_offsets[tq] = recs[-1].offset + 1
        if merged:
            self.metrics.scale_partials("merged", merged)
        if invalid:
            self.metrics.scale_partials("invalid", invalid)
        now = time.monotonic()
        for red in self.reducers.values():
            before = (dict(red.complete_windows), dict(red.partial_windows), dict(red.idle_advances))
            for name, step in red.emit(now):
                self.outputs.emit(name, step)
            for kind, counts, old in (("complete", red.complete_windows, before[0]),
                                      ("partial", red.partial_windows, before[1]),
                                      ("idle_advance", red.idle_advances, before[2])):
                for name, n in counts.items():
                    if n - old.get(name, 0):
                        self.metrics.scale_windows(name, kind, n - old.get(name, 0))

    # -- the loop -------------------------------------------------------------------------------

    def handle_poll(self, batches: Mapping[tuple[str, int], Sequence[RecordLike]]) -> None:
        fresh = [tp for tp, recs in batches.items() if recs and tp not in self.mapped]
        if fresh:  # records before their assignment callback ran: restore their state first, so
            self._on_assign(fresh)  # the offset guard drops what that state already counted
        super().handle_poll(batches)
        now = time.monotonic()
        if now - self.last_tick >= TICK_INTERVAL and self.producer is not None:
            self.last_tick = now
            with self.scale_lock:
                for m in self.mappers.values():
                    self._send(m.tick(now, self.of))

    def _reduce_loop(self) -> None:
        """The reducer's own thread: poll the partials, merge, emit, checkpoint its stage.
        (Its consumer is used from this thread only; shared state under ``scale_lock``.)"""
        src = self.reduce_source
        assert src is not None
        last = time.monotonic()
        while not self.stop_event.is_set() and not self._reduce_stop.is_set():
            try:
                batches = src.poll_batches(REDUCE_POLL_MS)
            except Exception as exc:  # broker trouble: stay up, retry
                log.warning("partials poll failed: %s", exc)
                self._reduce_stop.wait(1.0)
                continue
            try:
                reduced = None
                with self.scale_lock:
                    self._reduce(batches)
                    if time.monotonic() - last >= self.cfg.state.checkpoint_interval:
                        last = time.monotonic()
                        reduced = self._checkpoint_reduce(commit=False)
                if reduced:  # outside the lock (see checkpoint())
                    self.reduce_checkpointer.commit(reduced, src)
            except Exception:  # never silently: the replica stops reducing, so say so and stop it
                log.exception("reducer failed; stopping this replica (its partitions move to the others)")
                self.stop_event.set()
                return

    # -- checkpoints ----------------------------------------------------------------------------

    def _participants(self) -> list[Participant]:
        out = self.outputs.participants()
        if self.producer is not None:
            out.append(Participant("partials not acknowledged", self.producer.flush))
        return out

    def _checkpoint_map(self, commit: bool = True) -> dict[tuple[str, int], int] | None:
        """Outputs and partials durable -> states to the changelog -> (with ``commit``) the
        offsets committed.  Returns the offsets the written states cover (None: postponed).
        Callers hold ``scale_lock``; one that must not wait on the consumer while holding it
        passes ``commit=False`` and commits those offsets after releasing the lock."""
        if self.changelog is None or self.source is None:
            return None
        offsets = dict(self.offsets)
        if not self.map_checkpointer.checkpoint(self._participants(), self._map_state, offsets, None):
            return None
        if commit:
            self.map_checkpointer.commit(offsets, self.source)
        return offsets

    def _checkpoint_reduce(self, commit: bool = True) -> dict[tuple[str, int], int] | None:
        if self.changelog is None or self.reduce_source is None:
            return None
        offsets = dict(self.reduce_offsets)
        if not self.reduce_checkpointer.checkpoint(self._participants(), self._reduce_state, offsets, None):
            return None
        if commit:
            self.reduce_checkpointer.commit(offsets, self.reduce_source)
        return offsets

    def _reduce_state(self) -> dict[Any, Any]:
        return {tq: red.snapshot() for tq, red in self.reducers.items()}

    def checkpoint(self) -> bool:
        """Both stages: outputs and partials durable -> changelog written -> offsets committed."""
        self.drain_worker()
        if not self.consistent:
            log.error("not checkpointing: a batch was only partly counted; the last checkpoint stays")
            return False
        self.last_checkpoint = time.monotonic()
        reduce_here = self._reduce_thread is None or not self._reduce_thread.is_alive()  # else that thread does
        with self.scale_lock:  # (a blocking commit waits on kafka-python's thread, whose rebalance
            mapped = self._checkpoint_map(commit=False)  # callbacks take this lock: commit after it)
            reduced = self._checkpoint_reduce(commit=False) if reduce_here else {}
        if mapped is not None:
            self.map_checkpointer.commit(mapped, self.source)
        if reduced and self.reduce_source is not None:
            self.reduce_checkpointer.commit(reduced, self.reduce_source)
        self.last_checkpoint = time.monotonic()
        return mapped is not None and reduced is not None

    # -- lifecycle ------------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        ok, why = super().ready()
        if self.restoring:
            return False, "restoring partition state from the changelog"
        if self.source is None:
            return ok, why
        if self.reduce_source is None:
            return False, "partials consumer not connected"
        age = time.monotonic() - self.reduce_source.last_broker_contact
        if age > self.cfg.http.ready_broker_timeout:
            return False, f"reducer: no broker contact for {age:.0f}s"
        if not ok and why == "no partitions assigned" and self.reduce_source.assignment():
            return True, "ready (reducer only)"
        return ok, why

    def _shutdown(self) -> None:
        self._reduce_stop.set()
        if self._reduce_thread is not None:
            self._reduce_thread.join(timeout=self.cfg.lifecycle.grace_period / 2)
        try:
            super()._shutdown()
        finally:
            for client in (self.reduce_source, self.producer, self.changelog):
                if client is not None:
                    try:
                        client.close()
                    except Exception as exc:
                        log.debug("closing %s: %s", type(client).__name__, exc)
