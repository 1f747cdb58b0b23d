"""Shared pytest fixtures and helpers.

Kafka tests run against a real embedded tansu broker (``driftmon.testing.embedded``),
never a mock.  Tansu facts to keep in mind when writing one:

* a consumer-group join takes ~``session_timeout_ms / 2``: use
  :func:`kafka_config` (5 s session, 1 s heartbeat) and keep polling;
* ``end_offsets()`` is wrong on tansu: use ``consumer.highwater(tp)``;
* the session broker uses memory storage; a test that restarts or kills a
  broker must start its own (see ``tests/testing/test_embedded.py``).

Helpers are plain functions; import them with ``from tests.conftest import produce``.
Add new fixtures in a section of their own below.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import pytest
from kafka import KafkaProducer

from driftmon.config import KafkaConfig
from driftmon.testing.embedded import EmbeddedBroker, create_topics

# ---------------------------------------------------------------------------------------------
# Kafka clients: every test marked ``kafka`` runs once per client (``kafka.client``)
# ---------------------------------------------------------------------------------------------

KAFKA_CLIENTS = ("kafka-python", "confluent-kafka")
_CLIENT = ["kafka-python"]  # the client of the running test (a test runs on one thread)


def current_client() -> str:
    """The ``kafka.client`` of the running test: every config a Kafka test builds uses it
    (:func:`kafka_config` does; YAML documents add ``"client": current_client()``)."""
    return _CLIENT[0]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test, two backends (as getsentry/arroyo does): a test marked ``kafka`` runs with
    kafka-python and with confluent-kafka, unless marked ``one_client`` (it tests the broker
    or a tool, not driftmon's client)."""
    if ("kafka_client" in metafunc.fixturenames and metafunc.definition.get_closest_marker("kafka")
            and not metafunc.definition.get_closest_marker("one_client")):
        metafunc.parametrize("kafka_client", KAFKA_CLIENTS, indirect=True)


@pytest.fixture(autouse=True)
def kafka_client(request: pytest.FixtureRequest) -> Iterator[str]:
    """The Kafka client this test runs with (see :func:`pytest_generate_tests`)."""
    name = getattr(request, "param", "kafka-python")
    _CLIENT[0] = name
    yield name
    _CLIENT[0] = "kafka-python"


# ---------------------------------------------------------------------------------------------
# Kafka helpers
# ---------------------------------------------------------------------------------------------


def unique_name(prefix: str = "t") -> str:
    """A Kafka-safe, collision-free topic or group name."""
    prefix = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-")[:60] or "t"
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kafka_config(bootstrap: str, group: str | None = None, **overrides: object) -> KafkaConfig:
    """A :class:`KafkaConfig` tuned for tansu: 5 s session, 1 s heartbeats, short polls."""
    settings: dict[str, object] = {
        "bootstrap_servers": (bootstrap,),
        "group_id": group or unique_name("group"),
        "client_id": "driftmon-test",
        "session_timeout_ms": 5000,
        "heartbeat_interval_ms": 1000,
        "poll_timeout_ms": 200,
        "client": current_client(),
    }
    settings.update(overrides)
    return KafkaConfig(**settings)  # type: ignore[arg-type]


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | str],
    partition: int | None = None,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    compression: str | None = None,
) -> int:
    """Produce ``values`` (str is UTF-8 encoded) and wait until all are acknowledged.

    ``partition=None`` lets the partitioner choose; ``compression``: the producer's
    ``compression_type`` (gzip, snappy, lz4, zstd).  Not idempotent: tansu
    forgets producer ids on restart.  Returns the number of records sent.
    """
    kw: dict[str, object] = {"bootstrap_servers": bootstrap, "linger_ms": 5, "acks": 1,
                             "compression_type": compression}
    if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
        kw["enable_idempotence"] = False
    producer = KafkaProducer(**kw)
    n = 0
    try:
        futures = []
        for v in values:
            data = v.encode() if isinstance(v, str) else v
            futures.append(producer.send(topic, value=data, key=key, partition=partition, headers=headers))
            n += 1
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=10)  # raise if any record was not acknowledged
    finally:
        producer.close(timeout=5)
    return n


def make_source(cfg: KafkaConfig, topics: list[str], **kw: object):
    """A source of ``cfg.client`` (driftmon.source.clients.make_source)."""
    from driftmon.source.clients import make_source as make

    return make(cfg, topics, **kw)  # type: ignore[arg-type]


def consume(source, n: int, timeout: float = 30.0) -> list:
    """Poll a :class:`driftmon.source.kafka.KafkaSource` until ``n`` records arrived
    (fails the test after ``timeout`` seconds; includes the group join)."""
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"got {len(out)} of {n} records within {timeout}s")
        out.extend(source.poll(200))
    return out


# ---------------------------------------------------------------------------------------------
# Kafka fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """One memory-storage tansu broker for the whole session (do not restart it)."""
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def fresh_topic(kafka_broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory: ``fresh_topic(partitions=1)`` creates a uniquely named topic
    on :func:`kafka_broker` and returns its name."""

    def make(partitions: int = 1, prefix: str | None = None) -> str:
        name = unique_name(prefix or request.node.name)
        create_topics(kafka_broker.bootstrap, [name], partitions=partitions)
        return name

    return make
