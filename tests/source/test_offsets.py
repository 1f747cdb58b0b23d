"""OffsetGuard's decisions, one per case, on an in-memory view of the partitions' logs.

The tansu stall (beyond the log end, no records) is proven end to end with the
real daemon in tests/e2e/test_offset_range.py.  The cases here are the ones a
tansu broker cannot produce: Apache Kafka's own OFFSET_OUT_OF_RANGE reset
(records arrive below the state's offset), retention deleting records before
they were read (a gap whose log start is past the state's offset), a gap from
compaction or transaction markers (not an error), and records delivered
again (never counted twice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import pytest

from driftmon.source.kafka import Record
from driftmon.source.offsets import OffsetGuard
from driftmon.vocabulary import OFFSET_BEFORE_START, OFFSET_BEYOND_END

TP = ("events", 0)


class Logs:
    """Log start/end per partition and the consumer's position, as KafkaSource reports them."""

    def __init__(self, start: int, end: int, position: int | None = None) -> None:
        self.start, self.end, self.position = start, end, position
        self.seeks: list[dict] = []
        self.list_offsets_calls = 0
        self.fail_list_offsets = False

    def highwater(self, partition):
        return self.end

    def beyond_log_end(self):
        if self.position is not None and self.position > self.end:
            return {TP: (self.position, self.end)}
        return {}

    def log_starts(self, partitions: Iterable):
        self.list_offsets_calls += 1
        if self.fail_list_offsets:
            raise TimeoutError("ListOffsets timed out")
        return {p: self.start for p in partitions}

    def seek(self, offsets: Mapping):
        self.seeks.append(dict(offsets))
        self.position = offsets[TP]


def records(first: int, n: int) -> list[Record]:
    return [Record(TP[0], TP[1], o, 0, None, b"{}", []) for o in range(first, first + n)]


def guard(offsets: dict, logs: Logs | None, policy: str = "earliest") -> tuple[OffsetGuard, list]:
    seen: list = []
    g = OffsetGuard(offsets, policy, lambda t, p, d: seen.append((t, p, d)))
    g.source = logs
    return g, seen


@pytest.mark.parametrize("policy, target", [("earliest", 5), ("latest", 111)])
def test_a_stall_past_the_log_end_moves_by_the_policy_once(policy, target, caplog):
    offsets = {TP: 3000}
    logs = Logs(start=5, end=111, position=3000)
    g, seen = guard(offsets, logs, policy)
    with caplog.at_level(logging.WARNING, "driftmon.source.offsets"):
        g.tick()
        g.tick()  # resolved: not reported again
    assert seen == [("events", 0, OFFSET_BEYOND_END)]
    assert logs.seeks == [{TP: target}] and offsets[TP] == target
    assert "events[0] next offset 3000 is beyond the log end 111" in caplog.text
    assert f"resuming at offset {target}" in caplog.text
    batch = {TP: records(target, 3)}
    assert g.admit(batch) is batch and seen == [("events", 0, OFFSET_BEYOND_END)]  # what follows is in order


def test_a_policy_other_than_earliest_or_latest_reports_the_stall_once_and_leaves_it():
    offsets = {TP: 3000}
    logs = Logs(start=0, end=111, position=3000)
    g, seen = guard(offsets, logs, "none")
    g.tick()
    g.tick()
    assert seen == [("events", 0, OFFSET_BEYOND_END)] and logs.seeks == [] and offsets[TP] == 3000


def test_a_stall_waits_while_the_log_start_is_unknown():
    offsets = {TP: 3000}
    logs = Logs(start=0, end=111, position=3000)
    logs.fail_list_offsets = True
    g, seen = guard(offsets, logs)
    g.tick()
    assert seen == [] and logs.seeks == []
    logs.fail_list_offsets = False
    g.tick()
    assert seen == [("events", 0, OFFSET_BEYOND_END)] and logs.seeks == [{TP: 0}]


def test_records_below_the_state_offset_after_the_log_was_replaced_are_new_and_counted():
    """Apache Kafka: OFFSET_OUT_OF_RANGE, kafka-python reset the position to the new log's start."""
    offsets = {TP: 3000}
    g, seen = guard(offsets, Logs(start=0, end=111))
    batch = {TP: records(0, 50)}
    assert g.admit(batch) is batch  # all counted
    assert seen == [("events", 0, OFFSET_BEYOND_END)]


def test_records_delivered_again_are_not_counted_twice(caplog):
    offsets = {TP: 3000}
    g, seen = guard(offsets, Logs(start=0, end=5000))  # the log still reaches past the state's offset
    batch = {TP: records(2990, 20), ("other", 0): records(0, 3)}
    with caplog.at_level(logging.WARNING, "driftmon.source.offsets"):
        admitted = g.admit(batch)
    assert [r.offset for r in admitted[TP]] == list(range(3000, 3010))
    assert admitted[("other", 0)] is batch[("other", 0)]
    assert seen == [] and "10 record(s) at offsets 2990..2999 were delivered again" in caplog.text
    assert [r.offset for r in g.admit({TP: records(2990, 5)})[TP]] == []  # wholly counted before


def test_a_gap_past_the_log_start_is_records_deleted_before_they_were_read(caplog):
    offsets = {TP: 100}
    logs = Logs(start=400, end=900)
    g, seen = guard(offsets, logs)
    batch = {TP: records(400, 10)}
    assert g.admit(batch) is batch  # counted; checked against the log start on the next tick
    assert seen == []
    with caplog.at_level(logging.WARNING, "driftmon.source.offsets"):
        g.tick()
    assert seen == [("events", 0, OFFSET_BEFORE_START)]
    assert "events[0] next offset 100 is below the log start 400: 300 record(s) were deleted" in caplog.text
    g.tick()
    assert seen == [("events", 0, OFFSET_BEFORE_START)] and logs.list_offsets_calls == 1


def test_a_gap_inside_the_log_is_compaction_or_transaction_markers_not_an_error():
    offsets = {TP: 100}
    logs = Logs(start=0, end=900)
    g, seen = guard(offsets, logs)
    g.admit({TP: records(101, 10)})  # a transaction marker at 100
    g.tick()
    assert seen == [] and logs.seeks == []


def test_a_gap_is_checked_again_when_the_log_start_was_unavailable():
    offsets = {TP: 100}
    logs = Logs(start=400, end=900)
    logs.fail_list_offsets = True
    g, seen = guard(offsets, logs)
    g.admit({TP: records(400, 1)})
    g.tick()
    assert seen == []
    logs.fail_list_offsets = False
    g.tick()
    assert seen == [("events", 0, OFFSET_BEFORE_START)]


def test_partitions_the_state_has_no_offset_for_are_not_judged():
    g, seen = guard({}, Logs(start=0, end=10))
    batch = {TP: records(7, 3)}
    assert g.admit(batch) is batch
    g.tick()
    assert seen == []
