"""source.base: the raw values of a batch, Schema Registry framing taken off."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.config import parse_config
from driftmon.decode.events import Decoder
from driftmon.source.base import FRAME_BYTES, Record, unframed, values_of

docs = st.dictionaries(st.text(max_size=4), st.one_of(st.integers(), st.text(max_size=6), st.none()), max_size=3).map(
    lambda d: json.dumps(d).encode())
# a value as it is on the topic: (document, schema id or None when the producer does not frame)
on_topic = st.tuples(st.one_of(docs, st.binary(max_size=12)), st.one_of(st.none(), st.integers(0, 2**31 - 1)))


def frame(doc: bytes, schema_id: int | None) -> bytes:
    return doc if schema_id is None else b"\x00" + schema_id.to_bytes(4, "big") + doc


def records(values: list[bytes | None]) -> list[Record]:
    return [Record("t", 0, i, 0, None, v, []) for i, v in enumerate(values)]  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(on_topic, max_size=20))
def test_framed_values_lose_exactly_their_frame_and_nothing_else_changes(values):
    """Confluent's JSON Schema serializer frames each document (a 0 byte, a 4-byte schema id);
    a batch may mix framed and plain values (a topic moving to the serializer). Plain values,
    binary ones included, are untouched unless they start with the 0 byte a frame starts with."""
    raw = [frame(doc, sid) for doc, sid in values]
    expected = [v[FRAME_BYTES:] if v[:1] == b"\x00" else v for v in raw]
    assert values_of(records(raw)) == expected
    assert [d for (d, sid) in values if sid is not None] == [e for e, (_, sid) in zip(expected, values)
                                                             if sid is not None]


def test_a_batch_without_frames_is_returned_as_it_is():
    plain = [b'{"a": 1}', b"", b"not json"]
    assert unframed(plain) is plain
    assert unframed(["str lines", "from a file"]) == ["str lines", "from a file"]
    assert values_of(records([b'{"a": 1}', None])) == [b'{"a": 1}', b""]  # a tombstone stays invalid JSON
    # a tombstone sorts before a frame: the frame is still found
    assert values_of(records([None, frame(b"{}", 3), b"[]"])) == [b"", b"{}", b"[]"]


def test_framed_events_decode_like_plain_ones_and_a_short_frame_is_invalid_json():
    cfg = parse_config({"streams": [{"name": "s", "features": [
        {"name": "c", "type": "categorical", "categories": ["a", "b"]}]}]}).streams[0]
    plain = [b'{"ts": 1700000000, "c": "a"}', b'{"ts": 1700000001, "c": "b"}']
    framed = [frame(v, 42) for v in plain] + [b"\x00\x00\x00"]
    dec = Decoder(cfg, clock=lambda: 2e9)
    batch = dec.decode(values_of(records(framed)))
    assert batch.features == [["a", "b"]] and batch.rejected == [(2, "invalid_json")]
    assert dec.decode(framed[:2]).rejected == [(0, "invalid_json"), (1, "invalid_json")]  # framed bytes are not JSON


def test_module_doctests():
    import doctest

    import driftmon.source.base as base

    result = doctest.testmod(base)
    assert result.attempted >= 1 and result.failed == 0
