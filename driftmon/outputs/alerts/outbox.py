"""Durable alert state under ``state.dir``: a bounded on-disk outbox per receiver
and the tracker of firing alerts (so a resolve after a restart keeps its startsAt).

The outbox is one file per message, ``<seq>.json`` with a zero-padded monotonic
sequence, written to a temp file, fsynced and renamed (then the directory is
fsynced).  Each file holds exactly the bytes that will be POSTed.  A crash
leaves either the whole message or none of it, never a torn one.
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

from driftmon.util.files import TMP_SUFFIX, atomic_write

log = logging.getLogger(__name__)

_SEQ_WIDTH = 20
_SUFFIX = ".json"


def _write(path: str, data: bytes) -> None:
    """Atomically replace ``path`` (0600, util/files.py);
    and the directory fsync is skipped where the platform cannot do it."""
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

    ``put`` never waits for the network; when more than ``max_items`` messages
    are queued the oldest are deleted and their count returned so the caller can
    report them as "dropped".  ``head``/``ack`` are used by the single sender
    thread.  All methods are thread-safe.
    """

    def __init__(self, directory: str, max_items: int) -> None:
        self.directory = directory
        self.max_items = max(1, int(max_items))
        os.makedirs(directory, exist_ok=True)
        self._cond = threading.Condition()
        self._woken = False
        seqs = []
        for name in os.listdir(directory):
            if name.endswith(TMP_SUFFIX):  # a write interrupted by a crash: never renamed, never acked
                os.unlink(os.path.join(directory, name))
            elif name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit():
                seqs.append(int(name[: -len(_SUFFIX)]))
        seqs.sort()
        self._seqs: deque[int] = deque(seqs)
        self._next = seqs[-1] + 1 if seqs else 1

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:0{_SEQ_WIDTH}d}{_SUFFIX}")

    def __len__(self) -> int:
        with self._cond:
            return len(self._seqs)

    def put(self, body: bytes) -> int:
        """Persist ``body`` at the tail; return how many oldest messages were dropped."""
        with self._cond:
            seq = self._next
            self._next += 1
            _write(self._path(seq), body)
            self._seqs.append(seq)
            dropped = 0
            while len(self._seqs) > self.max_items:
                self._unlink(self._seqs.popleft())
                dropped += 1
            self._cond.notify_all()
            return dropped

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
            return None

    def contains(self, seq: int) -> bool:
        with self._cond:
            return seq in self._seqs

    def ack(self, seq: int) -> None:
        """Remove a delivered (or given-up) message; a no-op if it was already dropped."""
        with self._cond:
            try:
                self._seqs.remove(seq)
            except ValueError:
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
            ok = self._cond.wait_for(lambda: self._seqs or self._woken, timeout)
            self._woken = False
            return bool(ok)

    def wait_empty(self, timeout: float | None) -> bool:
        with self._cond:
            return bool(self._cond.wait_for(lambda: not self._seqs, timeout))

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
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
        """Record newly firing alerts and forget resolved ones, then persist atomically."""
        with self._lock:
            self._firing.update(fire or {})
            for fp in resolve:
                self._firing.pop(fp, None)
            data = {fp: asdict(a) for fp, a in sorted(self._firing.items())}
            _write(self.path, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))
