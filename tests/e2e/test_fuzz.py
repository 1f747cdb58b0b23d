"""Hostile input for the decoder and the whole replay path (hypothesis).

Whatever arrives, nothing raises, and every event is accounted for: it is
either rejected with one of the known reasons, or counted in exactly one
window, or counted as late.  Learned vocabularies and segment counts stay
within their caps however many distinct values arrive.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftmon.cli import replay
from driftmon.config import StreamConfig, parse_config
from driftmon.decode.events import Decoder
from driftmon.pipeline import StreamPipeline
from driftmon.summaries.numeric import NumericSummarizer
from driftmon.vocabulary import DECODE_REASONS

T0 = 1_700_000_000.0
NOW = T0 + 100_000.0  # the decoders' wall clock: events more than an hour after it are bogus
# Hostile data is large and slow on purpose: no health check may turn that into a (flaky) failure.
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def stream_config(unit: str = "s", window: dict | None = None) -> StreamConfig:
    return parse_config({
        "streams": [{
            "name": "fuzz",
            "timestamp": {"field": "ts", "unit": unit},
            "window": window or {"size": "60s", "allowed_lateness": "5s"},
            "segment_by": ["p"],
            "max_segments": 3,
            "features": [
                {"name": "cat", "field": "cat", "type": "categorical", "top_k": 3},
                {"name": "num", "field": "num", "type": "numeric", "bins": "quantile", "num_bins": 4},
                {"name": "kind", "field": "a.b.kind", "type": "categorical", "categories": ["x", "y"]},
                {"name": "score", "field": "score", "type": "numeric", "edges": [0, 1, 10]},
            ],
        }],
        "detector": {"min_count": 3, "permutations": 49},
    }).streams[0]


# ----------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)), max_leaves=12)

timestamps = st.one_of(
    st.floats(T0, T0 + 3000),  # the normal case, jittered: windows close, some events are late
    st.floats(T0, T0 + 3000),
    st.floats(1.0, T0),  # far past (accepted, usually late)
    st.floats(NOW + 3601, 1e300),  # far future (rejected)
    st.sampled_from([0, -1, 1e30, 2**63, 2**64 + 1, True, "2023-11-14T22:13:20Z", "yesterday", None, [], {}]),
    json_values,
)
hostile_strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "__other__", "__missing__", "\x00", "a\x00", "\u202e", "🙂" * 50]),
    st.integers(1, 200_000).map(lambda n: "x" * n),  # huge
)
field_values = st.one_of(hostile_strings, json_scalars, json_values, st.sampled_from(["x", "y", "z", 0.5, 5, 50]))
# The quantile feature takes any JSON number: the bucket grid covers the whole float range.
quantile_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70), st.none(), hostile_strings,
    json_values,
)


@st.composite
def events(draw) -> dict:
    ev: dict = {}
    if draw(st.integers(0, 9)):
        ev["ts"] = draw(timestamps)
    for key in ("cat", "num", "score", "p"):
        if draw(st.booleans()):
            ev[key] = draw(quantile_numbers if key == "num" else field_values)
    if draw(st.booleans()):
        ev["a"] = draw(st.one_of(st.just({"b": {"kind": draw(field_values)}}), json_values))
    return ev


def dumps(value, ascii_only: bool) -> bytes:
    """JSON text of ``value``: big integers kept, lone surrogates written raw (invalid UTF-8) or escaped."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"ts": 1700000000, "cat": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


