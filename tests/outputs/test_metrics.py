"""driftmon.outputs.metrics: render the registry, parse it back as Prometheus would."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftmon import __version__
from driftmon.detect.result import DriftResult, HorizonResult
from driftmon.monitors.base import MonitorStep
from driftmon.outputs.metrics import METRIC_NAMES, SCALE_METRIC_NAMES, Metrics, alert_state_value
from driftmon.vocabulary import WEBHOOK_OUTCOMES


def result(**kw) -> DriftResult:
    base = dict(
        stream="recs",
        feature="category",
        segment=None,
        window_start=1_700_000_000.0,
        window_end=1_700_000_300.0,
        metric="kl",
        unit="nats",
        divergence=0.02,
        p_value=0.3,
        n_current=1200,
        n_reference=1100,
        state="ok",
        transition="none",
        warn_threshold=0.05,
        critical_threshold=0.1,
    )
    base.update(kw)
    return DriftResult(**base)


def samples(m: Metrics) -> dict[tuple[str, frozenset], float]:
    """{(sample name, frozenset(labels)): value} of everything rendered."""
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(smp, name, **labels) -> float:
    return smp[(name, frozenset(labels.items()))]


def test_observe_result_exports_every_per_key_series():
    m = Metrics()
    m.observe_result(result(divergence=0.07, p_value=0.0004, state="warn"))
    smp = samples(m)
    key = dict(stream="recs", feature="category", segment="")
    assert value(smp, "driftmon_divergence", **key, metric="kl") == pytest.approx(0.07)
    assert value(smp, "driftmon_p_value", **key) == pytest.approx(0.0004)
    assert value(smp, "driftmon_alert_state", **key) == 1
    assert value(smp, "driftmon_threshold", **key, level="warn") == 0.05
    assert value(smp, "driftmon_threshold", **key, level="critical") == 0.1
    assert value(smp, "driftmon_window_events", **key) == 1200
    assert value(smp, "driftmon_reference_events", **key) == 1100
    # transitions counted from zero, even before the first one
    assert value(smp, "driftmon_alerts_total", **key, transition="fired") == 0
    assert value(smp, "driftmon_alerts_total", **key, transition="resolved") == 0


def test_infinite_divergence_and_missing_p_value():
    m = Metrics()
    m.observe_result(
        result(feature="brand", segment="mobile", metric="kl", divergence=math.inf, p_value=None,
               state="critical", transition="fired", severity="critical")
    )
    smp = samples(m)
    key = dict(stream="recs", feature="brand", segment="mobile")
    assert value(smp, "driftmon_divergence", **key, metric="kl") == math.inf
    assert math.isnan(value(smp, "driftmon_p_value", **key))
    assert value(smp, "driftmon_alert_state", **key) == 2
    assert value(smp, "driftmon_alerts_total", **key, transition="fired") == 1
    # the raw text carries +Inf / NaN the way Prometheus expects
    text = m.render().decode()
    assert 'driftmon_divergence{feature="brand",metric="kl",segment="mobile",stream="recs"} +Inf' in text
    assert 'driftmon_p_value{feature="brand",segment="mobile",stream="recs"} NaN' in text


def test_not_computable_divergence_is_nan_not_stale():
    m = Metrics()
    m.observe_result(result(divergence=0.2, state="critical"))
    m.observe_result(result(divergence=None, p_value=None, state="insufficient_data", n_current=12))
    smp = samples(m)
    key = dict(stream="recs", feature="category", segment="")
    assert math.isnan(value(smp, "driftmon_divergence", **key, metric="kl"))
    assert value(smp, "driftmon_alert_state", **key) == 0
    assert value(smp, "driftmon_window_events", **key) == 12


@pytest.mark.parametrize(
    "state,severity,expected",
    [
        ("ok", None, 0),
        ("warn", None, 1),
        ("critical", None, 2),
        ("insufficient_data", None, 0),
        ("no_reference", None, 0),
        # an active alert's severity wins: held open by hysteresis ...
        ("ok", "critical", 2),
        ("ok", "warning", 1),
        # ... or fired as warning while this window is critical
        ("critical", "warning", 1),
    ],
)
def test_alert_state_mapping(state, severity, expected):
    assert alert_state_value(result(state=state, severity=severity)) == expected


def test_alert_transitions_accumulate():
    m = Metrics()
    for tr in ("fired", "none", "resolved", "fired"):
        m.observe_result(result(transition=tr))
    smp = samples(m)
    key = dict(stream="recs", feature="category", segment="")
    assert value(smp, "driftmon_alerts_total", **key, transition="fired") == 2
    assert value(smp, "driftmon_alerts_total", **key, transition="resolved") == 1
    assert ("driftmon_alerts_total", frozenset({**key, "transition": "none"}.items())) not in smp


def test_counters_and_process_gauges():
    m = Metrics()
    m.init_stream("recs", reasons=("invalid_json",))
    m.count_events("recs", 10)
    m.count_decoded("recs", 7)
    m.count_rejected("recs", "missing_field", 2)
    m.count_rejected("recs", "missing_field")
    m.count_late("recs", 4)
    m.window_closed("recs", 1_700_000_300.0)
    m.window_closed("recs", 1_700_000_600.0)
    m.set_lag("events", 3, 1234)
    m.rebalanced("driftmon")
    m.rebalanced("driftmon")
    m.rebalanced("driftmon-reduce")
    m.webhook_outcome("ops", "delivered")
    m.webhook_outcome("ops", "retry")
    m.webhook_outcome("ops", "retry")
    m.set_outbox_size("ops", 5)
    m.checkpoint_done(1_700_000_601.5)
    m.set_ready(True)
    smp = samples(m)
    assert value(smp, "driftmon_events_total", stream="recs") == 10
    assert value(smp, "driftmon_consumer_rebalances_total", group="driftmon") == 2
    assert value(smp, "driftmon_consumer_rebalances_total", group="driftmon-reduce") == 1
    assert value(smp, "driftmon_events_decoded_total", stream="recs") == 7
    assert value(smp, "driftmon_events_rejected_total", stream="recs", reason="missing_field") == 3
    assert value(smp, "driftmon_events_rejected_total", stream="recs", reason="invalid_json") == 0
    assert value(smp, "driftmon_events_late_total", stream="recs") == 4
    assert value(smp, "driftmon_windows_closed_total", stream="recs") == 2
    assert value(smp, "driftmon_last_window_close_timestamp_seconds", stream="recs") == 1_700_000_600.0
    assert value(smp, "driftmon_consumer_lag", topic="events", partition="3") == 1234
    assert value(smp, "driftmon_webhook_deliveries_total", receiver="ops", outcome="retry") == 2
    assert value(smp, "driftmon_webhook_outbox_size", receiver="ops") == 5
    assert value(smp, "driftmon_checkpoint_timestamp_seconds") == 1_700_000_601.5
    assert value(smp, "driftmon_ready") == 1
    assert value(smp, "driftmon_build_info", version=__version__) == 1
    m.set_ready(False)
    assert value(samples(m), "driftmon_ready") == 0


class _Calls:
    """A Metrics that records which of its attributes the test used."""

    def __init__(self, m: Metrics) -> None:
        self.m, self.used = m, set()

    def __getattr__(self, name):
        self.used.add(name)
        return getattr(self.m, name)


PUBLIC_METHODS = {n for n in dir(Metrics) if not n.startswith("_") and callable(getattr(Metrics, n))}


def exercised(scale: bool = True) -> Metrics:
    """A Metrics through every public method (``scale``: including the scale-out ones)."""
    m = Metrics()
    c = _Calls(m)
    c.observe_result(result(horizons=(HorizonResult("previous", 1000, 0.2, 0.19, 1e-9, 2e-9, 7.5, "critical"),)))
    c.observe_result(result(segment="gone"))
    c.forget("recs", "category", "gone")
    c.init_stream("s", ("invalid_json",))
    c.count_events("s")
    c.count_decoded("s")
    c.count_rejected("s", "invalid_json")
    c.count_late("s")
    c.window_closed("s")
    c.init_partition("t", 0)
    c.set_lag("t", 0, 1)
    c.set_lag("t", 1, 1)
    c.forget_partition("t", 1)
    c.offset_out_of_range("t", 0, "beyond_end")
    c.rebalanced("g")
    c.webhook_outcome("r", WEBHOOK_OUTCOMES[0])
    c.set_outbox_size("r", 0)
    c.checkpoint_done()
    c.set_ready(True)
    c.count_truncated("s", "f")
    c.init_outputs(["jsonl"], ("too_large",), ("delivered",))
    c.output_error("jsonl")
    c.output_dropped("kafka_topic", "too_large")
    c.dead_letter("truncated")
    c.init_entities("s")
    c.observe_monitor("s", MonitorStep("entities", tracked=3, evicted=Counter(idle=1), compared=2, shifts=1,
                                       divergences=np.array([0.05, 0.7]), windows_closed=1))
    c.init_calibration("c")
    c.observe_calibration("c", {"joined": 3}, (1, 0), 0.1, scored=True)
    if scale:
        c.init_scale(["s"])
        c.scale_partials("sent")
        c.scale_windows("s", "complete")
        c.scale_changelog_write("map")
    c.render()
    scale_methods = {n for n in PUBLIC_METHODS if "scale" in n}
    assert c.used == (PUBLIC_METHODS if scale else PUBLIC_METHODS - scale_methods), \
        "a public method of Metrics is not exercised here: call it, and list what it exports"
    return m


def driftmon_names(m: Metrics) -> set[str]:
    return {name for name, _ in samples(m) if name.startswith("driftmon_") and not name.endswith("_created")}


def test_metric_names_is_exactly_what_is_exposed():
    """Exercise every public method; the driftmon_* sample names equal METRIC_NAMES, plus
    SCALE_METRIC_NAMES once the scale-out series are initialised (only then)."""
    m = exercised(scale=False)
    assert driftmon_names(m) == set(METRIC_NAMES)
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    # process metrics ride along on the private registry
    assert any(name.startswith("process_") or name == "python_info" for name, _ in samples(m))
    assert driftmon_names(exercised(scale=True)) == set(METRIC_NAMES) | set(SCALE_METRIC_NAMES)
    assert not set(METRIC_NAMES) & set(SCALE_METRIC_NAMES)


ROOT = Path(__file__).resolve().parents[2]


def documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """docs/operations.md's metric reference: {sample name: (type, labels)}; a histogram row
    (``x_bucket`` / ``_count`` / ``_sum``) is keyed by its ``_bucket`` name."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## Metric reference"):]
    section = section[:section.index("\n## ", 1)]
    rows = re.findall(r"^\| `(driftmon_[a-z_]+)`[^|]*\| (\w+) \|([^|]*)\|", section, re.M)
    assert len(rows) > 30, "the metric reference table was not found"
    return {name: (kind, frozenset(x.strip() for x in labels.split(",") if x.strip()))
            for name, kind, labels in rows}


