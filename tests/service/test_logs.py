"""Logging setup: a Kafka client's tracebacks are cut to one line above DEBUG; the daemon's own are kept."""

from __future__ import annotations

import logging

import pytest

from driftmon.config import parse_config
from driftmon.service.logs import setup_logging


def _log_both(level: str, capsys: pytest.CaptureFixture[str]) -> str:
    cfg = parse_config({"streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 3}]}],
                        "logging": {"level": level}})
    setup_logging(cfg)
    try:
        for name in ("kafka.net.transport", "driftmon.test"):
            try:
                raise ConnectionResetError("socket closed under the reader")
            except ConnectionResetError:
                logging.getLogger(name).exception("%s: Error receiving network data", name)
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(logging.WARNING)
    return capsys.readouterr().err


def test_kafka_client_tracebacks_are_one_line_above_debug(capsys):
    err = _log_both("INFO", capsys)
    lines = err.splitlines()
    kafka_line = next(line for line in lines if "kafka.net.transport: kafka.net.transport: Error" in line)
    assert kafka_line.endswith("(ConnectionResetError: socket closed under the reader)")
    # the daemon's own exceptions keep their traceback: exactly one traceback, the driftmon one
    assert err.count("Traceback (most recent call last)") == 1
    assert err.index("driftmon.test: driftmon.test: Error") < err.index("Traceback")


def test_at_debug_every_traceback_is_kept(capsys):
    err = _log_both("DEBUG", capsys)
    assert err.count("Traceback (most recent call last)") == 2
