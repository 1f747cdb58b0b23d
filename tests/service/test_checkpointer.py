"""The checkpointer's order: every participant durable (any may veto), then state +
offsets written, then the changed offsets of assigned partitions committed."""

from __future__ import annotations

from driftmon.outputs.fanout import Participant
from driftmon.service.checkpointer import Checkpointer


class Recorder:
    def __init__(self, fail_save: bool = False):
        self.calls: list[str] = []
        self.fail_save = fail_save
        self.errors: list[str] = []

    # store
    def save(self, streams, offsets):
        self.calls.append(f"save {sorted(offsets.items())}")
        if self.fail_save:
            raise OSError(28, "No space left on device")

    # metrics
    def output_error(self, output):
        self.errors.append(output)

    def checkpoint_done(self):
        self.calls.append("done")

    # source
    def assignment(self):
        return {("t", 0), ("t", 1)}

    def commit(self, offsets):
        self.calls.append(f"commit {sorted(offsets.items())}")


def participant(rec: Recorder, name: str, fail: bool = False, counted_as: str | None = None) -> Participant:
    def sync():
        rec.calls.append(f"sync {name}")
        if fail:
            raise RuntimeError(f"{name} down")
    return Participant(f"{name} not durable", sync, counted_as)


def test_participants_then_state_then_commit_of_changed_assigned_offsets():
    rec = Recorder()
    cp = Checkpointer(rec, rec)
    offsets = {("t", 0): 5, ("t", 1): 7, ("gone", 0): 3}
    assert cp.checkpoint([participant(rec, "a"), participant(rec, "b")], lambda: {"s": {}}, offsets, rec)
    assert rec.calls == ["sync a", "sync b", "save [(('gone', 0), 3), (('t', 0), 5), (('t', 1), 7)]", "done",
                         "commit [(('t', 0), 5), (('t', 1), 7)]"]
    rec.calls.clear()
    assert cp.checkpoint([], lambda: {}, {**offsets, ("t", 1): 9}, rec)
    assert rec.calls[-1] == "commit [(('t', 1), 9)]"  # only what changed since the last commit


def test_a_veto_postpones_everything_but_every_participant_is_tried():
    rec = Recorder()
    cp = Checkpointer(rec, rec)
    parts = [participant(rec, "dlq", fail=True), participant(rec, "sink"), participant(rec, "alerts", True, "outbox")]
    assert not cp.checkpoint(parts, lambda: {}, {("t", 0): 1}, rec)
    assert rec.calls == ["sync dlq", "sync sink", "sync alerts"]  # no save, no commit
    assert rec.errors == ["outbox"]  # only the participant that does not count its own failures


def test_an_unwritable_checkpoint_is_counted_and_nothing_is_committed():
    rec = Recorder(fail_save=True)
    cp = Checkpointer(rec, rec)
    assert not cp.checkpoint([participant(rec, "a")], lambda: {}, {("t", 0): 1}, rec)
    assert rec.calls == ["sync a", "save [(('t', 0), 1)]"] and rec.errors == ["checkpoint"]
