"""Scale-out on the real broker: replicas in one group equal one process (replay).

A 6-partition event topic (time-ordered events spread round-robin), replicas
of ``driftmon run`` as subprocesses with the same config (``scale:`` and
``sinks.kafka_topic``): every row in the results topic equals replay's row of
its window (divergence, p-value, counts, bins, top bins, state, transition),
and every ``interest_shift`` record of the per-entity monitor (``entities`` keyed by
item, sharded over the partials partitions) equals replay's; repeats are identical,
nothing missing, nothing extra.  Three replicas (with each ``kafka.client``, and with
the two clients mixed in one group); then one of three killed with SIGKILL mid-stream
and restarted later (with each client); then a fourth replica joining mid-stream
(kafka-python only, for CI time: the kill test already moves partitions and their
changelog state with either client).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from driftmon.detect.result import rfc3339
from driftmon.testing import synth
from driftmon.testing.embedded import create_topics
from tests.conftest import current_client, produce, unique_name
from tests.e2e.test_crash import (
    DaemonProcess,
    assert_no_driftmon_traceback,
    replay_rows,
    row_key,
    sample,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]  # the tests not marked one_client run with each client

PARTITIONS = 6
PARTIALS_PARTITIONS = 3
START = 1_600_000_000.0
RATE = 60.0  # events per second of event time
N = 18_000  # 300 s of event time: 30 windows of 10 s
FEATURES = [
    {"name": "item_category", "field": "item.category", "type": "categorical", "categories": list(synth.CATEGORIES)},
    {"name": "item_id", "field": "item.id", "type": "categorical", "top_k": 8},
    {"name": "dwell", "field": "dwell_ms", "type": "numeric", "bins": "quantile", "num_bins": 8},
]


def make_events(seed: int) -> list[bytes]:
    ep = synth.Episode(START + 100, START + 180, strength=1.0)
    evs = list(synth.encode(synth.interactions(N, start=START, rate=RATE, episode=ep, seed=seed)))
    evs[500:500] = [b"not json", b'{"ts": "yesterday"}']  # rejected the same way everywhere
    return evs


# per-item interest drift: items are Zipf-popular, so a few heavy ones shift with the episode and
# many light ones carry their counts over windows; they spread over the 3 entity shards
ENTITIES = {"key": "item.id", "feature": "item.category", "window": {"size": "20s"}, "min_events": 15,
            "threshold": 0.05, "max_p_value": 0.01, "categories": list(synth.CATEGORIES)}


def config(bootstrap: str, topic: str, partials: str, results: str, state: Path, group: str, client: str) -> dict:
    return {
        "streams": [{"name": "interactions", "topic": topic, "timestamp": {"field": "ts", "unit": "s"},
                     "window": {"size": "10s", "slide": "10s", "allowed_lateness": 0, "idle_timeout": "1h"},
                     "segment_by": ["platform"], "max_segments": 2, "features": FEATURES, "entities": ENTITIES}],
        "detector": {"metric": "kl", "reference": "previous", "min_count": 50, "max_p_value": 0.01,
                     "permutations": 199, "thresholds": {"warn": 0.05, "critical": 0.15},
                     "hysteresis": {"fire_after": 1, "resolve_after": 2}},
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": group, "client_id": "driftmon-scale", "client": client,
                  "session_timeout_ms": 5000, "heartbeat_interval_ms": 1000, "poll_timeout_ms": 100,
                  "max_poll_records": 1000},
        "scale": {"partials_topic": partials, "changelog_quiet": "0.5s", "partial_timeout": "10m"},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"dir": str(state), "checkpoint_interval": "0.5s"},
        "sinks": {"kafka_topic": results},
        "lifecycle": {"grace_period": "10s"},
    }


class Cluster:
    """Topics, a config per replica (own state dir), the replicas, the expected rows."""

    def __init__(self, broker, tmp_path: Path, seed: int, clients: tuple[str, ...] = ()):
        self.bootstrap = broker.bootstrap
        self.clients = clients or (current_client(),)  # replica i runs clients[i % len(clients)]
        name = unique_name("scale")
        self.topic, self.partials, self.results = f"{name}-events", f"{name}-partials", f"{name}-results"
        create_topics(self.bootstrap, [self.topic], partitions=PARTITIONS)
        create_topics(self.bootstrap, [self.partials], partitions=PARTIALS_PARTITIONS)
        create_topics(self.bootstrap, [f"{self.partials}-changelog", self.results], partitions=1)
        self.group = unique_name("scale-group")
        self.tmp = tmp_path
        self.events = make_events(seed)
        self.parts = [self.events[p::PARTITIONS] for p in range(PARTITIONS)]
        self.replicas: list[DaemonProcess] = []
        # replay of the whole time-ordered file; the replicas close a window once the slowest
        # partition's watermark passed it, so expect replay's windows up to there
        first = self.config_path(0)
        events_path = tmp_path / "events.jsonl"
        events_path.write_bytes(b"\n".join(self.events) + b"\n")
        rows, self.summary = replay_rows(first, events_path)
        low = min(max(json.loads(e)["ts"] for e in part if e.startswith(b"{\"")
                      and isinstance(json.loads(e).get("ts"), float)) for part in self.parts)
        self.expected = [r for r in rows if r["window_end"] <= rfc3339(low)]
        series = [r for r in self.expected if r.get("kind") != SHIFT]
        assert len(series) >= 200 and {r["transition"] for r in series} >= {"fired"}
        shifts = [r for r in self.expected if r.get("kind") == SHIFT]
        assert len(shifts) >= 5 and len({r["entity"] for r in shifts}) >= 3, shifts

    def config_path(self, i: int) -> Path:
        d = self.tmp / f"replica-{i}"
        d.mkdir(exist_ok=True)
        return write_config(d / "driftmon.yaml", config(self.bootstrap, self.topic, self.partials, self.results,
                                                        d / "state", self.group, self.clients[i % len(self.clients)]))

    def replica(self, i: int) -> DaemonProcess:
        while len(self.replicas) <= i:
            j = len(self.replicas)
            self.replicas.append(DaemonProcess(self.config_path(j), self.tmp / f"replica-{j}"))
        return self.replicas[i]

    def produce(self, lo: float, hi: float) -> None:
        """The fraction [lo, hi) of every partition's events."""
        for p, part in enumerate(self.parts):
            produce(self.bootstrap, self.topic, part[int(lo * len(part)):int(hi * len(part))], partition=p)

    def rows(self) -> list[dict]:
        return read_topic(self.bootstrap, self.results)

    def wait_complete(self, timeout: float) -> list[dict]:
        return wait_for_rows(self.rows, {key_of(r) for r in self.expected}, self.replicas, timeout, interval=1.0)

    def stop(self) -> None:
        stop_replicas(self.replicas)


