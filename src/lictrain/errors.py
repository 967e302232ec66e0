"""Typed errors for problems a user can fix.

Library code raises these instead of printing or exiting; ``lictrain.cli`` turns each into
a one-line message and exit code 2. The message should name the problem *and* the fix.
"""

from __future__ import annotations


class LictrainError(Exception):
    """Base class: a user-facing problem with a one-line, actionable message."""

    #: the CLI's exit code for this problem (2: bad input the user can fix)
    exit_code = 2


class ConfigError(LictrainError, ValueError):
    """A bad flag or argument value (negative lambda, unknown model, ...)."""


class DataError(LictrainError):
    """A missing, empty or unreadable data set, or crops larger than its images."""


class CheckpointError(LictrainError):
    """A missing, corrupt, unsafe or incompatible checkpoint, or a locked run directory."""


class StorageError(CheckpointError):
    """Writing the run's files failed (no space left, a read-only or vanished folder).

    Not bad input: the run stopped at a step boundary with its older checkpoints intact and
    resumes once there is room again. Exit code 74 (``EX_IOERR``).
    """

    exit_code = 74


class StopRun(Exception):
    """Raised by an epoch callback to end a run early and cleanly (e.g. an Optuna prune).

    Not a user error: :func:`lictrain.training.fit.fit` catches it, records status
    ``stopped`` with ``reason`` and returns normally.
    """

    def __init__(self, reason: str = "stopped") -> None:
        super().__init__(reason)
        self.reason = reason


class BitstreamError(LictrainError):
    """A truncated, corrupt or foreign ``.lic`` file, or one encoded with other weights."""
