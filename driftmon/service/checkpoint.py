"""Durable, versioned checkpoints of all pipeline state plus consumed offsets.

A checkpoint is one file, ``<state.dir>/checkpoint.json``, of two lines:

1. a header ``{"format": "driftmon-checkpoint", "version": 2, "config": <fingerprint>,
   "sha256": <hex of line 2>, "bytes": <length of line 2>, "written_at": <epoch s>}``;
2. the body ``{"offsets": [[topic, partition, next_offset], ...], "streams": {name: snapshot}}``
   (a monitor's snapshot, e.g. a calibration's, is in ``streams`` under its key
   ``calibration:<name>``; it carries its own ``shape`` and is refused when that
   no longer matches the config, so the config fingerprint leaves it out).

It is written atomically (temp file, fsync, rename, fsync of the directory),
so a crash leaves either the old or the new checkpoint, never a torn one; the
checksum catches anything else (a truncated copy, a flipped bit).  The window
state and the Kafka offsets it covers are in the same document: after a
restart the daemon restores the state and seeks each partition to exactly the
offset after the last event that state has counted, so no event is counted
twice or skipped.

The body is encoded with the standard library's JSON, which writes
``Infinity``/``NaN`` literally: state holds non-finite floats (the watermark
is ``-inf`` before the first event), and orjson would turn them into
``null``.  Anything unreadable or incompatible raises :class:`CheckpointError`
with the reason and the way out (``driftmon run --reset-state``); nothing is
ever silently discarded.

``python -m driftmon.service.checkpoint STATE_DIR`` prints a summary of a checkpoint
(exit 0), or why it cannot be used (exit 3).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from driftmon.config import Config
from driftmon.service.errors import EXIT_BAD_CHECKPOINT, StartupError
from driftmon.util.files import atomic_write, ensure_dir, fsync_dir

VERSION = 3  # 3: mergeable window summaries (2: learned bins and dense counts)
FORMAT = "driftmon-checkpoint"
FILENAME = "checkpoint.json"
_TMP_PREFIX = ".checkpoint-"
_RESET_HINT = "run `driftmon run --reset-state` to move it aside and start from the group's committed offsets"

Offsets = Mapping[tuple[str, int], int]


class CheckpointError(StartupError):
    """An unreadable or incompatible checkpoint; the daemon refuses to start, exit code 3
    (use ``driftmon run --reset-state`` to discard it deliberately)."""

    exit_code = EXIT_BAD_CHECKPOINT


def config_fingerprint(cfg: Config) -> str:
    """Hash of what the *shape* of checkpointed state depends on: streams, windows,
    segments, features and their bins, reference mode.  Thresholds, p-value,
    hysteresis, lateness and other tuning can change without discarding state."""
    streams = [
        [s.name, list(s.topics), s.timestamp.field, s.window.size, s.window.slide, s.window.count,
         list(s.segment_by), s.max_segments, s.include_overall,
         [[f.name, f.field, f.type, f.categories, f.edges, f.top_k, f.num_bins, f.detector.reference]
          + ([f.max_values] if f.top_k is not None else []) + ([f.relative_accuracy] if f.num_bins else [])
          for f in s.features]]
        + ([["cluster_by", s.cluster_by, s.cluster_max_pairs]] if s.cluster_by is not None else [])
        # per-entity state's shape (only when configured, so other streams' checkpoints stay valid)
        + ([["entities", s.entities.key, s.entities.feature, s.entities.window_size, s.entities.last_events,
             s.entities.categories, s.entities.max_categories]] if s.entities is not None else [])
        for s in cfg.streams
    ]
    return hashlib.sha256(json.dumps(streams, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _numpy(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable in a checkpoint: {type(obj).__name__}")


def encode(streams: dict[str, Any], offsets: Offsets, fingerprint: str) -> bytes:
    """The two-line checkpoint document (header, body) as bytes."""
    body = json.dumps(
        {"offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())], "streams": streams},
        separators=(",", ":"), allow_nan=True, default=_numpy,
    ).encode()
    header = {
        "format": FORMAT, "version": VERSION, "config": fingerprint,
        "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body), "written_at": round(time.time(), 3),
    }
    return json.dumps(header).encode() + b"\n" + body + b"\n"


class CheckpointStore:
    """Reads and atomically replaces the checkpoint in ``directory``.

    The owner (the daemon) removes temp files left by a write a crash
    interrupted; readers pass ``owner=False`` so they never touch a live write.
    """

    def __init__(self, directory: str, fingerprint: str, owner: bool = True):
        self.directory = directory
        self.fingerprint = fingerprint
        self.path = os.path.join(directory, FILENAME)
        if not owner:
            return
        ensure_dir(directory)  # 0700 if driftmon creates it (util/files.py)
        for name in os.listdir(directory):  # temp files of a write interrupted by a crash
            if name.startswith(_TMP_PREFIX):
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass

    def __repr__(self) -> str:
        return f"CheckpointStore(path={self.path!r}, config={self.fingerprint!r})"

    def save(self, streams: dict[str, Any], offsets: Offsets) -> None:
        """Durably replace the checkpoint (returns once it is on disk)."""
        atomic_write(self.path, encode(streams, offsets, self.fingerprint), tmp_prefix=_TMP_PREFIX)

    def _fail(self, why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.path} {why}; {_RESET_HINT}")

    def load(self) -> tuple[dict[str, Any], Offsets] | None:
        """(stream snapshots, offsets), or None when there is no checkpoint yet.

        Raises :class:`CheckpointError` when the file is unreadable, corrupt,
        of another format version, or written for another stream config.
        """
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail(f"cannot be read ({exc.strerror})") from None
        head, _, rest = raw.partition(b"\n")
        try:
            header = json.loads(head)
            version = header["version"]
        except (ValueError, KeyError, TypeError, IndexError):
            raise self._fail("is unreadable (not a driftmon checkpoint header)") from None
        if version != VERSION or header.get("format", FORMAT) != FORMAT:
            why = (" (written before window summaries became mergeable: its learned bins and counts cannot be "
                   "converted)" if version in (1, 2) else "")
            raise CheckpointError(f"checkpoint {self.path} has format version {version!r}, this driftmon reads "
                                  f"{VERSION}{why}; {_RESET_HINT}")
        if header.get("config") != self.fingerprint:
            raise CheckpointError(f"checkpoint {self.path} was written for a different stream/feature config; "
                                  f"{_RESET_HINT} (windows and references start afresh)")
        body = rest[:-1] if rest.endswith(b"\n") else rest
        if len(body) != header.get("bytes") or hashlib.sha256(body).hexdigest() != header.get("sha256"):
            raise self._fail(f"is corrupt (body of {len(body)} bytes does not match its checksum)")
        try:
            doc = json.loads(body)
            offsets = {(str(t), int(p)): int(o) for t, p, o in doc["offsets"]}
            streams = doc["streams"]
            if not isinstance(streams, dict):
                raise TypeError("streams is not a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            raise self._fail(f"is unreadable ({exc})") from None
        return streams, offsets

    def reset(self) -> str | None:
        """Move an existing checkpoint aside (kept for inspection, never reused);
        returns where it went, or None if there was none."""
        if not os.path.exists(self.path):
            return None
        aside = f"{self.path}.discarded-{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(self.path, aside)
        fsync_dir(self.directory)
        return aside


def describe(directory: str) -> dict[str, Any]:
    """A summary of the checkpoint in ``directory`` (header, offsets, per-stream
    counters), read without a config; raises :class:`CheckpointError`."""
    path = os.path.join(directory, FILENAME)
    try:
        with open(path, "rb") as fh:
            header = json.loads(fh.readline())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path} is unreadable (not a driftmon checkpoint header)")
    streams, offsets = CheckpointStore(directory, header.get("config", ""), owner=False).load() or ({}, {})
    return {
        "path": path,
        "version": header.get("version"),
        "config": header.get("config"),
        "written_at": header.get("written_at"),
        "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())],
        "streams": {
            name: {**snap.get("counters", {}),
                   "open_windows": sorted(int(i) for i in (snap.get("windows") or {}).get("open", {}))}
            for name, snap in streams.items() if "shape" not in snap
        },
        "monitors": {  # monitors' state (driftmon/monitors), under their keys
            name: {**snap.get("counts", {}), "open_windows": sorted(int(i) for i in snap.get("windows", {}))}
            for name, snap in streams.items() if "shape" in snap
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m driftmon.service.checkpoint STATE_DIR", file=sys.stderr)
        return 2
    try:
        print(json.dumps(describe(args[0]), indent=2))
    except CheckpointError as exc:
        print(f"driftmon: {exc}", file=sys.stderr)
        return EXIT_BAD_CHECKPOINT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