def exported_metrics(m: Metrics) -> dict[str, tuple[str, frozenset[str]]]:
    """The same shape from the registry: every driftmon sample's family type and label names."""
    out: dict[str, tuple[str, set[str]]] = {}
    for fam in m.registry.collect():
        for s in fam.samples:
            if not s.name.startswith("driftmon_") or s.name.endswith("_created"):
                continue
            name = fam.name + "_bucket" if fam.type == "histogram" else s.name
            out.setdefault(name, (fam.type, set()))[1].update(s.labels)
    return {name: (kind, frozenset(labels)) for name, (kind, labels) in out.items()}


def test_the_metric_reference_documents_every_exported_metric_with_its_type_and_labels():
    assert exported_metrics(exercised()) == documented_metrics()


def test_every_metric_name_in_docs_and_deploy_is_exported():
    """The docs, the README and the operator bundle (dashboard, rules, manifests) name only
    metrics that a Metrics exports (a sample or a family name)."""
    m = exercised()
    known = driftmon_names(m) | {fam.name for fam in m.registry.collect()}
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"),
             *(p for p in (ROOT / "deploy").rglob("*") if p.is_file())]
    used: dict[str, set[str]] = {}
    for p in files:
        for name in re.findall(r"\bdriftmon_[a-z_]*[a-z]\b", p.read_text(errors="replace")):
            used.setdefault(name, set()).add(str(p.relative_to(ROOT)))
    assert "driftmon_divergence" in used and "driftmon_scale_windows_total" in used
    unknown = {n: sorted(where) for n, where in used.items() if n not in known}
    assert not unknown, f"metric names in docs/deploy that driftmon does not export: {unknown}"


