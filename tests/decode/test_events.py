"""Value length caps: no categorical value longer than 256 characters reaches window state,
and no bin label longer than that reaches a result row or a webhook."""

from __future__ import annotations

import orjson

from driftmon.config import parse_config
from driftmon.decode.events import MAX_VALUE_CHARS, TRUNCATION_MARKER, Decoder
from driftmon.detect.result import MAX_LABEL_CHARS, BinShare, DriftResult, cap_label
from driftmon.pipeline import StreamPipeline

HUGE = "v" * (2 << 20)  # 2 MiB


def stream(categories: list[str] | None = None):
    cat = {"categories": categories} if categories else {"top_k": 5}
    return parse_config({"streams": [{
        "name": "s", "window": {"count": 4},
        "features": [{"name": "c", "type": "categorical", **cat},
                     {"name": "x", "type": "numeric", "edges": [0, 1]}],
    }]}).streams[0]


def events(values: list[str]) -> list[bytes]:
    return [orjson.dumps({"ts": 1_700_000_000 + i, "c": v, "x": 0.5}) for i, v in enumerate(values)]


def test_long_category_values_are_cut_with_a_marker_and_counted_on_both_decode_paths():
    values = ["a", HUGE, "b" * 300, None, "c" * MAX_VALUE_CHARS]
    fast = Decoder(stream(), clock=lambda: 2e9).decode(events(values))  # type: ignore[arg-type]
    slow = Decoder(stream(), clock=lambda: 2e9).decode([*events(values), b"not json"])  # type: ignore[arg-type]
    for batch in (fast, slow):
        col = batch.features[0]
        assert col[0] == "a" and col[3] is None and col[4] == "c" * MAX_VALUE_CHARS
        assert col[1] == "v" * (MAX_VALUE_CHARS - 1) + TRUNCATION_MARKER
        assert col[2] == "b" * (MAX_VALUE_CHARS - 1) + TRUNCATION_MARKER
        assert max(len(v) for v in col if v) == MAX_VALUE_CHARS
        assert batch.truncated == [2, 0] and len(batch) == 5  # every event is still counted
    assert slow.rejected == [(5, "invalid_json")]


def test_a_declared_category_longer_than_the_cap_is_never_cut():
    long_cat = "L" * 400
    batch = Decoder(stream(["a", long_cat]), clock=lambda: 2e9).decode(events([long_cat, "L" * 500]))
    assert batch.features[0][0] == long_cat
    assert len(batch.features[0][1]) == 401 and batch.truncated == [1, 0]


def test_rows_from_2_mib_values_stay_small():
    """The original failure: 2 MiB category values became bins, rows grew past 1 MB."""
    pipe = StreamPipeline(stream())
    out = pipe.process(events([HUGE + str(i % 3) for i in range(12)] + ["a"] * 8))
    assert out.truncated == (12, 0)
    assert out.results
    for r in out.results:
        line = orjson.dumps(r.to_dict())
        assert len(line) < 4096, len(line)
        assert all(len(b) <= MAX_LABEL_CHARS for b in r.bins)


def test_result_labels_are_capped_and_stay_distinct():
    a, b = "x" * 1000 + "a", "x" * 1000 + "b"
    r = DriftResult(stream="s", feature="f", segment="s" * 300, window_start=0.0, window_end=60.0, metric="kl",
                    unit="nats", divergence=0.0, p_value=1.0, n_current=1, n_reference=1, state="ok",
                    transition="none", bins=(a, b, "__other__"), counts=(1, 0, 0),
                    top_bins=(BinShare(a, 0.5, 0.5, 0.0),))
    assert r.bins[0] != r.bins[1] and all(len(x) == MAX_LABEL_CHARS for x in r.bins[:2])
    assert r.bins[0] == cap_label(a) and r.top_bins[0].bin == cap_label(a)
    assert r.bins[2] == "__other__" and len(r.segment or "") == MAX_LABEL_CHARS
    assert len(orjson.dumps(r.to_dict())) < 2000
