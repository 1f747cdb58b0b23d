"""The file source: JSON lines as one partition, under the Source contract."""

from __future__ import annotations

import io

import pytest

from driftmon.source.base import Source, values_of
from driftmon.source.file import FileSource


def test_file_source_reads_lines_in_batches_with_offsets(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"a\n\nb\r\nc\n   \nd")
    src = FileSource(str(path), batch=2)
    assert isinstance(src, Source)
    got = []
    while batches := src.poll_batches():
        ((key, recs),) = batches.items()
        assert key == (str(path), 0)
        got += [(r.topic, r.partition, r.offset, r.value) for r in recs]
        assert values_of(recs) == [r.value for r in recs]
    assert got == [(str(path), 0, i, v) for i, v in enumerate([b"a", b"b", b"c", b"d"])]
    src.commit({(str(path), 0): 4})
    assert src.committed == {(str(path), 0): 4} and src.assignment() == {(str(path), 0)}
    src.close()


def test_file_source_seeks_forward_only():
    src = FileSource(io.BytesIO(b"".join(b"%d\n" % i for i in range(10))), batch=3, name="f")
    src.seek({("f", 0): 4})
    (recs,) = src.poll_batches().values()
    assert [(r.offset, r.value) for r in recs] == [(4, b"4"), (5, b"5"), (6, b"6")]
    assert recs[-1].offset == 6 and [r.offset for r in recs[1:]] == [5, 6]
    with pytest.raises(ValueError, match="cannot seek back"):
        src.seek({("f", 0): 2})
