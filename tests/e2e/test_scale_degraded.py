"""Scale-out's two wall-clock paths on the real broker: idle source partitions and
``scale.partial_timeout``.

Replicas of ``driftmon run`` as subprocesses in one group, as in test_scale.py (same stream,
detector and comparison with ``driftmon replay``), without the per-entity monitor:

* idle: a 6-partition event topic where 2 partitions never receive an event and one goes
  quiet half-way, ``idle_timeout: 2s``, 3 replicas: every window of the events that exist is
  emitted and equals replay's, and ``driftmon_scale_windows_total{kind="idle_advance"}`` > 0;
* partial timeout: one replica that owns event partitions but not the stream's partials
  partition is frozen (SIGSTOP) with ``partial_timeout`` well below the group's session
  timeout, so its partitions are not reassigned: the reducer emits the windows it holds back
  with ``"partial": true`` and exactly the frozen partitions in ``missing_partitions``, counts
  = replay's counts of the other partitions' events; after SIGCONT the frozen replica's late
  partials of those windows are dropped and counted (the partial rows stay the only rows of
  their windows) and the later windows are complete again.
"""

from __future__ import annotations

import ast
import json
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from driftmon.detect.result import rfc3339
from driftmon.source.clients import key_partition
from driftmon.testing import synth
from driftmon.testing.embedded import create_topics
from tests.conftest import current_client, produce, unique_name
from tests.e2e.test_crash import (
    DaemonProcess,
    replay_rows,
    row_key,
    sample,
    wait_until,
    write_config,
)
from tests.e2e.test_scale import (
    PARTIALS_PARTITIONS,
    PARTITIONS,
    assert_equals_replay,
    config,
    read_topic,
    stop_replicas,
    wait_for_rows,
)

# the wall-clock paths live in the client-independent mapper and reducer: one client keeps CI time down
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.one_client]

START = 1_600_000_000.0
N = 6_000  # 100 s of event time at 60 events/s: 10 windows of 10 s
STREAM = "interactions"


def make_events(seed: int) -> list[bytes]:
    ep = synth.Episode(START + 30, START + 55, strength=1.0)
    return list(synth.encode(synth.interactions(N, start=START, rate=60.0, episode=ep, seed=seed)))


def ts_of(e: bytes) -> float:
    return float(json.loads(e)["ts"])


class Group:
    """An event topic, the partials/changelog/results topics, replicas with one config each."""

    def __init__(self, broker, tmp_path: Path, events: list[bytes], parts: list[list[bytes]], *,
                 idle_timeout: str, partial_timeout: str, session_timeout_ms: int):
        self.bootstrap = broker.bootstrap
        name = unique_name("scaledeg")
        self.topic, self.partials, self.results = f"{name}-events", f"{name}-partials", f"{name}-results"
        create_topics(self.bootstrap, [self.topic], partitions=PARTITIONS)
        create_topics(self.bootstrap, [self.partials], partitions=PARTIALS_PARTITIONS)
        create_topics(self.bootstrap, [f"{self.partials}-changelog", self.results], partitions=1)
        self.group = unique_name("scaledeg-group")
        self.tmp, self.events, self.parts = tmp_path, events, parts
        self.knobs = (idle_timeout, partial_timeout, session_timeout_ms)
        self.replicas: list[DaemonProcess] = []
        events_path = tmp_path / "events.jsonl"
        events_path.write_bytes(b"\n".join(events) + b"\n")
        self.replay, _ = replay_rows(self.config_path("replay"), events_path)

    def config_path(self, name: str) -> Path:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        doc = config(self.bootstrap, self.topic, self.partials, self.results, d / "state", self.group,
                     current_client())
        idle, partial, session = self.knobs
        stream = doc["streams"][0]
        del stream["entities"]
        stream["window"]["idle_timeout"] = idle
        doc["scale"]["partial_timeout"] = partial
        doc["kafka"]["session_timeout_ms"] = session
        return write_config(d / "driftmon.yaml", doc)

    def replay_of(self, partitions: set[int]) -> list[dict]:
        """Replay of the events of ``partitions`` only (in time order)."""
        path = self.tmp / f"events-{'-'.join(map(str, sorted(partitions)))}.jsonl"
        evs = sorted((e for p in partitions for e in self.parts[p]), key=ts_of)
        path.write_bytes(b"\n".join(evs) + b"\n")
        return replay_rows(self.config_path("replay"), path)[0]

    def replica(self, i: int) -> DaemonProcess:
        while len(self.replicas) <= i:
            j = len(self.replicas)
            self.replicas.append(DaemonProcess(self.config_path(f"replica-{j}"), self.tmp / f"replica-{j}"))
        return self.replicas[i]

    def produce(self, lo: float, hi: float) -> None:
        """The fraction [lo, hi) of every partition's events."""
        for p, part in enumerate(self.parts):
            if sel := part[int(lo * len(part)):int(hi * len(part))]:
                produce(self.bootstrap, self.topic, sel, partition=p)

    def produce_where(self, keep) -> None:
        """Every partition's events for which ``keep(event)``."""
        for p, part in enumerate(self.parts):
            if sel := [e for e in part if keep(e)]:
                produce(self.bootstrap, self.topic, sel, partition=p)

    def expected(self, active: list[int]) -> list[dict]:
        """Replay's windows that end by the slowest of the ``active`` partitions' last event."""
        low = min(max(ts_of(e) for e in self.parts[p]) for p in active)
        return [r for r in self.replay if r["window_end"] <= rfc3339(low)]

    def rows(self) -> list[dict]:
        return read_topic(self.bootstrap, self.results, quiet=0.3)

    def wait_for(self, keys: set[tuple], timeout: float) -> list[dict]:
        return wait_for_rows(self.rows, keys, self.replicas, timeout, interval=0.5)

    def stop(self) -> None:
        stop_replicas(self.replicas)


