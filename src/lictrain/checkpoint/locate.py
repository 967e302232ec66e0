"""Which checkpoint a path names (a file, or a run directory's latest), and loading it.

Sits above :mod:`lictrain.checkpoint.io` (one file) and :mod:`lictrain.checkpoint.tracking`
(the records of a directory), which both load files with ``io`` alone: so no import circle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lictrain.checkpoint.io import load_checkpoint_file
from lictrain.checkpoint.tracking import order_key, scan_directory
from lictrain.errors import CheckpointError

__all__ = ["load_checkpoint", "resolve_checkpoint"]


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); a directory means its latest.

    What :func:`~lictrain.checkpoint.io.load_checkpoint_file` does (CRC checks first, safe
    loading only, one-line errors), after resolving a run directory to its latest checkpoint.

    Raises:
        CheckpointError: see :func:`~lictrain.checkpoint.io.load_checkpoint_file`.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = resolve_checkpoint(p)
    return load_checkpoint_file(p, map_location, mmap=mmap)


def resolve_checkpoint(path_or_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path_or_dir`` names: the file itself, or a directory's latest.

    A directory's latest is the most recently *saved* checkpoint (not the highest epoch),
    read from its tracking file plus any checkpoint files the tracking file misses. Nothing is
    written or deleted, and the directory need not be unlocked.

    Raises:
        CheckpointError: If the path does not exist or the directory holds no checkpoint.
    """
    p = Path(path_or_dir).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        records, _ = scan_directory(p, quiet=True)
        if records:
            latest = max(records.values(), key=order_key)
            return p / latest.name
        if (p / "run.json").is_file():  # a run that stopped before its first checkpoint
            raise CheckpointError(
                f"{p} holds a run that stopped before saving its first checkpoint: there is nothing to resume; "
                f"start it again in the same folder with --save-path {p} --auto-resume"
            )
        raise CheckpointError(
            f"no lictrain checkpoint (checkpoint_epoch*.pt) in {p}; pass a checkpoint file or "
            "the save directory of a run that saved one"
        )
    raise CheckpointError(
        f"checkpoint {p} does not exist; pass a checkpoint file or a run directory"
    )
