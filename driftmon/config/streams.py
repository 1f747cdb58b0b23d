"""The ``streams`` and ``detector`` sections: what is counted, in which windows,
and how two windows are compared.

Every value is checked against what the pipeline will do with it, not only its
type: numbers are finite, counts and sizes are bounded (a bound is there when a
larger value would exhaust memory or stall the daemon), names are usable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from driftmon.config import model as c
from driftmon.config.names import check_field_path, check_topic
from driftmon.config.node import ConfigError, _Node, _show
from driftmon.detect.registry import METRICS, REGISTRY, UNITS, metrics_for

# Bounds on sizes: past these a value does not fail at once but makes every
# comparison or event cost (or hold) proportionally more.
MAX_PERMUTATIONS = 100_000  # Monte Carlo draws per comparison (default 999)
MAX_NUM_BINS = 10_000  # quantile bins per numeric feature
MAX_VALUES = 1_000_000  # distinct values counted exactly per open-vocabulary summary
MAX_SEGMENTS = 10_000  # segment values per stream
MAX_WINDOWS_PER_EVENT = 1_000  # size / slide of a hopping window: each event is counted into that many
MIN_SLIDE = 0.001  # 1 ms: window indices are event time / slide in int64
MAX_CLUSTER_PAIRS = 10_000_000  # (cluster, value) pairs kept exactly per window summary
MAX_ALPHA = 1e6  # additive smoothing pseudo-count: bins * alpha must stay far from float overflow
MAX_LAG = 1_000  # detector.horizons[].lag: each series keeps that many window summaries
MAX_UNUSUAL_HISTORY = 100_000  # detector.unusual.history: effects kept per series and horizon


def detector(node: _Node, base: c.DetectorConfig) -> c.DetectorConfig:
    kw: dict[str, Any] = {}
    if node.has("metric"):
        kw["metric"] = node.text("metric", choices=METRICS)
    if node.has("unit"):
        kw["unit"] = node.text("unit", choices=UNITS)
    if node.has("reference"):
        kw["reference"] = node.text("reference", choices=("previous", "pinned"))
    if node.has("min_count"):
        kw["min_count"] = node.integer("min_count", None, minimum=1)
    if node.has("max_p_value"):
        p = node.raw("max_p_value")
        ok = p is None or (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 1)
        if not ok:
            raise ConfigError(node.sub("max_p_value"), f"expected a probability in (0, 1] or null, got {_show(p)}")
        kw["max_p_value"] = None if p is None else float(p)
    if node.has("fdr"):
        q = node.raw("fdr")
        ok = q is None or (isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q < 1)
        if not ok:
            raise ConfigError(node.sub("fdr"), f"expected a false discovery rate in (0, 1) or null, got {_show(q)}")
        kw["fdr"] = None if q is None else float(q)
    if node.has("horizons"):
        kw["horizons"] = _horizons(node)
    if node.has("unusual"):
        kw["unusual"] = _unusual(node.node("unusual"), base.unusual)
    if node.has("permutations"):
        kw["permutations"] = node.integer("permutations", None, minimum=0, maximum=MAX_PERMUTATIONS)
    if node.has("top_bins"):
        kw["top_bins"] = node.integer("top_bins", None, minimum=0)
    if node.has("renyi_alpha"):
        kw["renyi_alpha"] = order = node.number("renyi_alpha", None, minimum=0.0)
        if order is None or not 0 < order < float("inf") or order == 1:
            raise ConfigError(node.sub("renyi_alpha"), f"expected a finite order > 0 other than 1 (order 1 is kl), got {order}")
    if node.has("smoothing"):
        s = node.node("smoothing")
        sm = base.smoothing
        method = s.text("method", sm.method, choices=c.SMOOTHING_METHODS)
        alpha = s.number("alpha", sm.alpha, minimum=0.0, maximum=MAX_ALPHA)
        floor = s.number("floor", sm.floor, minimum=0.0, maximum=1.0)
        if method == "additive" and alpha <= 0:
            raise ConfigError(s.sub("alpha"), f"expected a pseudo-count > 0 for additive smoothing, got {alpha}")
        if method == "floor" and not 0 < floor < 1:
            raise ConfigError(s.sub("floor"), f"expected a probability floor in (0, 1), got {floor}")
        s.done()
        kw["smoothing"] = c.Smoothing(method, alpha, floor)
    if node.has("thresholds"):
        t = node.node("thresholds")
        warn = t.number("warn", base.thresholds.warn, minimum=0.0)
        crit = t.number("critical", base.thresholds.critical, minimum=0.0)
        if crit < warn:
            raise ConfigError(t.sub("critical"), f"expected critical >= warn ({warn}), got {crit}")
        t.done()
        kw["thresholds"] = c.Thresholds(warn, crit)
    if node.has("hysteresis"):
        h = node.node("hysteresis")
        fire = h.integer("fire_after", base.hysteresis.fire_after, minimum=1)
        of_last = h.integer("of_last", max(fire, base.hysteresis.of_last) if not h.has("fire_after") else fire,
                            minimum=1)
        if of_last < fire:
            raise ConfigError(h.sub("of_last"), f"expected of_last >= fire_after ({fire}), got {of_last}")
        resolve = h.integer("resolve_after", base.hysteresis.resolve_after, minimum=1)
        h.done()
        kw["hysteresis"] = c.Hysteresis(fire, of_last, resolve)
    node.done()
    return dataclasses.replace(base, **kw)


def _horizons(node: _Node) -> tuple[c.Horizon, ...]:
    raw = node.raw("horizons")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(node.sub("horizons"), f"expected a list of {{lag: N}} or null, got {_show(raw)}")
    out: list[c.Horizon] = []
    for i, item in enumerate(raw):
        h = _Node(item, f"{node.sub('horizons')}[{i}]", node.env)
        if not h.has("lag"):
            raise ConfigError(h.path, f"expected {{lag: N}} (the window N windows back), got {_show(item)}")
        lag = h.integer("lag", None, minimum=2, maximum=MAX_LAG)
        h.done()
        if any(x.lag == lag for x in out):
            raise ConfigError(h.sub("lag"), f"lag {lag} is listed twice")
        out.append(c.Horizon(lag))
    return tuple(out)


def _unusual(u: _Node, base: c.Unusual) -> c.Unusual:
    history = u.integer("history", base.history, minimum=2, maximum=MAX_UNUSUAL_HISTORY)
    min_history = u.integer("min_history", min(base.min_history, history), minimum=2, maximum=history)
    quantile = u.number("quantile", base.quantile, above=0.5)
    if not quantile < 1:
        raise ConfigError(u.sub("quantile"), f"expected a quantile in (0.5, 1), got {quantile}")
    min_z = u.number("min_z", base.min_z, nullable=True)
    u.done()
    return c.Unusual(history, min_history, quantile, min_z)


def _increasing(value: Any, path: str) -> tuple[float, ...]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) >= 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if ok:
        try:
            edges = tuple(float(v) for v in value)
        except OverflowError:  # an integer too large for a float
            edges = (float("nan"),)
        if all(a < b for a, b in zip(edges, edges[1:])) and all(e == e and abs(e) != float("inf") for e in edges):
            return edges
    raise ConfigError(path, f"expected a list of at least 2 finite, strictly increasing numbers, got {_show(value)}")


def _feature(node: _Node, det: c.DetectorConfig) -> c.FeatureConfig:
    name = node.text("name", nonempty=True)
    field = check_field_path(node.text("field", name), node.sub("field"))
    ftype = node.text("type", choices=("categorical", "numeric"))
    det = detector(node.node("detector"), det) if node.has("detector") else det
    kw: dict[str, Any] = {}
    if ftype == "categorical":
        if node.has("categories") == node.has("top_k"):
            raise ConfigError(node.path, "a categorical feature needs exactly one of `categories` (a list) "
                                         "or `top_k` (an int)")
        if node.has("categories"):
            cats = node.str_list("categories")
            if not cats or len(set(cats)) != len(cats):
                raise ConfigError(node.sub("categories"), "expected a non-empty list of distinct strings")
            kw["categories"] = cats
        else:
            kw["top_k"] = node.integer("top_k", None, minimum=1, maximum=MAX_VALUES)
            kw["max_values"] = node.integer("max_values", 5000, minimum=1, maximum=MAX_VALUES)
            if kw["max_values"] < kw["top_k"]:
                raise ConfigError(node.sub("max_values"), f"expected at least top_k ({kw['top_k']}), "
                                  f"got {kw['max_values']}")
    else:
        bins = node.raw("bins", None)
        if node.has("edges"):
            if bins not in (None, "explicit"):
                raise ConfigError(node.sub("bins"), "give either `edges` or `bins: quantile`, not both")
            kw["edges"] = _increasing(node.raw("edges"), node.sub("edges"))
        elif bins == "quantile":
            kw["num_bins"] = node.integer("num_bins", 10, minimum=2, maximum=MAX_NUM_BINS)
            kw["relative_accuracy"] = node.number("relative_accuracy", 0.01, above=0.0, maximum=0.5)
        elif isinstance(bins, (list, tuple)):
            kw["edges"] = _increasing(bins, node.sub("bins"))
        else:
            raise ConfigError(node.sub("bins"), "a numeric feature needs `edges: [..]` or `bins: quantile`, "
                                                f"got {_show(bins)}")
    kind = "categorical" if ftype == "categorical" else "numeric_edges" if "edges" in kw else "numeric_quantile"
    if kind not in REGISTRY[det.metric].features:  # e.g. wasserstein on a categorical feature
        own = isinstance(node.raw("detector"), dict) and "metric" in node.raw("detector")
        raise ConfigError(f"{node.sub('detector')}.metric" if own else "detector.metric",
                          f"{det.metric} does not apply to {node.path} ({name!r}, {kind.replace('_', ' ')}); "
                          f"expected one of {', '.join(metrics_for(kind))}")
    node.done(f"a {ftype} feature")
    return c.FeatureConfig(name=name, field=field, type=ftype, detector=det, **kw)


def _window(node: _Node) -> c.WindowConfig:
    if node.has("count"):
        count = node.integer("count", None, minimum=1)
        node.done("count windows")
        return c.WindowConfig(size=None, slide=None, allowed_lateness=0.0, count=count)
    size = node.duration("size", 300.0, minimum=MIN_SLIDE)
    slide = node.duration("slide", size, minimum=MIN_SLIDE)
    lateness = node.duration("allowed_lateness", 0.0)
    idle = node.duration("idle_timeout", 60.0)
    ratio = size / slide
    if abs(ratio - round(ratio)) > 1e-9 or ratio < 1:
        raise ConfigError(node.sub("slide"), f"expected a slide that divides the size ({size}s), got {slide}s")
    if round(ratio) > MAX_WINDOWS_PER_EVENT:
        raise ConfigError(node.sub("slide"), f"expected a slide of at least size / {MAX_WINDOWS_PER_EVENT} "
                                             f"(each event is counted into size / slide windows), got {slide}s "
                                             f"for a size of {size}s")
    node.done("event-time windows")
    return c.WindowConfig(size=size, slide=slide, allowed_lateness=lateness, idle_timeout=idle)


MAX_ENTITIES = 50_000_000  # tracked entities per stream (each holds ~2 x categories x 2 bytes of counts)
MAX_ENTITY_CATEGORIES = 4096  # columns of the per-entity count matrices
MAX_LAST_EVENTS = 1_000_000


def entities(node: _Node) -> c.EntitiesConfig:
    """``streams[].entities``: per-entity interest drift (:class:`~driftmon.config.model.EntitiesConfig`)."""
    key = check_field_path(node.text("key", nonempty=True), node.sub("key"))
    feature = check_field_path(node.text("feature", nonempty=True), node.sub("feature"))
    if key == feature:
        raise ConfigError(node.sub("feature"), f"expected a field other than the entity key ({key!r})")
    w = node.node("window")
    if w.has("size") == w.has("last_events"):
        raise ConfigError(w.path, "expected exactly one of `size` (a duration) or `last_events` (an integer)")
    size, last = None, None
    if w.has("size"):
        size = w.duration("size", None, minimum=MIN_SLIDE)
    else:
        last = w.integer("last_events", None, minimum=2, maximum=MAX_LAST_EVENTS)
    w.done("an entity window")
    min_events = node.integer("min_events", 20, minimum=1, maximum=MAX_LAST_EVENTS)
    if last is not None and min_events > last:
        raise ConfigError(node.sub("min_events"), f"expected at most window.last_events ({last}), got {min_events}")
    threshold = node.number("threshold", 0.3, minimum=0.0)
    p = node.number("max_p_value", 0.001, above=0.0, maximum=1.0)
    prior = node.number("prior_strength", None, minimum=0.0, maximum=1e9, nullable=True)
    cats = None
    if node.has("categories"):
        cats = node.str_list("categories")
        if not cats or len(set(cats)) != len(cats):
            raise ConfigError(node.sub("categories"), "expected a non-empty list of distinct strings")
        if len(cats) > MAX_ENTITY_CATEGORIES - 1:
            raise ConfigError(node.sub("categories"), f"expected at most {MAX_ENTITY_CATEGORIES - 1} categories, "
                                                      f"got {len(cats)}")
    max_cats = node.integer("max_categories", 64, minimum=1, maximum=MAX_ENTITY_CATEGORIES - 1)
    max_entities = node.integer("max_entities", 1_000_000, minimum=1, maximum=MAX_ENTITIES)
    ttl = node.duration("idle_ttl", 7 * 86400.0, above=0.0)
    topic = node.text("topic", None)
    if topic == "":
        topic = None
    if topic is not None:
        check_topic(topic, node.sub("topic"))
    top_bins = node.integer("top_bins", 3, minimum=0, maximum=100)
    node.done("entities")
    return c.EntitiesConfig(key=key, feature=feature, window_size=size, last_events=last, min_events=min_events,
                            threshold=threshold, max_p_value=p, prior_strength=prior, categories=cats,
                            max_categories=max_cats, max_entities=max_entities, idle_ttl=ttl, topic=topic,
                            top_bins=top_bins)


def _distinct(values: tuple[str, ...], path: str, what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ConfigError(path, f"{what} must be unique, {v!r} repeats")
        seen.add(v)


def _cluster(node: _Node) -> tuple[str | None, int]:
    """``cluster_by`` (a field path, or null) and ``cluster_max_pairs``."""
    raw = node.raw("cluster_by", None)
    cluster_by = None if raw is None else check_field_path(node.text("cluster_by", nonempty=True),
                                                           node.sub("cluster_by"))
    pairs = node.integer("cluster_max_pairs", 20_000, minimum=1, maximum=MAX_CLUSTER_PAIRS)
    if cluster_by is None and node.has("cluster_max_pairs"):
        raise ConfigError(node.sub("cluster_max_pairs"), "only applies with `cluster_by` (a field)")
    return cluster_by, pairs


def stream(node: _Node, det: c.DetectorConfig, notices: list[str]) -> c.StreamConfig:
    name = node.text("name", nonempty=True)
    if node.has("topic") and node.has("topics"):
        raise ConfigError(node.sub("topics"), "give `topic` or `topics`, not both")
    key = "topics" if node.has("topics") else "topic"
    topics = node.str_list("topics") if node.has("topics") else node.str_list("topic", (name,))
    if not topics:
        raise ConfigError(node.sub(key), "expected at least one topic")
    note = "" if node.has(key) else f" (the default: the stream's name; set {node.sub('topic')})"
    for i, t in enumerate(topics):
        check_topic(t, node.sub(key) if len(topics) == 1 and key == "topic" else f"{node.sub(key)}[{i}]", note)
    _distinct(topics, node.sub(key), "topics")
    ts = node.node("timestamp")
    timestamp = c.TimestampConfig(
        check_field_path(ts.text("field", "ts"), ts.sub("field")),
        ts.text("unit", "s", choices=c.TIMESTAMP_UNITS),
        ts.duration("max_future_skew", 3600.0, nullable=True),
    )
    ts.done()
    window = _window(node.node("window"))
    raw_features = node.raw("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise ConfigError(node.sub("features"), f"expected a non-empty list of features, got {_show(raw_features)}")
    features = tuple(
        _feature(_Node(f, f"{node.sub('features')}[{i}]", node.env), det) for i, f in enumerate(raw_features)
    )
    _distinct(tuple(f.name for f in features), node.sub("features"), "feature names")
    segment_by = node.str_list("segment_by", ())
    for i, s in enumerate(segment_by):
        check_field_path(s, f"{node.sub('segment_by')}[{i}]")
    _distinct(segment_by, node.sub("segment_by"), "segment fields")
    include_overall = node.flag("include_overall", True)
    cluster_by, cluster_pairs = _cluster(node)
    out = c.StreamConfig(
        name=name,
        topics=topics,
        timestamp=timestamp,
        window=window,
        features=features,
        segment_by=segment_by,
        max_segments=node.integer("max_segments", 20, minimum=1, maximum=MAX_SEGMENTS),
        include_overall=include_overall,
        cluster_by=cluster_by,
        cluster_max_pairs=cluster_pairs,
        entities=entities(node.node("entities")) if node.has("entities") else None,
    )
    if node.has("learn_events"):  # bins are no longer learned: accepted so old configs keep working
        node.integer("learn_events", None, minimum=0, nullable=True)
        notices.append(f"{node.sub('learn_events')} is no longer used and can be removed: bins are chosen "
                       "when two windows are compared, from both windows' counts")
    node.done()
    return out
