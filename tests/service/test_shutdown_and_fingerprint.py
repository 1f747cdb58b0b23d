"""Checkpoint compatibility survives tuning changes; a shutdown with
close_windows_on_shutdown reports the open windows and checkpoints after them."""

import dataclasses

from driftmon.config import Thresholds, parse_config
from driftmon.service.checkpoint import CheckpointStore, config_fingerprint
from driftmon.service.daemon import Daemon


def _doc(tmp_path, **detector):
    return {
        "streams": [{"name": "s", "topic": "t", "features": [
            {"name": "c", "type": "categorical", "top_k": 5},
            {"name": "x", "type": "numeric", "bins": "quantile", "num_bins": 4}]}],
        "detector": {"min_count": 10, **detector},
        "state": {"dir": str(tmp_path / "state")},
        "lifecycle": {"close_windows_on_shutdown": True, "grace_period": "1s"},
    }


def test_tuning_does_not_invalidate_the_checkpoint_but_shape_does(tmp_path):
    base = config_fingerprint(parse_config(_doc(tmp_path)))
    tuned = parse_config(_doc(tmp_path, thresholds={"warn": 0.2, "critical": 0.4}, max_p_value=None,
                              hysteresis={"fire_after": 2, "of_last": 3, "resolve_after": 2}))
    assert config_fingerprint(tuned) == base
    reshaped = _doc(tmp_path)
    reshaped["streams"][0]["features"][0]["top_k"] = 6
    assert config_fingerprint(parse_config(reshaped)) != base
    assert config_fingerprint(parse_config(_doc(tmp_path, reference="pinned"))) != base
    capped = _doc(tmp_path)
    capped["streams"][0]["features"][0]["max_values"] = 100
    assert config_fingerprint(parse_config(capped)) != base


def test_shutdown_closing_windows_reports_them_and_checkpoints_nothing_open(tmp_path):
    cfg = parse_config(_doc(tmp_path))
    daemon = Daemon(cfg)
    pipe = daemon.pipelines["s"]
    pipe.process([b'{"ts": 1700000000, "c": "a", "x": 1.0}', b'{"ts": 1700000001, "c": "b", "x": 2.0}'])
    assert len(pipe.windows.open) == 1
    daemon._shutdown()
    streams, _ = CheckpointStore(cfg.state.dir, config_fingerprint(cfg)).load()
    assert streams["s"]["windows"]["open"] == {} and streams["s"]["counters"]["windows_closed"] == 1
    restored = Daemon(dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, thresholds=Thresholds(0.3, 0.6))))
    assert restored.pipelines["s"].windows_closed == 1 and set(restored.pipelines["s"].detectors) == {("c", None), ("x", None)}
    restored._shutdown()


def test_webhook_url_credentials_are_scrubbed_from_logs():
    import logging

    from driftmon.util.secrets import SecretFilter, secrets_of

    cfg = parse_config({"streams": [{"name": "s", "features": [{"name": "c", "type": "categorical", "top_k": 3}]}],
                        "alerts": {"webhooks": [{"name": "w", "url": "https://u:pa55word@h.example/x?token=t0ken99"}]}})
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "posting to %s", ("https://u:pa55word@h.example/x?token=t0ken99",), None)
    SecretFilter(secrets_of(cfg)).filter(rec)
    assert "pa55word" not in rec.getMessage() and "t0ken99" not in rec.getMessage()
