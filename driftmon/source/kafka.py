"""Kafka input: a thin, fast wrapper over kafka-python's ``KafkaConsumer``.

At-least-once: auto-commit is off and :meth:`KafkaSource.commit` commits only
the offsets the caller passes (the daemon commits after the events are counted
and checkpointed).  Restored checkpoints are applied with :meth:`seek` when the
group assigns the partitions.  Works with kafka-python >= 2.0.2; with 3.x the
rebalance callbacks run on kafka-python's IO thread while ``poll()`` waits.
"""

from __future__ import annotations

import functools
import inspect
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import kafka as kafka_module
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata, TopicPartition

from driftmon.config import KafkaConfig
from driftmon.source import kafka_records
from driftmon.source.base import Record
from driftmon.util.secrets import redact_kwargs
from driftmon.vocabulary import READ_UNCOMMITTED, RECORD_READER_BATCH

try:  # kafka-python >= 2.0
    from kafka import ConsumerRebalanceListener
except ImportError:  # pragma: no cover
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

log = logging.getLogger(__name__)

Partition = tuple[str, int]
PartitionsCallback = Callable[[list[Partition]], None]
LIST_OFFSETS_TIMEOUT_MS = 5000  # a ListOffsets request from the run loop: never block it for long
# kafka-python backs reconnects off exponentially up to 30 s: a broker that came up after a
# minute's outage (or after the daemon, at start) was noticed up to 30 s late.
RECONNECT_BACKOFF_MAX_MS = 5000


# Building Record straight from ConsumerRecord's tuple slots (field positions
# differ between kafka-python versions) costs ~0.15 us per record.
_FIELDS = ConsumerRecord._fields
_slots = operator.itemgetter(*(_FIELDS.index(f) for f in
                               ("topic", "partition", "offset", "timestamp", "key", "value", "headers")))
_new_record = functools.partial(tuple.__new__, Record)
_OFFSET_META_ARITY = len(OffsetAndMetadata._fields)  # 2 before kafka-python 2.1, then 3 (leader_epoch)


def _offset_and_metadata(offset: int) -> OffsetAndMetadata:
    if _OFFSET_META_ARITY == 3:
        return OffsetAndMetadata(offset, "", -1)
    return OffsetAndMetadata(offset, "")  # pragma: no cover


