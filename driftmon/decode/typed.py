"""The typed fast path of :class:`driftmon.decode.events.Decoder`: msgspec Structs.

``orjson.loads`` builds a dict, a str per key and a Python object per value of every
event, most of which the stream never reads.  Here each stream gets msgspec Structs
built from its configured paths (nested Structs for dotted paths), typed as narrowly as
the fast column conversions need, so msgspec checks the types in C and the columns come
from ``operator.attrgetter``.  Whatever msgspec refuses (invalid JSON, a wrong type, a
string over the length caps, a key it does not know, ...) goes, for that event only, to
the reference path (``Decoder._decode_slow``, orjson), which gives today's reason.

Exactness.  msgspec accepts a document only if orjson does and with the same values,
with two exceptions this module closes:

* msgspec *skips* unknown fields without checking their content the way orjson does
  (invalid UTF-8 in a string, a number that overflows to infinity): so every Struct
  forbids unknown fields, and the keys of the stream's events are *learned* from the
  documents msgspec refused (bounded: :data:`MAX_LEARNED_KEYS`), each typed so msgspec
  parses and checks its value fully (scalars, lists of scalars, objects of those);
  anything else stays on the reference path.
* integers: orjson gives a float outside ``[-2**63, 2**64)``, msgspec an exact int, so
  msgspec's ints are bounded to int64 and a document with another int (even one a
  duplicate key overrides) is decided by the reference path, and an unread field never
  holds ints (``float`` there: msgspec refuses what overflows, like orjson).

Depth is bounded by the configured and learned paths, far below either parser's limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from itertools import islice
from operator import attrgetter, or_
from typing import Annotated, Any, Literal

import msgspec
import orjson

MAX_LEARNED_KEYS = 256  # keys learned per stream (beyond them, events with new keys take the reference path)
MAX_LEARNED_DEPTH = 3  # nesting of learned objects
ORJSON_INT_MIN, ORJSON_INT_MAX = -(2**63), 2**64 - 1  # outside, orjson parses an integer as a float
MAX_FAILURES = 1 / 8  # share of a batch msgspec may refuse before the batch goes the orjson way
LEARN_FROM = 32  # refused events per batch whose keys are learned

# What each use of a field accepts on the fast path (anything else: the reference path decides).
USES: dict[str, frozenset[type]] = {
    "ts": frozenset({int, float}),  # epoch numbers; required (absent or null: missing_field)
    "iso": frozenset({str}),  # RFC 3339 strings; required
    "categorical": frozenset({str, int, float, bool, type(None)}),
    "numeric": frozenset({int, float, type(None)}),
    "segment": frozenset({str, int, float, bool, type(None)}),
}
Column = tuple[tuple[str, ...], str, "int | None", "Sequence[str] | None"]  # path, use, str cap, vocabulary
_LEARNED_SCALAR: Any = str | float | bool | None  # an unread value: float, never int (see above)


class _Node:
    """A key of an event object: configured (with its uses) or learned, maybe an object."""

    __slots__ = ("uses", "caps", "children", "learned", "wide", "vocab", "any_str")

    def __init__(self, learned: bool = False):
        self.uses: set[str] = set()
        self.caps: list[int] = []  # max_length of str values (the categorical and segment caps)
        self.children: dict[str, _Node] | None = None
        self.learned = learned
        # a categorical or segment value starts as str (or null) only, so its column needs no
        # check; an event with a number or bool there widens it to every type its uses accept
        self.wide = False
        # a declared vocabulary's field starts as those strings only (msgspec gives the same str
        # object every time: no allocation, its hash cached); another string widens it to any str
        self.vocab: set[str] | None = None
        self.any_str = False

    def narrow(self) -> bool:
        """Whether the value is typed as str (or null) only."""
        return not self.wide and not self.uses & {"ts", "numeric"}


def nameable(key: str) -> bool:
    """Whether msgspec can match a JSON key (it refuses names with a backslash, a quote or
    a control character; such keys stay unknown: their events take the reference path)."""
    return not any(c in key for c in '\\"') and all(ord(c) >= 0x20 for c in key)


class Unsupported(ValueError):
    """The configured paths cannot be typed (a path is both a value and an object)."""


def leaf_type(node: _Node) -> tuple[Any, bool]:
    """The msgspec type of a configured value, and whether it is required."""
    allowed = frozenset.intersection(*(USES[u] for u in node.uses))
    if node.narrow():
        allowed &= {str, type(None)}
    required = bool(node.uses & {"ts", "iso"})
    parts: list[Any] = []
    # "" is __empty__ as a segment (the reference path decides); strings over a cap are cut there too
    min_length = 1 if "segment" in node.uses else None
    max_length = min(node.caps) if node.caps else None
    vocab = sorted(v for v in node.vocab or () if (min_length or 0) <= len(v) <= (max_length or len(v)))
    if str in allowed and vocab and node.narrow() and not node.any_str:
        parts.append(Literal[tuple(vocab)])
    elif str in allowed:
        parts.append(str if min_length is None and max_length is None else
                     Annotated[str, msgspec.Meta(min_length=min_length, max_length=max_length)])
    # a number read only as a number: msgspec converts ints to float in C
    ints_as_float = node.uses <= {"ts", "numeric"}
    if int in allowed and not ints_as_float:
        # int64 only (msgspec's bounds stop there; orjson gives ints up to 2**64 - 1): msgspec
        # refuses any other int wherever it stands, even where a duplicate key overrides it, and
        # the reference path decides (orjson rejects a document whose number overflows)
        parts.append(Annotated[int, msgspec.Meta(ge=ORJSON_INT_MIN, le=2**63 - 1)])
    if float in allowed:
        parts.append(float)
    if bool in allowed:
        parts.append(bool)
    if type(None) in allowed and not required:
        parts.append(type(None))
    if not parts:
        raise Unsupported("no type satisfies every use of the field")
    return reduce(or_, parts), required


class Schema:
    """The Structs of one stream's paths (plus learned keys) and their column getters."""

    def __init__(self, columns: Sequence[Column]):
        """``columns``: (path, use, str cap, declared vocabulary) per decoded column, in column order."""
        self.root: dict[str, _Node] = {}
        self.paths = [c[0] for c in columns]
        vocab_ok: dict[tuple[str, ...], bool] = {}  # every categorical use of the path declares its vocabulary
        for path, use, cap, vocab in columns:
            if use == "categorical":
                vocab_ok[path] = vocab_ok.get(path, True) and vocab is not None
            level = self.root
            for j, key in enumerate(path):
                if not nameable(key):
                    raise Unsupported(f"{key!r} cannot be a msgspec field name")
                node = level.setdefault(key, _Node())
                if j == len(path) - 1:
                    if node.children is not None:
                        raise Unsupported(f"{'.'.join(path)} is both a value and an object")
                    node.uses.add(use)
                    if cap is not None:
                        node.caps.append(cap)
                    if vocab is not None:
                        node.vocab = (node.vocab or set()) | set(vocab)
                else:
                    if node.uses:
                        raise Unsupported(f"{'.'.join(path[:j + 1])} is both a value and an object")
                    if node.children is None:
                        node.children = {}
                    level = node.children
        for path, ok in vocab_ok.items():
            if not ok:
                self.node(path).vocab = None  # an open vocabulary reads the same field: any str
        self.learned = 0
        self.build()

    def build(self) -> None:
        self._n = 0
        self._attrs: dict[tuple[str, ...], str] = {}
        self.struct = self._struct(self.root, ())
        self.decode = msgspec.json.Decoder(self.struct).decode
        self.getters = {path: attrgetter(name) for path, name in self._attrs.items()}

    def node(self, path: tuple[str, ...]) -> _Node:
        level, node = self.root, None
        for key in path:
            node = level[key]
            level = node.children or {}
        assert node is not None
        return node

    def columns(self, structs: list[Any]) -> list[list[Any]]:
        """The value at every configured path of every Struct, one C-level pass per key
        (an object's column is shared by its keys, a path read twice is copied)."""
        getters = self.getters
        cache: dict[tuple[str, ...], list[Any]] = {}
        out: list[list[Any]] = []
        for path in self.paths:
            col = cache.get(path)
            if col is not None:
                out.append(list(col))
                continue
            for j in range(1, len(path) + 1):
                sub = path[:j]
                if sub not in cache:
                    cache[sub] = list(map(getters[sub], cache[path[:j - 1]] if j > 1 else structs))
            out.append(cache[path])
        return out

    def float_only(self, path: tuple[str, ...]) -> bool:
        """Whether msgspec gives the value at ``path`` as a float, always (ints converted)."""
        node = self.node(path)
        return node.uses <= {"ts", "numeric"} and not node.learned

    def _struct(self, level: dict[str, _Node], at: tuple[str, ...]) -> Any:
        fields: list[tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for key, node in level.items():
            name = f"f{len(fields)}"
            rename[name] = key
            self._attrs[at + (key,)] = name
            if node.learned:
                typ: Any = str | float | bool | None | list[_LEARNED_SCALAR]
                if node.children is not None:
                    typ = typ | self._struct(node.children, at + (key,))
                fields.append((name, typ, None))
            elif node.children is not None:  # a configured object: absent is empty; anything else is refused
                sub = self._struct(node.children, at + (key,))
                fields.append((name, sub, msgspec.field(default_factory=sub)))
            else:
                typ, required = leaf_type(node)
                fields.append((name, typ) if required else (name, typ, None))  # type: ignore[arg-type]
        self._n += 1
        return msgspec.defstruct(f"Event{self._n}", fields, rename=rename, kw_only=True,
                                 forbid_unknown_fields=True, gc=False)

    def learn(self, obj: Any) -> bool:
        """Learn the keys of a (reference-parsed) event; True when some were new."""
        if not isinstance(obj, dict):
            return False
        return self._learn(self.root, obj, 0)

    def _learn(self, level: dict[str, _Node], obj: dict[str, Any], depth: int) -> bool:
        changed = False
        for key, value in obj.items():
            node = level.get(key)
            if node is None:
                if not nameable(key):
                    continue
                if self.learned >= MAX_LEARNED_KEYS:
                    return changed
                node = level[key] = _Node(learned=True)
                self.learned += 1
                changed = True
            if node.uses and node.narrow():
                if type(value) in (int, float, bool):
                    node.wide = True  # a number or bool where the columns saw only strings so far
                    changed = True
                elif type(value) is str and node.vocab and not node.any_str and value not in node.vocab:
                    node.any_str = True  # a string the declared vocabulary does not name
                    changed = True
            if isinstance(value, dict) and (node.children is not None or node.learned):
                if node.learned and node.children is None:
                    if depth >= MAX_LEARNED_DEPTH:
                        continue
                    node.children = {}
                    changed = True
                assert node.children is not None
                changed = self._learn(node.children, value, depth + 1) or changed
        return changed

    def rows(self, values: Sequence[Any]) -> tuple[list[Any] | None, list[int]]:
        """The decoded Struct of each value (None where msgspec refused it) and the input
        indexes it refused; no Structs when it refused too many (the caller goes the
        orjson way for the batch).  A refused event whose keys are new teaches them (up to
        :data:`LEARN_FROM` per batch) and the batch goes on with the new Structs."""
        out: list[Any] = []
        structs = map(self.decode, values)
        failed: list[int] = []
        limit = max(4, int(len(values) * MAX_FAILURES))
        lessons = LEARN_FROM
        while True:
            try:  # C-level; list.extend keeps what it appended before a value failed
                out.extend(structs)
                break
            except Exception:  # not JSON, a type, a length, an unknown key: the reference path decides
                i = len(out)
                if lessons:
                    lessons -= 1
                    if self.learn_from(values[i]):
                        structs = map(self.decode, islice(values, i, None))  # again, with the new keys
                        continue
                failed.append(i)
                out.append(None)
                if len(failed) > limit:
                    return None, failed
        return out, failed

    def learn_from(self, value: Any) -> bool:
        """Learn the keys of one event msgspec refused (parsed by orjson, the reference);
        True when there were new ones (the Structs are rebuilt)."""
        try:
            obj = orjson.loads(value)
        except Exception:  # not JSON (or not a value orjson takes): nothing to learn
            return False
        if self.learn(obj):
            self.build()
            return True
        return False


def int_in_range(v: Any) -> bool:
    """False for an int orjson would have parsed as a float."""
    return type(v) is not int or ORJSON_INT_MIN <= v <= ORJSON_INT_MAX


def none_to_nan(col: list[Any]) -> list[Any]:
    """A float column (msgspec gave float or None) with NaN for missing."""
    try:  # sum's C loop over floats raises at the first None: cheaper than ``None in col``
        sum(col)
    except TypeError:
        return [math.nan if v is None else v for v in col]
    return col
