"""The decode stage's output: raw values -> event times, segment keys and summary codes.

:meth:`Preparer.prepare` is pure and depends only on the stream's config:
it decodes a batch (:mod:`.events`), then turns each feature's column into
the codes its summarizer counts (:func:`driftmon.summaries.summarizer_for`:
hashes of category values, bucket codes of numbers, or declared bin
indices).  The daemon runs it in-process or in the decode worker
(:mod:`.worker`); either way the windows stage only ever sees a
:class:`PreparedBatch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.config import StreamConfig
from driftmon.decode.events import Decoder
from driftmon.summaries import summarizer_for


@dataclass(frozen=True)
class SegmentKeys:
    """The segment key of each event of a batch: distinct keys and an index into them."""

    keys: list[str]
    inverse: np.ndarray  # int64 per event

    @classmethod
    def of(cls, segments: Sequence[str]) -> SegmentKeys:
        keys = list(dict.fromkeys(segments))
        pos = {k: i for i, k in enumerate(keys)}
        return cls(keys, np.fromiter(map(pos.__getitem__, segments), dtype=np.int64, count=len(segments)))


@dataclass(frozen=True)
class CodedBatch:
    """Accepted events: what the windows count."""

    ts: np.ndarray  # float64 event time per accepted event
    segments: SegmentKeys | None  # None: the stream is not segmented
    codes: list[Any]  # per feature, the summarizer's codes

    def __len__(self) -> int:
        return int(self.ts.size)


@dataclass(frozen=True)
class PreparedBatch:
    """One batch of raw values after :meth:`Preparer.prepare`."""

    n: int  # input values (accepted + rejected)
    accepted: np.ndarray  # int64 input index per accepted event
    rejected: list[tuple[int, str]]  # (input index, reason)
    coded: CodedBatch
    truncated: tuple[int, ...] = ()  # per feature: categorical values cut to the length cap


class Preparer:
    """Raw values -> :class:`PreparedBatch` for one stream."""

    def __init__(self, cfg: StreamConfig, clock: Callable[[], float] = time.time):
        self.decoder = Decoder(cfg, clock)
        self.summarizers = [summarizer_for(f) for f in cfg.features]

    def prepare(self, values: Sequence[bytes | str], parsed: Sequence[Any] | None = None) -> PreparedBatch:
        """``parsed``: the values parsed once for every stream of their topic
        (:func:`driftmon.decode.events.parse_values`), or None to parse here."""
        batch = self.decoder.decode(values, parsed)
        seg = None if batch.segments is None else SegmentKeys.of(batch.segments)
        codes = [s.codes(col) for s, col in zip(self.summarizers, batch.features)]
        return PreparedBatch(len(values), np.asarray(batch.accepted, dtype=np.int64), batch.rejected,
                             CodedBatch(batch.ts, seg, codes), tuple(batch.truncated))