def test_registries_are_independent():
    a, b = Metrics(), Metrics()
    a.count_events("recs", 5)
    assert ("driftmon_events_total", frozenset({"stream": "recs"}.items())) in samples(a)
    assert ("driftmon_events_total", frozenset({"stream": "recs"}.items())) not in samples(b)


def test_forget_drops_a_keys_gauges_only():
    m = Metrics()
    m.observe_result(result(segment="mobile"))
    m.observe_result(result(segment="mobile", metric="js", divergence=0.01))
    m.observe_result(result(segment="web"))
    m.set_lag("events", 0, 7)
    m.forget("recs", "category", "mobile")
    m.forget_partition("events", 0)
    m.forget("recs", "category", "never-seen")  # no error
    smp = samples(m)
    segs = {dict(lbl).get("segment") for name, lbl in smp if name == "driftmon_divergence"}
    assert segs == {"web"}
    assert not any(name == "driftmon_consumer_lag" for name, _ in smp)
    # a forgotten key comes back cleanly
    m.observe_result(result(segment="mobile", divergence=0.5))
    assert value(samples(m), "driftmon_divergence", stream="recs", feature="category",
                 segment="mobile", metric="kl") == 0.5


def test_a_segment_named_empty_is_not_the_overall_series():
    m = Metrics()
    m.observe_result(result(segment=None, divergence=0.01))
    m.observe_result(result(segment="", divergence=0.5, transition="fired"))  # e.g. from an old checkpoint
    smp = samples(m)
    overall = dict(stream="recs", feature="category", segment="")
    empty = dict(stream="recs", feature="category", segment="__empty__")
    assert value(smp, "driftmon_divergence", **overall, metric="kl") == 0.01
    assert value(smp, "driftmon_divergence", **empty, metric="kl") == 0.5
    assert value(smp, "driftmon_alerts_total", **overall, transition="fired") == 0
    assert value(smp, "driftmon_alerts_total", **empty, transition="fired") == 1
    m.forget("recs", "category", "")
    segs = {dict(lbl).get("segment") for name, lbl in samples(m) if name == "driftmon_divergence"}
    assert segs == {""}


