"""The changelog topic on the real broker: latest state per (stage, partition), read back to
a marker of the reader's own even while another replica keeps writing."""

from __future__ import annotations

import threading
import time

import pytest

from driftmon.scale.changelog import Changelog, ChangelogError
from driftmon.testing.embedded import create_topics
from tests.conftest import kafka_config, unique_name

pytestmark = pytest.mark.kafka  # with each kafka.client (conftest)


def test_latest_state_per_key_survives_into_a_new_reader_while_another_writer_keeps_writing(kafka_broker):
    topic = unique_name("changelog")
    create_topics(kafka_broker.bootstrap, [topic], partitions=2)
    kafka = kafka_config(kafka_broker.bootstrap)
    a = Changelog(kafka, topic, "fp", quiet=0.5)
    busy = Changelog(kafka, topic, "fp", quiet=0.5)
    other = Changelog(kafka, topic, "another-config", quiet=0.5)
    stop = threading.Event()
    t: threading.Thread | None = None
    try:
        for i in range(5):
            a.write("map", "events", 0, 100 + i, {"n": i, "w": -float("inf")})
            a.write("reduce", "partials", 1, 7 + i, {"r": [i]})
        assert not a.write("map", "events", 0, 104, {"n": 4, "w": -float("inf")})  # unchanged: not rewritten
        a.flush()
        other.write("map", "events", 5, 1, {"x": 1})  # written by another config: skipped by readers
        other.flush()

        def keep_writing():
            i = 0
            while not stop.is_set():  # the topic never goes quiet
                busy.write("map", "events", 3, i, {"i": i})
                busy.flush()
                i += 1
                time.sleep(0.02)

        t = threading.Thread(target=keep_writing)
        t.start()
        time.sleep(0.5)
        b = Changelog(kafka, topic, "fp", quiet=0.5)
        try:
            started = time.monotonic()
            b.catch_up()
            assert time.monotonic() - started < 10  # ended at its marker, not at a quiet that never comes
            assert b.get("map", "events", 0) == (104, {"n": 4, "w": -float("inf")})
            assert b.get("reduce", "partials", 1) == (11, {"r": [4]})
            assert b.get("map", "events", 5) is None and b.skipped >= 1
            assert b.get("map", "events", 3) is not None
            assert b.get("map", "events", 9) is None
        finally:
            b.close()
    finally:
        stop.set()
        if t is not None:
            t.join(timeout=10)
        for c in (a, busy, other):
            c.close()


def test_a_state_not_acknowledged_fails_the_flush_and_is_written_again_at_the_next_checkpoint(kafka_broker):
    """A state over the producer's 16 MiB limit: refused locally (librdkafka raises in
    produce, kafka-python fails the future), a ChangelogError either way (the checkpoint is
    postponed, the daemon runs on); the changelog does not count it as written."""
    topic = unique_name("changelog")
    create_topics(kafka_broker.bootstrap, [topic], partitions=1)
    c = Changelog(kafka_config(kafka_broker.bootstrap), topic, "fp", quiet=0.5)
    try:
        c.catch_up()
        assert c.write("map", "events", 0, 10, {"n": 1})
        c.flush()
        big = {"n": 2, "blob": "x" * (17 * 1024 * 1024)}
        assert c.write("map", "events", 0, 20, big)
        with pytest.raises(ChangelogError):
            c.flush()
        assert c.get("map", "events", 0) == (10, {"n": 1})
        assert c.write("map", "events", 0, 20, big)  # not skipped as "already written"
        with pytest.raises(ChangelogError):
            c.flush()
        assert c.write("map", "events", 0, 30, {"n": 3})
        c.flush()  # a failure is not held against later writes
        reader = Changelog(kafka_config(kafka_broker.bootstrap), topic, "fp", quiet=0.5)
        try:
            reader.catch_up()
            assert reader.get("map", "events", 0) == (30, {"n": 3})
        finally:
            reader.close()
    finally:
        c.close()
