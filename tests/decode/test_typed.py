"""The typed (msgspec) fast path decodes exactly like the per-event reference (orjson).

Adversarial documents where msgspec and orjson differ: integers beyond 64 bits, numbers
that overflow to infinity, NaN/Infinity literals, invalid UTF-8 and lone surrogates,
duplicate keys, escaped keys, deep nesting, null vs absent, strings at the length caps,
in read and in unread fields; and byte mutations of valid events."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftmon.config import load_config, parse_config
from driftmon.decode import events as events_mod
from driftmon.decode import typed as typed_mod
from driftmon.decode.events import DecodedBatch, Decoder
from driftmon.testing import synth

CLOCK = 2e9


def _configs() -> dict[str, Any]:
    example = load_config("config/driftmon.yaml", {}).streams[0]  # item.category, item.id, platform twice, dwell_ms
    mixed = parse_config({"streams": [{
        "name": "m", "timestamp": {"field": "meta.ts", "unit": "ms", "max_future_skew": None},
        "segment_by": ["platform", "item.category"],
        "features": [{"name": "c", "field": "x", "type": "categorical", "top_k": 3},
                     {"name": "n", "field": "x", "type": "numeric", "bins": "quantile"},  # one path, two uses
                     {"name": "k", "field": "item.id", "type": "categorical", "categories": ["a"]},
                     {"name": "d", "field": "dwell_ms", "type": "numeric", "edges": [0, 1]}]}]}).streams[0]
    iso = parse_config({"streams": [{
        "name": "i", "timestamp": {"field": "ts", "unit": "iso"},
        "entities": {"key": "user_id", "feature": "item.category", "window": {"size": "1d"}},
        "features": [{"name": "c", "field": "item.category", "type": "categorical", "top_k": 3},
                     {"name": "p", "field": "ts", "type": "categorical", "top_k": 3}]}]}).streams[0]
    return {"example": example, "mixed": mixed, "iso": iso}


CONFIGS = _configs()
KEYS = ["ts", "item", "category", "id", "platform", "dwell_ms", "user_id", "x", "meta", "new", ""]

INTS = [0, -0, 7, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**70, -(2**70),
        10**308, 10**309, 1_700_000_000, 1_700_000_000_123]
RAW_NUMBERS = [b"1e400", b"-1e400", b"1e308", b"1.7976931348623157e308", b"1.7976931348623159e308", b"2e308",
               b"1e-400", b"0.1e1", b"1E2", b"-0.0", b"-0", b"1.00000000000000000000000001", b"1700000000.5e0",
               b"17000000000000000000000000000e-19", b"1" + b"0" * 400, b"0." + b"0" * 400 + b"1",
               b"NaN", b"Infinity", b"-Infinity", b"01", b"1.", b".5", b"+1", b"1e", b"0x10"]
RAW_STRINGS = [b'"\\u0074s"', b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\ude00"', b'"\xff"', b'"\xed\xa0\x80"',
               b'"a\x01"', b'"\\x"', b'"\\/"', b'"\xc3\xa9"', b'"' + b"x" * 64 + b'"', b'"' + b"x" * 65 + b'"',
               b'"' + b"y" * 256 + b'"', b'"' + b"y" * 257 + b'"', b'"\xc3\xa9' * 200 + b'"', b'""', b'"ios"',
               b'"books"']


def _dump(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    return str(v).encode() if type(v) is int else orjson.dumps(v)  # orjson refuses ints beyond 64 bits


scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INTS), st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(1.6e9, 1.8e9), st.floats(1.6e12, 1.8e12),
    st.text(max_size=5), st.sampled_from(["ios", "web", "", "books", "2023-11-14T22:13:20Z", "2023-11-14T22:13:20"]),
    st.sampled_from(RAW_NUMBERS), st.sampled_from(RAW_STRINGS),
)
raw_keys = st.one_of(st.sampled_from(KEYS).map(lambda k: orjson.dumps(k)),
                     st.sampled_from([b'"\\u0074s"', b'"\\u0069tem"', b'"\xff"', b'"ts\\u0000"', b'"\\ud800"']))


def _obj(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"


values = st.recursive(
    scalars.map(_dump),
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(lambda xs: b"[" + b",".join(xs) + b"]"),
                            st.lists(st.tuples(raw_keys, inner), max_size=4).map(_obj)),
    max_leaves=8,
)
DEEP = [b"[" * 1100 + b"]" * 1100, b"[" * 200 + b"]" * 200, b'{"a":' * 600 + b"1" + b"}" * 600]


VALID_TS = {"example": st.floats(1.6e9, 1.8e9).map(_dump), "mixed": st.integers(1_600_000_000_000, 1_800_000_000_000)
            .map(_dump), "iso": st.sampled_from([b'"2023-11-14T22:13:20Z"', b'"2023-11-14T22:13:20.5+01:00"'])}
SHORT = st.one_of(st.sampled_from(["books", "ios", "web", "a", "x" * 64, "y" * 256]), st.text(max_size=4),
                  st.integers(-5, 5), st.floats(-1e3, 1e3))


@st.composite
def documents(draw: Any, name: str) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # anything at all
        return draw(st.one_of(values, st.binary(max_size=20), st.sampled_from([b"", b"null", b"[]", b'"s"', b"{"])))
    if kind == 1:  # a byte mutation of a valid event
        doc = bytearray(orjson.dumps(next(iter(synth.interactions(1, start=1.7e9, rate=1.0,
                                                                 seed=draw(st.integers(0, 99)))))))
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(0, len(doc) - 1))
            op = draw(st.integers(0, 2))
            byte = draw(st.sampled_from([0, 1, 0x22, 0x2C, 0x30, 0x31, 0x3A, 0x5B, 0x5C, 0x65, 0x7B, 0x7D, 0x80, 0xFF]))
            if op == 0:
                doc[pos] = byte
            elif op == 1:
                doc.insert(pos, byte)
            else:
                del doc[pos]
        return bytes(doc)
    # a valid event of the stream, then a few of its values made adversarial, keys escaped, duplicated,
    # dropped, null, and unread fields added
    ts_key = b'"meta"' if name == "mixed" else b'"ts"'
    ts = draw(VALID_TS[name])
    fields: dict[str, Any] = {
        "ts": _obj([(b'"ts"', ts)]) if name == "mixed" else ts,
        "item": {"category": _dump(draw(SHORT)), "id": _dump(draw(SHORT))},
        "platform": _dump(draw(st.sampled_from(["ios", "web", "android"]))),
        "dwell_ms": _dump(draw(st.floats(0, 1e5))),
        "x": _dump(draw(SHORT)),
        "user_id": _dump(draw(st.text(max_size=3))),
    }
    adversarial = st.one_of(scalars.map(_dump), values, st.just(b"null"))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(["ts", "item", "item.category", "item.id", "platform", "dwell_ms", "x",
                                    "user_id"]))
        level = fields
        if key.startswith("item."):
            level, key = fields.get("item"), key[5:]
            if not isinstance(level, dict):
                continue
        level[key] = draw(adversarial)
        if draw(st.integers(0, 3)) == 0:
            del level[key]
    pairs: list[tuple[bytes, bytes]] = []
    for key, value in fields.items():
        raw_key = ts_key if key == "ts" else orjson.dumps(key)
        if draw(st.integers(0, 9)) == 0:  # an escaped key: the same key to both parsers
            raw_key = b'"\\u%04x' % ord(raw_key[1:2]) + raw_key[2:]
        if isinstance(value, dict):
            value = _obj([(orjson.dumps(k), v) for k, v in value.items()])
        pairs.append((raw_key, value))
        if draw(st.integers(0, 9)) == 0:  # a duplicate key: the last one counts
            pairs.append((raw_key, draw(adversarial)))
    for _ in range(draw(st.integers(0, 2))):  # unread fields, maybe deep or invalid
        pairs.append((draw(raw_keys), draw(st.one_of(values, st.sampled_from(DEEP)))))
    order = draw(st.permutations(range(len(pairs))))
    ws = draw(st.sampled_from([b"", b" ", b"\n\t", b"\x0c"]))
    return ws + _obj([pairs[i] for i in order]) + ws


def reference(dec: Decoder, values: list[bytes]) -> DecodedBatch:
    """What :meth:`Decoder.decode` must give: the per-event slow path, then the caps."""
    want = dec._decode_slow(values, CLOCK)
    want.truncated = [0 if cap is None else events_mod._cap_column(c, cap) for c, cap in zip(want.features, dec.caps)]
    if dec.n_extras:
        cut = len(want.features) - dec.n_extras
        want.extras, want.features, want.truncated = want.features[cut:], want.features[:cut], want.truncated[:cut]
    return want


def _same(got: DecodedBatch, want: DecodedBatch) -> None:
    assert got.accepted == want.accepted and got.rejected == want.rejected
    assert got.ts.tolist() == want.ts.tolist() and got.segments == want.segments
    assert got.truncated == want.truncated
    for a, b in zip(got.features + got.extras, want.features + want.extras, strict=True):
        assert [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in a] == \
               [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in b]
        assert [type(v) for v in a] == [type(v) for v in b]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_typed_path_decodes_adversarial_json_like_the_reference(name, data):
    cfg = CONFIGS[name]
    batches = data.draw(st.lists(st.lists(documents(name), max_size=10), min_size=1, max_size=5))
    dec = Decoder(cfg, clock=lambda: CLOCK)
    saved = typed_mod.MAX_FAILURES
    typed_mod.MAX_FAILURES = 2.0  # never give a batch up to orjson: every event meets msgspec first
    try:
        for values in batches:
            _same(dec.decode(values), reference(Decoder(cfg, clock=lambda: CLOCK), values))
    finally:
        typed_mod.MAX_FAILURES = saved


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("big", [b"1" + b"0" * 330, b"-1" + b"0" * 330, b"18446744073709551616",
                                 b"9223372036854775808", b"-9223372036854775809", b"18446744073709551615"])
def test_an_int_a_duplicate_key_overrides_is_still_checked_like_the_reference(name, big):
    """orjson rejects a document whose number overflows, wherever it stands; a duplicate key
    later in the document does not hide it. Found by CI: msgspec took the first
    ``user_id`` (an int of 331 digits) and kept the second, so the typed path accepted
    what the reference rejects. Every field, after a value of each type has widened it."""
    cfg = CONFIGS[name]
    ts = {"example": b'"ts":1700000000.5', "mixed": b'"meta":{"ts":1700000000500}',
          "iso": b'"ts":"2023-11-14T22:13:20Z"'}[name]
    fields = [b'"platform"', b'"x"', b'"user_id"', b'"dwell_ms"']
    widen = b"{" + ts + b',"item":{"category":7,"id":false},' + b",".join(f + b":1.5" for f in fields) + b"}"
    for key in fields + [b'"item"']:
        inner = b'{"category":' + big + b',"category":"books","id":"a"}' if key == b'"item"' else big
        doc = b"{" + ts + b"," + key + b":" + inner + b"," + key + b':"ios","item":{"category":"books","id":"a"}}'
        if key == b'"item"':
            doc = b"{" + ts + b',"item":' + inner + b"}"
        values = [widen, doc, b"{" + ts + b"," + key + b":" + big + b"}"]
        dec = Decoder(cfg, clock=lambda: CLOCK)
        saved = typed_mod.MAX_FAILURES
        typed_mod.MAX_FAILURES = 2.0
        try:
            _same(dec.decode(values), reference(Decoder(cfg, clock=lambda: CLOCK), values))
        finally:
            typed_mod.MAX_FAILURES = saved


@settings(max_examples=100, deadline=None)
@given(extra=st.dictionaries(st.sampled_from(["user_id", "ctx", "tags", "score"]),
                             st.one_of(st.text(max_size=3), st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1),
                                       st.lists(st.integers(0, 3), max_size=2),
                                       st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-9, 9), max_size=2))),
       bad=st.sampled_from([b'"\xff"', b"1e400", b"-1e999", b'"\xed\xa0\x80"', b"NaN", b"[" * 1100 + b"]" * 1100]))
def test_unread_fields_are_checked_like_orjson_once_learned(extra, bad):
    """After the keys were learned, an unread field whose content orjson refuses (invalid
    UTF-8, a number overflowing to infinity) still rejects the event as invalid_json."""
    cfg = CONFIGS["example"]
    dec = Decoder(cfg, clock=lambda: CLOCK)
    good = [orjson.dumps({"ts": 1.7e9 + i, "item": {"category": "books", "id": "i1"}, "platform": "ios",
                          "dwell_ms": 5.0, **extra}) for i in range(8)]
    dec.decode(good)  # learns the extra keys
    for key in [*extra, "user_id"]:
        poisoned = good[0][:-1] + b"," + json.dumps(key).encode() + b":" + bad + b"}"
        values = [*good, poisoned]
        _same(dec.decode(values), reference(dec, values))
        assert dec.decode(values).rejected == [(8, "invalid_json")]


def test_known_events_take_the_typed_path_without_orjson(monkeypatch):
    cfg = CONFIGS["example"]
    events = list(synth.encode(synth.interactions(200, start=1.7e9, rate=100.0)))
    dec = Decoder(cfg, clock=lambda: CLOCK)
    first = dec.decode(events[:100])  # msgspec refuses the unknown user_id: orjson decides, the key is learned
    calls = []
    real = orjson.loads
    monkeypatch.setattr(events_mod.orjson, "loads", lambda raw: calls.append(raw) or real(raw))
    second = dec.decode(events[100:])
    assert calls == [] and len(second) == 100 and len(first) == 100
    _same(second, reference(Decoder(cfg, clock=lambda: CLOCK), events[100:]))


@pytest.mark.parametrize("odd", [{"platform": "tv"}, {"platform": 3}, {"item": {"category": True, "id": 5}},
                                 {"dwell_ms": 7}, {"item": {"category": "comics", "id": None}}])
def test_a_value_of_another_type_or_outside_the_vocabulary_widens_the_struct_once(monkeypatch, odd):
    """Categorical fields start as their declared strings (or any str), numbers as floats; the
    first event with something else is decided by the reference path and widens the type, so
    the events after it take the typed path again."""
    cfg = CONFIGS["example"]
    events = list(synth.encode(synth.interactions(40, start=1.7e9, rate=100.0)))
    odd_events = [orjson.dumps({**orjson.loads(e), **odd}) for e in events]
    dec = Decoder(cfg, clock=lambda: CLOCK)
    first = events[:20] + odd_events[:1]
    _same(dec.decode(first), reference(dec, first))
    calls: list[bytes] = []
    real = orjson.loads
    monkeypatch.setattr(events_mod.orjson, "loads", lambda raw: calls.append(raw) or real(raw))
    second = events[20:] + odd_events[20:]
    got = dec.decode(second)
    monkeypatch.undo()
    assert calls == []
    _same(got, reference(dec, second))


def test_a_preparer_pickles_and_decodes_the_same_after():
    import pickle
    import time

    from driftmon.decode.prepare import Preparer

    cfg = CONFIGS["example"]
    events = list(synth.encode(synth.interactions(50, start=1.7e9, rate=100.0)))
    prep = Preparer(cfg, clock=time.time)
    prep.prepare(events)  # learns user_id
    again = pickle.loads(pickle.dumps(prep))
    _same(again.decoder.decode(events), prep.decoder.decode(events))
    a, b = prep.prepare(events), again.prepare(events)
    assert a.rejected == b.rejected == [] and a.coded.ts.tolist() == b.coded.ts.tolist()


def test_a_path_that_is_a_value_and_an_object_falls_back_to_orjson():
    cfg = parse_config({"streams": [{"name": "s", "features": [
        {"name": "a", "field": "item", "type": "categorical", "top_k": 3},
        {"name": "b", "field": "item.id", "type": "categorical", "top_k": 3}]}]}).streams[0]
    dec = Decoder(cfg, clock=lambda: CLOCK)
    assert dec._typed is None
    values = [b'{"ts": 1700000000, "item": "x"}', b'{"ts": 1700000000, "item": {"id": "y"}}']
    _same(dec.decode(values), reference(dec, values))