ASSIGNED = re.compile(r"(mapper|reducer): partitions (assigned|revoked) (\[.*?\])")


def owned(replica: DaemonProcess, stage: str) -> set[tuple[str, int]]:
    """The partitions a replica's ``stage`` ("mapper" or "reducer") owns now, from its log."""
    out: set[tuple[str, int]] = set()
    for m in ASSIGNED.finditer(replica.log()):
        if m.group(1) == stage:
            tps = {(t, int(p)) for t, p in ast.literal_eval(m.group(3))}
            out = out | tps if m.group(2) == "assigned" else out - tps
    return out


def settled(g: Group) -> bool:
    """Every partition of both stages owned, each replica's mapper owning some."""
    mapped = [owned(r, "mapper") for r in g.replicas]
    reduced = [owned(r, "reducer") for r in g.replicas]
    return all(mapped) and sum(map(len, mapped)) == PARTITIONS and sum(map(len, reduced)) == PARTIALS_PARTITIONS


@pytest.fixture
def group(kafka_broker, tmp_path):
    made: list[Group] = []

    def make(*args, **kw) -> Group:
        made.append(Group(kafka_broker, tmp_path, *args, **kw))
        return made[-1]

    yield make
    for g in made:  # a failed test leaves no replica behind (nor a frozen one)
        for r in g.replicas:
            if r.alive and r.proc is not None:
                r.proc.send_signal(signal.SIGCONT)
            r.kill()


def test_idle_partitions_do_not_hold_windows_back(group):
    events = make_events(404)
    mid = START + 40.0
    parts: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for i, e in enumerate(events):  # 4 and 5 never get an event; 3 goes quiet half-way
        parts[i % 4 if ts_of(e) < mid else i % 3].append(e)
    g = group(events, parts, idle_timeout="2s", partial_timeout="10m", session_timeout_ms=6000)
    expected = g.expected(active=[0, 1, 2])
    assert len({r["window_end"] for r in expected}) >= 6 and {r["transition"] for r in expected} >= {"fired"}
    for i in range(3):
        g.replica(i).start()
    wait_until(lambda: settled(g), 90, "the group to settle", g.replica(0), interval=0.3)
    # one window of event time per second (less than idle_timeout): 0-2 stay active while 3
    # goes idle (and 4 and 5 are idle from the start), so which windows close does not depend
    # on how the idle marks and the progress marks interleave
    for k in range(int(N / 60.0 / 10) + 1):
        g.produce_where(lambda e, k=k: START + 10 * k <= ts_of(e) < START + 10 * (k + 1))
        time.sleep(0.8)
    got = g.wait_for({row_key(r) for r in expected}, 60)
    m = [r.metrics() for r in g.replicas]
    g.stop()
    repeats = assert_equals_replay(got, expected)
    assert sum(sample(x, "driftmon_scale_windows_total", stream=STREAM, kind="idle_advance") for x in m) > 0
    assert sum(sample(x, "driftmon_scale_windows_total", stream=STREAM, kind="partial") for x in m) == 0
    assert not any(r.get("partial") for r in got)
    print(f"{len(got)} rows, {repeats} repeats")


