"""streams[].cluster_by and cluster_max_pairs."""

from __future__ import annotations

import pytest

from driftmon.config import ConfigError, parse_config


def stream(**kw):
    return {"streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 5}], **kw}]}


def test_cluster_by_is_optional_and_off_by_default():
    s = parse_config(stream()).streams[0]
    assert s.cluster_by is None


def test_cluster_by_reads_a_field_path_and_a_cap():
    s = parse_config(stream(cluster_by="user.id", cluster_max_pairs=500)).streams[0]
    assert (s.cluster_by, s.cluster_max_pairs) == ("user.id", 500)
    assert parse_config(stream(cluster_by="user_id")).streams[0].cluster_max_pairs == 20_000


@pytest.mark.parametrize("kw, path", [
    ({"cluster_by": ""}, "streams[0].cluster_by"),
    ({"cluster_by": 3}, "streams[0].cluster_by"),
    ({"cluster_by": "u", "cluster_max_pairs": 0}, "streams[0].cluster_max_pairs"),
    ({"cluster_by": "u", "cluster_max_pairs": 10**9}, "streams[0].cluster_max_pairs"),
    ({"cluster_max_pairs": 100}, "streams[0].cluster_max_pairs"),
])
def test_bad_cluster_settings_name_the_key(kw, path):
    with pytest.raises(ConfigError, match=r"^" + path.replace("[", r"\[").replace("]", r"\]")):
        parse_config(stream(**kw))
