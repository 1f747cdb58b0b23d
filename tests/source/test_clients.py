"""The kafka.client registry: the choice is validated at config time, naming the key."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from driftmon.config import ConfigError, parse_config
from driftmon.source import clients

BASE = {"streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "categories": ["a"]}]}]}


def test_default_client_is_kafka_python_and_confluent_kafka_is_accepted():
    assert parse_config(BASE).kafka.client == "kafka-python"
    assert parse_config({**BASE, "kafka": {"client": "confluent-kafka"}}).kafka.client == "confluent-kafka"


def test_an_unknown_client_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"kafka\.client.*kafka-python.*confluent-kafka"):
        parse_config({**BASE, "kafka": {"client": "aiokafka"}})


def test_confluent_kafka_without_the_extra_is_a_config_error_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "confluent_kafka" else real(name, *a))
    with pytest.raises(ConfigError, match=r"kafka\.client: confluent-kafka is not installed \(pip install 'driftmon\[fast\]'\)"):
        parse_config({**BASE, "kafka": {"client": "confluent-kafka"}})
    assert parse_config(BASE).kafka.client == "kafka-python"  # the default needs nothing extra


def test_every_registered_client_module_has_the_names_the_registry_uses():
    for name, (module, _, _) in clients.CLIENTS.items():
        mod = importlib.import_module(module)
        assert mod.LIBRARY == name
        for attr in ("Source", "Producer", "Reader", "probe_cluster"):
            assert callable(getattr(mod, attr)), (name, attr)
