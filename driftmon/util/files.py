"""Atomic file replacement: the one place that writes state files.

:func:`atomic_write` writes to a temp file in the same directory, fsyncs it,
renames it over the target and fsyncs the directory, so after a crash a
reader finds either the old or the new file, never a torn one.  Used by the
checkpoint store, the webhook outbox and the firing-alert tracker.

Temp files end in :data:`TMP_SUFFIX`; a write interrupted by a crash leaves
one behind, which the owner of the directory removes at start-up.
"""

from __future__ import annotations

import os
import uuid

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str, *, best_effort: bool = False) -> None:
    """fsync a directory so a rename in it is durable.  With ``best_effort``,
    platforms or file systems that cannot do it are skipped silently."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if best_effort:  # pragma: no cover - platforms without directory fds
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not best_effort:  # pragma: no cover
            raise
    finally:
        os.close(fd)


def atomic_write(
    path: str,
    data: bytes,
    mode: int = 0o600,
    *,
    tmp_prefix: str | None = None,
    best_effort_dir_sync: bool = False,
) -> None:
    """Replace ``path`` by ``data`` atomically and durably (temp file, fsync, rename, fsync
    of the directory).

    ``mode`` is the new file's permission bits, before the umask (``0o666`` gives what
    ``open()`` would).  The temp file is ``<tmp_prefix><random>.tmp`` in the same
    directory (default prefix: ``<name>.``); it is removed if the write fails.
    """
    directory = os.path.dirname(path) or "."
    prefix = os.path.basename(path) + "." if tmp_prefix is None else tmp_prefix
    tmp = os.path.join(directory, f"{prefix}{uuid.uuid4().hex}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory, best_effort=best_effort_dir_sync)
