"""The Kafka sources (both clients) and DeadLetterProducer against a real (tansu) broker."""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest

from driftmon.config import KafkaConfig
from driftmon.outputs.deadletter import DeadLetterProducer
from driftmon.source.base import Record, values_of
from driftmon.source.kafka import (
    RECONNECT_BACKOFF_MAX_MS,
    consumer_kwargs,
    missing_codecs,
    next_offsets,
    warn_missing_codecs,
)
from driftmon.source.partitions import group_poll
from driftmon.testing.embedded import EmbeddedBroker, create_topics
from driftmon.util.secrets import redact_kwargs
from tests.conftest import consume, kafka_config, make_source, produce, unique_name

pytestmark = pytest.mark.kafka


def _coords(records):
    return sorted((r.topic, r.partition, r.offset, r.value) for r in records)


def _drain(source, seconds: float = 1.0) -> list[Record]:
    """Poll a little longer to prove nothing unexpected is still coming."""
    out: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.extend(source.poll(100))
    return out


def test_poll_returns_every_record_with_topic_partition_offset_and_bytes(kafka_broker, fresh_topic):
    t1, t2 = fresh_topic(partitions=3), fresh_topic(partitions=1)
    expected = []
    for p in range(3):
        values = [f'{{"p": {p}, "i": {i}}}'.encode() for i in range(4)]
        produce(kafka_broker.bootstrap, t1, values, partition=p)
        expected += [(t1, p, i, v) for i, v in enumerate(values)]
    produce(kafka_broker.bootstrap, t2, [b"\x00\xffraw"], partition=0)
    expected.append((t2, 0, 0, b"\x00\xffraw"))

    with make_source(kafka_config(kafka_broker.bootstrap), [t1, t2]) as src:
        got = consume(src, len(expected))
        got += _drain(src, 0.5)
        assert src.assignment() == {(t1, 0), (t1, 1), (t1, 2), (t2, 0)}

    assert _coords(got) == sorted(expected)
    r = got[0]
    assert isinstance(r, Record) and r.key is None and r.headers == []
    assert isinstance(r.timestamp_ms, int) and r.timestamp_ms > 1_500_000_000_000
    assert next_offsets(got) == {(t1, 0): 4, (t1, 1): 4, (t1, 2): 4, (t2, 0): 1}



@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec_producers_use_is_read(kafka_broker, fresh_topic, codec):
    """Producers compress their batches (``compression.type`` of the Java client and librdkafka):
    a default install reads every codec Kafka has, with either client, headers included."""
    topic = fresh_topic(partitions=1)
    values = [b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 97)) for i in range(400)]
    produce(kafka_broker.bootstrap, topic, values, partition=0, headers=[("traceparent", b"00-ab-01")],
            compression=codec)
    with make_source(kafka_config(kafka_broker.bootstrap), [topic]) as src:
        got = consume(src, len(values))
    assert [r.value for r in got] == values
    assert [r.offset for r in got] == list(range(len(values)))
    assert all(list(r.headers) == [("traceparent", b"00-ab-01")] for r in got)


def test_schema_registry_framed_json_is_read_as_json_and_dead_letters_keep_the_frame(kafka_broker, fresh_topic):
    """Confluent's JSON Schema serializer puts a 0 byte and a 4-byte schema id before each
    document. Through a real broker, with either client, the values the pipelines decode
    are the documents; the records (what a dead letter carries) keep their original bytes."""
    topic = fresh_topic(partitions=1)
    docs = [b'{"ts": %d, "c": "a"}' % (1_700_000_000 + i) for i in range(300)]
    wire = [b"\x00" + (17 + i % 2).to_bytes(4, "big") + d if i % 3 else d for i, d in enumerate(docs)]
    produce(kafka_broker.bootstrap, topic, wire, partition=0)
    with make_source(kafka_config(kafka_broker.bootstrap), [topic]) as src:
        got = consume(src, len(wire))
    assert [r.value for r in got] == wire
    assert values_of(got) == docs
    ((_, _, recs, values, _),) = group_poll({(topic, 0): got})  # what the daemon hands the pipelines
    assert values == docs and [r.value for r in recs] == wire


@pytest.mark.one_client
def test_a_codec_kafka_python_cannot_decompress_is_named_at_start(monkeypatch, caplog):
    """Installed without its codec libraries, the kafka-python source says which topics it
    could not read, once, when it starts (rather than only a failed poll a second)."""
    from kafka import codec

    assert missing_codecs() == []  # driftmon's dependencies bring every codec
    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    assert missing_codecs() == ["lz4"]
    with caplog.at_level(logging.WARNING, logger="driftmon.source.kafka"):
        warn_missing_codecs()
    assert "cannot decompress lz4" in caplog.text

