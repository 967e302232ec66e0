"""The run directory: a new one, the one ``--resume`` continues, or ``--auto-resume``'s choice.

``--auto-resume`` with ``--save-path DIR`` makes one command line serve the first start, every
requeue and every torchrun restart: DIR's run continues from its newest usable checkpoint; a
DIR with no checkpoint (new, or left by a run killed before its first save) starts the run
there; a finished run is left alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lictrain.checkpoint.tracking import CHECKPOINT_PATTERN
from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.tracking.records import RUN_FILE, run_completed

log = logging.getLogger(__name__)

#: files whose presence makes a folder a run's directory (never trained into again without --resume)
RUN_MARKERS = ("run.json", "metrics.jsonl", "checkpoint_tracking.json")


def prepare_run_dir(cfg: TrainConfig, create: bool = True) -> Path:
    """Create (and check writable) ``--save_path`` or ``./outputs/<model>-<lambda>-<time>``."""
    run_dir = Path(cfg.save_path).expanduser() if cfg.save_path else cfg.default_run_dir(datetime.now().strftime("%Y%m%d-%H%M%S"))
    if not create:
        return run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to --save_path {run_dir} ({exc.strerror}); choose a writable folder") from exc
    return run_dir


def has_checkpoints(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(CHECKPOINT_PATTERN.match(p.name) for p in run_dir.iterdir())


def check_new_run_dir(cfg: TrainConfig) -> None:
    """Refuse ``--save_path`` onto an existing run: training there would overwrite its checkpoints
    and records and leave a folder that mixes two runs (``--auto-resume`` decides instead).

    Raises:
        ConfigError: the folder holds a run; the message points to ``--resume`` and ``--auto-resume``.
    """
    if not cfg.save_path or cfg.resume or cfg.auto_resume:
        return
    run_dir = Path(cfg.save_path).expanduser()
    if run_dir.is_dir() and (any((run_dir / m).exists() for m in RUN_MARKERS) or has_checkpoints(run_dir)):
        raise ConfigError(f"--save_path {run_dir} already holds a run; continue it with --resume {run_dir} (or "
                          "--auto-resume), or choose a new --save_path")


@dataclass(frozen=True)
class AutoResume:
    """What ``--auto-resume`` does with ``--save-path``: ``start``, ``resume`` or ``done``."""

    action: str
    run_dir: Path
    status: str = ""  # the recorded status of a ``done`` run


def auto_resume_action(save_path: str | None, epochs: int | None = None) -> AutoResume:
    """Decide from the folder alone (every rank of a torchrun job reaches the same answer); a
    finished run goes on only when ``epochs`` asks for more epochs than it had.

    Raises:
        ConfigError: no ``--save-path`` (the folder every requeue must find again).
    """
    if not save_path:
        raise ConfigError("--auto-resume needs --save-path DIR: the folder that every start and requeue of the "
                          "job continues")
    run_dir = Path(save_path).expanduser()
    record = _read_record(run_dir)
    planned = (record.get("config") or {}).get("epochs") if isinstance(record.get("config"), dict) else None
    longer = isinstance(epochs, int) and isinstance(planned, int) and epochs > planned
    if run_completed(record.get("status"), record.get("summary")) and not longer:
        return AutoResume("done", run_dir, str(record.get("status")))
    if has_checkpoints(run_dir):
        return AutoResume("resume", run_dir)
    if record:
        log.warning("taking over %s: its run (status %s) stopped before saving a checkpoint; starting it again",
                    run_dir, record.get("status", "?"))
    return AutoResume("start", run_dir)


def _read_record(run_dir: Path) -> dict:
    try:
        record = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
