"""The state directory: created, proven writable, and locked for the life of the process.

Two daemons sharing one ``state.dir`` overwrite each other's checkpoint (each
holds the state of its own partitions only) and each other's outbox files, so
the daemon takes an exclusive ``flock(2)`` on ``<state.dir>/driftmon.lock``
before it reads or writes anything there and holds it until it exits.  The
kernel drops the lock when the process ends, however it ends (``kill -9``, OOM
kill), so there is never a stale lock to clean up; the file itself stays (it is
never deleted: a deleted lock file would let a third process lock a new inode
while the second still holds the old one).  The file records who holds it
(pid, host, start time) so the process that is refused can say who holds it.

``flock`` excludes processes on one host, and on NFS clients of one server
(Linux emulates it with NFS byte-range locks); give every replica its own
volume anyway.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time

from driftmon.service.errors import StateDirInUseError, UnwritablePathError
from driftmon.util.files import FILE_MODE, ensure_dir

log = logging.getLogger(__name__)

LOCK_NAME = "driftmon.lock"
_PROBE_NAME = ".driftmon-write-probe"
_FIX = "point state.dir at a writable directory (a persistent volume in production)"


def describe_os_error(exc: OSError, path: str) -> str:
    """``"Permission denied"``, or ``"Not a directory: /a/file"`` when the error is about
    another path than ``path`` (a parent, for instance).  A file where a directory
    should be is "Not a directory" (``os.makedirs`` says "File exists")."""
    why = exc.strerror or type(exc).__name__
    other = os.fspath(exc.filename) if exc.filename else None
    if isinstance(exc, FileExistsError) and other and not os.path.isdir(other):
        why = "Not a directory"  # os.makedirs met a file where a directory belongs
    if other and other != path:
        why = f"{why}: {other}"
    return why


class StateDirLock:
    """The exclusive lock on one state dir, held until :meth:`release` or process exit."""

    def __init__(self, directory: str, fd: int) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = fd

    def __repr__(self) -> str:
        return f"StateDirLock({self.path!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (idempotent).  The lock file stays."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, from the lock file, for the refused process's message."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw)
        return f"pid {int(info['pid'])} on {info.get('host', '?')}, since {info.get('since', '?')}"
    except (OSError, ValueError, TypeError, KeyError):
        return "pid unknown"


def acquire_state_dir(directory: str) -> StateDirLock:
    """Create ``directory`` if needed, prove driftmon can create files in it, and lock it.

    Raises :class:`UnwritablePathError` (exit 4) when it cannot be created or written,
    :class:`StateDirInUseError` (exit 5) when another process holds its lock.
    """
    try:
        ensure_dir(directory)  # 0700, as every directory driftmon creates
    except FileExistsError:
        raise UnwritablePathError(f"state dir {directory} exists and is not a directory; {_FIX}") from None
    except OSError as exc:
        raise UnwritablePathError(f"state dir {directory} cannot be created "
                                  f"({describe_os_error(exc, directory)}); {_FIX}") from None
    if not os.path.isdir(directory):
        raise UnwritablePathError(f"state dir {directory} is not a directory; {_FIX}")
    lock_path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except OSError as exc:
        raise UnwritablePathError(f"state dir {directory} is not writable ({describe_os_error(exc, lock_path)}: "
                                  f"cannot create {lock_path}); {_FIX}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StateDirInUseError(
                f"state dir {directory} is in use by another driftmon process ({holder}; lock {lock_path}); "
                "two daemons must never share a state dir: give each its own state.dir") from None
        raise UnwritablePathError(f"state dir {directory} cannot be locked ({describe_os_error(exc, lock_path)}); "
                                  f"{_FIX}") from None
    lock = StateDirLock(directory, fd)
    try:
        _probe_create(directory)
        _record_holder(fd)
    except BaseException:
        lock.release()
        raise
    log.debug("locked state dir %s (%s)", directory, lock_path)
    return lock


def _probe_create(directory: str) -> None:
    """Checkpoints and outbox entries are new files renamed into place: prove we may create one
    (the lock file may be left over from a run when the directory was still writable)."""
    probe = os.path.join(directory, _PROBE_NAME)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except OSError as exc:
        raise UnwritablePathError(f"state dir {directory} is not writable ({describe_os_error(exc, probe)}: "
                                  f"cannot create files in it); {_FIX}") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def _record_holder(fd: int) -> None:
    """Write who holds the lock into the lock file (best effort: it is only for messages)."""
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError as exc:
        log.debug("could not record the lock holder in the lock file: %s", exc)
