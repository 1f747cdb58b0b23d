"""The calibration monitor: its mathematics against scipy, the join (late, orphan,
duplicate, overflow, invalid records), window closing, detection of an over-confident
model, checkpoints, config errors and ``driftmon replay --input``."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from driftmon.cli import main as cli_main
from driftmon.cli import replay
from driftmon.config import ConfigError, parse_config
from driftmon.monitors.calibration import CalibrationMonitor, bernoulli_kl, bin_labels, score
from driftmon.testing import synth

T0 = 1_700_000_000.0
WINDOW = 60.0
DELAY = 30.0


def config(**cal: object) -> dict:
    entry = {"name": "ctr", "predictions": {"stream": "predictions", "id": "request_id", "probability": "score"},
             "outcomes": {"stream": "outcomes", "id": "request_id", "label": "clicked"},
             "max_delay": f"{DELAY:g}s", "bins": 10, "detector": {"min_count": 200}}
    entry.update(cal)
    return {
        "streams": [
            {"name": "predictions", "window": {"size": f"{WINDOW:g}s"},
             "features": [{"name": "score", "type": "numeric", "edges": [0, 0.5, 1]}]},
            {"name": "outcomes", "window": {"size": f"{WINDOW:g}s"},
             "features": [{"name": "clicked", "type": "categorical", "categories": ["true", "false"]}]},
        ],
        "calibration": [entry],
    }


def monitor(merged: bool = True, **cal: object) -> CalibrationMonitor:
    cfg = parse_config(config(**cal))
    return CalibrationMonitor(cfg.calibration[0], cfg, merged_input=merged)


def enc(events: list[dict]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def run(m: CalibrationMonitor, preds: list[dict], outs: list[dict], chunk: float = 5.0, flush: bool = True,
        outcomes_first: bool = False):
    """Feed both streams merged by event time in chunks of ``chunk`` seconds, as replay does."""
    results = []
    events = sorted([(e["ts"], 0, e) for e in preds] + [(e["ts"], 1, e) for e in outs], key=lambda x: x[:2])
    i = 0
    while i < len(events):
        end = events[i][0] + chunk
        j = i
        while j < len(events) and events[j][0] < end:
            j += 1
        part = events[i:j]
        for k, name in (enumerate(m.streams) if not outcomes_first else reversed(list(enumerate(m.streams)))):
            values = enc([e for _, s, e in part if s == k])
            if values:
                m.feed(name, m.prepare(name, values))
        results += m.advance()
        i = j
    if flush:
        results += m.flush()
    return results


# -- mathematics ------------------------------------------------------------------------------

bins_st = st.lists(
    st.tuples(st.integers(0, 500), st.floats(0.0, 1.0), st.floats(0.0, 1.0)), min_size=1, max_size=12,
).filter(lambda b: sum(n for n, _, _ in b) > 0)


@settings(max_examples=200, deadline=None)
@given(bins_st, st.sampled_from(["nats", "bits"]))
def test_divergence_ece_and_p_value_match_scipy(bins, unit):
    n = np.array([b[0] for b in bins], dtype=float)
    sum_p = np.array([b[0] * b[1] for b in bins])
    sum_y = np.array([round(b[0] * b[2]) for b in bins], dtype=float)
    s = score(n, sum_p, sum_y, unit)
    total = n.sum()
    div = ece = g = 0.0
    dof = 0
    for nb, sp, sy in zip(n, sum_p, sum_y):
        if nb == 0:
            continue
        a, p = sy / nb, min(max(sp / nb, 0.0), 1.0)
        kl = float(np.sum(special.rel_entr([a, 1 - a], [p, 1 - p])))  # the reference: scipy on [a, 1-a] vs [p, 1-p]
        div += nb / total * kl
        ece += nb / total * abs(a - p)
        g += 2 * nb * kl
        dof += 1
    if unit == "bits":
        div /= math.log(2)
    if math.isinf(div):
        assert math.isinf(s.divergence) and s.p_value == 0.0
    else:
        assert s.divergence == pytest.approx(div, rel=1e-9, abs=1e-12)
        assert s.divergence >= 0.0
        assert s.p_value == pytest.approx(stats.chi2.sf(g, dof), rel=1e-6, abs=1e-300)
        assert float(np.sum(s.terms)) == pytest.approx(s.divergence, rel=1e-9, abs=1e-12)
    assert s.ece == pytest.approx(ece, rel=1e-9, abs=1e-12)
    assert 0.0 <= s.ece <= 1.0 and s.dof == dof


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_bernoulli_kl_is_rel_entr_and_zero_only_when_equal(a, p):
    ref = special.rel_entr(a, p) + special.rel_entr(1 - a, 1 - p)
    got = float(bernoulli_kl(np.array([a]), np.array([p]))[0])
    assert got == pytest.approx(max(ref, 0.0), abs=1e-300) if math.isfinite(ref) else math.isinf(got)
    assert got >= 0.0
    assert float(bernoulli_kl(np.array([a]), np.array([a]))[0]) == 0.0


def test_calibrated_predictions_score_near_zero_and_a_sure_miss_is_infinite():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = rng.random(p.size) < p
    b = np.minimum((p * 10).astype(int), 9)
    s = score(np.bincount(b, minlength=10), np.bincount(b, p, 10), np.bincount(b, y.astype(float), 10))
    assert s.divergence < 1e-3 and s.ece < 0.01 and s.p_value > 1e-3
    s = score(np.array([10.0]), np.array([0.0]), np.array([1.0]))  # predicted 0, one click happened
    assert math.isinf(s.divergence) and s.p_value == 0.0


def test_bin_labels():
    assert bin_labels((0.0, 0.5, 1.0)) == ("[0, 0.5)", "[0.5, 1]")


# -- detection ---------------------------------------------------------------------------------

def test_an_over_confident_model_fires_within_two_windows_and_not_before():
    onset = T0 + 10 * WINDOW + 17.0  # inside window 10
    preds, outs = synth.calibration_traffic(30_000, T0, rate=25.0, seed=4, overconfident_from=onset,
                                            max_delay=DELAY)
    rows = [r for r in run(monitor(), preds, outs)]
    assert len(rows) >= 18
    before = [r for r in rows if r.window_end <= onset]
    assert before and all(r.transition == "none" and r.state in ("ok", "insufficient_data") for r in before)
    fired = [r for r in rows if r.transition == "fired"]
    assert fired, [(r.window_start, r.state, r.divergence) for r in rows]
    first = fired[0]
    assert onset < first.window_end <= onset + 2 * WINDOW  # the onset window or the next
    after = [r for r in rows if r.window_start >= onset]
    assert all(r.state == "critical" for r in after[:-1])  # stays up (the last window may be partial)
    d = first.to_dict()
    assert d["kind"] == "calibration" and d["name"] == "ctr" and d["unit"] == "nats"
    assert d["metric"] == "calibration_kl" and d["ece"] > 0.05 and d["p_value"] <= 1e-3
    worst = d["top_bins"][0]  # the model says ~0.9 where users click far less often
    assert worst["p_reference"] > worst["p_current"] or worst["p_reference"] < 0.2
    assert sum(d["counts"]) == d["n_current"] and len(d["bins"]) == 10


# -- the join ---------------------------------------------------------------------------------

def Pred(i: int, t: float, p: float) -> dict:
    return {"ts": T0 + t, "request_id": f"r{i}", "score": p}


def Out(i: int, t: float, y: object = True) -> dict:
    return {"ts": T0 + t, "request_id": f"r{i}", "clicked": y}


def test_outcomes_inside_the_delay_join_later_ones_are_counted_late():
    m = monitor(detector={"min_count": 1})
    preds = [Pred(1, 1, 0.9), Pred(2, 2, 0.9), Pred(3, 3, 0.9), Pred(4, 4, 0.2)]
    outs = [Out(1, 1 + DELAY - 0.5), Out(2, 2 + DELAY), Out(3, 3 + DELAY + 0.1), Out(4, 10, False)]
    rows = run(m, preds, outs)
    c = m.counts
    assert c["joined"] == 3 and c["late_outcome"] == 1 and c["unmatched_negative"] == 1
    (row,) = rows
    assert row.n_current == 4 and row.positives == 2  # r3's click came too late: a negative
    assert dict(row.join)["late_outcome"] == 1


def test_outcome_arriving_after_its_window_closed_is_late_and_nothing_crashes():
    m = monitor(detector={"min_count": 1})
    m.feed("predictions", m.prepare("predictions", enc([Pred(1, 1, 0.5), Pred(2, 5, 0.5)])))
    # watermark moves far past window 0 + max_delay: r1 and r2 are final (unmatched)
    m.feed("outcomes", m.prepare("outcomes", enc([Out(9, 200)])))
    rows = m.advance()
    assert [r.n_current for r in rows] == [2] and m.counts["unmatched_negative"] == 2
    m.feed("outcomes", m.prepare("outcomes", enc([Out(1, 10), Out(77, 11)])))  # both read long after their time
    m.feed("predictions", m.prepare("predictions", enc([Pred(3, 2, 0.5)])))  # its window is closed
    assert m.advance() == []
    m.flush()
    c = m.counts
    assert c["late_outcome"] == 2 and c["late_prediction"] == 1 and c["orphan_outcome"] == 1  # r9
    m2 = monitor(detector={"min_count": 1})  # a final prediction's id is remembered for max_delay
    m2.feed("predictions", m2.prepare("predictions", enc([Pred(1, 1, 0.5)])))
    m2.feed("outcomes", m2.prepare("outcomes", enc([Out(9, 1 + DELAY + 10)])))
    m2.advance()
    assert m2.counts["unmatched_negative"] == 1
    m2.feed("outcomes", m2.prepare("outcomes", enc([Out(1, 1 + DELAY + 5)])))
    m2.flush()
    assert m2.counts["late_outcome"] == 1 and m2.counts["orphan_outcome"] == 1


def test_an_outcome_before_its_prediction_still_joins():
    m = monitor(detector={"min_count": 1})
    m.feed("outcomes", m.prepare("outcomes", enc([Out(1, 3)])))  # read first (another topic ran ahead)
    m.feed("predictions", m.prepare("predictions", enc([Pred(1, 1, 0.7)])))
    (row,) = m.flush()
    assert m.counts["joined"] == 1 and row.positives == 1 and m.counts["orphan_outcome"] == 0


def test_in_the_daemon_nothing_is_final_before_both_streams_are_heard_from():
    """The daemon's watermark (per stream, per partition, idle timeouts in processing time)."""
    m = monitor(merged=False, detector={"min_count": 1})
    preds = enc([Pred(i, i, 0.5) for i in range(200)])
    parts = np.array([i % 2 for i in range(201)])  # two partitions; one invalid record among them
    m.feed("predictions", m.prepare("predictions", [b"{bad", *preds]), parts, now=100.0)
    assert m.advance(now=100.0) == [] and m.pending_sizes() == (200, 0)  # outcomes not heard from yet
    m.feed("outcomes", m.prepare("outcomes", enc([Out(1, 5), Out(150, 160)])), np.zeros(2, dtype=np.int64),
           now=101.0)
    rows = m.advance(now=101.0)  # W = min(199, 160): windows up to 160 - max_delay closed
    assert [r.window_start - T0 for r in rows] == [-20.0, 40.0] and m.counts["joined"] == 1
    assert m.pending_sizes()[0] == 200 - 131  # final: t + 30 <= 160
    # a silent outcomes partition stops holding the watermark after the stream's idle timeout (60 s)
    m.feed("predictions", m.prepare("predictions", enc([Pred(999, 400, 0.5)])), np.zeros(1, dtype=np.int64),
           now=150.0)
    assert m.advance(now=150.0) == []
    assert [r.window_start - T0 for r in m.advance(now=162.0)][:1] == [100.0] and m.watermark == T0 + 400
    m.forget_partitions("predictions", [0, 1])
    assert m.part_max["predictions"] == {}


