"""Durable, versioned checkpoints of all pipeline state plus consumed offsets.

A checkpoint is one JSON document written atomically (temp file, fsync,
rename, fsync of the directory), so a crash leaves either the old or the new
checkpoint, never a torn one.  The window state and the Kafka offsets it
covers are in the same document: after a restart the daemon restores the
state and seeks each partition to exactly the offset after the last event
that state has counted, so no event is counted twice or skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from typing import Any

import orjson

from driftmon.config import Config

VERSION = 1
FILENAME = "checkpoint.json"


class CheckpointError(RuntimeError):
    """An unreadable or incompatible checkpoint; the daemon refuses to start
    (use ``driftmon run --reset-state`` to discard it deliberately)."""


def config_fingerprint(cfg: Config) -> str:
    """Hash of what checkpointed state depends on: streams and their features."""
    streams = [asdict(s) for s in cfg.streams]
    return hashlib.sha256(json.dumps(streams, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    def __init__(self, directory: str, fingerprint: str):
        self.directory = directory
        self.fingerprint = fingerprint
        self.path = os.path.join(directory, FILENAME)
        os.makedirs(directory, exist_ok=True)

    def save(self, streams: dict[str, Any], offsets: dict[tuple[str, int], int]) -> None:
        doc = {
            "version": VERSION,
            "config": self.fingerprint,
            "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())],
            "streams": streams,
        }
        data = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(self.directory)

    def load(self) -> tuple[dict[str, Any], dict[tuple[str, int], int]] | None:
        """(stream snapshots, offsets), or None when there is no checkpoint yet."""
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        try:
            doc = orjson.loads(raw)
            version = doc["version"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {self.path} is unreadable ({exc}); "
                                  "run with --reset-state to discard it and start from the committed offsets") from None
        if version != VERSION:
            raise CheckpointError(f"checkpoint {self.path} has format version {version!r}, this driftmon reads "
                                  f"{VERSION}; run with --reset-state to discard it")
        if doc.get("config") != self.fingerprint:
            raise CheckpointError(f"checkpoint {self.path} was written for a different stream/feature config; "
                                  "run with --reset-state to discard it (windows and references start afresh)")
        offsets = {(t, int(p)): int(o) for t, p, o in doc["offsets"]}
        return doc["streams"], offsets

    def reset(self) -> None:
        """Move an existing checkpoint aside (kept for inspection, never reused)."""
        if os.path.exists(self.path):
            os.replace(self.path, self.path + ".discarded")
