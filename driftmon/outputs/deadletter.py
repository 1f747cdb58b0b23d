"""Dead-letter output: undecodable or rejected records go to a Kafka topic.

The original key and value bytes are kept as they were; provenance travels in
headers (all values UTF-8 bytes)::

    driftmon-reason            why the record was rejected
    driftmon-source-topic      topic it was read from
    driftmon-source-partition  partition, decimal
    driftmon-source-offset     offset, decimal

Original headers are kept too, except earlier ``driftmon-*`` ones (a record
dead-lettered twice carries only the latest provenance).

A record too big for the producer (``max_request_size``, 1 MiB by default)
is sent as a **truncated copy**: the first bytes of the value that fit, and
three more headers::

    driftmon-truncated         what was cut: "value", or "value,key,headers" when the
                               key (cut to 1 KiB) and the original headers (dropped)
                               did not leave room for 1 KiB of value
    driftmon-original-size     length of the original value in bytes, decimal
    driftmon-original-sha256   hex SHA-256 of the original value

so the original can be identified (and fetched from the source topic while
retention keeps it).  If the broker refuses the copy as too large (a topic
with a smaller ``max.message.bytes``), it is cut to an eighth and sent again,
down to 1 KiB.  Acknowledged dead letters are counted in
``driftmon_dead_letters_total{outcome="delivered"|"truncated"}``.

Failures follow :mod:`driftmon.outputs.failures`: a dead letter the broker has
not acknowledged (timeout, broker down) is kept in memory and sent again at
the next checkpoint, which waits until it is acknowledged (:meth:`flush`
raises :class:`DeadLetterError` until then); one that can never be delivered
(a non-retriable error) is dropped, counted in
``driftmon_output_dropped_total{output="dead_letter", reason}`` and logged.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

from kafka.record.default_records import DefaultRecordBatchBuilder

from driftmon.config import KafkaConfig
from driftmon.outputs.failures import RETRY, FailureLog, HeldBack, classify
from driftmon.outputs.metrics import Metrics
from driftmon.source.base import RecordLike
from driftmon.source.clients import make_producer

log = logging.getLogger(__name__)

HEADER_PREFIX = "driftmon-"
REASON = "driftmon-reason"
SOURCE_TOPIC = "driftmon-source-topic"
SOURCE_PARTITION = "driftmon-source-partition"
SOURCE_OFFSET = "driftmon-source-offset"
TRUNCATED = "driftmon-truncated"
ORIGINAL_SIZE = "driftmon-original-size"
ORIGINAL_SHA256 = "driftmon-original-sha256"

OUTPUT = "dead_letter"
MIN_VALUE_BYTES = 1024  # a truncated copy keeps at least this much of the value (and of a long key)
_MARGIN = 64  # bytes of slack under max_request_size for varint growth


class DeadLetterError(RuntimeError):
    """Dead letters not acknowledged yet; the checkpoint waits for them."""


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


@dataclass(frozen=True)
class Letter:
    """One dead letter as it is (or will be) sent."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    source: str  # "topic[partition]@offset", for logs
    truncated: bool = False

    @property
    def size(self) -> int:
        return record_size(self.key, self.value, self.headers)