def test_duplicates_are_deterministic():
    m = monitor(detector={"min_count": 1})
    preds = [Pred(1, 2, 0.8), Pred(1, 1, 0.3), Pred(1, 1, 0.9)]  # the earliest time wins; ties: the first to arrive
    outs = [Out(1, 20, False), Out(1, 10, True), Out(1, 25, True)]  # the earliest outcome wins
    m.feed("predictions", m.prepare("predictions", enc(preds)))
    m.feed("outcomes", m.prepare("outcomes", enc(outs)))
    (row,) = m.flush()
    assert m.counts["duplicate_prediction"] == 2 and m.counts["duplicate_outcome"] == 2
    assert row.n_current == 1 and row.positives == 1
    assert row.counts[3] == 1  # scored at 0.3


def test_unmatched_drop_leaves_predictions_without_outcome_out():
    m = monitor(unmatched="drop", detector={"min_count": 1})
    rows = run(m, [Pred(1, 1, 0.5), Pred(2, 2, 0.5)], [Out(1, 5)])
    assert m.counts["unmatched_dropped"] == 1 and rows[0].n_current == 1 and rows[0].positives == 1


def test_full_buffers_count_overflow_and_stay_bounded():
    m = monitor(max_pending=3, detector={"min_count": 1})
    m.feed("predictions", m.prepare("predictions", enc([Pred(i, 1 + i * 0.01, 0.5) for i in range(5)])))
    m.feed("outcomes", m.prepare("outcomes", enc([Out(100 + i, 2) for i in range(5)])))
    assert m.pending_sizes() == (3, 3)
    assert m.counts["overflow_prediction"] == 2 and m.counts["overflow_outcome"] == 2
    (row,) = m.flush()
    assert row.n_current == 3