def wait_for_rows(rows: Callable[[], list[dict]], want: set[tuple], replicas: list[DaemonProcess], timeout: float,
                  interval: float) -> list[dict]:
    """The results topic's rows once every key in ``want`` is there (``key_of`` each row)."""
    got: list[dict] = []

    def done() -> bool:
        nonlocal got
        got = rows()
        return want <= {key_of(r) for r in got}

    alive = [r for r in replicas if r.alive]
    wait_until(done, timeout, "the expected windows in the results topic", alive[0] if alive else None,
               interval=interval)
    return got


def stop_replicas(replicas: list[DaemonProcess]) -> None:
    """SIGTERM every live replica (each must exit 0), then no driftmon traceback in any log."""
    for r in replicas:
        if r.alive:
            assert r.stop() == 0, r.log()[-3000:]
    for r in replicas:
        assert_no_driftmon_traceback(r.logs())


def read_topic(bootstrap: str, topic: str, quiet: float = 0.5) -> list[dict]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            for recs in c.poll(timeout_ms=100).values():
                out.extend(json.loads(r.value) for r in recs)
                last = time.monotonic()
        return out
    finally:
        c.close()


SHIFT = "interest_shift"


def key_of(r: dict) -> tuple:
    """A window's row: its series and window; an interest_shift record: its entity and window."""
    if r.get("kind") == SHIFT:
        return (SHIFT, r["stream"], r["entity"], r["window_start"], r["window_end"])
    return row_key(r)


def assert_equals_replay(got: list[dict], expected: list[dict]) -> int:
    """Every row (window rows and interest_shift records) equals replay's row of its window;
    repeats identical; none missing or extra."""
    by_key: dict[tuple, list[dict]] = {}
    for r in got:
        by_key.setdefault(key_of(r), []).append(r)
    want = {key_of(r): r for r in expected}
    missing = set(want) - set(by_key)
    assert not missing, f"{len(missing)} windows missing, e.g. {sorted(missing)[:3]}"
    for key, rows in by_key.items():
        for r in rows[1:]:
            diff = {k: (rows[0].get(k), r.get(k)) for k in set(r) | set(rows[0]) if rows[0].get(k) != r.get(k)}
            assert not diff, f"repeated rows differ for {key}: {diff}; replay: " + str(
                {k: want.get(key, {}).get(k) for k in diff})
        if key not in want:  # a window beyond the slowest partition's end: not closed by replay's rule
            raise AssertionError(f"replicas emitted a window replay did not: {key}")
        assert rows[0].get("counts") == want[key].get("counts"), f"histogram differs for {key}"
        assert rows[0] == want[key], f"row differs from replay for {key}"
    return sum(len(v) - 1 for v in by_key.values())


