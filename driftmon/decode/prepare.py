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

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftmon.config import FeatureConfig, StreamConfig
from driftmon.decode.events import DecodedBatch, Decoder
from driftmon.summaries import summarizer_for
from driftmon.summaries.base import intern
from driftmon.summaries.clusters import ClusteredSummarizer, cluster_codes
from driftmon.summaries.hashing import hash_one, stable_hash

SEGMENT_INTERN_LIMIT = 1024  # segment keys one preparer remembers across batches


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


class SegmentInterner:
    """Segment keys across batches: one dictionary pass per batch while the keys are
    known.  ``keys`` may hold keys of earlier batches too (first-appearance order); a
    batch's keys list is never changed afterwards (a new key makes a new list).  The
    table is bounded: past ``limit`` keys it starts afresh."""

    def __init__(self, limit: int = SEGMENT_INTERN_LIMIT):
        self.limit = limit
        self._ids: dict[str, bytes] = {}
        self._keys: list[str] = []

    def of(self, segments: Sequence[str]) -> SegmentKeys:
        got = intern(self._ids, segments, self.limit)
        if got is None:  # the table is full: start afresh
            self._ids, self._keys = {}, []
            got = intern(self._ids, segments, self.limit)
            if got is None:
                return SegmentKeys.of(segments)
        inv, new = got
        if new:
            self._keys = self._keys + new
        return SegmentKeys(self._keys, inv)


@dataclass(frozen=True)
class CodedBatch:
    """Accepted events: what the windows count."""

    ts: np.ndarray  # float64 event time per accepted event
    segments: SegmentKeys | None  # None: the stream is not segmented
    codes: list[Any]  # per feature, the summarizer's codes

    def __len__(self) -> int:
        return int(self.ts.size)


@dataclass(frozen=True)
class EntityColumns:
    """Per accepted event, for :mod:`driftmon.monitors.entities`: the entity key, its
    stable 64-bit hash (:func:`driftmon.summaries.hashing.stable_hash`; 0 where the key is
    missing) and the interest feature's value (None where missing)."""

    keys: list[str | None]
    hashes: np.ndarray  # uint64
    values: list[str | None]


def _hash_or_zero(key: str | None) -> int:
    return 0 if key is None else hash_one(key)


@dataclass(frozen=True)
class PreparedBatch:
    """One batch of raw values after :meth:`Preparer.prepare`."""

    n: int  # input values (accepted + rejected)
    accepted: np.ndarray  # int64 input index per accepted event
    rejected: list[tuple[int, str]]  # (input index, reason)
    coded: CodedBatch
    truncated: tuple[int, ...] = ()  # per feature: categorical values cut to the length cap
    entities: EntityColumns | None = None  # only when the stream configures ``entities``


class Preparer:
    """Raw values -> :class:`PreparedBatch` for one stream."""

    def __init__(self, cfg: StreamConfig, clock: Callable[[], float] = time.time):
        self.decoder = Decoder(cfg, clock)
        self.summarizers: list[Any] = [summarizer_for(f) for f in cfg.features]
        self.segment_keys = SegmentInterner()
        self.clustered = cfg.cluster_by is not None
        if self.clustered:
            self.decoder = Decoder(with_cluster_column(cfg), clock)
            self.summarizers = [ClusteredSummarizer(s, cfg.cluster_max_pairs) for s in self.summarizers]

    def prepare(self, values: Sequence[bytes | str], parsed: Sequence[Any] | None = None) -> PreparedBatch:
        """``parsed``: the values parsed once for every stream of their topic
        (:func:`driftmon.decode.events.parse_values`), or None to parse here."""
        return self.code(len(values), self.decoder.decode(values, parsed))

    def code(self, n: int, batch: DecodedBatch) -> PreparedBatch:
        """Summary codes and segment keys of a decoded batch of ``n`` input values."""
        seg = None if batch.segments is None else self.segment_keys.of(batch.segments)
        if self.clustered:
            codes, truncated = clustered_codes(self.summarizers, batch.features, batch.truncated)
        else:
            codes = [self._codes(s, col, seg if col is batch.segments else None)
                     for s, col in zip(self.summarizers, batch.features)]
            truncated = batch.truncated
        ent = None
        if batch.extras:
            keys, vals = batch.extras
            try:  # no missing key (the usual case): C-level maps
                hashes = stable_hash(keys)  # type: ignore[arg-type]
            except TypeError:
                hashes = np.fromiter(map(_hash_or_zero, keys), dtype=np.uint64, count=len(keys))
            ent = EntityColumns(keys, hashes, vals)
        # accepted input positions are ascending, so with no rejection they are all of them
        accepted = np.asarray(batch.accepted, dtype=np.int64) if batch.rejected else np.arange(n)
        return PreparedBatch(n, accepted, batch.rejected, CodedBatch(batch.ts, seg, codes), tuple(truncated), ent)

    @staticmethod
    def _codes(summarizer: Any, values: Sequence[Any], seg: SegmentKeys | None) -> Any:
        """The summarizer's codes of a column; a column that is the segment column itself
        (the decoder shares the list when their values are equal) is coded once per segment
        key and taken per event: codes are a function of the value."""
        if seg is None or len(seg.keys) > len(values):
            return summarizer.codes(values)
        return summarizer.take(summarizer.codes(seg.keys), seg.inverse)


CLUSTER_COLUMN = "\x00cluster_by"  # the decoded cluster field: an extra, last categorical column


def with_cluster_column(cfg: StreamConfig) -> StreamConfig:
    """The stream with its ``cluster_by`` field decoded as one more categorical column
    (values are stringified like categories and cut to 256 characters; an object or
    list there rejects the event as ``bad_type``; a missing one is a cluster of one)."""
    assert cfg.cluster_by is not None
    column = FeatureConfig(name=CLUSTER_COLUMN, field=cfg.cluster_by, type="categorical",
                           detector=cfg.features[0].detector, top_k=1)
    return dataclasses.replace(cfg, features=(*cfg.features, column))


def clustered_codes(summarizers: Sequence[Any], columns: Sequence[Sequence[Any]],
                    truncated: Sequence[int]) -> tuple[list[Any], list[int]]:
    """Per feature, its codes plus each event's cluster hash (one XXH3-64 per distinct
    cluster value, C-level passes); the truncation counts without the cluster column."""
    h, present = cluster_codes(columns[-1])
    codes = [s.wrap(h, present, s.inner.codes(col)) for s, col in zip(summarizers, columns[:-1])]
    return codes, list(truncated[:-1])
