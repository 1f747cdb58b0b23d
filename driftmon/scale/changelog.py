"""Per-partition stage state in a compacted Kafka topic (a Kafka Streams changelog).

Key ``["map" | "reduce", topic, partition]`` (JSON); value
``{"v": 1, "config": <fingerprint>, "offset": <next offset of that partition>,
"state": ...}`` (standard-library JSON: state holds ``-inf`` watermarks).  A
stage writes the state of every partition it owns and flushes it *before* it
commits those partitions' offsets, so whoever is assigned a partition next
(after a crash, a scale-up or a rolling deploy) restores the state and the
offset it covers from here, not from a disk left behind with the old pod.
Offset-commit metadata is not used (some brokers drop it).

Reading: a group-less consumer holds every changelog partition and keeps the
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
import time
import uuid
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from driftmon.config import KafkaConfig
from driftmon.source.kafka import client_kwargs

log = logging.getLogger("driftmon.scale.changelog")
FORMAT = 1
FLUSH_TIMEOUT = 30.0


def acknowledge(producer: Any, futures: list[Any], timeout: float = FLUSH_TIMEOUT) -> None:
    """Flush ``producer`` and wait for each of ``futures`` (its sends); raises the first failure."""
    producer.flush(timeout=timeout)
    for f in futures:
        f.get(timeout=timeout)


class ChangelogError(OSError):
    """The changelog could not be written: the checkpoint is postponed (OSError: see Checkpointer)."""


def changelog_key(stage: str, topic: str, partition: int) -> bytes:
    return json.dumps([stage, topic, partition]).encode()


class Changelog:
    def __init__(self, kafka: KafkaConfig, topic: str, fingerprint: str, quiet: float):
        self.topic = topic
        self.fingerprint = fingerprint
        self.quiet = quiet
        kw = {**client_kwargs(kafka), "client_id": f"{kafka.client_id}-changelog", "acks": "all", "linger_ms": 5,
              "max_in_flight_requests_per_connection": 1, "retries": 10, "max_request_size": 16 * 1024 * 1024}
        if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
            kw["enable_idempotence"] = False
        self.producer = KafkaProducer(**kw)
        self.reader = KafkaConsumer(**{**client_kwargs(kafka), "client_id": f"{kafka.client_id}-changelog-reader"},
                                    enable_auto_commit=False, group_id=None, auto_offset_reset="earliest",
                                    fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
        self._assigned = False
        self._tps: list[TopicPartition] = []
        self._sync_key = json.dumps(["sync", f"{kafka.client_id}-{uuid.uuid4().hex[:12]}"]).encode()
        self.latest: dict[bytes, dict[str, Any]] = {}
        self._futures: list[Any] = []
        self.skipped = 0  # values written by another config (fingerprint) or unreadable

    def _assign(self) -> None:
        deadline = time.monotonic() + 30
        parts = self.reader.partitions_for_topic(self.topic)
        while not parts:
            if time.monotonic() > deadline:
                raise ChangelogError(f"changelog topic {self.topic!r} not found (create it, compacted)")
            time.sleep(0.2)
            parts = self.reader.partitions_for_topic(self.topic)
        tps = self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.reader.assign(tps)
        self.reader.seek_to_beginning(*tps)
        self._assigned = True

    def catch_up(self) -> int:
        """Read everything written before now (see the module docstring); returns the records read."""
        if not self._assigned:
            self._assign()
        token = uuid.uuid4().hex.encode()
        for tp in self._tps:
            self.producer.send(self.topic, key=self._sync_key, value=token, partition=tp.partition)
        self.producer.flush(timeout=FLUSH_TIMEOUT)
        waiting = {tp.partition for tp in self._tps}
        n = 0
        last = time.monotonic()
        while waiting and time.monotonic() - last < max(self.quiet, 5.0):
            for tp, recs in self.reader.poll(timeout_ms=100).items():
                for r in recs:
                    n += 1
                    if r.key == self._sync_key:
                        if r.value == token:
                            waiting.discard(tp.partition)
                        continue
                    self._read(r.key, r.value)
                last = time.monotonic()
        if waiting:
            log.warning("changelog %s: sync marker not read back from partition(s) %s within %.1fs of quiet",
                        self.topic, sorted(waiting), max(self.quiet, 5.0))
        for tp in self._tps:
            self.producer.send(self.topic, key=self._sync_key, value=None, partition=tp.partition)
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
        try:
            future = self.producer.send(self.topic, key=key, value=json.dumps(doc).encode())
        except Exception as exc:  # e.g. over max_request_size: postpone the checkpoint, stay up
            raise ChangelogError(f"changelog {self.topic!r}: {stage} state of {topic}[{partition}] not written "
                                 f"({type(exc).__name__}: {exc})") from exc
        self._futures.append(future)
        self.latest[key] = doc
        return True

    def flush(self) -> None:
        """Wait until every write is acknowledged; raise :class:`ChangelogError` otherwise."""
        futures, self._futures = self._futures, []
        try:
            acknowledge(self.producer, futures)
        except Exception as exc:
            raise ChangelogError(f"changelog {self.topic!r} not acknowledged: {exc}") from exc

    def close(self) -> None:
        for client in (self.producer, self.reader):
            try:
                client.close(timeout=5) if client is self.producer else client.close()
            except Exception as exc:  # closing at shutdown: nothing left to protect
                log.debug("closing changelog client: %s", exc)