def test_invalid_records_are_counted_never_raised():
    m = monitor(detector={"min_count": 1})
    bad_preds = [b"{not json", b"[1]", b'{"ts": 1.7e9, "score": 0.5}', b'{"ts": 1.7e9, "request_id": "a", "score": 1.5}',
                 b'{"ts": 1.7e9, "request_id": "a", "score": "high"}', b'{"request_id": "a", "score": 0.5}',
                 b'{"ts": 1.7e9, "request_id": "a"}', b"", b'{"ts": 1.7e9, "request_id": {"x": 1}, "score": 0.5}']
    bad_outs = [b'{"ts": 1.7e9, "request_id": "a", "clicked": "maybe"}', b'{"ts": 1.7e9, "request_id": "a"}',
                b'{"ts": 1.7e9, "clicked": 1}', b'{"ts": "x", "request_id": "a", "clicked": 1}']
    good = enc([Pred(1, 1, 0.5)])
    m.feed("predictions", m.prepare("predictions", bad_preds + good))
    m.feed("outcomes", m.prepare("outcomes", bad_outs + enc([Out(1, 2, 1)])))
    (row,) = m.flush()
    assert m.counts["invalid_prediction"] == len(bad_preds) and m.counts["invalid_outcome"] == len(bad_outs)
    assert m.counts["joined"] == 1 and row.positives == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["predictions", "outcomes"]),
                          st.one_of(st.binary(max_size=40),
                                    st.builds(lambda i, t, v: orjson.dumps({"ts": T0 + t, "request_id": f"r{i}",
                                                                            "score": v, "clicked": v}),
                                              st.integers(0, 20), st.floats(-5, 400), st.floats(-0.5, 1.5)))),
                max_size=60))
