"""Failing tests for the decode/histogram owners (found by tests/e2e/test_fuzz.py)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftmon.cli import replay
from driftmon.config import parse_config
from driftmon.summaries.bins import Histogram, learn_quantiles

ROOT = Path(os.environ.get("DRIFTMON_ROOT", Path(__file__).resolve().parents[2]))  # this repository


@pytest.mark.parametrize("sample", [[-1e308, 1e308], [2.0**53] * 3, [1.7976931348623157e308] * 2])
def test_learn_quantiles_never_fails_on_finite_samples(sample):
    spec = learn_quantiles(np.array(sample), 4)  # today: ValueError from NumericSpec
    h = Histogram.from_values(spec, sample)
    assert h.counts[-1] == 0 and h.total == len(sample)  # every value lands in a finite bin


def test_replay_survives_extreme_numbers_in_the_learning_sample():
    cfg = parse_config({"streams": [{"name": "s", "learn_events": 10,
                                     "features": [{"name": "x", "type": "numeric", "bins": "quantile", "num_bins": 4}]}]})
    out = io.StringIO()
    lines = b'{"ts": 1700000000, "x": -1e308}\n{"ts": 1700000001, "x": 1e308}\n'
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "driftmon-extreme.jsonl"
    path.write_bytes(lines)
    summary = replay(cfg, str(path), "json", None, True, out)
    assert summary["events"] == 2 and summary["rejected"] == {}


@pytest.mark.parametrize("doc", ids=["list", "object"], argvalues=[b"[" * 300_000 + b"]" * 300_000, b'{"ts": 1700000000, "c": ' + b'{"a":' * 200_000 + b"1" + b"}" * 200_001])
def test_deeply_nested_event_is_rejected_not_a_segfault(tmp_path, doc):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("streams: [{name: s, features: [{name: c, type: categorical, top_k: 3}]}]\n")
    data = tmp_path / "deep.jsonl"
    data.write_bytes(b'{"ts": 1700000000, "c": "a"}\n' + doc + b"\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "driftmon.cli", "replay", "-c", str(cfg), str(data), "--format", "json"],
                          cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode} (-11 = SIGSEGV in orjson.loads)"
    assert b'"rejected": {"invalid_json": 1}' in proc.stdout
