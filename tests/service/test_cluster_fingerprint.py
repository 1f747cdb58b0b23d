"""streams[].cluster_by changes the shape of checkpointed state (every feature summary
carries a cluster table), so it is part of the checkpoint fingerprint; without it the
fingerprint is what it was."""

from driftmon.config import parse_config
from driftmon.service.checkpoint import config_fingerprint


def _doc(**stream):
    return {"streams": [{"name": "s", "topic": "t", "features": [
        {"name": "c", "type": "categorical", "top_k": 5}], **stream}]}


def test_cluster_by_is_part_of_the_checkpoint_fingerprint():
    base = config_fingerprint(parse_config(_doc()))
    assert config_fingerprint(parse_config(_doc(cluster_by=None))) == base  # 93dd8695196fb5d5 before and after
    clustered = config_fingerprint(parse_config(_doc(cluster_by="user_id")))
    assert clustered != base
    assert config_fingerprint(parse_config(_doc(cluster_by="session_id"))) != clustered
    assert config_fingerprint(parse_config(_doc(cluster_by="user_id", cluster_max_pairs=100))) != clustered
