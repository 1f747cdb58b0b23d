"""Parse and validate a YAML config into :class:`driftmon.config.Config`, once.

Every error names the key path and what was expected, e.g.
``streams[0].features[2].edges: expected a list of increasing numbers, got 'abc'``.
``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the
environment mapping passed in (the CLI passes ``os.environ``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml

from driftmon.config import calibration as calibration_section
from driftmon.config import model as c
from driftmon.config import streams as sections
from driftmon.config.names import check_bootstrap, check_listen, check_log_level, check_topic, check_url
from driftmon.config.node import ConfigError, _Node, _show, parse_duration
from driftmon.config.yamlsafe import MAX_BYTES, YAMLLimitError, load_yaml
from driftmon.util.secrets import redact_field
from driftmon.vocabulary import ISOLATION_LEVELS, KAFKA_CLIENTS, RECORD_READERS

__all__ = ["ConfigError", "load_config", "parse_config", "parse_duration", "redacted"]


def _simple(cls: type, node: _Node, rules: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> Any:
    """Fill a flat dataclass from a mapping, type-checking against its defaults.

    ``rules`` gives per-field bounds for the accessor (``minimum``, ``above``,
    ``maximum``, ``choices``, ``nonempty``); integers default to ``>= 0`` and
    floats are durations ``>= 0``.  An optional string given as ``""`` (as
    ``${VAR:-}`` gives) is ``None``.
    """
    kw: dict[str, Any] = dict(overrides)
    rules = rules or {}
    for f in dataclasses.fields(cls):
        if f.name in kw or not node.has(f.name):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        rule = rules.get(f.name, {})
        if isinstance(default, bool):
            kw[f.name] = node.flag(f.name, default)
        elif isinstance(default, int):
            kw[f.name] = node.integer(f.name, default, **{"minimum": 0, **rule})
        elif isinstance(default, float):
            kw[f.name] = node.duration(f.name, default, **rule)
        elif isinstance(default, tuple):
            kw[f.name] = node.str_list(f.name, default, **rule)
        else:
            value = node.text(f.name, default, **rule)
            kw[f.name] = None if default is None and value == "" else value
    node.done()
    return cls(**kw)


_MS = {"minimum": 1}
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
_KAFKA_RULES: dict[str, dict[str, Any]] = {
    "bootstrap_servers": {"nonempty": True},
    "group_id": {"nonempty": True},
    "client_id": {"nonempty": True},
    "auto_offset_reset": {"choices": ("earliest", "latest")},
    "max_poll_interval_ms": _MS,
    "max_poll_records": _MS,
    "poll_timeout_ms": {"minimum": 1, "maximum": 60_000},  # a stop waits for the poll in progress
    "session_timeout_ms": _MS,
    "heartbeat_interval_ms": _MS,
    "decode_workers": {"maximum": 1},
    "security_protocol": {"choices": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")},
    "client": {"choices": KAFKA_CLIENTS},
    "record_reader": {"choices": RECORD_READERS},
    "isolation_level": {"choices": ISOLATION_LEVELS},
}


def _kafka(node: _Node) -> c.KafkaConfig:
    kafka = _simple(c.KafkaConfig, node, _KAFKA_RULES)
    kafka = dataclasses.replace(kafka, bootstrap_servers=check_bootstrap(kafka.bootstrap_servers,
                                                                         "kafka.bootstrap_servers"))
    if kafka.heartbeat_interval_ms >= kafka.session_timeout_ms:
        raise ConfigError("kafka.heartbeat_interval_ms", f"expected less than session_timeout_ms "
                          f"({kafka.session_timeout_ms}), got {kafka.heartbeat_interval_ms}")
    if kafka.dead_letter_topic is not None:
        check_topic(kafka.dead_letter_topic, "kafka.dead_letter_topic")
    if kafka.security_protocol.startswith("SASL_"):
        if kafka.sasl_mechanism == "OAUTHBEARER":
            raise ConfigError("kafka.sasl_mechanism", "OAUTHBEARER needs a token provider object, which a config "
                              f"file cannot give; use one of {', '.join(SASL_MECHANISMS)}")
        if kafka.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError("kafka.sasl_mechanism", f"expected one of {', '.join(SASL_MECHANISMS)} with "
                              f"{kafka.security_protocol}, got {kafka.sasl_mechanism!r}")
        if kafka.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                kafka.sasl_plain_username and kafka.sasl_plain_password):
            raise ConfigError("kafka.sasl_plain_username", f"{kafka.sasl_mechanism} needs sasl_plain_username "
                              "and sasl_plain_password (e.g. ${KAFKA_PASSWORD} from the environment)")
    _check_client(kafka)
    return kafka


def _check_client(kafka: c.KafkaConfig) -> None:
    """``kafka.client``'s library must be installed (confluent-kafka is the ``fast`` extra)."""
    from driftmon.source.clients import missing_client

    missing = missing_client(kafka.client)
    if missing:
        raise ConfigError("kafka.client", missing)


