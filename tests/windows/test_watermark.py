"""Per-partition watermarks: a partition read ahead (backlog catch-up) must not
make another partition's events late; an idle partition stops holding windows open."""

import numpy as np

from driftmon.config import WindowConfig
from driftmon.decode.prepare import CodedBatch
from driftmon.summaries.bins import CategoricalSpec
from driftmon.summaries.fixed import FixedSummarizer
from driftmon.windows import EventTimeWindows

CFG = WindowConfig(size=60.0, slide=60.0, allowed_lateness=0.0, idle_timeout=30.0)


def _windows() -> EventTimeWindows:
    return EventTimeWindows(CFG, [FixedSummarizer(CategoricalSpec(("a",)))], 5, False)


def _feed(w, ts, part, now=None):
    ts = np.asarray(ts, dtype=np.float64)
    batch = CodedBatch(ts, None, [np.zeros(ts.size, dtype=np.int64)])
    return w.add(batch, np.asarray(part, dtype=np.int64), now)


def test_partition_read_ahead_does_not_make_the_other_late():
    w = _windows()
    times = np.arange(0.0, 600.0, 1.0)
    closed_a, late_a = _feed(w, times, np.zeros(times.size))  # partition 0 caught up first
    # partition 1 has not been seen: it has no say yet, so partition 0 alone closes windows
    assert [c.index for c in closed_a] == list(range(9))
    w2 = _windows()
    both = np.concatenate([times, times])
    part = np.concatenate([np.zeros(times.size), np.ones(times.size)])
    _feed(w2, [0.5], [1])  # partition 1 is known (assigned and delivering) before the backlog
    closed, late = _feed(w2, both, part)
    assert not late.any()
    assert [c.n for c in closed] == [121] + [120] * 8  # every event of both partitions counted
    # the same backlog seen as one partition (replay semantics) drops partition 1 as late
    w3 = _windows()
    closed3, late3 = _feed(w3, np.concatenate([[0.5], both]), np.zeros(both.size + 1))
    assert late3.sum() == 540


def test_idle_partition_stops_holding_the_watermark():
    w = _windows()
    _feed(w, [1.0, 2.0], [0, 1], now=0.0)
    closed, _ = _feed(w, np.arange(3.0, 300.0), np.zeros(297), now=10.0)
    assert closed == []  # partition 1 is at t=2 and not idle yet
    closed, _ = _feed(w, [300.0], [0], now=45.0)  # partition 1 silent for 45 s > idle_timeout
    assert [c.index for c in closed] == [0, 1, 2, 3, 4]


def test_partition_watermarks_survive_snapshot_restore():
    w = _windows()
    _feed(w, [1.0, 200.0], [0, 1])
    snap = w.snapshot()
    r = _windows()
    r.restore(snap)
    a, la = _feed(w, [100.0, 250.0], [0, 0])
    b, lb = _feed(r, [100.0, 250.0], [0, 0])
    assert [(c.index, c.n) for c in a] == [(c.index, c.n) for c in b]
    assert la.tolist() == lb.tolist() == [False, False]


def test_a_closed_window_never_reopens():
    """Partition 0 closes windows before partition 1 has delivered anything; partition 1's
    events for those windows are late, never a second close of the same window."""
    w = _windows()
    closed_a, _ = _feed(w, np.arange(0.0, 130.0, 5.0), np.zeros(26))
    closed_b, late_b = _feed(w, np.arange(0.0, 130.0, 5.0), np.ones(26))
    assert [c.index for c in closed_a] == [0, 1]
    assert closed_b == [] and late_b.sum() == 24
    assert [c.index for c in w.flush()] == [2]


def test_an_assigned_partition_holds_the_watermark_until_it_delivers_or_idles():
    """A broker may serve one whole partition before the next: partitions the
    consumer was assigned hold windows open until they deliver (or go idle)."""
    w = _windows()
    w.register([0, 1], now=0.0)
    closed, _ = _feed(w, np.arange(0.0, 300.0), np.zeros(300), now=1.0)
    assert closed == []  # partition 1 is assigned but has not delivered
    closed, late = _feed(w, np.arange(0.0, 300.0), np.ones(300), now=2.0)
    assert not late.any() and [c.n for c in closed] == [120] * 4
    w.register([2], now=3.0)
    assert _feed(w, [400.0, 401.0], [0, 1], now=4.0)[0] == []  # 2 holds [240, 300)
    assert [c.index for c in _feed(w, [402.0], [0], now=40.0)[0]] == [4]  # 2 idle now (5 had no events)
    w.forget([1])
    assert 1 not in w.part_max