@pytest.fixture
def cluster(kafka_broker, tmp_path):
    made: list[Cluster] = []

    def make(seed: int, clients: tuple[str, ...] = ()) -> Cluster:
        made.append(Cluster(kafka_broker, tmp_path, seed, clients))
        return made[-1]

    yield make
    for c in made:  # a failed test leaves no replica behind
        for r in c.replicas:
            r.kill()


def three_replicas_equal_replay(c: Cluster) -> None:
    c.produce(0.0, 0.5)
    for i in range(3):
        c.replica(i).start()
    c.produce(0.5, 1.0)
    got = c.wait_complete(120)
    m = [r.metrics() for r in c.replicas]
    c.stop()
    repeats = assert_equals_replay(got, c.expected)
    assert sum(sample(x, "driftmon_events_total", stream="interactions") for x in m) >= len(c.events)
    assert sum(sample(x, "driftmon_scale_partials_total", outcome="sent") for x in m) > 0
    assert sum(sample(x, "driftmon_entity_windows_compared_total", stream="interactions") for x in m) > 0
    for i, r in enumerate(c.replicas):  # each replica ran the client its config names
        librdkafka = "(librdkafka " in r.logs()
        assert librdkafka == (c.clients[i % len(c.clients)] == "confluent-kafka"), r.logs()[-2000:]
    print(f"{len(got)} rows, {repeats} repeats")


def test_three_replicas_equal_replay(cluster):
    three_replicas_equal_replay(cluster(101))


@pytest.mark.one_client  # both clients in one group: they agree on partials and changelog partitions
def test_replicas_with_different_clients_equal_replay(cluster):
    three_replicas_equal_replay(cluster(404, clients=("confluent-kafka", "kafka-python")))


def test_one_of_three_killed_mid_stream_and_restarted_equals_replay(cluster):
    c = cluster(202)
    c.produce(0.0, 0.3)
    for i in range(3):
        c.replica(i).start()
    victim = c.replica(1)
    wait_until(lambda: sample(victim.metrics(), "driftmon_scale_partials_total", outcome="sent") > 0
               and sample(victim.metrics(), "driftmon_scale_changelog_writes_total", stage="map") > 0, 90,
               "the victim to send partials and checkpoint its map state", victim, interval=0.2)
    c.produce(0.3, 0.6)
    victim.kill()
    c.produce(0.6, 0.8)
    time.sleep(3)
    victim.start()
    c.produce(0.8, 1.0)
    got = c.wait_complete(150)
    c.stop()
    survivors = "".join(r.logs() for r in c.replicas if r is not victim)
    # the victim's partitions moved to the survivors with the state it had checkpointed
    assert re.search(r"mapper: partitions assigned .*\(([1-9]\d*) resumed from the changelog\)", survivors), \
        survivors[-3000:]
    repeats = assert_equals_replay(got, c.expected)
    print(f"{len(got)} rows, {repeats} repeats")


@pytest.mark.one_client  # the kill test covers both clients' rebalance and restore paths (CI time)
def test_a_fourth_replica_joining_mid_stream_equals_replay(cluster):
    c = cluster(303)
    c.produce(0.0, 0.4)
    for i in range(3):
        c.replica(i).start()
    wait_until(lambda: len(c.rows()) > 20, 90, "first results", c.replica(0), interval=0.5)
    c.produce(0.4, 0.6)
    joiner = c.replica(3).start()
    wait_until(lambda: "mapper: partitions assigned [(" in joiner.log(), 60, "the fourth replica's partitions",
               joiner, interval=0.2)
    c.produce(0.6, 1.0)
    got = c.wait_complete(150)
    assert sample(joiner.metrics(), "driftmon_scale_partials_total", outcome="sent") > 0
    c.stop()
    repeats = assert_equals_replay(got, c.expected)
    print(f"{len(got)} rows, {repeats} repeats")
