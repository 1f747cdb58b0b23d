"""The state dir in process: the lock's life cycle, and what the daemon creates in it.

Two real processes, unwritable directories and exit codes are in tests/e2e/test_startup.py.
"""

from __future__ import annotations

import os

import pytest

from driftmon.config import parse_config
from driftmon.service.checkpoint import CheckpointError
from driftmon.service.daemon import Daemon
from driftmon.service.errors import (
    EXIT_STATE_DIR_IN_USE,
    EXIT_UNWRITABLE,
    StateDirInUseError,
    UnwritablePathError,
)
from driftmon.service.statedir import LOCK_NAME, acquire_state_dir


def config(state, webhooks: bool = False):
    doc = {"streams": [{"name": "s", "topic": "t", "features": [{"name": "c", "type": "categorical",
                                                                 "categories": ["a", "b"]}]}],
           "state": {"dir": str(state)}, "lifecycle": {"grace_period": "1s"}}
    if webhooks:
        doc["alerts"] = {"webhooks": [{"name": "oncall", "url": "http://127.0.0.1:9/hook"}]}
    return parse_config(doc)


def test_the_lock_is_held_from_construction_to_shutdown_and_names_its_holder(tmp_path):
    state = tmp_path / "state"
    first = Daemon(config(state))
    assert first.lock.held and (state / LOCK_NAME).exists()
    with pytest.raises(StateDirInUseError) as exc:
        Daemon(config(state))
    assert exc.value.exit_code == EXIT_STATE_DIR_IN_USE
    assert f"state dir {state} is in use by another driftmon process (pid {os.getpid()} on " in str(exc.value)
    first._shutdown()
    assert not first.lock.held
    second = Daemon(config(state))  # free again; the lock file stays
    second._shutdown()
    assert (state / LOCK_NAME).exists()


def test_a_constructor_that_fails_releases_the_lock(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "checkpoint.json").write_bytes(b"{ torn")
    with pytest.raises(CheckpointError):
        Daemon(config(state))
    acquire_state_dir(str(state)).release()  # not held by the failed daemon


def test_alert_directories_only_with_webhooks(tmp_path):
    quiet = Daemon(config(tmp_path / "quiet"))
    quiet._shutdown()
    assert sorted(os.listdir(tmp_path / "quiet")) == ["checkpoint.json", LOCK_NAME]
    loud = Daemon(config(tmp_path / "loud", webhooks=True))
    loud._shutdown()
    assert {"alerts", "outbox"} <= set(os.listdir(tmp_path / "loud"))


def test_a_file_in_the_way_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UnwritablePathError) as exc:
        acquire_state_dir(str(blocker / "state"))
    assert exc.value.exit_code == EXIT_UNWRITABLE
    assert str(exc.value).startswith(f"state dir {blocker / 'state'} cannot be created (Not a directory")
