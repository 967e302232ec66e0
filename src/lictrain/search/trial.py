"""One sweep trial: one ``fit()`` run in ``<out>/<trial-name>/``, and what it left behind.

A trial is an ordinary lictrain run directory (``run.json``, ``metrics.jsonl``, checkpoints and
its W&B run), so ``lictrain train --resume`` and ``lictrain analyze`` work on it as on any run.
:func:`run_trial` never lets a training error escape: the run is recorded as ``failed`` (in
``run.json``, even when the error came before ``fit`` wrote one) and the outcome says so, so the
sweep goes on. Two errors are the sweep's, not the trial's, and propagate: a
:class:`~lictrain.errors.DataError` (the data set is shared by every trial) and
``KeyboardInterrupt`` outside ``fit`` (``fit`` itself turns Ctrl-C into a resumable
``interrupted`` run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from lictrain.config import TrainConfig
from lictrain.tracking.records import effective_status, run_completed
from lictrain.errors import CheckpointError, DataError

__all__ = ["TrialOutcome", "run_trial", "trial_status", "has_checkpoint", "dir_busy", "set_aside",
           "format_params", "format_outcome", "quiet_training_logs", "REPORTED_METRICS"]

log = logging.getLogger(__name__)

#: metrics of a finished trial that its log line shows
REPORTED_METRICS = ("psnr", "bpp", "loss")


@dataclass
class TrialOutcome:
    """How one trial ended: ``finished``, ``failed``, ``stopped`` (pruned), ``interrupted`` or
    ``busy`` (another worker holds its directory)."""

    name: str
    run_dir: Path
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    resumed: bool = False

    def metric(self, key: str) -> float:
        value = self.summary.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def trial_status(run_dir: Path) -> str | None:
    """``run.json``'s status in ``run_dir`` (``None`` if there is no readable one); a run that
    ``--early-stop`` ended counts as ``finished`` (it is done, not pruned), and one whose
    process died (``crashed``) as ``interrupted``: resumed from its checkpoint, else rerun."""
    status = _recorded_status(run_dir)
    return "interrupted" if status == "crashed" else status


def _recorded_status(run_dir: Path) -> str | None:
    """:func:`trial_status`, but a dead run reads ``crashed`` (a failure yet to be recorded)."""
    try:
        record = json.loads((Path(run_dir) / "run.json").read_text())
        status = effective_status(Path(run_dir), record)
        if run_completed(status, record.get("summary")):
            return "finished"
        return status
    except (OSError, ValueError, AttributeError):
        return None


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint a run can resume from."""
    from lictrain.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint(run_dir)
        return True
    except CheckpointError:
        return False


def dir_busy(run_dir: Path) -> bool:
    """Whether a live run (another sweep worker) holds ``run_dir``'s lock right now."""
    if not Path(run_dir).is_dir():
        return False
    from lictrain.checkpoint.lock import RunDirLock

    lock = RunDirLock(run_dir)
    try:
        lock.acquire()
    except CheckpointError:
        return True
    lock.release()
    return False


def set_aside(run_dir: Path, reason: str) -> Path:
    """Move a trial directory that will be rerun from scratch to ``<out>/.superseded/<name>-<time>``.

    Nothing is deleted; the analyzer skips dot-folders, so the old attempt no longer counts.
    """
    target = run_dir.parent / ".superseded" / f"{run_dir.name}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), str(target))
    log.info("%s: %s; earlier attempt moved to %s", run_dir.name, reason, target)
    return target


def mark_failed(run_dir: Path, cfg: TrainConfig, error: str) -> None:
    """Make ``run_dir/run.json`` say ``failed`` with ``error`` unless it already records an end."""
    from lictrain.tracking.records import RunRecord

    status = _recorded_status(run_dir)  # running or crashed: the failure is not on record yet
    if status in ("failed", "finished", "stopped", "interrupted"):
        return
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        previous = json.loads((Path(run_dir) / "run.json").read_text()) if status else {}
        record = RunRecord(Path(run_dir), cfg.to_dict(), resumed=bool(status))
        if previous.get("wandb_run_id"):
            record.data["wandb_run_id"] = previous["wandb_run_id"]
        record.finish("failed", error=error)
    except OSError as exc:  # pragma: no cover - a read-only or vanished folder
        log.warning("could not record the failure in %s: %s", run_dir, exc)


def run_trial(cfg: TrainConfig, run_dir: Path, *, resume: bool = False,
              epoch_callback: Callable[[int, dict[str, Any]], None] | None = None) -> TrialOutcome:
    """Train ``cfg`` in ``run_dir`` (resuming its latest checkpoint when ``resume``).

    Returns:
        The outcome; training errors become status ``failed`` with the error.

    Raises:
        DataError: A data problem (every trial shares the data, so the sweep stops).
        KeyboardInterrupt: Ctrl-C before ``fit`` took over.
    """
    from lictrain.training.fit import fit

    run_dir = Path(run_dir)
    cfg = dataclasses.replace(cfg, save_path=str(run_dir), resume=str(run_dir) if resume else None)
    started = time.perf_counter()
    try:
        result = fit(cfg, show_progress=False, epoch_callback=epoch_callback)
    except DataError:
        raise
    except CheckpointError as exc:
        if dir_busy(run_dir):
            return TrialOutcome(run_dir.name, run_dir, "busy", error=str(exc), seconds=time.perf_counter() - started)
        return _failed(cfg, run_dir, exc, started, resume)
    except Exception as exc:  # any training error fails this trial alone
        return _failed(cfg, run_dir, exc, started, resume)
    summary = dict(result.summary)
    error = summary.get("error") if result.status == "failed" else None
    return TrialOutcome(run_dir.name, Path(result.run_dir), result.status, summary,
                        time.perf_counter() - started, error, resume)


def _failed(cfg: TrainConfig, run_dir: Path, exc: Exception, started: float, resume: bool) -> TrialOutcome:
    error = f"{type(exc).__name__}: {exc}"
    log.debug("trial %s failed", run_dir.name, exc_info=True)
    mark_failed(run_dir, cfg, error)
    return TrialOutcome(run_dir.name, run_dir, "failed", {}, time.perf_counter() - started, error, resume)


def format_params(params: dict[str, Any]) -> str:
    """``lambda=0.0035 gamma=0.003 w_lr=0.025`` (field ``lmbda`` shown as ``lambda``)."""
    return " ".join(f"{'lambda' if k == 'lmbda' else k}={_fmt(v)}" for k, v in params.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_outcome(outcome: TrialOutcome, params: dict[str, Any], prefix: str = "") -> str:
    """The one log line of a finished trial: name, params, PSNR, bpp, loss, status, time."""
    parts = [f"{prefix}{outcome.name}", format_params(params), outcome.status]
    if outcome.status in ("finished", "stopped", "interrupted"):
        shown = [f"{k} {outcome.metric(k):.4g}" for k in REPORTED_METRICS if not math.isnan(outcome.metric(k))]
        parts.append(", ".join(shown) if shown else "no metrics")
    if outcome.error:
        parts.append(f"({outcome.error})")
    if outcome.resumed:
        parts.append("[resumed]")
    parts.append(f"{outcome.seconds:.0f} s")
    return "  ".join(p for p in parts if p)


@contextmanager
def quiet_training_logs(verbose: bool = False) -> Iterator[None]:
    """Keep each trial's per-epoch lines out of the sweep's output (``-v`` keeps them)."""
    if verbose:
        yield
        return
    names = ("lictrain.training", "lictrain.tracking", "lictrain.checkpoint", "lictrain.schedules", "optuna")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
