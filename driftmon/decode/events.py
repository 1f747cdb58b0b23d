"""Decode raw JSON events into columns: event time, segment key, feature values.

This is the only per-event Python loop in the pipeline (JSON has to be parsed
one document at a time, with msgspec into typed Structs, :mod:`.typed`, and orjson
as the reference); everything after it works on numpy arrays.  A bad
event never raises: it is returned in ``rejected`` with one of the reasons
``invalid_json``, ``bad_type``, ``missing_field`` or ``bad_timestamp``
(:data:`driftmon.vocabulary.DECODE_REASONS`).

Missing or null *feature* values are not errors: they are counted in the
feature's ``__missing__`` bin.  Missing segment fields give the segment value
``__missing__``, and an empty one (``""``) the value ``__empty__``
(:data:`driftmon.vocabulary.EMPTY_SEGMENT`), so no segment is ``""``, the label
value of the overall series.

Every value that reaches window state is bounded: a categorical value longer
than :data:`MAX_VALUE_CHARS` (256) characters is cut to 255 characters plus
:data:`TRUNCATION_MARKER` ("…"), and the event is counted as usual (its other
features are fine); ``DecodedBatch.truncated`` counts the cut values per
feature (``driftmon_values_truncated_total``).  Long values that share their
first 255 characters therefore share a bin.  This applies to open-vocabulary
(``top_k``) features, whose values are kept in window state; a feature with
declared ``categories`` keeps only bin counts (anything it does not declare is
``__other__``), so its values are never cut.  Segment values are cut to 64
characters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from driftmon.config import StreamConfig
from driftmon.decode import typed
from driftmon.decode.values import (  # noqa: F401 - re-exported: the decode stage's public names
    _ABSENT,
    INVALID,
    MAX_EPOCH,
    MAX_VALUE_CHARS,
    TRUNCATION_MARKER,
    _all_str,
    _cap_column,
    _categorical,
    _column,
    _compile_extractor,
    _get,
    _numeric,
    _path,
    _Reject,
    _segment_value,
    _take,
    _typed_column,
    cap_value,
    parse_values,
)

COLUMNS_BACKOFF = 16  # after a batch with an absent key, extract rows for this many batches
TYPED_BACKOFF = 16  # after a batch msgspec mostly refused (and nothing to learn), orjson for this many


@dataclass
class DecodedBatch:
    """Accepted events as columns, plus the input positions that were rejected."""

    ts: np.ndarray  # float64 epoch seconds, one per accepted event
    segments: list[str] | None  # segment key per accepted event (None when not segmented)
    features: list[list[Any]]  # per feature: str|None (categorical) or float (numeric, NaN missing)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (input index, reason)
    accepted: list[int] = field(default_factory=list)  # input index of each accepted event
    truncated: list[int] = field(default_factory=list)  # per feature: values cut to the length cap
    # Extra categorical columns read for the stream's monitors (``entities``: the entity key and
    # its feature, in that order), decoded like categorical features; [] when none is configured.
    extras: list[list[Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ts.size)

    @staticmethod
    def concat(batches: Sequence[DecodedBatch]) -> DecodedBatch:
        nf = len(batches[0].features)
        segs = None if batches[0].segments is None else [s for b in batches for s in b.segments or ()]
        return DecodedBatch(
            ts=np.concatenate([b.ts for b in batches]) if batches else np.empty(0),
            segments=segs,
            features=[[v for b in batches for v in b.features[j]] for j in range(nf)],
        )


class Decoder:
    """Turns raw event bytes of one stream into a :class:`DecodedBatch`.

    >>> from driftmon.config import parse_config
    >>> cfg = parse_config({"streams": [{"name": "s", "features": [
    ...     {"name": "cat", "type": "categorical", "categories": ["a", "b"]}]}]})
    >>> batch = Decoder(cfg.streams[0], clock=lambda: 2e9).decode(
    ...     [b'{"ts": 1700000000, "cat": "a"}', b'not json', b'{"cat": "b"}'])
    >>> batch.features[0], batch.rejected
    (['a'], [(1, 'invalid_json'), (2, 'missing_field')])
    """

    def __init__(self, stream: StreamConfig, clock: Callable[[], float] = time.time):
        self.ts_path = _path(stream.timestamp.field)
        self.ts_unit = stream.timestamp.unit
        self.max_skew = stream.timestamp.max_future_skew
        self.seg_paths = [_path(s) for s in stream.segment_by]
        self.feature_paths = [_path(f.field) for f in stream.features]
        self.converters = [_categorical if f.type == "categorical" else _numeric for f in stream.features]
        # Open vocabularies keep values in window state, so their values are capped; a declared
        # vocabulary keeps only bin counts (a value it does not declare is __other__, cut or not).
        self.caps = [MAX_VALUE_CHARS if f.top_k is not None else None for f in stream.features]
        # Monitors' columns (the entity key and interest feature) ride along as extra categorical
        # columns of the same extractor, so a stream without them pays nothing.
        self.n_extras = 0
        if stream.entities is not None:
            extra = [_path(stream.entities.key), _path(stream.entities.feature)]
            self.n_extras = len(extra)
            self.feature_paths += extra
            self.converters += [_categorical] * len(extra)
            self.caps += [MAX_VALUE_CHARS] * len(extra)
        self.clock = clock
        self._all_paths = [self.ts_path, *self.feature_paths, *self.seg_paths]
        self._extract = _compile_extractor(self._all_paths)
        self._getter_paths = [[itemgetter(k) for k in p] for p in self._all_paths]
        self._columns_off = 0  # batches to skip the column fast path for (after one failed)
        # The typed fast path (msgspec Structs, :mod:`.typed`): (path, use, str cap) per column
        # (path, use, str cap, declared vocabulary) per column
        vocabs = [f.categories if f.type == "categorical" and f.top_k is None else None for f in stream.features]
        self._typed_columns: list[typed.Column] = [(self.ts_path, "iso" if self.ts_unit == "iso" else "ts", None, None)]
        self._typed_columns += [(p, "categorical" if conv is _categorical else "numeric", cap, vocab) for p, conv, cap, vocab
                                in zip(self.feature_paths, self.converters, self.caps, vocabs + [None] * self.n_extras)]
        self._typed_columns += [(p, "segment", 64, None) for p in self.seg_paths]
        self._typed = self._schema()
        self._typed_off = 0  # batches to go the orjson way (after msgspec refused most of one)
        # A categorical feature that reads the one segment field: on the typed path, when every
        # value is a plain segment value (a str of 1 to 64 characters), both columns hold the same
        # values, and the batch shares one list so that the codes are looked up once per key
        # (:meth:`driftmon.decode.prepare.Preparer.code`).
        self._seg_feature = next((j for j, (p, conv) in enumerate(zip(self.feature_paths, self.converters))
                                  if len(self.seg_paths) == 1 and p == self.seg_paths[0] and conv is _categorical
                                  and j < len(stream.features)), None)

    def _schema(self) -> typed.Schema | None:
        try:
            return typed.Schema(self._typed_columns)
        except typed.Unsupported:  # e.g. a path that is both a value and an object: orjson only
            return None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_extract"], state["_typed"]  # generated code and classes: rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._extract = _compile_extractor(self._all_paths)
        self._typed = self._schema()

    def _timestamp(self, v: Any) -> float:
        if v is _ABSENT or v is None:
            raise _Reject("missing_field")
        if self.ts_unit == "iso":
            if not isinstance(v, str):
                raise _Reject("bad_timestamp")
            try:
                dt = datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v)
            except ValueError:
                raise _Reject("bad_timestamp") from None
            if dt.tzinfo is None:
                raise _Reject("bad_timestamp")  # RFC 3339 requires an offset
            ts = dt.timestamp()
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _Reject("bad_timestamp")
            ts = float(v) / 1000.0 if self.ts_unit == "ms" else float(v)
        if not (0.0 < ts < MAX_EPOCH):  # also false for NaN
            raise _Reject("bad_timestamp")
        return ts

    def decode(self, values: Sequence[bytes | str], parsed: Sequence[Any] | None = None) -> DecodedBatch:
        """Decode a batch: a column-wise fast path for well-formed events; any event it
        is not sure about goes through :meth:`_decode_slow`, the reference semantics.
        Then categorical values over the length cap are cut (and counted).

        The fast path is msgspec with typed Structs of the stream's fields
        (:mod:`.typed`), or, when the values were parsed already, a msgspec Struct cannot
        express the paths, or msgspec refused most of a recent batch, orjson with
        C-level column extraction.

        ``parsed``: the values already parsed by :func:`parse_values` (several streams
        reading one topic parse each message once); never modified here."""
        horizon = self.clock() + self.max_skew if self.max_skew is not None else MAX_EPOCH
        got = None
        if parsed is None and self._typed is not None:
            if self._typed_off:
                self._typed_off -= 1
            else:
                got = self._decode_typed(values, horizon, self._typed)
        if got is None:
            batch = self._decode(values, horizon, parsed)
            batch.truncated = [0 if cap is None else _cap_column(col, cap)
                               for col, cap in zip(batch.features, self.caps)]
        else:
            batch = got
        if self.n_extras:
            cut = len(batch.features) - self.n_extras
            batch.extras, batch.features, batch.truncated = batch.features[cut:], batch.features[:cut], \
                batch.truncated[:cut]
        return batch

    def _columns(self, objs: list[Any]) -> list[list[Any]] | None:
        """The value at every path of every decoded event, one C-level ``itemgetter``
        pass per key; None (for the extractor to decide) as soon as a key is absent or
        a value along a path is not an object.  Intermediate columns are shared, leaf
        columns never (the categorical length cap edits them in place)."""
        if self._columns_off:
            self._columns_off -= 1
            return None
        inner: dict[tuple[str, ...], list[Any]] = {}
        out: list[list[Any]] = []
        try:
            for path, getters in zip(self._all_paths, self._getter_paths):
                col = objs
                for j, get in enumerate(getters):
                    key = path[: j + 1]
                    got = inner.get(key)
                    if got is None:
                        got = inner[key] = list(map(get, col))
                    col = got
                out.append(list(col))  # a leaf column of its own (a path may be configured twice)
        except (KeyError, TypeError, IndexError):
            self._columns_off = COLUMNS_BACKOFF  # this stream has absent keys: use the extractor for a while
            return None
        return out

    def _decode_typed(self, values: Sequence[bytes | str], horizon: float, schema: typed.Schema) -> DecodedBatch | None:
        """The msgspec path; values are capped (no typed value exceeds a cap, the events
        msgspec refused are cut by the reference path).  None: msgspec refused too many."""
        structs, failed = schema.rows(values)
        if structs is None:  # msgspec refused most of the batch, and not for keys it could learn
            self._typed_off = TYPED_BACKOFF
            return None
        idx: list[int] | None = None
        if failed:
            idx = [i for i, o in enumerate(structs) if o is not None]
            structs = [o for o in structs if o is not None]
        n = len(structs)
        cols = schema.columns(structs)
        bad = np.zeros(n, dtype=bool)
        if schema.float_only(self.ts_path):  # floats in [0, 2**64): only the range is left to check
            ts = np.array(cols[0], dtype=np.float64)
            if self.ts_unit == "ms":
                ts = ts / 1000.0
            bad |= ~((ts > 0.0) & (ts < MAX_EPOCH) & (ts <= horizon))
        else:
            ts = self._ts_column(cols[0], bad, horizon)
        nf = len(self.feature_paths)
        feats: list[list[Any]] = []
        for path, conv, col in zip(self.feature_paths, self.converters, cols[1:1 + nf]):
            if conv is _numeric and schema.float_only(path):
                feats.append(typed.none_to_nan(col))
            elif conv is _categorical and schema.node(path).narrow():  # str (within the cap) or None
                feats.append(col)
            else:
                feats.append(_typed_column(col, conv, bad, None))
        segments = None
        if self.seg_paths:
            segcols = []
            for path, col in zip(self.seg_paths, cols[1 + nf:]):
                if schema.node(path).narrow() and _all_str(col):  # 1 to 64 characters, no null
                    segcols.append(col)
                else:
                    segcols.append(_typed_column(col, _segment_value, bad, ""))
            segments = segcols[0] if len(segcols) == 1 else list(map("|".join, zip(*segcols)))
            j = self._seg_feature
            if j is not None and segments is cols[1 + nf] and feats[j] is cols[1 + j] and segments == feats[j]:
                feats[j] = segments  # one list for both (equal values: the segment's are plain strs)
        if idx is None and not bad.any():
            return DecodedBatch(ts, segments, feats, [], list(range(n)), [0] * nf)
        return self._merge(values, horizon, None, idx, bad, ts, segments, feats, cap_slow=True)

    def _decode(self, values: Sequence[bytes | str], horizon: float, parsed: Sequence[Any] | None = None) -> DecodedBatch:
        extract, loads = self._extract, orjson.loads
        idx: list[int] | None = None  # input index of each row (None: row i is input i)
        objs: list[Any] | None
        if parsed is not None:  # parsed once per topic (INVALID where not JSON: the columns and extractor refuse it)
            objs = list(parsed)
        else:
            try:  # common case: every event parses (C-level loop)
                objs = list(map(loads, values))
            except Exception:
                objs = None
        cols: list[Any] | None = None if objs is None else self._columns(objs)
        if cols is None:
            try:  # every event has dicts along every path (C-level loops)
                rows = list(map(extract, objs if objs is not None else map(loads, values)))
            except Exception:
                rows, idx = [], []
                for i, raw in enumerate(values):
                    try:
                        rows.append(extract(objs[i] if objs is not None else loads(raw)))
                    except Exception:  # invalid JSON, not an object, non-object along a path
                        continue
                    idx.append(i)
            n = len(rows)
            cols = list(zip(*rows)) if n else [() for _ in range(len(self._all_paths))]
        else:
            n = len(values)
        bad = np.zeros(n, dtype=bool)
        ts = self._ts_column(cols[0], bad, horizon)
        nf = len(self.feature_paths)
        feats = [_column(col, conv, bad) for col, conv in zip(cols[1:1 + nf], self.converters)]
        segments = None
        if self.seg_paths:
            segcols = [_column(col, _segment_value, bad, seg=True) for col in cols[1 + nf:]]
            segments = segcols[0] if len(segcols) == 1 else list(map("|".join, zip(*segcols)))
        if idx is None and not bad.any():
            return DecodedBatch(ts, segments, feats, [], list(range(n)))
        return self._merge(values, horizon, parsed, idx, bad, ts, segments, feats)

    def _merge(self, values: Sequence[bytes | str], horizon: float, parsed: Sequence[Any] | None,
               idx: list[int] | None, bad: np.ndarray, ts: np.ndarray, segments: list[str] | None,
               feats: list[list[Any]], cap_slow: bool = False) -> DecodedBatch:
        """Rows that passed keep their fast values; everything else is decided by the slow
        path.  ``cap_slow``: the fast rows are within the caps, cut (and count) the slow ones."""
        good = np.flatnonzero(~bad).tolist()
        good_idx = good if idx is None else [idx[p] for p in good]
        taken = set(good_idx)
        slow_idx = [i for i in range(len(values)) if i not in taken]
        slow = self._decode_slow([values[i] for i in slow_idx], horizon,
                                 None if parsed is None else [parsed[i] for i in slow_idx])
        truncated: list[int] = []
        if cap_slow:
            truncated = [0 if cap is None else _cap_column(col, cap) for col, cap in zip(slow.features, self.caps)]
        acc = good_idx + [slow_idx[j] for j in slow.accepted]
        order = np.argsort(np.asarray(acc, dtype=np.int64), kind="stable").tolist()
        fast_ts = ts[np.asarray(good, dtype=np.int64)] if good else np.empty(0)
        seg_all = None if segments is None else _take(_take(segments, good) + (slow.segments or []), order)
        return DecodedBatch(
            ts=np.concatenate([fast_ts, slow.ts])[np.asarray(order, dtype=np.int64)] if order else np.empty(0),
            segments=seg_all,
            features=[_take(_take(f, good) + s, order) for f, s in zip(feats, slow.features)],
            rejected=[(slow_idx[j], reason) for j, reason in slow.rejected],
            accepted=sorted(acc),
            truncated=truncated,
        )

    def _ts_column(self, col: Sequence[Any], bad: np.ndarray, horizon: float) -> np.ndarray:
        """Event times of one column; marks in ``bad`` what the slow path must decide."""
        if self.ts_unit != "iso" and set(map(type, col)) <= {int, float}:
            try:
                ts = np.array(col, dtype=np.float64)
            except (OverflowError, ValueError):
                ts = None
            if ts is not None:
                if self.ts_unit == "ms":
                    ts = ts / 1000.0
                bad |= ~((ts > 0.0) & (ts < MAX_EPOCH) & (ts <= horizon))
                return ts
        out = np.zeros(len(col), dtype=np.float64)
        for i, v in enumerate(col):
            try:
                out[i] = t = self._timestamp(v)
                if t > horizon:
                    bad[i] = True
            except (_Reject, OverflowError):
                bad[i] = True
        return out

    def _decode_slow(self, values: Sequence[bytes | str], horizon: float,
                     parsed: Sequence[Any] | None = None) -> DecodedBatch:
        """One event at a time; the reference semantics the fast path must match."""
        loads, get = orjson.loads, _get
        ts_out: list[float] = []
        seg_out: list[str] = []
        cols: list[list[Any]] = [[] for _ in self.feature_paths]
        rejected: list[tuple[int, str]] = []
        accepted: list[int] = []
        pairs = list(zip(self.feature_paths, self.converters))
        segmented = bool(self.seg_paths)
        for i, raw in enumerate(values):
            try:
                obj = loads(raw) if parsed is None else parsed[i]
            except (orjson.JSONDecodeError, TypeError, ValueError):
                rejected.append((i, "invalid_json"))
                continue
            if obj is INVALID:
                rejected.append((i, "invalid_json"))
                continue
            try:
                if not isinstance(obj, dict):
                    raise _Reject("bad_type")
                ts = self._timestamp(get(obj, self.ts_path))
                if ts > horizon:
                    raise _Reject("bad_timestamp")
                row = [conv(get(obj, p)) for p, conv in pairs]
                if segmented:
                    seg = "|".join(_segment_value(get(obj, p)) for p in self.seg_paths)
            except _Reject as r:
                rejected.append((i, r.reason))
                continue
            except RecursionError:  # pragma: no cover - orjson caps depth first
                rejected.append((i, "invalid_json"))
                continue
            ts_out.append(ts)
            accepted.append(i)
            for col, v in zip(cols, row):
                col.append(v)
            if segmented:
                seg_out.append(seg)
        return DecodedBatch(
            ts=np.asarray(ts_out, dtype=np.float64),
            segments=seg_out if segmented else None,
            features=cols,
            rejected=rejected,
            accepted=accepted,
        )
