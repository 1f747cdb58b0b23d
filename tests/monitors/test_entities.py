"""driftmon.monitors.entities: per-entity interest drift.

The mathematics against scipy (hypothesis), the windows (time and per-entity count),
batching invariance, checkpoints, eviction, the known-answer synthetic population of
issue 11 and MovieLens 100K (from the installed ``recbole`` wheel).
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import rel_entr
from scipy.stats import chi2, chi2_contingency, entropy

from driftmon.cli import replay
from driftmon.config import EntitiesConfig, parse_config
from driftmon.decode.prepare import CodedBatch, EntityColumns, PreparedBatch
from driftmon.monitors.entities import OTHER, EntityMonitor, compare
from driftmon.monitors.packing import pack
from driftmon.pipeline import StreamPipeline
from driftmon.summaries.hashing import hash_one
from driftmon.testing import realdata
from driftmon.testing.events import Categorical, Events
from driftmon.testing.interests import population, prepared_batches

DAY = 86400.0
T0 = 1_700_006_400.0  # a multiple of a day


def batch(ts, keys, values) -> PreparedBatch:
    ts = np.asarray(ts, dtype=np.float64)
    hashes = np.array([0 if k is None else hash_one(k) for k in keys], dtype=np.uint64)
    return PreparedBatch(ts.size, np.arange(ts.size), [], CodedBatch(ts, None, []), (),
                         EntityColumns(list(keys), hashes, list(values)))


def cfg(**kw) -> EntitiesConfig:
    base = dict(key="user_id", feature="category", window_size=DAY, min_events=5, threshold=0.3,
                max_p_value=0.001, prior_strength=None)
    base.update(kw)
    return EntitiesConfig(**base)


def run(monitor: EntityMonitor, batches, flush: bool = True) -> list:
    out = []
    for b in batches:
        out += monitor.feed(b).records
    if flush:
        out += monitor.flush().records
    return out


def dicts(records) -> list[dict]:
    return [r.to_dict() for r in records]


# ---------------------------------------------------------------------------------------------
# the mathematics
# ---------------------------------------------------------------------------------------------

counts = st.lists(st.integers(0, 40), min_size=2, max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_compare_agrees_with_scipy(data):
    k = data.draw(st.integers(2, 10))
    row = st.lists(st.integers(0, 30), min_size=k, max_size=k).filter(lambda r: sum(r) > 0)
    c = np.array(data.draw(row), dtype=float)
    r = np.array(data.draw(row), dtype=float)
    pi = np.array(data.draw(st.lists(st.integers(1, 20), min_size=k, max_size=k)), dtype=float)
    pi /= pi.sum()
    a = data.draw(st.sampled_from([0.0, 1.0, 10.0, 100.0]))
    cmp = compare(c[None], r[None], pi, a)
    n, m = c.sum(), r.sum()
    p_s, q_s = (c + a * pi) / (n + a), (r + a * pi) / (m + a)
    # shrunk KL: scipy's entropy(p, q) in nats; raw: the plug-in KL, inf where q = 0 < p
    assert cmp.shrunk[0] == pytest.approx(entropy(p_s, q_s), rel=1e-9, abs=1e-12)
    assert cmp.terms[0] == pytest.approx(rel_entr(p_s, q_s), rel=1e-9, abs=1e-12)
    raw = entropy(c / n, r / m)
    assert (math.isinf(raw) and math.isinf(cmp.raw[0])) or cmp.raw[0] == pytest.approx(raw, rel=1e-9, abs=1e-12)
    support = int(((c + r) > 0).sum())
    bias = (support - 1) / 2 * (n / (n + a) ** 2 + m / (m + a) ** 2)
    assert cmp.bias[0] == pytest.approx(bias)
    assert cmp.adjusted[0] == pytest.approx(max(cmp.shrunk[0] - bias, 0.0), abs=1e-12)
    assert cmp.adjusted[0] >= 0
    # G statistic: scipy's log-likelihood chi2_contingency on the non-empty columns
    keep = (c + r) > 0
    if keep.sum() >= 2:
        g, _, dof, _ = chi2_contingency(np.array([c[keep], r[keep]]), correction=False, lambda_="log-likelihood")
        assert cmp.g[0] == pytest.approx(g, rel=1e-9, abs=1e-9)
        assert cmp.df[0] == dof
        total = n + m
        q = 1 + (total * (1 / n + 1 / m) - 1) * (total * (1 / (c + r)[keep]).sum() - 1) / (6 * total * dof)
        assert cmp.williams[0] == pytest.approx(q)
        assert cmp.p_value[0] == pytest.approx(chi2.sf(g / q, dof), rel=1e-9, abs=1e-300)
    else:
        assert cmp.p_value[0] == 1.0


def test_compare_is_row_wise_and_vectorised():
    rng = np.random.default_rng(3)
    c = rng.integers(0, 9, size=(50, 7))
    r = rng.integers(0, 9, size=(50, 7))
    c[:, 0] += 1
    r[:, 0] += 1
    pi = np.full(7, 1 / 7)
    whole = compare(c, r, pi, 10.0)
    for i in (0, 17, 49):
        one = compare(c[i:i + 1], r[i:i + 1], pi, 10.0)
        assert one.adjusted[0] == whole.adjusted[i] and one.p_value[0] == whole.p_value[i]


def test_the_adjusted_divergence_makes_the_threshold_mean_the_same_at_any_activity():
    """With no change, the plug-in KL of 20-200 events over 40 categories is over 0.3 nats for
    nearly every user (its bias alone); shrunk by the default prior (one pseudo-event per
    category) and bias-corrected it is rarely over, at every activity level."""
    rng = np.random.default_rng(5)
    theta = rng.dirichlet(np.full(40, 0.5), size=4000)
    n = rng.integers(20, 201, size=4000)
    c = np.array([rng.multinomial(k, t) for k, t in zip(n, theta)])
    r = np.array([rng.multinomial(k, t) for k, t in zip(n, theta)])
    cmp = compare(c, r, theta.mean(axis=0), 40.0)
    for lo, hi in ((20, 35), (35, 50), (50, 100), (100, 201)):
        part = (n >= lo) & (n < hi)
        assert np.mean(cmp.raw[part] >= 0.3) > 0.95  # the textbook rule fires for almost every unchanged user
        assert np.mean(cmp.adjusted[part] >= 0.3) < 0.01
        assert np.mean(cmp.p_value[part] <= 0.001) < 0.005  # the per-user G-test holds its level
    light = compare(c[n < 35], r[n < 35], theta.mean(axis=0), 10.0)  # a weaker prior: the bias term matters
    assert np.mean(light.shrunk >= 0.3) > 0.5 and np.mean(light.adjusted >= 0.3) < 0.25


# ---------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------


def two_day_user(first: list[str], second: list[str], user: str = "alice", day0: float = T0):
    ts = [day0 + 60 * i for i in range(len(first))] + [day0 + DAY + 60 * i for i in range(len(second))]
    return ts, [user] * len(ts), first + second


def test_a_user_who_switches_is_reported_once_with_the_record_shape_of_issue_11():
    ts, keys, vals = two_day_user(["books"] * 30 + ["music"] * 10, ["games"] * 35 + ["music"] * 5)
    ts2, k2, v2 = two_day_user(["books"] * 30 + ["music"] * 10, ["books"] * 29 + ["music"] * 11, user="bob")
    order = np.argsort(ts + ts2, kind="stable")
    allts, allk, allv = (np.array(ts + ts2), np.array(keys + k2, dtype=object), np.array(vals + v2, dtype=object))
    m = EntityMonitor("interactions", cfg())
    recs = run(m, [batch(allts[order], allk[order].tolist(), allv[order].tolist())])
    assert [r.entity for r in recs] == ["alice"]
    d = recs[0].to_dict()
    assert set(d) >= {"kind", "stream", "entity", "window_start", "window_end", "divergence", "unit", "n_current",
                      "n_reference", "top_bins", "raw_divergence", "p_value"}
    assert d["kind"] == "interest_shift" and d["stream"] == "interactions" and d["unit"] == "nats"
    assert (d["window_start"], d["window_end"]) == ("2023-11-16T00:00:00.000Z", "2023-11-17T00:00:00.000Z")
    assert (d["n_current"], d["n_reference"]) == (40, 40)
    assert d["raw_divergence"] == "inf"  # games: q = 0 < p
    assert d["divergence"] >= 0.3 and d["p_value"] <= 0.001
    assert d["top_bins"][0]["bin"] in ("games", "books")
    assert {b["bin"] for b in d["top_bins"]} == {"games", "books", "music"}
    games = next(b for b in d["top_bins"] if b["bin"] == "games")
    assert games["p_current"] > 0.8 > 0.1 > games["p_reference"]


def test_time_windows_carry_light_entities_and_reset_the_baseline():
    """Fewer than min_events: the window keeps counting into the next one.  After a shift the
    new distribution is the reference, so the same new interests do not fire again."""
    mon = EntityMonitor("s", cfg(min_events=20))
    day = lambda d, cats: ([T0 + d * DAY + 10 * i for i in range(len(cats))], ["u"] * len(cats), cats)  # noqa: E731
    feed = [day(0, ["a"] * 25), day(1, ["a"] * 10), day(2, ["a"] * 12),  # day 1 carries into day 2 (22 events)
            day(3, ["b"] * 25), day(4, ["b"] * 25), day(5, ["b"] * 1)]  # shift on day 3; day 4 same as day 3
    recs = []
    for ts, k, v in feed:
        recs += mon.feed(batch(ts, k, v)).records
    recs += mon.flush().records
    assert len(recs) == 1
    assert recs[0].to_dict()["window_start"] == "2023-11-18T00:00:00.000Z"  # day 3
    assert (recs[0].n_current, recs[0].n_reference) == (25, 22)
    assert mon.counters["windows"] == 4  # days 0, 1+2, 3, 4; day 5's single event stays open
    assert mon.tracked == 1


def test_last_events_windows_close_at_every_nth_event_of_an_entity_even_within_one_batch():
    n = 20
    seq = ["a"] * n + ["a"] * n + ["b"] * n + ["b"] * n + ["a"] * 7
    ts = [T0 + i for i in range(len(seq))]
    mon = EntityMonitor("s", cfg(window_size=None, last_events=n, min_events=n))
    step = mon.feed(batch(ts, ["u"] * len(seq), seq))
    assert step.compared == 3  # windows 2, 3, 4 against their previous
    assert [(r.n_current, r.n_reference) for r in step.records] == [(n, n)]
    r = step.records[0]
    assert (r.window_start, r.window_end) == (ts[2 * n], ts[3 * n - 1])  # the third window: all b
    assert mon.cur[mon.index_slots[0]].sum() == 7  # the open window


@pytest.mark.parametrize("window,prior", [({"window_size": DAY}, None), ({"window_size": None, "last_events": 40}, 0.0)])
def test_records_do_not_depend_on_how_the_stream_is_cut_into_batches(window, prior):
    """Time windows: exactly the same records.  Per-entity count windows depend on the batching
    only through the population prior (taken once per batch), so exactly equal without it."""
    pop = population(users=800, categories=12, windows=3, switch_share=0.1, min_rate=5, max_rate=200, seed=2)
    c = cfg(**window, min_events=20 if window["window_size"] else 40, prior_strength=prior)
    whole = dicts(run(EntityMonitor("s", c), prepared_batches(pop.events, "user_id", "category", 10**9)))
    cut = dicts(run(EntityMonitor("s", c), prepared_batches(pop.events, "user_id", "category", 997)))
    assert whole == cut and len(whole) >= 5


def test_count_windows_with_the_population_prior_flag_the_same_entities_however_batched():
    pop = population(users=800, categories=12, windows=3, switch_share=0.1, min_rate=5, max_rate=200, seed=2)
    c = cfg(window_size=None, last_events=40, min_events=40)
    whole = run(EntityMonitor("s", c), prepared_batches(pop.events, "user_id", "category", 10**9))
    cut = run(EntityMonitor("s", c), prepared_batches(pop.events, "user_id", "category", 997))
    assert [(r.entity, r.window_end) for r in whole] == [(r.entity, r.window_end) for r in cut]
    assert [r.divergence for r in whole] == pytest.approx([r.divergence for r in cut], rel=0.05)


# ---------------------------------------------------------------------------------------------
# checkpoints, eviction, vocabulary, bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [{"window_size": DAY}, {"window_size": None, "last_events": 40}])
def test_snapshot_restore_mid_stream_gives_the_same_records(window):
    pop = population(users=600, categories=10, windows=3, switch_share=0.1, min_rate=5, max_rate=200, seed=4)
    c = cfg(**window, min_events=20 if window["window_size"] else 40)
    batches = list(prepared_batches(pop.events, "user_id", "category", 5000))
    expected = dicts(run(EntityMonitor("s", c), batches))
    first = EntityMonitor("s", c)
    half = len(batches) // 2
    got = dicts(run(first, batches[:half], flush=False))
    snap = json.loads(json.dumps(first.snapshot(), allow_nan=True))  # what the checkpoint stores
    second = EntityMonitor("s", c)
    second.restore(snap)
    assert second.tracked == first.tracked and second.labels == first.labels
    got += dicts(run(second, batches[half:]))
    assert got == expected and len(expected) >= 5


def test_a_corrupt_snapshot_is_refused():
    mon = EntityMonitor("s", cfg())
    mon.feed(batch([T0, T0 + 1], ["a", "b"], ["x", "y"]))
    snap = mon.snapshot()
    with pytest.raises(ValueError):
        EntityMonitor("s", cfg()).restore({**snap, "n": 3})
    with pytest.raises(ValueError):
        EntityMonitor("s", cfg()).restore({**snap, "v": 99})


def test_snapshots_store_count_cells_compressed_and_still_read_the_uncompressed_form():
    pop = population(users=2000, categories=20, windows=2, switch_share=0.05, min_rate=5, max_rate=100, seed=5)
    mon = EntityMonitor("s", cfg())
    for b in prepared_batches(pop.events, "user_id", "category", 10_000):
        mon.feed(b)
    snap = mon.snapshot()
    n, k = snap["n"], snap["k"]
    live = mon.index_slots.astype(np.int64)
    flat = mon.cur[live].reshape(-1)
    idx = np.flatnonzero(flat)
    older = {"idx": pack(idx.astype(np.uint32), compress=False), "val": pack(flat[idx], compress=False),
             "nnz": str(idx.size)}  # the form before gaps + zlib
    assert len(json.dumps(snap["cur"])) < len(json.dumps(older)) / 2
    a, b = EntityMonitor("s", cfg()), EntityMonitor("s", cfg())
    a.restore(snap)
    b.restore({**snap, "cur": older})
    assert np.array_equal(a.cur[:n, :k], b.cur[:n, :k]) and np.array_equal(a.cur[:n, :k], mon.cur[live])


def test_idle_entities_are_evicted_and_counted():
    mon = EntityMonitor("s", cfg(idle_ttl=3600.0))
    step = mon.feed(batch([T0, T0 + 10, T0 + 20], ["a", "b", "a"], ["x", "x", "y"]))
    assert mon.tracked == 2 and not step.evicted
    step = mon.feed(batch([T0 + 3000, T0 + 5000], ["a", "c"], ["x", "x"]))  # b last seen 4990 s before
    assert step.evicted == Counter(idle=1) and mon.tracked == 2
    assert mon.counters["evicted_idle"] == 1
    step = mon.feed(batch([T0 + 5001], ["b"], ["z"]))  # b comes back as a new entity: empty windows
    assert mon.tracked == 3
    slot = int(mon.index_slots[np.searchsorted(mon.index_hashes, np.uint64(hash_one("b")))])
    assert mon.name_of(slot) == "b" and mon.cur[slot].sum() == 1


def test_past_max_entities_the_least_recently_seen_are_evicted():
    mon = EntityMonitor("s", cfg(max_entities=100))
    keys = [f"u{i}" for i in range(100)]
    mon.feed(batch([T0 + i for i in range(100)], keys, ["x"] * 100))
    step = mon.feed(batch([T0 + 200, T0 + 201], ["new1", "new2"], ["x", "x"]))
    assert mon.tracked <= 100 and step.evicted["capacity"] >= 2
    names = {mon.name_of(int(s)) for s in mon.index_slots}
    assert {"new1", "new2", "u99"} <= names and "u0" not in names  # oldest first
    assert mon.state_bytes() < 100 * 200


def test_learned_vocabulary_is_capped_and_declared_categories_keep_others_apart():
    mon = EntityMonitor("s", cfg(max_categories=3))
    mon.feed(batch([T0] * 6, ["u"] * 6, ["a", "b", "c", "d", "e", "a"]))
    assert mon.labels == ["a", "b", "c", OTHER] and mon.k == 4
    slot = int(mon.index_slots[0])
    assert mon.cur[slot].tolist() == [2, 1, 1, 2]
    dec = EntityMonitor("s", cfg(categories=("a", "b")))
    dec.feed(batch([T0] * 3, ["u"] * 3, ["a", "zzz", "b"]))
    assert dec.labels == ["a", "b", OTHER] and dec.cur[int(dec.index_slots[0])].tolist() == [1, 1, 1]


def test_missing_keys_and_values_are_counted_not_fatal_and_long_keys_kept_whole():
    long_key = "k" * 200 + "\u00e9"
    mon = EntityMonitor("s", cfg())
    mon.feed(batch([T0] * 5, [None, "a", "a", long_key, "nul\0"], ["x", None, "x", "y", "z"]))
    assert mon.counters["missing_key"] == 1 and mon.counters["missing_value"] == 1 and mon.counters["events"] == 3
    names = sorted(mon.name_of(int(s)) for s in mon.index_slots)
    assert names == sorted(["a", long_key, "nul\0"])
    snap = json.loads(json.dumps(mon.snapshot()))
    again = EntityMonitor("s", cfg())
    again.restore(snap)
    assert sorted(again.name_of(int(s)) for s in again.index_slots) == names


def test_counts_saturate_at_uint16_and_say_so():
    mon = EntityMonitor("s", cfg())
    mon.feed(batch(np.full(70_000, T0), ["u"] * 70_000, ["x"] * 70_000))
    assert mon.cur[int(mon.index_slots[0])].tolist() == [65535]
    assert mon.counters["saturated"] == 70_000 - 65535


# ---------------------------------------------------------------------------------------------
# known answers: issue 11's synthetic population
# ---------------------------------------------------------------------------------------------


def test_synthetic_population_precision_recall_and_false_shift_rate():
    """Zipf activity, 40 categories, 1% of the users switch interests at a known time (the start
    of the second day).  Users with >= 50 events in each window: precision and recall >= 0.9;
    stable users with 20-50 events in each: false-shift rate < 1%."""
    pop = population(users=30_000, categories=40, windows=2, switch_share=0.01, seed=7)
    mon = EntityMonitor("s", cfg(min_events=20))
    recs = run(mon, prepared_batches(pop.events, "user_id", "category", 100_000))
    assert all(r.window_start == pop.switch_time for r in recs)
    ids = {u: i for i, u in enumerate(pop.user_ids())}
    flagged = np.zeros(len(ids), dtype=bool)
    flagged[[ids[r.entity] for r in recs]] = True
    c, sw = pop.counts, pop.switchers
    heavy = (c[:, 0] >= 50) & (c[:, 1] >= 50)
    light = (c >= 20).all(axis=1) & (c <= 50).all(axis=1)
    tp, fp, fn = (flagged & sw & heavy).sum(), (flagged & ~sw & heavy).sum(), (~flagged & sw & heavy).sum()
    assert (sw & heavy).sum() >= 40 and (light & ~sw).sum() >= 5000  # enough of both to measure
    assert tp / (tp + fp) >= 0.9
    assert tp / (tp + fn) >= 0.9
    assert (flagged & light & ~sw).sum() / (light & ~sw).sum() < 0.01
    # ... where the textbook rule (plug-in KL over 0.3 nats) flags nearly every stable light user
    ev = pop.events
    users, cats = ev.columns["user_id"].codes, ev.columns["category"].codes  # type: ignore[union-attr]
    per = np.zeros((2, len(ids), 40))
    np.add.at(per, ((ev.ts >= pop.switch_time).astype(int), users, cats), 1)
    stable_light = light & ~sw
    naive = compare(per[1][stable_light], per[0][stable_light], np.full(40, 1 / 40), 0.0)
    assert np.mean(naive.raw >= 0.3) > 0.9


# ---------------------------------------------------------------------------------------------
# through the pipeline and replay (JSON events)
# ---------------------------------------------------------------------------------------------


def _doc(entities: dict | None) -> dict:
    s = {"name": "interactions", "window": {"size": "1d"},
         "features": [{"name": "category", "field": "item.category", "type": "categorical", "top_k": 12}]}
    if entities is not None:
        s["entities"] = entities
    return {"streams": [s]}


def test_replay_writes_interest_shift_records_beside_unchanged_aggregate_rows(tmp_path):
    pop = population(users=400, categories=8, windows=2, switch_share=0.05, min_rate=20, max_rate=150, seed=9)
    ev = Events(pop.events.ts, {"user_id": pop.events.columns["user_id"],
                                "item": pop.events.columns["category"]})
    path = tmp_path / "events.jsonl"
    with open(path, "wb") as fh:
        for line in ev.jsonl():  # {"ts", "user_id", "item"}: nest the category as item.category
            d = json.loads(line)
            d["item"] = {"category": d["item"]}
            fh.write(json.dumps(d).encode() + b"\n")
    ent = {"key": "user_id", "feature": "item.category", "window": {"size": "1d"}, "min_events": 20}
    outs = []
    for doc in (_doc(None), _doc(ent)):
        buf = io.StringIO()
        summary = replay(parse_config(doc), str(path), "json", None, True, buf)
        outs.append(([json.loads(x) for x in buf.getvalue().splitlines()], summary))
    (plain, s0), (with_ent, s1) = outs
    rows = [r for r in with_ent[:-1] if "kind" not in r]
    shifts = [r for r in with_ent if r.get("kind") == "interest_shift"]
    assert rows == plain[:-1]  # aggregate rows keep their shape and values
    assert len(rows) + len(shifts) + 1 == len(with_ent)
    assert s1["interest_shifts"] == len(shifts) >= 10 and "interest_shifts" not in s0
    switched = {u for u, s in zip(pop.user_ids(), pop.switchers) if s}
    assert {r["entity"] for r in shifts} <= switched
    assert all(r["stream"] == "interactions" and r["unit"] == "nats" for r in shifts)


def test_pipeline_snapshot_carries_the_monitor_and_restores_it():
    doc = _doc({"key": "user_id", "feature": "item.category", "window": {"last_events": 4}, "min_events": 4})
    scfg = parse_config(doc).streams[0]
    values = [json.dumps({"ts": T0 + i, "user_id": "u", "item": {"category": c}}).encode()
              for i, c in enumerate("aaaaaaaabbbbbbbb")]
    p = StreamPipeline(scfg, clock=lambda: T0 + 1e6)
    out = p.process(values[:6])
    assert not out.records and out.monitors[0].compared == 0
    q = StreamPipeline(scfg, clock=lambda: T0 + 1e6)
    q.restore(json.loads(json.dumps(p.snapshot())))
    out = q.process(values[6:])
    assert out.monitors[0].compared == 3 and out.records == []  # aaaa -> bbbb: 4 vs 4 events is too little
    plain = StreamPipeline(parse_config(_doc(None)).streams[0])
    assert "monitors" not in plain.snapshot() and plain.process(values).monitors == []


# ---------------------------------------------------------------------------------------------
# real data: MovieLens 100K (recbole's dataset_example, installed by .ci/run)
# ---------------------------------------------------------------------------------------------


def _within_user_shuffle(ev: Events, seed: int) -> Events:
    """The same events with each user's genres in a random order (times kept): no real shifts."""
    rng = np.random.default_rng(seed)
    users = ev.columns["user_id"].codes  # type: ignore[union-attr]
    shuffled = np.lexsort((rng.random(len(ev)), users))
    in_order = np.lexsort((np.arange(len(ev)), users))
    perm = np.empty(len(ev), dtype=np.int64)
    perm[in_order] = shuffled
    genre = ev.columns["genre"]
    assert isinstance(genre, Categorical)
    return Events(ev.ts, {**ev.columns, "genre": Categorical(genre.codes[perm], genre.labels)}, dict(ev.meta))


