"""Where a keyed scale-out record goes does not depend on ``kafka.client``: partials of one
series and changelog states of one key land on one partition whichever client wrote them
(kafka-python partitions by murmur2, librdkafka by crc32 unless told otherwise)."""

from __future__ import annotations

import ctypes
import os
import random

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Producer as RdProducer
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from driftmon.scale.changelog import Changelog
from driftmon.source.clients import key_partition, murmur2
from driftmon.testing.embedded import create_topics
from tests.conftest import kafka_config, unique_name

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed 32-bit)
JAVA_MURMUR2 = [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
                (b"a-little-bit-longer-string", -1486304829),
                (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107)]


@pytest.mark.parametrize("data, expected", JAVA_MURMUR2)
def test_murmur2_is_the_java_clients(data, expected):
    assert ctypes.c_int32(murmur2(data)).value == expected


def test_key_partition_is_kafka_pythons_default_partitioner():
    rnd = random.Random(7)
    for _ in range(2000):
        key = os.urandom(rnd.randrange(0, 40))
        n = rnd.randrange(1, 64)
        assert key_partition(key, n) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % n


def _read_all(bootstrap: str, topic: str, partitions: int, n: int) -> list[tuple[int, bytes | None, bytes | None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("reader"), "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[tuple[int, bytes | None, bytes | None]] = []
        for _ in range(100):
            out += [(m.partition(), m.key(), m.value()) for m in c.consume(1000, 0.2) if m.error() is None]
            if len(out) >= n:
                return out
        pytest.fail(f"read {len(out)} of {n} records")
    finally:
        c.close()


@pytest.mark.kafka
@pytest.mark.one_client  # uses both clients itself
def test_the_broker_puts_keys_where_key_partition_says_with_kafka_python_and_librdkafka_murmur2(kafka_broker):
    """The same function as the Java client, kafka-python's default and librdkafka's
    ``murmur2_random``: a replica computing it agrees with producers of any of those."""
    topic = unique_name("keyed")
    create_topics(kafka_broker.bootstrap, [topic], partitions=5)
    keys = [f"stream-{i}".encode() for i in range(40)]
    kp = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, enable_idempotence=False)
    rd = RdProducer({"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2_random",
                     "enable.idempotence": False})
    try:
        for k in keys:
            kp.send(topic, key=k, value=b"kafka-python")
            rd.produce(topic, key=k, value=b"librdkafka")
        kp.flush(timeout=30)
        assert rd.flush(30) == 0
    finally:
        kp.close(timeout=5)
    got = _read_all(kafka_broker.bootstrap, topic, 5, 2 * len(keys))
    assert len({p for p, _, _ in got}) > 1
    for p, k, _ in got:
        assert k is not None and p == key_partition(k, 5), (k, p)


@pytest.mark.kafka
@pytest.mark.one_client  # mixes both clients itself
def test_replicas_with_different_clients_write_a_key_to_one_changelog_partition(kafka_broker):
    topic = unique_name("changelog")
    create_topics(kafka_broker.bootstrap, [topic], partitions=4)
    py = Changelog(kafka_config(kafka_broker.bootstrap, client="kafka-python"), topic, "fp", quiet=0.5)
    rd = Changelog(kafka_config(kafka_broker.bootstrap, client="confluent-kafka"), topic, "fp", quiet=0.5)
    readers = []
    try:
        for i in range(3):  # a partition's state moves between replicas, back and forth
            for p in range(6):
                py.write("map", "events", p, 10 * i + 1, {"by": "kafka-python", "i": i})
            py.flush()
            for p in range(6):
                rd.write("map", "events", p, 10 * i + 2, {"by": "confluent-kafka", "i": i})
            rd.flush()
        for p in range(3):
            py.write("map", "events", p, 99, {"by": "kafka-python", "i": 3})
        py.flush()
        where: dict[bytes, set[int]] = {}
        for p, k, _ in _read_all(kafka_broker.bootstrap, topic, 4, 39):
            where.setdefault(k or b"", set()).add(p)
        assert len(where) == 6 and all(len(ps) == 1 for ps in where.values()), where
        assert len({p for ps in where.values() for p in ps}) > 1
        for client in ("kafka-python", "confluent-kafka"):
            reader = Changelog(kafka_config(kafka_broker.bootstrap, client=client), topic, "fp", quiet=0.5)
            readers.append(reader)
            reader.catch_up()
            for p in range(6):  # the last write of each key, whichever client wrote it
                last = (99, {"by": "kafka-python", "i": 3}) if p < 3 else (22, {"by": "confluent-kafka", "i": 2})
                assert reader.get("map", "events", p) == last, (client, p)
    finally:
        for c in (py, rd, *readers):
            c.close()