def client_kwargs(kafka: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings shared by consumers and producers.

    Contains secrets: pass to kafka-python, log only
    :func:`~driftmon.util.secrets.redact_kwargs` of it.
    """
    kw: dict[str, Any] = {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kw["ssl_check_hostname"] = kafka.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            value = getattr(kafka, name)
            if value is not None:
                kw[name] = value
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not kafka.sasl_mechanism:
            raise ValueError(f"security_protocol {kafka.security_protocol} needs kafka.sasl_mechanism")
        kw["sasl_mechanism"] = kafka.sasl_mechanism
        kw["sasl_plain_username"] = kafka.sasl_plain_username
        kw["sasl_plain_password"] = kafka.sasl_plain_password
    return kw


def consumer_kwargs(kafka: KafkaConfig) -> dict[str, Any]:
    """Every :class:`KafkaConfig` consumer setting as ``KafkaConsumer`` kwargs (auto-commit off)."""
    kw = {
        **client_kwargs(kafka),
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "max_poll_records": kafka.max_poll_records,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
    }
    if "isolation_level" in KafkaConsumer.DEFAULT_CONFIG:
        kw["isolation_level"] = kafka.isolation_level
    elif kafka.isolation_level != READ_UNCOMMITTED:  # kafka-python before 2.1 reads everything
        log.warning("kafka-python %s has no isolation_level: aborted transactions' records are read too "
                    "(kafka.isolation_level: %s needs kafka-python >= 2.1)",
                    getattr(kafka_module, "__version__", "?"), kafka.isolation_level)
    return kw


def probe_cluster(kafka: KafkaConfig) -> bool:
    """Bootstrap once from the cluster (address, TLS, SASL) and disconnect: True, or raises
    like a client constructor (e.g. ``KafkaTimeoutError`` after ``bootstrap_timeout_ms``).

    Done before the consumer is built when no producer is: each failed
    ``KafkaConsumer(...)`` leaves its network thread running (kafka-python 3),
    a failed producer leaves nothing.
    """
    from kafka import KafkaProducer

    kw = {**client_kwargs(kafka), "client_id": f"{kafka.client_id}-probe"}
    log.info("probing the kafka cluster: %s", redact_kwargs(kw))
    producer = KafkaProducer(**kw)
    producer.close(timeout=1)
    return True


def next_offsets(records: Iterable[Record]) -> dict[Partition, int]:
    """Offsets to commit after ``records`` are fully processed: last offset + 1 per partition."""
    out: dict[Partition, int] = {}
    for r in records:
        key = (r.topic, r.partition)
        if r.offset >= out.get(key, -1):
            out[key] = r.offset + 1
    return out


def _to_monotonic(ts: float) -> float:
    """kafka-python < 3 stamps heartbeats with wall-clock time; 3.x uses monotonic."""
    now_mono = time.monotonic()
    if ts > now_mono + 60:  # a wall-clock epoch value
        return now_mono - (time.time() - ts)
    return ts


def keep_finished_joins(consumer: Any) -> bool:
    """Make a kafka-python 3.x consumer use a group join that finished between two polls.

    kafka-python 3.0 runs JoinGroup+SyncGroup as a task on its IO thread and, when
    ``poll(timeout)`` returns before the task is done, keeps the task for the next poll.
    But the next poll *replaces* a task that finished in the meantime with a fresh
    JoinGroup (``if task is None or task.is_done``, kafka-python 3.0.0-3.0.12 and master as
    of 2026-08), throwing the assignment away.  The fresh JoinGroup starts another
    rebalance, so a member that spends time between polls -- the daemon counting a batch,
    or two members polled in turn -- can rejoin for ever and never get partitions.

    Wrapped here: when a finished task is waiting, the next join attempt is a coroutine
    that hands over that task's outcome instead of sending a JoinGroup, and kafka-python's
    own code then completes the join with it (callbacks, offsets, heartbeats) or handles
    its error.  Returns whether the wrapper was installed (kafka-python 2.x has no such task).
    """
    coordinator: Any = getattr(consumer, "_coordinator", None)
    original = getattr(coordinator, "join_group_async", None)
    if (original is None or not hasattr(coordinator, "_join_task")
            or not inspect.iscoroutinefunction(getattr(coordinator, "_do_join_and_sync_async", None))):
        return False

    async def join_group_async(*args: Any, **kwargs: Any) -> Any:
        finished = coordinator._join_task
        if (finished is None or not getattr(finished, "is_done", False)
                or not hasattr(finished, "value") or not hasattr(finished, "exception")):
            return await original(*args, **kwargs)  # (a task of another shape: kafka-python's own way)

        async def outcome() -> Any:
            coordinator.__dict__.pop("_do_join_and_sync_async", None)  # once: later attempts join anew
            if finished.exception is not None:
                raise finished.exception
            return finished.value

        coordinator._do_join_and_sync_async = outcome
        try:
            return await original(*args, **kwargs)
        finally:
            coordinator.__dict__.pop("_do_join_and_sync_async", None)

    coordinator.join_group_async = join_group_async
    return True


def missing_codecs() -> list[str]:
    """Kafka's compression codecs kafka-python cannot decompress here (its libraries are
    driftmon's dependencies; without one, every poll of a topic compressed with it fails)."""
    from kafka import codec

    return [name for name, has in (("snappy", codec.has_snappy), ("lz4", codec.has_lz4), ("zstd", codec.has_zstd))
            if not has()]


def warn_missing_codecs() -> None:
    missing = missing_codecs()
    if missing:
        log.warning("kafka-python cannot decompress %s here: a topic a producer compresses with %s cannot be "
                    "read (every poll fails); install driftmon's dependencies (lz4, zstandard, python-snappy)",
                    ", ".join(missing), "it" if len(missing) == 1 else "one of them")


def read_batches(consumer: Any, kafka: KafkaConfig) -> bool:
    """Install :mod:`driftmon.source.kafka_records` on a consumer unless ``kafka.record_reader``
    is ``kafka-python``; returns whether it was installed (an unsupported kafka-python keeps
    its own reader, with a log line)."""
    if kafka.record_reader != RECORD_READER_BATCH:
        return False
    if kafka_records.install(consumer):
        log.debug("kafka records are read a batch at a time (kafka.record_reader: batch)")
        return True
    log.info("kafka.record_reader: batch is not available with kafka-python %s; records are read "
             "by kafka-python's own reader", getattr(kafka_module, "__version__", "?"))
    return False


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._source._handle_revoked(revoked, lost=False)

    def on_partitions_lost(self, lost: Any) -> None:
        self._source._handle_revoked(lost, lost=True)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._source._handle_assigned(assigned)


class KafkaSource:
    """Consumer-group member reading ``topics`` as flat lists of :class:`Record`.

    ``on_assign(partitions)`` runs after restored offsets were applied;
    ``on_revoke(partitions)`` runs before partitions are given away (commit
    what is checkpointed for them there; :meth:`commit` is then non-blocking)
    and also when the membership was lost.  Not thread-safe: use one thread.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topics: Sequence[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> None:
        if not topics:
            raise ValueError("KafkaSource needs at least one topic")
        self.kafka = kafka
        self.topics = tuple(topics)
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._poll_timeout_ms = kafka.poll_timeout_ms
        self._pending_seeks: dict[Partition, int] = {}
        self._lock = threading.Lock()
        self._listener_thread: int | None = None
        kwargs = consumer_kwargs(kafka)
        log.info("kafka consumer for %s: %s", list(self.topics), redact_kwargs(kwargs))
        warn_missing_codecs()
        self._consumer = KafkaConsumer(**kwargs)
        keep_finished_joins(self._consumer)
        read_batches(self._consumer, kafka)
        self._contact = time.monotonic()  # the constructor bootstrapped metadata from the cluster
        self._consumer.subscribe(topics=list(self.topics), listener=_Listener(self))
        self._position_kw = (
            {"timeout_ms": 0} if "timeout_ms" in inspect.signature(self._consumer.position).parameters else {}
        )
        self._list_offsets_kw = (
            {"timeout_ms": LIST_OFFSETS_TIMEOUT_MS}
            if "timeout_ms" in inspect.signature(self._consumer.beginning_offsets).parameters else {}
        )

    def __repr__(self) -> str:
        return (f"KafkaSource(bootstrap={list(self.kafka.bootstrap_servers)!r}, "
                f"group={self.kafka.group_id!r}, topics={list(self.topics)!r})")

    # -- hot path -------------------------------------------------------------------------------

    def poll(self, timeout_ms: int | None = None) -> list[Record]:
        """Up to ``max_poll_records`` records, waiting at most ``timeout_ms``
        (default ``kafka.poll_timeout_ms``).  Also drives group membership."""
        batches = self._consumer.poll(self._poll_timeout_ms if timeout_ms is None else timeout_ms)
        if not batches:
            return []
        self._contact = time.monotonic()
        out: list[Record] = []
        extend = out.extend
        for recs in batches.values():
            extend(map(_new_record, map(_slots, recs)))
        return out

    def poll_batches(self, timeout_ms: int | None = None) -> dict[Partition, Sequence[Any]]:
        """Like :meth:`poll`, grouped by partition and without copying: each value is
        kafka-python's own list of records (attributes ``topic, partition, offset,
        timestamp, key, value, headers``) in offset order.  The daemon's hot path:
        building a :class:`Record` per message costs ~15% of a bare consumer loop."""
        batches = self._consumer.poll(self._poll_timeout_ms if timeout_ms is None else timeout_ms)
        if not batches:
            return {}
        self._contact = time.monotonic()
        return {(tp.topic, tp.partition): recs for tp, recs in batches.items()}

    # -- offsets --------------------------------------------------------------------------------

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit exactly these next-offsets (last processed + 1) for the group.

        Blocking, raises on failure (e.g. ``CommitFailedError`` after a
        rebalance).  Inside ``on_revoke``/``on_assign`` it is sent without
        waiting, since blocking calls are not allowed in rebalance callbacks.
        """
        if not offsets:
            return
        payload = {TopicPartition(t, p): _offset_and_metadata(int(o)) for (t, p), o in offsets.items()}
        if self._listener_thread == threading.get_ident():
            self._consumer.commit_async(payload, callback=self._log_async_commit)
            return
        self._consumer.commit(payload)
        self._contact = time.monotonic()

    @staticmethod
    def _log_async_commit(offsets: Any, result: Any) -> None:
        if isinstance(result, BaseException):
            log.warning("offset commit during rebalance failed for %d partition(s): %s", len(offsets), result)

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Resume from restored checkpoint offsets (next offset to read).

        Applied now for partitions already assigned, otherwise when the group
        assigns them (once; later reassignments use the committed offsets).
        """
        with self._lock:
            self._pending_seeks.update({(t, int(p)): int(o) for (t, p), o in offsets.items()})
        assigned = self._consumer.assignment()
        if assigned:
            self._apply_seeks(assigned)

    def _apply_seeks(self, partitions: Iterable[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                off = self._pending_seeks.pop((tp.topic, tp.partition), None)
                if off is not None:
                    log.info("seeking %s[%d] to offset %d", tp.topic, tp.partition, off)
                    self._consumer.seek(tp, off)

    # -- rebalance callbacks (kafka-python 3: on its IO thread while poll() waits) ---------------

    def _handle_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._apply_seeks(assigned)
        self._contact = time.monotonic()
        if self.on_assign is not None:
            self._run_callback(self.on_assign, assigned)

    def _handle_revoked(self, revoked: Iterable[TopicPartition], lost: bool) -> None:
        revoked = list(revoked)
        if lost:
            log.warning("kafka group membership lost for %d partition(s)", len(revoked))
        if self.on_revoke is not None:
            self._run_callback(self.on_revoke, revoked)

    def _run_callback(self, cb: PartitionsCallback, partitions: Iterable[TopicPartition]) -> None:
        self._listener_thread = threading.get_ident()
        try:
            cb(sorted((tp.topic, tp.partition) for tp in partitions))
        finally:
            self._listener_thread = None

    # -- observability --------------------------------------------------------------------------

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def lag(self) -> dict[Partition, int]:
        """Records behind the partition end: ``highwater - position``.

        Highwater comes from fetch responses (tansu's ``end_offsets()`` is
        wrong), so partitions not fetched yet are left out.
        """
        out: dict[Partition, int] = {}
        consumer = self._consumer
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            pos = consumer.position(tp, **self._position_kw)
            if pos is not None:
                out[(tp.topic, tp.partition)] = max(0, hw - pos)
        return out

    # -- the partitions' logs (see driftmon.source.offsets) ---------------------------------------

    def highwater(self, partition: Partition) -> int | None:
        """The log end offset from the last fetch response for ``partition`` (None before one)."""
        try:
            return self._consumer.highwater(TopicPartition(*partition))
        except (AssertionError, KeyError):  # not assigned (any more)
            return None

    def beyond_log_end(self) -> dict[Partition, tuple[int, int]]:
        """``{partition: (position, log end)}`` of assigned partitions positioned past their log end.

        The log end is the highwater of the last fetch response: a position only
        passes it through a seek (a restored checkpoint, a committed offset) to an
        offset the log no longer reaches.  Apache Kafka then answers the fetch with
        OFFSET_OUT_OF_RANGE and kafka-python resets the position itself; tansu answers
        with no records and the true highwater, so the consumer would wait forever.
        """
        out: dict[Partition, tuple[int, int]] = {}
        consumer = self._consumer
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            try:
                pos = consumer.position(tp, **self._position_kw)
            except Exception:  # a reset in progress
                continue
            if pos is not None and pos > hw:
                out[(tp.topic, tp.partition)] = (pos, hw)
        return out

    def log_starts(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The first offset still in each partition's log (a ListOffsets request: correct on
        tansu, unlike ``end_offsets()``).  Raises on timeout or broker errors."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return {}
        got = self._consumer.beginning_offsets(tps, **self._list_offsets_kw)
        self._contact = time.monotonic()
        return {(tp.topic, tp.partition): int(o) for tp, o in got.items() if o is not None}

    @property
    def last_broker_contact(self) -> float:
        """``time.monotonic()`` of the last proof the cluster answers: records
        polled, a commit, a rebalance, or a group heartbeat response."""
        last = self._contact
        # kafka-python has no public hook for this; heartbeats answer every
        # heartbeat_interval_ms even when the topics are idle.
        hb = getattr(getattr(getattr(self._consumer, "_coordinator", None), "heartbeat", None),
                     "last_receive", None)
        if isinstance(hb, (int, float)) and hb != float("-inf"):
            last = max(last, _to_monotonic(hb))
        return last

    def close(self) -> None:
        """Leave the group (without committing anything) and close sockets."""
        try:
            self._consumer.close(autocommit=False)
        except Exception as exc:  # closing must not mask the reason we are shutting down
            log.warning("error closing kafka consumer: %s", exc)

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KafkaPythonProducer:
    """kafka-python's ``KafkaProducer`` as a :class:`driftmon.source.clients.Producer`."""

    def __init__(self, kafka: KafkaConfig, *, client_id: str, acks: str = "all", linger_ms: int = 20,
                 max_block_ms: int = 1000, retries: int | None = None, max_in_flight: int | None = None,
                 max_request_size: int | None = None) -> None:
        from kafka import KafkaProducer

        kw: dict[str, Any] = {**client_kwargs(kafka), "client_id": client_id, "acks": acks,
                              "linger_ms": linger_ms, "max_block_ms": max_block_ms}
        if retries is not None:
            kw["retries"] = retries
        if max_in_flight is not None:
            kw["max_in_flight_requests_per_connection"] = max_in_flight
        if max_request_size is not None:
            kw["max_request_size"] = max_request_size
        if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
            kw["enable_idempotence"] = False
        self.max_request_size = int(kw.get("max_request_size", KafkaProducer.DEFAULT_CONFIG["max_request_size"]))
        log.info("kafka producer: %s", redact_kwargs(kw))
        self._producer = KafkaProducer(**kw)

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None,
             on_done: Callable[[BaseException | None], None] | None = None, partition: int | None = None) -> None:
        fut = self._producer.send(topic, value=value, key=key, headers=headers, partition=partition)
        if on_done is not None:
            fut.add_callback(lambda _meta: on_done(None))
            fut.add_errback(on_done)

    def partitions_for(self, topic: str) -> int:
        try:
            return len(self._producer.partitions_for(topic) or ())
        except Exception as exc:  # KafkaTimeoutError: no metadata for it within max_block_ms
            log.debug("metadata of %s: %s", topic, exc)
            return 0

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._producer.close(timeout=timeout)


