"""``fit(cfg)``: one training run from config to finished run directory.

Reads top to bottom like the run itself: build -> (resume) -> per epoch train, test, schedule,
record, checkpoint -> finish. Ctrl-C (or SIGTERM) saves a resumable checkpoint and returns
status ``interrupted`` (the CLI exits 130). Under ``torchrun`` the same code runs DDP; only
rank 0 writes (see :mod:`lictrain.training.distributed`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from lictrain.checkpoint import resolve_checkpoint
from lictrain.config import TrainConfig
from lictrain.data import load_test_crops
from lictrain.errors import ConfigError, StopRun
from lictrain.evaluation.metrics import ms_ssim_db
from lictrain.models import get_spec
from lictrain.schedules.lr import build_lr_scheduler, is_per_step, lr_at, set_total_steps, step_lr_scheduler
from lictrain.training.batch_size import auto_batch_size
from lictrain.training.budget import BudgetClock, plan_budget
from lictrain.training.build import build_loaders, build_parts, check_alignment, resolve_device, seed_everything
from lictrain.training.distributed import check_in_sync, gather_objects, init_distributed
from lictrain.training.loop import format_summary, test_epoch, train_one_epoch
from lictrain.training.param_groups import Unfreezer
from lictrain.training.selection import BestMetric, EarlyStopping, JpegReference
from lictrain.training.step_log import StepLog
from lictrain.training.steps import StepOutcome
from lictrain.training.outputs import RunOutputs
from lictrain.training.state import TrainState

log = logging.getLogger(__name__)

#: share of an epoch spent waiting for batches above which the run says the loader is the bottleneck
DATA_WAIT_HINT = 0.3


@dataclass
class RunResult:
    """How a run ended."""

    run_dir: Path
    status: str  # finished | interrupted | stopped
    summary: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig | None = None  # as trained: a planned length, a measured --batch-size auto


def best_summary(best: BestMetric, stopper: EarlyStopping) -> dict[str, Any]:
    """The run's best epoch by ``--best-metric``, for run.json's summary."""
    return {"best_metric": best.name, "best_value": stopper.top, "best_epoch": stopper.top_epoch}


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


#: files whose presence makes a folder a run's directory (never trained into again without --resume)
RUN_MARKERS = ("run.json", "metrics.jsonl", "checkpoint_tracking.json")


def check_new_run_dir(cfg: TrainConfig) -> None:
    """Refuse ``--save_path`` onto an existing run: training there would overwrite its checkpoints
    and records and leave a folder that mixes two runs.

    Raises:
        ConfigError: the folder holds a run; the message points to ``--resume``.
    """
    if not cfg.save_path or cfg.resume:
        return
    run_dir = Path(cfg.save_path).expanduser()
    if run_dir.is_dir() and (any((run_dir / m).exists() for m in RUN_MARKERS)
                             or any(run_dir.glob("checkpoint_*.pt"))):
        raise ConfigError(f"--save_path {run_dir} already holds a run; continue it with --resume {run_dir}, or choose "
                          "a new --save_path")


def fit(cfg: TrainConfig, show_progress: bool | None = None,
        epoch_callback: Callable[[int, dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``cfg.model`` per ``cfg``; returns when finished, interrupted or stopped.

    ``epoch_callback(epoch, metrics)`` runs after each epoch is recorded and checkpointed;
    raising :class:`lictrain.errors.StopRun` from it ends the run with status ``stopped``
    (how a sweep prunes a trial).

    Raises:
        LictrainError: bad configuration, data or checkpoint (nothing saved is lost).
    """
    started = time.perf_counter()
    cfg.validate()
    check_new_run_dir(cfg)
    resume_file = resolve_checkpoint(cfg.resume) if cfg.resume else None
    dist, device = init_distributed(resolve_device(cfg.device))
    alignment = get_spec(cfg.model).alignment
    check_alignment(cfg, alignment)
    seed_everything(cfg.seed)  # same initial weights on every rank
    auto_batch = None
    if cfg.batch_size == "auto":
        auto_batch = auto_batch_size(cfg, device, dist, alignment)
        cfg = dataclasses.replace(cfg, batch_size=auto_batch.batch_size)
        seed_everything(cfg.seed)  # the measurement used the RNG: start as a run with that batch would

    # -- data, (budget plan), model, loss, optimisation -------------------------------------
    train_loader, test_loader, _ = build_loaders(cfg, device, dist)
    plan, requested_epochs = None, cfg.epochs
    if cfg.budget_minutes is not None and resume_file is None:
        plan = plan_budget(cfg, device, dist, alignment, train_loader, test_loader, started)
        cfg = dataclasses.replace(cfg, epochs=plan.epochs)
        seed_everything(cfg.seed)  # the calibration used the RNG: start exactly as an --epochs run would
    assert cfg.epochs is not None  # settled by validate() or by the plan
    parts = build_parts(cfg, device, dist, alignment)
    model, trained, criterion, strategy = parts.model, parts.trained, parts.criterion, parts.strategy
    optimizer, aux_optimizer = strategy.optimizer, parts.aux_optimizer
    unfreezer = None
    if cfg.unfreeze:
        if dist.enabled:
            raise ConfigError("--unfreeze changes which parameters get gradients between epochs, which DDP does not "
                              "allow; fine-tune in one process (without torchrun), or use --lr-groups")
        unfreezer = Unfreezer(model, cfg.unfreeze, cfg.unfreeze_every)
    steps_per_epoch = len(train_loader)
    lr_scheduler = build_lr_scheduler(optimizer, cfg.lr_schedule, cfg.epochs, steps_per_epoch, cfg.warmup_steps)
    per_step_lr = is_per_step(cfg.lr_schedule)
    position = [0]  # batches of the current epoch trained: where an interrupted epoch resumes
    current_epoch = [0]
    clock: BudgetClock | None = None
    step_log: StepLog | None = None
    step_limit = [plan.total_steps if plan is not None else None]  # a budget's planned steps (last epoch partial)
    if plan is not None and plan.total_steps != cfg.epochs * steps_per_epoch:
        set_total_steps(lr_scheduler, plan.total_steps)  # the LR anneals over the steps the budget buys

    def after_step(outcome: StepOutcome) -> bool:
        """Per batch: position, LR, step rows; True when the budget ends the epoch here (its deadline,
        or the planned steps of a partial last epoch)."""
        position[0] += 1
        if per_step_lr:
            lr_scheduler.step()
        global_step = current_epoch[0] * steps_per_epoch + position[0]
        if step_log is not None:
            step_log.record(global_step, current_epoch[0], outcome)
        late = clock is not None and clock.step_done(dist)
        if late or step_limit[0] is None or global_step < step_limit[0]:
            return late
        if clock is not None and clock.can_grow and not dist.enabled and position[0] < steps_per_epoch:
            # the planned steps are done early (the calibration ran in a burst of load): go on to the
            # end of this epoch as far as the deadline allows, the LR schedule stretched with it
            more = min(clock.steps_left(), steps_per_epoch - position[0])
            if more > 0:
                step_limit[0] = global_step + more
                set_total_steps(lr_scheduler, step_limit[0])
                return False
        return True
    state = TrainState(model, optimizer, aux_optimizer, lr_scheduler, strategy, cfg.to_dict(), dist)
    best = BestMetric.from_config(cfg.best_metric, cfg.best_mode)
    stopper = EarlyStopping(best, cfg.early_stop, cfg.early_stop_min_delta)
    reference = None
    if best.name == "rd":
        reference = JpegReference.measure(load_test_crops(cfg.dataset, cfg.test_patch_size), cfg.metric)

    # -- run directory, checkpoints, records (rank 0 writes) ------------------------------
    run_dir = resume_file.parent if resume_file else prepare_run_dir(cfg, create=dist.is_main)
    outputs = RunOutputs(run_dir, cfg, writer=dist.is_main)
    start_epoch, start_batch, best_loss = 0, 0, math.inf
    try:
        if resume_file:
            ckpt = outputs.load(resume_file, map_location=device)
            start_epoch, start_batch, best_loss = state.restore(ckpt, resume_file)
            stopper.load_state_dict(ckpt.get("early_stop"))
            del ckpt
            start_batch = min(start_batch, steps_per_epoch)
            if per_step_lr:  # an interrupted epoch continues from the batch it stopped at
                lr_scheduler.last_epoch = start_epoch * steps_per_epoch + start_batch
                set_total_steps(lr_scheduler, cfg.epochs * steps_per_epoch)  # --epochs may change; sets the LR
            log.info("resumed from %s at epoch %d%s", resume_file, start_epoch,
                     f", batch {start_batch}" if start_batch else "")
        outputs.open_records(cfg, resumed=resume_file is not None, start_epoch=start_epoch, world_size=dist.world_size,
                             start_step=start_epoch * steps_per_epoch + start_batch)
        if plan is not None:
            outputs.note("budget", plan.to_dict())
        if auto_batch is not None:
            outputs.note("batch_size_auto", auto_batch.to_dict())
        if cfg.log_every is not None:
            step_log = StepLog(cfg.log_every, outputs.log_step,
                               lambda: {"lr": optimizer.param_groups[0]["lr"], **strategy.epoch_values()})
    except BaseException:
        outputs.close()
        raise

    log.info("run directory: %s", run_dir)
    total_epochs = cfg.epochs
    if plan is not None:  # a gamma schedule is fixed to the planned length: the run may only shorten
        clock = BudgetClock(plan.budget_seconds, started, max_epochs=requested_epochs,
                            can_grow=not (cfg.use_balanced and cfg.adaptive_gamma),
                            reserve_seconds=plan.test_seconds + plan.checkpoint_seconds, step_seconds=plan.step_seconds)
    epoch, hinted, cut_reason = start_epoch, False, ""
    try:
        while epoch < total_epochs:
            epoch_started = time.perf_counter()
            current_epoch[0] = epoch
            first_batch = start_batch if epoch == start_epoch else 0
            lr = optimizer.param_groups[0]["lr"]
            if first_batch and per_step_lr:  # the epoch's LR is its first batch's, also when resumed mid-way
                lr = lr_at(lr_scheduler, epoch * steps_per_epoch) or lr
            strategy.begin_epoch(epoch)
            if unfreezer is not None:
                unfreezer.apply(epoch)
            train_loader.set_epoch(epoch, first_batch)
            position[0] = first_batch
            train_stats = train_one_epoch(strategy.step, trained, train_loader, device, epoch,
                                          steps_per_epoch - first_batch, show_progress if dist.is_main else False,
                                          after_step=after_step)
            train_seconds = time.perf_counter() - epoch_started
            cut = clock is not None and position[0] < steps_per_epoch  # the budget ended it early
            check_in_sync(model, dist, strategy.sync_tensor())
            # every rank tests the same full test split: identical numbers, no communication
            test_stats = test_epoch(model, criterion, test_loader, device)
            test_loss = test_stats.values["loss"]
            if not per_step_lr:
                step_lr_scheduler(lr_scheduler, test_loss)
            schedule_values = strategy.epoch_values()
            strategy.end_epoch(epoch, test_loss)
            best_loss = min(best_loss, test_loss) if math.isfinite(test_loss) else best_loss
            seconds = time.perf_counter() - epoch_started
            metrics = {"epoch": epoch, **test_stats.values, "lr": lr, **schedule_values,
                       **{f"train/{k}": v for k, v in train_stats.values.items()},
                       "skipped_steps": train_stats.skipped, "epoch_seconds": seconds,
                       "train_images_per_second": train_stats.batches * cfg.batch_size * dist.world_size
                       / train_seconds}
            if reference is not None:
                quality = ms_ssim_db(test_stats.values["ms_ssim"]) if cfg.metric == "ms-ssim" else test_stats.values["psnr"]
                metrics["rd_gain"] = reference.gain(test_stats.values["bpp"], quality)
            if cut:
                metrics["epoch_fraction"] = position[0] / steps_per_epoch
            metrics["data_wait_fraction"] = train_stats.data_wait / train_seconds if train_seconds > 0 else 0.0
            if metrics["data_wait_fraction"] > DATA_WAIT_HINT and not hinted:
                hinted = True
                log.warning("the training steps waited for data %.0f%% of epoch %d: the loader (%s) is the "
                            "bottleneck; raise --num-workers or --crops-per-image (docs/data.md)",
                            100 * metrics["data_wait_fraction"], epoch, train_loader.describe())
            if step_log is not None:
                step_log.flush(epoch * steps_per_epoch + position[0], epoch)
            outputs.log_epoch(epoch, metrics, global_step=epoch * steps_per_epoch + position[0])
            extra = {**schedule_values, **({"rd_gain": metrics["rd_gain"]} if "rd_gain" in metrics else {})}
            log.info(format_summary(epoch, total_epochs, train_stats, test_stats, lr, seconds, extra))
            value = best.value(metrics)
            stop_early = stopper.update(epoch, value)
            if cut:  # resumable at the next batch; tested, so it may be the best checkpoint
                assert clock is not None
                why = "reached" if clock.cut else "planned to end"
                cut_reason = (f"budget of {cfg.budget_minutes:g} min {why} after batch {position[0]} of "
                              f"{steps_per_epoch} in epoch {epoch + 1}")
                outputs.save_checkpoint(**state.capture(epoch, value, best_loss, completed=False, ranked=True,
                                                        batches_done=position[0], early_stop=stopper.state_dict()))
                log.info("%s: a partial last epoch (resume with --resume %s --epochs N to go on)", cut_reason,
                         run_dir)
                break
            if clock is not None and plan is not None:  # before the checkpoint, so that it carries the new length
                clock.record_epoch(seconds + plan.checkpoint_seconds)
                planned = step_limit[0] or total_epochs * steps_per_epoch
                replanned = min(gather_objects(clock.replan_steps((epoch + 1) * steps_per_epoch, planned,
                                                                  steps_per_epoch), dist))
                if replanned != planned:
                    total_epochs = math.ceil(replanned / steps_per_epoch)
                    # a few steps' jitter every epoch is noise in the log; a change of an epoch or more is news
                    log.log(logging.INFO if abs(replanned - planned) >= steps_per_epoch else logging.DEBUG,
                            "re-planned to %d steps (%d epochs): %.1f s per epoch so far, %.1f min of the budget "
                            "left", replanned, total_epochs, seconds, (clock.deadline - time.perf_counter()) / 60)
                    step_limit[0] = replanned
                    set_total_steps(lr_scheduler, replanned)
                    state.config["epochs"] = total_epochs  # what a resumed run continues to
                    outputs.note("budget_epochs", total_epochs)
                    outputs.note("budget_steps", replanned)
            outputs.save_checkpoint(**state.capture(epoch, value, best_loss, completed=True,
                                                    early_stop=stopper.state_dict()))
            if epoch_callback is not None:
                epoch_callback(epoch, metrics)
            epoch += 1
            if stop_early and epoch < total_epochs:
                reason = stopper.reason()
                outputs.finish("stopped", reason=reason, early_stopped=True, best_loss=best_loss,
                               **best_summary(best, stopper))
                log.info("stopped after epoch %d/%d: %s; the best checkpoint is kept (to go on: --resume %s "
                         "--early-stop N)", epoch, total_epochs, reason, run_dir)
                return RunResult(run_dir, "stopped", outputs.summary, cfg)
    except StopRun as stop:
        outputs.finish("stopped", reason=stop.reason, best_loss=best_loss)
        log.info("stopped after epoch %d: %s", epoch, stop.reason)
        return RunResult(run_dir, "stopped", outputs.summary, cfg)
    except KeyboardInterrupt:
        log.warning("interrupted in epoch %d: saving a resumable checkpoint", epoch)
        if not dist.enabled:  # under DDP the other ranks may be gone: a collective would hang
            outputs.save_checkpoint(**state.capture(epoch, None, best_loss, completed=False, batches_done=position[0]))
        outputs.finish("interrupted", exit_code=130)
        log.warning("resume with: lictrain train --resume %s", run_dir)
        return RunResult(run_dir, "interrupted", outputs.summary, cfg)
    except BaseException as exc:
        outputs.finish("failed", exit_code=1, error=f"{type(exc).__name__}: {exc}")
        raise
    if plan is not None and plan.closing_seconds and clock is not None and clock.pace:
        # the calibration's estimate, at the pace the machine keeps now (load comes and goes)
        outputs.note("closing_estimate_seconds", plan.closing_seconds * clock.pace / plan.step_seconds)
    outputs.finish("finished", best_loss=best_loss, **best_summary(best, stopper),
                   **({"budget_cut": cut_reason} if cut_reason else {}))
    log.info("finished: %s (best test %s %.4g in epoch %d)", run_dir, best.name, stopper.top, stopper.top_epoch + 1)
    return RunResult(run_dir, "finished", outputs.summary, cfg)
