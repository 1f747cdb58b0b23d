"""Updaters of the scale-out series (driftmon/scale): partial window records, windows emitted,
changelog writes.  Their families exist only once ``init_scale`` ran."""

from __future__ import annotations

from driftmon.outputs.metrics.families import Families


class ScaleMetrics(Families):
    """``driftmon_scale_*`` (see ``SCALE_METRIC_NAMES``)."""

    def init_scale(self, streams: list[str] | tuple[str, ...]) -> None:
        """The scale-out counters (created only in scale-out mode), at 0."""
        from driftmon.vocabulary import SCALE_PARTIAL_OUTCOMES, SCALE_STAGES, SCALE_WINDOW_KINDS

        self._define_scale()
        for o in SCALE_PARTIAL_OUTCOMES:
            self._scale_partials.labels(o).inc(0)
        for s in streams:
            for k in SCALE_WINDOW_KINDS:
                self._scale_windows.labels(s, k).inc(0)
        for st in SCALE_STAGES:
            self._scale_changelog.labels(st).inc(0)

    def scale_partials(self, outcome: str, n: int = 1) -> None:
        self._scale_partials.labels(outcome).inc(n)

    def scale_windows(self, stream: str, kind: str, n: int = 1) -> None:
        self._scale_windows.labels(stream, kind).inc(n)

    def scale_changelog_write(self, stage: str, n: int = 1) -> None:
        self._scale_changelog.labels(stage).inc(n)
