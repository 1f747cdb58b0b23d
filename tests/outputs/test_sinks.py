"""Results sinks: a torn last line is cut on reopen; a full disk, an oversized row or a broker
that does not acknowledge never crash the process and never lose a row silently."""

import time

import orjson
import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from driftmon.detect.result import MAX_LABEL_CHARS, DriftResult
from driftmon.outputs.metrics import Metrics
from driftmon.outputs.sinks import JsonlSink, KafkaResultsSink, SinkError
from driftmon.testing.embedded import EmbeddedBroker, create_topics
from tests.conftest import kafka_config, unique_name
from tests.fslimits import run_limited, temp_files
from tests.outputs.test_metrics import samples


def test_torn_last_line_is_cut_when_the_sink_reopens(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": 3, "tor')
    JsonlSink(str(path)).close()
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


def test_whole_file_and_missing_file_are_left_alone(tmp_path):
    path = tmp_path / "results.jsonl"
    JsonlSink(str(path)).close()
    assert path.read_bytes() == b""
    path.write_bytes(b'{"a": 1}\n')
    JsonlSink(str(path)).close()
    assert path.read_bytes() == b'{"a": 1}\n'
    only_torn = tmp_path / "torn.jsonl"
    only_torn.write_bytes(b'{"x"')
    JsonlSink(str(only_torn)).close()
    assert only_torn.read_bytes() == b""


# ---------------------------------------------------------------------------------------------
# Failures: a full disk, an oversized row, a broker that does not acknowledge
# ---------------------------------------------------------------------------------------------

def row(i: int, bins: tuple[str, ...] = ("a", "__other__", "__missing__")) -> DriftResult:
    return DriftResult(stream="s", feature="f", segment=None, window_start=60.0 * i, window_end=60.0 * (i + 1),
                       metric="kl", unit="nats", divergence=0.01, p_value=0.5, n_current=10, n_reference=10,
                       state="ok", transition="none", bins=bins, counts=tuple(range(len(bins))))


def sample(m: Metrics, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples(m).items() if n == name and set(labels.items()) <= lab)


def test_jsonl_sink_on_a_full_disk_holds_rows_and_postpones_then_writes_each_once(tmp_path):
    """write() past RLIMIT_FSIZE neither raises nor tears a line: the rows stay in memory,
    sync() raises SinkError (the daemon postpones its checkpoint) and counts the error;
    once space is back the next sync writes every row once, in order."""
    path = tmp_path / "results.jsonl"
    got = run_limited(f"""
        from driftmon.outputs.metrics import Metrics
        from driftmon.outputs.sinks import FLUSH_BYTES, JsonlSink, SinkError
        from tests.outputs.test_sinks import row, sample
        m = Metrics()
        sink = JsonlSink({str(path)!r}, m)
        out = {{"sync_errors": 0}}
        for i in range(0, 200, 20):
            sink.write([row(j) for j in range(i, i + 20)])  # never raises
            try:
                sink.sync()
            except SinkError:
                out["sync_errors"] += 1
            with open({str(path)!r}, "rb") as fh:
                data = fh.read()
            assert data == b"" or data.endswith(b"\\n"), data[-50:]  # no torn line, ever
        out["size_while_full"] = len(data)
        out["errors"] = sample(m, "driftmon_output_errors_total", output="jsonl")
        lift()
        sink.write([row(200)])
        sink.sync()
        sink.close()
        out["dropped"] = sample(m, "driftmon_output_dropped_total")
        print(json.dumps(out))
        """, limit=3000)
    assert got["sync_errors"] >= 8 and got["errors"] >= got["sync_errors"]
    assert got["size_while_full"] <= 3000 and got["dropped"] == 0
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["window_start"] for line in lines] == [row(i).to_dict()["window_start"]
                                                                      for i in range(201)]
    assert temp_files(tmp_path) == []


@pytest.mark.kafka
def test_kafka_results_sink_drops_an_oversized_row_counted_and_keeps_running(kafka_broker, fresh_topic):
    """A row over max_request_size used to raise MessageSizeTooLargeError out of write() and
    kill the daemon: now it is dropped, counted by reason, and the rows around it arrive."""
    topic = fresh_topic()
    m = Metrics()
    sink = KafkaResultsSink(kafka_config(kafka_broker.bootstrap), topic, m)
    huge = row(1, bins=tuple(f"{i:05d}" + "x" * 400 for i in range(5000)))  # labels are capped, 5000 of them are not
    assert max(map(len, huge.bins)) == MAX_LABEL_CHARS
    try:
        sink.write([row(0), huge, row(2)])
        sink.sync()
    finally:
        sink.close()
    assert sample(m, "driftmon_output_dropped_total", output="kafka_topic", reason="too_large") == 1
    assert sample(m, "driftmon_output_errors_total") == 0
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=2000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        starts = [orjson.loads(msg.value)["window_start"] for msg in consumer]
    finally:
        consumer.close()
    assert starts == [row(0).to_dict()["window_start"], row(2).to_dict()["window_start"]]


@pytest.mark.kafka
def test_kafka_results_sink_holds_rows_while_the_broker_is_down_then_delivers_them():
    """Broker gone: write() returns at once, sync() raises SinkError (checkpoint postponed) and
    counts it; broker back: the next sync delivers every row."""
    with EmbeddedBroker() as broker:
        topic = unique_name("results")
        create_topics(broker.bootstrap, [topic])
        m = Metrics()
        sink = KafkaResultsSink(kafka_config(broker.bootstrap), topic, m)
        try:
            sink.write([row(0)])
            sink.sync()
            broker.stop()
            t0 = time.monotonic()
            sink.write([row(1), row(2)])
            with pytest.raises(SinkError):
                sink.sync()
            assert time.monotonic() - t0 < 30
            assert sample(m, "driftmon_output_errors_total", output="kafka_topic") >= 1
            broker.start()
            create_topics(broker.bootstrap, [topic])  # memory storage: the topic went with the broker
            deadline = time.monotonic() + 60
            while True:
                try:
                    sink.sync()
                    break
                except SinkError:
                    assert time.monotonic() < deadline, "rows never acknowledged after the broker came back"
        finally:
            sink.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                                 consumer_timeout_ms=2000)
        try:  # every partition: the restarted broker (memory storage) may have auto-created the topic anew
            consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})])
            consumer.seek_to_beginning()
            starts = {orjson.loads(msg.value)["window_start"] for msg in consumer}
        finally:
            consumer.close()
        assert {row(1).to_dict()["window_start"], row(2).to_dict()["window_start"]} <= starts
        assert sample(m, "driftmon_output_dropped_total") == 0
