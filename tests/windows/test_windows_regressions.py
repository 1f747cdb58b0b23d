import numpy as np

from driftmon.config import WindowConfig
from driftmon.windows import EventTimeWindows, Segmenter


def _segments_seen(keys, cuts):
    segmenter = Segmenter(2)
    win = EventTimeWindows(WindowConfig(100.0, 100.0, 0.0), [1], segmenter)
    closed = []
    for a, b in cuts:
        ts = np.arange(a, b, dtype=float) + 1.0
        closed += win.add(ts, segmenter.ids(keys[a:b], b - a), [np.zeros(b - a, np.int64)])[0]
    closed += win.flush()
    return {w.segment: w.n for w in closed}


def test_segment_cap_keeps_the_first_keys_to_arrive_whatever_the_batch_cuts():
    keys = ["z", "a", "b", "z", "a", "b"]
    one_batch = _segments_seen(keys, [(0, 6)])
    one_by_one = _segments_seen(keys, [(i, i + 1) for i in range(6)])
    assert one_by_one == {"z": 2, "a": 2, "__other__": 2, None: 6}
    assert one_batch == one_by_one  # today: {'a': 2, 'b': 2, '__other__': 2, None: 6}
