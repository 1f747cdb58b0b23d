"""Updaters of the delivery series: webhook deliveries and outboxes, output failures and drops,
dead letters."""

from __future__ import annotations

from driftmon.outputs.metrics.families import Families


class DeliveryMetrics(Families):
    """``driftmon_webhook_*``, ``driftmon_output_*`` and ``driftmon_dead_letters_total``."""

    # -- webhooks -----------------------------------------------------------

    def webhook_outcome(self, receiver: str, outcome: str, n: int = 1) -> None:
        """Count a delivery attempt; ``outcome`` should be one of
        :data:`driftmon.vocabulary.WEBHOOK_OUTCOMES`."""
        self._deliveries.labels(receiver, outcome).inc(n)

    def set_outbox_size(self, receiver: str, n: int) -> None:
        self._outbox.labels(receiver).set(n)

    # -- outputs ------------------------------------------------------------

    def init_outputs(self, outputs: tuple[str, ...] | list[str], reasons: tuple[str, ...] = (),
                     dead_letter_outcomes: tuple[str, ...] = ()) -> None:
        """Create the output counters at 0 so increase() sees the first failure."""
        for output in outputs:
            self._output_errors.labels(output).inc(0)
            for reason in reasons:
                self._output_dropped.labels(output, reason).inc(0)
        for outcome in dead_letter_outcomes:
            self._dead_letters.labels(outcome).inc(0)

    def output_error(self, output: str, n: int = 1) -> None:
        """A failed write/sync/send of ``output`` (one of :data:`driftmon.vocabulary.OUTPUTS`)."""
        self._output_errors.labels(output).inc(n)

    def output_dropped(self, output: str, reason: str, n: int = 1) -> None:
        """Records ``output`` gave up for good; ``reason`` in :data:`driftmon.vocabulary.DROP_REASONS`."""
        self._output_dropped.labels(output, reason).inc(n)

    def dead_letter(self, outcome: str, n: int = 1) -> None:
        """Dead letters acknowledged; ``outcome`` in :data:`driftmon.vocabulary.DEAD_LETTER_OUTCOMES`."""
        self._dead_letters.labels(outcome).inc(n)
