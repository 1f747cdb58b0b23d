"""The contracts of monitors, and the registry that builds a stream's monitors.

Two kinds of monitor sit beside the per-feature window detectors:

* :class:`Monitor` reads one stream (per-entity interest drift, :mod:`.entities`); it is
  built by :data:`MONITORS` and run inside that stream's
  :class:`~driftmon.pipeline.StreamPipeline`.
* :class:`CrossStreamMonitor` joins several streams (prediction calibration,
  :mod:`.calibration`, built by :func:`driftmon.monitors.calibration.monitors_for`); the
  daemon and ``replay`` feed it the raw batches of each stream it reads.

**Stream monitors.**

A monitor is fed every prepared batch of its stream (:class:`~driftmon.decode.prepare.PreparedBatch`,
after the windows counted it) and answers with a :class:`MonitorStep`: the records of the
windows that batch closed (each with ``kind`` and ``to_dict()``, written by replay and the
results sinks beside the aggregate rows) and aggregate statistics for the metrics (never a
per-entity label).  ``flush()`` closes what is open at the end of input; ``snapshot()`` and
``restore()`` carry its state in the stream's checkpoint.

Adding one: a class with these methods, built from the stream config by a function in
:data:`MONITORS` (one entry per monitor) that returns None when the stream does not
configure it.  A stream that configures none pays nothing.

**Mergeable parts (scale-out).**  Under ``scale:`` no process sees every event, so a
monitor runs there only if what it counts splits into parts that add up exactly and its
output is a function of the sums, not of the order events arrived in:

* per source partition and event-time window, a *partial* (counts keyed by the monitor's
  own key, plus any population-wide aggregate the scoring needs, sent to every key shard so
  no shard needs another's state), merged by summing, in a fixed order;
* the window's close a function of the merged window alone plus the monitor's state of
  that key shard (``EntityMonitor.add_window``), the same code :meth:`Monitor.feed` runs
  when its own watermark passes the window's end, so results equal one process's;
* its state partitioned by key (``hash(key) mod shards``); a window that closes in arrival
  order (per-key count windows) or a vocabulary numbered in arrival order is not mergeable
  and the config refuses it with ``scale:``.

The per-entity monitor follows this contract (:mod:`driftmon.scale.entity_mapper`,
:mod:`driftmon.scale.entity_reducer`); a new monitor that does not is refused with
``scale:`` in :mod:`driftmon.config.load` until it has such a mapper and reducer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from driftmon.config import StreamConfig
from driftmon.decode.prepare import PreparedBatch
from driftmon.detect.result import DriftResult


class Record(Protocol):
    """A monitor's output record (e.g. :class:`driftmon.monitors.entities.EntityShift`)."""

    kind: str
    stream: str

    def to_dict(self) -> dict[str, Any]: ...

    def sink_key(self) -> bytes: ...


@dataclass
class MonitorStep:
    """What one batch (or flush) produced in one monitor."""

    monitor: str
    records: list[Any] = field(default_factory=list)
    tracked: int = 0  # entities (or other keys) held now
    evicted: Counter[str] = field(default_factory=Counter)  # by reason, this step
    compared: int = 0  # windows compared this step
    shifts: int = 0  # of them, reported as shifted (== len(records) unless capped)
    divergences: np.ndarray = field(default_factory=lambda: np.zeros(0))  # this step's compared divergences
    windows_closed: int = 0  # windows (all entities at once, or per-entity rounds) closed this step


class Monitor(Protocol):
    name: str

    def feed(self, batch: PreparedBatch) -> MonitorStep: ...

    def flush(self) -> MonitorStep: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, d: dict[str, Any]) -> None: ...


def _entities(cfg: StreamConfig) -> Monitor | None:
    if cfg.entities is None:
        return None
    from driftmon.monitors.entities import EntityMonitor

    return EntityMonitor(cfg.name, cfg.entities)


# One entry per monitor: name -> factory(stream config) -> a monitor, or None when not configured.
MONITORS: dict[str, Callable[[StreamConfig], Monitor | None]] = {
    "entities": _entities,
}


def make_monitors(cfg: StreamConfig) -> list[Monitor]:
    """The monitors a stream configures, in registry order."""
    return [m for make in MONITORS.values() if (m := make(cfg)) is not None]


class CrossStreamMonitor(Protocol):
    """A monitor that reads one or more configured streams (e.g. predictions joined with outcomes).

    Per batch of raw values of one of its streams the daemon and ``replay`` call
    :meth:`prepare` (pure: decode what the monitor needs) then :meth:`feed` (count it), and
    after each poll (or merged replay chunk) :meth:`advance`, which returns the results of the
    windows that closed.  :meth:`flush` closes everything at end of input.
    ``snapshot()``/``restore()`` give the state as JSON-able data, checkpointed with the
    pipelines under :attr:`key`."""

    key: str  # unique among monitors and streams: the checkpoint's key for this state
    streams: tuple[str, ...]  # the configured streams it reads

    def prepare(self, stream: str, values: Sequence[bytes | str]) -> Any: ...

    def feed(self, stream: str, prepared: Any, partitions: np.ndarray | None = None,
             now: float | None = None) -> None: ...

    def advance(self, now: float | None = None) -> list[DriftResult]: ...

    def flush(self) -> list[DriftResult]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, d: dict[str, Any]) -> None: ...
