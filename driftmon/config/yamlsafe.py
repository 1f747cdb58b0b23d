"""Reading YAML that may be hostile: bounded in size, nesting and alias expansion.

``yaml.safe_load`` builds shared objects for aliases, so a few hundred bytes of
nested aliases (a "billion laughs" alias bomb) load instantly and then expand to
hundreds of millions of values in whatever walks the result (a 519-byte bomb
kept ``validate-config`` busy for 194 s and 11.5 GB).  :func:`load_yaml` refuses,
before anything walks the document:

* text longer than :data:`MAX_BYTES` (a config is a few kB);
* bytes that are not UTF-8;
* nesting deeper than :data:`MAX_DEPTH`, counted with aliases expanded (the
  composer and constructor recurse, so a deep document would otherwise end in a
  ``RecursionError``);
* aliases that add more than :data:`MAX_ALIAS_NODES` values to the document
  when expanded, and aliases to a node that contains them (recursive documents).

Every refusal is a :class:`YAMLLimitError`, a ``yaml.YAMLError`` whose message
names the limit.  Values PyYAML cannot build (a date like ``2001-13-45``, an
integer over Python's 4300-digit limit) are reported the same way, as
``yaml.YAMLError``, instead of escaping as ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000

__all__ = ["MAX_ALIAS_NODES", "MAX_BYTES", "MAX_DEPTH", "YAMLLimitError", "decode_utf8", "load_yaml"]


class YAMLLimitError(yaml.YAMLError):
    """The document is refused by one of this module's limits (not a syntax error)."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer stops at :data:`MAX_DEPTH` levels of nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(f"is nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_expansion(root: Node) -> None:
    """Refuse recursive aliases, and documents that aliases make too big or too deep.

    Walks the composed node graph once (a node reached again through an alias is
    not walked again): ``size`` and ``height`` of each node are what they would
    be with every alias written out.  Aliases can only point back at nodes
    composed earlier, so the walk is as deep as the document as written.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    walking: set[int] = set()
    distinct = 0

    def walk(node: Node) -> None:
        nonlocal distinct
        key = id(node)
        walking.add(key)
        distinct += 1
        total, tallest = 1, 0
        for child in _children(node):
            ck = id(child)
            if ck in walking:
                line = child.start_mark.line + 1
                raise YAMLLimitError(f"has a recursive alias (the node at line {line} contains an alias to itself)")
            if ck not in size:
                walk(child)
            total += size[ck]
            tallest = max(tallest, height[ck])
            if total - distinct > MAX_ALIAS_NODES:  # checked as it grows: the totals can be astronomical
                raise YAMLLimitError(f"has aliases that expand to more than {MAX_ALIAS_NODES} extra values "
                                     "(an alias bomb?); write the values out instead")
        walking.discard(key)
        size[key], height[key] = total, tallest + 1
        if height[key] > MAX_DEPTH:
            raise YAMLLimitError(f"is nested more than {MAX_DEPTH} levels deep once aliases are expanded "
                                 f"(line {node.start_mark.line + 1})")

    walk(root)


def decode_utf8(data: bytes) -> str:
    """UTF-8 bytes as text (a leading BOM is allowed); :class:`YAMLLimitError` if not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YAMLLimitError(f"is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                             f"(line {line}) {exc.reason}; save the file as UTF-8") from None


def load_yaml(text: str | bytes) -> Any:
    """Parse one YAML document within this module's limits (``None`` for an empty one)."""
    if len(text) > MAX_BYTES:
        raise YAMLLimitError(f"is larger than {MAX_BYTES >> 20} MiB, the limit (a driftmon config is a few kB)")
    if isinstance(text, bytes):
        text = decode_utf8(text)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # PyYAML's constructors
        raise yaml.YAMLError(f"cannot build a value: {type(exc).__name__}: {exc}") from None
    finally:
        loader.dispose()