class KafkaPythonReader:
    """A ``KafkaConsumer`` outside any group (``group_id=None``: partitions assigned, offsets
    never committed), as a :class:`driftmon.source.clients.Reader`."""

    def __init__(self, kafka: KafkaConfig, *, client_id: str, fetch_max_bytes: int,
                 max_partition_fetch_bytes: int) -> None:
        kw = {**client_kwargs(kafka), "client_id": client_id, "group_id": None, "enable_auto_commit": False,
              "auto_offset_reset": "earliest", "fetch_max_bytes": fetch_max_bytes,
              "max_partition_fetch_bytes": max_partition_fetch_bytes}
        log.info("kafka reader: %s", redact_kwargs(kw))
        self._consumer = KafkaConsumer(**kw)
        read_batches(self._consumer, kafka)

    def partitions(self, topic: str) -> list[int]:
        return sorted(self._consumer.partitions_for_topic(topic) or ())

    def assign_from_start(self, topic: str, partitions: list[int]) -> None:
        tps = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)

    def poll(self, timeout_ms: int) -> list[tuple[int, bytes | None, bytes | None]]:
        return [(tp.partition, r.key, r.value)
                for tp, recs in self._consumer.poll(timeout_ms=timeout_ms).items() for r in recs]

    def close(self) -> None:
        self._consumer.close(autocommit=False)


# The names driftmon.source.clients looks up (kafka.client: kafka-python).
LIBRARY = "kafka-python"
Source = KafkaSource
Producer = KafkaPythonProducer
Reader = KafkaPythonReader
