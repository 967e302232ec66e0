"""``fit(cfg)``: one training run from config to finished run directory.

Reads top to bottom like the run itself: build -> (resume) -> per epoch train, test, schedule,
record, checkpoint -> finish. Ctrl-C (or SIGTERM) saves a resumable checkpoint and returns
status ``interrupted`` (the CLI exits 130).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from lictrain.checkpoint import CheckpointManager, capture_rng_state, resolve_checkpoint, restore_rng_state
from lictrain.config import TrainConfig
from lictrain.errors import CheckpointError, ConfigError, StopRun
from lictrain.losses import RateDistortionLoss
from lictrain.models import build_model, get_spec
from lictrain.schedules.lr import build_lr_scheduler, resync_lr, step_lr_scheduler
from lictrain.tracking.records import RunRecord
from lictrain.tracking.wandb_run import WandbRun, wandb_config
from lictrain.training.build import (
    build_loaders,
    check_alignment,
    load_pretrained_weights,
    resolve_device,
    seed_everything,
)
from lictrain.training.loop import format_summary, test_epoch, train_one_epoch
from lictrain.training.optimizers import build_aux_optimizer, split_parameters
from lictrain.training.strategy import build_strategy

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """How a run ended."""

    run_dir: Path
    status: str  # finished | interrupted | stopped
    summary: dict[str, Any] = field(default_factory=dict)


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Create (and check writable) ``--save_path`` or ``./outputs/<model>-<lambda>-<time>``."""
    run_dir = Path(cfg.save_path).expanduser() if cfg.save_path else cfg.default_run_dir(datetime.now().strftime("%Y%m%d-%H%M%S"))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to --save_path {run_dir} ({exc.strerror}); choose a writable folder") from exc
    return run_dir


