"""replay's merge of one file per stream by event time (driftmon/source/merge.py)."""

from __future__ import annotations

from driftmon.config import parse_config
from driftmon.source.merge import event_time, merged_chunks


def test_files_are_merged_by_event_time_in_chunks(tmp_path):
    cfg = parse_config({"streams": [
        {"name": "a", "features": [{"name": "x", "type": "categorical", "categories": ["1"]}]},
        {"name": "b", "timestamp": {"field": "meta.t", "unit": "ms"},
         "features": [{"name": "x", "type": "categorical", "categories": ["1"]}]},
    ]})
    (tmp_path / "a").write_bytes(b'{"ts": 1, "i": "a1"}\n{"ts": 3, "i": "a3"}\nnot json\n\n{"ts": 5, "i": "a5"}\n')
    (tmp_path / "b").write_bytes(b'{"meta": {"t": 2000}, "i": "b2"}\n{"meta": {"t": 3000}, "i": "b3"}\n'
                                 b'{"meta": {"t": 9000}, "i": "b9"}\n')
    inputs = [(cfg.stream("a"), str(tmp_path / "a")), (cfg.stream("b"), str(tmp_path / "b"))]
    chunks = list(merged_chunks(inputs, batch=3))
    # merged a1 b2 a3 | b3 (tie: input order) "not json" (keeps its place after a3) a5 | b9,
    # each chunk as runs per stream in file order
    short = [[(name, [v[-4:-2] if v.startswith(b"{") else v for v in values]) for name, values in c] for c in chunks]
    assert short == [[("a", [b"a1", b"a3"]), ("b", [b"b2"])],
                     [("a", [b"not json", b"a5"]), ("b", [b"b3"])],
                     [("b", [b"b9"])]]
    assert chunks[0] == [("a", [b'{"ts": 1, "i": "a1"}', b'{"ts": 3, "i": "a3"}']), ("b", [b'{"meta": {"t": 2000}, "i": "b2"}'])]


def test_event_time_reads_the_configured_field_and_unit():
    assert event_time(b'{"ts": 1.5}', ("ts",), "s") == 1.5
    assert event_time(b'{"a": {"b": 1500}}', ("a", "b"), "ms") == 1.5
    assert event_time(b'{"ts": "1970-01-01T00:00:02Z"}', ("ts",), "iso") == 2.0
    for bad in (b"{", b"[]", b'{"ts": true}', b'{"ts": "x"}', b'{"ts": null}', b'{"a": 1}', b'{"ts": 1e999}'):
        assert event_time(bad, ("ts",), "s") is None
    assert event_time(b'{"ts": 5}', ("ts",), "iso") is None
