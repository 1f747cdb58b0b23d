"""The registry of Kafka clients: ``kafka.client`` -> the module that implements it.

Each client is one module with the same five names:

* ``Source``: the consumer-group member (:class:`driftmon.source.base.Source`, plus
  the :class:`driftmon.source.offsets.LogView` calls and ``last_broker_contact``);
* ``Producer``: a :class:`Producer` (dead letters, the results topic and scale-out's
  partials and changelog are produced with the same client as the source);
* ``Reader``: a :class:`Reader` (a topic's partitions from their start, outside any
  group: scale-out's changelog);
* ``probe_cluster(kafka)``: bootstrap once from the cluster or raise;
* ``LIBRARY``: the pip distribution it needs.

Adding a client is one module and one line in :data:`CLIENTS`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol

from driftmon.config import KafkaConfig
from driftmon.vocabulary import CONFLUENT_KAFKA, KAFKA_PYTHON

# kafka.client -> (module, the importable package it needs, how to install it)
CLIENTS: dict[str, tuple[str, str, str]] = {
    KAFKA_PYTHON: ("driftmon.source.kafka", "kafka", "pip install kafka-python"),
    CONFLUENT_KAFKA: ("driftmon.source.confluent", "confluent_kafka", "pip install 'driftmon[fast]'"),
}

PartitionsCallback = Callable[[list[tuple[str, int]]], None]
DoneCallback = Callable[[BaseException | None], None]


class Producer(Protocol):
    """What the dead-letter producer and the results sink need from a client's producer."""

    max_request_size: int  # bytes: a record over this is refused locally (too_large)

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None, on_done: DoneCallback | None = None,
             partition: int | None = None) -> None:
        """Queue one record (to ``partition``, else where the client's partitioner puts it:
        the clients' defaults differ, see :func:`key_partition`); returns at once (at most
        ``max_block_ms`` for metadata).  Raises when refused locally; else ``on_done(None)``
        after the acknowledgement or ``on_done(exc)`` after a failure (on the client's
        thread, or inside send/flush)."""

    def partitions_for(self, topic: str) -> int:
        """How many partitions ``topic`` has (cluster metadata; 0: unknown or not there)."""

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued is acknowledged or failed; raises on timeout."""

    def close(self, timeout: float = 5.0) -> None: ...


class Reader(Protocol):
    """Every partition of a topic from its start, outside any consumer group (nothing committed)."""

    def partitions(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` ([]: unknown or not there)."""

    def assign_from_start(self, topic: str, partitions: list[int]) -> None: ...

    def poll(self, timeout_ms: int) -> list[tuple[int, bytes | None, bytes | None]]:
        """``(partition, key, value)`` of the records that arrived, in offset order per
        partition; empty when none came within ``timeout_ms``."""

    def close(self) -> None: ...


class ProduceTimeout(Exception):
    """Records still in flight after ``flush(timeout)`` (retriable)."""


def missing_client(name: str) -> str | None:
    """Why ``kafka.client: name`` cannot be used here, or None."""
    entry = CLIENTS.get(name)
    if entry is None:
        return f"expected one of {', '.join(CLIENTS)}, got {name!r}"
    _, package, install = entry
    if importlib.util.find_spec(package) is None:
        return f"{name} is not installed ({install})"
    return None


def client_module(kafka: KafkaConfig) -> ModuleType:
    """The module implementing ``kafka.client``."""
    missing = missing_client(kafka.client)
    if missing:
        raise RuntimeError(f"kafka.client: {missing}")
    return importlib.import_module(CLIENTS[kafka.client][0])


def make_source(kafka: KafkaConfig, topics: Sequence[str], on_assign: PartitionsCallback | None = None,
                on_revoke: PartitionsCallback | None = None) -> Any:
    """A consumer-group member reading ``topics`` with ``kafka.client``."""
    return client_module(kafka).Source(kafka, topics, on_assign=on_assign, on_revoke=on_revoke)


def make_producer(kafka: KafkaConfig, *, client_id: str, acks: str = "all", linger_ms: int = 20,
                  max_block_ms: int = 1000, retries: int | None = None, max_in_flight: int | None = None,
                  max_request_size: int | None = None) -> Producer:
    """A non-idempotent producer with ``kafka.client`` (tansu and other brokers may forget
    producer ids on restart; duplicates of dead letters and result rows are harmless).
    ``max_in_flight=1`` keeps each partition's records in the order sent, retries included;
    ``max_request_size`` (bytes) raises the local limit on a record (default 1 MiB)."""
    return client_module(kafka).Producer(kafka, client_id=client_id, acks=acks, linger_ms=linger_ms,
                                         max_block_ms=max_block_ms, retries=retries, max_in_flight=max_in_flight,
                                         max_request_size=max_request_size)


def make_reader(kafka: KafkaConfig, *, client_id: str, fetch_max_bytes: int = 64 * 1024 * 1024,
                max_partition_fetch_bytes: int = 16 * 1024 * 1024) -> Reader:
    """A group-less :class:`Reader` with ``kafka.client``."""
    return client_module(kafka).Reader(kafka, client_id=client_id, fetch_max_bytes=fetch_max_bytes,
                                       max_partition_fetch_bytes=max_partition_fetch_bytes)


@functools.lru_cache(maxsize=4096)
def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned 32 bits."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    n = len(data)
    h = (0x9747B28C ^ n) & mask
    for i in range(0, n - n % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = n % 4
    if tail:
        rest = data[n - tail:]
        if tail >= 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of a keyed record as the Java client's default partitioner, kafka-python's
    and librdkafka's ``murmur2_random`` choose it (``toPositive(murmur2(key)) % partitions``).
    librdkafka's *default* partitioner (``consistent_random``, crc32) chooses differently:
    a producer that needs every client to agree passes this as ``partition``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def probe_cluster(kafka: KafkaConfig) -> bool:
    """Bootstrap once from the cluster with ``kafka.client`` (raises when it does not answer)."""
    return bool(client_module(kafka).probe_cluster(kafka))
