"""Per-partition stage state in a compacted Kafka topic (a Kafka Streams changelog).

Key ``["map" | "reduce", topic, partition]`` (JSON); value
``{"v": 1, "config": <fingerprint>, "offset": <next offset of that partition>,
"state": ...}`` (standard-library JSON: state holds ``-inf`` watermarks).  A
stage writes the state of every partition it owns and flushes it *before* it
commits those partitions' offsets, so whoever is assigned a partition next
(after a crash, a scale-up or a rolling deploy) restores the state and the
offset it covers from here, not from a disk left behind with the old pod.
Offset-commit metadata is not used (some brokers drop it).

Reading: a group-less reader (:func:`~driftmon.source.clients.make_reader`) holds every changelog partition and keeps the
latest value per key.  :meth:`Changelog.catch_up` first writes a sync marker
(key ``["sync", <this reader>]``, a fresh id as value) to every changelog
partition and reads until it has read its own marker back from each, so it
has seen everything written before it started (a partition's reported end
offset is not trusted, and other replicas keep writing, so the topic never
goes quiet); then it deletes the marker (a tombstone).  ``quiet`` bounds the
wait for a marker that does not come back (then it reads until nothing new
arrives for ``quiet`` seconds).  Create the topic with ``cleanup.policy=compact``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from driftmon.config import KafkaConfig
from driftmon.source.clients import Producer, ProduceTimeout, key_partition, make_producer, make_reader

log = logging.getLogger("driftmon.scale.changelog")
FORMAT = 1
FLUSH_TIMEOUT = 30.0
MAX_RECORD = 16 * 1024 * 1024  # bytes: one partition's stage state (a reducer's windows in flight)


def scale_producer(kafka: KafkaConfig, client_id: str, linger_ms: int) -> Producer:
    """A producer for the partials or the changelog, with ``kafka.client``: one request in
    flight (a partition's records stay in the order sent, retries included), large records,
    and a send that waits for metadata or buffer space (kafka-python's default 60 s) rather
    than fail a batch half counted."""
    return make_producer(kafka, client_id=client_id, acks="all", linger_ms=linger_ms, retries=10,
                         max_block_ms=60_000, max_in_flight=1, max_request_size=MAX_RECORD)


class Acks:
    """The acknowledgements of what was sent through one producer since the last :meth:`check`
    (the delivery callbacks run on the client's thread or inside send/flush).  A record refused
    locally (too large) counts as a failed delivery with either client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending = 0
        self.failed: BaseException | None = None

    def _done(self, exc: BaseException | None) -> None:
        with self._lock:
            self.pending -= 1
            if exc is not None and self.failed is None:
                self.failed = exc

    def send(self, producer: Producer, topic: str, value: bytes | None, key: bytes | None = None,
             partition: int | None = None) -> None:
        with self._lock:
            self.pending += 1
        try:
            producer.send(topic, value, key=key, on_done=self._done, partition=partition)
        except Exception as exc:  # refused locally (librdkafka raises what kafka-python's future reports):
            self._done(exc)  # the next check fails, as after a failed delivery

    def check(self, producer: Producer, timeout: float = FLUSH_TIMEOUT, forget: bool = False) -> None:
        """Flush ``producer``; raise the first failure (kept for the next check unless ``forget``)
        or :class:`ProduceTimeout` while sends are unacknowledged."""
        producer.flush(timeout=timeout)
        with self._lock:
            failed, pending = self.failed, self.pending
            if forget:
                self.failed = None
        if failed is not None:
            raise failed
        if pending:
            raise ProduceTimeout(f"{pending} record(s) not acknowledged within {timeout}s")


class ChangelogError(OSError):
    """The changelog could not be written: the checkpoint is postponed (OSError: see Checkpointer)."""


def changelog_key(stage: str, topic: str, partition: int) -> bytes:
    return json.dumps([stage, topic, partition]).encode()


class Changelog:
    def __init__(self, kafka: KafkaConfig, topic: str, fingerprint: str, quiet: float):
        self.topic = topic
        self.fingerprint = fingerprint
        self.quiet = quiet
        self.producer = scale_producer(kafka, f"{kafka.client_id}-changelog", linger_ms=5)
        self.reader = make_reader(kafka, client_id=f"{kafka.client_id}-changelog-reader")
        self._partitions: list[int] | None = None
        self._sync_key = json.dumps(["sync", f"{kafka.client_id}-{uuid.uuid4().hex[:12]}"]).encode()
        self.latest: dict[bytes, dict[str, Any]] = {}
        self._acks = Acks()
        self._unacked: dict[bytes, dict[str, Any] | None] = {}  # key -> its value before the unflushed writes
        self.skipped = 0  # values written by another config (fingerprint) or unreadable

    def _assign(self) -> list[int]:
        deadline = time.monotonic() + 30
        parts = self.reader.partitions(self.topic)
        while not parts:
            if time.monotonic() > deadline:
                raise ChangelogError(f"changelog topic {self.topic!r} not found (create it, compacted)")
            time.sleep(0.2)
            parts = self.reader.partitions(self.topic)
        self.reader.assign_from_start(self.topic, parts)
        self._partitions = parts
        return parts

    def catch_up(self) -> int:
        """Read everything written before now (see the module docstring); returns the records read."""
        parts = self._partitions if self._partitions is not None else self._assign()
        token = uuid.uuid4().hex.encode()
        for p in parts:
            self.producer.send(self.topic, token, key=self._sync_key, partition=p)
        self.producer.flush(timeout=FLUSH_TIMEOUT)
        waiting = set(parts)
        n = 0
        last = time.monotonic()
        while waiting and time.monotonic() - last < max(self.quiet, 5.0):
            recs = self.reader.poll(100)
            for partition, key, value in recs:
                n += 1
                if key == self._sync_key:
                    if value == token:
                        waiting.discard(partition)
                    continue
                self._read(key, value)
            if recs:
                last = time.monotonic()
        if waiting:
            log.warning("changelog %s: sync marker not read back from partition(s) %s within %.1fs of quiet",
                        self.topic, sorted(waiting), max(self.quiet, 5.0))
        for p in parts:
            self.producer.send(self.topic, None, key=self._sync_key, partition=p)
        return n

    def _read(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or key.startswith(b'["sync"'):
            return
        if value is None:  # a tombstone
            self.latest.pop(key, None)
            return
        try:
            doc = json.loads(value)
            if doc.get("v") != FORMAT:
                raise ValueError(f"format {doc.get('v')!r}")
        except (ValueError, AttributeError) as exc:
            self.skipped += 1
            log.error("changelog %s: unreadable value for %s (%s); skipped", self.topic, key[:200], exc)
            return
        if doc.get("config") != self.fingerprint:
            self.skipped += 1
            log.error("changelog %s: state for %s was written for another stream/feature configuration; "
                      "that partition starts afresh from the group's committed offset", self.topic, key[:200])
            self.latest.pop(key, None)
            return
        self.latest[key] = doc

    def get(self, stage: str, topic: str, partition: int) -> tuple[int, Any] | None:
        """(next offset, state) last written for this stage and partition, or None."""
        doc = self.latest.get(changelog_key(stage, topic, partition))
        return None if doc is None else (int(doc["offset"]), doc["state"])

    def write(self, stage: str, topic: str, partition: int, offset: int, state: Any) -> bool:
        """Queue the state of a partition (False: the changelog already holds exactly this)."""
        key = changelog_key(stage, topic, partition)
        cur = self.latest.get(key)
        if cur is not None and cur["offset"] == offset and cur["state"] == state:
            return False
        doc = {"v": FORMAT, "config": self.fingerprint, "offset": offset, "state": state}
        parts = self._partitions if self._partitions is not None else self._assign()
        # the partition of the key computed here, not by the client's partitioner (librdkafka's
        # default differs from kafka-python's): replicas with either client write a key to one place
        self._acks.send(self.producer, self.topic, json.dumps(doc).encode(), key=key,
                        partition=key_partition(key, len(parts)))
        self._unacked.setdefault(key, cur)
        self.latest[key] = doc
        return True

    def flush(self) -> None:
        """Wait until every write is acknowledged; raise :class:`ChangelogError` otherwise (and
        forget those writes, so that the next checkpoint writes the same states again)."""
        unacked, self._unacked = self._unacked, {}
        try:
            self._acks.check(self.producer, forget=True)
        except Exception as exc:
            for key, before in unacked.items():
                if before is None:
                    self.latest.pop(key, None)
                else:
                    self.latest[key] = before
            raise ChangelogError(f"changelog {self.topic!r} not acknowledged: {exc}") from exc

    def close(self) -> None:
        for client in (self.producer, self.reader):
            try:
                client.close()
            except Exception as exc:  # closing at shutdown: nothing left to protect
                log.debug("closing changelog client: %s", exc)
