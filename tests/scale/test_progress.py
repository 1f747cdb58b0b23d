"""driftmon.scale.progress: the per-partition bookkeeping both mappers share and the reducers'
decision which windows are due."""

from __future__ import annotations

from driftmon.scale.progress import NEVER, SourceProgress, due_windows, ready_through

A, B, C = ("t", 0), ("t", 1), ("t", 2)


def test_ready_through_is_the_active_partitions_minimum_kept_once_reached():
    assert ready_through([3, 5, 4], [False, False, False], NEVER) == 3
    assert ready_through([3, 5, 4], [True, False, False], NEVER) == 4  # an idle partition does not hold back
    assert ready_through([3, 5, 4], [True, True, True], NEVER) == 3  # none active: all of them
    assert ready_through([3, 5, 4], [False, False, False], 6) == 6  # progress kept once reached
    assert ready_through([], [], NEVER) == NEVER


def test_due_windows_emits_complete_windows_and_times_out_held_ones_with_what_they_miss():
    through = {A: 2, B: 1, C: 0}
    idle = {C}.__contains__
    waiting: dict[int, float] = {}
    ready = ready_through([through[s] for s in (A, B, C)], [idle(s) for s in (A, B, C)], NEVER)
    assert ready == 1
    due = list(due_windows([0, 1, 2, 3], [A, B, C], through, idle, ready, waiting, now=10.0, timeout=5.0))
    assert due == [(0, [], 0), (1, [], 1)]  # window 1 passes idle C (through 0)
    assert waiting == {2: 10.0, 3: 10.0}  # held back from now on
    assert list(due_windows([2, 3], [A, B, C], through, idle, ready, waiting, now=14.0, timeout=5.0)) == []
    due = list(due_windows([2, 3], [A, B, C], through, idle, ready, waiting, now=15.0, timeout=5.0))
    assert due == [(2, [B], 1), (3, [A, B], 1)]
    assert waiting == {}


def test_due_windows_stops_where_only_idle_partitions_hold_back():
    through = {A: 0, B: 0}
    waiting: dict[int, float] = {}
    assert list(due_windows([0, 1], [A, B], through, lambda s: True, 0, waiting, 100.0, 1.0)) == [(0, [], 0)]
    assert waiting == {}


def test_source_progress_marks_offsets_idleness_and_checkpoints():
    pr = SourceProgress(idle_timeout=30.0)
    pr.polled("t", {0: (10, 19), 1: (5, 5)})
    pr.polled("t", {0: (20, 29)})
    assert pr.peek_range(A) == (10, 29)
    assert pr.take_range(A) == (10, 29) and pr.take_range(A) == (-1, 29)  # the next partials start afresh
    assert pr.advance(A, 3) and not pr.advance(A, 3) and pr.advance(A, 4)
    pr.delivered(A, 0.0)
    assert pr.quiet([A, B], 10.0) == []  # B's clock starts now
    assert pr.quiet([A, B], 31.0) == [A] and pr.is_idle(A) and pr.quiet([A, B], 31.0) == []
    assert pr.back(A, 5) and not pr.is_idle(A) and not pr.back(A, 5)
    snap = pr.snapshot(B)
    assert snap == {"first_offset": 5, "marked": None}
    pr.forget(B)
    assert pr.peek_range(B) == (-1, -1)
    pr.restore(B, snap)
    assert pr.peek_range(B) == (5, -1) and not pr.is_idle(B)
