"""Every file and directory driftmon writes is created here: one mode policy, one
atomic replacement.

**Modes.** driftmon creates files ``0600`` (:data:`FILE_MODE`) and directories
``0700`` (:data:`DIR_MODE`): the checkpoint, the webhook outbox, the
firing-alert tracker, the results file and every directory it makes for them.
The umask can only narrow that.  A file or directory that already exists keeps
its mode (driftmon never ``chmod``s), so an operator who wants a log shipper to
read the results file creates it (or its directory) beforehand with the mode
they need; files that are replaced atomically (checkpoint, outbox messages,
``firing.json``) are new files each time and always ``0600``.

**Atomic replacement.** :func:`atomic_write` writes to a temp file in the same
directory, fsyncs it, renames it over the target and fsyncs the directory, so
after a crash a reader finds either the old or the new file, never a torn one.
A write that fails (disk full, file size limit, I/O error) removes its temp
file before the error propagates, so failures never leave files behind.  Temp
files end in :data:`TMP_SUFFIX`; only a crash in the middle of a write leaves
one, and :func:`remove_temp_files` (called by each directory's owner at
start-up) clears those.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid

TMP_SUFFIX = ".tmp"
FILE_MODE = 0o600  # every file driftmon creates (before the umask)
DIR_MODE = 0o700  # every directory driftmon creates (before the umask)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def ensure_dir(path: str) -> None:
    """Create ``path`` and any missing parents with :data:`DIR_MODE`; existing ones are left as they are."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    parent = os.path.dirname(path)
    if parent != path:
        if os.path.lexists(parent) and not os.path.isdir(parent):  # as os.mkdir says under a file
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        ensure_dir(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def open_append(path: str) -> int:
    """An append-only file descriptor on ``path``, created with :data:`FILE_MODE` if missing."""
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _CLOEXEC, FILE_MODE)


def remove_temp_files(directory: str, prefix: str = "") -> int:
    """Remove ``<prefix>*<TMP_SUFFIX>`` files a crash left in ``directory``; returns how many."""
    removed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix) and name.endswith(TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
                removed += 1
    return removed


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
    *,
    tmp_prefix: str | None = None,
    best_effort_dir_sync: bool = False,
) -> None:
    """Replace ``path`` by ``data`` atomically and durably (temp file, fsync, rename, fsync
    of the directory).  The new file has :data:`FILE_MODE`.

    The temp file is ``<tmp_prefix><random>.tmp`` in the same directory (default
    prefix: ``<name>.``).  If anything fails it is removed and the original error
    raised; ``path`` is then unchanged.
    """
    directory = os.path.dirname(path) or "."
    prefix = os.path.basename(path) + "." if tmp_prefix is None else tmp_prefix
    tmp = os.path.join(directory, f"{prefix}{uuid.uuid4().hex}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (e.g. up to a file size limit)
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # never let the cleanup hide the real error
            os.unlink(tmp)
        raise
    fsync_dir(directory, best_effort=best_effort_dir_sync)
