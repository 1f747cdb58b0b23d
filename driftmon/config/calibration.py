"""The top-level ``calibration`` section: prediction calibration monitors.

::

    calibration:
      - name: ctr_model
        predictions: {stream: predictions, id: request_id, probability: score}
        outcomes: {stream: outcomes, id: request_id, label: clicked}
        max_delay: 10m          # an outcome may follow its prediction by this much event time
        bins: 10                # equal-width bins over [0, 1], or explicit edges [0, 0.05, 0.2, 1]
        unmatched: negative     # a prediction with no outcome by max_delay: negative | drop
        window: 5m              # default: the predictions stream's window size
        max_pending: 1000000    # buffered predictions at most (and as many buffered outcomes)
        detector: {thresholds: {warn: 0.02, critical: 0.05}, min_count: 500, max_p_value: 0.001}

Every error names the key path.  The referenced streams must be in ``streams``.
"""

from __future__ import annotations

from typing import Any

from driftmon.config import model as c
from driftmon.config import streams as sections
from driftmon.config.names import check_field_path
from driftmon.config.node import ConfigError, _Node, _show

UNMATCHED = ("negative", "drop")
MAX_BINS = 1000
MAX_PENDING = 50_000_000
# The calibration divergence is a per-prediction Bernoulli KL, on another scale than a
# window-to-window KL: its own default thresholds.
DEFAULT_DETECTOR = c.DetectorConfig(thresholds=c.Thresholds(warn=0.02, critical=0.05), min_count=500,
                                    max_p_value=0.001)
# detector keys that mean something for calibration (metric, reference, smoothing, permutations
# and renyi_alpha do not: there is one metric, no reference window and no smoothing)
DETECTOR_KEYS = ("unit", "min_count", "thresholds", "max_p_value", "hysteresis", "top_bins")


def _edges(node: _Node) -> tuple[float, ...]:
    raw = node.raw("bins", 10)
    path = node.sub("bins")
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= MAX_BINS:
            raise ConfigError(path, f"expected a number of bins in [1, {MAX_BINS}] or a list of edges, got {raw}")
        return tuple(i / raw for i in range(raw + 1))
    if isinstance(raw, list):
        edges = sections._increasing(raw, path)
        if edges[0] != 0.0 or edges[-1] != 1.0 or len(edges) > MAX_BINS + 1:
            raise ConfigError(path, f"expected edges from 0 to 1 (at most {MAX_BINS} bins), got {_show(raw)}")
        return edges
    raise ConfigError(path, f"expected a number of bins or a list of edges from 0 to 1, got {_show(raw)}")


def _ref(node: _Node, value_key: str, streams: dict[str, c.StreamConfig]) -> tuple[str, str, str]:
    stream = node.text("stream", nonempty=True)
    if stream not in streams:
        raise ConfigError(node.sub("stream"), f"expected the name of a stream in `streams` "
                                              f"({', '.join(streams)}), got {_show(stream)}")
    ident = check_field_path(node.text("id", nonempty=True), node.sub("id"))
    value = check_field_path(node.text(value_key, nonempty=True), node.sub(value_key))
    node.done()
    return stream, ident, value


def _detector(node: _Node) -> c.DetectorConfig:
    for key in node.data:
        if key not in DETECTOR_KEYS:
            raise ConfigError(node.sub(str(key)), f"does not apply to calibration (expected one of: "
                                                  f"{', '.join(DETECTOR_KEYS)})")
    return sections.detector(node, DEFAULT_DETECTOR)


def entry(node: _Node, streams: dict[str, c.StreamConfig]) -> c.CalibrationConfig:
    name = node.text("name", nonempty=True)
    p_stream, p_id, p_prob = _ref(node.node("predictions"), "probability", streams)
    o_stream, o_id, o_label = _ref(node.node("outcomes"), "label", streams)
    if p_stream == o_stream:
        raise ConfigError(node.sub("outcomes.stream"), f"expected a stream other than the predictions' "
                                                       f"({p_stream!r})")
    if f"calibration:{name}" in streams:  # the checkpoint keeps a calibration's state under that key
        raise ConfigError(node.sub("name"), f"a stream is named 'calibration:{name}': rename one of them")
    if any(f.name == name for f in streams[p_stream].features):
        raise ConfigError(node.sub("name"), f"{name!r} is also a feature of stream {p_stream!r}: results and "
                                            "metrics would share a series")
    if not node.has("max_delay"):
        raise ConfigError(node.sub("max_delay"), "required, expected a duration (how long after a prediction "
                                                 "its outcome may arrive, e.g. 10m)")
    max_delay = node.duration("max_delay", None, above=0.0)
    pw = streams[p_stream].window
    if node.has("window"):
        window = node.duration("window", None, minimum=sections.MIN_SLIDE)
    elif pw.size is None:
        raise ConfigError(node.sub("window"), f"required: stream {p_stream!r} has count windows, and "
                                              "calibration windows are of prediction event time (e.g. 5m)")
    else:
        window = pw.size
    det = _detector(node.node("detector")) if node.has("detector") else DEFAULT_DETECTOR
    out = c.CalibrationConfig(
        name=name,
        predictions=c.PredictionsRef(p_stream, p_id, p_prob),
        outcomes=c.OutcomesRef(o_stream, o_id, o_label),
        max_delay=max_delay,
        edges=_edges(node),
        unmatched=node.text("unmatched", "negative", choices=UNMATCHED),
        window=window,
        max_pending=node.integer("max_pending", 1_000_000, minimum=1, maximum=MAX_PENDING),
        detector=det,
    )
    node.done("a calibration")
    return out


def calibrations(root: _Node, streams: tuple[c.StreamConfig, ...]) -> tuple[c.CalibrationConfig, ...]:
    raw: Any = root.raw("calibration", [])
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("calibration", f"expected a list of calibration monitors, got {_show(raw)}")
    by_name = {s.name: s for s in streams}
    out = tuple(entry(_Node(x, f"calibration[{i}]", root.env), by_name) for i, x in enumerate(raw))
    names = [x.name for x in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError("calibration", f"calibration names must be unique, {dup!r} repeats")
    return out


__all__ = ["DEFAULT_DETECTOR", "UNMATCHED", "calibrations"]
