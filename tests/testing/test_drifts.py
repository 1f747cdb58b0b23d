"""The drift generators produce the statistics they promise, deterministically per seed."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftmon.testing import drifts as dr
from driftmon.testing.events import Categorical, Events, window_bounds

N, W = 200_000, 2_000  # 100 windows, as the 1M/10k stream, at a fifth of the cost


@pytest.fixture(scope="module")
def stream() -> Events:
    return dr.drift_stream(N, W, seed=3)


def shares(col: Categorical, lo: int, hi: int) -> np.ndarray:
    c = np.bincount(col.codes[lo:hi], minlength=len(col.labels))
    return c / c.sum()


def drift(ev: Events, kind: str) -> dr.Drift:
    return next(d for d in ev.meta["drifts"] if d.kind == kind)


def test_layout_and_onsets(stream):
    assert len(stream) == N and stream.fields == ("ts", "category", "genre", "score", "relevance", "platform",
                                                  "dwell_ms")
    assert np.all(np.diff(stream.ts) > 0)
    assert stream.meta["window"] == W and stream.meta["windows"] == 100
    got = {d.kind: (d.feature, d.onset_index, d.end_index, d.onset_window) for d in stream.meta["drifts"]}
    assert got == {
        "abrupt": ("category", 40_000, 40_000, 20),
        "new_category": ("genre", 91_500, 91_500, 45),  # 3/4 into window 45: straddles 45 | 46
        "shape": ("score", 120_000, 120_000, 60),
        "gradual": ("relevance", 160_000, 180_000, 80),
    }
    for d in stream.meta["drifts"]:  # the onset time is the first drifted event's time
        assert d.onset_ts == stream.ts[d.onset_index] and stream.ts[d.onset_index - 1] < d.onset_ts
    # count windows of W events are event-time windows of W / rate seconds
    seconds = W / dr.RATE
    assert np.array_equal(window_bounds(stream, window=W), window_bounds(stream, seconds=seconds))
    assert np.array_equal(np.floor((stream.ts - dr.START) / seconds).astype(int), np.arange(N) // W)


def test_abrupt_shift_has_the_promised_total_variation(stream):
    d = drift(stream, "abrupt")
    col = stream.columns["category"]
    assert isinstance(col, Categorical)
    before, after = shares(col, 0, d.onset_index), shares(col, d.onset_index, N)
    assert dr.total_variation(dr.ABRUPT_MIX, dr.BASE_MIX) == pytest.approx(0.12)
    assert dr.total_variation(after, before) == pytest.approx(0.12, abs=0.01)
    assert dr.total_variation(before, dr.BASE_MIX) < 0.01 and dr.total_variation(after, dr.ABRUPT_MIX) < 0.01
    kl = float(np.sum(dr.ABRUPT_MIX * np.log(dr.ABRUPT_MIX / dr.BASE_MIX)))
    assert kl == pytest.approx(0.0627, abs=5e-4)  # the "KL 0.062"
    # the shift is a step: the windows just before and just after differ by about 0.12 too
    w = d.onset_window
    assert dr.total_variation(shares(col, (w - 5) * W, w * W), shares(col, w * W, (w + 5) * W)) > 0.09


def test_new_category_share_straddles_a_window_boundary(stream):
    d = drift(stream, "new_category")
    col = stream.columns["genre"]
    assert isinstance(col, Categorical)
    new = col.labels.index(dr.NEW_GENRE)
    is_new = col.codes == new
    assert not is_new[:d.onset_index].any()  # never before the onset ...
    assert np.flatnonzero(is_new)[0] - d.onset_index < 500  # ... and soon after it (at 2%)
    assert is_new[d.onset_index:].mean() == pytest.approx(0.02, abs=0.002)
    w = d.onset_window
    per_window = is_new.reshape(-1, W).mean(axis=1)
    assert per_window[w] == pytest.approx(0.005, abs=0.003)  # a quarter of the window at 2%
    assert per_window[w + 1] == pytest.approx(0.02, abs=0.007)
    # the other genres keep their relative mix
    old = shares(col, 0, d.onset_index)[:new]
    rest = shares(col, d.onset_index, N)[:new] / (1 - is_new[d.onset_index:].mean())
    assert dr.total_variation(old, rest) < 0.02


def test_shape_change_keeps_the_mean_and_narrows_the_spread(stream):
    d = drift(stream, "shape")
    x = stream.columns["score"]
    assert isinstance(x, np.ndarray)
    before, after = x[:d.onset_index], x[d.onset_index:]
    assert before.mean() == pytest.approx(0.4, abs=0.003) and after.mean() == pytest.approx(0.4, abs=0.003)
    assert before.std() == pytest.approx(0.17, abs=0.003) and after.std() == pytest.approx(0.125, abs=0.003)
    assert d.params["family"] == "laplace"  # heavy tails: mean |x - mean| = sd / sqrt(2)
    assert np.abs(before - 0.4).mean() == pytest.approx(0.17 / np.sqrt(2), abs=0.003)
    # the other family keeps the score in [0, 1] with the same mean and sds
    beta = dr.drift_stream(N, W, seed=3, shape_family="beta").columns["score"]
    assert isinstance(beta, np.ndarray) and beta.min() >= 0 and beta.max() <= 1
    assert beta[:d.onset_index].std() == pytest.approx(0.17, abs=0.003)
    assert beta[d.onset_index:].std() == pytest.approx(0.125, abs=0.003)
    assert beta[d.onset_index:].mean() == pytest.approx(0.4, abs=0.003)


def test_gradual_shift_ramps_the_mean_linearly_over_ten_windows(stream):
    d = drift(stream, "gradual")
    x = stream.columns["relevance"]
    assert isinstance(x, np.ndarray)
    means = x.reshape(-1, W).mean(axis=1)
    sds = x.reshape(-1, W).std(axis=1)
    w0, w1 = d.onset_window, d.end_window
    assert (w0, w1) == (80, 90)
    assert np.all(np.abs(means[:w0] - 0.4) < 0.012) and np.all(np.abs(means[w1:] - 0.57) < 0.012)
    expected = 0.4 + 0.017 * (np.arange(10) + 0.5)  # the mean at the middle of each ramp window
    assert np.all(np.abs(means[w0:w1] - expected) < 0.012)
    steps = np.diff(means[w0 - 1:w1 + 1])
    assert np.all(np.abs(steps) < 0.04)  # no single step is large ...
    assert means[w1:].mean() - means[:w0].mean() == pytest.approx(0.17, abs=0.005)  # ... the whole ramp is 1 sd
    assert np.all(np.abs(sds - 0.17) < 0.012)


def test_stationary_companions_do_not_change(stream):
    col = stream.columns["platform"]
    assert isinstance(col, Categorical)
    assert dr.total_variation(shares(col, 0, N // 2), shares(col, N // 2, N)) < 0.01
    dwell = stream.columns["dwell_ms"]
    assert isinstance(dwell, np.ndarray)
    assert np.median(dwell[: N // 2]) == pytest.approx(np.median(dwell[N // 2:]), rel=0.02)


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = (dr.drift_stream(20_000, 200, seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.ts, b.ts) and list(a.json_batches(5000)) == list(b.json_batches(5000))
    assert not np.array_equal(a.ts, c.ts)
    assert not np.array_equal(a.columns["score"], c.columns["score"])


def test_events_as_dicts_and_json(stream):
    first = stream.dicts(0, 3)
    assert list(first[0]) == ["ts", "category", "genre", "score", "relevance", "platform", "dwell_ms"]
    batch = next(stream.json_batches(3))
    assert [orjson.loads(b) for b in batch] == first
    assert next(iter(stream)) == first[0]
    assert isinstance(first[0]["category"], str) and isinstance(first[0]["score"], float)


def test_rejects_streams_too_short_for_the_drifts():
    with pytest.raises(ValueError):
        dr.drift_stream(20_000, 2_000)  # 10 windows: the ramp cannot fit
    with pytest.raises(ValueError):
        dr.drift_stream(200_001, 2_000)


@pytest.mark.parametrize("window", [1_000, 10_000, 100_000])
def test_stationary_stream_at_each_window_size(window):
    n = max(20 * window, 200_000)
    ev = dr.stationary_stream(n, window, seed=5)
    assert len(ev) == n and ev.meta["windows"] == n // window
    assert set(ev.columns) == {"cat10", "cat100", "cat1000", "normal", "lognormal", "poisson"}
    assert np.array_equal(window_bounds(ev, window=window), window_bounds(ev, seconds=window / dr.RATE))
    cat1000 = ev.columns["cat1000"]
    assert isinstance(cat1000, Categorical) and len(cat1000.labels) == 1000
    top = cat1000.counts() / n
    assert top[0] == pytest.approx(dr.zipf_mix(1000)[0], abs=0.003)  # Zipf: 1 / H_1000 = 0.134
    assert (top > 0).sum() > 900  # nearly every value occurs
    half = n // 2
    for name in ("cat10", "cat100", "cat1000"):
        col = ev.columns[name]
        assert isinstance(col, Categorical)
        assert dr.total_variation(shares(col, 0, half), shares(col, half, n)) < 0.05
    normal, poisson = ev.columns["normal"], ev.columns["poisson"]
    assert isinstance(normal, np.ndarray) and isinstance(poisson, np.ndarray)
    assert normal.mean() == pytest.approx(0, abs=0.01) and normal.std() == pytest.approx(1, abs=0.01)
    assert poisson.dtype.kind == "i" and poisson.mean() == pytest.approx(3, abs=0.02)


def test_stationary_stream_is_deterministic():
    a, b = dr.stationary_stream(10_000, 1_000, seed=1), dr.stationary_stream(10_000, 1_000, seed=1)
    assert list(a.json_batches()) == list(b.json_batches())


CW, CN = 2_000, 40  # clustered: 40 windows of 2,000 events


@pytest.fixture(scope="module")
def clustered() -> Events:
    return dr.clustered_stream(CN, CW, seed=11)


def test_clustered_traffic_a_few_heavy_users_dominate_each_window(clustered):
    users = clustered.columns["user_id"]
    assert isinstance(users, Categorical)
    heavy = clustered.meta["heavy_users"]
    u = users.codes.reshape(CN, CW)
    for w in range(CN):
        active = np.unique(u[w][u[w] < heavy])
        assert active.size <= clustered.meta["heavy_active"]
        assert np.count_nonzero(u[w] < heavy) == CW // 2  # heavy_share of every window
        assert dr.design_effect(u[w]) > 20  # sum c^2 / n: far from independent events
    # a different subset of heavy users in each window
    sets = [set(np.unique(u[w][u[w] < heavy]).tolist()) for w in range(CN)]
    overlap = np.mean([len(sets[w] & sets[w + 1]) / len(sets[w]) for w in range(CN - 1)])
    assert overlap < 0.2


def test_clustered_traffic_has_no_population_change_but_overdispersed_windows(clustered):
    col = clustered.columns["category"]
    assert isinstance(col, Categorical)
    assert clustered.meta["drifts"] == []
    # the population mix is the base mix, in both halves
    half = CN * CW // 2
    for lo, hi in ((0, half), (half, CN * CW)):
        assert dr.total_variation(shares(col, lo, hi), dr.BASE_MIX) < 0.05
    # but window-to-window variation is far above what independent events give
    per_window = np.stack([shares(col, w * CW, (w + 1) * CW) for w in range(CN)])
    binomial = dr.BASE_MIX * (1 - dr.BASE_MIX) / CW
    assert np.median(per_window.var(axis=0) / binomial) > 5
    # personal preferences persist: a heavy user's own mix is far from the population's
    users = clustered.columns["user_id"]
    assert isinstance(users, Categorical)
    top = np.bincount(users.codes).argmax()
    mine = col.codes[users.codes == top]
    assert mine.size > 100
    assert dr.total_variation(np.bincount(mine, minlength=8) / mine.size, dr.BASE_MIX) > 0.1


def test_clustered_traffic_with_a_population_shift(clustered):
    shifted = dr.clustered_stream(CN, CW, seed=11, shift_window=20)
    d = {x.feature: x for x in shifted.meta["drifts"]}
    assert set(d) == {"category", "score"} and d["category"].onset_index == 20 * CW
    assert d["category"].onset_ts == shifted.ts[20 * CW]
    # identical to the unshifted stream before the shift (same seed, same draws) ...
    assert list(shifted.take(slice(0, 20 * CW)).json_batches()) == list(clustered.take(slice(0, 20 * CW)).json_batches())
    # ... and the population moves by the promised total variation after it
    col, base = shifted.columns["category"], clustered.columns["category"]
    assert isinstance(col, Categorical) and isinstance(base, Categorical)
    video = dr.CATEGORIES.index("video")
    after, same_windows = shares(col, 20 * CW, CN * CW), shares(base, 20 * CW, CN * CW)
    assert after[video] - same_windows[video] == pytest.approx(0.2, abs=0.03)
    s, s0 = shifted.columns["score"], clustered.columns["score"]
    assert isinstance(s, np.ndarray) and isinstance(s0, np.ndarray)
    assert s[20 * CW:].mean() - s0[20 * CW:].mean() > 0.04


def test_module_doctests():
    import doctest

    from driftmon.testing import events

    for module in (dr, events):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
