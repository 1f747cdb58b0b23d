"""Durable alert state under ``state.dir``: a bounded on-disk outbox per receiver
and the tracker of firing alerts (so a resolve after a restart keeps its startsAt).

The outbox is one file per message, ``<seq>.json`` with a zero-padded monotonic
sequence, written to a temp file, fsynced and renamed (then the directory is
fsynced).  Each file holds exactly the bytes that will be POSTed.  A crash
leaves either the whole message or none of it, never a torn one.

A message that cannot be written (disk full, I/O error) is not dropped: it is
kept in memory, still delivered from there, and written at the next
:meth:`Outbox.sync`, which the daemon calls before each checkpoint and which
raises until everything undelivered is on disk, so the checkpoint waits for it
(:mod:`driftmon.outputs.failures`).  A crash meanwhile loses nothing: the
alert is computed again from the previous checkpoint.  The firing-alert
tracker works the same way.  Files are ``0600`` in ``0700`` directories
(:mod:`driftmon.util.files`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections import deque
from dataclasses import asdict, dataclass

from driftmon.outputs.failures import FailureLog
from driftmon.util.files import atomic_write, ensure_dir, remove_temp_files

log = logging.getLogger(__name__)

_SEQ_WIDTH = 20
_SUFFIX = ".json"


class AlertsNotWritten(OSError):
    """Alert state kept in memory could not be written; ``output`` names which
    (``outbox`` or ``firing_alerts``, :data:`driftmon.vocabulary.OUTPUTS`)."""

    def __init__(self, output: str, message: str, errno: int | None = None) -> None:
        super().__init__(errno, message)
        self.output = output

    def __str__(self) -> str:
        return str(self.strerror)


def _write(path: str, data: bytes) -> None:
    """Atomically replace ``path``; the directory fsync is skipped where the platform cannot do it."""
    atomic_write(path, data, best_effort_dir_sync=True)


def safe_dirname(name: str) -> str:
    """A receiver name usable as one path component; altered names get a hash suffix
    so two different names never share an outbox."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    if clean == name and clean:
        return clean
    return f"{clean or 'receiver'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


