"""Kafka input and producers on confluent-kafka (librdkafka): ``kafka.client: confluent-kafka``.

The same contract as :mod:`driftmon.source.kafka` (kafka-python), with the
same config keys mapped to librdkafka's names (:func:`librdkafka_config`):

* at-least-once: auto-commit off, :meth:`ConfluentSource.commit` commits only
  the offsets the caller passes, after the checkpoint;
* restored checkpoints are applied with :meth:`ConfluentSource.seek`: at once for
  assigned partitions, else when the group assigns them (librdkafka takes the
  start offsets in the ``assign()`` of the rebalance callback);
* ``on_assign``/``on_revoke`` run inside :meth:`poll_batches` on the caller's
  thread (librdkafka serves rebalances from ``consume()``), before partitions are
  given away, so a synchronous commit there is allowed;
* the high watermark is the one of the last fetch response (``cached=True``), as
  with kafka-python; lag is ``high watermark - position``.

A poll is handed over without a Python object per message: each partition's
messages form one :class:`MessageBatch` whose ``values`` list is built by a
C-level ``map`` and whose items are built on demand (first/last offsets, dead
letters).  librdkafka reads, decompresses and checks CRCs in C on its own
threads, so the Python thread only decodes and counts.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, overload

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Producer as _RdProducer

from driftmon.config import KafkaConfig
from driftmon.source.base import Record
from driftmon.util.secrets import redact_kwargs

log = logging.getLogger(__name__)
# librdkafka's own log lines (warnings and worse) go through Python logging, so they get the
# configured format (text or JSON) and secret scrubbing; they are served by poll/consume/flush
_RD_LOG = logging.getLogger("driftmon.source.librdkafka")

Partition = tuple[str, int]
PartitionsCallback = Callable[[list[Partition]], None]
LIBRARY = "confluent-kafka"
RECONNECT_BACKOFF_MAX_MS = 5000  # as driftmon.source.kafka: notice a returning broker within 5 s
BOOTSTRAP_TIMEOUT_S = 10.0  # probe and producers: how long to wait for the cluster's metadata
LIST_OFFSETS_TIMEOUT_S = 5.0
STATS_INTERVAL_MS = 1000  # broker connection states, for last_broker_contact
MAX_REQUEST_SIZE = 1048576  # kafka-python's max_request_size default: the same too_large limit
OFFSET_INVALID = -1001
FETCH_QUEUE_BACKOFF_MS = 20


def client_config(kafka: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings in librdkafka's names.  Contains secrets: log only
    :func:`~driftmon.util.secrets.redact_kwargs` of it."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.bootstrap_servers),
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol.lower(),
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        "log_level": 4,  # warnings and worse; librdkafka logs every disconnect at level 6 otherwise
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else "none"
        for name, key in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                          ("ssl_keyfile", "ssl.key.location"), ("ssl_password", "ssl.key.password")):
            value = getattr(kafka, name)
            if value is not None:
                conf[key] = value
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not kafka.sasl_mechanism:
            raise ValueError(f"security_protocol {kafka.security_protocol} needs kafka.sasl_mechanism")
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_plain_username is not None:
            conf["sasl.username"] = kafka.sasl_plain_username
        if kafka.sasl_plain_password is not None:
            conf["sasl.password"] = kafka.sasl_plain_password
    return conf


def librdkafka_config(kafka: KafkaConfig) -> dict[str, Any]:
    """Every :class:`KafkaConfig` consumer setting in librdkafka's names (auto-commit off).
    ``max_poll_records`` and ``poll_timeout_ms`` are arguments of ``consume()``."""
    return {
        **client_config(kafka),
        "group.id": kafka.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": kafka.auto_offset_reset,
        "max.poll.interval.ms": kafka.max_poll_interval_ms,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
        "isolation.level": kafka.isolation_level,
        "statistics.interval.ms": STATS_INTERVAL_MS,
        # librdkafka postpones a partition's next fetch by this much once its local queue is
        # over queued.min.messages (default 1 s): a daemon that drains the queue while it counts
        # then found it empty and waited (a third of the run in bench/throughput.py)
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
    }


def _raise_on(err: KafkaError | None) -> None:
    if err is not None:
        raise KafkaException(err)


def probe_cluster(kafka: KafkaConfig) -> bool:
    """Fetch the cluster's metadata once (address, TLS, SASL); raises ``KafkaException`` when
    it does not answer within :data:`BOOTSTRAP_TIMEOUT_S`."""
    conf = {**client_config(kafka), "client.id": f"{kafka.client_id}-probe"}
    log.info("probing the kafka cluster: %s", redact_kwargs(conf))
    producer = _RdProducer({**conf, "logger": _RD_LOG})
    try:
        producer.list_topics(timeout=BOOTSTRAP_TIMEOUT_S)
    finally:
        producer.poll(0.1)  # hand over librdkafka's log lines (why it did not answer)
    return True


# -- records ------------------------------------------------------------------------------------


def _record(m: Message) -> Record:
    return Record(m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(),  # type: ignore[arg-type]
                  m.value(), m.headers() or [])  # type: ignore[arg-type]


class MessageBatch(Sequence[Record]):
    """One partition's messages in offset order; ``values`` ready-made (read by
    :func:`driftmon.source.base.values_of`), a :class:`Record` built per item accessed."""

    __slots__ = ("messages", "values")

    def __init__(self, messages: list[Message], values: list[bytes | None] | None = None) -> None:
        self.messages = messages
        self.values = list(map(Message.value, messages)) if values is None else values

    def __len__(self) -> int:
        return len(self.messages)

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> MessageBatch: ...
    def __getitem__(self, i: int | slice) -> Record | MessageBatch:
        if isinstance(i, slice):
            return MessageBatch(self.messages[i], self.values[i])
        return _record(self.messages[i])

    @classmethod
    def join(cls, batches: Sequence[MessageBatch]) -> MessageBatch:
        """Several partitions' batches as one (for a topic's share of a poll)."""
        messages: list[Message] = []
        values: list[bytes | None] = []
        for b in batches:
            messages += b.messages
            values += b.values
        return cls(messages, values)


_TOPIC = operator.methodcaller("topic")


def group_messages(msgs: list[Message]) -> dict[Partition, MessageBatch]:
    """``consume()``'s list -> ``{(topic, partition): MessageBatch in offset order}``, without a
    Python-level loop per message (librdkafka hands a partition's messages in order, in runs)."""
    n = len(msgs)
    parts = np.fromiter(map(Message.partition, msgs), dtype=np.int64, count=n)
    topics: list[str] = list(map(Message.topic, msgs))  # type: ignore[arg-type]
    first = topics[0]
    if topics.count(first) == n:
        keys = parts
        names = None
    else:
        index = {t: i for i, t in enumerate(dict.fromkeys(topics))}
        keys = np.fromiter(map(index.__getitem__, topics), dtype=np.int64, count=n) * (1 << 32) + parts
        names = list(index)
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = [0, *cuts.tolist()]
    ends = [*cuts.tolist(), n]
    out: dict[Partition, MessageBatch] = {}
    for s, e in zip(starts, ends):
        k = int(keys[s])
        tp = (first if names is None else names[k >> 32], k & 0xFFFFFFFF)
        chunk = msgs[s:e]
        prev = out.get(tp)
        out[tp] = MessageBatch(chunk) if prev is None else MessageBatch(prev.messages + chunk)
    return out


# -- the source ---------------------------------------------------------------------------------


class ConfluentSource:
    """Consumer-group member on librdkafka; the same interface as
    :class:`driftmon.source.kafka.KafkaSource` (see the module docstring).  Not thread-safe."""

    def __init__(
        self,
        kafka: KafkaConfig,
        topics: Sequence[str],
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> None:
        if not topics:
            raise ValueError("ConfluentSource needs at least one topic")
        self.kafka = kafka
        self.topics = tuple(topics)
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._poll_timeout_s = kafka.poll_timeout_ms / 1000
        self._max_records = kafka.max_poll_records
        self._pending_seeks: dict[Partition, int] = {}
        self._sought: dict[Partition, int] = {}  # start offsets given to librdkafka, until a message arrives
        self._lock = threading.Lock()
        self._in_callback = False
        # the assignment as the rebalance callbacks left it: /readyz asks from the HTTP thread, and
        # librdkafka's assignment() waits while consume() runs on the main thread
        self._assigned: frozenset[Partition] = frozenset()
        self._contact = time.monotonic()  # built after the cluster answered (probe or producers)
        conf = librdkafka_config(kafka)
        log.info("kafka consumer (librdkafka %s) for %s: %s", _libversion(), list(self.topics), redact_kwargs(conf))
        conf["stats_cb"] = self._on_stats
        conf["error_cb"] = self._on_error
        conf["logger"] = _RD_LOG
        self._consumer = Consumer(conf)
        self._consumer.subscribe(list(self.topics), on_assign=self._handle_assigned,
                                 on_revoke=self._handle_revoked, on_lost=self._handle_lost)

    def __repr__(self) -> str:
        return (f"ConfluentSource(bootstrap={list(self.kafka.bootstrap_servers)!r}, "
                f"group={self.kafka.group_id!r}, topics={list(self.topics)!r})")

    # -- hot path -------------------------------------------------------------------------------

    def _consume(self, timeout_ms: int | None) -> list[Message]:
        timeout = self._poll_timeout_s if timeout_ms is None else timeout_ms / 1000
        # consume(n, timeout) waits until n messages or the timeout: take what is fetched already,
        # else wait for the first message only, then take what came with it (kafka-python's poll)
        consume, n = self._consumer.consume, self._max_records
        msgs = consume(n, 0)
        if not msgs and timeout > 0:
            msgs = consume(1, timeout)
            if msgs and n > 1:
                msgs += consume(n - 1, 0)
        if not msgs:
            return msgs
        self._contact = time.monotonic()
        if any(map(Message.error, msgs)):
            good = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consumer error on %s[%s]: %s", m.topic(), m.partition(), err)
            msgs = good
        return msgs

    def poll_batches(self, timeout_ms: int | None = None) -> dict[Partition, Sequence[Any]]:
        """Up to ``max_poll_records`` messages as ``{(topic, partition): MessageBatch}``,
        waiting at most ``timeout_ms`` (default ``kafka.poll_timeout_ms``).  Also serves
        group membership and rebalance callbacks."""
        msgs = self._consume(timeout_ms)
        if not msgs:
            return {}
        batches = group_messages(msgs)
        if self._sought:
            for tp in batches:
                self._sought.pop(tp, None)
        return batches  # type: ignore[return-value]

    def poll(self, timeout_ms: int | None = None) -> list[Record]:
        """Like :meth:`poll_batches`, as a flat list of :class:`Record` (tests, tools)."""
        return [r for batch in self.poll_batches(timeout_ms).values() for r in batch]

    # -- offsets --------------------------------------------------------------------------------

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit exactly these next-offsets (synchronous, also inside rebalance callbacks,
        which librdkafka runs on this thread); raises ``KafkaException`` on failure."""
        if not offsets:
            return
        tps = [TopicPartition(t, p, int(o)) for (t, p), o in offsets.items()]
        result = self._consumer.commit(offsets=tps, asynchronous=False)
        for tp in result or ():
            if tp.error is not None:
                raise KafkaException(tp.error)
        self._contact = time.monotonic()

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Resume from these next offsets: now for assigned partitions, else when the group
        assigns them (once)."""
        todo = {(t, int(p)): int(o) for (t, p), o in offsets.items()}
        if not self._in_callback:
            assigned = self.assignment()
            for tp in [tp for tp in todo if tp in assigned]:
                off = todo.pop(tp)
                log.info("seeking %s[%d] to offset %d", tp[0], tp[1], off)
                try:
                    self._consumer.seek(TopicPartition(tp[0], tp[1], off))
                    self._sought[tp] = off
                except KafkaException as exc:  # not fetching yet: start there at the next assign
                    log.debug("seek %s[%d] deferred: %s", tp[0], tp[1], exc)
                    todo[tp] = off
        with self._lock:
            self._pending_seeks.update(todo)

    # -- rebalance callbacks (inside consume(), on the caller's thread) ---------------------------

    def _handle_assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._contact = time.monotonic()
        keys = sorted((tp.topic, tp.partition) for tp in partitions)
        self._in_callback = True
        try:
            if self.on_assign is not None:
                self.on_assign(keys)  # may call seek(): pending, applied in assign() below
        finally:
            self._in_callback = False
        with self._lock:
            for tp in partitions:
                off = self._pending_seeks.pop((tp.topic, tp.partition), None)
                if off is not None:
                    log.info("seeking %s[%d] to offset %d", tp.topic, tp.partition, off)
                    tp.offset = off
                    self._sought[(tp.topic, tp.partition)] = off
        consumer.assign(partitions)
        self._assigned = frozenset(keys)

    def _handle_revoked(self, consumer: Any, partitions: list[TopicPartition], lost: bool = False) -> None:
        if lost:
            log.warning("kafka group membership lost for %d partition(s)", len(partitions))
        keys = sorted((tp.topic, tp.partition) for tp in partitions)
        for k in keys:
            self._sought.pop(k, None)
        try:
            if self.on_revoke is not None:
                self._in_callback = True
                try:
                    self.on_revoke(keys)
                finally:
                    self._in_callback = False
        finally:
            consumer.unassign()  # eager rebalancing: everything goes
            self._assigned = frozenset()

    def _handle_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._handle_revoked(consumer, partitions, lost=True)

    # -- observability --------------------------------------------------------------------------

    def assignment(self) -> set[Partition]:
        """The partitions assigned now (kept by the rebalance callbacks: safe from any thread)."""
        return set(self._assigned)

    def _positions(self) -> dict[Partition, int]:
        """The next offset per assigned partition: librdkafka's position, or the start offset
        it was given while no message arrived yet."""
        tps = [TopicPartition(t, p) for t, p in self._assigned]
        out: dict[Partition, int] = {}
        if not tps:
            return out
        for tp in self._consumer.position(tps):
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                out[key] = tp.offset
            elif key in self._sought:
                out[key] = self._sought[key]
        return out

    def highwater(self, partition: Partition) -> int | None:
        """The high watermark of the last fetch response for ``partition`` (None before one)."""
        try:
            _, hw = self._consumer.get_watermark_offsets(TopicPartition(*partition), cached=True)
        except (KafkaException, RuntimeError):
            return None
        return None if hw is None or hw < 0 else int(hw)

    def lag(self) -> dict[Partition, int]:
        """Records behind the partition end (``highwater - position``) where both are known."""
        out: dict[Partition, int] = {}
        for key, pos in self._positions().items():
            hw = self.highwater(key)
            if hw is not None:
                out[key] = max(0, hw - pos)
        return out

    def beyond_log_end(self) -> dict[Partition, tuple[int, int]]:
        """``{partition: (position, log end)}`` of assigned partitions positioned past their log
        end (see :meth:`driftmon.source.kafka.KafkaSource.beyond_log_end`)."""
        out: dict[Partition, tuple[int, int]] = {}
        for key, pos in self._positions().items():
            hw = self.highwater(key)
            if hw is not None and pos > hw:
                out[key] = (pos, hw)
        return out

    def log_starts(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The first offset still in each partition's log (a ListOffsets request per partition)."""
        out: dict[Partition, int] = {}
        for t, p in partitions:
            low, _ = self._consumer.get_watermark_offsets(TopicPartition(t, p), timeout=LIST_OFFSETS_TIMEOUT_S)
            if low is not None and low >= 0:
                out[(t, p)] = int(low)
        self._contact = time.monotonic()
        return out

    def _on_stats(self, stats_json: str) -> None:
        """librdkafka's statistics (every second, from consume()): the last time a broker
        connection received anything (``rxidle``) is the proof the cluster answers, even on
        idle topics (fetches return every ``fetch.wait.max.ms``); librdkafka has no heartbeat hook."""
        try:
            brokers = orjson.loads(stats_json).get("brokers", {})
        except orjson.JSONDecodeError:
            return
        idle = [b["rxidle"] for b in brokers.values()
                if b.get("nodeid", -1) >= 0 and b.get("state") == "UP" and b.get("rxidle", -1) >= 0]
        if idle:
            self._contact = max(self._contact, time.monotonic() - min(idle) / 1e6)

    @staticmethod
    def _on_error(err: KafkaError) -> None:
        log.warning("kafka client: %s", err)

    @property
    def last_broker_contact(self) -> float:
        """``time.monotonic()`` of the last proof the cluster answers: records polled, a commit,
        a rebalance, or the last receive on a broker connection in librdkafka's statistics."""
        return self._contact

    def close(self) -> None:
        """Leave the group (without committing anything) and close sockets."""
        try:
            self._consumer.close()
        except Exception as exc:  # closing must not mask the reason we are shutting down
            log.warning("error closing kafka consumer: %s", exc)

    def __enter__(self) -> ConfluentSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _libversion() -> str:
    import confluent_kafka

    return str(confluent_kafka.libversion()[0])


# The names driftmon.source.clients looks up (kafka.client: confluent-kafka).  The producer and
# the group-less reader live in driftmon.source.confluent_clients, which builds on this module.
Source = ConfluentSource


def Producer(kafka: KafkaConfig, **kw: Any) -> Any:
    """A :class:`~driftmon.source.confluent_clients.ConfluentProducer`."""
    from driftmon.source.confluent_clients import ConfluentProducer

    return ConfluentProducer(kafka, **kw)


def Reader(kafka: KafkaConfig, **kw: Any) -> Any:
    """A :class:`~driftmon.source.confluent_clients.ConfluentReader`."""
    from driftmon.source.confluent_clients import ConfluentReader

    return ConfluentReader(kafka, **kw)