def record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """What kafka-python checks against ``max_request_size`` (an upper bound of the record's batch)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def make_letter(record: RecordLike, reason: str, max_bytes: int) -> Letter:
    """The dead letter of ``record``: the original bytes, or a truncated copy if they do not fit."""
    letter = Letter(getattr(record, "key", None), record.value, dead_letter_headers(record, reason),
                    f"{record.topic}[{record.partition}]@{record.offset}")
    return letter if letter.size <= max_bytes else truncate(letter, max_bytes)


def truncate(letter: Letter, max_bytes: int) -> Letter:
    """A copy of ``letter`` whose record fits ``max_bytes`` (see the module docstring)."""
    value = letter.value or b""
    headers = letter.headers
    if letter.truncated:  # cut again (the broker refused the first copy): keep the original's size/hash
        parts = dict(headers)[TRUNCATED].decode()
        headers = [(k, v) for k, v in headers if k not in (TRUNCATED,)]
    else:
        parts = "value"
        headers = headers + [(ORIGINAL_SIZE, str(len(value)).encode()),
                             (ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode())]
    key = letter.key
    room = max_bytes - _MARGIN - record_size(key, b"", headers + [(TRUNCATED, b"value,key,headers")])
    if room < MIN_VALUE_BYTES and "key" not in parts:  # the key and headers are what is too big
        headers = [(k, v) for k, v in headers if k.startswith(HEADER_PREFIX)]
        key = None if key is None else key[:MIN_VALUE_BYTES]
        parts = "value,key,headers"
        room = max_bytes - _MARGIN - record_size(key, b"", headers + [(TRUNCATED, parts.encode())])
    return replace(letter, key=key, value=value[:max(room, 0)], headers=headers + [(TRUNCATED, parts.encode())],
                   truncated=True)


class DeadLetterProducer:
    """Producer of dead letters to ``topic``.

    Not idempotent on purpose (tansu loses producer ids on restart, and
    duplicates are acceptable in a dead-letter topic).  :meth:`send` never
    blocks longer than ``max_block_ms`` and never raises for delivery
    problems; :meth:`flush` (before each checkpoint) sends again what was not
    acknowledged and raises :class:`DeadLetterError` while anything is
    outstanding.  ``sent``/``delivered``/``failed`` count letters handed to the
    producer, acknowledged, and failed attempts.
    """

    def __init__(self, kafka: KafkaConfig, topic: str, max_block_ms: int = 1000, linger_ms: int = 20,
                 metrics: Metrics | None = None) -> None:
        self.topic = topic
        self.metrics = metrics
        self.sent = 0  # handed to the producer
        self.delivered = 0  # acknowledged by the broker
        self.failed = 0  # attempts refused locally or not acknowledged
        self._lock = threading.Condition()  # delivery callbacks run on kafka-python's IO thread
        self._inflight = 0
        self._held: HeldBack[Letter] = HeldBack(lambda letter: letter.size)
        self._failures = FailureLog(log, f"dead-letter topic {topic!r}")
        log.info("dead-letter producer to %r (kafka.client: %s)", topic, kafka.client)
        self._producer = make_producer(kafka, client_id=f"{kafka.client_id}-deadletter", acks="all", retries=5,
                                       linger_ms=linger_ms, max_block_ms=max_block_ms)
        self.max_request_size = self._producer.max_request_size

    def __repr__(self) -> str:
        return f"DeadLetterProducer(topic={self.topic!r}, sent={self.sent}, failed={self.failed})"

    @property
    def pending(self) -> int:
        """Dead letters held in memory for a retry."""
        return len(self._held)

    def send(self, record: RecordLike, reason: str) -> None:
        """Queue ``record``'s original bytes (or a truncated copy) with provenance headers; returns at once."""
        letter = make_letter(record, reason, self.max_request_size)
        if letter.truncated:
            log.warning("dead letter for %s is %d bytes, over max_request_size (%d): sending its first %d bytes "
                        "with headers %s, %s, %s", letter.source, len(record.value or b""), self.max_request_size,
                        len(letter.value or b""), TRUNCATED, ORIGINAL_SIZE, ORIGINAL_SHA256)
        if self._failures.failing:  # retried at the next checkpoint; do not block ingestion meanwhile
            self._hold(letter)
        else:
            self._send(letter)

    def _send(self, letter: Letter) -> bool:
        """Hand ``letter`` to the producer; False if it was held back for a retry."""
        with self._lock:  # before the send: the acknowledgement may come before it returns
            self.sent += 1
            self._inflight += 1
        try:
            self._producer.send(self.topic, value=letter.value, key=letter.key, headers=letter.headers,
                                on_done=functools.partial(self._on_done, letter))
        except Exception as exc:  # no metadata within max_block_ms, too large, queue full, closed
            with self._lock:
                self.sent -= 1
                self._inflight -= 1
                self._lock.notify_all()
            return self._failed(letter, exc)
        return True

    def _on_done(self, letter: Letter, exc: BaseException | None) -> None:
        if exc is None:
            self._on_delivered(letter, None)
        else:
            self._on_error(letter, exc)

    def _on_delivered(self, letter: Letter, _meta: Any) -> None:
        with self._lock:
            self.delivered += 1
            self._inflight -= 1
            self._lock.notify_all()
        if self.metrics is not None:
            self.metrics.dead_letter("truncated" if letter.truncated else "delivered")
        if self._failures.failing:
            self._failures.recovered()

    def _on_error(self, letter: Letter, exc: BaseException) -> None:
        self._failed(letter, exc)
        with self._lock:
            self._inflight -= 1
            self._lock.notify_all()

    def _failed(self, letter: Letter, exc: BaseException) -> bool:
        with self._lock:
            self.failed += 1
        what = classify(exc)
        if what == "too_large" and len(letter.value or b"") > MIN_VALUE_BYTES:
            smaller = truncate(letter, max(letter.size // 8, MIN_VALUE_BYTES + 2 * _MARGIN))
            log.warning("dead letter for %s refused as too large (%s); sending its first %d bytes",
                        letter.source, exc, len(smaller.value or b""))
            self._hold(smaller)
            return False
        if what == RETRY:
            if self.metrics is not None:
                self.metrics.output_error(OUTPUT)
            self._failures.failed(f"{type(exc).__name__}: {exc}")
            self._hold(letter)
            return False
        log.error("dead letter for %s dropped (%s): %s: %s", letter.source, what, type(exc).__name__, exc)
        if self.metrics is not None:
            self.metrics.output_dropped(OUTPUT, what)
        return False

    def _hold(self, letter: Letter) -> None:
        for lost in self._held.add(letter):
            log.error("dead letter for %s dropped (buffer_full)", lost.source)
            if self.metrics is not None:
                self.metrics.output_dropped(OUTPUT, "buffer_full")

    def flush(self, timeout: float | None = None) -> None:
        """Send again what was held back, then wait until everything is acknowledged;
        raises :class:`DeadLetterError` if anything is still outstanding."""
        held = self._held.take()
        for i, letter in enumerate(held):
            if not self._send(letter):
                for rest in held[i + 1:]:
                    self._hold(rest)
                break
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:  # KafkaTimeoutError: still in flight; acknowledged or held back later
            if self.metrics is not None:
                self.metrics.output_error(OUTPUT)
            self._failures.failed(f"{type(exc).__name__}: {exc}")
            raise DeadLetterError(f"dead letters not acknowledged by {self.topic!r} within {timeout}s") from exc
        with self._lock:  # the callbacks of the last batch may still be running
            self._lock.wait_for(lambda: self._inflight == 0, 1.0)
        if self._held:
            raise DeadLetterError(f"{len(self._held)} dead letter(s) not acknowledged by {self.topic!r}")

    def close(self, timeout: float = 5.0) -> None:
        if self._held:
            log.error("%d dead letter(s) not delivered to %r at shutdown; the checkpoint does not cover their "
                      "records, which are read and dead-lettered again after a restart", len(self._held), self.topic)
        try:
            self._producer.close(timeout=timeout)
        except Exception as exc:
            log.warning("error closing dead-letter producer: %s", exc)

    def __enter__(self) -> DeadLetterProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
