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
    """Effect-size floors, in the detector's unit, on the *effect*: the divergence less
    the share sampling noise explains (for KL, minus its plug-in bias (K-1)/2 (1/n + 1/m)
    nats), so the floor on the raw divergence shrinks as windows grow (docs/quality.md)."""

    warn: float = 0.005
    critical: float = 0.05


@dataclass(frozen=True)
class Horizon:
    """A longer reference beside the headline one: the window ``lag`` windows back
    (``lag: 24`` with hourly windows is the same hour yesterday)."""

    lag: int

    @property
    def name(self) -> str:
        return f"lag{self.lag}"


@dataclass(frozen=True)
class Unusual:
    """The "unusual for this series" gate: a window may only be over warn when its effect
    has a robust z of at least ``min_z`` against the last ``history`` effects of the same
    series and horizon, once ``min_history`` are kept.  The z is (effect - median) over the
    history's upper-tail spread (Q_quantile - median) / Phi^-1(quantile).  ``min_z: null``
    turns the gate off (the z is still reported)."""

    history: int = 60
    min_history: int = 10
    quantile: float = 0.95
    min_z: float | None = 4.0


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
    max_p_value: float | None = None  # also require the raw p-value <= this; null = only the fdr gate
    fdr: float | None = 0.01  # Benjamini-Hochberg level over all tests of one closed window; null = off
    horizons: tuple[Horizon, ...] = (Horizon(6),)
    unusual: Unusual = field(default_factory=Unusual)
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
class EntitiesConfig:
    """Per-entity (e.g. per-user) interest drift (``streams[].entities``,
    :mod:`driftmon.monitors.entities`): each entity's distribution over the
    categories of ``feature`` in its current window against its previous window.

    Windows are event-time (``window_size`` seconds, aligned like the stream's
    windows; an entity with fewer than ``min_events`` keeps counting into the next
    one) or per entity (``last_events``: every N events of that entity).  A shift
    is ``adjusted divergence >= threshold`` (KL in nats between the two windows'
    distributions, each shrunk toward the population's by a Dirichlet prior of
    ``prior_strength`` pseudo-events) **and** the G-test p-value of the entity's two
    count vectors ``<= max_p_value``, with at least ``min_events`` in both windows.
    """

    key: str  # dotted path of the entity key, e.g. "user_id"
    feature: str  # dotted path of the categorical interest field, e.g. "item.category"
    window_size: float | None = 86400.0  # event-time window, seconds (None: last_events)
    last_events: int | None = None  # per-entity count windows of this many events
    min_events: int = 20  # in each of the two windows compared
    threshold: float = 0.3  # on the adjusted divergence, nats
    max_p_value: float = 0.001  # per-entity G-test p-value
    prior_strength: float | None = None  # Dirichlet pseudo-events toward the population (None: one per category)
    categories: tuple[str, ...] | None = None  # declared; otherwise learned up to max_categories
    max_categories: int = 64  # learned vocabulary size (further values count as __other__)
    max_entities: int = 1_000_000  # tracked at once; past it the least recently seen are evicted
    idle_ttl: float = 7 * 86400.0  # entities unseen this long (event time) are evicted
    topic: str | None = None  # Kafka topic for interest_shift records, keyed by entity
    top_bins: int = 3


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
    cluster_by: str | None = None  # events of one value are one cluster: p-values get a design effect
    cluster_max_pairs: int = 20_000  # distinct (cluster, value) pairs kept exactly per window and feature
    entities: EntitiesConfig | None = None  # per-entity interest drift (driftmon/monitors/entities.py)


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
    record_reader: str = "batch"  # kafka-python's records read a batch at a time (source/kafka_records.py) | kafka-python
    isolation_level: str = "read_committed"  # | read_uncommitted: also open and aborted transactions' records


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
class ScaleConfig:
    """Scale-out over several replicas (docs/scaling.md); ``Config.scale`` is None without it."""

    partials_topic: str = ""  # partial window summaries and progress marks, keyed by series
    changelog_topic: str | None = None  # per-partition stage state (compacted); default <partials_topic>-changelog
    reduce_group_id: str | None = None  # consumer group on the partials topic; default <kafka.group_id>-reduce
    partial_timeout: float = 300.0  # a window waiting this long for a source partition is emitted partial
    changelog_quiet: float = 1.0  # no marker back from the changelog: stop reading after max(this, 5 s) of silence


@dataclass(frozen=True)
class PredictionsRef:
    """Where a calibration's predictions are: a stream, the request id field and the
    predicted probability field (dotted paths)."""

    stream: str
    id: str
    probability: str


@dataclass(frozen=True)
class OutcomesRef:
    """Where a calibration's outcomes are: a stream, the request id field and the
    observed label field (0/1 or false/true)."""

    stream: str
    id: str
    label: str


@dataclass(frozen=True)
class CalibrationConfig:
    """One prediction-calibration monitor (driftmon/monitors/calibration.py): predictions
    joined with their outcomes by request id, binned by predicted probability, and each
    window (of prediction event time, ``window`` seconds) scored by the count-weighted
    Bernoulli KL between observed frequency and mean prediction per bin."""

    name: str
    predictions: PredictionsRef
    outcomes: OutcomesRef
    max_delay: float  # seconds of event time an outcome may follow its prediction
    edges: tuple[float, ...]  # bin edges over [0, 1], first 0 and last 1
    unmatched: str  # negative | drop: a prediction without an outcome by max_delay
    window: float  # tumbling window size, seconds of prediction event time
    max_pending: int  # bound on buffered predictions (and, apart, on buffered outcomes)
    detector: DetectorConfig


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
    scale: ScaleConfig | None = None  # scale-out: mapper + reducer stages (driftmon/scale)
    calibration: tuple[CalibrationConfig, ...] = ()

    def stream(self, name: str) -> StreamConfig:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)