def test_commit_only_given_offsets_and_same_group_resumes_after_them(kafka_broker, fresh_topic):
    topic = fresh_topic(partitions=2)
    produce(kafka_broker.bootstrap, topic, [f"a{i}" for i in range(6)], partition=0)
    produce(kafka_broker.bootstrap, topic, [f"b{i}" for i in range(3)], partition=1)
    cfg = kafka_config(kafka_broker.bootstrap)

    with make_source(cfg, [topic]) as src:
        consume(src, 9)
        src.commit({})  # no-op
        src.commit({(topic, 0): 4})  # partition 1 deliberately left uncommitted

    with make_source(cfg, [topic]) as src:
        got = consume(src, 2 + 3)
        got += _drain(src, 0.5)
    assert _coords(got) == [
        (topic, 0, 4, b"a4"), (topic, 0, 5, b"a5"),
        (topic, 1, 0, b"b0"), (topic, 1, 1, b"b1"), (topic, 1, 2, b"b2"),
    ]  # fmt: skip


def test_seek_applies_restored_offsets_on_assignment_then_calls_on_assign(kafka_broker, fresh_topic):
    topic = fresh_topic(partitions=2)
    produce(kafka_broker.bootstrap, topic, [f"a{i}" for i in range(10)], partition=0)
    produce(kafka_broker.bootstrap, topic, [f"b{i}" for i in range(2)], partition=1)
    events = []

    def on_assign(partitions):
        events.append(("assign", partitions))
        src.commit({(topic, 1): 1})  # inside a rebalance callback (kafka-python: sent without blocking)

    src = make_source(kafka_config(kafka_broker.bootstrap), [topic], on_assign=on_assign)
    try:
        src.seek({(topic, 0): 7})  # before any assignment: kept until the group assigns it
        got = consume(src, 3)
        got += _drain(src, 1.0)
        assert events == [("assign", [(topic, 0), (topic, 1)])]
        # partition 0 starts at the restored 7; partition 1 at 0 or at the offset
        # committed in on_assign, depending on which one the fetcher saw first
        assert [r.offset for r in got if r.partition == 0] == [7, 8, 9]

        src.seek({(topic, 0): 2})  # already assigned: applied at once
        again = consume(src, 8)
        assert [(r.partition, r.offset) for r in again] == [(0, i) for i in range(2, 10)]
    finally:
        src.close()

    with make_source(kafka_config(kafka_broker.bootstrap, src.kafka.group_id), [topic]) as src2:
        got = consume(src2, 10 + 1)  # nothing committed for p0; p1 committed at 1 in on_assign
        got += _drain(src2, 0.5)
    assert sorted((r.partition, r.offset) for r in got) == [(0, i) for i in range(10)] + [(1, 1)]


def test_rebalance_revokes_after_a_commit_and_the_new_member_resumes_there(kafka_broker, fresh_topic):
    """A second member joins: the first is told before its partitions go (it commits what it
    counted there), the two split the partitions, and every record is read exactly once."""
    topic = fresh_topic(partitions=2)
    for p in (0, 1):
        produce(kafka_broker.bootstrap, topic, [f"{p}-{i}" for i in range(10)], partition=p)
    cfg = kafka_config(kafka_broker.bootstrap)
    calls: list[tuple[str, str, list]] = []
    got: dict[str, list] = {"a": [], "b": []}

    def on_revoke(partitions):
        calls.append(("a", "revoke", partitions))
        a.commit({tp: o for tp, o in next_offsets(got["a"]).items() if tp in partitions})

    a = make_source(cfg, [topic], on_revoke=on_revoke, on_assign=lambda ps: calls.append(("a", "assign", ps)))
    b = None
    try:
        got["a"] += consume(a, 20)
        assert a.assignment() == {(topic, 0), (topic, 1)}
        for p in (0, 1):
            produce(kafka_broker.bootstrap, topic, [f"{p}-{i}" for i in range(10, 15)], partition=p)
        b = make_source(cfg, [topic], on_assign=lambda ps: calls.append(("b", "assign", ps)))
        deadline = time.monotonic() + 45
        while not (len(a.assignment()) == 1 and len(b.assignment()) == 1
                   and len(got["a"]) + len(got["b"]) >= 30):
            assert time.monotonic() < deadline, (calls, len(got["a"]), len(got["b"]))
            got["a"] += a.poll(100)
            got["b"] += b.poll(100)
        got["a"] += _drain(a, 0.5)
        got["b"] += _drain(b, 0.5)
        assert a.assignment() | b.assignment() == {(topic, 0), (topic, 1)}
        b_final = b.assignment()
    finally:
        a.close()
        if b is not None:
            b.close()
    (moved,) = b_final
    told = [i for i, c in enumerate(calls) if c[:2] == ("a", "revoke") and moved in c[2]]
    assert told and told[0] < max(i for i, c in enumerate(calls) if c[:2] == ("b", "assign") and moved in c[2])
    keys = sorted((r.partition, r.offset) for r in got["a"] + got["b"])
    assert keys == [(p, i) for p in (0, 1) for i in range(15)]  # none lost, none read twice
    assert all(r.offset >= 10 for r in got["b"])  # the new member started at a's commits


