"""confluent-kafka's producer and group-less reader (``kafka.client: confluent-kafka``).

The consumer-group member is :mod:`driftmon.source.confluent`; this module holds the
other two clients the registry (:mod:`driftmon.source.clients`) hands out, with the
same settings (:func:`~driftmon.source.confluent.client_config`):

* :class:`ConfluentProducer`, a :class:`driftmon.source.clients.Producer`;
* :class:`ConfluentReader`, a :class:`driftmon.source.clients.Reader` (every partition
  of a topic from its start, no group: the scale-out changelog).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Producer as _RdProducer

from driftmon.config import KafkaConfig
from driftmon.source.confluent import (
    _RD_LOG,
    BOOTSTRAP_TIMEOUT_S,
    MAX_REQUEST_SIZE,
    ConfluentSource,
    _libversion,
    client_config,
)
from driftmon.util.secrets import redact_kwargs

log = logging.getLogger("driftmon.source.confluent")
READ_BATCH = 10_000  # messages per consume() of the reader


def _partition_count(client: Any, topic: str) -> int:
    """Partitions of ``topic`` from the cluster's metadata (0: unknown or not there)."""
    try:
        md = client.list_topics(topic, timeout=BOOTSTRAP_TIMEOUT_S)
    except KafkaException as exc:
        log.debug("metadata of %s: %s", topic, exc)
        return 0
    t = md.topics.get(topic)
    return 0 if t is None or t.error is not None else len(t.partitions)


class ConfluentProducer:
    """librdkafka's producer as a :class:`driftmon.source.clients.Producer`.

    Delivery reports are served by ``poll(0)`` after each send and by :meth:`flush`, on the
    calling thread.  The constructor waits for the cluster's metadata (as kafka-python's
    does) so that a daemon does not start consuming before its outputs can be reached.
    """

    def __init__(self, kafka: KafkaConfig, *, client_id: str, acks: str = "all", linger_ms: int = 20,
                 max_block_ms: int = 1000, retries: int | None = None, max_in_flight: int | None = None,
                 max_request_size: int | None = None) -> None:
        self.max_request_size = max_request_size or MAX_REQUEST_SIZE
        conf: dict[str, Any] = {
            **client_config(kafka), "client.id": client_id, "acks": acks, "linger.ms": linger_ms,
            "enable.idempotence": False, "message.max.bytes": self.max_request_size,
            # kafka-python's delivery_timeout_ms: how long a record may wait for a broker before it fails
            "message.timeout.ms": 120000,
        }
        if max_in_flight is not None:  # 1: records of a partition are written in the order sent, even on retries
            conf["max.in.flight.requests.per.connection"] = max_in_flight
        del retries, max_block_ms  # librdkafka retries until message.timeout.ms and never blocks in produce()
        log.info("kafka producer (librdkafka %s): %s", _libversion(), redact_kwargs(conf))
        conf["error_cb"] = ConfluentSource._on_error
        conf["logger"] = _RD_LOG
        self._producer = _RdProducer(conf)
        try:
            self._producer.list_topics(timeout=BOOTSTRAP_TIMEOUT_S)  # raises KafkaException: not reachable
        finally:
            self._producer.poll(0)

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None,
             on_done: Callable[[BaseException | None], None] | None = None, partition: int | None = None) -> None:
        cb = None
        if on_done is not None:
            def cb(err: KafkaError | None, _msg: Message) -> None:
                on_done(None if err is None else KafkaException(err))
        self._producer.produce(topic, value=value, key=key, headers=headers or None,  # type: ignore[arg-type]
                               on_delivery=cb, partition=-1 if partition is None else partition)
        self._producer.poll(0)

    def partitions_for(self, topic: str) -> int:
        return _partition_count(self._producer, topic)

    def flush(self, timeout: float | None = None) -> None:
        from driftmon.source.clients import ProduceTimeout

        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise ProduceTimeout(f"{left} record(s) not acknowledged within {timeout}s")

    def close(self, timeout: float = 5.0) -> None:
        self._producer.flush(timeout)


class ConfluentReader:
    """A consumer outside any group (a group id is required by librdkafka but never joined:
    partitions are assigned, offsets never committed), as a :class:`driftmon.source.clients.Reader`."""

    def __init__(self, kafka: KafkaConfig, *, client_id: str, fetch_max_bytes: int,
                 max_partition_fetch_bytes: int) -> None:
        conf: dict[str, Any] = {
            **client_config(kafka), "client.id": client_id, "group.id": f"{client_id}-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "fetch.max.bytes": fetch_max_bytes, "max.partition.fetch.bytes": max_partition_fetch_bytes,
            "receive.message.max.bytes": fetch_max_bytes + 1024 * 1024,
        }
        log.info("kafka reader (librdkafka %s): %s", _libversion(), redact_kwargs(conf))
        conf["error_cb"] = ConfluentSource._on_error
        conf["logger"] = _RD_LOG
        self._consumer = Consumer(conf)

    def partitions(self, topic: str) -> list[int]:
        return list(range(_partition_count(self._consumer, topic)))

    def assign_from_start(self, topic: str, partitions: list[int]) -> None:
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self, timeout_ms: int) -> list[tuple[int, bytes | None, bytes | None]]:
        consume = self._consumer.consume
        msgs = consume(READ_BATCH, 0)
        if not msgs:  # wait for the first message only, then take what came with it
            msgs = consume(1, timeout_ms / 1000)
            if msgs:
                msgs += consume(READ_BATCH - 1, 0)
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append((m.partition(), m.key(), m.value()))
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka reader error on %s[%s]: %s", m.topic(), m.partition(), err)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._consumer.close()
