"""The checkpoint to resume from: the newest one that is intact, resumable and finite."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from lictrain.checkpoint.integrity import CorruptCheckpointError, nonfinite_tensors, warn_once
from lictrain.checkpoint.locate import load_checkpoint, resolve_checkpoint
from lictrain.checkpoint.tracking import (
    CHECKPOINT_PATTERN,
    KIND_WEIGHTS,
    Record,
    order_key,
    scan_directory,
)
from lictrain.checkpoint.weights import check_resumable
from lictrain.errors import CheckpointError

__all__ = ["load_latest_valid"]

log = logging.getLogger(__name__)


def load_latest_valid(
    path_or_dir: str | os.PathLike[str], map_location: Any = "cpu"
) -> tuple[Path, dict[str, Any]]:
    """Load the checkpoint a run should resume from, verified.

    A **file** is loaded and must pass every check below, else :class:`CheckpointError`.

    A **run directory**'s full checkpoints are tried newest first (by save order, as
    :func:`resolve_checkpoint` orders them; weights-only best checkpoints cannot resume and are
    never tried). A checkpoint failing a check is skipped with one warning naming it, why, and
    the one used instead; the first that passes is returned.

    Checks: the zip CRCs match (:func:`verify_checkpoint_file`), it loads weights-only, it is a
    lictrain training checkpoint (:func:`check_resumable`) and ``model_state`` holds no NaN or
    inf (:func:`nonfinite_tensors`).

    Args:
        path_or_dir: A checkpoint file or a run directory.
        map_location: Passed to :func:`torch.load`.

    Returns:
        ``(file loaded, checkpoint dict)``.

    Raises:
        CheckpointError: The path does not exist, the file fails a check, or no checkpoint of the
            directory passes (the message names the directory and what failed).
    """
    p = Path(path_or_dir).expanduser()
    if not p.is_dir():
        if not p.is_file():
            raise CheckpointError(f"checkpoint {p} does not exist; pass a checkpoint file or a run directory")
        ckpt = load_checkpoint(p, map_location)
        check_resumable(ckpt, p)
        bad = nonfinite_tensors(ckpt["model_state"])
        if bad:
            raise CheckpointError(f"checkpoint {p} {_nonfinite_phrase(bad)}: the run had diverged when it was "
                                  "saved; resume from an earlier checkpoint of the run")
        return p, ckpt
    skipped: list[tuple[Path, str]] = []
    for candidate in _resume_candidates(p):
        try:
            ckpt = load_checkpoint(candidate, map_location)
        except CorruptCheckpointError as exc:
            skipped.append((candidate, f"is corrupt ({exc.reason})"))
            continue
        except CheckpointError as exc:
            skipped.append((candidate, f"cannot be loaded ({exc})"))
            continue
        problem = _unusable(ckpt, candidate)
        if problem:
            skipped.append((candidate, problem))
            continue
        for bad, why in skipped:
            warn_once(log, bad, "checkpoint %s %s; using the previous one %s", bad, why, candidate.name)
        return candidate, ckpt
    raise _nothing_usable(p, skipped)


def _unusable(ckpt: dict[str, Any], path: Path) -> str | None:
    """Why ``ckpt`` cannot resume a run (a phrase), or ``None`` when it can."""
    try:
        check_resumable(ckpt, path)
    except CheckpointError as exc:
        return f"cannot resume a run ({exc})"
    bad = nonfinite_tensors(ckpt["model_state"])
    return _nonfinite_phrase(bad) if bad else None


def _nonfinite_phrase(bad: list[str]) -> str:
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"holds NaN/inf weights ({', '.join(bad[:3])}{more})"


def _resume_candidates(run_dir: Path) -> list[Path]:
    """The directory's full checkpoints, newest save first, unreadable ones included.

    ``scan_directory`` drops files it cannot read; they are put back, ordered by what the
    tracking file recorded about them (else by epoch), so that skipping them is reported.
    """
    records, tracking = scan_directory(run_dir, quiet=True)
    meta = tracking.get("checkpoints") if isinstance(tracking.get("checkpoints"), dict) else {}
    everything = dict(records)
    for entry in os.scandir(run_dir):
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match and entry.name not in everything and entry.is_file(follow_symlinks=False):
            rec = Record.from_json(entry.name, meta.get(entry.name)) if entry.name in meta else None
            epoch = int(match.group(1))
            everything[entry.name] = rec or Record(name=entry.name, epoch=epoch, metric=None, metric_name="",
                                                    seq=epoch, best_eligible=False)
    full = [r for r in everything.values() if r.kind != KIND_WEIGHTS]
    return [run_dir / r.name for r in sorted(full, key=order_key, reverse=True)]


def _nothing_usable(run_dir: Path, skipped: list[tuple[Path, str]]) -> CheckpointError:
    if not skipped:
        resolve_checkpoint(run_dir)  # raises its messages: nothing saved yet, no checkpoint at all
        return CheckpointError(
            f"{run_dir} holds only weights-only best checkpoints, which cannot resume a run; start a new "
            "run from one with --pretrained"
        )
    reasons = "; ".join(f"{path.name} {_short(why)}" for path, why in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return CheckpointError(
        f"no usable checkpoint to resume from in {run_dir}: {reasons}{more}; start the run again "
        "with a new --save_path"
    )


def _short(text: str, limit: int = 200) -> str:
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
