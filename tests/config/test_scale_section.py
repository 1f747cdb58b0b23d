"""``scale:`` config: optional, typed, validated with key paths; absent means single-process."""

from __future__ import annotations

import pytest

from driftmon.config import ConfigError, ScaleConfig, parse_config
from tests.scale.helpers import config_doc


def _doc(**scale):
    doc = config_doc()
    doc["kafka"] = {"group_id": "g", "dead_letter_topic": "dlq"}
    if scale:
        doc["scale"] = scale
    return doc


def test_absent_means_none():
    assert parse_config(_doc()).scale is None


def test_defaults_derive_from_the_partials_topic_and_group():
    sc = parse_config(_doc(partials_topic="p")).scale
    assert sc == ScaleConfig(partials_topic="p", changelog_topic="p-changelog", reduce_group_id="g-reduce",
                             partial_timeout=300.0, changelog_quiet=1.0)
    with pytest.raises(AttributeError):
        sc.partials_topic = "x"  # type: ignore[misc]


def test_durations_and_explicit_names():
    sc = parse_config(_doc(partials_topic="p", changelog_topic="c", reduce_group_id="r",
                           partial_timeout="2m", changelog_quiet="250ms")).scale
    assert (sc.changelog_topic, sc.reduce_group_id, sc.partial_timeout, sc.changelog_quiet) == ("c", "r", 120.0, 0.25)


@pytest.mark.parametrize("scale, path", [
    ({}, "scale.partials_topic"),
    ({"partials_topic": ""}, "scale.partials_topic"),
    ({"partials_topic": "bad topic!"}, "scale.partials_topic"),
    ({"partials_topic": "events"}, "scale.partials_topic"),  # an input topic
    ({"partials_topic": "dlq"}, "scale.partials_topic"),
    ({"partials_topic": "p", "changelog_topic": "p"}, "scale.changelog_topic"),
    ({"partials_topic": "p", "reduce_group_id": "g"}, "scale.reduce_group_id"),
    ({"partials_topic": "p", "partial_timeout": 0}, "scale.partial_timeout"),
    ({"partials_topic": "p", "nope": 1}, "scale"),
])
def test_bad_scale_config_names_the_key(scale, path):
    doc = _doc()
    doc["scale"] = scale
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert str(err.value).startswith(path), str(err.value)


def test_count_windows_are_refused_with_scale():
    doc = _doc(partials_topic="p")
    doc["streams"][0]["window"] = {"count": 100}
    with pytest.raises(ConfigError, match=r"streams\[0\]\.window\.count"):
        parse_config(doc)


def _entities(**window) -> dict:
    return {"key": "user_id", "feature": "item.category", "window": window or {"size": "1d"},
            "categories": ["news", "sport"]}


def test_entities_with_time_windows_and_declared_categories_run_with_scale():
    doc = _doc(partials_topic="p")
    doc["streams"][0]["entities"] = _entities()
    cfg = parse_config(doc)
    assert cfg.scale is not None and cfg.streams[0].entities is not None


def test_entity_count_windows_are_refused_with_scale_naming_the_key():
    doc = _doc(partials_topic="p")
    doc["streams"][0]["entities"] = {**_entities(last_events=40), "min_events": 20}
    with pytest.raises(ConfigError, match=r"^streams\[0\]\.entities\.window\.last_events: .*arrive"):
        parse_config(doc)
    del doc["scale"]
    assert parse_config(doc).streams[0].entities is not None  # (fine without scale:)


def test_a_learned_entity_vocabulary_is_refused_with_scale_naming_the_key():
    doc = _doc(partials_topic="p")
    doc["streams"][0]["entities"] = {k: v for k, v in _entities().items() if k != "categories"}
    with pytest.raises(ConfigError, match=r"^streams\[0\]\.entities\.categories: .*declared vocabulary"):
        parse_config(doc)


def test_calibration_is_refused_with_scale():
    doc = _doc(partials_topic="p")
    doc["streams"].append({"name": "outcomes", "topic": "outcomes", "timestamp": {"field": "ts", "unit": "s"},
                           "window": {"size": 10.0},
                           "features": [{"name": "clicked", "field": "clicked", "type": "categorical",
                                         "categories": ["true", "false"]}]})
    doc["calibration"] = [{"name": "ctr", "predictions": {"stream": "interactions", "id": "rid", "probability": "p"},
                           "outcomes": {"stream": "outcomes", "id": "rid", "label": "clicked"},
                           "max_delay": "1m", "bins": 10}]
    parse_config({k: v for k, v in doc.items() if k != "scale"})  # valid without scale:
    with pytest.raises(ConfigError, match=r"^calibration"):
        parse_config(doc)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_either_client_runs_scale_out(client):
    doc = _doc(partials_topic="p")
    doc["kafka"]["client"] = client
    cfg = parse_config(doc)
    assert cfg.kafka.client == client and cfg.scale is not None and cfg.scale.partials_topic == "p"
