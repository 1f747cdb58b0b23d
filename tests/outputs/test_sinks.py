"""The results file survives a crash mid-write: a torn last line is cut on reopen."""

from driftmon.outputs.sinks import JsonlSink


def test_torn_last_line_is_cut_when_the_sink_reopens(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": 3, "tor')
    JsonlSink(str(path)).close()
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


def test_whole_file_and_missing_file_are_left_alone(tmp_path):
    path = tmp_path / "results.jsonl"
    JsonlSink(str(path)).close()
    assert path.read_bytes() == b""
    path.write_bytes(b'{"a": 1}\n')
    JsonlSink(str(path)).close()
    assert path.read_bytes() == b'{"a": 1}\n'
    only_torn = tmp_path / "torn.jsonl"
    only_torn.write_bytes(b'{"x"')
    JsonlSink(str(only_torn)).close()
    assert only_torn.read_bytes() == b""
