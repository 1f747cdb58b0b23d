"""The contract every monitor keeps (small on purpose).

A monitor reads one or more configured streams.  The daemon and ``replay``
call, per batch of raw values of one of its streams, :meth:`Monitor.prepare`
(pure: decode what the monitor needs) then :meth:`Monitor.feed` (count it),
and after each poll (or merged replay chunk) :meth:`Monitor.advance`, which
returns the results of the windows that closed.  :meth:`Monitor.flush` closes
everything at end of input.  ``snapshot()``/``restore()`` give the state as
JSON-able data, checkpointed with the pipelines under :attr:`Monitor.key`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from driftmon.detect.result import DriftResult


class Monitor(Protocol):
    key: str  # unique among monitors and streams: the checkpoint's key for this state
    streams: tuple[str, ...]  # the configured streams it reads

    def prepare(self, stream: str, values: Sequence[bytes | str]) -> Any: ...

    def feed(self, stream: str, prepared: Any, partitions: np.ndarray | None = None,
             now: float | None = None) -> None: ...

    def advance(self, now: float | None = None) -> list[DriftResult]: ...

    def flush(self) -> list[DriftResult]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, d: dict[str, Any]) -> None: ...
