"""The windows stage: binned events counted per (window, segment, feature) in
event-time or count windows, closed by the watermark (:mod:`.windows`)."""

from driftmon.windows.windows import (
    OTHER_SEGMENT,
    ClosedWindow,
    CountWindows,
    EventTimeWindows,
    Segmenter,
    make_windows,
)

__all__ = ["OTHER_SEGMENT", "ClosedWindow", "CountWindows", "EventTimeWindows", "Segmenter", "make_windows"]