def test_a_frozen_mapper_makes_windows_partial_then_its_late_partials_are_dropped(group):
    events = make_events(505)
    parts = [events[p::PARTITIONS] for p in range(PARTITIONS)]
    # partial_timeout well below the session timeout: the frozen replica keeps its partitions
    g = group(events, parts, idle_timeout="1h", partial_timeout="2s", session_timeout_ms=10000)
    for i in range(3):
        g.replica(i).start()
    wait_until(lambda: settled(g), 90, "the group to settle", g.replica(0), interval=0.3)
    home = (g.partials, key_partition(STREAM.encode(), PARTIALS_PARTITIONS))  # the stream's series
    reducer = next(r for r in g.replicas if home in owned(r, "reducer"))
    victim = next(r for r in g.replicas if home not in owned(r, "reducer"))
    frozen = {p for _, p in owned(victim, "mapper")}
    assert frozen and reducer is not victim

    def upto(hi: float, ps) -> float:  # the slowest of partitions ps after the fraction [0, hi)
        return min(max(ts_of(e) for e in parts[p][:int(hi * len(parts[p]))]) for p in ps)

    g.produce(0.0, 0.35)
    g.wait_for({row_key(r) for r in g.replay if r["window_end"] <= rfc3339(upto(0.35, range(PARTITIONS)))}, 60)
    # frozen: the others close the windows up to their watermark, the victim's stay behind
    lo, hi = rfc3339(upto(0.35, frozen)), rfc3339(upto(0.75, set(range(PARTITIONS)) - frozen))
    held = {r["window_end"] for r in g.replay if lo < r["window_end"] <= hi}
    assert len(held) >= 2
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        g.produce(0.35, 0.75)
        wait_until(lambda: held <= {r["window_end"] for r in g.rows() if r.get("partial")}, 30,
                   "the held back windows emitted partial", reducer, interval=0.3)
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: sample(reducer.metrics(), "driftmon_scale_partials_total", outcome="dropped_after_emit") > 0,
               30, "the frozen replica's late partials to be dropped", reducer, interval=0.3)
    g.produce(0.75, 1.0)
    expected = g.expected(active=list(range(PARTITIONS)))
    got = g.wait_for({row_key(r) for r in expected}, 60)
    m = reducer.metrics()
    g.stop()

    label = {f"{g.topic}:{p}" for p in frozen}
    full = {row_key(r): r for r in expected}
    by_window: dict[str, list[dict]] = {}
    for r in got:
        by_window.setdefault(r["window_end"], []).append(r)
    partial_ends = sorted(e for e, rows in by_window.items() if any(r.get("partial") for r in rows))
    assert set(partial_ends) == held
    # a window is emitted once, partial or not: the late partials do not make a second, complete row
    for end in partial_ends:
        assert all(r.get("partial") for r in by_window[end]), end
    missing = {frozenset(r["missing_partitions"]) for e in partial_ends for r in by_window[e]}
    assert all(x and x <= label for x in missing) and frozenset().union(*missing) == label, (missing, label)
    # a partial window holds exactly the events of the partitions that reported it: replay of
    # those partitions' events has its counts (bin for bin for the declared categories; the
    # learned bins of the others differ with the events they were learned from)
    for x in missing:
        of = {p for p in range(PARTITIONS) if f"{g.topic}:{p}" not in x}
        want = {row_key(r): r for r in g.replay_of(of)}
        for e in partial_ends:
            for r in by_window[e]:
                if frozenset(r["missing_partitions"]) == x:
                    w = want[row_key(r)]
                    assert sum(r["counts"]) == sum(w["counts"]) < sum(full[row_key(r)]["counts"]), row_key(r)
                    if r["feature"] == "item_category":
                        assert r["counts"] == w["counts"], row_key(r)
    # before the freeze: replay's rows; after it, complete windows count replay's events (not
    # its divergences: the detector's reference, the previous window, was partial; nor the top-k
    # and learned bins, which follow the reference) and the last window is complete
    before = [r for r in expected if r["window_end"] < partial_ends[0]]
    assert before
    assert_equals_replay([r for r in got if r["window_end"] < partial_ends[0]], before)
    after = [r for r in got if not r.get("partial") and r["window_end"] > partial_ends[-1]]
    assert after and {row_key(r) for r in after} == {row_key(r) for r in expected
                                                     if r["window_end"] > partial_ends[-1]}
    for r in after:
        assert sum(r["counts"]) == sum(full[row_key(r)]["counts"]), row_key(r)
        if r["feature"] == "item_category":
            assert r["counts"] == full[row_key(r)]["counts"], row_key(r)
    assert not any(r.get("partial") for r in by_window[max(by_window)])
    assert sample(m, "driftmon_scale_windows_total", stream=STREAM, kind="partial") == len(partial_ends)
    print(f"{len(got)} rows ({Counter(bool(r.get('partial')) for r in got)} partial); partial windows "
          f"{partial_ends}; missing {missing}")
