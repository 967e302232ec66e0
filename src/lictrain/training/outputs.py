"""What a run writes — checkpoints, ``run.json``/``metrics.jsonl`` and the W&B run — in one place.

Only rank 0 of a distributed run writes; on other ranks :class:`RunOutputs` is built with
``writer=False`` and every method is a no-op, so the loop never branches on the rank.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lictrain.checkpoint import CheckpointManager
from lictrain.checkpoint.writer import storage_cause
from lictrain.config import TrainConfig
from lictrain.errors import CheckpointError
from lictrain.tracking.records import RunRecord
from lictrain.tracking.wandb_run import WandbRun, wandb_config
from lictrain.training.selection import BestMetric

log = logging.getLogger(__name__)


class RunOutputs:
    """Checkpoints + run records + W&B for one run directory (rank 0 only)."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, writer: bool = True) -> None:
        self.run_dir = run_dir
        self.writer = writer
        self.checkpoints: CheckpointManager | None = None
        self.record: RunRecord | None = None
        self.tracker: WandbRun | None = None
        self.step_axis = False  # W&B steps are global train steps (--log-every), else epochs
        if writer:
            best = BestMetric.from_config(cfg.best_metric, cfg.best_mode)
            self.checkpoints = CheckpointManager(run_dir, keep_last_n=cfg.keep_last_n, keep_best=cfg.keep_best,
                                                 metric=best.key, higher_is_better=best.higher_is_better,
                                                 best_weights_only=cfg.best_weights_only)

    def open_records(self, cfg: TrainConfig, resumed: bool, start_epoch: int, world_size: int = 1,
                     start_step: int | None = None) -> None:
        """Start (or continue) run.json, metrics.jsonl and the W&B run (a resumed run drops the rows
        after the point it continues from: epochs from ``start_epoch``, steps past ``start_step``)."""
        if not self.writer:
            return
        self.record = RunRecord(self.run_dir, cfg.to_dict(), resumed=resumed)
        self.record.set("world_size", world_size)
        self.record.truncate_metrics_after(start_epoch, start_step)
        self.step_axis = cfg.log_every is not None
        self.tracker = WandbRun(self.run_dir, cfg.wandb_project, cfg.wandb_mode, wandb_config(cfg.to_dict()),
                                run_id=self.record.data.get("wandb_run_id"), name=self.run_dir.name)
        self.record.set("wandb_run_id", self.tracker.id)

    def note(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key`` in run.json (and the W&B run's summary)."""
        if self.record is not None:
            self.record.set(key, value)
        if self.tracker is not None:
            self.tracker.summary(key, value)

    def log_epoch(self, epoch: int, metrics: dict[str, Any], global_step: int | None = None) -> None:
        """One epoch's row; W&B's step is the epoch, or with ``--log-every`` the global train step."""
        if self.record is not None and self.tracker is not None:
            self.record.log_epoch(metrics)
            self.tracker.log(metrics, step=global_step if self.step_axis and global_step is not None else epoch)

    def log_step(self, global_step: int, row: dict[str, Any]) -> None:
        """A ``--log-every`` row: metrics.jsonl (marked ``kind: step``) and W&B at ``global_step``."""
        if self.record is not None and self.tracker is not None:
            self.record.log_step(row)
            self.tracker.log({k: v for k, v in row.items() if k not in ("kind", "step")}, step=global_step)

    def save_checkpoint(self, **state: Any) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save_checkpoint(**state)

    def save_error(self) -> CheckpointError | None:
        """A background save's failure, polled between steps (never on ranks that do not write)."""
        return self.checkpoints.save_error() if self.checkpoints is not None else None

    @property
    def summary(self) -> dict[str, Any]:
        return self.record.data["summary"] if self.record is not None else {}

    def finish(self, status: str, exit_code: int = 0, **summary: Any) -> CheckpointError | None:
        """Flush checkpoints, then mark the run ``status`` everywhere (idempotent; never raises).

        Returns the error of a checkpoint save that failed while flushing (the run is then
        recorded ``failed`` with it), for the caller to raise.
        """
        error = None
        try:
            if self.checkpoints is not None:
                self.checkpoints.wait()  # every save durable (or failed) before the status is written
        except CheckpointError as exc:
            error, status, exit_code = exc, "failed", exc.exit_code
            summary["error"] = str(exc)
        if self.record is not None:
            if status in ("finished", "stopped") and self.checkpoints is not None:
                best = self.checkpoints.best_checkpoint  # its name: relative to the run folder, which may move
                summary.setdefault("best_checkpoint", best.name if best else "")
            try:
                self.record.finish(status, **summary)
            except OSError as exc:  # a full or read-only disk: run.json then reads `crashed`, not `running`
                log.warning("could not record status %s in %s: %s", status, self.record.run_path,
                            storage_cause(exc) or exc)
        try:
            self.close()  # releases the run directory's lock: only now may a reader take the run as over
        except CheckpointError as exc:
            error = error or exc
        if self.tracker is not None:
            try:
                self.tracker.finish(exit_code=exit_code)
            except Exception as exc:  # W&B's files on the same full disk: the run's own records matter more
                log.warning("could not close the W&B run: %s", exc)
            self.tracker = None
        return error

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()