def test_a_member_busy_between_polls_still_joins_the_group(kafka_broker, fresh_topic):
    """The group join finishes while the member is away from poll() (the daemon counting a
    batch).  kafka-python 3.0 threw such a finished join away and sent a new JoinGroup on
    the next poll, for ever; see keep_finished_joins."""
    topic = fresh_topic(partitions=2)
    produce(kafka_broker.bootstrap, topic, ["x"], partition=0)
    with make_source(kafka_config(kafka_broker.bootstrap), [topic]) as src:
        got = src.poll(100)  # starts the join; the broker holds a new group's JoinGroup ~3 s
        for _ in range(4):
            if src.assignment():
                break
            time.sleep(4)  # busy: the join completes meanwhile
            got += src.poll(100)
        assert src.assignment() == {(topic, 0), (topic, 1)}
        got += consume(src, 1 - len(got)) if not got else []
        assert [r.value for r in got] == [b"x"]


def test_lag_is_highwater_minus_position(kafka_broker, fresh_topic):
    topic = fresh_topic(partitions=1)
    produce(kafka_broker.bootstrap, topic, [f"{i}" for i in range(20)], partition=0)
    cfg = kafka_config(kafka_broker.bootstrap, max_poll_records=5)
    with make_source(cfg, [topic]) as src:
        assert src.lag() == {}  # nothing fetched yet: highwater unknown
        first = consume(src, 1)
        assert src.lag() == {(topic, 0): 20 - (first[-1].offset + 1)}
        consume(src, 20 - len(first))
        assert src.lag() == {(topic, 0): 0}
        produce(kafka_broker.bootstrap, topic, ["x", "y"], partition=0)
        consume(src, 2)
        assert src.lag() == {(topic, 0): 0}


def test_last_broker_contact_advances_while_idle_and_stops_when_broker_dies():
    with EmbeddedBroker() as broker:
        topic = unique_name("contact")
        create_topics(broker.bootstrap, [topic])
        produce(broker.bootstrap, topic, ["x"])
        src = make_source(kafka_config(broker.bootstrap), [topic])
        try:
            consume(src, 1)
            seen = src.last_broker_contact
            deadline = time.monotonic() + 15
            while src.last_broker_contact <= seen:  # idle topic: heartbeats keep it fresh
                assert time.monotonic() < deadline, "no broker contact while idle"
                src.poll(200)
            broker.kill()
            killed_at = time.monotonic()
            for _ in range(10):
                assert src.poll(200) == []
            assert src.last_broker_contact <= killed_at
        finally:
            src.close()


def test_dead_letter_keeps_bytes_and_key_and_adds_provenance_headers(kafka_broker, fresh_topic):
    dlq = fresh_topic(partitions=1)
    bad = Record("events", 3, 41, 0, b"k1", b"\xffnot json", [("trace", b"abc"), ("driftmon-reason", b"old")])
    cfg = kafka_config(kafka_broker.bootstrap)
    with DeadLetterProducer(cfg, dlq) as dl:
        dl.send(bad, "json: invalid start byte")
        dl.send(Record("events", 0, 7, 0, None, b"{}", []), "missing field ts")
        dl.flush(timeout=10)
        assert (dl.sent, dl.delivered, dl.failed) == (2, 2, 0)

    with make_source(cfg, [dlq]) as src:
        got = sorted(consume(src, 2), key=lambda r: r.offset)
    assert [(r.key, r.value) for r in got] == [(b"k1", b"\xffnot json"), (None, b"{}")]
    assert got[0].headers == [
        ("trace", b"abc"),
        ("driftmon-reason", b"json: invalid start byte"),
        ("driftmon-source-topic", b"events"),
        ("driftmon-source-partition", b"3"),
        ("driftmon-source-offset", b"41"),
    ]
    assert dict(got[1].headers)["driftmon-source-offset"] == b"7"


