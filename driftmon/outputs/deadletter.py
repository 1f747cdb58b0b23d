"""Dead-letter output: undecodable or rejected records go to a Kafka topic.

The original key and value bytes are kept as they were; provenance travels in
headers (all values UTF-8 bytes)::

    driftmon-reason            why the record was rejected
    driftmon-source-topic      topic it was read from
    driftmon-source-partition  partition, decimal
    driftmon-source-offset     offset, decimal

Original headers are kept too, except earlier ``driftmon-*`` ones (a record
dead-lettered twice carries only the latest provenance).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from kafka import KafkaProducer

from driftmon.config import KafkaConfig
from driftmon.source.kafka import client_kwargs
from driftmon.util.secrets import redact_kwargs

log = logging.getLogger(__name__)

HEADER_PREFIX = "driftmon-"
REASON = "driftmon-reason"
SOURCE_TOPIC = "driftmon-source-topic"
SOURCE_PARTITION = "driftmon-source-partition"
SOURCE_OFFSET = "driftmon-source-offset"


class RecordLike(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


def dead_letter_headers(record: RecordLike, reason: str) -> list[tuple[str, bytes]]:
    """Original non-driftmon headers followed by the four provenance headers."""
    kept = [(k, v) for k, v in (getattr(record, "headers", None) or ()) if not k.startswith(HEADER_PREFIX)]
    kept += [
        (REASON, reason.encode("utf-8", "replace")),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(int(record.partition)).encode()),
        (SOURCE_OFFSET, str(int(record.offset)).encode()),
    ]
    return kept


class DeadLetterProducer:
    """Fire-and-forget producer of dead letters to ``topic``.

    Not idempotent on purpose (tansu loses producer ids on restart, and
    duplicates are acceptable in a dead-letter topic).  ``send`` never blocks
    longer than ``max_block_ms`` and never raises for delivery problems: they
    are logged and counted in :attr:`failed`.
    """

    def __init__(self, kafka: KafkaConfig, topic: str, max_block_ms: int = 1000, linger_ms: int = 20) -> None:
        self.topic = topic
        self.sent = 0  # handed to the producer
        self.delivered = 0  # acknowledged by the broker
        self.failed = 0  # refused locally or not acknowledged
        self._lock = threading.Lock()  # delivery callbacks run on kafka-python's IO thread
        kw: dict[str, Any] = {
            **client_kwargs(kafka),
            "client_id": f"{kafka.client_id}-deadletter",
            "acks": "all",
            "retries": 5,
            "linger_ms": linger_ms,
            "max_block_ms": max_block_ms,
        }
        if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
            kw["enable_idempotence"] = False
        log.info("dead-letter producer to %r: %s", topic, redact_kwargs(kw))
        self._producer = KafkaProducer(**kw)

    def __repr__(self) -> str:
        return f"DeadLetterProducer(topic={self.topic!r}, sent={self.sent}, failed={self.failed})"

    def send(self, record: RecordLike, reason: str) -> None:
        """Queue ``record``'s original bytes with provenance headers; returns at once."""
        try:
            fut = self._producer.send(
                self.topic,
                value=record.value,
                key=getattr(record, "key", None),
                headers=dead_letter_headers(record, reason),
            )
        except Exception as exc:  # buffer full / no metadata within max_block_ms
            with self._lock:
                self.failed += 1
            log.warning("dead letter for %s[%s]@%s dropped: %s",
                        record.topic, record.partition, record.offset, exc)
            return
        self.sent += 1
        fut.add_callback(self._on_delivered)
        fut.add_errback(self._on_error)

    def _on_delivered(self, _meta: Any) -> None:
        with self._lock:
            self.delivered += 1

    def _on_error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
        log.warning("dead letter not delivered to %r: %s", self.topic, exc)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued was acknowledged or failed."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        try:
            self._producer.close(timeout=timeout)
        except Exception as exc:
            log.warning("error closing dead-letter producer: %s", exc)

    def __enter__(self) -> DeadLetterProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
