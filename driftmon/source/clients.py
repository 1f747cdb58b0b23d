"""The registry of Kafka clients: ``kafka.client`` -> the module that implements it.

Each client is one module with the same four names:

* ``Source``: the consumer-group member (:class:`driftmon.source.base.Source`, plus
  the :class:`driftmon.source.offsets.LogView` calls and ``last_broker_contact``);
* ``Producer``: a :class:`Producer` (dead letters and the results topic are produced
  with the same client as the source);
* ``probe_cluster(kafka)``: bootstrap once from the cluster or raise;
* ``LIBRARY``: the pip distribution it needs.

Adding a client is one module and one line in :data:`CLIENTS`.
"""

from __future__ import annotations

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
             headers: list[tuple[str, bytes]] | None = None, on_done: DoneCallback | None = None) -> None:
        """Queue one record; returns at once (at most ``max_block_ms`` for metadata).  Raises
        when refused locally; else ``on_done(None)`` after the acknowledgement or
        ``on_done(exc)`` after a failure (on the client's thread, or inside send/flush)."""

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued is acknowledged or failed; raises on timeout."""

    def close(self, timeout: float = 5.0) -> None: ...


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
                  max_block_ms: int = 1000, retries: int | None = None) -> Producer:
    """A non-idempotent producer with ``kafka.client`` (tansu and other brokers may forget
    producer ids on restart; duplicates of dead letters and result rows are harmless)."""
    return client_module(kafka).Producer(kafka, client_id=client_id, acks=acks, linger_ms=linger_ms,
                                         max_block_ms=max_block_ms, retries=retries)


def probe_cluster(kafka: KafkaConfig) -> bool:
    """Bootstrap once from the cluster with ``kafka.client`` (raises when it does not answer)."""
    return bool(client_module(kafka).probe_cluster(kafka))