@pytest.mark.one_client
def test_every_kafka_setting_is_wired_and_secrets_are_redacted():
    cfg = KafkaConfig(
        bootstrap_servers=("b1:9093", "b2:9093"), group_id="g", client_id="c", auto_offset_reset="latest",
        max_poll_interval_ms=1, max_poll_records=2, poll_timeout_ms=3, session_timeout_ms=4,
        heartbeat_interval_ms=5, security_protocol="SASL_SSL", ssl_cafile="/ca.pem",
        ssl_certfile="/c.pem", ssl_keyfile="/k.pem", ssl_password="keypass",
        ssl_check_hostname=False, sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="alice", sasl_plain_password="hunter2",
    )  # fmt: skip
    kw = consumer_kwargs(cfg)
    assert kw == {
        "bootstrap_servers": ["b1:9093", "b2:9093"], "client_id": "c", "group_id": "g",
        "enable_auto_commit": False, "auto_offset_reset": "latest", "max_poll_interval_ms": 1,
        "max_poll_records": 2, "session_timeout_ms": 4, "heartbeat_interval_ms": 5,
        "security_protocol": "SASL_SSL", "ssl_check_hostname": False, "ssl_cafile": "/ca.pem",
        "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem", "ssl_password": "keypass",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "alice", "sasl_plain_password": "hunter2",
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS, "isolation_level": "read_committed",
    }  # fmt: skip
    assert consumer_kwargs(KafkaConfig(isolation_level="read_uncommitted"))["isolation_level"] == "read_uncommitted"
    shown = repr(redact_kwargs(kw))
    assert "hunter2" not in shown and "keypass" not in shown and "alice" in shown

    plain = consumer_kwargs(KafkaConfig(ssl_password="x", sasl_plain_password="y"))
    assert not {"ssl_password", "sasl_plain_password", "sasl_mechanism"} & plain.keys()
    with pytest.raises(ValueError, match="sasl_mechanism"):
        consumer_kwargs(KafkaConfig(security_protocol="SASL_PLAINTEXT"))


@pytest.mark.one_client
def test_every_kafka_setting_maps_to_librdkafka_and_secrets_are_redacted():
    from confluent_kafka import Consumer

    from driftmon.source.confluent import FETCH_QUEUE_BACKOFF_MS, STATS_INTERVAL_MS, librdkafka_config
    from driftmon.source.confluent import RECONNECT_BACKOFF_MAX_MS as RD_BACKOFF

    cfg = KafkaConfig(
        bootstrap_servers=("b1:9093", "b2:9093"), group_id="g", client_id="c", auto_offset_reset="latest",
        max_poll_interval_ms=6001, max_poll_records=2, poll_timeout_ms=3, session_timeout_ms=6000,
        heartbeat_interval_ms=5, security_protocol="SASL_SSL", ssl_cafile="/ca.pem",
        ssl_certfile="/c.pem", ssl_keyfile="/k.pem", ssl_password="keypass",
        ssl_check_hostname=False, sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="alice", sasl_plain_password="hunter2", client="confluent-kafka",
    )  # fmt: skip
    conf = librdkafka_config(cfg)
    assert conf == {
        "bootstrap.servers": "b1:9093,b2:9093", "client.id": "c", "group.id": "g",
        "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "latest",
        "max.poll.interval.ms": 6001, "session.timeout.ms": 6000, "heartbeat.interval.ms": 5,
        "isolation.level": "read_committed", "security.protocol": "sasl_ssl", "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": "/ca.pem", "ssl.certificate.location": "/c.pem", "ssl.key.location": "/k.pem",
        "ssl.key.password": "keypass", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
        "sasl.password": "hunter2", "reconnect.backoff.max.ms": RD_BACKOFF, "log_level": 4,
        "statistics.interval.ms": STATS_INTERVAL_MS, "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
    }  # fmt: skip
    shown = repr(redact_kwargs(conf))
    assert "hunter2" not in shown and "keypass" not in shown and "alice" in shown
    # librdkafka knows every name (it refuses unknown ones at construction; no TLS files needed here)
    sasl = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_plain_username="u",
                       sasl_plain_password="p", session_timeout_ms=6000, client="confluent-kafka")
    Consumer(librdkafka_config(sasl)).close()
    Consumer(librdkafka_config(dataclasses.replace(sasl, isolation_level="read_uncommitted"))).close()
    plain = librdkafka_config(KafkaConfig(ssl_password="x", sasl_plain_password="y"))
    assert not {"ssl.key.password", "sasl.password", "sasl.mechanism"} & plain.keys()
