"""driftmon.util.files: one mode policy, atomic writes that never leave temp files."""

from __future__ import annotations

import os
import stat

import pytest

from driftmon.util.files import DIR_MODE, FILE_MODE, atomic_write, ensure_dir, open_append, remove_temp_files
from tests.fslimits import run_limited, temp_files, tree_modes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_created_files_are_0600_and_directories_0700(tmp_path, umask_022):
    ensure_dir(str(tmp_path / "state" / "outbox" / "r"))
    atomic_write(str(tmp_path / "state" / "checkpoint.json"), b"{}")
    os.close(open_append(str(tmp_path / "state" / "sinks" / "results.jsonl")))
    modes = tree_modes(tmp_path / "state")
    assert modes == {".": DIR_MODE, "outbox": DIR_MODE, "outbox/r": DIR_MODE, "checkpoint.json": FILE_MODE,
                     "sinks": DIR_MODE, "sinks/results.jsonl": FILE_MODE}
    assert (FILE_MODE, DIR_MODE) == (0o600, 0o700)


def test_existing_files_and_directories_keep_their_mode(tmp_path, umask_022):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    results = shared / "results.jsonl"
    results.write_bytes(b"")
    results.chmod(0o640)  # e.g. readable by a log shipper's group
    ensure_dir(str(shared))
    os.close(open_append(str(results)))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE(results.stat().st_mode) == 0o640
    old = tmp_path / "firing.json"
    old.write_bytes(b"old")
    old.chmod(0o644)
    atomic_write(str(old), b"new")  # a replaced state file is a new file: the policy's mode
    assert stat.S_IMODE(old.stat().st_mode) == FILE_MODE and old.read_bytes() == b"new"


def test_a_write_over_the_file_size_limit_fails_cleanly_and_leaves_no_temp_file(tmp_path):
    """RLIMIT_FSIZE makes write() fail past 4 KiB, as a full disk does: the error
    reaches the caller, the old file is intact and no ``*.tmp`` is left behind."""
    target = tmp_path / "d" / "state.json"
    got = run_limited(f"""
        import errno, os
        from driftmon.util.files import atomic_write, ensure_dir
        target = {str(target)!r}
        ensure_dir(os.path.dirname(target))
        atomic_write(target, b"old")
        failures = []
        for i in range(50):
            try:
                atomic_write(target, b"x" * 10_000)
            except OSError as exc:
                failures.append(errno.errorcode[exc.errno])
        lift()
        atomic_write(target, b"y" * 10_000)
        print(json.dumps({{"failures": failures}}))
        """, limit=4096)
    assert got["failures"] == ["EFBIG"] * 50
    assert target.read_bytes() == b"y" * 10_000
    assert temp_files(tmp_path) == []


def test_remove_temp_files_only_takes_its_prefix(tmp_path):
    for name in ("a.json.1.tmp", "a.json.2.tmp", "b.json.3.tmp", "a.json"):
        (tmp_path / name).write_bytes(b"")
    assert remove_temp_files(str(tmp_path), "a.json.") == 2
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json.3.tmp"]
    assert remove_temp_files(str(tmp_path / "missing")) == 0
