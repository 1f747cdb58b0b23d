"""Windows: event-time (tumbling/hopping, per-partition watermarks) or count windows,
holding mergeable per-segment summaries until they close."""

from __future__ import annotations

from collections.abc import Sequence

from driftmon.config import StreamConfig
from driftmon.summaries.base import Summarizer
from driftmon.windows.base import ClosedWindow, WindowState
from driftmon.windows.count import CountWindows
from driftmon.windows.event_time import EventTimeWindows
from driftmon.windows.segments import OTHER_SEGMENT, SegmentCap, Segmenter

Windows = EventTimeWindows | CountWindows

__all__ = ["OTHER_SEGMENT", "ClosedWindow", "CountWindows", "EventTimeWindows", "SegmentCap", "Segmenter",
           "WindowState", "Windows", "make_windows"]


def make_windows(stream: StreamConfig, summarizers: Sequence[Summarizer]) -> Windows:
    cls = CountWindows if stream.window.is_count else EventTimeWindows
    return cls(stream.window, summarizers, stream.max_segments, bool(stream.segment_by), stream.include_overall)
