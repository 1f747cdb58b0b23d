"""The outputs stage: where one pipeline step's output goes.

:class:`Outputs` takes a :class:`~driftmon.pipeline.StepOutput` and sends
each part where it belongs: counters and series to the metrics, rejected and
late records to the dead-letter topic (byte for byte, with their reason),
fired/resolved results to the alert dispatcher (outbox, then webhooks) and
every result to the results sinks.  It also lists the outputs that take part
in a checkpoint (:meth:`Outputs.participants`): the dead letters, the sinks and
the alert files must be durable before the state that produced them is
checkpointed (:mod:`driftmon.service.checkpointer`).

The service loop only calls :meth:`Outputs.step` and never reaches into an
output itself.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from driftmon.config import Config, StreamConfig
from driftmon.outputs.alerts import AlertDispatcher
from driftmon.outputs.alerts.sender import NoAlerts
from driftmon.outputs.deadletter import DeadLetterProducer
from driftmon.outputs.metrics import Metrics
from driftmon.outputs.sinks import ResultSink
from driftmon.pipeline import StepOutput
from driftmon.source.base import RecordLike
from driftmon.vocabulary import DEAD_LETTER_OUTCOMES, DROP_REASONS, LATE, OUTPUTS

log = logging.getLogger("driftmon.outputs")


@dataclass(frozen=True)
class Participant:
    """An output's part in a checkpoint: ``sync`` makes everything handed to it durable or
    raises.  ``counted_as``: the output label its failures are counted under here (None:
    it counts its own)."""

    what: str  # said in the log when it vetoes, e.g. "results sink not synced"
    sync: Callable[[], Any]
    counted_as: str | None = None


def configured_outputs(cfg: Config) -> list[str]:
    """The configured outputs (labels of the output counters), in :data:`OUTPUTS` order."""
    on = {"jsonl": bool(cfg.sinks.jsonl), "kafka_topic": bool(cfg.sinks.kafka_topic),
          "dead_letter": bool(cfg.kafka.dead_letter_topic), "outbox": bool(cfg.alerts.webhooks),
          "firing_alerts": bool(cfg.alerts.webhooks), "checkpoint": True,
          "entities_topic": any(s.entities is not None and s.entities.topic for s in cfg.streams)}
    return [o for o in OUTPUTS if on[o]]


class Outputs:
    """Metrics, alerts, results sinks and dead letters for every stream."""

    def __init__(self, cfg: Config, metrics: Metrics, dispatcher: AlertDispatcher | NoAlerts,
                 sinks: list[ResultSink]):
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.sinks = sinks
        self.dlq: DeadLetterProducer | None = None  # built once the broker answers
        metrics.init_outputs(configured_outputs(cfg), DROP_REASONS, DEAD_LETTER_OUTCOMES)
        for s in cfg.streams:
            if s.entities is not None:
                metrics.init_entities(s.name)
            for f in s.features:
                if f.type == "categorical":
                    metrics.count_truncated(s.name, f.name, 0)

    def step(self, stream: StreamConfig, records: Sequence[RecordLike], n: int, out: StepOutput) -> None:
        """One counted batch of ``n`` input records: counters, dead letters, then results."""
        name, m = stream.name, self.metrics
        m.count_events(name, n)
        m.count_decoded(name, n - len(out.rejected))
        for reason, k in Counter(reason for _, reason in out.rejected).items():
            m.count_rejected(name, reason, k)
        for feature, k in zip(stream.features, out.truncated):
            if k:
                m.count_truncated(name, feature.name, k)
        if out.late_total:
            m.count_late(name, out.late_total)
            m.count_rejected(name, LATE, out.late_total)
        if self.dlq is not None:
            for i, reason in out.rejected:
                self.dlq.send(records[i], reason)
            for i in out.late:
                self.dlq.send(records[i], LATE)
        self.emit(name, out)

    def emit(self, name: str, out: StepOutput) -> None:
        """Closed windows, retired series and results of one step."""
        for end in out.closed_ends:
            self.metrics.window_closed(name, end)
        for series in out.retired:
            self.metrics.forget(*series)
        for step in out.monitors:
            self.metrics.observe_monitor(name, step)
        for r in out.results:
            self.metrics.observe_result(r)
            self.dispatcher.handle(r)
            if r.transition != "none":
                log.warning("drift %s: %s/%s/%s %s=%.4g %s p=%s window_end=%s", r.transition, r.stream, r.feature,
                            r.segment or "-", r.metric, r.divergence or 0.0, r.unit, r.p_value, r.window_end)
        for sink in self.sinks:
            sink.write(out.results)
            if out.records:  # monitors' records (interest_shift), in the same sinks
                sink.write(out.records)

    def participants(self) -> list[Participant]:
        """What must be durable before a checkpoint, in order: dead letters of the records it
        covers, results of the events it counted, alerts kept in memory by a failing disk."""
        out = []
        if self.dlq is not None:
            dlq = self.dlq
            out.append(Participant("dead letters not acknowledged", lambda: dlq.flush(timeout=10.0)))
        out += [Participant("results sink not synced", sink.sync) for sink in self.sinks]
        out.append(Participant("alerts not written", self.dispatcher.sync, counted_as="outbox"))
        return out

    def start(self) -> None:
        self.dispatcher.start()

    def pending_alerts(self) -> dict[str, int]:
        return self.dispatcher.pending()

    def close(self, deadline: float) -> None:
        """Deliver what the grace period allows (until ``deadline``, monotonic), then close all."""
        self.dispatcher.flush(max(0.0, deadline - time.monotonic() - 1.0))
        self.dispatcher.close(max(0.1, deadline - time.monotonic()))
        if self.dlq is not None:
            self.dlq.close(timeout=max(0.1, deadline - time.monotonic()))
        for sink in self.sinks:
            sink.close()
