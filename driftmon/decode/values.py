"""Per-value rules of the decode stage and the column helpers of its fast paths.

The rules (:func:`_categorical`, :func:`_numeric`, :func:`_segment_value`, the length
cap) are the reference semantics of :mod:`driftmon.decode.events`; the column helpers
apply them a column at a time (``_column`` to orjson-parsed values, ``_typed_column`` to
msgspec-typed ones) and mark what they cannot decide for the per-event path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from driftmon.decode import typed
from driftmon.vocabulary import EMPTY_SEGMENT

MAX_EPOCH = 7258118400.0  # 2200-01-01: anything later is not a real event time
MAX_VALUE_CHARS = 256  # a longer categorical value is cut to this length (marker included)
TRUNCATION_MARKER = "\u2026"  # "…", ends every cut value
_ABSENT = object()
_EMPTY: dict[str, Any] = {}  # stands in for a missing intermediate object


class _Reject(Exception):
    def __init__(self, reason: str):
        self.reason = reason



def _path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return _ABSENT
        obj = obj.get(key, _ABSENT)
        if obj is _ABSENT:
            return _ABSENT
    return obj


def _categorical(v: Any) -> str | None:
    if v is _ABSENT or v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    raise _Reject("bad_type")


def _numeric(v: Any) -> float:
    if v is _ABSENT or v is None:
        return math.nan
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise _Reject("bad_type")


class _Invalid:
    """What :func:`parse_values` gives for a value that is not JSON (no ``.get``: the
    column-wise path sends it to the slow path, which rejects it as ``invalid_json``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()


def parse_values(values: Sequence[bytes | str]) -> list[Any]:
    """Each value parsed once (``INVALID`` where it is not JSON): what several streams
    reading one topic share, each passing it to :meth:`Decoder.decode` as ``parsed``."""
    out: list[Any] = []
    parsed = map(orjson.loads, values)
    while len(out) < len(values):
        try:  # C-level; list.extend keeps what it appended before a value failed
            out.extend(parsed)
        except Exception:  # JSONDecodeError, RecursionError, a bad type: that value only
            out.append(INVALID)
    return out


def cap_value(value: str, cap: int = MAX_VALUE_CHARS) -> str:
    """``value`` if it has at most ``cap`` characters, else its first ``cap - 1`` and the marker."""
    return value if len(value) <= cap else value[: cap - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _cap_column(col: list[Any], cap: int) -> int:
    """Cut the values of a categorical column (str or None) longer than ``cap``, in place;
    returns how many were cut.  One C-level pass when none is too long (the usual case)."""
    if not col:
        return 0
    try:  # no None in the column: one C-level pass
        longest = max(map(len, col))
    except TypeError:
        longest = max(map(len, filter(None, col)), default=0)
    if longest <= cap:
        return 0
    n = 0
    for i, v in enumerate(col):
        if v is not None and len(v) > cap:
            col[i] = cap_value(v, cap)
            n += 1
    return n


def _segment_value(v: Any) -> str:
    if v is _ABSENT or v is None:
        return "__missing__"
    if isinstance(v, (dict, list)):
        raise _Reject("bad_type")
    s = v if isinstance(v, str) else str(v)
    return s[:64] or EMPTY_SEGMENT


_FAST_TYPES: dict[Callable[[Any], Any], frozenset[type]] = {
    _categorical: frozenset({str, type(None)}),
    _numeric: frozenset({float, int}),
    _segment_value: frozenset({str}),
}


def _text_types(col: Sequence[Any]) -> set[type]:
    """The types in a categorical or segment column, from its distinct values (a set of
    strings is cheaper to build than a set of types, and no value that is not a ``str``
    or None equals one that is, so none can hide behind another).  Not for numbers:
    ``True == 1 == 1.0``."""
    try:
        return set(map(type, set(col)))
    except TypeError:  # unhashable values (lists, objects)
        return set(map(type, col))


def _column(col: Sequence[Any], conv: Callable[[Any], Any], bad: np.ndarray, seg: bool = False) -> list[Any]:
    """Convert one column like ``conv`` would, value by value; values ``conv``
    rejects are marked in ``bad`` (the slow path then gives the reason)."""
    types = set(map(type, col)) if conv is _numeric else _text_types(col)
    if types <= _FAST_TYPES[conv]:
        if conv is _numeric and int in types:
            return list(map(float, col))
        if conv is _numeric or not seg or not col or ("" not in col and max(map(len, col)) <= 64):
            return col if isinstance(col, list) else list(col)  # a list of our own (cut in place later)
    out: list[Any] = []
    append = out.append
    for i, v in enumerate(col):
        try:
            append(conv(v))
        except _Reject:
            bad[i] = True
            append("" if seg else None)  # placeholder; the row is re-decoded by the slow path
    return out


def _all_str(col: list[Any]) -> bool:
    """Whether every value is a str: one C-level ``str.join`` (3x cheaper than ``None in col``,
    which compares each str with None through both types' rich comparisons)."""
    try:
        "".join(col)
    except TypeError:
        return False
    return True


def _typed_column(col: list[Any], conv: Callable[[Any], Any], bad: np.ndarray, placeholder: Any) -> list[Any]:
    """A column msgspec typed (scalars only, strings within the caps): as it is when all
    strings (one C-level pass), else converted like ``conv``; an int orjson would have
    parsed as a float, or a value ``conv`` rejects, is marked in ``bad``."""
    if _all_str(col):
        return col
    out: list[Any] = []
    append = out.append
    for i, v in enumerate(col):
        try:
            if not typed.int_in_range(v):
                raise _Reject("bad_type")  # the slow path decides with orjson's float
            append(conv(v))
        except _Reject:
            bad[i] = True
            append(placeholder)
    return out


def _take(values: list[Any], order: list[int]) -> list[Any]:
    if len(order) > 1:
        return list(itemgetter(*order)(values))
    return [values[i] for i in order]


def _compile_extractor(paths: list[tuple[str, ...]]) -> Callable[[Any], tuple[Any, ...]]:
    """One function returning the value at every dotted path of a decoded object
    (``_ABSENT`` where a key is missing), e.g. for ``ts`` and ``item.id``::

        def extract(o): return (o.get('ts', A), o.get('item', E).get('id', A))

    It raises (AttributeError) when the object or a value along a path is not
    a dict; the caller then uses the slow path.  Keys are embedded with
    ``repr``, so any field name is safe."""
    exprs = []
    for path in paths:
        expr = "o"
        for j, key in enumerate(path):
            expr += f".get({key!r}, {'A' if j == len(path) - 1 else 'E'})"
        exprs.append(expr)
    src = f"def extract(o):\n    return ({', '.join(exprs)},)\n"
    namespace: dict[str, Any] = {"A": _ABSENT, "E": _EMPTY}
    exec(compile(src, "<driftmon.decode.events extractor>", "exec"), namespace)  # noqa: S102 - keys are repr()'d
    return namespace["extract"]