def test_entity_metrics_are_aggregates_without_an_entity_label():
    """Per-entity interest drift exports per-stream aggregates only: the histogram of a whole
    step's divergences (bucket counts by np.histogram), tracked, evicted, compared, shifts."""
    m = Metrics(process_metrics=False)
    m.init_entities("s")
    m.observe_monitor("s", MonitorStep("entities", tracked=10, evicted=Counter(idle=2, capacity=1), compared=4,
                                       shifts=2, divergences=np.array([0.005, 0.3, 0.31, np.inf]),
                                       windows_closed=1))
    smp = samples(m)
    assert value(smp, "driftmon_entities_tracked", stream="s") == 10
    assert value(smp, "driftmon_entities_evicted_total", stream="s", reason="idle") == 2
    assert value(smp, "driftmon_entities_evicted_total", stream="s", reason="capacity") == 1
    assert value(smp, "driftmon_entity_windows_compared_total", stream="s") == 4
    assert value(smp, "driftmon_entity_shifts_total", stream="s") == 2
    assert value(smp, "driftmon_entity_window_shifts", stream="s") == 2
    assert value(smp, "driftmon_entity_divergence_bucket", stream="s", le="0.01") == 1
    assert value(smp, "driftmon_entity_divergence_bucket", stream="s", le="0.3") == 2  # le: 0.3 <= 0.3
    assert value(smp, "driftmon_entity_divergence_bucket", stream="s", le="0.5") == 3
    assert value(smp, "driftmon_entity_divergence_bucket", stream="s", le="+Inf") == 3  # inf is not observed
    assert value(smp, "driftmon_entity_divergence_count", stream="s") == 3
    assert value(smp, "driftmon_entity_divergence_sum", stream="s") == pytest.approx(0.615)
    labels = {k for name, lab in smp if name.startswith("driftmon_entit") for k, _ in lab}
    assert labels <= {"stream", "reason", "le"}
def test_each_horizon_is_a_labelled_series_and_forget_drops_them():
    m = Metrics()
    m.observe_result(result(horizons=(HorizonResult("previous", 1000, 0.2, 0.19, 1e-9, 2e-9, 7.5, "critical"),
                                      HorizonResult("lag6", 1000, 0.3, 0.28, 1e-12, 4e-12, None, "critical"))))
    got = {(name, labels["horizon"]): v for name, labels, v in
           ((n, dict(lbl), v) for n, lbl, v in samples_with_labels(m)) if "horizon" in labels}
    assert got[("driftmon_effect", "lag6")] == 0.28 and got[("driftmon_p_adjusted", "previous")] == 2e-9
    assert math.isnan(got[("driftmon_unusual_z", "lag6")]) and got[("driftmon_unusual_z", "previous")] == 7.5
    r = result()
    m.forget(r.stream, r.feature, r.segment)
    assert not [1 for n, lbl, _ in samples_with_labels(m) if "horizon" in dict(lbl)]


def samples_with_labels(m: Metrics):
    for fam in m.registry.collect():
        for s in fam.samples:
            yield s.name, tuple(s.labels.items()), s.value