class Outbox:
    """Bounded FIFO of message bodies for one receiver, persisted as one file per message.

    ``put`` never waits for the network and never raises for a failed write (the
    message is kept in memory and :meth:`sync` writes it later); when more than
    ``max_items`` messages are queued the oldest are deleted and their count
    returned so the caller can report them as "dropped".  ``head``/``ack`` are
    used by the single sender thread.  All methods are thread-safe.
    """

    def __init__(self, directory: str, max_items: int) -> None:
        self.directory = directory
        self.max_items = max(1, int(max_items))
        ensure_dir(directory)
        self._cond = threading.Condition()
        self._woken = False
        remove_temp_files(directory)  # writes interrupted by a crash: never renamed, never acked
        seqs = []
        for name in os.listdir(directory):
            if name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit():
                seqs.append(int(name[: -len(_SUFFIX)]))
        seqs.sort()
        self._seqs: deque[int] = deque(seqs)  # on disk, oldest first
        self._unwritten: deque[tuple[int, bytes]] = deque()  # newer than every file: written by sync()
        self._next = seqs[-1] + 1 if seqs else 1
        self._failures = FailureLog(log, f"outbox {directory}")
        self.write_errors = 0  # failed message writes (each is retried)

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:0{_SEQ_WIDTH}d}{_SUFFIX}")

    def __len__(self) -> int:
        with self._cond:
            return len(self._seqs) + len(self._unwritten)

    @property
    def unwritten(self) -> int:
        """Messages only in memory (their write failed), waiting for :meth:`sync`."""
        with self._cond:
            return len(self._unwritten)

    def put(self, body: bytes) -> int:
        """Queue ``body`` at the tail (on disk, or in memory if the write fails); return how
        many oldest messages were dropped."""
        with self._cond:
            seq = self._next
            self._next += 1
            self._unwritten.append((seq, body))
            self._write_unwritten()
            dropped = 0
            while len(self._seqs) + len(self._unwritten) > self.max_items:
                if self._seqs:
                    self._unlink(self._seqs.popleft())
                else:
                    self._unwritten.popleft()
                dropped += 1
            self._cond.notify_all()
            return dropped

    def _write_unwritten(self) -> OSError | None:
        """Write the in-memory messages in order; stop at the first failure (kept for later)."""
        while self._unwritten:
            seq, body = self._unwritten[0]
            try:
                _write(self._path(seq), body)
            except OSError as exc:
                self.write_errors += 1
                self._failures.failed(f"{exc} ({len(self._unwritten)} message(s) in memory)")
                return exc
            self._unwritten.popleft()
            self._seqs.append(seq)
        return None

    def sync(self) -> None:
        """Write every message kept in memory; raises OSError while any cannot be written."""
        with self._cond:
            if not self._unwritten:
                return
            exc = self._write_unwritten()
            if exc is not None:
                raise AlertsNotWritten("outbox", f"outbox {self.directory}: {len(self._unwritten)} undelivered "
                                                 f"message(s) not written ({exc.strerror or exc})", exc.errno)
        self._failures.recovered("messages kept in memory are on disk")

    def head(self) -> tuple[int, bytes] | None:
        """The oldest message as ``(seq, body)``, or None when empty."""
        with self._cond:
            while self._seqs:
                seq = self._seqs[0]
                try:
                    with open(self._path(seq), "rb") as f:
                        return seq, f.read()
                except FileNotFoundError:  # removed behind our back: skip it
                    log.warning("outbox %s: message %d vanished from disk", self.directory, seq)
                    self._seqs.popleft()
            if self._unwritten:  # delivered from memory while the disk is failing
                return self._unwritten[0]
            return None

    def contains(self, seq: int) -> bool:
        with self._cond:
            return seq in self._seqs or any(s == seq for s, _ in self._unwritten)

    def ack(self, seq: int) -> None:
        """Remove a delivered (or given-up) message; a no-op if it was already dropped."""
        with self._cond:
            try:
                self._seqs.remove(seq)
            except ValueError:
                for i, (s, _) in enumerate(self._unwritten):
                    if s == seq:
                        del self._unwritten[i]
                        self._cond.notify_all()
                        break
                return
            self._unlink(seq)
            self._cond.notify_all()

    def _unlink(self, seq: int) -> None:
        try:
            os.unlink(self._path(seq))
        except FileNotFoundError:
            pass

    def wait_nonempty(self, timeout: float | None) -> bool:
        """Block until a message is queued, :meth:`wake` is called, or ``timeout``."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._seqs or self._unwritten or self._woken, timeout)
            self._woken = False
            return bool(ok)

    def wait_empty(self, timeout: float | None) -> bool:
        with self._cond:
            return bool(self._cond.wait_for(lambda: not self._seqs and not self._unwritten, timeout))

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()


@dataclass(frozen=True)
class FiringAlert:
    stream: str
    feature: str
    segment: str | None
    severity: str
    starts_at: str  # RFC 3339

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.stream, self.feature, self.segment)


class AlertTracker:
    """Alerts currently firing, by fingerprint, persisted as one JSON file.

    Needed because a resolved notification must repeat the original startsAt
    and must resolve every severity still firing for its (stream, feature,
    segment) after an escalation, even across a restart.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._firing: dict[str, FiringAlert] = {}
        self._dirty = False  # the file is behind memory (its last write failed)
        self._failures = FailureLog(log, f"firing-alert tracker {path}")
        directory = os.path.dirname(path) or "."
        ensure_dir(directory)
        remove_temp_files(directory, os.path.basename(path) + ".")
        try:
            with open(path, "rb") as f:
                raw = json.loads(f.read() or b"{}")
            self._firing = {fp: FiringAlert(**v) for fp, v in raw.items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError) as e:
            log.warning("alert tracker %s unreadable (%s); starting with no firing alerts", path, e)

    def firing(self, key: tuple[str, str, str | None]) -> dict[str, FiringAlert]:
        with self._lock:
            return {fp: a for fp, a in self._firing.items() if a.key == key}

    def get(self, fp: str) -> FiringAlert | None:
        with self._lock:
            return self._firing.get(fp)

    def update(self, fire: dict[str, FiringAlert] | None = None, resolve: list[str] | tuple = ()) -> None:
        """Record newly firing alerts and forget resolved ones, then persist atomically
        (if that fails the file is written by the next :meth:`sync`)."""
        with self._lock:
            self._firing.update(fire or {})
            for fp in resolve:
                self._firing.pop(fp, None)
            self._dirty = True
            self._persist()

    def _persist(self) -> OSError | None:
        data = {fp: asdict(a) for fp, a in sorted(self._firing.items())}
        try:
            _write(self.path, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))
        except OSError as exc:
            self._failures.failed(str(exc))
            return exc
        self._dirty = False
        return None

    def sync(self) -> None:
        """Write the file if its last write failed; raises OSError while it cannot."""
        with self._lock:
            if not self._dirty:
                return
            exc = self._persist()
        if exc is not None:
            raise AlertsNotWritten("firing_alerts", f"{self.path} not written ({exc.strerror or exc})", exc.errno)
        self._failures.recovered()