_POSITIVE = {"above": 0.0}
_WEBHOOK_RULES: dict[str, dict[str, Any]] = {
    "timeout": _POSITIVE, "backoff_initial": _POSITIVE, "backoff_max": _POSITIVE,
}


def _alerts(node: _Node) -> c.AlertsConfig:
    hooks_raw = node.raw("webhooks", [])
    if not isinstance(hooks_raw, list):
        raise ConfigError("alerts.webhooks", f"expected a list of webhooks, got {_show(hooks_raw)}")
    hooks: list[c.WebhookConfig] = []
    for i, h in enumerate(hooks_raw):
        hn = _Node(h, f"alerts.webhooks[{i}]", node.env)
        name = hn.text("name", nonempty=True)
        url = check_url(hn.text("url"), hn.sub("url"))
        hook = _simple(c.WebhookConfig, hn, _WEBHOOK_RULES, name=name, url=url, secret=hn.text("secret", None) or None)
        if hook.backoff_max < hook.backoff_initial:
            raise ConfigError(hn.sub("backoff_max"), f"expected at least backoff_initial ({hook.backoff_initial}s), "
                              f"got {hook.backoff_max}s")
        if any(other.name == hook.name for other in hooks):
            raise ConfigError(hn.sub("name"), f"webhook names must be unique (each has its own outbox), "
                              f"{hook.name!r} repeats")
        hooks.append(hook)
    alerts = c.AlertsConfig(tuple(hooks), node.integer("outbox_max", 10000, minimum=1))
    node.done()
    return alerts


def _check_output_topics(cfg: c.Config) -> None:
    """Writing dead letters or results into a topic the daemon reads would feed it its own output."""
    inputs = {t: s.name for s in cfg.streams for t in s.topics}
    outputs = [("kafka.dead_letter_topic", cfg.kafka.dead_letter_topic), ("sinks.kafka_topic", cfg.sinks.kafka_topic)]
    outputs += [(f"streams[{i}].entities.topic", s.entities.topic) for i, s in enumerate(cfg.streams)
                if s.entities is not None]
    for path, topic in outputs:
        if topic is not None and topic in inputs:
            raise ConfigError(path, f"{topic!r} is also an input topic of stream {inputs[topic]!r}: "
                                    "the daemon would read its own output")
    if cfg.kafka.dead_letter_topic is not None and cfg.kafka.dead_letter_topic == cfg.sinks.kafka_topic:
        raise ConfigError("sinks.kafka_topic", "expected a topic other than kafka.dead_letter_topic "
                                               "(results and rejected input would be mixed)")


