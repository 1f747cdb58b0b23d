"""streams[].entities: parsed into a frozen EntitiesConfig; every bad value names its key path."""

from __future__ import annotations

import dataclasses

import pytest

from driftmon.config import ConfigError, EntitiesConfig, parse_config
from driftmon.service.checkpoint import config_fingerprint


def doc(entities) -> dict:
    return {"streams": [{"name": "interactions", "topic": "events",
                         "features": [{"name": "c", "field": "item.category", "type": "categorical", "top_k": 5}],
                         "entities": entities}]}


def test_the_issue_keys_parse_into_a_frozen_dataclass():
    e = parse_config(doc({"key": "user_id", "feature": "item.category", "window": {"size": "1h"}, "min_events": 30,
                          "threshold": 0.5, "max_entities": 5000, "idle_ttl": "2d", "topic": "user-shifts"})
                     ).streams[0].entities
    assert e == EntitiesConfig(key="user_id", feature="item.category", window_size=3600.0, last_events=None,
                               min_events=30, threshold=0.5, max_entities=5000, idle_ttl=172800.0, topic="user-shifts")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.threshold = 1.0  # type: ignore[misc]
    e2 = parse_config(doc({"key": "u", "feature": "g", "window": {"last_events": 50}, "prior_strength": 0,
                           "categories": ["a", "b"], "max_p_value": 0.01, "topic": ""})).streams[0].entities
    assert (e2.window_size, e2.last_events, e2.prior_strength, e2.categories, e2.topic) == (None, 50, 0.0, ("a", "b"),
                                                                                            None)


def test_a_stream_without_entities_has_none_and_keeps_its_checkpoint_fingerprint():
    plain = {"streams": [{"name": "interactions", "topic": "events",
                          "features": [{"name": "c", "field": "item.category", "type": "categorical", "top_k": 5}]}]}
    cfg = parse_config(plain)
    assert cfg.streams[0].entities is None
    with_ent = parse_config(doc({"key": "user_id", "feature": "item.category", "window": {"size": "1h"}}))
    assert config_fingerprint(cfg) != config_fingerprint(with_ent)
    tuned = parse_config(doc({"key": "user_id", "feature": "item.category", "window": {"size": "1h"}, "threshold": 1}))
    assert config_fingerprint(tuned) == config_fingerprint(with_ent)  # tuning keeps the state


@pytest.mark.parametrize("entities,path,words", [
    ({"feature": "c", "window": {"size": "1h"}}, "streams[0].entities.key", "required"),
    ({"key": "u", "window": {"size": "1h"}}, "streams[0].entities.feature", "required"),
    ({"key": "u", "feature": "u", "window": {"size": "1h"}}, "streams[0].entities.feature", "other than"),
    ({"key": "u", "feature": "c"}, "streams[0].entities.window", "exactly one of"),
    ({"key": "u", "feature": "c", "window": {"size": "1h", "last_events": 5}}, "streams[0].entities.window",
     "exactly one of"),
    ({"key": "u", "feature": "c", "window": {"size": "soon"}}, "streams[0].entities.window.size", "duration"),
    ({"key": "u", "feature": "c", "window": {"last_events": 1}}, "streams[0].entities.window.last_events", ">= 2"),
    ({"key": "u", "feature": "c", "window": {"last_events": 10}, "min_events": 11}, "streams[0].entities.min_events",
     "at most window.last_events"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "threshold": -0.1}, "streams[0].entities.threshold", ">= 0"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "threshold": float("nan")},
     "streams[0].entities.threshold", "finite"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "max_p_value": 0}, "streams[0].entities.max_p_value",
     "in (0, 1]"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "max_entities": 0}, "streams[0].entities.max_entities",
     ">= 1"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "idle_ttl": 0}, "streams[0].entities.idle_ttl", "in (0s"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "topic": "no spaces"}, "streams[0].entities.topic", ""),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "topic": "events"}, "streams[0].entities.topic",
     "input topic"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "categories": ["a", "a"]},
     "streams[0].entities.categories", "distinct"),
    ({"key": "u", "feature": "c", "window": {"size": "1h"}, "thresold": 1}, "streams[0].entities.thresold",
     "unknown key"),
    ({"key": "u", "feature": "c", "window": {"size": "1h", "slide": "1m"}}, "streams[0].entities.window.slide",
     "unknown key"),
    ("yes", "streams[0].entities", "mapping"),
])
def test_bad_values_name_the_key_path(entities, path, words):
    with pytest.raises(ConfigError) as err:
        parse_config(doc(entities))
    assert err.value.path == path
    assert words in str(err.value)
