"""The checkpointer: the one object that orders a checkpoint.

1. every participant makes what it was handed durable (dead letters
   acknowledged, results written and synced, alerts on disk); each may veto
   by raising, and all are tried so each makes progress;
2. only then are the window state and the offsets it covers written
   atomically (:class:`~driftmon.service.checkpoint.CheckpointStore`);
3. only then are those offsets committed to the source.

A vetoed or unwritable checkpoint is postponed, never fatal: the state stays
in memory, the previous checkpoint stays valid, and the failure is counted
(``driftmon_output_errors_total``) and logged.  As in quix-streams, a sink
vetoes a checkpoint by failing its flush.

The participants come from the outputs stage
(:meth:`driftmon.outputs.fanout.Outputs.participants`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from driftmon.outputs.fanout import Participant

log = logging.getLogger("driftmon.service.checkpointer")

Offsets = Mapping[tuple[str, int], int]


class _Store(Protocol):
    def save(self, streams: dict[str, Any], offsets: Offsets) -> None: ...


class _Committer(Protocol):
    def assignment(self) -> set[tuple[str, int]]: ...

    def commit(self, offsets: Offsets) -> None: ...


class _Metrics(Protocol):
    def output_error(self, output: str) -> None: ...

    def checkpoint_done(self) -> None: ...


class Checkpointer:
    """Participants, then state + offsets, then the commit; see the module docstring."""

    def __init__(self, store: _Store, metrics: _Metrics):
        self.store = store
        self.metrics = metrics
        self.committed: dict[tuple[str, int], int] = {}

    def checkpoint(self, participants: list[Participant], state: Callable[[], dict[str, Any]],
                   offsets: Offsets, source: _Committer | None) -> bool:
        """Returns True when a checkpoint was written (whether or not the commit succeeded)."""
        vetoes = []
        for p in participants:
            try:
                p.sync()
            except Exception as exc:
                if p.counted_as is not None:
                    self.metrics.output_error(getattr(exc, "output", p.counted_as))
                vetoes.append(f"{p.what} ({exc})")
        if vetoes:
            log.warning("checkpoint postponed: %s", "; ".join(vetoes))
            return False
        try:
            self.store.save(state(), offsets)
        except OSError as exc:  # disk full, read-only, I/O error: the previous checkpoint stays valid
            self.metrics.output_error("checkpoint")
            log.error("checkpoint not written (%s); postponed, the previous checkpoint stays valid", exc)
            return False
        self.metrics.checkpoint_done()
        self.commit(offsets, source)
        return True

    def commit(self, offsets: Offsets, source: _Committer | None) -> None:
        """Commit the checkpointed offsets that changed, for the partitions still assigned."""
        todo = {tp: o for tp, o in offsets.items() if self.committed.get(tp) != o}
        if not todo or source is None:
            return
        assigned = source.assignment()
        todo = {tp: o for tp, o in todo.items() if tp in assigned}
        try:
            source.commit(todo)
            self.committed.update(todo)
        except Exception as exc:  # the checkpoint holds them; the next commit retries
            log.warning("offset commit failed (%s); offsets stay in the checkpoint", exc)
