"""Dead letters over the producer's size limit, refused for good, or not acknowledged,
against a real (tansu) broker: nothing vanishes without a count."""

from __future__ import annotations

import hashlib
import time

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from driftmon.outputs.deadletter import (
    MIN_VALUE_BYTES,
    ORIGINAL_SHA256,
    ORIGINAL_SIZE,
    TRUNCATED,
    DeadLetterError,
    DeadLetterProducer,
    make_letter,
)
from driftmon.outputs.metrics import Metrics
from driftmon.source.kafka import Record
from driftmon.testing.embedded import EmbeddedBroker, create_topics
from driftmon.testing.s3 import MotoS3
from tests.conftest import kafka_config, unique_name
from tests.outputs.test_metrics import samples

pytestmark = pytest.mark.kafka

MIB = 1 << 20


def sample(m: Metrics, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples(m).items() if n == name and set(labels.items()) <= lab)


def read_all(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=2000, fetch_max_bytes=64 * MIB, max_partition_fetch_bytes=64 * MIB)
    try:  # every partition: a broker restarted with memory storage may have auto-created the topic anew
        consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})])
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()


def test_a_10_mib_reject_arrives_as_a_marked_truncated_copy(kafka_broker, fresh_topic):
    """A 10 MiB reject used to be refused by the producer (MessageSizeTooLargeError), logged and
    gone.  Now its first bytes that fit arrive, with headers naming the original size and hash."""
    dlq = fresh_topic()
    value = bytes(range(256)) * (10 * MIB // 256)  # 10 MiB of not-JSON
    small = Record("events", 0, 8, 0, b"k2", b"{oops", [])
    big = Record("events", 0, 7, 0, b"k1", value, [("trace", b"t1")])
    m = Metrics()
    with DeadLetterProducer(kafka_config(kafka_broker.bootstrap), dlq, metrics=m) as dl:
        dl.send(big, "invalid_json")
        dl.send(small, "invalid_json")
        dl.flush(timeout=10)
        assert dl.pending == 0
    got = read_all(kafka_broker.bootstrap, dlq)
    assert [r.key for r in got] == [b"k1", b"k2"]
    first, second = got
    headers = dict(first.headers)
    assert MIB - 64 * 1024 < len(first.value) < MIB  # as much as fits into max_request_size (1 MiB)
    assert first.value == value[:len(first.value)]
    assert headers[TRUNCATED] == b"value"
    assert headers[ORIGINAL_SIZE] == str(len(value)).encode()
    assert headers[ORIGINAL_SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert headers["trace"] == b"t1" and headers["driftmon-reason"] == b"invalid_json"
    assert headers["driftmon-source-offset"] == b"7"
    assert second.value == b"{oops" and TRUNCATED not in dict(second.headers)  # small ones are untouched
    assert sample(m, "driftmon_dead_letters_total", outcome="truncated") == 1
    assert sample(m, "driftmon_dead_letters_total", outcome="delivered") == 1
    assert sample(m, "driftmon_output_dropped_total") == 0


def test_a_huge_key_and_headers_are_cut_too():
    headers = [(f"h{i}", b"v" * 4096) for i in range(300)]  # 1.2 MiB of original headers
    letter = make_letter(Record("events", 1, 2, 0, b"k" * (2 * MIB), b"x" * (2 * MIB), headers), "bad_type", MIB)
    assert letter.truncated and letter.size <= MIB
    assert dict(letter.headers)[TRUNCATED] == b"value,key,headers"
    assert letter.key == b"k" * MIN_VALUE_BYTES and len(letter.value or b"") > MIB // 2
    assert all(k.startswith("driftmon-") for k, _ in letter.headers)


def test_a_dead_letter_the_broker_can_never_take_is_dropped_counted_and_logged(kafka_broker, caplog):
    m = Metrics()
    with DeadLetterProducer(kafka_config(kafka_broker.bootstrap), "not a topic!", metrics=m) as dl:
        dl.send(Record("events", 0, 5, 0, None, b"x", []), "invalid_json")
        dl.flush(timeout=5)  # nothing retriable is outstanding: the checkpoint may go on
    assert sample(m, "driftmon_output_dropped_total", output="dead_letter", reason="rejected") == 1
    assert "dead letter for events[0]@5 dropped (rejected)" in caplog.text


def test_dead_letters_not_acknowledged_hold_the_checkpoint_until_the_broker_is_back():
    # S3-backed storage: the topic and the first dead letter survive the restart (with memory
    # storage a producer that reconnects before the topic is re-created loses its record).
    with MotoS3() as s3, EmbeddedBroker(storage=s3.storage, env=s3.env) as broker:
        dlq = unique_name("dlq")
        create_topics(broker.bootstrap, [dlq])
        m = Metrics()
        dl = DeadLetterProducer(kafka_config(broker.bootstrap), dlq, metrics=m)
        try:
            dl.send(Record("events", 0, 1, 0, None, b"first", []), "invalid_json")
            dl.flush(timeout=10)
            broker.stop()
            dl.send(Record("events", 0, 2, 0, None, b"second", []), "invalid_json")
            with pytest.raises(DeadLetterError):
                dl.flush(timeout=3)  # the daemon postpones its checkpoint
            assert sample(m, "driftmon_output_errors_total", output="dead_letter") >= 1
            broker.start()
            deadline = time.monotonic() + 60
            while True:
                try:
                    dl.flush(timeout=5)
                    break
                except DeadLetterError:
                    assert time.monotonic() < deadline, "the dead letter never arrived after the broker came back"
        finally:
            dl.close()
        assert b"second" in [r.value for r in read_all(broker.bootstrap, dlq)]
        assert sample(m, "driftmon_output_dropped_total") == 0
