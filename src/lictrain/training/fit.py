"""``fit(cfg)``: one training run from config to finished run directory.

Reads top to bottom like the run itself: build -> (resume) -> per epoch train, test, schedule,
record, checkpoint -> finish. Ctrl-C (or SIGTERM) saves a resumable checkpoint and returns
status ``interrupted`` (the CLI exits 130). Under ``torchrun`` the same code runs DDP; only
rank 0 writes (see :mod:`lictrain.training.distributed`).
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
from torch.nn.parallel import DistributedDataParallel

from lictrain.checkpoint import resolve_checkpoint
from lictrain.config import TrainConfig
from lictrain.errors import ConfigError, StopRun
from lictrain.losses import RateDistortionLoss
from lictrain.models import build_model, get_spec
from lictrain.schedules.lr import build_lr_scheduler, step_lr_scheduler
from lictrain.training.build import (build_loaders, check_alignment, load_pretrained_weights, resolve_device,
                                     seed_everything)
from lictrain.training.distributed import check_in_sync, init_distributed
from lictrain.training.loop import format_summary, test_epoch, train_one_epoch
from lictrain.training.optimizers import build_aux_optimizer, split_parameters
from lictrain.training.outputs import RunOutputs
from lictrain.training.state import TrainState
from lictrain.training.strategy import build_strategy

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """How a run ended."""

    run_dir: Path
    status: str  # finished | interrupted | stopped
    summary: dict[str, Any] = field(default_factory=dict)


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
    dist, device = init_distributed(resolve_device(cfg.device))
    alignment = get_spec(cfg.model).alignment
    check_alignment(cfg, alignment)
    seed_everything(cfg.seed)  # same initial weights on every rank

    # -- data, model, loss, optimisation ---------------------------------------------------
    train_loader, test_loader, _ = build_loaders(cfg, device, dist)
    model = build_model(cfg.model, cfg.quality).to(device)
    if cfg.pretrained:
        load_pretrained_weights(model, cfg.pretrained)
    if dist.enabled:
        torch.manual_seed(cfg.seed + 7919 * dist.rank)  # each rank its own quantisation noise
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.enabled else model
    criterion = RateDistortionLoss(cfg.lmbda, cfg.metric)
    net_params, aux_params = split_parameters(model)
    aux_optimizer = build_aux_optimizer(aux_params, cfg.aux_lr)
    strategy = build_strategy(cfg, trained, model, criterion, net_params, aux_optimizer, alignment, device, dist)
    optimizer = strategy.optimizer
    lr_scheduler = build_lr_scheduler(optimizer, cfg.lr_schedule, cfg.epochs)
    state = TrainState(model, optimizer, aux_optimizer, lr_scheduler, strategy, cfg.to_dict(), dist)

    # -- run directory, checkpoints, records (rank 0 writes) ------------------------------
    run_dir = resume_file.parent if resume_file else prepare_run_dir(cfg, create=dist.is_main)
    outputs = RunOutputs(run_dir, cfg, writer=dist.is_main)
    start_epoch, best_loss = 0, math.inf
    try:
        if resume_file:
            start_epoch, best_loss = state.restore(outputs.load(resume_file, map_location=device), resume_file)
            log.info("resumed from %s at epoch %d", resume_file, start_epoch)
        outputs.open_records(cfg, resumed=resume_file is not None, start_epoch=start_epoch, world_size=dist.world_size)
    except BaseException:
        outputs.close()
        raise

    log.info("run directory: %s", run_dir)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            strategy.begin_epoch(epoch)
            train_loader.set_epoch(epoch)
            train_stats = train_one_epoch(strategy.step, trained, train_loader, device, epoch, len(train_loader),
                                          show_progress if dist.is_main else False)
            train_seconds = time.perf_counter() - started
            check_in_sync(model, dist, strategy.sync_tensor())
            # every rank tests the same full test split: identical numbers, no communication
            test_stats = test_epoch(model, criterion, test_loader, device)
            test_loss = test_stats.values["loss"]
            step_lr_scheduler(lr_scheduler, test_loss)
            schedule_values = strategy.epoch_values()
            strategy.end_epoch(epoch, test_loss)
            best_loss = min(best_loss, test_loss) if math.isfinite(test_loss) else best_loss
            seconds = time.perf_counter() - started
            metrics = {"epoch": epoch, **test_stats.values, "lr": lr, **schedule_values,
                       **{f"train/{k}": v for k, v in train_stats.values.items()},
                       "skipped_steps": train_stats.skipped, "epoch_seconds": seconds,
                       "train_images_per_second": len(train_loader) * cfg.batch_size * dist.world_size / train_seconds}
            outputs.log_epoch(epoch, metrics)
            log.info(format_summary(epoch, cfg.epochs, train_stats, test_stats, lr, seconds, schedule_values))
            outputs.save_checkpoint(**state.capture(epoch, test_loss, best_loss, completed=True))
            if epoch_callback is not None:
                epoch_callback(epoch, metrics)
    except StopRun as stop:
        outputs.finish("stopped", reason=stop.reason, best_loss=best_loss)
        log.info("stopped after epoch %d: %s", epoch, stop.reason)
        return RunResult(run_dir, "stopped", outputs.summary)
    except KeyboardInterrupt:
        log.warning("interrupted in epoch %d: saving a resumable checkpoint", epoch)
        if not dist.enabled:  # under DDP the other ranks may be gone: a collective would hang
            outputs.save_checkpoint(**state.capture(epoch, None, best_loss, completed=False))
        outputs.finish("interrupted", exit_code=130)
        log.warning("resume with: lictrain train --resume %s", run_dir)
        return RunResult(run_dir, "interrupted", outputs.summary)
    except BaseException as exc:
        outputs.finish("failed", exit_code=1, error=f"{type(exc).__name__}: {exc}")
        raise
    outputs.finish("finished", best_loss=best_loss)
    log.info("finished: %s (best test loss %.4f)", run_dir, best_loss)
    return RunResult(run_dir, "finished", outputs.summary)