def test_any_input_in_any_order_is_accounted_and_never_crashes(records):
    m = monitor(merged=False, max_pending=8, detector={"min_count": 1})
    for i, (stream, value) in enumerate(records):
        m.feed(stream, m.prepare(stream, [value]), np.zeros(1, dtype=np.int64), now=float(i))
        for r in m.advance(now=float(i)):
            assert r.divergence is None or r.divergence >= 0
    m.flush()
    c = m.counts
    n_pred = sum(s == "predictions" for s, _ in records)
    assert c["prediction"] + c["invalid_prediction"] == n_pred
    # every accepted prediction ends one way: scored, dropped, late, duplicate or refused
    assert (c["joined"] + c["unmatched_negative"] + c["unmatched_dropped"] + c["late_prediction"]
            + c["duplicate_prediction"] + c["overflow_prediction"]) == c["prediction"]
    assert m.pending_sizes() == (0, 0)


# -- order, checkpoints ---------------------------------------------------------------------

def _rows(results) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k != "join"} for r in results]


def test_results_do_not_depend_on_chunking_or_which_stream_is_read_first():
    preds, outs = synth.calibration_traffic(6000, T0, rate=20.0, seed=7, overconfident_from=T0 + 150,
                                            max_delay=DELAY)
    a = _rows(run(monitor(), preds, outs, chunk=5.0))
    b = _rows(run(monitor(), preds, outs, chunk=41.0))
    c = _rows(run(monitor(), preds, outs, chunk=5.0, outcomes_first=True))
    assert a == b == c and len(a) >= 4


def run_counts(preds, outs):
    m = monitor()
    run(m, preds, outs, chunk=13.0)
    return m.counts


def test_snapshot_restore_mid_stream_gives_the_same_results():
    preds, outs = synth.calibration_traffic(6000, T0, rate=20.0, seed=8, overconfident_from=T0 + 150,
                                            max_delay=DELAY, late_share=0.1)
    whole = run(monitor(), preds, outs)
    cut = T0 + 137.0
    first = monitor()
    head = run(first, [e for e in preds if e["ts"] < cut], [e for e in outs if e["ts"] < cut], flush=False)
    second = monitor()
    second.restore(json.loads(json.dumps(first.snapshot())))
    tail = run(second, [e for e in preds if e["ts"] >= cut], [e for e in outs if e["ts"] >= cut])
    assert _rows(head + tail) == _rows(whole)  # (``join`` holds running totals at emission)
    assert second.counts == run_counts(preds, outs) and second.counts["late_outcome"] > 0
    other = monitor(bins=5)
    with pytest.raises(ValueError, match="checkpointed with"):
        other.restore(first.snapshot())


