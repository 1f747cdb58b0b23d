"""What an output does when a write or send fails: classify, hold back, log once.

Every output (results sinks, dead letters, webhook outbox, firing alerts,
checkpoint) follows one rule: a failure that may pass (disk full, I/O error,
broker not acknowledging) keeps the record and retries it at the next
checkpoint, and the daemon does not checkpoint past it, so a crash meanwhile
loses nothing (the record is computed again from the previous checkpoint); a
failure that cannot pass (a record over the producer's size limit, a
non-retriable broker error) gives the record up, counted by reason in
``driftmon_output_dropped_total`` and logged.  Nothing is dropped silently.

* :func:`classify` tells the two apart for Kafka producer errors;
* :class:`HeldBack` is the bounded memory of records waiting for a retry: past
  :data:`MAX_HELD_BYTES` per output the oldest are evicted and counted as
  ``buffer_full``, like the webhook outbox's ``alerts.outbox_max``;
* :class:`FailureLog` logs the first failure of a streak as an error, the
  repeats at debug level, and the recovery, so a full disk gives two log lines
  rather than one per record.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_HELD_BYTES = 64 << 20  # per output; results rows and dead letters are far smaller
RETRY = "retry"


def classify(exc: BaseException) -> str:
    """``"retry"`` for a failure that may pass, else the drop reason
    (:data:`driftmon.vocabulary.DROP_REASONS`)."""
    from kafka import errors

    rd = _classify_librdkafka(exc)
    if rd is not None:
        return rd
    if isinstance(exc, (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError)):
        return "too_large"
    if isinstance(exc, errors.KafkaError):
        return RETRY if exc.retriable else "rejected"
    if isinstance(exc, (TypeError, ValueError)):  # kafka-python's checks of the record itself
        return "rejected"
    return RETRY  # anything else (OSError, a closed connection): keep it and try again


# librdkafka error codes that no retry can fix (confluent-kafka): the record or the request is refused
_RD_TOO_LARGE = ("MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE")
_RD_REJECTED = ("INVALID_RECORD", "CORRUPT_MESSAGE", "TOPIC_EXCEPTION", "TOPIC_AUTHORIZATION_FAILED",
                "CLUSTER_AUTHORIZATION_FAILED", "INVALID_REQUIRED_ACKS", "UNSUPPORTED_VERSION", "_INVALID_ARG",
                "_UNKNOWN_TOPIC")


def _classify_librdkafka(exc: BaseException) -> str | None:
    """:func:`classify` for confluent-kafka's ``KafkaException`` (None for anything else).
    librdkafka marks few errors retriable (not even a delivery timeout), so what is not
    known to be permanent is retried."""
    import sys

    ck = sys.modules.get("confluent_kafka")
    if ck is None or not isinstance(exc, ck.KafkaException) or not exc.args:
        return None
    err = exc.args[0]
    name = err.name() if hasattr(err, "name") else ""
    if name in _RD_TOO_LARGE:
        return "too_large"
    if name in _RD_REJECTED or (hasattr(err, "fatal") and err.fatal()):
        return "rejected"
    return RETRY


class HeldBack(Generic[T]):
    """A thread-safe FIFO of items with a byte bound; :meth:`add` returns what it evicted."""

    def __init__(self, size_of: Callable[[T], int], max_bytes: int = MAX_HELD_BYTES) -> None:
        self._size_of = size_of
        self.max_bytes = max_bytes
        self._items: deque[T] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def add(self, item: T) -> list[T]:
        """Append ``item``; evict (and return) the oldest items while over the bound,
        never the one just added."""
        with self._lock:
            self._items.append(item)
            self._bytes += self._size_of(item)
            return self._evict()

    def take(self) -> list[T]:
        """Remove and return everything, oldest first."""
        with self._lock:
            items, self._items, self._bytes = list(self._items), deque(), 0
        return items

    def put_back(self, items: list[T]) -> list[T]:
        """Return ``items`` (taken earlier, oldest first) to the front; returns evictions."""
        with self._lock:
            self._items.extendleft(reversed(items))
            self._bytes += sum(map(self._size_of, items))
            return self._evict()

    def _evict(self) -> list[T]:
        evicted: list[T] = []
        while self._bytes > self.max_bytes and len(self._items) > 1:
            old = self._items.popleft()
            self._bytes -= self._size_of(old)
            evicted.append(old)
        return evicted


class FailureLog:
    """One error line when an output starts failing, one line when it recovers."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.log = logger
        self.what = what
        self.failing = False
        self._lock = threading.Lock()

    def failed(self, detail: str) -> None:
        with self._lock:
            first, self.failing = not self.failing, True
        if first:
            self.log.error("%s failing: %s; kept in memory and retried at each checkpoint, "
                           "which waits for it", self.what, detail)
        else:
            self.log.debug("%s still failing: %s", self.what, detail)

    def recovered(self, detail: str = "") -> None:
        with self._lock:
            was, self.failing = self.failing, False
        if was:
            self.log.warning("%s recovered%s", self.what, f": {detail}" if detail else "")
