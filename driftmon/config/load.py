"""Parse and validate a YAML config into :class:`driftmon.config.Config`, once.

Every error names the key path and what was expected, e.g.
``streams[0].features[2].edges: expected a list of increasing numbers, got 'abc'``.
``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the
environment mapping passed in (the CLI passes ``os.environ``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import yaml

from driftmon.config import model as c
from driftmon.config.node import ConfigError, _Node, _show, parse_duration
from driftmon.config.yamlsafe import MAX_BYTES, YAMLLimitError, load_yaml
from driftmon.detect.registry import METRICS, UNITS
from driftmon.util.secrets import redact_field

__all__ = ["ConfigError", "load_config", "parse_config", "parse_duration", "redacted"]


def _detector(node: _Node, base: c.DetectorConfig) -> c.DetectorConfig:
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
        p = node.number("max_p_value", None, minimum=0.0)
        if p is not None and p > 1:
            raise ConfigError(node.sub("max_p_value"), f"expected a probability in [0, 1] or null, got {p}")
        kw["max_p_value"] = p
    if node.has("permutations"):
        kw["permutations"] = node.integer("permutations", None, minimum=0)
    if node.has("top_bins"):
        kw["top_bins"] = node.integer("top_bins", None, minimum=0)
    if node.has("smoothing"):
        s = node.node("smoothing")
        sm = base.smoothing
        method = s.text("method", sm.method, choices=c.SMOOTHING_METHODS)
        alpha = s.number("alpha", sm.alpha, minimum=0.0)
        floor = s.number("floor", sm.floor, minimum=0.0)
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
        of_last = h.integer("of_last", max(fire, base.hysteresis.of_last) if not h.has("fire_after") else fire, minimum=1)
        if of_last < fire:
            raise ConfigError(h.sub("of_last"), f"expected of_last >= fire_after ({fire}), got {of_last}")
        resolve = h.integer("resolve_after", base.hysteresis.resolve_after, minimum=1)
        h.done()
        kw["hysteresis"] = c.Hysteresis(fire, of_last, resolve)
    node.done()
    return dataclasses.replace(base, **kw)


def _increasing(value: Any, path: str) -> tuple[float, ...]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) >= 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if ok:
        edges = tuple(float(v) for v in value)
        if all(a < b for a, b in zip(edges, edges[1:])) and all(e == e and abs(e) != float("inf") for e in edges):
            return edges
    raise ConfigError(path, f"expected a list of at least 2 finite, strictly increasing numbers, got {_show(value)}")


def _feature(node: _Node, detector: c.DetectorConfig) -> c.FeatureConfig:
    name = node.text("name")
    field = node.text("field", name)
    ftype = node.text("type", choices=("categorical", "numeric"))
    det = _detector(node.node("detector"), detector) if node.has("detector") else detector
    kw: dict[str, Any] = {}
    if ftype == "categorical":
        if node.has("categories") == node.has("top_k"):
            raise ConfigError(node.path, "a categorical feature needs exactly one of `categories` (a list) or `top_k` (an int)")
        if node.has("categories"):
            cats = node.str_list("categories")
            if not cats or len(set(cats)) != len(cats):
                raise ConfigError(node.sub("categories"), "expected a non-empty list of distinct strings")
            kw["categories"] = cats
        else:
            kw["top_k"] = node.integer("top_k", None, minimum=1)
            kw["max_values"] = node.integer("max_values", 5000, minimum=1)
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
            kw["num_bins"] = node.integer("num_bins", 10, minimum=2)
            accuracy = node.number("relative_accuracy", 0.01, minimum=0.0)
            if not 0.0 < accuracy <= 0.5:
                raise ConfigError(node.sub("relative_accuracy"), f"expected a number in (0, 0.5], got {accuracy}")
            kw["relative_accuracy"] = accuracy
        elif isinstance(bins, (list, tuple)):
            kw["edges"] = _increasing(bins, node.sub("bins"))
        else:
            raise ConfigError(node.sub("bins"), f"a numeric feature needs `edges: [..]` or `bins: quantile`, got {_show(bins)}")
    node.done()
    return c.FeatureConfig(name=name, field=field, type=ftype, detector=det, **kw)


def _window(node: _Node) -> c.WindowConfig:
    if node.has("count"):
        count = node.integer("count", None, minimum=1)
        node.done()
        return c.WindowConfig(size=None, slide=None, allowed_lateness=0.0, count=count)
    size = node.duration("size", 300.0)
    slide = node.duration("slide", size)
    lateness = node.duration("allowed_lateness", 0.0)
    idle = node.duration("idle_timeout", 60.0)
    if size <= 0 or slide <= 0:
        raise ConfigError(node.sub("size"), "expected positive window size and slide")
    ratio = size / slide
    if abs(ratio - round(ratio)) > 1e-9 or ratio < 1:
        raise ConfigError(node.sub("slide"), f"expected a slide that divides the size ({size}s), got {slide}s")
    node.done()
    return c.WindowConfig(size=size, slide=slide, allowed_lateness=lateness, idle_timeout=idle)


def _stream(node: _Node, detector: c.DetectorConfig, notices: list[str]) -> c.StreamConfig:
    name = node.text("name")
    if node.has("topic") and node.has("topics"):
        raise ConfigError(node.sub("topics"), "give `topic` or `topics`, not both")
    topics = node.str_list("topics") if node.has("topics") else node.str_list("topic", (name,))
    ts = node.node("timestamp")
    timestamp = c.TimestampConfig(
        ts.text("field", "ts"), ts.text("unit", "s", choices=c.TIMESTAMP_UNITS), ts.duration("max_future_skew", 3600.0)
    )
    ts.done()
    window = _window(node.node("window"))
    raw_features = node.raw("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise ConfigError(node.sub("features"), f"expected a non-empty list of features, got {_show(raw_features)}")
    features = tuple(
        _feature(_Node(f, f"{node.sub('features')}[{i}]", node.env), detector) for i, f in enumerate(raw_features)
    )
    names = [f.name for f in features]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(node.sub("features"), f"feature names must be unique, {dup!r} repeats")
    out = c.StreamConfig(
        name=name,
        topics=topics,
        timestamp=timestamp,
        window=window,
        features=features,
        segment_by=node.str_list("segment_by", ()),
        max_segments=node.integer("max_segments", 20, minimum=1),
        include_overall=node.flag("include_overall", True),
    )
    if node.has("learn_events"):  # bins are no longer learned: accepted so old configs keep working
        node.integer("learn_events", None, minimum=0)
        notices.append(f"{node.sub('learn_events')} is no longer used and can be removed: bins are chosen "
                       "when two windows are compared, from both windows' counts")
    node.done()
    return out


def _simple(cls: type, node: _Node, **overrides: Any) -> Any:
    """Fill a flat dataclass from a mapping, type-checking against its defaults."""
    kw: dict[str, Any] = dict(overrides)
    for f in dataclasses.fields(cls):
        if f.name in kw or not node.has(f.name):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            kw[f.name] = node.flag(f.name, default)
        elif isinstance(default, int):
            kw[f.name] = node.integer(f.name, default, minimum=0)
        elif isinstance(default, float):
            kw[f.name] = node.duration(f.name, default)
        elif isinstance(default, tuple):
            kw[f.name] = node.str_list(f.name, default)
        else:
            kw[f.name] = node.text(f.name, default)
    node.done()
    return cls(**kw)


def parse_config(data: Any, env: Mapping[str, str] | None = None) -> c.Config:
    """Validate a loaded YAML document and build the immutable Config."""
    root = _Node(data, "", env or {})
    detector = _detector(root.node("detector"), c.DetectorConfig()) if root.has("detector") else c.DetectorConfig()
    raw_streams = root.raw("streams")
    if not isinstance(raw_streams, list) or not raw_streams:
        raise ConfigError("streams", f"expected a non-empty list of streams, got {_show(raw_streams)}")
    notices: list[str] = []
    streams = tuple(_stream(_Node(s, f"streams[{i}]", root.env), detector, notices)
                    for i, s in enumerate(raw_streams))
    names = [s.name for s in streams]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError("streams", f"stream names must be unique, {dup!r} repeats")
    kafka = _simple(c.KafkaConfig, root.node("kafka"))
    if kafka.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError("kafka.security_protocol", f"expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, got {kafka.security_protocol!r}")
    if kafka.decode_workers > 1:
        raise ConfigError("kafka.decode_workers", f"expected 0 or 1, got {kafka.decode_workers}")
    if kafka.security_protocol.startswith("SASL_"):
        mechanisms = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
        if kafka.sasl_mechanism not in mechanisms:
            raise ConfigError("kafka.sasl_mechanism", f"expected one of {', '.join(mechanisms)} with "
                              f"{kafka.security_protocol}, got {kafka.sasl_mechanism!r}")
        if kafka.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                kafka.sasl_plain_username and kafka.sasl_plain_password):
            raise ConfigError("kafka.sasl_plain_username", f"{kafka.sasl_mechanism} needs sasl_plain_username "
                              "and sasl_plain_password (e.g. ${KAFKA_PASSWORD} from the environment)")
    http = _simple(c.HttpConfig, root.node("http"))
    if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}", http.listen):
        raise ConfigError("http.listen", f"expected host:port, got {http.listen!r}")
    alerts_node = root.node("alerts")
    hooks_raw = alerts_node.raw("webhooks", [])
    if not isinstance(hooks_raw, list):
        raise ConfigError("alerts.webhooks", f"expected a list of webhooks, got {_show(hooks_raw)}")
    hooks = []
    for i, h in enumerate(hooks_raw):
        hn = _Node(h, f"alerts.webhooks[{i}]", root.env)
        hook = _simple(c.WebhookConfig, hn, name=hn.text("name"), url=hn.text("url"), secret=hn.text("secret", None) or None)
        if not re.match(r"^https?://", hook.url):
            raise ConfigError(f"alerts.webhooks[{i}].url", "expected an http:// or https:// URL")
        hooks.append(hook)
    alerts = c.AlertsConfig(tuple(hooks), alerts_node.integer("outbox_max", 10000, minimum=1))
    alerts_node.done()
    cfg = c.Config(
        streams=streams,
        detector=detector,
        kafka=kafka,
        http=http,
        alerts=alerts,
        state=_simple(c.StateConfig, root.node("state")),
        sinks=_simple(c.SinksConfig, root.node("sinks")),
        logging=_simple(c.LoggingConfig, root.node("logging")),
        lifecycle=_simple(c.LifecycleConfig, root.node("lifecycle")),
        notices=tuple(notices),
    )
    if cfg.logging.format not in ("text", "json"):
        raise ConfigError("logging.format", f"expected text or json, got {cfg.logging.format!r}")
    root.done()
    return cfg


def load_config(path: str, env: Mapping[str, str] | None = None) -> c.Config:
    """Read a YAML file and parse it (see :func:`parse_config`).

    At most :data:`~driftmon.config.yamlsafe.MAX_BYTES` are read; the file must be
    UTF-8 and within the alias and nesting limits of :mod:`driftmon.config.yamlsafe`.
    """
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = load_yaml(text)
    except YAMLLimitError as exc:
        raise ConfigError("", f"config {path} {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    return parse_config(data, env)


def redacted(cfg: c.Config) -> dict[str, Any]:
    """The config as plain data with every secret replaced by ``***``."""

    def walk(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out = {}
            for f in dataclasses.fields(obj):
                out[f.name] = walk(redact_field(f.name, getattr(obj, f.name)))
            return out
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        return obj

    return walk(cfg)
