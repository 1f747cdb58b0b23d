"""Why ``driftmon run`` refused to start, and the exit code each reason gets.

Every refusal is one log line naming the file or directory and the way out,
never a traceback.  Exit codes of ``driftmon run`` (also in docs/operations.md):

====  =====================================================================
0     stopped cleanly (SIGTERM/SIGINT), also when stopped before the broker answered
1     an unexpected error (a bug: the traceback is logged)
2     invalid config (``driftmon validate-config`` says why)
3     unusable checkpoint (:class:`~driftmon.service.checkpoint.CheckpointError`)
4     a file or directory driftmon must write is unusable (state dir, results file)
5     the state dir is in use by another driftmon process
====  =====================================================================
"""

from __future__ import annotations

EXIT_BAD_CHECKPOINT = 3
EXIT_UNWRITABLE = 4
EXIT_STATE_DIR_IN_USE = 5


class StartupError(RuntimeError):
    """The daemon cannot start; ``str(exc)`` is the one line to log, ``exit_code`` the
    process's exit code."""

    exit_code = 1


class UnwritablePathError(StartupError):
    """A file or directory driftmon must create or write cannot be used."""

    exit_code = EXIT_UNWRITABLE


class StateDirInUseError(StartupError):
    """Another process holds the state dir's lock."""

    exit_code = EXIT_STATE_DIR_IN_USE
