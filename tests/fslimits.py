"""A real filesystem limit for tests: ``RLIMIT_FSIZE`` on a child process.

Past the limit, ``write()`` in that process fails with ``EFBIG`` (Python
ignores ``SIGXFSZ``), as it fails with ``ENOSPC`` on a full disk: a short
write up to the limit, then the error.  The limit applies to regular files
only, so the child's output goes through a pipe (copied to a log file by the
parent).  The parent can raise it again while the child runs
(:func:`lift_file_size_limit`), which is "space coming back".  Nothing here
needs root or a mount.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def limited_argv(limit: int, argv: list[str]) -> list[str]:
    """``python argv...`` (``argv[0]`` a module run as ``-m``) under a file size limit of ``limit`` bytes."""
    module, args = argv[0], argv[1:]
    boot = ("import resource, runpy, sys\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({int(limit)}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
            f"sys.argv = {[module, *args]!r}\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", boot]


def run_limited(code: str, limit: int, timeout: float = 60) -> Any:
    """Run ``code`` in a child Python under a file size limit of ``limit`` bytes; the child
    prints one JSON document last, which is returned.  The child may call
    ``lift()`` to remove its own limit (space coming back)."""
    prelude = textwrap.dedent(f"""\
        import json, resource, sys
        _HARD = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, ({int(limit)}, _HARD))
        def lift():
            resource.setrlimit(resource.RLIMIT_FSIZE, (_HARD, _HARD))
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def lift_file_size_limit(pid: int) -> None:
    """Raise a running process's file size limit to its hard limit."""
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def pipe_to_file(proc: subprocess.Popen[bytes], path: Path) -> threading.Thread:
    """Copy ``proc``'s stdout to ``path`` as it comes (the child cannot write big files itself)."""
    def copy() -> None:
        assert proc.stdout is not None
        with open(path, "ab", buffering=0) as out:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                out.write(chunk)

    thread = threading.Thread(target=copy, name=f"log-{proc.pid}", daemon=True)
    thread.start()
    return thread


def tree_modes(root: Path) -> dict[str, int]:
    """``{relative path: permission bits}`` of every file and directory under ``root`` (itself included)."""
    out = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return out


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


__all__ = ["REPO", "json", "lift_file_size_limit", "limited_argv", "pipe_to_file", "run_limited",
           "temp_files", "tree_modes"]
