"""Typed, immutable configuration objects.

The YAML file is parsed exactly once (:mod:`driftmon.config.load`) into these
frozen dataclasses, which are then passed down to every stage.  No other
module reads YAML or the environment.  Durations are float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftmon.util.secrets import MASK, mask_url

SMOOTHING_METHODS = ("none", "additive", "floor")
TIMESTAMP_UNITS = ("s", "ms", "iso")


@dataclass(frozen=True)
class Smoothing:
    """Zero-bin handling; visible in every result, never a silent epsilon.

    ``none``: a bin with q = 0 < p makes KL +inf.  ``additive``: add ``alpha``
    pseudo-counts to every bin of both histograms (0.5 = Jeffreys prior).
    ``floor``: clip probabilities to at least ``floor`` and renormalise.
    """

    method: str = "additive"
    alpha: float = 0.5
    floor: float = 1e-6


@dataclass(frozen=True)
class Thresholds:
    warn: float = 0.05
    critical: float = 0.1


@dataclass(frozen=True)
class Hysteresis:
    """Fire after ``fire_after`` of the last ``of_last`` windows are over the
    warn threshold; resolve after ``resolve_after`` consecutive windows below."""

    fire_after: int = 1
    of_last: int = 1
    resolve_after: int = 1


@dataclass(frozen=True)
class DetectorConfig:
    metric: str = "kl"
    unit: str = "nats"
    reference: str = "previous"  # previous | pinned
    smoothing: Smoothing = field(default_factory=Smoothing)
    min_count: int = 500
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_p_value: float | None = 0.001
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    permutations: int = 999  # Monte Carlo size of the small-sample p-value
    top_bins: int = 5
    renyi_alpha: float = 2.0  # order of metric renyi (> 0, != 1; order 1 is kl)


@dataclass(frozen=True)
class FeatureConfig:
    name: str
    field: str  # dotted path into the event, e.g. "item.category"
    type: str  # categorical | numeric
    detector: DetectorConfig
    categories: tuple[str, ...] | None = None  # declared vocabulary
    top_k: int | None = None  # open vocabulary: bins are the top_k values of the pooled windows
    edges: tuple[float, ...] | None = None  # explicit numeric edges
    num_bins: int | None = None  # quantile bins of the pooled windows
    max_values: int = 5000  # open vocabulary: distinct values counted exactly per summary
    relative_accuracy: float = 0.01  # numeric summaries: relative accuracy of the bucket grid


@dataclass(frozen=True)
class TimestampConfig:
    """Where the event time is and how to read it.  Events stamped more than
    ``max_future_skew`` seconds ahead of the wall clock are rejected
    (``bad_timestamp``): one bogus far-future event would otherwise push the
    watermark ahead and make every later event late."""

    field: str = "ts"
    unit: str = "s"
    max_future_skew: float | None = 3600.0


@dataclass(frozen=True)
class WindowConfig:
    """Event-time windows (``size``/``slide``/``allowed_lateness`` seconds) or,
    when ``count`` is set, count windows of that many events per segment."""

    size: float | None = 300.0
    slide: float | None = 300.0
    allowed_lateness: float = 0.0
    count: int | None = None
    idle_timeout: float = 60.0  # a source partition silent this long stops holding the watermark


    @property
    def is_count(self) -> bool:
        return self.count is not None


@dataclass(frozen=True)
class StreamConfig:
    name: str
    topics: tuple[str, ...]
    timestamp: TimestampConfig
    window: WindowConfig
    features: tuple[FeatureConfig, ...]
    segment_by: tuple[str, ...] = ()
    max_segments: int = 20
    include_overall: bool = True


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    group_id: str = "driftmon"
    client_id: str = "driftmon"
    auto_offset_reset: str = "earliest"
    max_poll_interval_ms: int = 300000
    max_poll_records: int = 5000
    poll_timeout_ms: int = 500
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    dead_letter_topic: str | None = None
    decode_workers: int = 0  # 1: decode in a second process, overlapping kafka-python (docs/benchmarks.md)
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    client: str = "kafka-python"  # kafka-python | confluent-kafka (driftmon.source.clients, docs/kafka.md)


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:9108"
    ready_broker_timeout: float = 30.0  # /readyz false if broker unseen this long

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str
    secret: str | None = None
    timeout: float = 5.0
    max_attempts: int = 0  # 0 = retry until delivered (bounded by the outbox)
    backoff_initial: float = 0.5
    backoff_max: float = 60.0

    def __repr__(self) -> str:  # never print the secret, nor credentials/tokens in the URL
        return f"WebhookConfig(name={self.name!r}, url={mask_url(self.url)!r}, secret={MASK if self.secret else None})"


@dataclass(frozen=True)
class AlertsConfig:
    webhooks: tuple[WebhookConfig, ...] = ()
    outbox_max: int = 10000


@dataclass(frozen=True)
class StateConfig:
    dir: str = "./state"
    checkpoint_interval: float = 5.0


@dataclass(frozen=True)
class SinksConfig:
    jsonl: str | None = None
    kafka_topic: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"  # text | json


@dataclass(frozen=True)
class LifecycleConfig:
    grace_period: float = 10.0
    close_windows_on_shutdown: bool = False


@dataclass(frozen=True)
class Config:
    streams: tuple[StreamConfig, ...]
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    notices: tuple[str, ...] = ()  # deprecations etc., logged at start (never errors)

    def stream(self, name: str) -> StreamConfig:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)
