"""Configuration: parsed once from YAML (:mod:`.yamlsafe` reads the file within
size, nesting and alias limits; :mod:`.load` and :mod:`.streams` check every section
through the path-aware, ranged nodes of :mod:`.node` and the name rules of
:mod:`.names`) into the frozen dataclasses of :mod:`.model`, which are then passed
down to every stage.

``from driftmon.config import Config, parse_config`` is the usual entry point.
"""

from driftmon.config.load import load_config, parse_config, redacted
from driftmon.config.model import (
    AlertsConfig,
    CalibrationConfig,
    Config,
    DetectorConfig,
    EntitiesConfig,
    FeatureConfig,
    HttpConfig,
    Hysteresis,
    KafkaConfig,
    LifecycleConfig,
    LoggingConfig,
    ScaleConfig,
    SinksConfig,
    Smoothing,
    StateConfig,
    StreamConfig,
    Thresholds,
    TimestampConfig,
    WebhookConfig,
    WindowConfig,
)
from driftmon.config.node import ConfigError, parse_duration

__all__ = [
    "AlertsConfig",
    "CalibrationConfig",
    "Config",
    "ConfigError",
    "DetectorConfig",
    "EntitiesConfig",
    "FeatureConfig",
    "HttpConfig",
    "Hysteresis",
    "KafkaConfig",
    "LifecycleConfig",
    "LoggingConfig",
    "ScaleConfig",
    "SinksConfig",
    "Smoothing",
    "StateConfig",
    "StreamConfig",
    "Thresholds",
    "TimestampConfig",
    "WebhookConfig",
    "WindowConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "redacted",
]
