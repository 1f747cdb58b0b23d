"""driftmon.outputs.failures: the bounded memory of held-back records and the error classes."""

from __future__ import annotations

import orjson
from kafka import errors

from driftmon.outputs.failures import RETRY, HeldBack, classify
from tests.fslimits import run_limited
from tests.outputs.test_sinks import row


def test_held_back_records_are_bounded_oldest_evicted_first():
    held: HeldBack[bytes] = HeldBack(len, max_bytes=10)
    assert held.add(b"aaaa") == [] and held.add(b"bbbb") == []
    assert held.add(b"cccc") == [b"aaaa"]  # 12 > 10: the oldest goes
    assert held.add(b"x" * 50) == [b"bbbb", b"cccc"]  # never the one just added
    assert held.take() == [b"x" * 50] and not held and held.nbytes == 0
    held.add(b"new1")
    assert held.put_back([b"o1", b"o2"]) == [] and held.take() == [b"o1", b"o2", b"new1"]


def test_errors_that_may_pass_are_retried_the_others_dropped_by_reason():
    assert classify(errors.KafkaTimeoutError()) == RETRY
    assert classify(errors.NotLeaderForPartitionError()) == RETRY
    assert classify(OSError(28, "No space left on device")) == RETRY
    assert classify(errors.MessageSizeTooLargeError()) == "too_large"
    assert classify(errors.TopicAuthorizationFailedError()) == "rejected"
    assert classify(ValueError("invalid topic")) == "rejected"


def test_a_results_file_failing_past_the_memory_bound_drops_the_oldest_rows_counted(tmp_path):
    """Disk full for long enough: rows beyond 64 MiB (here 20 kB) are given up, counted as
    buffer_full, and the newest are written once space returns."""
    path = tmp_path / "results.jsonl"
    got = run_limited(f"""
        from driftmon.outputs.metrics import Metrics
        from driftmon.outputs.sinks import JsonlSink, SinkError
        from tests.outputs.test_sinks import row, sample
        m = Metrics()
        sink = JsonlSink({str(path)!r}, m)
        sink._held.max_bytes = 20_000
        for i in range(100):
            sink.write([row(i)])
            try:
                sink.sync()
            except SinkError:
                pass
        lift()
        sink.sync()
        sink.close()
        print(json.dumps({{"dropped": sample(m, "driftmon_output_dropped_total", output="jsonl",
                                              reason="buffer_full")}}))
        """, limit=100)
    starts = [orjson.loads(line)["window_start"] for line in path.read_bytes().splitlines()]
    assert got["dropped"] > 0 and got["dropped"] + len(starts) == 100
    assert starts == [row(i).to_dict()["window_start"] for i in range(100 - len(starts), 100)]  # the newest