def fit(cfg: TrainConfig, show_progress: bool | None = None,
        epoch_callback: Callable[[int, dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``cfg.model`` per ``cfg``; returns when finished, interrupted or stopped.

    ``epoch_callback(epoch, metrics)`` runs after each epoch is recorded and checkpointed;
    raising :class:`lictrain.errors.StopRun` from it ends the run with status ``stopped``
    (how a sweep prunes a trial).

    Raises:
        LictrainError: bad configuration, data or checkpoint (nothing saved is lost).
    """
    cfg.validate()
    resume_file = resolve_checkpoint(cfg.resume) if cfg.resume else None
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    alignment = get_spec(cfg.model).alignment
    check_alignment(cfg, alignment)

    # -- data, model, loss, optimisation ---------------------------------------------------
    train_loader, test_loader, _ = build_loaders(cfg, device)
    model = build_model(cfg.model, cfg.quality).to(device)
    if cfg.pretrained:
        load_pretrained_weights(model, cfg.pretrained)
    criterion = RateDistortionLoss(cfg.lmbda, cfg.metric)
    net_params, aux_params = split_parameters(model)
    aux_optimizer = build_aux_optimizer(aux_params, cfg.aux_lr)
    strategy = build_strategy(cfg, model, criterion, net_params, aux_optimizer, alignment, device)
    optimizer = strategy.optimizer
    lr_scheduler = build_lr_scheduler(optimizer, cfg.lr_schedule, cfg.epochs)

    # -- run directory, checkpoints, records ----------------------------------------------
    run_dir = resume_file.parent if resume_file else prepare_run_dir(cfg)
    checkpoints = CheckpointManager(run_dir, keep_last_n=cfg.keep_last_n, keep_best=cfg.keep_best, metric="loss",
                                    higher_is_better=False, best_weights_only=cfg.best_weights_only)
    start_epoch, best_loss = 0, math.inf
    try:
        if resume_file:
            ckpt = checkpoints.load(resume_file, map_location=device)
            if ckpt.get("lictrain", {}).get("kind") == "weights":
                raise CheckpointError(f"{resume_file} holds weights only (a best checkpoint); resume from the run "
                                      f"directory or its latest checkpoint, or fine-tune with --pretrained")
            model.load_state_dict(ckpt["model_state"])
            optimizer.load_state_dict(ckpt["optimizer_state"])
            if aux_optimizer is not None:
                aux_optimizer.load_state_dict(ckpt["aux_optimizer_state"])
            lr_scheduler.load_state_dict(ckpt["lr_scheduler_state"])
            resync_lr(lr_scheduler)
            strategy.load_state_dict(ckpt["strategy_state"])
            restore_rng_state(ckpt["rng_state"])
            start_epoch = int(ckpt["epoch"]) + (1 if ckpt.get("completed", True) else 0)
            best_loss = float(ckpt.get("best_loss", math.inf))
            log.info("resumed from %s at epoch %d", resume_file, start_epoch)
        record = RunRecord(run_dir, cfg.to_dict(), resumed=resume_file is not None)
        record.truncate_metrics_after(start_epoch)
        tracker = WandbRun(run_dir, cfg.wandb_project, cfg.wandb_mode, wandb_config(cfg.to_dict()),
                           run_id=record.data.get("wandb_run_id"), name=run_dir.name)
        record.set("wandb_run_id", tracker.id)
    except BaseException:
        checkpoints.close()
        raise

    def save(epoch: int, test_loss: float | None, completed: bool) -> None:
        checkpoints.save_checkpoint(
            epoch=epoch, model_state=model.state_dict(), optimizer_state=optimizer.state_dict(),
            metric_value=test_loss, is_best=None if completed else False, aux_optimizer_state=aux_optimizer.state_dict() if aux_optimizer else None,
            lr_scheduler_state=lr_scheduler.state_dict(), strategy_state=strategy.state_dict(),
            rng_state=capture_rng_state(), best_loss=best_loss, completed=completed, config=cfg.to_dict(),
        )

    log.info("run directory: %s", run_dir)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            strategy.begin_epoch(epoch)
            train_loader.set_epoch(epoch)
            train_stats = train_one_epoch(strategy.step, model, train_loader, device, epoch, len(train_loader), show_progress)
            test_stats = test_epoch(model, criterion, test_loader, device)
            test_loss = test_stats.values["loss"]
            step_lr_scheduler(lr_scheduler, test_loss)
            schedule_values = strategy.epoch_values()
            strategy.end_epoch(epoch, test_loss)
            best_loss = min(best_loss, test_loss) if math.isfinite(test_loss) else best_loss
            seconds = time.perf_counter() - started
            metrics = {"epoch": epoch, **test_stats.values, "lr": lr, **schedule_values,
                       **{f"train/{k}": v for k, v in train_stats.values.items()},
                       "skipped_steps": train_stats.skipped, "epoch_seconds": seconds}
            record.log_epoch(metrics)
            tracker.log(metrics, step=epoch)
            log.info(format_summary(epoch, cfg.epochs, train_stats, test_stats, lr, seconds, schedule_values))
            save(epoch, test_loss, completed=True)
            if epoch_callback is not None:
                epoch_callback(epoch, metrics)
    except StopRun as stop:
        checkpoints.close()
        record.finish("stopped", reason=stop.reason, best_loss=best_loss)
        tracker.finish()
        log.info("stopped after epoch %d: %s", epoch, stop.reason)
        return RunResult(run_dir, "stopped", record.data["summary"])
    except KeyboardInterrupt:
        log.warning("interrupted in epoch %d: saving a resumable checkpoint", epoch)
        save(epoch, None, completed=False)
        checkpoints.close()
        record.finish("interrupted")
        tracker.finish(exit_code=130)
        log.warning("resume with: lictrain train --resume %s", run_dir)
        return RunResult(run_dir, "interrupted", record.data["summary"])
    except BaseException as exc:
        checkpoints.close()
        record.finish("failed", error=f"{type(exc).__name__}: {exc}")
        tracker.finish(exit_code=1)
        raise
    checkpoints.close()
    record.finish("finished", best_loss=best_loss, best_checkpoint=str(checkpoints.best_checkpoint or ""))
    tracker.finish()
    log.info("finished: %s (best test loss %.4f)", run_dir, best_loss)
    return RunResult(run_dir, "finished", record.data["summary"])