def _scale(node: _Node, cfg: c.Config) -> c.ScaleConfig:
    """``scale:``: the partials topic (required), the changelog topic and the reducers' group."""
    if not node.has("partials_topic"):
        raise ConfigError("scale.partials_topic", "expected the partials topic (scale-out needs one)")
    sc = _simple(c.ScaleConfig, node, {"partials_topic": {"nonempty": True}, "partial_timeout": _POSITIVE,
                                       "changelog_quiet": _POSITIVE})
    sc = dataclasses.replace(sc, changelog_topic=sc.changelog_topic or f"{sc.partials_topic}-changelog",
                             reduce_group_id=sc.reduce_group_id or f"{cfg.kafka.group_id}-reduce")
    inputs = {t for s in cfg.streams for t in s.topics}
    outputs = {cfg.kafka.dead_letter_topic, cfg.sinks.kafka_topic}
    for key in ("partials_topic", "changelog_topic"):
        topic = getattr(sc, key)
        check_topic(topic, f"scale.{key}")
        if topic in inputs or topic in outputs:
            raise ConfigError(f"scale.{key}", f"{topic!r} is already an input or output topic: expected its own topic")
    if sc.partials_topic == sc.changelog_topic:
        raise ConfigError("scale.changelog_topic", "expected a topic other than scale.partials_topic")
    if sc.reduce_group_id == cfg.kafka.group_id:
        raise ConfigError("scale.reduce_group_id", "expected a group other than kafka.group_id")
    for i, s in enumerate(cfg.streams):
        if s.window.count is not None:
            raise ConfigError(f"streams[{i}].window.count", "scale-out needs event-time windows (count windows "
                                                            "close in arrival order, which partitions do not share)")
        if s.entities is not None and s.entities.last_events is not None:
            raise ConfigError(f"streams[{i}].entities.window.last_events",
                              "scale-out needs event-time entity windows (window: {size: ...}): a window of an "
                              "entity's last N events depends on the order its events arrive in, which "
                              "partitions do not share, so no merge of them can equal one process")
        if s.entities is not None and s.entities.categories is None:
            raise ConfigError(f"streams[{i}].entities.categories",
                              "scale-out needs a declared vocabulary: a learned one numbers categories (and "
                              "chooses which count as __other__) in arrival order, which partitions do not share")
    if cfg.calibration:
        raise ConfigError("calibration", "calibration monitors do not run with scale: yet (the join needs both "
                                         "streams in one process); run them in a daemon without scale:")
    return sc


def parse_config(data: Any, env: Mapping[str, str] | None = None) -> c.Config:
    """Validate a loaded YAML document and build the immutable Config."""
    root = _Node(data, "", env or {})
    detector = sections.detector(root.node("detector"), c.DetectorConfig()) if root.has("detector") \
        else c.DetectorConfig()
    raw_streams = root.raw("streams")
    if not isinstance(raw_streams, list) or not raw_streams:
        raise ConfigError("streams", f"expected a non-empty list of streams, got {_show(raw_streams)}")
    notices: list[str] = []
    streams = tuple(sections.stream(_Node(s, f"streams[{i}]", root.env), detector, notices)
                    for i, s in enumerate(raw_streams))
    names = [s.name for s in streams]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError("streams", f"stream names must be unique, {dup!r} repeats")
    kafka = _kafka(root.node("kafka"))
    http = _simple(c.HttpConfig, root.node("http"), {"ready_broker_timeout": _POSITIVE})
    check_listen(http.listen, "http.listen")
    alerts = _alerts(root.node("alerts"))
    state = _simple(c.StateConfig, root.node("state"), {"dir": {"nonempty": True},
                                                         "checkpoint_interval": _POSITIVE})
    sinks = _simple(c.SinksConfig, root.node("sinks"))
    if sinks.kafka_topic is not None:
        check_topic(sinks.kafka_topic, "sinks.kafka_topic")
    logging = _simple(c.LoggingConfig, root.node("logging"), {"format": {"choices": ("text", "json")}})
    logging = dataclasses.replace(logging, level=check_log_level(logging.level, "logging.level"))
    cfg = c.Config(
        streams=streams,
        detector=detector,
        kafka=kafka,
        http=http,
        alerts=alerts,
        state=state,
        sinks=sinks,
        logging=logging,
        lifecycle=_simple(c.LifecycleConfig, root.node("lifecycle")),
        notices=tuple(notices),
        calibration=calibration_section.calibrations(root, streams),
    )
    _check_output_topics(cfg)
    if root.has("scale"):
        cfg = dataclasses.replace(cfg, scale=_scale(root.node("scale"), cfg))
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