# -- config --------------------------------------------------------------------------------

@pytest.mark.parametrize("change, path", [
    ({"predictions": {"stream": "nope", "id": "i", "probability": "p"}}, "calibration[0].predictions.stream"),
    ({"outcomes": {"stream": "predictions", "id": "i", "label": "l"}}, "calibration[0].outcomes.stream"),
    ({"max_delay": "-1s"}, "calibration[0].max_delay"),
    ({"max_delay": None}, "calibration[0].max_delay"),
    ({"bins": 0}, "calibration[0].bins"),
    ({"bins": [0.1, 0.5, 1]}, "calibration[0].bins"),
    ({"bins": [0, 0.5, 0.4, 1]}, "calibration[0].bins"),
    ({"unmatched": "positive"}, "calibration[0].unmatched"),
    ({"max_pending": 0}, "calibration[0].max_pending"),
    ({"detector": {"metric": "js"}}, "calibration[0].detector.metric"),
    ({"detector": {"thresholds": {"warn": 0.2, "critical": 0.1}}}, "calibration[0].detector.thresholds.critical"),
    ({"name": "score"}, "calibration[0].name"),
    ({"colour": 1}, "calibration[0].colour"),
])
def test_bad_calibration_config_names_the_key_path(change, path):
    doc = config(**change)
    if change.get("max_delay", 0) is None:
        del doc["calibration"][0]["max_delay"]
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    assert exc.value.path == path


def test_calibration_config_defaults():
    cfg = parse_config(config(bins=[0, 0.1, 0.5, 1]))
    c = cfg.calibration[0]
    assert c.edges == (0.0, 0.1, 0.5, 1.0) and c.window == WINDOW and c.max_delay == DELAY
    assert c.unmatched == "negative" and c.detector.thresholds.warn == 0.02 and c.detector.min_count == 200
    doc = config()
    doc["calibration"].append(dict(doc["calibration"][0]))
    with pytest.raises(ConfigError, match="unique"):
        parse_config(doc)


# -- replay --------------------------------------------------------------------------------

def test_replay_merges_one_file_per_stream_and_emits_calibration_rows(tmp_path, capsys):
    onset = T0 + 163.0  # 22:16:03; the data ends at about 22:18:20
    preds, outs = synth.calibration_traffic(6000, T0, rate=20.0, seed=9, overconfident_from=onset,
                                            max_delay=DELAY, positives_only=True)
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(enc(preds)) + b"\n")
    (tmp_path / "o.jsonl").write_bytes(b"\n".join(enc(outs)) + b"\n")
    import yaml
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config()))
    out = io.StringIO()
    cfg = parse_config(config())
    summary = replay(cfg, None, "json", None, True, out,
                     inputs=[("predictions", str(tmp_path / "p.jsonl")), ("outcomes", str(tmp_path / "o.jsonl"))])
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    cal = [r for r in lines if r.get("kind") == "calibration"]
    assert cal and all(r["name"] == "ctr" and r["stream"] == "predictions" for r in cal)
    assert any(r["stream"] == "outcomes" for r in lines if "kind" not in r and "summary" not in r)
    fired = [r for r in cal if r["transition"] == "fired"]
    assert fired and "2023-11-14T22:16:00" <= fired[0]["window_start"] <= "2023-11-14T22:17:00"
    assert summary["calibration"]["ctr"]["joined"] == len(outs)
    assert summary["events"] == len(preds) + len(outs)
    # the command line: --input STREAM=PATH; the single-file form still works
    assert cli_main(["replay", "-c", str(tmp_path / "c.yaml"), "--input", f"predictions={tmp_path / 'p.jsonl'}",
                     "--input", f"outcomes={tmp_path / 'o.jsonl'}", "--format", "json"]) == 0
    text = capsys.readouterr().out
    assert text.count('"kind":"calibration"') == len(cal)
    assert cli_main(["replay", "-c", str(tmp_path / "c.yaml"), str(tmp_path / "p.jsonl")]) == 0
    assert "calibration" not in capsys.readouterr().out
    for bad in (["--input", "predictions"], ["--input", f"nope={tmp_path / 'p.jsonl'}"], []):
        try:
            code = cli_main(["replay", "-c", str(tmp_path / "c.yaml"), *bad])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