def test_movielens_100k_users_who_change_genres_and_none_after_shuffling():
    """Every 50 genre-events of a user against the previous 50: MovieLens users do move
    between genres over their rating history; with each user's genres shuffled in time (same
    counts, no order) nothing is reported (docs/quality.md)."""
    ev = realdata.movielens_100k()
    c = cfg(key="user_id", feature="genre", window_size=None, last_events=50, min_events=50,
            idle_ttl=366 * DAY)  # users come back after weeks: keep their history (the data span 7 months)

    def shifts(events: Events) -> tuple[list, int]:
        mon = EntityMonitor("ml", c)
        recs, compared = [], 0
        for b in prepared_batches(events, "user_id", "genre", 10_000):  # replay's batch size
            step = mon.feed(b)
            recs += step.records
            compared += step.compared
        return recs, compared

    real, compared = shifts(ev)
    control, compared2 = shifts(_within_user_shuffle(ev, seed=1))
    assert compared == compared2 > 2000
    assert len(control) <= 0.002 * compared2  # about max_p_value, or less
    assert len(real) >= 0.02 * compared  # real shifts: Action, Romance, Children's ... up
    assert len({r.entity for r in real}) >= 50
    assert all(r.divergence >= 0.3 and r.p_value <= 0.001 for r in real)
