"""Decoder: the segment value rules (``__missing__``, ``__empty__``, the 64-character cut),
the same on the columnar fast path and the per-event slow path."""

from __future__ import annotations

import json

from driftmon.config import parse_config
from driftmon.decode.events import Decoder
from driftmon.vocabulary import EMPTY_SEGMENT, segment_label


def decoder(*segment_by: str) -> Decoder:
    cfg = parse_config({"streams": [{"name": "s", "segment_by": list(segment_by), "features": [
        {"name": "c", "type": "categorical", "categories": ["a"]}]}]})
    return Decoder(cfg.streams[0], clock=lambda: 2e9)


def events(*platforms: object) -> list[bytes]:
    out = []
    for p in platforms:
        doc: dict[str, object] = {"ts": 1_700_000_000, "c": "a"}
        if p is not None:
            doc["platform"] = p
        out.append(json.dumps(doc).encode())
    return out


def test_an_empty_segment_value_is_reserved_empty_never_the_overall_label():
    d = decoder("platform")
    # all strings: the columnar fast path
    assert d.decode(events("ios", "", "web")).segments == ["ios", EMPTY_SEGMENT, "web"]
    assert d.decode(events("", "")).segments == [EMPTY_SEGMENT, EMPTY_SEGMENT]
    # mixed types, an absent field, a bad row: the slow path decides the same way
    assert d.decode(events("", 7, None)).segments == [EMPTY_SEGMENT, "7", "__missing__"]
    batch = d.decode([*events(""), b"not json", *events("x" * 100)])
    assert batch.segments == [EMPTY_SEGMENT, "x" * 64] and batch.rejected == [(1, "invalid_json")]
    # several segment fields: each empty part is reserved, so "a|" cannot pose as "a" + ""
    two = decoder("platform", "region")
    docs = [json.dumps({"ts": 1_700_000_000, "c": "a", "platform": p, "region": r}).encode()
            for p, r in (("", ""), ("ios", ""), ("", "eu"))]
    assert two.decode(docs).segments == [f"{EMPTY_SEGMENT}|{EMPTY_SEGMENT}", f"ios|{EMPTY_SEGMENT}",
                                         f"{EMPTY_SEGMENT}|eu"]
    assert "" not in (d.decode(events("", "", "a")).segments or [])


def test_segment_label_keeps_the_overall_series_apart():
    assert segment_label(None) == ""  # the overall series: no segment label in Prometheus/Alertmanager
    assert segment_label("") == EMPTY_SEGMENT  # e.g. restored from a checkpoint written before the rule
    assert segment_label("ios") == "ios"