@st.composite
def raw_lines(draw) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice <= 4:
        return dumps(draw(events()), draw(st.booleans()))
    if choice == 5:  # Python's json writes NaN / Infinity literals, which JSON does not have
        ev = draw(events())
        ev[draw(st.sampled_from(["ts", "num", "score", "cat"]))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return dumps(ev, True)
    if choice == 6:
        return draw(st.binary(max_size=200))
    if choice == 7:  # a valid event, cut or corrupted
        data = dumps(draw(events()), True)
        cut = draw(st.integers(0, len(data)))
        return data[:cut] + draw(st.binary(max_size=3))
    if choice == 8:
        return _nested(draw(st.integers(1, 3000)), draw(st.sampled_from(["list", "object"])))
    return dumps(draw(json_values), False)


# ----------------------------------------------------------------------------- the decoder


@FUZZ
@given(st.lists(st.one_of(raw_lines(), st.binary(max_size=64), st.text(max_size=40), st.none()), max_size=60),
       st.sampled_from(["s", "ms", "iso"]))
def test_decoder_never_raises_and_partitions_its_input(values, unit):
    batch = Decoder(stream_config(unit), clock=lambda: NOW).decode(values)
    rejected = dict(batch.rejected)
    assert len(rejected) == len(batch.rejected)
    assert set(rejected.values()) <= set(DECODE_REASONS)
    assert sorted(list(rejected) + batch.accepted) == list(range(len(values)))
    n = len(batch)
    assert n == len(batch.accepted) and all(len(col) == n for col in batch.features)
    assert batch.segments is not None and len(batch.segments) == n
    assert np.all(np.isfinite(batch.ts)) and np.all((batch.ts > 0) & (batch.ts <= NOW + 3600))
    for v in batch.features[0] + batch.features[2] + batch.segments:
        assert v is None or isinstance(v, str)
    for v in batch.features[1] + batch.features[3]:
        assert isinstance(v, float) and not math.isinf(v)
    assert all(len(s) <= 64 for s in batch.segments)


def test_decoder_reasons_for_known_hostile_values():
    dec = Decoder(stream_config(), clock=lambda: NOW)
    cases = [
        (None, "invalid_json"), (b"", "invalid_json"), (b"\xff", "invalid_json"), ("\udc80", "invalid_json"),
        (b"NaN", "invalid_json"), (b'{"ts": Infinity}', "invalid_json"), (b'{"ts": 1e999}', "invalid_json"),
        (_nested(500, "list"), "bad_type"), (_nested(500, "object"), "bad_type"),
        (b"[]", "bad_type"), (b"42", "bad_type"),
        (b'{"ts": 1700000000, "cat": {}}', "bad_type"), (b'{"ts": 1700000000, "num": "7"}', "bad_type"),
        (b'{"ts": 1700000000, "num": true}', "bad_type"), (b'{"ts": 1700000000, "p": [1]}', "bad_type"),
        (b"{}", "missing_field"), (b'{"ts": null}', "missing_field"),
        (b'{"ts": "1700000000"}', "bad_timestamp"), (b'{"ts": 0}', "bad_timestamp"),
        (b'{"ts": 1e300}', "bad_timestamp"), (b'{"ts": 1700200000}', "bad_timestamp"),  # > NOW + 1h
        (b'{"ts": false}', "bad_timestamp"),
    ]
    batch = dec.decode([c for c, _ in cases])
    assert batch.rejected == [(i, reason) for i, (_, reason) in enumerate(cases)]
    # deeper than orjson's own limit (1024 levels from orjson 3.9.15): rejected, whichever the reason
    deep = dec.decode([_nested(2000, "list"), _nested(2000, "object")])
    assert len(deep) == 0 and {r for _, r in deep.rejected} <= {"bad_type", "invalid_json"}
    ok = dec.decode([b'{"ts": 1700000000, "cat": 7, "num": 1e308, "score": -1e308, "p": 3.5, "a": {"b": {"kind": false}}}',
                     b'{"ts": 1.5, "cat": "' + b"x" * 1_000_000 + b'", "p": "' + b"p" * 1000 + b'"}'])
    assert ok.rejected == [] and len(ok) == 2
    assert ok.features[0] == ["7", "x" * 255 + "\u2026"] and ok.features[2] == ["false", None]  # cut at 256
    assert ok.truncated[0] == 1 and sum(ok.truncated) == 1
    assert ok.features[1][0] == 1e308 and math.isnan(ok.features[1][1]) and ok.features[3][0] == -1e308
    assert ok.segments == ["3.5", "p" * 64]


# ----------------------------------------------------------------------------- the whole pipeline


def _account(pipe: StreamPipeline, results: list, n_lines: int, event_time: bool = True) -> None:
    """Every line is rejected (with a reason), late, or counted in exactly one overall window."""
    assert pipe.events == n_lines
    assert set(pipe.rejected) <= set(DECODE_REASONS)
    accepted = n_lines - sum(pipe.rejected.values())
    overall = [r for r in results if r.segment is None and r.feature == "cat"]
    assert sum(r.n_current for r in overall) + pipe.late == accepted
    if event_time:  # a window closes once (count windows may share start times)
        keys = [(r.feature, r.segment, r.window_start) for r in results]
        assert len(keys) == len(set(keys))
    assert {r.feature for r in results} <= {"cat", "num", "kind", "score"}
    for r in results:
        if r.feature == "cat":
            assert len(r.bins) <= 3 + 2  # top-K cap plus __other__ and __missing__
        json.dumps(r.to_dict(), allow_nan=False)  # strict JSON: no NaN or Infinity on the wire
        orjson.dumps(r.to_dict())
    per_window: dict = {}
    for r in results:
        per_window.setdefault(r.window_start, set()).add(r.segment)
    # max_segments plus __other__ per window (plus a segment that vanished since the previous one)
    assert all(len(segs - {None}) <= 2 * (3 + 1) for segs in per_window.values())
    assert all(len({s for s in segs if s is not None and s != "__other__"}) <= 2 * 3 for segs in per_window.values())


@FUZZ
@given(st.lists(raw_lines(), max_size=120), st.lists(st.integers(1, 40), max_size=20), st.sampled_from(["s", "ms", "iso"]))
def test_pipeline_accounts_for_every_hostile_event(lines, cuts, unit):
    pipe = StreamPipeline(stream_config(unit), clock=lambda: NOW)
    results, i = [], 0
    for c in [*cuts, len(lines)]:
        out = pipe.process(lines[i:i + c])
        assert {r for _, r in out.rejected} <= set(DECODE_REASONS)
        results += out.results
        i += c
        if i >= len(lines):
            break
    results += pipe.flush().results
    _account(pipe, results, len(lines))


@FUZZ
@given(st.lists(raw_lines(), max_size=80), st.integers(1, 7))
def test_pipeline_with_count_windows_accounts_for_every_hostile_event(lines, count):
    pipe = StreamPipeline(stream_config("s", {"count": count}), clock=lambda: NOW)
    results = pipe.process(lines).results + pipe.flush().results
    _account(pipe, results, len(lines), event_time=False)
    assert pipe.late == 0


def test_mostly_valid_stream_with_late_and_bogus_events():
    rng = np.random.default_rng(8)
    lines, bogus = [], []
    for i in range(5000):
        ts = T0 + i * 0.5 + rng.normal(0, 20)
        r = rng.random()
        if r < 0.02:
            ts = T0 - 1e6  # far past: late
        elif r < 0.03:
            ts = NOW + 1e7  # far future: rejected, must not move the watermark
            bogus.append(i)
        lines.append(orjson.dumps({"ts": ts, "cat": f"c{rng.zipf(1.5)}", "num": float(rng.normal()),
                                   "p": f"p{rng.integers(0, 10)}", "score": float(rng.random() * 12),
                                   "a": {"b": {"kind": "xy"[i % 2]}}}))

    def run(data):
        pipe = StreamPipeline(stream_config(), clock=lambda: NOW)
        results = []
        for i in range(0, len(data), 333):
            results += pipe.process(data[i:i + 333]).results
        return pipe, results + pipe.flush().results

    pipe, results = run(lines)
    _account(pipe, results, 5000)
    assert pipe.rejected["bad_timestamp"] == len(bogus) > 20 and pipe.late > 100
    segments = {r.segment for r in results}
    assert None in segments and "__other__" in segments  # (per-window caps: checked in _account)
    # the far-future events changed nothing but the rejected count: same late events, same windows
    drop = set(bogus)
    clean_pipe, clean_results = run([x for i, x in enumerate(lines) if i not in drop])
    assert clean_pipe.late == pipe.late
    def overall(rs):
        return sorted((r.feature, r.window_start, r.n_current, r.bins, r.counts) for r in rs if r.segment is None)

    assert overall(clean_results) == overall(results) and len(overall(results)) > 60


# ----------------------------------------------------------------------------- the CLI path


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(raw_lines(), max_size=150))
def test_replay_cli_never_crashes_and_summary_adds_up(tmp_path, lines):
    cfg = parse_config({"streams": [{
        "name": "s", "window": {"size": "60s"},
        "features": [{"name": "cat", "type": "categorical", "top_k": 3},
                     {"name": "num", "type": "numeric", "bins": "quantile", "num_bins": 4}],
    }], "detector": {"min_count": 3, "permutations": 19}})
    data = tmp_path / "fuzz.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    text = io.StringIO()
    summary = replay(cfg, str(data), "text", None, True, text)
    assert text.getvalue().endswith("\n")
    assert text.getvalue().split("\n")[-2].startswith(f"summary: {summary['events']} events")
    out = io.StringIO()
    assert replay(cfg, str(data), "json", None, True, out) == summary
    # one JSON object per "\n"-terminated line (str.splitlines would also split at U+2028 inside strings)
    rows = [json.loads(x) for x in out.getvalue().split("\n")[:-1]]
    assert rows[-1] == {"summary": summary}
    counted = sum(r["n_current"] for r in rows[:-1] if r["feature"] == "cat")
    assert counted + summary["late"] + sum(summary["rejected"].values()) == summary["events"]
    assert set(summary["rejected"]) <= set(DECODE_REASONS)


