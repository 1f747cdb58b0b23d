"""Results sinks: every closed-window result, in replay's ``--format json`` shape.

``JsonlSink`` appends one line per result and fsyncs on ``sync()``, which the
daemon calls before each checkpoint: a result is on disk before the state
that produced it is checkpointed, so after a crash a row can repeat
(identically) but never go missing.  ``KafkaResultsSink`` sends the same
records to a topic.
"""

from __future__ import annotations

import logging
import os

import orjson

from driftmon.config import KafkaConfig, SinksConfig
from driftmon.detect.result import DriftResult, json_line

log = logging.getLogger(__name__)


def _drop_torn_tail(path: str) -> None:
    """A crash mid-write can leave a partial last line: cut the file back to its
    last newline (that row is written again, whole, when its window re-closes)."""
    try:
        with open(path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            pos = size
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep = pos - step + nl + 1
                    break
                pos -= step
            else:
                keep = 0
            if keep != size:
                log.warning("results file %s ended in a torn line (%d bytes): cut", path, size - keep)
                fh.truncate(keep)
    except FileNotFoundError:
        return


class JsonlSink:
    def __init__(self, path: str):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        _drop_torn_tail(path)
        self.fh = open(path, "ab")

    def write(self, results: list[DriftResult]) -> None:
        if results:
            self.fh.write(b"".join(json_line(r.to_dict()) for r in results))

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.sync()
        self.fh.close()


class KafkaResultsSink:
    def __init__(self, kafka: KafkaConfig, topic: str):
        from kafka import KafkaProducer

        from driftmon.source.kafka import client_kwargs

        self.topic = topic
        kw = {**client_kwargs(kafka), "linger_ms": 50, "acks": "all"}
        if "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG:
            kw["enable_idempotence"] = False  # duplicates are identical rows; survive broker restarts
        self.producer = KafkaProducer(**kw)

    def write(self, results: list[DriftResult]) -> None:
        for r in results:
            key = f"{r.stream}/{r.feature}/{r.segment or ''}".encode()
            self.producer.send(self.topic, key=key, value=orjson.dumps(r.to_dict()))

    def sync(self) -> None:
        self.producer.flush(timeout=30)

    def close(self) -> None:
        self.producer.close(timeout=5)


def make_sinks(cfg: SinksConfig, kafka: KafkaConfig) -> list:
    sinks: list = []
    if cfg.jsonl:
        sinks.append(JsonlSink(cfg.jsonl))
    if cfg.kafka_topic:
        sinks.append(KafkaResultsSink(kafka, cfg.kafka_topic))
    return sinks
