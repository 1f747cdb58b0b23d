"""Windows: tumbling/hopping membership, watermark and lateness, close-once,
batch-cut and order invariance, count windows per segment lane, the segment
cap, and snapshot/restore mid-stream.  Most tests count one feature over three
declared bins, so a window's summary is a plain count vector."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.config import WindowConfig, parse_config
from driftmon.decode.prepare import CodedBatch, SegmentKeys
from driftmon.pipeline import StreamPipeline
from driftmon.summaries.bins import CategoricalSpec
from driftmon.summaries.fixed import FixedSummarizer
from driftmon.windows import OTHER_SEGMENT, CountWindows, EventTimeWindows, SegmentCap, make_windows

SETTINGS = settings(max_examples=60, deadline=None)
NOW = 2_000_000_000.0  # wall clock for decoders: all test events are in its past


BINS3 = FixedSummarizer(CategoricalSpec(("b0",)))  # bins b0, __other__, __missing__: three bins


def event_windows(size: float, slide: float | None = None, lateness: float = 0.0, max_segments: int = 10,
                  segmented: bool = False):
    return EventTimeWindows(WindowConfig(size, slide or size, lateness), [BINS3], max_segments, segmented)


def coded(ts, bins=None, keys=None) -> CodedBatch:
    """One batch: float times, bin ids of the one feature (default 0), segment keys (default: none)."""
    ts = np.asarray(ts, dtype=np.float64)
    b = np.zeros(ts.size, dtype=np.int64) if bins is None else np.asarray(bins, dtype=np.int64)
    return CodedBatch(ts, None if keys is None else SegmentKeys.of(list(keys)), [b])


def feed(win, ts, bins=None, keys=None):
    return win.add(coded(ts, bins, keys))


def counts(w) -> tuple[int, ...]:
    return tuple(w.summaries[0].counts.tolist())


def summary(closed):
    return [(w.index, w.start, w.end, w.segment, w.n, counts(w)) for w in closed]


# ----------------------------------------------------------------------------- membership


def test_tumbling_membership_and_close_on_watermark():
    win = event_windows(10.0)
    closed, late = feed(win, [1.0, 5.0, 9.999], bins=[0, 1, 2])
    assert closed == [] and not late.any()
    closed, late = feed(win, [10.0, 15.0], bins=[1, 1])  # watermark 15 passes the end of [0, 10)
    assert summary(closed) == [(0, 0.0, 10.0, None, 3, (1, 1, 1))]
    closed, late = feed(win, [19.0, 20.0], bins=[2, 0])  # 20 closes [10, 20); the end is exclusive
    assert summary(closed) == [(1, 10.0, 20.0, None, 3, (0, 2, 1))]
    assert summary(win.flush()) == [(2, 20.0, 30.0, None, 1, (1, 0, 0))]
    assert win.flush() == []


def test_hopping_event_belongs_to_size_over_slide_windows():
    win = event_windows(30.0, 10.0)
    feed(win, [25.0])
    closed = win.flush()
    assert [(w.index, w.start, w.end, w.n) for w in closed] == [(0, 0.0, 30.0, 1), (1, 10.0, 40.0, 1), (2, 20.0, 50.0, 1)]


@SETTINGS
@given(
    st.lists(st.floats(0.0, 500.0), min_size=1, max_size=150),
    st.sampled_from([(10.0, 10.0), (30.0, 10.0), (20.0, 5.0), (7.5, 2.5)]),
)
def test_in_order_events_are_counted_in_exactly_the_windows_that_contain_them(times, shape):
    size, slide = shape
    ts = np.sort(np.asarray(times)) + 1000.0
    win = event_windows(size, slide)
    closed, late = feed(win, ts)
    closed += win.flush()
    assert not late.any()
    for w in closed:
        assert w.end - w.start == size and w.start == w.index * slide
        assert w.n == int(np.count_nonzero((ts >= w.start) & (ts < w.end)))
    # and every window that contains an event was emitted
    expected = {int(k) - j for k in np.floor(ts / slide) for j in range(int(round(size / slide)))}
    assert {w.index for w in closed} == expected


# ----------------------------------------------------------------------------- lateness


def test_late_events_are_counted_and_never_added_to_closed_windows():
    win = event_windows(10.0)
    closed, late = feed(win, [1.0, 12.0, 5.0], bins=[0, 1, 2])  # 5 arrives after the watermark passed 10
    assert late.tolist() == [False, False, True]
    assert summary(closed) == [(0, 0.0, 10.0, None, 1, (1, 0, 0))]
    closed, late = feed(win, [9.0, 3.0], bins=[2, 2])  # still late in a later batch; window 0 is not reopened
    assert late.tolist() == [True, True] and closed == []
    assert summary(win.flush()) == [(1, 10.0, 20.0, None, 1, (0, 1, 0))]


def test_allowed_lateness_keeps_a_window_open():
    win = event_windows(10.0, lateness=5.0)
    closed, late = feed(win, [1.0, 12.0, 8.0])  # watermark 12 - 5 = 7 < 10: window 0 still open
    assert closed == [] and not late.any()
    closed, late = feed(win, [15.0, 9.0])  # watermark 10 closes it; 9 now arrives late
    assert late.tolist() == [False, True]
    assert [(w.index, w.n) for w in closed] == [(0, 2)]


def test_hopping_partially_late_event_goes_only_to_open_windows():
    win = event_windows(20.0, 10.0)
    feed(win, [25.0])
    closed, _ = feed(win, [31.0])  # closes window 1 = [10, 30)
    assert [w.index for w in closed] == [1]
    closed, late = feed(win, [28.0])  # belongs to windows 1 (closed) and 2 (open): not late
    assert late.tolist() == [False] and closed == []
    by_index = {w.index: w.n for w in win.flush()}
    assert by_index == {2: 3, 3: 1}


def test_late_event_after_gap_and_far_past_event_first():
    win = event_windows(60.0)
    closed, late = feed(win, [100.0, 1_000_000.0, 101.0, 999_999.0])
    assert late.tolist() == [False, False, True, False]
    assert [(w.index, w.n) for w in closed] == [(1, 1)]
    assert [(w.index, w.n) for w in win.flush()] == [(16666, 2)]


# ----------------------------------------------------------------------------- close once, batch invariance


def _cuts(draw_sizes, n):
    out, i = [], 0
    for s in draw_sizes:
        if i >= n:
            break
        out.append((i, min(n, i + s)))
        i += s
    if i < n:
        out.append((i, n))
    return out


def _run_windows(win_factory, ts, bins, seg_keys, cuts, max_segments=50):
    win = win_factory(max_segments, seg_keys is not None)
    closed, late = [], []
    for a, b in cuts:
        c, lt = win.add(coded(ts[a:b], bins[a:b], None if seg_keys is None else seg_keys[a:b]))
        closed += c
        late.append(lt)
    closed += win.flush()
    return closed, np.concatenate(late) if late else np.zeros(0, bool)


event_streams = st.integers(1, 200).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.0, 300.0), min_size=n, max_size=n),  # jittered, partly out of order
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.sampled_from(["ios", "android", "web"]), min_size=n, max_size=n),
        st.lists(st.integers(1, 40), max_size=30),
        st.lists(st.integers(1, 40), max_size=30),
    )
)


def _by_key(closed):
    out = defaultdict(list)
    for w in closed:
        out[w.segment].append((w.index, w.start, w.end, w.n, counts(w)))
    return dict(out)


@SETTINGS
@given(event_streams, st.sampled_from([(10.0, 10.0, 0.0), (20.0, 10.0, 0.0), (10.0, 10.0, 15.0), (30.0, 10.0, 4.0)]))
def test_event_time_results_do_not_depend_on_batch_cuts(stream, shape):
    times, bins, segs, cuts_a, cuts_b = stream
    size, slide, lateness = shape
    n = len(times)
    ts = 1000.0 + np.asarray(times) + np.arange(n) * 0.5  # drifting forward with jitter: some late events
    bins = np.asarray(bins, dtype=np.int64)

    def factory(max_segments, segmented):
        return EventTimeWindows(WindowConfig(size, slide, lateness), [BINS3], max_segments, segmented)

    ref_closed, ref_late = _run_windows(factory, ts, bins, segs, [(0, n)])
    for cuts in (_cuts(cuts_a, n), _cuts(cuts_b, n), [(i, i + 1) for i in range(n)]):
        closed, late = _run_windows(factory, ts, bins, segs, cuts)
        assert late.tolist() == ref_late.tolist()
        assert _by_key(closed) == _by_key(ref_closed)
        # each (window, segment) closes exactly once
        assert len({(w.index, w.segment) for w in closed}) == len(closed)
    # conservation (tumbling only): every event is counted once or is late
    if size == slide:
        overall = sum(w.n for w in ref_closed if w.segment is None)
        assert overall + int(ref_late.sum()) == n


@SETTINGS
@given(event_streams, st.integers(1, 25))
def test_count_windows_do_not_depend_on_batch_cuts(stream, count):
    times, bins, segs, cuts_a, _ = stream
    n = len(times)
    ts, bins = 1000.0 + np.asarray(times), np.asarray(bins, dtype=np.int64)

    def factory(max_segments, segmented):
        return CountWindows(WindowConfig(None, None, 0.0, count), [BINS3], max_segments, segmented)

    ref, ref_late = _run_windows(factory, ts, bins, segs, [(0, n)])
    closed, late = _run_windows(factory, ts, bins, segs, _cuts(cuts_a, n))
    assert not ref_late.any() and not late.any()
    assert _by_key(closed) == _by_key(ref)
    per_lane = _by_key(ref)
    # lanes: the whole stream and one per segment; every window but the last of a lane is full
    assert sum(w[3] for w in per_lane[None]) == n
    for seg, windows in per_lane.items():
        expected = n if seg is None else segs.count(seg)
        assert sum(w[3] for w in windows) == expected
        assert all(w[3] == count for w in windows[:-1]) and 0 < windows[-1][3] <= count
        assert [w[0] for w in windows] == list(range(len(windows)))


# ----------------------------------------------------------------------------- count windows, segments


def test_count_windows_per_segment_lane():
    win = CountWindows(WindowConfig(None, None, 0.0, 2), [BINS3], 10, True)
    keys = ["a", "b", "a", "a", "b", "a", "a", "b", "b"]
    ts = np.arange(len(keys), dtype=float) + 100.0
    closed, late = feed(win, ts, keys=keys)
    closed += win.flush()
    lanes = Counter(w.segment for w in closed)
    assert lanes == {None: 5, "a": 3, "b": 2}
    a = [w for w in closed if w.segment == "a"]
    assert [(w.index, w.n, w.start, w.end) for w in a] == [(0, 2, 100.0, 102.0), (1, 2, 103.0, 105.0), (2, 1, 106.0, 106.0)]


def test_count_windows_without_overall_lane():
    win = CountWindows(WindowConfig(None, None, 0.0, 2), [BINS3], 10, True, include_overall=False)
    closed, _ = feed(win, np.arange(4.0) + 1, keys=["a", "b", "a", "b"])
    assert sorted(w.segment for w in closed) == ["a", "b"]


def test_segment_cap_keeps_the_smallest_hashes_and_sends_the_rest_to_other():
    cap = SegmentCap(2)
    keep = sorted(["x", "y", "z", "w"], key=cap.hash)[:2]
    win = event_windows(10.0, max_segments=2, segmented=True)
    for i, key in enumerate(["x", "y", "z", "w", "z", "x"]):
        feed(win, [1.0 + i], keys=[key])
    closed = {w.segment: w.n for w in win.flush()}
    expected = {k: ["x", "y", "z", "w", "z", "x"].count(k) for k in keep}
    assert closed == {**expected, OTHER_SEGMENT: 6 - sum(expected.values()), None: 6}


def test_segment_count_stays_bounded_with_many_distinct_keys():
    keys = [f"user-{i}" for i in range(50_000)]
    kept, evicted = SegmentCap(20).admit([], keys)
    assert len(kept) == 20 and not evicted
    win = event_windows(10.0, max_segments=20, segmented=True)
    feed(win, np.full(len(keys), 1.0), keys=keys)
    (state,) = win.open.values()
    assert len(state.segments) == 21 and int(state.segments[OTHER_SEGMENT][0].total) == 50_000 - 20


def test_vanished_segment_reports_once_with_zero_events():
    win = event_windows(10.0, segmented=True)
    out = []
    for t, key in [(1.0, "a"), (2.0, "b"), (11.0, "a"), (21.0, "a"), (31.0, "a")]:
        out += feed(win, [t], keys=[key])[0]
    out += win.flush()
    # window 1 reports b's disappearance once (n = 0); later windows do not mention b
    assert [(w.index, w.segment, w.n) for w in out if w.segment == "b"] == [(0, "b", 1), (1, "b", 0)]
    assert [(w.index, w.n) for w in out if w.segment is None] == [(0, 2), (1, 1), (2, 1), (3, 1)]


def test_make_windows_picks_the_kind():
    def stream(window):
        return parse_config({"streams": [{"name": "s", "window": window, "features": [
            {"name": "c", "type": "categorical", "categories": ["a"]}]}]}).streams[0]

    assert isinstance(make_windows(stream({"count": 10}), [BINS3]), CountWindows)
    assert isinstance(make_windows(stream({"size": 60, "slide": 30}), [BINS3]), EventTimeWindows)


# ----------------------------------------------------------------------------- snapshot / restore


def test_event_time_windows_snapshot_restore_mid_stream():
    rng = np.random.default_rng(3)
    ts = 1000.0 + np.cumsum(rng.exponential(0.5, 2000)) + rng.normal(0, 3, 2000)
    bins = rng.integers(0, 3, 2000)
    keys = rng.choice(["a", "b", "c"], 2000).tolist()

    def fresh():
        return EventTimeWindows(WindowConfig(60.0, 20.0, 5.0), [BINS3], 2, True)

    straight = fresh()
    ref, _ = feed(straight, ts, bins, keys)
    ref += straight.flush()

    first = fresh()
    part1, _ = feed(first, ts[:777], bins[:777], keys[:777])
    state = json.loads(json.dumps(first.snapshot()))
    second = fresh()
    second.restore(state)
    part2, _ = feed(second, ts[777:], bins[777:], keys[777:])
    part2 += second.flush()
    assert _by_key(part1 + part2) == _by_key(ref)


def _pipeline_config(window: dict) -> object:
    return parse_config({
        "streams": [{
            "name": "s",
            "window": window,
            "segment_by": ["p"],
            "features": [
                {"name": "cat", "type": "categorical", "top_k": 4},
                {"name": "x", "type": "numeric", "bins": "quantile", "num_bins": 5},
                {"name": "lvl", "type": "categorical", "categories": ["lo", "hi"]},
            ],
        }],
        "detector": {"min_count": 20, "hysteresis": {"fire_after": 2, "of_last": 3, "resolve_after": 2}},
    }).streams[0]


def _events(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shift = i > n // 2
        out.append(orjson.dumps({
            "ts": 1_700_000_000 + i * 0.7 + float(rng.normal(0, 2)),
            "p": str(rng.choice(["ios", "web"])),
            "cat": str(rng.choice(list("abcdefg"), p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05] if not shift else
                                  [0.1, 0.1, 0.2, 0.2, 0.2, 0.1, 0.1])),
            "x": None if i % 17 == 0 else float(rng.normal(3.0 if shift else 0.0, 1)),
            "lvl": "hi" if rng.random() < 0.3 else "lo",
        }))
    out.insert(1000, b"{broken")
    return out


def _results(pipe: StreamPipeline, batches) -> list[dict]:
    out = []
    for b in batches:
        out += [r.to_dict() for r in pipe.process(b).results]
    return out


def test_pipeline_snapshot_restore_mid_stream_matches_uninterrupted_run():
    for window in ({"size": "60s", "slide": "30s", "allowed_lateness": "3s"}, {"count": 90}):
        cfg = _pipeline_config(window)
        events = _events(4000, seed=5)
        batches = [events[i:i + 250] for i in range(0, len(events), 250)]

        straight = StreamPipeline(cfg, clock=lambda: NOW)
        ref = _results(straight, batches) + [r.to_dict() for r in straight.flush().results]

        first = StreamPipeline(cfg, clock=lambda: NOW)
        got = _results(first, batches[:7])
        state = json.loads(json.dumps(first.snapshot()))
        del first
        second = StreamPipeline(cfg, clock=lambda: NOW)
        second.restore(state)
        got += _results(second, batches[7:]) + [r.to_dict() for r in second.flush().results]

        assert got == ref
        assert (second.events, second.late, dict(second.rejected)) == (straight.events, straight.late, dict(straight.rejected))
        # the run is not trivially quiet (an abrupt shift fills one count window: critical, then ok)
        assert any(r["transition" if "size" in window else "state"] in ("fired", "critical") for r in ref)


# -- Regressions: windowing bugs found by these tests (fixed; formerly test_window_regressions.py)


def _segments_seen(keys, cuts):
    win = EventTimeWindows(WindowConfig(100.0, 100.0, 0.0), [BINS3], 2, True)
    closed = []
    for a, b in cuts:
        closed += feed(win, np.arange(a, b, dtype=float) + 1.0, keys=keys[a:b])[0]
    closed += win.flush()
    return {w.segment: w.n for w in closed}


def test_segment_cap_keeps_the_same_keys_whatever_the_order_and_batch_cuts():
    keys = ["z", "a", "b", "z", "a", "b"]
    one_batch = _segments_seen(keys, [(0, 6)])
    assert _segments_seen(keys, [(i, i + 1) for i in range(6)]) == one_batch
    assert _segments_seen(keys[::-1], [(0, 2), (2, 6)]) == one_batch
    assert len(one_batch) == 4 and one_batch[OTHER_SEGMENT] == 2 and one_batch[None] == 6


def test_count_window_segments_keep_their_detectors_whatever_the_batch_size():
    """Count windows number each lane on its own, so a segment's window index says nothing
    about the stream's: its detector must not be retired as if it had vanished."""
    cfg = parse_config({"streams": [{"name": "s", "window": {"count": 50}, "segment_by": ["p"], "features": [
        {"name": "c", "type": "categorical", "categories": ["a", "b"]}]}], "detector": {"min_count": 10}}).streams[0]
    events = [orjson.dumps({"ts": 1.7e9 + i, "p": "x" if i % 10 else "y", "c": "a" if i % 3 else "b"})
              for i in range(3000)]

    def rows(batch: int) -> list[dict]:
        pipe = StreamPipeline(cfg, clock=lambda: NOW)
        out = _results(pipe, [events[i:i + batch] for i in range(0, len(events), batch)])
        return sorted(out, key=lambda r: (str(r["segment"]), r["window_start"]))  # lanes interleave by batch

    whole = rows(3000)
    assert rows(100) == whole == rows(7)
    assert sum(r["state"] == "no_reference" for r in whole) == 3  # one per lane: whole stream, x, y


def test_merging_partial_states_leaves_them_unchanged():
    """The scale-out reducer merges the partial states it keeps per source partition and may
    merge them again (a re-sent partial): merging must not change them."""
    import copy

    from driftmon.decode.prepare import Preparer
    from driftmon.windows.base import WindowState

    cfg = parse_config({"streams": [{"name": "s", "features": [
        {"name": "c", "field": "c", "type": "categorical", "top_k": 2, "max_values": 3}]}]}).streams[0]
    prep = Preparer(cfg, clock=lambda: 2e9)
    states = []
    for values in (["a", "b"], ["c", "d", "a"], ["e", "b", "f", "g"]):
        batch = prep.prepare([f'{{"ts": 1700000000, "c": "{v}"}}'.encode() for v in values]).coded
        st = WindowState()
        st.add(prep.summarizers, None, batch, np.arange(len(values)))
        states.append(st)
    snapshots = [copy.deepcopy(st.to_dict()) for st in states]
    for _ in range(2):
        merged = WindowState()
        for st in states:
            merged.merge(st, None)
        assert merged.segments[None][0].total == 9
    assert [st.to_dict() for st in states] == snapshots
    assert all(set(st.segments[None][0].names) == set(st.segments[None][0].keys.tolist()) for st in states)