@pytest.mark.parametrize("max_values", [20_000, 2_000])
def test_open_vocabulary_stays_capped_with_200k_distinct_values(tmp_path, max_values):
    """200,000 distinct item ids and users through the replay path; the summaries
    and the segment count never exceed their caps (10M is a benchmark).  With a cap
    above a window's distinct values every value is exact and the hot ids are the
    named bins; with a smaller one the named bins are the hot ids among the values
    kept by hash."""
    n, top_k = 200_000, 100
    rng = np.random.default_rng(5)
    hot = rng.integers(0, 50, n)
    ids = np.where(rng.random(n) < 0.3, hot, np.arange(n) + 1000)  # 30% from 50 hot ids, the rest all distinct
    data = tmp_path / "many.jsonl"
    data.write_text("".join(f'{{"ts":{T0 + i * 0.01:.2f},"item":"i{v}","user":"u{i}"}}\n'
                            for i, v in enumerate(ids.tolist())))
    cfg = parse_config({"streams": [{
        "name": "s", "window": {"count": 20_000}, "segment_by": ["user"], "max_segments": 5,
        "features": [{"name": "item", "type": "categorical", "top_k": top_k, "max_values": max_values}],
    }]})
    out = io.StringIO()
    summary = replay(cfg, str(data), "json", None, True, out)
    rows = [json.loads(x) for x in out.getvalue().split("\n")[:-2]]
    assert summary["events"] == n and summary["rejected"] == {}
    assert rows and all(len(r["bins"]) <= top_k + 2 for r in rows)
    assert all(len(r["bins"]) == top_k + 2 for r in rows if r["segment"] is None)
    segments = {r["segment"] for r in rows}
    assert None in segments and "__other__" in segments and len(segments) == 5 + 2
    overall = [r for r in rows if r["segment"] is None]
    assert sum(r["n_current"] for r in overall) == n
    named = set(overall[0]["bins"][:top_k])
    hot = {f"i{h}" for h in range(50)}
    if max_values > 20_000 - 1:
        assert hot <= named  # every value is exact: the hot ids are the top bins
    else:
        from driftmon.summaries.hashing import stable_hash

        distinct = sorted(set(f"i{v}" for v in ids[:20_000].tolist()), key=lambda v: int(stable_hash([v])[0]))
        kept = set(distinct[:max_values])
        assert hot & kept <= named and named <= kept  # named bins: the most frequent of the values kept by hash
    other = sum(r["counts"][top_k] for r in overall)
    assert other >= 0.6 * n  # the long tail shares __other__


# -- Regressions: decode/binning bugs found by the fuzzing above (fixed; formerly test_fuzz_regressions.py)


ROOT = Path(os.environ.get("DRIFTMON_ROOT", Path(__file__).resolve().parents[2]))  # this repository


@pytest.mark.parametrize("sample", [[-1e308, 1e308], [2.0**53] * 3, [1.7976931348623157e308] * 2, [5e-324, -5e-324]])
def test_quantile_bins_never_fail_on_finite_samples(sample):
    s = NumericSummarizer(4)
    summary = s.summarize(s.codes(sample))
    labels, (counts,) = s.bins([summary])
    assert counts[-1] == 0 and counts.sum() == len(sample)  # every value lands in a finite bin, none missing


def test_replay_survives_extreme_numbers():
    cfg = parse_config({"streams": [{"name": "s",
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
