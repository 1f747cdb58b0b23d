"""``driftmon replay``: the engine issue's "Done when" criteria end to end, the
JSON output contract, malformed input, and stdin."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from driftmon.cli import replay
from driftmon.config import load_config, parse_config
from driftmon.testing import synth

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 300
START = float((1_700_000_000 // WINDOW) * WINDOW)  # a window boundary, safely in the past
SHIFT = START + 12 * WINDOW + 75.0  # abrupt category-mix shift, a quarter into window 12
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

CONTRACT_KEYS = ["stream", "feature", "segment", "window_start", "window_end", "metric", "unit", "divergence",
                 "p_value", "n_current", "n_reference", "state", "transition", "top_bins"]
# Fields the implementation adds to the contract's row (documented additions).
ADDED_KEYS = ["p_value_method", "design_effect", "smoothing", "severity", "warn_threshold", "critical_threshold", "bins", "counts",
              # issue 10: the effect, BH-adjusted p-value and family size, how unusual, and the horizons
              "effect", "p_adjusted", "tests", "unusual_z", "horizon", "horizons"]


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTMON", "KAFKA"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "driftmon.cli", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, timeout=120)


def rows_of(stdout: bytes | str) -> tuple[list[dict], dict]:
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]  # not splitlines(): U+2028 inside a JSON string is not a line break
    objs = [json.loads(line) for line in lines]
    assert "summary" in objs[-1] and all("summary" not in o for o in objs[:-1])
    return objs[:-1], objs[-1]["summary"]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def shifted_interactions(path: Path, windows: float = 15.5, rate: float = 20.0, seed: int = 0) -> Path:
    events = synth.interactions(int(windows * WINDOW * rate), start=START, rate=rate,
                                episode=synth.Episode(SHIFT, 1e12), seed=seed)
    path.write_bytes(b"\n".join(synth.encode(events)) + b"\n")
    return path


# ----------------------------------------------------------------------------- Done when: abrupt shift


def test_replay_flags_the_window_containing_an_abrupt_shift_and_no_window_before(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"streams": [{
        "name": "interactions", "timestamp": {"field": "ts", "unit": "s"}, "window": {"size": f"{WINDOW}s"},
        "features": [{"name": "item_category", "field": "item.category", "type": "categorical",
                      "categories": list(synth.CATEGORIES)}],
    }]})  # no detector section: the default settings
    data = shifted_interactions(tmp_path / "events.jsonl")
    proc = cli("replay", "-c", str(cfg), str(data), "--format", "json")
    assert proc.returncode == 0, proc.stderr.decode()
    rows, summary = rows_of(proc.stdout)
    assert summary["rejected"] == {} and summary["late"] == 0 and summary["windows"] == len(rows) == 16
    before = [r for r in rows if epoch(r["window_end"]) <= SHIFT]
    (hit,) = [r for r in rows if epoch(r["window_start"]) <= SHIFT < epoch(r["window_end"])]
    assert len(before) == 12
    assert before[0]["state"] == "no_reference"
    assert [r["state"] for r in before[1:]] == ["ok"] * 11
    assert all(r["transition"] == "none" for r in before)
    assert hit["state"] in ("warn", "critical") and hit["transition"] == "fired"
    assert hit["p_value"] <= 0.001 and hit["divergence"] >= 0.05
    # the explanation names the categories the shift moved towards
    assert {b["bin"] for b in hit["top_bins"][:2]} <= {"video", "gaming", "books", "music"}
    video = next(b for b in hit["top_bins"] if b["bin"] == "video")
    assert video["p_current"] > video["p_reference"] + 0.08


def test_example_config_flags_the_shift_in_every_segment(tmp_path):
    cfg = load_config(str(ROOT / "config" / "driftmon.yaml"), {})
    data = shifted_interactions(tmp_path / "events.jsonl")
    out = io.StringIO()
    summary = replay(cfg, str(data), "json", ["interactions"], True, out)
    rows, printed = rows_of(out.getvalue())
    assert printed == summary and summary["windows"] == 16
    cats = [r for r in rows if r["feature"] == "item_category"]
    assert {r["segment"] for r in cats} == {None, "ios", "android", "web"}
    for seg in (None, "ios", "android", "web"):
        series = [r for r in cats if r["segment"] == seg]
        before = [r for r in series if epoch(r["window_end"]) <= SHIFT]
        (hit,) = [r for r in series if epoch(r["window_start"]) <= SHIFT < epoch(r["window_end"])]
        assert all(r["state"] in ("ok", "no_reference") for r in before), seg
        assert hit["state"] in ("warn", "critical") and hit["transition"] == "fired", seg
    # the dwell-time shift of the same episode is seen too (overall series)
    dwell = [r for r in rows if r["feature"] == "dwell" and r["segment"] is None]
    assert [r["transition"] for r in dwell if epoch(r["window_start"]) <= SHIFT < epoch(r["window_end"])] == ["fired"]
    # across every feature and segment, stationary windows raise (almost) nothing
    stationary = [r for r in rows if epoch(r["window_end"]) <= SHIFT]
    assert len(stationary) == 12 * 4 * 4
    assert sum(r["state"] in ("warn", "critical") for r in stationary) <= 2


# ----------------------------------------------------------------------------- Done when: false alarms


def test_zipf_1000_categories_false_alarm_rate_with_and_without_p_value(tmp_path):
    k, per_window, n_windows = 1000, 1000, 1001  # the first window is the reference of the second
    rng = np.random.default_rng(2024)
    zipf = 1.0 / np.arange(1, k + 1)
    idx = rng.choice(k, size=per_window * n_windows, p=zipf / zipf.sum())
    ts = START + np.arange(idx.size) * 0.01
    data = tmp_path / "zipf.jsonl"
    data.write_text("".join(f'{{"ts":{t:.2f},"c":"c{i}"}}\n' for t, i in zip(ts.tolist(), idx.tolist())))
    stream = {"name": "z", "window": {"count": per_window},
              "features": [{"name": "c", "type": "categorical", "categories": [f"c{i}" for i in range(k)]}]}

    started = time.perf_counter()
    out = io.StringIO()
    summary = replay(parse_config({"streams": [stream]}), str(data), "json", None, False, out)  # default detector
    default_seconds = time.perf_counter() - started
    rows, _ = rows_of(out.getvalue())
    assert summary == {"events": idx.size, "rejected": {}, "late": 0, "windows": n_windows}
    compared = [r for r in rows if r["state"] != "no_reference"]
    assert len(compared) == 1000 and all(r["n_current"] == r["n_reference"] == 1000 for r in compared)
    assert {r["p_value_method"] for r in compared} == {"permutation"}  # sparse tables: the exact path
    alarms = sum(r["state"] in ("warn", "critical") for r in compared)
    assert alarms / len(compared) <= 0.01

    # The divergence of two samples of 1,000 events over 1,000 bins sits far above 0.1 by chance
    # (a floor on it alone, the defaults before issue 10 without the p-value, alarmed on nearly
    # every window).  The effect, the divergence less the share of G that noise explains, is
    # near 0, so even with the p-value gate and the unusual gate off the effect floor of
    # 0.05 nats stays quiet.  (Sparse tables: the noise share of G is measured by the permutation
    # draws, G's mean under "no change" being well above df here.)
    assert min(r["divergence"] for r in compared) > 0.1
    assert max(abs(r["effect"]) for r in compared) < 0.05
    started = time.perf_counter()
    out = io.StringIO()
    replay(parse_config({"streams": [stream], "detector": {
        "fdr": None, "horizons": None, "unusual": {"min_z": None}, "permutations": 199,
        "thresholds": {"warn": 0.05, "critical": 0.1}}}),
        str(data), "json", None, False, out)
    threshold_seconds = time.perf_counter() - started
    rows_t, _ = rows_of(out.getvalue())
    compared_t = [r for r in rows_t if r["state"] != "no_reference"]
    alarms_t = sum(r["state"] in ("warn", "critical") for r in compared_t)
    assert alarms_t / len(compared_t) <= 0.01
    assert [r["divergence"] for r in compared_t] == [r["divergence"] for r in compared]  # same divergences
    print(f"zipf: default {alarms}/1000 alarms in {default_seconds:.1f}s; "
          f"threshold only {alarms_t}/1000 in {threshold_seconds:.1f}s")


# ----------------------------------------------------------------------------- output contract


def _small_events() -> list[str]:
    out = []
    for i in range(40):
        out.append(json.dumps({"ts": START + i, "c": "a" if i % 2 else "b"}))
    for i in range(40):
        out.append(json.dumps({"ts": START + 60 + i, "c": ["a", "b", "new"][i % 3]}))  # "new" was never seen
    return out


def test_json_output_shape_is_the_contract(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {
        "streams": [{"name": "s", "window": {"size": "60s"},
                     "features": [{"name": "c", "type": "categorical", "categories": ["a", "b"]}]}],
        "detector": {"smoothing": {"method": "none"}, "min_count": 10},
    })
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(_small_events()) + "\n")
    proc = cli("replay", "-c", str(cfg), str(data), "--format", "json")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    rows, summary = rows_of(proc.stdout)
    assert len(rows) == 2
    for r in rows:
        assert set(r) == set(CONTRACT_KEYS) | set(ADDED_KEYS)
        assert r["stream"] == "s" and r["feature"] == "c" and r["segment"] is None
        assert RFC3339_UTC.match(r["window_start"]) and RFC3339_UTC.match(r["window_end"])
        assert r["metric"] == "kl" and r["unit"] in ("nats", "bits")
        assert r["state"] in ("ok", "warn", "critical", "insufficient_data", "no_reference")
        assert r["transition"] in ("fired", "resolved", "none")
        for b in r["top_bins"]:
            assert set(b) == {"bin", "p_reference", "p_current", "contribution"}
    first, second = rows
    assert first["window_start"] == datetime.fromtimestamp(START, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert epoch(first["window_end"]) - epoch(first["window_start"]) == 60
    assert first["state"] == "no_reference" and first["divergence"] is None and first["p_value"] is None
    # smoothing none + a bin empty in the reference: the divergence is the string "inf", never NaN
    assert second["divergence"] == "inf" and second["state"] == "critical" and second["transition"] == "fired"
    assert second["top_bins"][0]["bin"] == "__other__" and second["top_bins"][0]["contribution"] == "inf"
    assert isinstance(second["p_value"], float) and 0 <= second["p_value"] <= 1
    assert "NaN" not in proc.stdout.decode() and "Infinity" not in proc.stdout.decode()
    # the summary object comes last with exactly these keys
    assert list(json.loads(lines[-1])) == ["summary"]
    assert summary == {"events": 80, "rejected": {}, "late": 0, "windows": 2}


def test_text_output_has_a_header_a_row_per_result_and_a_summary(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {
        "streams": [{"name": "s", "window": {"size": "60s"},
                     "features": [{"name": "c", "type": "categorical", "categories": ["a", "b"]}]}],
        "detector": {"smoothing": {"method": "none"}, "min_count": 10},
    })
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(_small_events()) + "\n")
    proc = cli("replay", "-c", str(cfg), str(data))
    assert proc.returncode == 0
    lines = proc.stdout.decode().splitlines()
    assert lines[0].startswith("window_end") and len(lines) == 4
    assert "no_reference" in lines[1] and "kl=     inf" in lines[2] and "critical" in lines[2]
    assert lines[-1] == "summary: 80 events, 2 windows closed, 0 late, rejected none"


MALFORMED = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00garbage\x80", "invalid_json"),
    (b'{"ts": NaN, "c": "a"}', "invalid_json"),
    (b'{"ts": 1e999, "c": "a"}', "invalid_json"),
    (b'{"ts": ' + str(START).encode() + b', "c": "a"', "invalid_json"),  # truncated
    (b"[1, 2, 3]", "bad_type"),
    (b'"just a string"', "bad_type"),
    (b"null", "bad_type"),
    (b'{"ts": ' + str(START).encode() + b', "c": {"nested": true}}', "bad_type"),
    (b'{"ts": ' + str(START).encode() + b', "c": [1]}', "bad_type"),
    (b'{"c": "a"}', "missing_field"),
    (b'{"ts": null, "c": "a"}', "missing_field"),
    (b'{"ts": "yesterday", "c": "a"}', "bad_timestamp"),
    (b'{"ts": true, "c": "a"}', "bad_timestamp"),
    (b'{"ts": -5, "c": "a"}', "bad_timestamp"),
    (b'{"ts": 99999999999, "c": "a"}', "bad_timestamp"),  # year 5138
]


def test_malformed_lines_are_counted_by_reason_never_a_crash(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {
        "streams": [{"name": "s", "window": {"size": "60s"},
                     "features": [{"name": "c", "type": "categorical", "categories": ["a", "b"]}]}],
        "detector": {"min_count": 10},
    })
    good = [json.dumps({"ts": START + i, "c": "ab"[i % 2]}).encode() for i in range(100)]
    lines = list(good)
    for j, (bad, _) in enumerate(MALFORMED):
        lines.insert(3 + 5 * j, bad)
    body = b"\r\n".join(lines[:50]) + b"\r\n\n   \n" + b"\n".join(lines[50:])  # CRLF, blank lines
    data = tmp_path / "e.jsonl"
    data.write_bytes(body)
    proc = cli("replay", "-c", str(cfg), str(data), "--format", "json")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    rows, summary = rows_of(proc.stdout)
    expected = Counter(reason for _, reason in MALFORMED)
    assert summary["rejected"] == dict(sorted(expected.items()))
    assert summary["events"] == 100 + len(MALFORMED)  # blank lines are not events
    assert sum(r["n_current"] for r in rows) == 100  # every good event counted once


def test_stdin_input_gives_the_same_output_as_a_file(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {
        "streams": [{"name": "s", "window": {"size": "60s"}, "segment_by": ["p"],
                     "features": [{"name": "c", "type": "categorical", "top_k": 3},
                                  {"name": "x", "type": "numeric", "bins": "quantile", "num_bins": 4}]}],
        "detector": {"min_count": 10},
    })
    rng = np.random.default_rng(1)
    lines = [json.dumps({"ts": START + i * 0.5, "p": "ios" if i % 3 else "web", "c": f"k{rng.integers(0, 6)}",
                         "x": float(rng.normal())}) for i in range(3000)]
    lines.insert(10, "oops")
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(lines) + "\n")
    from_file = cli("replay", "-c", str(cfg), str(data), "--format", "json")
    from_stdin = cli("replay", "-c", str(cfg), "-", "--format", "json", stdin=data.read_bytes())
    assert from_file.returncode == from_stdin.returncode == 0
    assert from_stdin.stdout == from_file.stdout
    rows, summary = rows_of(from_stdin.stdout)
    assert summary["events"] == 3001 and summary["rejected"] == {"invalid_json": 1}
    assert {r["segment"] for r in rows} == {None, "ios", "web"} and len(rows) > 50


def test_late_events_are_reported_in_the_summary(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {
        "streams": [{"name": "s", "window": {"size": "60s", "allowed_lateness": "10s"},
                     "features": [{"name": "c", "type": "categorical", "categories": ["a"]}]}],
    })
    ts = [START + 1, START + 65, START + 55, START + 75, START + 50, START + 2, START + 130]
    data = tmp_path / "e.jsonl"
    data.write_text("".join(json.dumps({"ts": t, "c": "a"}) + "\n" for t in ts))
    out = io.StringIO()
    summary = replay(load_config(str(cfg), {}), str(data), "json", None, True, out)
    rows, _ = rows_of(out.getvalue())
    assert summary["late"] == 2  # START+50 and START+2 arrive after the watermark passed START+60
    assert [r["n_current"] for r in rows] == [2, 2, 1]
    assert sum(r["n_current"] for r in rows) + summary["late"] == len(ts)


def test_no_flush_leaves_open_windows_unreported_and_stream_selection(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {
        "streams": [
            {"name": "one", "window": {"size": "60s"}, "features": [{"name": "c", "type": "categorical", "categories": ["a"]}]},
            {"name": "two", "window": {"size": "30s"}, "features": [{"name": "c", "type": "categorical", "categories": ["a"]}]},
        ],
    })
    data = tmp_path / "e.jsonl"
    data.write_text("".join(json.dumps({"ts": START + t, "c": "a"}) + "\n" for t in range(0, 100, 5)))
    flushed = cli("replay", "-c", str(cfg), str(data), "--format", "json")
    assert b"replaying stream 'one'" in flushed.stderr
    assert rows_of(flushed.stdout)[1]["windows"] == 2
    kept = cli("replay", "-c", str(cfg), str(data), "--format", "json", "--no-flush")
    assert rows_of(kept.stdout)[1]["windows"] == 1
    two = cli("replay", "-c", str(cfg), str(data), "--format", "json", "--stream", "two")
    assert {r["stream"] for r in rows_of(two.stdout)[0]} == {"two"} and rows_of(two.stdout)[1]["windows"] == 4
    bad = cli("replay", "-c", str(cfg), str(data), "--stream", "three")
    assert bad.returncode == 2 and b"no stream named 'three'" in bad.stderr
    missing = cli("replay", "-c", str(cfg), str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and b"cannot read" in missing.stderr and b"Traceback" not in missing.stderr


@pytest.mark.parametrize("unit,scale", [("nats", 1.0), ("bits", 1 / math.log(2))])
def test_unit_is_stated_and_applied(tmp_path, unit, scale):
    stream = {"name": "s", "window": {"size": "60s"}, "features": [{"name": "c", "type": "categorical", "categories": ["a", "b"]}]}
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(_small_events()) + "\n")
    out = io.StringIO()
    replay(parse_config({"streams": [stream], "detector": {"unit": unit, "min_count": 10}}), str(data), "json", None, True, out)
    rows, _ = rows_of(out.getvalue())
    out_nats = io.StringIO()
    replay(parse_config({"streams": [stream], "detector": {"min_count": 10}}), str(data), "json", None, True, out_nats)
    nats, _ = rows_of(out_nats.getvalue())
    assert rows[1]["unit"] == unit
    assert rows[1]["divergence"] == pytest.approx(nats[1]["divergence"] * scale, rel=1e-12)


def test_comparison_bins_do_not_depend_on_batching(tmp_path):
    """Quantile and top-K bins are chosen from the two windows' summaries, so replay
    (10k-line batches) and the daemon (poll-sized batches) agree."""
    import io

    from driftmon.cli import replay as run_replay
    from driftmon.config import parse_config
    from driftmon.pipeline import StreamPipeline

    cfg = parse_config({"streams": [{"name": "s", "window": {"size": "60s"}, "features": [
        {"name": "x", "type": "numeric", "bins": "quantile", "num_bins": 5},
        {"name": "c", "type": "categorical", "top_k": 3}]}], "detector": {"min_count": 10}})
    rng = np.random.default_rng(5)
    lines = [json.dumps({"ts": 1.7e9 + i, "x": float(rng.normal(i / 100)), "c": f"v{rng.integers(0, 9) + i // 150}"})
             for i in range(1000)]
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + "\n")
    buf = io.StringIO()
    run_replay(cfg, str(path), "json", None, True, buf)
    whole = [json.loads(x) for x in buf.getvalue().splitlines()[:-1]]
    pipe, cut = StreamPipeline(cfg.streams[0]), []
    for i in range(0, 1000, 37):
        cut += [r.to_dict() for r in pipe.process([s.encode() for s in lines[i:i + 37]]).results]
    cut += [r.to_dict() for r in pipe.flush().results]
    assert whole == json.loads(json.dumps(cut))
